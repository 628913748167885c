//! close through the ring.

use std::os::fd::{IntoRawFd, OwnedFd, RawFd};

use io_uring::{opcode, squeue, types};

use crate::completion::Outcome;

/// A close of `fd`. The owner is consumed here: from now on only the kernel closes the number,
/// exactly once, whatever the result.
pub(crate) fn entry(fd: OwnedFd) -> (squeue::Entry, RawFd) {
    let raw = fd.into_raw_fd();
    (opcode::Close::new(types::Fd(raw)).build(), raw)
}

/// The result of the close.
pub(crate) fn complete(res: i32) -> Outcome {
    Outcome::Closed(super::unit(res))
}
