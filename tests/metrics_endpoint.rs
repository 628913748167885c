//! The metrics endpoint alone, over real loopback sockets: `/metrics`, `/healthz`, errors, and a
//! silent client that cannot hold the thread.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use stickyd::metrics::{Metrics, serve};

/// Generous: the machine is shared and tests run in parallel.
const TIMEOUT: Duration = Duration::from_secs(30);

fn start(workers: u32) -> (SocketAddr, Arc<Metrics>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    let metrics = Arc::new(Metrics::new(&["l0".to_string()], workers));
    let thread = serve(listener, Arc::clone(&metrics)).expect("serve");
    assert_eq!(thread.thread().name(), Some("stickyd-metrics"));
    (addr, metrics)
}

/// Sends `request`, reads to end of file: (status, headers, body).
fn exchange(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(TIMEOUT))
        .expect("read timeout");
    stream.write_all(request.as_bytes()).expect("send request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    (status, head.to_string(), body.to_string())
}

fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    exchange(addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"))
}

#[test]
fn metrics_are_served_as_prometheus_text() {
    let (addr, metrics) = start(2);
    metrics.accepted(0);
    metrics.dispatched(1, 0);
    let (status, head, body) = get(addr, "/metrics");
    assert_eq!(status, 200, "{head}");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8"));
    assert!(head.contains("\r\nConnection: close"));
    assert!(head.contains(&format!("\r\nContent-Length: {}", body.len())));
    assert!(
        body.lines()
            .any(|l| l == r#"stickyd_connections_accepted_total{listener="l0"} 1"#)
    );
    assert!(
        body.lines()
            .any(|l| l == r#"stickyd_connections_dispatched_total{worker="1",listener="l0"} 1"#)
    );

    // Scrapes see new counts; HEAD has the headers only.
    metrics.accepted(0);
    let (_, _, body) = get(addr, "/metrics?x=1");
    assert!(
        body.lines()
            .any(|l| l == r#"stickyd_connections_accepted_total{listener="l0"} 2"#)
    );
    let (status, head, body) = exchange(addr, "HEAD /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status, 200, "{head}");
    assert!(body.is_empty());
}

#[test]
fn healthz_follows_live_workers() {
    let (addr, metrics) = start(2);
    let (status, _, body) = get(addr, "/healthz");
    assert_eq!((status, body.as_str()), (503, "no live worker\n"));
    metrics.set_live(0, true);
    let (status, _, body) = get(addr, "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    metrics.set_live(0, false);
    assert_eq!(get(addr, "/healthz").0, 503);
}

#[test]
fn other_paths_methods_and_garbage_are_refused() {
    let (addr, _) = start(1);
    assert_eq!(get(addr, "/").0, 404);
    assert_eq!(get(addr, "/metricsx").0, 404);
    let (status, head, _) = exchange(addr, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(status, 405);
    assert!(head.contains("\r\nAllow: GET, HEAD"), "{head}");
    assert_eq!(exchange(addr, "DELETE /healthz HTTP/1.1\r\n\r\n").0, 405);
    assert_eq!(exchange(addr, "hello there\r\n\r\n").0, 400);
    // A head that does not end within 8 KiB (exactly 8 KiB sent, so the server reads every
    // byte and closes cleanly rather than with a reset).
    let mut long = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    long.resize(8 * 1024, b'a');
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(TIMEOUT))
        .expect("read timeout");
    stream.write_all(&long).expect("send the long head");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read the answer");
    assert!(
        answer.starts_with(b"HTTP/1.1 431 "),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    // And the thread still serves.
    assert_eq!(get(addr, "/metrics").0, 200);
}

#[test]
fn a_silent_client_does_not_hold_the_endpoint() {
    let (addr, _) = start(1);
    let mut silent = TcpStream::connect(addr).expect("connect the silent client");
    // The next client is answered once the silent one's read deadline (2 s) has passed.
    let (status, _, _) = get(addr, "/metrics");
    assert_eq!(status, 200);
    // The silent client was dropped: end of file, not an answer.
    silent
        .set_read_timeout(Some(TIMEOUT))
        .expect("read timeout");
    let mut rest = Vec::new();
    let read = silent.read_to_end(&mut rest);
    assert!(read.is_ok() && rest.is_empty(), "{read:?} {rest:?}");
}
