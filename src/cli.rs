//! The `stickyd` command line: clap definitions, laid over the configuration file when there is
//! one (`--config FILE`), turned into a [`Config`].
//!
//! A flag given on the command line overrides the file's value of the same setting; a flag not
//! given leaves the file's value, and where neither says anything the default applies.
//! `--listen` adds listeners after the file's; `--key`, `--fallback`, `--trust` and
//! `--proxy-protocol` replace the file's dispatcher-wide ones (a listener with rules of its
//! own keeps them); `-- WORKER_COMMAND` replaces `worker-command`.
//!
//! `--generate KIND` prints the man page or a shell completion script ([`generate()`]) instead.

mod generate;

use std::collections::HashSet;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::config::values::{
    parse_addr, parse_duration, parse_max_peek, parse_max_queue, parse_positive_duration,
    parse_threads, parse_workers,
};
use crate::config::{
    Backend, Config, DEFAULT_GRACE, DEFAULT_LISTEN, DEFAULT_MAX_PEEK, DEFAULT_PEEK_TIMEOUT,
    DEFAULT_RESPAWN_HOLD, DEFAULT_START_TIMEOUT, FileError, FileSettings, Ipc, ListenSpec,
    OnTimeout, RuleSettings, WorkerCommand,
};
use crate::decide::KeyPlan;
use crate::keys::{Cidr, KeyRule};

pub use self::generate::{Generate, generate};
pub use crate::config::{DEFAULT_MAX_QUEUE, MAX_LISTENERS, MAX_WORKERS};

/// stickyd: a sticky-session connection dispatcher. Accepts TCP connections, peeks at their
/// first bytes, and hands each connection's file descriptor to the worker its key hashes to.
///
/// Each flag not given takes its value from the `--config` file, if it gives one, and then its
/// default.
#[derive(Debug, Parser)]
#[command(name = "stickyd", version, max_term_width = 100)]
pub struct Cli {
    /// Read the settings and listeners from this TOML file; flags override it, and --listen
    /// adds listeners after its own
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Check the flags and the configuration file without starting anything (like nginx -t):
    /// print the effective configuration and exit 0, or exit 2 with what is wrong
    #[arg(long)]
    pub check: bool,

    /// Print the man page (man) or a shell completion script (complete-bash, complete-zsh,
    /// complete-fish) to stdout and exit, starting nothing; the other flags are not used
    #[arg(long, value_name = "KIND", value_enum)]
    pub generate: Option<Generate>,

    /// Listen on ADDR (repeatable); NAME defaults to l0, l1, ... [default: 127.0.0.1:3000]
    #[arg(long = "listen", value_name = "[NAME=]ADDR")]
    pub listen: Vec<String>,

    /// Worker processes [default: the number of CPUs]
    #[arg(long, value_name = "N", value_parser = parse_workers)]
    pub workers: Option<u32>,

    /// Key rule, tried in order (repeatable): ip, header:NAME, cookie:NAME, query:NAME, sni
    /// [default: ip]
    #[arg(long = "key", value_name = "RULE")]
    pub keys: Vec<KeyRule>,

    /// Rule used when no --key rule yields a key [default: ip]
    #[arg(long, value_name = "RULE")]
    pub fallback: Option<KeyRule>,

    /// Deadline, counted from accept, for the key to arrive [default: 5s]
    #[arg(long, value_name = "DUR", value_parser = parse_positive_duration)]
    pub peek_timeout: Option<Duration>,

    /// At the peek deadline or the --max-peek limit without a key: route by the fallback rule,
    /// or close the connection [default: fallback]
    #[arg(long, value_name = "WHAT", value_enum)]
    pub on_timeout: Option<OnTimeout>,

    /// The most bytes peeked from a connection (64 to 1MiB) [default: 16KiB]
    #[arg(long, value_name = "BYTES", value_parser = parse_max_peek)]
    pub max_peek: Option<usize>,

    /// Every connection starts with a PROXY protocol header (v1 or v2); `ip` is the address
    /// it carries
    #[arg(long)]
    pub proxy_protocol: bool,

