//! close, timeout, cancel, wait, and a queue much larger than the ring.

mod util;

use std::io::Read;
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::time::Duration;

use stickyd_ring::{Outcome, Ring};

fn close_through_the_ring(mut ring: Ring) {
    let (mut client, server) = util::tcp_pair();
    let op = ring.close(server, 4);
    let c = util::completion_of(&mut ring, op);
    assert_eq!(c.token, 4);
    assert!(matches!(c.outcome, Outcome::Closed(Ok(()))));
    let mut buf = [0u8; 1];
    assert_eq!(
        client.read(&mut buf).unwrap(),
        0,
        "the peer sees end of file"
    );
}

fn timeout_fires(mut ring: Ring) {
    let op = ring.timeout(Duration::from_millis(10), 8);
    let c = util::completion_of(&mut ring, op);
    assert_eq!(c.token, 8);
    assert!(matches!(c.outcome, Outcome::TimedOut(Ok(()))), "{c:?}");
    assert_eq!(ring.in_flight(), 0);
}

fn cancel_a_pending_poll_and_a_timer(mut ring: Ring) {
    let (_client, server) = util::tcp_pair();
    let poll = ring.poll(server.as_fd(), libc::POLLIN as u32, 1);
    let timer = ring.timeout(Duration::from_secs(3600), 2);
    ring.submit().unwrap();
    let cancel_poll = ring.cancel(poll, 3);
    let cancel_timer = ring.cancel(timer, 4);
    assert_eq!(ring.in_flight(), 4);

    let mut seen = 0;
    while seen < 4 {
        let c = util::next(&mut ring);
        seen += 1;
        match c.outcome {
            Outcome::Polled(r) => {
                assert_eq!(c.op, poll);
                assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::ECANCELED));
            }
            Outcome::TimedOut(r) => {
                assert_eq!(c.op, timer);
                assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::ECANCELED));
            }
            Outcome::Cancelled(r) => {
                assert!(c.op == cancel_poll || c.op == cancel_timer);
                r.expect("cancel found its target");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ring.in_flight(), 0);
}

fn cancel_of_a_finished_op_is_harmless(mut ring: Ring) {
    let done = ring.timeout(Duration::ZERO, 1);
    util::completion_of(&mut ring, done);
    // The finished op's slot is reused by a new, pending op; the stale cancel must miss it.
    let (_client, server) = util::tcp_pair();
    let pending = ring.poll(server.as_fd(), libc::POLLIN as u32, 2);
    let cancel = ring.cancel(done, 3);
    let c = util::completion_of(&mut ring, cancel);
    match c.outcome {
        Outcome::Cancelled(r) => assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::ENOENT)),
        other => panic!("unexpected {other:?}"),
    }
    assert!(util::drain_for(&mut ring, Duration::from_millis(20)).is_empty());
    assert_eq!(ring.in_flight(), 1, "the pending poll is untouched");
    let _ = pending;
}

fn short_wait_returns_without_completions(mut ring: Ring) {
    let (_client, server) = util::tcp_pair();
    ring.poll(server.as_fd(), libc::POLLIN as u32, 1);
    ring.wait(Some(Duration::from_millis(10))).unwrap();
    assert!(ring.next_completion().is_none());
    // And with nothing in flight at all.
    let mut idle = util::ring(ring.kind()).unwrap();
    idle.wait(Some(Duration::from_millis(1))).unwrap();
    assert!(idle.next_completion().is_none());
}

#[test]
fn more_operations_than_the_rings_queues_hold() {
    // SQ of 2 and CQ of 8: 200 timers overflow both; every one must complete exactly once.
    let mut ring = match Ring::new(2) {
        Ok(ring) => ring,
        Err(e) => return eprintln!("skipped: {e}"),
    };
    let count = 200;
    let mut ids: Vec<_> = (0..count)
        .map(|i| ring.timeout(Duration::ZERO, i))
        .collect();
    assert_eq!(ring.in_flight(), count as usize);
    let mut tokens = Vec::new();
    while tokens.len() < count as usize {
        let c = util::next(&mut ring);
        assert!(matches!(c.outcome, Outcome::TimedOut(Ok(()))), "{c:?}");
        ids.retain(|id| *id != c.op);
        tokens.push(c.token);
    }
    tokens.sort_unstable();
    assert_eq!(tokens, (0..count).collect::<Vec<_>>());
    assert!(ids.is_empty());
    assert_eq!(ring.in_flight(), 0);
    assert!(util::drain_for(&mut ring, Duration::from_millis(1)).is_empty());
}

#[test]
fn accepted_connections_beyond_the_cq_are_not_lost() {
    let mut ring = match Ring::new(1) {
        Ok(ring) => ring,
        Err(e) => return eprintln!("skipped: {e}"),
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    ring.accept_multi(listener.as_fd(), 1);
    ring.submit().unwrap();
    // More connections than the CQ (4 entries) holds, before anything is reaped.
    let clients: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let mut accepted = 0;
    while accepted < clients.len() {
        match util::next(&mut ring).outcome {
            Outcome::Accepted {
                fd: Ok(_),
                more: true,
            } => accepted += 1,
            // The kernel ends a multishot request when its CQE cannot be posted (CQ full):
            // the last connection still arrives, and the accept is re-armed.
            Outcome::Accepted { fd, more: false } => {
                accepted += usize::from(fd.is_ok());
                ring.accept_multi(listener.as_fd(), 1);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

on_both_backends!(
    close_through_the_ring,
    timeout_fires,
    cancel_a_pending_poll_and_a_timer,
    cancel_of_a_finished_op_is_harmless,
    short_wait_returns_without_completions,
);
