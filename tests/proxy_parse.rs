//! The PROXY protocol parser: every valid v1 and v2 form, the malformed ones, prefixes,
//! `max_len`, and property tests (no panic, the same answer whole or split).

use std::net::SocketAddr;

use proptest::prelude::*;
use stickyd::proxy::{Error, Header, parse};

const MAX: usize = 4096;
const SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn proxied(len: usize, source: &str, destination: &str) -> Header {
    Header::Proxied {
        len,
        source: addr(source),
        destination: addr(destination),
    }
}

/// A v2 header: version/command, family, then `body` (addresses and TLVs).
fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
    let mut bytes = SIGNATURE.to_vec();
    bytes.extend([command, family]);
    bytes.extend((body.len() as u16).to_be_bytes());
    bytes.extend(body);
    bytes
}

fn v2_tcp4(source: SocketAddr, destination: SocketAddr, tlvs: &[u8]) -> Vec<u8> {
    let (SocketAddr::V4(s), SocketAddr::V4(d)) = (source, destination) else {
        panic!("IPv4 addresses expected");
    };
    let mut body = s.ip().octets().to_vec();
    body.extend(d.ip().octets());
    body.extend(s.port().to_be_bytes());
    body.extend(d.port().to_be_bytes());
    body.extend(tlvs);
    v2(0x21, 0x11, &body)
}

fn v2_tcp6(source: SocketAddr, destination: SocketAddr, tlvs: &[u8]) -> Vec<u8> {
    let (SocketAddr::V6(s), SocketAddr::V6(d)) = (source, destination) else {
        panic!("IPv6 addresses expected");
    };
    let mut body = s.ip().octets().to_vec();
    body.extend(d.ip().octets());
    body.extend(s.port().to_be_bytes());
    body.extend(d.port().to_be_bytes());
    body.extend(tlvs);
    v2(0x21, 0x21, &body)
}

/// Every strict prefix of `bytes` is partial.
fn assert_prefixes_partial(bytes: &[u8]) {
    for cut in 0..bytes.len() {
        assert_eq!(parse(&bytes[..cut], MAX), Ok(None), "{:?}", &bytes[..cut]);
    }
}

