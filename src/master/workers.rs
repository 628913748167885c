//! The I/O half of the worker slots: each slot's channel, its buffers, its process and its
//! thread queue; carrying out what the core decided ([`Action`]s, the channels' next messages,
//! the thread queues' next connections) and telling the core what the kernel said.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{SendError, Sender};
use log::{debug, warn};
use stickyd_ring::{InMsg, OutMsg, Ring, sys};
use stickyd_worker::wire::{self, Message, Welcome};

use super::node::{self, NodeChannel};
use super::spawn::{self, Spawned};
use super::token::Token;
use super::{Error, Master, now_ns, setup};

/// The most messages read from one worker channel in one go after a hand-back (the first by
/// the ring, the rest at once while more are queued).
const CHANNEL_BURST: usize = 64;
use crate::config::Ipc;
use crate::dispatch::{Action, FailureKind, Handoff, Outgoing, SendFailure, Signal, ThreadStep};
use crate::threads::Delivery;

/// What the master holds of a worker slot besides the core's view: the handles.
#[derive(Debug, Default)]
pub(super) struct WorkerIo {
    /// The worker's process, until it has been reaped.
    pub pid: Option<u32>,
    pub pidfd: Option<OwnedFd>,
    /// The master's end of the channel, until the core retires it.
    pub channel: Option<OwnedFd>,
    /// The receive buffer, when no receive is in flight.
    pub inbox: Option<InMsg>,
    /// The message sent next, reused for every send (taken while one is in flight).
    pub msg: Option<OutMsg>,
    /// An in-process worker's queue, until it is drained (dropped) or its thread has gone.
    pub thread: Option<Sender<Delivery>>,
    /// A Node worker's channel state (`--ipc node`).
    pub node: Option<NodeChannel>,
    /// The worker's ends of the dispatcher threads' channels, while the `CHANNELS` message
    /// that carries them is in flight.
    pub offered: Vec<OwnedFd>,
    /// The generation of the dispatcher threads' channels to this worker (0: none).
    pub lanes: u64,
}

impl WorkerIo {
    /// A freshly started worker process, whose channel speaks `ipc`.
    fn process(worker: Spawned, ipc: Ipc) -> WorkerIo {
        let channel = match ipc {
            Ipc::Native => WorkerIo::channel(worker.channel),
            // A stream of JSON lines, one handle per message, and a handle the worker might
            // send (received to be closed).
            Ipc::Node => WorkerIo {
                channel: Some(worker.channel),
                inbox: Some(InMsg::new(node::RECV_BUF, 1)),
                msg: Some(OutMsg::with_capacity(512, 1)),
                node: Some(NodeChannel::default()),
                ..WorkerIo::default()
            },
        };
        WorkerIo {
            pid: Some(worker.pid),
            pidfd: Some(worker.pidfd),
            ..channel
        }
    }

    /// A native channel, and the buffers to receive and send on it (only slots with a
    /// channel have them).
    pub fn channel(channel: OwnedFd) -> WorkerIo {
        WorkerIo {
            channel: Some(channel),
            // HANDBACK carries fds.
            inbox: Some(InMsg::new(wire::MAX_MESSAGE, wire::MAX_CONNS)),
            msg: Some(OutMsg::with_capacity(
                wire::HEADER_LEN + wire::MAX_CONNS * wire::RECORD_LEN,
                wire::MAX_CONNS,
            )),
            ..WorkerIo::default()
        }
    }

    /// A thread worker's queue.
    pub fn thread(queue: Sender<Delivery>) -> WorkerIo {
        WorkerIo {
            thread: Some(queue),
            ..WorkerIo::default()
        }
    }
}

