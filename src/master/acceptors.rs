//! `--threads N`: N - 1 dispatcher threads beside the master's own loop, each with a ring and
//! a [`Front`] of its own over the same listening sockets, so that accepting and peeking (most
//! of the master's kernel work) spread over cores. A thread passes each connection whose key
//! it has found to the master through a channel and wakes it with an eventfd; the master keeps
//! the one view of the live workers, numbers the connections and hands them over.
//!
//! The threads share the listening sockets rather than binding SO_REUSEPORT sockets of their
//! own: closing one socket of a SO_REUSEPORT group resets the connections queued on it, and
//! the upgrade hands one socket per listener to the successor.
//!
//! The master steers the threads through a [`Control`] each (accept or not, close, abandon
//! what is pending) and a wake-up; a thread says it is idle once it is closed and has nothing
//! left, after it has passed on its last connection.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::{debug, error};
use stickyd_ring::{BackendKind, Outcome, Ring, sys};

use super::Handoff;
use super::front::{Front, Listener};
use super::token::Token;
use super::{Error, RING_ENTRIES, batch_wait};
use crate::metrics::Metrics;
use crate::verdict::Examiner;

/// What the master asks of a dispatcher thread, and what it reports.
#[derive(Debug, Default)]
struct Control {
    accepting: AtomicBool,
    closing: AtomicBool,
    abandon: AtomicBool,
    /// Closed, nothing pending, every connection passed on: the thread is ending.
    idle: AtomicBool,
    pending: AtomicUsize,
}

/// One dispatcher thread, as the master sees it.
#[derive(Debug)]
struct Handle {
    thread: Option<JoinHandle<()>>,
    control: Arc<Control>,
    /// The thread's eventfd: written to wake it.
    wake: Arc<OwnedFd>,
}

/// The master's dispatcher threads.
#[derive(Debug)]
pub(super) struct Acceptors {
    threads: Vec<Handle>,
    /// Connections whose key the threads found.
    routed: Receiver<Handoff>,
    /// The master's eventfd, polled on its ring: a thread wrote to it.
    pub wake: Arc<OwnedFd>,
    /// The last accept decision passed on.
    accepting: bool,
}

/// What a dispatcher thread needs to start.
pub(super) struct Setup<'a> {
    pub kind: BackendKind,
    pub listeners: &'a [Listener],
    pub examiners: &'a [Examiner],
    pub peek_timeout: Duration,
    pub max_peek: usize,
    pub metrics: &'a Arc<Metrics>,
}

impl Acceptors {
    /// Starts `count` dispatcher threads over `setup.listeners`' sockets.
    pub fn start(count: u32, setup: &Setup<'_>) -> Result<Acceptors, Error> {
        let wake = Arc::new(sys::eventfd().map_err(super::setup("cannot create an eventfd"))?);
        let (to_master, routed) = crossbeam_channel::unbounded();
        // Built first, so that an error below stops the threads already started (Drop).
        let mut acceptors = Acceptors {
            threads: Vec::with_capacity(count as usize),
            routed,
            wake,
            accepting: false,
        };
        for n in 1..=count {
            let mut listeners = Vec::with_capacity(setup.listeners.len());
            for l in setup.listeners {
                let Some(socket) = &l.socket else { continue };
                let socket = socket.try_clone().map_err(super::setup(format!(
                    "cannot share the listener {} with a dispatcher thread",
                    l.addr
                )))?;
                listeners.push(Listener::new(l.name.clone(), l.addr, socket));
            }
            // Accept pauses are the master's decision: counted once, by its own front.
            let front = Front::new(
                listeners,
                setup.examiners.to_vec(),
                setup.peek_timeout,
                setup.max_peek,
                Arc::clone(setup.metrics),
            )
            .without_pause_count();
            let control = Arc::new(Control::default());
            let own_wake =
                Arc::new(sys::eventfd().map_err(super::setup("cannot create an eventfd"))?);
            let kind = setup.kind;
            let thread = Thread {
                front,
                control: Arc::clone(&control),
                wake: Arc::clone(&own_wake),
                to_master: to_master.clone(),
                master_wake: Arc::clone(&acceptors.wake),
            };
            // A ring stays on the thread that made it: each thread makes its own, and says
            // whether it could.
            let (started_tx, started) = crossbeam_channel::bounded(1);
            let handle = std::thread::Builder::new()
                .name(format!("stickyd-dispatch-{n}"))
                .spawn(move || {
                    let ring = match kind {
                        BackendKind::Uring => Ring::uring(RING_ENTRIES).map_err(Error::Ring),
                        BackendKind::Epoll => {
                            Ring::epoll().map_err(super::setup("cannot set up epoll"))
                        }
                    };
                    match ring {
                        Ok(ring) => {
                            let _ = started_tx.send(Ok(()));
                            thread.run(ring);
                        }
                        Err(e) => {
                            let _ = started_tx.send(Err(e));
                        }
                    }
                })
                .map_err(super::setup("cannot start a dispatcher thread"))?;
            started.recv().unwrap_or_else(|_| {
                Err(Error::Ring(std::io::Error::other(
                    "a dispatcher thread ended before its ring was set up",
                )))
            })?;
            acceptors.threads.push(Handle {
                thread: Some(handle),
                control,
                wake: own_wake,
            });
        }
        debug!("{count} dispatcher threads beside the master's loop");
        Ok(acceptors)
    }

