//! `--threads N`: dispatcher threads accept and peek on rings of their own over the same
//! listeners; the master routes what they find, with the same mapping as one thread.
//!
//! And accepting under load, with one loop or several: a busy io_uring loop keeps no accept
//! armed and takes the connections waiting in the listeners' backlogs itself, once per round;
//! when the load stops it arms its accepts again and sleeps until the next connection. (An
//! epoll loop keeps its accept armed.)

mod util;

use std::io::Write;
use std::time::Duration;

use stickyd::keys::Key;
use util::{Stickyd, TIMEOUT, get, request};

fn start(threads: &str) -> Stickyd {
    Stickyd::start_ready(
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--threads",
            threads,
            "--key",
            "header:x-user",
            "--metrics",
            "127.0.0.1:0",
        ],
        2,
    )
}

/// The names of the master's threads.
fn thread_names(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc tasks");
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect()
}

#[test]
fn threads_share_the_listeners_and_keep_the_mapping() {
    let s = start("3");
    let names = thread_names(s.pid);
    let dispatchers = names
        .iter()
        .filter(|n| n.starts_with("stickyd-dispatc"))
        .count();
    assert_eq!(dispatchers, 2, "threads: {names:?}");

    // Many clients at once, so that every thread's accept takes some.
    users_at_once(&s, 8, 25);
    let (_, body) = util::scrape(s.metrics_addr(), "/metrics");
    assert_eq!(
        util::metric_sum(&body, "stickyd_connections_dispatched_total"),
        200.0
    );
}

#[test]
fn a_shutdown_routes_what_every_thread_was_peeking_at() {
    let mut s = Stickyd::start(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--threads",
        "2",
        "--key",
        "header:x-user",
        "--metrics",
        "127.0.0.1:0",
    ]);
    s.wait_ready(2);
    // Clients whose headers are not complete when the signal comes: whichever thread accepted
    // each, it is routed and answered.
    let mut slow: Vec<_> = (0..6)
        .map(|i| {
            let mut c = util::connect(s.addr(), None);
            let full = request("/", &[&format!("X-User: slow-{i}")]);
            c.write_all(&full.as_bytes()[..12]).unwrap();
            (c, full, i)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    s.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(200));
    for (c, full, i) in &mut slow {
        c.write_all(&full.as_bytes()[12..]).unwrap();
        let r = util::read_response(c);
        assert_eq!(r.status, 200);
        let user = format!("slow-{i}");
        assert_eq!(r.worker(), util::owner(Key::Bytes(user.as_bytes()), 2));
    }
    assert!(s.wait_exit(TIMEOUT).success(), "{:#?}", s.log());
}

/// Requests from `clients` threads at once, `each` requests each with its own `X-User`; every
/// one must be served by its key's worker.
fn users_at_once(s: &Stickyd, clients: usize, each: usize) {
    let addr = s.addr();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            std::thread::spawn(move || {
                for i in 0..each {
                    let user = format!("user-{c}-{i}");
                    let r = get(addr, None, "/", &[&format!("X-User: {user}")]);
                    assert_eq!(r.status, 200);
                    assert_eq!(
                        r.worker(),
                        util::owner(Key::Bytes(user.as_bytes()), 2),
                        "{user}"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a client failed");
    }
}

#[test]
fn threads_hand_connections_to_the_workers_over_channels_of_their_own() {
    let s = start("3");
    users_at_once(&s, 8, 40);
    let (_, body) = util::scrape(s.metrics_addr(), "/metrics");
    let dispatched = util::metric_sum(&body, "stickyd_connections_dispatched_total");
    let by_threads = util::metric_sum(&body, "stickyd_thread_handoffs_total");
    assert_eq!(dispatched, 320.0);
    // Whichever loop accepted a connection handed it over: the two dispatcher threads took
    // their share of the accepts, and of the hand-offs, without the master.
    assert!(
        by_threads > 0.0 && by_threads <= dispatched,
        "{by_threads} of {dispatched} connections handed over by the threads"
    );
    // Each worker holds one channel from the master and one from each dispatcher thread.
    for pid in s.worker_pids() {
        assert_eq!(seqpacket_sockets(pid), 3, "worker {pid}");
    }
}

/// How many `SOCK_SEQPACKET` Unix sockets process `pid` holds.
fn seqpacket_sockets(pid: u32) -> usize {
    let table = std::fs::read_to_string("/proc/net/unix").expect("/proc/net/unix");
    // Num RefCount Protocol Flags Type St Inode Path: type 0005 is SOCK_SEQPACKET.
    let inodes: std::collections::HashSet<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(4) == Some(&"0005")).then(|| fields.get(6).map(|i| i.to_string()))?
        })
        .collect();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/PID/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            let inode = target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .to_owned();
            Some(inode)
        })
        .filter(|inode| inodes.contains(inode))
        .count()
}

