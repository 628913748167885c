//! Hostile clients against the real binary: thousands of stalled heads, tricklers, oversized
//! and malformed requests, resets at every point, a stopped worker whose channel fills, and a
//! master at its fd limit. After each, the master is alive, holds no fd more than before, and
//! serves a good request.

mod util;

#[path = "util/tls.rs"]
mod tls;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, TcpStream};
use std::time::{Duration, Instant};

use stickyd::keys::Key;
use util::*;

const XFF: &str = "header:x-forwarded-for";

/// The first `n` X-Forwarded-For addresses (10.0.x.y, ...) that go to `worker`.
fn addresses_for(worker: u32, workers: u32, n: usize) -> Vec<IpAddr> {
    (0u32..)
        .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i)))
        .filter(|ip| owner(Key::Addr(*ip), workers) == worker)
        .take(n)
        .collect()
}

/// The master's fd count at rest, taken after one good request so that nothing opened lazily
/// by the first connection is counted as a leak later.
fn baseline(s: &Stickyd) -> usize {
    assert_eq!(get(s.addr(), Some(lo(1)), "/", &[]).status, 200);
    assert!(
        eventually(TIMEOUT, || {
            let a = s.fd_count();
            std::thread::sleep(Duration::from_millis(50));
            a == s.fd_count()
        }),
        "the master's fd count does not settle"
    );
    s.fd_count()
}

/// The master survived: alive, back to at most `fds_before` fds, and serving a good request.
fn assert_recovered(s: &Stickyd, fds_before: usize) {
    assert!(alive(s.pid), "the master died; log: {:#?}", s.log());
    assert!(
        eventually(TIMEOUT, || s.fd_count() <= fds_before),
        "the master holds {} fds, {fds_before} before the hostile clients",
        s.fd_count()
    );
    let r = get(s.addr(), Some(lo(1)), "/", &["X-Forwarded-For: 10.99.0.1"]);
    assert_eq!(r.status, 200, "no good answer afterwards");
    assert!(alive(s.pid));
    assert!(
        !s.log().iter().any(|l| l.contains("panicked")),
        "a panic in the log: {:#?}",
        s.log()
    );
}

/// A field of /proc/PID/status in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Raises this process's soft RLIMIT_NOFILE to its hard limit; returns the new soft limit.
fn raise_nofile() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the rlimit we own and pass by a valid pointer.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(rc, 0, "getrlimit: {}", std::io::Error::last_os_error());
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit reads the rlimit we own; raising the soft limit up to the hard one
    // needs no privilege and touches no memory of ours.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
    limit.rlim_cur
}

/// What a response looks like so far.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    worker: Option<u32>,
    /// The head and the whole Content-Length body have arrived.
    complete: bool,
}

/// Parses the start of what a server sent; `None` until a whole head has arrived, or if it is
/// not an HTTP response.
fn answer(bytes: &[u8]) -> Option<Answer> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(bytes.get(..end)?);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()?
        .strip_prefix("HTTP/1.1 ")?
        .get(..3)?
        .parse()
        .ok()?;
    let mut worker = None;
    let mut length = 0;
    for (name, value) in lines.filter_map(|l| l.split_once(':')) {
        match name.trim().to_ascii_lowercase().as_str() {
            "x-worker" => worker = value.trim().parse().ok(),
            "content-length" => length = value.trim().parse().unwrap_or(0),
            _ => {}
        }
    }
    Some(Answer {
        status,
        worker,
        complete: bytes.len() >= end + length,
    })
}

/// A client socket read without blocking, many to a thread.
struct Client {
    stream: Option<TcpStream>,
    got: Vec<u8>,
    /// End of file or a reset.
    ended: bool,
}

impl Client {
    fn new(stream: TcpStream) -> Client {
        stream.set_nonblocking(true).expect("non-blocking");
        Client {
            stream: Some(stream),
            got: Vec::new(),
            ended: false,
        }
    }

