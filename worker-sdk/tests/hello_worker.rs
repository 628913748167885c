//! The `hello_worker` example against a fake master: it must already be built
//! (`cargo build -p stickyd-worker --examples`; `cargo test` builds it too).

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use stickyd_worker::wire;
use util::{Master, listener, record, seqpacket_pair, tcp_pair};

/// `target/<profile>/examples/hello_worker`, next to this test's `deps` directory.
fn example_path() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let path = profile_dir.join("examples").join("hello_worker");
    assert!(
        path.exists(),
        "{} is not built: run `cargo build -p stickyd-worker --examples` first",
        path.display()
    );
    path
}

/// Spawns the example on a fresh channel; returns it and the master's end.
fn spawn(worker_id: u32) -> (Child, Master) {
    let (m, w) = seqpacket_pair();
    let mut cmd = Command::new(example_path());
    let fd = util::inherit(&mut cmd, w.as_fd());
    cmd.env("STICKYD_FD", fd.to_string())
        .env("STICKYD_WORKER_ID", worker_id.to_string())
        .env_remove("STICKYD_ATTACH")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawning hello_worker");
    (child, Master::new(m))
}

fn wait(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + util::TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("hello_worker did not exit in time");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    text
}

/// Hands a new client connection to the worker; returns the client side.
fn hand_off(
    master: &Master,
    lst: &std::net::TcpListener,
    seq: u64,
    listener: u16,
    first: &[u8],
    proxy_len: u16,
) -> TcpStream {
    let (client, accepted) = tcp_pair(lst, first);
    accepted.set_nonblocking(true).unwrap();
    master.conns(
        &[record(
            seq,
            client.local_addr().unwrap(),
            listener,
            proxy_len,
        )],
        &[accepted.as_fd()],
    );
    assert_eq!(master.ack(), [seq]);
    client
}

struct Response {
    status: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn read_response(reader: &mut BufReader<TcpStream>, head_only: bool) -> Response {
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').expect("header line");
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    let mut response = Response {
        status: status.trim_end().to_owned(),
        headers,
        body: Vec::new(),
    };
    let len: usize = response
        .header("content-length")
        .expect("Content-Length")
        .parse()
        .unwrap();
    if !head_only {
        response.body = vec![0; len];
        reader.read_exact(&mut response.body).unwrap();
    }
    response
}

fn at_eof(reader: &mut BufReader<TcpStream>) -> bool {
    let mut rest = Vec::new();
    matches!(reader.read_to_end(&mut rest), Ok(0))
}

#[test]
fn serves_requests_then_drains_and_exits_zero() {
    let (mut child, master) = spawn(2);
    assert_eq!(master.hello(), (2, child.id()));
    master.welcome(2, 4, &["web", "admin"]);
    let lst = listener();

    // Keep-alive, pipelining, /bytes, HEAD, a bad count.
    let client = hand_off(&master, &lst, 1, 1, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0);
    let mut keep = BufReader::new(client.try_clone().unwrap());
    let r = read_response(&mut keep, false);
    assert_eq!(r.status, "HTTP/1.1 200 OK");
    assert_eq!(r.header("x-worker"), Some("2"));
    assert_eq!(r.header("x-listener"), Some("admin"));
    assert_eq!(r.header("x-peer"), Some("127.0.0.1"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("connection"), None);
    assert_eq!(r.body, b"worker: 2\n");
    (&client)
        .write_all(
            b"GET /bytes/100000 HTTP/1.1\r\n\r\nPOST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc\
              GET /bytes/0 HTTP/1.1\r\n\r\nHEAD /bytes/7 HTTP/1.1\r\n\r\nGET /bytes/67108865 HTTP/1.1\r\n\r\n",
        )
        .unwrap();
    let r = read_response(&mut keep, false);
    assert_eq!(r.body.len(), 100_000);
    assert!(r.body.iter().all(|&b| b == b'x'));
    assert_eq!(read_response(&mut keep, false).body, b"worker: 2\n");
    assert!(read_response(&mut keep, false).body.is_empty());
    let r = read_response(&mut keep, true);
    assert_eq!(r.header("content-length"), Some("7"));
    assert!(
        read_response(&mut keep, false)
            .status
            .starts_with("HTTP/1.1 400")
    );

    // PROXY header skipped; HTTP/1.0 closes.
    let mut first = b"PROXY TCP4 127.0.0.9 127.0.0.1 5000 80\r\n".to_vec();
    let proxy_len = first.len() as u16;
    first.extend_from_slice(b"GET / HTTP/1.0\r\n\r\n");
    let c2 = hand_off(&master, &lst, 2, 0, &first, proxy_len);
    let mut r2 = BufReader::new(c2);
    let r = read_response(&mut r2, false);
    assert_eq!(
        (r.header("x-listener"), r.header("connection")),
        (Some("web"), Some("close"))
    );
    assert!(at_eof(&mut r2));

    // Malformed request: 400, close.
    let c3 = hand_off(&master, &lst, 3, 0, b"NOT A REQUEST AT ALL\r\n\r\n", 0);
    let mut r3 = BufReader::new(c3);
    let r = read_response(&mut r3, false);
    assert!(r.status.starts_with("HTTP/1.1 400"), "{}", r.status);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(at_eof(&mut r3));

    // Headers over 64 KiB: 431, close.
    let mut big = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..700 {
        big.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "y".repeat(100)).as_bytes());
    }
    big.extend_from_slice(b"\r\n");
    let c4 = hand_off(&master, &lst, 4, 0, b"", 0);
    let writer = {
        let mut c = c4.try_clone().unwrap();
        std::thread::spawn(move || {
            let _ = c.write_all(&big);
        })
    };
    let mut r4 = BufReader::new(c4);
    assert!(
        read_response(&mut r4, false)
            .status
            .starts_with("HTTP/1.1 431")
    );
    writer.join().unwrap();

