//! What each worker is told, and what its answers mean: the channel's next message, the send's
//! outcome, the `ACK`s; and the queues of thread workers.

use std::time::Instant;

use log::{debug, error, warn};

use super::slot::{Drain, Phase, Sending, Slot};
use super::{Action, BATCH_POOL, Core, Handoff, KILL_AFTER, SEND_BACKOFF, Signal};
use stickyd_worker::wire;

/// What to send on a worker's channel next; the driver encodes it and reports the outcome with
/// [`Core::sent`].
#[derive(Debug)]
pub(crate) enum Outgoing<'a, C> {
    /// `REFUSED` with this reason; the sending side is shut once it is sent.
    Refused(&'a str),
    /// `WELCOME`.
    Welcome,
    /// `CHANNELS`: one channel per dispatcher thread, whose other ends the threads keep.
    Channels,
    /// `REHASH`: the listeners whose kept-alive connections the worker hands back.
    Rehash,
    /// `CONNS` with these connections, in record order.
    Conns(&'a [Handoff<C>]),
    /// `DRAIN`; the sending side is shut once it is sent.
    Drain,
}

/// Why a send failed.
#[derive(Debug)]
pub(crate) struct SendFailure {
    pub kind: FailureKind,
    /// What the kernel said.
    pub error: String,
}

/// The kinds of send failure, each with its own remedy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// The kernel ran short (`ENOBUFS`, `ENOMEM`, `ETOOMANYREFS`, `EAGAIN`): retried soon.
    Transient,
    /// The worker has closed its end (`EPIPE`, `ECONNRESET`): what it sent before is still
    /// queued, so its channel is read to the end as usual, and what it left unacknowledged is
    /// dispatched again then.
    PeerGone,
    /// Anything else: the channel cannot be trusted; the worker is ended.
    Broken,
}

/// What a thread worker's queue gets next.
#[derive(Debug)]
pub(crate) enum ThreadStep<C> {
    /// This connection (say [`Core::thread_lost`] if the queue is closed).
    Deliver(Handoff<C>),
    /// Close the queue: the thread's `incoming()` ends after what is queued.
    Drain,
    /// Nothing now.
    Idle,
}

impl<C> Core<C> {
    /// Whether nothing more can reach a worker, given whether the driver's side is idle (no
    /// accept armed, no connection being peeked at): only then may `DRAIN` go out (to each
    /// worker after what is routed to it). A gone worker whose channel is still to be read to
    /// its end may leave connections to route again: not before that. (A worker that dies
    /// after the drains went out has only the workers not yet drained to leave its connections
    /// to: a shutdown restarts nothing.)
    pub fn routing_done(&self, front_idle: bool) -> bool {
        front_idle
            && self.waiting() == 0
            && !self
                .slots
                .iter()
                .any(|s| s.phase == Phase::Gone && s.channel && !s.violated && s.held > 0)
    }