impl Master {
    /// Carries out what the core decided. Before the loop runs, a worker that cannot be
    /// started is fatal; after, the core retries it with a back-off.
    pub(super) fn act(&mut self) -> Result<(), Error> {
        while let Some(action) = self.core.poll_action() {
            match action {
                Action::Spawn(w) => self.start_worker(w)?,
                Action::End(w, signal) => self.end_worker(w, signal),
                Action::Release(w, fd, rec) => {
                    self.metrics.dispatched(w, rec.listener);
                    let waited = now_ns().saturating_sub(rec.accepted_ns);
                    self.metrics.handoff(Duration::from_nanos(waited));
                    self.ring.close(fd, Token::Housekeeping.encode());
                }
                Action::Drop(fd) => {
                    self.ring.close(fd, Token::Housekeeping.encode());
                }
                // A Node cluster worker exits at once when its channel closes, before its exit
                // hooks have run: its channel stays open until it has exited.
                Action::ShutWrite(w) if self.io[w as usize].node.is_some() => {}
                Action::ShutWrite(w) => {
                    if let Some(channel) = &self.io[w as usize].channel {
                        if let Err(e) = sys::shutdown_write(channel.as_fd()) {
                            debug!("worker {w}: shutting the channel's sending side failed: {e}");
                        }
                    }
                }
                Action::Retire(w) => {
                    let io = &mut self.io[w as usize];
                    io.channel = None;
                    io.inbox = None;
                    io.msg = None;
                }
                Action::Live(w) => self.note_hello(w),
                Action::Abandon => {
                    let threads = self.threads_pending();
                    if let Some(acceptors) = &mut self.acceptors {
                        acceptors.abandon();
                    }
                    let front = self.front.abandon(&mut self.ring);
                    if front + threads > 0 {
                        warn!(
                            "{} connections still being peeked at when the grace period ended: \
                             closed",
                            front + threads
                        );
                    }
                }
            }
        }
        Ok(())
    }

    fn start_worker(&mut self, w: u32) -> Result<(), Error> {
        match spawn::spawn(w, self.config.worker_command.as_ref(), self.config.ipc) {
            Ok(worker) => {
                let pid = worker.pid;
                debug!("worker {w} started (pid {pid})");
                let mut io = WorkerIo::process(worker, self.config.ipc);
                arm_exit(&mut self.ring, w, &io);
                arm_recv(&mut self.ring, w, &mut io);
                self.io[w as usize] = io;
                self.core.spawned(w, pid, Instant::now());
            }
            Err(e) if !self.running => {
                return Err(setup(format!(
                    "cannot start worker {w} ({})",
                    self.worker_label()
                ))(e));
            }
            Err(e) => self.core.spawn_failed(w, &e.to_string(), Instant::now()),
        }
        Ok(())
    }

    /// Ends a slot's worker: a process gets the signal; an attached worker, which is not ours
    /// to signal, has its channel shut in both directions (it reads end of file, and so do we).
    fn end_worker(&mut self, w: u32, signal: Signal) {
        let io = &self.io[w as usize];
        let sig = match signal {
            Signal::Term => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
        };
        if let Some(pid) = io.pid {
            if let Err(e) = sys::kill(pid, sig) {
                warn!("worker {w} (pid {pid}): kill failed: {e}");
            }
        } else if let Some(channel) = &io.channel {
            if let Err(e) = sys::shutdown_both(channel.as_fd()) {
                debug!("worker {w}: {e}");
            }
        }
    }

