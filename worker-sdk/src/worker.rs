//! [`Worker`]: the handshake and the receive path.
//!
//! The worker reads from one or more channels: the first (the handshake's, which alone carries
//! `WELCOME`, `REFUSED`, `DRAIN` and `CHANNELS`) and the extra channels a `CHANNELS` message
//! brings, which carry only `CONNS`. Each `CONNS` is acknowledged on its own channel. A
//! blocking receive with the first channel alone blocks in `recvmsg`; otherwise receives take
//! one message from each channel in turn (`MSG_DONTWAIT`) and a blocking one waits with
//! `poll(2)`. An epoll instance watching every live channel is the readiness fd that event
//! loops register. A channel leaves the round at its end of file; extra channels are closed
//! then, the first is kept open until the worker is dropped.
//!
//! With `--rehash-per-request` the master sends, on the first channel, a `REHASH` naming
//! listeners; [`Worker::hand_back`] then returns a kept-alive connection of one of them to the
//! master (`HANDBACK`, on the first channel) at a request boundary, to be routed again by its
//! next request's key.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::batch::{self, Batch};
use crate::connection::{self, Connection};
use crate::error::Error;
use crate::sys::{self, Inherit};
use crate::wire::{self, ConnRecord, Hello, MAX_MESSAGE, Message, MsgType};

/// Environment variable naming the inherited channel's fd number.
const ENV_FD: &str = "STICKYD_FD";
/// Environment variable naming the worker's slot.
const ENV_ID: &str = "STICKYD_WORKER_ID";
/// Environment variable naming the socket path of a master to attach to (`--attach`).
const ENV_ATTACH: &str = "STICKYD_ATTACH";

/// Set once `from_env` owns the inherited fd, so a second call cannot own it twice.
static INHERITED_TAKEN: AtomicBool = AtomicBool::new(false);

/// A worker's end of the channels to the master, after a successful handshake.
///
/// The first channel is the one the handshake used; the master may add extra channels (one
/// per dispatcher thread) with a `CHANNELS` message on it, and the worker receives from all
/// of them. Receive connections with [`recv`](Worker::recv), [`incoming`](Worker::incoming),
/// or, in an event loop, [`try_recv`](Worker::try_recv) whenever [`as_fd`](AsFd::as_fd) is
/// readable.
pub struct Worker {
    /// The channels not ended yet (no zero-length read), in arrival order.
    channels: Vec<Channel>,
    /// Where the next round-robin pass over `channels` starts.
    next: usize,
    /// The first channel once it has ended: kept open until the worker is dropped, since the
    /// master takes its closing for the worker going away.
    first_ended: Option<OwnedFd>,
    /// An epoll instance watching every channel in `channels` (level-triggered, readable):
    /// what [`as_fd`](AsFd::as_fd) returns.
    readiness: OwnedFd,
    /// Extra channels taken so far (the next one's number is this plus one).
    extra_taken: usize,
    /// A `CHANNELS` message has been read (the master sends at most one).
    channels_message_read: bool,
    /// The listeners the last `REHASH` named, sorted, without duplicates: their kept-alive
    /// connections go back to the master at each request boundary.
    rehash: Vec<u16>,
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
}

/// One channel to the master.
#[derive(Debug)]
struct Channel {
    fd: OwnedFd,
    name: ChannelName,
    /// Sending failed with EPIPE/ECONNRESET: the master's end is gone, stop sending on it.
    master_gone: bool,
}

/// Which channel: 0 for the first one, 1, 2, ... for the extra ones in arrival order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ChannelName(usize);

