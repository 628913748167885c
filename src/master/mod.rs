//! The master: the event loop (io_uring, or epoll) that accepts connections, peeks at them
//! until their key is known, hands the fds over, and looks after the worker processes.
//!
//! This module is the I/O half: which operation to submit next and what a completion means.
//! What to do with a connection given its peeked bytes is decided in [`crate::decide`]; where
//! it goes, when it waits, what each worker is told and when a worker is started or ended, in
//! [`crate::dispatch`], which the loop feeds with what the kernel said.

mod acceptors;
mod attach;
mod conns;
mod front;
mod inherit;
mod lanes;
mod listen;
mod node;
mod notify;
pub(crate) mod spawn;
mod token;
mod upgrade;
mod workers;

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Receiver;
use log::{debug, error, info, warn};
use stickyd_ring::{Completion, Outcome, Ring, sys};
use stickyd_worker::wire::{self, ConnRecord};

use crate::config::{Backend, Config, Ipc};
use crate::dispatch::{self, Core, Settings, Start};
use crate::logging::say;
use crate::metrics::{self, Metrics};
use crate::route;
use crate::threads;
use crate::verdict::Examiner;

use acceptors::Acceptors;
use attach::AttachPoint;
use front::{Front, Listener};
use token::Token;
use workers::WorkerIo;

/// A connection on its way to a worker, as the master holds it.
pub(crate) type Handoff = dispatch::Handoff<OwnedFd>;

/// Submission queue entries of the master's ring.
const RING_ENTRIES: u32 = 1024;
/// How long a listener waits before its accept is armed again after an error (`EMFILE`, ...).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Under load (the last round handled more than one completion), a round waits for this many
/// completions, or [`LINGER`]: measured under W1 (`benches/e2e/run.sh`), 0.25 `io_uring_enter`
/// calls per connection instead of 0.90, with the same p99.
const BATCH: usize = 8;
/// The longest a round waits for its batch once something has completed.
const LINGER: Duration = Duration::from_micros(200);

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
    /// The rules: where connections go, what the workers are told, when they start and end.
    core: Core<OwnedFd>,
    /// Each slot's channel, buffers, process and thread queue.
    io: Vec<WorkerIo>,
    signals: OwnedFd,
    /// The records of the `CONNS` message being encoded.
    records: Vec<ConnRecord>,
    /// The workers are threads of this process.
    in_process: bool,
    /// The loop runs: a worker that cannot be started is retried, no longer fatal.
    running: bool,
    /// Where workers stickyd did not start attach (`--attach`).
    attach: Option<AttachPoint>,
    /// Readiness (systemd, a predecessor) and the zero-downtime upgrade.
    upgrade: upgrade::Upgrade,
    /// The lines of `--ipc node`.
    node: Option<crate::node_ipc::Encoder>,
    /// The listeners whose kept-alive connections workers hand back at each request
    /// (`--rehash-per-request`), for `REHASH`.
    rehash: Vec<u16>,
    /// Thread workers: the way their hand-backs come back, and what they come in.
    returns: Option<(Arc<threads::Returns>, Receiver<threads::HandedBack>)>,
}

/// The signals the master reads from its signalfd: shutdown, and the upgrade (SIGUSR2).
pub(crate) const MASTER_SIGNALS: [i32; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGUSR2];

/// How often a master whose thread workers are all at `--max-queue` looks again: their threads
/// take connections without telling the ring.
const THREAD_QUEUE_RECHECK: Duration = Duration::from_millis(10);

/// Runs the dispatcher until a requested shutdown completes. With `threads`, the workers are
/// the threads reading those queues, not processes.
pub fn run(config: Config, threads: Option<threads::Pool>) -> Result<(), Error> {
    let mut master = Master::start(config, threads)?;
    master.run()
}

