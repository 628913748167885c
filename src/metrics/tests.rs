//! The registry and its text: families, samples, the histogram, escaping, bounds, threads.

use std::sync::Arc;
use std::time::Duration;

use super::Metrics;
use super::text;

const FAMILIES: [(&str, &str); 22] = [
    ("stickyd_connections_accepted_total", "counter"),
    ("stickyd_connections_dispatched_total", "counter"),
    ("stickyd_peek_timeouts_total", "counter"),
    ("stickyd_fallbacks_total", "counter"),
    ("stickyd_no_key_closed_total", "counter"),
    ("stickyd_spills_total", "counter"),
    ("stickyd_redispatched_total", "counter"),
    ("stickyd_returned_total", "counter"),
    ("stickyd_thread_handoffs_total", "counter"),
    ("stickyd_handbacks_total", "counter"),
    ("stickyd_proxy_malformed_total", "counter"),
    ("stickyd_proxy_untrusted_total", "counter"),
    ("stickyd_worker_restarts_total", "counter"),
    ("stickyd_unacked_connections", "gauge"),
    ("stickyd_worker_live", "gauge"),
    ("stickyd_accept_rearms_total", "counter"),
    ("stickyd_accept_pauses_total", "counter"),
    ("stickyd_backlog_accepts_total", "counter"),
    ("stickyd_channel_send_retries_total", "counter"),
    ("stickyd_dropped_total", "counter"),
    ("stickyd_pending_connections", "gauge"),
    ("stickyd_handoff_seconds", "histogram"),
];

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn rendered(metrics: &Metrics) -> String {
    let mut out = String::new();
    metrics.render(&mut out);
    out
}

/// The sample lines (not comments) of `text` that start with `prefix`.
fn samples<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

#[test]
fn fresh_registry_renders_every_family_with_zeroes() {
    let metrics = Metrics::new(&names(&["l0", "admin"]), 2);
    let out = rendered(&metrics);
    assert!(out.ends_with('\n'));
    for (name, kind) in FAMILIES {
        let help = format!("# HELP {name} ");
        let kind = format!("# TYPE {name} {kind}\n");
        let help_at = out
            .find(&help)
            .unwrap_or_else(|| panic!("no HELP for {name}"));
        let kind_at = out
            .find(&kind)
            .unwrap_or_else(|| panic!("no TYPE for {name}"));
        assert!(help_at < kind_at, "{name}: HELP before TYPE");
    }
    let types = out.lines().filter(|l| l.starts_with("# TYPE ")).count();
    assert_eq!(types, FAMILIES.len());
    for line in out.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.ends_with(" 0"), "not zero: {line}");
    }
    assert_eq!(
        samples(&out, "stickyd_connections_dispatched_total{"),
        [
            r#"stickyd_connections_dispatched_total{worker="0",listener="l0"} 0"#,
            r#"stickyd_connections_dispatched_total{worker="0",listener="admin"} 0"#,
            r#"stickyd_connections_dispatched_total{worker="1",listener="l0"} 0"#,
            r#"stickyd_connections_dispatched_total{worker="1",listener="admin"} 0"#,
        ]
    );
    assert_eq!(samples(&out, "stickyd_handoff_seconds_bucket").len(), 20);
}

