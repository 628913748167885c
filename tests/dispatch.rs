//! Routing end to end: the real `stickyd` binary, the hello worker, loopback clients.

mod util;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use util::*;

#[test]
fn same_address_same_worker_and_addresses_spread() {
    let s = Stickyd::start_ready(&["--listen", "127.0.0.1:0", "--workers", "4"], 4);
    let mut seen = HashMap::new();
    for n in 2..=33u8 {
        let source = lo(n);
        for _ in 0..3 {
            let r = get(s.addr(), Some(source), "/", &[]);
            assert_eq!(r.status, 200);
            assert_eq!(r.header("x-peer"), Some(source.to_string().as_str()));
            assert_eq!(r.body, format!("worker: {}\n", r.worker()).into_bytes());
            let first = *seen.entry(source).or_insert(r.worker());
            assert_eq!(first, r.worker(), "{source} moved between workers");
        }
    }
    let workers: HashSet<u32> = seen.values().copied().collect();
    assert!(
        workers.len() >= 3,
        "32 addresses reached only workers {workers:?} of 4"
    );
    assert!(workers.iter().all(|w| *w < 4));
}

#[test]
fn x_forwarded_for_routes_like_a_direct_client_whatever_the_case() {
    let s = Stickyd::start_ready(
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "4",
            "--key",
            "header:X-Forwarded-For",
        ],
        4,
    );
    let mut workers = HashSet::new();
    for n in 40..=55u8 {
        let client = lo(n);
        // Directly, without the header: the fallback rule (ip) routes by the address.
        let direct = get(s.addr(), Some(client), "/", &[]).worker();
        workers.insert(direct);
        for name in ["X-Forwarded-For", "x-forwarded-for", "X-FORWARDED-FOR"] {
            let header = format!("{name}: {client}, 10.9.9.9");
            let via = get(s.addr(), Some(lo(1)), "/", &[&header]);
            assert_eq!(
                via.worker(),
                direct,
                "{client} via `{name}` went elsewhere than directly"
            );
            assert_eq!(via.header("x-peer"), Some("127.0.0.1"));
        }
        // A port on the element is dropped.
        let header = format!("X-Forwarded-For: {client}:4567");
        assert_eq!(get(s.addr(), Some(lo(1)), "/", &[&header]).worker(), direct);
    }
    assert!(workers.len() >= 2, "16 clients all on {workers:?}");
}

#[test]
fn headers_in_pieces_are_routed_by_the_key_without_burning_cpu() {
    let s = Stickyd::start_ready(
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "4",
            "--key",
            "header:x-forwarded-for",
            "--peek-timeout",
            "60s",
        ],
        4,
    );
    let key = "10.20.30.40";
    let expected = get(
        s.addr(),
        Some(lo(1)),
        "/",
        &[&format!("X-Forwarded-For: {key}")],
    )
    .worker();

    // Several clients each send their request in three writes with pauses in between.
    let pause = Duration::from_millis(1500);
    let mut clients: Vec<_> = (0..8u8)
        .map(|i| {
            let mut c = connect(s.addr(), Some(lo(60 + i)));
            c.write_all(b"GET / HTTP/1.1\r\nHost: te").unwrap();
            c
        })
        .collect();
    let cpu_before = s.cpu_time();
    let started = Instant::now();
    std::thread::sleep(pause);
    for c in &mut clients {
        c.write_all(b"st\r\nUser-Agent: pieces\r\nX-Forwarded-")
            .unwrap();
    }
    std::thread::sleep(pause);
    let waited = started.elapsed();
    let cpu = s.cpu_time().saturating_sub(cpu_before);
    for c in &mut clients {
        c.write_all(format!("For: {key}\r\n\r\n").as_bytes())
            .unwrap();
    }
    for c in &mut clients {
        let r = read_response(c);
        assert_eq!(
            r.worker(),
            expected,
            "routed by something other than the key"
        );
    }
    assert!(
        cpu < waited / 10,
        "the master used {cpu:?} of CPU while clients paused for {waited:?}"
    );
}

#[test]
fn a_client_that_hangs_up_mid_header_is_decided_at_once() {
    let s = Stickyd::start_ready(
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--key",
            "header:x-forwarded-for",
            "--peek-timeout",
            "60s",
        ],
        2,
    );
    let mut c = connect(s.addr(), Some(lo(70)));
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Forw").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    c.shutdown(Shutdown::Write).unwrap();
    // The master routes it by the fallback at once; the worker sees a truncated request and
    // closes. Either way the client sees the end long before the 60 s deadline.
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "held until {:?}",
        started.elapsed()
    );
    // And a client that sends nothing and closes costs nothing: the master keeps serving.
    for _ in 0..20 {
        drop(connect(s.addr(), Some(lo(71))));
    }
    assert_eq!(get(s.addr(), Some(lo(72)), "/", &[]).status, 200);
}

#[test]
fn the_peek_deadline_falls_back_to_the_client_address() {
    let s = Stickyd::start_ready(
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "4",
            "--key",
            "header:x-forwarded-for",
            "--peek-timeout",
            "300ms",
        ],
        4,
    );
    for n in 80..88u8 {
        let client = lo(n);
        let direct = get(s.addr(), Some(client), "/", &[]).worker();
        let mut c = connect(s.addr(), Some(client));
        // Headers never finish before the deadline; the key would send it elsewhere if read.
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(900));
        c.write_all(b"X-Forwarded-For: 10.1.2.3\r\n\r\n").unwrap();
        let r = read_response(&mut c);
        assert_eq!(r.worker(), direct, "{client}: not routed by its address");
    }
}

