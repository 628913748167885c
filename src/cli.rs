//! The `stickyd` command line: clap definitions turned into a [`Config`].

use std::collections::HashSet;
use std::ffi::OsString;
use std::time::Duration;

use clap::Parser;

use crate::config::{
    Backend, Config, DEFAULT_LISTEN, ListenSpec, OnTimeout, WorkerCommand, parse_duration,
    parse_size,
};
use crate::decide::KeyPlan;
use crate::keys::{Cidr, KeyRule, Trust};

/// The most worker slots one master runs.
pub const MAX_WORKERS: u32 = 4096;

/// The most listeners one master runs (the wire protocol indexes them with a `u16`).
pub const MAX_LISTENERS: usize = 256;

/// The default `--max-queue`.
pub const DEFAULT_MAX_QUEUE: u32 = 1024;

/// The bounds of `--max-peek`.
const MAX_PEEK_RANGE: std::ops::RangeInclusive<usize> = 64..=(1 << 20);

/// stickyd: a sticky-session connection dispatcher. Accepts TCP connections, peeks at their
/// first bytes, and hands each connection's file descriptor to the worker its key hashes to.
#[derive(Debug, Parser)]
#[command(name = "stickyd", version, max_term_width = 100)]
pub struct Cli {
    /// Listen on ADDR (repeatable); NAME defaults to l0, l1, ... [default: 127.0.0.1:3000]
    #[arg(long = "listen", value_name = "[NAME=]ADDR")]
    pub listen: Vec<String>,

    /// Worker processes [default: the number of CPUs]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=MAX_WORKERS as i64))]
    pub workers: Option<u32>,

    /// Key rule, tried in order (repeatable): ip, header:NAME [default: ip]
    #[arg(long = "key", value_name = "RULE")]
    pub keys: Vec<KeyRule>,

    /// Rule used when no --key rule yields a key
    #[arg(long, value_name = "RULE", default_value = "ip")]
    pub fallback: KeyRule,

    /// Deadline, counted from accept, for the key to arrive
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = parse_positive_duration)]
    pub peek_timeout: Duration,

    /// At the peek deadline or the --max-peek limit without a key: route by the fallback rule,
    /// or close the connection
    #[arg(long, value_name = "WHAT", value_enum, default_value_t = OnTimeout::Fallback)]
    pub on_timeout: OnTimeout,

    /// The most bytes peeked from a connection (64 to 1MiB)
    #[arg(long, value_name = "BYTES", default_value = "16KiB", value_parser = parse_max_peek)]
    pub max_peek: usize,

    /// Every connection starts with a PROXY protocol header (v1 or v2); `ip` is the address
    /// it carries
    #[arg(long)]
    pub proxy_protocol: bool,

    /// A trusted proxy network (repeatable): X-Forwarded-For and PROXY headers are believed
    /// only from these peers
    #[arg(long = "trust", value_name = "CIDR")]
    pub trust: Vec<Cidr>,

    /// The most connections a worker holds unacknowledged; beyond, its keys spill to the next
    /// worker by rank
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_QUEUE,
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_queue: u32,

    /// Serve Prometheus metrics at http://ADDR/metrics and a health check at /healthz
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,

    /// The event loop: io_uring, epoll, or io_uring where the kernel allows it
    #[arg(long, value_name = "KIND", value_enum, default_value_t = Backend::Auto)]
    pub backend: Backend,

    /// How long a shutdown waits for workers to drain before signalling them
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
    pub grace: Duration,

    /// The worker program and its arguments [default: the built-in hello worker]
    #[arg(last = true, value_name = "WORKER_COMMAND")]
    pub command: Vec<OsString>,
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be more than zero".to_owned()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_max_peek(s: &str) -> Result<usize, String> {
    let n = parse_size(s).map_err(|e| e.to_string())?;
    if MAX_PEEK_RANGE.contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "must be from {} to {} bytes",
            MAX_PEEK_RANGE.start(),
            MAX_PEEK_RANGE.end()
        ))
    }
}

impl Cli {
    /// Turns the parsed command line into a [`Config`]; the error is one line naming the bad
    /// argument.
    pub fn into_config(self) -> Result<Config, String> {
        let raw = if self.listen.is_empty() {
            vec![DEFAULT_LISTEN.to_owned()]
        } else {
            self.listen
        };
        if raw.len() > MAX_LISTENERS {
            return Err(format!("too many --listen (at most {MAX_LISTENERS})"));
        }
        let mut listeners = Vec::with_capacity(raw.len());
        let mut names = HashSet::new();
        for (i, s) in raw.iter().enumerate() {
            let spec = ListenSpec::parse(s, &format!("l{i}"))
                .map_err(|e| format!("invalid value '{s}' for '--listen': {e}"))?;
            if !names.insert(spec.name.clone()) {
                return Err(format!(
                    "invalid value '{s}' for '--listen': the name '{}' is used twice",
                    spec.name
                ));
            }
            listeners.push(spec);
        }
        let workers = match self.workers {
            Some(n) => n,
            None => std::thread::available_parallelism()
                .map_or(1, |n| u32::try_from(n.get()).unwrap_or(MAX_WORKERS))
                .min(MAX_WORKERS),
        };
        let rules = if self.keys.is_empty() {
            vec![KeyRule::Ip]
        } else {
            self.keys
        };
        let worker_command = self
            .command
            .split_first()
            .map(|(program, args)| WorkerCommand {
                program: program.clone(),
                args: args.to_vec(),
            });
        Ok(Config {
            listeners,
            workers,
            plan: KeyPlan::new(rules, self.fallback).with_trust(Trust::new(self.trust)),
            peek_timeout: self.peek_timeout,
            on_timeout: self.on_timeout,
            max_peek: self.max_peek,
            proxy_protocol: self.proxy_protocol,
            max_queue: self.max_queue as usize,
            metrics: self.metrics,
            backend: self.backend,
            grace: self.grace,
            worker_command,
        })
    }
}

