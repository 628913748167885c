//! The master's decisions, without I/O: which worker a connection goes to, when it waits,
//! what each worker's channel says next, when a worker is started, ended or given up on, and
//! how a shutdown proceeds.
//!
//! [`Core`] owns no socket, process or clock. Its driver (the io_uring or epoll loop in
//! `master`, and the deterministic simulator in this module's tests) tells it what happened
//! (a connection's key is known, a worker said `HELLO` or `ACK`, a channel ended, a process
//! exited, a timer is due, a signal came) with the time it happened, and takes back what to
//! do: [`Action`]s from [`Core::poll_action`], what to send on a channel from
//! [`Core::next_send`], what to queue to a thread worker from [`Core::next_for_thread`],
//! whether to accept ([`Core::accepting`]) and when to wake it next
//! ([`Core::next_deadline`]). Connections are an opaque `C` (an `OwnedFd` in the master), so
//! the rules never touch one and the type system sees that none is duplicated.
//!
//! The stickiness rules, all here:
//! - **Start**: nothing is accepted until every slot is live, or until the start hold
//!   (`--start-timeout`; for an upgrade's successor whose workers all attach, the grace period
//!   and some slack) has passed; then the live ones serve and a warning names the missing
//!   slots. The listeners are bound first, so clients wait in the backlog.
//! - **Routing**: rendezvous hashing over the live workers and over the dead ones whose
//!   replacement is awaited. A key's connection goes to its first choice if that worker is live
//!   and holds fewer than `--max-queue` unacknowledged connections, waits for the replacement
//!   if its first choice is awaited (at most `--max-queue` wait per slot), and otherwise goes to
//!   the next choice by rank that has room (a spill). With no room anywhere it waits in the
//!   master (parked) and accepting pauses.
//! - **Respawn hold**: when a live spawned worker dies, its keys wait up to `--respawn-hold`
//!   for its replacement instead of moving; past that they go to their next choice, and come
//!   back when the replacement is live. The keys of healthy workers never move.
//! - **Acknowledgement**: the master keeps a connection until the worker's `ACK` names it; a
//!   connection the `ACK` leaves out (the worker's fd limit) goes to the next worker by rank; a
//!   dead worker's unacknowledged connections are routed again only after its channel has been
//!   read to the end, so none is ever delivered twice.
//! - **Shutdown**: no restart; every accepted connection is still routed; each worker gets
//!   `DRAIN` once nothing more can reach it; the grace period counts from then; SIGTERM, then
//!   SIGKILL, to what is left; a backstop ends routing that cannot finish.

mod channel;
mod lifecycle;
mod routing;
mod slot;
mod timers;

#[cfg(test)]
mod sim;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stickyd_worker::wire::ConnRecord;

use crate::metrics::Metrics;

pub(crate) use channel::{FailureKind, Outgoing, SendFailure, ThreadStep};
pub(crate) use slot::Kind;
use slot::{Phase, Slot};

/// How long after the grace period's SIGTERM the workers left get SIGKILL, and how long a
/// process that closed its channel or was refused has to exit.
pub(crate) const KILL_AFTER: Duration = Duration::from_secs(2);
/// How long a channel waits before it sends again after the kernel ran short (`ENOBUFS`,
/// `ETOOMANYREFS`, ...).
pub(crate) const SEND_BACKOFF: Duration = Duration::from_millis(20);
/// How many emptied `CONNS` batches are kept for reuse.
const BATCH_POOL: usize = 64;

/// A connection on its way to a worker. The master owns `conn` until the worker acknowledges
/// it.
#[derive(Debug)]
pub(crate) struct Handoff<C> {
    pub conn: C,
    pub rec: ConnRecord,
    /// A worker this connection must not go to (it returned it).
    pub exclude: Option<u32>,
}

