//! `hyper_worker`: the `hello_worker` answers, served by hyper on tokio through the SDK's
//! async receive ([`AsyncWorker`], feature `tokio`).
//!
//! One current-thread runtime serves every connection, one task each. Every request is
//! answered `200 OK` with `X-Worker`, `X-Listener` and `X-Peer` headers and the body
//! `worker: <id>\n`; `GET /bytes/<n>` answers `n` bytes of `x` (up to 64 MiB), streamed from a
//! static chunk. hyper honours keep-alive and `Connection: close`. Once the master drains it,
//! it takes no more connections, lets the requests in progress finish (hyper's graceful
//! shutdown, which also closes idle keep-alive connections) and exits 0. If the master
//! refuses it, it exits 1 with the reason.
//!
//! ```sh
//! cargo build --release -p stickyd-worker --features tokio --example hyper_worker
//! stickyd --workers 2 --key header:x-user -- target/release/examples/hyper_worker
//! ```

use std::convert::Infallible;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use stickyd_worker::{AsyncConnection, AsyncWorker};

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
    let graceful = GracefulShutdown::new();
    let mut errors = 0;
    // Ends after DRAIN, once the master has closed its side (or if it went away).
    while let Some(conn) = worker.recv().await {
        match conn {
            Ok(conn) => {
                errors = 0;
                spawn_connection(conn, id, &listeners, &graceful);
            }
            Err(e) => {
                say!("worker {id}: {e}");
                errors += 1;
                if errors >= MAX_CHANNEL_ERRORS {
                    say!("worker {id}: too many consecutive channel errors");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    say!(
        "worker {id} draining ({} connections open)",
        graceful.count()
    );
    graceful.shutdown().await;
    say!("worker {id} exiting");
    ExitCode::SUCCESS
}

/// What every response on one connection says about where it was served.
struct Origin {
    worker: HeaderValue,
    listener: HeaderValue,
    peer: HeaderValue,
    body: Bytes,
}

/// Serves one connection with hyper on its own task, watched for the graceful shutdown.
fn spawn_connection(
    conn: AsyncConnection,
    id: u32,
    listeners: &[String],
    graceful: &GracefulShutdown,
) {
    let AsyncConnection { stream, meta } = conn;
    let listener = listeners
        .get(usize::from(meta.listener))
        .map_or("?", String::as_str);
    let origin = Arc::new(Origin {
        worker: HeaderValue::from(id),
        listener: HeaderValue::from_str(listener).unwrap_or(HeaderValue::from_static("?")),
        peer: header_text(&meta.peer.ip().to_string()),
        body: Bytes::from(format!("worker: {id}\n")),
    });
    let service = service_fn(move |req: Request<Incoming>| {
        let response = answer(&req, &origin);
        async move { Ok::<_, Infallible>(response) }
    });
    let connection = http1::Builder::new()
        // Bounds the wait for a request head (hyper's default, 30 s, needs a timer).
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service);
    let connection = graceful.watch(connection);
    tokio::spawn(async move {
        // A client that resets or times out ends only its own connection: nothing to log.
        let _ = connection.await;
    });
}

/// Answers one request.
fn answer(req: &Request<Incoming>, origin: &Origin) -> Response<Reply> {
    let (status, body) = match req.uri().path().strip_prefix("/bytes/") {
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
