//! The front of the dispatcher: accepting connections and peeking at them until their key is
//! known. A [`Front`] drives its listeners' accepts and its pending connections on the ring it
//! is given, and puts each connection whose key is known in [`Front::routed`], for its owner
//! to route: the master's own loop, or a dispatcher thread that passes them to the master
//! (`--threads`, see [`super::acceptors`]).
//!
//! Alone on its listeners, a front arms one multishot accept per listener. When several loops
//! share the listeners (dispatcher threads), each arms [`SHARED_ACCEPTS`] single-shot accepts
//! per listener instead: a multishot accept keeps its place among the listener's waiters and
//! empties the backlog each time it is woken, so the loop that armed first would take every
//! connection; single-shot accepts go to the back of the line once they have taken one, so the
//! loops take turns, and a busy loop, which arms again later, takes fewer.
//!
//! Under load a front keeps no accept armed at all ([`Front::pace`]): the kernel wakes the
//! loop for every connection an armed accept takes (an accept is an exclusive waiter, and
//! io_uring never defers those wake-ups to batch them), so the loop would wake about once per
//! connection whatever it waits for. A busy loop takes what waits in the backlogs itself, once
//! per round, and sleeps until a batch of completions or its linger time has passed.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, warn};
use stickyd_ring::{BackendKind, OpId, Ring, sys};
use stickyd_worker::wire::ConnRecord;

use super::Handoff;
use super::conns::Conns;
use super::token::Token;
use super::{ACCEPT_BACKOFF, now_ns};
use crate::keys::{Key, fold_addr};
use crate::metrics::Metrics;
use crate::route;
use crate::verdict::{Examiner, Finality, Refusal, Verdict};

/// The most connections a front peeks at at once: beyond, it stops accepting (clients wait in
/// the backlog), so the memory for pending connections and their operations stays bounded.
pub(super) const MAX_PENDING: usize = 65_536;

/// Single-shot accepts a front keeps armed per listener when it shares the listeners with
/// other loops: enough for one wake of the loop to take several connections.
pub(super) const SHARED_ACCEPTS: usize = 4;

/// How often a front that watches its listeners' backlogs looks (see
/// [`Front::watching_backlogs`]).
const BACKLOG_CHECK: Duration = Duration::from_millis(200);

/// The most connections a busy front takes from its listeners' backlogs in one round (see
/// [`Front::pace`]); what is left waits for the next round.
const BACKLOG_BUDGET: usize = 64;

/// A listening socket and its accept.
#[derive(Debug)]
pub(super) struct Listener {
    pub name: String,
    pub addr: SocketAddr,
    pub socket: Option<TcpListener>,
    /// The accepts armed on it.
    accepts: Vec<OpId>,
    /// A cancel of every accept has been submitted.
    cancelling: bool,
    /// When to arm the accept again after an error.
    rearm_at: Option<Instant>,
    /// The last accept error was logged (logged once until accept works again).
    error_logged: bool,
    /// The accept ended by itself (an error, or a full completion queue): arming it again is
    /// counted as a re-arm.
    ended: bool,
}

impl Listener {
    /// A listener serving `socket`, bound at `addr`.
    pub fn new(name: String, addr: SocketAddr, socket: TcpListener) -> Listener {
        Listener {
            name,
            addr,
            socket: Some(socket),
            accepts: Vec::new(),
            cancelling: false,
            rearm_at: None,
            error_logged: false,
            ended: false,
        }
    }

    /// An accept on it failed with `e`: logged once until accept works again; it is tried
    /// again after [`ACCEPT_BACKOFF`] (the caller says when an accept is due again).
    fn failed(&mut self, e: &io::Error) {
        if !self.error_logged {
            warn!(
                "accept on {} ({}) failed: {e}; retrying every {}ms",
                self.addr,
                self.name,
                ACCEPT_BACKOFF.as_millis()
            );
            self.error_logged = true;
        }
    }
}

