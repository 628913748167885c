//! `--rehash-per-request`: a kept-alive connection carrying the requests of many clients (a
//! front proxy that reuses its backend connections) has each request served by its key's
//! worker. The worker hands the connection back at the request boundary, none of the next
//! request read, and the master routes it again by that request's key.

mod util;

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use stickyd::keys::Key;
use util::haproxy::{self, Haproxy};
use util::*;

const WORKERS: u32 = 4;

fn start(extra: &[&str]) -> Stickyd {
    let workers = WORKERS.to_string();
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--workers",
        &workers,
        "--key",
        "header:x-forwarded-for",
        "--metrics",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    Stickyd::start_ready(&args, WORKERS as usize)
}

/// The client addresses a proxy would put in `X-Forwarded-For`: 10.0.0.1 ..= 10.0.0.N.
fn clients(n: u8) -> Vec<IpAddr> {
    (1..=n).map(|i| IpAddr::from([10, 0, 0, i])).collect()
}

fn owner_of(ip: IpAddr) -> u32 {
    owner(Key::Addr(ip), WORKERS)
}

/// One request per client, in turn, all on one new kept-alive connection; returns who served
/// each.
fn one_connection(s: &Stickyd, clients: &[IpAddr]) -> Vec<(IpAddr, u32)> {
    one_connection_on(&mut connect(s.addr(), None), clients)
}

/// As [`one_connection`], on an open connection.
fn one_connection_on(c: &mut std::net::TcpStream, clients: &[IpAddr]) -> Vec<(IpAddr, u32)> {
    clients
        .iter()
        .map(|&ip| {
            let xff = format!("X-Forwarded-For: {ip}");
            c.write_all(request("/", &[&xff]).as_bytes()).unwrap();
            let r = read_response(c);
            assert_eq!(r.status, 200);
            assert_eq!(r.body, format!("worker: {}\n", r.worker()).into_bytes());
            (ip, r.worker())
        })
        .collect()
}

#[test]
fn every_request_on_a_reused_connection_is_served_by_its_keys_worker() {
    let s = start(&["--rehash-per-request"]);
    // Several rounds over the same clients: each comes back to its worker every time.
    let mut order = clients(24);
    order.extend(clients(24).into_iter().rev());
    let served = one_connection(&s, &order);
    let moved: Vec<_> = served
        .iter()
        .filter(|(ip, w)| *w != owner_of(*ip))
        .collect();
    assert!(moved.is_empty(), "served by another worker: {moved:?}");
    assert!(
        served.windows(2).any(|p| p[0].1 != p[1].1),
        "every request went to one worker: the test proves nothing"
    );
    let (_, body) = scrape(s.metrics_addr(), "/metrics");
    // One TCP connection, handed back once per request after the first.
    assert_eq!(metric_sum(&body, "stickyd_connections_accepted_total"), 1.0);
    assert_eq!(
        metric_sum(&body, "stickyd_handbacks_total"),
        (order.len() - 1) as f64
    );
}

#[test]
fn without_the_flag_a_reused_connection_stays_with_its_first_worker() {
    let s = start(&[]);
    let served = one_connection(&s, &clients(24));
    let first = served[0].1;
    assert!(served.iter().all(|&(_, w)| w == first), "{served:?}");
    assert!(
        served.iter().any(|&(ip, _)| owner_of(ip) != first),
        "every client belongs to one worker: the test proves nothing"
    );
    let (_, body) = scrape(s.metrics_addr(), "/metrics");
    assert_eq!(metric_sum(&body, "stickyd_handbacks_total"), 0.0);
}

