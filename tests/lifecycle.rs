//! Workers that die, stall and restart: respawn, no-loss hand-off, back-pressure, drain, and
//! the metrics that show it.

mod util;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use stickyd::keys::Key;
use util::*;

/// A session key that goes to `worker` among `workers` when all are live.
fn session_for(worker: u32, workers: u32) -> String {
    (0..)
        .map(|i| format!("session-{i}"))
        .find(|s| owner(Key::Bytes(s.as_bytes()), workers) == worker)
        .expect("some key")
}

/// Sends a request with an `X-Session` header and returns the open connection.
fn send_session(s: &Stickyd, session: &str) -> TcpStream {
    let mut c = connect(s.addr(), Some(lo(2)));
    c.write_all(request("/", &[&format!("X-Session: {session}")]).as_bytes())
        .unwrap();
    c
}

/// Waits until the master holds `n` unacknowledged connections for `worker`.
fn wait_unacked(metrics: SocketAddr, worker: u32, n: u64) {
    let name = format!("stickyd_unacked_connections{{worker=\"{worker}\"}}");
    assert!(
        eventually(TIMEOUT, || metric_sum(
            &scrape(metrics, "/metrics").1,
            &name
        ) == n as f64),
        "worker {worker} never held {n}: {}",
        scrape(metrics, "/metrics").1
    );
}

#[test]
fn a_killed_worker_comes_back_and_only_its_keys_move_meanwhile() {
    let s = Stickyd::start_ready(&["--listen", "127.0.0.1:0", "--workers", "4"], 4);
    let sources: Vec<_> = (2..40u8).map(lo).collect();
    let before: HashMap<_, _> = sources
        .iter()
        .map(|&ip| (ip, get(s.addr(), Some(ip), "/", &[]).worker()))
        .collect();
    let victim = before[&sources[0]];
    let pid = s.worker_pid(victim);
    signal(pid, libc::SIGKILL);
    // Every request is served, and no healthy key moves, whether the victim is back yet or not.
    // (Its own keys wait up to --respawn-hold for its replacement, then move until it is back.)
    for &ip in &sources {
        let r = get(s.addr(), Some(ip), "/", &[]);
        assert_eq!(r.status, 200);
        if before[&ip] != victim {
            assert_eq!(
                r.worker(),
                before[&ip],
                "{ip} moved though its worker lived"
            );
        }
    }
    // It comes back, and so do its keys.
    assert!(
        eventually(TIMEOUT, || s.ready_count(victim) >= 2),
        "worker {victim} was not restarted; log: {:#?}",
        s.log()
    );
    assert_ne!(s.worker_pid(victim), pid);
    for &ip in &sources {
        assert_eq!(get(s.addr(), Some(ip), "/", &[]).worker(), before[&ip]);
    }
}

/// Six connections handed to a SIGSTOPped worker (never acknowledged), then the worker is
/// SIGKILLed: the master dispatches the six again. Returns the master, the killed pid and the
/// six responses.
fn six_queued_at_a_stopped_worker_that_dies(extra: &[&str]) -> (Stickyd, u32, Vec<Response>) {
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--key",
        "header:x-session",
        "--metrics",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let s = Stickyd::start_ready(&args, 2);
    let metrics = s.metrics_addr();
    let victim = 1;
    let session = session_for(victim, 2);
    let pid = s.worker_pid(victim);
    signal(pid, libc::SIGSTOP);
    let mut clients: Vec<_> = (0..6).map(|_| send_session(&s, &session)).collect();
    wait_unacked(metrics, victim, 6);
    // Handed to the stopped worker: no answer comes.
    clients[0]
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(
        clients[0].read(&mut byte).is_err(),
        "a stopped worker answered"
    );
    clients[0].set_read_timeout(Some(TIMEOUT)).unwrap();
    signal(pid, libc::SIGKILL);
    let responses: Vec<Response> = clients.iter_mut().map(read_response).collect();
    s.wait_log("left 6 connections unacknowledged", TIMEOUT);
    (s, pid, responses)
}

#[test]
fn connections_queued_at_a_stopped_worker_that_dies_wait_for_its_replacement() {
    // The default --respawn-hold (2s): the key waits for the same slot's next process.
    let (s, pid, responses) = six_queued_at_a_stopped_worker_that_dies(&[]);
    let victim = 1;
    for r in &responses {
        assert_eq!(r.status, 200);
        assert_eq!(r.worker(), victim, "served by another worker: {r:?}");
    }
    assert!(
        eventually(TIMEOUT, || s.ready_count(victim) >= 2),
        "worker {victim} was not restarted; log: {:#?}",
        s.log()
    );
    assert_ne!(
        s.worker_pid(victim),
        pid,
        "worker {victim} has no new process"
    );
}