/// The listeners whose kept-alive connections are routed again at each request: those that
/// ask for it and whose key can change from one request to the next. A listener that routes by
/// the client address at accept, or whose connections carry a PROXY header (sent once, at the
/// start), would route every request of a connection alike: a warning says so.
fn rehash_listeners(config: &Config, examiners: &[Examiner]) -> Vec<u16> {
    let mut rehash = Vec::new();
    for (i, (spec, examiner)) in config.listeners.iter().zip(examiners).enumerate() {
        if !config.rehash_per_request_of(i) {
            continue;
        }
        if examiner.routes_at_accept() || config.proxy_protocol_of(i) {
            warn!(
                "listener {}: --rehash-per-request has no effect: its key is the client address \
                 or a PROXY header's, the same for every request of a connection",
                spec.name
            );
            continue;
        }
        if let Ok(i) = u16::try_from(i) {
            rehash.push(i);
        }
    }
    rehash
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Master {
    fn start(mut config: Config, threads: Option<threads::Pool>) -> Result<Master, Error> {
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
        let rehash = rehash_listeners(&config, &examiners);
        let mut listeners = Vec::with_capacity(config.listeners.len());
        for ((spec, examiner), source) in config.listeners.iter().zip(&examiners).zip(sources) {
            // When a connection's first bytes decide its worker, have the kernel accept it
            // only once they are there: otherwise half the peeks right after accept find
            // nothing yet and cost a poll and a second peek. Bounded by the peek timeout.
            let defer = (!examiner.routes_at_accept())
                .then(|| u32::try_from(config.peek_timeout.as_secs().max(1)).unwrap_or(u32::MAX));
            let (socket, addr) = listen::open(spec, source, defer)?;
            say!("stickyd: listening on {addr} ({})", spec.name);
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
            say!("stickyd: metrics on {local}");
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
                workers: config.workers,
                max_queue: config.max_queue,
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
        )
        .watching_backlogs();
        // With dispatcher threads, the master's loop is one of the loops taking turns.
        let front = match acceptors {
            Some(_) => front.sharing_listeners(),
            None => front,
        };
        let upgrade = upgrade::Upgrade::new(&mut inherited, config.workers, metrics_copy);
        let start = match &threads {
            Some(_) => Start::Threads,
            None if config.attached_only() => Start::Attach {
                reattach: upgrade
                    .is_successor()
                    .then(|| config.grace + attach::REATTACH_SLACK),
            },
            None => Start::Spawn {
                hold: config.start_timeout,
            },
        };
        let settings = Settings {
            workers: config.workers,
            max_queue: config.max_queue,
            grace: config.grace,
            peek_timeout: config.peek_timeout,
            respawn_hold: config.respawn_hold,
            max_batch: match config.ipc {
                Ipc::Native => wire::MAX_CONNS,
                Ipc::Node => 1,
            },
        };
        let core = Core::new(settings, start, Arc::clone(&metrics), Instant::now());
        let mut io: Vec<WorkerIo> = (0..config.workers).map(|_| WorkerIo::default()).collect();
        let in_process = threads.is_some();
        let node = (config.ipc == Ipc::Node).then(|| {
            crate::node_ipc::Encoder::new(
                front
                    .listeners
                    .iter()
                    .zip(0..)
                    .map(|(l, i)| crate::node_ipc::ListenerInfo {
                        name: l.name.clone(),
                        addr: l.addr,
                        rehash: rehash.contains(&i),
                    })
                    .collect(),
            )
        });
        let returns = threads.map(|pool| {
            for (slot, queue) in io.iter_mut().zip(pool.queues) {
                *slot = WorkerIo::thread(queue);
            }
            // Set once, here: nothing else sets it.
            let _ = pool.returns.rehash.set(rehash.clone());
            (pool.returns, pool.handed_back)
        });
        let mut master = Master {
            metrics,
            ring,
            front,
            acceptors,
            core,
            io,
            signals,
            records: Vec::with_capacity(wire::MAX_CONNS),
            in_process,
            running: false,
            attach,
            upgrade,
            node,
            rehash,
            returns,
            config,
        };
        // Starts the workers (a failure to start one is fatal here).
        master.act()?;
        master.ring.poll(
            master.signals.as_fd(),
            libc::POLLIN as u32,
            Token::Signal.encode(),
        );
        master.arm_wake();
        master.arm_handed_back();
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
        !self.in_process && !self.config.attached_only()
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
        self.running = true;
        // Thread workers are live from the start: no completion will say so.
        self.update_accepting();
        let mut busy = false;
        loop {
            self.flush()?;
            if self.core.finished() {
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
                // What the core decided is done before the next completion is looked at: a
                // slot the core has retired is closed before an attaching worker can take it.
                self.act()?;
                round += 1;
            }
            busy = self.front.pace(&mut self.ring, round);
            self.route_new();
            // Once per round of completions, not once per completion: the timers, then the
            // thread workers' queues, the decision about accepting and the view the dispatcher
            // threads route by (in `fire_timers`).
            self.fire_timers(Instant::now())?;
            for w in 0..self.core.workers() {
                let threads = self.acceptors.as_ref().map_or(0, |a| a.unacked(w));
                self.metrics
                    .set_unacked(w, (self.core.unacked(w) + threads) as u64);
            }
            self.metrics
                .set_pending((self.front.pending() + self.threads_pending()) as u64);
        }
        let threads = self.threads_pending();
        if let Some(acceptors) = &mut self.acceptors {
            acceptors.abandon();
            acceptors.join();
        }
        let stranded = self.front.pending() + threads + self.core.waiting();
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

    /// Tells the dispatcher threads how each slot stands now, for their own channels.
    fn publish_view(&self) {
        if let Some(acceptors) = &self.acceptors {
            for w in 0..self.core.workers() {
                acceptors.publish(w, self.core.standing(w));
            }
        }
    }

    /// Connections the dispatcher threads are peeking at or passing on.
    fn threads_pending(&self) -> usize {
        self.acceptors.as_ref().map_or(0, Acceptors::pending)
    }

    fn complete(&mut self, c: Completion) {
        let Some(token) = Token::decode(c.token) else {
            error!("completion with an unknown token {:#x}", c.token);
            return;
        };
        match (token, c.outcome) {
            (Token::Accept(l), Outcome::Accepted { fd, more }) => {
                self.front.on_accept(&mut self.ring, l, c.op, fd, more)
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
            (Token::HandedBack, _) => self.on_handed_back(),
            (Token::Housekeeping, Outcome::Closed(Err(e))) => debug!("close failed: {e}"),
            (Token::Housekeeping, _) => {}
            (token, outcome) => error!("unexpected completion {outcome:?} for {token:?}"),
        }
    }

    // ---- accepting -------------------------------------------------------------------------

    /// Decides whether the listeners accept: as the core says (some worker can take a
    /// connection, the start is over), and for an upgrade's successor, once it is ready.
    fn update_accepting(&mut self) {
        self.tend_attach(None);
        let accepting = self.core.accepting() && self.upgrade.may_accept();
        // The threads see how the workers stand before they accept.
        self.publish_view();
        self.front.set_accepting(&mut self.ring, accepting);
        if let Some(acceptors) = &mut self.acceptors {
            acceptors.set_accepting(accepting);
        }
    }

    /// Hands the connections whose key the front (or a dispatcher thread) has found to the
    /// core.
    fn route_new(&mut self) {
        let mut routed = std::mem::take(&mut self.front.routed);
        for h in routed.drain(..) {
            self.core.routed(h);
        }
        // The vector keeps its capacity for the next round.
        self.front.routed = routed;
        while let Some(h) = self.acceptors.as_ref().and_then(Acceptors::take) {
            self.core.routed(h);
        }
        // A worker that broke the protocol on a thread's channel is ended, as on the master's
        // own; a report about an earlier worker of the slot is moot.
        while let Some((w, generation, what)) =
            self.acceptors.as_ref().and_then(Acceptors::take_violation)
        {
            if self
                .io
                .get(w as usize)
                .is_some_and(|io| io.lanes == generation)
            {
                self.core.violation(w, &what);
            }
        }
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

    /// Polls the eventfd thread workers write after handing connections back.
    fn arm_handed_back(&mut self) {
        if let Some((returns, _)) = &self.returns {
            self.ring.poll(
                returns.wake.as_fd(),
                libc::POLLIN as u32,
                Token::HandedBack.encode(),
            );
        }
    }

    /// Thread workers handed connections back (`--rehash-per-request`): each is examined and
    /// routed again, as a process worker's `HANDBACK` is.
    fn on_handed_back(&mut self) {
        let Some((returns, handed_back)) = &self.returns else {
            return;
        };
        if let Err(e) = sys::eventfd_clear(returns.wake.as_fd()) {
            debug!("{e}");
        }
        for (listener, fd) in handed_back.try_iter() {
            // `ThreadWorker::hand_back` takes only these listeners' connections.
            if self.rehash.contains(&listener) {
                self.front.readmit(&mut self.ring, listener, fd);
            } else {
                self.ring.close(fd, Token::Housekeeping.encode());
            }
        }
        self.arm_handed_back();
    }

    // ---- signals ---------------------------------------------------------------------------

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
        if self.core.shutting_down() {
            warn!("{name} again: killing the workers now");
            self.core.shut_down(Instant::now());
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
            self.front.pending() + self.threads_pending() + self.core.waiting(),
            self.core.live_count(),
            self.config.grace
        );
        self.core.shut_down(Instant::now());
        self.front.close(&mut self.ring);
        if let Some(acceptors) = &mut self.acceptors {
            acceptors.close();
        }
    }

    // ---- timers ----------------------------------------------------------------------------

    fn next_timer(&mut self) -> Option<Instant> {
        let front = self.front.next_deadline();
        let max_queue = self.config.max_queue;
        let full_threads = (0..self.core.workers())
            .any(|w| self.io[w as usize].thread.is_some() && self.core.unacked(w) >= max_queue)
            .then(|| Instant::now() + THREAD_QUEUE_RECHECK);
        front
            .into_iter()
            .chain(self.core.next_deadline())
            .chain(self.upgrade.deadline())
            .chain(full_threads)
            .chain(self.attach.as_ref().and_then(AttachPoint::next_timer))
            .min()
    }

    fn fire_timers(&mut self, now: Instant) -> Result<(), Error> {
        self.front.expire(&mut self.ring, now);
        self.measure_thread_queues();
        self.core.on_timer(now);
        self.tend_attach(Some(now));
        self.upgrade_timer(now);
        self.act()?;
        self.update_accepting();
        Ok(())
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
