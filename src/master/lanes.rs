//! A dispatcher thread's own channels to the workers (`--threads N`): each thread hands the
//! connections it accepted to their workers itself, takes the `ACK`s and closes its copies, so
//! that no thread does per-connection work for another.
//!
//! A worker whose `HELLO` says it takes extra channels ([`wire::HELLO_CHANNELS`]) is sent one
//! per dispatcher thread in a `CHANNELS` message, right after its `WELCOME`; the thread gets the
//! other end (a *lane*). The master keeps the rules: it publishes, per slot, whether the slot is
//! a routing candidate and whether it takes connections now ([`View`]); a thread sends a
//! connection on its lane only when the key's first choice among the candidates (the same
//! rendezvous pick as the master's) takes connections now, its lane to it is open, and the lane
//! holds fewer than `--max-queue` unacknowledged connections. Everything else goes to the
//! master's core, which applies every rule (the respawn hold, spills, parking, shutdown): a
//! connection takes the thread's lane only where the core would have sent it to the same
//! worker.
//!
//! A lane follows the first channel's rules: the thread keeps its copy of each fd until the
//! `ACK` names it; what an `ACK` leaves out goes to the master to route again, away from that
//! worker; at the lane's end of file (its worker has gone) what is still unacknowledged goes to
//! the master, which routes it as it routes a dead worker's connections. A lane is read to its
//! end before that, so no acknowledged connection is ever delivered twice.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use log::{debug, error, warn};
use stickyd_ring::{InMsg, OutMsg, Ring};
use stickyd_worker::wire::{self, ConnRecord, Message};

use super::token::Token;
use super::{Handoff, now_ns};
use crate::metrics::Metrics;
use crate::route;

/// A slot is not a routing candidate (no worker, or one past its hold).
const NONE: u8 = 0;
/// A candidate that does not take connections from the threads now: its replacement is
/// awaited, or it is live and only the master may decide (a bound, a drain).
const MASTER: u8 = 1;
/// A live worker that takes connections: a thread may send it its keys' connections.
const OPEN: u8 = 2;

/// How each slot stands for the threads' routing, published by the master after every round
/// and read by the threads for every connection.
#[derive(Debug)]
pub(super) struct View {
    slots: Box<[AtomicU8]>,
}

impl View {
    pub fn new(workers: u32) -> View {
        View {
            slots: (0..workers).map(|_| AtomicU8::new(NONE)).collect(),
        }
    }

    /// Publishes slot `w`'s standing: `None` not a candidate, `Some(open)` a candidate that
    /// takes the threads' connections now (`open`) or only the master's.
    pub fn publish(&self, w: u32, standing: Option<bool>) {
        let value = match standing {
            None => NONE,
            Some(false) => MASTER,
            Some(true) => OPEN,
        };
        if let Some(slot) = self.slots.get(w as usize) {
            if slot.load(Ordering::Relaxed) != value {
                slot.store(value, Ordering::Release);
            }
        }
    }

    /// The first choice for `key_hash` among the candidates, if it takes the threads'
    /// connections now. (Reading during a change may see a mix of old and new standings: a key
    /// whose owner stays a candidate throughout is routed to it either way.)
    fn open_first(&self, key_hash: u64) -> Option<u32> {
        let standing = |w: u32| self.slots[w as usize].load(Ordering::Acquire);
        let count = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        let first = route::pick(key_hash, (0..count).filter(|&w| standing(w) != NONE))?;
        (standing(first) == OPEN).then_some(first)
    }
}

/// One lane: this thread's channel to one worker.
#[derive(Debug)]
struct Lane {
    slot: u32,
    /// Which of the slot's channel sets it belongs to (the master's count).
    generation: u64,
    fd: OwnedFd,
    /// Routed here, not yet sent.
    outbox: Vec<Handoff>,
    /// The `CONNS` message in flight, and its connections.
    sending: Option<Vec<Handoff>>,
    /// The in-flight message's `ACK` arrived before the send's own completion.
    acked_in_flight: bool,
    /// Sent and not yet acknowledged, oldest first.
    unacked: VecDeque<Vec<Handoff>>,
    /// The send buffer, when no send is in flight.
    msg: Option<OutMsg>,
    /// The receive buffer, when no receive is in flight.
    inbox: Option<InMsg>,
    /// No more sends: the worker has gone (or the lane failed).
    closed: bool,
    /// Read to its end.
    ended: bool,
    /// The worker broke the protocol on it: nothing it says counts.
    violated: bool,
}

