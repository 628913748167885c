//! What the epoll emulation must get right beside the shared tests: one fd with a read-side and
//! a write-side operation pending at once, cancelling every kind of operation, the accept
//! batch, timer order, and what `close` does to operations still pending. The cases whose
//! semantics both backends share run on both.

mod util;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use stickyd_ring::{InMsg, OpId, OutMsg, Outcome, Ring, sys};

/// Sends 512-byte messages on `fd` without blocking until the socket is full; returns how many.
fn fill(fd: BorrowedFd<'_>) -> usize {
    let chunk = [b'f'; 512];
    let mut sent = 0;
    loop {
        // SAFETY: `chunk` is a live buffer of the length passed; send only reads it.
        let rc = unsafe {
            libc::send(
                fd.as_raw_fd(),
                chunk.as_ptr().cast(),
                chunk.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}");
            return sent;
        }
        sent += 1;
    }
}

/// Reads one message of up to 1 KiB from `fd` (blocking): its bytes.
fn read_message(fd: BorrowedFd<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; 1024];
    // SAFETY: `buf` is a live, writable buffer of the length passed.
    let rc = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    let n = usize::try_from(rc).expect("recv");
    buf.truncate(n);
    buf
}

fn channel_with_recv_msg_and_send_msg_pending_at_once(mut ring: Ring) {
    let (master, worker) = sys::seqpacket_pair().unwrap();
    let recv = ring.recv_msg(master.as_fd(), InMsg::new(64, 4), 1);
    let filled = fill(master.as_fd());
    assert!(filled > 0);
    let send = ring.send_msg(master.as_fd(), OutMsg::new(b"last".to_vec(), &[]), 2);
    assert!(util::drain_for(&mut ring, Duration::from_millis(20)).is_empty());
    assert_eq!(ring.in_flight(), 2);

    // The worker speaks: only the receive completes; the send still waits for room.
    let mut peer = File::from(worker.try_clone().unwrap());
    peer.write_all(b"ping").unwrap();
    let c = util::next(&mut ring);
    assert_eq!((c.op, c.token), (recv, 1));
    match c.outcome {
        Outcome::ReceivedMsg { msg, result } => {
            assert_eq!(result.unwrap(), 4);
            assert_eq!(msg.data(), b"ping");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(ring.in_flight(), 1, "the send is still pending");

    // The worker drains its channel: the send goes through, after everything before it.
    for _ in 0..filled {
        assert_eq!(read_message(worker.as_fd()).len(), 512);
    }
    let c = util::completion_of(&mut ring, send);
    match c.outcome {
        Outcome::Sent { msg, result } => {
            assert_eq!(result.unwrap(), 4);
            assert_eq!(msg.data(), b"last");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(read_message(worker.as_fd()), b"last");
    assert_eq!(ring.in_flight(), 0);
}

fn cancel_each_kind_of_operation(mut ring: Ring) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let (_client, server) = util::tcp_pair();
    let (_client2, server2) = util::tcp_pair();
    let (master, _worker) = sys::seqpacket_pair().unwrap();
    let (full, _reader) = sys::seqpacket_pair().unwrap();
    fill(full.as_fd());

    let targets: Vec<OpId> = vec![
        ring.accept_multi(listener.as_fd(), 0),
        ring.recv(server.as_fd(), Vec::with_capacity(100), 0, 1),
        ring.poll(server2.as_fd(), libc::POLLIN as u32, 2),
        ring.send_msg(full.as_fd(), OutMsg::new(b"stuck".to_vec(), &[]), 3),
        ring.recv_msg(master.as_fd(), InMsg::new(64, 4), 4),
        ring.timeout(Duration::from_secs(3600), 5),
    ];
    assert!(util::drain_for(&mut ring, Duration::from_millis(20)).is_empty());
    let cancels: Vec<OpId> = targets.iter().map(|&op| ring.cancel(op, 100)).collect();
    assert_eq!(ring.in_flight(), 12);

    let mut ended = Vec::new();
    let mut cancelled = 0;
    while ended.len() + cancelled < 12 {
        let c = util::next(&mut ring);
        let ecanceled = |e: std::io::Error| assert_eq!(e.raw_os_error(), Some(libc::ECANCELED));
        match c.outcome {
            Outcome::Cancelled(r) => {
                assert!(cancels.contains(&c.op));
                r.expect("the target was pending");
                cancelled += 1;
                continue;
            }
            Outcome::Accepted { fd, more } => {
                assert!(!more);
                ecanceled(fd.unwrap_err());
            }
            Outcome::Received { buf, result } => {
                assert_eq!(buf.capacity(), 100, "the buffer comes back");
                ecanceled(result.unwrap_err());
            }
            Outcome::Polled(r) => ecanceled(r.unwrap_err()),
            Outcome::Sent { msg, result } => {
                assert_eq!(msg.data(), b"stuck", "the message comes back");
                ecanceled(result.unwrap_err());
            }
            Outcome::ReceivedMsg { msg, result } => {
                assert!(msg.data().is_empty());
                ecanceled(result.unwrap_err());
            }
            Outcome::TimedOut(r) => ecanceled(r.unwrap_err()),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(targets[c.token as usize], c.op);
        ended.push(c.token);
    }
    ended.sort_unstable();
    assert_eq!(ended, [0, 1, 2, 3, 4, 5], "each target ended exactly once");
    assert_eq!(ring.in_flight(), 0);

    // Cancelling again finds nothing.
    let again = ring.cancel(targets[0], 7);
    match util::completion_of(&mut ring, again).outcome {
        Outcome::Cancelled(r) => assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::ENOENT)),
        other => panic!("unexpected {other:?}"),
    }
}

fn recv_without_dontwait_waits_for_data(mut ring: Ring) {
    let (mut client, server) = util::tcp_pair();
    let op = ring.recv(server.as_fd(), Vec::with_capacity(16), 0, 1);
    assert!(util::drain_for(&mut ring, Duration::from_millis(20)).is_empty());
    assert_eq!(ring.in_flight(), 1);
    client.write_all(b"hello").unwrap();
    match util::completion_of(&mut ring, op).outcome {
        Outcome::Received { buf, result } => {
            assert_eq!(result.unwrap(), 5);
            assert_eq!(buf, b"hello");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(ring.in_flight(), 0);
}

fn an_operation_is_in_flight_until_its_completion_is_taken(mut ring: Ring) {
    let (_client, server) = util::tcp_pair();
    let flags = libc::MSG_PEEK | libc::MSG_DONTWAIT;
    let op = ring.recv(server.as_fd(), Vec::with_capacity(16), flags, 1);
    assert_eq!(ring.in_flight(), 1);
    ring.submit().unwrap();
    assert_eq!(ring.in_flight(), 1);
    assert_eq!(util::next(&mut ring).op, op);
    assert_eq!(ring.in_flight(), 0);
}

fn a_regular_file_polls_ready(mut ring: Ring) {
    let file = File::open("/proc/self/stat").unwrap();
    let op = ring.poll(file.as_fd(), libc::POLLIN as u32, 1);
    match util::completion_of(&mut ring, op).outcome {
        Outcome::Polled(r) => assert_ne!(r.unwrap() & libc::POLLIN as u32, 0),
        other => panic!("unexpected {other:?}"),
    }
}

on_both_backends!(
    channel_with_recv_msg_and_send_msg_pending_at_once,
    cancel_each_kind_of_operation,
    recv_without_dontwait_waits_for_data,
    an_operation_is_in_flight_until_its_completion_is_taken,
    a_regular_file_polls_ready,
);

fn epoll() -> Ring {
    Ring::epoll().expect("epoll")
}

#[test]
fn accept_takes_a_batch_per_wake_and_lets_other_events_through() {
    let mut ring = epoll();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    sys::listen(listener.as_fd(), 1024).unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = ring.accept_multi(listener.as_fd(), 1);
    let count = 150;
    let _clients: Vec<TcpStream> = (0..count)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    let (mut peer, conn) = util::tcp_pair();
    peer.write_all(b"x").unwrap();
    let poll = ring.poll(conn.as_fd(), libc::POLLIN as u32, 2);

    ring.wait(Some(util::LIMIT)).unwrap();
    let first: Vec<_> = std::iter::from_fn(|| ring.next_completion()).collect();
    let accepted_first = first.iter().filter(|c| c.op == accept).count();
    assert!(
        (1..=64).contains(&accepted_first),
        "{accepted_first} accepted in one wake"
    );
    assert!(
        first.iter().any(|c| c.op == poll),
        "the poll was not held back by the accepts"
    );

    let mut accepted: Vec<OwnedFd> = Vec::new();
    let mut pending = first;
    loop {
        for c in pending.drain(..).filter(|c| c.op == accept) {
            match c.outcome {
                Outcome::Accepted { fd, more: true } => accepted.push(fd.unwrap()),
                other => panic!("unexpected {other:?}"),
            }
        }
        if accepted.len() == count {
            break;
        }
        pending.push(util::next(&mut ring));
    }
    assert_eq!(ring.in_flight(), 1, "the accept is still armed");
}

#[test]
fn timers_fire_in_deadline_order_each_once() {
    let mut ring = epoll();
    let mut ids: Vec<OpId> = (0..200).map(|i| ring.timeout(Duration::ZERO, i)).collect();
    let late = ring.timeout(Duration::from_millis(30), 1001);
    let early = ring.timeout(Duration::from_millis(10), 1000);
    let mut tokens = Vec::new();
    while tokens.len() < 202 {
        let c = util::next(&mut ring);
        assert!(matches!(c.outcome, Outcome::TimedOut(Ok(()))), "{c:?}");
        ids.retain(|id| *id != c.op);
        tokens.push(c.token);
    }
    assert!(ids.is_empty());
    assert_eq!(&tokens[..200], (0..200).collect::<Vec<_>>(), "arming order");
    assert_eq!(&tokens[200..], [1000, 1001], "deadline order");
    let _ = (late, early);
    assert_eq!(ring.in_flight(), 0);
}

#[test]
fn close_ends_the_operations_pending_on_the_fd_first() {
    let mut ring = epoll();
    let (mut client, server) = util::tcp_pair();
    let poll = ring.poll(server.as_fd(), libc::POLLIN as u32, 1);
    let close = ring.close(server, 2);
    let c = util::next(&mut ring);
    assert_eq!(c.op, poll);
    match c.outcome {
        Outcome::Polled(r) => assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::ECANCELED)),
        other => panic!("unexpected {other:?}"),
    }
    let c = util::next(&mut ring);
    assert_eq!(c.op, close);
    assert!(matches!(c.outcome, Outcome::Closed(Ok(()))));
    let mut buf = [0u8; 1];
    assert_eq!(
        client.read(&mut buf).unwrap(),
        0,
        "the peer sees end of file"
    );
    assert_eq!(ring.in_flight(), 0);
}

#[test]
fn receives_on_one_fd_are_served_in_order() {
    let mut ring = epoll();
    let (master, worker) = sys::seqpacket_pair().unwrap();
    let first = ring.recv_msg(master.as_fd(), InMsg::new(16, 0), 1);
    let second = ring.recv_msg(master.as_fd(), InMsg::new(16, 0), 2);
    assert!(util::drain_for(&mut ring, Duration::from_millis(10)).is_empty());
    let mut peer = File::from(worker);
    peer.write_all(b"one").unwrap();
    peer.write_all(b"two").unwrap();
    for (op, expected) in [(first, b"one"), (second, b"two")] {
        let c = util::next(&mut ring);
        assert_eq!(c.op, op);
        match c.outcome {
            Outcome::ReceivedMsg { msg, result } => {
                assert_eq!(result.unwrap(), 3);
                assert_eq!(msg.data(), expected);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn the_listener_is_set_non_blocking() {
    let mut ring = epoll();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let accept = ring.accept_multi(listener.as_fd(), 1);
    // SAFETY: F_GETFL on a live fd touches no memory.
    let flags = unsafe { libc::fcntl(listener.as_raw_fd(), libc::F_GETFL) };
    assert_ne!(flags & libc::O_NONBLOCK, 0);
    ring.cancel(accept, 2);
}
