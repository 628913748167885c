//! `hello_worker`: an HTTP/1.1 worker for stickyd, built on `stickyd-worker`.
//!
//! One thread serves every connection: a mio event loop over the SDK's channel and the
//! connections it hands out. Every request is answered `200 OK` with `X-Worker`,
//! `X-Listener` and `X-Peer` headers and the body `worker: <id>\n`; `GET /bytes/<n>` answers
//! `n` bytes of `x` (up to 64 MiB), streamed from a static chunk. Keep-alive, pipelining and
//! `Connection: close` are honoured. Once the master drains it, it finishes the responses in
//! progress, closes idle connections and exits 0.
//!
//! `hello_worker --listen ADDR [--id N]` runs it standalone, without stickyd: it binds ADDR
//! itself with `SO_REUSEPORT` and serves the same way with the same loop (`X-Worker: N`,
//! default 0, and `X-Listener: direct`). Several such processes on one port are the baseline
//! that stickyd is measured against: the kernel spreads the connections, with no stickiness.
//! It serves until it is killed.
//!
//! stickyd reuses this file as its built-in worker (`#[path]` module): everything but
//! [`run`] is private, and it uses only `stickyd_worker`, `mio`, `socket2` and std.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::process::ExitCode;

use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use stickyd_worker::{Connection, Worker};

/// Writes one line to stderr in a single write, so that lines of the master and the other
/// workers sharing the same stderr never cut into it (`eprintln!` writes piece by piece).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let line = format!("hello_worker: {}\n", format_args!($($arg)*));
        let _ = std::io::stderr().write_all(line.as_bytes());
    }};
}

/// The token of the source of connections (the channel, or the listener); connections get
/// 1, 2, ...
const CHANNEL: Token = Token(0);
/// The listener's name in `X-Listener` in standalone mode.
const DIRECT: &str = "direct";
/// The standalone listener's backlog (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: i32 = 4096;
/// Largest request head (request line and headers) accepted; larger ones get 431.
const MAX_HEAD: usize = 64 * 1024;
/// Largest `/bytes/<n>`.
const MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Responses queued on one connection before pipelined requests wait.
const MAX_QUEUED: usize = 32;
/// Bytes read per `read` call.
const READ_CHUNK: usize = 16 * 1024;
/// Consecutive channel errors after which the worker gives up.
const MAX_CHANNEL_ERRORS: u32 = 64;
/// The source of every `/bytes/<n>` body.
static XS: [u8; 64 * 1024] = [b'x'; 64 * 1024];

/// Runs the worker: joins the master from the environment and serves until drained, or, with
/// `--listen ADDR [--id N]`, serves on its own `SO_REUSEPORT` listener until killed.
pub fn run() -> ExitCode {
    let standalone = match parse_args(std::env::args_os().skip(1)) {
        Ok(standalone) => standalone,
        Err(e) => {
            say!("{e}");
            return ExitCode::from(2);
        }
    };
    let (id, source) = match standalone {
        None => match Worker::from_env() {
            Ok(worker) => (worker.id(), Source::Channel(worker)),
            Err(e) => {
                say!("{e}");
                return ExitCode::from(1);
            }
        },
        Some(Standalone { addr, id }) => match bind_reuseport(addr) {
            Ok(listener) => (id, Source::Listener(listener)),
            Err(e) => {
                say!("worker {id}: binding {addr}: {e}");
                return ExitCode::from(1);
            }
        },
    };
    match Server::new(source, id).and_then(Server::serve) {
        Ok(()) => {
            say!("worker {id} exiting");
            ExitCode::SUCCESS
        }
        Err(e) => {
            say!("worker {id}: {e}");
            ExitCode::from(1)
        }
    }
}

#[allow(dead_code)] // stickyd includes this file as a module and calls `run` itself
fn main() -> ExitCode {
    run()
}

/// The standalone mode's command line: `--listen ADDR [--id N]`.
struct Standalone {
    addr: SocketAddr,
    id: u32,
}

