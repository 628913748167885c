//! What a master inherits at start instead of opening it: systemd's sockets (`LISTEN_FDS`,
//! `LISTEN_PID`, `LISTEN_FDNAMES`), or, in an upgrade, its predecessor's sockets and the
//! channel on which it says it is ready (`STICKYD_UPGRADE_FDS`, `STICKYD_UPGRADE_FROM`).
//!
//! The predecessor's list names each fd by what it is: `KIND[.NAME]=FD`, comma-separated, e.g.
//! `ready=9,metrics=8,listen.l0=5,listen.api=6,attach=7`. A kind this master does not know (one a newer
//! predecessor passes) is closed with a warning.
//!
//! The fds are taken only if they were inherited across exec (not close-on-exec), once per
//! process. The variables stay in this process's environment (removing them is not
//! thread-safe): every child is started without them instead (`spawn` for workers, `upgrade`
//! for a successor, which gets its own list).

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

use log::{debug, info, warn};
use stickyd_ring::sys;

use super::Error;

/// systemd's variables.
pub(crate) const LISTEN_PID: &str = "LISTEN_PID";
pub(crate) const LISTEN_FDS: &str = "LISTEN_FDS";
pub(crate) const LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";
/// The fds a predecessor passes: `KIND[.NAME]=FD,...`.
pub(crate) const UPGRADE_FDS: &str = "STICKYD_UPGRADE_FDS";
/// The predecessor's pid, for the log (a successor whose predecessor has died meanwhile has
/// another parent, and takes over all the same).
pub(crate) const UPGRADE_FROM: &str = "STICKYD_UPGRADE_FROM";

/// systemd passes its sockets from fd 3 on.
const SD_LISTEN_FDS_START: i32 = 3;

/// The kinds of fd in a predecessor's list.
const KIND_LISTEN: &str = "listen";
const KIND_METRICS: &str = "metrics";
const KIND_READY: &str = "ready";
const KIND_ATTACH: &str = "attach";

/// Who passed the inherited fds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Nobody: the master opens everything itself.
    None,
    /// systemd's socket activation.
    Systemd,
    /// The master this one succeeds, with its pid.
    Predecessor(u32),
}

/// An inherited listening socket.
#[derive(Debug)]
pub(crate) struct InheritedListener {
    /// Its name: the predecessor's listener name, or systemd's `LISTEN_FDNAMES` entry.
    pub name: String,
    pub addr: SocketAddr,
    pub socket: TcpListener,
}

/// Everything inherited.
#[derive(Debug)]
pub(crate) struct Inherited {
    pub origin: Origin,
    /// Listening TCP sockets, in the order they were passed.
    pub listeners: Vec<InheritedListener>,
    /// The predecessor's metrics socket.
    pub metrics: Option<TcpListener>,
    /// The channel on which to tell the predecessor this master is ready.
    pub ready: Option<UnixStream>,
    /// The predecessor's attach socket (`--attach`): attached workers reconnect to it.
    pub attach: Option<OwnedFd>,
}

impl Inherited {
    fn none() -> Inherited {
        Inherited {
            origin: Origin::None,
            listeners: Vec::new(),
            metrics: None,
            ready: None,
            attach: None,
        }
    }
}

/// One fd in a predecessor's list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Passed {
    /// A listener, with its name.
    Listen(String),
    /// The metrics endpoint's socket.
    Metrics,
    /// The readiness channel.
    Ready,
    /// The attach socket.
    Attach,
    /// A kind this master does not know.
    Other(String),
}

impl Passed {
    fn label(&self) -> String {
        match self {
            Passed::Listen(name) => format!("{KIND_LISTEN}.{name}"),
            Passed::Metrics => KIND_METRICS.to_owned(),
            Passed::Ready => KIND_READY.to_owned(),
            Passed::Attach => KIND_ATTACH.to_owned(),
            Passed::Other(kind) => kind.clone(),
        }
    }
}

/// Encodes a predecessor's list for [`UPGRADE_FDS`].
pub(crate) fn encode_passed(fds: &[(Passed, i32)]) -> String {
    let entries: Vec<String> = fds
        .iter()
        .map(|(what, fd)| format!("{}={fd}", what.label()))
        .collect();
    entries.join(",")
}

/// Parses a predecessor's list (`KIND[.NAME]=FD,...`).
pub(crate) fn parse_passed(value: &str) -> Result<Vec<(Passed, i32)>, String> {
    if value.is_empty() {
        return Ok(Vec::new());
    }
    value
        .split(',')
        .map(|entry| {
            let bad = || format!("{UPGRADE_FDS}: '{entry}' is not KIND[.NAME]=FD");
            let (what, fd) = entry.rsplit_once('=').ok_or_else(bad)?;
            let fd: i32 = fd.parse().map_err(|_| bad())?;
            let what = match what.split_once('.') {
                Some((KIND_LISTEN, "")) => return Err(bad()),
                Some((KIND_LISTEN, name)) => Passed::Listen(name.to_owned()),
                None if what == KIND_METRICS => Passed::Metrics,
                None if what == KIND_READY => Passed::Ready,
                None if what == KIND_ATTACH => Passed::Attach,
                _ if what.is_empty() => return Err(bad()),
                _ => Passed::Other(what.to_owned()),
            };
            Ok((what, fd))
        })
        .collect()
}