impl ChannelName {
    const FIRST: ChannelName = ChannelName(0);
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("the first channel"),
            n => write!(f, "extra channel {n}"),
        }
    }
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let channels: Vec<_> = self
            .channels
            .iter()
            .map(|c| (c.name.0, c.fd.as_raw_fd()))
            .collect();
        f.debug_struct("Worker")
            .field("channels", &channels)
            .field("readiness", &self.readiness)
            .field("id", &self.id)
            .field("workers", &self.workers)
            .field("listeners", &self.listeners)
            .field("queued", &self.queue.len())
            .field("draining", &self.draining)
            .field("rehash", &self.rehash)
            .field("ended", &self.channels.is_empty())
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

    /// Sends `HELLO` (saying the worker takes extra channels and hands connections back when
    /// asked), reads `WELCOME` or `REFUSED`.
    fn handshake(channel: OwnedFd, worker_id: u32) -> Result<Worker, Error> {
        // Made before HELLO, so that a failure here leaves the master nothing to undo.
        let readiness = sys::epoll_create().map_err(|source| Error::Io {
            context: "creating the epoll instance that watches the channels",
            source,
        })?;
        sys::epoll_add(readiness.as_fd(), channel.as_fd()).map_err(|source| Error::Io {
            context: "watching the channel with epoll",
            source,
        })?;
        let mut out = Vec::with_capacity(64);
        wire::encode_hello(
            &Hello {
                worker_id,
                pid: std::process::id(),
                flags: wire::HELLO_CHANNELS | wire::HELLO_HANDBACK,
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
            channels: vec![Channel {
                fd: channel,
                name: ChannelName::FIRST,
                master_gone,
            }],
            next: 0,
            first_ended: None,
            readiness,
            extra_taken: 0,
            channels_message_read: false,
            rehash: Vec::new(),
            // The master's answer is authoritative for the slot.
            id: welcome.worker_id,
            workers: welcome.workers,
            listeners: welcome.listeners,
            buf,
            out,
            queue: VecDeque::new(),
            draining: false,
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
    /// already sent, and the channels end soon.
    pub fn draining(&self) -> bool {
        self.draining
    }

    /// Whether the master asked for the kept-alive connections of listener `listener` to be
    /// handed back at each request boundary ([`hand_back`](Worker::hand_back)), with a
    /// `REHASH` naming it (`--rehash-per-request`). False until a `REHASH` naming it has been
    /// read: the master sends it on the first channel right after `WELCOME`, so a receive
    /// loop sees it with the first messages it reads.
    pub fn rehash_per_request(&self, listener: u16) -> bool {
        self.rehash.binary_search(&listener).is_ok()
    }

    /// Hands connection `conn`, received on listener `listener`
    /// ([`Meta::listener`](crate::Meta::listener)), back to the master, which routes it again
    /// by the key of its next request, as a new connection.
    ///
    /// `conn` is what owns the connection's fd (`TcpStream`, `OwnedFd`, mio's or tokio's
    /// `TcpStream`), or a borrow of it. Sends one `HANDBACK` with its fd on the first channel
    /// (a blocking send); on success `conn` is dropped, which closes this worker's copy (for a
    /// borrow, drop the owner): the master owns the connection now. On failure nothing was
    /// sent and `conn` comes back in the [`HandBackError`], still this worker's, to serve or
    /// close as if it had not been asked.
    ///
    /// The contract, which the SDK cannot check:
    /// - Call it only at a request boundary: the last response is completely written, and not
    ///   one byte of the next request has been read from the socket (its bytes are still in
    ///   the kernel's receive queue, where the master peeks at them and the next worker reads
    ///   them from the first). Peek (`MSG_PEEK`) to learn that a request has begun; never
    ///   hand back bytes already read into a buffer (pipelined requests): answer those here, or
    ///   read one request at a time ([`http::request_end`](crate::http::request_end)).
    /// - Use it only on the listeners [`rehash_per_request`](Worker::rehash_per_request) names.
    /// - Deregister the connection from any epoll instance (mio's `Registry::deregister`)
    ///   before this worker's copy is closed: the master's copy keeps the socket open, so
    ///   epoll would go on reporting it. Deregister, then pass the owner; or pass a borrow
    ///   (`&stream`), and on `Ok` deregister and drop the owner (the connection is the
    ///   master's: do not shut it down, read or write it).
    ///
    /// The next request's key may belong to this worker: the connection then comes back as a
    /// new connection ([`recv`](Worker::recv)). A connection received is always served its
    /// first request where it arrives, so it travels at most once per request.
    ///
    /// Refused, without sending: once the worker is [`draining`](Worker::draining) (kind
    /// `Other`), when the master is gone (`BrokenPipe`), or for a listener no `REHASH` named
    /// (`InvalidInput`). A failed send returns its own error (`EPIPE` also marks the master
    /// gone, so later calls are refused at once).
    pub fn hand_back<C: AsFd>(&mut self, conn: C, listener: u16) -> Result<(), HandBackError<C>> {
        if let Err(error) = self.check_hand_back(listener) {
            return Err(HandBackError { conn, error });
        }
        let Some(channel) = self
            .channels
            .iter_mut()
            .find(|c| c.name == ChannelName::FIRST)
        else {
            let error = gone("the first channel has ended");
            return Err(HandBackError { conn, error });
        };
        self.out.clear();
        wire::encode_handback(&[listener], &mut self.out);
        match sys::send_fds(channel.fd.as_fd(), &self.out, &[conn.as_fd()]) {
            Ok(_) => {
                // The message, and with it the kernel's reference to the socket, is queued:
                // this worker's copy is closed here.
                drop(conn);
                Ok(())
            }
            Err(e) => {
                if is_gone(&e) {
                    channel.master_gone = true;
                }
                let error = io::Error::new(
                    e.kind(),
                    format!("sending HANDBACK to the master on {}: {e}", channel.name),
                );
                Err(HandBackError { conn, error })
            }
        }
    }

    /// Why a hand-back on `listener` cannot be sent now, if it cannot.
    fn check_hand_back(&self, listener: u16) -> io::Result<()> {
        if self.draining {
            return Err(io::Error::other(
                "the worker is draining: the master takes no connection back",
            ));
        }
        let first = self.channels.iter().find(|c| c.name == ChannelName::FIRST);
        match first {
            None => return Err(gone("the first channel has ended")),
            Some(channel) if channel.master_gone => {
                return Err(gone("the master has closed the first channel"));
            }
            Some(_) => {}
        }
        if !self.rehash_per_request(listener) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the master did not ask for hand-backs on listener {listener}"),
            ));
        }
        Ok(())
    }

    /// Blocking receive: `Ok(Some(conn))`, or `Ok(None)` at the end: every channel has ended
    /// (the master shut its side after `DRAIN`, or went away), and every connection they
    /// carried has been handed out.
    ///
    /// With extra channels it waits on all of them (`poll(2)`) and takes their messages in
    /// turn; with the first channel only, it blocks in `recvmsg` on it.
    ///
    /// An `Err` concerns one message or one connection; later calls go on. Kinds:
    /// `InvalidData` for a malformed or unexpected message, `Other` when the kernel dropped
    /// some fds of a message at this process's fd limit (those connections went back to the
    /// master; the others follow on the next calls), and a connection's own I/O error (with
    /// its sequence number and peer) when consuming its PROXY header failed.
    pub fn recv(&mut self) -> io::Result<Option<Connection>> {
        self.receive(false)
    }

    /// Non-blocking receive (`MSG_DONTWAIT`; the channels' own mode is untouched): like
    /// [`recv`](Worker::recv), and `Err` of kind `WouldBlock` when nothing is queued now on
    /// any channel. The channels take turns, one message each, so a busy one does not hold
    /// up the others.
    ///
    /// For event loops: register [`as_fd`](AsFd::as_fd) for readability and call this until
    /// it returns `WouldBlock` (or `Ok(None)`).
    pub fn try_recv(&mut self) -> io::Result<Option<Connection>> {
        self.receive(true)
    }

    /// Blocking iterator over [`recv`](Worker::recv): yields each connection (or error) and
    /// ends once every channel has ended.
    pub fn incoming(&mut self) -> Incoming<'_> {
        Incoming { worker: self }
    }

    fn receive(&mut self, nonblocking: bool) -> io::Result<Option<Connection>> {
        loop {
            if let Some((rec, fd)) = self.queue.pop_front() {
                return connection::finish(rec, fd).map(Some);
            }
            if self.channels.is_empty() {
                return Ok(None);
            }
            if !nonblocking && self.first_only() {
                self.read_message(0, false)?;
            } else if !self.read_next()? {
                if nonblocking {
                    return Err(io::Error::from_raw_os_error(libc::EAGAIN));
                }
                self.wait()?;
            }
        }
    }

    /// True when the first channel is the only one left.
    fn first_only(&self) -> bool {
        matches!(self.channels.as_slice(), [only] if only.name == ChannelName::FIRST)
    }

    /// One round-robin pass, without blocking: reads one message (or the end) from the next
    /// channel in turn, from `next` on, that has one queued. False if none had.
    fn read_next(&mut self) -> io::Result<bool> {
        let count = self.channels.len();
        let start = self.next;
        for step in 0..count {
            let index = (start + step) % count;
            // The next pass starts after this channel, whatever happens to this read: a
            // channel that keeps delivering (or failing) does not hold the others up.
            self.next = (index + 1) % count;
            if self.read_message(index, true)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Waits until some channel has a message (or its end) queued.
    fn wait(&self) -> io::Result<()> {
        let fds: Vec<BorrowedFd<'_>> = self.channels.iter().map(|c| c.fd.as_fd()).collect();
        sys::wait_readable(&fds).map_err(|e| {
            io::Error::new(e.kind(), format!("waiting for the master's channels: {e}"))
        })
    }

    /// Reads and handles one message (or the end) of channel `index`. True if something was
    /// read; false if `nonblocking` and nothing is queued.
    fn read_message(&mut self, index: usize, nonblocking: bool) -> io::Result<bool> {
        let Some(channel) = self.channels.get(index) else {
            return Ok(false);
        };
        let name = channel.name;
        let mut fds = Vec::new();
        let got = match sys::recv_msg(channel.fd.as_fd(), &mut self.buf, &mut fds, nonblocking) {
            Ok(got) => got,
            // The master closed with unread data in its queue: keep reading to the end.
            Err(e) if is_gone(&e) => return Ok(true),
            Err(e) if nonblocking && e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => {
                let what = format!("receiving from the master on {name}: {e}");
                return Err(io::Error::new(e.kind(), what));
            }
        };
        if got.len == 0 {
            self.end(index)?;
            return Ok(true);
        }
        if got.truncated {
            return Err(invalid(&format!("message on {name} truncated")));
        }
        let bytes = self.buf.get(..got.len).unwrap_or_default();
        let message =
            wire::decode(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        match message {
            Message::Conns(records) => {
                let count = records.len();
                let batch = batch::pair(records, fds);
                self.take_conns(index, batch, count, got.fds_truncated)?;
            }
            Message::Drain if name == ChannelName::FIRST => {
                self.draining = true;
                stray_fds(&fds, "DRAIN")?;
                if !self.rehash.is_empty() {
                    // From now on nothing is handed back; what was, before this, the master
                    // routes among the draining workers until every one has said DRAINED.
                    self.send_drained(index)?;
                }
            }
            Message::Channels(count) if name == ChannelName::FIRST => {
                self.take_channels(usize::from(count), fds, got.fds_truncated)?;
            }
            Message::Rehash(listeners) if name == ChannelName::FIRST => {
                // A later REHASH replaces the set.
                let mut rehash: Vec<u16> = listeners.iter().collect();
                rehash.sort_unstable();
                rehash.dedup();
                self.rehash = rehash;
                stray_fds(&fds, "REHASH")?;
            }
            other if name == ChannelName::FIRST => {
                let what = other.msg_type();
                return Err(invalid(&format!(
                    "unexpected {what} message after the handshake"
                )));
            }
            other => {
                // Any fds it carried are closed here.
                let what = other.msg_type();
                return Err(invalid(&format!(
                    "unexpected {what} message on {name} (only CONNS travel on extra \
                     channels); ignored"
                )));
            }
        }
        Ok(true)
    }

    /// Acknowledges a `CONNS` read from channel `index` and queues its connections.
    fn take_conns(
        &mut self,
        index: usize,
        batch: Batch,
        count: usize,
        fds_truncated: bool,
    ) -> io::Result<()> {
        self.send_ack(index, &batch)?;
        let Batch {
            arrived,
            returned,
            extra,
        } = batch;
        self.queue.extend(arrived);
        if extra > 0 || (returned == 0 && fds_truncated) {
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

    /// Sends the `ACK` for one `CONNS` at once, on the channel `index` it came from.
    fn send_ack(&mut self, index: usize, batch: &Batch) -> io::Result<()> {
        self.out.clear();
        batch.ack(&mut self.out);
        self.send_out(index, MsgType::Ack)
    }

    /// Sends `DRAINED` on channel `index` (the first).
    fn send_drained(&mut self, index: usize) -> io::Result<()> {
        self.out.clear();
        wire::encode_drained(&mut self.out);
        self.send_out(index, MsgType::Drained)
    }

    /// Sends the message in `self.out` (a `what`) on channel `index`. A master that is gone is
    /// not an error: what it sent before closing is still read.
    fn send_out(&mut self, index: usize, what: MsgType) -> io::Result<()> {
        let Some(channel) = self.channels.get_mut(index) else {
            return Ok(());
        };
        if channel.master_gone {
            return Ok(());
        }
        match sys::send(channel.fd.as_fd(), &self.out) {
            Ok(_) => Ok(()),
            Err(e) if is_gone(&e) => {
                channel.master_gone = true;
                Ok(())
            }
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("sending {what} to the master on {}: {e}", channel.name),
            )),
        }
    }

    /// Takes the channels a `CHANNELS` message carried: every `SOCK_SEQPACKET` socket among
    /// its fds joins the others (and the epoll instance); anything else is closed. A count
    /// that does not match the announced one, or a second `CHANNELS`, is reported once the
    /// good channels are in place.
    fn take_channels(
        &mut self,
        announced: usize,
        fds: Vec<OwnedFd>,
        fds_truncated: bool,
    ) -> io::Result<()> {
        let again = std::mem::replace(&mut self.channels_message_read, true);
        let arrived = fds.len();
        let mut not_seqpacket = Vec::new();
        let mut unwatched = Vec::new();
        for fd in fds {
            // Arrived with MSG_CMSG_CLOEXEC: close-on-exec already.
            match sys::socket_type(fd.as_fd()) {
                Ok(libc::SOCK_SEQPACKET) => {}
                Ok(ty) => {
                    not_seqpacket.push(type_name(ty));
                    continue;
                }
                Err(e) => {
                    not_seqpacket.push(e.to_string());
                    continue;
                }
            }
            if let Err(e) = sys::epoll_add(self.readiness.as_fd(), fd.as_fd()) {
                unwatched.push(e.to_string());
                continue;
            }
            self.extra_taken += 1;
            self.channels.push(Channel {
                fd,
                name: ChannelName(self.extra_taken),
                master_gone: false,
            });
        }
        let mut problems = Vec::new();
        if again {
            problems.push("it is not the first CHANNELS message".to_owned());
        }
        if arrived != announced {
            let mut what = format!("it announced {announced} channels and carried {arrived}");
            if fds_truncated && arrived < announced {
                what.push_str(
                    " (the kernel dropped the others: MSG_CTRUNC, at this process's fd limit)",
                );
            }
            problems.push(what);
        } else if fds_truncated {
            problems.push("the kernel dropped more fds than it announced".to_owned());
        }
        if !not_seqpacket.is_empty() {
            problems.push(format!(
                "{} fds were not SOCK_SEQPACKET sockets ({}) and were closed",
                not_seqpacket.len(),
                not_seqpacket.join(", ")
            ));
        }
        if !unwatched.is_empty() {
            problems.push(format!(
                "{} channels could not be added to the epoll instance ({}) and were closed",
                unwatched.len(),
                unwatched.join(", ")
            ));
        }
        if problems.is_empty() {
            return Ok(());
        }
        let taken = self.channels.len();
        let what = format!(
            "CHANNELS message: {}; {taken} channels are open now",
            problems.join("; ")
        );
        // Only the fd limit at work: like the same case for CONNS, `Other`.
        let fd_limit_only = !again
            && fds_truncated
            && arrived < announced
            && not_seqpacket.is_empty()
            && unwatched.is_empty();
        if fd_limit_only {
            Err(io::Error::other(what))
        } else {
            Err(invalid(&what))
        }
    }

    /// Channel `index` has ended: it leaves the round and the epoll instance. An extra channel
    /// is closed (the master closed its end first); the first one stays open until the worker
    /// is dropped.
    fn end(&mut self, index: usize) -> io::Result<()> {
        if index >= self.channels.len() {
            return Ok(());
        }
        let channel = self.channels.remove(index);
        if self.next > index {
            self.next -= 1;
        }
        if self.next >= self.channels.len() {
            self.next = 0;
        }
        let removed = sys::epoll_remove(self.readiness.as_fd(), channel.fd.as_fd());
        let name = channel.name;
        if name == ChannelName::FIRST {
            self.first_ended = Some(channel.fd);
        }
        removed.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("removing {name}, which has ended, from the epoll instance: {e}"),
            )
        })
    }
}

