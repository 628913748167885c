//! The deterministic simulator: thousands of random, seeded event sequences against [`Core`],
//! with no thread, no sleep, no socket and no clock (time is an `Instant` the simulator moves).
//!
//! The simulator plays everything around the core the way the master's drivers and the
//! kernel would: clients arriving in the listen backlog and accepted only while the core says
//! so, a front that finds keys (or falls back at the peek deadline), worker processes that say
//! `HELLO` quickly, slowly, wrongly or never, read their channel, acknowledge (losing fds past
//! their limit now and then), stall (a full channel keeps the send in flight), crash and exit
//! after a drain, restarts that fail, children that cannot be waited for, bogus ACKs and second
//! `HELLO`s, Node-channel workers (one connection per message, acknowledged as a whole),
//! attached workers that come and go, thread workers, channel sends that fail for a while or
//! for good, and signals. After every step it checks the invariants:
//!
//! - **Nothing lost, nothing twice**: every accepted connection is in exactly one place (the
//!   front, the core, closed after its acknowledgement, or dropped); none is served by two
//!   workers; an acknowledged one is never sent again; the master releases a connection only to
//!   the worker that acknowledged it; a connection is dropped only for a reason that applies to
//!   it at that moment ([`Sim::drop_allowed`]: it was sent to a worker that broke the protocol,
//!   it was returned and no other worker is open, a shutdown has no worker left that was not
//!   told to drain, or the shutdown's backstop).
//! - **Stickiness**: a connection is served by its key's owner (rendezvous over all slots)
//!   unless, between its accept and its service, the owner was excused: down for longer than
//!   the respawn hold (or down at all where there is no hold: attached and thread workers, a
//!   protocol violation, a shutdown), never live once the start hold was over, at its queue
//!   bound, or the connection was returned by it.
//! - **Bounds**: queues within their bounds, and no timer left due after the core has been
//!   told the time (no busy loop).
//! - **Shutdown ends**: every sequence ends with a signal, after which the core finishes within
//!   the peek deadline, the grace period and the kill delays.
//!
//! A failure names its seed: `STICKYD_SIM_SEED=<seed> cargo test -p stickyd --lib sim` replays
//! it with its trace. `STICKYD_SIM_SEQUENCES=<n>` runs `n` sequences (default 3000).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stickyd_worker::wire::{ANY_WORKER, ConnRecord};

use super::{
    Action, Core, FailureKind, Handoff, KILL_AFTER, Outgoing, SendFailure, Settings, Start,
    ThreadStep,
};
use crate::metrics::Metrics;
use crate::route;

/// A connection as the simulator hands it to the core: an id, not `Clone`, so the type system
/// already sees that the core never duplicates one.
#[derive(Debug)]
struct Conn(usize);

/// Keys the clients use.
const KEYS: usize = 24;
/// Connections the front may be peeking at at once.
const FRONT_CAP: usize = 12;
/// Messages a channel queues before a send waits for room (278 fd-carrying messages on this
/// project's machines; fewer here, so that a stalled worker fills its channel within a
/// sequence). A send to a full channel stays in flight, as the master's sends do.
const CHANNEL_CAP: usize = 6;
/// The peek deadline.
const PEEK_TIMEOUT: Duration = Duration::from_secs(1);

/// A small deterministic generator (SplitMix64): the same seed, the same sequence.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// True with probability `per_mille` / 1000.
    fn odds(&mut self, per_mille: usize) -> bool {
        self.below(1000) < per_mille
    }

    fn millis(&mut self, max: u64) -> Duration {
        Duration::from_millis(self.next() % (max + 1))
    }
}

/// How a sequence's workers are provided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Spawn,
    Attach { successor: bool },
    Threads,
}

/// The parameters of one sequence, drawn from its seed.
#[derive(Debug)]
struct Scenario {
    mode: Mode,
    workers: u32,
    max_queue: usize,
    respawn_hold: Duration,
    start_timeout: Duration,
    grace: Duration,
    steps: usize,
    /// Per mille, per step: a worker crashes.
    crash: usize,
    /// Per mille, per step: a worker stops or resumes reading.
    stall: usize,
    /// Per mille, per `CONNS` read: the worker's fd limit drops the message's last fds.
    ctrunc: usize,
    /// Per mille, per start: the start fails.
    spawn_fail: usize,
    /// Per mille, per step: a protocol violation or a broken channel.
    violation: usize,
    /// Node's channel (`--ipc node`): one connection per message, acknowledged or refused as a
    /// whole.
    node: bool,
}

impl Scenario {
    fn draw(rng: &mut Rng) -> Scenario {
        let mode = match rng.below(20) {
            0..=12 => Mode::Spawn,
            13..=15 => Mode::Attach { successor: false },
            16..=17 => Mode::Attach { successor: true },
            _ => Mode::Threads,
        };
        let pick = |rng: &mut Rng, choices: &[usize]| choices[rng.below(choices.len())];
        Scenario {
            mode,
            workers: 1 + rng.below(5) as u32,
            max_queue: 2 + rng.below(7),
            respawn_hold: if rng.odds(200) {
                Duration::ZERO
            } else {
                Duration::from_secs(2)
            },
            start_timeout: if rng.odds(300) {
                Duration::from_secs(1)
            } else {
                Duration::from_secs(10)
            },
            grace: Duration::from_millis(200 + rng.below(3000) as u64),
            steps: 150 + rng.below(450),
            crash: pick(rng, &[0, 2, 5, 15, 40]),
            stall: pick(rng, &[0, 0, 5, 20]),
            ctrunc: pick(rng, &[0, 0, 0, 20, 200]),
            spawn_fail: pick(rng, &[0, 0, 100, 500]),
            violation: pick(rng, &[0, 0, 0, 0, 2]),
            node: mode == Mode::Spawn && rng.odds(300),
        }
    }
}

/// A message on a worker's channel, master to worker.
#[derive(Debug)]
enum ToWorker {
    Welcome,
    /// `CHANNELS` (a no-op for the simulated worker).
    Setup,
    /// `REHASH`: the worker says `DRAINED` when it reads `DRAIN`.
    Rehash,
    Refused,
    /// `(seq, connection id)` in record order.
    Conns(Vec<(u64, usize)>),
    Drain,
    /// The master shut its sending side: end of file after what is queued.
    Eof,
}

