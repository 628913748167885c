//! At the fd limit the multishot accept ends with EMFILE (`more == false`) on both backends, and
//! re-arming it after fds are free serves the connections that waited in the backlog.
//!
//! This binary holds a single test: it lowers the process's soft `RLIMIT_NOFILE`, which would
//! break tests running beside it in the same process.

mod util;

use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use stickyd_ring::{BackendKind, Outcome, Ring, sys};

fn nofile() -> libc::rlimit {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a writable rlimit.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(rc, 0);
    limit
}

fn set_nofile(limit: &libc::rlimit) {
    // SAFETY: `limit` is an initialised rlimit; lowering the soft limit needs no privilege.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, limit) };
    assert_eq!(rc, 0);
}

/// The lowest fd number free now (the next one the kernel would hand out).
fn lowest_free_fd() -> u64 {
    let probe = std::fs::File::open("/dev/null").unwrap();
    u64::try_from(probe.as_raw_fd()).unwrap()
}

fn emfile_ends_the_accept_and_rearming_serves_again(mut ring: Ring) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    sys::listen(listener.as_fd(), 64).unwrap();
    let addr = listener.local_addr().unwrap();
    let count = 8;
    let _clients: Vec<TcpStream> = (0..count)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();

    // Room for at most two more fds, then accept what waits in the backlog.
    let saved = nofile();
    let low = libc::rlimit {
        rlim_cur: lowest_free_fd() + 2,
        rlim_max: saved.rlim_max,
    };
    set_nofile(&low);
    let accept = ring.accept_multi(listener.as_fd(), 1);
    ring.submit().unwrap();
    let mut accepted: Vec<OwnedFd> = Vec::new();
    let ended = loop {
        let c = util::next(&mut ring);
        assert_eq!(c.op, accept);
        match c.outcome {
            Outcome::Accepted { fd: Ok(fd), more } => {
                accepted.push(fd);
                assert!(more, "ended by a full completion queue, not by the limit");
            }
            Outcome::Accepted {
                fd: Err(e),
                more: false,
            } => break e,
            other => panic!("unexpected {other:?}"),
        }
    };
    set_nofile(&saved);
    assert_eq!(ended.raw_os_error(), Some(libc::EMFILE), "{ended}");
    assert!((1..=2).contains(&accepted.len()), "{}", accepted.len());
    assert_eq!(ring.in_flight(), 0, "the accept has ended");

    // Re-armed once fds are free, it takes the connections that waited in the backlog.
    let again = ring.accept_multi(listener.as_fd(), 2);
    while accepted.len() < count {
        let c = util::next(&mut ring);
        assert_eq!(c.op, again);
        match c.outcome {
            Outcome::Accepted { fd: Ok(fd), more } => {
                assert!(more);
                accepted.push(fd);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ring.in_flight(), 1);
}

#[test]
fn emfile_on_both_backends() {
    for kind in [BackendKind::Uring, BackendKind::Epoll] {
        if let Some(ring) = util::ring(kind) {
            emfile_ends_the_accept_and_rearming_serves_again(ring);
        }
    }
}
