//! Tests that need a process of their own: `Worker::from_env` (environment variables,
//! inherited fds) and `MSG_CTRUNC` (a lowered fd limit). The test binary re-runs itself with
//! `STICKYD_TEST_CHILD` naming the scenario; `child_entry` plays the worker side there.

mod util;

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::process::{Command, Output, Stdio};

use stickyd_worker::{Error, Worker};
use util::{Master, is_cloexec, listener, record, seqpacket_pair, tcp_pair};

const SCENARIO: &str = "STICKYD_TEST_CHILD";

/// A command re-running this test binary as the child for `scenario`.
fn child(scenario: &str) -> Command {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        "child_entry",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    .env(SCENARIO, scenario)
    .env_remove("STICKYD_FD")
    .env_remove("STICKYD_WORKER_ID")
    .env_remove("STICKYD_ATTACH")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd
}

fn assert_ok(scenario: &str, out: Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child {scenario} failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains(&format!("child {scenario}: ok")),
        "child {scenario} did not run:\n{stdout}\n{stderr}"
    );
}

/// The worker side of each scenario; a no-op in the normal test run.
#[test]
fn child_entry() {
    let Ok(scenario) = std::env::var(SCENARIO) else {
        return;
    };
    match scenario.as_str() {
        "attach" => {
            let got = Worker::from_env();
            assert!(matches!(got, Err(Error::Attach { .. })), "{got:?}");
        }
        "bad_fd" => {
            let got = Worker::from_env();
            assert!(
                matches!(
                    got,
                    Err(Error::InvalidEnv {
                        name: "STICKYD_FD",
                        ..
                    })
                ),
                "{got:?}"
            );
        }
        "no_id" => {
            let got = Worker::from_env();
            assert!(
                matches!(
                    got,
                    Err(Error::MissingEnv {
                        name: "STICKYD_WORKER_ID"
                    })
                ),
                "{got:?}"
            );
        }
        "not_open" => assert!(matches!(
            Worker::from_env(),
            Err(Error::NotOpen { fd: 987, .. })
        )),
        "not_socket" => {
            let got = Worker::from_env();
            assert!(
                matches!(got, Err(Error::NotSeqpacket { fd: 0, .. })),
                "{got:?}"
            );
        }
        "inherit" => inherited_worker(),
        "ctrunc" => ctrunc(),
        "channels_ctrunc" => channels_ctrunc(),
        other => panic!("unknown scenario {other}"),
    }
    println!("child {scenario}: ok");
}

#[test]
fn from_env_reports_bad_environments() {
    let cases: &[(&str, &[(&str, &str)])] = &[
        ("attach", &[("STICKYD_ATTACH", "/nonexistent/stickyd.sock")]),
        (
            "bad_fd",
            &[("STICKYD_FD", "three"), ("STICKYD_WORKER_ID", "0")],
        ),
        ("no_id", &[("STICKYD_FD", "0")]),
        (
            "not_open",
            &[("STICKYD_FD", "987"), ("STICKYD_WORKER_ID", "0")],
        ),
        (
            "not_socket",
            &[("STICKYD_FD", "0"), ("STICKYD_WORKER_ID", "0")],
        ),
    ];
    for (scenario, env) in cases {
        let mut cmd = child(scenario);
        cmd.envs(env.iter().copied());
        assert_ok(scenario, cmd.output().unwrap());
    }
}

/// Child side: joins through the inherited fd, serves one connection, ends at DRAIN.
fn inherited_worker() {
    let mut worker = Worker::from_env().expect("from_env");
    assert_eq!((worker.id(), worker.workers()), (2, 3));
    let fd: i32 = std::env::var("STICKYD_FD").unwrap().parse().unwrap();
    // SAFETY: the worker owns the inherited fd and keeps it open while it lives; this borrow
    // ends before the worker does.
    let channel = unsafe { BorrowedFd::borrow_raw(fd) };
    assert!(
        is_cloexec(channel),
        "the channel is close-on-exec after from_env"
    );
    assert!(
        is_cloexec(worker.as_fd()),
        "so is the readiness fd an event loop registers"
    );
    assert!(matches!(Worker::from_env(), Err(Error::AlreadyTaken)));
    let mut conn = worker.recv().unwrap().expect("a connection");
    let mut buf = [0u8; 5];
    conn.stream.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    conn.stream.write_all(b"bye").unwrap();
    drop(conn);
    assert!(worker.recv().unwrap().is_none());
    assert!(worker.draining());
}

