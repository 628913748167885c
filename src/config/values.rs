//! The parsers of the values the command line and the configuration file take: durations,
//! sizes, counts, addresses, listener names and choices. A flag and the file's key for the same
//! setting go through the same parser, so they accept the same text and refuse it in the same
//! words.

use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

/// The most worker slots one master runs.
pub const MAX_WORKERS: u32 = 4096;

/// The most listeners one master runs (the wire protocol indexes them with a `u16`).
pub const MAX_LISTENERS: usize = 256;

/// The largest `--max-queue`.
pub const MAX_QUEUE: u32 = 65536;

/// The bounds of `--max-peek`.
pub const MAX_PEEK_RANGE: RangeInclusive<usize> = 64..=(1 << 20);

/// The longest listener name (the wire protocol carries names of up to 255 bytes).
pub const MAX_LISTENER_NAME: usize = 64;

/// The longest duration any setting takes.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// A value that does not parse, with what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueError(String);

impl ValueError {
    fn new(message: impl Into<String>) -> ValueError {
        ValueError(message.into())
    }
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ValueError {}

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

/// Parses a duration that must be more than zero (the peek timeout).
pub fn parse_positive_duration(s: &str) -> Result<Duration, ValueError> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(ValueError::new("must be more than zero")),
        d => Ok(d),
    }
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

/// Parses the most bytes peeked from a connection: a size from 64 bytes to 1MiB.
pub fn parse_max_peek(s: &str) -> Result<usize, ValueError> {
    let n = parse_size(s)?;
    if MAX_PEEK_RANGE.contains(&n) {
        Ok(n)
    } else {
        Err(ValueError(format!(
            "must be from {} to {} bytes",
            MAX_PEEK_RANGE.start(),
            MAX_PEEK_RANGE.end()
        )))
    }
}

/// Parses a whole number within `range`.
fn parse_count(s: &str, range: RangeInclusive<u32>) -> Result<u32, ValueError> {
    match s.parse::<u32>() {
        Ok(n) if range.contains(&n) && s.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(ValueError(format!(
            "'{s}' is not a number from {} to {}",
            range.start(),
            range.end()
        ))),
    }
}

/// Parses the number of worker slots: 1 to [`MAX_WORKERS`].
pub fn parse_workers(s: &str) -> Result<u32, ValueError> {
    parse_count(s, 1..=MAX_WORKERS)
}

/// The most dispatcher threads (`--threads`).
pub const MAX_THREADS: u32 = 64;

/// Parses a number of dispatcher threads: 1 to [`MAX_THREADS`].
pub fn parse_threads(s: &str) -> Result<u32, ValueError> {
    parse_count(s, 1..=MAX_THREADS)
}

/// Parses the most connections a worker holds unacknowledged: 1 to [`MAX_QUEUE`].
pub fn parse_max_queue(s: &str) -> Result<u32, ValueError> {
    parse_count(s, 1..=MAX_QUEUE)
}

/// Parses an `address:port` (`127.0.0.1:3000`, `[::1]:3000`); no host names.
pub fn parse_addr(s: &str) -> Result<SocketAddr, ValueError> {
    SocketAddr::from_str(s).map_err(|_| {
        ValueError(format!(
            "'{s}' is not an address:port (e.g. 127.0.0.1:3000 or [::1]:3000)"
        ))
    })
}

/// Checks a listener name: 1 to [`MAX_LISTENER_NAME`] letters, digits, `-`, `_` and `.`.
pub fn check_listener_name(name: &str) -> Result<(), ValueError> {
    if name.is_empty() || name.len() > MAX_LISTENER_NAME {
        return Err(ValueError(format!(
            "listener name must be 1 to {MAX_LISTENER_NAME} characters"
        )));
    }
    if name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        Ok(())
    } else {
        Err(ValueError(format!(
            "listener name '{name}' may only use letters, digits, '-', '_' and '.'"
        )))
    }
}

/// Parses one of the values of a choice flag (`--on-timeout`, `--backend`), spelled exactly as
/// the flag takes it.
pub fn parse_choice<T: clap::ValueEnum>(s: &str) -> Result<T, ValueError> {
    T::from_str(s, false).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value())
            .map(|v| v.get_name().to_owned())
            .collect();
        ValueError(format!("'{s}' is not one of {}", names.join(", ")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Backend, OnTimeout};

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
        assert_eq!(parse_positive_duration("1ms"), Ok(Duration::from_millis(1)));
        assert!(parse_positive_duration("0s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("16KiB"), Ok(16 * 1024));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        for bad in ["", "KiB", "16kb", "1.5MiB", "-1"] {
            assert!(parse_size(bad).is_err(), "{bad:?} should not parse");
        }
        assert_eq!(parse_max_peek("64"), Ok(64));
        assert_eq!(parse_max_peek("1MiB"), Ok(1 << 20));
        assert!(parse_max_peek("63").is_err());
        assert!(parse_max_peek("2MiB").is_err());
    }

    #[test]
    fn counts() {
        assert_eq!(parse_workers("1"), Ok(1));
        assert_eq!(parse_workers("4096"), Ok(MAX_WORKERS));
        assert_eq!(parse_max_queue("65536"), Ok(MAX_QUEUE));
        for bad in ["0", "4097", "-1", "+3", "", "x", "99999999999"] {
            let e = parse_workers(bad).unwrap_err().to_string();
            assert_eq!(e, format!("'{bad}' is not a number from 1 to 4096"));
        }
        assert!(parse_max_queue("65537").is_err());
    }

    #[test]
    fn addresses_names_and_choices() {
        assert_eq!(parse_addr("[::1]:80"), Ok("[::1]:80".parse().unwrap()));
        assert!(parse_addr("localhost:80").is_err());
        assert!(parse_addr("127.0.0.1").is_err());
        assert!(check_listener_name("api-1.v_2").is_ok());
        assert!(check_listener_name("").is_err());
        assert!(check_listener_name("a b").is_err());
        assert!(check_listener_name(&"a".repeat(MAX_LISTENER_NAME + 1)).is_err());
        assert_eq!(parse_choice::<OnTimeout>("close"), Ok(OnTimeout::Close));
        assert_eq!(parse_choice::<Backend>("epoll"), Ok(Backend::Epoll));
        assert_eq!(
            parse_choice::<Backend>("Epoll").unwrap_err().to_string(),
            "'Epoll' is not one of auto, uring, epoll"
        );
    }
}
