//! Beyond one machine: HAProxy running `examples/haproxy/multi-host.cfg` in front of two
//! stickyd "hosts" (two masters on 127.0.0.2 and 127.0.0.3, `--proxy-protocol --trust`). Every
//! client keeps its host and its worker, the workers see the client's own address, and when a
//! host stops, HAProxy's health check moves its clients to the other one.
//!
//! HAProxy is not part of the Rust toolchain: without it the test says so and passes, unless
//! `STICKYD_REQUIRE_HAPROXY=1` (set by `.ci/run`, which installs it).

mod util;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stickyd::keys::Key;
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

/// `haproxy` on PATH, or where distributions install it (`/usr/sbin` is not on every user's
/// PATH).
fn find_haproxy() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("haproxy"))
        .find(|bin| bin.is_file())
}

/// A running `haproxy -db` (foreground), killed on drop.
struct Haproxy {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Haproxy {
    /// Checks `CONFIG` with `hosts` filled in, then runs it with its frontend on `frontend`
    /// (inherited, so no other process can take the port between choosing and binding it).
    fn start(bin: &Path, frontend: TcpListener, hosts: [SocketAddr; 2]) -> Haproxy {
        let env = |front: String| {
            [
                ("STICKYD_FRONTEND", front),
                ("STICKYD_HOST_A", hosts[0].to_string()),
                ("STICKYD_HOST_B", hosts[1].to_string()),
            ]
        };
        let front_addr = frontend.local_addr().expect("frontend address");
        let check = Command::new(bin)
            .args(["-c", "-f", CONFIG])
            .envs(env(front_addr.to_string()))
            .output()
            .expect("run haproxy -c");
        assert!(
            check.status.success(),
            "haproxy rejects {CONFIG}: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );

        let fd: RawFd = frontend.as_raw_fd();
        let parent = std::process::id();
        let mut cmd = Command::new(bin);
        cmd.args(["-db", "-f", CONFIG])
            .envs(env(format!("fd@{fd}")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let inherit_and_die_with_parent = move || -> std::io::Result<()> {
            // SAFETY: fcntl on an fd number the parent's `frontend` keeps open across the fork;
            // clearing FD_CLOEXEC in the child touches no memory.
            if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: prctl with integer arguments only; async-signal-safe.
            if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: getppid has no memory effects.
            if unsafe { libc::getppid() } as u32 != parent {
                return Err(std::io::Error::other(
                    "the test exited before haproxy started",
                ));
            }
            Ok(())
        };
        // SAFETY: the closure calls only fcntl, prctl and getppid, which are async-signal-safe,
        // and allocates nothing on success.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, inherit_and_die_with_parent)
        };
        let mut child = cmd.spawn().expect("start haproxy");
        // haproxy holds the frontend now: if it dies, clients are refused rather than queued.
        drop(frontend);

        let pid = child.id();
        let stderr = child.stderr.take().expect("haproxy stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[haproxy {pid}] {line}");
                sink.lock().unwrap().push(line);
            }
        });
        Haproxy { child, log }
    }

    /// Waits until a line of haproxy's stderr contains `needle`.
    fn wait_log(&mut self, needle: &str) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let log = self.log.lock().unwrap().clone();
            if log.iter().any(|l| l.contains(needle)) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("haproxy exited ({status}) before logging {needle:?}; log: {log:#?}");
            }
            assert!(
                Instant::now() < deadline,
                "haproxy logged no {needle:?} within {TIMEOUT:?}; log: {log:#?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every line of haproxy's stderr so far.
    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
    let Some(bin) = find_haproxy() else {
        assert!(
            std::env::var("STICKYD_REQUIRE_HAPROXY").as_deref() != Ok("1"),
            "haproxy is not on PATH (nor in /usr/sbin, /usr/local/sbin) and \
             STICKYD_REQUIRE_HAPROXY=1"
        );
        // Straight to stderr, past the test harness's capture, so the skip is seen.
        let _ = writeln!(
            std::io::stderr(),
            "multi_host: skipped: haproxy is not on PATH (STICKYD_REQUIRE_HAPROXY=1 makes this \
             a failure)"
        );
        return;
    };

    let mut host_a = start_host("hostA", 2);
    let host_b = start_host("hostB", 3);
    let frontend = TcpListener::bind("127.0.0.1:0").expect("bind the frontend");
    let front = frontend.local_addr().unwrap();
    let mut haproxy = Haproxy::start(&bin, frontend, [host_a.addr(), host_b.addr()]);

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
