//! The synchronous syscalls: pidfd, signalfd, worker spawning, limits, kill/wait.

mod util;

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stickyd_ring::{Outcome, Ring, sys};

fn pidfd_becomes_readable_when_the_child_exits(mut ring: Ring) {
    let mut child = Command::new("true").spawn().unwrap();
    let pidfd = sys::pidfd_open(child.id()).unwrap();
    let op = ring.poll(pidfd.as_fd(), libc::POLLIN as u32, 1);
    match util::completion_of(&mut ring, op).outcome {
        Outcome::Polled(r) => assert_ne!(r.unwrap() & libc::POLLIN as u32, 0),
        other => panic!("unexpected {other:?}"),
    }
    assert!(child.wait().unwrap().success());
}

#[test]
fn signalfd_reads_a_signal_sent_to_this_thread() {
    let fd = sys::signalfd(&[libc::SIGUSR1]).unwrap();
    assert_eq!(
        sys::read_signal(fd.as_fd()).unwrap(),
        None,
        "nothing pending yet"
    );
    // Directed at this thread, which has SIGUSR1 blocked now: it stays pending for the
    // signalfd, whatever the other test threads do.
    // SAFETY: pthread_self is this live thread.
    let rc = unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGUSR1) };
    assert_eq!(rc, 0);
    assert_eq!(sys::read_signal(fd.as_fd()).unwrap(), Some(libc::SIGUSR1));
    assert_eq!(sys::read_signal(fd.as_fd()).unwrap(), None);
}

fn signalfd_is_polled_on_the_ring(mut ring: Ring) {
    let fd = sys::signalfd(&[libc::SIGUSR2]).unwrap();
    let op = ring.poll(fd.as_fd(), libc::POLLIN as u32, 1);
    ring.submit().unwrap();
    // SAFETY: pthread_self is this live thread.
    let rc = unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGUSR2) };
    assert_eq!(rc, 0);
    util::completion_of(&mut ring, op);
    assert_eq!(sys::read_signal(fd.as_fd()).unwrap(), Some(libc::SIGUSR2));
}

#[test]
fn signalfd_rejects_a_bad_signal() {
    assert!(sys::signalfd(&[0xffff]).is_err());
}

/// fds 3.. of this process that are not close-on-exec (inherited from whoever started the
/// tests, e.g. a jobserver): outside the contract of prepare_worker_command.
fn inheritable_fds() -> BTreeSet<RawFd> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd: &RawFd| {
            // SAFETY: F_GETFD on a number touches no memory (a closed one gives -1).
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
            fd > 2 && flags >= 0 && flags & libc::FD_CLOEXEC == 0
        })
        .collect()
}

#[test]
fn worker_command_inherits_exactly_its_channel() {
    let (master, worker) = sys::seqpacket_pair().unwrap();
    let other = UnixStream::pair().unwrap();
    let before = inheritable_fds();

    let mut cmd = Command::new("ls");
    cmd.args(["-l", "/proc/self/fd"]).stdout(Stdio::piped());
    sys::prepare_worker_command(&mut cmd, worker.as_fd());
    let out = cmd.output().unwrap();
    assert!(out.status.success());
    let listing = String::from_utf8(out.stdout).unwrap();
    // Lines look like "lrwx------ 1 u g 64 date 3 -> socket:[123]"; ls's own directory fd
    // points at /proc/<pid>/fd and is not inherited.
    let open: BTreeSet<RawFd> = listing
        .lines()
        .filter_map(|line| line.split_once(" -> "))
        .filter(|(_, target)| !(target.starts_with("/proc/") && target.ends_with("/fd")))
        .filter_map(|(head, _)| head.split_whitespace().last()?.parse().ok())
        .filter(|fd| !before.contains(fd))
        .collect();
    let expected: BTreeSet<RawFd> = [0, 1, 2, worker.as_raw_fd()].into();
    assert_eq!(open, expected, "child fds:\n{listing}");

    // In the parent the channel end is still close-on-exec.
    // SAFETY: F_GETFD on a live fd touches no memory.
    let flags = unsafe { libc::fcntl(worker.as_raw_fd(), libc::F_GETFD) };
    assert_ne!(flags & libc::FD_CLOEXEC, 0);
    drop((master, other));
}

