//! The emulated operations: what each waits for, how it is retried when its fd is ready, and
//! the [`Outcome`] it ends with.
//!
//! A pending operation owns what it will hand back (a receive buffer, a message) exactly as on
//! io_uring; every attempt is one non-blocking syscall, and an attempt that would block leaves
//! the operation pending until the next readiness event.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

use super::accept::{self, BatchEnd};
use super::sys;
use crate::completion::Outcome;
use crate::msg::{InMsg, OutMsg};

/// The error of a cancelled operation.
pub(crate) fn cancelled() -> io::Error {
    io::Error::from_raw_os_error(libc::ECANCELED)
}

/// (poll bit, epoll bit): the poll(2) events and their epoll counterparts.
const BITS: [(i16, i32); 6] = [
    (libc::POLLIN, libc::EPOLLIN),
    (libc::POLLPRI, libc::EPOLLPRI),
    (libc::POLLOUT, libc::EPOLLOUT),
    (libc::POLLRDHUP, libc::EPOLLRDHUP),
    (libc::POLLHUP, libc::EPOLLHUP),
    (libc::POLLERR, libc::EPOLLERR),
];

/// libc POLL* bits as EPOLL* bits (unknown bits are dropped).
pub(crate) fn poll_to_epoll(events: u32) -> u32 {
    BITS.iter()
        .filter(|&&(poll, _)| events & poll as u32 != 0)
        .fold(0, |all, &(_, epoll)| all | epoll as u32)
}

/// EPOLL* bits as libc POLL* bits.
pub(crate) fn epoll_to_poll(events: u32) -> u32 {
    BITS.iter()
        .filter(|&&(_, epoll)| events & epoll as u32 != 0)
        .fold(0, |all, &(poll, _)| all | poll as u32)
}

/// Which direction of an fd an operation consumes: operations of one side are served in the
/// order they were queued. Polls consume nothing and have no side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// accept, recv, recvmsg.
    Read,
    /// sendmsg.
    Write,
}

/// A pending operation and what it owns.
pub(crate) enum Kind {
    /// A multishot accept on a listener (set non-blocking when armed).
    Accept,
    /// A recv that found nothing and waits for `EPOLLIN` (`flags` without `MSG_DONTWAIT`).
    Recv {
        /// The caller's buffer, handed back at the end.
        buf: Vec<u8>,
        /// The caller's MSG_* flags.
        flags: i32,
    },
    /// A one-shot poll for `events` (POLL* bits).
    Poll {
        /// The events asked for, as POLL* bits.
        events: u32,
    },
    /// A sendmsg that found the socket full and waits for `EPOLLOUT`.
    SendMsg(OutMsg),
    /// A recvmsg that found nothing and waits for `EPOLLIN`.
    RecvMsg(InMsg),
    /// A timer, kept in the timer heap, not in the registration table.
    Timeout,
}

/// What an attempt came to.
#[derive(Debug)]
pub(crate) enum Step {
    /// Nothing could be done: the operation waits for the next readiness event.
    Wait,
    /// The operation is over with this result (bytes, revents, or the error).
    Done(io::Result<usize>),
}

impl Kind {
    /// The epoll events the operation waits for (0 for a timer).
    pub(crate) fn interest(&self) -> u32 {
        match self {
            Kind::Accept | Kind::Recv { .. } | Kind::RecvMsg(_) => libc::EPOLLIN as u32,
            Kind::SendMsg(_) => libc::EPOLLOUT as u32,
            Kind::Poll { events } => poll_to_epoll(*events),
            Kind::Timeout => 0,
        }
    }

    /// The side of the fd the operation consumes, if any.
    pub(crate) fn side(&self) -> Option<Side> {
        match self {
            Kind::Accept | Kind::Recv { .. } | Kind::RecvMsg(_) => Some(Side::Read),
            Kind::SendMsg(_) => Some(Side::Write),
            Kind::Poll { .. } | Kind::Timeout => None,
        }
    }

    /// Whether readiness `revents` (EPOLL* bits) concerns the operation: what it waits for, or
    /// an error or hang-up, which every operation must see.
    pub(crate) fn woken_by(&self, revents: u32) -> bool {
        let always = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
        revents & (self.interest() | always) != 0
    }

