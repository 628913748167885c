//! `hello_worker`: an HTTP/1.1 worker for stickyd, built on `stickyd-worker`.
//!
//! Every request gets `200 OK` with the headers `X-Worker: <id>`, `X-Listener: <listener
//! name>` and `X-Peer: <client IP>`, and the body `worker: <id>\n`; `GET /bytes/<n>` (n up to
//! 64 MiB) gets `n` bytes of `x` instead. A connection stays open for the next request unless
//! the client sends `Connection: close` (HTTP/1.0 requests are answered and closed).
//!
//! One thread serves every connection: a mio event loop over the SDK's channel, which hands
//! out the connections, and the connections themselves. Once the master drains the worker, it
//! answers the requests already sent with `Connection: close`, closes idle connections, and
//! exits when none is left. If the master refuses it, it exits 1 with the reason.
//!
//! On the listeners the master names for `--rehash-per-request`, a kept-alive connection goes
//! back to the master at each request boundary: once a response is written and nothing of the
//! next request has been read, the worker peeks, and when the next request has begun it hands
//! the connection back (`Worker::hand_back`) for the master to route by that request's key.
//! There it reads one request at a time (peeked first, then read up to its end), so requests
//! pipelined behind it stay in the socket and each goes to its own key's worker, in order.
//! A request with a chunked body ends the hand-backs: its connection is served here.
//!
//! ```sh
//! cargo build --release -p stickyd-worker --example hello_worker
//! stickyd --workers 4 -- target/release/examples/hello_worker
//! ```
//!
//! The `stickyd` binary compiles this file in as its built-in worker and calls `run`; the
//! benchmarks' SO_REUSEPORT baseline (`benches/e2e/reuseport_worker.rs`) serves the
//! connections it accepts itself with `Conn`. Both build it with `stickyd_worker`, `mio` and
//! std only.

use std::collections::HashMap;
use std::fmt::Display;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown};
use std::os::fd::{AsFd, AsRawFd};
use std::process::ExitCode;

use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use stickyd_worker::http::{RequestEnd, request_end};
use stickyd_worker::{Connection, Worker};

/// The channel's token; connections get 1, 2, ...
const CHANNEL: Token = Token(0);
/// Largest request head (request line and headers).
const MAX_HEAD: usize = 64 * 1024;
/// Channel errors in a row after which the worker gives up.
const MAX_CHANNEL_ERRORS: u32 = 64;
/// Largest `/bytes/<n>`.
const MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Every `/bytes/<n>` body is written from this.
static XS: [u8; 64 * 1024] = [b'x'; 64 * 1024];