/// Parses the arguments after the program name: none is the mode behind stickyd (`None`).
/// The error is the one line to print.
fn parse_args(args: impl Iterator<Item = OsString>) -> Result<Option<Standalone>, String> {
    let mut addr = None;
    let mut id = None;
    let mut args = args.peekable();
    if args.peek().is_none() {
        return Ok(None);
    }
    while let Some(arg) = args.next() {
        let arg = arg
            .into_string()
            .map_err(|a| format!("argument {a:?} is not UTF-8"))?;
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg, None),
        };
        if flag != "--listen" && flag != "--id" {
            return Err(format!(
                "unexpected argument {flag:?} (usage: hello_worker [--listen ADDR [--id N]])"
            ));
        }
        let value = match inline {
            Some(value) => value,
            None => args
                .next()
                .and_then(|v| v.into_string().ok())
                .ok_or_else(|| format!("{flag} needs a value"))?,
        };
        if flag == "--listen" {
            let parsed = value
                .parse::<SocketAddr>()
                .map_err(|_| format!("--listen {value:?}: expected IP:PORT"))?;
            addr = Some(parsed);
        } else {
            let parsed = value
                .parse::<u32>()
                .map_err(|_| format!("--id {value:?}: expected a non-negative integer"))?;
            id = Some(parsed);
        }
    }
    match addr {
        Some(addr) => Ok(Some(Standalone {
            addr,
            id: id.unwrap_or(0),
        })),
        None => Err("--id needs --listen ADDR".to_owned()),
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

/// Where the connections come from.
enum Source {
    /// Handed off by stickyd over the SDK's channel.
    Channel(Worker),
    /// Accepted from this process's own `SO_REUSEPORT` listener.
    Listener(TcpListener),
}

/// What every response needs to know about the worker.
struct Identity {
    id: u32,
    listeners: Vec<String>,
}

/// The event loop.
struct Server {
    poll: Poll,
    source: Source,
    who: Identity,
    clients: HashMap<Token, Client>,
    next_token: usize,
    /// The channel has ended (zero-length read): no more connections.
    channel_done: bool,
    /// DRAIN read or the channel ended.
    draining: bool,
}

impl Server {
    fn new(mut source: Source, id: u32) -> io::Result<Server> {
        let poll = Poll::new()?;
        let who = match &mut source {
            Source::Channel(worker) => {
                let channel = worker.as_fd().as_raw_fd();
                poll.registry()
                    .register(&mut SourceFd(&channel), CHANNEL, Interest::READABLE)?;
                let who = Identity {
                    id,
                    listeners: worker.listeners().to_vec(),
                };
                say!(
                    "worker {} of {} started (pid {}, listeners: {})",
                    who.id,
                    worker.workers(),
                    std::process::id(),
                    who.listeners.join(", ")
                );
                who
            }
            Source::Listener(listener) => {
                poll.registry()
                    .register(listener, CHANNEL, Interest::READABLE)?;
                say!(
                    "worker {id} listening on {} (pid {})",
                    listener.local_addr()?,
                    std::process::id()
                );
                Identity {
                    id,
                    listeners: vec![DIRECT.to_owned()],
                }
            }
        };
        Ok(Server {
            poll,
            source,
            who,
            clients: HashMap::new(),
            next_token: 1,
            channel_done: false,
            draining: false,
        })
    }

    fn serve(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        self.take_connections()?;
        while !(self.channel_done && self.clients.is_empty()) {
            if let Err(e) = self.poll.poll(&mut events, None) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in &events {
                match event.token() {
                    CHANNEL => self.take_connections()?,
                    token => self.drive(token),
                }
            }
        }
        Ok(())
    }

    /// Takes every connection the source has ready (edge-triggered: until `WouldBlock`).
    fn take_connections(&mut self) -> io::Result<()> {
        match self.source {
            Source::Channel(_) => self.receive_connections(),
            Source::Listener(_) => {
                self.accept_connections();
                Ok(())
            }
        }
    }

    /// Accepts every connection waiting on the standalone listener and serves them.
    fn accept_connections(&mut self) {
        let Source::Listener(listener) = &self.source else {
            return;
        };
        let mut added = Vec::new();
        loop {
            match listener.accept() {
                Ok((stream, peer)) => added.push((stream, peer)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    // EMFILE and the like: the client waits in the backlog until the next
                    // connection's readiness brings the loop back here.
                    say!("worker {}: accept: {e}", self.who.id);
                    break;
                }
            }
        }
        for (stream, peer) in added {
            if let Some(token) = self.register(stream, 0, peer) {
                self.drive(token);
            }
        }
    }

    /// Takes every connection queued on the channel (edge-triggered: until `WouldBlock`),
    /// then serves the new ones, knowing by then whether a DRAIN followed them.
    fn receive_connections(&mut self) -> io::Result<()> {
        let mut errors = 0;
        let mut added = Vec::new();
        let mut drained = false;
        while !self.channel_done {
            let Source::Channel(worker) = &mut self.source else {
                return Ok(());
            };
            match worker.try_recv() {
                Ok(Some(conn)) => {
                    errors = 0;
                    added.extend(self.add(conn));
                }
                Ok(None) => {
                    self.channel_done = true;
                    let channel = worker.as_fd().as_raw_fd();
                    self.poll.registry().deregister(&mut SourceFd(&channel))?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drained = worker.draining();
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    say!("worker {}: {e}", self.who.id);
                    errors += 1;
                    if errors >= MAX_CHANNEL_ERRORS {
                        return Err(io::Error::other("too many consecutive channel errors"));
                    }
                }
            }
        }
        if !self.draining && (drained || self.channel_done) {
            self.start_draining();
        }
        for token in added {
            self.drive(token);
        }
        Ok(())
    }

    fn start_draining(&mut self) {
        self.draining = true;
        say!(
            "worker {} draining ({} connections open)",
            self.who.id,
            self.clients.len()
        );
        let idle: Vec<Token> = self
            .clients
            .iter()
            .filter(|(_, c)| c.is_idle())
            .map(|(&t, _)| t)
            .collect();
        for token in idle {
            self.close(token);
        }
    }

    /// Registers a connection from the channel; the caller drives it.
    fn add(&mut self, conn: Connection) -> Option<Token> {
        let Connection { stream, meta } = conn;
        stream.set_nonblocking(true).ok()?;
        self.register(TcpStream::from_std(stream), meta.listener, meta.peer)
    }

    /// Registers a non-blocking connection; the caller drives it.
    fn register(
        &mut self,
        mut stream: TcpStream,
        listener: u16,
        peer: SocketAddr,
    ) -> Option<Token> {
        let token = Token(self.next_token);
        self.next_token += 1;
        self.poll
            .registry()
            .register(&mut stream, token, Interest::READABLE)
            .ok()?;
        let client = Client::new(stream, listener, peer.ip().to_string());
        self.clients.insert(token, client);
        Some(token)
    }

    /// Runs a connection as far as it goes now, then closes it or updates its interest.
    fn drive(&mut self, token: Token) {
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        let keep =
            client.drive(&self.who, self.draining).is_ok() && !(self.draining && client.is_idle());
        if !keep {
            self.close(token);
            return;
        }
        let wants_write = !client.output.is_empty();
        if wants_write != client.writable {
            let interest = if wants_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if self
                .poll
                .registry()
                .reregister(&mut client.stream, token, interest)
                .is_err()
            {
                self.close(token);
                return;
            }
            client.writable = wants_write;
        }
    }

    fn close(&mut self, token: Token) {
        if let Some(mut client) = self.clients.remove(&token) {
            let _ = self.poll.registry().deregister(&mut client.stream);
            client.linger();
        }
    }
}

/// One chunk of a connection's output queue.
enum Out {
    /// Bytes, written from `at` on.
    Bytes { data: Vec<u8>, at: usize },
    /// This many more bytes of `x`.
    Xs(u64),
}

/// The body of a response.
enum Body {
    Text(String),
    Xs(u64),
}

/// Why a connection is to be closed now.
struct Done;

/// One client connection.
struct Client {
    stream: TcpStream,
    listener: u16,
    peer_ip: String,
    /// Received bytes not yet consumed.
    input: Vec<u8>,
    /// Bytes of `input` already searched for the end of the request head.
    scanned: usize,
    /// Request body bytes still to discard.
    body_left: u64,
    output: VecDeque<Out>,
    /// Close once `output` is flushed.
    close_after: bool,
    /// The client has shut down its sending side.
    read_closed: bool,
    /// Requests answered.
    served: u64,
    /// WRITABLE interest is registered.
    writable: bool,
}

/// A parsed request head.
struct Request<'a> {
    head_only: bool,
    target: &'a [u8],
    http10: bool,
    keep_alive: bool,
    close: bool,
    content_length: u64,
    transfer_encoding: bool,
}