/// Listeners, the connections accepted from them and not yet routed, and how to examine them.
#[derive(Debug)]
pub(super) struct Front {
    pub listeners: Vec<Listener>,
    /// What to do with a pending connection given its peeked bytes, by listener.
    examiners: Vec<Examiner>,
    conns: Conns,
    /// Peek buffers not in use: a buffer is held only while a peek is in flight.
    buffers: Vec<Vec<u8>>,
    expired: Vec<usize>,
    /// Whether the listeners should be accepting (the last decision given to `set_accepting`).
    accepting: bool,
    /// The listeners are closed for good (a shutdown).
    closing: bool,
    /// Accept pauses are counted in the metrics (by the master's own front only).
    count_pauses: bool,
    /// The owner's loop is busy: no accept is armed, and the front takes connections from the
    /// backlogs itself once per round (see [`Front::pace`]).
    polling: bool,
    /// Single-shot accepts armed per listener; 0: one multishot accept.
    shared_accepts: usize,
    /// When to look at the listeners' backlogs next (see [`Front::watching_backlogs`]).
    backlog_check: Option<Instant>,
    /// The front watches its listeners' backlogs.
    watch_backlogs: bool,
    /// Some accept completed since the last look.
    accepted_lately: bool,
    peek_timeout: Duration,
    max_peek: usize,
    metrics: Arc<Metrics>,
    /// Connections whose key is known, for the owner to route (their `seq` is not set yet).
    pub routed: Vec<Handoff>,
}

impl Front {
    /// A front for `listeners`, examined by `examiners` (one per listener, same order).
    pub fn new(
        listeners: Vec<Listener>,
        examiners: Vec<Examiner>,
        peek_timeout: Duration,
        max_peek: usize,
        metrics: Arc<Metrics>,
    ) -> Front {
        Front {
            listeners,
            examiners,
            conns: Conns::default(),
            buffers: Vec::new(),
            expired: Vec::new(),
            accepting: false,
            closing: false,
            count_pauses: true,
            polling: false,
            shared_accepts: 0,
            backlog_check: None,
            watch_backlogs: false,
            accepted_lately: false,
            peek_timeout,
            max_peek,
            metrics,
            routed: Vec::new(),
        }
    }

    /// The same front, not counting accept pauses (a dispatcher thread's: the master counts).
    pub fn without_pause_count(self) -> Front {
        Front {
            count_pauses: false,
            ..self
        }
    }

    /// The same front, sharing its listeners with other loops: single-shot accepts (see the
    /// [module](self) documentation).
    pub fn sharing_listeners(self) -> Front {
        Front {
            shared_accepts: SHARED_ACCEPTS,
            ..self
        }
    }

    /// The same front, watching its listeners' backlogs: every [`BACKLOG_CHECK`] while it
    /// accepts, if no accept has completed since the last look and connections wait in a
    /// listener's accept queue, its accepts are armed again. An accept waits as an exclusive
    /// waiter, and the kernel wakes one exclusive waiter per connection; a waiter of another
    /// process that is being cancelled at that moment (an upgrade's predecessor closing its
    /// listeners) takes the wake-up with it, and the connection waits for the next one. Armed
    /// again, an accept first tries at once and takes it.
    pub fn watching_backlogs(self) -> Front {
        Front {
            watch_backlogs: true,
            ..self
        }
    }

    /// Connections accepted and not yet routed.
    pub fn pending(&self) -> usize {
        self.conns.len()
    }

    /// Whether nothing more can come out of this front: no accept armed and nothing pending.
    pub fn idle(&self) -> bool {
        self.conns.is_empty() && self.listeners.iter().all(|l| l.accepts.is_empty())
    }

    /// Whether the pending connections leave room to accept more.
    pub fn has_room(&self) -> bool {
        self.conns.len() < MAX_PENDING
    }

    // ---- accepting -------------------------------------------------------------------------

    pub fn on_accept(
        &mut self,
        ring: &mut Ring,
        l: u32,
        op: OpId,
        fd: io::Result<OwnedFd>,
        more: bool,
    ) {
        let closing = self.closing;
        let single = self.shared_accepts > 0;
        let Some(listener) = self.listeners.get_mut(l as usize) else {
            return;
        };
        if !more {
            listener.accepts.retain(|&a| a != op);
            if listener.accepts.is_empty() {
                listener.cancelling = false;
                if closing {
                    // The listener closes: clients still in its backlog are reset.
                    listener.socket = None;
                    listener.rearm_at = None;
                }
            }
        }
        // The accept ended by itself (not by our cancel, nor a single-shot accept's normal
        // end): arming it again is a re-arm.
        let cancelled = matches!(&fd, Err(e) if e.raw_os_error() == Some(libc::ECANCELED));
        let taken = single && fd.is_ok();
        if !more && !cancelled && !taken {
            listener.ended = true;
        }
        match fd {
            Ok(fd) => {
                listener.error_logged = false;
                self.accepted_lately = true;
                self.admit(ring, l as u16, fd, None);
                if taken {
                    // Back in line for the next connection.
                    let accepting = self.accepting;
                    self.set_accepting(ring, accepting);
                }
            }
            Err(_) if cancelled => {}
            Err(e) => {
                listener.failed(&e);
                if !more && !closing {
                    listener.rearm_at = Some(Instant::now() + ACCEPT_BACKOFF);
                }
            }
        }
    }

