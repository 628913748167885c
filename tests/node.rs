//! Node.js workers behind `stickyd --ipc node`, with real `node` and real npm packages:
//! sticky-session-custom's five README examples (`examples/node/sticky-session/`, as the README
//! writes them but for `require('stickyd')`), socket.io 4 with long polling
//! (`examples/node/socketio/`) against Node's own cluster round-robin, a worker killed with
//! handles in flight, workers that write what they must not on their channel, a worker's
//! `sticky:masterclose`, its own messages and its own `server.listen()`, the PROXY protocol and
//! the metadata that reach the app, and the npm package's own `node --test` suite.
//!
//! Node and the examples' `node_modules` are not part of the Rust toolchain: without them these
//! tests say so and pass, unless `STICKYD_REQUIRE_NODE=1` (set by `.ci/run`, which installs
//! nodejs and runs `npm ci` in both example folders), which makes that a failure.
//!
//! The apps serve the port stickyd listens on, which they are told by `PORT` (and `PORT2`): the
//! tests bind port 0 themselves and pass the sockets to stickyd by socket activation, so each
//! port is known before stickyd starts its workers.

mod util;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use stickyd::keys::Key;
use util::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn sticky_session_dir() -> PathBuf {
    Path::new(ROOT).join("examples/node/sticky-session")
}

fn socketio_dir() -> PathBuf {
    Path::new(ROOT).join("examples/node/socketio")
}

/// The package's test app (`worker-sdk/node/test/fixtures/http-app.js`): JSON answers, and
/// paths that make a worker misbehave on cue.
fn fixture() -> PathBuf {
    Path::new(ROOT).join("worker-sdk/node/test/fixtures/http-app.js")
}

/// Whether node and the examples' npm packages are there; when they are not, panics if
/// `STICKYD_REQUIRE_NODE=1`, else says so on stderr and returns false (the test passes).
fn node_ready(test: &str) -> bool {
    let mut missing = Vec::new();
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        _ => missing.push("`node` is not on PATH (apt-get install nodejs npm)".to_owned()),
    }
    for (dir, modules) in [
        (sticky_session_dir(), &["stickyd", "async-exit-hook"][..]),
        (
            socketio_dir(),
            &["stickyd", "socket.io", "socket.io-client"][..],
        ),
    ] {
        for m in modules {
            if !dir
                .join("node_modules")
                .join(m)
                .join("package.json")
                .is_file()
            {
                missing.push(format!(
                    "{}/node_modules/{m} is missing (run `npm ci` there)",
                    dir.display()
                ));
            }
        }
    }
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("STICKYD_REQUIRE_NODE").as_deref() != Ok("1"),
        "STICKYD_REQUIRE_NODE=1 and the Node toolchain is not ready: {missing:#?}"
    );
    // Straight to stderr, past the test harness's capture, so the skip is seen.
    let _ = writeln!(
        std::io::stderr(),
        "node::{test}: skipped: {} (STICKYD_REQUIRE_NODE=1 makes this a failure)",
        missing.join("; ")
    );
    false
}

/// A listener on 127.0.0.1, port 0.
fn bind() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = l.local_addr().unwrap().port();
    (l, port)
}

/// Starts `stickyd --ipc node ARGS` on the listeners `names` (bound here on port 0, passed by
/// socket activation), with `PORT` (and `PORT2`; `PORTS`, all of them, for the fixture) set to
/// their ports for the workers, and waits for `workers` workers to be ready. `with_stdout`: the
/// workers' stdout (`console.log`) goes into the log too.
fn start_node(
    names: &[&str],
    args: &[&str],
    env: &[(&str, &str)],
    workers: usize,
    with_stdout: bool,
) -> Stickyd {
    let s = launch_node(names, args, env, with_stdout);
    s.wait_ready(workers);
    s
}

