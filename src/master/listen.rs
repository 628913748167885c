//! Opening the listening sockets.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;

use log::warn;
use stickyd_ring::sys;

use super::{Error, setup};
use crate::config::ListenSpec;

/// The listen backlog, where clients wait while no worker can take them.
const LISTEN_BACKLOG: i32 = 4096;

/// Binds and listens on `spec`'s address. With `defer` (seconds), the kernel hands over a
/// connection only once its first bytes have arrived (or that many seconds have passed).
/// Returns the socket and its address, with the real port when `spec` asked for port 0.
pub(super) fn open(
    spec: &ListenSpec,
    defer: Option<u32>,
) -> Result<(TcpListener, SocketAddr), Error> {
    let what = || format!("cannot listen on {}", spec.addr);
    let socket = TcpListener::bind(spec.addr).map_err(setup(what()))?;
    sys::listen(socket.as_fd(), LISTEN_BACKLOG).map_err(setup(what()))?;
    if let Some(seconds) = defer {
        if let Err(e) = sys::set_defer_accept(socket.as_fd(), seconds) {
            warn!("{}: {e}", spec.addr);
        }
    }
    let addr = socket.local_addr().map_err(setup(what()))?;
    Ok((socket, addr))
}
