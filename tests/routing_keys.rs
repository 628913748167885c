//! Every key rule end to end: the real binary routes each connection to exactly the worker the
//! library's hash and rendezvous pick name for its key.

mod util;

#[path = "util/tls.rs"]
mod tls;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::IpAddr;

use stickyd::keys::Key;
use util::*;

fn start(workers: u32, extra: &[&str]) -> Stickyd {
    let n = workers.to_string();
    let mut args = vec!["--listen", "127.0.0.1:0", "--workers", n.as_str()];
    args.extend_from_slice(extra);
    Stickyd::start_ready(&args, workers as usize)
}

#[test]
fn cookie_routes_by_its_value_whatever_the_client_address() {
    let s = start(4, &["--key", "cookie:sid"]);
    let mut seen = HashSet::new();
    for i in 0..12u8 {
        let sid = format!("session-{i}");
        let expected = owner(Key::Bytes(sid.as_bytes()), 4);
        seen.insert(expected);
        for (n, cookie) in [
            format!("Cookie: sid={sid}"),
            format!("Cookie: theme=dark; sid={sid}; lang=en"),
            format!("cookie: a=1;sid={sid}"),
        ]
        .iter()
        .enumerate()
        {
            let source = lo(20 + n as u8 * 3 + i % 3);
            let r = get(s.addr(), Some(source), "/", &[cookie]);
            assert_eq!(r.worker(), expected, "{cookie} from {source}");
        }
        // In a second Cookie header too.
        let r = get(
            s.addr(),
            Some(lo(2)),
            "/",
            &["Cookie: theme=dark", &format!("Cookie: sid={sid}")],
        );
        assert_eq!(r.worker(), expected);
    }
    assert!(seen.len() >= 2);
    // No sid cookie: the fallback rule (ip) decides.
    let source = lo(40);
    let r = get(s.addr(), Some(source), "/", &["Cookie: other=1; sid="]);
    assert_eq!(r.worker(), owner(Key::Addr(source), 4));
}

#[test]
fn query_parameter_routes_by_its_raw_value() {
    let s = start(4, &["--key", "query:room"]);
    for room in ["1", "42", "lobby", "a%20b", "x-y-z", "9999"] {
        let expected = owner(Key::Bytes(room.as_bytes()), 4);
        for target in [
            format!("/chat?room={room}"),
            format!("/chat?user=ann&room={room}&x=1"),
            format!("/chat?room={room}#frag"),
        ] {
            let r = get(s.addr(), Some(lo(3)), &target, &[]);
            assert_eq!(r.worker(), expected, "{target}");
        }
    }
    let source = lo(41);
    let r = get(s.addr(), Some(source), "/chat?rooms=1", &[]);
    assert_eq!(r.worker(), owner(Key::Addr(source), 4));
}

/// Sends raw bytes and reads the hello worker's answer; the trailing empty line makes it
/// answer `400` at once (it is not HTTP), with its `X-Worker` header.
fn send_raw(s: &Stickyd, source: IpAddr, bytes: &[u8]) -> Response {
    let mut c = connect(s.addr(), Some(source));
    c.write_all(bytes).unwrap();
    c.write_all(b"\r\n\r\n").unwrap();
    read_response(&mut c)
}