/// As [`start_node`], returning as soon as stickyd listens.
fn launch_node(names: &[&str], args: &[&str], env: &[(&str, &str)], with_stdout: bool) -> Stickyd {
    let bound: Vec<(TcpListener, u16)> = names.iter().map(|_| bind()).collect();
    let pairs: Vec<(&str, &TcpListener)> = names
        .iter()
        .zip(&bound)
        .map(|(name, (l, _))| (*name, l))
        .collect();
    let mut all = vec!["--ipc", "node"];
    all.extend_from_slice(args);
    let mut cmd = activated_command(&pairs, &all);
    for (i, (_, port)) in bound.iter().enumerate() {
        let var = if i == 0 {
            "PORT".to_owned()
        } else {
            format!("PORT{}", i + 1)
        };
        cmd.env(var, port.to_string());
    }
    cmd.env("PORTS", {
        let ports: Vec<String> = bound.iter().map(|(_, p)| p.to_string()).collect();
        ports.join(",")
    });
    for (k, v) in env {
        cmd.env(k, v);
    }
    let s = if with_stdout {
        Stickyd::launch_with_stdout(cmd, names.len())
    } else {
        Stickyd::launch(cmd, names.len())
    };
    let ports: Vec<u16> = s.listeners.iter().map(|(_, a)| a.port()).collect();
    let want: Vec<u16> = bound.iter().map(|(_, p)| *p).collect();
    assert_eq!(
        ports, want,
        "stickyd did not take the sockets it was passed"
    );
    drop(bound);
    s
}

/// sticky-session-custom's `x-forwarded-for` example (`proxy-header.js`) under `--workers 4
/// --key header:x-forwarded-for` and `extra`, its 4 workers ready.
fn start_proxy_header(extra: &[&str]) -> Stickyd {
    let app = example("proxy-header.js");
    let mut args = vec!["--workers", "4", "--key", "header:x-forwarded-for"];
    args.extend_from_slice(extra);
    args.extend(["--", "node", &app]);
    start_node(&["l0"], &args, &[], 4, false)
}

/// A path under the sticky-session examples.
fn example(name: &str) -> String {
    sticky_session_dir()
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// The `<id>` of a body `... worker: <id>`: cluster.worker.id, 1..N (the slot plus one).
fn worker_of(body: &[u8]) -> u32 {
    let text = String::from_utf8_lossy(body);
    text.rsplit("worker: ")
        .next()
        .and_then(|id| id.trim().parse().ok())
        .unwrap_or_else(|| panic!("no worker id in {text:?}"))
}

/// The slot (0-based) a key goes to among `n` workers, as cluster.worker.id (1-based).
fn cluster_id(key: Key<'_>, n: u32) -> u32 {
    owner(key, n) + 1
}

fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(body)))
}

/// How many log lines contain `needle`.
fn count(s: &Stickyd, needle: &str) -> usize {
    s.log().iter().filter(|l| l.contains(needle)).count()
}

/// Waits until `n` log lines contain `needle`.
fn wait_count(s: &Stickyd, needle: &str, n: usize, timeout: Duration) {
    assert!(
        eventually(timeout, || count(s, needle) >= n),
        "fewer than {n} log lines with {needle:?} within {timeout:?}; log: {:#?}",
        s.log()
    );
}

#[test]
fn direct_ip_example_sticks_by_source_address() {
    if !node_ready("direct_ip") {
        return;
    }
    let s = start_node(
        &["l0"],
        &["--workers", "4", "--", "node", &example("direct-ip.js")],
        &[],
        4,
        false,
    );
    let mut seen = HashSet::new();
    for round in 0..3 {
        for n in 2..22u8 {
            let source = lo(n);
            let r = get(s.addr(), Some(source), "/", &[]);
            assert_eq!(r.status, 200);
            let id = worker_of(&r.body);
            assert_eq!(
                id,
                cluster_id(Key::Addr(source), 4),
                "{source} in round {round}"
            );
            seen.insert(id);
        }
    }
    assert!(seen.len() >= 3, "20 sources reached only workers {seen:?}");
    // The seed's `workers: 4` option is named once, with the flag that replaces it.
    assert_eq!(count(&s, "option workers: 4 is stickyd's `--workers 4`"), 1);
}

#[test]
fn workers_whose_app_listens_late_get_no_connection_before_and_every_key_its_own() {
    if !node_ready("listens_late") {
        return;
    }
    // Node is online at once, but each app hands its server to the package 1.5 s later: the
    // worker is ready then, not before. Clients send from the first moment the port answers.
    for round in 0..2 {
        let s = launch_node(
            &["l0"],
            &["--workers", "4", "--", "node", &fixture().to_string_lossy()],
            &[("LATE_MS", "1500")],
            false,
        );
        let addr = s.addr();
        let clients: Vec<_> = (2..22u8)
            .map(|n| {
                std::thread::spawn(move || {
                    let source = lo(n);
                    (0..3)
                        .map(|_| {
                            let r = get(addr, Some(source), "/", &[]);
                            assert_eq!(r.status, 200, "{source}: {r:?}");
                            json(&r.body)["worker"].as_u64().expect("worker") as u32
                        })
                        .collect::<Vec<u32>>()
                })
            })
            .collect();
        for (n, client) in (2..22u8).zip(clients) {
            let source = lo(n);
            let ids = client.join().expect("client");
            let want = cluster_id(Key::Addr(source), 4);
            assert!(
                ids.iter().all(|&id| id == want),
                "round {round}: {source} (worker {want}) was served by {ids:?}; log: {:#?}",
                s.log()
            );
        }
        // No worker was ready before an app began to listen (each app writes that line
        // before it hands its server to the package, which then says ready).
        let log = s.log();
        let first = |needle: &str| log.iter().position(|l| l.contains(needle));
        let registering = first("fixture: registering").expect("an app registered its server");
        let ready = first(" ready (pid ").expect("a worker was ready");
        assert!(registering < ready, "ready before listening; log: {log:#?}");
    }
}

