//! The io_uring [`Ring`]: queueing operations, submitting, waiting, and handing out completions.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use io_uring::{IoUring, opcode, squeue, types};

use super::inflight::{Cqe, InFlight, Owned};
use super::{op, probe};
use crate::completion::Completion;
use crate::msg::{InMsg, OutMsg};
use crate::op_id::OpId;

/// user_data of the cancel-everything request sent when a ring is dropped.
const DROP_CANCEL: u64 = u64::MAX;
/// How long dropping a ring waits for its operations to finish before leaking their memory.
const DROP_TIMEOUT: Duration = Duration::from_secs(1);

/// An io_uring instance with typed, owned operations.
///
/// Single-threaded: the ring is set up with `IORING_SETUP_SINGLE_ISSUER` when the kernel knows
/// it, so it is neither `Send` nor `Sync`; create it on the thread that runs the event loop.
///
/// # Dropping
///
/// Dropping a ring with operations in flight cancels them all (`IORING_ASYNC_CANCEL_ANY`),
/// submits, and drains their completions (closing accepted fds, freeing buffers) for up to one
/// second. If the kernel still holds some operation after that, the memory those operations
/// own is leaked rather than freed, since the kernel might still write into it.
pub struct Ring {
    ring: IoUring,
    inflight: InFlight,
    /// Entries that did not fit in the SQ even after a flush, in order; submitted first.
    overflow_sqes: VecDeque<squeue::Entry>,
    /// Completions taken off the CQ early to let a submission through; handed out first.
    stashed: VecDeque<Cqe>,
    _single_thread: PhantomData<*const ()>,
}

impl Ring {
    /// Sets up a ring with `entries` SQ entries (CQ four times larger; SUBMIT_ALL,
    /// COOP_TASKRUN, SINGLE_ISSUER and DEFER_TASKRUN when available) and probes what stickyd needs:
    /// IORING_FEAT_EXT_ARG, IORING_FEAT_NODROP, the opcodes Accept, Recv, PollAdd, SendMsg,
    /// RecvMsg, Close, Timeout, AsyncCancel, and a real multishot accept on a throwaway
    /// listener bound to 127.0.0.1:0 (kernel 5.19+; older kernels reject it with EINVAL).
    ///
    /// Any missing piece is an error whose message says what is missing, e.g.
    /// "io_uring: multishot accept not supported (kernel too old?)".
    pub fn new(entries: u32) -> io::Result<Ring> {
        let mut ring = probe::setup(entries)?;
        probe::features(&ring)?;
        probe::multishot_accept(&mut ring)?;
        Ok(Ring {
            ring,
            inflight: InFlight::default(),
            overflow_sqes: VecDeque::new(),
            stashed: VecDeque::new(),
            _single_thread: PhantomData,
        })
    }

    /// Multishot accept on a listening socket; accepted fds come with SOCK_CLOEXEC.
    ///
    /// One `Accepted` completion per connection; the one with `more == false` ends it. The
    /// kernel holds its own reference to the listener once the entry is submitted: closing the
    /// listener does not stop the accept, cancel it first.
    pub fn accept_multi(&mut self, listener: BorrowedFd<'_>, token: u64) -> OpId {
        let entry = op::accept::entry(listener);
        self.queue(entry, token, Owned::Accept)
    }

    /// Single-shot accept on a listening socket (see [`op::accept::single`]).
    pub fn accept(&mut self, listener: BorrowedFd<'_>, token: u64) -> OpId {
        let entry = op::accept::single(listener);
        self.queue(entry, token, Owned::Accept)
    }

    /// recv into `buf`'s spare capacity (from index 0: it is cleared first; up to
    /// `buf.capacity()` bytes). `flags` are libc MSG_* flags, passed through (stickyd uses
    /// MSG_PEEK|MSG_DONTWAIT). The completion hands `buf` back with its len set to the bytes
    /// received.
    pub fn recv(&mut self, fd: BorrowedFd<'_>, mut buf: Vec<u8>, flags: i32, token: u64) -> OpId {
        let entry = op::recv::entry(fd, &mut buf, flags);
        self.queue(entry, token, Owned::Recv(buf))
    }

    /// One-shot poll; `events` are libc POLL* bits (e.g. POLLIN | POLLRDHUP).
    pub fn poll(&mut self, fd: BorrowedFd<'_>, events: u32, token: u64) -> OpId {
        let entry = op::poll::entry(fd, events);
        self.queue(entry, token, Owned::Poll)
    }

    /// sendmsg of `msg` (bytes + fds in one SCM_RIGHTS cmsg) with MSG_NOSIGNAL added.
    /// The `Sent` completion gives the message back.
    pub fn send_msg(&mut self, fd: BorrowedFd<'_>, mut msg: OutMsg, token: u64) -> OpId {
        let entry = op::sendmsg::entry(fd, &mut msg);
        self.queue(entry, token, Owned::SendMsg(msg))
    }

