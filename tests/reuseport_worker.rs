//! The end-to-end benchmark's baseline, `reuseport_worker` (`benches/e2e/reuseport_worker.rs`):
//! hello_worker's answers from processes that share one port with `SO_REUSEPORT`.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};

use util::{connect, example_bin, read_response};

/// A running `reuseport_worker` (it serves until killed), killed on drop.
struct Baseline(Child);

impl Drop for Baseline {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `reuseport_worker --listen ADDR --id ID`; returns it and the port it printed.
fn start(addr: &str, id: u32) -> (Baseline, u16) {
    let mut child = Command::new(example_bin("reuseport_worker"))
        .args(["--listen", addr, "--id", &id.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start reuseport_worker");
    let mut line = String::new();
    BufReader::new(child.stderr.take().expect("stderr"))
        .read_line(&mut line)
        .expect("its first line");
    let port = line
        .split_once("listening on 127.0.0.1:")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("no listening line: {line:?}"));
    (Baseline(child), port)
}

#[test]
fn two_workers_share_a_port_and_answer_like_hello_worker() {
    let (_first, port) = start("127.0.0.1:0", 0);
    let (_second, same) = start(&format!("127.0.0.1:{port}"), 1);
    assert_eq!(same, port);
    let addr = ([127, 0, 0, 1], port).into();
    // The kernel hashes each new connection to one of the two: both show up quickly.
    let mut seen = [false; 2];
    for _ in 0..200 {
        let mut c = connect(addr, None);
        c.write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        let r = read_response(&mut c);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-listener"), Some("direct"));
        assert_eq!(r.header("x-peer"), Some("127.0.0.1"));
        assert_eq!(r.header("connection"), Some("close"));
        let id = r.worker();
        assert_eq!(r.body, format!("worker: {id}\n").as_bytes());
        seen[id as usize] = true;
        let mut rest = Vec::new();
        assert_eq!(
            c.read_to_end(&mut rest).unwrap(),
            0,
            "closed after the response"
        );
        if seen == [true, true] {
            break;
        }
    }
    assert_eq!(seen, [true, true], "both workers served");
}

#[test]
fn a_bad_command_line_exits_2() {
    for args in [
        &[][..],
        &["--listen"],
        &["--listen", "nowhere"],
        &["--port", "1"],
    ] {
        let out = Command::new(example_bin("reuseport_worker"))
            .args(args)
            .output()
            .expect("run reuseport_worker");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("usage: reuseport_worker"),
            "{args:?}: {stderr}"
        );
    }
}