#[test]
fn on_timeout_close_closes_instead() {
    let s = Stickyd::start_ready(
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--key",
            "header:x-forwarded-for",
            "--peek-timeout",
            "300ms",
            "--on-timeout",
            "close",
        ],
        2,
    );
    let mut c = connect(s.addr(), Some(lo(90)));
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let mut rest = Vec::new();
    let n = c.read_to_end(&mut rest).unwrap_or(0);
    assert_eq!(
        n,
        0,
        "expected a close, got {:?}",
        String::from_utf8_lossy(&rest)
    );
    // A complete request is still served.
    let r = get(s.addr(), Some(lo(90)), "/", &["X-Forwarded-For: 10.0.0.9"]);
    assert_eq!(r.status, 200);
}

#[test]
fn two_named_listeners_share_one_pool() {
    let s = Stickyd::start_ready(
        &[
            "--listen",
            "web=127.0.0.1:0",
            "--listen",
            "api=127.0.0.1:0",
            "--workers",
            "2",
        ],
        2,
    );
    assert_eq!(s.listeners[0].0, "web");
    assert_eq!(s.listeners[1].0, "api");
    for n in 100..110u8 {
        let web = get(s.listeners[0].1, Some(lo(n)), "/", &[]);
        let api = get(s.listeners[1].1, Some(lo(n)), "/", &[]);
        assert_eq!(web.header("x-listener"), Some("web"));
        assert_eq!(api.header("x-listener"), Some("api"));
        assert_eq!(
            web.worker(),
            api.worker(),
            "one client, one worker, any listener"
        );
    }
}

#[test]
fn keep_alive_stays_with_its_worker_and_large_bodies_pass() {
    let s = Stickyd::start_ready(&["--listen", "127.0.0.1:0", "--workers", "2"], 2);
    let mut c = connect(s.addr(), Some(lo(120)));
    let mut first = None;
    for _ in 0..5 {
        c.write_all(request("/", &[]).as_bytes()).unwrap();
        let r = read_response(&mut c);
        assert_eq!(*first.get_or_insert(r.worker()), r.worker());
    }
    c.write_all(request("/bytes/1048576", &[]).as_bytes())
        .unwrap();
    let r = read_response(&mut c);
    assert_eq!(r.body.len(), 1 << 20);
    assert!(r.body.iter().all(|&b| b == b'x'));
    c.write_all(request("/", &["Connection: close"]).as_bytes())
        .unwrap();
    let r = read_response(&mut c);
    assert_eq!(r.status, 200);
    let mut rest = Vec::new();
    assert_eq!(
        c.read_to_end(&mut rest).unwrap(),
        0,
        "not closed after Connection: close"
    );
}

#[test]
fn an_external_worker_command_serves_like_the_built_in_one() {
    let worker = hello_worker_bin();
    let s = Stickyd::start_ready(
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--",
            worker.to_str().unwrap(),
        ],
        2,
    );
    let r = get(s.addr(), Some(lo(130)), "/", &[]);
    assert_eq!(r.status, 200);
    assert!(r.worker() < 2);
    assert_eq!(r.header("x-listener"), Some("l0"));
}

#[test]
fn connections_that_close_early_leak_no_fd() {
    let s = Stickyd::start_ready(
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--key",
            "header:x-forwarded-for",
        ],
        2,
    );
    assert_eq!(get(s.addr(), Some(lo(140)), "/", &[]).status, 200);
    let before = s.fd_count();
    for i in 0..50u8 {
        let mut c = connect(s.addr(), Some(lo(141)));
        if i % 2 == 0 {
            c.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
        }
        drop(c);
    }
    // Served requests in between, too.
    for _ in 0..10 {
        assert_eq!(get(s.addr(), Some(lo(142)), "/", &[]).status, 200);
    }
    assert!(
        eventually(TIMEOUT, || s.fd_count() <= before),
        "the master holds {} fds, {} before",
        s.fd_count(),
        before
    );
}

#[test]
fn accept_is_rearmed_after_the_fd_limit() {
    // With 64 fds the master runs out while clients hold their headers back: its multishot
    // accept ends with EMFILE, waiting clients stay in the listen backlog, and once the pending
    // connections are handed off (freeing their fds) accepting resumes and every client is
    // served.
    let s = Stickyd::start_with_nofile(
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--key",
            "header:x-forwarded-for",
            "--peek-timeout",
            "60s",
        ],
        64,
    );
    s.wait_ready(2);
    let mut clients: Vec<_> = (0..80u8)
        .map(|i| {
            let mut c = connect(s.addr(), Some(lo(150)));
            c.write_all(format!("GET /{i} HTTP/1.1\r\nHost: x\r\n").as_bytes())
                .unwrap();
            c
        })
        .collect();
    s.wait_log("Too many open files", TIMEOUT);
    for (i, c) in clients.iter_mut().enumerate() {
        c.write_all(format!("X-Forwarded-For: 10.0.{i}.1\r\n\r\n").as_bytes())
            .unwrap();
    }
    for c in &mut clients {
        assert_eq!(read_response(c).status, 200);
    }
    // Served afterwards too.
    assert_eq!(get(s.addr(), Some(lo(151)), "/", &[]).status, 200);
}
