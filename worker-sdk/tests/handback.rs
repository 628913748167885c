//! Hand-backs (`--rehash-per-request`): the master's `REHASH` names listeners, and
//! `Worker::hand_back` returns a connection with `HANDBACK`, against a fake master over a real
//! SOCK_SEQPACKET socket pair.

mod util;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, OwnedFd};

use stickyd_worker::Worker;
use stickyd_worker::wire::{self, Message};
use util::{Master, TIMEOUT, listener, seqpacket_pair, tcp_pair};

/// A worker joined to a fake master with three listeners (the master has read the HELLO).
fn joined() -> (Master, Worker) {
    let (m, w) = seqpacket_pair();
    let master = Master::new(m);
    master.welcome(0, 2, &["a", "b", "c"]);
    let worker = Worker::from_fd(w, 0).expect("handshake");
    let hello = master.hello_message();
    assert_eq!(hello.flags, wire::HELLO_CHANNELS | wire::HELLO_HANDBACK);
    (master, worker)
}

fn rehash(master: &Master, listeners: &[u16], fds: &[std::os::fd::BorrowedFd<'_>]) {
    let mut buf = Vec::new();
    wire::encode_rehash(listeners, &mut buf);
    master.send(&buf, fds).unwrap();
}

/// Lets the worker read everything queued; returns the errors it reported on the way.
fn settle(worker: &mut Worker) -> Vec<io::Error> {
    let mut errors = Vec::new();
    loop {
        match worker.try_recv() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return errors,
            Err(e) => errors.push(e),
            other => panic!("expected nothing but errors, got {other:?}"),
        }
    }
}

fn rehashing(listeners: &[u16]) -> (Master, Worker) {
    let (master, mut worker) = joined();
    rehash(&master, listeners, &[]);
    assert!(settle(&mut worker).is_empty());
    (master, worker)
}

/// A HANDBACK and its fds, as the master receives them.
fn recv_handback(master: &Master) -> (Vec<u16>, Vec<OwnedFd>) {
    let (bytes, fds) = master.recv_with_fds();
    match wire::decode(&bytes).expect("HANDBACK decodes") {
        Message::Handback(listeners) => (listeners.iter().collect(), fds),
        other => panic!("expected HANDBACK, got {other:?}"),
    }
}

fn read_exactly(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut buf = vec![0u8; n];
    stream.read_exact(&mut buf).unwrap();
    buf
}

#[test]
fn hello_says_the_worker_hands_back() {
    let (master, worker) = joined();
    assert!(!worker.rehash_per_request(0), "nothing before REHASH");
    drop((master, worker));
}

#[test]
fn rehash_names_the_listeners_and_a_second_one_replaces_it() {
    let (master, mut worker) = rehashing(&[2, 0, 2]);
    assert!(worker.rehash_per_request(0));
    assert!(!worker.rehash_per_request(1));
    assert!(worker.rehash_per_request(2));
    assert!(!worker.rehash_per_request(3));
    rehash(&master, &[1], &[]);
    assert!(settle(&mut worker).is_empty());
    assert!(!worker.rehash_per_request(0));
    assert!(worker.rehash_per_request(1));
    assert!(!worker.rehash_per_request(2));
}

#[test]
fn fds_with_a_rehash_are_closed_and_reported() {
    let (master, mut worker) = joined();
    let (mut client, accepted) = tcp_pair(&listener(), b"");
    rehash(&master, &[1], &[accepted.as_fd()]);
    drop(accepted);
    let errors = settle(&mut worker);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].kind(), io::ErrorKind::InvalidData);
    assert!(errors[0].to_string().contains("REHASH"), "{}", errors[0]);
    assert!(
        worker.rehash_per_request(1),
        "the listener set is taken all the same"
    );
    let mut rest = Vec::new();
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert_eq!(
        client.read_to_end(&mut rest).unwrap(),
        0,
        "the worker closed the fd"
    );
}

#[test]
fn rehash_on_an_extra_channel_is_reported_and_ignored() {
    let (master, mut worker) = joined();
    let extra = master.extra_channels(1);
    assert!(settle(&mut worker).is_empty());
    rehash(&extra[0], &[0], &[]);
    let errors = settle(&mut worker);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].kind(), io::ErrorKind::InvalidData);
    assert!(errors[0].to_string().contains("REHASH"), "{}", errors[0]);
    assert!(!worker.rehash_per_request(0));
}

