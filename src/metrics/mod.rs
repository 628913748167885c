//! Counters, gauges and a histogram of what the master does, rendered as Prometheus text.
//!
//! The master's event loop owns no lock here: every event is one `Relaxed` atomic update on a
//! [`Metrics`] it shares (in an `Arc`) with the endpoint thread of [`serve`], which reads the
//! atomics and renders the text exposition format (version 0.0.4) by hand.
//!
//! ```
//! use std::time::Duration;
//! use stickyd::metrics::Metrics;
//!
//! let metrics = Metrics::new(&["web".to_string()], 2);
//! metrics.accepted(0);
//! metrics.dispatched(1, 0);
//! metrics.handoff(Duration::from_micros(40));
//!
//! let mut text = String::new();
//! metrics.render(&mut text);
//! assert!(text.contains("stickyd_connections_dispatched_total{worker=\"1\",listener=\"web\"} 1\n"));
//! ```

mod histogram;
mod server;
mod text;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use histogram::Histogram;
use text::Family;

pub use server::serve;

/// Every counter the master keeps, shared with the metrics endpoint.
///
/// Only atomics change after construction, so it is `Send + Sync` and every update is a single
/// `Relaxed` store or `fetch_add`: no lock, no allocation. An index out of range (a worker or
/// listener the registry was not built with) is ignored, never a panic.
#[derive(Debug)]
pub struct Metrics {
    /// Listener names, escaped for a label value once, at construction.
    listener_labels: Box<[String]>,
    workers: u32,
    accepted: Box<[AtomicU64]>,
    /// `workers * listeners`, worker-major: `[worker * listeners + listener]`.
    dispatched: Box<[AtomicU64]>,
    peek_timeouts: AtomicU64,
    fallbacks: AtomicU64,
    no_key_closed: AtomicU64,
    spills: AtomicU64,
    redispatched: AtomicU64,
    returned: AtomicU64,
    thread_handoffs: AtomicU64,
    handbacks: AtomicU64,
    proxy_malformed: AtomicU64,
    proxy_untrusted: AtomicU64,
    worker_restarts: Box<[AtomicU64]>,
    unacked: Box<[AtomicU64]>,
    live: Box<[AtomicBool]>,
    accept_rearms: AtomicU64,
    accept_pauses: AtomicU64,
    backlog_accepts: AtomicU64,
    send_retries: AtomicU64,
    dropped: AtomicU64,
    pending: AtomicU64,
    handoff: Histogram,
}

/// `n` zeroed counters.
fn zeroes(n: usize) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

/// Adds one to the counter at `index`, if there is one.
fn bump(counters: &[AtomicU64], index: usize) {
    if let Some(counter) = counters.get(index) {
        counter.fetch_add(1, Relaxed);
    }
}

impl Metrics {
    /// `listeners`: the listener names in order (index = the u16 the master uses);
    /// `workers`: the slot count.
    pub fn new(listeners: &[String], workers: u32) -> Metrics {
        let slots = workers as usize;
        Metrics {
            listener_labels: listeners
                .iter()
                .map(|name| text::escape_label(name))
                .collect(),
            workers,
            accepted: zeroes(listeners.len()),
            dispatched: zeroes(slots * listeners.len()),
            peek_timeouts: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            no_key_closed: AtomicU64::new(0),
            spills: AtomicU64::new(0),
            redispatched: AtomicU64::new(0),
            returned: AtomicU64::new(0),
            thread_handoffs: AtomicU64::new(0),
            handbacks: AtomicU64::new(0),
            proxy_malformed: AtomicU64::new(0),
            proxy_untrusted: AtomicU64::new(0),
            worker_restarts: zeroes(slots),
            unacked: zeroes(slots),
            live: (0..slots).map(|_| AtomicBool::new(false)).collect(),
            accept_rearms: AtomicU64::new(0),
            accept_pauses: AtomicU64::new(0),
            backlog_accepts: AtomicU64::new(0),
            send_retries: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            handoff: Histogram::new(),
        }
    }

    /// A channel send failed for want of kernel resources (`ENOBUFS`, `ETOOMANYREFS`, ...) and
    /// will be tried again (`stickyd_channel_send_retries_total`).
    pub fn send_retry(&self) {
        self.send_retries.fetch_add(1, Relaxed);
    }