#[test]
fn proxy_header_example_sticks_by_x_forwarded_for() {
    if !node_ready("proxy_header") {
        return;
    }
    let s = start_proxy_header(&[]);
    let mut seen = HashSet::new();
    for n in 1..25u8 {
        let client = IpAddr::V4(Ipv4Addr::new(203, 0, 113, n));
        let want = cluster_id(Key::Addr(client), 4);
        // The same client through different proxies (sources), and with a proxy chain after
        // it: always its own worker.
        for (source, header) in [
            (lo(2), format!("X-Forwarded-For: {client}")),
            (lo(3), format!("X-Forwarded-For: {client}, 10.0.0.1")),
            (lo(4), format!("x-forwarded-for: {client}:5555")),
        ] {
            let r = get(s.addr(), Some(source), "/", &[&header]);
            assert_eq!(r.status, 200);
            assert_eq!(worker_of(&r.body), want, "{header} from {source}");
        }
        seen.insert(want);
    }
    assert!(seen.len() >= 3, "24 clients reached only workers {seen:?}");
    assert_eq!(count(&s, "`--key header:x-forwarded-for`"), 1);
}

#[test]
fn custom_logic_example_sticks_by_token() {
    if !node_ready("custom_token") {
        return;
    }
    let s = start_node(
        &["l0"],
        &[
            "--workers",
            "4",
            "--key",
            "query:token",
            "--",
            "node",
            &example("custom-token.js"),
        ],
        &[],
        4,
        false,
    );
    let mut seen = HashSet::new();
    for n in 0..24u32 {
        let token = format!("user-{n}");
        let want = cluster_id(Key::Bytes(token.as_bytes()), 4);
        // One user from several addresses, the token anywhere in the query.
        for (source, path) in [
            (lo(2), format!("/?token={token}")),
            (lo(3), format!("/app?x=1&token={token}")),
            (lo(4), format!("/?token={token}&y=2")),
        ] {
            let r = get(s.addr(), Some(source), &path, &[]);
            assert_eq!(r.status, 200);
            assert_eq!(worker_of(&r.body), want, "{path} from {source}");
        }
        seen.insert(want);
    }
    assert!(seen.len() >= 3, "24 tokens reached only workers {seen:?}");
    // No token: the fallback, the client address.
    for n in 2..8u8 {
        let r = get(s.addr(), Some(lo(n)), "/", &[]);
        assert_eq!(worker_of(&r.body), cluster_id(Key::Addr(lo(n)), 4));
    }
    assert_eq!(count(&s, "option generatePrehashArray: "), 1);
}

#[test]
fn multiple_servers_example_shares_one_pool() {
    if !node_ready("multiple_servers") {
        return;
    }
    let s = start_node(
        &["l0", "l1"],
        &[
            "--workers",
            "4",
            "--",
            "node",
            &example("multiple-servers.js"),
        ],
        &[],
        4,
        false,
    );
    let (a, b) = (s.listeners[0].1, s.listeners[1].1);
    for n in 2..22u8 {
        let source = lo(n);
        let want = cluster_id(Key::Addr(source), 4);
        let r1 = get(a, Some(source), "/", &[]);
        let r2 = get(b, Some(source), "/", &[]);
        assert_eq!(
            String::from_utf8_lossy(&r1.body),
            format!("from server1, worker: {want}")
        );
        assert_eq!(
            String::from_utf8_lossy(&r2.body),
            format!("from server2, worker: {want}")
        );
    }
    assert_eq!(
        count(
            &s,
            "dontUseExistingWorkers: false: under stickyd every listener shares"
        ),
        1
    );
}

