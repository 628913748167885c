//! Extra channels: a fake master hands the worker more SOCK_SEQPACKET channels with a
//! `CHANNELS` message after `WELCOME`, and sends connections on all of them.

mod util;

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use stickyd_worker::Worker;
use stickyd_worker::wire::{self, Welcome};
use util::{Master, TIMEOUT, decode_ack, listener, seqpacket_pair, tcp_pair};

/// A worker joined to a fake master (the master has read the HELLO).
fn joined() -> (Master, Worker) {
    let (m, w) = seqpacket_pair();
    let master = Master::new(m);
    master.welcome(0, 2, &["l0"]);
    let worker = Worker::from_fd(w, 0).expect("handshake");
    let hello = master.hello_message();
    assert_eq!(hello.flags, wire::HELLO_CHANNELS | wire::HELLO_HANDBACK);
    (master, worker)
}

/// A joined worker that has taken `n` extra channels: (first channel, extra channels, worker).
fn with_extra(n: usize) -> (Master, Vec<Master>, Worker) {
    let (master, mut worker) = joined();
    let extra = master.extra_channels(n);
    would_block(&mut worker);
    (master, extra, worker)
}

/// Asserts that nothing is queued on any channel.
fn would_block(worker: &mut Worker) {
    match worker.try_recv() {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        other => panic!("expected WouldBlock, got {other:?}"),
    }
}

/// The seqs `try_recv` yields until `WouldBlock`; panics on `Ok(None)` or another error.
fn take_queued(worker: &mut Worker) -> Vec<u64> {
    let mut seqs = Vec::new();
    loop {
        match worker.try_recv() {
            Ok(Some(conn)) => seqs.push(conn.meta.seq),
            Ok(None) => panic!("ended early, after {seqs:?}"),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return seqs,
            Err(e) => panic!("try_recv: {e}"),
        }
    }
}

