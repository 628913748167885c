//! `--threads N`: dispatcher threads accept and peek on rings of their own over the same
//! listeners; the master routes what they find, with the same mapping as one thread.

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
    let addr = s.addr();
    let clients: Vec<_> = (0..8)
        .map(|c| {
            std::thread::spawn(move || {
                for i in 0..25 {
                    let user = format!("user-{c}-{i}");
                    let header = format!("X-User: {user}");
                    let r = get(addr, None, "/", &[&header]);
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
    for c in clients {
        c.join().expect("a client failed");
    }
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
