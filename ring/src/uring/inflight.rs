//! The operations the kernel may still be working on.
//!
//! Each queued operation gets a slot that owns everything its submission entry points at (a
//! receive buffer, a boxed `msghdr` with its iovec and control buffer, a boxed timespec) until
//! the operation's *final* completion arrives; for a multishot accept that is the completion
//! without `IORING_CQE_F_MORE`. Only then is the slot freed and its contents handed back in the
//! [`Outcome`](crate::Outcome).
//!
//! Everything the kernel sees lives in a separate heap allocation (a `Vec`'s buffer, a `Box`),
//! never inline in the slot: the slab may grow and move its slots, which moves the handles but
//! not the memory they own.
//!
//! The submission's `user_data` is the operation's [`OpId`]: slot key and generation, so a
//! finished operation's id never matches the slot's next occupant.

use std::mem;
use std::os::fd::RawFd;

use io_uring::cqueue;
use io_uring::types::Timespec;
use slab::Slab;

use super::op;
use crate::completion::Completion;
use crate::msg::{InMsg, OutMsg};
use crate::op_id::OpId;

/// What an in-flight operation owns until its final completion.
pub(crate) enum Owned {
    Accept,
    Recv(Vec<u8>),
    Poll,
    SendMsg(OutMsg),
    RecvMsg(InMsg),
    /// The number of the fd being closed; it was released from its `OwnedFd` at queueing time.
    Close(#[allow(dead_code)] RawFd),
    Timeout(#[allow(dead_code)] Box<Timespec>),
    Cancel,
}

/// A completion queue entry, copied out of the ring.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cqe {
    pub(crate) user_data: u64,
    pub(crate) result: i32,
    pub(crate) flags: u32,
}

impl From<cqueue::Entry> for Cqe {
    fn from(entry: cqueue::Entry) -> Cqe {
        Cqe {
            user_data: entry.user_data(),
            result: entry.result(),
            flags: entry.flags(),
        }
    }
}

struct Slot {
    generation: u32,
    token: u64,
    owned: Owned,
}

/// The slab of in-flight operations.
#[derive(Default)]
pub(crate) struct InFlight {
    slots: Slab<Slot>,
    generation: u32,
}

impl InFlight {
    /// Parks `owned` until the operation's final completion; returns the operation's id.
    pub(crate) fn insert(&mut self, token: u64, owned: Owned) -> OpId {
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        let key = self.slots.insert(Slot {
            generation,
            token,
            owned,
        });
        OpId::new(key, generation)
    }

    /// Number of operations whose final completion has not arrived.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Turns a completion into its typed outcome, freeing the slot on the final one.
    /// Returns `None` for a completion that belongs to no operation of ours (internal requests).
    pub(crate) fn complete(&mut self, cqe: Cqe) -> Option<Completion> {
        let id = OpId::from_user_data(cqe.user_data);
        let key = id.key();
        let slot = self.slots.get(key)?;
        if slot.generation != id.generation() {
            return None;
        }
        let token = slot.token;
        if cqueue::more(cqe.flags) {
            // Not the last completion: the operation keeps its slot and what it owns.
            return match slot.owned {
                Owned::Accept => Some(Completion {
                    token,
                    op: id,
                    outcome: op::accept::complete(cqe.result, true),
                }),
                // No other operation of this crate is multishot.
                _ => None,
            };
        }
        let outcome = match self.slots.remove(key).owned {
            Owned::Accept => op::accept::complete(cqe.result, false),
            Owned::Recv(buf) => op::recv::complete(buf, cqe.result),
            Owned::Poll => op::poll::complete(cqe.result),
            Owned::SendMsg(msg) => op::sendmsg::complete(msg, cqe.result),
            Owned::RecvMsg(msg) => op::recvmsg::complete(msg, cqe.result),
            Owned::Close(_) => op::close::complete(cqe.result),
            Owned::Timeout(_) => op::timeout::complete(cqe.result),
            Owned::Cancel => op::cancel::complete(cqe.result),
        };
        Some(Completion {
            token,
            op: id,
            outcome,
        })
    }

    /// Gives up on the operations still in flight without freeing what they own: the kernel
    /// may still write into it. Used only when a ring is dropped and the kernel did not finish
    /// them in time; the memory is leaked rather than risk a write into freed memory.
    pub(crate) fn leak(&mut self) {
        mem::forget(mem::take(&mut self.slots));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cqe(id: OpId, result: i32, flags: u32) -> Cqe {
        Cqe {
            user_data: id.user_data(),
            result,
            flags,
        }
    }

    #[test]
    fn a_reused_slot_does_not_answer_to_the_old_id() {
        let mut inflight = InFlight::default();
        let old = inflight.insert(1, Owned::Poll);
        assert!(inflight.complete(cqe(old, 1, 0)).is_some());
        let new = inflight.insert(2, Owned::Poll);
        assert_eq!(old.key(), new.key(), "the slab reuses the slot");
        assert_ne!(old, new);
        assert!(inflight.complete(cqe(old, 1, 0)).is_none());
        assert_eq!(inflight.len(), 1);
        let done = inflight.complete(cqe(new, 1, 0)).unwrap();
        assert_eq!((done.op, done.token), (new, 2));
        assert!(inflight.is_empty());
    }

    #[test]
    fn multishot_keeps_its_slot_until_the_last_completion() {
        let mut inflight = InFlight::default();
        let id = inflight.insert(9, Owned::Accept);
        // IORING_CQE_F_MORE is bit 1.
        const F_MORE: u32 = 1 << 1;
        assert!(cqueue::more(F_MORE));
        let more = cqe(id, -libc::EMFILE, F_MORE);
        let c = inflight.complete(more).unwrap();
        assert!(matches!(
            c.outcome,
            crate::Outcome::Accepted {
                fd: Err(_),
                more: true
            }
        ));
        assert_eq!(inflight.len(), 1);
        let last = inflight.complete(cqe(id, -libc::ECANCELED, 0)).unwrap();
        assert!(matches!(
            last.outcome,
            crate::Outcome::Accepted {
                fd: Err(_),
                more: false
            }
        ));
        assert!(inflight.is_empty());
    }

    #[test]
    fn unknown_user_data_is_ignored() {
        let mut inflight = InFlight::default();
        inflight.insert(1, Owned::Cancel);
        assert!(
            inflight
                .complete(Cqe {
                    user_data: u64::MAX,
                    result: 0,
                    flags: 0
                })
                .is_none()
        );
        assert_eq!(inflight.len(), 1);
    }
}