    /// Route kept-alive connections again at every request: a worker on the SDK hands a
    /// connection back when the next request's first bytes arrive, and it goes to that
    /// request's worker (for front proxies that reuse backend connections)
    #[arg(long)]
    pub rehash_per_request: bool,

    /// A trusted proxy network (repeatable): X-Forwarded-For and PROXY headers are believed
    /// only from these peers
    #[arg(long = "trust", value_name = "CIDR")]
    pub trust: Vec<Cidr>,

    /// The most connections a worker holds unacknowledged; beyond, its keys spill to the next
    /// worker by rank [default: 1024]
    #[arg(long, value_name = "N", value_parser = parse_max_queue)]
    pub max_queue: Option<u32>,

    /// Serve Prometheus metrics at http://ADDR/metrics and a health check at /healthz
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    pub metrics: Option<SocketAddr>,

    /// The event loop: io_uring, epoll, or io_uring where the kernel allows it [default: auto]
    #[arg(long, value_name = "KIND", value_enum)]
    pub backend: Option<Backend>,

    /// How long a shutdown waits for workers to drain before signalling them [default: 10s]
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub grace: Option<Duration>,

    /// At start, nothing is routed until every worker said HELLO or this has passed; then the
    /// ready ones serve [default: 10s]
    #[arg(long, value_name = "DUR", value_parser = parse_positive_duration)]
    pub start_timeout: Option<Duration>,

    /// A dead worker's keys wait this long for its replacement before they move to their next
    /// worker; 0s moves them at once [default: 2s]
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub respawn_hold: Option<Duration>,

    /// The protocol spoken to the workers stickyd starts: its own, or Node's IPC channel (Node
    /// programs using the `stickyd` npm package, as cluster workers) [default: native]
    #[arg(long, value_name = "KIND", value_enum)]
    pub ipc: Option<Ipc>,

    /// Dispatcher threads, each accepting, peeking and handing off on its own ring over the
    /// same listeners; the master's loop is the first (1 to 64) [default: 1]
    #[arg(long, value_name = "N", value_parser = parse_threads)]
    pub threads: Option<u32>,

    /// Workers may also attach to this Unix socket (created mode 0600) and fill the slots;
    /// with no WORKER_COMMAND, stickyd starts no worker and waits for them
    #[arg(long, value_name = "PATH")]
    pub attach: Option<PathBuf>,

    /// A uid allowed to attach besides stickyd's own (repeatable); the socket is then created
    /// mode 0666, and the peer's uid (SO_PEERCRED) decides
    #[arg(long = "attach-uid", value_name = "UID")]
    pub attach_uids: Vec<u32>,

    /// The worker program and its arguments [default: the built-in hello worker]
    #[arg(last = true, value_name = "WORKER_COMMAND")]
    pub command: Vec<OsString>,
}

/// A command line, or the configuration file it names, that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A bad flag value, or flags that do not go together: the text names the flag.
    #[error("error: {0}")]
    Flag(String),
    /// The configuration file cannot be read or says something wrong.
    #[error(transparent)]
    File(#[from] FileError),
}