impl AsFd for Worker {
    /// An fd that is readable whenever a message (or the end) is queued on any of the
    /// worker's channels, including extra channels that arrive later: an epoll instance
    /// (close-on-exec) watching every channel that has not ended, level-triggered.
    ///
    /// For readiness only: register it once, right after the handshake, with an event loop
    /// (edge- or level-triggered), and on readability call [`try_recv`](Worker::try_recv)
    /// until it says `WouldBlock` or `Ok(None)`. Do not read from it, write to it, or change
    /// its watch list. It is the same fd for the worker's whole life; once the end of every
    /// channel has been read it is never readable again.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.readiness.as_fd()
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

/// A connection [`Worker::hand_back`] did not send, and why. The connection is still the
/// worker's: take it back with [`into_parts`](HandBackError::into_parts) to serve or close it.
/// Converting the error into an `io::Error` drops (closes) the connection.
pub struct HandBackError<C> {
    conn: C,
    error: io::Error,
}

impl<C> HandBackError<C> {
    /// A hand-back of `conn` refused for `error`: for other ways back to a dispatcher with
    /// the same contract (stickyd's in-process thread workers).
    pub fn new(conn: C, error: io::Error) -> HandBackError<C> {
        HandBackError { conn, error }
    }

    /// The connection, untouched, and the reason it was not handed back.
    pub fn into_parts(self) -> (C, io::Error) {
        (self.conn, self.error)
    }

    /// The connection, untouched.
    pub fn into_conn(self) -> C {
        self.conn
    }

    /// The reason it was not handed back.
    pub fn error(&self) -> &io::Error {
        &self.error
    }
}

impl<C> fmt::Debug for HandBackError<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandBackError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<C> fmt::Display for HandBackError<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connection not handed back: {}", self.error)
    }
}

impl<C> std::error::Error for HandBackError<C> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<C> From<HandBackError<C>> for io::Error {
    /// The error, with the same kind; the connection is closed.
    fn from(e: HandBackError<C>) -> io::Error {
        io::Error::new(e.error.kind(), e.to_string())
    }
}

fn gone(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, what.to_owned())
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