/// The error of the next `try_recv`, which must be one.
fn next_error(worker: &mut Worker) -> io::Error {
    match worker.try_recv() {
        Err(e) if e.kind() != io::ErrorKind::WouldBlock => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Asserts that the worker has closed its end of the channel whose master end is `master_end`:
/// the zero-length read.
fn assert_closed_by_worker(master_end: &Master) {
    assert!(master_end.recv().is_empty(), "the worker closed its end");
}

#[test]
fn conns_on_an_extra_channel_are_acked_on_that_channel_before_any_byte_is_read() {
    let (master, extra, mut worker) = with_extra(2);
    let _held = extra[1].conns_of_fresh_from(100, 2, b"x");
    let mut conn = worker.recv().unwrap().expect("a connection");
    assert_eq!(conn.meta.seq, 100);
    let ack = extra[1]
        .try_recv()
        .expect("the ACK is on the channel the CONNS came from, before the first hand-out");
    assert_eq!(decode_ack(&ack), [100, 101]);
    assert!(master.try_recv().is_none(), "nothing on the first channel");
    assert!(
        extra[0].try_recv().is_none(),
        "nothing on the other channel"
    );
    assert_eq!(worker.recv().unwrap().unwrap().meta.seq, 101);
    let mut byte = [0u8; 1];
    conn.stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    conn.stream.read_exact(&mut byte).unwrap();
    assert_eq!(&byte, b"x");
    assert!(extra[1].try_recv().is_none(), "one ACK per CONNS");
}

#[test]
fn connections_from_every_channel_are_received_and_each_acked_where_it_came_from() {
    let (master, extra, mut worker) = with_extra(2);
    let _f = master.conns_of_fresh_from(0, 2, b"x");
    let _a = extra[0].conns_of_fresh_from(10, 3, b"x");
    let _b = extra[1].conns_of_fresh_from(20, 1, b"x");
    let mut got: Vec<u64> = (0..6)
        .map(|_| worker.recv().unwrap().expect("a connection").meta.seq)
        .collect();
    got.sort_unstable();
    assert_eq!(got, [0, 1, 10, 11, 12, 20]);
    assert_eq!(master.ack(), [0, 1]);
    assert_eq!(extra[0].ack(), [10, 11, 12]);
    assert_eq!(extra[1].ack(), [20]);
    would_block(&mut worker);
}

/// Closes the channels in `order` (0 the first, with DRAIN; 1 and 2 the extra ones), sending
/// one connection on every channel still open before each close, so that connections are
/// still queued on extra channels after the first has ended. Before the last close the worker
/// takes everything and is not at its end; after it, `incoming` yields the rest and ends.
fn ends_after_every_channel(order: [usize; 3]) {
    let (master, extra, mut worker) = with_extra(2);
    let mut open: Vec<Option<Master>> = std::iter::once(master).chain(extra).map(Some).collect();
    let mut drained = None;
    let mut held = Vec::new();
    let mut sent = Vec::new();
    let mut got = Vec::new();
    for (step, &closing) in order.iter().enumerate() {
        for (index, channel) in open.iter().enumerate() {
            if let Some(channel) = channel {
                let seq = (step * 10 + index) as u64;
                held.extend(channel.conns_of_fresh_from(seq, 1, b"x"));
                sent.push(seq);
            }
        }
        let channel = open[closing].take().unwrap();
        if closing == 0 {
            // DRAIN, then the sending side shut; the master keeps the channel open.
            channel.drain();
            drained = Some(channel);
        } else {
            // Unread ACKs may be queued on it: the worker sees ECONNRESET, then the rest.
            drop(channel);
        }
        if step < 2 {
            got.extend(take_queued(&mut worker));
            assert_eq!(got.len(), sent.len(), "order {order:?}, step {step}");
        }
    }
    got.extend(worker.incoming().map(|conn| conn.unwrap().meta.seq));
    got.sort_unstable();
    sent.sort_unstable();
    assert_eq!(got, sent, "order {order:?}: no connection lost");
    assert!(worker.draining());
    assert!(worker.recv().unwrap().is_none(), "the end stays the end");
    assert!(worker.try_recv().unwrap().is_none(), "for try_recv too");
    drop(drained);
}

#[test]
fn incoming_ends_only_after_the_first_and_every_extra_channel_have_ended() {
    for order in [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 1, 0]] {
        ends_after_every_channel(order);
    }
}

#[test]
fn an_extra_channel_shut_by_the_master_gets_its_acks_then_the_workers_close() {
    let (master, extra, mut worker) = with_extra(2);
    let _held = extra[0].conns_of_fresh_from(80, 2, b"x");
    extra[0].shutdown_sending();
    assert_eq!(take_queued(&mut worker), [80, 81]);
    // The master reads every ACK of what it sent, then the end: the worker closed its end
    // once it had read to the end of the channel.
    assert_eq!(extra[0].ack(), [80, 81]);
    assert_closed_by_worker(&extra[0]);
    // The others go on.
    let _more = extra[1].conns_of_fresh_from(82, 1, b"x");
    assert_eq!(take_queued(&mut worker), [82]);
    assert_eq!(extra[1].ack(), [82]);
    assert!(master.try_recv().is_none());
}

#[test]
fn blocking_recv_waits_on_the_extra_channels_after_the_first_has_ended() {
    let (master, mut extra, mut worker) = with_extra(2);
    let (tx, rx) = mpsc::channel();
    let receiver = thread::spawn(move || {
        for conn in worker.incoming() {
            tx.send(Some(conn.unwrap().meta.seq)).unwrap();
        }
        tx.send(None).unwrap();
        worker
    });
    master.drain();
    let b = extra.pop().unwrap();
    let a = extra.pop().unwrap();
    let _b1 = b.conns_of_fresh_from(7, 1, b"x");
    assert_eq!(rx.recv_timeout(TIMEOUT).unwrap(), Some(7));
    assert_eq!(b.ack(), [7]);
    drop(a);
    // A short wait can only let a wrong early end go unnoticed, never fail a right one.
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "incoming goes on while extra channel 2 is open"
    );
    let _b2 = b.conns_of_fresh_from(8, 1, b"x");
    assert_eq!(rx.recv_timeout(TIMEOUT).unwrap(), Some(8));
    drop(b);
    assert_eq!(rx.recv_timeout(TIMEOUT).unwrap(), None);
    let worker = receiver.join().unwrap();
    assert!(worker.draining());
}

#[test]
fn try_recv_takes_the_channels_in_turn() {
    let (master, extra, mut worker) = with_extra(2);
    let channels = [&master, &extra[0], &extra[1]];
    let mut held = Vec::new();
    for round in 0..3u64 {
        for (index, channel) in channels.iter().enumerate() {
            // One message per connection; the seq's tens name the channel.
            held.extend(channel.conns_of_fresh_from(index as u64 * 10 + round, 1, b"x"));
        }
    }
    let from: Vec<u64> = take_queued(&mut worker).iter().map(|s| s / 10).collect();
    assert_eq!(from.len(), 9);
    for window in from.chunks(3) {
        let mut sorted = window.to_vec();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            [0, 1, 2],
            "one message from each channel in turn: {from:?}"
        );
    }

    // A busy channel does not hold up a quiet one.
    for seq in 100..120 {
        held.extend(extra[0].conns_of_fresh_from(seq, 1, b"x"));
    }
    held.extend(extra[1].conns_of_fresh_from(500, 1, b"x"));
    let seqs = take_queued(&mut worker);
    let quiet = seqs.iter().position(|&s| s == 500).unwrap();
    assert!(
        quiet <= 1,
        "extra channel 2 waited behind extra channel 1: {seqs:?}"
    );
    assert_eq!(seqs.len(), 21);
}

