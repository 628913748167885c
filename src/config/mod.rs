//! The dispatcher's configuration ([`Config`]), where it comes from, and the parsers for the
//! values it takes.
//!
//! - [`values`]: the parsers of durations, sizes, counts, addresses and names, shared by the
//!   command line and the configuration file.
//! - [`file`](mod@file): the TOML configuration file (`--config FILE`).
//! - [`crate::cli`]: the command line, which combines its flags with the file into a `Config`.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::decide::KeyPlan;

pub mod check;
pub mod file;
pub mod values;

pub use file::{FileError, FileListener, FileSettings, RuleSettings};
pub use values::{
    MAX_DURATION, MAX_LISTENER_NAME, MAX_LISTENERS, MAX_QUEUE, MAX_WORKERS, ValueError,
    parse_duration, parse_size,
};

/// Everything a [`Dispatcher`](crate::Dispatcher) needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// The listeners, in order: their index is the one worker metadata carries.
    pub listeners: Vec<ListenSpec>,
    /// Worker slots, `0..workers`.
    pub workers: u32,
    /// Which key each connection is routed by.
    pub plan: KeyPlan,
    /// One deadline from accept for finding the key in the peeked bytes.
    pub peek_timeout: Duration,
    /// What happens at the peek deadline or the `max_peek` limit when no rule found a key.
    pub on_timeout: OnTimeout,
    /// The most bytes peeked from one connection.
    pub max_peek: usize,
    /// Every connection starts with a PROXY protocol (v1 or v2) header.
    pub proxy_protocol: bool,
    /// Workers hand kept-alive connections back at each request boundary, to be routed by the
    /// next request's key (`--rehash-per-request`).
    pub rehash_per_request: bool,
    /// The most connections a worker holds unacknowledged before its keys spill to the next.
    pub max_queue: usize,
    /// Where to serve Prometheus metrics and the health check.
    pub metrics: Option<SocketAddr>,
    /// Which event loop drives the master.
    pub backend: Backend,
    /// How long a shutdown waits for draining workers before it signals them.
    pub grace: Duration,
    /// How long the master waits at start for every worker to say `HELLO` before it serves
    /// with those that did.
    pub start_timeout: Duration,
    /// How long a dead worker's keys wait for its replacement before they move.
    pub respawn_hold: Duration,
    /// The protocol of the channels of the workers stickyd starts.
    pub ipc: Ipc,
    /// The worker program; `None` runs the built-in hello worker.
    pub worker_command: Option<WorkerCommand>,
    /// Dispatcher threads accepting and peeking, each with its own ring (1: the master's loop
    /// alone).
    pub threads: u32,
    /// A Unix socket path where workers stickyd does not start may attach and fill the slots.
    pub attach: Option<PathBuf>,
    /// Uids allowed to attach besides the master's own.
    pub attach_uids: Vec<u32>,
}

/// A listening address and its name, and the rules of its own when it does not follow the
/// dispatcher-wide ones.
#[derive(Clone, Debug)]
pub struct ListenSpec {
    /// The name workers see (`X-Listener` in the hello worker).
    pub name: String,
    /// The address to bind; port 0 picks a free port.
    pub addr: SocketAddr,
    /// This listener's key plan (rules, fallback, trusted proxies); `None`: [`Config::plan`].
    pub plan: Option<KeyPlan>,
    /// Whether this listener's connections start with a PROXY header; `None`:
    /// [`Config::proxy_protocol`].
    pub proxy_protocol: Option<bool>,
    /// Whether this listener's kept-alive connections are routed again at each request;
    /// `None`: [`Config::rehash_per_request`].
    pub rehash_per_request: Option<bool>,
}

impl Config {
    /// Whether the workers are only those that attach (`--attach` and no worker command):
    /// stickyd starts none.
    pub fn attached_only(&self) -> bool {
        self.attach.is_some() && self.worker_command.is_none()
    }

    /// The key plan listener `i` routes by.
    pub fn plan_of(&self, i: usize) -> &KeyPlan {
        self.listeners
            .get(i)
            .and_then(|l| l.plan.as_ref())
            .unwrap_or(&self.plan)
    }

    /// Whether listener `i`'s connections start with a PROXY header.
    pub fn proxy_protocol_of(&self, i: usize) -> bool {
        self.listeners
            .get(i)
            .and_then(|l| l.proxy_protocol)
            .unwrap_or(self.proxy_protocol)
    }

    /// Whether listener `i`'s kept-alive connections are routed again at each request.
    pub fn rehash_per_request_of(&self, i: usize) -> bool {
        self.listeners
            .get(i)
            .and_then(|l| l.rehash_per_request)
            .unwrap_or(self.rehash_per_request)
    }
}

/// The default listening address, when neither the command line nor the file names one.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3000";