#[test]
fn hand_back_sends_that_connection_with_its_listener_and_closes_the_workers_copy() {
    let (master, mut worker) = rehashing(&[0, 2]);
    let (mut client, accepted) = tcp_pair(&listener(), b"GET /next HTTP/1.1\r\n\r\n");
    worker.hand_back(accepted, 2).expect("handed back");
    let (listeners, mut fds) = recv_handback(&master);
    assert_eq!(listeners, [2]);
    assert_eq!(fds.len(), 1);
    let mut received = TcpStream::from(fds.pop().unwrap());
    // The same connection, its unread bytes intact from the first.
    assert_eq!(
        read_exactly(&mut received, 22),
        b"GET /next HTTP/1.1\r\n\r\n"
    );
    received.write_all(b"from the master's copy").unwrap();
    assert_eq!(read_exactly(&mut client, 22), b"from the master's copy");
    // The worker kept no copy: closing the master's ends the connection.
    drop(received);
    let mut rest = Vec::new();
    assert_eq!(client.read_to_end(&mut rest).unwrap(), 0);
    assert!(master.try_recv().is_none(), "one message per hand-back");
}

#[test]
fn hand_back_takes_a_borrow_too() {
    let (master, mut worker) = rehashing(&[1]);
    let (mut client, accepted) = tcp_pair(&listener(), b"x");
    worker.hand_back(&accepted, 1).expect("handed back");
    let (listeners, fds) = recv_handback(&master);
    assert_eq!((listeners.as_slice(), fds.len()), ([1].as_slice(), 1));
    let mut received = TcpStream::from(fds.into_iter().next().unwrap());
    received.write_all(b"y").unwrap();
    assert_eq!(read_exactly(&mut client, 1), b"y");
}

#[test]
fn hand_back_after_drain_is_refused_and_the_connection_stays_usable() {
    let (master, mut worker) = rehashing(&[0]);
    // DRAIN, with the master's sending side still open: the first channel has not ended.
    let mut drain = Vec::new();
    wire::encode_drain(&mut drain);
    master.send(&drain, &[]).unwrap();
    assert!(settle(&mut worker).is_empty());
    assert!(worker.draining());
    // A worker that was sent REHASH says it has read DRAIN: it hands nothing back from now on.
    assert!(matches!(wire::decode(&master.recv()), Ok(Message::Drained)));
    let (mut client, accepted) = tcp_pair(&listener(), b"GET / HTTP/1.1\r\n\r\n");
    let err = worker.hand_back(accepted, 0).expect_err("refused");
    assert_eq!(err.error().kind(), io::ErrorKind::Other);
    assert!(err.to_string().contains("draining"), "{err}");
    let mut conn = err.into_conn();
    assert_eq!(read_exactly(&mut conn, 18), b"GET / HTTP/1.1\r\n\r\n");
    conn.write_all(b"served here").unwrap();
    assert_eq!(read_exactly(&mut client, 11), b"served here");
    assert!(master.try_recv().is_none(), "nothing was sent");
}

#[test]
fn a_worker_never_sent_rehash_says_nothing_on_drain() {
    let (master, mut worker) = joined();
    let mut drain = Vec::new();
    wire::encode_drain(&mut drain);
    master.send(&drain, &[]).unwrap();
    assert!(settle(&mut worker).is_empty());
    assert!(worker.draining());
    assert!(master.try_recv().is_none(), "no DRAINED without REHASH");
}

#[test]
fn hand_back_on_a_listener_the_master_did_not_name_is_refused() {
    let (master, mut worker) = rehashing(&[0]);
    let (_client, accepted) = tcp_pair(&listener(), b"x");
    let err = worker.hand_back(accepted, 1).expect_err("refused");
    assert_eq!(err.error().kind(), io::ErrorKind::InvalidInput);
    let io_error = io::Error::from(err);
    assert_eq!(io_error.kind(), io::ErrorKind::InvalidInput);
    assert!(master.try_recv().is_none(), "nothing was sent");
}

#[test]
fn hand_back_to_a_master_that_is_gone_fails_and_returns_the_connection() {
    let (master, mut worker) = rehashing(&[0]);
    drop(master);
    let (mut client, accepted) = tcp_pair(&listener(), b"x");
    let err = worker
        .hand_back(accepted, 0)
        .expect_err("the master is gone");
    assert_eq!(err.error().kind(), io::ErrorKind::BrokenPipe, "{err}");
    let conn = err.into_conn();
    let err = worker.hand_back(conn, 0).expect_err("refused at once now");
    assert_eq!(err.error().kind(), io::ErrorKind::BrokenPipe, "{err}");
    let mut conn = err.into_conn();
    conn.write_all(b"still mine").unwrap();
    assert_eq!(read_exactly(&mut client, 10), b"still mine");
}