/// Joins the master named by the environment and serves until drained.
pub fn run() -> ExitCode {
    let worker = match Worker::from_env() {
        Ok(worker) => worker,
        Err(e) => {
            log(e);
            return ExitCode::FAILURE;
        }
    };
    let id = worker.id();
    log(format_args!(
        "worker {id} of {} started (pid {}, listeners: {})",
        worker.workers(),
        std::process::id(),
        worker.listeners().join(", ")
    ));
    match serve(worker) {
        Ok(()) => {
            log(format_args!("worker {id} exiting"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            log(format_args!("worker {id}: {e}"));
            ExitCode::FAILURE
        }
    }
}

#[allow(dead_code)] // stickyd compiles this file in as a module and calls `run` itself
fn main() -> ExitCode {
    run()
}

/// The event loop: runs until the channel has ended and the last connection is closed.
fn serve(mut worker: Worker) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let channel = worker.as_fd().as_raw_fd();
    poll.registry()
        .register(&mut SourceFd(&channel), CHANNEL, Interest::READABLE)?;
    let mut events = Events::with_capacity(256);
    let mut conns: HashMap<Token, Conn> = HashMap::new();
    let mut next_token = 1;
    let mut channel_open = true;
    let mut draining = false;
    while channel_open || !conns.is_empty() {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in &events {
            let token = event.token();
            if token != CHANNEL {
                if let Some(conn) = conns.get_mut(&token) {
                    conn.hand_back = conn.listener.is_some_and(|l| worker.rehash_per_request(l));
                    if !conn.serve(draining) {
                        done(&mut conns, token, &mut worker, poll.registry(), draining);
                    }
                }
                continue;
            }
            // Edge-triggered: take every connection queued, until the channel would block.
            let mut errors_in_a_row = 0;
            loop {
                match worker.try_recv() {
                    Ok(Some(conn)) => {
                        errors_in_a_row = 0;
                        let token = Token(next_token);
                        next_token += 1;
                        if let Err(e) = add(&mut conns, token, conn, &worker, poll.registry()) {
                            log(format_args!("worker {}: {e}", worker.id()));
                        }
                    }
                    // The master has closed the channel: no more connections.
                    Ok(None) => {
                        channel_open = false;
                        poll.registry().deregister(&mut SourceFd(&channel))?;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // One message or one connection went wrong; the next ones are fine, unless
                    // the channel itself is broken.
                    Err(e) => {
                        log(format_args!("worker {}: {e}", worker.id()));
                        errors_in_a_row += 1;
                        if errors_in_a_row == MAX_CHANNEL_ERRORS {
                            return Err(io::Error::other("too many channel errors in a row"));
                        }
                    }
                }
            }
        }
        if !draining && (worker.draining() || !channel_open) {
            draining = true;
            log(format_args!(
                "worker {} draining ({} connections open)",
                worker.id(),
                conns.len()
            ));
        }
        if draining {
            let idle: Vec<Token> = conns
                .iter()
                .filter(|(_, conn)| conn.is_idle())
                .map(|(&token, _)| token)
                .collect();
            for token in idle {
                close(&mut conns, token, poll.registry());
            }
        }
    }
    Ok(())
}

/// Registers a connection from the channel. It is served from the next poll on: readiness
/// is reported for the bytes that arrived before the registration too.
fn add(
    conns: &mut HashMap<Token, Conn>,
    token: Token,
    conn: Connection,
    worker: &Worker,
    registry: &Registry,
) -> io::Result<()> {
    conn.stream.set_nonblocking(true)?;
    let mut stream = TcpStream::from_std(conn.stream);
    registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
    let listener = worker.listener_name(conn.meta.listener).unwrap_or("?");
    let peer = conn.meta.peer.ip();
    let mut served = Conn::new(stream, worker.id(), listener, peer);
    served.listener = Some(conn.meta.listener);
    conns.insert(token, served);
    Ok(())
}

/// A connection `serve` is done with: handed back to the master if it stopped for that (the
/// next request has begun, none of it read), else closed. If the hand-back fails, this worker
/// serves the connection itself from then on.
fn done(
    conns: &mut HashMap<Token, Conn>,
    token: Token,
    worker: &mut Worker,
    registry: &Registry,
    draining: bool,
) {
    let Some(mut conn) = conns.remove(&token) else {
        return;
    };
    if let (true, Some(listener)) = (conn.next_waiting, conn.listener) {
        let handed = worker
            .hand_back(&conn.stream, listener)
            .map_err(io::Error::from);
        match handed {
            Ok(()) => {
                // The master has the connection; this copy is closed when `conn` is dropped.
                let _ = registry.deregister(&mut conn.stream);
                return;
            }
            Err(e) => {
                log(format_args!("worker {}: {e}; serving it here", worker.id()));
                conn.listener = None;
                conn.hand_back = false;
                conn.next_waiting = false;
                // The readiness that brought the next request was consumed: serve it now
                // (and close after it if the refusal was the drain, read in this same round).
                if conn.serve(draining || worker.draining()) {
                    conns.insert(token, conn);
                    return;
                }
            }
        }
    }
    conn.close(registry);
}

fn close(conns: &mut HashMap<Token, Conn>, token: Token, registry: &Registry) {
    if let Some(conn) = conns.remove(&token) {
        conn.close(registry);
    }
}

/// Writes one line to stderr in one write, so that the lines of the master and of the other
/// workers on the same stderr never cut into it (`eprintln!` writes it piece by piece).
fn log(message: impl Display) {
    let line = format!("hello_worker: {message}\n");
    let _ = io::stderr().write_all(line.as_bytes());
}

/// One client connection: reads its requests and answers them, one at a time.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    id: u32,
    /// `X-Worker`, `X-Listener` and `X-Peer`: the same in every response on the connection.
    headers: String,
    /// Bytes read and not consumed yet.
    input: Vec<u8>,
    /// How far `input` has been searched for the end of a request head.
    searched: usize,
    /// Bytes of the last request's body still to skip.
    body_left: u64,
    /// The response being written: `out[written..]`, then `xs` bytes of `x`.
    out: Vec<u8>,
    written: usize,
    xs: u64,
    /// Close once the response is written.
    close_after: bool,
    /// Requests answered so far.
    answered: u64,
    /// The listener index, for a connection from the master (which may ask for it back).
    listener: Option<u16>,
    /// Hand the connection back at a request boundary (set by the worker's loop when the
    /// master asks for it on this listener): `serve` stops once the next request has begun,
    /// without reading it.
    hand_back: bool,
    /// `serve` stopped for a hand-back: the next request is in the socket, none of it read.
    next_waiting: bool,
}

impl Conn {
    /// A connection of worker `id`, accepted on `listener`, from `peer`. Register its stream
    /// for readable and writable events and [`serve`](Conn::serve) it on each.
    pub fn new(stream: TcpStream, id: u32, listener: &str, peer: IpAddr) -> Conn {
        Conn {
            stream,
            id,
            headers: format!("X-Worker: {id}\r\nX-Listener: {listener}\r\nX-Peer: {peer}\r\n"),
            input: Vec::new(),
            searched: 0,
            body_left: 0,
            out: Vec::new(),
            written: 0,
            xs: 0,
            close_after: false,
            answered: 0,
            listener: None,
            hand_back: false,
            next_waiting: false,
        }
    }

    /// Writes, answers and reads until the socket would block. Returns false when the
    /// connection is done: then [`close`](Conn::close) it.
    pub fn serve(&mut self, draining: bool) -> bool {
        self.try_serve(draining).unwrap_or(false)
    }

    fn try_serve(&mut self, draining: bool) -> io::Result<bool> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            if !self.write()? {
                return Ok(true); // the client reads slowly: wait until it is writable
            }
            if self.close_after {
                return Ok(false);
            }
            if self.answer(draining) {
                continue;
            }
            if draining && self.is_idle() {
                return Ok(false);
            }
            if self.hand_back && self.is_idle() {
                // Look at the next request without reading it: it goes back to the master.
                match self.stream.peek(&mut buf[..1]) {
                    Ok(0) => return Ok(false), // the client has closed
                    Ok(_) => {
                        self.next_waiting = true;
                        return Ok(false);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
            let read = if self.hand_back {
                self.read_this_request(&mut buf)
            } else {
                self.stream.read(&mut buf)
            };
            match read {
                // The client has finished sending: no request will complete any more.
                Ok(0) => return Ok(false),
                Ok(n) => self.input.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads what the socket holds of the request in progress, and nothing of the next one:
    /// on a connection handed back at request boundaries, a request pipelined behind this one
    /// stays in the socket, for the worker its key belongs to. Peeks, finds where the request
    /// ends ([`request_end`]), and reads up to there. A request whose body's end the head does
    /// not tell (chunked) cannot be cut from the next: then the connection stays here, and
    /// everything is read.
    fn read_this_request(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let peeked = self.stream.peek(buf)?;
        if peeked == 0 {
            return Ok(0);
        }
        let wanted = if self.body_left > 0 {
            // The rest of a body whose head has been answered.
            self.body_left.min(peeked as u64) as usize
        } else {
            // `input` holds the start of a head, if anything (`answer` takes whole heads).
            let end = if self.input.is_empty() {
                request_end(&buf[..peeked])
            } else {
                let mut head = self.input.clone();
                head.extend_from_slice(&buf[..peeked]);
                request_end(&head)
            };
            match end {
                // All of it belongs to this request's head.
                RequestEnd::Incomplete => peeked,
                RequestEnd::At(end) => {
                    let rest = end.saturating_sub(self.input.len() as u64);
                    usize::try_from(rest).map_or(peeked, |rest| rest.min(peeked))
                }
                RequestEnd::Unknown => 0,
            }
        };
        if wanted == 0 {
            // No boundary to stop at: this worker serves the connection to its end.
            self.listener = None;
            self.hand_back = false;
            return self.stream.read(buf);
        }
        self.stream.read(&mut buf[..wanted])
    }

    /// Nothing in progress: a kept-alive connection waiting for its next request.
    pub fn is_idle(&self) -> bool {
        self.answered > 0 && self.input.is_empty() && self.body_left == 0 && self.is_written()
    }

    /// Closes the connection. What the client sent and was not read is read first: closing a
    /// socket with unread bytes resets the connection, and the reset can destroy the end of
    /// the response still on its way.
    pub fn close(mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.stream);
        let _ = self.stream.shutdown(Shutdown::Write);
        let mut buf = [0u8; 16 * 1024];
        for _ in 0..16 {
            if !matches!(self.stream.read(&mut buf), Ok(n) if n > 0) {
                break;
            }
        }
    }

    fn is_written(&self) -> bool {
        self.written == self.out.len() && self.xs == 0
    }

    /// Writes the response in progress. Returns whether all of it is written.
    fn write(&mut self) -> io::Result<bool> {
        while !self.is_written() {
            let chunk = match self.out.get(self.written..) {
                Some(rest) if !rest.is_empty() => rest,
                _ => &XS[..self.xs.min(XS.len() as u64) as usize],
            };
            match self.stream.write(chunk) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) if self.written < self.out.len() => self.written += n,
                Ok(n) => self.xs -= n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Answers the next request if all of its head has arrived. Returns whether it did.
    fn answer(&mut self, draining: bool) -> bool {
        // First, what is left of the last request's body.
        let skip = self.body_left.min(self.input.len() as u64) as usize;
        self.input.drain(..skip);
        self.body_left -= skip as u64;
        // Blank lines before a request are allowed (RFC 9112, section 2.2).
        let blank = self
            .input
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        self.input.drain(..blank);
        if self.body_left > 0 || self.input.is_empty() {
            return false;
        }
        // Searched again from the last 3 bytes searched: a `\r\n\r\n` may straddle them.
        let from = self.searched.saturating_sub(3).min(self.input.len());
        let found = self.input[from..].windows(4).position(|w| w == b"\r\n\r\n");
        let end = match found.map(|at| from + at + 4) {
            Some(end) if end <= MAX_HEAD => end,
            _ if self.input.len() > MAX_HEAD => {
                self.respond(
                    "431 Request Header Fields Too Large",
                    "too large\n",
                    0,
                    false,
                );
                return true;
            }
            _ => {
                self.searched = self.input.len();
                return false;
            }
        };
        match Request::parse(&self.input[..end]) {
            Some(request) => {
                self.body_left = request.content_length;
                let keep_alive = request.keep_alive && !draining;
                let (status, text, xs) = match request.path.strip_prefix(b"/bytes/") {
                    None => ("200 OK", format!("worker: {}\n", self.id), 0),
                    Some(n) => match decimal(n).filter(|&n| n <= MAX_BYTES) {
                        Some(n) => ("200 OK", String::new(), n),
                        None => ("400 Bad Request", format!("n must be 0..={MAX_BYTES}\n"), 0),
                    },
                };
                let head_only = request.head;
                self.respond(status, &text, xs, keep_alive);
                if head_only {
                    // The same head, without the body.
                    self.out.truncate(self.out.len() - text.len());
                    self.xs = 0;
                }
            }
            None => self.respond("400 Bad Request", "bad request\n", 0, false),
        }
        self.input.drain(..end);
        self.searched = 0;
        true
    }

    /// Makes a response the one in progress: `text`, then `xs` bytes of `x`.
    fn respond(&mut self, status: &str, text: &str, xs: u64, keep_alive: bool) {
        let length = text.len() as u64 + xs;
        let connection = if keep_alive {
            ""
        } else {
            "Connection: close\r\n"
        };
        self.out = format!(
            "HTTP/1.1 {status}\r\n{}Content-Type: text/plain\r\nContent-Length: {length}\r\n\
             {connection}\r\n{text}",
            self.headers
        )
        .into_bytes();
        self.written = 0;
        self.xs = xs;
        self.close_after = !keep_alive;
        self.answered += 1;
    }
}

/// What the answer depends on in a request head.
struct Request<'a> {
    /// The target without its query.
    path: &'a [u8],
    /// `HEAD`: the response has no body.
    head: bool,
    keep_alive: bool,
    content_length: u64,
}

impl Request<'_> {
    /// Parses a request head (through its blank line); `None` if it is malformed.
    fn parse(head: &[u8]) -> Option<Request<'_>> {
        let mut lines = head
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let mut words = lines.next()?.split(|&b| b == b' ');
        let (method, target, version) = (words.next()?, words.next()?, words.next()?);
        if words.next().is_some() || method.is_empty() || target.is_empty() {
            return None;
        }
        let mut request = Request {
            path: target.split(|&b| b == b'?').next()?,
            head: method == b"HEAD",
            keep_alive: match version {
                b"HTTP/1.1" => true,
                b"HTTP/1.0" => false,
                _ => return None,
            },
            content_length: 0,
        };
        for line in lines.filter(|l| !l.is_empty()) {
            let colon = line.iter().position(|&b| b == b':')?;
            let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
            if name.eq_ignore_ascii_case(b"connection") {
                let mut options = value.split(|&b| b == b',').map(trim);
                if options.any(|o| o.eq_ignore_ascii_case(b"close")) {
                    request.keep_alive = false;
                }
            } else if name.eq_ignore_ascii_case(b"content-length") {
                request.content_length = decimal(value)?;
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                // A body whose end this worker does not look for: answer, then close.
                request.keep_alive = false;
            }
        }
        Some(request)
    }
}

/// A decimal number of digits only (no sign, no spaces).
fn decimal(digits: &[u8]) -> Option<u64> {
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// `bytes` without the spaces and tabs around it.
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
    &bytes[start..end]
}