#[test]
fn graceful_shutdown_example_runs_its_exit_hooks_and_finishes_the_request_in_flight() {
    if !node_ready("graceful_shutdown") {
        return;
    }
    let mut s = start_node(
        &["l0"],
        &[
            "--workers",
            "4",
            "--grace",
            "20s",
            "--",
            "node",
            &example("graceful-shutdown.js"),
        ],
        &[],
        4,
        true,
    );
    let source = lo(7);
    let want = cluster_id(Key::Addr(source), 4);
    let mut c = connect(s.addr(), Some(source));
    c.write_all(request("/", &[]).as_bytes()).unwrap();
    assert_eq!(worker_of(&read_response(&mut c).body), want);
    // The next request on the kept-alive connection is half written when stickyd is told to
    // stop.
    let second = request("/", &[]);
    let (head, tail) = second.split_at(second.len() - 2);
    c.write_all(head.as_bytes()).unwrap();
    let stopped = Instant::now();
    s.signal(libc::SIGTERM);
    // Every worker runs the example's exit hook (async-exit-hook, on the SIGINT the package
    // emits when stickyd drains it).
    wait_count(
        &s,
        "Worker received exit signal. Shutting down...",
        4,
        TIMEOUT,
    );
    c.write_all(tail.as_bytes()).unwrap();
    let r = read_response(&mut c);
    assert_eq!(r.status, 200);
    assert_eq!(worker_of(&r.body), want);
    // The hooks' last line, 3 s later, from every worker.
    assert!(
        eventually(TIMEOUT, || s
            .log()
            .iter()
            .filter(|l| *l == "shutdown")
            .count()
            == 4),
        "not 4 `shutdown` lines; log: {:#?}",
        s.log()
    );
    let status = s.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(0), "log: {:#?}", s.log());
    assert!(
        stopped.elapsed() >= Duration::from_millis(2900),
        "stickyd exited {:?} after SIGTERM: before the hooks' 3 s",
        stopped.elapsed()
    );
    // The hooks finished: no worker had to be killed.
    let killed: Vec<String> = s
        .log()
        .into_iter()
        .filter(|l| l.contains("SIGKILL") || l.contains("killing"))
        .collect();
    assert!(killed.is_empty(), "{killed:#?}");
}

#[test]
fn a_worker_asks_for_the_pool_to_shut_down_with_masterclose() {
    if !node_ready("masterclose") {
        return;
    }
    let mut s = start_node(
        &["l0"],
        &["--workers", "2", "--", "node", &fixture().to_string_lossy()],
        &[("EXIT_HOOK", "300")],
        2,
        false,
    );
    let r = get(s.addr(), Some(lo(2)), "/close?wait=1", &[]);
    assert_eq!(r.status, 200);
    let status = s.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(0), "log: {:#?}", s.log());
    // Each worker was drained the sticky-session way: its SIGINT listener ran.
    assert_eq!(count(&s, "fixture: SIGINT hook"), 2, "log: {:#?}", s.log());
}

