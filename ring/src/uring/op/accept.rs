//! Accept: multishot (one submission, one completion per accepted connection) or single-shot.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use io_uring::{opcode, squeue, types};

use crate::completion::Outcome;

/// A multishot accept on `listener`; accepted fds get `SOCK_CLOEXEC`.
///
/// The kernel takes its own reference to the listening socket when the entry is submitted:
/// closing the listener's fd afterwards does not stop the accept; cancel it first.
pub(crate) fn entry(listener: BorrowedFd<'_>) -> squeue::Entry {
    opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd()))
        .flags(libc::SOCK_CLOEXEC)
        .build()
}

/// A single-shot accept on `listener`; the accepted fd gets `SOCK_CLOEXEC`.
///
/// Each one waits on the listener as a waiter of its own, queued behind the waiters already
/// there: accepts armed by several rings take turns, where a multishot accept, which stays at
/// its place and empties the backlog whenever it is woken, takes every connection.
pub(crate) fn single(listener: BorrowedFd<'_>) -> squeue::Entry {
    opcode::Accept::new(
        types::Fd(listener.as_raw_fd()),
        std::ptr::null_mut(),
        std::ptr::null_mut(),
    )
    .flags(libc::SOCK_CLOEXEC)
    .build()
}

/// One accept completion; `more` is `IORING_CQE_F_MORE` (the accept stays armed).
pub(crate) fn complete(res: i32, more: bool) -> Outcome {
    let fd = super::result(res).map(|_| {
        // SAFETY: a non-negative accept result is a new fd the kernel has just installed in
        // our table for this completion; nothing else owns it, so it gets its owner here.
        unsafe { OwnedFd::from_raw_fd(res) }
    });
    Outcome::Accepted { fd, more }
}