impl Client {
    fn new(stream: TcpStream, listener: u16, peer_ip: String) -> Client {
        Client {
            stream,
            listener,
            peer_ip,
            input: Vec::new(),
            scanned: 0,
            body_left: 0,
            output: VecDeque::new(),
            close_after: false,
            read_closed: false,
            served: 0,
            writable: false,
        }
    }

    /// Nothing in flight: a keep-alive connection waiting for its next request.
    fn is_idle(&self) -> bool {
        self.served > 0 && self.output.is_empty() && self.input.is_empty() && self.body_left == 0
    }

    /// Writes, parses and reads until nothing moves. `Err` means close now.
    fn drive(&mut self, who: &Identity, draining: bool) -> Result<(), Done> {
        loop {
            let mut moved = self.flush()?;
            if self.output.is_empty() && self.close_after {
                return Err(Done);
            }
            moved |= self.process(who, draining);
            moved |= self.fill()?;
            if !moved {
                break;
            }
        }
        if self.read_closed && self.output.is_empty() {
            // No complete request can arrive any more.
            return Err(Done);
        }
        Ok(())
    }

    /// Writes queued output until done or `WouldBlock`. Returns whether anything was written.
    fn flush(&mut self) -> Result<bool, Done> {
        let mut moved = false;
        while let Some(front) = self.output.front_mut() {
            let written = match front {
                Out::Bytes { data, at } => {
                    write_some(&mut self.stream, data.get(*at..).unwrap_or(&[]))
                }
                Out::Xs(left) => {
                    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(XS.len());
                    write_some(&mut self.stream, &XS[..n])
                }
            };
            let n = match written {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(_) => return Err(Done),
            };
            moved = true;
            let finished = match front {
                Out::Bytes { data, at } => {
                    *at += n;
                    *at >= data.len()
                }
                Out::Xs(left) => {
                    *left = left.saturating_sub(n as u64);
                    *left == 0
                }
            };
            if finished {
                self.output.pop_front();
            }
        }
        Ok(moved)
    }

