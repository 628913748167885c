//! recv with MSG_PEEK|MSG_DONTWAIT: the bytes stay in the socket; an empty socket says EAGAIN.

mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;

use stickyd_ring::{Outcome, Ring};

const PEEK: i32 = libc::MSG_PEEK | libc::MSG_DONTWAIT;

fn peek_leaves_the_bytes_for_a_later_read(mut ring: Ring) {
    let (mut client, server) = util::tcp_pair();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // Wait for the bytes to arrive, then peek twice into a reused, dirty buffer.
    let poll = ring.poll(server.as_fd(), libc::POLLIN as u32, 0);
    util::completion_of(&mut ring, poll);

    let mut buf = Vec::with_capacity(8);
    buf.extend_from_slice(b"stale");
    for _ in 0..2 {
        let op = ring.recv(server.as_fd(), buf, PEEK, 9);
        let c = util::completion_of(&mut ring, op);
        assert_eq!(c.token, 9);
        let Outcome::Received { buf: back, result } = c.outcome else {
            panic!("unexpected {:?}", c.outcome)
        };
        assert_eq!(result.unwrap(), 8, "at most the buffer's capacity");
        assert_eq!(back, b"GET / HT");
        buf = back;
    }

    let mut stream = TcpStream::from(server);
    let mut first = [0u8; 16];
    stream.read_exact(&mut first).unwrap();
    assert_eq!(
        &first, b"GET / HTTP/1.1\r\n",
        "the peeked bytes were not consumed"
    );
}

fn peek_on_an_empty_socket_would_block(mut ring: Ring) {
    let (_client, server) = util::tcp_pair();
    let op = ring.recv(server.as_fd(), Vec::with_capacity(64), PEEK, 1);
    let c = util::completion_of(&mut ring, op);
    let Outcome::Received { buf, result } = c.outcome else {
        panic!("unexpected {:?}", c.outcome)
    };
    let err = result.expect_err("nothing to read");
    assert_eq!(err.kind(), ErrorKind::WouldBlock);
    assert!(buf.is_empty());
    assert_eq!(buf.capacity(), 64, "the buffer comes back");
}

fn recv_reports_end_of_file(mut ring: Ring) {
    let (client, server) = util::tcp_pair();
    drop(client);
    let op = ring.recv(server.as_fd(), Vec::with_capacity(16), 0, 1);
    let c = util::completion_of(&mut ring, op);
    assert!(matches!(c.outcome, Outcome::Received { result: Ok(0), .. }));
}

on_both_backends!(
    peek_leaves_the_bytes_for_a_later_read,
    peek_on_an_empty_socket_would_block,
    recv_reports_end_of_file,
);
