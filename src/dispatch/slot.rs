//! One worker slot as the rules see it: where its worker stands, what was routed to it and not
//! yet sent, what was sent and not yet acknowledged, and the keys waiting for its replacement.
//! No file descriptor and no process handle: the driver keeps those beside it.

use std::collections::VecDeque;
use std::time::Instant;

use super::Handoff;

/// Where a worker slot stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Spawned; no `HELLO` yet. Gets no connection.
    Starting,
    /// Said `HELLO` and was welcomed: connections are routed to it.
    Live,
    /// Refused, exited, or its channel failed or ended: no longer routed to. Its unacknowledged
    /// connections are dispatched again once its channel has been read to the end.
    Gone,
}

/// What fills a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A process the master started (and restarts).
    Process,
    /// A process that connected to `--attach PATH`; the master neither starts nor signals it.
    Attached,
    /// A thread of the embedding process, fed through a queue of fds.
    Thread,
}

/// The shutdown's progress for one worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Drain {
    /// Not asked to drain.
    No,
    /// To be sent `DRAIN` once nothing more can be routed to it.
    Wanted,
    /// `DRAIN` sent (or being sent).
    Sent,
    /// `DRAIN` sent to a worker that hands connections back (it was sent `REHASH`): the
    /// channel's sending side stays open, so that what the workers handed back before they read
    /// `DRAIN` can still go to their keys' workers among the draining ones; its `DRAINED` is
    /// awaited.
    Settling,
    /// Its `DRAINED` read: the sending side is shut once no worker may hand back any more and
    /// what came back has been routed.
    Settled,
}

/// What the send in flight on a channel carries.
#[derive(Debug)]
pub(crate) enum Sending<C> {
    /// `WELCOME`.
    Welcome,
    /// `REFUSED`; the channel's sending side is shut once it is sent.
    Refused,
    /// `DRAIN`; the channel's sending side is shut once it is sent.
    Drain,
    /// `CHANNELS`: the dispatcher threads' channels to this worker.
    Channels,
    /// `REHASH`: the listeners whose kept-alive connections come back at each request.
    Rehash,
    /// A `CONNS` message and the connections it carries, in record order.
    Conns(Vec<Handoff<C>>),
    /// A `CONNS` message whose `ACK` arrived before the send's own completion.
    Acked,
}

/// One worker slot, `0..N`.
#[derive(Debug)]
pub(crate) struct Slot<C> {
    pub id: u32,
    pub kind: Kind,
    pub phase: Phase,
    /// The worker's process id, until it has been reaped.
    pub pid: Option<u32>,
    /// The slot has a channel the driver keeps open (until the slot is retired).
    pub channel: bool,
    /// A thread worker's queue is open (until it is drained or its thread has gone).
    pub queue: bool,
    /// The channel has been read to its end (or has failed for good).
    pub eof: bool,
    pub sending: Option<Sending<C>>,
    /// Connections routed to this worker, not yet sent.
    pub outbox: VecDeque<Handoff<C>>,
    /// `CONNS` messages sent and not yet acknowledged, oldest first.
    pub unacked: VecDeque<Vec<Handoff<C>>>,
    /// A `REFUSED` to send instead of anything else.
    pub refusal: Option<String>,
    pub welcome_due: bool,
    /// The worker takes the dispatcher threads' channels: `CHANNELS` goes out after `WELCOME`.
    pub channels_due: bool,
    /// The worker hands connections back: `REHASH` goes out after `WELCOME` (and `CHANNELS`).
    pub rehash_due: bool,
    /// `REHASH` was sent: the worker says `DRAINED` once it has read `DRAIN`.
    pub rehashed: bool,
    /// Its `DRAINED` came while the `DRAIN` send was still in flight here.
    pub said_drained: bool,
    pub drain: Drain,
    /// After a send failed for want of kernel resources: no send before then.
    pub retry_at: Option<Instant>,
    /// The worker broke the protocol (or its channel was cut under it): what it was sent may
    /// be in use, so it is never dispatched again.
    pub violated: bool,
    /// Connections routed to this worker and not yet acknowledged (outbox, in flight, sent),
    /// or for a thread worker, not yet taken from its queue.
    pub held: usize,
    /// When this worker process was started.
    pub spawned_at: Instant,
    /// Deaths in a row, each soon after its start: the restart back-off's step.
    pub deaths: u32,
    /// When the next worker process is to be started in this slot.
    pub respawn_at: Option<Instant>,
    /// A start asked of the driver and not yet answered.
    pub spawning: bool,
    /// How the last process exited, for the restart's log line.
    pub last_exit: Option<String>,
    /// When to SIGKILL a process that closed its channel (or was refused) but did not exit.
    pub kill_at: Option<Instant>,
    /// The worker died while live: its keys wait for the replacement until then.
    pub hold_until: Option<Instant>,
    /// Connections whose key belongs here, waiting for the replacement (at most
    /// `--max-queue`).
    pub waiting: Vec<Handoff<C>>,
}