impl Cli {
    /// Turns the parsed command line, over the configuration file it names, into a
    /// [`Config`]; the error is one line naming the bad argument or the file, line and key.
    pub fn into_config(self) -> Result<Config, CliError> {
        let file = match &self.config {
            Some(path) => FileSettings::load(path)?,
            None => FileSettings::default(),
        };
        let flags = RuleSettings {
            keys: (!self.keys.is_empty()).then_some(self.keys),
            fallback: self.fallback,
            trust: (!self.trust.is_empty()).then_some(self.trust),
        };
        let defaults = KeyPlan::new(vec![KeyRule::Ip], KeyRule::Ip);
        let plan = flags.or(file.rules).plan(&defaults);

        let mut listeners: Vec<ListenSpec> = file
            .listeners
            .into_iter()
            .map(|l| l.into_spec(&plan))
            .collect();
        let from_file = listeners.len();
        if from_file + self.listen.len() > MAX_LISTENERS {
            return Err(CliError::Flag(format!(
                "too many --listen (at most {MAX_LISTENERS} listeners, the file's included)"
            )));
        }
        let mut names: HashSet<String> = listeners.iter().map(|l| l.name.clone()).collect();
        for (i, s) in self.listen.iter().enumerate() {
            let bad =
                |e: String| CliError::Flag(format!("invalid value '{s}' for '--listen': {e}"));
            let spec = ListenSpec::parse(s, &format!("l{}", from_file + i))
                .map_err(|e| bad(e.to_string()))?;
            if !names.insert(spec.name.clone()) {
                return Err(bad(format!("the name '{}' is used twice", spec.name)));
            }
            listeners.push(spec);
        }
        if listeners.is_empty() {
            let spec = ListenSpec::parse(DEFAULT_LISTEN, "l0")
                .map_err(|e| CliError::Flag(e.to_string()))?;
            listeners.push(spec);
        }

        let workers = self.workers.or(file.workers).unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, |n| u32::try_from(n.get()).unwrap_or(MAX_WORKERS))
                .min(MAX_WORKERS)
        });
        let worker_command = self
            .command
            .split_first()
            .map(|(program, args)| WorkerCommand {
                program: program.clone(),
                args: args.to_vec(),
            })
            .or(file.worker_command);
        let ipc = self.ipc.or(file.ipc).unwrap_or_default();
        if ipc == Ipc::Node && worker_command.is_none() {
            return Err(CliError::Flag(
                "--ipc node speaks to Node programs: give one as the worker command (e.g. `-- \
                 node app.js`)"
                    .to_owned(),
            ));
        }
        if !self.attach_uids.is_empty() && self.attach.is_none() {
            return Err(CliError::Flag(
                "--attach-uid allows uids to attach: it needs --attach PATH".to_owned(),
            ));
        }
        Ok(Config {
            listeners,
            workers,
            plan,
            peek_timeout: self
                .peek_timeout
                .or(file.peek_timeout)
                .unwrap_or(DEFAULT_PEEK_TIMEOUT),
            on_timeout: self.on_timeout.or(file.on_timeout).unwrap_or_default(),
            max_peek: self.max_peek.or(file.max_peek).unwrap_or(DEFAULT_MAX_PEEK),
            proxy_protocol: self.proxy_protocol || file.proxy_protocol.unwrap_or(false),
            rehash_per_request: self.rehash_per_request || file.rehash_per_request.unwrap_or(false),
            max_queue: self
                .max_queue
                .or(file.max_queue)
                .unwrap_or(DEFAULT_MAX_QUEUE) as usize,
            metrics: self.metrics.or(file.metrics),
            backend: self.backend.or(file.backend).unwrap_or_default(),
            grace: self.grace.or(file.grace).unwrap_or(DEFAULT_GRACE),
            start_timeout: self
                .start_timeout
                .or(file.start_timeout)
                .unwrap_or(DEFAULT_START_TIMEOUT),
            respawn_hold: self
                .respawn_hold
                .or(file.respawn_hold)
                .unwrap_or(DEFAULT_RESPAWN_HOLD),
            ipc,
            worker_command,
            threads: self.threads.or(file.threads).unwrap_or(1),
            attach: self.attach,
            attach_uids: self.attach_uids,
        })
    }
}

/// What parsing the command line came to.
#[derive(Debug)]
pub enum Parsed {
    /// Run with this configuration.
    Run(Box<Config>),
    /// Print this (help, version, the effective configuration of `--check`, or what
    /// `--generate` generates) to stdout and exit 0.
    Print(String),
    /// A bad command line or configuration file: print this one line and exit 2.
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
        Ok(Cli {
            generate: Some(kind),
            ..
        }) => Parsed::Print(generate(kind)),
        Ok(cli) => {
            let check = cli.check;
            match cli.into_config() {
                Ok(config) if check => match crate::config::check::validate(&config) {
                    Ok(()) => Parsed::Print(crate::config::check::describe(&config)),
                    Err(e) => Parsed::Bad(format!("stickyd: {e}")),
                },
                Ok(config) => Parsed::Run(Box::new(config)),
                Err(e) => Parsed::Bad(format!("stickyd: {e}")),
            }
        }
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
            (&["--attach-uid", "1000"][..], "--attach"),
            (
                &["--attach", "/tmp/x", "--attach-uid", "me"][..],
                "--attach-uid",
            ),
            (&["--backend", "kqueue"][..], "--backend"),
            (&["--ipc", "python"][..], "--ipc"),
            (&["--ipc", "node"][..], "--ipc node"),
            (&["--respawn-hold", "2"][..], "--respawn-hold"),
            (&["--start-timeout", "0s"][..], "--start-timeout"),
            (&["--trust", "10.0.0.0/33"][..], "--trust"),
            (&["--trust", "nonsense"][..], "--trust"),
            (&["--frobnicate"][..], "--frobnicate"),
            (&["--config"][..], "--config"),
            (&["--config", "a", "--config", "b"][..], "--config"),
        ] {
            let line = bad(args);
            assert!(line.contains(needle), "{args:?}: {line}");
            assert_eq!(line.lines().count(), 1, "{args:?}: {line}");
        }
    }

    /// A configuration file in the temporary directory, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(tag: &str, text: &str) -> TempFile {
            let name = format!("stickyd-cli-{}-{tag}.toml", std::process::id());
            let path = std::env::temp_dir().join(name);
            std::fs::write(&path, text).unwrap();
            TempFile(path)
        }

        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    const FILE: &str = r#"
