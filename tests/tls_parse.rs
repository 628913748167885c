//! The `sni` key rule on real-size ClientHellos: whole, split over records and TCP segments,
//! cut short, damaged; and through a key plan, where a missing name falls back.

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;
use stickyd::decide::{Decision, KeyPlan};
use stickyd::keys::{Found, Key, KeyRule};
use stickyd::route::key_hash;

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const NAME: &[u8] = b"accounts.example.com";

#[path = "util/tls.rs"]
mod tls;

use tls::{client_hello, records};

fn sni() -> KeyRule {
    "sni".parse().expect("the sni rule")
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
        .expect("present")
}

#[test]
fn real_size_hellos() {
    let rule = sni();
    // X25519 only, padded to 512 bytes as browsers do; and with a post-quantum key share.
    for (key_share, padding, min, max) in [(32, 310, 550, 650), (1248, 300, 1700, 1900)] {
        let message = client_hello(Some(NAME), key_share, padding);
        let bytes = records(&message, &[]);
        assert!((min..max).contains(&bytes.len()), "{}", bytes.len());
        assert_eq!(rule.extract(&bytes, PEER), Found::Key(Key::Bytes(NAME)));
    }
}

#[test]
fn prefixes_are_partial_until_the_name_arrives() {
    let rule = sni();
    let bytes = records(&client_hello(Some(NAME), 1248, 0), &[]);
    let end = find(&bytes, NAME) + NAME.len();
    for cut in 0..=bytes.len() {
        let expected = if cut < end {
            Found::Partial
        } else {
            Found::Key(Key::Bytes(NAME))
        };
        assert_eq!(rule.extract(&bytes[..cut], PEER), expected, "cut at {cut}");
    }
}

#[test]
fn records_cut_at_every_offset() {
    let rule = sni();
    let message = client_hello(Some(NAME), 1248, 0);
    let name = find(&message, NAME);
    let straddles = |cut: usize| name < cut && cut < name + NAME.len();
    for a in 1..message.len() {
        let expected = if straddles(a) {
            Found::Absent
        } else {
            Found::Key(Key::Bytes(NAME))
        };
        let bytes = records(&message, &[a]);
        assert_eq!(rule.extract(&bytes, PEER), expected, "cut at {a}");
        for b in [a + 1, a + 2, a + 300, message.len() - 1] {
            if b <= a || b >= message.len() {
                continue;
            }
            let expected = if straddles(a) || straddles(b) {
                Found::Absent
            } else {
                Found::Key(Key::Bytes(NAME))
            };
            let bytes = records(&message, &[a, b]);
            assert_eq!(rule.extract(&bytes, PEER), expected, "cuts at {a}, {b}");
        }
    }
}

#[test]
fn not_tls_or_no_name_is_absent() {
    let rule = sni();
    let absent = |bytes: &[u8]| rule.extract(bytes, PEER) == Found::Absent;
    assert!(absent(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"));
    assert!(absent(b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n"));
    assert!(absent(&[0x80, 0x2e, 1, 3, 1, 0, 0x15]));
    assert!(absent(&records(&client_hello(None, 32, 0), &[])));
    // A handshake length too short for what it must hold.
    let mut short_body = records(&client_hello(Some(NAME), 32, 0), &[]);
    short_body[6..9].copy_from_slice(&[0, 0, 40]);
    assert!(absent(&short_body));
}

#[test]
fn a_plan_waits_for_the_name_then_routes_by_it() {
    let plan = KeyPlan::new(vec![sni()], KeyRule::Ip);
    let bytes = records(&client_hello(Some(NAME), 1248, 0), &[600, 1200]);
    let name_hash = key_hash(Key::Bytes(NAME));
    let peer_hash = key_hash(Key::Addr(PEER));
    assert_eq!(plan.decide(&bytes[..100], PEER, false), Decision::NeedMore);
    assert_eq!(
        plan.decide(&bytes, PEER, false),
        Decision::Route {
            hash: name_hash,
            fallback: false
        }
    );
    // The client stopped before the name: the fallback decides.
    assert_eq!(
        plan.decide(&bytes[..100], PEER, true),
        Decision::Route {
            hash: peer_hash,
            fallback: true
        }
    );
    // Plain HTTP on a TLS listener: no name, the fallback at once.
    assert_eq!(
        plan.decide(b"GET / HTTP/1.1\r\n", PEER, false),
        Decision::Route {
            hash: peer_hash,
            fallback: true
        }
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = sni().extract(&bytes, PEER);
    }

    #[test]
    fn split_at_every_point_agrees(
        name in "[a-z0-9-]{1,20}(\\.[a-z0-9-]{1,20}){0,3}",
        cuts in proptest::collection::vec(1usize..1900, 0..3),
        damage in proptest::option::of(any::<(usize, u8)>()),
    ) {
        let rule = sni();
        let message = client_hello(Some(name.as_bytes()), 1248, 0);
        let mut cuts: Vec<usize> = cuts.into_iter().filter(|&c| c < message.len()).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut bytes = records(&message, &cuts);
        if let Some((at, xor)) = damage {
            let at = at % bytes.len();
            bytes[at] ^= xor;
        }
        let whole = rule.extract(&bytes, PEER);
        for cut in 0..bytes.len() {
            let prefix = rule.extract(&bytes[..cut], PEER);
            prop_assert!(prefix == Found::Partial || prefix == whole, "cut {}: {:?} vs {:?}", cut, prefix, whole);
        }
    }
}
