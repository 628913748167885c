//! Trusted proxies through the public API: `--trust` networks parsed as the command line
//! does, and X-Forwarded-For believed only from them.

use std::net::IpAddr;

use stickyd::decide::{Decision, KeyPlan};
use stickyd::keys::{Cidr, Key, KeyRule, Trust};
use stickyd::route::key_hash;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn plan(trust: &[&str]) -> KeyPlan {
    let networks = trust.iter().map(|n| n.parse::<Cidr>().unwrap()).collect();
    KeyPlan::new(vec!["header:X-Forwarded-For".parse().unwrap()], KeyRule::Ip)
        .with_trust(Trust::new(networks))
}

fn routed(key: Key<'_>, fallback: bool) -> Decision {
    Decision::Route {
        hash: key_hash(key),
        fallback,
    }
}

const HEAD: &[u8] = b"GET / HTTP/1.1\r\nX-Forwarded-For: 198.51.100.7, 203.0.113.5\r\n\
Host: a\r\nX-Forwarded-For: 127.0.0.2\r\n\r\n";

#[test]
fn without_trust_the_leftmost_from_anyone() {
    let client = Key::Addr(ip("198.51.100.7"));
    assert_eq!(
        plan(&[]).decide(HEAD, ip("127.0.0.1"), false),
        routed(client, false)
    );
}

#[test]
fn with_trust_the_rightmost_untrusted() {
    let plan = plan(&["127.0.0.0/8"]);
    let client = Key::Addr(ip("203.0.113.5"));
    assert_eq!(
        plan.decide(HEAD, ip("127.0.0.1"), false),
        routed(client, false)
    );
    assert_eq!(
        plan.decide(HEAD, ip("::ffff:127.0.0.1"), false),
        routed(client, false)
    );
}

#[test]
fn an_untrusted_peer_falls_back() {
    let plan = plan(&["127.0.0.0/16"]);
    let peer = ip("127.1.0.1");
    assert_eq!(
        plan.decide(HEAD, peer, false),
        routed(Key::Addr(peer), true)
    );
}

#[test]
fn networks_parse_like_the_command_line() {
    assert_eq!(
        "127.0.0.1".parse::<Cidr>().unwrap().to_string(),
        "127.0.0.1/32"
    );
    assert!("127.0.0.0/33".parse::<Cidr>().is_err());
    assert!("nonsense".parse::<Cidr>().is_err());
    let trust = Trust::new(vec!["::1".parse().unwrap()]);
    assert!(trust.contains(ip("::1")) && !trust.is_empty());
    assert!(Trust::none().is_empty());
}
