//! The SDK against a fake master over a real SOCK_SEQPACKET socket pair, passing real TCP
//! sockets on 127.0.0.1.

mod util;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::thread;
use std::time::SystemTime;

use stickyd_worker::wire::{self, WireError};
use stickyd_worker::{Error, Worker};
use util::{Master, is_nonblocking, listener, record, seqpacket_pair, tcp_pair};

/// A worker joined to a fake master whose WELCOME was queued before the handshake; the
/// master has read the HELLO.
fn joined(listeners: &[&str]) -> (Master, Worker) {
    let (m, w) = seqpacket_pair();
    let master = Master::new(m);
    master.welcome(1, 4, listeners);
    let worker = Worker::from_fd(w, 1).expect("handshake");
    let hello = master.hello_message();
    assert_eq!((hello.worker_id, hello.pid), (1, std::process::id()));
    assert_eq!(
        hello.flags,
        wire::HELLO_CHANNELS | wire::HELLO_HANDBACK,
        "the SDK takes extra channels and hands connections back"
    );
    (master, worker)
}

fn read_exactly(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    stream.set_read_timeout(Some(util::TIMEOUT)).unwrap();
    let mut buf = vec![0u8; n];
    stream.read_exact(&mut buf).unwrap();
    buf
}

#[test]
fn hello_carries_our_pid_and_welcome_gives_listeners() {
    let (m, w) = seqpacket_pair();
    let master = thread::spawn(move || {
        let master = Master::new(m);
        let hello = master.recv();
        master.welcome(3, 8, &["web", "admin"]);
        (hello, master)
    });
    let worker = Worker::from_fd(w, 3).expect("WELCOME");
    let (hello, _master) = master.join().unwrap();
    let mut expected = vec![1, 1, 3, 0, 3, 0, 0, 0];
    expected.extend_from_slice(&std::process::id().to_le_bytes());
    assert_eq!(
        hello, expected,
        "HELLO: version, type, flags HELLO_CHANNELS | HELLO_HANDBACK, id, pid"
    );
    assert_eq!((worker.id(), worker.workers()), (3, 8));
    assert_eq!(worker.listeners(), ["web", "admin"]);
    assert_eq!(worker.listener_name(1), Some("admin"));
    assert_eq!(worker.listener_name(2), None);
    assert!(!worker.draining());
}

#[test]
fn refused_is_an_error_with_the_reason() {
    let (m, w) = seqpacket_pair();
    let master = thread::spawn(move || {
        let master = Master::new(m);
        master.hello();
        let mut buf = Vec::new();
        wire::encode_refused("slot 0 is taken", &mut buf);
        master.send(&buf, &[]).unwrap();
        master // kept open until the worker has its answer
    });
    match Worker::from_fd(w, 0) {
        Err(Error::Refused(reason)) => assert_eq!(reason, "slot 0 is taken"),
        other => panic!("expected Refused, got {other:?}"),
    }
    drop(master.join().unwrap());
}

#[test]
fn refused_is_read_when_the_master_closes_right_after_sending_it() {
    let (m, w) = seqpacket_pair();
    let master = thread::spawn(move || {
        let master = Master::new(m);
        master.hello();
        let mut buf = Vec::new();
        wire::encode_refused("pool is full", &mut buf);
        master.send(&buf, &[]).unwrap();
    });
    let got = Worker::from_fd(w, 0);
    master.join().unwrap();
    assert!(
        matches!(got, Err(Error::Refused(ref r)) if r == "pool is full"),
        "{got:?}"
    );
}

#[test]
fn refused_is_read_even_when_hello_fails_with_epipe() {
    let (m, w) = seqpacket_pair();
    let master = Master::new(m);
    let mut buf = Vec::new();
    wire::encode_refused("go away", &mut buf);
    master.send(&buf, &[]).unwrap();
    drop(master); // HELLO will meet EPIPE; the REFUSED is still queued
    let got = Worker::from_fd(w, 0);
    assert!(
        matches!(got, Err(Error::Refused(ref r)) if r == "go away"),
        "{got:?}"
    );
}

#[test]
fn master_closing_before_welcome_is_an_error() {
    let (m, w) = seqpacket_pair();
    let master = thread::spawn(move || {
        let master = Master::new(m);
        master.hello();
    });
    let got = Worker::from_fd(w, 0);
    master.join().unwrap();
    assert!(matches!(got, Err(Error::Closed)), "{got:?}");
}

#[test]
fn a_non_seqpacket_channel_is_refused() {
    let (a, _b) = std::os::unix::net::UnixDatagram::pair().unwrap();
    let got = Worker::from_fd(OwnedFd::from(a), 0);
    assert!(matches!(got, Err(Error::NotSeqpacket { .. })), "{got:?}");
}

