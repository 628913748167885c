//! The dispatcher's configuration, and the parsers for the values the command line takes
//! (durations, sizes, listener specifications).

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use crate::decide::KeyPlan;

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
    /// The most connections a worker holds unacknowledged before its keys spill to the next.
    pub max_queue: usize,
    /// Where to serve Prometheus metrics and the health check.
    pub metrics: Option<SocketAddr>,
    /// Which event loop drives the master.
    pub backend: Backend,
    /// How long a shutdown waits for draining workers before it signals them.
    pub grace: Duration,
    /// The worker program; `None` runs the built-in hello worker.
    pub worker_command: Option<WorkerCommand>,
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
}

impl Config {
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
}

/// The default listening address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3000";

/// The longest listener name (the wire protocol carries names of up to 255 bytes).
pub const MAX_LISTENER_NAME: usize = 64;

impl ListenSpec {
    /// Parses `[NAME=]ADDR`; `default_name` is used when NAME is absent.
    pub fn parse(s: &str, default_name: &str) -> Result<ListenSpec, String> {
        let (name, addr) = match s.split_once('=') {
            Some((name, addr)) => (name, addr),
            None => (default_name, s),
        };
        if name.is_empty() || name.len() > MAX_LISTENER_NAME {
            return Err(format!(
                "listener name must be 1 to {MAX_LISTENER_NAME} characters"
            ));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(format!(
                "listener name '{name}' may only use letters, digits, '-', '_' and '.'"
            ));
        }
        let addr = SocketAddr::from_str(addr).map_err(|_| {
            format!("'{addr}' is not an address:port (e.g. 127.0.0.1:3000 or [::1]:3000)")
        })?;
        Ok(ListenSpec {
            name: name.to_owned(),
            addr,
            plan: None,
            proxy_protocol: None,
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

/// A worker program and its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerCommand {
    /// The program, looked up in `PATH` as `std::process::Command` does.
    pub program: OsString,
    /// Its arguments.
    pub args: Vec<OsString>,
}

/// A value that does not parse, with what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueError(String);

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ValueError {}

/// The longest duration any setting takes.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Parses a duration: an integer and a unit, `250ms`, `5s`, `1m` (also `us`, `h`), at most 24h.
pub fn parse_duration(s: &str) -> Result<Duration, ValueError> {
    let bad = || ValueError(format!("'{s}' is not a duration (e.g. 250ms, 5s, 1m)"));
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let d = match unit {
        "us" => Duration::from_micros(n),
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(bad)?),
        "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(bad)?),
        _ => return Err(bad()),
    };
    if d > MAX_DURATION {
        return Err(ValueError(format!(
            "'{s}' is longer than the most allowed, 24h"
        )));
    }
    Ok(d)
}

/// Parses a size: bytes, or an integer with `KiB`, `MiB` or `GiB`.
pub fn parse_size(s: &str) -> Result<usize, ValueError> {
    let bad = || ValueError(format!("'{s}' is not a size (e.g. 4096, 16KiB, 1MiB)"));
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: usize = digits.parse().map_err(|_| bad())?;
    let scale: usize = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(scale).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("24h"), Ok(MAX_DURATION));
        assert!(parse_duration("25h").is_err());
        assert!(parse_duration("9999999999999999999s").is_err());
        for bad in [
            "",
            "5",
            "s",
            "5 s",
            "-1s",
            "1.5s",
            "5sec",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("16KiB"), Ok(16 * 1024));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        for bad in ["", "KiB", "16kb", "1.5MiB", "-1"] {
            assert!(parse_size(bad).is_err(), "{bad:?} should not parse");
        }
    }

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
}