    /// recvmsg with MSG_CMSG_CLOEXEC into `msg` (reset first); received fds are wrapped in
    /// OwnedFd at completion.
    pub fn recv_msg(&mut self, fd: BorrowedFd<'_>, mut msg: InMsg, token: u64) -> OpId {
        let entry = op::recvmsg::entry(fd, &mut msg);
        self.queue(entry, token, Owned::RecvMsg(msg))
    }

    /// Close an fd through the ring (the OwnedFd is consumed; not closed twice).
    pub fn close(&mut self, fd: OwnedFd, token: u64) -> OpId {
        let (entry, raw) = op::close::entry(fd);
        self.queue(entry, token, Owned::Close(raw))
    }

    /// A timer; completes after `after` (outcome TimedOut(Ok(()))), or Err(ECANCELED).
    pub fn timeout(&mut self, after: Duration, token: u64) -> OpId {
        let after = Box::new(types::Timespec::from(after));
        let entry = op::timeout::entry(&after);
        self.queue(entry, token, Owned::Timeout(after))
    }

    /// Ask the kernel to cancel the operation `target` (async cancel by user_data). The target's
    /// own completion still arrives (usually with ECANCELED); its owned data comes back then.
    /// Cancelling an op that already completed is harmless (the cancel completes with ENOENT).
    pub fn cancel(&mut self, target: OpId, token: u64) -> OpId {
        let entry = op::cancel::entry(target);
        self.queue(entry, token, Owned::Cancel)
    }

    /// Submit what is queued without waiting.
    pub fn submit(&mut self) -> io::Result<()> {
        loop {
            self.refill_sq();
            let queued = self.ring.submission().len();
            let submitted = self.enter_submit()?;
            if self.overflow_sqes.is_empty() {
                return Ok(());
            }
            if submitted == 0 && queued > 0 {
                return Err(io::Error::other(
                    "io_uring: submit: the kernel took no entry from a full submission queue",
                ));
            }
        }
    }

    /// Submit what is queued and wait until at least one completion is available or `timeout`
    /// passes (None: no time limit, so only call it with something in flight). Timing out and
    /// EINTR are not errors (return Ok).
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.wait_for(1, timeout)
    }

    /// Like [`wait`](Self::wait), but returns only once `want` completions are available or
    /// `timeout` passes, so that one round handles a batch.
    pub fn wait_for(&mut self, want: usize, timeout: Option<Duration>) -> io::Result<()> {
        if !self.overflow_sqes.is_empty() {
            self.submit()?;
        }
        // Completions already stashed are available: submit without blocking.
        let want = if self.stashed.is_empty() {
            want.max(1)
        } else {
            0
        };
        let result = match timeout {
            Some(after) => {
                let ts = types::Timespec::from(after);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(want, &args)
            }
            None => self.ring.submit_and_wait(want),
        };
        match result {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN)) => {
                // The kernel wants room in the CQ first: completions are now available.
                self.stash_completions();
                Ok(())
            }
            Err(e) => Err(context("io_uring: wait", e)),
        }
    }

    /// The next completion, if any (call in a loop until None after `wait`).
    pub fn next_completion(&mut self) -> Option<Completion> {
        loop {
            let next = match self.stashed.pop_front() {
                Some(cqe) => Some(cqe),
                None => self.ring.completion().next().map(Cqe::from),
            };
            let cqe = match next {
                Some(cqe) => cqe,
                None if self.flush_cq_overflow() => continue,
                None => return None,
            };
            // Completions of internal requests belong to no slot and are skipped.
            if let Some(completion) = self.inflight.complete(cqe) {
                return Some(completion);
            }
        }
    }

    /// Operations submitted or queued whose final completion has not yet arrived.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Parks `owned` in a slot and queues `entry` (which points only into `owned`'s heap
    /// memory) with the slot's user_data.
    fn queue(&mut self, entry: squeue::Entry, token: u64, owned: Owned) -> OpId {
        let id = self.inflight.insert(token, owned);
        self.push(entry.user_data(id.user_data()));
        id
    }

    /// Pushes an entry, flushing the SQ to the kernel when it is full. An entry that still
    /// does not fit waits in `overflow_sqes`, in order; no entry is ever dropped.
    fn push(&mut self, entry: squeue::Entry) {
        if self.overflow_sqes.is_empty() {
            if self.try_push(&entry) {
                return;
            }
            // A failed flush leaves the entries queued; the next submit or wait reports it.
            let _ = self.enter_submit();
            if self.try_push(&entry) {
                return;
            }
        }
        self.overflow_sqes.push_back(entry);
    }

    fn try_push(&mut self, entry: &squeue::Entry) -> bool {
        // SAFETY: every entry this crate builds points only at memory owned by its in-flight
        // slot (heap allocations that stay put until the slot's final completion: a Vec's
        // buffer, a boxed msghdr or timespec) or at no memory at all, and fds are only
        // numbers resolved by the kernel at submission.
        unsafe { self.ring.submission().push(entry) }.is_ok()
    }

    /// Moves waiting entries into the SQ while there is room.
    fn refill_sq(&mut self) {
        while let Some(entry) = self.overflow_sqes.front() {
            let entry = entry.clone();
            if !self.try_push(&entry) {
                break;
            }
            self.overflow_sqes.pop_front();
        }
    }

    /// io_uring_enter for submission, retrying EINTR and making room in the CQ on EBUSY.
    fn enter_submit(&mut self) -> io::Result<usize> {
        loop {
            match self.ring.submit() {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN))
                        && self.stash_completions() > 0 => {}
                Err(e) => return Err(context("io_uring: submit", e)),
            }
        }
    }

    /// Moves every completion in the CQ to `stashed`; returns how many.
    fn stash_completions(&mut self) -> usize {
        let before = self.stashed.len();
        self.stashed.extend(self.ring.completion().map(Cqe::from));
        self.stashed.len() - before
    }

    /// When the kernel kept completions aside because the CQ was full (IORING_SQ_CQ_OVERFLOW),
    /// asks it to move them into the CQ; returns whether any arrived.
    fn flush_cq_overflow(&mut self) -> bool {
        if !self.ring.submission().cq_overflow() {
            return false;
        }
        // The io-uring crate enters with GETEVENTS when the overflow flag is set, which flushes.
        if self.enter_submit().is_err() {
            return false;
        }
        !self.ring.completion().is_empty()
    }

    /// Cancels everything in flight and drains completions for up to [`DROP_TIMEOUT`].
    /// Returns whether every operation finished.
    fn shutdown(&mut self) -> bool {
        if self.inflight.is_empty() {
            return true;
        }
        let cancel_all = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(DROP_CANCEL);
        self.push(cancel_all);
        let deadline = Instant::now() + DROP_TIMEOUT;
        loop {
            // Dropping each outcome closes accepted and received fds and frees buffers.
            while self.next_completion().is_some() {}
            if self.inflight.is_empty() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.wait(Some(left)).is_err() {
                return false;
            }
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if !self.shutdown() {
            self.inflight.leak();
        }
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("sq_entries", &self.ring.params().sq_entries())
            .field("cq_entries", &self.ring.params().cq_entries())
            .field("in_flight", &self.inflight.len())
            .field("overflow_sqes", &self.overflow_sqes.len())
            .field("stashed", &self.stashed.len())
            .finish()
    }
}

