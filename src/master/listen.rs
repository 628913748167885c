//! Opening the listening sockets: binding them, or taking the ones inherited from systemd or
//! from the predecessor in an upgrade.
//!
//! With inherited sockets, the listeners are settled by one rule ([`assign`]):
//! - each `--listen NAME=ADDR` takes the inherited socket named NAME, or else the one bound to
//!   exactly ADDR, and gives it its name, its place and its rules; one that matches none is
//!   bound as usual, except the default listener (no `--listen` given), which is dropped;
//! - the inherited sockets no `--listen` takes are served too, after the others, named by the
//!   name they were passed with (systemd's `FileDescriptorName=`) when it is a valid listener
//!   name not taken yet, else `lN` (N their place in the list).
//!
//! A successor starts with its predecessor's command line and gets its listeners by name, so
//! it serves the same sockets under the same names, even where the command line says port 0.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;

use log::warn;
use stickyd_ring::sys;

use super::inherit::Inherited;
use super::{Error, setup};
use crate::config::{DEFAULT_LISTEN, ListenSpec};

/// The listen backlog, where clients wait while no worker can take them.
const LISTEN_BACKLOG: i32 = 4096;

/// Where a listener's socket comes from.
#[derive(Debug)]
pub(super) enum Source {
    /// Bind the listener's address.
    Bind,
    /// An inherited socket, already listening.
    Inherited(TcpListener),
}

/// Settles the listeners given the inherited sockets, which it takes (see the module's rule):
/// rewrites `listeners` (their order, names and addresses) and returns the source of each.
pub(super) fn assign(listeners: &mut Vec<ListenSpec>, inherited: &mut Inherited) -> Vec<Source> {
    let inherited = std::mem::take(&mut inherited.listeners)
        .into_iter()
        .map(|l| (l.name, l.addr, l.socket))
        .collect();
    let (specs, sources) = assign_with(std::mem::take(listeners), inherited)
        .into_iter()
        .map(|(spec, socket)| (spec, socket.map_or(Source::Bind, Source::Inherited)))
        .unzip();
    *listeners = specs;
    sources
}

/// [`assign`] over any kind of socket `T`.
fn assign_with<T>(
    specs: Vec<ListenSpec>,
    inherited: Vec<(String, SocketAddr, T)>,
) -> Vec<(ListenSpec, Option<T>)> {
    let defaulted = is_default(&specs);
    let mut left: Vec<Option<(String, SocketAddr, T)>> = inherited.into_iter().map(Some).collect();
    let any_inherited = !left.is_empty();
    let mut out = Vec::with_capacity(specs.len() + left.len());
    for mut spec in specs {
        let by_name = left
            .iter()
            .position(|l| l.as_ref().is_some_and(|(name, _, _)| *name == spec.name));
        let by_addr = || {
            left.iter()
                .position(|l| l.as_ref().is_some_and(|(_, addr, _)| *addr == spec.addr))
        };
        match by_name.or_else(by_addr).and_then(|i| left[i].take()) {
            Some((_, addr, socket)) => {
                spec.addr = addr;
                out.push((spec, Some(socket)));
            }
            None if any_inherited && defaulted => {}
            None => out.push((spec, None)),
        }
    }
    for (name, addr, socket) in left.into_iter().flatten() {
        let taken = |n: &str| out.iter().any(|(s, _)| s.name == n);
        let named = ListenSpec::parse(&format!("{name}={addr}"), "")
            .ok()
            .filter(|s| !taken(&s.name));
        let spec = match named {
            Some(spec) => spec,
            None => {
                let mut n = out.len();
                while taken(&format!("l{n}")) {
                    n += 1;
                }
                ListenSpec {
                    name: format!("l{n}"),
                    addr,
                    plan: None,
                    proxy_protocol: None,
                    rehash_per_request: None,
                }
            }
        };
        out.push((spec, Some(socket)));
    }
    out
}

/// Whether `specs` is the listener used when no `--listen` is given.
fn is_default(specs: &[ListenSpec]) -> bool {
    let Ok(default) = ListenSpec::parse(DEFAULT_LISTEN, "l0") else {
        return false;
    };
    matches!(specs, [only] if only.name == default.name
        && only.addr == default.addr
        && only.plan.is_none()
        && only.proxy_protocol.is_none())
}

