//! The event loop of stickyd: typed, safe operations over io_uring, or over epoll where
//! io_uring is refused.
//!
//! A [`Ring`] queues operations (multishot accept, recv, poll, sendmsg, recvmsg, close, timeout,
//! cancel), each identified by an [`OpId`] and tagged with a caller-chosen `token`. Every
//! operation owns what the kernel reads or writes (buffers, `msghdr`s, timespecs) until its final
//! completion arrives, and gives it back in the [`Outcome`]: a receive buffer comes back with the
//! bytes in it, a message comes back for reuse, an accepted connection arrives as an [`OwnedFd`].
//! File descriptors go in as [`BorrowedFd`]s (or as an [`OwnedFd`] that an operation consumes)
//! and come out as [`OwnedFd`]s; raw numbers exist only at the syscall boundary.
//!
//! The same operations run on two backends ([`BackendKind`]): io_uring ([`Ring::uring`], also
//! [`Ring::new`]) and an epoll emulation ([`Ring::epoll`]) for hosts where io_uring is refused
//! (Docker's default seccomp profile, the `kernel.io_uring_disabled` sysctl) or incomplete.
//!
//! [`sys`] holds the few synchronous syscalls the master's event loop needs beside the ring
//! (signalfd, pidfd, `SO_RCVLOWAT`, the worker channel's socket pair, spawning a worker).
//!
//! # Example
//!
//! Accept a connection with a multishot accept, then peek at its first bytes.
//!
//! ```
//! use std::io::Write;
//! use std::net::{TcpListener, TcpStream};
//! use std::os::fd::AsFd;
//! use std::time::Duration;
//! use stickyd_ring::{Outcome, Ring};
//!
//! # fn main() -> std::io::Result<()> {
//! // io_uring may be refused here (seccomp, sysctl) or the kernel too old: fall back.
//! let mut ring = Ring::new(64).or_else(|e| {
//!     eprintln!("io_uring unavailable ({e}): using epoll");
//!     Ring::epoll()
//! })?;
//! let listener = TcpListener::bind("127.0.0.1:0")?;
//! let accept = ring.accept_multi(listener.as_fd(), 1);
//! let mut client = TcpStream::connect(listener.local_addr()?)?;
//! client.write_all(b"GET / HTTP/1.1\r\n")?;
//!
//! let mut conn = None;
//! while conn.is_none() {
//!     ring.wait(Some(Duration::from_secs(5)))?;
//!     while let Some(done) = ring.next_completion() {
//!         if let Outcome::Accepted { fd, .. } = done.outcome {
//!             conn = Some(fd?);
//!         }
//!     }
//! }
//! let conn = conn.unwrap();
//! // Wait until the bytes are there, then peek without consuming them.
//! ring.poll(conn.as_fd(), libc::POLLIN as u32, 2);
//! ring.wait(Some(Duration::from_secs(5)))?;
//! while ring.next_completion().is_none() {
//!     ring.wait(Some(Duration::from_secs(5)))?;
//! }
//! ring.recv(conn.as_fd(), Vec::with_capacity(1024), libc::MSG_PEEK | libc::MSG_DONTWAIT, 3);
//! loop {
//!     ring.wait(Some(Duration::from_secs(5)))?;
//!     if let Some(done) = ring.next_completion() {
//!         if let Outcome::Received { buf, result } = done.outcome {
//!             assert_eq!(result?, 16);
//!             assert!(buf.starts_with(b"GET /"));
//!             break;
//!         }
//!     }
//! }
//! ring.cancel(accept, 4);
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

mod completion;
mod epoll;
mod msg;
mod op_id;
mod ring;
pub mod sys;
mod uring;

pub use completion::{Completion, Outcome};
pub use msg::{InMsg, OutMsg};
pub use op_id::OpId;
pub use ring::{BackendKind, Ring};

#[cfg(doc)]
use std::os::fd::{BorrowedFd, OwnedFd};
