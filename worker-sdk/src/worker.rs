//! [`Worker`]: the handshake and the receive path.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::batch::{self, Batch};
use crate::connection::{self, Connection};
use crate::error::Error;
use crate::sys::{self, Inherit};
use crate::wire::{self, ConnRecord, Hello, MAX_MESSAGE, Message};

/// Environment variable naming the inherited channel's fd number.
const ENV_FD: &str = "STICKYD_FD";
/// Environment variable naming the worker's slot.
const ENV_ID: &str = "STICKYD_WORKER_ID";
/// Environment variable naming the socket path of a master to attach to (`--attach`).
const ENV_ATTACH: &str = "STICKYD_ATTACH";

/// Set once `from_env` owns the inherited fd, so a second call cannot own it twice.
static INHERITED_TAKEN: AtomicBool = AtomicBool::new(false);

/// A worker's end of the channel to the master, after a successful handshake.
///
/// Receive connections with [`recv`](Worker::recv), [`incoming`](Worker::incoming), or, in
/// an event loop, [`try_recv`](Worker::try_recv) whenever [`as_fd`](AsFd::as_fd) is
/// readable.
pub struct Worker {
    channel: OwnedFd,
    id: u32,
    workers: u32,
    listeners: Vec<String>,
    /// Receive buffer, [`MAX_MESSAGE`] bytes.
    buf: Box<[u8]>,
    /// Send buffer for `ACK`s.
    out: Vec<u8>,
    /// Received connections not handed out yet.
    queue: VecDeque<(ConnRecord, OwnedFd)>,
    draining: bool,
    /// The zero-length read happened: nothing more will come.
    ended: bool,
    /// Sending failed with EPIPE/ECONNRESET: the master is gone, stop sending.
    master_gone: bool,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("channel", &self.channel)
            .field("id", &self.id)
            .field("workers", &self.workers)
            .field("listeners", &self.listeners)
            .field("queued", &self.queue.len())
            .field("draining", &self.draining)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// Joins the master from the environment stickyd sets: `STICKYD_WORKER_ID` (the slot)
    /// and `STICKYD_FD` (the inherited `SOCK_SEQPACKET` channel's fd number).
    ///
    /// Checks that the fd is an open `SOCK_SEQPACKET` socket, takes ownership of it (once
    /// per process: a second call returns [`Error::AlreadyTaken`]), marks it close-on-exec so
    /// the worker's own children do not inherit it, sends `HELLO`, and waits for `WELCOME`
    /// (`Ok`) or `REFUSED` ([`Error::Refused`]).
    ///
    /// Without `STICKYD_FD` but with `STICKYD_ATTACH=PATH` (a worker stickyd did not start),
    /// it [attaches](Worker::attach) to PATH instead.
    pub fn from_env() -> Result<Worker, Error> {
        let Some(fd_value) = std::env::var_os(ENV_FD) else {
            if let Some(path) = std::env::var_os(ENV_ATTACH) {
                return Worker::attach(std::path::Path::new(&path));
            }
            return Err(Error::MissingEnv { name: ENV_FD });
        };
        let fd: RawFd = parse_env(ENV_FD, &fd_value, "a file descriptor number")?;
        if fd < 0 {
            let value = fd.to_string();
            return Err(Error::InvalidEnv {
                name: ENV_FD,
                value,
                expected: "a file descriptor number",
            });
        }
        let id_value = std::env::var_os(ENV_ID).ok_or(Error::MissingEnv { name: ENV_ID })?;
        let worker_id: u32 = parse_env(ENV_ID, &id_value, "a worker index (u32)")?;
        if INHERITED_TAKEN.swap(true, Ordering::SeqCst) {
            return Err(Error::AlreadyTaken);
        }
        let channel = sys::take_inherited(fd).map_err(|e| {
            INHERITED_TAKEN.store(false, Ordering::SeqCst);
            match e {
                Inherit::NotOpen(source) => Error::NotOpen { fd, source },
                Inherit::NotSocket(e) => Error::NotSeqpacket {
                    fd,
                    detail: e.to_string(),
                },
                Inherit::WrongType(ty) => Error::NotSeqpacket {
                    fd,
                    detail: type_name(ty),
                },
                Inherit::Cloexec(source) => Error::Io {
                    context: "setting FD_CLOEXEC on STICKYD_FD",
                    source,
                },
            }
        })?;
        Worker::handshake(channel, worker_id)
    }