    /// Reads while there is room. Returns whether anything was read.
    fn fill(&mut self) -> Result<bool, Done> {
        let mut moved = false;
        let mut buf = [0u8; READ_CHUNK];
        while !self.read_closed && !self.close_after && self.input.len() <= MAX_HEAD {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.read_closed = true;
                    moved = true;
                }
                Ok(n) => {
                    self.input.extend_from_slice(buf.get(..n).unwrap_or(&[]));
                    moved = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(Done),
            }
        }
        Ok(moved)
    }

    /// Answers the complete requests in `input`, in order. Returns whether any was consumed.
    fn process(&mut self, who: &Identity, draining: bool) -> bool {
        let mut at = 0;
        while !self.close_after && self.output.len() < MAX_QUEUED {
            let rest = self.input.get(at..).unwrap_or(&[]);
            if self.body_left > 0 {
                let n = self.body_left.min(rest.len() as u64);
                self.body_left -= n;
                at += n as usize;
                if self.body_left > 0 {
                    break;
                }
                continue;
            }
            // Empty lines between requests are ignored (RFC 9112, 2.2).
            let blank = rest
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            if blank > 0 {
                at += blank;
                self.scanned = 0;
                continue;
            }
            let Some(end) = find_head_end(rest, self.scanned) else {
                if rest.len() > MAX_HEAD {
                    self.error(who, "431 Request Header Fields Too Large");
                } else {
                    self.scanned = rest.len().saturating_sub(3);
                }
                break;
            };
            self.scanned = 0;
            if end > MAX_HEAD {
                self.error(who, "431 Request Header Fields Too Large");
                break;
            }
            let head = rest.get(..end).unwrap_or(&[]);
            match parse_head(head) {
                Some(req) => {
                    let (response, close) = answer(&req, who, self, draining);
                    self.body_left = req.content_length;
                    self.close_after |= close;
                    self.served += 1;
                    self.queue(response);
                }
                None => self.error(who, "400 Bad Request"),
            }
            at += end;
        }
        if at > 0 {
            self.input.drain(..at.min(self.input.len()));
        }
        at > 0
    }

    /// Queues an error response and closes after it.
    fn error(&mut self, who: &Identity, status: &str) {
        let response = Response {
            status,
            body: Body::Text(format!("{status}\n")),
            connection: Some("close"),
            head_only: false,
        };
        let out = response.render(who, self);
        self.close_after = true;
        self.queue(out);
    }

    fn queue(&mut self, (head, tail): (Vec<u8>, Option<u64>)) {
        self.output.push_back(Out::Bytes { data: head, at: 0 });
        if let Some(n) = tail.filter(|&n| n > 0) {
            self.output.push_back(Out::Xs(n));
        }
    }

    /// Shuts down sending, discards what the client already sent (closing with unread
    /// input would reset the connection and could destroy the response in flight), closes.
    fn linger(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
        let mut buf = [0u8; READ_CHUNK];
        for _ in 0..16 {
            match self.stream.read(&mut buf) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
    }
}

/// A response to render.
struct Response<'a> {
    status: &'a str,
    body: Body,
    /// The `Connection` header's value, if one is sent.
    connection: Option<&'static str>,
    head_only: bool,
}

