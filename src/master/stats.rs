//! Counters of what the master did, for the exit summary (and the metrics endpoint to come).

/// Event counts since start.
#[derive(Clone, Debug, Default)]
pub(crate) struct Stats {
    pub accepted: u64,
    pub dispatched: u64,
    /// Routed by the fallback rule (no rule yielded a key).
    pub fallbacks: u64,
    /// Closed at the deadline or the peek limit with `--on-timeout close`.
    pub no_key_closed: u64,
    /// Closed for a malformed, incomplete or oversized PROXY header.
    pub proxy_malformed: u64,
    /// Closed because a PROXY header would come from an untrusted peer.
    pub proxy_untrusted: u64,
}
