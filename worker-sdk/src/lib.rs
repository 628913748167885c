//! Receive connections handed off by stickyd: rebuild a [`TcpStream`](std::net::TcpStream)
//! and read the request from byte zero.
//!
//! stickyd accepts TCP connections, peeks at their first bytes to find a key (client address,
//! a header, a cookie, ...), and passes each connection's file descriptor to the worker that
//! owns the key over a Unix `SOCK_SEQPACKET` socket. A worker program embeds this crate:
//! [`Worker::from_env`] joins the master, and every [`Connection`] received is a blocking
//! `TcpStream` whose unread bytes start with the client's request, plus its [`Meta`]data.
//!
//! ```no_run
//! use std::io::{BufRead, BufReader, Write};
//!
//! fn main() -> Result<(), stickyd_worker::Error> {
//!     // Sends HELLO, waits for WELCOME: fails if the master refuses this worker.
//!     let mut worker = stickyd_worker::Worker::from_env()?;
//!     let id = worker.id();
//!     let listeners = worker.listeners().to_vec();
//!     eprintln!("worker {id} of {} ready, listeners {listeners:?}", worker.workers());
//!
//!     // Blocking; ends once the master has sent DRAIN and closed its side of every
//!     // channel, after the connections already received.
//!     for conn in worker.incoming() {
//!         let mut conn = match conn {
//!             Ok(conn) => conn,
//!             // One message or one connection went wrong; the next ones are fine.
//!             Err(e) => {
//!                 eprintln!("worker {id}: {e}");
//!                 continue;
//!             }
//!         };
//!         let listener = listeners.get(usize::from(conn.meta.listener));
//!         // The stream reads the request from its first byte.
//!         let mut request_line = String::new();
//!         let mut reader = BufReader::new(&conn.stream);
//!         if reader.read_line(&mut request_line).is_err() {
//!             continue;
//!         }
//!         eprintln!("{} via {listener:?}: {}", conn.meta.peer, request_line.trim_end());
//!         let body = format!("worker: {id}\n");
//!         let response = format!(
//!             "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
//!             body.len()
//!         );
//!         let _ = conn.stream.write_all(response.as_bytes());
//!     }
//!     Ok(())
//! }
//! ```
//!
//! A master running several dispatcher threads (`--threads N`) gives each thread a channel of
//! its own to every worker: the handshake's `HELLO` says this SDK takes them, and the master
//! sends the extra channels over the first one right after `WELCOME`. The worker acknowledges
//! each `CONNS` message on the channel it came from, and takes messages from the channels in
//! turn; [`Worker::incoming`] ends once every channel has ended. All of this is inside the
//! SDK: a receive loop looks the same with one channel or many.
//!
//! In an event loop (mio, epoll), register [`Worker::as_fd`](std::os::fd::AsFd::as_fd) for
//! readability once, right after the handshake (it is an epoll instance watching every channel,
//! for readiness only), and call [`Worker::try_recv`] until it returns `WouldBlock`; the
//! `hello_worker` example is a whole HTTP/1.1 server built so. With mio:
//!
//! ```no_run
//! use std::io;
//! use std::os::fd::{AsFd, AsRawFd};
//!
//! use mio::unix::SourceFd;
//! use mio::{Events, Interest, Poll, Token};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let mut worker = stickyd_worker::Worker::from_env()?;
//!     let mut poll = Poll::new()?;
//!     let channel = worker.as_fd().as_raw_fd();
//!     poll.registry()
//!         .register(&mut SourceFd(&channel), Token(0), Interest::READABLE)?;
//!     let mut events = Events::with_capacity(64);
//!     loop {
//!         poll.poll(&mut events, None)?;
//!         // Edge-triggered: take every connection queued, until the channel would block.
//!         loop {
//!             match worker.try_recv() {
//!                 Ok(Some(conn)) => {
//!                     // The stream is in blocking mode: switch it before registering it.
//!                     conn.stream.set_nonblocking(true)?;
//!                     // ... register conn.stream with the poll and serve it ...
//!                 }
//!                 // Every channel has ended: no connection will come any more.
//!                 Ok(None) => return Ok(()),
//!                 Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
//!                 // One message or one connection went wrong; the next ones are fine.
//!                 Err(e) => eprintln!("worker {}: {e}", worker.id()),
//!             }
//!         }
//!     }
//! }
//! ```
//!
//! A master started with `--rehash-per-request` routes every request of a kept-alive
//! connection, not only its first: [`Worker::rehash_per_request`] says for which listeners,
//! and at each request boundary (a response completely written, the next request's first
//! bytes arrived and none of them read) the worker gives the connection back with
//! [`Worker::hand_back`] instead of reading on. The master routes it by the next request's
//! key, possibly back to the same worker, which receives it as a new connection. The
//! `hello_worker` example does this.
//!
//! [`wire`] documents the channel protocol, for the master and for workers written in other
//! languages.

#![deny(missing_docs)]
#![deny(unsafe_code)]

#[cfg(feature = "tokio")]
#[allow(unsafe_code)]
mod async_worker;
mod batch;
mod connection;
mod error;
pub mod http;
#[allow(unsafe_code)]
mod sys;
pub mod wire;
mod worker;

#[cfg(feature = "tokio")]
pub use async_worker::{AsyncConnection, AsyncWorker};
pub use connection::{Connection, Meta};
pub use error::Error;
pub use worker::{HandBackError, Incoming, Worker};