impl Lane {
    /// Connections on this lane not yet acknowledged.
    fn held(&self) -> usize {
        self.outbox.len()
            + self.sending.as_ref().map_or(0, Vec::len)
            + self.unacked.iter().map(Vec::len).sum::<usize>()
    }
}

/// A dispatcher thread's lanes.
#[derive(Debug)]
pub(super) struct Lanes {
    view: Arc<View>,
    metrics: Arc<Metrics>,
    /// Each slot's unacknowledged lane connections, for the master's gauge.
    unacked: Arc<[AtomicUsize]>,
    max_queue: usize,
    /// Lanes by key (the token's index); `None` where one has been closed.
    lanes: Vec<Option<Lane>>,
    /// Each slot's current lane, if it has one that takes connections.
    current: Vec<Option<usize>>,
    /// Sequence numbers: this thread's number in the top 16 bits, so they stay unique per
    /// master.
    next_seq: u64,
    /// Connections for the master's core to route.
    pub back: Vec<Handoff>,
    /// Workers that broke the protocol, for the master to end.
    pub violations: Vec<super::acceptors::Violation>,
    records: Vec<ConnRecord>,
    /// Emptied batches, reused: a hand-off allocates nothing.
    pool: Vec<Vec<Handoff>>,
}

/// How many emptied batches are kept for reuse.
const POOL: usize = 64;

impl Lanes {
    pub fn new(
        thread: u32,
        view: Arc<View>,
        metrics: Arc<Metrics>,
        unacked: Arc<[AtomicUsize]>,
        max_queue: usize,
    ) -> Lanes {
        let workers = unacked.len();
        Lanes {
            view,
            metrics,
            unacked,
            max_queue,
            lanes: Vec::new(),
            current: vec![None; workers],
            next_seq: u64::from(thread) << 48,
            back: Vec::new(),
            violations: Vec::new(),
            records: Vec::with_capacity(wire::MAX_CONNS),
            pool: Vec::new(),
        }
    }

