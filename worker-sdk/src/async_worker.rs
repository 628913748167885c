//! [`AsyncWorker`]: the receive path for tokio (feature `tokio`), yielding
//! [`tokio::net::TcpStream`]s.
//!
//! It drives the same [`Worker`] as the blocking API: the handshake is the blocking one, and
//! every receive is [`Worker::try_recv`], called when the tokio reactor reports the worker's
//! readiness fd ([`Worker::as_fd`](std::os::fd::AsFd::as_fd): an epoll instance watching every
//! channel, extra channels included) readable. `try_recv` passes `MSG_DONTWAIT` on each call,
//! so the channels' own file mode is left as it is and the blocking API keeps working on a
//! `Worker` taken back out.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::runtime::Handle;

use crate::connection::{Connection, Meta};
use crate::error::Error;
use crate::worker::{HandBackError, Worker};

/// A [`Worker`] whose receive is `async`, on the tokio runtime it was created in.
///
/// ```no_run
/// use stickyd_worker::AsyncWorker;
/// use tokio::io::AsyncWriteExt;
///
/// # async fn serve() -> Result<(), stickyd_worker::Error> {
/// // Inside the runtime: HELLO, then WELCOME (blocking, once).
/// let mut worker = AsyncWorker::from_env()?;
/// let id = worker.worker().id();
/// // Ends once the master has sent DRAIN and closed its side.
/// while let Some(conn) = worker.recv().await {
///     let mut conn = match conn {
///         Ok(conn) => conn,
///         // One message or one connection went wrong; the next ones are fine.
///         Err(e) => {
///             eprintln!("worker {id}: {e}");
///             continue;
///         }
///     };
///     tokio::spawn(async move {
///         // The stream reads the request from its first byte.
///         let body = format!("worker: {id}\n");
///         let response = format!(
///             "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
///             body.len()
///         );
///         let _ = conn.stream.write_all(response.as_bytes()).await;
///     });
/// }
/// // Draining: let the spawned connections finish, then exit.
/// # Ok(())
/// # }
/// ```
///
/// See the `hyper_worker` example for a complete HTTP/1.1 worker with graceful shutdown.
#[derive(Debug)]
pub struct AsyncWorker {
    worker: Worker,
    /// A close-on-exec duplicate of the worker's readiness fd (the epoll instance that watches
    /// its channels), registered with the reactor for readability. Owning a duplicate keeps
    /// the registration independent of `Worker`'s internals: it watches the same epoll
    /// instance for as long as this value lives.
    readiness: AsyncFd<OwnedFd>,
    /// The runtime the readiness fd is registered with; received streams join it too.
    runtime: Handle,
}

/// A connection received by an [`AsyncWorker`].
#[derive(Debug)]
pub struct AsyncConnection {
    /// The client connection, in non-blocking mode, registered with the worker's runtime,
    /// positioned at the first byte of the request (after any PROXY-protocol header, which
    /// the SDK has consumed).
    pub stream: tokio::net::TcpStream,
    /// What the master knew about it.
    pub meta: Meta,
}

