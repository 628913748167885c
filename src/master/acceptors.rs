//! `--threads N`: N - 1 dispatcher threads beside the master's own loop, each with a ring and
//! a [`Front`] of its own over the same listening sockets, so that accepting and peeking (most
//! of the master's kernel work) spread over cores. A thread hands each connection whose key it
//! has found to its worker over a channel of its own ([`Lanes`]) when the master's rules would
//! send it straight there; anything else (a worker being replaced, a bound reached, a worker
//! without such channels) goes to the master through a crossbeam channel, with an eventfd to
//! wake it, and the master's core routes it. The master keeps the one view of the workers and
//! publishes what the threads need of it ([`View`]).
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
use super::lanes::{Lanes, View};
use super::token::Token;
use super::{Error, RING_ENTRIES, batch_wait};
use crate::metrics::Metrics;
use crate::verdict::Examiner;

/// A thread's end of a new channel to slot `.0`'s worker, of generation `.1`.
type NewLane = (u32, u64, OwnedFd);

/// A worker that broke the protocol on a thread's channel: slot, the channels' generation, what
/// it did.
pub(super) type Violation = (u32, u64, String);

/// What the master asks of a dispatcher thread, and what it reports.
#[derive(Debug, Default)]
struct Control {
    accepting: AtomicBool,
    closing: AtomicBool,
    abandon: AtomicBool,
    /// Closed, nothing pending, every connection passed on or sent on the thread's own
    /// channels: nothing more reaches a worker from this thread (what a worker leaves
    /// unacknowledged may still come back, as from the master's own channel).
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
    /// New channels to workers, as `(slot, generation, the thread's end)`.
    lanes: Sender<NewLane>,
    /// The thread's unacknowledged connections per slot.
    unacked: Arc<[AtomicUsize]>,
}

/// The master's dispatcher threads.
#[derive(Debug)]
pub(super) struct Acceptors {
    threads: Vec<Handle>,
    /// Connections whose key the threads found.
    routed: Receiver<Handoff>,
    /// Workers that broke the protocol on a thread's channel.
    violations: Receiver<Violation>,
    violations_tx: Sender<Violation>,
    /// The last generation of channels given out.
    generation: u64,
    /// The master's eventfd, polled on its ring: a thread wrote to it.
    pub wake: Arc<OwnedFd>,
    /// The last accept decision passed on.
    accepting: bool,
    /// How each slot stands, as the threads read it.
    view: Arc<View>,
}

/// What a dispatcher thread needs to start.
pub(super) struct Setup<'a> {
    pub kind: BackendKind,
    pub listeners: &'a [Listener],
    pub examiners: &'a [Examiner],
    pub peek_timeout: Duration,
    pub max_peek: usize,
    pub metrics: &'a Arc<Metrics>,
    pub workers: u32,
    pub max_queue: usize,
}

