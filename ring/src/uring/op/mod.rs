//! One file per io_uring operation: building its submission entry and turning its completion
//! into the typed [`Outcome`](crate::Outcome).
//!
//! Builders take borrowed fds and pointers into memory that the caller parks in the in-flight
//! slab until the final completion (see `inflight`); they never own anything themselves.

use std::io;

pub(crate) mod accept;
pub(crate) mod cancel;
pub(crate) mod close;
pub(crate) mod poll;
pub(crate) mod recv;
pub(crate) mod recvmsg;
pub(crate) mod sendmsg;
pub(crate) mod timeout;

/// A CQE result: a negative errno becomes the error, anything else the value.
pub(crate) fn result(res: i32) -> io::Result<u32> {
    if res < 0 {
        Err(io::Error::from_raw_os_error(res.saturating_neg()))
    } else {
        Ok(res.unsigned_abs())
    }
}

/// A CQE result for operations that return nothing but success.
pub(crate) fn unit(res: i32) -> io::Result<()> {
    result(res).map(|_| ())
}