    /// Reads whatever has arrived.
    fn poll(&mut self) {
        let Some(stream) = &mut self.stream else {
            return;
        };
        let mut buf = [0u8; 4096];
        while !self.ended {
            match stream.read(&mut buf) {
                Ok(0) => self.ended = true,
                Ok(n) => self.got.extend_from_slice(buf.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => self.ended = true,
            }
        }
    }

    /// A whole response has arrived, or the end.
    fn answered_or_ended(&self) -> bool {
        self.ended || answer(&self.got).is_some_and(|a| a.complete)
    }
}

/// Polls `clients` until `done` holds for each (its socket is then closed) or `timeout`
/// passes; returns how many are not done.
fn wait_all(clients: &mut [Client], timeout: Duration, done: impl Fn(&Client) -> bool) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let mut left = 0;
        for c in clients.iter_mut().filter(|c| c.stream.is_some()) {
            c.poll();
            if done(c) {
                c.stream = None;
            } else {
                left += 1;
            }
        }
        if left == 0 || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ten_thousand_stalled_heads_cost_little_and_are_closed_at_the_deadline() {
    // This process holds one socket per stalled client, beyond the default soft limit of many
    // systems: raise the soft RLIMIT_NOFILE to the hard limit. stickyd raises its own.
    let limit = raise_nofile();
    // Leave room for the other tests of this file, which run in parallel in this process.
    let n = 10_000usize.min(limit.saturating_sub(4_000) as usize);
    if n < 1_000 {
        eprintln!("skipped: RLIMIT_NOFILE hard limit {limit} is too low for stalled clients");
        return;
    }
    // The deadline must outlast opening every client on a loaded machine, so that they all
    // wait at once; they are closed when it passes.
    let s = Stickyd::start_ready(
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--key",
            XFF,
            "--peek-timeout",
            "10s",
            "--on-timeout",
            "close",
        ],
        2,
    );
    let fds_before = baseline(&s);
    let rss_before = status_kib(s.pid, "VmRSS");

    let opened = Instant::now();
    let mut clients: Vec<Client> = (0..n)
        .map(|i| {
            let mut c = connect(s.addr(), Some(lo(2 + (i % 19) as u8)));
            c.write_all(b"GET /stalled HTTP/1.1\r\nHost: x\r\nX-Forw")
                .expect("send part of a head");
            Client::new(c)
        })
        .collect();
    let opened = opened.elapsed();

    // Good clients are dispatched while the stalled ones wait.
    for i in 0..10u32 {
        let key = IpAddr::V4(Ipv4Addr::from(0x0a01_0000 + i));
        let r = get(
            s.addr(),
            Some(lo(21)),
            "/",
            &[&format!("X-Forwarded-For: {key}")],
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.worker(), owner(Key::Addr(key), 2));
    }
    assert!(
        eventually(TIMEOUT, || s.fd_count() >= fds_before + n),
        "the master holds {} fds with {n} clients waiting, {fds_before} before",
        s.fd_count()
    );
    let rss = status_kib(s.pid, "VmRSS");
    // All of them still wait: none was closed before the RSS was read.
    clients.iter_mut().for_each(Client::poll);
    let early = clients
        .iter()
        .filter(|c| c.ended || !c.got.is_empty())
        .count();
    assert_eq!(
        early, 0,
        "{early} clients ended before the deadline (opening {n} took {opened:?})"
    );
    eprintln!(
        "{n} stalled clients opened in {opened:?}: master VmRSS {rss} KiB ({rss_before} KiB \
         before), {} fds ({fds_before} before)",
        s.fd_count()
    );
    assert!(
        rss < 32 * 1024,
        "master VmRSS {rss} KiB with {n} stalled clients"
    );

    // At the deadline the master closes every one of them: end of file (or a reset, since the
    // master closes with their bytes unread), and not one byte from a worker.
    let left = wait_all(&mut clients, TIMEOUT + Duration::from_secs(10), |c| c.ended);
    assert_eq!(left, 0, "{left} of {n} stalled clients were never closed");
    let answered = clients.iter().filter(|c| !c.got.is_empty()).count();
    assert_eq!(answered, 0, "{answered} stalled clients got bytes");
    let hwm = status_kib(s.pid, "VmHWM");
    eprintln!("master VmHWM {hwm} KiB after the deadline");
    assert!(hwm < 32 * 1024, "master VmHWM {hwm} KiB");
    assert_recovered(&s, fds_before);
}

/// The bytes of a trickled head: the key comes last, long after the deadline.
const TRICKLED: &[u8] = b"GET /trickle HTTP/1.1\r\nHost: x\r\nUser-Agent: one byte at a time\r\n\
    X-Forwarded-For: 10.7.7.7\r\n\r\n";

