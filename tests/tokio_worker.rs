//! The SDK's async receive (feature `tokio`) under stickyd: the `hyper_worker` example serves
//! HTTP/1.1 with hyper, routed by a header, and drains gracefully; with
//! `--rehash-per-request` it hands kept-alive connections back at each request boundary.

mod util;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stickyd::keys::Key;
use stickyd_worker::wire::{self, Message};
use util::*;

/// `stickyd --workers 2 --key header:x-user -- hyper_worker`, both workers ready.
fn start() -> Stickyd {
    let worker = example_bin("hyper_worker");
    let s = Stickyd::start(&[
        "--listen",
        "web=127.0.0.1:0",
        "--workers",
        "2",
        "--key",
        "header:x-user",
        "--",
        worker.to_str().expect("UTF-8 path"),
    ]);
    s.wait_ready(2);
    s
}

fn user(name: &str) -> String {
    format!("X-User: {name}")
}

#[test]
fn each_user_is_answered_by_the_worker_its_key_owns() {
    let s = start();
    let mut seen = HashSet::new();
    for i in 0..12u8 {
        let name = format!("user-{i}");
        let source = lo(10 + i);
        let r = get(s.addr(), Some(source), "/", &[&user(&name)]);
        assert_eq!(r.status, 200);
        let owner = owner(Key::Bytes(name.as_bytes()), 2);
        assert_eq!(r.worker(), owner, "{name}");
        assert_eq!(r.header("x-listener"), Some("web"));
        assert_eq!(r.header("x-peer"), Some(source.to_string().as_str()));
        assert_eq!(r.body, format!("worker: {owner}\n").into_bytes());
        seen.insert(owner);
    }
    assert_eq!(seen.len(), 2, "the users cover both workers");
}

#[test]
fn a_keep_alive_connection_stays_with_its_worker_and_streams_bytes() {
    let s = start();
    let first = owner(Key::Bytes(b"alice"), 2);
    // A user another worker owns: on alice's connection it is still alice's worker's.
    let other = (0..64)
        .map(|i| format!("other-{i}"))
        .find(|name| owner(Key::Bytes(name.as_bytes()), 2) != first)
        .expect("a user of the other worker");
    let mut c = connect(s.addr(), Some(lo(30)));
    for (path, name) in [
        ("/", "alice"),
        ("/bytes/100000", "alice"),
        ("/", other.as_str()),
        ("/bytes/0", "alice"),
        ("/", "alice"),
    ] {
        c.write_all(request(path, &[&user(name)]).as_bytes())
            .unwrap();
        let r = read_response(&mut c);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.worker(), first, "{path} as {name}");
        match path.strip_prefix("/bytes/") {
            Some(n) => {
                assert_eq!(r.body.len(), n.parse::<usize>().unwrap());
                assert!(r.body.iter().all(|&b| b == b'x'));
            }
            None => assert_eq!(r.body, format!("worker: {first}\n").into_bytes()),
        }
    }
    c.write_all(request("/bytes/70000000", &[&user("alice")]).as_bytes())
        .unwrap();
    assert_eq!(read_response(&mut c).status, 400, "over 64 MiB");
}

#[test]
fn sigterm_finishes_the_request_in_flight_closes_idle_ones_and_exits_0() {
    const SIZE: usize = 64 * 1024 * 1024;
    let mut s = start();
    // An idle keep-alive connection on each worker.
    let mut idle: Vec<_> = (0..12u8)
        .map(|i| {
            let mut c = connect(s.addr(), Some(lo(40 + i)));
            let name = format!("idle-{i}");
            c.write_all(request("/", &[&user(&name)]).as_bytes())
                .unwrap();
            assert_eq!(read_response(&mut c).status, 200);
            c
        })
        .collect();
    let mut big = connect(s.addr(), Some(lo(60)));
    big.write_all(request(&format!("/bytes/{SIZE}"), &[&user("alice")]).as_bytes())
        .unwrap();
    assert_drains(&mut s, big, SIZE, &mut idle, 2);
}

/// SIGTERM while `big` is receiving a `/bytes/SIZE` response far larger than the socket
/// buffers: that response arrives whole, every `idle` connection is closed, and each of the
/// `workers` hyper workers exits by itself (before the grace period ends), stickyd with 0.
fn assert_drains(
    s: &mut Stickyd,
    mut big: TcpStream,
    size: usize,
    idle: &mut [TcpStream],
    workers: u32,
) {
    let mut first = [0u8; 1];
    big.read_exact(&mut first).unwrap();
    s.signal(libc::SIGTERM);

    assert_whole_xs(&mut big, first[0], size);
    for c in idle {
        let mut byte = [0u8; 1];
        assert_eq!(c.read(&mut byte).unwrap(), 0, "idle connection closed");
    }
    assert_eq!(s.wait_exit(TIMEOUT).code(), Some(0));
    for id in 0..workers {
        s.wait_log(&format!("hyper_worker: worker {id} exiting"), TIMEOUT);
    }
    assert!(
        !s.log().iter().any(|l| l.contains("grace period over")),
        "{:#?}",
        s.log()
    );
}

