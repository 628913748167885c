//! The registration table: one epoll registration per fd, armed for the union of what its
//! pending operations wait for.
//!
//! A worker channel may have a `recv_msg` waiting for `EPOLLIN` and a `send_msg` waiting for
//! `EPOLLOUT` at once; epoll allows one registration per fd, so the table keeps, per fd number,
//! the pending operations in the order they were queued and their interests, and keeps the
//! kernel's registration in step (`EPOLL_CTL_ADD`/`MOD`/`DEL`) whenever that set changes.
//!
//! Registrations are `EPOLLONESHOT`: an event disarms the registration until the loop has run
//! the fd's operations and re-armed it for what is still pending. A registration the loop lost
//! track of (its fd closed while another copy of the file lives on, so the kernel keeps it)
//! therefore fires at most once, never in a loop; and every event carries the registration's
//! generation beside the fd number, so an event of an older registration of the same number is
//! recognised and ignored.
//!
//! The registration is removed (`EPOLL_CTL_DEL`) as soon as no operation is pending on the fd,
//! while the fd is still open (its owner keeps it open until the completion that ends the last
//! operation on it), so the kernel never holds a registration for a number we let go of.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};

use super::sys;
use crate::op_id::OpId;

/// The registration of one fd.
struct Reg {
    /// Distinguishes this registration's events from those of an earlier one of the number.
    generation: u32,
    /// Whether the kernel holds a registration for the number (added and not deleted).
    registered: bool,
    /// The interest armed in the kernel; 0 after an event disarmed the one-shot registration.
    armed: u32,
    /// Pending operations on the fd with their epoll interest, in the order they were queued.
    ops: Vec<(OpId, u32)>,
}

impl Reg {
    fn interest(&self) -> u32 {
        self.ops.iter().fold(0, |all, &(_, events)| all | events)
    }
}

/// Pending operations by fd number, and their registrations in the epoll set.
#[derive(Default)]
pub(crate) struct Registry {
    regs: HashMap<RawFd, Reg>,
    generation: u32,
}

/// The epoll `data` of a registration: its generation and fd number.
fn encode(fd: RawFd, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(fd as u32)
}

fn decode(data: u64) -> (RawFd, u32) {
    (data as u32 as RawFd, (data >> 32) as u32)
}

impl Registry {
    /// Adds `op`, waiting for `events` (EPOLL* bits) on `fd`, and arms the registration for it.
    /// On error nothing is left behind: the operation is not in the table.
    pub(crate) fn add(
        &mut self,
        epoll: BorrowedFd<'_>,
        fd: RawFd,
        op: OpId,
        events: u32,
    ) -> io::Result<()> {
        let generation = &mut self.generation;
        let reg = self.regs.entry(fd).or_insert_with(|| {
            *generation = generation.wrapping_add(1);
            Reg {
                generation: *generation,
                registered: false,
                armed: 0,
                ops: Vec::new(),
            }
        });
        reg.ops.push((op, events));
        let result = self.sync(epoll, fd);
        if result.is_err() {
            self.forget(fd, op);
            // The remaining operations' registration was in order before; putting it back
            // fails only if the fd itself has gone, and then their own retry reports it.
            let _ = self.sync(epoll, fd);
        }
        result
    }

    /// Removes `op` from `fd`'s operations without touching the kernel: [`sync`](Self::sync)
    /// follows.
    pub(crate) fn forget(&mut self, fd: RawFd, op: OpId) {
        if let Some(reg) = self.regs.get_mut(&fd) {
            reg.ops.retain(|&(id, _)| id != op);
        }
    }

    /// Removes every operation of `fd` and its registration (before the fd is closed);
    /// returns the operations, in order.
    pub(crate) fn take_all(&mut self, epoll: BorrowedFd<'_>, fd: RawFd) -> Vec<OpId> {
        let Some(reg) = self.regs.get_mut(&fd) else {
            return Vec::new();
        };
        let ops = reg.ops.drain(..).map(|(id, _)| id).collect();
        let _ = self.sync(epoll, fd);
        ops
    }

    /// Whether any of `fd`'s pending operations satisfies `pred`.
    pub(crate) fn any(&self, fd: RawFd, mut pred: impl FnMut(OpId) -> bool) -> bool {
        self.regs
            .get(&fd)
            .is_some_and(|reg| reg.ops.iter().any(|&(id, _)| pred(id)))
    }

