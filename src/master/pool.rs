//! The worker slots: each worker's channel, the connections routed to it and not yet sent, the
//! messages sent and not yet acknowledged, and its process.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::time::Instant;

use crossbeam_channel::Sender;

use stickyd_ring::{InMsg, OutMsg};
use stickyd_worker::wire::{self, ConnRecord};

use super::spawn::Spawned;
use crate::threads::Delivery;

/// A connection on its way to a worker. The master owns the fd until the worker acknowledges it.
#[derive(Debug)]
pub(crate) struct Handoff {
    pub fd: OwnedFd,
    pub rec: ConnRecord,
    /// A worker this connection must not go to (it returned it).
    pub exclude: Option<u32>,
}

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

/// What the send in flight on a channel carries.
#[derive(Debug)]
pub(crate) enum Sending {
    /// `WELCOME`.
    Welcome,
    /// `REFUSED`; the channel is closed once it is sent.
    Refused,
    /// `DRAIN`; the master shuts its sending side once it is sent.
    Drain,
    /// A `CONNS` message and the connections it carries, in record order.
    Conns(Vec<Handoff>),
    /// A `CONNS` message whose `ACK` arrived before the send's own completion.
    Acked,
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
}

/// What fills a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A process the master started (and restarts).
    Process,
    /// A process that connected to `--attach PATH`; the master neither starts nor signals it.
    Attached,
    /// A thread of the embedding process, fed through a channel of fds.
    Thread,
}

/// One worker slot, `0..N`.
#[derive(Debug)]
pub(crate) struct Slot {
    pub id: u32,
    pub kind: Kind,
    pub phase: Phase,
    /// The worker's process, until it has been reaped.
    pub pid: Option<u32>,
    pub pidfd: Option<OwnedFd>,
    /// The master's end of the channel, until the worker has been retired.
    pub channel: Option<OwnedFd>,
    /// An in-process worker's queue, until it is drained (dropped) or its thread has gone.
    pub thread: Option<Sender<Delivery>>,
    /// The receive buffer, when no receive is in flight.
    pub inbox: Option<InMsg>,
    /// The channel has been read to its end (or has failed for good).
    pub eof: bool,
    pub sending: Option<Sending>,
    /// The message to send next, reused for every send (taken while one is in flight).
    pub msg: Option<OutMsg>,
    /// Connections routed to this worker, not yet sent.
    pub outbox: VecDeque<Handoff>,
    /// `CONNS` messages sent and not yet acknowledged, oldest first.
    pub unacked: VecDeque<Vec<Handoff>>,
    /// A `REFUSED` to send instead of anything else.
    pub refusal: Option<String>,
    pub welcome_due: bool,
    pub drain: Drain,
    /// After a send failed for want of kernel resources: no send before then.
    pub retry_at: Option<Instant>,
    /// The worker broke the protocol: what it was sent may be in use, so it is never
    /// dispatched again.
    pub violated: bool,
    /// Connections routed to this worker and not yet acknowledged (outbox, in flight, sent).
    pub held: usize,
    /// When this worker process was started.
    pub spawned_at: Instant,
    /// Deaths in a row, each soon after its start: the restart back-off's step.
    pub deaths: u32,
    /// When the next worker process is to be started in this slot.
    pub respawn_at: Option<Instant>,
    /// How the last process exited, for the restart's log line.
    pub last_exit: Option<std::process::ExitStatus>,
    /// When to SIGKILL a process that closed its channel (or was refused) but did not exit.
    pub kill_at: Option<Instant>,
}

impl Slot {
    /// The slot `id` with a freshly started worker; `deaths` carries the back-off step over.
    pub fn new(id: u32, worker: Spawned, deaths: u32) -> Slot {
        Slot {
            phase: Phase::Starting,
            pid: Some(worker.pid),
            pidfd: Some(worker.pidfd),
            deaths,
            ..Slot::with_channel(id, Kind::Process, worker.channel)
        }
    }

    /// The slot `id` filled by an attached worker whose `HELLO` has been read: live, with a
    /// `WELCOME` to send.
    pub fn attached(id: u32, channel: OwnedFd) -> Slot {
        Slot {
            phase: Phase::Live,
            welcome_due: true,
            ..Slot::with_channel(id, Kind::Attached, channel)
        }
    }

    /// The slot `id` served by a thread of this process: live from the start.
    pub fn thread(id: u32, queue: Sender<Delivery>) -> Slot {
        Slot {
            phase: Phase::Live,
            thread: Some(queue),
            ..Slot::empty(id, Kind::Thread)
        }
    }

    /// The slot `id` with a channel, and the buffers to receive and send on it.
    fn with_channel(id: u32, kind: Kind, channel: OwnedFd) -> Slot {
        Slot {
            channel: Some(channel),
            eof: false,
            inbox: Some(InMsg::new(wire::MAX_MESSAGE, 0)),
            msg: Some(OutMsg::with_capacity(
                wire::HEADER_LEN + wire::MAX_CONNS * wire::RECORD_LEN,
                wire::MAX_CONNS,
            )),
            ..Slot::empty(id, kind)
        }
    }

    /// The slot `id` with nothing in it (an attached worker may fill it), and no channel
    /// buffers (a thread worker has no channel).
    pub fn empty(id: u32, kind: Kind) -> Slot {
        Slot {
            id,
            kind,
            phase: Phase::Gone,
            pid: None,
            pidfd: None,
            channel: None,
            thread: None,
            eof: true,
            inbox: None,
            sending: None,
            msg: None,
            outbox: VecDeque::new(),
            unacked: VecDeque::new(),
            refusal: None,
            welcome_due: false,
            drain: Drain::No,
            retry_at: None,
            violated: false,
            held: 0,
            spawned_at: Instant::now(),
            deaths: 0,
            respawn_at: None,
            last_exit: None,
            kill_at: None,
        }
    }

    /// Whether the worker is over: its process exited and reaped, its attached peer's
    /// channel retired, or its thread's queue closed.
    pub fn exited(&self) -> bool {
        match self.kind {
            Kind::Process => self.pid.is_none(),
            Kind::Attached => self.channel.is_none(),
            Kind::Thread => self.thread.is_none(),
        }
    }

    /// Takes the connections this worker was sent and never acknowledged, oldest first, and
    /// those routed to it and never sent. Only once the channel has been read to its end and no
    /// send is in flight, so that no acknowledged connection is ever taken.
    pub fn take_unacked(&mut self) -> (Vec<Handoff>, Vec<Handoff>) {
        debug_assert!(self.eof && self.sending.is_none());
        let sent: Vec<Handoff> = self.unacked.drain(..).flatten().collect();
        let unsent: Vec<Handoff> = self.outbox.drain(..).collect();
        self.held = 0;
        (sent, unsent)
    }

    /// Whether the slot is empty for good until a new worker is started in it: its process
    /// reaped and its channel retired.
    pub fn vacant(&self) -> bool {
        self.phase == Phase::Gone && self.pid.is_none() && self.channel.is_none()
    }
}