#[test]
fn a_worker_without_channels_of_its_own_is_served_through_the_master() {
    let python = std::process::Command::new("python3")
        .arg("--version")
        .output();
    assert!(
        python.is_ok_and(|o| o.status.success()),
        "python3 is needed for this test (the worker written from the wire protocol page)"
    );
    let worker = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python/worker.py");
    let s = Stickyd::start_ready(
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--threads",
            "3",
            "--key",
            "header:x-user",
            "--metrics",
            "127.0.0.1:0",
            "--",
            "python3",
            worker,
        ],
        2,
    );
    users_at_once(&s, 4, 20);
    let (_, body) = util::scrape(s.metrics_addr(), "/metrics");
    assert_eq!(
        util::metric_sum(&body, "stickyd_connections_dispatched_total"),
        80.0
    );
    assert_eq!(
        util::metric_sum(&body, "stickyd_thread_handoffs_total"),
        0.0
    );
}

fn metric(s: &Stickyd, name: &str) -> f64 {
    let (status, body) = util::scrape(s.metrics_addr(), "/metrics");
    assert_eq!(status, 200);
    util::metric_sum(&body, name)
}

/// Voluntary context switches of all the master's threads: how often they went to sleep.
fn sleeps(pid: u32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc tasks");
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("status")).ok())
        .filter_map(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|n| n.trim().parse::<u64>().ok())
        })
        .sum()
}

/// Whether the suite runs stickyd on the epoll backend, whose loops keep their accepts armed.
fn epoll() -> bool {
    std::env::var("STICKYD_TEST_BACKEND").is_ok_and(|b| b == "epoll")
}

fn takes_from_the_backlog_under_load_then_sleeps(threads: &str) {
    let s = start(threads);
    // Load (at least 3 rounds) until some connections were taken from a backlog: 8 clients at
    // once keep the loops' rounds full. Bounded: an io_uring loop that never polls fails here.
    let mut round = 0;
    while round < 3 || (!epoll() && metric(&s, "stickyd_backlog_accepts_total") == 0.0) {
        round += 1;
        assert!(
            round <= 10,
            "no connection taken from a backlog in {round} rounds of load"
        );
        users_at_once(&s, 8, 50);
    }
    let total = metric(&s, "stickyd_connections_accepted_total");
    let from_backlogs = metric(&s, "stickyd_backlog_accepts_total");
    assert_eq!(metric(&s, "stickyd_connections_dispatched_total"), total);
    assert!(from_backlogs <= total);
    if epoll() {
        assert_eq!(
            from_backlogs, 0.0,
            "an epoll loop took connections from a backlog"
        );
    }

    // The load is over: the loops arm their accepts again and sleep, rather than waking every
    // few hundred microseconds to look at the backlogs (thousands of wake-ups a second).
    std::thread::sleep(Duration::from_millis(300));
    let window = Duration::from_secs(1);
    let (cpu, slept) = (s.cpu_time(), sleeps(s.pid));
    std::thread::sleep(window);
    let used = s.cpu_time().saturating_sub(cpu);
    let woke = sleeps(s.pid) - slept;
    assert!(used < window / 4, "{used:?} of CPU in {window:?} of quiet");
    assert!(
        woke < 500,
        "the master's threads woke {woke} times in {window:?} of quiet"
    );

    // A lone client is taken by an armed accept: it is answered, by its key's worker.
    for i in 0..5 {
        let user = format!("lone-{i}");
        let r = get(s.addr(), None, "/", &[&format!("X-User: {user}")]);
        assert_eq!(r.worker(), util::owner(Key::Bytes(user.as_bytes()), 2));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn one_loop_takes_from_the_backlog_under_load_then_sleeps() {
    takes_from_the_backlog_under_load_then_sleeps("1");
}

#[test]
fn dispatcher_threads_take_from_the_backlog_under_load_then_sleep() {
    takes_from_the_backlog_under_load_then_sleeps("2");
}