#[test]
fn from_env_without_the_variables_names_the_missing_one() {
    // The test process is not started by stickyd.
    if std::env::var_os("STICKYD_FD").is_some() {
        return;
    }
    let got = Worker::from_env();
    assert!(
        matches!(got, Err(Error::MissingEnv { name: "STICKYD_FD" })),
        "{got:?}"
    );
}

#[test]
fn conns_hands_out_blocking_streams_from_byte_zero_after_acking() {
    let (master, mut worker) = joined(&["l0", "l1"]);
    let lst = listener();
    let pairs: Vec<_> = (0..3).map(|_| tcp_pair(&lst, b"hello")).collect();
    let records: Vec<_> = pairs
        .iter()
        .enumerate()
        .map(|(i, (client, _))| {
            record(10 + i as u64, client.local_addr().unwrap(), i as u16 % 2, 0)
        })
        .collect();
    // The master may have set O_NONBLOCK: it travels with the fd.
    for (_, accepted) in &pairs {
        accepted.set_nonblocking(true).unwrap();
    }
    let fds: Vec<_> = pairs.iter().map(|(_, accepted)| accepted.as_fd()).collect();
    master.conns(&records, &fds);

    let mut conns = vec![worker.recv().unwrap().expect("a connection")];
    // The ACK is already there, before any byte of any connection has been read.
    let ack = master
        .try_recv()
        .expect("ACK sent before the first connection is handed out");
    assert_eq!(util::decode_ack(&ack), [10, 11, 12]);
    conns.push(worker.recv().unwrap().unwrap());
    conns.push(worker.recv().unwrap().unwrap());
    assert!(master.try_recv().is_none(), "one ACK per CONNS");

    for (conn, rec) in conns.iter_mut().zip(&records) {
        assert_eq!(conn.meta.seq, rec.seq);
        assert_eq!(conn.meta.listener, rec.listener);
        assert_eq!(conn.meta.peer, rec.peer);
        assert_eq!(conn.meta.key_hash, rec.key_hash);
        let ns = conn
            .meta
            .accepted_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        assert_eq!(ns, u128::from(rec.accepted_ns));
        assert!(
            !is_nonblocking(conn.stream.as_fd()),
            "handed out in blocking mode"
        );
        assert_eq!(read_exactly(&mut conn.stream, 5), b"hello");
    }
}

#[test]
fn conns_reach_the_client_and_survive_the_master_copy_closing() {
    let (master, mut worker) = joined(&["l0"]);
    let lst = listener();
    let (mut client, accepted) = tcp_pair(&lst, b"ping");
    let peer = client.local_addr().unwrap();
    master.conns(&[record(1, peer, 0, 0)], &[accepted.as_fd()]);
    let mut conn = worker.recv().unwrap().unwrap();
    assert_eq!(master.ack(), [1]);
    drop(accepted); // the master closes its copy on ACK
    assert_eq!(read_exactly(&mut conn.stream, 4), b"ping");
    conn.stream.write_all(b"pong").unwrap();
    drop(conn);
    assert_eq!(
        util::read_to_end(&mut client),
        b"pong",
        "the worker's close reaches the client"
    );
}

#[test]
fn proxy_header_bytes_are_skipped() {
    let (master, mut worker) = joined(&["l0"]);
    let lst = listener();
    let (_client, accepted) = tcp_pair(&lst, b"PROXYhello");
    accepted.set_nonblocking(true).unwrap();
    let carried: SocketAddr = "[::1]:5555".parse().unwrap();
    master.conns(&[record(7, carried, 0, 5)], &[accepted.as_fd()]);
    let mut conn = worker.recv().unwrap().unwrap();
    assert_eq!(conn.meta.peer, carried);
    assert!(!is_nonblocking(conn.stream.as_fd()));
    assert_eq!(read_exactly(&mut conn.stream, 5), b"hello");
}

#[test]
fn drain_then_shutdown_ends_incoming_after_the_queued_connections() {
    let (master, mut worker) = joined(&["l0"]);
    let _pairs = master.conns_of_fresh(2, b"x");
    master.drain();
    let got: Vec<_> = worker.incoming().map(|c| c.unwrap().meta.seq).collect();
    assert_eq!(got, [0, 1]);
    assert!(worker.draining());
    assert!(worker.recv().unwrap().is_none(), "the end stays the end");
    assert_eq!(master.ack(), [0, 1]);
}