    /// What slot `w`'s channel sends next, if it is idle and has something to say. The
    /// driver sends it and answers with [`sent`](Self::sent).
    pub fn next_send(
        &mut self,
        w: u32,
        routing_done: bool,
        now: Instant,
    ) -> Option<Outgoing<'_, C>> {
        let max = self.settings.max_batch.clamp(1, wire::MAX_CONNS);
        // A drained worker's sending side stays open while any worker may still hand back.
        let settled = self
            .slots
            .get(w as usize)
            .is_some_and(|s| s.drain == Drain::Settled);
        let settling = settled && self.slots.iter().any(Slot::may_hand_back);
        let slot = self.slots.get_mut(w as usize)?;
        if !slot.channel
            || slot.sending.is_some()
            || slot.eof
            || slot.retry_at.is_some_and(|at| at > now)
        {
            return None;
        }
        slot.retry_at = None;
        let mut drained = false;
        if slot.refusal.is_some() {
            slot.sending = Some(Sending::Refused);
        } else if slot.welcome_due {
            slot.welcome_due = false;
            slot.sending = Some(Sending::Welcome);
        } else if slot.channels_due && slot.phase == Phase::Live {
            slot.channels_due = false;
            slot.sending = Some(Sending::Channels);
        } else if slot.rehash_due && slot.phase == Phase::Live {
            slot.rehash_due = false;
            slot.sending = Some(Sending::Rehash);
        } else if slot.phase == Phase::Live && !slot.outbox.is_empty() {
            let n = slot.outbox.len().min(max);
            let mut batch = self.batches.pop().unwrap_or_default();
            batch.extend(slot.outbox.drain(..n));
            slot.sending = Some(Sending::Conns(batch));
        } else if slot.drain == Drain::Wanted && routing_done && slot.phase == Phase::Live {
            slot.drain = Drain::Sent;
            slot.sending = Some(Sending::Drain);
            drained = true;
        } else if slot.drain == Drain::Settled && routing_done && !settling {
            // Nothing can come back any more (every worker said DRAINED), and what came back
            // has gone to its key's worker: its sending side is shut.
            slot.drain = Drain::Sent;
            self.actions.push_back(Action::ShutWrite(w));
            return None;
        } else {
            return None;
        }
        if drained {
            // A drained worker takes no more connections.
            self.update_live();
        }
        let slot = &self.slots[w as usize];
        match &slot.sending {
            Some(Sending::Refused) => slot.refusal.as_deref().map(Outgoing::Refused),
            Some(Sending::Welcome) => Some(Outgoing::Welcome),
            Some(Sending::Channels) => Some(Outgoing::Channels),
            Some(Sending::Rehash) => Some(Outgoing::Rehash),
            Some(Sending::Conns(batch)) => Some(Outgoing::Conns(batch)),
            Some(Sending::Drain) => Some(Outgoing::Drain),
            Some(Sending::Acked) | None => None,
        }
    }

    /// The send on slot `w`'s channel completed.
    pub fn sent(&mut self, w: u32, result: Result<(), SendFailure>, now: Instant) {
        let slot = &mut self.slots[w as usize];
        let sending = slot.sending.take();
        let failure = match result {
            Ok(()) => None,
            // Delivered: the worker has already acknowledged it.
            Err(_) if matches!(sending, Some(Sending::Acked)) => None,
            Err(e) => Some(e),
        };
        match (sending, failure) {
            (Some(Sending::Conns(batch)), None) => slot.unacked.push_back(batch),
            (Some(Sending::Drain), None) if slot.rehashed => {
                debug!("worker {w}: drain sent; its DRAINED awaited");
                slot.drain = if slot.said_drained {
                    Drain::Settled
                } else {
                    Drain::Settling
                };
            }
            (Some(Sending::Drain), None) => {
                debug!("worker {w}: drain sent");
                self.actions.push_back(Action::ShutWrite(w));
            }
            (Some(Sending::Rehash), None) => slot.rehashed = true,
            (Some(Sending::Refused), _) => {
                // The worker reads REFUSED, then end of file, and exits; the channel's end
                // retires the slot.
                slot.refusal = None;
                slot.kill_at = Some(now + KILL_AFTER);
                self.actions.push_back(Action::ShutWrite(w));
                self.gone(w, "refused", now);
            }
            (Some(Sending::Welcome | Sending::Channels | Sending::Acked) | None, None) => {}
            (sending, Some(failure)) => {
                // Nothing of a failed send reached the worker: put it back.
                match sending {
                    Some(Sending::Conns(batch)) => {
                        for h in batch.into_iter().rev() {
                            slot.outbox.push_front(h);
                        }
                    }
                    Some(Sending::Welcome) => slot.welcome_due = true,
                    // New channels are made for the next attempt.
                    Some(Sending::Channels) => slot.channels_due = true,
                    Some(Sending::Rehash) => slot.rehash_due = true,
                    Some(Sending::Drain) => {
                        slot.drain = Drain::Wanted;
                        self.update_live();
                    }
                    _ => {}
                }
                let slot = &mut self.slots[w as usize];
                match failure.kind {
                    FailureKind::Transient => {
                        debug!(
                            "worker {w}: channel send failed ({}): retrying",
                            failure.error
                        );
                        self.metrics.send_retry();
                        slot.retry_at = Some(now + SEND_BACKOFF);
                    }
                    FailureKind::PeerGone => {
                        if slot.pid.is_some() && slot.kill_at.is_none() {
                            // Gone, or it shut its end and runs on: of no use either way.
                            slot.kill_at = Some(now + KILL_AFTER);
                            self.actions.push_back(Action::End(w, Signal::Term));
                        }
                        self.gone(
                            w,
                            &format!("its channel is closed ({})", failure.error),
                            now,
                        );
                    }
                    FailureKind::Broken => {
                        // Make sure the worker is gone, so that its channel ends and what it
                        // holds unacknowledged goes elsewhere.
                        self.end_worker(w, Signal::Kill);
                        self.gone(w, &format!("channel send failed: {}", failure.error), now);
                    }
                }
            }
        }
        self.retire_if_done(w, now);
    }

    /// Slot `w`'s worker read `DRAIN` and hands nothing back any more (`DRAINED`): its
    /// channel's sending side is shut once no worker may hand back any more and what came back
    /// has been routed (see [`next_send`](Self::next_send)). Before `DRAIN`, a protocol
    /// violation.
    pub fn drained(&mut self, w: u32) {
        let Some(slot) = self.slots.get_mut(w as usize) else {
            return;
        };
        match slot.drain {
            Drain::Settling => slot.drain = Drain::Settled,
            // It answered before the DRAIN's send completed here.
            Drain::Sent if matches!(slot.sending, Some(Sending::Drain)) => {
                slot.said_drained = true;
            }
            Drain::No | Drain::Wanted => self.violation(w, "sent DRAINED before DRAIN"),
            Drain::Sent | Drain::Settled => {}
        }
    }

    /// Slot `w`'s worker acknowledged its oldest unacknowledged `CONNS` message: `seqs` are the
    /// connections whose fds arrived; the others of that message go to the next worker by rank.
    pub fn ack<S>(&mut self, w: u32, seqs: S)
    where
        S: IntoIterator<Item = u64> + Clone,
    {
        let Some(batch) = self.oldest_unacked(w) else {
            return;
        };
        if seqs
            .clone()
            .into_iter()
            .any(|s| !batch.iter().any(|h| h.rec.seq == s))
        {
            // What this worker holds is unknown now: none of it may go to another worker.
            self.violation(w, "acknowledged a connection it was not sent");
            self.slots[w as usize].held -= batch.len();
            for h in batch {
                self.drop_handoff(h);
            }
            return;
        }
        self.settle(w, batch, |seq| seqs.clone().into_iter().any(|s| s == seq));
    }

    /// Slot `w`'s worker answered its oldest unacknowledged message as a whole: every
    /// connection in it arrived (`delivered`), or none did (Node's `NODE_HANDLE_ACK` and
    /// `NODE_HANDLE_NACK`, one handle per message).
    pub fn ack_oldest(&mut self, w: u32, delivered: bool) {
        if let Some(batch) = self.oldest_unacked(w) {
            self.settle(w, batch, |_| delivered);
        }
    }

    /// The oldest message sent to `w` and not yet acknowledged (ACKs answer `CONNS` messages
    /// in order; the ACK of the message still being sent can arrive before the send's own
    /// completion). `None`, and the worker ended, if there is none.
    fn oldest_unacked(&mut self, w: u32) -> Option<Vec<Handoff<C>>> {
        let slot = &mut self.slots[w as usize];
        if slot.violated {
            // Nothing it says counts any more: what it was sent is closed when its channel is
            // retired.
            return None;
        }
        match slot.unacked.pop_front() {
            Some(batch) => Some(batch),
            None => match slot.sending.take() {
                Some(Sending::Conns(batch)) => {
                    slot.sending = Some(Sending::Acked);
                    Some(batch)
                }
                other => {
                    slot.sending = other;
                    self.violation(w, "acknowledged a message never sent");
                    None
                }
            },
        }
    }

    /// Settles an acknowledged message: the connections `arrived` names are the worker's (the
    /// master closes its copies), the others go to the next worker by rank.
    fn settle(&mut self, w: u32, mut batch: Vec<Handoff<C>>, arrived: impl Fn(u64) -> bool) {
        self.slots[w as usize].held -= batch.len();
        let mut returned = 0u64;
        for mut h in batch.drain(..) {
            if arrived(h.rec.seq) {
                // The worker has its own copy now.
                self.actions.push_back(Action::Release(w, h.conn, h.rec));
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

    /// What thread worker `w`'s queue gets next.
    pub fn next_for_thread(&mut self, w: u32, routing_done: bool) -> ThreadStep<C> {
        let Some(slot) = self.slots.get_mut(w as usize) else {
            return ThreadStep::Idle;
        };
        if !slot.queue {
            return ThreadStep::Idle;
        }
        if let Some(h) = slot.outbox.pop_front() {
            return ThreadStep::Deliver(h);
        }
        if slot.drain == Drain::Wanted && routing_done {
            slot.queue = false;
            slot.drain = Drain::Sent;
            debug!("worker {w} (a thread) drained");
            self.update_live();
            return ThreadStep::Drain;
        }
        ThreadStep::Idle
    }

    /// Thread worker `w`'s queue holds `queued` connections its thread has not taken yet: its
    /// bound counts them.
    pub fn thread_queued(&mut self, w: u32, queued: usize) {
        if let Some(slot) = self.slots.get_mut(w as usize) {
            slot.held = slot.outbox.len() + queued;
        }
    }

    /// Thread worker `w`'s queue is closed (its thread has gone): `h`, which did not reach it,
    /// and whatever else was routed to it go elsewhere.
    pub fn thread_lost(&mut self, w: u32, h: Handoff<C>) {
        let slot = &mut self.slots[w as usize];
        slot.queue = false;
        let rest: Vec<_> = slot.outbox.drain(..).collect();
        slot.held = 0;
        error!("worker {w} (a thread) stopped taking connections: routing them elsewhere");
        if slot.phase != Phase::Gone {
            slot.phase = Phase::Gone;
            self.update_live();
        }
        for h in std::iter::once(h).chain(rest) {
            self.route(h);
        }
    }
}
