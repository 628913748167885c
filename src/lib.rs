//! stickyd: a sticky-session connection dispatcher for Linux.
//!
//! One master process accepts TCP connections with io_uring, peeks at their first bytes
//! without consuming them, finds a key (the client address, or a header such as
//! `X-Forwarded-For`), hashes it to one of N workers with rendezvous hashing, and hands the raw
//! file descriptor to that worker over a Unix socket with `SCM_RIGHTS`. The worker (see the
//! `stickyd-worker` crate) reads the request from byte zero; the master is out of the data path.
//!
//! The crate is laid out as the connection travels:
//! - [`keys`]: finding a key in peeked bytes (pure, no I/O).
//! - [`route`]: hashing a key and picking a worker by rendezvous hashing (pure).
//! - [`decide`]: the per-connection decision from what was peeked (pure).
//! - [`config`] and [`cli`]: what the command line says.
//! - `master`: the io_uring event loop that drives all of it, and the worker processes.
//!
//! ```no_run
//! use stickyd::{Dispatcher, cli};
//!
//! let config = match cli::parse(["stickyd", "--workers", "4", "--key", "header:x-forwarded-for"]) {
//!     cli::Parsed::Run(config) => *config,
//!     other => panic!("{other:?}"),
//! };
//! Dispatcher::new(config).run().expect("stickyd failed");
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cli;
pub mod config;
pub mod decide;
pub mod keys;
pub mod logging;
mod master;
pub mod proxy;
pub mod route;

pub use config::Config;
pub use master::Error;
#[doc(hidden)]
pub use master::spawn::BUILTIN_WORKER_ENV;

/// The dispatcher: a master process with its listeners and worker pool.
#[derive(Debug)]
pub struct Dispatcher {
    config: Config,
}

impl Dispatcher {
    /// A dispatcher for `config`; nothing starts until [`Dispatcher::run`].
    pub fn new(config: Config) -> Dispatcher {
        Dispatcher { config }
    }

    /// Binds the listeners, starts the workers and dispatches connections until SIGTERM or
    /// SIGINT has drained the workers. Must be called from the main thread (a worker's
    /// parent-death signal follows the thread that forked it), and blocks SIGTERM and SIGINT
    /// in it to read them from a signalfd.
    pub fn run(self) -> Result<(), Error> {
        master::run(self.config)
    }
}
