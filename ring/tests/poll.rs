//! poll POLLIN|POLLRDHUP, with and without SO_RCVLOWAT.

mod util;

use std::io::Write;
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::time::Duration;

use stickyd_ring::{Outcome, Ring, sys};

const EVENTS: u32 = (libc::POLLIN | libc::POLLRDHUP) as u32;
/// Long enough for a loopback segment to arrive; only used to show that nothing fires.
const QUIET: Duration = Duration::from_millis(100);

fn revents(outcome: Outcome) -> u32 {
    match outcome {
        Outcome::Polled(result) => result.expect("poll"),
        other => panic!("unexpected {other:?}"),
    }
}

fn poll_waits_for_data(mut ring: Ring) {
    let (mut client, server) = util::tcp_pair();
    let op = ring.poll(server.as_fd(), EVENTS, 5);
    assert!(util::drain_for(&mut ring, QUIET).is_empty(), "no data yet");
    client.write_all(b"x").unwrap();
    let c = util::completion_of(&mut ring, op);
    assert_eq!(c.token, 5);
    let bits = revents(c.outcome);
    assert_ne!(bits & libc::POLLIN as u32, 0);
    assert_eq!(bits & libc::POLLRDHUP as u32, 0);
    assert_eq!(ring.in_flight(), 0, "a one-shot poll is done");
}

fn rcvlowat_holds_the_poll_until_enough_bytes(mut ring: Ring) {
    let (mut client, server) = util::tcp_pair();
    sys::set_rcvlowat(server.as_fd(), 10).unwrap();
    let op = ring.poll(server.as_fd(), EVENTS, 1);
    client.write_all(b"12345").unwrap();
    assert!(
        util::drain_for(&mut ring, QUIET).is_empty(),
        "5 bytes are below SO_RCVLOWAT=10"
    );
    client.write_all(b"67890").unwrap();
    let bits = revents(util::completion_of(&mut ring, op).outcome);
    assert_ne!(bits & libc::POLLIN as u32, 0);
}

fn shutdown_fires_rdhup_below_rcvlowat(mut ring: Ring) {
    let (mut client, server) = util::tcp_pair();
    sys::set_rcvlowat(server.as_fd(), 100).unwrap();
    let op = ring.poll(server.as_fd(), EVENTS, 1);
    client.write_all(b"abc").unwrap();
    assert!(util::drain_for(&mut ring, QUIET).is_empty());
    client.shutdown(Shutdown::Write).unwrap();
    let bits = revents(util::completion_of(&mut ring, op).outcome);
    assert_ne!(bits & libc::POLLRDHUP as u32, 0, "revents {bits:#x}");
    assert_ne!(bits & libc::POLLIN as u32, 0, "revents {bits:#x}");
}

fn close_fires_rdhup(mut ring: Ring) {
    let (client, server) = util::tcp_pair();
    sys::set_rcvlowat(server.as_fd(), 100).unwrap();
    let op = ring.poll(server.as_fd(), EVENTS, 1);
    ring.submit().unwrap();
    drop(client);
    let bits = revents(util::completion_of(&mut ring, op).outcome);
    assert_ne!(bits & libc::POLLRDHUP as u32, 0, "revents {bits:#x}");
}

on_both_backends!(
    poll_waits_for_data,
    rcvlowat_holds_the_poll_until_enough_bytes,
    shutdown_fires_rdhup_below_rcvlowat,
    close_fires_rdhup,
);