#[test]
fn try_recv_would_block_when_nothing_is_queued() {
    let (m, w) = seqpacket_pair();
    // The same open file description as the worker's channel: its mode shows here.
    let channel = w.try_clone().unwrap();
    let master = Master::new(m);
    master.welcome(1, 4, &["l0"]);
    let mut worker = Worker::from_fd(w, 1).expect("handshake");
    master.hello();
    let err = worker.try_recv().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);

    let lst = listener();
    let (client, accepted) = tcp_pair(&lst, b"x");
    master.conns(
        &[record(9, client.local_addr().unwrap(), 0, 0)],
        &[accepted.as_fd()],
    );
    let conn = worker.try_recv().unwrap().expect("queued connection");
    assert_eq!(conn.meta.seq, 9);
    assert!(!is_nonblocking(conn.stream.as_fd()));
    assert_eq!(master.ack(), [9]);
    assert_eq!(
        worker.try_recv().unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    assert!(
        !is_nonblocking(channel.as_fd()),
        "the channel's own mode is untouched"
    );

    master.drain();
    assert!(worker.try_recv().unwrap().is_none());
    assert!(worker.draining());
}

#[test]
fn master_going_away_ends_recv() {
    let (master, mut worker) = joined(&["l0"]);
    drop(master);
    assert!(worker.recv().unwrap().is_none());
    assert!(!worker.draining());
}

#[test]
fn master_going_away_with_unread_data_ends_recv() {
    // The master never reads the HELLO: its close resets the worker's side (ECONNRESET),
    // which the SDK reads past to the end.
    let (m, w) = seqpacket_pair();
    let master = Master::new(m);
    master.welcome(0, 1, &["l0"]);
    let mut worker = Worker::from_fd(w, 0).unwrap();
    drop(master);
    assert!(worker.recv().unwrap().is_none());
}

#[test]
fn queued_connections_are_delivered_after_the_master_goes_away() {
    let (master, mut worker) = joined(&["l0"]);
    let lst = listener();
    let (client, accepted) = tcp_pair(&lst, b"late");
    master.conns(
        &[record(3, client.local_addr().unwrap(), 0, 0)],
        &[accepted.as_fd()],
    );
    drop(master); // the ACK will meet EPIPE: not an error
    let mut conn = worker.recv().unwrap().expect("sent before the close");
    assert_eq!(read_exactly(&mut conn.stream, 4), b"late");
    assert!(worker.recv().unwrap().is_none());
}

#[test]
fn protocol_errors_are_invalid_data_and_later_messages_still_work() {
    let (master, mut worker) = joined(&["l0"]);
    master.welcome(1, 4, &["again"]);
    let err = worker.recv().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("WELCOME"), "{err}");

    let mut hello = Vec::new();
    wire::encode_hello(
        &wire::Hello {
            worker_id: 1,
            pid: 1,
            flags: 0,
        },
        &mut hello,
    );
    master.send(&hello, &[]).unwrap();
    assert_eq!(
        worker.recv().unwrap_err().kind(),
        io::ErrorKind::InvalidData
    );

    master.send(&[9, 6, 0, 0], &[]).unwrap();
    let err = worker.recv().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    let wire_err = err.get_ref().and_then(|e| e.downcast_ref::<WireError>());
    assert_eq!(wire_err, Some(&WireError::Version(9)));
    assert!(err.to_string().contains("version 9"), "{err}");

    let lst = listener();
    let (client, accepted) = tcp_pair(&lst, b"x");
    master.conns(
        &[record(4, client.local_addr().unwrap(), 0, 0)],
        &[accepted.as_fd()],
    );
    assert_eq!(worker.recv().unwrap().unwrap().meta.seq, 4);
    assert_eq!(master.ack(), [4]);
}

#[test]
fn more_fds_than_records_is_a_protocol_error_and_extra_fds_are_closed() {
    let (master, mut worker) = joined(&["l0"]);
    let lst = listener();
    let (client, accepted) = tcp_pair(&lst, b"x");
    let (mut extra_client, extra) = tcp_pair(&lst, b"y");
    master.conns(
        &[record(5, client.local_addr().unwrap(), 0, 0)],
        &[accepted.as_fd(), extra.as_fd()],
    );
    let err = worker.recv().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert_eq!(master.ack(), [5]);
    assert_eq!(worker.recv().unwrap().unwrap().meta.seq, 5);
    // The worker closed its copy of the extra fd: once the master's closes too, the client
    // sees the end (a reset, since its "y" was never read).
    drop(extra);
    let mut buf = [0u8; 1];
    match extra_client.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the end of the extra connection, got {other:?}"),
    }
}

#[test]
fn fds_with_a_drain_are_closed_and_reported() {
    let (master, mut worker) = joined(&["l0"]);
    let lst = listener();
    let (_client, accepted) = tcp_pair(&lst, b"x");
    let mut drain = Vec::new();
    wire::encode_drain(&mut drain);
    master.send(&drain, &[accepted.as_fd()]).unwrap();
    let err = worker.recv().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(worker.draining());
}