    /// Starts a send on every idle channel that has something to say, and feeds the thread
    /// workers' queues.
    pub(super) fn flush(&mut self) -> Result<(), Error> {
        // Nothing more can reach a worker once no accept is armed, no connection is being
        // peeked at and none waits in the master: only then may DRAIN go out. A dispatcher
        // thread says it is idle only after passing on its last connection: read that first,
        // then take what it passed.
        let threads_idle = self.acceptors.as_ref().is_none_or(|a| a.idle());
        self.route_new();
        let routing_done = self.core.routing_done(threads_idle && self.front.idle());
        self.feed_threads(routing_done);
        self.send_node_control();
        let now = Instant::now();
        for w in 0..self.core.workers() {
            let io = &mut self.io[w as usize];
            let Some(channel) = &io.channel else {
                continue;
            };
            if io.msg.is_none() {
                continue;
            }
            let Some(out) = self.core.next_send(w, routing_done, now) else {
                continue;
            };
            // The slot's message is here whenever no send is in flight: reused, never
            // reallocated, so a hand-off costs no allocation.
            let Some(mut msg) = io.msg.take() else {
                continue;
            };
            // Node's channel (a worker stickyd started with `--ipc node`; an attached worker
            // speaks the native protocol): one line per message, a handle beside its line.
            let node = self.node.as_ref().filter(|_| io.node.is_some());
            let data = msg.data_mut();
            data.clear();
            let handles = match out {
                Outgoing::Refused(reason) => {
                    match node {
                        Some(_) => crate::node_ipc::refused(reason, data),
                        None => wire::encode_refused(reason, data),
                    }
                    None
                }
                Outgoing::Welcome => {
                    match node {
                        Some(encoder) => encoder.welcome(w, self.config.workers, data),
                        None => {
                            let welcome = Welcome {
                                worker_id: w,
                                workers: self.config.workers,
                                listeners: self
                                    .front
                                    .listeners
                                    .iter()
                                    .map(|l| l.name.clone())
                                    .collect(),
                            };
                            wire::encode_welcome(&welcome, data);
                        }
                    }
                    None
                }
                Outgoing::Conns(batch) => {
                    match node {
                        Some(encoder) => {
                            debug_assert_eq!(batch.len(), 1, "one handle per Node message");
                            for h in batch {
                                encoder.conn(&h.rec, data);
                            }
                        }
                        None => {
                            self.records.clear();
                            self.records.extend(batch.iter().map(|h| h.rec));
                            wire::encode_conns(&self.records, data);
                        }
                    }
                    Some(batch)
                }
                Outgoing::Drain => {
                    match node {
                        Some(_) => crate::node_ipc::drain(data),
                        None => wire::encode_drain(data),
                    }
                    None
                }
                Outgoing::Rehash => {
                    if !self.rehash.is_empty() {
                        wire::encode_rehash(&self.rehash, data);
                    }
                    None
                }
                Outgoing::Channels => {
                    // One channel per dispatcher thread: the thread keeps one end, the worker
                    // gets the other. (A failed send closes the worker's ends: the threads
                    // see those channels end.)
                    (io.offered, io.lanes) = lanes(self.acceptors.as_mut(), w);
                    if !io.offered.is_empty() {
                        wire::encode_channels(io.offered.len(), data);
                    }
                    None
                }
            };
            match handles {
                Some(batch) => msg.set_fds(batch.iter().map(|h| h.conn.as_fd())),
                None if !io.offered.is_empty() => msg.set_fds(io.offered.iter().map(AsFd::as_fd)),
                None => msg.set_fds(std::iter::empty()),
            }
            if data_is_empty(&msg) {
                // Nothing to say after all (no channel could be made): as if sent.
                io.msg = Some(msg);
                self.core.sent(w, Ok(()), now);
                continue;
            }
            self.ring
                .send_msg(channel.as_fd(), msg, Token::ChannelSend(w).encode());
        }
        self.core.flushed(routing_done, now);
        self.act()
    }

    /// Moves the connections routed to thread workers into their queues; drains (closes) the
    /// queues of thread workers due to drain.
    fn feed_threads(&mut self, routing_done: bool) {
        if !self.in_process {
            return;
        }
        // A thread found gone sends its connections back to routing, possibly to a slot fed
        // earlier in this pass: go round again until no thread is lost.
        let mut lost = true;
        while lost {
            lost = false;
            for w in 0..self.core.workers() {
                let now = now_ns();
                while let Some(queue) = self.io[w as usize].thread.as_ref() {
                    match self.core.next_for_thread(w, routing_done) {
                        ThreadStep::Deliver(h) => {
                            let exclude = h.exclude;
                            match queue.send((h.rec, h.conn)) {
                                Ok(()) => {
                                    self.metrics.dispatched(w, h.rec.listener);
                                    let waited = now.saturating_sub(h.rec.accepted_ns);
                                    self.metrics.handoff(Duration::from_nanos(waited));
                                }
                                // The thread has gone (its worker was dropped): nothing
                                // reached it.
                                Err(SendError((rec, conn))) => {
                                    self.io[w as usize].thread = None;
                                    let h = Handoff { conn, rec, exclude };
                                    self.core.thread_lost(w, h);
                                    lost = true;
                                }
                            }
                        }
                        ThreadStep::Drain => {
                            self.io[w as usize].thread = None;
                            if let Some((returns, _)) = &self.returns {
                                returns.drained[w as usize].store(true, Ordering::Release);
                            }
                        }
                        ThreadStep::Idle => break,
                    }
                }
                if let Some(queue) = &self.io[w as usize].thread {
                    self.core.thread_queued(w, queue.len());
                }
            }
        }
    }

    /// Thread workers take connections from their queues without the ring hearing of it:
    /// their bound counts what is still queued.
    pub(super) fn measure_thread_queues(&mut self) {
        for (w, io) in (0..).zip(&self.io) {
            if let Some(queue) = &io.thread {
                self.core.thread_queued(w, queue.len());
            }
        }
    }

