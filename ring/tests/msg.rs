//! sendmsg/recvmsg with SCM_RIGHTS over a SOCK_SEQPACKET pair.

mod util;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use stickyd_ring::{InMsg, OutMsg, Outcome, Ring, sys};

fn send(ring: &mut Ring, fd: BorrowedFd<'_>, msg: OutMsg) -> OutMsg {
    let op = ring.send_msg(fd, msg, 1);
    match util::completion_of(ring, op).outcome {
        Outcome::Sent { msg, result } => {
            assert_eq!(result.expect("sendmsg"), msg.data().len());
            msg
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn receive(ring: &mut Ring, fd: BorrowedFd<'_>, msg: InMsg) -> (InMsg, usize) {
    let op = ring.recv_msg(fd, msg, 2);
    match util::completion_of(ring, op).outcome {
        Outcome::ReceivedMsg { msg, result } => {
            let n = result.expect("recvmsg");
            (msg, n)
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// A pipe as (read end, write end).
fn pipe() -> (File, File) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two fds pipe2 writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 succeeded: two new fds owned by nobody else.
    unsafe {
        use std::os::fd::FromRawFd;
        (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1]))
    }
}

fn three_fds_travel_and_work(mut ring: Ring) {
    let (master, worker) = sys::seqpacket_pair().unwrap();
    let pipes: Vec<(File, File)> = (0..3).map(|_| pipe()).collect();
    let write_ends: Vec<BorrowedFd<'_>> = pipes.iter().map(|(_, w)| w.as_fd()).collect();

    let msg = OutMsg::new(b"CONNS".to_vec(), &write_ends);
    assert_eq!(msg.fd_count(), 3);
    let msg = send(&mut ring, master.as_fd(), msg);
    assert_eq!(msg.into_data(), b"CONNS");

    let (mut msg, n) = receive(&mut ring, worker.as_fd(), InMsg::new(64, 8));
    assert_eq!(n, 5);
    assert_eq!(msg.data(), b"CONNS");
    assert!(!msg.truncated() && !msg.ctrl_truncated());
    let fds: Vec<OwnedFd> = msg.take_fds();
    assert_eq!(fds.len(), 3);
    for (i, (fd, (read_end, _))) in fds.into_iter().zip(&pipes).enumerate() {
        // SAFETY: test-only check of a live fd's flags.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
        assert_ne!(
            flags & libc::FD_CLOEXEC,
            0,
            "received with MSG_CMSG_CLOEXEC"
        );
        let mut received = File::from(fd);
        received.write_all(&[b'0' + i as u8]).unwrap();
        drop(received);
        let mut byte = [0u8; 1];
        (&*read_end).read_exact(&mut byte).unwrap();
        assert_eq!(byte[0], b'0' + i as u8, "fd {i} is the pipe it was sent as");
    }
    assert!(msg.take_fds().is_empty());
}

fn truncation_is_reported(mut ring: Ring) {
    let (master, worker) = sys::seqpacket_pair().unwrap();
    let pipes: Vec<(File, File)> = (0..3).map(|_| pipe()).collect();
    let fds: Vec<BorrowedFd<'_>> = pipes.iter().map(|(r, _)| r.as_fd()).collect();

    send(&mut ring, master.as_fd(), OutMsg::new(vec![7u8; 100], &[]));
    let (msg, n) = receive(&mut ring, worker.as_fd(), InMsg::new(10, 0));
    assert_eq!(n, 10);
    assert_eq!(msg.data(), &[7u8; 10]);
    assert!(msg.truncated(), "MSG_TRUNC");
    assert!(!msg.ctrl_truncated());

    // Too little room for the fds: MSG_CTRUNC, and whatever arrived is owned.
    send(&mut ring, master.as_fd(), OutMsg::new(b"x".to_vec(), &fds));
    let mut msg = msg;
    msg.reset();
    let small = InMsg::new(10, 1);
    let (mut small, n) = receive(&mut ring, worker.as_fd(), small);
    assert_eq!(n, 1);
    assert!(small.ctrl_truncated(), "MSG_CTRUNC");
    assert!(!small.truncated());
    let got = small.take_fds().len();
    assert!((1..3).contains(&got), "{got} fds arrived");

    // The message is reusable.
    send(&mut ring, master.as_fd(), OutMsg::new(b"yz".to_vec(), &[]));
    let (msg, n) = receive(&mut ring, worker.as_fd(), msg);
    assert_eq!((n, msg.data()), (2, &b"yz"[..]));
    assert!(!msg.truncated());
}

fn peer_gone_reads_zero(mut ring: Ring) {
    let (master, worker) = sys::seqpacket_pair().unwrap();
    drop(master);
    let (msg, n) = receive(&mut ring, worker.as_fd(), InMsg::new(16, 4));
    assert_eq!(n, 0);
    assert!(msg.data().is_empty());
}

fn send_to_a_closed_peer_is_an_error_not_a_signal(mut ring: Ring) {
    let (master, worker) = sys::seqpacket_pair().unwrap();
    drop(worker);
    let op = ring.send_msg(master.as_fd(), OutMsg::new(b"DRAIN".to_vec(), &[]), 1);
    match util::completion_of(&mut ring, op).outcome {
        Outcome::Sent { msg, result } => {
            assert_eq!(result.unwrap_err().raw_os_error(), Some(libc::EPIPE));
            assert_eq!(msg.data(), b"DRAIN");
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn a_reused_message_carries_only_its_new_fds(mut ring: Ring) {
    let (master, worker) = sys::seqpacket_pair().unwrap();
    let pipes: Vec<(File, File)> = (0..3).map(|_| pipe()).collect();
    let mut msg = OutMsg::with_capacity(16, 2);
    for (round, count) in [(0u8, 3usize), (1, 1), (2, 0), (3, 2)] {
        msg.data_mut().clear();
        msg.data_mut().push(round);
        msg.set_fds(pipes.iter().take(count).map(|(_, w)| w.as_fd()));
        assert_eq!(msg.fd_count(), count);
        msg = send(&mut ring, master.as_fd(), msg);
        let (mut got, n) = receive(&mut ring, worker.as_fd(), InMsg::new(64, 8));
        assert_eq!((n, got.data()), (1, &[round][..]));
        assert!(!got.ctrl_truncated());
        let fds = got.take_fds();
        assert_eq!(fds.len(), count, "round {round}");
        for (fd, (read_end, _)) in fds.into_iter().zip(&pipes) {
            let mut received = File::from(fd);
            received.write_all(&[round]).unwrap();
            let mut byte = [0u8; 1];
            (&*read_end).read_exact(&mut byte).unwrap();
            assert_eq!(byte[0], round);
        }
    }
}

on_both_backends!(
    three_fds_travel_and_work,
    a_reused_message_carries_only_its_new_fds,
    truncation_is_reported,
    peer_gone_reads_zero,
    send_to_a_closed_peer_is_an_error_not_a_signal,
);