/// An fd systemd passed: its number and its `LISTEN_FDNAMES` name (none if empty or absent).
pub(crate) type SystemdFd = (i32, Option<String>);

/// The fd numbers and names systemd passed, if the variables are addressed to `pid`:
/// `LISTEN_PID` must be `pid`, the fds are `3..3 + LISTEN_FDS`, named by the colon-separated
/// `LISTEN_FDNAMES` (which, if present, names every one). `Ok(None)` when nothing is passed to
/// this process (no `LISTEN_PID`, another pid's, or `LISTEN_FDS=0`).
pub(crate) fn parse_systemd(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    names: Option<&str>,
    pid: u32,
) -> Result<Option<Vec<SystemdFd>>, String> {
    let (Some(listen_pid), Some(listen_fds)) = (listen_pid, listen_fds) else {
        return Ok(None);
    };
    let listen_pid: u32 = listen_pid
        .parse()
        .map_err(|_| format!("{LISTEN_PID}='{listen_pid}' is not a pid"))?;
    if listen_pid != pid {
        return Ok(None);
    }
    let count: i32 = listen_fds
        .parse()
        .ok()
        .filter(|n| (0..=65_536).contains(n))
        .ok_or_else(|| format!("{LISTEN_FDS}='{listen_fds}' is not a number of fds"))?;
    let names: Option<Vec<&str>> = names.map(|n| n.split(':').collect());
    if let Some(names) = &names {
        if names.len() != count as usize {
            return Err(format!(
                "{LISTEN_FDNAMES} names {} fds, {LISTEN_FDS} says {count}",
                names.len()
            ));
        }
    }
    if count == 0 {
        return Ok(None);
    }
    Ok(Some(
        (0..count)
            .map(|i| {
                let name = names
                    .as_ref()
                    .and_then(|n| n.get(i as usize))
                    .filter(|n| !n.is_empty())
                    .map(|n| (*n).to_owned());
                (SD_LISTEN_FDS_START + i, name)
            })
            .collect(),
    ))
}

fn env(name: &str) -> Option<String> {
    std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
}

fn fatal(what: impl Into<String>, why: impl Into<String>) -> Error {
    Error::Setup {
        what: what.into(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, why.into()),
    }
}

/// Takes what this process was passed: a predecessor's fds if it has any, else systemd's.
/// Call it first thing, before inherited fds are marked close-on-exec. An inherited listener
/// that is not a listening TCP socket, or a list that does not parse, is a fatal error.
pub(crate) fn take() -> Result<Inherited, Error> {
    if let Some(list) = env(UPGRADE_FDS) {
        let from = env(UPGRADE_FROM)
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or(0);
        let parent = std::os::unix::process::parent_id();
        if from != parent {
            // It died since it started this process: its sockets are ours to serve all the same.
            warn!("upgrade: the predecessor (pid {from}) is gone: taking over its sockets anyway");
        }
        let passed = parse_passed(&list).map_err(|e| fatal("upgrade", e))?;
        return take_passed(passed, from);
    }
    let passed = parse_systemd(
        env(LISTEN_PID).as_deref(),
        env(LISTEN_FDS).as_deref(),
        env(LISTEN_FDNAMES).as_deref(),
        std::process::id(),
    )
    .map_err(|e| fatal("systemd socket activation", e))?;
    let Some(passed) = passed else {
        if env(LISTEN_FDS).is_some() {
            debug!("{LISTEN_FDS} is set for another process ({LISTEN_PID}): ignored");
        }
        return Ok(Inherited::none());
    };
    let numbers: Vec<i32> = passed.iter().map(|(fd, _)| *fd).collect();
    let fds = sys::take_inherited_fds(&numbers)
        .map_err(|e| fatal("systemd socket activation", e.to_string()))?;
    debug!("systemd passed {} listening sockets", passed.len());
    let mut inherited = Inherited::none();
    inherited.origin = Origin::Systemd;
    for ((number, name), fd) in passed.into_iter().zip(fds) {
        let label = name.clone().unwrap_or_default();
        let (socket, addr) = listener(fd, number, &label).map_err(|e| fatal(LISTEN_FDS, e))?;
        inherited.listeners.push(InheritedListener {
            name: name.unwrap_or_default(),
            addr,
            socket,
        });
    }
    Ok(inherited)
}

