//! Accepting under load: a busy dispatcher loop keeps no accept armed and takes the
//! connections waiting in the listeners' backlogs itself, once per round; when the load stops
//! it arms its accepts again and sleeps until the next connection. (On io_uring; an epoll loop
//! keeps its accept armed.)

mod util;

use std::time::Duration;

use stickyd::keys::Key;
use util::{Stickyd, get};

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

/// `clients` clients at once, each sending `each` requests on connections of their own, one
/// after the other; every answer comes from the key's worker.
fn load(s: &Stickyd, round: usize, clients: usize, each: usize) {
    let addr = s.addr();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            std::thread::spawn(move || {
                for i in 0..each {
                    let user = format!("user-{round}-{c}-{i}");
                    let r = get(addr, None, "/", &[&format!("X-User: {user}")]);
                    assert_eq!(r.status, 200);
                    assert_eq!(r.worker(), util::owner(Key::Bytes(user.as_bytes()), 2));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a client failed");
    }
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
        load(&s, round, 8, 50);
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