/// A message on a worker's channel, worker to master.
#[derive(Debug)]
enum ToMaster {
    Hello(u32),
    Ack(Vec<u64>),
    Drained,
}

/// How a started worker behaves before it says `HELLO`.
#[derive(Debug, Clone, Copy)]
enum Start_ {
    /// Says `HELLO` with its own id once the time has come.
    HelloAt(Instant),
    /// Says `HELLO` with another slot's id (a misconfigured `STICKYD_WORKER_ID`).
    WrongId(Instant),
    /// Dies before it says anything.
    DiesAt(Instant),
}

/// A worker: a process the core started, an attached process, or a thread.
#[derive(Debug)]
struct Worker {
    pid: u32,
    alive: bool,
    /// Its exit has been reported to the core (processes only).
    reaped: bool,
    start: Option<Start_>,
    stalled: bool,
    /// Ignores SIGTERM (SIGKILL always works).
    stubborn: bool,
    inbox: VecDeque<ToWorker>,
    /// What it sent, still queued for the master; then end of file once it has gone.
    outbox: VecDeque<ToMaster>,
    /// The master's side of the channel says end of file now (the worker closed it, or the
    /// master shut it both ways).
    closed: bool,
    draining: bool,
    /// It read `REHASH`.
    rehashed: bool,
    /// It read end of file after a drain or a refusal: it exits.
    done: bool,
    /// A thread worker's queue (connection ids not yet taken).
    queue: VecDeque<usize>,
}

impl Worker {
    fn new(pid: u32, start: Option<Start_>, stubborn: bool) -> Worker {
        Worker {
            pid,
            alive: true,
            reaped: false,
            start,
            stalled: false,
            stubborn,
            inbox: VecDeque::new(),
            outbox: VecDeque::new(),
            closed: false,
            draining: false,
            rehashed: false,
            done: false,
            queue: VecDeque::new(),
        }
    }
}

/// The simulator's view of one slot, for the stickiness check.
#[derive(Debug, Default)]
struct SlotView {
    /// The core welcomed the current worker (the simulator delivered a good `HELLO`, or it
    /// attached) and no death of it has happened since.
    live: bool,
    /// Ever live.
    ever_live: bool,
    /// When the worker last stopped being live (its death, before the core knew).
    down_since: Option<Instant>,
    /// Whether its keys wait for a replacement when it dies (a spawned process).
    held: bool,
    /// Excused intervals: `(from, to)`, the last one open while `to` is `None`.
    excused: Vec<(Instant, Option<Instant>)>,
    /// A send is in flight: its outcome, reported when it completes.
    sending: Option<Result<(), SendFailure>>,
    /// The driver holds a channel for this slot (from the start until the core retires it).
    channel: bool,
    /// The send in flight waits for room in the worker's full channel: delivered when it
    /// reads.
    blocked: Option<ToWorker>,
    /// `DRAIN` went to this slot's worker.
    drained: bool,
}

/// Where a connection is, as far as the simulator knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Waiting in the listen backlog.
    Backlog,
    /// Accepted, being peeked at.
    Front,
    /// Handed to the core.
    Core,
    /// Released after its acknowledgement.
    Released,
    /// Dropped (closed unserved, or closed by a rule).
    Dropped,
}

#[derive(Debug)]
struct ConnInfo {
    key: usize,
    accepted: Option<Instant>,
    place: Place,
    served_by: Option<u32>,
    /// Workers that returned it (their fd limit).
    returned_by: Vec<u32>,
    /// Workers a send of it was started to (delivered or not).
    sent_to: Vec<u32>,
}

struct Sim {
    rng: Rng,
    sc: Scenario,
    base: Instant,
    now: Instant,
    core: Core<Conn>,
    workers: Vec<Option<Worker>>,
    views: Vec<SlotView>,
    conns: Vec<ConnInfo>,
    backlog: VecDeque<usize>,
    front: Vec<usize>,
    next_pid: u32,
    signals: u32,
    /// Workers whose connections may be closed after they served them (a violation, a cut
    /// attached channel).
    tainted: Vec<bool>,
    /// The shutdown's backstop fired: what was still being routed was given up.
    backstop: bool,
    /// A worker was down when the shutdown began, or ended during it (signalled when the grace
    /// period ran out or at a second signal, or crashed): nothing is restarted then.
    signalled: bool,
    trace: VecDeque<String>,
    step: usize,
    /// Some kernel event is waiting (see [`Event::Tick`]).
    prompt: bool,
}

