//! The master: the io_uring event loop that accepts connections, peeks at them until their key
//! is known, routes them to a worker and hands the fds over, and looks after the workers.
//!
//! What to do with a connection given its peeked bytes is decided in [`crate::decide`]; this
//! module only drives the kernel: which operation to submit next, and what a completion means.

mod acceptors;
mod attach;
mod conns;
mod front;
mod inherit;
mod listen;
mod notify;
mod pool;
mod respawn;
pub(crate) mod spawn;
mod token;
mod upgrade;

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{debug, error, info, warn};
use stickyd_ring::{Completion, InMsg, OutMsg, Outcome, Ring, sys};
use stickyd_worker::wire::{self, ConnRecord, Message, Welcome};

use crate::config::{Backend, Config};
use crate::metrics::{self, Metrics};
use crate::route;
use crate::verdict::Examiner;

use crossbeam_channel::{SendError, Sender};

use crate::threads::Delivery;
use acceptors::Acceptors;
use attach::AttachPoint;
use front::{Front, Listener};
use pool::{Drain, Handoff, Kind, Phase, Sending, Slot};
use token::Token;

/// Submission queue entries of the master's ring.
const RING_ENTRIES: u32 = 1024;
/// How long a listener waits before its accept is armed again after an error (`EMFILE`, ...).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// How long after the grace period's SIGTERM the workers left get SIGKILL.
const KILL_AFTER: Duration = Duration::from_secs(2);
/// How long a channel waits before it sends again after the kernel ran short (`ENOBUFS`,
/// `ETOOMANYREFS`, ...).
const SEND_BACKOFF: Duration = Duration::from_millis(20);
/// Under load (the last round handled more than one completion), a round waits for this many
/// completions, or [`LINGER`]: measured under W1 (`benches/e2e/run.sh`), 0.25 `io_uring_enter`
/// calls per connection instead of 0.90, with the same p99.
const BATCH: usize = 8;
/// The longest a round waits for its batch once something has completed.
const LINGER: Duration = Duration::from_micros(200);
/// How many emptied `CONNS` batches are kept for reuse.
const BATCH_POOL: usize = 64;

/// Why the master could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setup step failed.
    #[error("{what}: {source}")]
    Setup {
        /// The step.
        what: String,
        /// The cause.
        source: io::Error,
    },
    /// The event loop's ring failed.
    #[error("io_uring: {0}")]
    Ring(#[source] io::Error),
}

fn setup(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Setup {
        what: what.into(),
        source,
    }
}

/// The shutdown's progress.
#[derive(Debug)]
struct Shutdown {
    /// When the workers left get SIGTERM. Set once nothing more can be routed (every accepted
    /// connection has been handed off and the workers told to drain): the grace period counts
    /// from then.
    term_at: Option<Instant>,
    /// If routing has not finished by then (the peek deadline and the grace period after the
    /// signal), what is left is closed and the workers are signalled: a shutdown always ends.
    backstop: Instant,
    /// When the workers left get SIGKILL.
    kill_at: Option<Instant>,
}

/// The master's state.
#[derive(Debug)]
struct Master {
    config: Config,
    metrics: Arc<Metrics>,
    ring: Ring,
    /// The listeners and the connections being peeked at.
    front: Front,
    /// The other dispatcher threads (`--threads`), if any.
    acceptors: Option<Acceptors>,
    slots: Vec<Slot>,
    /// Live worker ids, ascending (recomputed when a slot changes phase).
    live: Vec<u32>,
    /// Connections routed while no worker was live.
    parked: Vec<Handoff>,
    signals: OwnedFd,
    next_seq: u64,
    shutdown: Option<Shutdown>,
    /// Emptied `CONNS` batches, reused for the next ones.
    batches: Vec<Vec<Handoff>>,
    /// The records of the `CONNS` message being encoded.
    records: Vec<ConnRecord>,
    /// The workers are threads of this process.
    in_process: bool,
    /// Where workers stickyd did not start attach (`--attach`).
    attach: Option<AttachPoint>,
    /// Readiness (systemd, a predecessor) and the zero-downtime upgrade.
    upgrade: upgrade::Upgrade,
}

/// The signals the master reads from its signalfd: shutdown, and the upgrade (SIGUSR2).
pub(crate) const MASTER_SIGNALS: [i32; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGUSR2];

/// How often a master whose thread workers are all at `--max-queue` looks again: their threads
/// take connections without telling the ring.
const THREAD_QUEUE_RECHECK: Duration = Duration::from_millis(10);

