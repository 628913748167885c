//! One-shot poll.

use std::os::fd::{AsRawFd, BorrowedFd};

use io_uring::{opcode, squeue, types};

use crate::completion::Outcome;

/// A one-shot poll of `fd` for `events` (libc POLL* bits).
pub(crate) fn entry(fd: BorrowedFd<'_>, events: u32) -> squeue::Entry {
    opcode::PollAdd::new(types::Fd(fd.as_raw_fd()), events).build()
}

/// The revents, or the error (ECANCELED when cancelled).
pub(crate) fn complete(res: i32) -> Outcome {
    Outcome::Polled(super::result(res))
}
