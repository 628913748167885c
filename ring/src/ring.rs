//! [`Ring`]: the public event loop, dispatching every call to its backend.
//!
//! Two backends run the same completion API: io_uring ([`Ring::uring`], the default and the
//! fast path) and an epoll emulation ([`Ring::epoll`]) for hosts that refuse io_uring. The
//! choice between them (try io_uring, fall back to epoll and say why) is the caller's.

use std::fmt;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Duration;

use crate::completion::Completion;
use crate::msg::{InMsg, OutMsg};
use crate::op_id::OpId;
use crate::{epoll, uring};

/// Which backend a [`Ring`] runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// io_uring: operations run in the kernel, completions are posted by it.
    Uring,
    /// epoll: the same operations emulated with readiness events and non-blocking syscalls.
    Epoll,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Uring => "io_uring",
            BackendKind::Epoll => "epoll",
        })
    }
}

enum Backend {
    Uring(uring::Ring),
    Epoll(epoll::Ring),
}

/// An event loop with typed, owned operations, on io_uring or on epoll.
///
/// Single-threaded: neither `Send` nor `Sync`; create it on the thread that runs the event
/// loop. Every operation returns its [`OpId`] at once; its result arrives later as a
/// [`Completion`] carrying the operation's token, from [`next_completion`](Ring::next_completion)
/// after [`wait`](Ring::wait).
///
/// # Backends
///
/// Both backends give the same outcomes in the same cases; where they differ, it is documented
/// on the method. In short, for the epoll backend: the fd an operation works on must stay open
/// until the operation's completion (io_uring resolves it at submission); an operation that can
/// finish at once finishes when queued (its completion visible after the next `submit` or
/// `wait`); `accept_multi` sets the listener `O_NONBLOCK`; `close` first ends the operations
/// still pending on the fd with ECANCELED.
///
/// # Dropping
///
/// io_uring: dropping a ring with operations in flight cancels them all
/// (`IORING_ASYNC_CANCEL_ANY`), submits, and drains their completions (closing accepted fds,
/// freeing buffers) for up to one second. If the kernel still holds some operation after that,
/// the memory those operations own is leaked rather than freed, since the kernel might still
/// write into it. epoll: the pending operations and queued completions are dropped at once.
pub struct Ring {
    backend: Backend,
}

/// Calls `$method` on whichever backend `$ring` runs.
macro_rules! dispatch {
    ($ring:expr, $method:ident($($arg:expr),*)) => {
        match &mut $ring.backend {
            Backend::Uring(ring) => ring.$method($($arg),*),
            Backend::Epoll(ring) => ring.$method($($arg),*),
        }
    };
}

impl Ring {
    /// An io_uring ring, as [`Ring::uring`].
    pub fn new(entries: u32) -> io::Result<Ring> {
        Ring::uring(entries)
    }

    /// Sets up an io_uring ring with `entries` SQ entries (CQ four times larger; SUBMIT_ALL,
    /// COOP_TASKRUN, SINGLE_ISSUER and DEFER_TASKRUN when available) and probes what stickyd needs:
    /// IORING_FEAT_EXT_ARG, IORING_FEAT_NODROP, the opcodes Accept, Recv, PollAdd, SendMsg,
    /// RecvMsg, Close, Timeout, AsyncCancel, and a real multishot accept on a throwaway
    /// listener bound to 127.0.0.1:0 (kernel 5.19+; older kernels reject it with EINVAL).
    ///
    /// Any missing piece is an error whose message says what is missing, e.g.
    /// "io_uring: multishot accept not supported (kernel too old?)", or
    /// "io_uring: setup refused (kernel.io_uring_disabled sysctl or seccomp?)".
    pub fn uring(entries: u32) -> io::Result<Ring> {
        Ok(Ring {
            backend: Backend::Uring(uring::Ring::new(entries)?),
        })
    }

    /// An epoll loop (`epoll_create1(EPOLL_CLOEXEC)`) emulating the same operations.
    pub fn epoll() -> io::Result<Ring> {
        Ok(Ring {
            backend: Backend::Epoll(epoll::Ring::new()?),
        })
    }

    /// The backend this ring runs on.
    pub fn kind(&self) -> BackendKind {
        match self.backend {
            Backend::Uring(_) => BackendKind::Uring,
            Backend::Epoll(_) => BackendKind::Epoll,
        }
    }

    /// Multishot accept on a listening socket; accepted fds come with SOCK_CLOEXEC.
    ///
    /// One `Accepted` completion per connection; the one with `more == false` ends it (an
    /// error such as EMFILE, ENFILE, ENOBUFS, ENOMEM, or ECANCELED): re-arm it. io_uring: the
    /// kernel holds its own reference to the listener once the entry is submitted, so closing
    /// the listener does not stop the accept; cancel it first. epoll: the listener is set
    /// `O_NONBLOCK` and accepted from, up to 64 connections per readiness event, while the
    /// accept is armed; keep it open until the accept has ended.
    pub fn accept_multi(&mut self, listener: BorrowedFd<'_>, token: u64) -> OpId {
        dispatch!(self, accept_multi(listener, token))
    }