#[test]
fn a_trickling_client_meets_the_deadline_from_accept() {
    let s = Stickyd::start_ready(
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--key",
            XFF,
            "--peek-timeout",
            "1s",
            "--on-timeout",
            "close",
        ],
        2,
    );
    let fds_before = baseline(&s);
    // A few at once, one byte each every 100 ms: 9 s for the whole head.
    let mut tricklers: Vec<(TcpStream, Option<usize>)> = (0..3u8)
        .map(|i| (connect(s.addr(), Some(lo(30 + i))), None))
        .collect();
    for (at, byte) in TRICKLED.iter().enumerate() {
        for (c, closed) in tricklers.iter_mut().filter(|(_, closed)| closed.is_none()) {
            if c.write_all(&[*byte]).is_err() {
                *closed = Some(at);
                continue;
            }
            c.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 64];
            match c.read(&mut buf) {
                Ok(0) => *closed = Some(at),
                Ok(n) => panic!("got bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => *closed = Some(at),
            }
            c.set_nonblocking(false).unwrap();
        }
        if tricklers.iter().all(|(_, closed)| closed.is_some()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for (i, (_, closed)) in tricklers.iter().enumerate() {
        let at = closed
            .unwrap_or_else(|| panic!("trickler {i} sent its whole head without being closed"));
        eprintln!("trickler {i} closed after {at} of {} bytes", TRICKLED.len());
        assert!(at < TRICKLED.len());
    }
    drop(tricklers);
    assert_recovered(&s, fds_before);
}

#[test]
fn a_trickling_client_is_routed_by_the_fallback_at_the_deadline() {
    let workers = 4;
    let s = Stickyd::start_ready(
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "4",
            "--key",
            XFF,
            "--peek-timeout",
            "1s",
        ],
        4,
    );
    let fds_before = baseline(&s);
    // A client whose address and X-Forwarded-For key go to different workers.
    let source = lo(35);
    let key = addresses_for(
        (owner(Key::Addr(source), workers) + 1) % workers,
        workers,
        1,
    )[0];
    let head =
        format!("GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\nX-Forwarded-For: {key}\r\n\r\n");
    let mut c = connect(s.addr(), Some(source));
    for byte in head.bytes() {
        c.write_all(&[byte]).expect("trickle a byte");
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = read_response(&mut c);
    assert_eq!(
        r.worker(),
        owner(Key::Addr(source), workers),
        "routed by the key that came after the deadline, not by the fallback"
    );
    drop(c);
    assert_recovered(&s, fds_before);
}

/// What a malformed request is routed by.
#[derive(Clone, Copy, Debug)]
enum Route {
    /// No key: the fallback rule, the client's address.
    Fallback,
    /// This key.
    Key(Key<'static>),
}

#[test]
fn oversized_and_malformed_requests_get_an_answer_or_an_end() {
    let workers = 4;
    let s = Stickyd::start_ready(
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "4",
            "--key",
            XFF,
            "--max-peek",
            "4KiB",
            // Longer than the test waits: a client's end is noticed at once, not at a deadline.
            "--peek-timeout",
            "60s",
        ],
        4,
    );
    let fds_before = baseline(&s);

    let long_headers = format!(
        "GET /long HTTP/1.1\r\nHost: x\r\n{}\r\n",
        "X-Filler: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r\n"
            .repeat(20_000 / 80)
    );
    let many_lines = format!(
        "GET /many HTTP/1.1\r\nHost: x\r\n{}\r\n",
        "A: b\r\n".repeat(10_000)
    );
    let huge_header = format!(
        "GET /huge HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "y".repeat(100_000)
    );
    let client_hello = tls::records(&tls::client_hello(Some(b"tls.example"), 32, 0), &[]);
    // (name, bytes, route, the hello worker's status when it answers for sure)
    let cases: Vec<(&str, Vec<u8>, Route, Option<u16>)> = vec![
        (
            "20 KB of headers, no key",
            long_headers.into_bytes(),
            Route::Fallback,
            Some(200),
        ),
        (
            "10,000 header lines",
            many_lines.into_bytes(),
            Route::Fallback,
            Some(200),
        ),
        (
            "a 100 KB header",
            huge_header.into_bytes(),
            Route::Fallback,
            None,
        ),
        (
            "no CRLF at all",
            b"GET / HTTP/1.1 Host: x X-Forwarded-For: 10.1.1.1".to_vec(),
            Route::Fallback,
            None,
        ),
        (
            // The key is found, but the hello worker waits for a CRLF head end that never
            // comes: an end, no answer.
            "bare LF",
            b"GET / HTTP/1.1\nHost: x\nX-Forwarded-For: 10.1.1.2\n\n".to_vec(),
            Route::Key(Key::Addr(IpAddr::V4(Ipv4Addr::new(10, 1, 1, 2)))),
            None,
        ),
        ("only NUL bytes", vec![0; 300], Route::Fallback, None),
        (
            "NUL bytes in the head",
            b"GET / HTTP/1.1\r\nHost: x\0y\r\nX-Forwarded-For: 10.0.0.\x001\r\n\r\n".to_vec(),
            Route::Key(Key::Bytes(b"10.0.0.\x001")),
            Some(200),
        ),
        (
            "invalid UTF-8",
            b"GET /\xff\xfe HTTP/1.1\r\nHost: \xc3\x28\r\nX-Forwarded-For: \xff\xc0\xaf\r\n\r\n"
                .to_vec(),
            Route::Key(Key::Bytes(b"\xff\xc0\xaf")),
            Some(200),
        ),
        (
            "an X-Forwarded-For that is not an address",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 999.1.2.3.4, x\r\n\r\n".to_vec(),
            Route::Key(Key::Bytes(b"999.1.2.3.4")),
            Some(200),
        ),
        (
            "an X-Forwarded-For of only unknown",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: unknown, ,\r\n\r\n".to_vec(),
            Route::Fallback,
            Some(200),
        ),
        (
            "a request line of spaces",
            b"          \r\n\r\n".to_vec(),
            Route::Fallback,
            None,
        ),
        ("a TLS ClientHello", client_hello, Route::Fallback, None),
        (
            "the HTTP/2 preface",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
            Route::Fallback,
            Some(400),
        ),
        ("one byte", b"G".to_vec(), Route::Fallback, None),
        ("nothing", Vec::new(), Route::Fallback, None),
    ];

    for (i, (name, bytes, route, status)) in cases.into_iter().enumerate() {
        let source = lo(40 + i as u8);
        let expected = match route {
            Route::Fallback => owner(Key::Addr(source), workers),
            Route::Key(key) => owner(key, workers),
        };
        let mut c = connect(s.addr(), Some(source));
        match c.write_all(&bytes) {
            Ok(()) => {}
            // The worker may answer 431 and close before reading it all.
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {}
            Err(e) => panic!("{name}: sending: {e}"),
        }
        let _ = c.shutdown(Shutdown::Write);
        let mut client = [Client::new(c)];
        let left = wait_all(&mut client, TIMEOUT, |c| c.ended);
        assert_eq!(left, 0, "{name}: neither an answer nor an end");
        let got = &client[0].got;
        let a = answer(got);
        eprintln!(
            "{name}: {}",
            a.as_ref().map_or_else(
                || format!("end after {} bytes", got.len()),
                |a| format!("{} from worker {:?}", a.status, a.worker)
            )
        );
        if let Some(status) = status {
            let a = a
                .as_ref()
                .unwrap_or_else(|| panic!("{name}: no answer: {got:?}"));
            assert_eq!(a.status, status, "{name}");
        }
        if let Some(a) = &a {
            assert_eq!(a.worker, Some(expected), "{name}: routed by something else");
        }
        assert!(alive(s.pid), "{name} killed the master");
    }
    assert_recovered(&s, fds_before);
}

#[test]
fn clients_that_reset_or_close_at_every_point_cost_nothing() {
    let s = Stickyd::start_ready(
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--key",
            XFF,
            // Longer than the test waits: a client's end is noticed at once, not at a deadline.
            "--peek-timeout",
            "60s",
        ],
        2,
    );
    let fds_before = baseline(&s);
    let whole = request(
        "/cut",
        &[
            "User-Agent: a client that goes away at some point of its request",
            "Accept: */*",
            "X-Forwarded-For: 10.3.3.3",
        ],
    );
    let whole = whole.as_bytes();
    let mid_header = whole.len() - 10;
    for round in 0..4u8 {
        for cut in [0, 1, 5, 20, 100, mid_header, whole.len()] {
            for reset in [false, true] {
                let mut c = connect(s.addr(), Some(lo(60 + round)));
                c.write_all(whole.get(..cut).unwrap_or(whole)).unwrap();
                if reset {
                    socket2::SockRef::from(&c)
                        .set_linger(Some(Duration::ZERO))
                        .unwrap();
                }
                drop(c);
            }
        }
        // Good clients between the rounds.
        assert_eq!(get(s.addr(), Some(lo(70)), "/", &[]).status, 200);
    }
    // And a client that resets while a response would be on its way.
    for _ in 0..10 {
        let mut c = connect(s.addr(), Some(lo(71)));
        c.write_all(request("/bytes/1000000", &[]).as_bytes())
            .unwrap();
        let mut first = [0u8; 16];
        c.read_exact(&mut first).unwrap();
        socket2::SockRef::from(&c)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(c);
    }
    assert_recovered(&s, fds_before);
}

