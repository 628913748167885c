//! The smallest stickyd worker: join the master, then answer each connection it hands over
//! with one response, one connection at a time (`hello_worker` serves many at once, with an
//! event loop).
//!
//! ```sh
//! cargo build --release -p stickyd-worker --example minimal
//! stickyd --workers 2 -- target/release/examples/minimal
//! curl 127.0.0.1:3000    # hello from worker 0 (or 1)
//! ```

use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;

use stickyd_worker::Worker;

fn main() -> Result<(), stickyd_worker::Error> {
    // Says HELLO to the master and waits for its WELCOME (or its refusal, with the reason).
    let mut worker = Worker::from_env()?;
    let id = worker.id();
    // Each connection in turn; the loop ends when the master drains this worker.
    for conn in worker.incoming() {
        match conn {
            // A TcpStream that reads the client's request from its first byte.
            Ok(conn) => {
                if let Err(e) = answer(conn.stream, id) {
                    eprintln!("minimal: worker {id}: {e}");
                }
            }
            // One connection went wrong; the next ones are fine.
            Err(e) => eprintln!("minimal: worker {id}: {e}"),
        }
    }
    Ok(())
}

/// Reads the request head and answers it, then closes the connection.
fn answer(stream: TcpStream, id: u32) -> io::Result<()> {
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    // The request line and the headers, up to the blank line (or the end of the stream).
    while reader.read_line(&mut line)? > 0 && line != "\r\n" {
        line.clear();
    }
    let body = format!("hello from worker {id}\n");
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    (&stream).write_all(response.as_bytes())
}