type Check = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = Rng(seed);
        let sc = Scenario::draw(&mut rng);
        let base = Instant::now();
        let settings = Settings {
            workers: sc.workers,
            max_queue: sc.max_queue,
            grace: sc.grace,
            peek_timeout: PEEK_TIMEOUT,
            respawn_hold: sc.respawn_hold,
            max_batch: if sc.node {
                1
            } else {
                stickyd_worker::wire::MAX_CONNS
            },
        };
        let start = match sc.mode {
            Mode::Spawn => Start::Spawn {
                hold: sc.start_timeout,
            },
            Mode::Attach { successor } => Start::Attach {
                reattach: successor.then_some(sc.grace + Duration::from_secs(5)),
            },
            Mode::Threads => Start::Threads,
        };
        let metrics = Arc::new(Metrics::new(&["l0".to_owned()], sc.workers));
        let core = Core::new(settings, start, metrics, base);
        let n = sc.workers as usize;
        let mut sim = Sim {
            rng,
            base,
            now: base,
            core,
            workers: (0..n).map(|_| None).collect(),
            views: (0..n).map(|_| SlotView::default()).collect(),
            conns: Vec::new(),
            backlog: VecDeque::new(),
            front: Vec::new(),
            next_pid: 100,
            signals: 0,
            tainted: vec![false; n],
            backstop: false,
            signalled: false,
            trace: VecDeque::new(),
            step: 0,
            prompt: false,
            sc,
        };
        if sim.sc.mode == Mode::Threads {
            for w in 0..n {
                let pid = sim.pid();
                sim.workers[w] = Some(Worker::new(pid, None, false));
                sim.views[w].live = true;
                sim.views[w].ever_live = true;
            }
        }
        sim
    }

    fn pid(&mut self) -> u32 {
        self.next_pid += 1;
        self.next_pid
    }

    fn note(&mut self, what: String) {
        if self.trace.len() == 400 {
            self.trace.pop_front();
        }
        let at = self.now.duration_since(self.base);
        self.trace
            .push_back(format!("#{} t={:?}: {what}", self.step, at));
    }

    fn owner(&self, key: usize) -> u32 {
        route::pick(key_hash(key), 0..self.sc.workers).unwrap_or(0)
    }

    // ---- the driver's side of the core -----------------------------------------------------

    /// Carries out the core's actions, as `master::workers::act` does.
    fn act(&mut self) -> Check {
        while let Some(action) = self.core.poll_action() {
            match action {
                Action::Spawn(w) => {
                    let wu = w as usize;
                    if self.rng.odds(self.sc.spawn_fail) {
                        self.note(format!("spawn {w}: fails"));
                        self.core.spawn_failed(w, "simulated", self.now);
                        continue;
                    }
                    let pid = self.pid();
                    let start = match self.rng.below(100) {
                        0..=69 => Start_::HelloAt(self.now + self.rng.millis(30)),
                        70..=84 => Start_::HelloAt(self.now + self.rng.millis(3000)),
                        85..=89 => Start_::WrongId(self.now + self.rng.millis(30)),
                        _ => Start_::DiesAt(self.now + self.rng.millis(500)),
                    };
                    let stubborn = self.rng.odds(100);
                    self.note(format!("spawn {w}: pid {pid}, {start:?}"));
                    self.workers[wu] = Some(Worker::new(pid, Some(start), stubborn));
                    self.views[wu].channel = true;
                    self.views[wu].held = true;
                    self.core.spawned(w, pid, self.now);
                }
                Action::End(w, signal) => {
                    let wu = w as usize;
                    let attached = matches!(self.sc.mode, Mode::Attach { .. });
                    self.note(format!("end {w} {signal:?}"));
                    if attached {
                        // The channel is shut both ways: the worker reads end of file, and so
                        // does the master, whatever was queued.
                        self.tainted[wu] = true;
                        if let Some(worker) = &mut self.workers[wu] {
                            worker.outbox.clear();
                            worker.closed = true;
                            worker.inbox.clear();
                            worker.inbox.push_back(ToWorker::Eof);
                        }
                        self.unblock_failed(w);
                        self.down(w);
                    } else if let Some(worker) = &mut self.workers[wu] {
                        let dies = signal == super::Signal::Kill || !worker.stubborn;
                        if worker.alive && dies {
                            self.kill(w);
                        }
                    }
                }
                Action::Release(w, conn, rec) => {
                    let info = &mut self.conns[conn.0];
                    ensure!(
                        info.place == Place::Core,
                        "conn {} released from {:?}",
                        conn.0,
                        info.place
                    );
                    ensure!(
                        info.served_by == Some(w),
                        "conn {} (seq {}) released as worker {w}'s, served by {:?}",
                        conn.0,
                        rec.seq,
                        info.served_by
                    );
                    info.place = Place::Released;
                }
                Action::Drop(conn) => {
                    let id = conn.0;
                    let info = &self.conns[id];
                    ensure!(
                        info.place == Place::Core,
                        "conn {id} dropped from {:?}",
                        info.place
                    );
                    if let Some(by) = info.served_by {
                        ensure!(
                            self.tainted[by as usize],
                            "conn {id} served by worker {by} then dropped by the master"
                        );
                    }
                    let why = self.drop_allowed(id);
                    self.note(format!("drop conn {id}: {why:?}"));
                    ensure!(
                        why.is_some(),
                        "conn {id} dropped though it could still go to a worker"
                    );
                    self.conns[id].place = Place::Dropped;
                }
                Action::ShutWrite(w) => {
                    if let Some(worker) = &mut self.workers[w as usize] {
                        worker.inbox.push_back(ToWorker::Eof);
                    }
                }
                Action::Retire(w) => {
                    let wu = w as usize;
                    ensure!(self.views[wu].channel, "worker {w} retired twice");
                    ensure!(
                        self.views[wu].sending.is_none(),
                        "worker {w} retired with a send in flight"
                    );
                    self.views[wu].channel = false;
                    self.note(format!("retire {w}"));
                    if let Some(worker) = &mut self.workers[wu] {
                        // The worker reads end of file on its side and exits.
                        worker.inbox.push_back(ToWorker::Eof);
                        worker.done = true;
                    }
                    self.down(w);
                }
                Action::Live(_) => {}
                Action::Abandon => {
                    self.backstop = true;
                    for id in std::mem::take(&mut self.front) {
                        self.conns[id].place = Place::Dropped;
                    }
                }
            }
        }
        Ok(())
    }

    /// The master's flush: every idle channel sends what the core says next; thread queues are
    /// fed.
    fn flush(&mut self) -> Check {
        let front_idle = self.core.shutting_down() && self.front.is_empty();
        let routing_done = self.core.routing_done(front_idle);
        if self.sc.mode == Mode::Threads {
            self.feed_threads(routing_done)?;
        }
        for w in 0..self.sc.workers {
            let wu = w as usize;
            if !self.views[wu].channel || self.views[wu].sending.is_some() {
                continue;
            }
            let now = self.now;
            let Some(out) = self.core.next_send(w, routing_done, now) else {
                continue;
            };
            let msg = match out {
                Outgoing::Refused(_) => ToWorker::Refused,
                Outgoing::Welcome => ToWorker::Welcome,
                Outgoing::Channels => ToWorker::Setup,
                Outgoing::Rehash => ToWorker::Rehash,
                Outgoing::Drain => ToWorker::Drain,
                Outgoing::Conns(batch) => {
                    ToWorker::Conns(batch.iter().map(|h| (h.rec.seq, h.conn.0)).collect())
                }
            };
            if let ToWorker::Conns(list) = &msg {
                ensure!(!list.is_empty(), "empty CONNS to worker {w}");
                ensure!(
                    !self.sc.node || list.len() == 1,
                    "{} connections in one message on Node's channel",
                    list.len()
                );
                for &(seq, id) in list {
                    ensure!(
                        self.conns[id].served_by.is_none(),
                        "conn {id} (seq {seq}) sent to worker {w} though worker {:?} acknowledged it",
                        self.conns[id].served_by
                    );
                }
            }
            // Decide the send's fate now: a message is delivered when `sendmsg` runs, the
            // completion comes later (an ACK may come first); to a full channel, it waits.
            let worker = self.workers[wu].as_ref();
            let (deliver, failure) = match worker {
                Some(worker) if worker.alive && !worker.closed => {
                    if self.rng.odds(20) {
                        (false, Some(transient("ENOBUFS")))
                    } else if self.rng.odds(self.sc.violation) {
                        (
                            false,
                            Some(SendFailure {
                                kind: FailureKind::Broken,
                                error: "EBADF".to_owned(),
                            }),
                        )
                    } else {
                        (true, None)
                    }
                }
                _ => (
                    false,
                    Some(SendFailure {
                        kind: FailureKind::PeerGone,
                        error: "EPIPE".to_owned(),
                    }),
                ),
            };
            let full = worker.is_some_and(|k| k.inbox.len() >= CHANNEL_CAP);
            self.note(format!(
                "send {w}: {} ({})",
                describe(&msg),
                match &failure {
                    Some(f) => f.error.as_str(),
                    None if full => "waits for room",
                    None => "delivered",
                }
            ));
            if let ToWorker::Drain = msg {
                // From the core's side, drained from the moment the send starts.
                self.views[wu].drained = true;
            }
            // Sent, as far as the core can tell until the send's completion.
            if let ToWorker::Conns(list) = &msg {
                for &(_, id) in list {
                    self.conns[id].sent_to.push(w);
                }
            }
            if deliver && full {
                self.views[wu].blocked = Some(msg);
            } else if deliver {
                if let Some(worker) = &mut self.workers[wu] {
                    worker.inbox.push_back(msg);
                }
            }
            self.views[wu].sending = Some(failure.map_or(Ok(()), Err));
        }
        self.core.flushed(routing_done, self.now);
        self.act()
    }

    fn feed_threads(&mut self, routing_done: bool) -> Check {
        let mut lost = true;
        while lost {
            lost = false;
            for w in 0..self.sc.workers {
                let wu = w as usize;
                loop {
                    if self.workers[wu].as_ref().is_none_or(|t| t.done) {
                        break;
                    }
                    match self.core.next_for_thread(w, routing_done) {
                        ThreadStep::Deliver(h) => {
                            let thread = self.workers[wu].as_mut().expect("thread");
                            if thread.alive {
                                let id = h.conn.0;
                                self.note(format!("deliver conn {id} to thread {w}"));
                                let thread = self.workers[wu].as_mut().expect("thread");
                                thread.queue.push_back(id);
                                let info = &mut self.conns[id];
                                ensure!(
                                    info.served_by.is_none(),
                                    "conn {id} delivered twice (to {w}, before to {:?})",
                                    info.served_by
                                );
                                info.served_by = Some(w);
                                info.place = Place::Released;
                                self.check_sticky(id, w)?;
                            } else {
                                // Its queue's receiver has gone: nothing reached it.
                                thread.done = true;
                                self.note(format!("thread {w} lost"));
                                self.core.thread_lost(w, h);
                                lost = true;
                            }
                        }
                        ThreadStep::Drain => {
                            self.views[wu].drained = true;
                            self.workers[wu].as_mut().expect("thread").draining = true;
                            self.workers[wu].as_mut().expect("thread").done = true;
                        }
                        ThreadStep::Idle => break,
                    }
                }
                if let Some(t) = &self.workers[wu] {
                    if !t.done {
                        self.core.thread_queued(w, t.queue.len());
                    }
                }
            }
        }
        Ok(())
    }

    // ---- the world's side ------------------------------------------------------------------

    /// The worker of slot `w` is no longer live (it died, or its channel was cut).
    fn down(&mut self, w: u32) {
        let view = &mut self.views[w as usize];
        if view.live {
            view.live = false;
            view.down_since = Some(self.now);
        }
    }

    /// A shutdown is asked for. No worker is restarted from then on: what a worker that is
    /// down now (or dies later) left unacknowledged may have nowhere to go; a second request
    /// ends the workers at once.
    fn shut_down(&mut self) {
        // A worker down now is not restarted.
        self.signalled |= self.views.iter().any(|v| !v.live);
        self.core.shut_down(self.now);
        self.update_excuses();
    }

    /// Why connection `id` may be dropped now, if it may: its worker broke the protocol (what
    /// it was sent may be in use); it was returned (a lost fd) and no other worker is left;
    /// during a shutdown, no worker is left that was not told to drain (no restart then); or
    /// the shutdown's backstop gave up on it.
    fn drop_allowed(&self, id: usize) -> Option<&'static str> {
        let info = &self.conns[id];
        let open = |w: usize| self.views[w].live && !self.views[w].drained;
        if self.backstop {
            Some("backstop")
        } else if info.sent_to.iter().any(|&w| self.tainted[w as usize]) {
            Some("sent to a worker that broke the protocol")
        } else if !info.returned_by.is_empty()
            && (0..self.views.len())
                .filter(|&w| !info.returned_by.contains(&(w as u32)))
                .all(|w| !open(w))
        {
            Some("returned, and no other worker")
        } else if self.core.shutting_down() && (0..self.views.len()).all(|w| !open(w)) {
            Some("shutdown, and no worker left to take it")
        } else {
            None
        }
    }

    /// Slot `w`'s worker read a `CONNS`: it takes the fds that arrived and acknowledges them
    /// before reading any byte.
    fn take_conns(&mut self, w: u32, list: Vec<(u64, usize)>) -> Check {
        let wu = w as usize;
        let mut arrived = list.len();
        if self.rng.odds(self.sc.ctrunc) {
            arrived = if self.sc.node {
                0
            } else {
                self.rng.below(list.len())
            };
        }
        let mut seqs = Vec::with_capacity(arrived);
        for (i, &(seq, id)) in list.iter().enumerate() {
            if i < arrived {
                let info = &mut self.conns[id];
                ensure!(
                    info.served_by.is_none(),
                    "conn {id} (seq {seq}) served by worker {w} after worker {:?}",
                    info.served_by
                );
                info.served_by = Some(w);
                seqs.push(seq);
                self.check_sticky(id, w)?;
            } else {
                self.conns[id].returned_by.push(w);
            }
        }
        self.note(format!("worker {w} acks {}/{}", arrived, list.len()));
        if let Some(worker) = &mut self.workers[wu] {
            worker.outbox.push_back(ToMaster::Ack(seqs));
        }
        Ok(())
    }

    /// Connection `id` is served by `w`: its key's owner, or the owner was excused.
    fn check_sticky(&self, id: usize, w: u32) -> Check {
        let info = &self.conns[id];
        let owner = self.owner(info.key);
        if w == owner || info.returned_by.contains(&owner) {
            return Ok(());
        }
        let from = info.accepted.unwrap_or(self.now);
        let excused = self.views[owner as usize]
            .excused
            .iter()
            .any(|&(a, b)| a <= self.now && b.is_none_or(|b| b >= from));
        ensure!(
            excused,
            "conn {id} (key {}) served by worker {w}, but its owner {owner} was never excused \
             since its accept at {:?}",
            info.key,
            from.duration_since(self.base)
        );
        Ok(())
    }

    /// Whether the owner `w`'s keys may go elsewhere now.
    fn excused_now(&self, w: u32) -> bool {
        let wu = w as usize;
        let view = &self.views[wu];
        let shutting = self.core.shutting_down();
        // At its bound: unacknowledged connections, or connections waiting for its
        // replacement.
        let full = self.core.unacked(w) >= self.sc.max_queue
            || self.core.slots[wu].waiting.len() >= self.sc.max_queue;
        if full || self.tainted[wu] {
            return true;
        }
        if view.live {
            return false;
        }
        let start_over = match self.sc.mode {
            Mode::Spawn => self.now >= self.base + self.sc.start_timeout || shutting,
            Mode::Attach { successor: true } => {
                self.now >= self.base + self.sc.grace + Duration::from_secs(5) || shutting
            }
            Mode::Attach { successor: false } | Mode::Threads => true,
        };
        match view.down_since {
            None => start_over,
            Some(at) => {
                !view.held
                    || shutting
                    || self.sc.respawn_hold.is_zero()
                    || self.now >= at + self.sc.respawn_hold
            }
        }
    }

    /// Records which owners are excused now. Called after every call into the core that may
    /// route: within one call, routing only adds to a worker's queues, so their length after
    /// the call is the most they held during it.
    fn update_excuses(&mut self) {
        for w in 0..self.sc.workers {
            let excused = self.excused_now(w);
            let now = self.now;
            let list = &mut self.views[w as usize].excused;
            match list.last_mut() {
                Some((_, end @ None)) if !excused => *end = Some(now),
                Some((_, None)) => {}
                _ if excused => list.push((now, None)),
                _ => {}
            }
        }
    }
}

