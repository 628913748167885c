//! A service in one process: the dispatcher and its workers are threads of the same program,
//! each worker thread owning the keys stickyd routes to it. It takes the same command line as
//! `stickyd` (the worker command, if any, is not used) and answers like the hello worker
//! (`X-Worker`, `X-Listener`, `X-Peer`, `worker: <id>`), one request per connection. With
//! `--rehash-per-request` the connections stay open: after each response the thread gives the
//! connection back to the dispatcher (`ThreadWorker::hand_back`), which routes the next request
//! by its own key, to this thread or another.
//!
//! ```sh
//! cargo run --example in_process -- --listen 127.0.0.1:3000 --workers 4 --key cookie:sid
//! curl -b sid=abc 127.0.0.1:3000    # always the same thread for "abc"
//! ```

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Duration;

use stickyd::threads::ThreadWorker;
use stickyd::{Dispatcher, cli, logging};
use stickyd_worker::Connection;
use stickyd_worker::http::{RequestEnd, request_end};

/// The longest request head read.
const MAX_HEAD: usize = 16 * 1024;

fn main() -> ExitCode {
    let config = match cli::from_process_args() {
        Ok(config) => config,
        Err(code) => return code,
    };
    logging::init("in_process");
    let mut dispatcher = Dispatcher::new(config);
    // First, before any thread exists: the shutdown signals are the dispatcher's.
    let workers = match dispatcher.thread_workers() {
        Ok(workers) => workers,
        Err(e) => {
            eprintln!("in_process: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let threads: Vec<_> = workers
        .into_iter()
        .map(|worker| {
            std::thread::Builder::new()
                .name(format!("worker-{}", worker.id()))
                .spawn(move || serve(&worker))
        })
        .collect();
    let result = dispatcher.run();
    // The dispatcher has drained every worker: each thread ends after its last connection.
    for thread in threads.into_iter().flatten() {
        let _ = thread.join();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("in_process: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(worker: &ThreadWorker) {
    for conn in worker.incoming() {
        let result = conn.and_then(|conn| answer(worker, conn));
        if let Err(e) = result {
            log::debug!("worker {}: {e}", worker.id());
        }
    }
}

/// Reads one request and answers it. The connection is then closed, or, on a listener routed
/// per request (`--rehash-per-request`), kept alive and given back to the dispatcher, which
/// routes its next request by that request's key (it waits there for it, so this thread
/// never blocks on an idle connection).
fn answer(worker: &ThreadWorker, mut conn: Connection) -> io::Result<()> {
    conn.stream
        .set_read_timeout(Some(Duration::from_secs(10)))?;
    let listener = conn.meta.listener;
    let keep_alive = worker.rehash_per_request(listener);
    if !read_request(&mut conn.stream)? {
        return Ok(());
    }
    let id = worker.id();
    let body = format!("worker: {id}\n");
    let name = worker.listener_name(listener).unwrap_or("?");
    let connection = if keep_alive {
        ""
    } else {
        "Connection: close\r\n"
    };
    let response = format!(
        "HTTP/1.1 200 OK\r\nX-Worker: {id}\r\nX-Listener: {name}\r\nX-Peer: {}\r\n\
         Content-Length: {}\r\n{connection}\r\n{body}",
        conn.meta.peer.ip(),
        body.len()
    );
    conn.stream.write_all(response.as_bytes())?;
    if keep_alive {
        // The response is written and nothing of the next request was read: a request boundary.
        if let Err(e) = worker.hand_back(conn.stream, listener) {
            log::debug!("worker {id}: not handed back ({}): closed", e.error());
        }
    }
    Ok(())
}

/// Reads exactly one request (its head and its `Content-Length` body), leaving what follows
/// in the socket: it peeks, finds where the request ends, and reads that far. Returns false
/// if the client closed first, the head is too long, or its body's end is not known (then
/// nothing is answered).
fn read_request(stream: &mut TcpStream) -> io::Result<bool> {
    // The head read so far: bytes of this request only.
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    loop {
        let peeked = stream.peek(&mut buf)?;
        if peeked == 0 {
            return Ok(false);
        }
        let read = head.len() as u64;
        head.extend_from_slice(&buf[..peeked]);
        match request_end(&head) {
            // Every byte peeked belongs to this head: read them, and look again.
            RequestEnd::Incomplete if head.len() <= MAX_HEAD => {
                stream.read_exact(&mut buf[..peeked])?;
            }
            // The rest of the request, body included, and not one byte more.
            RequestEnd::At(end) => {
                let rest = end - read;
                let copied = io::copy(&mut Read::take(&mut *stream, rest), &mut io::sink())?;
                return Ok(copied == rest);
            }
            _ => return Ok(false),
        }
    }
}
