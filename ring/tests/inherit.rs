//! Handing fds across exec: taking inherited fds, telling a listening TCP socket, and starting
//! a successor with exactly the fds it is given.

use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};

use stickyd_ring::sys;

fn cloexec(fd: i32) -> bool {
    // SAFETY: F_GETFD on an fd number touches no memory.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    assert!(flags >= 0, "fd {fd} is not open");
    flags & libc::FD_CLOEXEC != 0
}

#[test]
fn inherited_fds_are_taken_once_and_only_when_inherited() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // Every fd std opens is close-on-exec: not an inherited one.
    let err = sys::take_inherited_fds(&[listener.as_raw_fd()]).unwrap_err();
    assert!(err.to_string().contains("close-on-exec"), "{err}");
    assert!(sys::take_inherited_fds(&[2]).is_err());
    assert!(sys::take_inherited_fds(&[100_000]).is_err(), "not open");

    // A copy without the flag, as exec leaves an inherited fd.
    // SAFETY: F_DUPFD on a live fd returns a new fd that nothing else owns.
    let raw = unsafe { libc::fcntl(listener.as_raw_fd(), libc::F_DUPFD, 3) };
    assert!(raw >= 3);
    assert!(!cloexec(raw));
    let err = sys::take_inherited_fds(&[raw, raw]).unwrap_err();
    assert!(err.to_string().contains("listed twice"), "{err}");

    let taken = sys::take_inherited_fds(&[raw]).unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].as_raw_fd(), raw);
    assert!(cloexec(raw), "a taken fd must not reach children");
    let copy = TcpListener::from(taken.into_iter().next().unwrap());
    assert_eq!(copy.local_addr().unwrap(), listener.local_addr().unwrap());

    // Once per process.
    // SAFETY: as above.
    let raw = unsafe { libc::fcntl(listener.as_raw_fd(), libc::F_DUPFD, 3) };
    assert!(sys::take_inherited_fds(&[raw]).is_err());
    // SAFETY: `raw` was just created and is owned by nothing else.
    drop(unsafe { OwnedFd::from_raw_fd(raw) });
}

#[test]
fn socket_kinds() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let kind = sys::socket_kind(listener.as_fd()).unwrap();
    assert!(kind.is_tcp_listener(), "{kind:?}");

    // SAFETY: socket() returns a new fd (or -1, checked), owned by nothing else.
    let unbound = unsafe {
        let fd = libc::socket(libc::AF_INET6, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        OwnedFd::from_raw_fd(fd)
    };
    let kind = sys::socket_kind(unbound.as_fd()).unwrap();
    assert_eq!(kind.domain, libc::AF_INET6);
    assert!(!kind.listening);
    assert!(!kind.is_tcp_listener());

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert_eq!(
        sys::socket_kind(udp.as_fd()).unwrap().kind,
        libc::SOCK_DGRAM
    );

    let (unix, _peer) = UnixStream::pair().unwrap();
    assert_eq!(
        sys::socket_kind(unix.as_fd()).unwrap().domain,
        libc::AF_UNIX
    );

    let file = std::fs::File::open("/proc/self/stat").unwrap();
    let err = sys::socket_kind(file.as_fd()).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTSOCK));
}

#[test]
fn a_successor_gets_exactly_its_fds_and_no_blocked_signal() {
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let fd = theirs.as_raw_fd();
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(format!(
            "grep SigBlk /proc/self/status >&{fd}; ls /proc/self/fd >&{fd}"
        ))
        .stdin(Stdio::null());
    sys::prepare_successor_command(&mut cmd, &[theirs.as_fd()]);
    let status = cmd.status().unwrap();
    assert!(status.success());
    drop(theirs);
    let mut text = String::new();
    ours.read_to_string(&mut text).unwrap();
    assert!(
        text.lines().next().unwrap().ends_with("0000000000000000"),
        "{text}"
    );
    let fds: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert!(fds.contains(&fd), "{fds:?}");
    assert!(!fds.contains(&other.as_raw_fd()), "{fds:?}");
    // The parent's copy stays close-on-exec.
    assert!(cloexec(ours.as_raw_fd()));
}