/// The rules' parameters.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// Worker slots, `0..workers`.
    pub workers: u32,
    /// The most unacknowledged connections per worker (and waiting per awaited slot).
    pub max_queue: usize,
    /// How long a shutdown waits for draining workers.
    pub grace: Duration,
    /// The peek deadline, which bounds how long a shutdown may still route.
    pub peek_timeout: Duration,
    /// How long a dead worker's keys wait for its replacement (zero: they move at once).
    pub respawn_hold: Duration,
    /// The most connections in one `CONNS` message (Node's channel takes one handle per
    /// message).
    pub max_batch: usize,
}

/// Who fills the slots at start.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Start {
    /// Processes the master starts (and restarts); nothing is accepted until each said
    /// `HELLO`, or until the hold has passed.
    Spawn {
        /// The start hold (`--start-timeout`).
        hold: Duration,
    },
    /// Threads of this process, live from the start.
    Threads,
    /// Workers that attach when they will.
    Attach {
        /// As an upgrade's successor: how long to wait for every slot to re-attach before
        /// accepting.
        reattach: Option<Duration>,
    },
}

/// A signal to end a worker with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Signal {
    /// SIGTERM.
    Term,
    /// SIGKILL.
    Kill,
}

/// Something for the driver to do.
#[derive(Debug)]
pub(crate) enum Action<C> {
    /// Start a worker process in this slot, then say [`Core::spawned`] or
    /// [`Core::spawn_failed`].
    Spawn(u32),
    /// End this slot's worker: a process gets the signal; an attached worker, not ours to
    /// signal, has its channel shut both ways.
    End(u32, Signal),
    /// The worker acknowledged this connection: it has its own copy, close the master's.
    Release(u32, C, ConnRecord),
    /// A connection the master gives up on (already counted as dropped): close it.
    Drop(C),
    /// Shut the sending side of this slot's channel (after `DRAIN` or `REFUSED`).
    ShutWrite(u32),
    /// This slot's channel is done with (read to its end, nothing in flight): close it.
    Retire(u32),
    /// This slot's worker became live (readiness: systemd, a predecessor).
    Live(u32),
    /// A shutdown's routing did not finish in time: give up on the connections still being
    /// peeked at (what the core held is in `Drop` actions already).
    Abandon,
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

/// The master's rules and state, without I/O. See the [module](self) documentation.
#[derive(Debug)]
pub(crate) struct Core<C> {
    settings: Settings,
    metrics: Arc<Metrics>,
    slots: Vec<Slot<C>>,
    /// Routable worker ids, ascending (recomputed when a slot changes phase).
    live: Vec<u32>,
    /// Connections routed while no worker had room.
    parked: Vec<Handoff<C>>,
    next_seq: u64,
    shutdown: Option<Shutdown>,
    /// Until then, or until every slot is live, nothing is accepted; and how long it was.
    start_hold: Option<(Instant, Duration)>,
    /// Emptied `CONNS` batches, reused for the next ones.
    batches: Vec<Vec<Handoff<C>>>,
    actions: VecDeque<Action<C>>,
    /// Process slots are started and restarted.
    spawns: bool,
}

impl<C> Core<C> {
    /// The rules for `settings.workers` slots filled as `start` says, at time `now`. For
    /// [`Start::Spawn`], the first actions start every slot's worker.
    pub fn new(settings: Settings, start: Start, metrics: Arc<Metrics>, now: Instant) -> Core<C> {
        let n = settings.workers;
        let mut core = Core {
            slots: Vec::with_capacity(n as usize),
            live: Vec::with_capacity(n as usize),
            parked: Vec::new(),
            next_seq: 0,
            shutdown: None,
            start_hold: None,
            batches: Vec::new(),
            actions: VecDeque::new(),
            spawns: matches!(start, Start::Spawn { .. }),
            settings,
            metrics,
        };
        match start {
            Start::Spawn { hold } => {
                core.start_hold = Some((now + hold, hold));
                for id in 0..n {
                    let mut slot = Slot::empty(id, Kind::Process, now);
                    slot.spawning = true;
                    core.slots.push(slot);
                    core.actions.push_back(Action::Spawn(id));
                }
            }
            Start::Threads => {
                for id in 0..n {
                    let mut slot = Slot::empty(id, Kind::Thread, now);
                    slot.phase = Phase::Live;
                    slot.queue = true;
                    core.slots.push(slot);
                    core.actions.push_back(Action::Live(id));
                }
            }
            Start::Attach { reattach } => {
                for id in 0..n {
                    core.slots.push(Slot::empty(id, Kind::Attached, now));
                    // The workers attach when they will (after an upgrade, only once the
                    // predecessor has drained them): the master is ready once it can take them.
                    core.actions.push_back(Action::Live(id));
                }
                core.start_hold = reattach.map(|d| (now + d, d));
            }
        }
        core.update_live();
        core
    }

