//! A service in one process: the dispatcher and its workers are threads of the same program,
//! each worker thread owning the keys stickyd routes to it. It takes the same command line as
//! `stickyd` (the worker command, if any, is not used) and answers like the hello worker
//! (`X-Worker`, `X-Listener`, `X-Peer`, `worker: <id>`), one request per connection.
//!
//! ```sh
//! cargo run --example in_process -- --listen 127.0.0.1:3000 --workers 4 --key cookie:sid
//! curl -b sid=abc 127.0.0.1:3000    # always the same thread for "abc"
//! ```

use std::io::{self, Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use stickyd::threads::ThreadWorker;
use stickyd::{Dispatcher, cli, logging};
use stickyd_worker::Connection;

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

/// Reads one request head and answers it, closing the connection.
fn answer(worker: &ThreadWorker, mut conn: Connection) -> io::Result<()> {
    conn.stream
        .set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.stream.read(&mut buf)?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let id = worker.id();
    let body = format!("worker: {id}\n");
    let listener = worker.listener_name(conn.meta.listener).unwrap_or("?");
    let response = format!(
        "HTTP/1.1 200 OK\r\nX-Worker: {id}\r\nX-Listener: {listener}\r\nX-Peer: {}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        conn.meta.peer.ip(),
        body.len()
    );
    conn.stream.write_all(response.as_bytes())
}