impl<C> Slot<C> {
    /// The slot `id` with nothing in it yet.
    pub fn empty(id: u32, kind: Kind, now: Instant) -> Slot<C> {
        Slot {
            id,
            kind,
            phase: Phase::Gone,
            pid: None,
            channel: false,
            queue: false,
            eof: true,
            sending: None,
            outbox: VecDeque::new(),
            unacked: VecDeque::new(),
            refusal: None,
            welcome_due: false,
            channels_due: false,
            rehash_due: false,
            rehashed: false,
            said_drained: false,
            drain: Drain::No,
            retry_at: None,
            violated: false,
            held: 0,
            spawned_at: now,
            deaths: 0,
            respawn_at: None,
            spawning: false,
            last_exit: None,
            kill_at: None,
            hold_until: None,
            waiting: Vec::new(),
        }
    }

    /// A fresh channel (a new process, or an attached peer): nothing sent on it yet.
    pub fn open_channel(&mut self) {
        self.channel = true;
        self.eof = false;
        self.sending = None;
        self.refusal = None;
        self.welcome_due = false;
        self.channels_due = false;
        self.rehash_due = false;
        self.rehashed = false;
        self.said_drained = false;
        self.drain = Drain::No;
        self.retry_at = None;
        self.violated = false;
        self.kill_at = None;
    }

    /// Whether the worker is over: its process exited and reaped, its attached peer's
    /// channel retired, or its thread's queue closed.
    pub fn exited(&self) -> bool {
        match self.kind {
            Kind::Process => self.pid.is_none(),
            Kind::Attached => !self.channel,
            Kind::Thread => !self.queue,
        }
    }

    /// Whether the slot is empty for good until a new worker is started in it: its process
    /// reaped and its channel retired.
    pub fn vacant(&self) -> bool {
        self.phase == Phase::Gone && self.pid.is_none() && !self.channel && !self.spawning
    }

    /// Whether connections are routed to it.
    pub fn routable(&self) -> bool {
        self.phase == Phase::Live && matches!(self.drain, Drain::No | Drain::Wanted)
    }

    /// Drained during a shutdown, its channel still open for the connections workers hand back
    /// until every one of them has said `DRAINED`: they go to their key's worker among the
    /// open ones.
    pub fn returnable(&self) -> bool {
        let drained = match self.drain {
            Drain::Settling | Drain::Settled => true,
            // Its DRAIN is on its way; a CONNS goes after it.
            Drain::Sent => self.rehashed && matches!(self.sending, Some(Sending::Drain)),
            Drain::No | Drain::Wanted => false,
        };
        drained && self.phase == Phase::Live && self.channel && !self.eof && !self.violated
    }

    /// It may still hand connections back: it was sent `REHASH`, and its `DRAINED` has not
    /// been read.
    pub fn may_hand_back(&self) -> bool {
        let open = match self.drain {
            Drain::No | Drain::Wanted | Drain::Settling => true,
            Drain::Sent => matches!(self.sending, Some(Sending::Drain)) && !self.said_drained,
            Drain::Settled => false,
        };
        open && self.rehashed && self.channel && !self.eof && !self.violated
    }

    /// Whether its keys wait for its replacement instead of going elsewhere.
    pub fn holding(&self) -> bool {
        self.hold_until.is_some() && !self.routable()
    }

    /// Every connection the slot holds: routed, in flight, sent and unacknowledged, waiting.
    #[cfg(test)]
    pub fn connections(&self) -> usize {
        let in_flight = match &self.sending {
            Some(Sending::Conns(batch)) => batch.len(),
            _ => 0,
        };
        self.outbox.len()
            + in_flight
            + self.unacked.iter().map(Vec::len).sum::<usize>()
            + self.waiting.len()
    }
}