/// What parsing the command line came to.
#[derive(Debug)]
pub enum Parsed {
    /// Run with this configuration.
    Run(Box<Config>),
    /// Print this (help or version) to stdout and exit 0.
    Print(String),
    /// A bad command line: print this one line and exit 2.
    Bad(String),
}

/// Parses `args` (the program name first), never exiting the process.
pub fn parse<I, T>(args: I) -> Parsed
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    use clap::error::ErrorKind;
    match Cli::try_parse_from(args) {
        Ok(cli) => match cli.into_config() {
            Ok(config) => Parsed::Run(Box::new(config)),
            Err(e) => Parsed::Bad(format!("stickyd: error: {e}")),
        },
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            Parsed::Print(e.to_string())
        }
        Err(e) => {
            // clap's first line names the argument; the rest is usage advice.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("error: bad command line");
            Parsed::Bad(format!("stickyd: {first}"))
        }
    }
}

/// Parses this process's command line, for a program that runs a dispatcher: prints help or
/// the version to stdout, or the one-line error to stderr, itself, and then returns the exit
/// code to end with (0, or 2 for a bad command line) instead of a configuration.
pub fn from_process_args() -> Result<Config, std::process::ExitCode> {
    match parse(std::env::args_os()) {
        Parsed::Run(config) => Ok(*config),
        Parsed::Print(text) => {
            print!("{text}");
            Err(std::process::ExitCode::SUCCESS)
        }
        Parsed::Bad(line) => {
            eprintln!("{line}");
            Err(std::process::ExitCode::from(2))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Config {
        let mut argv = vec!["stickyd"];
        argv.extend_from_slice(args);
        match parse(argv) {
            Parsed::Run(c) => *c,
            other => panic!("{args:?} did not parse: {other:?}"),
        }
    }

    fn bad(args: &[&str]) -> String {
        let mut argv = vec!["stickyd"];
        argv.extend_from_slice(args);
        match parse(argv) {
            Parsed::Bad(line) => line,
            other => panic!("{args:?} parsed: {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = config(&[]);
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.listeners[0].name, "l0");
        assert_eq!(c.listeners[0].addr, "127.0.0.1:3000".parse().unwrap());
        assert!(c.workers >= 1);
        assert_eq!(c.plan.rules(), &[KeyRule::Ip]);
        assert_eq!(c.plan.fallback(), &KeyRule::Ip);
        assert_eq!(c.peek_timeout, Duration::from_secs(5));
        assert_eq!(c.max_peek, 16 * 1024);
        assert_eq!(c.grace, Duration::from_secs(10));
        assert_eq!(c.on_timeout, OnTimeout::Fallback);
        assert!(c.worker_command.is_none());
    }

    #[test]
    fn full_command_line() {
        let c = config(&[
            "--listen",
            "web=127.0.0.1:0",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "3",
            "--key",
            "header:X-Forwarded-For",
            "--key",
            "ip",
            "--fallback",
            "header:x-real-ip",
            "--peek-timeout",
            "250ms",
            "--max-peek",
            "4KiB",
            "--grace",
            "1s",
            "--on-timeout",
            "close",
            "--",
            "my-worker",
            "--port",
            "1",
        ]);
        let names: Vec<_> = c.listeners.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["web", "l1"]);
        assert_eq!(c.workers, 3);
        assert_eq!(c.plan.rules().len(), 2);
        assert_eq!(c.peek_timeout, Duration::from_millis(250));
        assert_eq!(c.max_peek, 4096);
        assert_eq!(c.on_timeout, OnTimeout::Close);
        let cmd = c.worker_command.unwrap();
        assert_eq!(cmd.program, "my-worker");
        assert_eq!(cmd.args, ["--port", "1"]);
    }

    #[test]
    fn bad_command_lines_name_the_argument() {
        for (args, needle) in [
            (&["--workers", "0"][..], "--workers"),
            (&["--workers", "x"][..], "--workers"),
            (&["--key", "bogus"][..], "--key"),
            (&["--peek-timeout", "5"][..], "--peek-timeout"),
            (&["--peek-timeout", "0s"][..], "--peek-timeout"),
            (&["--max-peek", "1"][..], "--max-peek"),
            (&["--listen", "nowhere"][..], "--listen"),
            (
                &["--listen", "a=127.0.0.1:0", "--listen", "a=127.0.0.1:0"][..],
                "--listen",
            ),
            (&["--metrics", "nowhere"][..], "--metrics"),
            (&["--max-queue", "0"][..], "--max-queue"),
            (&["--attach", "/tmp/x"][..], "--attach"),
            (&["--backend", "kqueue"][..], "--backend"),
            (&["--trust", "10.0.0.0/33"][..], "--trust"),
            (&["--trust", "nonsense"][..], "--trust"),
            (&["--frobnicate"][..], "--frobnicate"),
        ] {
            let line = bad(args);
            assert!(line.contains(needle), "{args:?}: {line}");
            assert_eq!(line.lines().count(), 1, "{args:?}: {line}");
        }
    }
}