fn transient(what: &str) -> SendFailure {
    SendFailure {
        kind: FailureKind::Transient,
        error: what.to_owned(),
    }
}

fn describe(msg: &ToWorker) -> String {
    match msg {
        ToWorker::Conns(list) => format!("CONNS {list:?}"),
        other => format!("{other:?}"),
    }
}

/// The simulated key hash of key `k`.
fn key_hash(k: usize) -> u64 {
    Rng(k as u64 ^ 0x5eed).next()
}

/// One thing that can happen next.
#[derive(Clone, Copy, Debug)]
enum Event {
    /// A client connects (it waits in the backlog until accepted).
    Arrive,
    /// The listener accepts from the backlog.
    Accept,
    /// The front finds a key being peeked at.
    Peeked,
    /// Time passes.
    Tick,
    /// SIGTERM (or a successor taking over: the same request to the core).
    Signal,
    /// Slot `w`'s worker says `HELLO` (or dies before it does), as its start decided.
    Hello(u32),
    /// Slot `w`'s worker reads its channel.
    WorkerRead(u32),
    /// The master reads slot `w`'s channel.
    MasterRead(u32),
    /// The send in flight on slot `w`'s channel completes.
    SendDone(u32),
    /// Slot `w`'s worker crashes (a process), leaves (an attached worker) or is dropped (a
    /// thread).
    Crash(u32),
    /// Slot `w`'s exited process is reaped (its pidfd fired).
    Reap(u32),
    /// Slot `w`'s worker stops or resumes reading.
    Stall(u32),
    /// Slot `w`'s worker, drained or refused and at end of file, exits.
    Exit(u32),
    /// Slot `w`'s worker breaks the protocol, or its channel fails.
    Violate(u32),
    /// Slot `w`'s thread takes a connection from its queue.
    Take(u32),
    /// A worker attaches, asking for a slot (or any).
    Attach,
}