/// Requests for `clients` to pipeline on one connection: request `i` asks for `/bytes/<100 + i>`
/// (so its answer tells which request it is), and every other one is a POST with a body that
/// the worker must skip, no more and no less.
fn pipeline(clients: &[IpAddr]) -> Vec<u8> {
    let mut all = Vec::new();
    for (i, ip) in clients.iter().enumerate() {
        let path = format!("/bytes/{}", 100 + i);
        let xff = format!("X-Forwarded-For: {ip}");
        if i % 2 == 0 {
            all.extend_from_slice(request(&path, &[&xff]).as_bytes());
        } else {
            let body = format!("body of request {i}, with GET / HTTP/1.1 in it\r\n\r\n");
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: test\r\n{xff}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            all.extend_from_slice(head.as_bytes());
            all.extend_from_slice(body.as_bytes());
        }
    }
    all
}

/// Reads the answers to [`pipeline`]`(clients)`: each in order, whole, by its key's worker.
fn read_pipelined(c: &mut std::net::TcpStream, clients: &[IpAddr], what: &str) {
    for (i, &ip) in clients.iter().enumerate() {
        let r = read_response(c);
        assert_eq!(r.status, 200, "{what}: request {i}");
        assert_eq!(
            r.body,
            vec![b'x'; 100 + i],
            "{what}: request {i} answered out of order"
        );
        assert_eq!(r.worker(), owner_of(ip), "{what}: request {i} ({ip})");
    }
}

#[test]
fn pipelined_requests_are_each_served_by_their_keys_worker_in_order() {
    // The worker reads one request at a time (peeked, then read to its end), so the requests
    // behind it stay in the socket and go back to the master with the connection.
    let s = start(&["--rehash-per-request"]);
    let ips = clients(8);
    assert!(
        ips.iter().any(|&ip| owner_of(ip) != owner_of(ips[0])),
        "every client belongs to one worker: the test proves nothing"
    );
    let mut c = connect(s.addr(), None);
    for round in 0..3 {
        c.write_all(&pipeline(&ips)).unwrap();
        read_pipelined(&mut c, &ips, &format!("round {round}"));
    }
    let (_, body) = scrape(s.metrics_addr(), "/metrics");
    assert_eq!(metric_sum(&body, "stickyd_connections_accepted_total"), 1.0);
    assert_eq!(
        metric_sum(&body, "stickyd_handbacks_total"),
        (3 * ips.len() - 1) as f64
    );
}

#[test]
fn pipelined_requests_cut_at_every_byte_lose_nothing() {
    // Three requests for three workers' keys, sent in two writes cut at every byte: wherever
    // the cut falls (in a head, in a body, between requests), each request is answered by its
    // key's worker, in order, whole.
    let s = start(&["--rehash-per-request"]);
    let ips: Vec<IpAddr> = clients(40).into_iter().fold(Vec::new(), |mut picked, ip| {
        if picked.len() < 3 && picked.iter().all(|&p| owner_of(p) != owner_of(ip)) {
            picked.push(ip);
        }
        picked
    });
    assert_eq!(ips.len(), 3, "40 clients do not reach 3 workers");
    let all = pipeline(&ips);
    let cuts: Vec<usize> = (1..all.len()).collect();
    let addr = s.addr();
    std::thread::scope(|scope| {
        for share in cuts.chunks(cuts.len().div_ceil(4)) {
            let (all, ips) = (&all, &ips);
            scope.spawn(move || {
                for &cut in share {
                    let mut c = connect(addr, None);
                    c.set_nodelay(true).unwrap();
                    c.write_all(&all[..cut]).unwrap();
                    // Long enough for the first part to be read or peeked alone, mostly.
                    std::thread::sleep(Duration::from_millis(2));
                    c.write_all(&all[cut..]).unwrap();
                    read_pipelined(&mut c, ips, &format!("cut at byte {cut}"));
                }
            });
        }
    });
    let (_, body) = scrape(s.metrics_addr(), "/metrics");
    assert_eq!(
        metric_sum(&body, "stickyd_handbacks_total"),
        (2 * cuts.len()) as f64
    );
}