#[test]
fn v1_tcp4() {
    let line = b"PROXY TCP4 192.0.2.1 198.51.100.22 51234 443\r\n";
    let header = proxied(line.len(), "192.0.2.1:51234", "198.51.100.22:443");
    assert_eq!(parse(line, MAX), Ok(Some(header)));
    // The request that follows is not part of the header.
    let mut bytes = line.to_vec();
    bytes.extend(b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(parse(&bytes, MAX), Ok(Some(header)));
    assert_prefixes_partial(line);
    let line = b"PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n";
    let header = proxied(line.len(), "0.0.0.0:0", "255.255.255.255:65535");
    assert_eq!(parse(line, MAX), Ok(Some(header)));
}

#[test]
fn v1_tcp6() {
    let line = b"PROXY TCP6 2001:db8::1 2001:db8::2 40000 8443\r\n";
    let header = proxied(line.len(), "[2001:db8::1]:40000", "[2001:db8::2]:8443");
    assert_eq!(parse(line, MAX), Ok(Some(header)));
    assert_prefixes_partial(line);
    // IPv4-mapped addresses come back as they are.
    let line = b"PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n";
    let header = proxied(line.len(), "[::ffff:192.0.2.1]:1", "[::1]:2");
    assert_eq!(parse(line, MAX), Ok(Some(header)));
    // The longest line is 107 bytes.
    let line = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    assert_eq!(line.len(), 104);
    let source = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535";
    assert_eq!(
        parse(line, MAX),
        Ok(Some(proxied(line.len(), source, source)))
    );
}

#[test]
fn v1_unknown() {
    assert_eq!(
        parse(b"PROXY UNKNOWN\r\n", MAX),
        Ok(Some(Header::Local { len: 15 }))
    );
    let line = b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\nGET /";
    assert_eq!(parse(line, MAX), Ok(Some(Header::Local { len: 59 })));
    assert_prefixes_partial(b"PROXY UNKNOWN anything at all\r\n");
    // Up to 107 bytes in all.
    let mut line = b"PROXY UNKNOWN ".to_vec();
    line.resize(105, b'x');
    line.extend(b"\r\n");
    assert_eq!(parse(&line, MAX), Ok(Some(Header::Local { len: 107 })));
    line.insert(20, b'x');
    assert_eq!(parse(&line, MAX), Err(Error::V1LineTooLong));
    assert_eq!(parse(&line[..107], MAX), Err(Error::V1LineTooLong));
    assert_eq!(parse(&line[..106], MAX), Ok(None));
}

#[test]
fn v1_malformed() {
    let cases: &[(&[u8], Error)] = &[
        (b"PROXY TCP5 ", Error::V1Protocol),
        (b"PROXY tcp4 ", Error::V1Protocol),
        (b"PROXY TCP ", Error::V1Protocol),
        (b"PROXY UDP4", Error::V1Protocol),
        (b"PROXY UNKNOWNX", Error::V1Protocol),
        (b"PROXY UNKNOWN\n", Error::V1Syntax),
        (b"PROXY UNKNOWN\rX", Error::V1Syntax),
        (b"PROXY UNKNOWN abc\n", Error::V1Syntax),
        (b"PROXY  TCP4", Error::V1Protocol),
        (b"PROXY TCP4  1.2.3.4", Error::V1Address),
        (b"PROXY TCP4\r\n", Error::V1Syntax),
        (b"PROXY TCP4 1.2.3.4  5.6.7.8", Error::V1Address),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8  1", Error::V1Port),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1  2", Error::V1Port),
        (b"PROXY TCP4 1.2.3.4\t5.6.7.8", Error::V1Syntax),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", Error::V1Syntax),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r", Error::V1Syntax),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", Error::V1Syntax),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", Error::V1Syntax),
        (b"PROXY TCP4 256.1.1.1 ", Error::V1Address),
        (b"PROXY TCP4 01.1.1.1 ", Error::V1Address),
        (b"PROXY TCP4 1.1.1 2.2.2.2 1 2\r\n", Error::V1Address),
        (b"PROXY TCP4 1.1.1.1.1", Error::V1Address),
        (b"PROXY TCP4 2001:db8::1 ", Error::V1Address),
        (b"PROXY TCP4 ::1 ::1 1 2\r\n", Error::V1Address),
        (b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", Error::V1Address),
        (b"PROXY TCP6 2001:db8:::1 ::1 1 2\r\n", Error::V1Address),
        (b"PROXY TCP6 fe80::1%eth0 ", Error::V1Syntax),
        (b"PROXY TCP6 ::1 ::1 -1 2\r\n", Error::V1Port),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 1\r\n", Error::V1Port),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 080 1\r\n", Error::V1Port),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 00 1\r\n", Error::V1Port),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 +80 1\r\n", Error::V1Port),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2x", Error::V1Syntax),
        (b"PROXY\r\n", Error::NotProxy),
        (b"PROXy ", Error::NotProxy),
        (b"PRI * HTTP/2.0\r\n", Error::NotProxy),
        (b"POST / HTTP/1.1\r\n", Error::NotProxy),
    ];
    for (bytes, error) in cases {
        let shown = String::from_utf8_lossy(bytes);
        assert_eq!(parse(bytes, MAX), Err(*error), "{shown:?}");
    }
}