impl Sim {
    /// The events possible now, with their weights.
    fn possible(&mut self, out: &mut Vec<(Event, usize)>) {
        out.clear();
        let shutting = self.core.shutting_down();
        if !shutting && self.conns.len() < 600 {
            out.push((Event::Arrive, 5));
        }
        if !shutting && !self.backlog.is_empty() && self.front.len() < FRONT_CAP {
            out.push((Event::Accept, 8));
        }
        if !self.front.is_empty() {
            out.push((Event::Peeked, 6));
        }
        out.push((Event::Tick, 6));
        let signal_odds = if shutting {
            1
        } else {
            1000 / self.sc.steps.max(1)
        };
        if self.signals < 2 && self.rng.odds(signal_odds) {
            out.push((Event::Signal, 1));
        }
        if matches!(self.sc.mode, Mode::Attach { .. }) && !shutting {
            out.push((Event::Attach, 2));
        }
        for w in 0..self.sc.workers {
            let wu = w as usize;
            let view_channel = self.views[wu].channel;
            if self.views[wu].sending.is_some() && self.views[wu].blocked.is_none() {
                out.push((Event::SendDone(w), 6));
            }
            if view_channel && self.core.reading(w) {
                let readable = self.workers[wu]
                    .as_ref()
                    .is_some_and(|k| !k.outbox.is_empty() || k.closed || !k.alive);
                if readable {
                    out.push((Event::MasterRead(w), 6));
                }
                if self.rng.odds(self.sc.violation) {
                    out.push((Event::Violate(w), 1));
                }
            }
            let Some(worker) = &self.workers[wu] else {
                continue;
            };
            if worker.alive {
                match worker.start {
                    Some(Start_::HelloAt(at) | Start_::WrongId(at) | Start_::DiesAt(at))
                        if at <= self.now =>
                    {
                        out.push((Event::Hello(w), 4));
                    }
                    _ => {}
                }
                if !worker.stalled && !worker.inbox.is_empty() {
                    out.push((Event::WorkerRead(w), 6));
                }
                if worker.done && worker.inbox.is_empty() && worker.queue.is_empty() {
                    out.push((Event::Exit(w), 4));
                }
                if !worker.queue.is_empty() && !worker.stalled {
                    out.push((Event::Take(w), 5));
                }
                if self.rng.odds(self.sc.crash) {
                    out.push((Event::Crash(w), 1));
                }
                if self.rng.odds(self.sc.stall) {
                    out.push((Event::Stall(w), 1));
                }
            } else if self.sc.mode == Mode::Spawn && !worker.reaped {
                out.push((Event::Reap(w), 4));
            }
        }
    }

