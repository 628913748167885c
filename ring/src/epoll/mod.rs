//! The epoll backend: the same completion API, emulated with epoll and non-blocking syscalls,
//! for hosts that refuse io_uring (Docker's default seccomp profile, the
//! `kernel.io_uring_disabled` sysctl) or whose kernel lacks what stickyd needs.
//!
//! An operation that can finish at once (a recv with `MSG_DONTWAIT`, a sendmsg with room in the
//! socket, a close, a cancel) does so when it is queued; one that would block waits in the
//! [`registry`] for its fd's readiness and is retried then; timers wait in [`timers`].
//! [`op`] holds the operations, [`accept`] the emulated multishot accept, [`sys`] the syscalls.
//!
//! # Semantics, beside io_uring's
//!
//! - Completions of operations that finished when queued become visible at the next
//!   [`submit`](Ring::submit) or [`wait`](Ring::wait), as io_uring's do once submitted; all
//!   completions come out in the order they were produced.
//! - [`in_flight`](Ring::in_flight) counts, as on io_uring, the operations whose final
//!   completion has not been taken yet: those pending plus the final completions queued.
//! - The loop watches fd *numbers*: the caller keeps an fd open until the completion that ends
//!   its last operation (on io_uring, until submission). Closing an fd through
//!   [`close`](Ring::close) first ends the operations still pending on it with ECANCELED.
//! - Operations of the same side of one fd (two receives, two sends) are served in the order
//!   they were queued; a recv with `MSG_DONTWAIT` runs at once, ahead of a waiting one.
//! - [`accept_multi`](Ring::accept_multi) sets the listener `O_NONBLOCK` (accept4 has no
//!   per-call flag), accepts up to [`accept::BATCH`] connections per readiness event, and ends
//!   on the errors that end io_uring's multishot accept.

mod accept;
mod op;
mod registry;
pub(crate) mod sys;
mod timers;

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use slab::Slab;

use self::op::{Kind, Side, Step};
use self::registry::Registry;
use self::timers::Timers;
use crate::completion::{Completion, Outcome};
use crate::msg::{InMsg, OutMsg};
use crate::op_id::OpId;
use crate::sys::context;

/// Events taken from the kernel per `epoll_wait`.
const EVENTS: usize = 256;

/// A pending operation: waiting for its fd's readiness, or a timer.
struct Pending {
    generation: u32,
    token: u64,
    /// The fd number the operation works on (None for a timer); see the module docs.
    fd: Option<RawFd>,
    kind: Kind,
}

/// A completion waiting to be taken, and whether it is its operation's last.
struct Queued {
    completion: Completion,
    last: bool,
}

/// An epoll instance that runs stickyd's operations with the io_uring backend's semantics.
///
/// Single-threaded, like the io_uring ring: neither `Send` nor `Sync`. Dropping it drops the
/// pending operations (freeing their buffers) and the queued completions (closing the fds in
/// them); nothing is left to the kernel.
pub(crate) struct Ring {
    epoll: OwnedFd,
    pending: Slab<Pending>,
    generation: u32,
    registry: Registry,
    timers: Timers,
    /// Completions of operations that finished when queued: visible after the next submit.
    staged: VecDeque<Queued>,
    /// Completions visible to `next_completion`, in order.
    ready: VecDeque<Queued>,
    /// Last completions in `staged` and `ready`: their operations are still in flight.
    finished: usize,
    events: Vec<libc::epoll_event>,
    _single_thread: PhantomData<*const ()>,
}

impl Ring {
    /// A new epoll instance (`epoll_create1(EPOLL_CLOEXEC)`).
    pub(crate) fn new() -> io::Result<Ring> {
        Ok(Ring {
            epoll: sys::epoll_create()?,
            pending: Slab::new(),
            generation: 0,
            registry: Registry::default(),
            timers: Timers::default(),
            staged: VecDeque::new(),
            ready: VecDeque::new(),
            finished: 0,
            events: Vec::with_capacity(EVENTS),
            _single_thread: PhantomData,
        })
    }