/// Runs the dispatcher until a requested shutdown completes. With `threads`, the workers are
/// the threads reading those queues, not processes.
pub fn run(config: Config, threads: Option<Vec<Sender<Delivery>>>) -> Result<(), Error> {
    let mut master = Master::start(config, threads)?;
    master.run()
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Master {
    fn start(mut config: Config, threads: Option<Vec<Sender<Delivery>>>) -> Result<Master, Error> {
        // Sockets passed by systemd or by a predecessor, before inherited fds are marked.
        let mut inherited = inherit::take()?;
        // Fds inherited from whatever started us must not reach the workers.
        if let Err(e) = sys::close_on_exec_from(3) {
            warn!("cannot mark inherited fds close-on-exec: {e}");
        }
        match sys::raise_nofile_limit() {
            Ok(limit) => debug!("file descriptor limit raised to {limit}"),
            Err(e) => warn!("cannot raise the file descriptor limit: {e}"),
        }
        let signals =
            sys::signalfd(&MASTER_SIGNALS).map_err(setup("cannot set up the signal fd"))?;
        let ring = match config.backend {
            Backend::Uring => Ring::uring(RING_ENTRIES).map_err(Error::Ring)?,
            Backend::Epoll => Ring::epoll().map_err(setup("cannot set up epoll"))?,
            Backend::Auto => match Ring::uring(RING_ENTRIES) {
                Ok(ring) => ring,
                Err(e) => {
                    warn!("io_uring is not available ({e}): using the epoll backend");
                    Ring::epoll().map_err(setup("cannot set up epoll"))?
                }
            },
        };
        debug!("event loop: {}", ring.kind());

        let sources = listen::assign(&mut config.listeners, &mut inherited);
        // One examiner per listener: each may have rules of its own.
        let examiners: Vec<Examiner> = (0..config.listeners.len())
            .map(|i| {
                Examiner::new(
                    config.plan_of(i).clone(),
                    config.proxy_protocol_of(i),
                    config.max_peek,
                    config.on_timeout,
                )
            })
            .collect();
        let mut listeners = Vec::with_capacity(config.listeners.len());
        for ((spec, examiner), source) in config.listeners.iter().zip(&examiners).zip(sources) {
            // When a connection's first bytes decide its worker, have the kernel accept it
            // only once they are there: otherwise half the peeks right after accept find
            // nothing yet and cost a poll and a second peek. Bounded by the peek timeout.
            let defer = (!examiner.routes_at_accept())
                .then(|| u32::try_from(config.peek_timeout.as_secs().max(1)).unwrap_or(u32::MAX));
            let (socket, addr) = listen::open(spec, source, defer)?;
            eprintln!("stickyd: listening on {addr} ({})", spec.name);
            listeners.push(Listener::new(spec.name.clone(), addr, socket));
        }
        let names: Vec<String> = config.listeners.iter().map(|l| l.name.clone()).collect();
        let metrics = Arc::new(Metrics::new(&names, config.workers));
        let mut metrics_copy = None;
        if let Some(addr) = config.metrics {
            let socket = listen::metrics_socket(addr, inherited.metrics.take())?;
            // Kept to pass to a successor.
            metrics_copy = socket.try_clone().ok();
            let local = socket
                .local_addr()
                .map_err(setup(format!("cannot serve metrics on {addr}")))?;
            metrics::serve(socket, Arc::clone(&metrics))
                .map_err(setup("cannot start the metrics thread"))?;
            eprintln!("stickyd: metrics on {local}");
        }
        info!(
            "mapping fingerprint {} ({} workers, ahash 0.8.12, {} hash path)",
            route::fingerprint(config.workers),
            config.workers,
            route::hash_path()
        );

        let attach = AttachPoint::open(&config, inherited.attach.take())?;
        let acceptors = if config.threads > 1 {
            let setup = acceptors::Setup {
                kind: ring.kind(),
                listeners: &listeners,
                examiners: &examiners,
                peek_timeout: config.peek_timeout,
                max_peek: config.max_peek,
                metrics: &metrics,
            };
            Some(Acceptors::start(config.threads - 1, &setup)?)
        } else {
            None
        };
        let front = Front::new(
            listeners,
            examiners,
            config.peek_timeout,
            config.max_peek,
            Arc::clone(&metrics),
        );
        let mut master = Master {
            metrics,
            ring,
            front,
            acceptors,
            slots: Vec::with_capacity(config.workers as usize),
            live: Vec::with_capacity(config.workers as usize),
            parked: Vec::new(),
            signals,
            next_seq: 0,
            shutdown: None,
            batches: Vec::new(),
            records: Vec::with_capacity(wire::MAX_CONNS),
            in_process: false,
            attach,
            upgrade: upgrade::Upgrade::new(&mut inherited, config.workers, metrics_copy),
            config,
        };
        match threads {
            Some(queues) => {
                master.in_process = true;
                for (id, queue) in (0..).zip(queues) {
                    master.slots.push(Slot::thread(id, queue));
                    // Live from the start: ready as if it had said HELLO.
                    master.note_hello(id);
                }
                master.update_live();
            }
            None if !master.spawns_workers() => {
                for id in 0..master.config.workers {
                    master.slots.push(Slot::empty(id, Kind::Attached));
                    // The workers attach when they will (after an upgrade, only once the
                    // predecessor has drained them): the master is ready once it can take them.
                    master.note_hello(id);
                }
                master.hold_for_reattach();
            }
            None => {
                for id in 0..master.config.workers {
                    let worker =
                        spawn::spawn(id, master.config.worker_command.as_ref()).map_err(setup(
                            format!("cannot start worker {id} ({})", master.worker_label()),
                        ))?;
                    debug!("worker {id} started (pid {})", worker.pid);
                    let mut slot = Slot::new(id, worker, 0);
                    arm_exit(&mut master.ring, &slot);
                    arm_recv(&mut master.ring, &mut slot);
                    master.slots.push(slot);
                }
            }
        }
        master.ring.poll(
            master.signals.as_fd(),
            libc::POLLIN as u32,
            Token::Signal.encode(),
        );
        master.arm_wake();
        info!(
            "started {} workers ({}), keys: {}",
            master.config.workers,
            master.worker_label(),
            master.key_label()
        );
        Ok(master)
    }

    /// Whether the master starts (and restarts) worker processes: not for thread workers, nor
    /// with `--attach` and no worker command.
    fn spawns_workers(&self) -> bool {
        let attached_only = self.attach.is_some() && self.config.worker_command.is_none();
        !self.in_process && !attached_only
    }

    fn worker_label(&self) -> String {
        if self.in_process {
            return "in-process threads".to_owned();
        }
        if !self.spawns_workers() {
            return "attached workers only".to_owned();
        }
        match &self.config.worker_command {
            Some(c) => format!("`{}`", c.program.to_string_lossy()),
            None => "built-in hello worker".to_owned(),
        }
    }

    fn key_label(&self) -> String {
        let label = |plan: &crate::decide::KeyPlan| {
            let rules: Vec<String> = plan.rules().iter().map(|r| r.to_string()).collect();
            format!("{}, fallback {}", rules.join(", "), plan.fallback())
        };
        if self.config.listeners.iter().all(|l| l.plan.is_none()) {
            return label(&self.config.plan);
        }
        let each: Vec<String> = (0..self.config.listeners.len())
            .map(|i| {
                let name = &self.config.listeners[i].name;
                format!("{name}: {}", label(self.config.plan_of(i)))
            })
            .collect();
        each.join("; ")
    }

    fn run(&mut self) -> Result<(), Error> {
        // Thread workers are live from the start: no completion will say so.
        self.update_accepting();
        let mut busy = false;
        loop {
            self.flush();
            if self.finished() {
                break;
            }
            let timeout = self
                .next_timer()
                .map(|at| at.saturating_duration_since(Instant::now()));
            let (want, timeout) = batch_wait(busy, timeout);
            self.ring.wait_for(want, timeout).map_err(Error::Ring)?;
            let mut round = 0;
            while let Some(c) = self.ring.next_completion() {
                self.complete(c);
                round += 1;
            }
            self.route_new();
            busy = round >= 2;
            // Once per round of completions, not once per completion: the timers, then the
            // thread workers' queues and the decision about accepting (in `fire_timers`).
            self.fire_timers(Instant::now());
            for slot in &self.slots {
                self.metrics.set_unacked(slot.id, slot.held as u64);
            }
            let threads = self.acceptors.as_ref().map_or(0, Acceptors::pending);
            self.metrics
                .set_pending((self.front.pending() + threads) as u64);
        }
        let threads = self.acceptors.as_ref().map_or(0, Acceptors::pending);
        if let Some(acceptors) = &mut self.acceptors {
            acceptors.abandon();
            acceptors.join();
        }
        let stranded = self.front.pending() + threads + self.parked.len();
        if stranded > 0 {
            warn!("{stranded} connections were still waiting for a worker at exit: closed");
        }
        self.remove_attach_path();
        info!(
            "stopped: {} connections accepted, {} dispatched",
            self.metrics.accepted_total(),
            self.metrics.dispatched_total()
        );
        Ok(())
    }

    /// Shutdown is complete when every worker has exited.
    fn finished(&self) -> bool {
        self.shutdown.is_some() && self.slots.iter().all(Slot::exited)
    }

    fn complete(&mut self, c: Completion) {
        let Some(token) = Token::decode(c.token) else {
            error!("completion with an unknown token {:#x}", c.token);
            return;
        };
        match (token, c.outcome) {
            (Token::Accept(l), Outcome::Accepted { fd, more }) => {
                self.front.on_accept(&mut self.ring, l, fd, more)
            }
            (Token::Conn(k), Outcome::Received { buf, result }) => {
                self.front.on_peek(&mut self.ring, k as usize, buf, result)
            }
            (Token::Conn(k), Outcome::Polled(result)) => {
                self.front.on_poll(&mut self.ring, k as usize, result)
            }
            (Token::ChannelRecv(w), Outcome::ReceivedMsg { msg, result }) => {
                self.on_channel_recv(w, msg, result)
            }
            (Token::ChannelSend(w), Outcome::Sent { msg, result }) => {
                self.on_channel_sent(w, msg, result)
            }
            (Token::Exit(w), Outcome::Polled(result)) => self.on_exit(w, result),
            (Token::Signal, Outcome::Polled(_)) => self.on_signal(),
            (Token::AttachAccept, Outcome::Accepted { fd, more }) => {
                self.on_attach_accept(fd, more)
            }
            (Token::AttachRecv(k), Outcome::ReceivedMsg { msg, result }) => {
                self.on_attach_recv(k as usize, msg, result)
            }
            (Token::SuccessorReady, Outcome::Polled(r)) => self.on_successor_ready(r),
            (Token::SuccessorExit, Outcome::Polled(r)) => self.on_successor_exit(r),
            (Token::Wake, _) => {
                if let Some(acceptors) = &self.acceptors {
                    if let Err(e) = sys::eventfd_clear(acceptors.wake.as_fd()) {
                        debug!("{e}");
                    }
                }
                self.arm_wake();
            }
            (Token::Housekeeping, Outcome::Closed(Err(e))) => debug!("close failed: {e}"),
            (Token::Housekeeping, _) => {}
            (token, outcome) => error!("unexpected completion {outcome:?} for {token:?}"),
        }
    }

    // ---- accepting -------------------------------------------------------------------------

    /// Decides whether the listeners accept: only while some worker can take a connection, so
    /// that nothing is accepted that cannot go somewhere.
    fn update_accepting(&mut self) {
        self.tend_attach(None);
        let accepting = self.shutdown.is_none()
            && self.room()
            && self.upgrade.may_accept()
            && !self.held_for_reattach(None);
        self.front.set_accepting(&mut self.ring, accepting);
        if let Some(acceptors) = &mut self.acceptors {
            acceptors.set_accepting(accepting);
        }
    }

    // ---- routing and hand-off --------------------------------------------------------------

    /// Routes the connections whose key the front (or a dispatcher thread) has found,
    /// numbering them.
    fn route_new(&mut self) {
        let mut routed = std::mem::take(&mut self.front.routed);
        for h in routed.drain(..) {
            self.route_numbered(h);
        }
        // The vector keeps its capacity for the next round.
        self.front.routed = routed;
        while let Some(h) = self.acceptors.as_ref().and_then(Acceptors::take) {
            self.route_numbered(h);
        }
    }

    fn route_numbered(&mut self, mut h: Handoff) {
        self.next_seq += 1;
        h.rec.seq = self.next_seq;
        self.route(h);
    }

    /// Polls the eventfd the dispatcher threads wake the master with.
    fn arm_wake(&mut self) {
        if let Some(acceptors) = &self.acceptors {
            self.ring.poll(
                acceptors.wake.as_fd(),
                libc::POLLIN as u32,
                Token::Wake.encode(),
            );
        }
    }

    /// Puts a connection in the outbox of the live worker its key ranks highest for; if that
    /// worker holds `--max-queue` unacknowledged connections, of the next one by rank that has
    /// room (a spill). With no room anywhere it waits in the master, and accepting pauses.
    fn route(&mut self, h: Handoff) {
        let exclude = h.exclude;
        let hash = h.rec.key_hash;
        let max_queue = self.max_queue();
        let slots = &self.slots;
        let live = || self.live.iter().copied().filter(|&w| Some(w) != exclude);
        let chosen = match route::pick(hash, live()) {
            Some(w) if slots[w as usize].held < max_queue => Some(w),
            Some(_) => {
                let spill =
                    route::pick(hash, live().filter(|&w| slots[w as usize].held < max_queue));
                if spill.is_some() {
                    self.metrics.spill();
                }
                spill
            }
            None => None,
        };
        let starting = self.slots.iter().any(|s| s.phase == Phase::Starting);
        match chosen {
            Some(w) => {
                let slot = &mut self.slots[w as usize];
                slot.held += 1;
                slot.outbox.push_back(h);
            }
            // The worker that returned it is the only one left: nowhere else to go.
            None if exclude.is_some() && self.live.iter().all(|&w| Some(w) == exclude) => {
                warn!(
                    "the connection from {} was returned by the only live worker: closed",
                    h.rec.peer
                );
                self.drop_handoff(h);
            }
            // Every live worker is at its bound, or none is live yet: wait for room.
            None if self.shutdown.is_none() || !self.live.is_empty() || starting => {
                self.parked.push(h);
            }
            None => {
                warn!(
                    "no worker can take the connection from {}: closed",
                    h.rec.peer
                );
                self.drop_handoff(h);
            }
        }
    }

    /// Closes a connection the master gave up on after accepting it; counted.
    fn drop_handoff(&mut self, h: Handoff) {
        self.metrics.dropped(1);
        self.ring.close(h.fd, Token::Housekeeping.encode());
    }

    /// The bound on a worker's unacknowledged connections. A shutdown has a finite set of
    /// connections left to route: no bound then, so that none waits behind a stalled worker and
    /// the drain can begin.
    fn max_queue(&self) -> usize {
        if self.shutdown.is_some() {
            usize::MAX
        } else {
            self.config.max_queue
        }
    }

    /// Whether some live worker can take one more connection.
    fn room(&self) -> bool {
        let max_queue = self.max_queue();
        self.live
            .iter()
            .any(|&w| self.slots[w as usize].held < max_queue)
    }

    /// Routes the connections that waited for room or for a live worker, if there is any now.
    fn unpark(&mut self) {
        if self.parked.is_empty() {
            return;
        }
        if !self.room() {
            return;
        }
        for h in std::mem::take(&mut self.parked) {
            self.route(h);
        }
    }

    /// Starts a send on every idle channel that has something to say.
    fn flush(&mut self) {
        // Nothing more can reach a worker once no accept is armed, no connection is being
        // peeked at and none waits for a live worker: only then may DRAIN go out.
        // A dispatcher thread says it is idle only after passing on its last connection:
        // read that first, then take what it passed.
        let threads_idle = self.acceptors.as_ref().is_none_or(Acceptors::idle);
        self.route_new();
        let routing_done = threads_idle && self.front.idle() && self.parked.is_empty();
        let mut drained = self.feed_threads(routing_done);
        let now = Instant::now();
        for slot in &mut self.slots {
            if slot.sending.is_some() || slot.eof || slot.retry_at.is_some_and(|at| at > now) {
                continue;
            }
            slot.retry_at = None;
            let Some(channel) = &slot.channel else {
                continue;
            };
            // The slot's message is here whenever no send is in flight: reused, never
            // reallocated, so a hand-off costs no allocation.
            let Some(mut msg) = slot.msg.take() else {
                continue;
            };
            let data = msg.data_mut();
            data.clear();
            let sending = if let Some(reason) = slot.refusal.take() {
                wire::encode_refused(&reason, data);
                Sending::Refused
            } else if slot.welcome_due {
                slot.welcome_due = false;
                let welcome = Welcome {
                    worker_id: slot.id,
                    workers: self.config.workers,
                    listeners: self
                        .front
                        .listeners
                        .iter()
                        .map(|l| l.name.clone())
                        .collect(),
                };
                wire::encode_welcome(&welcome, data);
                Sending::Welcome
            } else if slot.phase == Phase::Live && !slot.outbox.is_empty() {
                let n = slot.outbox.len().min(wire::MAX_CONNS);
                let mut batch = self.batches.pop().unwrap_or_default();
                batch.extend(slot.outbox.drain(..n));
                self.records.clear();
                self.records.extend(batch.iter().map(|h| h.rec));
                wire::encode_conns(&self.records, data);
                msg.set_fds(batch.iter().map(|h| h.fd.as_fd()));
                self.ring
                    .send_msg(channel.as_fd(), msg, Token::ChannelSend(slot.id).encode());
                slot.sending = Some(Sending::Conns(batch));
                continue;
            } else if slot.drain == Drain::Wanted
                && routing_done
                && slot.outbox.is_empty()
                && slot.phase == Phase::Live
            {
                slot.drain = Drain::Sent;
                drained = true;
                wire::encode_drain(data);
                Sending::Drain
            } else {
                slot.msg = Some(msg);
                continue;
            };
            msg.set_fds(std::iter::empty());
            self.ring
                .send_msg(channel.as_fd(), msg, Token::ChannelSend(slot.id).encode());
            slot.sending = Some(sending);
        }
        if drained {
            // A drained worker takes no more connections.
            self.update_live();
        }
        if let Some(shutdown) = &mut self.shutdown {
            if routing_done && shutdown.term_at.is_none() {
                shutdown.term_at = Some(now + self.config.grace);
            }
        }
    }

    /// Moves the connections routed to thread workers into their queues; drains (closes) the
    /// queues of thread workers due to drain. Returns whether one was drained.
    fn feed_threads(&mut self, routing_done: bool) -> bool {
        let mut drained = false;
        // A thread found gone sends its connections back to routing, possibly to a slot fed
        // earlier in this pass: go round again until no thread is lost.
        while self.feed_threads_once(routing_done, &mut drained) {}
        drained
    }

    /// One pass of [`feed_threads`](Self::feed_threads); returns whether a thread was lost.
    fn feed_threads_once(&mut self, routing_done: bool, drained: &mut bool) -> bool {
        let mut lost_any = false;
        for w in 0..self.slots.len() {
            let slot = &mut self.slots[w];
            let Some(queue) = &slot.thread else {
                continue;
            };
            let mut lost = None;
            let now = now_ns();
            while let Some(h) = slot.outbox.pop_front() {
                let (rec, exclude) = (h.rec, h.exclude);
                match queue.send((h.rec, h.fd)) {
                    Ok(()) => {
                        self.metrics.dispatched(slot.id, rec.listener);
                        let waited = now.saturating_sub(rec.accepted_ns);
                        self.metrics.handoff(Duration::from_nanos(waited));
                    }
                    // The thread has gone (its worker was dropped): nothing reached it.
                    Err(SendError((rec, fd))) => {
                        lost = Some(Handoff { fd, rec, exclude });
                        break;
                    }
                }
            }
            slot.held = queue.len();
            if let Some(first) = lost {
                lost_any = true;
                slot.thread = None;
                let rest: Vec<Handoff> = slot.outbox.drain(..).collect();
                slot.held = 0;
                error!("worker {w} (a thread) stopped taking connections: routing them elsewhere");
                self.gone(w as u32, "its thread ended");
                for h in std::iter::once(first).chain(rest) {
                    self.route(h);
                }
            } else if slot.drain == Drain::Wanted && routing_done && slot.outbox.is_empty() {
                // Dropping the sender ends the thread's `incoming()` after what is queued.
                slot.thread = None;
                slot.drain = Drain::Sent;
                *drained = true;
                debug!("worker {w} (a thread) drained");
            }
        }
        lost_any
    }

    /// Thread workers take connections from their queues without the ring hearing of it:
    /// their bound counts what is still queued.
    fn measure_thread_queues(&mut self) {
        for slot in &mut self.slots {
            if let Some(queue) = &slot.thread {
                slot.held = slot.outbox.len() + queue.len();
            }
        }
    }

    fn on_channel_sent(&mut self, w: u32, msg: OutMsg, result: io::Result<usize>) {
        let slot = &mut self.slots[w as usize];
        slot.msg = Some(msg);
        let sending = slot.sending.take();
        let error = match result {
            Ok(_) => None,
            // Delivered: the worker has already acknowledged it.
            Err(_) if matches!(sending, Some(Sending::Acked)) => None,
            Err(e) => Some(e),
        };
        match (sending, error) {
            (Some(Sending::Conns(batch)), None) => slot.unacked.push_back(batch),
            (Some(Sending::Drain), None) => {
                if let Some(channel) = &slot.channel {
                    if let Err(e) = sys::shutdown_write(channel.as_fd()) {
                        debug!("worker {w}: shutting the channel's sending side failed: {e}");
                    }
                }
                debug!("worker {w}: drain sent");
            }
            (Some(Sending::Refused), _) => {
                // The worker reads REFUSED, then end of file, and exits; our receive sees its
                // end and retires the slot.
                if let Some(channel) = &slot.channel {
                    let _ = sys::shutdown_write(channel.as_fd());
                }
                slot.kill_at = Some(Instant::now() + KILL_AFTER);
                self.gone(w, "refused");
            }
            (Some(Sending::Welcome | Sending::Acked) | None, None) => {}
            (sending, Some(e)) => {
                // Nothing of a failed send reached the worker: put it back.
                match sending {
                    Some(Sending::Conns(batch)) => {
                        for h in batch.into_iter().rev() {
                            slot.outbox.push_front(h);
                        }
                    }
                    Some(Sending::Welcome) => slot.welcome_due = true,
                    Some(Sending::Drain) => slot.drain = Drain::Wanted,
                    _ => {}
                }
                let transient = matches!(
                    e.raw_os_error(),
                    Some(libc::ENOBUFS | libc::ENOMEM | libc::ETOOMANYREFS | libc::EAGAIN)
                );
                if transient {
                    debug!("worker {w}: channel send failed ({e}): retrying");
                    self.metrics.send_retry();
                    slot.retry_at = Some(Instant::now() + SEND_BACKOFF);
                } else {
                    // The channel is broken: make sure the worker is gone, so that its channel
                    // ends and what it holds unacknowledged goes elsewhere.
                    end_worker(slot, libc::SIGKILL);
                    self.gone(w, &format!("channel send failed: {e}"));
                }
            }
        }
        self.retire_if_done(w);
    }

    fn on_channel_recv(&mut self, w: u32, mut msg: InMsg, result: io::Result<usize>) {
        match result {
            Ok(0) => {
                let slot = &mut self.slots[w as usize];
                slot.eof = true;
                if let (Some(pid), None) = (slot.pid, &self.shutdown) {
                    // A worker without its channel is of no use: end it, so that its slot
                    // gets a new one.
                    debug!("worker {w} closed its channel but runs on: SIGTERM");
                    let _ = sys::kill(pid, libc::SIGTERM);
                    slot.kill_at = Some(Instant::now() + KILL_AFTER);
                }
                self.gone(w, "closed its channel");
            }
            Ok(_) if msg.truncated() => self.violation(w, "sent an oversized message"),
            Ok(_) => match wire::decode(msg.data()) {
                Ok(Message::Hello(hello)) => self.on_hello(w, hello),
                Ok(Message::Ack(seqs)) => self.on_ack(w, seqs),
                Ok(other) => self.violation(w, &format!("sent a master's message: {other:?}")),
                Err(e) => self.violation(w, &format!("sent a malformed message: {e}")),
            },
            // The worker has gone; what it sent before is still queued: read to the end.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNRESET | libc::EPIPE)) => {}
            Err(e) => {
                // What it acknowledged may still be queued unread: never dispatch its
                // connections again, make sure it is gone.
                self.violation(w, &format!("has a broken channel ({e})"));
                self.slots[w as usize].eof = true;
            }
        }
        let slot = &mut self.slots[w as usize];
        msg.reset();
        slot.inbox = Some(msg);
        if !slot.eof {
            arm_recv(&mut self.ring, slot);
        }
        self.retire_if_done(w);
    }

    fn on_hello(&mut self, w: u32, hello: wire::Hello) {
        let slot = &mut self.slots[w as usize];
        match slot.phase {
            Phase::Starting => {}
            Phase::Live => return self.violation(w, "said HELLO twice"),
            // Exited (its pidfd came first) or refused meanwhile: nothing to welcome.
            Phase::Gone => return,
        }
        if hello.worker_id != w {
            warn!(
                "worker {w} (pid {}) says it is worker {}: refused",
                hello.pid, hello.worker_id
            );
            slot.refusal = Some(format!(
                "worker id {} does not match the slot {w} (STICKYD_WORKER_ID)",
                hello.worker_id
            ));
            slot.phase = Phase::Gone;
            return;
        }
        slot.phase = Phase::Live;
        slot.welcome_due = true;
        if self.shutdown.is_some() {
            slot.drain = Drain::Wanted;
        }
        info!("worker {w} ready (pid {})", hello.pid);
        self.update_live();
        self.note_hello(w);
    }

    fn on_ack(&mut self, w: u32, seqs: wire::Seqs<'_>) {
        let slot = &mut self.slots[w as usize];
        // ACKs answer CONNS messages in order. The ACK of the message still being sent can
        // arrive before the send's own completion.
        let batch = match slot.unacked.pop_front() {
            Some(batch) => batch,
            None => match slot.sending.take() {
                Some(Sending::Conns(batch)) => {
                    slot.sending = Some(Sending::Acked);
                    batch
                }
                other => {
                    slot.sending = other;
                    return self.violation(w, "acknowledged a message never sent");
                }
            },
        };
        if seqs.iter().any(|s| !batch.iter().any(|h| h.rec.seq == s)) {
            // What this worker holds is unknown now: none of it may go to another worker.
            self.violation(w, "acknowledged a connection it was not sent");
            self.slots[w as usize].held -= batch.len();
            for h in batch {
                self.drop_handoff(h);
            }
            return;
        }
        self.slots[w as usize].held -= batch.len();
        let now = now_ns();
        let mut returned = 0u64;
        let mut batch = batch;
        for mut h in batch.drain(..) {
            if seqs.iter().any(|s| s == h.rec.seq) {
                // The worker has its own copy now.
                self.metrics.dispatched(w, h.rec.listener);
                let waited = now.saturating_sub(h.rec.accepted_ns);
                self.metrics.handoff(Duration::from_nanos(waited));
                self.ring.close(h.fd, Token::Housekeeping.encode());
            } else {
                returned += 1;
                h.exclude = Some(w);
                self.route(h);
            }
        }
        if self.batches.len() < BATCH_POOL {
            self.batches.push(batch);
        }
        if returned > 0 {
            self.metrics.returned(returned);
            warn!("worker {w} returned {returned} connections (its fd limit?): routing them again");
        }
        self.unpark();
    }

    /// A worker broke the protocol: it gets nothing more, and is killed so that its channel
    /// ends and what it left unacknowledged goes elsewhere.
    fn violation(&mut self, w: u32, what: &str) {
        let slot = &mut self.slots[w as usize];
        error!("worker {w} {what}: ending it");
        slot.violated = true;
        end_worker(slot, libc::SIGKILL);
        self.gone(w, "protocol violation");
    }

    /// The worker of slot `w` can no longer take connections.
    fn gone(&mut self, w: u32, why: &str) {
        let slot = &mut self.slots[w as usize];
        if slot.phase != Phase::Gone {
            slot.phase = Phase::Gone;
            debug!("worker {w} gone: {why}");
            self.update_live();
        }
    }

    /// Once a gone worker's channel has been read to its end and no send is in flight, its
    /// unacknowledged connections (never touched) go to the next worker by rank.
    fn retire_if_done(&mut self, w: u32) {
        let slot = &mut self.slots[w as usize];
        if slot.phase != Phase::Gone || !slot.eof || slot.sending.is_some() {
            return;
        }
        if slot.channel.is_none() {
            return;
        }
        slot.channel = None;
        let violated = slot.violated;
        let (sent, unsent) = slot.take_unacked();
        if violated && !sent.is_empty() {
            warn!(
                "worker {w} broke the protocol: closing the {} connections it was sent",
                sent.len()
            );
            for h in sent {
                self.drop_handoff(h);
            }
        } else if !sent.is_empty() {
            warn!(
                "worker {w} left {} connections unacknowledged: dispatching them again",
                sent.len()
            );
            self.metrics.redispatched(sent.len() as u64);
            for mut h in sent {
                h.exclude = None;
                self.route(h);
            }
        }
        for mut h in unsent {
            h.exclude = None;
            self.route(h);
        }
        self.schedule_respawn(w);
    }

    fn update_live(&mut self) {
        self.live.clear();
        self.live.extend(
            self.slots
                .iter()
                .filter(|s| s.phase == Phase::Live && s.drain != Drain::Sent)
                .map(|s| s.id),
        );
        for slot in &self.slots {
            self.metrics
                .set_live(slot.id, self.live.binary_search(&slot.id).is_ok());
        }
        self.unpark();
    }

    // ---- processes and signals -------------------------------------------------------------

    fn on_exit(&mut self, w: u32, result: io::Result<u32>) {
        if let Err(e) = result {
            warn!("worker {w}: waiting for its exit failed: {e}");
        }
        let slot = &mut self.slots[w as usize];
        let Some(pid) = slot.pid else {
            return;
        };
        match sys::try_wait(pid) {
            Ok(Some(status)) => {
                let status = ExitStatus::from_raw(status);
                slot.pid = None;
                slot.pidfd = None;
                if self.shutdown.is_some() && !status.success() {
                    warn!("worker {w} (pid {pid}) exited: {status}");
                } else {
                    // Outside a shutdown the restart's log line says it, once per back-off step.
                    debug!("worker {w} (pid {pid}) exited: {status}");
                }
                slot.last_exit = Some(status);
                self.gone(w, "exited");
                self.schedule_respawn(w);
            }
            Ok(None) => arm_exit(&mut self.ring, slot),
            Err(e) => {
                warn!("worker {w} (pid {pid}): waitpid failed: {e}");
                slot.pid = None;
                slot.pidfd = None;
                self.gone(w, "lost");
                self.schedule_respawn(w);
            }
        }
    }

    fn on_signal(&mut self) {
        loop {
            match sys::read_signal(self.signals.as_fd()) {
                Ok(Some(libc::SIGUSR2)) => self.on_upgrade_signal(),
                Ok(Some(sig)) => self.on_shutdown_signal(sig),
                Ok(None) => break,
                Err(e) => {
                    warn!("reading the signal fd failed: {e}");
                    break;
                }
            }
        }
        self.ring.poll(
            self.signals.as_fd(),
            libc::POLLIN as u32,
            Token::Signal.encode(),
        );
    }

    fn on_shutdown_signal(&mut self, sig: i32) {
        let name = if sig == libc::SIGINT {
            "SIGINT"
        } else {
            "SIGTERM"
        };
        if self.shutdown.is_some() {
            warn!("{name} again: killing the workers now");
            self.signal_workers(libc::SIGKILL);
            return;
        }
        self.note_shutdown(name);
        self.begin_shutdown(name);
    }

    /// Stops accepting and closes the listeners, routes the connections already accepted,
    /// and drains the workers; `why` names the cause in the log.
    fn begin_shutdown(&mut self, why: &str) {
        info!(
            "{why}: closing the listeners; routing {} pending connections, then draining {} \
             workers (grace {:?})",
            self.front.pending()
                + self.acceptors.as_ref().map_or(0, Acceptors::pending)
                + self.parked.len(),
            self.live.len(),
            self.config.grace
        );
        self.shutdown = Some(Shutdown {
            term_at: None,
            backstop: Instant::now() + self.config.peek_timeout + self.config.grace,
            kill_at: None,
        });
        for slot in &mut self.slots {
            // No restart during a shutdown.
            slot.respawn_at = None;
        }
        self.front.close(&mut self.ring);
        if let Some(acceptors) = &mut self.acceptors {
            acceptors.close();
        }
        for slot in &mut self.slots {
            if slot.phase != Phase::Gone {
                slot.drain = Drain::Wanted;
            }
        }
        for h in std::mem::take(&mut self.parked) {
            self.route(h);
        }
    }

    /// Ends a shutdown whose routing did not finish in time: closes what is left and lets the
    /// workers be signalled.
    fn shutdown_backstop(&mut self, now: Instant) {
        let Some(shutdown) = &mut self.shutdown else {
            return;
        };
        if shutdown.term_at.is_some() || now < shutdown.backstop {
            return;
        }
        shutdown.term_at = Some(now);
        let threads = self.acceptors.as_ref().map_or(0, Acceptors::pending);
        let stranded = self.front.pending() + threads + self.parked.len();
        if stranded > 0 {
            warn!(
                "{stranded} connections could not be routed before the grace period ended: closed"
            );
        }
        self.front.abandon(&mut self.ring);
        if let Some(acceptors) = &mut self.acceptors {
            acceptors.abandon();
        }
        for h in std::mem::take(&mut self.parked) {
            self.drop_handoff(h);
        }
    }

    fn signal_workers(&mut self, sig: i32) {
        for slot in &mut self.slots {
            end_worker(slot, sig);
        }
    }

    // ---- timers ----------------------------------------------------------------------------

    fn next_timer(&mut self) -> Option<Instant> {
        let front = self.front.next_deadline();
        let channels = self
            .slots
            .iter()
            .filter(|s| !s.eof && s.channel.is_some())
            .filter_map(|s| s.retry_at);
        let restarts = self
            .slots
            .iter()
            .filter(|_| self.shutdown.is_none())
            .filter_map(|s| s.respawn_at);
        let kills = self.slots.iter().filter_map(|s| s.kill_at);
        let max_queue = self.max_queue();
        let full_threads = self
            .slots
            .iter()
            .any(|s| s.thread.is_some() && s.held >= max_queue)
            .then(|| Instant::now() + THREAD_QUEUE_RECHECK);
        let upgrade = self.upgrade.deadline();
        let backstop = self
            .shutdown
            .as_ref()
            .filter(|s| s.term_at.is_none())
            .map(|s| s.backstop);
        let shutdown = self.shutdown.as_ref().and_then(|s| s.kill_at.or(s.term_at));
        front
            .into_iter()
            .chain(channels)
            .chain(restarts)
            .chain(kills)
            .chain(upgrade)
            .chain(backstop)
            .chain(shutdown)
            .chain(full_threads)
            .chain(self.attach.as_ref().and_then(AttachPoint::next_timer))
            .min()
    }

    fn fire_timers(&mut self, now: Instant) {
        self.front.expire(&mut self.ring, now);
        self.respawn_due(now);
        self.tend_attach(Some(now));
        self.held_for_reattach(Some(now));
        self.measure_thread_queues();
        self.unpark();
        self.upgrade_timer(now);
        for slot in &mut self.slots {
            if slot.kill_at.is_some_and(|at| at <= now) {
                slot.kill_at = None;
                if let Some(pid) = slot.pid {
                    warn!("worker {} (pid {pid}) did not exit: SIGKILL", slot.id);
                    let _ = sys::kill(pid, libc::SIGKILL);
                }
            }
        }
        self.shutdown_backstop(now);
        self.update_accepting();
        let Some(shutdown) = &mut self.shutdown else {
            return;
        };
        match shutdown.kill_at {
            None if shutdown.term_at.is_some_and(|at| now >= at) => {
                shutdown.kill_at = Some(now + KILL_AFTER);
                let left = self.slots.iter().filter(|s| !s.exited()).count();
                if left > 0 {
                    warn!("grace period over: SIGTERM to {left} workers");
                    self.signal_workers(libc::SIGTERM);
                }
            }
            Some(at) if now >= at => {
                shutdown.kill_at = Some(now + KILL_AFTER);
                let left = self.slots.iter().filter(|s| !s.exited()).count();
                if left > 0 {
                    warn!("SIGKILL to {left} workers still running");
                    self.signal_workers(libc::SIGKILL);
                }
            }
            _ => {}
        }
    }
}

/// How many completions a round waits for, and how long, given whether the last round was
/// busy (more than one completion) and when the next timer is due. Under load, a batch per
/// round: one enter, one `CONNS` message per worker carrying several fds, one `ACK` back.
/// Idle, it sleeps until the first completion.
fn batch_wait(busy: bool, timeout: Option<Duration>) -> (usize, Option<Duration>) {
    if busy {
        (BATCH, Some(timeout.map_or(LINGER, |t| t.min(LINGER))))
    } else {
        (1, timeout)
    }
}

/// Ends a slot's worker: a process gets `sig`; an attached worker, which is not ours to
/// signal, has its channel shut in both directions (it reads end of file, and so do we). Our
/// end of file then does not mean the worker is gone: it may still read the `CONNS` queued
/// for it and serve them, so what it was sent is never dispatched again (closed instead).
fn end_worker(slot: &mut Slot, sig: i32) {
    if let Some(pid) = slot.pid {
        if let Err(e) = sys::kill(pid, sig) {
            warn!("worker {} (pid {pid}): kill failed: {e}", slot.id);
        }
    } else if let (Kind::Attached, Some(channel)) = (slot.kind, &slot.channel) {
        slot.violated = true;
        if let Err(e) = sys::shutdown_both(channel.as_fd()) {
            debug!("worker {}: {e}", slot.id);
        }
    }
}

fn arm_recv(ring: &mut Ring, slot: &mut Slot) {
    if let (Some(channel), Some(inbox)) = (&slot.channel, slot.inbox.take()) {
        ring.recv_msg(channel.as_fd(), inbox, Token::ChannelRecv(slot.id).encode());
    }
}

fn arm_exit(ring: &mut Ring, slot: &Slot) {
    if let Some(pidfd) = &slot.pidfd {
        ring.poll(
            pidfd.as_fd(),
            libc::POLLIN as u32,
            Token::Exit(slot.id).encode(),
        );
    }
}