#[test]
fn v1_refuses_as_soon_as_certain() {
    // A byte that no valid line can hold there is refused at once.
    assert_eq!(parse(b"PROXY TCP4 1.2.3.4x", MAX), Err(Error::V1Syntax));
    assert_eq!(parse(b"PROXY TCP4 300", MAX), Err(Error::V1Address));
    assert_eq!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 7", MAX), Ok(None));
    assert_eq!(
        parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 0", MAX),
        Ok(None),
        "port 0 may still be followed by a space"
    );
    assert_eq!(
        parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 01", MAX),
        Err(Error::V1Port)
    );
    assert_eq!(
        parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 70000", MAX),
        Err(Error::V1Port)
    );
    assert_eq!(parse(b"PROXY TCP6 ::g", MAX), Err(Error::V1Syntax));
    assert_eq!(parse(b"PROXY X", MAX), Err(Error::V1Protocol));
    assert_eq!(parse(b"PROXY TCP4 ", MAX), Ok(None));
    // A TCP6 address longer than any IPv6 text.
    let mut line = b"PROXY TCP6 ".to_vec();
    line.extend([b'1'; 46]);
    assert_eq!(parse(&line, MAX), Err(Error::V1Address));
}

#[test]
fn anything_else_is_not_proxy_from_the_first_byte() {
    for bytes in [&b"G"[..], b"\x16", b"\x16\x03\x01", b"\0", b"p", b" PROXY"] {
        assert_eq!(parse(bytes, MAX), Err(Error::NotProxy), "{bytes:?}");
    }
    assert_eq!(parse(b"P", MAX), Ok(None));
    assert_eq!(parse(b"\r", MAX), Ok(None));
    assert_eq!(parse(b"", MAX), Ok(None));
    assert_eq!(parse(b"PX", MAX), Err(Error::NotProxy));
    assert_eq!(parse(b"\r\n\r\n\0\r\nQUIT\r", MAX), Err(Error::NotProxy));
    assert_eq!(parse(b"\r\n\r\n\n", MAX), Err(Error::NotProxy));
}

#[test]
fn v2_tcp4_and_tcp6() {
    let (s4, d4) = (addr("192.0.2.1:51234"), addr("198.51.100.22:443"));
    let bytes = v2_tcp4(s4, d4, &[]);
    assert_eq!(bytes.len(), 28);
    assert_eq!(
        parse(&bytes, MAX),
        Ok(Some(proxied(28, "192.0.2.1:51234", "198.51.100.22:443")))
    );
    assert_prefixes_partial(&bytes);

    let (s6, d6) = (addr("[2001:db8::1]:40000"), addr("[::ffff:10.0.0.1]:8443"));
    let bytes = v2_tcp6(s6, d6, &[]);
    assert_eq!(bytes.len(), 52);
    let header = Header::Proxied {
        len: 52,
        source: s6,
        destination: d6,
    };
    assert_eq!(parse(&bytes, MAX), Ok(Some(header)));
    assert_prefixes_partial(&bytes);
}

#[test]
fn v2_skips_tlvs_and_leaves_the_request() {
    let (s, d) = (addr("192.0.2.1:1"), addr("192.0.2.2:2"));
    // PP2_TYPE_AUTHORITY, PP2_TYPE_UNIQUE_ID, a padding TLV with junk.
    let mut tlvs = vec![0x02, 0, 11];
    tlvs.extend(b"example.com");
    tlvs.extend([0x05, 0, 4, 1, 2, 3, 4, 0x04, 0, 3, 0xff, 0xfe, 0xfd]);
    let mut bytes = v2_tcp4(s, d, &tlvs);
    let len = bytes.len();
    bytes.extend(b"GET / HTTP/1.1\r\n\r\n");
    let header = Header::Proxied {
        len,
        source: s,
        destination: d,
    };
    assert_eq!(parse(&bytes, MAX), Ok(Some(header)));
    assert_prefixes_partial(&bytes[..len]);
    // TLVs are not validated: a truncated TLV inside the declared length is skipped too.
    let bytes = v2_tcp4(s, d, &[0x02, 0xff, 0xff]);
    assert_eq!(parse(&bytes, MAX).unwrap().unwrap().len(), 31);
}

