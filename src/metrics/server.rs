//! The metrics endpoint: a minimal HTTP/1.1 server on a thread of its own.
//!
//! One request per connection, served in turn. Reading a request has a deadline
//! ([`IO_DEADLINE`]) and a size bound ([`MAX_REQUEST`]), and so has writing the answer, so a
//! slow or hostile client holds the thread for seconds at most. The thread sees the master only
//! through [`Metrics`].

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::Metrics;

/// The longest a client may take to send its request, and to take the answer.
const IO_DEADLINE: Duration = Duration::from_secs(2);

/// The largest request head read; a longer one is answered 431.
const MAX_REQUEST: usize = 8 * 1024;

/// The pause after a failed accept, so a lasting failure (`EMFILE`) does not spin the thread.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The content type of the Prometheus text format.
const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Plain text answers (`/healthz`, errors).
const PLAIN_TYPE: &str = "text/plain; charset=utf-8";

/// Serves `GET /metrics` (200, `Content-Type: text/plain; version=0.0.4; charset=utf-8`) and
/// `GET /healthz` (200 `ok\n` while at least one worker is live, else 503 `no live worker\n`)
/// on `listener`, on a thread of its own named `stickyd-metrics`.
///
/// Any other path is answered 404, a method other than GET or HEAD (HEAD: the same answer
/// without a body) 405. One request per connection (`Connection: close`), read within 2 s and
/// 8 KiB. A failed accept is logged and the loop goes on. The thread runs for as long as the
/// process does. Fails only if the listener cannot be put in blocking mode or the thread
/// cannot be spawned.
pub fn serve(listener: TcpListener, metrics: Arc<Metrics>) -> io::Result<JoinHandle<()>> {
    listener.set_nonblocking(false)?;
    thread::Builder::new()
        .name("stickyd-metrics".to_string())
        .spawn(move || accept_loop(&listener, &metrics))
}

fn accept_loop(listener: &TcpListener, metrics: &Metrics) {
    // The rendered text, kept between requests so a scrape allocates nothing once warm.
    let mut body = String::new();
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                if let Err(err) = handle(stream, metrics, &mut body) {
                    log::debug!("metrics: request from {peer}: {err}");
                }
            }
            Err(err) if is_transient(&err) => {}
            Err(err) => {
                log::warn!("metrics: accept failed: {err}");
                thread::sleep(ACCEPT_BACKOFF);
            }
        }
    }
}

/// Accept failures that concern one connection only (its client went away), not the listener.
fn is_transient(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
    )
}

/// Reads one request from `stream`, answers it and closes the connection.
fn handle(mut stream: TcpStream, metrics: &Metrics, body: &mut String) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    let mut buf = [0u8; MAX_REQUEST];
    let deadline = Instant::now() + IO_DEADLINE;
    let answer = match read_head(&mut stream, &mut buf, deadline)? {
        Some(head) => route(parse_request_line(head), metrics, body),
        None => Answer::error(431, "Request Header Fields Too Large"),
    };
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        answer.status,
        answer.reason,
        answer.content_type,
        answer.body.len()
    );
    if answer.status == 405 {
        head.push_str("Allow: GET, HEAD\r\n");
    }
    head.push_str("\r\n");
    write_all_by(&mut stream, head.as_bytes(), deadline + IO_DEADLINE)?;
    if answer.with_body {
        write_all_by(&mut stream, answer.body.as_bytes(), deadline + IO_DEADLINE)?;
    }
    stream.shutdown(Shutdown::Write)
}

/// Reads until the end of the request head (an empty line) and returns the bytes read:
/// `Ok(None)` if `buf` filled up first; an error at end of file or at the deadline.
fn read_head<'b>(
    stream: &mut TcpStream,
    buf: &'b mut [u8],
    deadline: Instant,
) -> io::Result<Option<&'b [u8]>> {
    let mut len = 0;
    while len < buf.len() {
        set_timeout(stream, deadline, Stream::Read)?;
        let Some(free) = buf.get_mut(len..) else {
            break;
        };
        let n = match stream.read(free) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed before the end of the request head",
                ));
            }
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        // The terminator may straddle the previous read: look 3 bytes back.
        let from = len.saturating_sub(3);
        len += n;
        if let Some(window) = buf.get(from..len) {
            if find_head_end(window).is_some() {
                return Ok(buf.get(..len));
            }
        }
    }
    Ok(None)
}

/// Where the empty line ending a request head is in `bytes`, if it is there (`\r\n\r\n`, or
/// the `\n\n` of a lenient client).
fn find_head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = bytes.windows(2).position(|w| w == b"\n\n");
    crlf.or(lf)
}

/// Which way a timeout applies.
#[derive(Clone, Copy)]
enum Stream {
    Read,
    Write,
}

/// Sets the socket's read or write timeout to what is left until `deadline`.
fn set_timeout(stream: &TcpStream, deadline: Instant, way: Stream) -> io::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "metrics client too slow",
        ));
    }
    match way {
        Stream::Read => stream.set_read_timeout(Some(left)),
        Stream::Write => stream.set_write_timeout(Some(left)),
    }
}