    fn pick(&mut self, events: &[(Event, usize)]) -> Event {
        self.prompt = events.iter().any(|(e, _)| {
            matches!(
                e,
                Event::SendDone(_) | Event::MasterRead(_) | Event::Reap(_)
            )
        });
        let total: usize = events.iter().map(|e| e.1).sum();
        let mut at = self.rng.below(total);
        for &(e, weight) in events {
            if at < weight {
                return e;
            }
            at -= weight;
        }
        Event::Tick
    }

    /// When something the simulator waits for is due.
    fn next_due(&self) -> Option<Instant> {
        let starts = self
            .workers
            .iter()
            .flatten()
            .filter(|w| w.alive)
            .filter_map(|w| match w.start {
                Some(Start_::HelloAt(at) | Start_::WrongId(at) | Start_::DiesAt(at)) => Some(at),
                None => None,
            });
        let peeks = self
            .front
            .iter()
            .filter_map(|&id| self.conns[id].accepted.map(|at| at + PEEK_TIMEOUT));
        self.core
            .next_deadline()
            .into_iter()
            .chain(starts)
            .chain(peeks)
            .min()
    }

    fn route(&mut self, id: usize) {
        self.conns[id].place = Place::Core;
        let key = self.conns[id].key;
        let rec = ConnRecord {
            seq: 0,
            key_hash: key_hash(key),
            accepted_ns: 0,
            peer: "127.0.0.1:1".parse().expect("address"),
            listener: 0,
            proxy_len: 0,
        };
        self.core.routed(Handoff {
            conn: Conn(id),
            rec,
            exclude: None,
        });
        self.update_excuses();
    }

    fn kill(&mut self, w: u32) {
        let attached = matches!(self.sc.mode, Mode::Attach { .. });
        if let Some(worker) = &mut self.workers[w as usize] {
            worker.alive = false;
            // The kernel closes the fds it had not read: the master still has its copies.
            worker.inbox.clear();
            worker.queue.clear();
            if attached {
                worker.closed = true;
            }
        }
        self.unblock_failed(w);
        self.down(w);
        self.signalled |= self.core.shutting_down();
    }

    /// A send waiting for room in `w`'s channel fails: its reader has gone.
    fn unblock_failed(&mut self, w: u32) {
        let view = &mut self.views[w as usize];
        if view.blocked.take().is_some() {
            view.sending = Some(Err(SendFailure {
                kind: FailureKind::PeerGone,
                error: "EPIPE".to_owned(),
            }));
        }
    }