#[test]
fn a_stopped_worker_whose_channel_fills_gets_every_connection_when_it_resumes() {
    let workers = 2;
    let stopped = 1;
    let other = 0;
    let s = Stickyd::start_ready(
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--key",
            XFF,
            // No spill to the other worker: everything waits for the stopped one (65536 is
            // the most --max-queue takes).
            "--max-queue",
            "65536",
        ],
        2,
    );
    let fds_before = baseline(&s);
    let pid = s.worker_pid(stopped);
    signal(pid, libc::SIGSTOP);

    // More connections than its channel holds: the kernel queues about 278 fd-carrying
    // messages (the socket's send buffer), the master keeps the rest and retries.
    let n = 1_500;
    let keys = addresses_for(stopped, workers, n);
    let mut clients: Vec<Client> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let mut c = connect(s.addr(), Some(lo(2 + (i % 19) as u8)));
            c.write_all(request("/", &[&format!("X-Forwarded-For: {key}")]).as_bytes())
                .expect("send a request");
            Client::new(c)
        })
        .collect();
    // The master holds each one until the stopped worker acknowledges it.
    assert!(
        eventually(TIMEOUT, || s.fd_count() >= fds_before + n),
        "the master holds {} fds with {n} connections for a stopped worker, {fds_before} before",
        s.fd_count()
    );
    eprintln!(
        "{n} connections for stopped worker {stopped}: master holds {} fds ({fds_before} before)",
        s.fd_count()
    );
    // The other worker's keys are served meanwhile.
    for key in addresses_for(other, workers, 20) {
        let r = get(
            s.addr(),
            Some(lo(21)),
            "/",
            &[&format!("X-Forwarded-For: {key}")],
        );
        assert_eq!(r.worker(), other);
    }
    // Nothing for the stopped worker was answered by anyone.
    clients.iter_mut().for_each(Client::poll);
    let answered = clients
        .iter()
        .filter(|c| c.ended || !c.got.is_empty())
        .count();
    assert_eq!(answered, 0, "answered while their worker was stopped");

    signal(pid, libc::SIGCONT);
    let left = wait_all(&mut clients, TIMEOUT * 2, Client::answered_or_ended);
    assert_eq!(
        left, 0,
        "{left} of {n} connections unanswered after SIGCONT"
    );
    for (c, key) in clients.iter().zip(&keys) {
        let a = answer(&c.got).unwrap_or_else(|| panic!("{key}: no answer: {:?}", c.got));
        assert_eq!((a.status, a.worker), (200, Some(stopped)), "{key}");
    }
    assert_recovered(&s, fds_before);
}

