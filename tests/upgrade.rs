//! The zero-downtime upgrade (SIGUSR2): a successor takes over the listeners while clients keep
//! coming, every key stays on its worker id, and a successor that fails leaves the old master
//! serving.
//!
//! A successor outlives the master that started it. These tests make themselves the reaper of
//! orphans (`PR_SET_CHILD_SUBREAPER`), so that a successor becomes their child when its
//! predecessor exits, and they can wait for it and read its exit status.

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use util::*;

/// How many keys the clients use.
const KEYS: u8 = 20;

/// The key header for key `k`.
fn xff(k: u8) -> String {
    format!("X-Forwarded-For: 192.0.2.{k}")
}

/// One request for key `k` on a new connection: the worker that answered (and `false`: see
/// [`ask_kept`]), or what went wrong.
fn ask(addr: SocketAddr, k: u8) -> Result<(u32, bool), String> {
    let mut c = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    c.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    c.write_all(request("/", &[&xff(k), "Connection: close"]).as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut text = String::new();
    c.read_to_string(&mut text)
        .map_err(|e| format!("read: {e} after {text:?}"))?;
    if !text.starts_with("HTTP/1.1 200 ") {
        return Err(format!("response {text:?}"));
    }
    text.lines()
        .find_map(|l| l.strip_prefix("X-Worker: "))
        .and_then(|w| w.trim().parse().ok())
        .map(|w| (w, false))
        .ok_or_else(|| format!("no X-Worker in {text:?}"))
}

/// One request for key `k` on the kept-alive connection `c` (opened if there is none): the
/// worker that answered, and whether it was draining (it answered `Connection: close`). A
/// connection closed without an answer (a draining worker closes its idle connections; a
/// proxy retries then) is replaced and the request sent once more.
fn ask_kept(addr: SocketAddr, c: &mut Option<TcpStream>, k: u8) -> Result<(u32, bool), String> {
    let req = request("/", &[&xff(k)]);
    let mut last = String::new();
    for _ in 0..2 {
        let stream = match c {
            Some(stream) => stream,
            None => c.insert(connect(addr, None)),
        };
        let answer = stream
            .write_all(req.as_bytes())
            .and_then(|()| try_read_response(stream));
        match answer {
            Ok(r) if r.status == 200 => {
                let draining = r.header("connection") == Some("close");
                if draining {
                    *c = None;
                }
                return Ok((r.worker(), draining));
            }
            Ok(r) => return Err(format!("status {}", r.status)),
            Err(e) => {
                last = e.to_string();
                *c = None;
            }
        }
    }
    Err(format!("no answer on a new connection either: {last}"))
}

/// What the clients saw: (phase, key, answer).
type Seen = Vec<(usize, u8, Result<(u32, bool), String>)>;

/// Clients asking for every key in turn, each request on a new connection, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    phase: Arc<AtomicUsize>,
    seen: Arc<Mutex<Seen>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    /// `clients` clients, each request on a new connection, or with `keep_alive` all of a
    /// client's requests on one connection (while it lasts).
    fn start(addr: SocketAddr, clients: u8, keep_alive: bool) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let phase = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|c| {
                let (stop, phase, seen) = (stop.clone(), phase.clone(), seen.clone());
                std::thread::spawn(move || {
                    let mut k = c % KEYS;
                    let mut kept = None;
                    while !stop.load(Ordering::SeqCst) {
                        let p = phase.load(Ordering::SeqCst);
                        let answer = if keep_alive {
                            ask_kept(addr, &mut kept, k)
                        } else {
                            ask(addr, k)
                        };
                        seen.lock().unwrap().push((p, k, answer));
                        k = (k + 1) % KEYS;
                    }
                })
            })
            .collect();
        Load {
            stop,
            phase,
            seen,
            threads,
        }
    }

    fn set_phase(&self, p: usize) {
        self.phase.store(p, Ordering::SeqCst);
    }

    /// Waits until the clients have made `n` requests in phase `p`.
    fn wait_requests(&self, p: usize, n: usize) {
        let count = || {
            self.seen
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.0 == p)
                .count()
        };
        assert!(
            eventually(TIMEOUT, || count() >= n),
            "only {} requests in phase {p}",
            count()
        );
    }

    fn stop(self) -> Seen {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("client thread");
        }
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

#[test]
fn upgrades_under_load_lose_no_request_and_keep_every_key_on_its_worker() {
    upgrades_under_load(&["--threads", "1"], "upgrade-load");
}

#[test]
fn with_dispatcher_threads_upgrades_under_load_lose_no_request_and_move_no_key() {
    upgrades_under_load(&["--threads", "3"], "upgrade-load-threads");
}

#[test]
fn with_rehash_per_request_upgrades_under_kept_alive_load_lose_no_request_and_move_no_key() {
    // Every request on a kept-alive connection goes back to the master: at each upgrade the
    // draining workers hand back until they read DRAIN (and say DRAINED), and what they
    // handed back before goes to its key's worker among them (all of them keep their channels
    // open until the last has said DRAINED), not closed.
    upgrades_under_load(&["--rehash-per-request"], "upgrade-load-rehash");
}

