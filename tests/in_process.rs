//! In-process workers: the dispatcher hands connections to threads of its own process
//! (`examples/in_process.rs`, the library's `Dispatcher::thread_workers`), with the same key
//! rules and hashing as worker processes.

mod util;

use std::io::{Read, Write};
use std::net::IpAddr;
use std::time::Duration;

use stickyd::keys::Key;
use util::{Stickyd, TIMEOUT, example_bin, get, request};

const WORKERS: u32 = 3;

fn start() -> Stickyd {
    start_with(&["--key", "header:x-user"])
}

fn start_with(extra: &[&str]) -> Stickyd {
    let workers = WORKERS.to_string();
    let mut args = vec!["--listen", "127.0.0.1:0", "--workers", &workers];
    args.extend_from_slice(extra);
    Stickyd::start_program(&example_bin("in_process"), &args)
}

#[test]
fn threads_stay_sticky_and_match_the_process_mapping() {
    let s = start();
    s.wait_log("started 3 workers (in-process threads)", TIMEOUT);
    for round in 0..3 {
        for user in 0..30 {
            let user = format!("user-{user}");
            let header = format!("X-User: {user}");
            let r = get(s.addr(), None, "/", &[&header]);
            assert_eq!(r.status, 200, "round {round}, {user}");
            // The same hash as worker processes: the key's owner among 3 slots.
            assert_eq!(
                r.worker(),
                util::owner(Key::Bytes(user.as_bytes()), WORKERS),
                "round {round}, {user}"
            );
            assert_eq!(r.header("x-peer"), Some("127.0.0.1"));
            assert_eq!(r.header("x-listener"), Some("l0"));
        }
    }
}

#[test]
fn sigterm_finishes_what_was_accepted_and_exits_zero() {
    let mut s = start();
    s.wait_log("started 3 workers (in-process threads)", TIMEOUT);
    // A request whose head is not complete yet when the signal arrives: it is still routed
    // (its peek deadline applies) and answered by its thread.
    let mut slow = util::connect(s.addr(), None);
    let full = request("/", &["X-User: late"]);
    let (first, rest) = full.split_at(10);
    slow.write_all(first.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    s.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(200));
    slow.write_all(rest.as_bytes()).unwrap();
    let r = util::read_response(&mut slow);
    assert_eq!(r.status, 200);
    assert_eq!(r.worker(), util::owner(Key::Bytes(b"late"), WORKERS));
    let status = s.wait_exit(TIMEOUT);
    assert!(status.success(), "{status}; log: {:#?}", s.log());
}

#[test]
fn with_rehash_per_request_each_request_on_a_kept_connection_reaches_its_keys_thread() {
    let s = start_with(&[
        "--key",
        "header:x-forwarded-for",
        "--rehash-per-request",
        "--metrics",
        "127.0.0.1:0",
        "--peek-timeout",
        "1s",
    ]);
    s.wait_log("started 3 workers (in-process threads)", TIMEOUT);
    let ips: Vec<IpAddr> = (1..=24).map(|i| IpAddr::from([10, 0, 0, i])).collect();
    let owner_of = |ip| util::owner(Key::Addr(ip), WORKERS);
    assert!(ips.iter().any(|&ip| owner_of(ip) != owner_of(ips[0])));
    let mut c = util::connect(s.addr(), None);
    // One at a time, then all pipelined in one write: each request by its key's thread, in
    // order (the thread reads one request, so the next stays in the socket).
    for &ip in &ips {
        let xff = format!("X-Forwarded-For: {ip}");
        c.write_all(request("/", &[&xff]).as_bytes()).unwrap();
        let r = util::read_response(&mut c);
        assert_eq!((r.status, r.worker()), (200, owner_of(ip)), "{ip}");
        assert_eq!(r.header("connection"), None);
    }
    let all: String = ips
        .iter()
        .map(|ip| request("/", &[&format!("X-Forwarded-For: {ip}")]))
        .collect();
    c.write_all(all.as_bytes()).unwrap();
    for &ip in &ips {
        let r = util::read_response(&mut c);
        assert_eq!(
            (r.status, r.worker()),
            (200, owner_of(ip)),
            "pipelined {ip}"
        );
    }
    // One TCP connection; handed back after every response.
    let handbacks = || {
        let (_, body) = util::scrape(s.metrics_addr(), "/metrics");
        (
            util::metric_sum(&body, "stickyd_connections_accepted_total"),
            util::metric_sum(&body, "stickyd_handbacks_total"),
        )
    };
    let wanted = (1.0, (2 * ips.len()) as f64);
    assert!(
        util::eventually(TIMEOUT, || handbacks() == wanted),
        "{:?}",
        handbacks()
    );
    // The last hand-back was idle: the dispatcher closes it at its peek deadline, as a server
    // closes an idle kept-alive connection, rather than route it by the fallback.
    let mut rest = Vec::new();
    assert_eq!(c.read_to_end(&mut rest).unwrap(), 0, "{rest:?}");
    let (_, body) = util::scrape(s.metrics_addr(), "/metrics");
    assert_eq!(util::metric_sum(&body, "stickyd_fallbacks_total"), 0.0);
}