    // Drain: the idle keep-alive connection is closed, the worker exits 0.
    master.drain();
    assert!(at_eof(&mut keep));
    assert!(wait(&mut child).success());
    let log = stderr_of(&mut child);
    assert!(
        log.contains("started") && log.contains("draining") && log.contains("exiting"),
        "{log}"
    );
    assert!(master.recv().is_empty(), "the worker closed its channel");
}

#[test]
fn drain_finishes_the_response_in_progress() {
    let (mut child, master) = spawn(0);
    master.hello();
    master.welcome(0, 1, &["l0"]);
    let lst = listener();
    let n = 8 * 1024 * 1024;
    let client = hand_off(
        &master,
        &lst,
        1,
        0,
        format!("GET /bytes/{n} HTTP/1.1\r\n\r\n").as_bytes(),
        0,
    );
    let mut reader = BufReader::new(client);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    // The response is under way; the master drains now.
    master.drain();
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    let body_at = rest.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(rest.len() - body_at, n, "the whole body, then the end");
    assert!(wait(&mut child).success());

    // A connection handed off with DRAIN queued behind it still gets its answer, with close.
    // The worker is stopped while both are sent, so that it reads them together (awake, it
    // could serve the connection before DRAIN arrives).
    let (mut child, master) = spawn(0);
    master.hello();
    master.welcome(0, 1, &["l0"]);
    let (client, accepted) = tcp_pair(&lst, b"GET / HTTP/1.1\r\n\r\n");
    let mut buf = Vec::new();
    wire::encode_conns(&[record(5, client.local_addr().unwrap(), 0, 0)], &mut buf);
    stop(&child);
    master.send(&buf, &[accepted.as_fd()]).unwrap();
    master.drain();
    drop(accepted);
    resume(&child);
    let mut reader = BufReader::new(client);
    let r = read_response(&mut reader, false);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(at_eof(&mut reader));
    assert!(wait(&mut child).success());
}

