//! The master as a process: its command line, its shutdown, and its workers' lives.

mod util;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use util::*;

#[test]
fn sigterm_drains_and_exits_0_leaving_no_worker() {
    let mut s = Stickyd::start_ready(&["--listen", "127.0.0.1:0", "--workers", "3"], 3);
    assert_eq!(get(s.addr(), Some(lo(2)), "/", &[]).status, 200);
    // A keep-alive connection, idle: the worker closes it once draining.
    let mut idle = connect(s.addr(), Some(lo(3)));
    idle.write_all(request("/", &[]).as_bytes()).unwrap();
    assert_eq!(read_response(&mut idle).status, 200);

    let workers = s.worker_pids();
    assert_eq!(workers.len(), 3, "workers: {workers:?}");
    s.signal(libc::SIGTERM);
    let status = s.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(0), "log: {:#?}", s.log());
    for pid in workers {
        assert!(
            eventually(TIMEOUT, || !alive(pid)),
            "worker {pid} outlived the master"
        );
    }
    // The drained worker closed the idle keep-alive connection.
    let mut rest = Vec::new();
    assert_eq!(
        std::io::Read::read_to_end(&mut idle, &mut rest).unwrap_or(0),
        0
    );
}

#[test]
fn sigint_exits_0_too() {
    let mut s = Stickyd::start_ready(&["--listen", "127.0.0.1:0", "--workers", "1"], 1);
    s.signal(libc::SIGINT);
    assert_eq!(s.wait_exit(TIMEOUT).code(), Some(0));
}

#[test]
fn a_worker_that_ignores_drain_is_killed_after_the_grace_period() {
    // `sleep` never says HELLO nor exits by itself: SIGTERM after the grace period ends it.
    let mut s = Stickyd::start(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--grace",
        "200ms",
        "--",
        "sleep",
        "600",
    ]);
    s.wait_log("started 2 workers", TIMEOUT);
    let workers = s.worker_pids();
    assert_eq!(workers.len(), 2);
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(TIMEOUT).code(), Some(0));
    for pid in workers {
        assert!(
            eventually(TIMEOUT, || !alive(pid)),
            "worker {pid} left behind"
        );
    }
}

#[test]
fn no_worker_outlives_a_master_killed_with_sigkill() {
    let mut s = Stickyd::start_ready(&["--listen", "127.0.0.1:0", "--workers", "2"], 2);
    let workers = s.worker_pids();
    assert_eq!(workers.len(), 2);
    s.signal(libc::SIGKILL);
    s.wait_exit(TIMEOUT);
    for pid in workers {
        assert!(
            eventually(TIMEOUT, || !alive(pid)),
            "worker {pid} outlived a killed master"
        );
    }
}