#[test]
fn sni_routes_a_tls_client_hello_even_when_it_arrives_in_pieces() {
    let s = start(4, &["--key", "sni", "--peek-timeout", "60s"]);
    let mut seen = HashSet::new();
    for host in [
        "a.example",
        "b.example",
        "api.example.com",
        "x.test",
        "shop.test",
    ] {
        let expected = owner(Key::Bytes(host.as_bytes()), 4);
        seen.insert(expected);
        let hello = tls::records(&tls::client_hello(Some(host.as_bytes()), 32, 256), &[]);
        assert_eq!(send_raw(&s, lo(4), &hello).worker(), expected, "{host}");
        // In three pieces with pauses: the master waits for the whole ClientHello.
        let mut c = connect(s.addr(), Some(lo(5)));
        for chunk in hello.chunks(hello.len() / 3 + 1) {
            c.write_all(chunk).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        c.write_all(b"\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut c).worker(), expected, "{host} in pieces");
    }
    assert!(seen.len() >= 2);
    // Not TLS: the fallback rule.
    let source = lo(42);
    let r = get(s.addr(), Some(source), "/", &[]);
    assert_eq!(r.worker(), owner(Key::Addr(source), 4));
}

#[test]
fn proxy_protocol_v1_and_v2_give_the_carried_address() {
    let s = start(4, &["--proxy-protocol"]);
    for (n, client) in ["10.1.1.1", "192.0.2.77", "2001:db8::5"].iter().enumerate() {
        let ip: IpAddr = client.parse().unwrap();
        let expected = owner(Key::Addr(ip), 4);
        let family = if ip.is_ipv4() { "TCP4" } else { "TCP6" };
        let dst = if ip.is_ipv4() { "127.0.0.1" } else { "::1" };
        let v1 = format!("PROXY {family} {client} {dst} 4321 80\r\n");
        let mut c = connect(s.addr(), Some(lo(6 + n as u8)));
        c.write_all(v1.as_bytes()).unwrap();
        c.write_all(request("/", &[]).as_bytes()).unwrap();
        let r = read_response(&mut c);
        assert_eq!(r.header("x-peer"), Some(client.to_string().as_str()));
        assert_eq!(r.worker(), expected, "{client} via PROXY v1");

        let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21".to_vec();
        match ip {
            IpAddr::V4(a) => {
                v2.extend_from_slice(&[0x11, 0x00, 12]);
                v2.extend_from_slice(&a.octets());
                v2.extend_from_slice(&[127, 0, 0, 1]);
            }
            IpAddr::V6(a) => {
                v2.extend_from_slice(&[0x21, 0x00, 36]);
                v2.extend_from_slice(&a.octets());
                v2.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
            }
        }
        v2.extend_from_slice(&[0x10, 0xe1, 0x00, 0x50]);
        let mut c = connect(s.addr(), Some(lo(9)));
        c.write_all(&v2).unwrap();
        c.write_all(request("/", &[]).as_bytes()).unwrap();
        let r = read_response(&mut c);
        assert_eq!(r.header("x-peer"), Some(client.to_string().as_str()));
        assert_eq!(r.worker(), expected, "{client} via PROXY v2");
    }
    // The balancer's health check (v2 LOCAL, v1 UNKNOWN): the real peer.
    let mut c = connect(s.addr(), Some(lo(10)));
    c.write_all(b"PROXY UNKNOWN\r\n").unwrap();
    c.write_all(request("/", &[]).as_bytes()).unwrap();
    let r = read_response(&mut c);
    assert_eq!(r.header("x-peer"), Some("127.0.0.10"));
    let mut c = connect(s.addr(), Some(lo(11)));
    c.write_all(b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00")
        .unwrap();
    c.write_all(request("/", &[]).as_bytes()).unwrap();
    assert_eq!(read_response(&mut c).header("x-peer"), Some("127.0.0.11"));
}

#[test]
fn a_malformed_proxy_header_closes_the_connection_and_never_reaches_a_worker() {
    let s = start(2, &["--proxy-protocol", "--peek-timeout", "60s"]);
    for bad in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
        b"PROXY TCP4 999.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP9 1.2.3.4 5.6.7.8 1 2\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x31\x11\x00\x0c",
    ] {
        let mut c = connect(s.addr(), Some(lo(12)));
        c.write_all(bad).unwrap();
        let mut rest = Vec::new();
        let n = c.read_to_end(&mut rest).unwrap_or(0);
        assert_eq!(
            n,
            0,
            "{:?} was answered: {:?}",
            String::from_utf8_lossy(bad),
            String::from_utf8_lossy(&rest)
        );
    }
    // A header that stops half-way and a client that hangs up: closed too, at once.
    let mut c = connect(s.addr(), Some(lo(13)));
    c.write_all(b"PROXY TCP4 1.2.3.4 ").unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    assert_eq!(c.read_to_end(&mut rest).unwrap_or(0), 0);
    // Good clients are still served.
    let mut c = connect(s.addr(), Some(lo(14)));
    c.write_all(b"PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r\n")
        .unwrap();
    c.write_all(request("/", &[]).as_bytes()).unwrap();
    assert_eq!(read_response(&mut c).status, 200);
}

#[test]
fn trusted_proxies_decide_whose_forwarded_addresses_count() {
    let s = start(
        4,
        &[
            "--key",
            "header:x-forwarded-for",
            "--trust",
            "127.0.0.2/32",
            "--trust",
            "10.0.0.0/8",
        ],
    );
    for client in ["192.0.2.1", "198.51.100.7", "203.0.113.9", "2001:db8::1"] {
        let ip: IpAddr = client.parse().unwrap();
        let expected = owner(Key::Addr(ip), 4);
        // From the trusted proxy: the rightmost address outside the trusted networks.
        let xff = format!("X-Forwarded-For: 6.6.6.6, {client}, 10.1.2.3");
        let r = get(s.addr(), Some(lo(2)), "/", &[&xff]);
        assert_eq!(r.worker(), expected, "{xff}");
        // Across several headers, in order.
        let r = get(
            s.addr(),
            Some(lo(2)),
            "/",
            &[
                "X-Forwarded-For: 6.6.6.6",
                &format!("X-Forwarded-For: {client}, 10.9.9.9"),
            ],
        );
        assert_eq!(r.worker(), expected, "two headers");
    }
    // From an untrusted peer the header is ignored: its own address decides (the fallback).
    for n in 30..38u8 {
        let source = lo(n);
        let r = get(s.addr(), Some(source), "/", &["X-Forwarded-For: 192.0.2.1"]);
        assert_eq!(
            r.worker(),
            owner(Key::Addr(source), 4),
            "{source} forged a header"
        );
    }
}

#[test]
fn a_proxy_header_from_an_untrusted_peer_closes_the_connection() {
    let s = start(2, &["--proxy-protocol", "--trust", "127.0.0.2/32"]);
    let mut c = connect(s.addr(), Some(lo(3)));
    let _ = c.write_all(b"PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r\n");
    let _ = c.write_all(request("/", &[]).as_bytes());
    let mut rest = Vec::new();
    assert_eq!(
        c.read_to_end(&mut rest).unwrap_or(0),
        0,
        "served an untrusted proxy"
    );
    // The trusted one is served, and its client address is believed.
    let mut c = connect(s.addr(), Some(lo(2)));
    c.write_all(b"PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r\n")
        .unwrap();
    c.write_all(request("/", &[]).as_bytes()).unwrap();
    let r = read_response(&mut c);
    assert_eq!(r.header("x-peer"), Some("10.0.0.1"));
}

#[test]
fn a_custom_key_function_routes_by_a_path_segment() {
    let example = example_bin("path_token");
    let s = Stickyd::start_program(&example, &["--listen", "127.0.0.1:0", "--workers", "4"]);
    s.wait_ready(4);
    let mut seen = HashSet::new();
    for room in ["blue", "red", "green", "a1", "lobby-7"] {
        let expected = owner(Key::Bytes(room.as_bytes()), 4);
        seen.insert(expected);
        for (n, path) in [
            format!("/rooms/{room}"),
            format!("/rooms/{room}/messages?since=3"),
        ]
        .iter()
        .enumerate()
        {
            let r = get(s.addr(), Some(lo(50 + n as u8)), path, &[]);
            assert_eq!(r.worker(), expected, "{path}");
        }
    }
    assert!(seen.len() >= 2);
    let source = lo(60);
    let r = get(s.addr(), Some(source), "/elsewhere", &[]);
    assert_eq!(r.worker(), owner(Key::Addr(source), 4));
}