#[test]
fn control_messages_on_an_extra_channel_are_reported_and_later_connections_still_arrive() {
    let (master, extra, mut worker) = with_extra(1);
    let a = &extra[0];

    let mut drain = Vec::new();
    wire::encode_drain(&mut drain);
    a.send(&drain, &[]).unwrap();
    let err = next_error(&mut worker);
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    let text = err.to_string();
    assert!(
        text.contains("DRAIN") && text.contains("extra channel 1"),
        "{text}"
    );
    assert!(
        !worker.draining(),
        "a DRAIN counts on the first channel only"
    );

    let mut welcome = Vec::new();
    wire::encode_welcome(
        &Welcome {
            worker_id: 0,
            workers: 2,
            listeners: vec!["l0".to_owned()],
        },
        &mut welcome,
    );
    a.send(&welcome, &[]).unwrap();
    let err = next_error(&mut worker);
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("WELCOME"), "{err}");

    let mut refused = Vec::new();
    wire::encode_refused("no", &mut refused);
    a.send(&refused, &[]).unwrap();
    assert_eq!(next_error(&mut worker).kind(), io::ErrorKind::InvalidData);

    // CHANNELS on an extra channel: reported, and the channel it carried is closed.
    let (m, w) = seqpacket_pair();
    a.channels_message(1, &[w.as_fd()]);
    drop(w);
    let err = next_error(&mut worker);
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("CHANNELS"), "{err}");
    assert_closed_by_worker(&Master::new(m));

    assert!(a.try_recv().is_none(), "nothing answered on the channel");
    assert!(master.try_recv().is_none(), "nothing on the first channel");
    let _a = a.conns_of_fresh_from(30, 1, b"x");
    let _f = master.conns_of_fresh_from(31, 1, b"x");
    let mut got = take_queued(&mut worker);
    got.sort_unstable();
    assert_eq!(got, [30, 31]);
    assert_eq!(a.ack(), [30]);
    assert_eq!(master.ack(), [31]);
}

#[test]
fn channels_with_fewer_fds_than_announced_keeps_those_that_arrived() {
    let (master, mut worker) = joined();
    let pairs: Vec<_> = (0..2).map(|_| seqpacket_pair()).collect();
    let fds: Vec<_> = pairs.iter().map(|(_, w)| w.as_fd()).collect();
    master.channels_message(3, &fds);
    let err = next_error(&mut worker);
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("announced 3"), "{err}");
    let extra: Vec<_> = pairs.into_iter().map(|(m, _)| Master::new(m)).collect();
    assert_both_extra_channels_work(&master, &extra, &mut worker);
}

#[test]
fn channels_with_more_fds_than_announced_keeps_the_channels() {
    let (master, mut worker) = joined();
    let pairs: Vec<_> = (0..2).map(|_| seqpacket_pair()).collect();
    let fds: Vec<_> = pairs.iter().map(|(_, w)| w.as_fd()).collect();
    master.channels_message(1, &fds);
    let err = next_error(&mut worker);
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("carried 2"), "{err}");
    let extra: Vec<_> = pairs.into_iter().map(|(m, _)| Master::new(m)).collect();
    assert_both_extra_channels_work(&master, &extra, &mut worker);
}

#[test]
fn channels_that_are_not_seqpacket_sockets_are_closed_and_the_good_ones_kept() {
    let (master, mut worker) = joined();
    let (m, w) = seqpacket_pair();
    let lst = listener();
    let (mut client, accepted) = tcp_pair(&lst, b"");
    master.channels_message(2, &[accepted.as_fd(), w.as_fd()]);
    drop((w, accepted));
    let err = next_error(&mut worker);
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("SOCK_STREAM"), "{err}");
    // The worker closed the TCP socket it got: with the master's copy gone, the client sees
    // the end.
    let mut buf = [0u8; 1];
    match client.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the end of the TCP connection, got {other:?}"),
    }
    let good = Master::new(m);
    let _held = good.conns_of_fresh_from(40, 1, b"x");
    assert_eq!(take_queued(&mut worker), [40]);
    assert_eq!(good.ack(), [40]);
}