    /// An event arrived with `data`: the fd and its pending operations in order, or None for an
    /// event of a registration that is no longer ours. The one-shot registration is disarmed
    /// now; [`sync`](Self::sync) re-arms it for what stays pending.
    pub(crate) fn fired(&mut self, data: u64) -> Option<(RawFd, Vec<OpId>)> {
        let (fd, generation) = decode(data);
        let reg = self.regs.get_mut(&fd)?;
        if reg.generation != generation {
            return None;
        }
        reg.armed = 0;
        Some((fd, reg.ops.iter().map(|&(id, _)| id).collect()))
    }

    /// Brings the kernel's registration of `fd` in line with its pending operations: armed for
    /// their union, or deleted (and the entry dropped) when none is left.
    pub(crate) fn sync(&mut self, epoll: BorrowedFd<'_>, fd: RawFd) -> io::Result<()> {
        let Entry::Occupied(mut entry) = self.regs.entry(fd) else {
            return Ok(());
        };
        let reg = entry.get_mut();
        let interest = reg.interest();
        if interest == 0 {
            if reg.registered {
                // ENOENT/EBADF: the kernel dropped it already (the file was closed).
                let _ = sys::epoll_ctl(epoll, libc::EPOLL_CTL_DEL, fd, 0, 0);
            }
            entry.remove();
            return Ok(());
        }
        if reg.registered && reg.armed == interest {
            return Ok(());
        }
        let events = interest | libc::EPOLLONESHOT as u32;
        let data = encode(fd, reg.generation);
        let result = if reg.registered {
            match sys::epoll_ctl(epoll, libc::EPOLL_CTL_MOD, fd, events, data) {
                // The kernel dropped the registration when the file was closed, and the
                // number now names another file: register that one afresh.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    self.generation = self.generation.wrapping_add(1);
                    reg.generation = self.generation;
                    let data = encode(fd, reg.generation);
                    sys::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, events, data)
                }
                other => other,
            }
        } else {
            match sys::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, events, data) {
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    sys::epoll_ctl(epoll, libc::EPOLL_CTL_MOD, fd, events, data)
                }
                other => other,
            }
        };
        match result {
            Ok(()) => {
                reg.registered = true;
                reg.armed = interest;
                Ok(())
            }
            Err(e) => {
                reg.armed = 0;
                Err(e)
            }
        }
    }

    /// Number of fds with pending operations.
    pub(crate) fn len(&self) -> usize {
        self.regs.len()
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn data_round_trips() {
        for (fd, generation) in [(0, 0), (3, 1), (i32::MAX, u32::MAX)] {
            assert_eq!(decode(encode(fd, generation)), (fd, generation));
        }
    }

    #[test]
    fn one_registration_for_the_union_and_deleted_when_empty() {
        let epoll = sys::epoll_create().unwrap();
        let (a, _b) = crate::sys::seqpacket_pair().unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&a);
        let (read, write) = (OpId::new(0, 1), OpId::new(1, 2));
        let mut registry = Registry::default();
        registry
            .add(epoll.as_fd(), fd, read, libc::EPOLLIN as u32)
            .unwrap();
        registry
            .add(epoll.as_fd(), fd, write, libc::EPOLLOUT as u32)
            .unwrap();
        assert_eq!(registry.len(), 1);
        assert!(registry.any(fd, |id| id == write));
        registry.forget(fd, read);
        registry.sync(epoll.as_fd(), fd).unwrap();
        registry.forget(fd, write);
        registry.sync(epoll.as_fd(), fd).unwrap();
        assert_eq!(registry.len(), 0);
        // Deleted from the kernel too: a new ADD of the number succeeds.
        sys::epoll_ctl(epoll.as_fd(), libc::EPOLL_CTL_ADD, fd, 0, 0).unwrap();
    }

    #[test]
    fn an_event_of_an_old_generation_is_ignored() {
        let mut registry = Registry::default();
        let epoll = sys::epoll_create().unwrap();
        let (a, _b) = crate::sys::seqpacket_pair().unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&a);
        let op = OpId::new(0, 1);
        registry
            .add(epoll.as_fd(), fd, op, libc::EPOLLOUT as u32)
            .unwrap();
        let current = registry.regs[&fd].generation;
        assert!(
            registry
                .fired(encode(fd, current.wrapping_sub(1)))
                .is_none()
        );
        assert_eq!(registry.fired(encode(fd, current)), Some((fd, vec![op])));
    }
}