/// Reads the rest of a `/bytes/SIZE` response whose first byte was `first`, to end of file:
/// a `200 OK` head saying `SIZE`, then every byte of the body.
fn assert_whole_xs(c: &mut TcpStream, first: u8, size: usize) {
    let mut rest = Vec::with_capacity(size + 512);
    c.read_to_end(&mut rest)
        .expect("the response, then end of file");
    let mut response = vec![first];
    response.append(&mut rest);
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    let head = String::from_utf8_lossy(&response[..head_end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    assert!(
        head.contains(&format!("content-length: {size}\r\n")),
        "{head}"
    );
    assert_eq!(response.len() - head_end, size, "the whole body arrived");
    assert!(response[head_end..].iter().all(|&b| b == b'x'));
}

#[test]
fn a_refused_worker_exits_non_zero_with_the_reason() {
    let mut fds = [-1; 2];
    // SAFETY: `fds` has room for the two fds socketpair writes.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0, "socketpair: {}", std::io::Error::last_os_error());
    // SAFETY: socketpair succeeded: two new fds that nothing else owns.
    let (master, child_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let raw = child_end.as_raw_fd();
    let mut cmd = Command::new(example_bin("hyper_worker"));
    cmd.env("STICKYD_FD", raw.to_string())
        .env("STICKYD_WORKER_ID", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: runs in the forked child before exec and calls only fcntl, which is
    // async-signal-safe; `raw` is open in the child, since the parent keeps `child_end` open
    // until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(raw, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("start hyper_worker");
    drop(child_end);
    let master = UnixDatagram::from(master);
    master.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut buf = vec![0u8; wire::MAX_MESSAGE];
    let n = master.recv(&mut buf).expect("HELLO");
    assert!(matches!(
        wire::decode(&buf[..n]),
        Ok(Message::Hello(h)) if h.worker_id == 0
    ));
    let mut refused = Vec::new();
    wire::encode_refused("slot 0 is taken", &mut refused);
    master.send(&refused).unwrap();

    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "hyper_worker did not exit");
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("refused by the master: slot 0 is taken"),
        "{stderr}"
    );
}

/// Workers of [`start_rehash`].
const REHASH_WORKERS: u32 = 4;

/// `stickyd --workers 4 --key header:x-forwarded-for --rehash-per-request -- hyper_worker`,
/// with a metrics endpoint, every worker ready.
fn start_rehash() -> Stickyd {
    let worker = example_bin("hyper_worker");
    let workers = REHASH_WORKERS.to_string();
    Stickyd::start_ready(
        &[
            "--listen",
            "web=127.0.0.1:0",
            "--workers",
            &workers,
            "--key",
            "header:x-forwarded-for",
            "--rehash-per-request",
            "--metrics",
            "127.0.0.1:0",
            "--",
            worker.to_str().expect("UTF-8 path"),
        ],
        REHASH_WORKERS as usize,
    )
}

/// The client address a front proxy would put in `X-Forwarded-For`: 10.0.0.`n`.
fn client(n: u8) -> IpAddr {
    IpAddr::from([10, 0, 0, n])
}

fn xff(ip: IpAddr) -> String {
    format!("X-Forwarded-For: {ip}")
}

fn owner_of(ip: IpAddr) -> u32 {
    owner(Key::Addr(ip), REHASH_WORKERS)
}

/// A client whose worker is not `ip`'s.
fn other_than(ip: IpAddr) -> IpAddr {
    (2..=250)
        .map(client)
        .find(|&other| owner_of(other) != owner_of(ip))
        .expect("a client of another worker")
}

/// The `stickyd_handbacks_total` the master reports.
fn handbacks(s: &Stickyd) -> f64 {
    let (_, body) = scrape(s.metrics_addr(), "/metrics");
    metric_sum(&body, "stickyd_handbacks_total")
}

/// Reads a `worker: N` response and checks it came from `ip`'s worker, on listener `web`,
/// the connection kept alive.
fn assert_served_by_owner(c: &mut TcpStream, ip: IpAddr) {
    let r = read_response(c);
    assert_eq!(r.status, 200, "{ip}");
    assert_eq!(r.worker(), owner_of(ip), "{ip}");
    assert_eq!(r.header("x-listener"), Some("web"));
    assert_ne!(r.header("connection"), Some("close"), "{ip}");
    assert_eq!(r.body, format!("worker: {}\n", owner_of(ip)).into_bytes());
}

#[test]
fn with_rehash_per_request_each_request_on_a_kept_alive_connection_reaches_its_keys_worker() {
    let s = start_rehash();
    let ips: Vec<IpAddr> = (1..=24).map(client).collect();
    assert!(
        ips.windows(2).any(|p| owner_of(p[0]) != owner_of(p[1])),
        "every client belongs to one worker: the test proves nothing"
    );
    let mut c = connect(s.addr(), None);
    for &ip in &ips {
        c.write_all(request("/", &[&xff(ip)]).as_bytes()).unwrap();
        assert_served_by_owner(&mut c, ip);
    }
    let (_, body) = scrape(s.metrics_addr(), "/metrics");
    // One TCP connection, handed back once per request after the first.
    assert_eq!(metric_sum(&body, "stickyd_connections_accepted_total"), 1.0);
    assert_eq!(metric_sum(&body, "stickyd_handbacks_total"), 23.0);
}

#[test]
fn with_rehash_per_request_pipelined_requests_are_answered_in_order_each_by_its_keys_worker() {
    let s = start_rehash();
    // Each request asks for its own body length: the responses show their order.
    let sizes = [1, 200_000, 0, 7, 65_536, 3];
    let ips: Vec<IpAddr> = (1..=6).map(client).collect();
    assert!(
        ips.windows(2).any(|p| owner_of(p[0]) != owner_of(p[1])),
        "every client belongs to one worker: the test proves nothing"
    );
    let all: String = ips
        .iter()
        .zip(sizes)
        .map(|(&ip, n)| request(&format!("/bytes/{n}"), &[&xff(ip)]))
        .collect();
    let mut c = connect(s.addr(), None);
    c.write_all(all.as_bytes()).unwrap();
    for (&ip, n) in ips.iter().zip(sizes) {
        let r = read_response(&mut c);
        assert_eq!(r.status, 200, "{ip}");
        assert_eq!(r.worker(), owner_of(ip), "{ip}");
        assert_eq!(r.body.len(), n, "{ip}");
        assert!(r.body.iter().all(|&b| b == b'x'), "{ip}");
    }
    // Each worker read its request only, and gave the connection back for the next.
    assert_eq!(handbacks(&s), 5.0);
}

#[test]
fn with_rehash_per_request_a_post_body_is_read_and_the_request_behind_it_handed_on() {
    let s = start_rehash();
    let (poster, getter) = (client(1), other_than(client(1)));
    // A body that reads like a request: cut in the wrong place, it would be routed as one.
    let body = format!("GET /bytes/5 HTTP/1.1\r\n{}\r\n\r\n", xff(getter));
    let head = format!(
        "POST /form HTTP/1.1\r\nHost: test\r\n{}\r\nContent-Length: {}\r\n\r\n",
        xff(poster),
        body.len()
    );
    let get = request("/", &[&xff(getter)]);
    // All in one write; then with the body arriving after the head.
    for pause in [None, Some(Duration::from_millis(100))] {
        let mut c = connect(s.addr(), None);
        match pause {
            None => {
                let all = format!("{head}{body}{get}");
                c.write_all(all.as_bytes()).unwrap();
            }
            Some(pause) => {
                c.write_all(head.as_bytes()).unwrap();
                std::thread::sleep(pause);
                c.write_all(format!("{body}{get}").as_bytes()).unwrap();
            }
        }
        assert_served_by_owner(&mut c, poster);
        assert_served_by_owner(&mut c, getter);
    }
    assert_eq!(handbacks(&s), 2.0);
}

#[test]
fn with_rehash_per_request_a_chunked_body_keeps_its_connection_on_its_worker() {
    let s = start_rehash();
    let (poster, other) = (client(1), other_than(client(1)));
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: test\r\n{}\r\nTransfer-Encoding: chunked\r\n\r\n",
        xff(poster)
    );
    let mut c = connect(s.addr(), None);
    c.write_all(format!("{head}5\r\nhello\r\n").as_bytes())
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    c.write_all(b"6\r\n world\r\n0\r\n\r\n").unwrap();
    assert_served_by_owner(&mut c, poster);
    // Where the body ends is not known from its head: the worker serves the rest of the
    // connection itself, other keys and pipelined requests included.
    let next = request("/", &[&xff(other)]);
    c.write_all(format!("{next}{next}").as_bytes()).unwrap();
    for _ in 0..2 {
        let r = read_response(&mut c);
        assert_eq!(r.status, 200);
        assert_eq!(r.worker(), owner_of(poster));
    }
    assert_eq!(handbacks(&s), 0.0);
}

#[test]
fn with_rehash_per_request_sigterm_finishes_the_request_in_flight_and_closes_idle_ones() {
    const SIZE: usize = 64 * 1024 * 1024;
    let mut s = start_rehash();
    // Idle kept-alive connections, each at a request boundary, on every worker.
    let mut idle: Vec<_> = (1..=12)
        .map(client)
        .map(|ip| {
            let mut c = connect(s.addr(), None);
            c.write_all(request("/", &[&xff(ip)]).as_bytes()).unwrap();
            assert_served_by_owner(&mut c, ip);
            c
        })
        .collect();
    // A response far larger than the socket buffers: in flight when the signal arrives.
    let mut big = connect(s.addr(), None);
    big.write_all(request(&format!("/bytes/{SIZE}"), &[&xff(client(50))]).as_bytes())
        .unwrap();
    assert_drains(&mut s, big, SIZE, &mut idle, REHASH_WORKERS);
}