impl Acceptors {
    /// Starts `count` dispatcher threads over `setup.listeners`' sockets.
    pub fn start(count: u32, setup: &Setup<'_>) -> Result<Acceptors, Error> {
        let wake = Arc::new(sys::eventfd().map_err(super::setup("cannot create an eventfd"))?);
        let (to_master, routed) = crossbeam_channel::unbounded();
        let (violations_tx, violations) = crossbeam_channel::unbounded();
        // Built first, so that an error below stops the threads already started (Drop).
        let mut acceptors = Acceptors {
            threads: Vec::with_capacity(count as usize),
            routed,
            violations,
            violations_tx,
            generation: 0,
            wake,
            accepting: false,
            view: Arc::new(View::new(setup.workers)),
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
            .without_pause_count()
            .sharing_listeners();
            let control = Arc::new(Control::default());
            let own_wake =
                Arc::new(sys::eventfd().map_err(super::setup("cannot create an eventfd"))?);
            let kind = setup.kind;
            let (lanes_tx, new_lanes) = crossbeam_channel::unbounded();
            let unacked: Arc<[AtomicUsize]> =
                (0..setup.workers).map(|_| AtomicUsize::new(0)).collect();
            let lanes = Lanes::new(
                n,
                Arc::clone(&acceptors.view),
                Arc::clone(setup.metrics),
                Arc::clone(&unacked),
                setup.max_queue,
            );
            let thread = Thread {
                front,
                lanes,
                new_lanes,
                violations: acceptors.violations_tx.clone(),
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
                lanes: lanes_tx,
                unacked,
            });
        }
        debug!("{count} dispatcher threads beside the master's loop");
        Ok(acceptors)
    }

    /// The number of dispatcher threads.
    pub fn count(&self) -> usize {
        self.threads.len()
    }

    /// Publishes slot `w`'s standing for the threads' routing (see [`View::publish`]).
    pub fn publish(&self, w: u32, standing: Option<bool>) {
        self.view.publish(w, standing);
    }

    /// Gives each thread its end of a new channel to slot `w`'s worker, one per thread in
    /// order; returns the channels' generation, which a [`Violation`] names.
    pub fn give_lanes(&mut self, w: u32, ends: Vec<OwnedFd>) -> u64 {
        self.generation += 1;
        for (t, end) in self.threads.iter().zip(ends) {
            // A thread that has ended drops the end: its worker sees that channel's end.
            let _ = t.lanes.send((w, self.generation, end));
            wake(&t.wake);
        }
        self.generation
    }

    /// The next worker reported for breaking the protocol on a thread's channel, if any.
    pub fn take_violation(&self) -> Option<Violation> {
        self.violations.try_recv().ok()
    }

    /// Connections the threads sent to slot `w`'s worker that it has not acknowledged yet.
    pub fn unacked(&self, w: u32) -> usize {
        self.threads
            .iter()
            .filter_map(|t| t.unacked.get(w as usize))
            .map(|n| n.load(Ordering::Relaxed))
            .sum()
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

    /// Whether every thread has routed everything it accepted. Read it before
    /// [`take`](Self::take): a thread says so only after passing on its last connection.
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
    lanes: Lanes,
    new_lanes: Receiver<NewLane>,
    violations: Sender<Violation>,
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
            while let Ok((w, generation, end)) = self.new_lanes.try_recv() {
                self.lanes.add(&mut ring, w, generation, end);
            }
            if self.control.closing.load(Ordering::SeqCst) && !closed {
                self.front.close(&mut ring);
                closed = true;
            }
            if self.control.abandon.load(Ordering::SeqCst) {
                let n = self.front.abandon(&mut ring) + self.lanes.abandon(&mut ring);
                if n > 0 {
                    debug!("a dispatcher thread closed {n} connections still pending");
                }
            }
            let accepting = self.control.accepting.load(Ordering::SeqCst);
            self.front.set_accepting(&mut ring, accepting);
            if closed && self.front.idle() && self.lanes.all_sent() {
                self.pass_back();
                if !self.control.idle.swap(true, Ordering::SeqCst) {
                    wake(&self.master_wake);
                }
                // Its channels close once the workers have acknowledged what they carry: a
                // worker's connections end when all its channels have.
                if self.lanes.idle() {
                    return self.finish(ring);
                }
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
                self.lanes.abandon(&mut ring);
                self.control.pending.store(0, Ordering::Relaxed);
                return self.finish(ring);
            }
            let mut round = 0;
            while let Some(c) = ring.next_completion() {
                round += 1;
                let Some(token) = Token::decode(c.token) else {
                    continue;
                };
                match (token, c.outcome) {
                    (Token::Accept(l), Outcome::Accepted { fd, more }) => {
                        self.front.on_accept(&mut ring, l, c.op, fd, more)
                    }
                    (Token::Conn(k), Outcome::Received { buf, result }) => {
                        self.front.on_peek(&mut ring, k as usize, buf, result)
                    }
                    (Token::Conn(k), Outcome::Polled(result)) => {
                        self.front.on_poll(&mut ring, k as usize, result)
                    }
                    (Token::ChannelSend(k), Outcome::Sent { msg, result }) => {
                        self.lanes.on_sent(&mut ring, k, msg, result)
                    }
                    (Token::ChannelRecv(k), Outcome::ReceivedMsg { msg, result }) => {
                        self.lanes.on_recv(&mut ring, k, msg, result)
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
            busy = self.front.pace(&mut ring, round);
            self.front.expire(&mut ring, Instant::now());
            // Each connection goes on this thread's own channel to its worker if the
            // master's rules would send it there now; the rest to the master.
            for h in self.front.routed.drain(..) {
                if let Err(h) = self.lanes.offer(h) {
                    self.lanes.back.push(h);
                }
            }
            self.lanes.flush(&mut ring);
            self.pass_back();
            self.control
                .pending
                .store(self.front.pending(), Ordering::Relaxed);
        }
    }

    /// Passes the connections for the master's core to it.
    fn pass_back(&mut self) {
        if self.lanes.back.is_empty() && self.lanes.violations.is_empty() {
            return;
        }
        // The master outlives its threads: the receivers are there.
        for h in self.lanes.back.drain(..) {
            let _ = self.to_master.send(h);
        }
        for v in self.lanes.violations.drain(..) {
            let _ = self.violations.send(v);
        }
        wake(&self.master_wake);
    }

    /// Ends the thread: what is left for the master is passed on, then the thread says it is
    /// idle. The ring goes first (its operations in flight hold the channels open), then the
    /// channels, so each worker sees the end of its channel from this thread.
    fn finish(mut self, mut ring: Ring) {
        self.pass_back();
        self.control.idle.store(true, Ordering::SeqCst);
        wake(&self.master_wake);
        // Nothing on the way to the master is counted as pending any more.
        self.control.pending.store(0, Ordering::Relaxed);
        // Submits the closes still queued.
        let _ = ring.wait_for(0, Some(Duration::ZERO));
        drop(ring);
        drop(self);
    }
}