#[test]
fn worker_command_runs_in_its_own_process_group() {
    let (_master, worker) = sys::seqpacket_pair().unwrap();
    let mut cmd = Command::new("cat");
    cmd.arg("/proc/self/stat").stdout(Stdio::piped());
    sys::prepare_worker_command(&mut cmd, worker.as_fd());
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    let mut stat = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stat)
        .unwrap();
    assert!(child.wait().unwrap().success());
    // Fields after "(comm)": state ppid pgrp ...
    let (_, rest) = stat.rsplit_once(')').unwrap();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    assert_eq!(fields[1], std::process::id().to_string(), "ppid");
    assert_eq!(fields[2], pid.to_string(), "pgrp is the child's own pid");
}

#[test]
fn worker_command_channel_works_in_the_child() {
    let (master, worker) = sys::seqpacket_pair().unwrap();
    // bash, not sh: dash's redirections take single-digit fds only, and under a parallel test
    // run the channel's number is often 10 or more.
    let script = format!("printf hello >&{}", worker.as_raw_fd());
    let mut cmd = Command::new("bash");
    cmd.args(["-c", &script]);
    sys::prepare_worker_command(&mut cmd, worker.as_fd());
    assert!(cmd.status().unwrap().success());
    let mut master = UnixStream::from(master);
    let mut buf = [0u8; 16];
    let n = master.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello");
}

#[test]
fn kill_and_try_wait() {
    let child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id();
    assert_eq!(sys::try_wait(pid).unwrap(), None, "still running");
    assert!(sys::kill(pid, 0).unwrap(), "exists");
    assert!(sys::kill(pid, libc::SIGKILL).unwrap());
    let deadline = Instant::now() + util::LIMIT;
    let status = loop {
        if let Some(status) = sys::try_wait(pid).unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "child not reaped");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(libc::WIFSIGNALED(status));
    assert_eq!(libc::WTERMSIG(status), libc::SIGKILL);
    assert!(!sys::kill(pid, 0).unwrap(), "reaped: ESRCH");
    let err = sys::try_wait(pid).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ECHILD));
    drop(child);
}

#[test]
fn raise_nofile_limit_reaches_the_hard_limit() {
    let soft = sys::raise_nofile_limit().unwrap();
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a writable rlimit.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(rc, 0);
    assert_eq!(soft, limit.rlim_cur);
    if limit.rlim_max != libc::RLIM_INFINITY {
        assert_eq!(limit.rlim_cur, limit.rlim_max);
    }
    assert_eq!(sys::raise_nofile_limit().unwrap(), soft, "idempotent");
}

#[test]
fn shutdown_write_gives_the_peer_end_of_file() {
    let (mut client, server) = util::tcp_pair();
    sys::shutdown_write(server.as_fd()).unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(client.read(&mut buf).unwrap(), 0);
    // Only the write side is shut: the server still reads.
    client.write_all(b"k").unwrap();
    let mut server = std::net::TcpStream::from(server);
    server.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"k");
}

#[test]
fn seqpacket_pair_keeps_message_boundaries() {
    let (a, b) = sys::seqpacket_pair().unwrap();
    let (mut a, mut b) = (UnixStream::from(a), UnixStream::from(b));
    a.write_all(b"one").unwrap();
    a.write_all(b"two").unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(b.read(&mut buf).unwrap(), 3);
    assert_eq!(b.read(&mut buf).unwrap(), 3);
    b.set_nonblocking(true).unwrap();
    assert_eq!(b.read(&mut buf).unwrap_err().kind(), ErrorKind::WouldBlock);
}

#[test]
fn pidfd_open_of_a_missing_process_fails() {
    assert!(sys::pidfd_open(u32::MAX).is_err());
}

#[test]
fn listen_sets_a_new_backlog_on_a_listening_socket() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    sys::listen(listener.as_fd(), 4096).unwrap();
    let addr = listener.local_addr().unwrap();
    let _client = std::net::TcpStream::connect(addr).unwrap();
    listener.accept().unwrap();
    let (not_a_socket, _) = sys::seqpacket_pair().unwrap();
    assert!(
        sys::listen(not_a_socket.as_fd(), 1).is_err(),
        "a connected pair cannot listen"
    );
}

on_both_backends!(
    pidfd_becomes_readable_when_the_child_exits,
    signalfd_is_polled_on_the_ring,
);