#[test]
fn a_listener_keyed_by_the_client_address_is_told_the_flag_does_nothing() {
    let s = Stickyd::start_ready(
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--rehash-per-request",
        ],
        2,
    );
    s.wait_log("--rehash-per-request has no effect", TIMEOUT);
    let mut c = connect(s.addr(), None);
    for _ in 0..3 {
        c.write_all(request("/", &[]).as_bytes()).unwrap();
        assert_eq!(read_response(&mut c).status, 200);
    }
}

/// The HAProxy configuration the docs show: `http-reuse always`, 2 connections to stickyd.
const REUSE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/haproxy/reuse.cfg");

/// 50 clients (distinct `X-Forwarded-For`), 4 rounds, through HAProxy with `frontend`, 4
/// clients at a time, each request on a new connection to HAProxy; returns (client, worker)
/// for every request.
fn through_haproxy(front: SocketAddr) -> Vec<(IpAddr, u32)> {
    let ips = clients(50);
    let threads: Vec<_> = ips
        .chunks(ips.len().div_ceil(4))
        .map(|share| {
            let share = share.to_vec();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                for _ in 0..4 {
                    for &ip in &share {
                        let xff = format!("X-Forwarded-For: {ip}");
                        let r = get(front, None, "/", &[&xff, "Connection: close"]);
                        assert_eq!(r.status, 200, "{ip}");
                        seen.push((ip, r.worker()));
                    }
                }
                seen
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().expect("a client thread"))
        .collect()
}

/// HAProxy from `examples/haproxy/reuse.cfg` in front of `s`, ready.
fn haproxy_before(bin: &Path, s: &Stickyd) -> (Haproxy, SocketAddr) {
    let frontend = TcpListener::bind("127.0.0.1:0").expect("bind the frontend");
    let front = frontend.local_addr().unwrap();
    let backend = [("STICKYD_BACKEND", s.addr().to_string())];
    let proxy = Haproxy::start(bin, Path::new(REUSE), frontend, &backend);
    (proxy, front)
}

#[test]
fn behind_haproxy_reusing_two_connections_every_request_reaches_its_keys_worker() {
    let Some(bin) = haproxy::required("rehash") else {
        return;
    };
    let s = start(&["--rehash-per-request"]);
    let (_proxy, front) = haproxy_before(&bin, &s);
    let seen = through_haproxy(front);
    assert_eq!(seen.len(), 200);
    let moved: Vec<_> = seen.iter().filter(|(ip, w)| *w != owner_of(*ip)).collect();
    assert!(
        moved.is_empty(),
        "{} of 200 elsewhere: {moved:?}",
        moved.len()
    );
    let (_, body) = scrape(s.metrics_addr(), "/metrics");
    // HAProxy kept its few connections (maxconn 2; a few more if it replaced some).
    let accepted = metric_sum(&body, "stickyd_connections_accepted_total");
    assert!(
        (1.0..=8.0).contains(&accepted),
        "{accepted} connections accepted"
    );
    assert!(
        metric_sum(&body, "stickyd_handbacks_total") >= 150.0,
        "{body}"
    );

    // The same load without the flag: the reused connections keep their first worker, so
    // requests reach other workers than their keys' (what the flag is for).
    let plain = start(&[]);
    let (_proxy, front) = haproxy_before(&bin, &plain);
    let seen = through_haproxy(front);
    let moved = seen.iter().filter(|(ip, w)| *w != owner_of(*ip)).count();
    assert!(
        moved > 0,
        "without the flag every request reached its key's worker anyway"
    );
}

/// A worker of this test process attached to `path` as slot `id`, and a hello worker attached
/// as every other slot of `workers`: the test's worker does what a real one would only by
/// bad luck (dies with connections in flight), when the test says so.
struct Pool {
    mine: stickyd_worker::Worker,
    _others: Vec<Attached>,
}

impl Pool {
    fn attach(s: &Stickyd, path: &Path, workers: u32, id: u32) -> Pool {
        let channel = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::SEQPACKET, None)
            .expect("a seqpacket socket");
        let addr = socket2::SockAddr::unix(path).expect("the attach path");
        let deadline = Instant::now() + TIMEOUT;
        while let Err(e) = channel.connect(&addr) {
            assert!(Instant::now() < deadline, "attach: {e}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut mine = stickyd_worker::Worker::from_fd(channel.into(), id).expect("attach");
        // Reads the REHASH that follows WELCOME, so that a readable channel means CONNS later.
        while !mine.rehash_per_request(0) {
            match mine.try_recv() {
                Ok(None) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "no REHASH for listener 0");
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => panic!("before any connection: {other:?}"),
            }
        }
        let others = (0..workers)
            .filter(|&w| w != id)
            .map(|w| Attached::start(path, Some(w), None))
            .collect();
        for w in (0..workers).filter(|&w| w != id) {
            s.wait_log(&format!("worker {w} ready"), TIMEOUT);
        }
        Pool {
            mine,
            _others: others,
        }
    }

    /// Waits until the master has sent this test's worker something.
    fn wait_for_conns(&self) {
        let mut fds = [libc::pollfd {
            fd: self.mine.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: `fds` is one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, TIMEOUT.as_millis() as i32) };
        assert_eq!(n, 1, "no connection for the test's worker");
    }
}

fn start_attached(path: &Path) -> Stickyd {
    let path = path.to_str().expect("a UTF-8 path");
    Stickyd::start(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--attach",
        path,
        "--key",
        "header:x-forwarded-for",
        "--rehash-per-request",
        "--metrics",
        "127.0.0.1:0",
    ])
}