#[test]
fn a_second_channels_message_is_reported_and_its_channels_kept() {
    let (master, mut extra, mut worker) = with_extra(1);
    let (m, w) = seqpacket_pair();
    master.channels_message(1, &[w.as_fd()]);
    drop(w);
    let err = next_error(&mut worker);
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("CHANNELS"), "{err}");
    extra.push(Master::new(m));
    assert_both_extra_channels_work(&master, &extra, &mut worker);
}

/// Connections on the first channel and on both of `extra` arrive and are acknowledged on
/// their own channels; once all three have ended, the worker has too.
fn assert_both_extra_channels_work(master: &Master, extra: &[Master], worker: &mut Worker) {
    let _f = master.conns_of_fresh_from(50, 1, b"x");
    let _a = extra[0].conns_of_fresh_from(60, 1, b"x");
    let _b = extra[1].conns_of_fresh_from(70, 1, b"x");
    let mut got = take_queued(worker);
    got.sort_unstable();
    assert_eq!(got, [50, 60, 70]);
    assert_eq!(master.ack(), [50]);
    assert_eq!(extra[0].ack(), [60]);
    assert_eq!(extra[1].ack(), [70]);
}

/// An epoll instance of the test's own, watching `fd` edge-triggered as mio and tokio do.
fn outer_epoll(fd: BorrowedFd<'_>) -> OwnedFd {
    // SAFETY: plain epoll_create1 call; the result is checked and owned at once.
    let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(raw >= 0, "epoll_create1: {}", io::Error::last_os_error());
    // SAFETY: epoll_create1 succeeded: a new fd nothing else owns.
    let outer = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut event = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLET) as u32,
        u64: 7,
    };
    // SAFETY: both fds are open for the call; `event` is a valid epoll_event.
    let ret = unsafe {
        libc::epoll_ctl(
            outer.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            fd.as_raw_fd(),
            &mut event,
        )
    };
    assert_eq!(ret, 0, "epoll_ctl: {}", io::Error::last_os_error());
    outer
}

/// Events the outer epoll reports within `timeout_ms`.
fn outer_events(outer: &OwnedFd, timeout_ms: i32) -> usize {
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 4];
    loop {
        // SAFETY: `events` has room for the 4 events the call may write.
        let n = unsafe { libc::epoll_wait(outer.as_raw_fd(), events.as_mut_ptr(), 4, timeout_ms) };
        if n >= 0 {
            return n as usize;
        }
        let e = io::Error::last_os_error();
        assert_eq!(e.kind(), io::ErrorKind::Interrupted, "epoll_wait: {e}");
    }
}

#[test]
fn an_edge_triggered_outer_epoll_wakes_for_every_message_on_any_channel() {
    let timeout_ms = TIMEOUT.as_millis() as i32;
    let (master, mut worker) = joined();
    // Registered once, right after the handshake, as an event loop does.
    let outer = outer_epoll(worker.as_fd());
    assert_eq!(outer_events(&outer, 0), 0, "nothing is queued yet");

    // The extra channels arrive after the registration.
    let extra = master.extra_channels(2);
    assert_eq!(outer_events(&outer, timeout_ms), 1, "woken for CHANNELS");
    would_block(&mut worker);
    assert_eq!(
        outer_events(&outer, 0),
        0,
        "drained: no event until a new message"
    );

    let channels = [&master, &extra[0], &extra[1]];
    let mut held = Vec::new();
    for seq in 0..12u64 {
        let channel = channels[seq as usize % 3];
        held.extend(channel.conns_of_fresh_from(seq, 1, b"x"));
        assert_eq!(
            outer_events(&outer, timeout_ms),
            1,
            "woken for message {seq} on channel {}",
            seq % 3
        );
        assert_eq!(take_queued(&mut worker), [seq]);
        assert_eq!(channel.ack(), [seq]);
        assert_eq!(outer_events(&outer, 0), 0, "no wake-up without a message");
    }

    // Two channels at once: one wake-up, and the drain takes both.
    held.extend(extra[1].conns_of_fresh_from(100, 1, b"x"));
    held.extend(extra[0].conns_of_fresh_from(101, 1, b"x"));
    assert_eq!(outer_events(&outer, timeout_ms), 1);
    let mut got = take_queued(&mut worker);
    got.sort_unstable();
    assert_eq!(got, [100, 101]);

    // The ends wake the loop too, and the last one ends the worker.
    drop(extra);
    assert_eq!(
        outer_events(&outer, timeout_ms),
        1,
        "woken for the extra channels' end"
    );
    would_block(&mut worker);
    master.drain();
    assert_eq!(outer_events(&outer, timeout_ms), 1, "woken for DRAIN");
    assert!(worker.try_recv().unwrap().is_none());
    assert!(worker.draining());
    assert_eq!(
        outer_events(&outer, 0),
        0,
        "an ended worker is not readable"
    );
}
