//! `hyper_worker`: the `hello_worker` answers, served by hyper on tokio through the SDK's
//! async receive ([`AsyncWorker`], feature `tokio`).
//!
//! One current-thread runtime serves every connection, one task each. Every request is
//! answered, once its body has been read, `200 OK` with `X-Worker`, `X-Listener` and `X-Peer`
//! headers and the body `worker: <id>\n`; `GET /bytes/<n>` answers `n` bytes of `x` (up to 64
//! MiB), streamed from a static chunk. hyper honours keep-alive and `Connection: close`. Once
//! the master drains it, it takes no more connections, lets the requests in progress finish
//! (hyper's graceful shutdown) and closes idle keep-alive connections, then exits 0. If the
//! master refuses it, it exits 1 with the reason.
//!
//! On the listeners the master names for `--rehash-per-request`, a kept-alive connection goes
//! back to the master at each request boundary, for the master to route by the key of its
//! next request. hyper serves one request per `http1::Connection` there: a [`OneRequest`]
//! gives it the bytes of that request only (peeked first, then read no further than
//! [`request_end`] says), so requests pipelined behind it stay in the socket, and then end of
//! file. Once hyper has answered and asked for the next request, the task takes the stream
//! back from hyper, unshut, and peeks: when the next request has begun, the main loop (which
//! owns the [`AsyncWorker`]) hands the connection back ([`AsyncWorker::hand_back`]). If the
//! master does not take it because the worker is draining, that request is answered here and
//! the connection closed after it (its next request then goes to its key's worker, through a
//! new connection); if it refuses for another reason, the connection is served here to its end.
//! A request whose body has no `Content-Length` (a chunked body) ends the hand-backs: hyper
//! serves the rest of that connection here.
//!
//! ```sh
//! cargo build --release -p stickyd-worker --features tokio --example hyper_worker
//! stickyd --workers 2 --key header:x-user -- target/release/examples/hyper_worker
//! ```

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use stickyd_worker::http::{RequestEnd, request_end};
use stickyd_worker::{AsyncConnection, AsyncWorker};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};

/// Writes one line to stderr in a single write, so that lines of the master and the other
/// workers sharing the same stderr never cut into it (`eprintln!` writes piece by piece).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let line = format!("hyper_worker: {}\n", format_args!($($arg)*));
        let _ = std::io::stderr().write_all(line.as_bytes());
    }};
}