/// A client of each of two workers' keys: (one of worker 0's, one of worker 1's).
fn one_of_each() -> (IpAddr, IpAddr) {
    let ips = clients(40);
    let of = |w| {
        *ips.iter()
            .find(|&&ip| owner(Key::Addr(ip), 2) == w)
            .unwrap()
    };
    (of(0), of(1))
}

fn xff_request(ip: IpAddr) -> String {
    request("/", &[&format!("X-Forwarded-For: {ip}")])
}

#[test]
fn a_worker_that_dies_right_after_handing_back_loses_nothing() {
    let dir = TempDir::new("rehash-dies-after");
    let path = dir.0.join("attach.sock");
    let s = start_attached(&path);
    let mut pool = Pool::attach(&s, &path, 2, 0);
    let (zero, one) = one_of_each();

    // Eight clients each served a first request by the test's worker 0; each then sends a
    // request of worker 1's key.
    let mut clients: Vec<std::net::TcpStream> = (0..8).map(|_| connect(s.addr(), None)).collect();
    let mut conns = Vec::new();
    for c in &mut clients {
        c.write_all(xff_request(zero).as_bytes()).unwrap();
        let mut conn = pool.mine.recv().expect("a connection").expect("no end");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            std::io::Read::read_exact(&mut conn.stream, &mut byte).unwrap();
            head.push(byte[0]);
        }
        let answer = "HTTP/1.1 200 OK\r\nX-Worker: 0\r\nContent-Length: 10\r\n\r\nworker: 0\n";
        conn.stream.write_all(answer.as_bytes()).unwrap();
        assert_eq!(read_response(c).worker(), 0);
        c.write_all(xff_request(one).as_bytes()).unwrap();
        conns.push(conn);
    }
    // At the boundary, each goes back; the worker exits at once, its hand-backs still queued
    // on its channel, unread by the master.
    for conn in conns {
        let mut byte = [0u8; 1];
        assert_eq!(conn.stream.peek(&mut byte).unwrap(), 1);
        if let Err(e) = pool.mine.hand_back(conn.stream, conn.meta.listener) {
            panic!("hand back: {}", e.error());
        }
    }
    drop(pool.mine);
    for c in &mut clients {
        let r = read_response(c);
        assert_eq!((r.status, r.worker()), (200, 1));
    }
    let (_, body) = scrape(s.metrics_addr(), "/metrics");
    assert_eq!(metric_sum(&body, "stickyd_handbacks_total"), 8.0);
    assert_eq!(metric_sum(&body, "stickyd_dropped_total"), 0.0);
}