    fn perform(&mut self, event: Event) -> Check {
        let now = self.now;
        match event {
            Event::Arrive => {
                let key = self.rng.below(KEYS);
                self.backlog.push_back(self.conns.len());
                self.conns.push(ConnInfo {
                    key,
                    accepted: None,
                    place: Place::Backlog,
                    served_by: None,
                    returned_by: Vec::new(),
                    sent_to: Vec::new(),
                });
            }
            Event::Accept => {
                if !self.core.accepting() || self.rng.odds(30) {
                    // Not accepting (clients wait in the backlog), or the accept failed
                    // (EMFILE): the front re-arms it later.
                    return Ok(());
                }
                let id = self.backlog.pop_front().expect("backlog");
                self.conns[id].accepted = Some(now);
                if self.rng.odds(300) {
                    // `ip` without PROXY: routed at accept.
                    self.note(format!(
                        "accept conn {id} key {}: routed",
                        self.conns[id].key
                    ));
                    self.route(id);
                } else {
                    self.note(format!("accept conn {id} key {}", self.conns[id].key));
                    self.conns[id].place = Place::Front;
                    self.front.push(id);
                }
            }
            Event::Peeked => {
                let i = self.rng.below(self.front.len());
                let id = self.front.swap_remove(i);
                self.note(format!("key of conn {id}: {}", self.conns[id].key));
                self.route(id);
            }
            Event::Tick => {
                // The kernel's own events (a completion, a reaped child, a message to read)
                // come promptly: time jumps ahead only when none is waiting.
                let prompt = self.prompt;
                self.now += if prompt || self.rng.odds(500) {
                    self.rng.millis(20)
                } else {
                    let due = self.next_due().unwrap_or(now + Duration::from_millis(100));
                    due.saturating_duration_since(now)
                        .min(Duration::from_secs(3))
                };
            }
            Event::Signal => {
                self.signals += 1;
                self.note("signal".to_owned());
                self.shut_down();
            }
            Event::Hello(w) => {
                let wu = w as usize;
                let worker = self.workers[wu].as_mut().expect("worker");
                match worker.start.take() {
                    Some(Start_::HelloAt(_)) => worker.outbox.push_back(ToMaster::Hello(w)),
                    Some(Start_::WrongId(_)) => {
                        let other = (w + 1) % self.sc.workers.max(2);
                        worker.outbox.push_back(ToMaster::Hello(other));
                    }
                    Some(Start_::DiesAt(_)) => {
                        self.note(format!("worker {w} dies before HELLO"));
                        self.kill(w);
                    }
                    None => {}
                }
            }
            Event::WorkerRead(w) => {
                let wu = w as usize;
                let worker = self.workers[wu].as_mut().expect("worker");
                let read = worker.inbox.pop_front().expect("inbox");
                if worker.inbox.len() < CHANNEL_CAP {
                    if let Some(waiting) = self.views[wu].blocked.take() {
                        worker.inbox.push_back(waiting);
                    }
                }
                match read {
                    ToWorker::Welcome | ToWorker::Setup => {}
                    ToWorker::Rehash => worker.rehashed = true,
                    ToWorker::Refused => worker.done = true,
                    ToWorker::Drain => {
                        worker.draining = true;
                        if worker.rehashed {
                            worker.outbox.push_back(ToMaster::Drained);
                        }
                    }
                    ToWorker::Eof => worker.done = true,
                    ToWorker::Conns(list) => {
                        ensure!(!worker.done, "worker {w} got CONNS after end of file");
                        self.take_conns(w, list)?;
                    }
                }
            }
            Event::MasterRead(w) => {
                let wu = w as usize;
                let worker = self.workers[wu].as_mut().expect("worker");
                let pid = worker.pid;
                match worker.outbox.pop_front() {
                    Some(ToMaster::Hello(said)) => {
                        let alive = worker.alive;
                        // A worker whose exit the core has seen is not welcomed any more.
                        let reaped = worker.reaped;
                        self.note(format!("master reads HELLO {said} from {w}"));
                        if said == w && !reaped {
                            let view = &mut self.views[wu];
                            view.live = true;
                            view.ever_live = true;
                            if !alive {
                                self.down(w);
                            }
                        }
                        self.core.hello(w, said, pid);
                        // Half the native workers take the dispatcher threads' channels, a third
                        // hand connections back.
                        if !self.sc.node && pid % 2 == 0 {
                            self.core.offer_channels(w);
                        }
                        if !self.sc.node && pid % 3 == 0 {
                            self.core.offer_rehash(w);
                        }
                    }
                    Some(ToMaster::Ack(seqs)) => {
                        self.note(format!("master reads ACK {seqs:?} from {w}"));
                        if self.sc.node {
                            // NODE_HANDLE_ACK, or NACK for a handle that did not arrive.
                            self.core.ack_oldest(w, !seqs.is_empty());
                        } else {
                            self.core.ack(w, seqs.iter().copied());
                        }
                    }
                    Some(ToMaster::Drained) => {
                        self.note(format!("master reads DRAINED from {w}"));
                        self.core.drained(w);
                    }
                    None => {
                        self.note(format!("master reads end of file from {w}"));
                        self.core.channel_ended(w, now);
                    }
                }
            }
            Event::SendDone(w) => {
                let result = self.views[w as usize].sending.take().expect("send");
                self.core.sent(w, result, now);
            }
            Event::Crash(w) => {
                self.note(format!("worker {w} crashes"));
                if self.sc.mode == Mode::Threads {
                    // The thread dropped its worker: what was queued is closed with the queue.
                    let thread = self.workers[w as usize].as_mut().expect("thread");
                    if !thread.queue.is_empty() {
                        let n = thread.queue.len();
                        self.note(format!("thread {w} dropped with {n} queued"));
                    }
                }
                self.kill(w);
            }
            Event::Reap(w) => {
                let worker = self.workers[w as usize].as_mut().expect("worker");
                worker.reaped = true;
                let success = worker.done;
                let pid = worker.pid;
                if self.rng.odds(30) {
                    self.note(format!("waiting for {w} (pid {pid}) fails"));
                    self.core.lost(w, now);
                } else {
                    self.note(format!("reap {w} (pid {pid})"));
                    self.core.exited(w, "simulated exit", success, now);
                }
            }
            Event::Stall(w) => {
                let worker = self.workers[w as usize].as_mut().expect("worker");
                worker.stalled = !worker.stalled;
            }
            Event::Exit(w) => {
                self.note(format!("worker {w} exits"));
                let attached = matches!(self.sc.mode, Mode::Attach { .. });
                let worker = self.workers[w as usize].as_mut().expect("worker");
                worker.alive = false;
                if attached {
                    worker.closed = true;
                }
                self.down(w);
            }
            Event::Violate(w) => {
                self.tainted[w as usize] = true;
                let pid = self.workers[w as usize].as_ref().map_or(0, |k| k.pid);
                match self.rng.below(4) {
                    0 => {
                        self.note(format!("worker {w} sends garbage"));
                        self.core
                            .violation(w, "sent a malformed message (simulated)");
                    }
                    1 => {
                        self.note(format!("worker {w}'s channel fails"));
                        self.core.channel_failed(w, "EBADF (simulated)", now);
                    }
                    2 => {
                        self.note(format!("worker {w} acknowledges a seq never sent"));
                        self.core.ack(w, [u64::MAX]);
                    }
                    _ => {
                        self.note(format!("worker {w} says HELLO again"));
                        self.core.hello(w, w, pid);
                    }
                }
                self.down(w);
            }
            Event::Take(w) => {
                let thread = self.workers[w as usize].as_mut().expect("thread");
                let id = thread.queue.pop_front();
                let queued = thread.queue.len();
                self.note(format!("thread {w} takes conn {id:?}"));
                self.core.thread_queued(w, queued);
            }
            Event::Attach => {
                let wanted = if self.rng.odds(500) {
                    ANY_WORKER
                } else {
                    self.rng.below(self.sc.workers as usize + 1) as u32
                };
                match self.core.free_slot(wanted) {
                    Ok(w) => {
                        let wu = w as usize;
                        ensure!(
                            !self.views[wu].channel,
                            "slot {w} given to an attaching worker while its channel is open"
                        );
                        let pid = self.pid();
                        self.note(format!("worker attaches to slot {w} (pid {pid})"));
                        self.workers[wu] = Some(Worker::new(pid, None, false));
                        self.tainted[wu] = false;
                        let view = &mut self.views[wu];
                        view.channel = true;
                        view.live = true;
                        view.ever_live = true;
                        view.held = false;
                        self.core.attached(w, pid);
                        if pid % 2 == 0 {
                            self.core.offer_channels(w);
                        }
                    }
                    Err(why) => self.note(format!("attach to {wanted} refused: {why}")),
                }
            }
        }
        Ok(())
    }