/// Opens the listener `spec` from `source`: binds and listens on its address, or takes the
/// inherited socket as it is (its backlog stays as its creator set it). With `defer`
/// (seconds), the kernel hands over a connection only once its first bytes have arrived (or
/// that many seconds have passed). Returns the socket and its address, with the real port when
/// `spec` asked for port 0.
pub(super) fn open(
    spec: &ListenSpec,
    source: Source,
    defer: Option<u32>,
) -> Result<(TcpListener, SocketAddr), Error> {
    let what = || format!("cannot listen on {}", spec.addr);
    let socket = match source {
        Source::Inherited(socket) => socket,
        Source::Bind => {
            let socket = TcpListener::bind(spec.addr).map_err(setup(what()))?;
            sys::listen(socket.as_fd(), LISTEN_BACKLOG).map_err(setup(what()))?;
            socket
        }
    };
    // A busy loop takes connections from the backlog with a non-blocking accept (see
    // `Front::pace`); an armed accept does not mind the flag.
    socket.set_nonblocking(true).map_err(setup(what()))?;
    if let Some(seconds) = defer {
        if let Err(e) = sys::set_defer_accept(socket.as_fd(), seconds) {
            warn!("{}: {e}", spec.addr);
        }
    }
    let addr = socket.local_addr().map_err(setup(what()))?;
    Ok((socket, addr))
}

/// The metrics endpoint's socket: the predecessor's, if it passed one on `addr` (or on any
/// port of its address when `addr` asks for port 0), else a new one bound on `addr`.
pub(super) fn metrics_socket(
    addr: SocketAddr,
    inherited: Option<TcpListener>,
) -> Result<TcpListener, Error> {
    let fits = |socket: &TcpListener| {
        socket
            .local_addr()
            .is_ok_and(|local| local == addr || (addr.port() == 0 && local.ip() == addr.ip()))
    };
    match inherited.filter(fits) {
        Some(socket) => Ok(socket),
        None => TcpListener::bind(addr).map_err(setup(format!("cannot serve metrics on {addr}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> ListenSpec {
        ListenSpec::parse(s, "l0").unwrap()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// (name, address, inherited socket's tag) of each settled listener.
    fn settle(
        specs: &[&str],
        inherited: &[(&str, &str)],
    ) -> Vec<(String, SocketAddr, Option<usize>)> {
        let specs = specs.iter().map(|s| spec(s)).collect();
        let inherited = inherited
            .iter()
            .enumerate()
            .map(|(i, (name, a))| ((*name).to_owned(), addr(a), i))
            .collect();
        assign_with(specs, inherited)
            .into_iter()
            .map(|(s, tag)| (s.name, s.addr, tag))
            .collect()
    }

    #[test]
    fn nothing_inherited_binds_every_listener() {
        assert_eq!(
            settle(&["a=127.0.0.1:0", "127.0.0.1:5"], &[]),
            vec![
                ("a".to_owned(), addr("127.0.0.1:0"), None),
                ("l0".to_owned(), addr("127.0.0.1:5"), None)
            ]
        );
        assert_eq!(settle(&[DEFAULT_LISTEN], &[]).len(), 1);
    }

    #[test]
    fn listeners_take_inherited_sockets_by_name_then_by_address() {
        let got = settle(
            &["web=127.0.0.1:0", "api=127.0.0.1:81", "new=127.0.0.1:82"],
            &[("api-socket", "127.0.0.1:81"), ("web", "127.0.0.1:4000")],
        );
        assert_eq!(
            got,
            vec![
                ("web".to_owned(), addr("127.0.0.1:4000"), Some(1)),
                ("api".to_owned(), addr("127.0.0.1:81"), Some(0)),
                ("new".to_owned(), addr("127.0.0.1:82"), None),
            ]
        );
    }

    #[test]
    fn the_default_listener_gives_way_to_inherited_sockets() {
        let got = settle(
            &[DEFAULT_LISTEN],
            &[
                ("stickyd.socket", "0.0.0.0:80"),
                ("stickyd.socket", "[::]:80"),
            ],
        );
        assert_eq!(
            got,
            vec![
                ("stickyd.socket".to_owned(), addr("0.0.0.0:80"), Some(0)),
                ("l1".to_owned(), addr("[::]:80"), Some(1)),
            ]
        );
        // It takes an inherited socket of its own name, as after an upgrade.
        let got = settle(&[DEFAULT_LISTEN], &[("l0", DEFAULT_LISTEN)]);
        assert_eq!(got, vec![("l0".to_owned(), addr(DEFAULT_LISTEN), Some(0))]);
    }

    #[test]
    fn unnamed_or_clashing_inherited_sockets_get_positional_names() {
        let got = settle(
            &["l1=127.0.0.1:0"],
            &[
                ("", "127.0.0.1:90"),
                ("bad name", "127.0.0.1:91"),
                ("l1", "127.0.0.1:92"),
            ],
        );
        // "l1" names the --listen entry, which takes the socket of that name.
        assert_eq!(
            got,
            vec![
                ("l1".to_owned(), addr("127.0.0.1:92"), Some(2)),
                ("l2".to_owned(), addr("127.0.0.1:90"), Some(0)),
                ("l3".to_owned(), addr("127.0.0.1:91"), Some(1)),
            ]
        );
    }
}