#[test]
fn events_show_as_exact_samples() {
    let metrics = Metrics::new(&names(&["l0", "l1"]), 3);
    metrics.accepted(0);
    metrics.accepted(1);
    metrics.accepted(1);
    metrics.dispatched(2, 1);
    metrics.dispatched(2, 1);
    metrics.dispatched(0, 0);
    metrics.peek_timeout();
    metrics.fallback();
    metrics.fallback();
    metrics.no_key_closed();
    metrics.spill();
    metrics.redispatched(5);
    metrics.returned(2);
    metrics.proxy_malformed();
    metrics.proxy_untrusted();
    metrics.worker_restart(1);
    metrics.set_unacked(2, 7);
    metrics.set_unacked(2, 4);
    metrics.set_live(0, true);
    metrics.set_live(2, true);
    metrics.set_live(2, false);
    metrics.accept_rearm();
    metrics.accept_pause();
    metrics.accept_pause();
    metrics.backlog_accept();

    let out = rendered(&metrics);
    for line in [
        r#"stickyd_connections_accepted_total{listener="l0"} 1"#,
        r#"stickyd_connections_accepted_total{listener="l1"} 2"#,
        r#"stickyd_connections_dispatched_total{worker="0",listener="l0"} 1"#,
        r#"stickyd_connections_dispatched_total{worker="2",listener="l1"} 2"#,
        r#"stickyd_connections_dispatched_total{worker="1",listener="l1"} 0"#,
        "stickyd_peek_timeouts_total 1",
        "stickyd_fallbacks_total 2",
        "stickyd_no_key_closed_total 1",
        "stickyd_spills_total 1",
        "stickyd_redispatched_total 5",
        "stickyd_returned_total 2",
        "stickyd_proxy_malformed_total 1",
        "stickyd_proxy_untrusted_total 1",
        r#"stickyd_worker_restarts_total{worker="0"} 0"#,
        r#"stickyd_worker_restarts_total{worker="1"} 1"#,
        r#"stickyd_unacked_connections{worker="2"} 4"#,
        r#"stickyd_unacked_connections{worker="0"} 0"#,
        r#"stickyd_worker_live{worker="0"} 1"#,
        r#"stickyd_worker_live{worker="1"} 0"#,
        r#"stickyd_worker_live{worker="2"} 0"#,
        "stickyd_accept_rearms_total 1",
        "stickyd_accept_pauses_total 2",
        "stickyd_backlog_accepts_total 1",
    ] {
        assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
    }
    assert_eq!(metrics.accepted_total(), 3);
    assert_eq!(metrics.dispatched_total(), 3);
    assert_eq!(metrics.live_workers(), 1);
}

#[test]
fn histogram_buckets_are_cumulative_with_sum_and_count() {
    let metrics = Metrics::new(&names(&["l0"]), 1);
    for micros in [5, 10, 11, 300, 1_000_000] {
        metrics.handoff(Duration::from_micros(micros));
    }
    metrics.handoff(Duration::from_secs(60));
    metrics.handoff(Duration::MAX);
    let out = rendered(&metrics);
    let buckets = samples(&out, "stickyd_handoff_seconds_bucket");
    assert_eq!(
        buckets,
        [
            r#"stickyd_handoff_seconds_bucket{le="0.00001"} 2"#,
            r#"stickyd_handoff_seconds_bucket{le="0.000025"} 3"#,
            r#"stickyd_handoff_seconds_bucket{le="0.00005"} 3"#,
            r#"stickyd_handoff_seconds_bucket{le="0.0001"} 3"#,
            r#"stickyd_handoff_seconds_bucket{le="0.00025"} 3"#,
            r#"stickyd_handoff_seconds_bucket{le="0.0005"} 4"#,
            r#"stickyd_handoff_seconds_bucket{le="0.001"} 4"#,
            r#"stickyd_handoff_seconds_bucket{le="0.0025"} 4"#,
            r#"stickyd_handoff_seconds_bucket{le="0.005"} 4"#,
            r#"stickyd_handoff_seconds_bucket{le="0.01"} 4"#,
            r#"stickyd_handoff_seconds_bucket{le="0.025"} 4"#,
            r#"stickyd_handoff_seconds_bucket{le="0.05"} 4"#,
            r#"stickyd_handoff_seconds_bucket{le="0.1"} 4"#,
            r#"stickyd_handoff_seconds_bucket{le="0.25"} 4"#,
            r#"stickyd_handoff_seconds_bucket{le="0.5"} 4"#,
            r#"stickyd_handoff_seconds_bucket{le="1"} 5"#,
            r#"stickyd_handoff_seconds_bucket{le="2.5"} 5"#,
            r#"stickyd_handoff_seconds_bucket{le="5"} 5"#,
            r#"stickyd_handoff_seconds_bucket{le="10"} 5"#,
            r#"stickyd_handoff_seconds_bucket{le="+Inf"} 7"#,
        ]
    );
    assert!(out.lines().any(|l| l == "stickyd_handoff_seconds_count 7"));

    // Without the saturated `Duration::MAX`, the sum is exact.
    let metrics = Metrics::new(&[], 0);
    for micros in [5, 10, 11, 300, 1_000_000] {
        metrics.handoff(Duration::from_micros(micros));
    }
    let out = rendered(&metrics);
    assert!(
        out.lines()
            .any(|l| l == "stickyd_handoff_seconds_sum 1.000326"),
        "{out}"
    );
}