/// Two upgrades in a row under load with `extra` flags: no request fails, every key stays
/// with one worker id throughout. With `--rehash-per-request` the clients keep their
/// connections alive.
fn upgrades_under_load(extra: &[&str], notify_path: &str) {
    let keep_alive = extra.contains(&"--rehash-per-request");
    become_subreaper();
    let mut successors = Successors::default();
    let notify = NotifySocket::at_path(notify_path);
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "4",
        "--key",
        "header:x-forwarded-for",
    ];
    args.extend_from_slice(extra);
    let mut s = Stickyd::start_with_env(&args, &[("NOTIFY_SOCKET", notify.name.as_str())]);
    assert_eq!(notify.next(), "READY=1");
    s.wait_ready(4);
    let load = Load::start(s.addr(), 2, keep_alive);
    load.wait_requests(0, 2 * KEYS as usize);

    // First upgrade: the master started by the test hands over to its successor.
    let old_workers = s.worker_pids();
    load.set_phase(1);
    s.signal(libc::SIGUSR2);
    let first = wait_started(&s, 1);
    successors.0.push(first);
    s.wait_log(
        &format!("upgrade: the successor (pid {first}) is ready: handing over to it"),
        TIMEOUT,
    );
    assert_eq!(notify.next(), format!("MAINPID={first}"));
    assert_eq!(s.wait_exit(TIMEOUT).code(), Some(0));
    assert!(
        eventually(TIMEOUT, || old_workers.iter().all(|&w| !alive(w))),
        "the old master's workers outlived it"
    );
    load.set_phase(2);
    load.wait_requests(2, 2 * KEYS as usize);

    // Second upgrade: the successor hands over in turn.
    let first_workers = children_of(first);
    assert_eq!(first_workers.len(), 4);
    for &w in &first_workers {
        let leaked: Vec<String> = environ_names(w)
            .into_iter()
            .filter(|v| v.starts_with("STICKYD_UPGRADE") || v == "NOTIFY_SOCKET")
            .collect();
        assert!(leaked.is_empty(), "a successor's worker sees {leaked:?}");
    }
    load.set_phase(3);
    signal(first, libc::SIGUSR2);
    let second = wait_started(&s, 2);
    successors.0.push(second);
    s.wait_log(
        &format!("upgrade: the successor (pid {second}) is ready: handing over to it"),
        TIMEOUT,
    );
    assert_eq!(notify.next(), format!("MAINPID={second}"));
    assert_eq!(wait_orphan(first), Some(0));
    assert!(
        eventually(TIMEOUT, || first_workers.iter().all(|&w| !alive(w))),
        "the first successor's workers outlived it"
    );
    load.set_phase(4);
    load.wait_requests(4, 2 * KEYS as usize);
    let seen = load.stop();

    // Not one request failed, before, during or after either upgrade.
    let failed: Vec<_> = seen.iter().filter(|s| s.2.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        seen.len()
    );
    for phase in [1, 3] {
        assert!(
            seen.iter().any(|s| s.0 == phase),
            "no request was made during upgrade {}",
            phase.div_ceil(2)
        );
    }
    // Every key was answered by one worker id throughout: before, during and after. (A
    // request on a kept-alive connection whose worker reads DRAIN just as it arrives is served
    // by that worker, draining, with `Connection: close`: it cannot be handed back any more.)
    let mut workers: BTreeMap<u8, BTreeSet<u32>> = BTreeMap::new();
    for (_, k, answer) in &seen {
        if let Ok((w, false)) = answer {
            workers.entry(*k).or_default().insert(*w);
        }
    }
    assert_eq!(workers.len(), KEYS as usize);
    for (k, ids) in &workers {
        // (phase, worker, draining) -> how many answers, for the message.
        let mut answers: BTreeMap<(usize, u32, bool), usize> = BTreeMap::new();
        for (p, _, answer) in seen.iter().filter(|s| s.1 == *k) {
            if let Ok((w, draining)) = answer {
                *answers.entry((*p, *w, *draining)).or_default() += 1;
            }
        }
        assert_eq!(
            ids.len(),
            1,
            "key {k} was answered by workers {ids:?}: {answers:?}"
        );
    }
    assert!(
        !s.log()
            .iter()
            .any(|l| l.contains("differs from this master's")),
        "fingerprints differ between masters of one binary"
    );
    // No master closed a connection it could not give to any worker.
    let closed: Vec<String> = s
        .log()
        .into_iter()
        .filter(|l| l.contains("cannot go to any worker"))
        .collect();
    assert!(closed.is_empty(), "{closed:#?}");

    // The last successor stops as any master does, and takes its workers with it.
    let second_workers = children_of(second);
    assert_eq!(second_workers.len(), 4);
    signal(second, libc::SIGTERM);
    assert_eq!(notify.next(), "STOPPING=1");
    assert_eq!(wait_orphan(second), Some(0));
    assert!(
        eventually(TIMEOUT, || second_workers.iter().all(|&w| !alive(w))),
        "the last successor's workers outlived it"
    );
}

