//! Async cancel of one operation, by its user_data.

use io_uring::{opcode, squeue};

use crate::completion::Outcome;
use crate::op_id::OpId;

/// A request to cancel `target`. The target still completes on its own (usually ECANCELED).
pub(crate) fn entry(target: OpId) -> squeue::Entry {
    opcode::AsyncCancel::new(target.user_data()).build()
}

/// Ok when the target was found and cancelled, ENOENT when it had already completed,
/// EALREADY when it was running and could not be stopped at once.
pub(crate) fn complete(res: i32) -> Outcome {
    Outcome::Cancelled(super::unit(res))
}