    /// Takes in an accepted connection (from `peer`, if the accept said): routes it at once
    /// when the key is the client address, or starts peeking.
    fn admit(&mut self, ring: &mut Ring, listener: u16, fd: OwnedFd, peer: Option<SocketAddr>) {
        self.metrics.accepted(listener);
        self.take_in(ring, listener, fd, peer, false);
    }

    /// Paces accepting by the owner's load: called once per round of its loop, after the
    /// round's `completions`, before the connections found are routed. Returns whether the
    /// loop is busy, and should wait for a batch rather than for the first completion.
    ///
    /// A round with at least 2 completions makes the loop busy: its accepts are cancelled, and
    /// from then on each round takes what waits in the listeners' backlogs with a non-blocking
    /// `accept4` (up to [`BACKLOG_BUDGET`]), so that connections arriving while the loop works
    /// or sleeps on its batch do not wake it one by one (see the [module](self) documentation).
    /// A round that had nothing to do, no completion to speak of and no connection waiting,
    /// ends it: the accepts are armed again and the loop sleeps until the next connection.
    ///
    /// Only on io_uring: an epoll loop's waits count in whole milliseconds, so connections would
    /// wait in the backlog up to 1 ms between rounds (measured: 20,600 connections per second
    /// under W1 against 24,300 with the accept armed); it keeps its accept armed, and readiness
    /// brings it up to 64 connections per wake.
    pub fn pace(&mut self, ring: &mut Ring, completions: usize) -> bool {
        if completions >= 2 && ring.kind() == BackendKind::Uring {
            self.set_polling(ring, true);
        }
        let taken = self.take_backlogs(ring);
        let busy = completions >= 2 || taken > 0;
        if !busy {
            self.set_polling(ring, false);
        }
        busy
    }

    fn set_polling(&mut self, ring: &mut Ring, polling: bool) {
        if polling != self.polling {
            self.polling = polling;
            let accepting = self.accepting;
            self.set_accepting(ring, accepting);
        }
    }

