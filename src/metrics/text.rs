//! The Prometheus text exposition format (version 0.0.4), the little of it stickyd needs:
//! `# HELP` and `# TYPE` lines, samples with labels, escaped label values.

use std::fmt::Write;

/// A metric family whose `# HELP` and `# TYPE` lines are written: its samples follow.
#[derive(Debug, Clone, Copy)]
pub(super) struct Family<'a> {
    name: &'a str,
}

impl<'a> Family<'a> {
    /// Writes the header of a counter (whose name ends in `_total`).
    pub(super) fn counter(out: &mut String, name: &'a str, help: &str) -> Family<'a> {
        Family::header(out, name, help, "counter")
    }

    /// Writes the header of a gauge.
    pub(super) fn gauge(out: &mut String, name: &'a str, help: &str) -> Family<'a> {
        Family::header(out, name, help, "gauge")
    }

    /// Writes the header of a histogram (its samples are `name_bucket`, `name_sum` and
    /// `name_count`).
    pub(super) fn histogram(out: &mut String, name: &'a str, help: &str) -> Family<'a> {
        Family::header(out, name, help, "histogram")
    }

    fn header(out: &mut String, name: &'a str, help: &str, kind: &str) -> Family<'a> {
        // The help texts are fixed strings without `\` or newlines: nothing to escape.
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { name }
    }

    /// Writes one sample of the family itself; `labels` values are already escaped.
    pub(super) fn sample(self, out: &mut String, labels: &[(&str, &str)], value: u64) {
        self.sample_of(out, "", labels, value);
    }

    /// Writes one sample of `name` + `suffix` (`_bucket`, `_count`); `labels` values are
    /// already escaped.
    pub(super) fn sample_of(
        self,
        out: &mut String,
        suffix: &str,
        labels: &[(&str, &str)],
        value: impl std::fmt::Display,
    ) {
        out.push_str(self.name);
        out.push_str(suffix);
        for (i, (label, text)) in labels.iter().enumerate() {
            out.push(if i == 0 { '{' } else { ',' });
            let _ = write!(out, "{label}=\"{text}\"");
        }
        if !labels.is_empty() {
            out.push('}');
        }
        let _ = writeln!(out, " {value}");
    }
}

/// A label value escaped for the text format: `\` as `\\`, `"` as `\"`, newline as `\n`.
pub(super) fn escape_label(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// `nanos` as decimal seconds, exactly, without trailing zeros: `0`, `1.5`, `0.00025`.
pub(super) fn seconds(nanos: u64) -> String {
    let whole = nanos / 1_000_000_000;
    let frac = nanos % 1_000_000_000;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:09}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}