    /// The front's peek deadline: what was not decided by then goes by the fallback rule.
    fn expire_front(&mut self) {
        let now = self.now;
        let due: Vec<usize> = self
            .front
            .iter()
            .copied()
            .filter(|&id| {
                self.conns[id]
                    .accepted
                    .is_some_and(|at| at + PEEK_TIMEOUT <= now)
            })
            .collect();
        for id in due {
            self.front.retain(|&f| f != id);
            self.route(id);
        }
    }

    /// One round, as the master's loop runs it: an event, the timers, the sends.
    fn round(&mut self, events: &mut Vec<(Event, usize)>) -> Check {
        self.possible(events);
        let event = self.pick(events);
        self.perform(event)?;
        self.update_excuses();
        self.expire_front();
        if self.sc.mode == Mode::Threads {
            for w in 0..self.sc.workers {
                if let Some(t) = &self.workers[w as usize] {
                    if !t.done {
                        self.core.thread_queued(w, t.queue.len());
                    }
                }
            }
        }
        self.core.on_timer(self.now);
        self.update_excuses();
        self.act()?;
        self.flush()?;
        self.update_excuses();
        self.check()
    }

    /// The invariants that hold after every round.
    fn check(&self) -> Check {
        let in_core = self.conns.iter().filter(|c| c.place == Place::Core).count();
        ensure!(
            in_core == self.core.held_connections(),
            "the core holds {} connections, {in_core} were given to it and not released or \
             dropped",
            self.core.held_connections()
        );
        let in_front = self
            .conns
            .iter()
            .filter(|c| c.place == Place::Front)
            .count();
        ensure!(in_front == self.front.len(), "front count");
        if !self.core.shutting_down() {
            let n = self.sc.workers as usize;
            let bound = 3 * n * self.sc.max_queue + FRONT_CAP + 1;
            ensure!(
                self.core.held_connections() <= bound,
                "the core holds {} connections, more than {bound}",
                self.core.held_connections()
            );
            for w in 0..self.sc.workers {
                ensure!(
                    self.core.unacked(w) <= 2 * self.sc.max_queue,
                    "worker {w} holds {} unacknowledged connections (--max-queue {})",
                    self.core.unacked(w),
                    self.sc.max_queue
                );
            }
        }
        if let Some(at) = self.core.next_deadline() {
            ensure!(
                at > self.now,
                "a timer {:?} in the past is still due after the core was told the time",
                self.now.duration_since(at)
            );
        }
        for (w, view) in self.views.iter().enumerate() {
            ensure!(
                view.channel || view.sending.is_none(),
                "slot {w} has a send in flight and no channel"
            );
        }
        Ok(())
    }

    /// Runs the sequence: its steps, then a shutdown that must finish in bounded time.
    fn run(&mut self) -> Check {
        let mut events = Vec::new();
        self.flush()?;
        while self.step < self.sc.steps {
            self.step += 1;
            self.round(&mut events)?;
        }
        if !self.core.shutting_down() {
            self.note("signal (end of the sequence)".to_owned());
            self.signals += 1;
            self.shut_down();
            self.act()?;
        }
        let signalled = self.now;
        // The longest a shutdown may take: the routing still possible (peek deadline), the
        // grace period from the drain, SIGTERM, then SIGKILL (repeated), and the reaping.
        let limit =
            signalled + PEEK_TIMEOUT + 2 * self.sc.grace + 3 * KILL_AFTER + Duration::from_secs(1);
        let mut settle = 0;
        while !self.core.finished() {
            settle += 1;
            self.step += 1;
            ensure!(
                self.now <= limit && settle < 50_000,
                "the shutdown did not finish: {:?} after the signal, {settle} rounds",
                self.now.duration_since(signalled)
            );
            self.round(&mut events)?;
        }
        // Whatever was accepted is closed after its acknowledgement or dropped; nothing stays
        // but what was sent to a worker that died with the others (the core is finished once
        // every process is reaped, whether or not its channel was read to the end: there is
        // nowhere left to send it), what waited for a worker that ended during the shutdown
        // (no restart then), or what the backstop gave up on.
        for (id, c) in self.conns.iter().enumerate() {
            ensure!(
                matches!(c.place, Place::Backlog | Place::Released | Place::Dropped)
                    || (c.place == Place::Front && (self.backstop || self.signalled))
                    || (c.place == Place::Core
                        && (self.backstop
                            || self.signalled
                            || c.served_by.is_some()
                            || !c.sent_to.is_empty())),
                "conn {id} is still {:?} after the shutdown",
                c.place
            );
        }
        Ok(())
    }
}

/// Runs the sequence of `seed`; `Err` with the failure and the last steps of its trace.
fn run_seed(seed: u64) -> Result<usize, String> {
    let mut sim = Sim::new(seed);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let result = sim.run();
        (result, sim)
    }));
    match outcome {
        Ok((Ok(()), sim)) => Ok(sim.conns.len()),
        Ok((Err(e), sim)) => Err(format!(
            "{e}\nscenario: {:?}\nlast steps:\n{}",
            sim.sc,
            Vec::from(sim.trace).join("\n")
        )),
        Err(panic) => Err(format!(
            "the core panicked: {}",
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default()
        )),
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn random_sequences_keep_every_invariant() {
    if let Some(seed) = env_u64("STICKYD_SIM_SEED") {
        if let Err(e) = run_seed(seed) {
            panic!("seed {seed}: {e}");
        }
        return;
    }
    let sequences = env_u64("STICKYD_SIM_SEQUENCES").unwrap_or(3000);
    let first = env_u64("STICKYD_SIM_FIRST").unwrap_or(0);
    let mut conns = 0;
    for seed in first..first + sequences {
        match run_seed(seed) {
            Ok(n) => conns += n,
            Err(e) => panic!(
                "seed {seed}: {e}\nreplay: STICKYD_SIM_SEED={seed} cargo test -p stickyd --lib sim"
            ),
        }
    }
    eprintln!("simulated {sequences} sequences, {conns} connections");
}