impl Response<'_> {
    /// The bytes to send, and the count of `x` to stream after them.
    fn render(self, who: &Identity, client: &Client) -> (Vec<u8>, Option<u64>) {
        let listener = who
            .listeners
            .get(usize::from(client.listener))
            .map_or("?", String::as_str);
        let length = match &self.body {
            Body::Text(text) => text.len() as u64,
            Body::Xs(n) => *n,
        };
        let mut out = format!(
            "HTTP/1.1 {}\r\nX-Worker: {}\r\nX-Listener: {listener}\r\nX-Peer: {}\r\n\
             Content-Type: text/plain\r\nContent-Length: {length}\r\n",
            self.status, who.id, client.peer_ip
        );
        if let Some(value) = self.connection {
            out.push_str("Connection: ");
            out.push_str(value);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        match self.body {
            _ if self.head_only => (out.into_bytes(), None),
            Body::Text(text) => {
                out.push_str(&text);
                (out.into_bytes(), None)
            }
            Body::Xs(n) => (out.into_bytes(), Some(n)),
        }
    }
}

/// Answers one well-formed request: the response, and whether to close after it.
fn answer(
    req: &Request<'_>,
    who: &Identity,
    client: &Client,
    draining: bool,
) -> ((Vec<u8>, Option<u64>), bool) {
    if req.transfer_encoding {
        let response = Response {
            status: "501 Not Implemented",
            body: Body::Text("chunked request bodies are not supported\n".to_owned()),
            connection: Some("close"),
            head_only: req.head_only,
        };
        return (response.render(who, client), true);
    }
    let keep = !draining && !req.close && (!req.http10 || req.keep_alive);
    let connection = match (keep, req.http10) {
        (false, _) => Some("close"),
        (true, true) => Some("keep-alive"),
        (true, false) => None,
    };
    let path = req.target.split(|&b| b == b'?').next().unwrap_or(&[]);
    let (status, body) = match path.strip_prefix(b"/bytes/") {
        Some(count) => match parse_count(count) {
            Some(n) => ("200 OK", Body::Xs(n)),
            None => (
                "400 Bad Request",
                Body::Text(format!("byte count must be 0..={MAX_BYTES}\n")),
            ),
        },
        None => ("200 OK", Body::Text(format!("worker: {}\n", who.id))),
    };
    let response = Response {
        status,
        body,
        connection,
        head_only: req.head_only,
    };
    (response.render(who, client), !keep)
}

/// `n` of `/bytes/<n>`: decimal digits, at most [`MAX_BYTES`].
fn parse_count(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
    (n <= MAX_BYTES).then_some(n)
}

/// The length of the head (through its blank line) if `buf` holds a complete one. Searching
/// resumes at `from`.
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.min(buf.len());
    buf.get(start..)?
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| start + i + 4)
}

/// Parses a complete head; `None` if it is malformed.
fn parse_head(head: &[u8]) -> Option<Request<'_>> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let mut parts = lines.next()?.split(|&b| b == b' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || method.is_empty() || target.is_empty() {
        return None;
    }
    if !method.iter().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    let http10 = match version {
        b"HTTP/1.1" => false,
        b"HTTP/1.0" => true,
        _ => return None,
    };
    let mut req = Request {
        head_only: method == b"HEAD",
        target,
        http10,
        keep_alive: false,
        close: false,
        content_length: 0,
        transfer_encoding: false,
    };
    let mut length_seen = false;
    for line in lines.filter(|l| !l.is_empty()) {
        if line.first().is_some_and(|b| b.is_ascii_whitespace()) {
            return None; // obsolete line folding
        }
        let colon = line.iter().position(|&b| b == b':')?;
        let (name, value) = (line.get(..colon)?, trim(line.get(colon + 1..)?));
        if name.is_empty()
            || name
                .iter()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return None;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_decimal(value)?;
            if length_seen && n != req.content_length {
                return None;
            }
            length_seen = true;
            req.content_length = n;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            req.transfer_encoding = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',').map(trim) {
                req.close |= token.eq_ignore_ascii_case(b"close");
                req.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    Some(req)
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

fn trim(bytes: &[u8]) -> &[u8] {
    let is_space = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes
        .iter()
        .position(|b| !is_space(b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(start, |i| i + 1);
    bytes.get(start..end).unwrap_or(&[])
}

/// One `write`: `Some(n)` written, `None` on `WouldBlock`.
fn write_some(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<Option<usize>> {
    loop {
        return match stream.write(bytes) {
            Ok(0) if !bytes.is_empty() => Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(e),
        };
    }
}
