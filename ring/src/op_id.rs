//! [`OpId`]: the identity of one queued operation, shared by both backends.
//!
//! An id is a slot key in its low 32 bits and a per-ring generation in its high 32 bits, so an
//! id whose operation has finished never matches the slot's next occupant: cancelling it finds
//! nothing (ENOENT) instead of cancelling someone else's operation. The io_uring backend uses
//! the id as the submission's `user_data`.

/// Identifies one in-flight operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OpId(u64);

impl OpId {
    /// The id of slot `key` in its `generation`.
    pub(crate) fn new(key: usize, generation: u32) -> OpId {
        // Slab keys stay far below 2^32: every slot costs tens of bytes.
        OpId((u64::from(generation) << 32) | (key as u64 & 0xffff_ffff))
    }

    /// The id a `user_data` value stands for.
    pub(crate) fn from_user_data(user_data: u64) -> OpId {
        OpId(user_data)
    }

    /// The `user_data` of this operation's submission and completions.
    pub(crate) fn user_data(self) -> u64 {
        self.0
    }

    /// The slot key.
    pub(crate) fn key(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }

    /// The generation the slot had when the operation was queued.
    pub(crate) fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}