    /// The next thing for the driver to do, if any.
    pub fn poll_action(&mut self) -> Option<Action<C>> {
        self.actions.pop_front()
    }

    /// A connection whose key is known: numbered and routed.
    pub fn routed(&mut self, mut h: Handoff<C>) {
        self.next_seq += 1;
        h.rec.seq = self.next_seq;
        self.route(h);
    }

    /// Whether the listeners should accept: only while some live worker can take a
    /// connection and the start hold is over, so that nothing is accepted that cannot go
    /// somewhere (or would go to a worker that is not its key's).
    pub fn accepting(&self) -> bool {
        self.shutdown.is_none() && self.start_hold.is_none() && self.room()
    }

    /// Whether a shutdown has begun.
    pub fn shutting_down(&self) -> bool {
        self.shutdown.is_some()
    }

    /// Shutdown is complete when every worker has exited.
    pub fn finished(&self) -> bool {
        self.shutdown.is_some() && self.slots.iter().all(Slot::exited)
    }

    /// Connections waiting in the master: for room, or for a dead worker's replacement.
    pub fn waiting(&self) -> usize {
        self.parked.len() + self.slots.iter().map(|s| s.waiting.len()).sum::<usize>()
    }

    /// Routable workers.
    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    /// The slots.
    pub fn workers(&self) -> u32 {
        self.settings.workers
    }

    /// Connections routed to worker `w` and not yet acknowledged.
    pub fn unacked(&self, w: u32) -> usize {
        self.slots.get(w as usize).map_or(0, |s| s.held)
    }

    /// Whether worker `w`'s channel is still to be read: it has not ended.
    pub fn reading(&self, w: u32) -> bool {
        self.slots
            .get(w as usize)
            .is_some_and(|s| s.channel && !s.eof)
    }

    /// Every connection the core holds, wherever it is (a simulator's conservation check).
    #[cfg(test)]
    pub fn held_connections(&self) -> usize {
        self.parked.len() + self.slots.iter().map(Slot::connections).sum::<usize>()
    }

    /// The bound on a worker's unacknowledged connections. A shutdown has a finite set of
    /// connections left to route: no bound then, so that none waits behind a stalled worker and
    /// the drain can begin.
    fn max_queue(&self) -> usize {
        if self.shutdown.is_some() {
            usize::MAX
        } else {
            self.settings.max_queue
        }
    }

    /// Recomputes the routable workers after a slot changed phase, and routes what waited
    /// for one.
    fn update_live(&mut self) {
        self.live.clear();
        self.live
            .extend(self.slots.iter().filter(|s| s.routable()).map(|s| s.id));
        for slot in &self.slots {
            self.metrics
                .set_live(slot.id, self.live.binary_search(&slot.id).is_ok());
        }
        self.unpark();
    }

    /// Closes a connection the master gave up on after accepting it; counted.
    fn drop_handoff(&mut self, h: Handoff<C>) {
        self.metrics.dropped(1);
        self.actions.push_back(Action::Drop(h.conn));
    }

    /// Ends slot `w`'s worker with `signal`: a process is signalled; an attached worker has its
    /// channel shut, after which what it was sent may still be read and served by it, so none
    /// of that is ever dispatched again.
    fn end_worker(&mut self, w: u32, signal: Signal) {
        let slot = &mut self.slots[w as usize];
        if slot.pid.is_some() {
            self.actions.push_back(Action::End(w, signal));
        } else if slot.kind == Kind::Attached && slot.channel {
            slot.violated = true;
            self.actions.push_back(Action::End(w, signal));
        }
    }
}