    pub(crate) fn accept_multi(&mut self, listener: BorrowedFd<'_>, token: u64) -> OpId {
        if let Err(e) = sys::set_nonblocking(listener) {
            let e = context("accept: setting the listener O_NONBLOCK", e);
            return self.done_now(token, Kind::Accept.finish(Err(e)));
        }
        self.watch(listener, token, Kind::Accept)
    }

    /// As [`accept_multi`](Self::accept_multi): readiness spreads connections over the loops.
    pub(crate) fn accept(&mut self, listener: BorrowedFd<'_>, token: u64) -> OpId {
        self.accept_multi(listener, token)
    }

    pub(crate) fn recv(
        &mut self,
        fd: BorrowedFd<'_>,
        mut buf: Vec<u8>,
        flags: i32,
        token: u64,
    ) -> OpId {
        let dontwait = flags & libc::MSG_DONTWAIT != 0;
        if dontwait || !self.side_busy(fd, Side::Read) {
            match sys::recv(fd, &mut buf, flags) {
                Err(e) if !dontwait && e.kind() == io::ErrorKind::WouldBlock => {}
                result => {
                    return self.done_now(token, Kind::Recv { buf, flags }.finish(result));
                }
            }
        }
        self.watch(fd, token, Kind::Recv { buf, flags })
    }

    pub(crate) fn poll(&mut self, fd: BorrowedFd<'_>, events: u32, token: u64) -> OpId {
        self.watch(fd, token, Kind::Poll { events })
    }

    pub(crate) fn send_msg(&mut self, fd: BorrowedFd<'_>, msg: OutMsg, token: u64) -> OpId {
        self.now_or_watch(fd, token, Kind::SendMsg(msg))
    }

    pub(crate) fn recv_msg(&mut self, fd: BorrowedFd<'_>, msg: InMsg, token: u64) -> OpId {
        self.now_or_watch(fd, token, Kind::RecvMsg(msg))
    }

    pub(crate) fn close(&mut self, fd: OwnedFd, token: u64) -> OpId {
        for op in self.registry.take_all(self.epoll.as_fd(), fd.as_raw_fd()) {
            if let Some(pending) = self.take(op) {
                self.stage(op, pending.token, pending.kind.finish(Err(op::cancelled())));
            }
        }
        let result = sys::close(fd);
        self.done_now(token, Outcome::Closed(result))
    }

