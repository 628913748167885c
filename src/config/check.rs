//! `stickyd --check`: what can be validated without starting anything, and the effective
//! configuration, printed in the configuration file's own format.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Config, WorkerCommand};
use crate::decide::KeyPlan;

/// Checks what the command-line parser cannot: that the worker command names an executable
/// file (looked up in `PATH` as `std::process::Command` does) and that `--attach`'s directory
/// exists. `Err` is one line saying what is wrong.
pub fn validate(config: &Config) -> Result<(), String> {
    if let Some(command) = &config.worker_command {
        executable(command)?;
    }
    if let Some(path) = &config.attach {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = dir {
            if !dir.is_dir() {
                return Err(format!(
                    "--attach {}: the directory {} does not exist",
                    path.display(),
                    dir.display()
                ));
            }
        }
    }
    Ok(())
}

/// The worker program as it would be started, or why it cannot be.
fn executable(command: &WorkerCommand) -> Result<PathBuf, String> {
    let program = Path::new(&command.program);
    let shown = program.display();
    let candidates: Vec<PathBuf> = if program.components().count() > 1 {
        vec![program.to_path_buf()]
    } else {
        std::env::var_os("PATH")
            .map(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(program))
                    .collect()
            })
            .unwrap_or_default()
    };
    let found = candidates.iter().find(|p| p.is_file());
    match found {
        None if candidates.len() == 1 => Err(format!("worker command {shown}: no such file")),
        None => Err(format!("worker command {shown}: not found in PATH")),
        Some(path) => {
            let mode = path
                .metadata()
                .map_err(|e| format!("worker command {}: {e}", path.display()))?
                .permissions()
                .mode();
            if mode & 0o111 == 0 {
                Err(format!(
                    "worker command {}: not executable (mode {:o})",
                    path.display(),
                    mode & 0o7777
                ))
            } else {
                Ok(path.clone())
            }
        }
    }
}

/// The effective configuration, as a configuration file would say it (flags and file merged,
/// defaults filled in).
pub fn describe(config: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# the effective configuration (flags and file merged, defaults filled in)"
    );
    let _ = writeln!(out, "workers = {}", config.workers);
    let _ = writeln!(out, "threads = {}", config.threads);
    let _ = writeln!(out, "ipc = {}", quoted(&choice(config.ipc)));
    let _ = writeln!(out, "backend = {}", quoted(&choice(config.backend)));
    let _ = writeln!(
        out,
        "peek-timeout = {}",
        quoted(&duration(config.peek_timeout))
    );
    let _ = writeln!(out, "on-timeout = {}", quoted(&choice(config.on_timeout)));
    let _ = writeln!(out, "max-peek = {}", config.max_peek);
    let _ = writeln!(out, "max-queue = {}", config.max_queue);
    let _ = writeln!(out, "grace = {}", quoted(&duration(config.grace)));
    let _ = writeln!(
        out,
        "start-timeout = {}",
        quoted(&duration(config.start_timeout))
    );
    let _ = writeln!(
        out,
        "respawn-hold = {}",
        quoted(&duration(config.respawn_hold))
    );
    if let Some(metrics) = config.metrics {
        let _ = writeln!(out, "metrics = {}", quoted(&metrics.to_string()));
    }
    plan(&mut out, &config.plan);
    let _ = writeln!(out, "proxy-protocol = {}", config.proxy_protocol);
    let _ = writeln!(out, "rehash-per-request = {}", config.rehash_per_request);
    match &config.worker_command {
        Some(command) => {
            let words: Vec<String> = std::iter::once(&command.program)
                .chain(&command.args)
                .map(|w| quoted(&w.to_string_lossy()))
                .collect();
            let _ = writeln!(out, "worker-command = [{}]", words.join(", "));
        }
        None if config.attached_only() => {
            let _ = writeln!(out, "# no worker command: attached workers only");
        }
        None => {
            let _ = writeln!(out, "# no worker command: the built-in hello worker");
        }
    }
    if let Some(path) = &config.attach {
        let uids: Vec<String> = config.attach_uids.iter().map(u32::to_string).collect();
        let _ = writeln!(
            out,
            "# --attach {} (uids allowed besides stickyd's own: {})",
            path.display(),
            if uids.is_empty() {
                "none".to_owned()
            } else {
                uids.join(", ")
            }
        );
    }
    for listener in &config.listeners {
        let _ = writeln!(out, "\n[[listener]]");
        let _ = writeln!(out, "name = {}", quoted(&listener.name));
        let _ = writeln!(out, "addr = {}", quoted(&listener.addr.to_string()));
        match &listener.plan {
            Some(own) => plan(&mut out, own),
            None => {
                let _ = writeln!(out, "# key rules: the dispatcher-wide ones");
            }
        }
        if let Some(rehash) = listener.rehash_per_request {
            let _ = writeln!(out, "rehash-per-request = {rehash}");
        }
        if let Some(proxy) = listener.proxy_protocol {
            let _ = writeln!(out, "proxy-protocol = {proxy}");
        }
    }
    out
}