#[test]
fn seconds_are_written_exactly() {
    assert_eq!(text::seconds(0), "0");
    assert_eq!(text::seconds(1), "0.000000001");
    assert_eq!(text::seconds(250_000), "0.00025");
    assert_eq!(text::seconds(1_500_000_000), "1.5");
    assert_eq!(text::seconds(42_000_000_000), "42");
}

#[test]
fn label_values_are_escaped() {
    assert_eq!(text::escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
    assert_eq!(text::escape_label("line\nbreak"), r"line\nbreak");
    assert_eq!(text::escape_label("plain-ünï"), "plain-ünï");

    let metrics = Metrics::new(&names(&["we\"ird\\na\nme"]), 1);
    metrics.accepted(0);
    let out = rendered(&metrics);
    let line = r#"stickyd_connections_accepted_total{listener="we\"ird\\na\nme"} 1"#;
    assert!(out.lines().any(|l| l == line), "{out}");
    assert!(
        out.lines().any(|l| l
            == r#"stickyd_connections_dispatched_total{worker="0",listener="we\"ird\\na\nme"} 0"#)
    );
}

#[test]
fn out_of_range_indexes_are_ignored() {
    let metrics = Metrics::new(&names(&["l0"]), 2);
    metrics.accepted(1);
    metrics.accepted(u16::MAX);
    metrics.dispatched(2, 0);
    metrics.dispatched(0, 1);
    // Worker 1 listener 1 would alias worker 2 listener 0 in a flat table if unchecked.
    metrics.dispatched(1, 1);
    metrics.dispatched(u32::MAX, u16::MAX);
    metrics.worker_restart(2);
    metrics.worker_restart(u32::MAX);
    metrics.set_unacked(2, 9);
    metrics.set_live(2, true);
    metrics.set_live(u32::MAX, true);
    assert_eq!(metrics.accepted_total(), 0);
    assert_eq!(metrics.dispatched_total(), 0);
    assert_eq!(metrics.live_workers(), 0);
    let out = rendered(&metrics);
    for line in out.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.ends_with(" 0"), "changed: {line}");
    }

    // No listener, no worker: everything ignored, the families still there.
    let empty = Metrics::new(&[], 0);
    empty.accepted(0);
    empty.dispatched(0, 0);
    empty.set_live(0, true);
    let out = rendered(&empty);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("# TYPE ")).count(),
        FAMILIES.len()
    );
    assert!(samples(&out, "stickyd_connections_").is_empty());
}

#[test]
fn concurrent_increments_add_up() {
    const THREADS: u32 = 4;
    const EACH: u64 = 10_000;
    let metrics = Arc::new(Metrics::new(&names(&["l0", "l1"]), THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|worker| {
            let metrics = Arc::clone(&metrics);
            std::thread::spawn(move || {
                for i in 0..EACH {
                    let listener = (i % 2) as u16;
                    metrics.accepted(listener);
                    metrics.dispatched(worker, listener);
                    metrics.fallback();
                    metrics.handoff(Duration::from_micros(i % 100));
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("incrementing thread");
    }
    let total = u64::from(THREADS) * EACH;
    assert_eq!(metrics.accepted_total(), total);
    assert_eq!(metrics.dispatched_total(), total);
    let out = rendered(&metrics);
    assert!(
        out.lines()
            .any(|l| l == format!("stickyd_fallbacks_total {total}"))
    );
    assert!(
        out.lines()
            .any(|l| l == format!("stickyd_handoff_seconds_count {total}"))
    );
    let line = format!(
        r#"stickyd_connections_dispatched_total{{worker="3",listener="l1"}} {}"#,
        EACH / 2
    );
    assert!(out.lines().any(|l| l == line), "{out}");
}

#[test]
fn metrics_is_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<Metrics>();
}
