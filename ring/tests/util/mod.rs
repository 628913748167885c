//! Helpers shared by the integration tests: a ring of either backend (or a skip), bounded
//! waits, TCP pairs, and [`on_both_backends!`] to run a test on io_uring and on epoll.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use stickyd_ring::{BackendKind, Completion, OpId, Ring};

/// Upper bound for any wait in these tests: they fail instead of hanging.
pub const LIMIT: Duration = Duration::from_secs(5);

/// A ring of `kind`, or None (with a message) when this host cannot run it (io_uring refused
/// or incomplete).
pub fn ring(kind: BackendKind) -> Option<Ring> {
    let ring = match kind {
        BackendKind::Uring => Ring::uring(32),
        BackendKind::Epoll => Ring::epoll(),
    };
    match ring {
        Ok(ring) => Some(ring),
        Err(e) => {
            eprintln!("skipped ({kind}): {e}");
            None
        }
    }
}

/// Generates, for each `fn name(ring: Ring)` listed, the tests `uring::name` and `epoll::name`
/// running it on a fresh ring of each backend (skipped where the backend is unavailable).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod uring {
            $(
                #[test]
                fn $name() {
                    if let Some(ring) = $crate::util::ring(stickyd_ring::BackendKind::Uring) {
                        super::$name(ring);
                    }
                }
            )*
        }
        mod epoll {
            $(
                #[test]
                fn $name() {
                    if let Some(ring) = $crate::util::ring(stickyd_ring::BackendKind::Epoll) {
                        super::$name(ring);
                    }
                }
            )*
        }
    };
}

/// The next completion, waiting up to [`LIMIT`].
pub fn next(ring: &mut Ring) -> Completion {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(c) = ring.next_completion() {
            return c;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no completion within {LIMIT:?}");
        ring.wait(Some(left)).expect("wait");
    }
}

/// The completion of `op`, skipping others, waiting up to [`LIMIT`] in all.
pub fn completion_of(ring: &mut Ring, op: OpId) -> Completion {
    loop {
        let c = next(ring);
        if c.op == op {
            return c;
        }
    }
}

/// Completions available after a short wait, without blocking longer than `wait`.
pub fn drain_for(ring: &mut Ring, wait: Duration) -> Vec<Completion> {
    ring.wait(Some(wait)).expect("wait");
    std::iter::from_fn(|| ring.next_completion()).collect()
}

/// A connected TCP pair on loopback: (client, accepted server side).
pub fn tcp_pair() -> (TcpStream, OwnedFd) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    (client, OwnedFd::from(server))
}
