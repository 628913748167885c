//! `--rehash-per-request`: a kept-alive connection carrying the requests of many clients (a
//! front proxy that reuses its backend connections) has each request served by its key's
//! worker. The worker hands the connection back at the request boundary, none of the next
//! request read, and the master routes it again by that request's key.

mod util;

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::Path;

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

#[test]
fn pipelined_requests_are_answered_in_order_with_every_byte() {
    // Requests already read by the worker are never handed back: the worker that read them
    // answers them, in order; the connection goes back once nothing of the next is read.
    let s = start(&["--rehash-per-request"]);
    let ips = clients(6);
    let mut c = connect(s.addr(), None);
    let all: String = ips
        .iter()
        .map(|ip| request(&format!("/?n={ip}"), &[&format!("X-Forwarded-For: {ip}")]))
        .collect();
    c.write_all(all.as_bytes()).unwrap();
    let first = read_response(&mut c).worker();
    assert_eq!(first, owner_of(ips[0]));
    for _ in 1..ips.len() {
        let r = read_response(&mut c);
        assert_eq!(r.status, 200);
        assert_eq!(r.body, format!("worker: {}\n", r.worker()).into_bytes());
    }
    // Then, one request at a time: each by its own worker again.
    let served = one_connection_on(&mut c, &ips);
    for (ip, w) in served {
        assert_eq!(w, owner_of(ip), "{ip}");
    }
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
