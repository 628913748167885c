//! Beyond one machine: HAProxy running `examples/haproxy/multi-host.cfg` in front of two
//! stickyd "hosts" (two masters on 127.0.0.2 and 127.0.0.3, `--proxy-protocol --trust`). Every
//! client keeps its host and its worker, the workers see the client's own address, and when a
//! host stops, HAProxy's health check moves its clients to the other one.
//!
//! HAProxy is not part of the Rust toolchain: without it the test says so and passes, unless
//! `STICKYD_REQUIRE_HAPROXY=1` (set by `.ci/run`, which installs it).

mod util;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::Path;

use stickyd::keys::Key;
use util::haproxy::{self, Haproxy};
use util::*;

/// The configuration docs/src/many-hosts.md shows.
const CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/haproxy/multi-host.cfg"
);

const WORKERS: u32 = 2;

/// The clients: one source address each, 127.0.0.10 to 127.0.0.21.
const CLIENTS: std::ops::Range<u8> = 10..22;

/// Where a client's request went: (listener name = host, worker).
type Placement = (String, u32);

/// One stickyd host: its listener is named after it, so `X-Listener` tells the hosts apart.
fn start_host(name: &str, ip: u8) -> Stickyd {
    let listen = format!("{name}=127.0.0.{ip}:0");
    let workers = WORKERS.to_string();
    Stickyd::start_ready(
        &[
            "--proxy-protocol",
            "--trust",
            "127.0.0.0/8",
            "--workers",
            &workers,
            "--listen",
            &listen,
        ],
        WORKERS as usize,
    )
}

/// One request through the balancer from `client`: checks that the worker saw the client's own
/// address and is the one stickyd's hash picks for it, and says where it went.
fn place(front: SocketAddr, client: IpAddr) -> Placement {
    let r = get(front, Some(client), "/", &[]);
    assert_eq!(r.status, 200, "{client}: {r:?}");
    let peer = client.to_string();
    assert_eq!(
        r.header("x-peer"),
        Some(peer.as_str()),
        "the worker must see the address the PROXY header carried, not the balancer's"
    );
    assert_eq!(r.worker(), owner(Key::Addr(client), WORKERS), "{client}");
    let host = r.header("x-listener").expect("X-Listener").to_owned();
    (host, r.worker())
}

#[test]
fn haproxy_keeps_each_client_on_one_host_and_one_worker_and_fails_over() {
    let Some(bin) = haproxy::required("multi_host") else {
        return;
    };

    let mut host_a = start_host("hostA", 2);
    let host_b = start_host("hostB", 3);
    let frontend = TcpListener::bind("127.0.0.1:0").expect("bind the frontend");
    let front = frontend.local_addr().unwrap();
    let hosts = [
        ("STICKYD_HOST_A", host_a.addr().to_string()),
        ("STICKYD_HOST_B", host_b.addr().to_string()),
    ];
    let mut haproxy = Haproxy::start(&bin, Path::new(CONFIG), frontend, &hosts);

    // Each client, three times over: always the same host and the same worker.
    let mut placed: HashMap<IpAddr, Placement> = HashMap::new();
    for round in 0..3 {
        for client in CLIENTS.map(lo) {
            let now = place(front, client);
            let first = placed.entry(client).or_insert_with(|| now.clone());
            assert_eq!(*first, now, "{client} moved in round {round}");
        }
    }
    let hosts: HashSet<&str> = placed.values().map(|(h, _)| h.as_str()).collect();
    assert_eq!(
        hosts,
        HashSet::from(["hostA", "hostB"]),
        "the clients should spread over both hosts: {placed:?}"
    );
    assert!(
        !haproxy.log().iter().any(|l| l.contains(" is DOWN")),
        "a host went down while both were running: {:#?}",
        haproxy.log()
    );

    // Host A stops: once the health check has marked it down, its clients are served by host
    // B (on the worker the same hash picks there), and host B's clients stay where they were.
    host_a.signal(libc::SIGTERM);
    assert!(host_a.wait_exit(TIMEOUT).success(), "host A's exit");
    haproxy.wait_log("host-a is DOWN");
    for client in CLIENTS.map(lo) {
        let now = place(front, client);
        assert_eq!(now.0, "hostB", "{client} after host A stopped");
        if placed[&client].0 == "hostB" {
            assert_eq!(
                placed[&client], now,
                "{client} was on host B and must stay put"
            );
        }
    }
}
