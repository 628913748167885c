//! The io_uring backend: every operation is a submission entry, every result a completion the
//! kernel posts.
//!
//! [`ring`] drives the submission and completion queues, [`inflight`] parks what each operation
//! owns until its final completion, [`probe`] checks that the kernel can do what stickyd needs,
//! and [`op`] holds one file per operation.

mod inflight;
mod op;
mod probe;
mod ring;

pub(crate) use ring::Ring;