    pub(crate) fn timeout(&mut self, after: Duration, token: u64) -> OpId {
        let id = self.insert(token, None, Kind::Timeout);
        let now = Instant::now();
        // A deadline beyond what Instant can hold never comes: a century is as good.
        let at = now
            .checked_add(after)
            .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)))
            .unwrap_or(now);
        self.timers.push(at, id);
        id
    }

    pub(crate) fn cancel(&mut self, target: OpId, token: u64) -> OpId {
        let id = self.next_id();
        let result = match self.take(target) {
            Some(pending) => {
                match pending.fd {
                    Some(fd) => {
                        self.registry.forget(fd, target);
                        // A failed re-arm is reported by the fd's other operations' retries.
                        let _ = self.registry.sync(self.epoll.as_fd(), fd);
                    }
                    None => {
                        let pending = &self.pending;
                        self.timers.cancelled(|op| is_live(pending, op));
                    }
                }
                let outcome = pending.kind.finish(Err(op::cancelled()));
                self.stage(target, pending.token, outcome);
                Ok(())
            }
            None => Err(io::Error::from_raw_os_error(libc::ENOENT)),
        };
        self.stage(id, token, Outcome::Cancelled(result));
        id
    }

    /// Makes the completions of operations that finished when queued visible.
    pub(crate) fn submit(&mut self) -> io::Result<()> {
        self.ready.append(&mut self.staged);
        Ok(())
    }

    /// Runs the ready operations and the due timers until at least one completion is
    /// available or `timeout` passes (None: no time limit). Timing out and EINTR are not errors.
    pub(crate) fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.submit()?;
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            let now = Instant::now();
            self.fire_timers(now);
            // With completions in hand, only look at what is ready now, so events are not
            // starved by a caller whose every round queues more immediate completions.
            let mut limit = if self.ready.is_empty() {
                deadline.map(|at| at.saturating_duration_since(now))
            } else {
                Some(Duration::ZERO)
            };
            let pending = &self.pending;
            if let Some(at) = self.timers.next(|op| is_live(pending, op)) {
                let left = at.saturating_duration_since(now);
                limit = Some(limit.map_or(left, |l| l.min(left)));
            }
            let mut events = mem::take(&mut self.events);
            let result = sys::epoll_wait(self.epoll.as_fd(), &mut events, limit);
            for event in &events {
                let (revents, data) = (event.events, event.u64);
                self.dispatch(revents, data);
            }
            self.events = events;
            match result {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
                Err(e) => return Err(context("epoll_wait", e)),
            }
            let now = Instant::now();
            self.fire_timers(now);
            if !self.ready.is_empty() || deadline.is_some_and(|at| at <= now) {
                return Ok(());
            }
        }
    }

    pub(crate) fn next_completion(&mut self) -> Option<Completion> {
        let queued = self.ready.pop_front()?;
        if queued.last {
            self.finished -= 1;
        }
        Some(queued.completion)
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.pending.len() + self.finished
    }

    /// Runs the operations of the fd an event arrived for, in order, then re-arms the fd for
    /// what is still pending.
    fn dispatch(&mut self, revents: u32, data: u64) {
        let Some((fd, ops)) = self.registry.fired(data) else {
            return;
        };
        // SAFETY: the fd has pending operations, and the caller keeps an fd open until the
        // completion that ends its last operation; the borrow ends with this call.
        let borrowed = unsafe { sys::borrow(fd) };
        let mut blocked = Vec::with_capacity(2);
        for id in ops {
            let Some(pending) = self.pending.get_mut(id.key()) else {
                continue;
            };
            let side = pending.kind.side();
            if pending.generation != id.generation()
                || !pending.kind.woken_by(revents)
                || side.is_some_and(|side| blocked.contains(&side))
            {
                continue;
            }
            let token = pending.token;
            let mut accepted = Vec::new();
            let step = pending
                .kind
                .attempt(borrowed, revents, |conn| accepted.push(conn));
            for conn in accepted {
                let outcome = Outcome::Accepted {
                    fd: Ok(conn),
                    more: true,
                };
                self.push_ready(id, token, outcome, false);
            }
            match step {
                Step::Wait => blocked.extend(side),
                Step::Done(result) => {
                    self.registry.forget(fd, id);
                    if let Some(pending) = self.take(id) {
                        self.push_ready(id, token, pending.kind.finish(result), true);
                    }
                }
            }
        }
        if let Err(e) = self.registry.sync(self.epoll.as_fd(), fd) {
            // The fd cannot be watched any more (it was closed under us): end what waits on it.
            for id in self.registry.take_all(self.epoll.as_fd(), fd) {
                if let Some(pending) = self.take(id) {
                    let e = io::Error::new(e.kind(), format!("epoll: re-arming fd {fd}: {e}"));
                    self.push_ready(id, pending.token, pending.kind.finish(Err(e)), true);
                }
            }
        }
    }

    /// Completes the timers due at `now`.
    fn fire_timers(&mut self, now: Instant) {
        while let Some(id) = self.timers.pop_due(now) {
            if let Some(pending) = self.take(id) {
                self.push_ready(id, pending.token, pending.kind.finish(Ok(0)), true);
            }
        }
    }

    /// Tries a sendmsg or recvmsg at once unless an operation of its side is already waiting
    /// on the fd; if it would block, it waits for readiness.
    fn now_or_watch(&mut self, fd: BorrowedFd<'_>, token: u64, mut kind: Kind) -> OpId {
        let side = kind.side().unwrap_or(Side::Read);
        if !self.side_busy(fd, side) {
            let ready = (libc::EPOLLIN | libc::EPOLLOUT) as u32;
            if let Step::Done(result) = kind.attempt(fd, ready, |_| {}) {
                return self.done_now(token, kind.finish(result));
            }
        }
        self.watch(fd, token, kind)
    }

    /// Whether an operation consuming `side` of `fd` is already waiting.
    fn side_busy(&self, fd: BorrowedFd<'_>, side: Side) -> bool {
        self.registry.any(fd.as_raw_fd(), |id| {
            self.pending
                .get(id.key())
                .is_some_and(|p| p.generation == id.generation() && p.kind.side() == Some(side))
        })
    }

    /// Parks an operation until `fd` is ready for it. An fd epoll cannot watch ends the
    /// operation at once: with the error, or, for a poll of a regular file (always ready, as
    /// poll(2) says, but refused by epoll with EPERM), with the events asked for.
    fn watch(&mut self, fd: BorrowedFd<'_>, token: u64, kind: Kind) -> OpId {
        let interest = kind.interest();
        let raw = fd.as_raw_fd();
        let id = self.insert(token, Some(raw), kind);
        let Err(e) = self.registry.add(self.epoll.as_fd(), raw, id, interest) else {
            return id;
        };
        let Some(pending) = self.take(id) else {
            return id;
        };
        let result = match &pending.kind {
            Kind::Poll { events } if e.raw_os_error() == Some(libc::EPERM) => {
                Ok((*events & (libc::POLLIN | libc::POLLOUT) as u32) as usize)
            }
            _ => Err(context(&format!("epoll: watching fd {raw}"), e)),
        };
        self.stage(id, token, pending.kind.finish(result));
        id
    }

    fn insert(&mut self, token: u64, fd: Option<RawFd>, kind: Kind) -> OpId {
        let id = self.next_id();
        let key = self.pending.insert(Pending {
            generation: id.generation(),
            token,
            fd,
            kind,
        });
        debug_assert_eq!(key, id.key());
        id
    }

    /// A fresh id for the next operation: the slot it would take, in a new generation. An
    /// operation that finishes at once never takes its slot; the generation keeps its id apart
    /// from the slot's later occupants.
    fn next_id(&mut self) -> OpId {
        self.generation = self.generation.wrapping_add(1);
        OpId::new(self.pending.vacant_key(), self.generation)
    }

    /// Removes the pending operation `id`, if it is still pending.
    fn take(&mut self, id: OpId) -> Option<Pending> {
        let pending = self.pending.get(id.key())?;
        if pending.generation != id.generation() {
            return None;
        }
        Some(self.pending.remove(id.key()))
    }

    /// An operation that finished when queued: its id, and its completion staged.
    fn done_now(&mut self, token: u64, outcome: Outcome) -> OpId {
        let id = self.next_id();
        self.stage(id, token, outcome);
        id
    }

    fn stage(&mut self, op: OpId, token: u64, outcome: Outcome) {
        self.finished += 1;
        let completion = Completion { token, op, outcome };
        self.staged.push_back(Queued {
            completion,
            last: true,
        });
    }

    fn push_ready(&mut self, op: OpId, token: u64, outcome: Outcome, last: bool) {
        self.finished += usize::from(last);
        let completion = Completion { token, op, outcome };
        self.ready.push_back(Queued { completion, last });
    }
}

/// Whether `op` is still pending in `pending`.
fn is_live(pending: &Slab<Pending>, op: OpId) -> bool {
    pending
        .get(op.key())
        .is_some_and(|p| p.generation == op.generation())
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EpollRing")
            .field("epoll", &self.epoll)
            .field("pending", &self.pending.len())
            .field("watched_fds", &self.registry.len())
            .field("staged", &self.staged.len())
            .field("ready", &self.ready.len())
            .finish()
    }
}