impl AsyncWorker {
    /// Registers a joined `worker`'s readiness fd ([`Worker::as_fd`]) with the current tokio
    /// runtime.
    ///
    /// Fails if called outside a runtime, or if the fd cannot be duplicated or registered.
    /// The channels' file mode is not changed.
    ///
    /// # Panics
    ///
    /// If the current runtime was built without its I/O driver (`enable_io`), as tokio's
    /// own constructors do.
    pub fn new(worker: Worker) -> io::Result<AsyncWorker> {
        let runtime = current_runtime()?;
        let duplicate = worker
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| with_context("duplicating the worker's readiness fd", e))?;
        // SAFETY: `duplicate` is an `OwnedFd`: its fd is open and `as_raw_fd` returns the same
        // number for as long as it lives, and only the `AsyncFd` that takes it can close it (on
        // drop or `into_inner`), so the registration never outlives the fd or sees it change.
        let readiness = unsafe { AsyncFd::register_with_interest(duplicate, Interest::READABLE) }
            .map_err(|e| {
            with_context(
                "registering the readiness fd with the tokio runtime",
                e.into(),
            )
        })?;
        Ok(AsyncWorker {
            worker,
            readiness,
            runtime,
        })
    }

    /// Joins the master like [`Worker::from_env`] (`HELLO`, then a blocking wait for
    /// `WELCOME`, once at start), then registers it like [`new`](AsyncWorker::new).
    ///
    /// Call it inside a tokio runtime: outside one it fails with [`Error::Io`] before the
    /// handshake. [`Error::Refused`] carries the master's reason.
    pub fn from_env() -> Result<AsyncWorker, Error> {
        let io_error = |source| Error::Io {
            context: "setting up the async receive",
            source,
        };
        current_runtime().map_err(io_error)?;
        let worker = Worker::from_env()?;
        AsyncWorker::new(worker).map_err(io_error)
    }

    /// Receives the next connection, from whichever channel has one: `Some(Ok(conn))`, or
    /// `None` at the end (every channel has ended: the master shut its side after `DRAIN`, or
    /// went away). Waits without blocking the thread.
    ///
    /// An `Err` concerns one message or one connection, as with [`Worker::recv`]; later calls
    /// go on. Cancel-safe: a connection is taken off a channel and returned within a single
    /// poll, so dropping the future (in `tokio::select!`, say) loses none.
    ///
    /// The `ACK` for each `CONNS` message is sent as it is read, on the channel it came from;
    /// if that channel's send buffer is full (a master that stopped reading), that send waits
    /// for room.
    pub async fn recv(&mut self) -> Option<io::Result<AsyncConnection>> {
        // Connections may already be queued in the worker (one `CONNS` carries up to 64) with
        // nothing left to read on the channels: look before waiting for readiness. This does
        // not clear the readiness tokio has cached, so no wake-up is lost.
        match self.worker.try_recv() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            got => return self.finish(got),
        }
        loop {
            let mut guard = match self.readiness.readable().await {
                Ok(guard) => guard,
                Err(e) => return Some(Err(with_context("waiting for the channels", e))),
            };
            // `try_io` clears the readiness only when `try_recv` says `WouldBlock`, that is
            // when the worker's queue is empty and no channel has anything to read.
            if let Ok(got) = guard.try_io(|_| self.worker.try_recv()) {
                return self.finish(got);
            }
        }
    }

    /// Whether the master asked for hand-backs on listener `listener`: see
    /// [`Worker::rehash_per_request`].
    pub fn rehash_per_request(&self, listener: u16) -> bool {
        self.worker.rehash_per_request(listener)
    }

    /// Hands `conn`, received on listener `listener`, back to the master, at a request
    /// boundary: see [`Worker::hand_back`] for the contract (a response completely written,
    /// no byte of the next request read: peek with [`TcpStream::peek`] to learn that it has
    /// begun). On success `conn` is dropped, which deregisters it from the reactor and closes
    /// this worker's copy; on failure it comes back in the error, still registered, to serve
    /// or close. The send blocks the thread (a channel with room takes it at once).
    ///
    /// [`TcpStream::peek`]: tokio::net::TcpStream::peek
    pub fn hand_back(
        &mut self,
        conn: tokio::net::TcpStream,
        listener: u16,
    ) -> Result<(), HandBackError<tokio::net::TcpStream>> {
        self.worker.hand_back(conn, listener)
    }

    /// The joined worker: [`id`](Worker::id), [`workers`](Worker::workers),
    /// [`listeners`](Worker::listeners), [`listener_name`](Worker::listener_name),
    /// [`draining`](Worker::draining), [`rehash_per_request`](Worker::rehash_per_request).
    pub fn worker(&self) -> &Worker {
        &self.worker
    }

    /// Deregisters the readiness fd and gives the [`Worker`] back, for the blocking API.
    pub fn into_worker(self) -> Worker {
        drop(self.readiness.into_inner());
        self.worker
    }

    /// Turns what [`Worker::try_recv`] returned into `recv`'s answer.
    fn finish(&self, got: io::Result<Option<Connection>>) -> Option<io::Result<AsyncConnection>> {
        match got {
            Ok(Some(conn)) => Some(self.to_async(conn)),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// Puts a received stream in non-blocking mode (the SDK hands it out blocking) and
    /// registers it with the worker's runtime.
    fn to_async(&self, conn: Connection) -> io::Result<AsyncConnection> {
        let Connection { stream, meta } = conn;
        let context = |what: &str, e: io::Error| {
            let detail = format!("connection {} from {}: {what}: {e}", meta.seq, meta.peer);
            io::Error::new(e.kind(), detail)
        };
        stream
            .set_nonblocking(true)
            .map_err(|e| context("setting non-blocking mode", e))?;
        // `from_std` registers with the current runtime: make it this worker's, whatever
        // executor polls `recv`.
        let _entered = self.runtime.enter();
        let stream = tokio::net::TcpStream::from_std(stream)
            .map_err(|e| context("registering with the tokio runtime", e))?;
        Ok(AsyncConnection { stream, meta })
    }
}

/// The current runtime, or an error saying there is none.
fn current_runtime() -> io::Result<Handle> {
    Handle::try_current().map_err(|e| {
        io::Error::other(format!(
            "stickyd_worker::AsyncWorker must be created inside a tokio runtime: {e}"
        ))
    })
}

fn with_context(what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}
