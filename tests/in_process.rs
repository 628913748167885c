//! In-process workers: the dispatcher hands connections to threads of its own process
//! (`examples/in_process.rs`, the library's `Dispatcher::thread_workers`), with the same key
//! rules and hashing as worker processes.

mod util;

use std::io::Write;
use std::time::Duration;

use stickyd::keys::Key;
use util::{Stickyd, TIMEOUT, example_bin, get, request};

const WORKERS: u32 = 3;

fn start() -> Stickyd {
    let workers = WORKERS.to_string();
    Stickyd::start_program(
        &example_bin("in_process"),
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            &workers,
            "--key",
            "header:x-user",
        ],
    )
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
