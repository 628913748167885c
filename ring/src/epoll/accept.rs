//! The emulated multishot accept: a batch of `accept4` calls per readiness event.
//!
//! io_uring's multishot accept keeps going through the errors a single connection causes and
//! ends on the errors that would make every further accept fail too (`EMFILE`, `ENFILE`,
//! `ENOBUFS`, `ENOMEM`, ...); the emulation classifies errors the same way, so the master
//! backs off and re-arms exactly as it does on io_uring.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

use super::sys;

/// Connections accepted per readiness event at most, before the loop turns to other events;
/// the listener stays armed (level-triggered), so the rest follow at the next wait.
pub(crate) const BATCH: usize = 64;

/// What one accept error means for the multishot accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AcceptError {
    /// No connection is waiting: done until the next readiness event.
    Drained,
    /// One connection failed (aborted before it was accepted, a signal, a protocol error):
    /// skip it and go on.
    Skip,
    /// Every further accept would fail as well: the accept ends, and the caller re-arms later.
    Fatal,
}

/// Classifies an `accept4` error.
pub(crate) fn classify(e: &io::Error) -> AcceptError {
    match e.raw_os_error() {
        Some(libc::EAGAIN) => AcceptError::Drained,
        Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO) => AcceptError::Skip,
        _ => AcceptError::Fatal,
    }
}

/// How a batch of accepts ended.
#[derive(Debug)]
pub(crate) enum BatchEnd {
    /// The accept stays armed (the backlog is empty, or the batch is full).
    Armed,
    /// The accept is over with this error.
    Ended(io::Error),
}

/// Accepts up to [`BATCH`] connections from `listener`, handing each to `accepted`.
pub(crate) fn batch(listener: BorrowedFd<'_>, mut accepted: impl FnMut(OwnedFd)) -> BatchEnd {
    for _ in 0..BATCH {
        match sys::accept(listener) {
            Ok(conn) => accepted(conn),
            Err(e) => match classify(&e) {
                AcceptError::Drained => return BatchEnd::Armed,
                AcceptError::Skip => {}
                AcceptError::Fatal => return BatchEnd::Ended(e),
            },
        }
    }
    BatchEnd::Armed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errno(n: i32) -> AcceptError {
        classify(&io::Error::from_raw_os_error(n))
    }

    #[test]
    fn errors_that_end_the_accept() {
        for n in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOBUFS,
            libc::ENOMEM,
            libc::EINVAL,
            libc::EBADF,
        ] {
            assert_eq!(errno(n), AcceptError::Fatal, "errno {n}");
        }
    }

    #[test]
    fn errors_that_are_skipped_or_wait() {
        assert_eq!(errno(libc::EAGAIN), AcceptError::Drained);
        assert_eq!(errno(libc::EWOULDBLOCK), AcceptError::Drained);
        for n in [libc::ECONNABORTED, libc::EINTR, libc::EPROTO] {
            assert_eq!(errno(n), AcceptError::Skip, "errno {n}");
        }
    }
}
