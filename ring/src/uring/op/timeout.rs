//! A pure timer: a timeout that counts no completions.

use io_uring::{opcode, squeue, types};

use crate::completion::Outcome;

/// A timer of `after`. The entry points at `after`: the caller keeps the box parked until the
/// completion.
pub(crate) fn entry(after: &types::Timespec) -> squeue::Entry {
    opcode::Timeout::new(after).build()
}

/// ETIME (the timer fired) is success; ECANCELED is the error of a cancelled timer.
pub(crate) fn complete(res: i32) -> Outcome {
    let result = match super::unit(res) {
        Err(e) if e.raw_os_error() == Some(libc::ETIME) => Ok(()),
        other => other,
    };
    Outcome::TimedOut(result)
}
