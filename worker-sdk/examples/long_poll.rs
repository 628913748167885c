//! A long-poll worker: every request waits until the master drains this worker (a shutdown),
//! then gets its answer, `drained by worker <id>`. It shows the blocking receive loop finishing
//! what it holds once `incoming()` ends: DRAIN has arrived and the master has closed its side.
//!
//! ```sh
//! stickyd --workers 2 -- target/release/examples/long_poll
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Duration;

use stickyd_worker::Worker;

fn main() -> ExitCode {
    let mut worker = match Worker::from_env() {
        Ok(worker) => worker,
        Err(e) => {
            eprintln!("long_poll: {e}");
            return ExitCode::FAILURE;
        }
    };
    let id = worker.id();
    let mut held = Vec::new();
    for conn in worker.incoming() {
        match conn {
            Ok(conn) => held.push(conn.stream),
            Err(e) => eprintln!("long_poll: worker {id}: {e}"),
        }
    }
    eprintln!(
        "long_poll: worker {id} draining (DRAIN seen: {}), answering {} held requests",
        worker.draining(),
        held.len()
    );
    for stream in held {
        if let Err(e) = answer(stream, id) {
            eprintln!("long_poll: worker {id}: {e}");
        }
    }
    ExitCode::SUCCESS
}

/// Reads the request head and answers it.
fn answer(mut stream: TcpStream, id: u32) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        match stream.read(&mut buf)? {
            0 => return Ok(()),
            n => head.extend_from_slice(&buf[..n]),
        }
    }
    let body = format!("drained by worker {id}\n");
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nX-Worker: {id}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