    /// A lane to slot `w`'s worker (a new one replaces the slot's current lane, which is read
    /// to its end).
    pub fn add(&mut self, ring: &mut Ring, w: u32, generation: u64, fd: OwnedFd) {
        let Some(current) = self.current.get_mut(w as usize) else {
            return;
        };
        let lane = Lane {
            slot: w,
            generation,
            fd,
            outbox: Vec::new(),
            sending: None,
            acked_in_flight: false,
            unacked: VecDeque::new(),
            msg: Some(OutMsg::with_capacity(
                wire::HEADER_LEN + wire::MAX_CONNS * wire::RECORD_LEN,
                wire::MAX_CONNS,
            )),
            inbox: Some(InMsg::new(wire::MAX_MESSAGE, 0)),
            closed: false,
            ended: false,
            violated: false,
        };
        let key = match self.lanes.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                self.lanes.push(None);
                self.lanes.len() - 1
            }
        };
        let Ok(token) = u32::try_from(key) else {
            return;
        };
        if let Some(old) = current.replace(key) {
            // The slot's previous worker: its lane takes nothing more, and is read to its end.
            if let Some(Some(old)) = self.lanes.get_mut(old) {
                old.closed = true;
            }
        }
        let lane = self.lanes[key].insert(lane);
        arm_recv(ring, token, lane);
    }

    /// Sends `h` on its worker's lane if the master's rules would send it to that worker now;
    /// otherwise gives it back, for the master.
    pub fn offer(&mut self, mut h: Handoff) -> Result<(), Handoff> {
        let Some(w) = self.view.open_first(h.rec.key_hash) else {
            return Err(h);
        };
        let Some(Some(key)) = self.current.get(w as usize) else {
            return Err(h);
        };
        let Some(Some(lane)) = self.lanes.get_mut(*key) else {
            return Err(h);
        };
        if lane.closed || lane.held() >= self.max_queue {
            return Err(h);
        }
        self.next_seq += 1;
        h.rec.seq = self.next_seq;
        lane.outbox.push(h);
        self.unacked[w as usize].fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Sends what waits on each lane that has no send in flight.
    pub fn flush(&mut self, ring: &mut Ring) {
        for (key, lane) in self.lanes.iter_mut().enumerate() {
            let Some(lane) = lane else { continue };
            if lane.outbox.is_empty() || lane.sending.is_some() {
                continue;
            }
            let Some(mut msg) = lane.msg.take() else {
                continue;
            };
            let n = lane.outbox.len().min(wire::MAX_CONNS);
            let mut batch = self.pool.pop().unwrap_or_default();
            batch.extend(lane.outbox.drain(..n));
            self.records.clear();
            self.records.extend(batch.iter().map(|h| h.rec));
            let data = msg.data_mut();
            data.clear();
            wire::encode_conns(&self.records, data);
            msg.set_fds(batch.iter().map(|h| h.conn.as_fd()));
            lane.sending = Some(batch);
            let token = Token::ChannelSend(key as u32).encode();
            ring.send_msg(lane.fd.as_fd(), msg, token);
        }
    }

    /// The send on lane `key` completed.
    pub fn on_sent(&mut self, ring: &mut Ring, key: u32, msg: OutMsg, result: io::Result<usize>) {
        let Some(Some(lane)) = self.lanes.get_mut(key as usize) else {
            return;
        };
        lane.msg = Some(msg);
        let w = lane.slot;
        let batch = lane.sending.take();
        let settled = std::mem::take(&mut lane.acked_in_flight);
        // What did not reach the worker, for the master; and what may have, to close.
        let mut back = Vec::new();
        let mut lost = Vec::new();
        match (batch, result) {
            // Settled by its ACK already.
            (_, _) if settled => {}
            (None, _) => {}
            (Some(batch), Ok(_)) if lane.violated => lost = batch,
            (Some(batch), Ok(_)) if !lane.ended => lane.unacked.push_back(batch),
            // Sent as the worker went: its channel was read to its end without an ACK for it,
            // so none of it reached the worker.
            (Some(batch), Ok(_)) => back = batch,
            (Some(batch), Err(e)) => {
                match e.raw_os_error() {
                    Some(libc::ENOBUFS | libc::ENOMEM | libc::ETOOMANYREFS | libc::EAGAIN) => {
                        debug!("worker {w}: a dispatcher thread's send failed ({e})");
                    }
                    Some(libc::EPIPE | libc::ECONNRESET | libc::ECANCELED) => lane.closed = true,
                    _ => {
                        error!("worker {w}: a dispatcher thread's channel failed: {e}");
                        lane.closed = true;
                    }
                }
                // Nothing of a failed send reached the worker: the master routes it, and
                // what waited behind it.
                back = batch;
                back.append(&mut lane.outbox);
            }
        }
        self.give_back(w, back);
        self.drop_batch(ring, w, lost);
        self.retire_if_done(ring, key);
    }

    /// The receive on lane `key` completed.
    pub fn on_recv(
        &mut self,
        ring: &mut Ring,
        key: u32,
        mut msg: InMsg,
        result: io::Result<usize>,
    ) {
        let Some(Some(lane)) = self.lanes.get_mut(key as usize) else {
            return;
        };
        let w = lane.slot;
        match result {
            Ok(0) => {
                lane.ended = true;
                lane.closed = true;
                // What it left unacknowledged never reached it (its channel has been read to
                // the end): the master routes it as it routes a dead worker's connections.
                // After a violation, what it was sent may be in use: closed instead.
                let unacked: Vec<Handoff> = lane.unacked.drain(..).flatten().collect();
                let rest: Vec<Handoff> = lane.outbox.drain(..).collect();
                if lane.violated {
                    self.drop_batch(ring, w, unacked);
                } else {
                    self.metrics.redispatched(unacked.len() as u64);
                    self.give_back(w, unacked);
                }
                self.give_back(w, rest);
            }
            Ok(_) if msg.truncated() => self.violation(ring, key, "sent an oversized message"),
            Ok(_) => match wire::decode(msg.data()) {
                Ok(Message::Ack(seqs)) => self.ack(ring, key, seqs.iter()),
                Ok(other) => {
                    let what = format!("sent a master's message: {}", other.msg_type());
                    self.violation(ring, key, &what);
                }
                Err(e) => self.violation(ring, key, &format!("sent a malformed message: {e}")),
            },
            // The worker has gone; what it sent before is still queued: read to the end.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNRESET | libc::EPIPE)) => {}
            Err(e) => {
                let what = format!("has a broken channel ({e})");
                self.violation(ring, key, &what);
            }
        }
        if let Some(Some(lane)) = self.lanes.get_mut(key as usize) {
            msg.reset();
            lane.inbox = Some(msg);
            if !lane.ended {
                arm_recv(ring, key, lane);
            }
        }
        self.retire_if_done(ring, key);
    }

    /// Lane `key`'s worker acknowledged its oldest unacknowledged `CONNS` message.
    fn ack(&mut self, ring: &mut Ring, key: u32, seqs: impl Iterator<Item = u64> + Clone) {
        let Some(Some(lane)) = self.lanes.get_mut(key as usize) else {
            return;
        };
        if lane.violated {
            // Nothing it says counts any more.
            return;
        }
        let w = lane.slot;
        let batch = match lane.unacked.pop_front() {
            Some(batch) => batch,
            None if lane.sending.is_some() && !lane.acked_in_flight => {
                // The ACK of the message still being sent can come before the send's own
                // completion.
                lane.acked_in_flight = true;
                lane.sending.take().unwrap_or_default()
            }
            None => return self.violation(ring, key, "acknowledged a message never sent"),
        };
        if seqs.clone().any(|s| !batch.iter().any(|h| h.rec.seq == s)) {
            self.drop_batch(ring, w, batch);
            return self.violation(ring, key, "acknowledged a connection it was not sent");
        }
        self.unacked[w as usize].fetch_sub(batch.len(), Ordering::Relaxed);
        let now = now_ns();
        let mut returned = 0u64;
        let mut delivered = 0u64;
        let mut batch = batch;
        for mut h in batch.drain(..) {
            if seqs.clone().any(|s| s == h.rec.seq) {
                delivered += 1;
                self.metrics.dispatched(w, h.rec.listener);
                let waited = now.saturating_sub(h.rec.accepted_ns);
                self.metrics.handoff(Duration::from_nanos(waited));
                // The worker has its own copy now.
                ring.close(h.conn, Token::Housekeeping.encode());
            } else {
                returned += 1;
                h.exclude = Some(w);
                self.back.push(h);
            }
        }
        if self.pool.len() < POOL {
            self.pool.push(batch);
        }
        self.metrics.thread_handoffs(delivered);
        if returned > 0 {
            self.metrics.returned(returned);
            warn!("worker {w} returned {returned} connections (its fd limit?): routing them again");
        }
    }

    /// The worker broke the protocol on lane `key`: what the lane holds unacknowledged may be
    /// in use by it, so it is never dispatched again (closed, counted as dropped); the lane
    /// takes no more connections and is read to its end; the master ends the worker, as it
    /// does when its own channel is misused.
    fn violation(&mut self, ring: &mut Ring, key: u32, what: &str) {
        let Some(Some(lane)) = self.lanes.get_mut(key as usize) else {
            return;
        };
        let w = lane.slot;
        if !lane.violated {
            let what = format!("{what} on a dispatcher thread's channel");
            self.violations.push((w, lane.generation, what));
        }
        lane.closed = true;
        lane.violated = true;
        if let Err(e) = stickyd_ring::sys::shutdown_both(lane.fd.as_fd()) {
            debug!("worker {w}: shutting a dispatcher thread's channel failed: {e}");
        }
        let unacked: Vec<Handoff> = lane.unacked.drain(..).flatten().collect();
        let rest: Vec<Handoff> = lane.outbox.drain(..).collect();
        self.drop_batch(ring, w, unacked);
        self.give_back(w, rest);
    }

    /// Closes connections given up on (counted as dropped).
    fn drop_batch(&mut self, ring: &mut Ring, w: u32, batch: Vec<Handoff>) {
        if batch.is_empty() {
            return;
        }
        self.unacked[w as usize].fetch_sub(batch.len(), Ordering::Relaxed);
        self.metrics.dropped(batch.len() as u64);
        for h in batch {
            ring.close(h.conn, Token::Housekeeping.encode());
        }
    }

    /// Hands connections that did not reach worker `w` to the master.
    fn give_back(&mut self, w: u32, batch: Vec<Handoff>) {
        if batch.is_empty() {
            return;
        }
        self.unacked[w as usize].fetch_sub(batch.len(), Ordering::Relaxed);
        self.back.extend(batch);
    }

    /// Closes lane `key` once it has been read to its end and nothing is in flight on it.
    fn retire_if_done(&mut self, ring: &mut Ring, key: u32) {
        let Some(slot) = self.lanes.get_mut(key as usize) else {
            return;
        };
        let done = slot
            .as_ref()
            .is_some_and(|l| l.ended && l.msg.is_some() && l.inbox.is_some());
        if !done {
            return;
        }
        if let Some(lane) = slot.take() {
            if self.current.get(lane.slot as usize) == Some(&Some(key as usize)) {
                self.current[lane.slot as usize] = None;
            }
            ring.close(lane.fd, Token::Housekeeping.encode());
        }
    }

    /// Whether every connection routed to a lane has been sent (or given back).
    pub fn all_sent(&self) -> bool {
        self.lanes
            .iter()
            .flatten()
            .all(|l| l.outbox.is_empty() && l.sending.is_none())
    }

    /// Whether nothing is on its way on any lane: no connection waits, is in flight or is
    /// unacknowledged.
    pub fn idle(&self) -> bool {
        self.lanes.iter().flatten().all(|l| l.held() == 0)
    }

    /// Gives up on everything the lanes hold (a shutdown that ran out of time): closed,
    /// counted as dropped. Returns how many.
    pub fn abandon(&mut self, ring: &mut Ring) -> usize {
        let mut n = 0;
        for key in 0..self.lanes.len() {
            let Some(Some(lane)) = self.lanes.get_mut(key) else {
                continue;
            };
            let w = lane.slot;
            lane.closed = true;
            let mut all: Vec<Handoff> = lane.unacked.drain(..).flatten().collect();
            all.append(&mut lane.outbox);
            n += all.len();
            self.drop_batch(ring, w, all);
        }
        n
    }
}