#[test]
fn a_worker_that_dies_before_taking_a_handed_back_connection_loses_nothing() {
    let dir = TempDir::new("rehash-dies-before");
    let path = dir.0.join("attach.sock");
    let s = start_attached(&path);
    let pool = Pool::attach(&s, &path, 2, 0);
    let (zero, one) = one_of_each();

    // Worker 1 (a hello worker) serves each client's first request, then hands the
    // connection back for the next, of worker 0's key; worker 0 (the test's) exits with the
    // connections sent to it and not acknowledged.
    let mut clients: Vec<std::net::TcpStream> = (0..8).map(|_| connect(s.addr(), None)).collect();
    for c in &mut clients {
        c.write_all(xff_request(one).as_bytes()).unwrap();
        assert_eq!(read_response(c).worker(), 1);
        c.write_all(xff_request(zero).as_bytes()).unwrap();
    }
    pool.wait_for_conns();
    let Pool { mine, _others } = pool;
    drop(mine);
    for c in &mut clients {
        let r = read_response(c);
        assert_eq!((r.status, r.worker()), (200, 1));
    }
    let (_, body) = scrape(s.metrics_addr(), "/metrics");
    assert_eq!(metric_sum(&body, "stickyd_handbacks_total"), 8.0);
    assert!(
        metric_sum(&body, "stickyd_redispatched_total") >= 1.0,
        "{body}"
    );
    assert_eq!(metric_sum(&body, "stickyd_dropped_total"), 0.0);
}

/// Sends `ip`'s request on `c`, reconnecting (and sending it again) if the connection was
/// lost (its worker was killed holding it); returns who answered.
fn ask_again_if_lost(addr: SocketAddr, c: &mut std::net::TcpStream, ip: IpAddr) -> u32 {
    let xff = format!("X-Forwarded-For: {ip}");
    let req = request("/", &[&xff]);
    for _ in 0..10 {
        let sent = c.write_all(req.as_bytes());
        match sent.and_then(|()| try_read_response(c)) {
            Ok(r) => {
                assert_eq!(r.status, 200, "{ip}");
                return r.worker();
            }
            Err(_) => *c = connect(addr, None),
        }
    }
    panic!("{ip}: no answer in 10 tries");
}

#[test]
fn a_worker_killed_while_connections_come_back_keeps_every_key_on_its_slot() {
    // With the respawn hold (2 s by default), a dead worker's keys wait for its replacement:
    // requests handed back meanwhile, whatever their key, are answered by their key's slot.
    for round in 0..3 {
        let s = start(&["--rehash-per-request"]);
        let victim = owner_of(clients(24)[0]);
        let stop = std::sync::atomic::AtomicBool::new(false);
        let addr = s.addr();
        std::thread::scope(|scope| {
            let threads: Vec<_> = (0..4)
                .map(|t| {
                    let stop = &stop;
                    scope.spawn(move || {
                        let mut c = connect(addr, None);
                        let mut served = 0;
                        let ips = clients(24);
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            for &ip in ips.iter().skip(t * 6).chain(ips.iter().take(t * 6)) {
                                let w = ask_again_if_lost(addr, &mut c, ip);
                                assert_eq!(w, owner_of(ip), "round {round}, {ip}");
                                served += 1;
                            }
                        }
                        served
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_millis(300));
            signal(s.worker_pid(victim), libc::SIGKILL);
            let deadline = Instant::now() + TIMEOUT;
            while s.ready_count(victim) < 2 {
                assert!(Instant::now() < deadline, "worker {victim} not replaced");
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(Duration::from_millis(300));
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            for t in threads {
                assert!(t.join().expect("a client thread") > 0);
            }
        });
        let (_, body) = scrape(s.metrics_addr(), "/metrics");
        assert!(
            metric_sum(&body, "stickyd_handbacks_total") > 100.0,
            "{body}"
        );
    }
}