#[test]
fn v2_local_and_unspec() {
    // LOCAL: any family, addresses and all, is skipped.
    for family in [0x00, 0x11, 0x21, 0x31, 0x12, 0x45] {
        let bytes = v2(0x20, family, &[0; 12]);
        assert_eq!(
            parse(&bytes, MAX),
            Ok(Some(Header::Local { len: 28 })),
            "{family:#x}"
        );
    }
    let bytes = v2(0x20, 0x00, &[]);
    assert_eq!(parse(&bytes, MAX), Ok(Some(Header::Local { len: 16 })));
    assert_prefixes_partial(&bytes);
    // PROXY with an unspecified family: the balancer does not know the client.
    let bytes = v2(0x21, 0x00, &[1, 2, 3]);
    assert_eq!(parse(&bytes, MAX), Ok(Some(Header::Local { len: 19 })));
}

#[test]
fn v2_malformed() {
    let cases: &[(Vec<u8>, Error)] = &[
        (v2(0x11, 0x11, &[0; 12]), Error::V2Version(1)),
        (v2(0x31, 0x11, &[0; 12]), Error::V2Version(3)),
        (v2(0x22, 0x11, &[0; 12]), Error::V2Command(2)),
        (v2(0x2f, 0x11, &[0; 12]), Error::V2Command(15)),
        (v2(0x21, 0x12, &[0; 12]), Error::Unsupported(0x12)),
        (v2(0x21, 0x22, &[0; 36]), Error::Unsupported(0x22)),
        (v2(0x21, 0x31, &[0; 216]), Error::Unsupported(0x31)),
        (v2(0x21, 0x32, &[0; 216]), Error::Unsupported(0x32)),
        (v2(0x21, 0x10, &[0; 12]), Error::V2Family(0x10)),
        (v2(0x21, 0x13, &[0; 12]), Error::V2Family(0x13)),
        (v2(0x21, 0x41, &[0; 12]), Error::V2Family(0x41)),
        (v2(0x21, 0x11, &[0; 11]), Error::V2Length { len: 11 }),
        (v2(0x21, 0x21, &[0; 12]), Error::V2Length { len: 12 }),
        (v2(0x21, 0x21, &[]), Error::V2Length { len: 0 }),
    ];
    for (bytes, error) in cases {
        assert_eq!(parse(bytes, MAX), Err(*error), "{bytes:?}");
        // Known from the fixed part alone, before the body arrives.
        assert_eq!(parse(&bytes[..16], MAX), Err(*error), "{bytes:?}");
    }
    // Version and command are refused from byte 12, the family from byte 13.
    assert_eq!(
        parse(&v2(0x11, 0, &[])[..13], MAX),
        Err(Error::V2Version(1))
    );
    assert_eq!(
        parse(&v2(0x21, 0x12, &[])[..14], MAX),
        Err(Error::Unsupported(0x12))
    );
}

#[test]
fn max_len_is_enforced() {
    let mut tlvs = vec![0x04, 0, 100];
    tlvs.extend([0; 100]);
    let bytes = v2_tcp4(addr("192.0.2.1:1"), addr("192.0.2.2:2"), &tlvs);
    let len = bytes.len();
    assert_eq!(len, 131);
    assert!(matches!(parse(&bytes, len), Ok(Some(_))));
    // Refused from the length field, before the body arrives.
    assert_eq!(
        parse(&bytes[..16], len - 1),
        Err(Error::TooLong { max_len: len - 1 })
    );
    assert_eq!(
        parse(&bytes, len - 1),
        Err(Error::TooLong { max_len: len - 1 })
    );

    let line = b"PROXY TCP4 192.0.2.1 198.51.100.22 51234 443\r\n";
    assert!(matches!(parse(line, line.len()), Ok(Some(_))));
    let short = line.len() - 1;
    assert_eq!(parse(line, short), Err(Error::TooLong { max_len: short }));
    assert_eq!(
        parse(&line[..short], short),
        Err(Error::TooLong { max_len: short })
    );
    assert_eq!(parse(&line[..short - 1], short), Ok(None));
    // Even the fixed part of v2 must fit.
    assert_eq!(parse(&bytes[..8], 8), Err(Error::TooLong { max_len: 8 }));
    assert_eq!(parse(&bytes[..7], 8), Ok(None));
}

