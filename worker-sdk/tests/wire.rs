//! Wire protocol: round-trips, rejections, and property tests.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use proptest::prelude::*;
use stickyd_worker::wire::{self, ConnRecord, Hello, Message, MsgType, Welcome, WireError};

fn v4(a: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port)
}

fn v6(a: [u8; 16], port: u16) -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(a), port, 0, 0))
}

fn sample_records() -> Vec<ConnRecord> {
    vec![
        ConnRecord {
            seq: 1,
            key_hash: u64::MAX,
            accepted_ns: 1_700_000_000_123_456_789,
            peer: v4([127, 0, 0, 1], 40000),
            listener: 0,
            proxy_len: 0,
        },
        ConnRecord {
            seq: u64::MAX,
            key_hash: 7,
            accepted_ns: 0,
            peer: v6(Ipv6Addr::LOCALHOST.octets(), 65535),
            listener: 3,
            proxy_len: 107,
        },
    ]
}

#[test]
fn hello_round_trips() {
    let mut buf = Vec::new();
    wire::encode_hello(
        &Hello {
            worker_id: 3,
            pid: 4242,
            flags: 0,
        },
        &mut buf,
    );
    assert_eq!(buf.len(), 12);
    assert_eq!(&buf[..4], &[1, 1, 0, 0]);
    match wire::decode(&buf).unwrap() {
        Message::Hello(h) => assert_eq!(
            h,
            Hello {
                worker_id: 3,
                pid: 4242,
                flags: 0,
            }
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn hello_flags_travel_in_the_count_and_unknown_ones_are_kept() {
    let mut buf = Vec::new();
    let hello = Hello {
        worker_id: 1,
        pid: 7,
        flags: wire::HELLO_CHANNELS | 0x8000,
    };
    wire::encode_hello(&hello, &mut buf);
    assert_eq!(&buf[..4], &[1, 1, 1, 0x80]);
    match wire::decode(&buf).unwrap() {
        Message::Hello(h) => assert_eq!(h, hello),
        other => panic!("{other:?}"),
    }
}

#[test]
fn channels_round_trips_and_is_bounded() {
    let mut buf = Vec::new();
    wire::encode_channels(3, &mut buf);
    assert_eq!(buf, [1, 7, 3, 0]);
    assert!(matches!(wire::decode(&buf), Ok(Message::Channels(3))));
    for bad in [[1u8, 7, 0, 0], [1, 7, 65, 0]] {
        assert!(matches!(wire::decode(&bad), Err(WireError::Count { .. })));
    }
    assert!(matches!(
        wire::decode(&[1, 7, 1, 0, 9]),
        Err(WireError::Length { .. })
    ));
}

#[test]
fn rehash_round_trips_with_its_layout() {
    let mut buf = Vec::new();
    wire::encode_rehash(&[0, 3, 65535], &mut buf);
    assert_eq!(buf, [1, 8, 3, 0, 0, 0, 3, 0, 0xff, 0xff]);
    match wire::decode(&buf).unwrap() {
        Message::Rehash(listeners) => {
            assert_eq!(listeners.len(), 3);
            assert_eq!(listeners.iter().collect::<Vec<_>>(), [0, 3, 65535]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(MsgType::from_u8(8), Some(MsgType::Rehash));
    assert_eq!(MsgType::Rehash.to_string(), "REHASH");
}

#[test]
fn rehash_is_bounded() {
    assert!(matches!(
        wire::decode(&[1, 8, 0, 0]),
        Err(WireError::Count {
            msg: MsgType::Rehash,
            count: 0
        })
    ));
    // Lengths that do not match the count: short, long, odd.
    for bad in [
        &[1u8, 8, 2, 0, 1, 0][..],
        &[1, 8, 1, 0, 1, 0, 2, 0],
        &[1, 8, 1, 0, 1],
    ] {
        assert!(
            matches!(
                wire::decode(bad),
                Err(WireError::Length {
                    msg: MsgType::Rehash,
                    ..
                })
            ),
            "{bad:?}"
        );
    }
}

#[test]
#[should_panic(expected = "REHASH names 1..=32774 listeners")]
fn encode_rehash_refuses_no_listener() {
    wire::encode_rehash(&[], &mut Vec::new());
}

#[test]
fn handback_round_trips_with_its_layout() {
    let mut buf = Vec::new();
    wire::encode_handback(&[2], &mut buf);
    assert_eq!(buf, [1, 9, 1, 0, 2, 0]);
    match wire::decode(&buf).unwrap() {
        Message::Handback(listeners) => assert_eq!(listeners.iter().collect::<Vec<_>>(), [2]),
        other => panic!("{other:?}"),
    }
    let many: Vec<u16> = (0..64).map(|i| i * 1000).collect();
    buf.clear();
    wire::encode_handback(&many, &mut buf);
    assert_eq!(buf.len(), 4 + 128);
    match wire::decode(&buf).unwrap() {
        Message::Handback(listeners) => assert_eq!(listeners.iter().collect::<Vec<_>>(), many),
        other => panic!("{other:?}"),
    }
    assert_eq!(MsgType::from_u8(9), Some(MsgType::Handback));
    assert_eq!(MsgType::Handback.to_string(), "HANDBACK");
}

#[test]
fn handback_is_bounded() {
    assert!(matches!(
        wire::decode(&[1, 9, 0, 0]),
        Err(WireError::Count {
            msg: MsgType::Handback,
            count: 0
        })
    ));
    let mut too_many = vec![1, 9, 65, 0];
    too_many.resize(4 + 65 * 2, 0);
    assert!(matches!(
        wire::decode(&too_many),
        Err(WireError::Count {
            msg: MsgType::Handback,
            count: 65
        })
    ));
    for bad in [
        &[1u8, 9, 1, 0][..],
        &[1, 9, 1, 0, 1],
        &[1, 9, 1, 0, 1, 0, 0],
    ] {
        assert!(
            matches!(
                wire::decode(bad),
                Err(WireError::Length {
                    msg: MsgType::Handback,
                    expected: 6,
                    ..
                })
            ),
            "{bad:?}"
        );
    }
}

#[test]
#[should_panic(expected = "HANDBACK carries 1..=64 connections")]
fn encode_handback_refuses_more_than_64() {
    wire::encode_handback(&[0; 65], &mut Vec::new());
}

#[test]
#[should_panic(expected = "HANDBACK carries 1..=64 connections")]
fn encode_handback_refuses_none() {
    wire::encode_handback(&[], &mut Vec::new());
}

#[test]
fn welcome_round_trips() {
    let w = Welcome {
        worker_id: 1,
        workers: 4,
        listeners: vec!["l0".into(), "ünïcode".into()],
    };
    let mut buf = Vec::new();
    wire::encode_welcome(&w, &mut buf);
    assert_eq!(&buf[..4], &[1, 2, 2, 0]);
    match wire::decode(&buf).unwrap() {
        Message::Welcome(got) => assert_eq!(got, w),
        other => panic!("{other:?}"),
    }
}

#[test]
fn largest_welcome_fits_max_message() {
    let w = Welcome {
        worker_id: 0,
        workers: 1,
        listeners: vec!["n".repeat(255); 255],
    };
    let mut buf = Vec::new();
    wire::encode_welcome(&w, &mut buf);
    assert!(buf.len() <= wire::MAX_MESSAGE);
    assert!(matches!(wire::decode(&buf), Ok(Message::Welcome(got)) if got == w));
}

#[test]
fn refused_round_trips_and_truncates_at_a_char_boundary() {
    let mut buf = Vec::new();
    wire::encode_refused("slot 3 is taken", &mut buf);
    assert!(matches!(
        wire::decode(&buf),
        Ok(Message::Refused("slot 3 is taken"))
    ));

    let long = "é".repeat(600); // 1200 bytes, 2 per char
    buf.clear();
    wire::encode_refused(&long, &mut buf);
    match wire::decode(&buf).unwrap() {
        Message::Refused(r) => assert_eq!(r, "é".repeat(512)),
        other => panic!("{other:?}"),
    }

    buf.clear();
    wire::encode_refused("", &mut buf);
    assert!(matches!(
        wire::decode(&buf),
        Ok(Message::Refused("refused"))
    ));
}

#[test]
fn conns_round_trip() {
    let recs = sample_records();
    let mut buf = Vec::new();
    wire::encode_conns(&recs, &mut buf);
    assert_eq!(buf.len(), wire::HEADER_LEN + 2 * wire::RECORD_LEN);
    match wire::decode(&buf).unwrap() {
        Message::Conns(got) => {
            assert_eq!(got.len(), 2);
            assert_eq!(got.iter().collect::<Vec<_>>(), recs);
            assert_eq!(got.get(1), Some(recs[1]));
            assert_eq!(got.get(2), None);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn conns_record_layout_is_the_documented_one() {
    let mut buf = Vec::new();
    wire::encode_conns(&sample_records()[..1], &mut buf);
    let rec = &buf[4..];
    assert_eq!(&rec[0..8], &1u64.to_le_bytes());
    assert_eq!(&rec[8..16], &u64::MAX.to_le_bytes());
    assert_eq!(&rec[16..24], &1_700_000_000_123_456_789u64.to_le_bytes());
    assert_eq!(
        &rec[24..40],
        &[127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(&rec[40..42], &40000u16.to_le_bytes());
    assert_eq!(&rec[42..48], &[0, 0, 0, 0, 4, 0]);
}

#[test]
fn ack_and_drain_round_trip() {
    let mut buf = Vec::new();
    wire::encode_ack(&[5, 6, u64::MAX], &mut buf);
    match wire::decode(&buf).unwrap() {
        Message::Ack(seqs) => {
            assert_eq!(seqs.iter().collect::<Vec<_>>(), [5, 6, u64::MAX]);
            assert_eq!(seqs.get(2), Some(u64::MAX));
        }
        other => panic!("{other:?}"),
    }
    buf.clear();
    wire::encode_ack(&[], &mut buf);
    assert!(matches!(wire::decode(&buf), Ok(Message::Ack(s)) if s.is_empty()));

    buf.clear();
    wire::encode_drain(&mut buf);
    assert_eq!(buf, [1, 6, 0, 0]);
    assert!(matches!(wire::decode(&buf), Ok(Message::Drain)));
}

#[test]
fn rejects_empty_short_version_and_type() {
    assert_eq!(wire::decode(&[]).unwrap_err(), WireError::Empty);
    assert_eq!(
        wire::decode(&[1, 6]).unwrap_err(),
        WireError::Short { len: 2 }
    );
    assert_eq!(
        wire::decode(&[2, 6, 0, 0]).unwrap_err(),
        WireError::Version(2)
    );
    assert!(WireError::Version(2).to_string().contains("version 2"));
    assert_eq!(wire::decode(&[1, 0, 0, 0]).unwrap_err(), WireError::Type(0));
    assert_eq!(
        wire::decode(&[1, 11, 0, 0]).unwrap_err(),
        WireError::Type(11)
    );
}

#[test]
fn drained_is_a_header_alone() {
    let mut buf = Vec::new();
    wire::encode_drained(&mut buf);
    assert_eq!(buf, [1, 10, 0, 0]);
    assert!(matches!(wire::decode(&buf), Ok(Message::Drained)));
    assert_eq!(MsgType::from_u8(10), Some(MsgType::Drained));
    assert_eq!(MsgType::Drained.to_string(), "DRAINED");
    assert!(wire::decode(&[1, 10, 1, 0]).is_err(), "a count");
    assert!(wire::decode(&[1, 10, 0, 0, 0]).is_err(), "a payload");
}

#[test]
fn rejects_bad_lengths() {
    let mut hello = Vec::new();
    wire::encode_hello(
        &Hello {
            worker_id: 0,
            pid: 1,
            flags: 0,
        },
        &mut hello,
    );
    let err = wire::decode(&hello[..11]).unwrap_err();
    assert_eq!(
        err,
        WireError::Length {
            msg: MsgType::Hello,
            expected: 12,
            got: 11
        }
    );

    let mut conns = Vec::new();
    wire::encode_conns(&sample_records(), &mut conns);
    conns.push(0);
    assert!(matches!(
        wire::decode(&conns),
        Err(WireError::Length {
            msg: MsgType::Conns,
            ..
        })
    ));
    assert!(matches!(
        wire::decode(&conns[..60]),
        Err(WireError::Length { .. })
    ));

    let mut drain = Vec::new();
    wire::encode_drain(&mut drain);
    drain.push(0);
    assert!(matches!(
        wire::decode(&drain),
        Err(WireError::Length {
            msg: MsgType::Drain,
            ..
        })
    ));

    let mut welcome = Vec::new();
    let w = Welcome {
        worker_id: 0,
        workers: 1,
        listeners: vec!["abc".into()],
    };
    wire::encode_welcome(&w, &mut welcome);
    assert!(matches!(
        wire::decode(&welcome[..welcome.len() - 1]),
        Err(WireError::Length { .. })
    ));
    welcome.push(b'x');
    assert!(matches!(
        wire::decode(&welcome),
        Err(WireError::Length { .. })
    ));

    assert_eq!(
        wire::decode(&[1, 3, 0, 0]).unwrap_err(),
        WireError::ReasonLength { len: 0 }
    );
    let mut refused = vec![1, 3, 0, 0];
    refused.extend_from_slice(&[b'a'; 1025]);
    assert_eq!(
        wire::decode(&refused).unwrap_err(),
        WireError::ReasonLength { len: 1025 }
    );
}

#[test]
fn rejects_bad_counts() {
    assert!(matches!(
        wire::decode(&[1, 4, 0, 0]),
        Err(WireError::Count {
            msg: MsgType::Conns,
            count: 0
        })
    ));
    let mut too_many = vec![1, 4, 65, 0];
    too_many.resize(4 + 65 * 48, 0);
    assert!(matches!(
        wire::decode(&too_many),
        Err(WireError::Count { count: 65, .. })
    ));
    let mut ack = vec![1, 5, 65, 0];
    ack.resize(4 + 65 * 8, 0);
    assert!(matches!(
        wire::decode(&ack),
        Err(WireError::Count {
            msg: MsgType::Ack,
            ..
        })
    ));
    assert!(matches!(
        wire::decode(&[1, 6, 1, 0]),
        Err(WireError::Count {
            msg: MsgType::Drain,
            ..
        })
    ));
    // A HELLO's count is its flags: any value is accepted.
    let mut hello = vec![1, 1, 0xff, 0xff];
    hello.resize(12, 0);
    assert!(matches!(
        wire::decode(&hello),
        Ok(Message::Hello(Hello { flags: 0xffff, .. }))
    ));
    let mut welcome = vec![1, 2, 0, 0];
    welcome.extend_from_slice(&[0, 0, 0, 0, 1, 0, 0, 0]);
    assert!(matches!(
        wire::decode(&welcome),
        Err(WireError::Count {
            msg: MsgType::Welcome,
            ..
        })
    ));
}

#[test]
fn rejects_bad_family_reserved_and_padding() {
    let mut buf = Vec::new();
    wire::encode_conns(&sample_records(), &mut buf);
    let mut bad = buf.clone();
    bad[4 + 48 + 46] = 5;
    assert_eq!(
        wire::decode(&bad).unwrap_err(),
        WireError::Family {
            index: 1,
            family: 5
        }
    );
    let mut bad = buf.clone();
    bad[4 + 47] = 1;
    assert_eq!(
        wire::decode(&bad).unwrap_err(),
        WireError::Reserved { index: 0 }
    );
    let mut bad = buf.clone();
    bad[4 + 30] = 1; // IPv4 padding
    assert_eq!(
        wire::decode(&bad).unwrap_err(),
        WireError::Reserved { index: 0 }
    );
}

#[test]
fn rejects_bad_welcome_names_and_ids() {
    let mut base = vec![1, 2, 1, 0];
    base.extend_from_slice(&0u32.to_le_bytes());
    base.extend_from_slice(&2u32.to_le_bytes());
    let mut empty = base.clone();
    empty.push(0);
    assert_eq!(
        wire::decode(&empty).unwrap_err(),
        WireError::EmptyName { index: 0 }
    );
    let mut not_utf8 = base.clone();
    not_utf8.extend_from_slice(&[2, 0xff, 0xfe]);
    assert_eq!(
        wire::decode(&not_utf8).unwrap_err(),
        WireError::Utf8 {
            msg: MsgType::Welcome
        }
    );
    let mut outside = vec![1, 2, 1, 0];
    outside.extend_from_slice(&2u32.to_le_bytes());
    outside.extend_from_slice(&2u32.to_le_bytes());
    outside.extend_from_slice(&[1, b'a']);
    assert_eq!(
        wire::decode(&outside).unwrap_err(),
        WireError::WorkerId {
            worker_id: 2,
            workers: 2
        }
    );
    let mut refused = vec![1, 3, 0, 0, 0xc3];
    assert_eq!(
        wire::decode(&refused).unwrap_err(),
        WireError::Utf8 {
            msg: MsgType::Refused
        }
    );
    refused.push(0xa9);
    assert!(matches!(wire::decode(&refused), Ok(Message::Refused("é"))));
}

fn arb_peer() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(a, p)| v4(a, p)),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(a, p)| v6(a, p)),
    ]
}

fn arb_record() -> impl Strategy<Value = ConnRecord> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        arb_peer(),
        any::<u16>(),
        any::<u16>(),
    )
        .prop_map(
            |(seq, key_hash, accepted_ns, peer, listener, proxy_len)| ConnRecord {
                seq,
                key_hash,
                accepted_ns,
                peer,
                listener,
                proxy_len,
            },
        )
}

proptest! {
    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        let _ = wire::decode(&bytes);
    }

    #[test]
    fn decode_never_panics_on_valid_headers(
        kind in 0u8..8,
        count in 0u16..70,
        body in proptest::collection::vec(any::<u8>(), 0..3200),
    ) {
        let mut bytes = vec![wire::VERSION, kind];
        bytes.extend_from_slice(&count.to_le_bytes());
        bytes.extend_from_slice(&body);
        if let Ok(Message::Conns(recs)) = wire::decode(&bytes) {
            prop_assert_eq!(recs.iter().count(), usize::from(count));
        }
    }

    #[test]
    fn conns_records_round_trip(recs in proptest::collection::vec(arb_record(), 1..=64)) {
        let mut buf = Vec::new();
        wire::encode_conns(&recs, &mut buf);
        match wire::decode(&buf) {
            Ok(Message::Conns(got)) => prop_assert_eq!(got.iter().collect::<Vec<_>>(), recs),
            other => prop_assert!(false, "decoded {:?}", other),
        }
    }

    #[test]
    fn ack_round_trips(seqs in proptest::collection::vec(any::<u64>(), 0..=64)) {
        let mut buf = Vec::new();
        wire::encode_ack(&seqs, &mut buf);
        match wire::decode(&buf) {
            Ok(Message::Ack(got)) => prop_assert_eq!(got.iter().collect::<Vec<_>>(), seqs),
            other => prop_assert!(false, "decoded {:?}", other),
        }
    }
}