    pub(super) fn on_channel_sent(&mut self, w: u32, msg: OutMsg, result: io::Result<usize>) {
        let io = &mut self.io[w as usize];
        io.msg = Some(msg);
        // The worker's ends of the threads' channels are in its queue now, or never will be.
        io.offered.clear();
        let result = result.map(drop).map_err(|e| SendFailure {
            kind: match e.raw_os_error() {
                Some(libc::ENOBUFS | libc::ENOMEM | libc::ETOOMANYREFS | libc::EAGAIN) => {
                    FailureKind::Transient
                }
                Some(libc::EPIPE | libc::ECONNRESET) => FailureKind::PeerGone,
                _ => FailureKind::Broken,
            },
            error: e.to_string(),
        });
        self.core.sent(w, result, Instant::now());
    }

    pub(super) fn on_channel_recv(&mut self, w: u32, mut msg: InMsg, result: io::Result<usize>) {
        let now = Instant::now();
        // After a hand-back, what else is already queued on a native channel (up to a burst):
        // hand-backs come one per request, and each would otherwise wait a round of the loop.
        // (An ACK answers a whole CONNS message: reading on after one would mostly cost a
        // fruitless call.) Every message read is handled before the next read.
        let mut more = matches!(result, Ok(n) if n > 0) && is_handback(&msg);
        self.on_channel_result(w, &mut msg, result, now);
        for _ in 1..CHANNEL_BURST {
            let io = &self.io[w as usize];
            if !more || io.node.is_some() || !self.core.reading(w) {
                break;
            }
            let Some(channel) = &io.channel else { break };
            msg.reset();
            let result = sys::recv_msg_now(channel.as_fd(), &mut msg);
            if matches!(&result, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
                break;
            }
            more = matches!(result, Ok(n) if n > 0) && is_handback(&msg);
            self.on_channel_result(w, &mut msg, result, now);
        }
        let io = &mut self.io[w as usize];
        msg.reset();
        io.inbox = Some(msg);
        if self.core.reading(w) {
            arm_recv(&mut self.ring, w, io);
        }
    }

    /// One receive's outcome on worker `w`'s channel.
    fn on_channel_result(
        &mut self,
        w: u32,
        msg: &mut InMsg,
        result: io::Result<usize>,
        now: Instant,
    ) {
        match result {
            Ok(0) => self.core.channel_ended(w, now),
            Ok(_) if self.io[w as usize].node.is_some() => self.on_node_recv(w, msg),
            Ok(_) if msg.truncated() => self.core.violation(w, "sent an oversized message"),
            // The kernel dropped fds on their way in: the master's fd limit, not the worker's
            // doing. Those connections are gone; the rest of the message is closed with them.
            Ok(_) if msg.ctrl_truncated() => {
                drop(msg.take_fds());
                if let Ok(Message::Handback(listeners)) = wire::decode(msg.data()) {
                    self.metrics.dropped(listeners.len() as u64);
                }
                warn!(
                    "worker {w}: connections it handed back were lost: stickyd is at its file \
                     descriptor limit"
                );
            }
            Ok(_) => {
                // Only HANDBACK carries fds; any others are closed here.
                let fds = msg.take_fds();
                self.on_channel_message(w, wire::decode(msg.data()), fds);
            }
            // The worker has gone; what it sent before is still queued: read to the end.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNRESET | libc::EPIPE)) => {}
            Err(e) => self.core.channel_failed(w, &e.to_string(), now),
        }
    }

    /// One message from worker `w`'s native channel, with the fds that came with it.
    fn on_channel_message(
        &mut self,
        w: u32,
        message: Result<Message<'_>, wire::WireError>,
        fds: Vec<OwnedFd>,
    ) {
        match message {
            Ok(Message::Handback(listeners)) => self.on_handback(w, listeners, fds),
            Ok(other) if !fds.is_empty() => {
                let what = format!("sent {} fds with a {} message", fds.len(), other.msg_type());
                self.core.violation(w, &what);
            }
            Ok(Message::Hello(hello)) => {
                self.core.hello(w, hello.worker_id, hello.pid);
                self.offer_extras(w, hello.flags);
            }
            Ok(Message::Ack(seqs)) => self.core.ack(w, seqs),
            Ok(Message::Drained) => self.core.drained(w),
            Ok(other) => self
                .core
                .violation(w, &format!("sent a master's message: {other:?}")),
            Err(e) => self
                .core
                .violation(w, &format!("sent a malformed message: {e}")),
        }
    }

