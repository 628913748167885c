//! Dropping a ring with operations in flight.

mod util;

use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::time::Duration;

use stickyd_ring::{InMsg, Ring, sys};

fn drop_with_pending_recv_accept_and_recvmsg(mut ring: Ring) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let (_client, server) = util::tcp_pair();
    let (_master, worker) = sys::seqpacket_pair().unwrap();
    ring.accept_multi(listener.as_fd(), 1);
    ring.recv(server.as_fd(), Vec::with_capacity(4096), 0, 2);
    ring.recv_msg(worker.as_fd(), InMsg::new(4096, 64), 3);
    ring.timeout(Duration::from_secs(3600), 4);
    ring.submit().unwrap();
    assert!(util::drain_for(&mut ring, Duration::from_millis(10)).is_empty());
    assert_eq!(ring.in_flight(), 4);
    drop(ring);

    // The accept was cancelled: a new connection waits in the backlog for a plain accept.
    let _late = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    listener.set_nonblocking(false).unwrap();
    let (conn, _) = listener.accept().expect("the listener is free again");
    drop(conn);
}

fn drop_with_queued_but_unsubmitted_ops(mut ring: Ring) {
    let (_client, server) = util::tcp_pair();
    for token in 0..100 {
        ring.recv(server.as_fd(), Vec::with_capacity(64), 0, token);
    }
    drop(ring);
}

fn drop_closes_accepted_but_unreaped_connections(mut ring: Ring) {
    use std::io::Read;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    ring.accept_multi(listener.as_fd(), 1);
    ring.submit().unwrap();
    let addr = listener.local_addr().unwrap();
    let mut clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    // Let the accepts complete in the kernel, without taking the completions.
    ring.wait(Some(Duration::from_millis(50))).unwrap();
    drop(ring);
    // A connection still in the backlog is reset when the listener closes; an accepted one
    // is at end of file only if its fd was closed. A leaked fd would leave the read hanging.
    drop(listener);
    for client in &mut clients {
        client.set_read_timeout(Some(util::LIMIT)).unwrap();
        let mut buf = [0u8; 1];
        match client.read(&mut buf) {
            Ok(n) => assert_eq!(n, 0, "end of file"),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
}

on_both_backends!(
    drop_with_pending_recv_accept_and_recvmsg,
    drop_with_queued_but_unsubmitted_ops,
    drop_closes_accepted_but_unreaped_connections,
);