fn plan(out: &mut String, plan: &KeyPlan) {
    let rules: Vec<String> = plan
        .rules()
        .iter()
        .map(|r| quoted(&r.to_string()))
        .collect();
    let trust: Vec<String> = plan
        .trust()
        .networks()
        .iter()
        .map(|c| quoted(&c.to_string()))
        .collect();
    let _ = writeln!(out, "key = [{}]", rules.join(", "));
    let _ = writeln!(out, "fallback = {}", quoted(&plan.fallback().to_string()));
    let _ = writeln!(out, "trust = [{}]", trust.join(", "));
}

/// A choice flag's value, as the flag takes it.
fn choice<T: clap::ValueEnum>(value: T) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default()
}

/// A duration as the parsers take it: whole seconds or milliseconds.
fn duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// A TOML basic string.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use crate::cli::{Parsed, parse};

    fn run(args: &[&str]) -> Parsed {
        let mut argv = vec!["stickyd", "--check"];
        argv.extend_from_slice(args);
        parse(argv)
    }

    #[test]
    fn the_effective_configuration_reads_back_as_the_same_configuration() {
        let Parsed::Print(first) = run(&[
            "--workers",
            "3",
            "--listen",
            "api=127.0.0.1:8080",
            "--listen",
            "[::1]:0",
            "--key",
            "header:x-forwarded-for",
            "--key",
            "cookie:sid",
            "--trust",
            "10.0.0.0/8",
            "--peek-timeout",
            "250ms",
            "--respawn-hold",
            "0s",
            "--metrics",
            "127.0.0.1:9100",
            "--",
            "sh",
            "-c",
            "exec \"worker\"",
        ]) else {
            panic!("the check failed");
        };
        assert!(first.contains("workers = 3\n"), "{first}");
        assert!(first.contains("peek-timeout = \"250ms\"\n"), "{first}");
        assert!(first.contains("worker-command = [\"sh\", \"-c\", \"exec \\\"worker\\\"\"]"));
        let path = std::env::temp_dir().join(format!("stickyd-check-{}.toml", std::process::id()));
        std::fs::write(&path, &first).unwrap();
        let again = run(&["--config", path.to_str().unwrap()]);
        let _ = std::fs::remove_file(&path);
        match again {
            Parsed::Print(second) => assert_eq!(first, second),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_worker_command_that_cannot_start_is_an_error() {
        for (command, needle) in [
            ("/nonexistent/worker", "no such file"),
            ("stickyd-no-such-program", "not found in PATH"),
        ] {
            match run(&["--", command]) {
                Parsed::Bad(line) => assert!(line.contains(needle), "{line}"),
                other => panic!("{command}: {other:?}"),
            }
        }
    }
}