/// The default peek timeout.
pub const DEFAULT_PEEK_TIMEOUT: Duration = Duration::from_secs(5);

/// The default most bytes peeked from a connection.
pub const DEFAULT_MAX_PEEK: usize = 16 * 1024;

/// The default time a shutdown waits for draining workers.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// The default time the master waits at start for every worker.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(10);

/// The default time a dead worker's keys wait for its replacement.
pub const DEFAULT_RESPAWN_HOLD: Duration = Duration::from_secs(2);

/// The default most connections a worker holds unacknowledged.
pub const DEFAULT_MAX_QUEUE: u32 = 1024;

impl ListenSpec {
    /// Parses `[NAME=]ADDR`; `default_name` is used when NAME is absent. The listener follows
    /// the dispatcher-wide rules.
    pub fn parse(s: &str, default_name: &str) -> Result<ListenSpec, ValueError> {
        let (name, addr) = match s.split_once('=') {
            Some((name, addr)) => (name, addr),
            None => (default_name, s),
        };
        ListenSpec::new(name, values::parse_addr(addr)?)
    }

    /// A listener named `name` (checked) on `addr`, following the dispatcher-wide rules.
    pub fn new(name: &str, addr: SocketAddr) -> Result<ListenSpec, ValueError> {
        values::check_listener_name(name)?;
        Ok(ListenSpec {
            name: name.to_owned(),
            addr,
            plan: None,
            proxy_protocol: None,
            rehash_per_request: None,
        })
    }
}

/// What `--on-timeout` selects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OnTimeout {
    /// Route by the fallback rule.
    #[default]
    Fallback,
    /// Close the connection.
    Close,
}

/// What `--backend` selects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// io_uring if the kernel allows it, else epoll (with one log line saying why).
    #[default]
    Auto,
    /// io_uring only: fail if it is refused.
    Uring,
    /// epoll, even where io_uring works.
    Epoll,
}

/// What `--ipc` selects: the protocol spoken on the channel of each worker stickyd starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Ipc {
    /// stickyd's own wire protocol (`SOCK_SEQPACKET`, the `stickyd-worker` SDK).
    #[default]
    Native,
    /// Node's IPC channel (`NODE_CHANNEL_FD`, JSON lines, one handle per message): Node
    /// programs using the `stickyd` npm package, as `cluster` workers.
    Node,
}

/// A worker program and its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerCommand {
    /// The program, looked up in `PATH` as `std::process::Command` does.
    pub program: OsString,
    /// Its arguments.
    pub args: Vec<OsString>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_specs() {
        let l = ListenSpec::parse("127.0.0.1:0", "l0").unwrap();
        assert_eq!(l.name, "l0");
        assert_eq!(l.addr, "127.0.0.1:0".parse().unwrap());
        let l = ListenSpec::parse("api=[::1]:8080", "l1").unwrap();
        assert_eq!(l.name, "api");
        assert_eq!(l.addr, "[::1]:8080".parse().unwrap());
        for bad in [
            "localhost:80",
            "=127.0.0.1:1",
            "a b=127.0.0.1:1",
            "127.0.0.1",
        ] {
            assert!(
                ListenSpec::parse(bad, "l0").is_err(),
                "{bad:?} should not parse"
            );
        }
    }

    #[test]
    fn listeners_without_rules_of_their_own_follow_the_dispatcher() {
        let mut config = Config {
            listeners: vec![
                ListenSpec::parse("127.0.0.1:0", "a").unwrap(),
                ListenSpec::parse("127.0.0.1:0", "b").unwrap(),
            ],
            workers: 1,
            plan: KeyPlan::new(vec!["sni".parse().unwrap()], crate::keys::KeyRule::Ip),
            peek_timeout: DEFAULT_PEEK_TIMEOUT,
            on_timeout: OnTimeout::Fallback,
            max_peek: DEFAULT_MAX_PEEK,
            proxy_protocol: true,
            rehash_per_request: false,
            max_queue: DEFAULT_MAX_QUEUE as usize,
            metrics: None,
            backend: Backend::Auto,
            grace: DEFAULT_GRACE,
            start_timeout: DEFAULT_START_TIMEOUT,
            respawn_hold: DEFAULT_RESPAWN_HOLD,
            ipc: Ipc::Native,
            worker_command: None,
            threads: 1,
            attach: None,
            attach_uids: Vec::new(),
        };
        config.listeners[1].plan = Some(KeyPlan::new(Vec::new(), crate::keys::KeyRule::Ip));
        config.listeners[1].proxy_protocol = Some(false);
        assert_eq!(config.plan_of(0).rules(), config.plan.rules());
        assert_eq!(config.plan_of(1).rules(), [crate::keys::KeyRule::Ip]);
        assert!(config.proxy_protocol_of(0));
        assert!(!config.proxy_protocol_of(1));
        assert!(config.proxy_protocol_of(9));
    }
}