workers = 3
peek-timeout = "1s"
on-timeout = "close"
max-peek = 1024
grace = "2s"
metrics = "127.0.0.1:0"
max-queue = 7
backend = "epoll"
start-timeout = "4s"
respawn-hold = "0s"
ipc = "node"
key = ["header:x-user"]
fallback = "cookie:sid"
trust = ["10.0.0.0/8"]
worker-command = ["file-worker", "--from-file"]

[[listener]]
name = "a"
addr = "127.0.0.1:0"

[[listener]]
addr = "127.0.0.1:0"
key = ["cookie:sid"]
proxy-protocol = false
rehash-per-request = true
"#;

    #[test]
    fn the_file_gives_the_settings() {
        let file = TempFile::new("settings", FILE);
        let c = config(&["--config", file.path()]);
        assert_eq!(c.start_timeout, Duration::from_secs(4));
        assert_eq!(c.respawn_hold, Duration::ZERO);
        assert_eq!(c.ipc, Ipc::Node);
        assert_eq!(c.workers, 3);
        assert_eq!(c.peek_timeout, Duration::from_secs(1));
        assert_eq!(c.on_timeout, OnTimeout::Close);
        assert_eq!(c.max_peek, 1024);
        assert_eq!(c.grace, Duration::from_secs(2));
        assert_eq!(c.metrics, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(c.max_queue, 7);
        assert_eq!(c.backend, Backend::Epoll);
        assert_eq!(c.plan.rules(), ["header:x-user".parse().unwrap()]);
        assert_eq!(c.plan.fallback(), &"cookie:sid".parse().unwrap());
        assert_eq!(c.plan.trust().networks(), ["10.0.0.0/8".parse().unwrap()]);
        assert!(!c.proxy_protocol);
        assert!(!c.rehash_per_request_of(0));
        assert!(c.rehash_per_request_of(1));
        let names: Vec<_> = c.listeners.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["a", "l1"]);
        assert!(c.listeners[0].plan.is_none());
        let own = c.plan_of(1);
        assert_eq!(own.rules(), ["cookie:sid".parse().unwrap()]);
        assert_eq!(own.fallback(), c.plan.fallback());
        assert_eq!(own.trust(), c.plan.trust());
        assert_eq!(c.listeners[1].proxy_protocol, Some(false));
        let cmd = c.worker_command.unwrap();
        assert_eq!(cmd.program, "file-worker");
        assert_eq!(cmd.args, ["--from-file"]);
    }

    #[test]
    fn flags_override_the_file() {
        let file = TempFile::new("override", FILE);
        let c = config(&[
            "--workers",
            "2",
            "--peek-timeout",
            "3s",
            "--on-timeout",
            "fallback",
            "--max-peek",
            "2KiB",
            "--grace",
            "5s",
            "--metrics",
            "127.0.0.2:0",
            "--max-queue",
            "9",
            "--backend",
            "auto",
            "--start-timeout",
            "250ms",
            "--respawn-hold",
            "3s",
            "--ipc",
            "native",
            "--config",
            file.path(),
            "--key",
            "query:s",
            "--key",
            "ip",
            "--trust",
            "192.168.0.0/16",
            "--proxy-protocol",
            "--listen",
            "127.0.0.1:0",
            "--listen",
            "c=127.0.0.1:0",
            "--",
            "flag-worker",
        ]);
        assert_eq!(c.workers, 2);
        assert_eq!(c.peek_timeout, Duration::from_secs(3));
        assert_eq!(c.on_timeout, OnTimeout::Fallback);
        assert_eq!(c.max_peek, 2048);
        assert_eq!(c.grace, Duration::from_secs(5));
        assert_eq!(c.metrics, Some("127.0.0.2:0".parse().unwrap()));
        assert_eq!(c.max_queue, 9);
        assert_eq!(c.backend, Backend::Auto);
        assert_eq!(c.start_timeout, Duration::from_millis(250));
        assert_eq!(c.respawn_hold, Duration::from_secs(3));
        assert_eq!(c.ipc, Ipc::Native);
        // The dispatcher-wide rules are the flags'; the file's fallback stays, not given.
        assert_eq!(c.plan.rules(), ["query:s".parse().unwrap(), KeyRule::Ip]);
        assert_eq!(c.plan.fallback(), &"cookie:sid".parse().unwrap());
        assert_eq!(
            c.plan.trust().networks(),
            ["192.168.0.0/16".parse().unwrap()]
        );
        assert!(c.proxy_protocol);
        // The file's listeners first, then the flags', named by position.
        let names: Vec<_> = c.listeners.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["a", "l1", "l2", "c"]);
        // A listener with rules of its own keeps them, over the new dispatcher-wide ones.
        assert_eq!(c.plan_of(1).rules(), ["cookie:sid".parse().unwrap()]);
        assert_eq!(c.plan_of(1).trust(), c.plan.trust());
        assert!(!c.proxy_protocol_of(1));
        for i in [0, 2, 3] {
            assert_eq!(c.plan_of(i).rules(), c.plan.rules());
            assert!(c.proxy_protocol_of(i));
        }
        assert_eq!(c.worker_command.unwrap().program, "flag-worker");
    }

    #[test]
    fn the_default_listener_only_when_neither_gives_one() {
        let file = TempFile::new("no-listener", "workers = 1\n");
        let c = config(&["--config", file.path()]);
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.listeners[0].addr, DEFAULT_LISTEN.parse().unwrap());
        let c = config(&["--config", file.path(), "--listen", "x=127.0.0.1:0"]);
        let names: Vec<_> = c.listeners.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["x"]);
        assert!(c.worker_command.is_none());
    }

    #[test]
    fn listener_names_stay_unique_across_the_file_and_the_flags() {
        let file = TempFile::new("names", FILE);
        for listen in ["a=127.0.0.1:0", "l1=127.0.0.1:0"] {
            let line = bad(&["--config", file.path(), "--listen", listen]);
            assert!(line.starts_with("stickyd: error: invalid value"), "{line}");
            assert!(
                line.contains("'--listen'") && line.contains("used twice"),
                "{line}"
            );
        }
        let many = TempFile::new(
            "many",
            &"[[listener]]\naddr = \"127.0.0.1:0\"\n".repeat(256),
        );
        let line = bad(&["--config", many.path(), "--listen", "127.0.0.1:0"]);
        assert!(line.contains("too many --listen"), "{line}");
    }

    #[test]
    fn a_bad_file_is_one_line_naming_the_file_line_and_key() {
        let file = TempFile::new("bad", "workers = 2\n[[listener]]\naddr = \"1.2.3.4\"\n");
        let line = bad(&["--config", file.path()]);
        assert_eq!(
            line,
            format!(
                "stickyd: {}:3: listener.addr: '1.2.3.4' is not an address:port \
                 (e.g. 127.0.0.1:3000 or [::1]:3000)",
                file.path()
            )
        );
        let missing = std::env::temp_dir().join("stickyd-cli-no-such-file.toml");
        let line = bad(&["--config", missing.to_str().unwrap()]);
        assert_eq!(
            line,
            format!(
                "stickyd: {}: cannot read the configuration file: \
                 No such file or directory (os error 2)",
                missing.display()
            )
        );
    }
}
