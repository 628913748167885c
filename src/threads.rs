//! In-process workers: threads of the embedding process as the worker pool, for services that
//! want one process and sticky threads.
//!
//! The same listeners, key rules and hashing as with worker processes; the master hands each
//! connection's fd to its thread through a channel (no `SCM_RIGHTS`, no acknowledgement: the
//! fd moves), and the thread gets the same [`Connection`] a worker process would.
//!
//! ```no_run
//! use std::io::Write;
//! use stickyd::{Dispatcher, cli};
//!
//! let config = match cli::parse(["app", "--workers", "4", "--key", "cookie:sid"]) {
//!     cli::Parsed::Run(config) => *config,
//!     other => panic!("{other:?}"),
//! };
//! let mut dispatcher = Dispatcher::new(config);
//! // Before any other thread is spawned: SIGTERM, SIGINT and SIGUSR2 are left to the dispatcher.
//! let workers = dispatcher.thread_workers().expect("signal mask");
//! let threads: Vec<_> = workers
//!     .into_iter()
//!     .map(|worker| {
//!         std::thread::spawn(move || {
//!             // Ends once the dispatcher drains this worker (SIGTERM, SIGINT, an upgrade).
//!             for conn in worker.incoming() {
//!                 let Ok(mut conn) = conn else { continue };
//!                 let _ = write!(conn.stream, "HTTP/1.1 204 No Content\r\n\r\n");
//!             }
//!         })
//!     })
//!     .collect();
//! dispatcher.run().expect("stickyd failed");
//! for thread in threads {
//!     let _ = thread.join();
//! }
//! ```

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use stickyd_worker::Connection;
use stickyd_worker::wire::ConnRecord;

/// A connection on its way to a thread: what a `CONNS` record says, and the fd.
pub(crate) type Delivery = (ConnRecord, OwnedFd);

/// One in-process worker slot: receives the connections whose keys it owns.
#[derive(Debug)]
pub struct ThreadWorker {
    id: u32,
    workers: u32,
    listeners: Arc<[String]>,
    queue: Receiver<Delivery>,
}

impl ThreadWorker {
    /// `workers` thread workers and the master's ends of their queues.
    pub(crate) fn pool(
        workers: u32,
        listeners: Vec<String>,
    ) -> (Vec<ThreadWorker>, Vec<Sender<Delivery>>) {
        let listeners: Arc<[String]> = listeners.into();
        (0..workers)
            .map(|id| {
                let (tx, queue) = crossbeam_channel::unbounded();
                let worker = ThreadWorker {
                    id,
                    workers,
                    listeners: Arc::clone(&listeners),
                    queue,
                };
                (worker, tx)
            })
            .unzip()
    }

    /// This worker's slot, `0..workers`.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The pool size.
    pub fn workers(&self) -> u32 {
        self.workers
    }

    /// The name of listener `index` (a connection's `meta.listener`).
    pub fn listener_name(&self, index: u16) -> Option<&str> {
        self.listeners.get(usize::from(index)).map(String::as_str)
    }

    /// The next connection, waiting for it; `None` once the dispatcher has drained this worker
    /// and every connection it was given has been received. An error concerns one connection
    /// (its PROXY header could not be consumed, say); the next ones are fine.
    pub fn recv(&self) -> Option<io::Result<Connection>> {
        let (rec, fd) = self.queue.recv().ok()?;
        Some(Connection::from_parts(rec, fd))
    }

    /// The next connection if one is queued, without waiting: `Ok(None)` when none is, and
    /// `Err` of kind `BrokenPipe` once the worker is drained and its queue empty.
    pub fn try_recv(&self) -> io::Result<Option<Connection>> {
        match self.queue.try_recv() {
            Ok((rec, fd)) => Connection::from_parts(rec, fd).map(Some),
            Err(crossbeam_channel::TryRecvError::Empty) => Ok(None),
            Err(crossbeam_channel::TryRecvError::Disconnected) => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the dispatcher drained this worker",
            )),
        }
    }

    /// The connections, until the dispatcher drains this worker.
    pub fn incoming(&self) -> impl Iterator<Item = io::Result<Connection>> + '_ {
        std::iter::from_fn(|| self.recv())
    }
}
