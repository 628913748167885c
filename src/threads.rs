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
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use crossbeam_channel::{Receiver, Sender};
use stickyd_ring::sys;
use stickyd_worker::wire::ConnRecord;
use stickyd_worker::{Connection, HandBackError};

/// A connection on its way to a thread: what a `CONNS` record says, and the fd.
pub(crate) type Delivery = (ConnRecord, OwnedFd);

/// A connection a thread gives back (`--rehash-per-request`): its listener, and the fd.
pub(crate) type HandedBack = (u16, OwnedFd);

/// One in-process worker slot: receives the connections whose keys it owns.
#[derive(Debug)]
pub struct ThreadWorker {
    id: u32,
    workers: u32,
    listeners: Arc<[String]>,
    queue: Receiver<Delivery>,
    returns: Arc<Returns>,
}

/// The way back from the threads to the dispatcher, shared by every thread worker.
#[derive(Debug)]
pub(crate) struct Returns {
    /// The listeners whose kept-alive connections go back at each request boundary; set once
    /// by the dispatcher when it starts (which listeners qualify depends on their keys).
    pub rehash: OnceLock<Vec<u16>>,
    /// Per slot: the dispatcher has drained it, and takes nothing back from it.
    pub drained: Vec<AtomicBool>,
    handed_back: Sender<HandedBack>,
    /// Written after each hand-back: the dispatcher's loop polls it.
    pub wake: OwnedFd,
}

/// The thread workers' pool, as the dispatcher holds it.
#[derive(Debug)]
pub(crate) struct Pool {
    /// Each slot's queue.
    pub queues: Vec<Sender<Delivery>>,
    pub returns: Arc<Returns>,
    /// The connections the threads give back.
    pub handed_back: Receiver<HandedBack>,
}

impl ThreadWorker {
    /// `workers` thread workers and the dispatcher's side of them.
    pub(crate) fn pool(
        workers: u32,
        listeners: Vec<String>,
    ) -> io::Result<(Vec<ThreadWorker>, Pool)> {
        let (tx, handed_back) = crossbeam_channel::unbounded();
        let returns = Arc::new(Returns {
            rehash: OnceLock::new(),
            drained: (0..workers).map(|_| AtomicBool::new(false)).collect(),
            handed_back: tx,
            wake: sys::eventfd()?,
        });
        let listeners: Arc<[String]> = listeners.into();
        let (threads, queues) = (0..workers)
            .map(|id| {
                let (tx, queue) = crossbeam_channel::unbounded();
                let worker = ThreadWorker {
                    id,
                    workers,
                    listeners: Arc::clone(&listeners),
                    queue,
                    returns: Arc::clone(&returns),
                };
                (worker, tx)
            })
            .unzip();
        let pool = Pool {
            queues,
            returns,
            handed_back,
        };
        Ok((threads, pool))
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

    /// Whether the kept-alive connections of listener `listener` go back to the dispatcher
    /// at each request boundary (`--rehash-per-request`): see [`hand_back`](Self::hand_back).
    /// False until the dispatcher has started ([`Dispatcher::run`](crate::Dispatcher::run)).
    pub fn rehash_per_request(&self, listener: u16) -> bool {
        self.returns
            .rehash
            .get()
            .is_some_and(|rehash| rehash.contains(&listener))
    }

    /// Gives connection `conn`, received on listener `listener`, back to the dispatcher,
    /// which routes it again by the key of its next request, as a new connection (to this
    /// thread, or another): the in-process form of
    /// [`Worker::hand_back`](stickyd_worker::Worker::hand_back), with its contract. Call it
    /// at a request boundary only: the last response completely written, not one byte of the
    /// next request read (read one request at a time:
    /// [`http::request_end`](stickyd_worker::http::request_end)). The next request need not
    /// have begun: an idle connection waits in the dispatcher for it, as a new connection
    /// waits for its first bytes (up to `--peek-timeout`), so a thread never blocks on it.
    ///
    /// On success `conn` is dropped (the dispatcher holds its own copy of the fd); on failure
    /// it comes back in the error, to serve or close: refused once this worker is drained
    /// (kind `Other`), for a listener not named by `--rehash-per-request` (`InvalidInput`),
    /// or when the dispatcher has stopped (`BrokenPipe`).
    pub fn hand_back<C: AsFd>(&self, conn: C, listener: u16) -> Result<(), HandBackError<C>> {
        let refuse = |kind, what: &str| Err(io::Error::new(kind, what.to_owned()));
        let checked = if self.returns.drained[self.id as usize].load(Ordering::Acquire) {
            refuse(
                io::ErrorKind::Other,
                "the worker is drained: nothing goes back",
            )
        } else if !self.rehash_per_request(listener) {
            refuse(
                io::ErrorKind::InvalidInput,
                "the dispatcher does not route this listener per request",
            )
        } else {
            conn.as_fd().try_clone_to_owned()
        };
        let fd = match checked {
            Ok(fd) => fd,
            Err(error) => return Err(HandBackError::new(conn, error)),
        };
        if self.returns.handed_back.send((listener, fd)).is_err() {
            let error = io::Error::new(io::ErrorKind::BrokenPipe, "the dispatcher has stopped");
            return Err(HandBackError::new(conn, error));
        }
        if let Err(e) = sys::eventfd_wake(self.returns.wake.as_fd()) {
            // The connection is queued; the dispatcher's next wake-up takes it.
            log::debug!("worker {}: waking the dispatcher: {e}", self.id);
        }
        drop(conn);
        Ok(())
    }
}