    /// Attaches to a master started with `--attach PATH`: connects to `path`, takes the slot
    /// `STICKYD_WORKER_ID` names, or, without it, any free slot ([`id`](Worker::id) says
    /// which), and does the same handshake as [`from_env`](Worker::from_env). The master
    /// refuses ([`Error::Refused`], with its reason) a peer whose uid it does not allow, a
    /// taken or unknown slot, or any slot when all are taken.
    pub fn attach(path: &std::path::Path) -> Result<Worker, Error> {
        let worker_id = match std::env::var_os(ENV_ID) {
            Some(value) => parse_env(ENV_ID, &value, "a worker index (u32)")?,
            None => wire::ANY_WORKER,
        };
        let channel = sys::connect_seqpacket(path).map_err(|source| Error::Attach {
            path: path.to_owned(),
            source,
        })?;
        Worker::handshake(channel, worker_id)
    }

    /// Joins the master over a channel the caller owns (tests, embedding): the same
    /// handshake as [`from_env`](Worker::from_env). The channel's fd flags are left as they
    /// are.
    pub fn from_fd(channel: OwnedFd, worker_id: u32) -> Result<Worker, Error> {
        let fd = channel.as_raw_fd();
        match sys::socket_type(channel.as_fd()) {
            Ok(libc::SOCK_SEQPACKET) => {}
            Ok(ty) => {
                return Err(Error::NotSeqpacket {
                    fd,
                    detail: type_name(ty),
                });
            }
            Err(e) => {
                return Err(Error::NotSeqpacket {
                    fd,
                    detail: e.to_string(),
                });
            }
        }
        Worker::handshake(channel, worker_id)
    }

    /// Sends `HELLO`, reads `WELCOME` or `REFUSED`.
    fn handshake(channel: OwnedFd, worker_id: u32) -> Result<Worker, Error> {
        let mut out = Vec::with_capacity(64);
        wire::encode_hello(
            &Hello {
                worker_id,
                pid: std::process::id(),
            },
            &mut out,
        );
        let master_gone = match sys::send(channel.as_fd(), &out) {
            Ok(_) => false,
            // A REFUSED may be queued before the master closed: read it.
            Err(e) if is_gone(&e) => true,
            Err(source) => {
                return Err(Error::Io {
                    context: "sending HELLO to the master",
                    source,
                });
            }
        };
        let mut buf = vec![0u8; MAX_MESSAGE].into_boxed_slice();
        let mut fds = Vec::new();
        let got = loop {
            match sys::recv_msg(channel.as_fd(), &mut buf, &mut fds, false) {
                Ok(got) => break got,
                // The master closed with unread data; what it sent before is still queued.
                Err(e) if is_gone(&e) => {}
                Err(source) => {
                    return Err(Error::Io {
                        context: "waiting for WELCOME",
                        source,
                    });
                }
            }
        };
        if got.len == 0 {
            return Err(Error::Closed);
        }
        if got.truncated {
            return Err(Error::Unexpected(format!(
                "a message longer than {MAX_MESSAGE} bytes"
            )));
        }
        let message = wire::decode(buf.get(..got.len).unwrap_or_default())?;
        if !fds.is_empty() {
            let what = format!("{} fds with a {} message", fds.len(), message.msg_type());
            return Err(Error::Unexpected(what));
        }
        let welcome = match message {
            Message::Welcome(welcome) => welcome,
            Message::Refused(reason) => return Err(Error::Refused(reason.to_owned())),
            other => return Err(Error::Unexpected(format!("a {} message", other.msg_type()))),
        };
        Ok(Worker {
            channel,
            // The master's answer is authoritative for the slot.
            id: welcome.worker_id,
            workers: welcome.workers,
            listeners: welcome.listeners,
            buf,
            out,
            queue: VecDeque::new(),
            draining: false,
            ended: false,
            master_gone,
        })
    }

    /// The worker's slot, `0..workers()`, as the master confirmed it.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The pool size.
    pub fn workers(&self) -> u32 {
        self.workers
    }

    /// The listener names, in index order ([`Meta::listener`](crate::Meta::listener)).
    pub fn listeners(&self) -> &[String] {
        &self.listeners
    }

    /// The name of listener `index`.
    pub fn listener_name(&self, index: u16) -> Option<&str> {
        self.listeners.get(usize::from(index)).map(String::as_str)
    }

    /// True once the master's `DRAIN` has been read: no new connections will follow those
    /// already sent, and the channel ends soon.
    pub fn draining(&self) -> bool {
        self.draining
    }

    /// Blocking receive: `Ok(Some(conn))`, or `Ok(None)` at the end (the master shut its
    /// side after `DRAIN`, or went away).
    ///
    /// An `Err` concerns one message or one connection; later calls go on. Kinds:
    /// `InvalidData` for a malformed or unexpected message, `Other` when the kernel dropped
    /// some fds of a message at this process's fd limit (those connections went back to the
    /// master; the others follow on the next calls), and a connection's own I/O error (with
    /// its sequence number and peer) when consuming its PROXY header failed.
    pub fn recv(&mut self) -> io::Result<Option<Connection>> {
        self.receive(false)
    }

