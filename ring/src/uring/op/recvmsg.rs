//! recvmsg of bytes plus fds, the fds close-on-exec and owned at completion.

use std::os::fd::{AsRawFd, BorrowedFd};

use io_uring::{opcode, squeue, types};

use crate::completion::Outcome;
use crate::msg::InMsg;

/// A recvmsg into `msg` (reset first) with `MSG_CMSG_CLOEXEC`. The entry points into `msg`'s
/// boxed header and buffers: the caller keeps `msg` parked until the completion.
pub(crate) fn entry(fd: BorrowedFd<'_>, msg: &mut InMsg) -> squeue::Entry {
    opcode::RecvMsg::new(types::Fd(fd.as_raw_fd()), msg.prepare())
        .flags(libc::MSG_CMSG_CLOEXEC as u32)
        .build()
}

/// Takes in the bytes, flags and fds, and hands the message back.
pub(crate) fn complete(mut msg: InMsg, res: i32) -> Outcome {
    let result = super::result(res).map(|n| {
        msg.finish(n as usize);
        msg.data().len()
    });
    Outcome::ReceivedMsg { msg, result }
}