    /// Offers what a worker's `HELLO` `flags` say it takes: the dispatcher threads' channels,
    /// and `REHASH` where a listener routes kept-alive connections at each request.
    pub(super) fn offer_extras(&mut self, w: u32, flags: u16) {
        if flags & wire::HELLO_CHANNELS != 0 && self.acceptors.is_some() {
            self.core.offer_channels(w);
        }
        if flags & wire::HELLO_HANDBACK != 0 && !self.rehash.is_empty() {
            self.core.offer_rehash(w);
        }
    }

    /// Worker `w` handed connections back (`--rehash-per-request`), each at the first byte of
    /// its next request: they are examined and routed again, as new connections.
    fn on_handback(&mut self, w: u32, listeners: wire::Listeners<'_>, fds: Vec<OwnedFd>) {
        if fds.len() != listeners.len() {
            let what = format!(
                "handed back {} fds for {} connections",
                fds.len(),
                listeners.len()
            );
            return self.core.violation(w, &what);
        }
        for (listener, fd) in listeners.iter().zip(fds) {
            if !self.take_back(w, listener, fd) {
                return;
            }
        }
    }

    /// Takes in connection `fd` of listener `listener` that worker `w` handed back, to route
    /// again; returns false (and ends the worker) if that listener's connections do not come
    /// back.
    pub(super) fn take_back(&mut self, w: u32, listener: u16, fd: OwnedFd) -> bool {
        if !self.rehash.contains(&listener) {
            let what = format!("handed back a connection of listener {listener}");
            self.core.violation(w, &what);
            return false;
        }
        self.front.readmit(&mut self.ring, listener, fd);
        true
    }

    pub(super) fn on_exit(&mut self, w: u32, result: io::Result<u32>) {
        if let Err(e) = result {
            warn!("worker {w}: waiting for its exit failed: {e}");
        }
        let io = &mut self.io[w as usize];
        let Some(pid) = io.pid else {
            return;
        };
        let now = Instant::now();
        match sys::try_wait(pid) {
            Ok(Some(status)) => {
                let status = ExitStatus::from_raw(status);
                io.pid = None;
                io.pidfd = None;
                self.core
                    .exited(w, &status.to_string(), status.success(), now);
            }
            Ok(None) => arm_exit(&mut self.ring, w, io),
            Err(e) => {
                warn!("worker {w} (pid {pid}): waitpid failed: {e}");
                io.pid = None;
                io.pidfd = None;
                self.core.lost(w, now);
            }
        }
    }
}

/// Makes one channel per dispatcher thread to slot `w`'s worker, gives the threads their ends
/// and returns the worker's. Empty without threads, or if a channel cannot be made (the worker
/// is then served through the master's channel alone).
fn lanes(acceptors: Option<&mut super::acceptors::Acceptors>, w: u32) -> (Vec<OwnedFd>, u64) {
    let Some(acceptors) = acceptors else {
        return (Vec::new(), 0);
    };
    let mut theirs = Vec::with_capacity(acceptors.count());
    let mut ours = Vec::with_capacity(acceptors.count());
    for _ in 0..acceptors.count() {
        match sys::seqpacket_pair() {
            Ok((thread_end, worker_end)) => {
                ours.push(thread_end);
                theirs.push(worker_end);
            }
            Err(e) => {
                warn!("worker {w}: cannot make the dispatcher threads' channels: {e}");
                return (Vec::new(), 0);
            }
        }
    }
    let generation = acceptors.give_lanes(w, ours);
    (theirs, generation)
}

/// Whether a received message is a `HANDBACK` (its header's type byte).
fn is_handback(msg: &InMsg) -> bool {
    msg.data().get(1) == Some(&(wire::MsgType::Handback as u8))
}

/// Whether a message holds no bytes (nothing was encoded into it).
fn data_is_empty(msg: &OutMsg) -> bool {
    msg.data().is_empty()
}

pub(super) fn arm_recv(ring: &mut Ring, w: u32, io: &mut WorkerIo) {
    if let (Some(channel), Some(inbox)) = (&io.channel, io.inbox.take()) {
        ring.recv_msg(channel.as_fd(), inbox, Token::ChannelRecv(w).encode());
    }
}

fn arm_exit(ring: &mut Ring, w: u32, io: &WorkerIo) {
    if let Some(pidfd) = &io.pidfd {
        ring.poll(pidfd.as_fd(), libc::POLLIN as u32, Token::Exit(w).encode());
    }
}