#[test]
fn errors_say_what_is_wrong() {
    assert_eq!(Error::NotProxy.to_string(), "not a PROXY protocol header");
    assert_eq!(
        Error::TooLong { max_len: 64 }.to_string(),
        "PROXY header longer than 64 bytes"
    );
    assert_eq!(
        Error::Unsupported(0x12).to_string(),
        "PROXY v2: family/protocol 0x12 (UDP or UNIX) is not supported"
    );
    assert_eq!(
        Error::V2Family(0x41).to_string(),
        "PROXY v2: unknown address family/protocol 0x41"
    );
}

/// Valid headers of every form, from generated addresses.
fn valid_header() -> impl Strategy<Value = Vec<u8>> {
    let v4 = any::<(std::net::SocketAddrV4, std::net::SocketAddrV4)>();
    let v6 = any::<(std::net::SocketAddrV6, std::net::SocketAddrV6)>();
    let tlvs = proptest::collection::vec(any::<u8>(), 0..40);
    prop_oneof![
        v4.clone().prop_map(|(s, d)| format!(
            "PROXY TCP4 {} {} {} {}\r\n",
            s.ip(),
            d.ip(),
            s.port(),
            d.port()
        )
        .into_bytes()),
        v6.clone().prop_map(|(s, d)| format!(
            "PROXY TCP6 {} {} {} {}\r\n",
            s.ip(),
            d.ip(),
            s.port(),
            d.port()
        )
        .into_bytes()),
        "[ -~]{0,90}".prop_map(|rest| format!("PROXY UNKNOWN {rest}\r\n").into_bytes()),
        (v4, tlvs.clone()).prop_map(|((s, d), t)| v2_tcp4(s.into(), d.into(), &t)),
        (v6, tlvs.clone()).prop_map(|((s, d), t)| v2_tcp6(
            SocketAddr::V6(std::net::SocketAddrV6::new(*s.ip(), s.port(), 0, 0)),
            SocketAddr::V6(std::net::SocketAddrV6::new(*d.ip(), d.port(), 0, 0)),
            &t
        )),
        (any::<u8>(), tlvs).prop_map(|(family, t)| v2(0x20, family, &t)),
    ]
}

/// Valid headers, then damaged: a byte changed, cut short or followed by more bytes.
fn mangled_header() -> impl Strategy<Value = Vec<u8>> {
    (
        valid_header(),
        any::<(usize, u8)>(),
        any::<proptest::sample::Index>(),
        proptest::collection::vec(any::<u8>(), 0..20),
    )
        .prop_map(|(mut bytes, (at, xor), keep, tail)| {
            let at = at % bytes.len();
            bytes[at] ^= xor;
            bytes.truncate(keep.index(bytes.len() + 1));
            bytes.extend(tail);
            bytes
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), max in 0usize..300) {
        let _ = parse(&bytes, max);
    }

    #[test]
    fn valid_headers_parse_whole_and_partial(header in valid_header(), tail in proptest::collection::vec(any::<u8>(), 0..20)) {
        let mut bytes = header.clone();
        bytes.extend(tail);
        let parsed = parse(&bytes, MAX).unwrap().unwrap();
        prop_assert_eq!(parsed.len(), header.len());
        for cut in 0..header.len() {
            prop_assert_eq!(parse(&bytes[..cut], MAX), Ok(None));
        }
    }

    #[test]
    fn prefixes_agree_with_the_whole(bytes in mangled_header(), max in prop_oneof![Just(MAX), 0usize..120]) {
        let whole = parse(&bytes, max);
        for cut in 0..bytes.len() {
            let prefix = parse(&bytes[..cut], max);
            prop_assert!(prefix == Ok(None) || prefix == whole, "cut {}: {:?} vs {:?}", cut, prefix, whole);
        }
        if let Ok(Some(header)) = whole {
            prop_assert!(header.len() <= bytes.len() && header.len() <= max);
        }
    }
}
