//! Helpers shared by the integration tests: a ring (or a skip), bounded waits, TCP pairs.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use stickyd_ring::{Completion, OpId, Ring};

/// Upper bound for any wait in these tests: they fail instead of hanging.
pub const LIMIT: Duration = Duration::from_secs(5);

/// A ring, or None (with a message) when this kernel cannot run stickyd's ring.
pub fn ring() -> Option<Ring> {
    match Ring::new(32) {
        Ok(ring) => Some(ring),
        Err(e) => {
            eprintln!("skipped: {e}");
            None
        }
    }
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
