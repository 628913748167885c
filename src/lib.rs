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
//! - [`proxy`]: the PROXY protocol header a balancer puts in front (pure).
//! - [`verdict`]: a pending connection's fate: its PROXY header, then the key plan (pure).
//! - [`config`] and [`cli`]: what the command line says.
//! - `dispatch`: the master's rules (where a connection goes, when it waits, what each
//!   worker is told, when workers start and end) as a state machine without I/O, with its
//!   deterministic simulator.
//! - `master`: the io_uring (or epoll) event loop that feeds those rules what the kernel says
//!   and carries out what they decide, and the worker processes.
//! - [`node_ipc`]: the lines of Node's IPC channel, for Node workers (`--ipc node`).
//! - [`threads`]: threads of the embedding process as the workers, instead of processes.
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
mod dispatch;
pub mod keys;
pub mod logging;
mod master;
pub mod metrics;
pub mod node_ipc;
pub mod proxy;
pub mod route;
pub mod threads;
pub mod verdict;

pub use config::Config;
pub use master::Error;

/// The built-in worker is the SDK's example worker, compiled in (`src/hello_worker.rs` is a
/// symbolic link to it, so that the published crate carries it).
#[allow(dead_code, missing_docs)]
mod hello_worker;

/// Runs the built-in hello worker if this process was started as one, and returns its exit
/// code; `None` otherwise.
///
/// A dispatcher with no worker command starts its workers from its own executable with an
/// environment variable set. A program that embeds a [`Dispatcher`] that way calls this first
/// thing in `main`:
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     if let Some(code) = stickyd::builtin_worker() {
///         return code;
///     }
///     // ... build a Config and run the Dispatcher ...
/// #   std::process::ExitCode::SUCCESS
/// }
/// ```
pub fn builtin_worker() -> Option<std::process::ExitCode> {
    std::env::var_os(master::spawn::BUILTIN_WORKER_ENV).map(|_| hello_worker::run())
}

/// The dispatcher: a master process with its listeners and worker pool.
#[derive(Debug)]
pub struct Dispatcher {
    config: Config,
    threads: Option<threads::Pool>,
}

impl Dispatcher {
    /// A dispatcher for `config`; nothing starts until [`Dispatcher::run`].
    pub fn new(config: Config) -> Dispatcher {
        Dispatcher {
            config,
            threads: None,
        }
    }

    /// Makes the worker pool threads of this process instead of worker processes: returns
    /// one [`ThreadWorker`](threads::ThreadWorker) per slot (`Config::workers`) for the
    /// caller's threads to serve; the worker command is not used. Blocks SIGTERM, SIGINT
    /// and SIGUSR2 in the calling thread, so call it before spawning the threads (they inherit the mask
    /// and leave those signals to the dispatcher). [`run`](Dispatcher::run) returns once
    /// every thread worker has been drained; join the threads then.
    pub fn thread_workers(&mut self) -> std::io::Result<Vec<threads::ThreadWorker>> {
        stickyd_ring::sys::block_signals(&master::MASTER_SIGNALS)?;
        let names = self
            .config
            .listeners
            .iter()
            .map(|l| l.name.clone())
            .collect();
        let (workers, pool) = threads::ThreadWorker::pool(self.config.workers, names)?;
        self.threads = Some(pool);
        Ok(workers)
    }

    /// Binds the listeners (or takes those passed by systemd or by a predecessor), starts the
    /// workers and dispatches connections until SIGTERM or SIGINT has drained the workers, or
    /// a successor started on SIGUSR2 has taken over. Must be called from the main thread (a
    /// worker's parent-death signal follows the thread that forked it), and blocks SIGTERM,
    /// SIGINT and SIGUSR2 in it to read them from a signalfd.
    pub fn run(self) -> Result<(), Error> {
        master::run(self.config, self.threads)
    }
}