fn take_passed(passed: Vec<(Passed, i32)>, from: u32) -> Result<Inherited, Error> {
    let numbers: Vec<i32> = passed.iter().map(|(_, fd)| *fd).collect();
    let fds = sys::take_inherited_fds(&numbers).map_err(|e| fatal("upgrade", e.to_string()))?;
    let mut inherited = Inherited::none();
    inherited.origin = Origin::Predecessor(from);
    for ((what, number), fd) in passed.into_iter().zip(fds) {
        match what {
            Passed::Listen(name) => {
                let (socket, addr) =
                    listener(fd, number, &name).map_err(|e| fatal(UPGRADE_FDS, e))?;
                inherited
                    .listeners
                    .push(InheritedListener { name, addr, socket });
            }
            Passed::Metrics => {
                let (socket, _) =
                    listener(fd, number, KIND_METRICS).map_err(|e| fatal(UPGRADE_FDS, e))?;
                inherited.metrics = Some(socket);
            }
            Passed::Ready => inherited.ready = Some(UnixStream::from(fd)),
            Passed::Attach => match sys::socket_kind(fd.as_fd()) {
                Ok(kind) if kind.domain == libc::AF_UNIX && kind.listening => {
                    inherited.attach = Some(fd);
                }
                _ => {
                    return Err(fatal(
                        UPGRADE_FDS,
                        format!("fd {number} (attach) is not a listening Unix socket"),
                    ));
                }
            },
            Passed::Other(kind) => {
                warn!("upgrade: the predecessor passed an fd of an unknown kind '{kind}': closed");
            }
        }
    }
    let n = inherited.listeners.len();
    let listeners = if n == 1 { "listener" } else { "listeners" };
    info!("upgrade: taking over {n} {listeners} from pid {from}");
    Ok(inherited)
}

/// An inherited fd as a listener, if it is a listening TCP socket.
fn listener(fd: OwnedFd, number: i32, name: &str) -> Result<(TcpListener, SocketAddr), String> {
    let named = if name.is_empty() {
        format!("fd {number}")
    } else {
        format!("fd {number} ({name})")
    };
    match sys::socket_kind(fd.as_fd()) {
        Ok(kind) if kind.is_tcp_listener() => {}
        Ok(kind) if kind.domain != libc::AF_INET && kind.domain != libc::AF_INET6 => {
            return Err(format!(
                "{named} is not a TCP socket (address family {})",
                kind.domain
            ));
        }
        Ok(kind) if kind.kind != libc::SOCK_STREAM => {
            return Err(format!("{named} is not a stream (TCP) socket"));
        }
        Ok(_) => return Err(format!("{named} is a TCP socket but not listening")),
        Err(e) if e.raw_os_error() == Some(libc::ENOTSOCK) => {
            return Err(format!("{named} is not a socket"));
        }
        Err(e) => return Err(format!("{named}: getsockopt: {e}")),
    }
    let socket = TcpListener::from(fd);
    let addr = socket
        .local_addr()
        .map_err(|e| format!("{named}: getsockname: {e}"))?;
    Ok((socket, addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_variables_are_for_their_pid_only() {
        assert_eq!(parse_systemd(None, Some("2"), None, 7), Ok(None));
        assert_eq!(parse_systemd(Some("8"), Some("2"), None, 7), Ok(None));
        assert_eq!(parse_systemd(Some("7"), None, None, 7), Ok(None));
        assert_eq!(parse_systemd(Some("7"), Some("0"), None, 7), Ok(None));
        assert_eq!(
            parse_systemd(Some("7"), Some("2"), None, 7),
            Ok(Some(vec![(3, None), (4, None)]))
        );
        assert_eq!(
            parse_systemd(Some("7"), Some("2"), Some("web:"), 7),
            Ok(Some(vec![(3, Some("web".to_owned())), (4, None)]))
        );
        for (pid, fds, names) in [
            ("x", "1", None),
            ("7", "-1", None),
            ("7", "two", None),
            ("7", "2", Some("web")),
            ("7", "1", Some("a:b")),
        ] {
            assert!(
                parse_systemd(Some(pid), Some(fds), names, 7).is_err(),
                "{pid} {fds} {names:?}"
            );
        }
    }

    #[test]
    fn a_predecessors_list_round_trips() {
        let list = vec![
            (Passed::Ready, 9),
            (Passed::Metrics, 8),
            (Passed::Listen("l0".to_owned()), 5),
            (Passed::Listen("api.v2".to_owned()), 6),
            (Passed::Attach, 7),
            (Passed::Other("later".to_owned()), 4),
        ];
        let text = encode_passed(&list);
        assert_eq!(
            text,
            "ready=9,metrics=8,listen.l0=5,listen.api.v2=6,attach=7,later=4"
        );
        assert_eq!(parse_passed(&text), Ok(list));
        assert_eq!(parse_passed(""), Ok(Vec::new()));
        for bad in ["ready", "ready=x", "=3", "listen.=3", "ready=3,", "a=1=b"] {
            assert!(parse_passed(bad).is_err(), "{bad:?}");
        }
    }
}