fn arm_recv(ring: &mut Ring, key: u32, lane: &mut Lane) {
    if let Some(inbox) = lane.inbox.take() {
        ring.recv_msg(lane.fd.as_fd(), inbox, Token::ChannelRecv(key).encode());
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::os::fd::AsFd;
    use std::time::{Duration, Instant};

    use stickyd_ring::{InMsg, Outcome, Ring, sys};
    use stickyd_worker::wire::{self, ConnRecord, Message};

    use super::*;

    /// The worker's side of the test's lane is received with this token.
    const WORKER: u64 = u64::MAX;

    struct Harness {
        ring: Ring,
        lanes: Lanes,
        view: Arc<View>,
        metrics: Arc<Metrics>,
        /// The worker's end of the lane.
        worker: OwnedFd,
    }

    /// A thread's lanes with one lane to slot 0 (of 2, both live), generation 7; on io_uring,
    /// or on epoll with `STICKYD_TEST_BACKEND=epoll`.
    fn harness() -> Harness {
        let mut ring = match std::env::var("STICKYD_TEST_BACKEND").as_deref() {
            Ok("epoll") => Ring::epoll().expect("epoll"),
            _ => Ring::uring(64).expect("io_uring"),
        };
        let view = Arc::new(View::new(2));
        view.publish(0, Some(true));
        view.publish(1, Some(true));
        let metrics = Arc::new(Metrics::new(&["l0".to_owned()], 2));
        let unacked: Arc<[AtomicUsize]> = (0..2).map(|_| AtomicUsize::new(0)).collect();
        let mut lanes = Lanes::new(1, Arc::clone(&view), Arc::clone(&metrics), unacked, 4);
        let (ours, worker) = sys::seqpacket_pair().expect("socketpair");
        lanes.add(&mut ring, 0, 7, ours);
        Harness {
            ring,
            lanes,
            view,
            metrics,
            worker,
        }
    }

    /// A key hash whose first choice among slots 0 and 1 is `w`.
    fn key_of(w: u32) -> u64 {
        (0u64..)
            .find(|&h| route::pick(h, [0, 1]) == Some(w))
            .expect("a key")
    }

    fn handoff(key_hash: u64) -> Handoff {
        Handoff {
            conn: sys::eventfd().expect("an fd to pass"),
            rec: ConnRecord {
                seq: 0,
                key_hash,
                accepted_ns: 0,
                peer: SocketAddr::from(([127, 0, 0, 1], 40000)),
                listener: 0,
                proxy_len: 0,
            },
            exclude: None,
        }
    }

    impl Harness {
        /// Runs the ring until the worker's end has received a message: its sequence numbers
        /// and the fds it carried.
        fn worker_receives(&mut self) -> (Vec<u64>, usize) {
            self.lanes.flush(&mut self.ring);
            self.ring.recv_msg(
                self.worker.as_fd(),
                InMsg::new(wire::MAX_MESSAGE, wire::MAX_CONNS),
                WORKER,
            );
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                self.ring
                    .wait_for(1, Some(Duration::from_millis(50)))
                    .expect("wait");
                while let Some(c) = self.ring.next_completion() {
                    if c.token == WORKER {
                        let Outcome::ReceivedMsg { mut msg, result } = c.outcome else {
                            panic!("{:?}", c.outcome)
                        };
                        assert!(result.expect("recvmsg") > 0);
                        let fds = msg.take_fds().len();
                        let Ok(Message::Conns(records)) = wire::decode(msg.data()) else {
                            panic!("not a CONNS message");
                        };
                        return (records.iter().map(|r| r.seq).collect(), fds);
                    }
                    self.complete(c);
                }
            }
            panic!("the worker received nothing");
        }

        /// Runs the ring for a while, handing its completions to the lanes.
        fn settle(&mut self) {
            for _ in 0..10 {
                self.ring
                    .wait_for(1, Some(Duration::from_millis(20)))
                    .expect("wait");
                while let Some(c) = self.ring.next_completion() {
                    self.complete(c);
                }
            }
        }

        fn complete(&mut self, c: stickyd_ring::Completion) {
            match (Token::decode(c.token), c.outcome) {
                (Some(Token::ChannelSend(k)), Outcome::Sent { msg, result }) => {
                    self.lanes.on_sent(&mut self.ring, k, msg, result)
                }
                (Some(Token::ChannelRecv(k)), Outcome::ReceivedMsg { msg, result }) => {
                    self.lanes.on_recv(&mut self.ring, k, msg, result)
                }
                _ => {}
            }
        }

        fn ack(&self, seqs: &[u64]) {
            let mut out = Vec::new();
            wire::encode_ack(seqs, &mut out);
            sys::send_now(self.worker.as_fd(), &out).expect("send the ACK");
        }

        fn rendered(&self) -> String {
            let mut text = String::new();
            self.metrics.render(&mut text);
            text
        }
    }

    #[test]
    fn an_acknowledged_connection_is_the_workers_and_counted() {
        let mut h = harness();
        assert!(h.lanes.offer(handoff(key_of(0))).is_ok());
        let (seqs, fds) = h.worker_receives();
        assert_eq!(fds, 1);
        // Numbered in this thread's own space: unique per master.
        assert_eq!(seqs.len(), 1);
        assert_eq!(seqs[0] >> 48, 1);
        assert!(!h.lanes.idle());
        h.ack(&seqs);
        h.settle();
        assert!(h.lanes.idle());
        assert!(h.lanes.back.is_empty());
        let text = h.rendered();
        assert!(text.contains("stickyd_thread_handoffs_total 1\n"), "{text}");
        assert!(
            text.contains("stickyd_connections_dispatched_total{worker=\"0\",listener=\"l0\"} 1\n")
        );
        assert_eq!(h.lanes.unacked[0].load(Ordering::Relaxed), 0);
    }

    #[test]
    fn only_the_first_choice_taking_connections_now_gets_the_threads_connections() {
        let mut h = harness();
        // Slot 1 has no lane from this thread: the master's.
        assert!(h.lanes.offer(handoff(key_of(1))).is_err());
        // Slot 0's replacement is awaited: its keys wait in the master.
        h.view.publish(0, Some(false));
        assert!(h.lanes.offer(handoff(key_of(0))).is_err());
        // Slot 0 gone for good: its keys go to slot 1, whose lane this thread does not have.
        h.view.publish(0, None);
        assert!(h.lanes.offer(handoff(key_of(0))).is_err());
        h.view.publish(0, Some(true));
        // At --max-queue (4) unacknowledged on the lane: the master decides (a spill).
        for _ in 0..4 {
            assert!(h.lanes.offer(handoff(key_of(0))).is_ok());
        }
        assert!(h.lanes.offer(handoff(key_of(0))).is_err());
    }

    #[test]
    fn what_the_ack_leaves_out_goes_back_to_the_master_away_from_that_worker() {
        let mut h = harness();
        for _ in 0..2 {
            assert!(h.lanes.offer(handoff(key_of(0))).is_ok());
        }
        let (seqs, fds) = h.worker_receives();
        assert_eq!((seqs.len(), fds), (2, 2));
        h.ack(&seqs[..1]);
        h.settle();
        assert_eq!(h.lanes.back.len(), 1);
        assert_eq!(h.lanes.back[0].rec.seq, seqs[1]);
        assert_eq!(h.lanes.back[0].exclude, Some(0));
        assert!(h.rendered().contains("stickyd_returned_total 1\n"));
        assert!(h.lanes.idle());
    }

    #[test]
    fn at_the_end_of_a_lane_what_is_unacknowledged_goes_back_to_the_master() {
        let mut h = harness();
        assert!(h.lanes.offer(handoff(key_of(0))).is_ok());
        let (seqs, _) = h.worker_receives();
        // The worker dies without acknowledging.
        let Harness { worker, .. } = &mut h;
        let dead = std::mem::replace(worker, sys::eventfd().expect("fd"));
        drop(dead);
        h.settle();
        assert_eq!(h.lanes.back.len(), 1);
        assert_eq!(h.lanes.back[0].rec.seq, seqs[0]);
        assert_eq!(h.lanes.back[0].exclude, None);
        assert!(h.rendered().contains("stickyd_redispatched_total 1\n"));
        // The lane is gone: the next connection is the master's.
        assert!(h.lanes.offer(handoff(key_of(0))).is_err());
        assert!(h.lanes.idle());
    }

    #[test]
    fn a_worker_acknowledging_what_it_was_not_sent_is_reported_and_its_lane_closed() {
        let mut h = harness();
        assert!(h.lanes.offer(handoff(key_of(0))).is_ok());
        let _ = h.worker_receives();
        h.ack(&[12345]);
        h.settle();
        assert_eq!(h.lanes.violations.len(), 1);
        let (w, generation, what) = &h.lanes.violations[0];
        assert_eq!((*w, *generation), (0, 7));
        assert!(
            what.contains("acknowledged a connection it was not sent"),
            "{what}"
        );
        // What it may have touched is never sent elsewhere: closed, counted as dropped.
        assert!(h.lanes.back.is_empty());
        assert!(h.rendered().contains("stickyd_dropped_total 1\n"));
        assert!(h.lanes.offer(handoff(key_of(0))).is_err());
    }

    #[test]
    fn a_new_lane_to_a_slot_replaces_the_old_one_which_is_read_to_its_end() {
        let mut h = harness();
        assert!(h.lanes.offer(handoff(key_of(0))).is_ok());
        let (seqs, _) = h.worker_receives();
        let (ours, _theirs) = sys::seqpacket_pair().expect("socketpair");
        h.lanes.add(&mut h.ring, 0, 8, ours);
        // The old lane's connection is still its worker's to acknowledge.
        h.ack(&seqs);
        h.settle();
        assert!(h.lanes.back.is_empty());
        assert!(h.rendered().contains("stickyd_thread_handoffs_total 1\n"));
        // New connections take the new lane.
        assert!(h.lanes.offer(handoff(key_of(0))).is_ok());
        assert_eq!(h.lanes.current[0], Some(1));
    }
}