    /// Passes the master's accept decision on to the threads that do not have it yet.
    pub fn set_accepting(&mut self, accepting: bool) {
        if accepting == self.accepting {
            return;
        }
        self.accepting = accepting;
        for t in &self.threads {
            t.control.accepting.store(accepting, Ordering::SeqCst);
            wake(&t.wake);
        }
    }

    /// Closes the threads' listeners: they route what they have accepted, then end.
    pub fn close(&mut self) {
        for t in &self.threads {
            t.control.closing.store(true, Ordering::SeqCst);
            wake(&t.wake);
        }
    }

    /// Has the threads close what they still peek at (a shutdown that ran out of time).
    pub fn abandon(&mut self) {
        for t in &self.threads {
            t.control.closing.store(true, Ordering::SeqCst);
            t.control.abandon.store(true, Ordering::SeqCst);
            wake(&t.wake);
        }
    }

    /// Whether every thread has ended its work. Read it before [`take`](Self::take): a thread
    /// says so only after passing on its last connection.
    pub fn idle(&self) -> bool {
        self.threads
            .iter()
            .all(|t| t.control.idle.load(Ordering::SeqCst))
    }

    /// Connections the threads are peeking at.
    pub fn pending(&self) -> usize {
        self.threads
            .iter()
            .map(|t| t.control.pending.load(Ordering::Relaxed))
            .sum()
    }

    /// The next connection a thread passed on, if any.
    pub fn take(&self) -> Option<Handoff> {
        self.routed.try_recv().ok()
    }

    /// Waits for the threads to end (after [`abandon`](Self::abandon) or once idle).
    pub fn join(&mut self) {
        for t in &mut self.threads {
            if let Some(thread) = t.thread.take() {
                if thread.join().is_err() {
                    error!("a dispatcher thread panicked");
                }
            }
        }
    }
}

impl Drop for Acceptors {
    /// A master that stops for any reason (an error included) stops its threads too, so that
    /// none keeps accepting on the listening sockets.
    fn drop(&mut self) {
        self.abandon();
        self.join();
    }
}

/// Wakes the ring that polls `fd`.
fn wake(fd: &OwnedFd) {
    if let Err(e) = sys::eventfd_wake(fd.as_fd()) {
        error!("waking a dispatcher thread: {e}");
    }
}

/// A dispatcher thread's state (its ring is made on the thread).
struct Thread {
    front: Front,
    control: Arc<Control>,
    wake: Arc<OwnedFd>,
    to_master: Sender<Handoff>,
    master_wake: Arc<OwnedFd>,
}

impl Thread {
    fn run(mut self, mut ring: Ring) {
        ring.poll(self.wake.as_fd(), libc::POLLIN as u32, Token::Wake.encode());
        let mut closed = false;
        let mut busy = false;
        loop {
            if self.control.closing.load(Ordering::SeqCst) && !closed {
                self.front.close(&mut ring);
                closed = true;
            }
            if self.control.abandon.load(Ordering::SeqCst) {
                let n = self.front.abandon(&mut ring);
                if n > 0 {
                    debug!("a dispatcher thread closed {n} connections still pending");
                }
            }
            let accepting = self.control.accepting.load(Ordering::SeqCst);
            self.front.set_accepting(&mut ring, accepting);
            if closed && self.front.idle() {
                self.control.idle.store(true, Ordering::SeqCst);
                wake(&self.master_wake);
                // Submits the closes still queued.
                let _ = ring.wait_for(0, Some(Duration::ZERO));
                return;
            }
            let timeout = self
                .front
                .next_deadline()
                .map(|at| at.saturating_duration_since(Instant::now()));
            let (want, timeout) = batch_wait(busy, timeout);
            if let Err(e) = ring.wait_for(want, timeout) {
                // The thread cannot go on: what it holds is closed (dropping the ring settles
                // the operations in flight), and the master's loop accepts on without it.
                error!("a dispatcher thread's ring failed: {e}; the thread ends");
                self.front.abandon(&mut ring);
                self.control.pending.store(0, Ordering::Relaxed);
                self.control.idle.store(true, Ordering::SeqCst);
                wake(&self.master_wake);
                return;
            }
            let mut round = 0;
            while let Some(c) = ring.next_completion() {
                round += 1;
                let Some(token) = Token::decode(c.token) else {
                    continue;
                };
                match (token, c.outcome) {
                    (Token::Accept(l), Outcome::Accepted { fd, more }) => {
                        self.front.on_accept(&mut ring, l, fd, more)
                    }
                    (Token::Conn(k), Outcome::Received { buf, result }) => {
                        self.front.on_peek(&mut ring, k as usize, buf, result)
                    }
                    (Token::Conn(k), Outcome::Polled(result)) => {
                        self.front.on_poll(&mut ring, k as usize, result)
                    }
                    (Token::Wake, _) => {
                        let _ = sys::eventfd_clear(self.wake.as_fd());
                        ring.poll(self.wake.as_fd(), libc::POLLIN as u32, Token::Wake.encode());
                    }
                    (Token::Housekeeping, Outcome::Closed(Err(e))) => {
                        debug!("close failed: {e}");
                    }
                    _ => {}
                }
            }
            busy = round >= 2;
            self.front.expire(&mut ring, Instant::now());
            if !self.front.routed.is_empty() {
                for h in self.front.routed.drain(..) {
                    // The master outlives its threads: the receiver is there.
                    let _ = self.to_master.send(h);
                }
                wake(&self.master_wake);
            }
            self.control
                .pending
                .store(self.front.pending(), Ordering::Relaxed);
        }
    }
}