#[test]
fn from_env_joins_through_the_inherited_fd() {
    let (m, w) = seqpacket_pair();
    let mut cmd = child("inherit");
    let fd = util::inherit(&mut cmd, w.as_fd());
    cmd.env("STICKYD_FD", fd.to_string())
        .env("STICKYD_WORKER_ID", "2");
    let proc = cmd.spawn().unwrap();
    drop(w);
    let master = Master::new(m);
    assert_eq!(master.hello(), (2, proc.id()));
    master.welcome(2, 3, &["l0"]);
    let lst = listener();
    let (mut client, accepted) = tcp_pair(&lst, b"hello");
    master.conns(
        &[record(1, client.local_addr().unwrap(), 0, 0)],
        &[accepted.as_fd()],
    );
    assert_eq!(master.ack(), [1]);
    drop(accepted);
    assert_eq!(util::read_to_end(&mut client), b"bye");
    master.drain();
    assert_ok("inherit", proc.wait_with_output().unwrap());
}

/// Child side: lowers the fd limit so that only one of three fds can be installed.
fn ctrunc() {
    let (m, w) = seqpacket_pair();
    let master = Master::new(m);
    master.welcome(0, 1, &["l0"]);
    let mut worker = Worker::from_fd(w, 0).unwrap();
    master.hello();
    let lst = listener();
    let pairs: Vec<_> = (0..3).map(|_| tcp_pair(&lst, b"hello")).collect();
    let records: Vec<_> = pairs
        .iter()
        .enumerate()
        .map(|(i, (c, _))| record(20 + i as u64, c.local_addr().unwrap(), 0, 0))
        .collect();
    let fds: Vec<_> = pairs.iter().map(|(_, a)| a.as_fd()).collect();

    leave_one_free_fd();
    master.conns(&records, &fds);
    let err = worker.recv().expect_err("two fds were dropped");
    assert_eq!(err.kind(), io::ErrorKind::Other);
    let text = err.to_string();
    assert!(
        text.contains("2 of 3") && text.contains("MSG_CTRUNC"),
        "{text}"
    );
    assert_eq!(master.ack(), [20], "the ACK names only the fd that arrived");
    let mut conn = worker.recv().unwrap().expect("the arrived connection");
    assert_eq!(conn.meta.seq, 20);
    let mut buf = [0u8; 5];
    conn.stream.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    assert_eq!(
        worker.try_recv().unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
}

/// Fills every free fd number up to the first one above the highest open fd, then sets the
/// soft RLIMIT_NOFILE so that exactly that one number stays available. Returns the limit as
/// it was.
fn leave_one_free_fd() -> libc::rlimit {
    let max = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .max()
        .unwrap();
    let mut fillers = Vec::new();
    let free = loop {
        let f = std::fs::File::open("/dev/null").unwrap();
        if f.as_raw_fd() > max {
            break f.as_raw_fd();
        }
        fillers.push(f);
    };
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for getrlimit to fill.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    let before = lim;
    lim.rlim_cur = (free + 1) as libc::rlim_t;
    // SAFETY: `lim` is a valid rlimit; lowering the soft limit affects only this child.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    std::mem::forget(fillers); // they stay open for the rest of this child process
    before
}

/// Child side: only the first of three extra channels can be installed.
fn channels_ctrunc() {
    let (m, w) = seqpacket_pair();
    let master = Master::new(m);
    master.welcome(0, 1, &["l0"]);
    let mut worker = Worker::from_fd(w, 0).unwrap();
    master.hello();
    let (extra, ends): (Vec<_>, Vec<_>) = (0..3).map(|_| seqpacket_pair()).unzip();
    let fds: Vec<_> = ends.iter().map(|w| w.as_fd()).collect();

    let before = leave_one_free_fd();
    master.channels_message(3, &fds);
    let err = worker.recv().expect_err("two channels were dropped");
    // Closed only now: closing them earlier would free low fd numbers for the receive.
    drop(fds);
    drop(ends);
    assert_eq!(err.kind(), io::ErrorKind::Other);
    let text = err.to_string();
    assert!(
        text.contains("announced 3 channels and carried 1") && text.contains("MSG_CTRUNC"),
        "{text}"
    );
    // SAFETY: `before` is a valid rlimit; raising the soft limit back affects only this child.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &before) }, 0);

    let extra: Vec<_> = extra.into_iter().map(Master::new).collect();
    for dropped in &extra[1..] {
        assert!(
            dropped.recv().is_empty(),
            "the master sees the end of a dropped channel"
        );
    }
    let _held = extra[0].conns_of_fresh_from(9, 1, b"x");
    assert_eq!(worker.recv().unwrap().expect("a connection").meta.seq, 9);
    assert_eq!(
        extra[0].ack(),
        [9],
        "acknowledged on the channel that arrived"
    );
    assert!(master.try_recv().is_none());
}

#[test]
fn ctrunc_returns_the_dropped_connections_and_acks_the_rest() {
    assert_ok("ctrunc", child("ctrunc").output().unwrap());
}

#[test]
fn channels_dropped_at_the_fd_limit_are_reported_and_the_rest_kept() {
    assert_ok(
        "channels_ctrunc",
        child("channels_ctrunc").output().unwrap(),
    );
}