#[test]
fn connections_queued_at_a_stopped_worker_that_dies_go_to_another_without_a_hold() {
    let (_s, _, responses) = six_queued_at_a_stopped_worker_that_dies(&["--respawn-hold", "0s"]);
    let victim = 1;
    for r in &responses {
        assert_eq!(r.status, 200);
        assert_ne!(r.worker(), victim, "waited for the replacement: {r:?}");
    }
}

#[test]
fn a_stalled_worker_at_max_queue_spills_its_keys_to_the_next() {
    let s = Stickyd::start_ready(
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--key",
            "header:x-session",
            "--max-queue",
            "4",
            "--metrics",
            "127.0.0.1:0",
        ],
        2,
    );
    let metrics = s.metrics_addr();
    let stalled = 0;
    let session = session_for(stalled, 2);
    let pid = s.worker_pid(stalled);
    signal(pid, libc::SIGSTOP);
    let mut queued: Vec<_> = (0..4).map(|_| send_session(&s, &session)).collect();
    // The four are the stalled worker's before the fifth arrives.
    wait_unacked(metrics, stalled, 4);
    let mut fifth = send_session(&s, &session);
    let r = read_response(&mut fifth);
    assert_eq!(r.worker(), 1 - stalled, "the fifth was not spilled");
    signal(pid, libc::SIGCONT);
    for c in &mut queued {
        assert_eq!(read_response(c).worker(), stalled);
    }
}

#[test]
fn a_worker_that_keeps_dying_is_restarted_with_a_growing_back_off_logged_once_per_step() {
    let s = Stickyd::start(&["--listen", "127.0.0.1:0", "--workers", "1", "--", "false"]);
    s.wait_log("restarting in 800ms", TIMEOUT);
    let delays: Vec<String> = s
        .log()
        .iter()
        .filter(|l| l.contains("worker 0 exited") && l.contains("restarting in "))
        .map(|l| l.rsplit("restarting in ").next().unwrap().to_owned())
        .collect();
    assert_eq!(
        &delays[..4],
        ["100ms", "200ms", "400ms", "800ms"],
        "log: {:#?}",
        s.log()
    );
    // One warning per step: the first death (restart at once) and one per doubling.
    let warnings = s
        .log()
        .iter()
        .filter(|l| l.starts_with("stickyd: warn: worker 0 exited"))
        .count();
    assert_eq!(warnings, delays.len() + 1, "log: {:#?}", s.log());
}

#[test]
fn with_every_worker_down_clients_wait_and_are_served_when_one_is_back() {
    // Workers that take a second to say HELLO, each time they start.
    let worker = hello_worker_bin();
    let script = format!("sleep 1; exec {}", worker.display());
    let s = Stickyd::start_ready(
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--metrics",
            "127.0.0.1:0",
            "--",
            "sh",
            "-c",
            &script,
        ],
        2,
    );
    let metrics = s.metrics_addr();
    for id in 0..2 {
        signal(s.worker_pid(id), libc::SIGKILL);
    }
    assert!(eventually(TIMEOUT, || scrape(metrics, "/healthz").0 == 503));
    let started = Instant::now();
    let r = get(s.addr(), Some(lo(3)), "/", &[]);
    assert_eq!(r.status, 200);
    // Served by a replacement, whose ready line the log (read by another thread) may not
    // show yet.
    assert!(
        eventually(TIMEOUT, || s.ready_count(0) + s.ready_count(1) >= 3),
        "served, but no worker restarted; log: {:#?}",
        s.log()
    );
    let (_, body) = scrape(metrics, "/metrics");
    assert!(
        metric_sum(&body, "stickyd_accept_pauses_total") >= 1.0,
        "{body}"
    );
    assert!(
        metric_sum(&body, "stickyd_worker_restarts_total") >= 2.0,
        "{body}"
    );
    assert_eq!(scrape(metrics, "/healthz").0, 200);
    eprintln!("served after {:?}", started.elapsed());
}