/// Puts an executable script with `text` at `path`, replacing what is there at once.
fn install_script(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The worker each key goes to, asked one by one.
fn mapping(addr: SocketAddr) -> Vec<u32> {
    (0..KEYS)
        .map(|k| ask(addr, k).unwrap_or_else(|e| panic!("key {k}: {e}")).0)
        .collect()
}

#[test]
fn a_failed_upgrade_leaves_the_old_master_serving() {
    become_subreaper();
    let mut successors = Successors::default();
    // Started through a link, as a package installs it: the successor is whatever the link's
    // path holds at the time of the upgrade.
    let dir = TempDir::new("upgrade-failures");
    let exe = dir.0.join("stickyd");
    std::os::unix::fs::symlink(stickyd_bin(), &exe).unwrap();
    let args = with_test_backend(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--key",
        "header:x-forwarded-for",
    ]);
    let mut cmd = Command::new(&exe);
    cmd.args(&args);
    let mut s = Stickyd::launch(cmd, 1);
    s.wait_ready(2);
    let before = mapping(s.addr());

    // A successor that exits before it is ready; a second SIGUSR2 meanwhile is ignored.
    install_script(
        &exe,
        "#!/bin/sh\nsleep 1\necho 'broken build' >&2\nexit 3\n",
    );
    s.signal(libc::SIGUSR2);
    let broken = wait_started(&s, 1);
    successors.0.push(broken);
    s.signal(libc::SIGUSR2);
    s.wait_log(
        &format!("SIGUSR2 while an upgrade is in progress (successor pid {broken}): ignored"),
        TIMEOUT,
    );
    s.wait_log(
        &format!(
            "upgrade failed: the successor (pid {broken}) exited before it was ready \
             (exit status: 3); still serving"
        ),
        TIMEOUT,
    );
    assert_eq!(mapping(s.addr()), before);

    // No executable at the path.
    std::fs::remove_file(&exe).unwrap();
    s.signal(libc::SIGUSR2);
    s.wait_log(
        &format!("upgrade failed: cannot start {}: ", exe.display()),
        TIMEOUT,
    );
    assert_eq!(mapping(s.addr()), before);

    // A successor whose mapping differs (another worker count): a warning, and it takes over.
    let mut other = with_test_backend(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "3",
        "--key",
        "header:x-forwarded-for",
    ]);
    other.insert(0, stickyd_bin().display().to_string());
    install_script(&exe, &format!("#!/bin/sh\nexec {}\n", other.join(" ")));
    s.signal(libc::SIGUSR2);
    let third = wait_started(&s, 2);
    successors.0.push(third);
    s.wait_log("upgrade: the successor's mapping fingerprint", TIMEOUT);
    assert_eq!(s.wait_exit(TIMEOUT).code(), Some(0));
    for k in 0..KEYS {
        let (w, _) = ask(s.addr(), k).unwrap_or_else(|e| panic!("key {k}: {e}"));
        assert!(w < 3, "worker {w} of 3");
    }
    signal(third, libc::SIGTERM);
    assert_eq!(wait_orphan(third), Some(0));
}

#[test]
fn the_metrics_endpoint_and_listener_names_survive_an_upgrade() {
    become_subreaper();
    let mut successors = Successors::default();
    let mut s = Stickyd::start(&[
        "--listen",
        "web=127.0.0.1:0",
        "--listen",
        "api=127.0.0.1:0",
        "--workers",
        "1",
        "--metrics",
        "127.0.0.1:0",
    ]);
    s.wait_ready(1);
    let metrics = s.metrics_addr();
    s.signal(libc::SIGUSR2);
    let successor = wait_started(&s, 1);
    successors.0.push(successor);
    assert_eq!(s.wait_exit(TIMEOUT).code(), Some(0));
    // The successor serves the same sockets (port 0 in its command line notwithstanding),
    // under the same names, and the metrics on the same address.
    for (name, addr) in s.listeners.clone() {
        let line = format!("stickyd: listening on {addr} ({name})");
        assert_eq!(
            s.log().iter().filter(|l| **l == line).count(),
            2,
            "{name} moved"
        );
        let r = get(addr, None, "/", &[]);
        assert_eq!(r.header("x-listener"), Some(name.as_str()));
    }
    let line = format!("stickyd: metrics on {metrics}");
    assert_eq!(s.log().iter().filter(|l| **l == line).count(), 2);
    let (status, body) = scrape(metrics, "/metrics");
    assert_eq!(status, 200);
    assert!(
        body.contains("stickyd_connections_accepted_total"),
        "{body}"
    );
    signal(successor, libc::SIGTERM);
    assert_eq!(wait_orphan(successor), Some(0));
}
