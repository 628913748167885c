//! The operators' files in `contrib/` name only metrics stickyd exports: the Prometheus alert
//! rules and the Grafana dashboard are read, every `stickyd_...` metric they use is looked up
//! in what the metrics endpoint renders, and the dashboard is JSON.

use std::collections::BTreeSet;
use std::path::Path;

use stickyd::metrics::Metrics;

/// The metric families stickyd renders (`# TYPE NAME KIND`).
fn exported() -> BTreeSet<String> {
    let metrics = Metrics::new(&["l0".to_owned()], 2);
    let mut text = String::new();
    metrics.render(&mut text);
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect()
}

/// Every `stickyd_...` name in `text`, a histogram's `_bucket`/`_sum`/`_count` series under its
/// family's name.
fn used(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("stickyd_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.insert(family.to_owned());
        rest = &tail[end..];
    }
    names
}

fn contrib(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib")
        .join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_alert_rules_and_the_dashboard_use_only_exported_metrics() {
    let exported = exported();
    assert!(exported.contains("stickyd_worker_live"), "{exported:?}");
    let alerts = contrib("prometheus/stickyd-alerts.yml");
    let dashboard = contrib("grafana/stickyd-dashboard.json");
    let parsed: serde_json::Value =
        serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    assert!(parsed["panels"].as_array().is_some_and(|p| !p.is_empty()));
    for (file, text) in [("alerts", &alerts), ("dashboard", &dashboard)] {
        let names = used(text);
        assert!(!names.is_empty(), "{file} uses no stickyd metric");
        let unknown: Vec<_> = names.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses metrics stickyd does not export: {unknown:?}"
        );
    }
}
