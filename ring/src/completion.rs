//! What a finished operation hands back: its token, its id and a typed outcome.

use std::io;
use std::os::fd::OwnedFd;

use crate::msg::{InMsg, OutMsg};
use crate::op_id::OpId;

/// One completion taken from the ring.
#[derive(Debug)]
pub struct Completion {
    /// The token the operation was queued with.
    pub token: u64,
    /// The operation this completion belongs to.
    pub op: OpId,
    /// The typed result, with whatever the operation owned handed back.
    pub outcome: Outcome,
}

/// The typed result of one completion.
///
/// Errors are the kernel's errno as [`io::Error::from_raw_os_error`], so
/// `raw_os_error()` and `kind()` (e.g. `WouldBlock` for `EAGAIN`) can be matched.
#[derive(Debug)]
pub enum Outcome {
    /// One accepted connection, or the error that ended/interrupted the multishot accept.
    /// `more == false`: the multishot accept has ended (e.g. EMFILE, ECANCELED): re-arm it.
    /// The last completion may also carry a connection (`fd: Ok(_)`, `more: false`): the
    /// kernel ends a multishot request when the completion queue is full. Keep that fd and
    /// re-arm just the same.
    Accepted {
        /// The connection (close-on-exec), owned from the moment it left the kernel.
        fd: io::Result<OwnedFd>,
        /// Whether the multishot accept is still armed.
        more: bool,
    },
    /// A recv finished: `buf` comes back with its length set to the bytes received.
    Received {
        /// The caller's buffer; `buf.len()` is the number of bytes received (0 on error).
        buf: Vec<u8>,
        /// The number of bytes received, or the error (`WouldBlock` under `MSG_DONTWAIT`).
        result: io::Result<usize>,
    },
    /// Ok(revents) as libc POLL* bits.
    Polled(io::Result<u32>),
    /// A sendmsg finished: the message comes back for reuse.
    Sent {
        /// The message, with its buffers, whatever the result.
        msg: OutMsg,
        /// The number of data bytes sent, or the error.
        result: io::Result<usize>,
    },
    /// A recvmsg finished: the message holds the bytes and the received fds.
    ReceivedMsg {
        /// The message: [`InMsg::data`], [`InMsg::take_fds`], the truncation flags.
        msg: InMsg,
        /// The number of data bytes received (0: the peer has gone), or the error.
        result: io::Result<usize>,
    },
    /// The result of a close through the ring.
    Closed(io::Result<()>),
    /// Ok(()) when the timer fired (the kernel's ETIME), Err(ECANCELED) when cancelled.
    TimedOut(io::Result<()>),
    /// The result of a cancel request (Ok, or ENOENT/EALREADY).
    Cancelled(io::Result<()>),
}