    /// Tries the operation on `fd` after readiness `revents`; `accepted` receives each
    /// connection of an accept (the accept itself goes on).
    pub(crate) fn attempt(
        &mut self,
        fd: BorrowedFd<'_>,
        revents: u32,
        accepted: impl FnMut(OwnedFd),
    ) -> Step {
        let result = match self {
            Kind::Accept => {
                return match accept::batch(fd, accepted) {
                    BatchEnd::Armed => Step::Wait,
                    BatchEnd::Ended(e) => Step::Done(Err(e)),
                };
            }
            Kind::Poll { events } => {
                let always = (libc::POLLERR | libc::POLLHUP) as u32;
                let ready = epoll_to_poll(revents) & (*events | always);
                return if ready == 0 {
                    Step::Wait
                } else {
                    Step::Done(Ok(ready as usize))
                };
            }
            Kind::Recv { buf, flags } => sys::recv(fd, buf, *flags),
            Kind::SendMsg(msg) => sys::send_msg(fd, msg),
            Kind::RecvMsg(msg) => sys::recv_msg(fd, msg),
            Kind::Timeout => return Step::Wait,
        };
        match result {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Step::Wait,
            other => Step::Done(other),
        }
    }

    /// The final outcome, handing back what the operation owned.
    ///
    /// `result` is the operation's: bytes for recv/sendmsg/recvmsg, revents for a poll,
    /// anything for a timer that fired; an error (ECANCELED when cancelled) for any of them.
    /// An accept ends only with an error: an `Ok` there is reported as ECANCELED.
    pub(crate) fn finish(self, result: io::Result<usize>) -> Outcome {
        match self {
            Kind::Accept => Outcome::Accepted {
                fd: Err(result.err().unwrap_or_else(cancelled)),
                more: false,
            },
            Kind::Recv { mut buf, .. } => {
                if result.is_err() {
                    buf.clear();
                }
                Outcome::Received { buf, result }
            }
            Kind::Poll { .. } => Outcome::Polled(result.map(|bits| bits as u32)),
            Kind::SendMsg(msg) => Outcome::Sent { msg, result },
            Kind::RecvMsg(msg) => Outcome::ReceivedMsg { msg, result },
            Kind::Timeout => Outcome::TimedOut(result.map(|_| ())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_bits_translate_both_ways() {
        let poll = (libc::POLLIN | libc::POLLRDHUP | libc::POLLOUT) as u32;
        let epoll = (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLOUT) as u32;
        assert_eq!(poll_to_epoll(poll), epoll);
        assert_eq!(epoll_to_poll(epoll), poll);
        let errors = (libc::EPOLLHUP | libc::EPOLLERR) as u32;
        assert_eq!(
            epoll_to_poll(errors),
            (libc::POLLHUP | libc::POLLERR) as u32
        );
    }

    #[test]
    fn a_poll_reports_what_it_asked_for_and_errors() {
        let mut poll = Kind::Poll {
            events: libc::POLLIN as u32,
        };
        let (a, _b) = crate::sys::seqpacket_pair().unwrap();
        let fd = std::os::fd::AsFd::as_fd(&a);
        let revents = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLHUP) as u32;
        match poll.attempt(fd, revents, |_| {}) {
            Step::Done(Ok(bits)) => {
                assert_eq!(bits as u32, (libc::POLLIN | libc::POLLHUP) as u32)
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            poll.attempt(fd, libc::EPOLLOUT as u32, |_| {}),
            Step::Wait
        ));
    }

    #[test]
    fn cancelled_outcomes_hand_back_what_was_owned() {
        let buf = Vec::with_capacity(32);
        match (Kind::Recv { buf, flags: 0 }).finish(Err(cancelled())) {
            Outcome::Received { buf, result } => {
                assert_eq!(buf.capacity(), 32);
                assert_eq!(result.unwrap_err().raw_os_error(), Some(libc::ECANCELED));
            }
            other => panic!("unexpected {other:?}"),
        }
        match Kind::Accept.finish(Ok(0)) {
            Outcome::Accepted {
                fd: Err(e),
                more: false,
            } => assert_eq!(e.raw_os_error(), Some(libc::ECANCELED)),
            other => panic!("unexpected {other:?}"),
        }
    }
}