/// `write_all` that gives up at `deadline`.
fn write_all_by(stream: &mut TcpStream, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
    while !bytes.is_empty() {
        set_timeout(stream, deadline, Stream::Write)?;
        match stream.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = bytes.get(n..).unwrap_or_default(),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// What a request line asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request<'a> {
    /// A well-formed request line; `head` is true for HEAD.
    Get { path: &'a [u8], head: bool },
    /// A method other than GET or HEAD, on `path`.
    Other { path: &'a [u8] },
    /// Not an HTTP request line.
    Malformed,
}

/// Parses the first line of `head`: `METHOD SP TARGET SP HTTP/x.y`. The query string, if
/// any, is not part of the path.
fn parse_request_line(head: &[u8]) -> Request<'_> {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line = head.get(..line_end).unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Malformed;
    };
    if method.is_empty() || !target.starts_with(b"/") || !version.starts_with(b"HTTP/") {
        return Request::Malformed;
    }
    let path_end = target
        .iter()
        .position(|&b| b == b'?')
        .unwrap_or(target.len());
    let path = target.get(..path_end).unwrap_or(target);
    match method {
        b"GET" => Request::Get { path, head: false },
        b"HEAD" => Request::Get { path, head: true },
        _ => Request::Other { path },
    }
}

/// A response to send.
struct Answer<'a> {
    status: u16,
    reason: &'static str,
    content_type: &'static str,
    body: &'a str,
    /// False for HEAD: the headers (with the body's length) only.
    with_body: bool,
}

impl Answer<'_> {
    fn error(status: u16, reason: &'static str) -> Answer<'static> {
        Answer {
            status,
            reason,
            content_type: PLAIN_TYPE,
            body: reason_body(status),
            with_body: true,
        }
    }
}

/// The body of an error answer.
fn reason_body(status: u16) -> &'static str {
    match status {
        400 => "bad request\n",
        404 => "not found\n",
        405 => "method not allowed\n",
        _ => "request too large\n",
    }
}

/// The answer to `request`; `/metrics` renders into `body`.
fn route<'a>(request: Request<'_>, metrics: &Metrics, body: &'a mut String) -> Answer<'a> {
    let (path, head) = match request {
        Request::Malformed => return Answer::error(400, "Bad Request"),
        Request::Other { path } if is_known(path) => {
            return Answer::error(405, "Method Not Allowed");
        }
        Request::Other { .. } => return Answer::error(404, "Not Found"),
        Request::Get { path, head } => (path, head),
    };
    let (status, reason, content_type, text): (u16, &'static str, &'static str, &'a str) =
        match path {
            b"/metrics" => {
                body.clear();
                metrics.render(body);
                (200, "OK", METRICS_TYPE, body.as_str())
            }
            b"/healthz" if metrics.live_workers() > 0 => (200, "OK", PLAIN_TYPE, "ok\n"),
            b"/healthz" => (503, "Service Unavailable", PLAIN_TYPE, "no live worker\n"),
            _ => return Answer::error(404, "Not Found"),
        };
    Answer {
        status,
        reason,
        content_type,
        body: text,
        with_body: !head,
    }
}

/// The paths this endpoint serves.
fn is_known(path: &[u8]) -> bool {
    path == b"/metrics" || path == b"/healthz"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_parse() {
        assert_eq!(
            parse_request_line(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Request::Get {
                path: b"/metrics",
                head: false
            }
        );
        assert_eq!(
            parse_request_line(b"HEAD /healthz?verbose=1 HTTP/1.0\n\n"),
            Request::Get {
                path: b"/healthz",
                head: true
            }
        );
        assert_eq!(
            parse_request_line(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Request::Other { path: b"/metrics" }
        );
        for bad in [
            &b""[..],
            b"\r\n\r\n",
            b"GET\r\n\r\n",
            b"GET /metrics\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1 extra\r\n\r\n",
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics FTP/1\r\n\r\n",
            b"\xff\xfe /\x00 HTTP/\xff\r\n\r\n",
        ] {
            // A malformed or odd line is refused, never a panic.
            let parsed = parse_request_line(bad);
            assert!(
                matches!(parsed, Request::Malformed | Request::Other { .. }),
                "{bad:?} -> {parsed:?}"
            );
        }
    }

    #[test]
    fn head_end_is_found_in_either_form() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\n"), Some(14));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\n\n"), Some(14));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(find_head_end(b""), None);
    }

    #[test]
    fn routes_answer_by_path_and_method() {
        let metrics = Metrics::new(&["l0".to_string()], 1);
        let mut body = String::new();
        let get = |path| Request::Get { path, head: false };

        let answer = route(get(b"/metrics"), &metrics, &mut body);
        assert_eq!((answer.status, answer.content_type), (200, METRICS_TYPE));
        assert!(
            answer
                .body
                .contains("# TYPE stickyd_handoff_seconds histogram\n")
        );

        let answer = route(get(b"/healthz"), &metrics, &mut body);
        assert_eq!((answer.status, answer.body), (503, "no live worker\n"));
        metrics.set_live(0, true);
        let answer = route(get(b"/healthz"), &metrics, &mut body);
        assert_eq!((answer.status, answer.body), (200, "ok\n"));

        let head = route(
            Request::Get {
                path: b"/healthz",
                head: true,
            },
            &metrics,
            &mut body,
        );
        assert_eq!((head.status, head.with_body), (200, false));

        let statuses = [
            route(get(b"/"), &metrics, &mut body).status,
            route(get(b"/metrics/"), &metrics, &mut body).status,
            route(Request::Other { path: b"/metrics" }, &metrics, &mut body).status,
            route(Request::Other { path: b"/x" }, &metrics, &mut body).status,
            route(Request::Malformed, &metrics, &mut body).status,
        ];
        assert_eq!(statuses, [404, 404, 405, 404, 400]);
    }
}