#[test]
fn at_the_fd_limit_accept_backs_off_logs_once_and_serves_everyone() {
    let s = Stickyd::start_with_nofile(
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--key",
            XFF,
            "--peek-timeout",
            "60s",
            "--metrics",
            "127.0.0.1:0",
        ],
        64,
    );
    s.wait_ready(2);
    let metrics = s.metrics_addr();
    let fds_before = baseline(&s);

    let n = 200;
    let mut streams: Vec<TcpStream> = (0..n)
        .map(|i| {
            let mut c = connect(s.addr(), Some(lo(80 + (i % 10) as u8)));
            c.write_all(format!("GET /{i} HTTP/1.1\r\nHost: x\r\n").as_bytes())
                .unwrap();
            c
        })
        .collect();
    s.wait_log("Too many open files", TIMEOUT);
    for (i, c) in streams.iter_mut().enumerate() {
        c.write_all(
            format!(
                "X-Forwarded-For: 10.5.{}.{}\r\nConnection: close\r\n\r\n",
                i / 250,
                i % 250
            )
            .as_bytes(),
        )
        .unwrap();
    }
    let mut clients: Vec<Client> = streams.into_iter().map(Client::new).collect();
    let left = wait_all(&mut clients, TIMEOUT * 2, Client::answered_or_ended);
    assert_eq!(left, 0, "{left} of {n} clients unanswered");
    for (i, c) in clients.iter().enumerate() {
        let a = answer(&c.got).unwrap_or_else(|| panic!("client {i}: no answer: {:?}", c.got));
        assert_eq!(a.status, 200, "client {i}");
    }
    assert_recovered(&s, fds_before);

    let lines = s
        .log()
        .iter()
        .filter(|l| l.contains("Too many open files"))
        .count();
    let (status, body) = scrape(metrics, "/metrics");
    assert_eq!(status, 200);
    let rearms = metric_sum(&body, "stickyd_accept_rearms_total") as u64;
    eprintln!("{lines} `Too many open files` lines, {rearms} accept re-arms");
    assert!(lines >= 1);
    assert!(
        lines as u64 <= rearms + 1,
        "{lines} `Too many open files` lines for {rearms} back-off episodes"
    );
}