#[test]
fn metrics_add_up_to_the_requests_made() {
    let s = Stickyd::start_ready(
        &[
            "--listen",
            "a=127.0.0.1:0",
            "--listen",
            "b=127.0.0.1:0",
            "--workers",
            "2",
            "--key",
            "header:x-forwarded-for",
            "--metrics",
            "127.0.0.1:0",
        ],
        2,
    );
    let metrics = s.metrics_addr();
    assert_eq!(scrape(metrics, "/healthz").0, 200);
    let mut served = [0u32; 2];
    for i in 0..30u8 {
        let listener = s.listeners[usize::from(i % 3 == 0)].1;
        let header = format!("X-Forwarded-For: 10.0.0.{i}");
        // Every fifth without the header: the fallback rule decides.
        let headers: &[&str] = if i % 5 == 0 { &[] } else { &[&header] };
        served[get(listener, Some(lo(4)), "/", headers).worker() as usize] += 1;
    }
    let fallbacks = (0..30u8).filter(|i| i % 5 == 0).count() as f64;
    assert!(
        eventually(TIMEOUT, || {
            let (_, body) = scrape(metrics, "/metrics");
            metric_sum(&body, "stickyd_connections_dispatched_total") == 30.0
                && metric_sum(&body, "stickyd_unacked_connections") == 0.0
        }),
        "{}",
        scrape(metrics, "/metrics").1
    );
    let (status, body) = scrape(metrics, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(
        metric_sum(&body, "stickyd_connections_accepted_total"),
        30.0
    );
    assert_eq!(
        metric_sum(&body, "stickyd_connections_accepted_total{listener=\"b\"}")
            + metric_sum(&body, "stickyd_connections_accepted_total{listener=\"a\"}"),
        30.0
    );
    for (w, n) in served.iter().enumerate() {
        let per_worker: f64 = body
            .lines()
            .filter(|l| {
                l.starts_with(&format!(
                    "stickyd_connections_dispatched_total{{worker=\"{w}\""
                ))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert_eq!(per_worker, f64::from(*n), "worker {w}: {body}");
    }
    assert_eq!(metric_sum(&body, "stickyd_fallbacks_total"), fallbacks);
    assert_eq!(metric_sum(&body, "stickyd_handoff_seconds_count"), 30.0);
    assert_eq!(metric_sum(&body, "stickyd_unacked_connections"), 0.0);
}

#[test]
fn draining_lets_a_worker_finish_the_connections_it_holds() {
    let long_poll = example_bin("long_poll");
    let mut s = Stickyd::start_ready(
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--",
            long_poll.to_str().unwrap(),
        ],
        1,
    );
    let mut c = connect(s.addr(), Some(lo(5)));
    c.write_all(request("/wait", &[]).as_bytes()).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(c.read(&mut byte).is_err(), "answered before the drain");
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.signal(libc::SIGTERM);
    let r = read_response(&mut c);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"drained by worker 0\n");
    assert_eq!(s.wait_exit(TIMEOUT).code(), Some(0));
}

#[test]
fn a_shutdown_ends_even_with_connections_waiting_behind_a_stalled_worker() {
    let mut s = Stickyd::start_ready(
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--key",
            "header:x-session",
            "--max-queue",
            "2",
            "--grace",
            "1s",
        ],
        1,
    );
    let pid = s.worker_pid(0);
    signal(pid, libc::SIGSTOP);
    let _clients: Vec<_> = (0..5).map(|i| send_session(&s, &format!("s{i}"))).collect();
    std::thread::sleep(Duration::from_millis(300));
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(TIMEOUT).code(), Some(0));
    assert!(
        eventually(TIMEOUT, || !alive(pid)),
        "the stalled worker outlived the master"
    );
}

#[test]
fn a_connection_returned_by_the_only_worker_is_closed_not_held_forever() {
    // One worker whose fd limit is tiny: once it is full, the kernel drops the fds it is sent
    // (MSG_CTRUNC), the SDK returns them, and with no other worker the master closes them.
    let worker = hello_worker_bin();
    let script = format!("ulimit -n 24; exec {}", worker.display());
    let mut s = Stickyd::start_ready(
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--grace",
            "1s",
            "--",
            "sh",
            "-c",
            &script,
        ],
        1,
    );
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..40 {
        let mut c = connect(s.addr(), Some(lo(6)));
        c.write_all(request("/", &[]).as_bytes()).unwrap();
        let mut first = [0u8; 1];
        match c.read(&mut first) {
            Ok(1) => held.push(c),
            _ => refused += 1,
        }
    }
    assert!(refused > 0, "the worker never ran out of fds");
    s.wait_log("returned by the only live worker: closed", TIMEOUT);
    drop(held);
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(TIMEOUT).code(), Some(0));
}