    /// While polling, takes the connections waiting in the listeners' backlogs, up to
    /// [`BACKLOG_BUDGET`] and the room for pending connections. A listener whose accept failed
    /// is left alone until its back-off has passed. Returns how many it took.
    fn take_backlogs(&mut self, ring: &mut Ring) -> usize {
        if !self.polling || !self.accepting || self.closing {
            return 0;
        }
        let mut now = None;
        let mut taken = 0;
        for l in 0..self.listeners.len() {
            loop {
                if taken >= BACKLOG_BUDGET || !self.has_room() {
                    return taken;
                }
                let listener = &mut self.listeners[l];
                if let Some(at) = listener.rearm_at {
                    if at > *now.get_or_insert_with(Instant::now) {
                        break;
                    }
                    listener.rearm_at = None;
                }
                if listener.ended {
                    // Accepting again after an error, as an armed accept would be re-armed.
                    self.metrics.accept_rearm();
                    listener.ended = false;
                }
                let Some(socket) = &listener.socket else {
                    break;
                };
                match socket.accept() {
                    Ok((stream, peer)) => {
                        listener.error_logged = false;
                        self.accepted_lately = true;
                        self.metrics.backlog_accept();
                        self.admit(ring, l as u16, OwnedFd::from(stream), Some(peer));
                        taken += 1;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // The client gave up while it waited in the backlog.
                    Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                    Err(e) => {
                        listener.failed(&e);
                        listener.ended = true;
                        listener.rearm_at = Some(Instant::now() + ACCEPT_BACKOFF);
                        break;
                    }
                }
            }
        }
        taken
    }

    /// Takes in a kept-alive connection a worker handed back (`--rehash-per-request`), at a
    /// request boundary: examined and routed as a new connection (not counted as accepted
    /// again). If its next request has not begun by the peek deadline, it is closed, as a
    /// server closes an idle kept-alive connection.
    pub fn readmit(&mut self, ring: &mut Ring, listener: u16, fd: OwnedFd) {
        self.metrics.handback();
        self.take_in(ring, listener, fd, None, true);
    }

    fn take_in(
        &mut self,
        ring: &mut Ring,
        listener: u16,
        fd: OwnedFd,
        peer: Option<SocketAddr>,
        kept_alive: bool,
    ) {
        let (fd, peer) = match peer {
            Some(peer) => (fd, peer),
            None => {
                let stream = TcpStream::from(fd);
                match stream.peer_addr() {
                    Ok(peer) => (OwnedFd::from(stream), peer),
                    Err(e) => {
                        debug!("accepted connection gone before routing: {e}");
                        return;
                    }
                }
            }
        };
        let accepted_ns = now_ns();
        let Some(examiner) = self.examiners.get(usize::from(listener)) else {
            return;
        };
        if examiner.refuses_peer(peer) {
            debug!("{peer} is not a trusted proxy: closed");
            self.metrics.proxy_untrusted();
            ring.close(fd, Token::Housekeeping.encode());
            return;
        }
        if examiner.routes_at_accept() {
            let hash = route::key_hash(Key::Addr(fold_addr(peer.ip())));
            self.routed
                .push(handoff(fd, listener, peer, accepted_ns, hash, 0));
            return;
        }
        let deadline = Instant::now() + self.peek_timeout; // bounded by the CLI
        let key = self
            .conns
            .insert(fd, listener, peer, accepted_ns, deadline, kept_alive);
        self.peek(ring, key);
    }

    /// Arms or cancels the listeners' accepts. A pause (`accepting` turning false outside a
    /// shutdown) is counted.
    pub fn set_accepting(&mut self, ring: &mut Ring, accepting: bool) {
        let accepting = accepting && !self.closing && self.has_room();
        if self.accepting && !accepting && !self.closing && self.count_pauses {
            self.metrics.accept_pause();
        }
        self.accepting = accepting;
        // The clock only matters to a listener backing off after an error.
        let now = self
            .listeners
            .iter()
            .any(|l| l.rearm_at.is_some())
            .then(Instant::now);
        for (i, listener) in self.listeners.iter_mut().enumerate() {
            let Some(socket) = &listener.socket else {
                continue;
            };
            if !accepting {
                // A back-off pending from an accept error is moot while nothing is accepted.
                listener.rearm_at = None;
            }
            let wanted = self.shared_accepts.max(1);
            let due = listener
                .rearm_at
                .is_none_or(|at| now.is_some_and(|now| at <= now));
            // A busy front takes connections from the backlog itself (see `pace`).
            let armed = accepting && !self.polling;
            if armed && due && !listener.cancelling && listener.accepts.len() < wanted {
                if listener.ended {
                    self.metrics.accept_rearm();
                    listener.ended = false;
                }
                listener.rearm_at = None;
                let token = Token::Accept(i as u32).encode();
                while listener.accepts.len() < wanted {
                    let op = if self.shared_accepts > 0 {
                        ring.accept(socket.as_fd(), token)
                    } else {
                        ring.accept_multi(socket.as_fd(), token)
                    };
                    listener.accepts.push(op);
                }
            } else if !armed && !listener.accepts.is_empty() && !listener.cancelling {
                listener.cancelling = true;
                for &op in &listener.accepts {
                    ring.cancel(op, Token::Housekeeping.encode());
                }
            }
        }
    }

    /// Stops accepting for good and closes the listeners (once their accepts have ended); the
    /// connections already accepted are still peeked at and routed.
    pub fn close(&mut self, ring: &mut Ring) {
        self.closing = true;
        for listener in &mut self.listeners {
            if listener.accepts.is_empty() {
                listener.socket = None;
            } else if !listener.cancelling {
                listener.cancelling = true;
                for &op in &listener.accepts {
                    ring.cancel(op, Token::Housekeeping.encode());
                }
            }
            listener.rearm_at = None;
        }
    }

    // ---- peeking ---------------------------------------------------------------------------

    fn peek(&mut self, ring: &mut Ring, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let mut buf = self
            .buffers
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.max_peek));
        buf.clear();
        let op = ring.recv(
            conn.fd.as_fd(),
            buf,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
            Token::Conn(key as u32).encode(),
        );
        conn.op = Some(op);
        conn.polling = false;
    }

    /// Sleeps until more bytes than `peeked` arrive or the client hangs up: TCP poll honours
    /// `SO_RCVLOWAT`, and a FIN wakes it whatever the low-water mark says.
    fn wait_for_more(&mut self, ring: &mut Ring, key: usize, peeked: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let want = u32::try_from(peeked + 1).unwrap_or(u32::MAX);
        if want != conn.lowat {
            if let Err(e) = sys::set_rcvlowat(conn.fd.as_fd(), want) {
                debug!("SO_RCVLOWAT on a pending connection failed: {e}");
                self.close_conn(ring, key);
                return;
            }
            conn.lowat = want;
        }
        let op = ring.poll(
            conn.fd.as_fd(),
            (libc::POLLIN | libc::POLLRDHUP) as u32,
            Token::Conn(key as u32).encode(),
        );
        conn.op = Some(op);
        conn.polling = true;
        self.conns.time(key);
    }

    pub fn on_peek(
        &mut self,
        ring: &mut Ring,
        key: usize,
        buf: Vec<u8>,
        result: io::Result<usize>,
    ) {
        let Some(conn) = self.conns.get_mut(key) else {
            self.buffers.push(buf);
            return;
        };
        conn.op = None;
        let tcp_peer = conn.peer;
        let examiner = &self.examiners[usize::from(conn.listener)];
        let finality = |n: usize| {
            if conn.hup {
                Finality::HungUp
            } else if conn.expired || n >= self.max_peek {
                Finality::GaveUp
            } else {
                Finality::Open
            }
        };
        let verdict = match result {
            // Zero bytes from a peek: the client closed without sending anything.
            Ok(0) => Verdict::Close(Refusal::Empty),
            Ok(n) => examiner.examine(&buf, tcp_peer, finality(n)),
            // An idle kept-alive connection handed back: its next request never came.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && conn.kept_alive && conn.expired => {
                Verdict::Close(Refusal::Empty)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                examiner.examine(&[], tcp_peer, finality(0))
            }
            Err(e) => {
                debug!("peek from {tcp_peer} failed: {e}");
                Verdict::Close(Refusal::Empty)
            }
        };
        let peeked = buf.len();
        self.buffers.push(buf);
        match verdict {
            Verdict::NeedMore => self.wait_for_more(ring, key, peeked),
            Verdict::Route {
                hash,
                fallback,
                peer,
                proxy_len,
            } => {
                if fallback {
                    self.metrics.fallback();
                }
                self.route_conn(ring, key, hash, peer, proxy_len);
            }
            Verdict::Close(why) => {
                match why {
                    Refusal::Empty => {}
                    Refusal::NoKey => self.metrics.no_key_closed(),
                    Refusal::MalformedProxy(_)
                    | Refusal::IncompleteProxy
                    | Refusal::OversizedProxy => self.metrics.proxy_malformed(),
                }
                debug!("connection from {tcp_peer} closed: {why:?}");
                self.close_conn(ring, key);
            }
        }
    }

    pub fn on_poll(&mut self, ring: &mut Ring, key: usize, result: io::Result<u32>) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.op = None;
        conn.polling = false;
        match result {
            Ok(revents) => {
                if revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) as u32 != 0 {
                    conn.hup = true;
                }
                self.peek(ring, key);
            }
            // Cancelled at the deadline: one last peek decides.
            Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => self.peek(ring, key),
            Err(e) => {
                debug!("poll on a pending connection failed: {e}");
                self.close_conn(ring, key);
            }
        }
    }

    fn close_conn(&mut self, ring: &mut Ring, key: usize) {
        if let Some(conn) = self.conns.remove(key) {
            ring.close(conn.fd, Token::Housekeeping.encode());
        }
    }

    /// A pending connection's key is known: restore the kernel's default low-water mark (the
    /// worker reads normally) and pass it on.
    fn route_conn(
        &mut self,
        ring: &mut Ring,
        key: usize,
        hash: u64,
        peer: SocketAddr,
        proxy_len: u16,
    ) {
        let Some(conn) = self.conns.remove(key) else {
            return;
        };
        if conn.lowat != 1 {
            if let Err(e) = sys::set_rcvlowat(conn.fd.as_fd(), 1) {
                debug!("resetting SO_RCVLOWAT failed: {e}");
                ring.close(conn.fd, Token::Housekeeping.encode());
                return;
            }
        }
        let h = handoff(
            conn.fd,
            conn.listener,
            peer,
            conn.accepted_ns,
            hash,
            proxy_len,
        );
        self.routed.push(h);
    }

    // ---- deadlines -------------------------------------------------------------------------

    /// The earliest peek deadline, or a listener's re-arm after an error.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        let rearm = self
            .listeners
            .iter()
            .filter(|l| l.socket.is_some())
            .filter_map(|l| l.rearm_at)
            .min();
        let backlog = self.backlog_check.filter(|_| self.accepting);
        rearm
            .into_iter()
            .chain(self.conns.next_deadline())
            .chain(backlog)
            .min()
    }

    /// Looks at the listeners' backlogs, if it is time (see [`Front::watching_backlogs`]).
    fn check_backlogs(&mut self, ring: &mut Ring, now: Instant) {
        if !self.watch_backlogs || !self.accepting {
            self.backlog_check = None;
            return;
        }
        let Some(at) = self.backlog_check else {
            self.backlog_check = Some(now + BACKLOG_CHECK);
            self.accepted_lately = false;
            return;
        };
        if now < at {
            return;
        }
        self.backlog_check = Some(now + BACKLOG_CHECK);
        if std::mem::take(&mut self.accepted_lately) {
            return;
        }
        for listener in &mut self.listeners {
            let Some(socket) = &listener.socket else {
                continue;
            };
            if listener.accepts.is_empty() || listener.cancelling {
                continue;
            }
            match sys::accept_queue_len(socket.as_fd()) {
                Ok(0) => {}
                Ok(waiting) => {
                    debug!(
                        "{} connections wait on {} ({}) with no accept woken: arming again",
                        waiting, listener.addr, listener.name
                    );
                    self.metrics.accept_rearm();
                    listener.cancelling = true;
                    for &op in &listener.accepts {
                        ring.cancel(op, Token::Housekeeping.encode());
                    }
                }
                Err(e) => debug!("{e}"),
            }
        }
    }

    /// Ends the peeks whose deadline has passed: their poll is cancelled, and the last peek
    /// decides.
    pub fn expire(&mut self, ring: &mut Ring, now: Instant) {
        self.check_backlogs(ring, now);
        let mut expired = std::mem::take(&mut self.expired);
        expired.clear();
        self.conns.expire(now, &mut expired);
        for &key in &expired {
            if let Some(conn) = self.conns.get_mut(key) {
                if let (true, Some(op)) = (conn.polling, conn.op) {
                    ring.cancel(op, Token::Housekeeping.encode());
                }
            }
            self.metrics.peek_timeout();
        }
        self.expired = expired;
    }

    /// Closes every pending connection (a shutdown that ran out of time, or the end), counted
    /// as dropped; returns how many there were.
    pub fn abandon(&mut self, ring: &mut Ring) -> usize {
        let keys: Vec<usize> = self.conns.keys().collect();
        for &key in &keys {
            if let Some(op) = self.conns.get_mut(key).and_then(|c| c.op) {
                ring.cancel(op, Token::Housekeeping.encode());
            }
            if let Some(conn) = self.conns.remove(key) {
                ring.close(conn.fd, Token::Housekeeping.encode());
            }
        }
        self.metrics.dropped(keys.len() as u64);
        keys.len()
    }
}

/// A connection on its way to a worker; its `seq` is set by the master when it routes it.
fn handoff(
    fd: OwnedFd,
    listener: u16,
    peer: SocketAddr,
    accepted_ns: u64,
    key_hash: u64,
    proxy_len: u16,
) -> Handoff {
    Handoff {
        conn: fd,
        rec: ConnRecord {
            seq: 0,
            key_hash,
            accepted_ns,
            peer,
            listener,
            proxy_len,
        },
        exclude: None,
    }
}