    /// Single-shot accept: one `Accepted` completion (`more == false`), then arm it again to
    /// take the next connection. io_uring: each armed accept waits as a waiter of its own,
    /// behind those already waiting, so the accepts of several rings on one listener take
    /// turns (a multishot accept keeps its place and takes every connection queued when it is
    /// woken: the first ring armed would take them all). epoll: the same as
    /// [`accept_multi`](Ring::accept_multi) (each loop's epoll takes what readiness brings it).
    pub fn accept(&mut self, listener: BorrowedFd<'_>, token: u64) -> OpId {
        dispatch!(self, accept(listener, token))
    }

    /// recv into `buf`'s spare capacity (from index 0: it is cleared first; up to
    /// `buf.capacity()` bytes). `flags` are libc MSG_* flags, passed through (stickyd uses
    /// MSG_PEEK|MSG_DONTWAIT). The completion hands `buf` back with its len set to the bytes
    /// received. With MSG_DONTWAIT an empty socket completes with `WouldBlock`; without it,
    /// the recv waits for data.
    pub fn recv(&mut self, fd: BorrowedFd<'_>, buf: Vec<u8>, flags: i32, token: u64) -> OpId {
        dispatch!(self, recv(fd, buf, flags, token))
    }

    /// One-shot poll; `events` are libc POLL* bits (e.g. POLLIN | POLLRDHUP). The completion
    /// carries the ready events as POLL* bits (POLLERR and POLLHUP whether asked for or not).
    /// TCP's `SO_RCVLOWAT` is honoured on both backends.
    pub fn poll(&mut self, fd: BorrowedFd<'_>, events: u32, token: u64) -> OpId {
        dispatch!(self, poll(fd, events, token))
    }

    /// sendmsg of `msg` (bytes + fds in one SCM_RIGHTS cmsg) with MSG_NOSIGNAL added; a full
    /// socket makes it wait for room. The `Sent` completion gives the message back.
    pub fn send_msg(&mut self, fd: BorrowedFd<'_>, msg: OutMsg, token: u64) -> OpId {
        dispatch!(self, send_msg(fd, msg, token))
    }

    /// recvmsg with MSG_CMSG_CLOEXEC into `msg` (reset first), waiting for a message; received
    /// fds are wrapped in OwnedFd at completion.
    pub fn recv_msg(&mut self, fd: BorrowedFd<'_>, msg: InMsg, token: u64) -> OpId {
        dispatch!(self, recv_msg(fd, msg, token))
    }

    /// Close an fd through the ring (the OwnedFd is consumed; not closed twice). epoll: the
    /// operations still pending on the fd end first, with ECANCELED.
    pub fn close(&mut self, fd: OwnedFd, token: u64) -> OpId {
        dispatch!(self, close(fd, token))
    }

    /// A timer; completes after `after` (outcome TimedOut(Ok(()))), or Err(ECANCELED).
    pub fn timeout(&mut self, after: Duration, token: u64) -> OpId {
        dispatch!(self, timeout(after, token))
    }

    /// Cancel the operation `target`. The target's own completion still arrives (ECANCELED,
    /// or its result if it finished first); its owned data comes back then. Cancelling an op
    /// that already completed is harmless (the cancel completes with ENOENT).
    pub fn cancel(&mut self, target: OpId, token: u64) -> OpId {
        dispatch!(self, cancel(target, token))
    }

    /// Submit what is queued without waiting.
    pub fn submit(&mut self) -> io::Result<()> {
        dispatch!(self, submit())
    }

    /// Submit what is queued and wait until at least one completion is available or `timeout`
    /// passes (None: no time limit, so only call it with something in flight). Timing out and
    /// EINTR are not errors (return Ok).
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        dispatch!(self, wait(timeout))
    }

    /// Like [`wait`](Ring::wait), but with io_uring returns only once `want` completions are
    /// available or `timeout` passes, so that one round of the loop handles a batch (fewer
    /// `io_uring_enter` calls and wake-ups under load). The epoll backend returns as soon as
    /// anything is ready, as `wait` does.
    pub fn wait_for(&mut self, want: usize, timeout: Option<Duration>) -> io::Result<()> {
        match &mut self.backend {
            Backend::Uring(ring) => ring.wait_for(want, timeout),
            Backend::Epoll(ring) => ring.wait(timeout),
        }
    }

    /// The next completion, if any (call in a loop until None after `wait`).
    pub fn next_completion(&mut self) -> Option<Completion> {
        dispatch!(self, next_completion())
    }

    /// Operations queued whose final completion has not yet been taken.
    pub fn in_flight(&self) -> usize {
        match &self.backend {
            Backend::Uring(ring) => ring.in_flight(),
            Backend::Epoll(ring) => ring.in_flight(),
        }
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.backend {
            Backend::Uring(ring) => ring.fmt(f),
            Backend::Epoll(ring) => ring.fmt(f),
        }
    }
}