/// `e` with `what` in front of its message, keeping its kind.
fn context(what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::{AsFd, OwnedFd};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::Outcome;

    fn ring(entries: u32) -> Option<Ring> {
        Ring::new(entries)
            .map_err(|e| eprintln!("skipped: {e}"))
            .ok()
    }

    #[test]
    fn shutdown_finishes_pending_recv_and_accept() {
        let Some(mut ring) = ring(8) else { return };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let server = OwnedFd::from(server);
        ring.accept_multi(listener.as_fd(), 1);
        ring.recv(server.as_fd(), Vec::with_capacity(1 << 16), 0, 2);
        ring.submit().unwrap();
        assert_eq!(ring.in_flight(), 2);
        assert!(ring.shutdown(), "everything finished: nothing leaked");
        assert_eq!(ring.in_flight(), 0);
        drop((client, server));
    }

    #[test]
    fn entries_waiting_outside_the_sq_are_submitted_in_order() {
        let Some(mut ring) = ring(2) else { return };
        // Park entries directly in the overflow queue, as a failed flush would leave them.
        let tokens: Vec<u64> = (0..10).collect();
        for &token in &tokens {
            let after = Box::new(types::Timespec::from(Duration::ZERO));
            let entry = op::timeout::entry(&after);
            let id = ring.inflight.insert(token, Owned::Timeout(after));
            ring.overflow_sqes
                .push_back(entry.user_data(id.user_data()));
        }
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while seen.len() < tokens.len() {
            assert!(Instant::now() < deadline, "timers lost");
            ring.wait(Some(Duration::from_millis(100))).unwrap();
            while let Some(c) = ring.next_completion() {
                assert!(matches!(c.outcome, Outcome::TimedOut(Ok(()))));
                seen.push(c.token);
            }
        }
        seen.sort_unstable();
        assert_eq!(seen, tokens);
        assert!(ring.overflow_sqes.is_empty());
    }

    #[test]
    fn stashed_completions_come_first() {
        let Some(mut ring) = ring(4) else { return };
        let op = ring.timeout(Duration::ZERO, 5);
        ring.wait(Some(Duration::from_secs(5))).unwrap();
        while ring.stash_completions() == 0 {
            ring.wait(Some(Duration::from_secs(5))).unwrap();
        }
        // With a stashed completion, wait does not block even without a timeout.
        ring.wait(None).unwrap();
        let c = ring.next_completion().unwrap();
        assert_eq!((c.op, c.token), (op, 5));
        assert!(ring.next_completion().is_none());
    }
}