#[test]
fn workers_get_their_slot_and_nothing_else() {
    // A worker that prints its environment and open fds, then asks the master to stop.
    // The master's stdout is the worker's: keep it.
    let out = Command::new(stickyd_bin())
        .args(["--listen", "127.0.0.1:0", "--workers", "1", "--grace", "100ms", "--"])
        .args(["sh", "-c", r#"echo "id=$STICKYD_WORKER_ID fd=$STICKYD_FD notify=${NOTIFY_SOCKET:-none} listen=${LISTEN_FDS:-none}"; ls /proc/self/fd; kill -TERM $PPID"#])
        .env("NOTIFY_SOCKET", "/nonexistent")
        .env("LISTEN_FDS", "3")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("run stickyd");
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let first = lines.next().expect("worker output");
    let fd: i32 = first
        .split_whitespace()
        .find_map(|w| w.strip_prefix("fd="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no fd in {first:?}"));
    assert!(first.starts_with("id=0 "), "{first}");
    assert!(first.contains("notify=none"), "{first}");
    assert!(first.contains("listen=none"), "{first}");
    // `ls` itself opens one fd for the directory it lists.
    let fds: Vec<i32> = lines.filter_map(|l| l.trim().parse().ok()).collect();
    let extra: Vec<i32> = fds.iter().copied().filter(|&n| n > 2 && n != fd).collect();
    assert!(fds.contains(&fd), "channel fd {fd} not inherited: {fds:?}");
    assert!(extra.len() <= 1, "the worker inherited more fds: {fds:?}");
    // Even fds that the master itself inherited without close-on-exec stay out.
}

#[test]
fn a_bad_command_line_exits_2_with_one_line() {
    for args in [
        &["--workers", "0"][..],
        &["--workers", "many"][..],
        &["--key", "nonsense"][..],
        &["--key", "header:"][..],
        &["--listen", "not-an-address"][..],
        &["--peek-timeout", "5"][..],
        &["--max-peek", "12XB"][..],
        &["--threads", "0"][..],
        &["--backend", "kqueue"][..],
        &["--bogus"][..],
    ] {
        let out = Command::new(stickyd_bin())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run stickyd");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(args[0]), "{args:?} not named in: {stderr}");
    }
}

#[test]
fn a_worker_command_that_cannot_start_is_a_fatal_error() {
    let out = Command::new(stickyd_bin())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--",
            "/nonexistent/worker",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run stickyd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("/nonexistent/worker"), "{stderr}");
}

#[test]
fn help_and_version_exit_0() {
    for flag in ["--help", "--version"] {
        let out = Command::new(stickyd_bin())
            .arg(flag)
            .output()
            .expect("run stickyd");
        assert_eq!(out.status.code(), Some(0));
        assert!(!out.stdout.is_empty());
    }
}

#[test]
fn a_master_with_no_live_worker_accepts_nothing_yet() {
    // Workers that never say HELLO: the client waits in the backlog, nothing is accepted.
    let s = Stickyd::start(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--",
        "sleep",
        "600",
    ]);
    s.wait_log("started 1 workers", TIMEOUT);
    let before = s.fd_count();
    let clients: Vec<_> = (0..5).map(|_| connect(s.addr(), Some(lo(5)))).collect();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        s.fd_count(),
        before,
        "the master accepted with no live worker"
    );
    drop(clients);
}

#[test]
fn workers_start_with_no_signal_blocked_and_get_sigterm_after_the_grace_period() {
    // The master blocks SIGTERM and SIGINT for its signalfd; its workers must not inherit that.
    // This worker never says HELLO and exits 0 on SIGTERM: the grace period's SIGTERM ends it,
    // no SIGKILL is needed.
    let mut s = Stickyd::start(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--grace",
        "300ms",
        "--",
        "sh",
        "-c",
        "trap 'exit 0' TERM; while :; do sleep 0.05; done",
    ]);
    s.wait_log("started 1 workers", TIMEOUT);
    let pid = s.worker_pids()[0];
    // The shell blocks every signal for a moment around each fork of its `sleep`: a mask
    // inherited from the master would be there in every sample, so one empty sample proves it
    // was not.
    let blocked = || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let mask = status
            .lines()
            .find_map(|l| l.strip_prefix("SigBlk:"))
            .map(str::trim)
            .unwrap()
            .to_owned();
        u64::from_str_radix(&mask, 16).unwrap()
    };
    assert!(
        eventually(TIMEOUT, || blocked() == 0),
        "the worker's signal mask is never empty: SigBlk {:x}",
        blocked()
    );
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(TIMEOUT).code(), Some(0));
    let log = s.log();
    assert!(
        log.iter().any(|l| l.contains("exited: exit status: 0")),
        "the worker did not exit by its SIGTERM trap: {log:#?}"
    );
    assert!(!log.iter().any(|l| l.contains("SIGKILL")), "{log:#?}");
}

#[test]
fn no_busy_waiting_while_accept_backs_off_at_the_fd_limit() {
    let mut s = Stickyd::start_with_nofile(
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--key",
            "header:x-session",
            "--peek-timeout",
            "3s",
            "--grace",
            "1s",
        ],
        32,
    );
    s.wait_ready(1);
    // Idle clients hold the master's fds until accept fails with EMFILE.
    let clients: Vec<_> = (0..40).map(|_| connect(s.addr(), Some(lo(160)))).collect();
    s.wait_log("Too many open files", TIMEOUT);
    let window = Duration::from_millis(1000);
    let before = s.cpu_time();
    std::thread::sleep(window);
    let used = s.cpu_time().saturating_sub(before);
    assert!(
        used < window / 4,
        "{used:?} of CPU in {window:?} while backing off"
    );
    // And while shutting down with a back-off pending.
    s.signal(libc::SIGTERM);
    let before = s.cpu_time();
    std::thread::sleep(window);
    let used = s.cpu_time().saturating_sub(before);
    assert!(
        used < window / 4,
        "{used:?} of CPU in {window:?} while draining"
    );
    assert_eq!(s.wait_exit(TIMEOUT).code(), Some(0));
    drop(clients);
}

#[test]
fn no_busy_waiting_in_a_shutdown_while_a_restart_is_pending() {
    // Slot 1 crash-loops (its restart is pending with a back-off) while slot 0 lives on.
    let mut s = Stickyd::start(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--grace",
        "2s",
        "--",
        "sh",
        "-c",
        r#"if [ "$STICKYD_WORKER_ID" = 0 ]; then exec sleep 600; else exit 1; fi"#,
    ]);
    s.wait_log("restarting in 400ms", TIMEOUT);
    s.signal(libc::SIGTERM);
    let window = Duration::from_millis(1000);
    let before = s.cpu_time();
    std::thread::sleep(window);
    let used = s.cpu_time().saturating_sub(before);
    assert!(
        used < window / 4,
        "{used:?} of CPU in {window:?} while shutting down"
    );
    assert_eq!(s.wait_exit(TIMEOUT).code(), Some(0));
}
