//! `reuseport_worker`: the baseline of the end-to-end benchmark (`run.sh`), hello_worker
//! without stickyd.
//!
//! `reuseport_worker --listen ADDR [--id N]` binds ADDR itself with `SO_REUSEPORT` and serves
//! the connections it accepts with hello_worker's own connection code, answering as worker N
//! (default 0) on the listener `direct`, until it is killed. Several of them on one port are
//! the SO_REUSEPORT ceiling: the kernel spreads the connections, with no stickiness. Each alone
//! on its port, they are the backends of nginx and HAProxy.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};

#[path = "../../worker-sdk/examples/hello_worker.rs"]
#[allow(dead_code)] // its `run` and `main`: this program serves connections it accepts itself
mod hello_worker;

use hello_worker::Conn;

/// The listener's token; connections get 1, 2, ...
const LISTENER: Token = Token(0);
/// The listen backlog (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: i32 = 4096;
const USAGE: &str = "usage: reuseport_worker --listen ADDR [--id N]";

fn main() -> ExitCode {
    let (addr, id) = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("reuseport_worker: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match serve(addr, id) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("reuseport_worker: worker {id} on {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--listen ADDR [--id N]`, each as two arguments or as `--flag=value`.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<(SocketAddr, u32), String> {
    let mut addr = None;
    let mut id = 0;
    while let Some(arg) = args.next() {
        let (flag, value) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (arg, None),
        };
        if flag != "--listen" && flag != "--id" {
            return Err(format!("unexpected argument {flag:?}"));
        }
        let value = value
            .or_else(|| args.next())
            .ok_or_else(|| format!("{flag} needs a value"))?;
        if flag == "--listen" {
            addr = Some(value.parse().map_err(|_| format!("--listen {value:?}"))?);
        } else {
            id = value.parse().map_err(|_| format!("--id {value:?}"))?;
        }
    }
    Ok((addr.ok_or("--listen is required")?, id))
}

fn serve(addr: SocketAddr, id: u32) -> io::Result<()> {
    let mut listener = bind_reuseport(addr)?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    eprintln!(
        "reuseport_worker: worker {id} listening on {} (pid {})",
        listener.local_addr()?,
        std::process::id()
    );
    let mut events = Events::with_capacity(256);
    let mut conns: HashMap<Token, Conn> = HashMap::new();
    let mut next_token = 1;
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in &events {
            let token = event.token();
            if token != LISTENER {
                if let Some(conn) = conns.get_mut(&token) {
                    if !conn.serve(false) {
                        if let Some(conn) = conns.remove(&token) {
                            conn.close(poll.registry());
                        }
                    }
                }
                continue;
            }
            // Edge-triggered: accept until the listener would block.
            loop {
                let (mut stream, peer) = match listener.accept() {
                    Ok(accepted) => accepted,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                    // EMFILE and the like: the client waits in the backlog until the next
                    // connection's readiness brings the loop back here.
                    Err(e) => {
                        eprintln!("reuseport_worker: worker {id}: accept: {e}");
                        break;
                    }
                };
                let token = Token(next_token);
                next_token += 1;
                let interest = Interest::READABLE | Interest::WRITABLE;
                if poll
                    .registry()
                    .register(&mut stream, token, interest)
                    .is_ok()
                {
                    conns.insert(token, Conn::new(stream, id, "direct", peer.ip()));
                }
            }
        }
    }
}

/// A non-blocking, close-on-exec listener on `addr` with `SO_REUSEADDR` and `SO_REUSEPORT`, so
/// that several processes share the port and the kernel spreads the connections.
fn bind_reuseport(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(TcpListener::from_std(socket.into()))
}
