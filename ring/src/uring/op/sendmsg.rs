//! sendmsg of bytes plus fds (SCM_RIGHTS), never raising SIGPIPE.

use std::os::fd::{AsRawFd, BorrowedFd};

use io_uring::{opcode, squeue, types};

use crate::completion::Outcome;
use crate::msg::OutMsg;

/// A sendmsg of `msg` on `fd` with `MSG_NOSIGNAL`. The entry points into `msg`'s boxed header
/// and buffers: the caller keeps `msg` parked until the completion.
pub(crate) fn entry(fd: BorrowedFd<'_>, msg: &mut OutMsg) -> squeue::Entry {
    opcode::SendMsg::new(types::Fd(fd.as_raw_fd()), msg.prepare())
        .flags(libc::MSG_NOSIGNAL as u32)
        .build()
}

/// Hands the message back with the number of bytes sent.
pub(crate) fn complete(msg: OutMsg, res: i32) -> Outcome {
    let result = super::result(res).map(|n| n as usize);
    Outcome::Sent { msg, result }
}
