//! Multishot accept: several connections from one operation, and re-arming after a cancel.

mod util;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};

use stickyd_ring::{Outcome, Ring};

fn multishot_accept_yields_working_connections(mut ring: Ring) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = ring.accept_multi(listener.as_fd(), 7);
    ring.submit().unwrap();

    let mut clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let mut accepted = Vec::new();
    while accepted.len() < clients.len() {
        let c = util::next(&mut ring);
        assert_eq!((c.op, c.token), (accept, 7));
        match c.outcome {
            Outcome::Accepted { fd, more } => {
                assert!(more, "the multishot accept stays armed");
                let fd = fd.expect("accepted fd");
                // SAFETY: test-only check of a live fd's flags.
                let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
                assert_ne!(flags & libc::FD_CLOEXEC, 0, "accepted with SOCK_CLOEXEC");
                accepted.push(TcpStream::from(fd));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ring.in_flight(), 1, "one multishot accept, still in flight");

    // Each accepted fd is a working connection to one of the clients (in some order).
    for (i, client) in clients.iter_mut().enumerate() {
        client.write_all(&[b'a' + i as u8]).unwrap();
    }
    let mut seen: Vec<u8> = accepted
        .iter_mut()
        .map(|conn| {
            let mut byte = [0u8; 1];
            conn.read_exact(&mut byte).unwrap();
            byte[0]
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, b"abc");
}

fn cancelled_accept_ends_and_can_be_rearmed(mut ring: Ring) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = ring.accept_multi(listener.as_fd(), 1);
    let cancel = ring.cancel(accept, 2);
    ring.submit().unwrap();

    let (mut ended, mut cancelled) = (false, false);
    while !(ended && cancelled) {
        let c = util::next(&mut ring);
        match c.outcome {
            Outcome::Accepted { fd, more } => {
                assert_eq!(c.op, accept);
                assert!(!more, "a cancelled multishot accept has ended");
                let err = fd.expect_err("ECANCELED");
                assert_eq!(err.raw_os_error(), Some(libc::ECANCELED));
                ended = true;
            }
            Outcome::Cancelled(result) => {
                assert_eq!(c.op, cancel);
                result.expect("the accept was found and cancelled");
                cancelled = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ring.in_flight(), 0);

    // Re-arm: a new accept on the same listener gets the next connection.
    let again = ring.accept_multi(listener.as_fd(), 3);
    assert_ne!(again, accept);
    ring.submit().unwrap();
    let _client = TcpStream::connect(addr).unwrap();
    let c = util::completion_of(&mut ring, again);
    assert_eq!(c.token, 3);
    assert!(matches!(
        c.outcome,
        Outcome::Accepted {
            fd: Ok(_),
            more: true
        }
    ));
}

on_both_backends!(
    multishot_accept_yields_working_connections,
    cancelled_accept_ends_and_can_be_rearmed,
);