/// Largest `/bytes/<n>`.
const MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Consecutive channel errors after which the worker gives up.
const MAX_CHANNEL_ERRORS: u32 = 64;
/// The source of every `/bytes/<n>` body.
static XS: [u8; 64 * 1024] = [b'x'; 64 * 1024];
/// How long a kept-alive connection at a request boundary waits for its next request: hyper's
/// default header read timeout, which bounds the same wait when hyper serves a whole
/// connection.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most bytes a [`OneRequest`] peeks or reads at once.
const CHUNK: usize = 64 * 1024;

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(serve()),
        Err(e) => {
            say!("starting the tokio runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Joins the master, serves until drained, then waits for the connections in progress.
async fn serve() -> ExitCode {
    let mut worker = match AsyncWorker::from_env() {
        Ok(worker) => worker,
        Err(e) => {
            say!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let id = worker.worker().id();
    let listeners: Arc<[String]> = worker.worker().listeners().into();
    say!(
        "worker {id} of {} started (pid {}, listeners: {})",
        worker.worker().workers(),
        std::process::id(),
        listeners.join(", ")
    );
    // Turns true once the worker drains; each connection task holds a receiver.
    let (drain, _) = watch::channel(false);
    let (hand_backs_tx, mut hand_backs) = mpsc::unbounded_channel();
    let mut errors = 0;
    // Ends after DRAIN, once the master has closed its side (or if it went away).
    loop {
        tokio::select! {
            conn = worker.recv() => match conn {
                None => break,
                Some(Ok(conn)) => {
                    errors = 0;
                    spawn_connection(conn, &worker, &listeners, &drain, &hand_backs_tx);
                }
                Some(Err(e)) => {
                    say!("worker {id}: {e}");
                    errors += 1;
                    if errors >= MAX_CHANNEL_ERRORS {
                        say!("worker {id}: too many consecutive channel errors");
                        return ExitCode::FAILURE;
                    }
                }
            },
            Some(back) = hand_backs.recv() => hand_back(&mut worker, back),
        }
    }
    say!(
        "worker {id} draining ({} connections open)",
        drain.receiver_count()
    );
    drain.send_replace(true);
    // The connections finish their requests in flight. The master takes no connection back
    // now: one that still comes to be handed back is refused and served here.
    loop {
        tokio::select! {
            () = drain.closed() => break,
            Some(back) = hand_backs.recv() => hand_back(&mut worker, back),
        }
    }
    say!("worker {id} exiting");
    ExitCode::SUCCESS
}

/// Serves `conn` on a task of its own, which holds a receiver of `drain` until it ends.
fn spawn_connection(
    conn: AsyncConnection,
    worker: &AsyncWorker,
    listeners: &[String],
    drain: &watch::Sender<bool>,
    hand_backs: &mpsc::UnboundedSender<HandBack>,
) {
    let listener = conn.meta.listener;
    let hand_back_on = worker.rehash_per_request(listener).then_some(listener);
    let origin = origin(&conn, worker.worker().id(), listeners);
    let drain = Drain(drain.subscribe());
    let task = connection(conn.stream, hand_back_on, origin, drain, hand_backs.clone());
    tokio::spawn(task);
}

/// A connection whose task asks the main loop, which owns the [`AsyncWorker`], to give it
/// back to the master: at a request boundary, the next request begun and none of it read.
struct HandBack {
    stream: TcpStream,
    listener: u16,
    /// Takes the stream back to the task if the master does not take it (with whether the
    /// worker drains); dropped if it does.
    refused: oneshot::Sender<(TcpStream, bool)>,
}

/// Hands `back` to the master, or returns it to its task to serve here.
fn hand_back(worker: &mut AsyncWorker, back: HandBack) {
    let HandBack {
        stream,
        listener,
        refused,
    } = back;
    if let Err(e) = worker.hand_back(stream, listener) {
        let draining = worker.worker().draining();
        if !draining {
            say!("worker {}: {e}; serving it here", worker.worker().id());
        }
        // If the task is gone, the stream is dropped: closed.
        let _ = refused.send((e.into_conn(), draining));
    }
}

/// The drain as a connection task sees it. The worker exits once every task has dropped
/// its `Drain`.
struct Drain(watch::Receiver<bool>);

impl Drain {
    /// Returns once the worker drains (at once if it already does).
    async fn started(&mut self) {
        // An error means the main loop is gone: as good as drained.
        let _ = self.0.wait_for(|&draining| draining).await;
    }
}

/// Serves one connection to its end, or until it goes back to the master. `hand_back_on`:
/// the listener it came from, if the master wants its connections back at each request
/// boundary.
async fn connection(
    stream: TcpStream,
    hand_back_on: Option<u16>,
    origin: Arc<Origin>,
    mut drain: Drain,
    hand_backs: mpsc::UnboundedSender<HandBack>,
) {
    let mut io = match hand_back_on {
        Some(_) => OneRequest::new(stream),
        None => OneRequest::whole(stream),
    };
    loop {
        let stream = match serve_hyper(io, &origin, &mut drain).await {
            Ended::Boundary(stream) => stream,
            Ended::Leftover(rest) => {
                io = rest;
                continue;
            }
            Ended::Over => return,
        };
        // Only a one-request IO, made for `hand_back_on`, stops at a boundary.
        let Some(listener) = hand_back_on else {
            return close(stream).await;
        };
        if !next_request(&stream, &mut drain).await {
            return close(stream).await;
        }
        let (refused_tx, refused) = oneshot::channel();
        let back = HandBack {
            stream,
            listener,
            refused: refused_tx,
        };
        let (stream, draining) = match hand_backs.send(back) {
            Ok(()) => match refused.await {
                Ok(refusal) => refusal,
                // The master has it.
                Err(_) => return,
            },
            Err(mpsc::error::SendError(back)) => (back.stream, false),
        };
        if draining {
            // The drain came first: this request is answered here (nothing else can take it
            // now), and the connection closed after it, so that the next goes by its key.
            return last_request(OneRequest::new(stream), &origin, &mut drain).await;
        }
        // Not handed back: served here to its end, the next request first.
        io = OneRequest::whole(stream);
    }
}

/// Serves the one request `io` stops at, then closes the connection.
async fn last_request(io: OneRequest, origin: &Arc<Origin>, drain: &mut Drain) {
    match serve_hyper(io, origin, drain).await {
        Ended::Boundary(stream) => close(stream).await,
        // Bytes hyper read beyond it (it should not): served to the end.
        Ended::Leftover(rest) => {
            let _ = serve_hyper(rest, origin, drain).await;
        }
        Ended::Over => {}
    }
}

/// How a hyper connection over a [`OneRequest`] ended.
enum Ended {
    /// At a request boundary of a kept-alive connection: the response written, the next
    /// request not begun or still unread in the socket.
    Boundary(TcpStream),
    /// hyper stopped with bytes read and not served (it should not happen): the connection
    /// is served here to its end, those bytes first.
    Leftover(OneRequest),
    /// The connection is over: the client closed, hyper answered `Connection: close` (the
    /// stream is shut down), or it failed.
    Over,
}

/// Serves `io` with hyper until hyper ends the connection. Once the worker drains, hyper
/// finishes the request in flight and closes (its graceful shutdown; an idle connection
/// closes at once).
async fn serve_hyper(io: OneRequest, origin: &Arc<Origin>, drain: &mut Drain) -> Ended {
    let one_request = io.is_limited();
    let mut conn = http1::Builder::new()
        // Bounds the wait for a request head (hyper's default, 30 s, needs a timer).
        .timer(TokioTimer::new())
        // A `OneRequest`'s end of file while the response is pending is not the client
        // leaving: hyper still answers, and reads end of file again once idle.
        .half_close(one_request)
        .serve_connection(TokioIo::new(io), Hello(Arc::clone(origin)));
    let mut shutting_down = false;
    // Without shutdown: hyper gives the stream back as it is, for the next request.
    let ended = loop {
        tokio::select! {
            ended = poll_fn(|cx| conn.poll_without_shutdown(cx)) => break ended,
            () = drain.started(), if !shutting_down => {}
        }
        Pin::new(&mut conn).graceful_shutdown();
        shutting_down = true;
    };
    let http1::Parts { io, read_buf, .. } = conn.into_parts();
    let io = io.into_inner();
    if ended.is_err() {
        // A reset, a timeout, a malformed request (hyper has answered it): dropped, closed.
        return Ended::Over;
    }
    if !read_buf.is_empty() {
        return Ended::Leftover(io.replaying(read_buf));
    }
    if io.at_boundary() {
        return Ended::Boundary(io.stream);
    }
    close(io.stream).await;
    Ended::Over
}

/// Waits on a kept-alive connection at a request boundary for the next request: true once
/// its first byte is in the socket (peeked, not read). False if the client closes, sends
/// nothing for [`IDLE_TIMEOUT`], or the worker drains (idle connections close then, as under
/// hyper's graceful shutdown).
async fn next_request(stream: &TcpStream, drain: &mut Drain) -> bool {
    let mut first = [0u8; 1];
    tokio::select! {
        biased;
        () = drain.started() => false,
        peeked = tokio::time::timeout(IDLE_TIMEOUT, stream.peek(&mut first)) => {
            matches!(peeked, Ok(Ok(1)))
        }
    }
}

/// Ends a connection as hyper does: shuts its write side down, then closes it.
async fn close(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
}

/// A connection's stream as one hyper connection sees it: the bytes of one request, then end
/// of file.
///
/// hyper reads whatever the socket holds: on the stream itself it would take in requests
/// pipelined behind the one it serves, and the connection could not go back to the master
/// with the next request unread. This peeks, finds where the request ends with
/// [`request_end`], and reads no further; after that, reads answer end of file. With
/// `half_close(true)` hyper does not take that end of file for the client leaving while the
/// response is pending: it answers, goes idle, asks for the next request, reads end of file
/// and ends the connection cleanly, and `poll_without_shutdown` leaves the stream open. That
/// ask marks a request boundary of a kept-alive connection: after a response hyper reads
/// again only to wait for the next request, never when it means to close (`Connection:
/// close`, HTTP/1.0 without keep-alive, a body left unread).
///
/// When the request's end cannot be known from its head (a chunked body), or once the
/// connection is to be served here to its end, it passes the stream through whole.
struct OneRequest {
    stream: TcpStream,
    limit: Limit,
    /// The bytes of the request head delivered so far, while its end is not in sight.
    head: Vec<u8>,
    /// Bytes hyper read and did not serve, delivered before the stream's ([`Limit::Off`]).
    replay: Bytes,
}

/// How far a [`OneRequest`] lets hyper read.
enum Limit {
    /// In the request head: peek, and read no further than the request's end.
    Head,
    /// The head is delivered; this many bytes of the body are still to deliver.
    Body(u64),
    /// The request is delivered: reads answer end of file. `asked`: hyper read again since,
    /// waiting for the next request.
    Done { asked: bool },
    /// No limit: the stream passes through.
    Off,
}

impl OneRequest {
    /// The stream, limited to its next request.
    fn new(stream: TcpStream) -> OneRequest {
        OneRequest {
            stream,
            limit: Limit::Head,
            head: Vec::new(),
            replay: Bytes::new(),
        }
    }

    /// The stream, whole.
    fn whole(stream: TcpStream) -> OneRequest {
        OneRequest {
            limit: Limit::Off,
            ..OneRequest::new(stream)
        }
    }

    /// The stream, whole, after `bytes`.
    fn replaying(self, bytes: Bytes) -> OneRequest {
        OneRequest {
            replay: bytes,
            ..OneRequest::whole(self.stream)
        }
    }

    /// Whether it stops hyper at the end of a request.
    fn is_limited(&self) -> bool {
        !matches!(self.limit, Limit::Off)
    }

    /// Whether hyper, having read the whole request, asked for the next one.
    fn at_boundary(&self) -> bool {
        matches!(self.limit, Limit::Done { asked: true })
    }

    /// A read in the head: peeks, and delivers up to the request's end.
    fn poll_head(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let room = buf.remaining().min(CHUNK);
        let space = buf.initialize_unfilled_to(room);
        let peeked = ready!(self.stream.poll_peek(cx, &mut ReadBuf::new(space)))?;
        if peeked == 0 {
            // End of file (or no room): hyper sees the client leave.
            return Poll::Ready(Ok(()));
        }
        let delivered = self.head.len();
        self.head.extend_from_slice(&space[..peeked]);
        let end = request_end(&self.head);
        self.head.truncate(delivered);
        let (take, next) = match end {
            // Every byte peeked belongs to the request.
            RequestEnd::Incomplete => (peeked, Limit::Head),
            RequestEnd::At(end) => {
                let left = end.saturating_sub(delivered as u64);
                (at_most(left, peeked), Limit::Body(left))
            }
            RequestEnd::Unknown => (peeked, Limit::Off),
        };
        // The bytes just peeked, read into the same place.
        let mut read = ReadBuf::new(&mut space[..take]);
        ready!(Pin::new(&mut self.stream).poll_read(cx, &mut read))?;
        let n = read.filled().len();
        self.limit = match next {
            Limit::Head => {
                self.head.extend_from_slice(&space[..n]);
                Limit::Head
            }
            Limit::Body(left) => body_or_done(left.saturating_sub(n as u64)),
            other => other,
        };
        if !matches!(self.limit, Limit::Head) {
            self.head = Vec::new();
        }
        buf.advance(n);
        Poll::Ready(Ok(()))
    }

    /// A read in the body, `left` bytes of it still to deliver.
    fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
        left: u64,
    ) -> Poll<io::Result<()>> {
        let room = at_most(left, buf.remaining().min(CHUNK));
        let mut read = ReadBuf::new(buf.initialize_unfilled_to(room));
        ready!(Pin::new(&mut self.stream).poll_read(cx, &mut read))?;
        let n = read.filled().len();
        if n > 0 {
            self.limit = body_or_done(left.saturating_sub(n as u64));
        }
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

/// [`Limit::Body`] with `left` bytes still to deliver, or [`Limit::Done`] if none.
fn body_or_done(left: u64) -> Limit {
    match left {
        0 => Limit::Done { asked: false },
        left => Limit::Body(left),
    }
}

/// `n`, if it is less than `room`; else `room`.
fn at_most(n: u64, room: usize) -> usize {
    usize::try_from(n).map_or(room, |n| n.min(room))
}

impl AsyncRead for OneRequest {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.limit {
            Limit::Head => this.poll_head(cx, buf),
            Limit::Body(left) => this.poll_body(cx, buf, left),
            Limit::Done { .. } => {
                this.limit = Limit::Done { asked: true };
                Poll::Ready(Ok(()))
            }
            Limit::Off if !this.replay.is_empty() => {
                let n = this.replay.len().min(buf.remaining());
                buf.put_slice(&this.replay.split_to(n));
                Poll::Ready(Ok(()))
            }
            Limit::Off => Pin::new(&mut this.stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for OneRequest {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// What every response on one connection says about where it was served.
struct Origin {
    worker: HeaderValue,
    listener: HeaderValue,
    peer: HeaderValue,
    body: Bytes,
}

/// Where `conn` is served, for its responses.
fn origin(conn: &AsyncConnection, id: u32, listeners: &[String]) -> Arc<Origin> {
    let listener = listeners
        .get(usize::from(conn.meta.listener))
        .map_or("?", String::as_str);
    Arc::new(Origin {
        worker: HeaderValue::from(id),
        listener: HeaderValue::from_str(listener).unwrap_or(HeaderValue::from_static("?")),
        peer: header_text(&conn.meta.peer.ip().to_string()),
        body: Bytes::from(format!("worker: {id}\n")),
    })
}

/// The service: reads each request's body to its end, then [`answer`]s it.
struct Hello(Arc<Origin>);

impl Service<Request<Incoming>> for Hello {
    type Response = Response<Reply>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Reply>, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let origin = Arc::clone(&self.0);
        Box::pin(async move {
            let (head, mut body) = req.into_parts();
            // hyper keeps a connection alive only once the request is read to its end.
            while let Some(Ok(_)) = body.frame().await {}
            Ok(answer(head.uri.path(), &origin))
        })
    }
}

/// Answers a request for `path`.
fn answer(path: &str, origin: &Origin) -> Response<Reply> {
    let (status, body) = match path.strip_prefix("/bytes/") {
        Some(count) => match parse_count(count) {
            Some(n) => (StatusCode::OK, Reply::Xs(n)),
            None => (
                StatusCode::BAD_REQUEST,
                Reply::text(format!("byte count must be 0..={MAX_BYTES}\n")),
            ),
        },
        None => (StatusCode::OK, Reply::Text(Some(origin.body.clone()))),
    };
    let length = body.len();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert("x-worker", origin.worker.clone());
    headers.insert("x-listener", origin.listener.clone());
    headers.insert("x-peer", origin.peer.clone());
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    response
}

/// `n` of `/bytes/<n>`: decimal digits, at most [`MAX_BYTES`].
fn parse_count(digits: &str) -> Option<u64> {
    if digits.is_empty() || digits.len() > 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&n| n <= MAX_BYTES)
}

/// A header value for text that is already header-safe (an address, a number).
fn header_text(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("?"))
}

/// A response body: a short text, or `n` bytes of `x` sent in static chunks.
enum Reply {
    /// The text, until it has been sent.
    Text(Option<Bytes>),
    /// The count of `x` still to send.
    Xs(u64),
}

impl Reply {
    fn text(text: String) -> Reply {
        Reply::Text(Some(Bytes::from(text)))
    }

    /// Bytes left to send.
    fn len(&self) -> u64 {
        match self {
            Reply::Text(text) => text.as_ref().map_or(0, |t| t.len() as u64),
            Reply::Xs(left) => *left,
        }
    }
}

impl Body for Reply {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let chunk = match self.get_mut() {
            Reply::Text(text) => text.take(),
            Reply::Xs(0) => None,
            Reply::Xs(left) => {
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(XS.len());
                *left -= n as u64;
                XS.get(..n).map(Bytes::from_static)
            }
        };
        Poll::Ready(chunk.map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.len() == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len())
    }
}