/// Stops `child` (SIGSTOP), and waits until it is stopped.
fn stop(child: &Child) {
    signal(child, libc::SIGSTOP);
    let stat = format!("/proc/{}/stat", child.id());
    let deadline = Instant::now() + Duration::from_secs(30);
    // The state follows the command name's closing parenthesis.
    while !std::fs::read_to_string(&stat)
        .unwrap()
        .rsplit_once(") ")
        .is_some_and(|(_, rest)| rest.starts_with('T'))
    {
        assert!(Instant::now() < deadline, "the worker did not stop");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Resumes a stopped `child` (SIGCONT).
fn resume(child: &Child) {
    signal(child, libc::SIGCONT);
}

fn signal(child: &Child, signal: i32) {
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill takes a pid and a signal number; it touches no memory of ours.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

#[test]
fn refused_worker_exits_one_with_the_reason() {
    let (mut child, master) = spawn(7);
    master.hello();
    let mut buf = Vec::new();
    wire::encode_refused("slot 7 does not exist", &mut buf);
    master.send(&buf, &[]).unwrap();
    drop(master);
    assert_eq!(wait(&mut child).code(), Some(1));
    let log = stderr_of(&mut child);
    assert!(
        log.starts_with("hello_worker: ") && log.contains("slot 7 does not exist"),
        "{log}"
    );
}

/// The HANDBACK the master receives next: its listener and the connection it carries.
fn recv_handback(master: &Master) -> (u16, TcpStream) {
    let (bytes, fds) = master.recv_with_fds();
    let listeners: Vec<u16> = match wire::decode(&bytes).expect("HANDBACK decodes") {
        wire::Message::Handback(listeners) => listeners.iter().collect(),
        other => panic!("expected HANDBACK, got {other:?}"),
    };
    assert_eq!((listeners.len(), fds.len()), (1, 1), "one connection");
    (
        listeners[0],
        TcpStream::from(fds.into_iter().next().unwrap()),
    )
}

/// Peeks until `want.len()` bytes are queued; asserts they are `want` and nothing more.
fn assert_unread(stream: &TcpStream, want: &[u8]) {
    stream.set_read_timeout(Some(util::TIMEOUT)).unwrap();
    let mut buf = vec![0u8; want.len() + 64];
    let deadline = Instant::now() + util::TIMEOUT;
    loop {
        let n = stream.peek(&mut buf).unwrap();
        if n >= want.len() || Instant::now() > deadline {
            assert_eq!(&buf[..n], want, "the next request, from its first byte");
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn with_rehash_the_next_request_goes_back_to_the_master_unread() {
    let (mut child, master) = spawn(1);
    master.hello();
    master.welcome(1, 2, &["web", "api"]);
    let mut rehash = Vec::new();
    wire::encode_rehash(&[1], &mut rehash);
    master.send(&rehash, &[]).unwrap();
    let lst = listener();

    let client = hand_off(&master, &lst, 1, 1, b"GET /1 HTTP/1.1\r\n\r\n", 0);
    let mut reader = BufReader::new(client.try_clone().unwrap());
    assert_eq!(
        read_response(&mut reader, false).header("x-worker"),
        Some("1")
    );
    let second = b"GET /2 HTTP/1.1\r\nX-Key: b\r\n\r\n";
    (&client).write_all(second).unwrap();
    let (listener_index, conn) = recv_handback(&master);
    assert_eq!(listener_index, 1);
    assert_unread(&conn, second);

    // A third request, pipelined behind it before the master passes the connection on.
    let third = b"GET /3 HTTP/1.1\r\n\r\n";
    (&client).write_all(third).unwrap();
    assert_unread(&conn, &[&second[..], third].concat());

    // Routed back to the same worker: a connection's first request is always served where it
    // arrives. The worker reads that request only, so the third, pipelined behind it, stays
    // in the socket and comes back at the next boundary.
    conn.set_nonblocking(true).unwrap();
    master.conns(
        &[record(2, client.local_addr().unwrap(), 1, 0)],
        &[conn.as_fd()],
    );
    assert_eq!(master.ack(), [2]);
    drop(conn);
    let r = read_response(&mut reader, false);
    assert_eq!(
        (r.status.as_str(), r.body.as_slice()),
        ("HTTP/1.1 200 OK", &b"worker: 1\n"[..])
    );
    let (listener_index, conn) = recv_handback(&master);
    assert_eq!(listener_index, 1);
    assert_unread(&conn, third);
    conn.set_nonblocking(true).unwrap();
    master.conns(
        &[record(3, client.local_addr().unwrap(), 1, 0)],
        &[conn.as_fd()],
    );
    assert_eq!(master.ack(), [3]);
    drop(conn);
    let r = read_response(&mut reader, false);
    assert_eq!(
        (r.status.as_str(), r.body.as_slice()),
        ("HTTP/1.1 200 OK", &b"worker: 1\n"[..])
    );
    // At the next boundary, the next request goes back again.
    let fourth = b"GET /4 HTTP/1.1\r\n\r\n";
    (&client).write_all(fourth).unwrap();
    let (listener_index, conn) = recv_handback(&master);
    assert_eq!(listener_index, 1);
    assert_unread(&conn, fourth);
    drop(conn);

    // A listener the master did not name keeps its connections.
    let other = hand_off(&master, &lst, 4, 0, b"GET / HTTP/1.1\r\n\r\n", 0);
    let mut other_reader = BufReader::new(other.try_clone().unwrap());
    read_response(&mut other_reader, false);
    (&other).write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(
        read_response(&mut other_reader, false).header("x-listener"),
        Some("web")
    );
    assert!(master.try_recv().is_none(), "no hand-back on listener 0");

    master.drain();
    assert!(at_eof(&mut other_reader));
    assert!(wait(&mut child).success());
}

#[test]
fn without_rehash_the_next_request_is_answered_here() {
    let (mut child, master) = spawn(0);
    master.hello();
    master.welcome(0, 2, &["l0"]);
    let lst = listener();
    let client = hand_off(&master, &lst, 1, 0, b"GET /1 HTTP/1.1\r\n\r\n", 0);
    let mut reader = BufReader::new(client.try_clone().unwrap());
    read_response(&mut reader, false);
    (&client).write_all(b"GET /2 HTTP/1.1\r\n\r\n").unwrap();
    let r = read_response(&mut reader, false);
    assert_eq!(
        (r.status.as_str(), r.header("x-worker")),
        ("HTTP/1.1 200 OK", Some("0"))
    );
    assert!(master.try_recv().is_none(), "nothing handed back");
    master.drain();
    assert!(at_eof(&mut reader));
    assert!(wait(&mut child).success());
}