    /// Connections the master closed after accepting them, for want of a worker that could take
    /// them or after a worker broke the protocol (`stickyd_dropped_total`).
    pub fn dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Relaxed);
    }

    /// Connections accepted and still being peeked at (`stickyd_pending_connections`).
    pub fn set_pending(&self, n: u64) {
        self.pending.store(n, Relaxed);
    }

    /// A connection was accepted on `listener` (`stickyd_connections_accepted_total`).
    pub fn accepted(&self, listener: u16) {
        bump(&self.accepted, usize::from(listener));
    }

    /// A connection from `listener` was handed to `worker`
    /// (`stickyd_connections_dispatched_total`).
    pub fn dispatched(&self, worker: u32, listener: u16) {
        let listeners = self.listener_labels.len();
        let listener = usize::from(listener);
        if listener < listeners && worker < self.workers {
            bump(&self.dispatched, worker as usize * listeners + listener);
        }
    }

    /// A connection reached its peek deadline without a key (`stickyd_peek_timeouts_total`).
    pub fn peek_timeout(&self) {
        self.peek_timeouts.fetch_add(1, Relaxed);
    }

    /// A connection was routed by the fallback rule (`stickyd_fallbacks_total`).
    pub fn fallback(&self) {
        self.fallbacks.fetch_add(1, Relaxed);
    }

    /// A connection without a key was closed, `--on-timeout close`
    /// (`stickyd_no_key_closed_total`).
    pub fn no_key_closed(&self) {
        self.no_key_closed.fetch_add(1, Relaxed);
    }

    /// A connection went to the next worker by rank because its own was at `--max-queue`
    /// (`stickyd_spills_total`).
    pub fn spill(&self) {
        self.spills.fetch_add(1, Relaxed);
    }

    /// `n` unacknowledged connections of a dead worker were dispatched again
    /// (`stickyd_redispatched_total`).
    pub fn redispatched(&self, n: u64) {
        self.redispatched.fetch_add(n, Relaxed);
    }

    /// `n` connections came back from a worker whose kernel dropped their fds, `MSG_CTRUNC`
    /// (`stickyd_returned_total`).
    pub fn returned(&self, n: u64) {
        self.returned.fetch_add(n, Relaxed);
    }

    /// `n` connections a dispatcher thread sent over its own channel were acknowledged by
    /// their worker (`stickyd_thread_handoffs_total`; they are in
    /// `stickyd_connections_dispatched_total` too).
    pub fn thread_handoffs(&self, n: u64) {
        self.thread_handoffs.fetch_add(n, Relaxed);
    }

    /// A worker handed a kept-alive connection back to be routed by its next request
    /// (`stickyd_handbacks_total`).
    pub fn handback(&self) {
        self.handbacks.fetch_add(1, Relaxed);
    }

    /// A connection was closed for a malformed PROXY header (`stickyd_proxy_malformed_total`).
    pub fn proxy_malformed(&self) {
        self.proxy_malformed.fetch_add(1, Relaxed);
    }

    /// A connection was closed for a PROXY header from an untrusted peer
    /// (`stickyd_proxy_untrusted_total`).
    pub fn proxy_untrusted(&self) {
        self.proxy_untrusted.fetch_add(1, Relaxed);
    }

    /// `worker`'s process was started again (`stickyd_worker_restarts_total`).
    pub fn worker_restart(&self, worker: u32) {
        bump(&self.worker_restarts, worker as usize);
    }

    /// `worker` holds `n` unacknowledged connections (`stickyd_unacked_connections` gauge).
    pub fn set_unacked(&self, worker: u32, n: u64) {
        if let Some(gauge) = self.unacked.get(worker as usize) {
            gauge.store(n, Relaxed);
        }
    }

    /// `worker` is live (its `HELLO` arrived) or not (`stickyd_worker_live` gauge, 0 or 1).
    pub fn set_live(&self, worker: u32, live: bool) {
        if let Some(flag) = self.live.get(worker as usize) {
            flag.store(live, Relaxed);
        }
    }

    /// The multishot accept was armed again after it ended (`stickyd_accept_rearms_total`).
    pub fn accept_rearm(&self) {
        self.accept_rearms.fetch_add(1, Relaxed);
    }

    /// Accepting stopped because no worker could take a connection
    /// (`stickyd_accept_pauses_total`).
    pub fn accept_pause(&self) {
        self.accept_pauses.fetch_add(1, Relaxed);
    }

    /// A busy loop took a connection from a listener's backlog itself, with no accept armed
    /// (`stickyd_backlog_accepts_total`; also counted as accepted).
    pub fn backlog_accept(&self) {
        self.backlog_accepts.fetch_add(1, Relaxed);
    }

    /// A connection was handed off `since_accept` after it was accepted
    /// (`stickyd_handoff_seconds` histogram).
    pub fn handoff(&self, since_accept: Duration) {
        self.handoff.observe(since_accept);
    }

    /// Number of live workers (from [`Metrics::set_live`]), for `/healthz`.
    pub fn live_workers(&self) -> u32 {
        let live = self.live.iter().filter(|flag| flag.load(Relaxed)).count();
        u32::try_from(live).unwrap_or(u32::MAX)
    }

    /// Connections accepted on all listeners, for the master's exit summary and tests.
    pub fn accepted_total(&self) -> u64 {
        self.accepted.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// Connections dispatched to all workers, for the master's exit summary and tests.
    pub fn dispatched_total(&self) -> u64 {
        self.dispatched.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// Appends the Prometheus text exposition format (version 0.0.4) to `out`: for each metric
    /// `# HELP` and `# TYPE` lines, then its samples; the hand-off histogram as cumulative
    /// `_bucket{le="..."}` lines ending with `le="+Inf"`, then `_sum` (seconds) and `_count`.
    pub fn render(&self, out: &mut String) {
        let listeners = &self.listener_labels;

        let family = Family::counter(
            out,
            "stickyd_connections_accepted_total",
            "Connections accepted, by listener.",
        );
        for (name, count) in listeners.iter().zip(self.accepted.iter()) {
            family.sample(out, &[("listener", name)], count.load(Relaxed));
        }

        let family = Family::counter(
            out,
            "stickyd_connections_dispatched_total",
            "Connections handed to a worker, by worker and listener.",
        );
        for (worker, row) in self.dispatched.chunks(listeners.len().max(1)).enumerate() {
            let worker = worker.to_string();
            for (name, count) in listeners.iter().zip(row) {
                let labels = [("worker", worker.as_str()), ("listener", name.as_str())];
                family.sample(out, &labels, count.load(Relaxed));
            }
        }

        let scalars: [(&str, &str, &AtomicU64); 15] = [
            (
                "stickyd_peek_timeouts_total",
                "Connections that reached the peek deadline without a key.",
                &self.peek_timeouts,
            ),
            (
                "stickyd_fallbacks_total",
                "Connections routed by the fallback rule.",
                &self.fallbacks,
            ),
            (
                "stickyd_no_key_closed_total",
                "Connections closed without a key (--on-timeout close).",
                &self.no_key_closed,
            ),
            (
                "stickyd_spills_total",
                "Connections sent to the next worker by rank because theirs was at --max-queue.",
                &self.spills,
            ),
            (
                "stickyd_redispatched_total",
                "Unacknowledged connections of a dead worker dispatched again.",
                &self.redispatched,
            ),
            (
                "stickyd_returned_total",
                "Connections a worker returned because its kernel dropped the fd (MSG_CTRUNC).",
                &self.returned,
            ),
            (
                "stickyd_thread_handoffs_total",
                "Connections dispatcher threads handed to workers over their own channels.",
                &self.thread_handoffs,
            ),
            (
                "stickyd_handbacks_total",
                "Kept-alive connections workers handed back to be routed by their next request.",
                &self.handbacks,
            ),
            (
                "stickyd_proxy_malformed_total",
                "Connections closed for a malformed PROXY header.",
                &self.proxy_malformed,
            ),
            (
                "stickyd_proxy_untrusted_total",
                "Connections closed for a PROXY header from an untrusted peer.",
                &self.proxy_untrusted,
            ),
            (
                "stickyd_accept_rearms_total",
                "Times the multishot accept was armed again after it ended.",
                &self.accept_rearms,
            ),
            (
                "stickyd_accept_pauses_total",
                "Times accepting stopped because no worker could take a connection.",
                &self.accept_pauses,
            ),
            (
                "stickyd_backlog_accepts_total",
                "Connections a busy dispatcher loop took from a listener's backlog itself.",
                &self.backlog_accepts,
            ),
            (
                "stickyd_channel_send_retries_total",
                "Worker channel sends tried again after the kernel ran short (ENOBUFS, ...).",
                &self.send_retries,
            ),
            (
                "stickyd_dropped_total",
                "Connections closed by the master for want of a worker, or after a protocol \
                 violation.",
                &self.dropped,
            ),
        ];
        for (name, help, count) in scalars {
            Family::counter(out, name, help).sample(out, &[], count.load(Relaxed));
        }

        let family = Family::counter(
            out,
            "stickyd_worker_restarts_total",
            "Worker processes started again after an exit, by worker.",
        );
        for (worker, count) in self.worker_restarts.iter().enumerate() {
            family.sample(out, &[("worker", &worker.to_string())], count.load(Relaxed));
        }

        let family = Family::gauge(
            out,
            "stickyd_unacked_connections",
            "Connections handed to a worker and not yet acknowledged, by worker.",
        );
        for (worker, gauge) in self.unacked.iter().enumerate() {
            family.sample(out, &[("worker", &worker.to_string())], gauge.load(Relaxed));
        }

        let family = Family::gauge(
            out,
            "stickyd_worker_live",
            "1 while the worker is live (its HELLO arrived), else 0, by worker.",
        );
        for (worker, flag) in self.live.iter().enumerate() {
            let live = u64::from(flag.load(Relaxed));
            family.sample(out, &[("worker", &worker.to_string())], live);
        }
        Family::gauge(
            out,
            "stickyd_pending_connections",
            "Connections accepted and still being peeked at for their key.",
        )
        .sample(out, &[], self.pending.load(Relaxed));

        self.handoff.render(
            out,
            "stickyd_handoff_seconds",
            "Time from accept to hand-off to a worker, in seconds.",
        );
    }
}

#[cfg(test)]
mod tests;