#[test]
fn the_proxy_header_is_consumed_and_the_app_sees_the_client_and_stickyds_metadata() {
    if !node_ready("proxy_protocol") {
        return;
    }
    let s = start_node(
        &["web"],
        &[
            "--workers",
            "2",
            "--proxy-protocol",
            "--trust",
            "127.0.0.0/8",
            "--",
            "node",
            &fixture().to_string_lossy(),
        ],
        &[],
        2,
        false,
    );
    let port = s.addr().port();
    for n in 1..9u8 {
        let client = IpAddr::V4(Ipv4Addr::new(198, 51, 100, n));
        let header = format!("PROXY TCP4 {client} 127.0.0.1 4{n:04} {port}\r\n");
        let body = "x".repeat(3000 + usize::from(n));
        let req = format!(
            "POST /p{n} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut c = connect(s.addr(), Some(lo(2)));
        c.write_all(header.as_bytes()).unwrap();
        c.write_all(req.as_bytes()).unwrap();
        let r = read_response(&mut c);
        assert_eq!(r.status, 200);
        let v = json(&r.body);
        let slot = owner(Key::Addr(client), 2);
        // The application reads the client's address where it reads any client's.
        assert_eq!(v["peer"], client.to_string(), "{v}");
        assert_eq!(v["peerPort"], 40000 + u64::from(n), "{v}");
        assert_eq!(v["url"], format!("/p{n}"));
        assert_eq!(v["body"], body.as_str(), "the bytes after the PROXY header");
        assert_eq!(v["worker"], slot + 1);
        // What stickyd said with the connection, and in its welcome.
        assert_eq!(v["info"]["listener"], "web");
        assert_eq!(v["info"]["index"], 0);
        assert_eq!(v["info"]["port"], port);
        assert_eq!(v["info"]["address"], client.to_string());
        assert_eq!(v["info"]["proxyLen"], header.len());
        let hash = v["info"]["hash"].as_str().expect("hash");
        assert!(
            hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
            "{hash:?}"
        );
        assert_eq!(
            v["listeners"],
            serde_json::json!([{"name": "web", "address": "127.0.0.1", "port": port}])
        );
        assert_eq!(v["pool"], serde_json::json!({"worker": slot, "workers": 2}));
    }
}

/// A running `node cluster.js` (Node's own cluster, round-robin), killed on drop.
struct NodeCluster {
    child: Child,
    addr: SocketAddr,
}

impl NodeCluster {
    fn start() -> NodeCluster {
        let mut child = Command::new("node")
            .arg(socketio_dir().join("cluster.js"))
            .env("PORT", "0")
            .env("HOST", "127.0.0.1")
            .env("WORKERS", "4")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start node cluster.js");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("cluster: listening on ") {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let addr = rx
            .recv_timeout(TIMEOUT)
            .expect("cluster.js said where it listens")
            .parse()
            .expect("cluster address");
        NodeCluster { child, addr }
    }
}

impl Drop for NodeCluster {
    fn drop(&mut self) {
        // Its workers exit when the primary's channel closes.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `load.js` against `addr`: its JSON summary.
fn socketio_load(addr: SocketAddr) -> Value {
    let out = Command::new("node")
        .arg(socketio_dir().join("load.js"))
        .args(["--url", &format!("http://{addr}")])
        .args(["--clients", "200", "--sources", "20", "--rounds", "20"])
        .args(["--first-source", "10", "--deadline-ms", "120000"])
        .stdin(Stdio::null())
        .output()
        .expect("run load.js");
    assert!(
        out.status.success(),
        "load.js failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("load.js against {addr}: {text}");
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("load.js summary {text:?}: {e}"))
}

#[test]
fn socketio_polling_sessions_stick_under_stickyd_and_break_on_node_cluster_round_robin() {
    if !node_ready("socketio") {
        return;
    }
    let server = socketio_dir().join("server.js");
    let s = start_node(
        &["l0"],
        &["--workers", "4", "--", "node", &server.to_string_lossy()],
        &[],
        4,
        false,
    );
    let summary = socketio_load(s.addr());
    assert_eq!(summary["connected"], 200, "{summary}");
    assert_eq!(summary["completed"], 200, "{summary}");
    assert_eq!(summary["roundTrips"], 200 * 20, "{summary}");
    assert_eq!(summary["failures"], 0, "{summary}");
    assert_eq!(summary["status400"], 0, "{summary}");
    assert_eq!(summary["sessionUnknown"], 0, "{summary}");
    assert_eq!(summary["moved"], 0, "{summary}");
    assert_eq!(summary["errors"], serde_json::json!({}), "{summary}");
    let workers = summary["workers"].as_object().expect("workers");
    assert!(workers.len() >= 3, "20 sources reached only {workers:?}");
    assert_eq!(count(&s, "Session ID unknown"), 0);
    assert_eq!(count(&s, "connection_error"), 0);
    drop(s);

    // The negative control: the same app and the same load on Node's cluster round-robin.
    let cluster = NodeCluster::start();
    let summary = socketio_load(cluster.addr);
    let failures = summary["failures"].as_u64().unwrap();
    let status400 = summary["status400"].as_u64().unwrap();
    let unknown = summary["sessionUnknown"].as_u64().unwrap();
    assert!(
        failures > 0 && status400 > 0 && unknown > 0,
        "Node's cluster round-robin kept every polling session on its worker: {summary}"
    );
}

/// A worker (fixture) answering JSON with its pid: the body's pid and cluster worker id.
fn pid_and_id(r: &Response) -> (u64, u64) {
    let v = json(&r.body);
    (
        v["pid"].as_u64().expect("pid"),
        v["worker"].as_u64().expect("worker"),
    )
}

/// The sum of a metric's samples for worker `slot` (all listeners).
fn per_worker(metrics: SocketAddr, name: &str, slot: u32) -> u64 {
    let (_, text) = scrape(metrics, "/metrics");
    let label = format!("worker=\"{slot}\"");
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{') && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Sources (127.0.0.n) whose address key goes to `slot` among `workers`.
fn sources_of(slot: u32, workers: u32, how_many: usize) -> Vec<IpAddr> {
    (2..=250u8)
        .map(lo)
        .filter(|&ip| owner(Key::Addr(ip), workers) == slot)
        .take(how_many)
        .collect()
}

#[test]
fn a_worker_killed_with_handles_in_flight_loses_no_connection_and_serves_none_twice() {
    if !node_ready("killed_worker") {
        return;
    }
    let s = start_node(
        &["l0"],
        &[
            "--workers",
            "2",
            "--metrics",
            "127.0.0.1:0",
            "--",
            "node",
            &fixture().to_string_lossy(),
        ],
        &[("LOG_REQUESTS", "1")],
        2,
        false,
    );
    let metrics = s.metrics_addr();
    let to_0 = sources_of(0, 2, 21);
    let to_1 = sources_of(1, 2, 5);
    // Worker 0 answers, then stands still for 20 s: it reads nothing more from its channel,
    // so the connections stickyd hands it meanwhile stay in flight (not acknowledged).
    let first = get(s.addr(), Some(to_0[0]), "/block?ms=20000", &[]);
    let (victim, id) = pid_and_id(&first);
    assert_eq!(id, 1);
    assert_eq!(victim, u64::from(s.worker_pid(0)));
    const N: usize = 40;
    let mut clients: Vec<(String, TcpStream)> = (0..N)
        .map(|i| {
            let url = format!("/r{i}");
            let mut c = connect(s.addr(), Some(to_0[1 + i % 20]));
            c.write_all(request(&url, &["Connection: close"]).as_bytes())
                .unwrap();
            (url, c)
        })
        .collect();
    // Worker 1 meanwhile serves its own clients.
    for &source in &to_1 {
        let r = get(s.addr(), Some(source), "/", &[]);
        assert_eq!(pid_and_id(&r).1, 2);
    }
    // The N connections were sent to worker 0 and are in flight: not acknowledged (its event
    // loop stands still), and none was answered.
    assert!(
        eventually(TIMEOUT, || per_worker(
            metrics,
            "stickyd_unacked_connections",
            0
        ) == N as u64),
        "not all {N} connections are in flight to worker 0: {}",
        scrape(metrics, "/metrics").1
    );
    for (url, c) in &mut clients {
        c.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut byte = [0u8; 1];
        match c.read(&mut byte) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("{url} answered by a blocked worker? {other:?}"),
        }
        c.set_read_timeout(Some(TIMEOUT)).unwrap();
    }
    signal(victim as u32, libc::SIGKILL);
    // Every connection is answered once, by worker 0's replacement (same cluster.worker.id).
    for (url, c) in &mut clients {
        let mut text = Vec::new();
        c.read_to_end(&mut text)
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let text = String::from_utf8_lossy(&text).into_owned();
        assert_eq!(
            text.matches("HTTP/1.1 200 OK").count(),
            1,
            "{url} got {text:?}"
        );
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let v = json(body.as_bytes());
        assert_eq!(v["url"], url.as_str());
        assert_eq!(v["worker"], 1, "{url}: {v}");
        assert_ne!(v["pid"].as_u64(), Some(victim), "{url}");
    }
    assert_eq!(s.ready_count(0), 2, "log: {:#?}", s.log());
    // All N were in flight (unacknowledged) when worker 0 died, and were dispatched again.
    let (_, text) = scrape(metrics, "/metrics");
    assert_eq!(
        metric_sum(&text, "stickyd_redispatched_total"),
        N as f64,
        "{text}"
    );
    // Served once each, by one process: counted from the workers' own log lines (read by
    // another thread: wait until each has come).
    wait_count(&s, "fixture: served /r", N, TIMEOUT);
    let mut served: HashMap<String, usize> = HashMap::new();
    for line in s.log() {
        if let Some(rest) = line.strip_prefix("fixture: served /r") {
            let url = format!("/r{}", rest.split(' ').next().unwrap());
            *served.entry(url).or_default() += 1;
        }
    }
    for (url, _) in &clients {
        assert_eq!(served.get(url), Some(&1), "{url} served {served:?}");
    }
    assert_eq!(served.len(), N);
}

/// Starts two fixture workers; worker 0 misbehaves on `/bad?kind=KIND` after answering. The
/// log line stickyd writes must contain `expect`; worker 0 is restarted, worker 1 not touched.
fn bad_worker(kind: &str, expect: &str) {
    let s = start_node(
        &["l0"],
        &["--workers", "2", "--", "node", &fixture().to_string_lossy()],
        &[],
        2,
        false,
    );
    let to_0 = sources_of(0, 2, 3);
    let to_1 = sources_of(1, 2, 3);
    let pid0 = u64::from(s.worker_pid(0));
    let pid1 = u64::from(s.worker_pid(1));
    // A kept-alive connection to worker 1, open across worker 0's fall.
    let mut kept = connect(s.addr(), Some(to_1[0]));
    kept.write_all(request("/", &[]).as_bytes()).unwrap();
    assert_eq!(pid_and_id(&read_response(&mut kept)), (pid1, 2));

    let r = get(s.addr(), Some(to_0[0]), &format!("/bad?kind={kind}"), &[]);
    assert_eq!(pid_and_id(&r), (pid0, 1));
    let line = s.wait_log("ending it", TIMEOUT);
    assert!(
        line.contains("worker 0") && line.contains(expect),
        "the log line about worker 0 does not say {expect:?}: {line:?}"
    );
    assert!(
        eventually(TIMEOUT, || s.ready_count(0) == 2),
        "worker 0 was not restarted; log: {:#?}",
        s.log()
    );
    // Worker 0's clients reach its replacement; worker 1 kept its process and its connection.
    let r = get(s.addr(), Some(to_0[1]), "/", &[]);
    let (pid, id) = pid_and_id(&r);
    assert_eq!(id, 1);
    assert_ne!(pid, pid0);
    kept.write_all(request("/", &[]).as_bytes()).unwrap();
    assert_eq!(pid_and_id(&read_response(&mut kept)), (pid1, 2));
    for &source in &to_1 {
        assert_eq!(
            pid_and_id(&get(s.addr(), Some(source), "/", &[])),
            (pid1, 2)
        );
    }
    assert_eq!(s.ready_count(1), 1);
    assert_eq!(count(&s, "ending it"), 1, "log: {:#?}", s.log());
}

#[test]
fn a_worker_writing_a_line_that_is_not_json_is_restarted_alone() {
    if node_ready("bad_not_json") {
        bad_worker("garbage", "not JSON");
    }
}

#[test]
fn a_worker_sending_an_unknown_internal_message_is_restarted_alone() {
    if node_ready("bad_unknown_cmd") {
        bad_worker("bogus", "NODE_BOGUS");
    }
}

#[test]
fn a_worker_writing_a_line_over_1_mib_is_restarted_alone() {
    if node_ready("bad_huge_line") {
        bad_worker("huge", "longer than");
    }
}

#[test]
fn app_messages_are_ignored_and_listen_in_a_worker_is_refused_with_enotsup() {
    if !node_ready("user_messages") {
        return;
    }
    let s = start_node(
        &["l0"],
        &["--workers", "1", "--", "node", &fixture().to_string_lossy()],
        &[],
        1,
        false,
    );
    let pid = u64::from(s.worker_pid(0));
    // The app's own messages: stickyd logs the first and ignores them; the worker stays.
    for _ in 0..3 {
        let r = get(s.addr(), Some(lo(2)), "/usermsg", &[]);
        assert_eq!(pid_and_id(&r), (pid, 1));
    }
    std::thread::sleep(Duration::from_millis(300));
    // server.listen() in the worker: Node asks its "primary" (queryServer); stickyd refuses.
    let r = get(s.addr(), Some(lo(2)), "/listen", &[]);
    assert_eq!(
        json(&r.body)["listenError"],
        "ENOTSUP",
        "log: {:#?}",
        s.log()
    );
    let r = get(s.addr(), Some(lo(2)), "/", &[]);
    assert_eq!(pid_and_id(&r), (pid, 1));
    assert_eq!(s.ready_count(0), 1);
    assert_eq!(count(&s, "ending it"), 0, "log: {:#?}", s.log());
    // Three messages of the app's own: one log line for the worker.
    let own: Vec<String> = s
        .log()
        .into_iter()
        .filter(|l| {
            l.starts_with("stickyd: ") && l.contains("worker 0") && l.contains("process.send")
        })
        .collect();
    assert_eq!(own.len(), 1, "{own:#?}");
    // The refusal names the fix.
    assert!(
        s.log()
            .iter()
            .any(|l| l.contains("ENOTSUP") && l.contains("require('stickyd').listen")),
        "no log line naming the fix; log: {:#?}",
        s.log()
    );
}

#[test]
fn the_npm_packages_own_tests_pass() {
    if !node_ready("npm_package_tests") {
        return;
    }
    // worker-sdk/node/test/*.test.js (node:test, no dependencies): the package against a fake
    // stickyd made of Node's own ChildProcess, and outside stickyd.
    let dir = Path::new(ROOT).join("worker-sdk/node");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("test"))
        .expect("worker-sdk/node/test")
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".test.js"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let out = Command::new("node")
        .arg("--test")
        .args(&files)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
        .expect("run node --test");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node --test failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("# fail 0"), "{text}");
}

#[test]
fn with_rehash_per_request_node_workers_hand_kept_alive_connections_back() {
    if !node_ready("rehash") {
        return;
    }
    let s = start_proxy_header(&["--rehash-per-request", "--metrics", "127.0.0.1:0"]);
    let clients: Vec<IpAddr> = (1..=24u8)
        .map(|n| IpAddr::V4(Ipv4Addr::new(203, 0, 113, n)))
        .collect();
    let want = |ip| cluster_id(Key::Addr(ip), 4);
    assert!(clients.iter().any(|&ip| want(ip) != want(clients[0])));
    let mut c = connect(s.addr(), None);
    // One request at a time on one connection, as a proxy reusing it sends them: each by its
    // own key's worker, the connection handed back after every response.
    for round in 0..2 {
        for &ip in &clients {
            let xff = format!("X-Forwarded-For: {ip}");
            c.write_all(request("/", &[&xff]).as_bytes()).unwrap();
            let r = read_response(&mut c);
            assert_eq!(r.status, 200);
            assert_eq!(worker_of(&r.body), want(ip), "round {round}, {ip}");
        }
    }
    let metrics = s.metrics_addr();
    let totals = || {
        let (_, body) = scrape(metrics, "/metrics");
        (
            metric_sum(&body, "stickyd_connections_accepted_total"),
            metric_sum(&body, "stickyd_handbacks_total"),
        )
    };
    let wanted = (1.0, 48.0);
    assert!(eventually(TIMEOUT, || totals() == wanted), "{:?}", totals());
    // Pipelined requests cannot be left in the socket by Node (its parser reads them with the
    // first): they are answered where they were read, in order, none lost.
    let all: String = clients[..6]
        .iter()
        .map(|ip| request("/", &[&format!("X-Forwarded-For: {ip}")]))
        .collect();
    c.write_all(all.as_bytes()).unwrap();
    for _ in 0..6 {
        assert_eq!(read_response(&mut c).status, 200);
    }
    // And the connection goes on being routed per request after them.
    for &ip in &clients[..4] {
        c.write_all(request("/", &[&format!("X-Forwarded-For: {ip}")]).as_bytes())
            .unwrap();
        assert_eq!(worker_of(&read_response(&mut c).body), want(ip), "{ip}");
    }
}

#[test]
fn with_rehash_per_request_behind_haproxy_reusing_its_connections_node_requests_reach_their_keys_worker()
 {
    if !node_ready("rehash_haproxy") {
        return;
    }
    let Some(bin) = util::haproxy::required("rehash_haproxy") else {
        return;
    };
    let s = start_proxy_header(&["--rehash-per-request"]);
    // The HAProxy configuration the docs show: `http-reuse always`, 2 connections to stickyd.
    let config = Path::new(ROOT).join("examples/haproxy/reuse.cfg");
    let frontend = TcpListener::bind("127.0.0.1:0").expect("bind the frontend");
    let front = frontend.local_addr().unwrap();
    let backend = [("STICKYD_BACKEND", s.addr().to_string())];
    let _proxy = util::haproxy::Haproxy::start(&bin, &config, frontend, &backend);
    // 40 clients, 3 rounds, 4 at a time, each request a new connection to HAProxy.
    let clients: Vec<IpAddr> = (1..=40u8)
        .map(|n| IpAddr::V4(Ipv4Addr::new(203, 0, 113, n)))
        .collect();
    let strays: Vec<(IpAddr, u32)> = std::thread::scope(|scope| {
        let threads: Vec<_> = clients
            .chunks(10)
            .map(|share| {
                scope.spawn(move || {
                    let mut strays = Vec::new();
                    for _ in 0..3 {
                        for &ip in share {
                            let xff = format!("X-Forwarded-For: {ip}");
                            let r = get(front, None, "/", &[&xff, "Connection: close"]);
                            assert_eq!(r.status, 200, "{ip}");
                            let w = worker_of(&r.body);
                            if w != cluster_id(Key::Addr(ip), 4) {
                                strays.push((ip, w));
                            }
                        }
                    }
                    strays
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().expect("a client thread"))
            .collect()
    });
    assert!(
        strays.is_empty(),
        "{} of 120 elsewhere: {strays:?}",
        strays.len()
    );
}