    /// Non-blocking receive (`MSG_DONTWAIT`; the channel fd's own mode is untouched): like
    /// [`recv`](Worker::recv), and `Err` of kind `WouldBlock` when nothing is queued now.
    ///
    /// For event loops: register [`as_fd`](AsFd::as_fd) for readability and call this until
    /// it returns `WouldBlock` (or `Ok(None)`).
    pub fn try_recv(&mut self) -> io::Result<Option<Connection>> {
        self.receive(true)
    }

    /// Blocking iterator over [`recv`](Worker::recv): yields each connection (or error) and
    /// ends at the end of the channel.
    pub fn incoming(&mut self) -> Incoming<'_> {
        Incoming { worker: self }
    }

    fn receive(&mut self, nonblocking: bool) -> io::Result<Option<Connection>> {
        loop {
            if let Some((rec, fd)) = self.queue.pop_front() {
                return connection::finish(rec, fd).map(Some);
            }
            if self.ended {
                return Ok(None);
            }
            self.read_message(nonblocking)?;
        }
    }

    /// Reads and handles one message (or the end of the channel).
    fn read_message(&mut self, nonblocking: bool) -> io::Result<()> {
        let mut fds = Vec::new();
        let got = match sys::recv_msg(self.channel.as_fd(), &mut self.buf, &mut fds, nonblocking) {
            Ok(got) => got,
            // The master closed with unread data in its queue: keep reading to the end.
            Err(e) if is_gone(&e) => return Ok(()),
            Err(e) => return Err(e),
        };
        if got.len == 0 {
            self.ended = true;
            return Ok(());
        }
        if got.truncated {
            return Err(invalid("message truncated"));
        }
        let bytes = self.buf.get(..got.len).unwrap_or_default();
        let message =
            wire::decode(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let records = match message {
            Message::Conns(records) => records,
            Message::Drain => {
                self.draining = true;
                return stray_fds(&fds, "DRAIN");
            }
            other => {
                let what = other.msg_type();
                return Err(invalid(&format!(
                    "unexpected {what} message after the handshake"
                )));
            }
        };
        let count = records.len();
        let batch = batch::pair(records, fds);
        self.send_ack(&batch)?;
        let Batch {
            arrived,
            returned,
            extra,
        } = batch;
        self.queue.extend(arrived);
        if extra > 0 || (returned == 0 && got.fds_truncated) {
            return Err(invalid(&format!(
                "CONNS message with {count} records carried more fds; the extra ones were closed"
            )));
        }
        if returned > 0 {
            return Err(io::Error::other(format!(
                "{returned} of {count} connections returned to the master: the kernel dropped \
                 their fds (MSG_CTRUNC, at this process's fd limit)"
            )));
        }
        Ok(())
    }

    /// Sends the `ACK` for one `CONNS` at once. A master that is gone is not an error: what it
    /// sent before closing is still read.
    fn send_ack(&mut self, batch: &Batch) -> io::Result<()> {
        if self.master_gone {
            return Ok(());
        }
        self.out.clear();
        batch.ack(&mut self.out);
        match sys::send(self.channel.as_fd(), &self.out) {
            Ok(_) => Ok(()),
            Err(e) if is_gone(&e) => {
                self.master_gone = true;
                Ok(())
            }
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("sending ACK to the master: {e}"),
            )),
        }
    }
}

impl AsFd for Worker {
    /// The channel socket: readable when a message (or the end) is queued.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.channel.as_fd()
    }
}

/// Blocking iterator over received connections: see [`Worker::incoming`].
#[derive(Debug)]
pub struct Incoming<'a> {
    worker: &'a mut Worker,
}

impl Iterator for Incoming<'_> {
    type Item = io::Result<Connection>;

    fn next(&mut self) -> Option<io::Result<Connection>> {
        self.worker.recv().transpose()
    }
}

fn is_gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// fds arriving with a message other than `CONNS` are closed (dropped) and reported.
fn stray_fds(fds: &[OwnedFd], msg: &str) -> io::Result<()> {
    if fds.is_empty() {
        Ok(())
    } else {
        Err(invalid(&format!(
            "{} fds arrived with a {msg} message; closed",
            fds.len()
        )))
    }
}

fn parse_env<T: std::str::FromStr>(
    name: &'static str,
    value: &std::ffi::OsStr,
    expected: &'static str,
) -> Result<T, Error> {
    let text = value.to_string_lossy();
    text.trim().parse().map_err(|_| Error::InvalidEnv {
        name,
        value: text.into_owned(),
        expected,
    })
}

fn type_name(ty: libc::c_int) -> String {
    match ty {
        libc::SOCK_STREAM => "a SOCK_STREAM socket".to_owned(),
        libc::SOCK_DGRAM => "a SOCK_DGRAM socket".to_owned(),
        other => format!("a socket of type {other}"),
    }
}
