//! The async receive (feature `tokio`) against a fake master over a real SOCK_SEQPACKET socket
//! pair, passing real TCP sockets on 127.0.0.1.

#![cfg(feature = "tokio")]

mod util;

use std::io;
use std::os::fd::AsFd;

use stickyd_worker::{AsyncWorker, Worker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;
use util::{Master, TIMEOUT, is_nonblocking, listener, record, seqpacket_pair, tcp_pair};

/// A worker joined to a fake master (the master has read the HELLO).
fn joined() -> (Master, Worker) {
    let (m, w) = seqpacket_pair();
    let master = Master::new(m);
    master.welcome(1, 4, &["l0", "l1"]);
    let worker = Worker::from_fd(w, 1).expect("handshake");
    master.hello();
    (master, worker)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn recv_yields_nonblocking_tokio_streams_from_byte_zero_after_acking() {
    runtime().block_on(async {
        let (master, worker) = joined();
        let mut worker = AsyncWorker::new(worker).unwrap();
        assert_eq!(worker.worker().id(), 1);
        assert_eq!(worker.worker().listeners(), ["l0", "l1"]);
        let lst = listener();
        let pairs: Vec<_> = (0..3).map(|_| tcp_pair(&lst, b"hello")).collect();
        let records: Vec<_> = pairs
            .iter()
            .enumerate()
            .map(|(i, (c, _))| record(20 + i as u64, c.local_addr().unwrap(), i as u16 % 2, 0))
            .collect();
        let fds: Vec<_> = pairs.iter().map(|(_, a)| a.as_fd()).collect();
        master.conns(&records, &fds);

        let mut conns = Vec::new();
        for _ in 0..3 {
            let conn = timeout(TIMEOUT, worker.recv()).await.unwrap();
            conns.push(conn.expect("a connection").unwrap());
        }
        assert_eq!(master.ack(), [20, 21, 22]);
        assert!(master.try_recv().is_none(), "one ACK per CONNS");
        for (conn, rec) in conns.iter_mut().zip(&records) {
            assert_eq!(conn.meta.seq, rec.seq);
            assert_eq!(conn.meta.listener, rec.listener);
            assert_eq!(conn.meta.peer, rec.peer);
            assert!(
                is_nonblocking(conn.stream.as_fd()),
                "non-blocking for tokio"
            );
            let mut first = [0u8; 5];
            timeout(TIMEOUT, conn.stream.read_exact(&mut first))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&first, b"hello");
        }
        assert!(
            !is_nonblocking(worker.worker().as_fd()),
            "the channel's own mode is untouched"
        );
    });
}

#[test]
fn the_stream_reaches_the_client() {
    runtime().block_on(async {
        let (master, worker) = joined();
        let mut worker = AsyncWorker::new(worker).unwrap();
        let lst = listener();
        let (mut client, accepted) = tcp_pair(&lst, b"ping");
        master.conns(
            &[record(1, client.local_addr().unwrap(), 0, 0)],
            &[accepted.as_fd()],
        );
        let mut conn = worker.recv().await.unwrap().unwrap();
        drop(accepted); // the master closes its copy on ACK
        let mut ping = [0u8; 4];
        conn.stream.read_exact(&mut ping).await.unwrap();
        assert_eq!(&ping, b"ping");
        conn.stream.write_all(b"pong").await.unwrap();
        drop(conn);
        assert_eq!(util::read_to_end(&mut client), b"pong");
    });
}

#[test]
fn recv_waits_for_a_connection_without_blocking_the_thread() {
    runtime().block_on(async {
        let (master, worker) = joined();
        let mut worker = AsyncWorker::new(worker).unwrap();
        let waiting = tokio::spawn(async move {
            let conn = worker.recv().await;
            conn.map(|c| c.map(|c| c.meta.seq))
        });
        // The task runs until it waits on the channel; this (same) thread goes on.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!waiting.is_finished(), "nothing was sent yet");
        let lst = listener();
        let (client, accepted) = tcp_pair(&lst, b"x");
        master.conns(
            &[record(5, client.local_addr().unwrap(), 0, 0)],
            &[accepted.as_fd()],
        );
        let got = timeout(TIMEOUT, waiting).await.unwrap().unwrap();
        assert_eq!(got.unwrap().unwrap(), 5);
        assert_eq!(master.ack(), [5]);
    });
}

#[test]
fn connections_queued_before_wrapping_are_delivered() {
    // The blocking API took one of two connections of a CONNS; the other is queued in the
    // worker with nothing left on the socket.
    let (master, mut worker) = joined();
    let _pairs = master.conns_of_fresh(2, b"x");
    assert_eq!(worker.recv().unwrap().unwrap().meta.seq, 0);
    runtime().block_on(async {
        let mut worker = AsyncWorker::new(worker).unwrap();
        let conn = timeout(TIMEOUT, worker.recv()).await.unwrap();
        assert_eq!(conn.unwrap().unwrap().meta.seq, 1);
    });
}

#[test]
fn drain_then_shutdown_ends_recv_after_the_queued_connections() {
    runtime().block_on(async {
        let (master, worker) = joined();
        let mut worker = AsyncWorker::new(worker).unwrap();
        let _pairs = master.conns_of_fresh(2, b"x");
        master.drain();
        let mut got = Vec::new();
        while let Some(conn) = timeout(TIMEOUT, worker.recv()).await.unwrap() {
            got.push(conn.unwrap().meta.seq);
        }
        assert_eq!(got, [0, 1]);
        assert!(worker.worker().draining());
        assert!(worker.recv().await.is_none(), "the end stays the end");
        assert_eq!(master.ack(), [0, 1]);
    });
}

#[test]
fn master_going_away_ends_recv() {
    runtime().block_on(async {
        let (master, worker) = joined();
        let mut worker = AsyncWorker::new(worker).unwrap();
        drop(master);
        assert!(timeout(TIMEOUT, worker.recv()).await.unwrap().is_none());
        assert!(!worker.worker().draining());
    });
}

#[test]
fn a_dropped_recv_loses_no_connection() {
    runtime().block_on(async {
        let (master, worker) = joined();
        let mut worker = AsyncWorker::new(worker).unwrap();
        // Cancelled while waiting, as in a `select!` whose other branch won.
        tokio::select! {
            biased;
            _ = std::future::ready(()) => {}
            _ = worker.recv() => panic!("nothing was sent"),
        }
        let lst = listener();
        let (client, accepted) = tcp_pair(&lst, b"x");
        master.conns(
            &[record(8, client.local_addr().unwrap(), 0, 0)],
            &[accepted.as_fd()],
        );
        let conn = timeout(TIMEOUT, worker.recv()).await.unwrap();
        assert_eq!(conn.unwrap().unwrap().meta.seq, 8);
    });
}

#[test]
fn into_worker_gives_the_blocking_api_back() {
    let (master, worker) = joined();
    let worker = runtime().block_on(async { AsyncWorker::new(worker).unwrap().into_worker() });
    let mut worker = worker;
    assert_eq!(
        worker.try_recv().unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    master.drain();
    assert!(
        worker.recv().unwrap().is_none(),
        "blocking recv reads to the end"
    );
}

#[test]
fn new_outside_a_runtime_is_an_error_not_a_panic() {
    let (_master, worker) = joined();
    let err = AsyncWorker::new(worker).unwrap_err();
    assert!(err.to_string().contains("tokio runtime"), "{err}");
}

#[test]
fn recv_takes_connections_from_extra_channels_that_arrive_after_registering() {
    runtime().block_on(async {
        let (master, worker) = joined();
        // Registered before the extra channels exist.
        let mut worker = AsyncWorker::new(worker).unwrap();
        let extra = master.extra_channels(2);
        let _first = extra[1].conns_of_fresh_from(50, 1, b"x");
        let conn = timeout(TIMEOUT, worker.recv()).await.unwrap();
        assert_eq!(conn.unwrap().unwrap().meta.seq, 50);
        assert_eq!(extra[1].ack(), [50], "acknowledged on its own channel");
        assert!(master.try_recv().is_none());

        // Waiting, then woken by a message on the other extra channel.
        let waiting = tokio::spawn(async move {
            let seq = worker.recv().await.map(|c| c.map(|c| c.meta.seq));
            (seq, worker)
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!waiting.is_finished(), "nothing was sent yet");
        let _second = extra[0].conns_of_fresh_from(51, 1, b"x");
        let (seq, mut worker) = timeout(TIMEOUT, waiting).await.unwrap().unwrap();
        assert_eq!(seq.unwrap().unwrap(), 51);
        assert_eq!(extra[0].ack(), [51]);

        // The end: DRAIN on the first channel, then every channel closed.
        master.drain();
        let _last = extra[0].conns_of_fresh_from(52, 1, b"x");
        drop(extra);
        let mut got = Vec::new();
        while let Some(conn) = timeout(TIMEOUT, worker.recv()).await.unwrap() {
            got.push(conn.unwrap().meta.seq);
        }
        assert_eq!(
            got,
            [52],
            "queued on an extra channel after DRAIN: not lost"
        );
        assert!(worker.worker().draining());
    });
}

#[test]
fn hand_back_sends_a_tokio_stream_and_returns_it_when_refused() {
    runtime().block_on(async {
        let (master, mut worker) = joined();
        let mut rehash = Vec::new();
        stickyd_worker::wire::encode_rehash(&[1], &mut rehash);
        master.send(&rehash, &[]).unwrap();
        match worker.try_recv() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            other => panic!("expected WouldBlock, got {other:?}"),
        }
        let mut worker = AsyncWorker::new(worker).unwrap();
        assert!(worker.rehash_per_request(1));
        assert!(!worker.rehash_per_request(0));
        let lst = listener();

        let (mut client, accepted) = tcp_pair(&lst, b"next");
        accepted.set_nonblocking(true).unwrap();
        let stream = tokio::net::TcpStream::from_std(accepted).unwrap();
        worker.hand_back(stream, 1).expect("handed back");
        let (bytes, fds) = master.recv_with_fds();
        assert_eq!(
            bytes,
            [1, 9, 1, 0, 1, 0],
            "HANDBACK of one connection of listener 1"
        );
        let mut received = std::net::TcpStream::from(fds.into_iter().next().unwrap());
        let mut first = [0u8; 4];
        io::Read::read_exact(&mut received, &mut first).unwrap();
        assert_eq!(&first, b"next");
        drop(received);
        let mut rest = Vec::new();
        assert_eq!(io::Read::read_to_end(&mut client, &mut rest).unwrap(), 0);

        let (mut client, accepted) = tcp_pair(&lst, b"");
        accepted.set_nonblocking(true).unwrap();
        let stream = tokio::net::TcpStream::from_std(accepted).unwrap();
        let err = worker
            .hand_back(stream, 0)
            .expect_err("listener 0 was not named");
        let mut stream = err.into_conn();
        timeout(TIMEOUT, stream.write_all(b"kept"))
            .await
            .unwrap()
            .unwrap();
        let mut got = [0u8; 4];
        io::Read::read_exact(&mut client, &mut got).unwrap();
        assert_eq!(&got, b"kept");
    });
}
