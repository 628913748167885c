//! External workers: processes stickyd did not start attach to `--attach PATH`, fill the
//! slots, and are refused when their uid may not attach or no slot is free.

mod util;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use stickyd::keys::Key;
use util::{Attached, Stickyd, TIMEOUT, attach_command, get, hello_worker_bin};

/// A uid with no business attaching (`nobody` on Debian).
const OTHER_UID: u32 = 65534;

/// A fresh socket path in the temporary directory.
fn socket_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("stickyd-attach-{tag}-{}.sock", std::process::id()))
}

/// Runs an attaching hello worker that is expected to be refused; returns its output.
fn attach_refused(path: &Path, id: Option<u32>, uid: Option<u32>) -> Output {
    attach_refused_program(&hello_worker_bin(), path, id, uid)
}

fn attach_refused_program(
    program: &Path,
    path: &Path,
    id: Option<u32>,
    uid: Option<u32>,
) -> Output {
    let out = attach_command(program, path, id, uid)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    assert!(!out.status.success(), "the worker was not refused");
    out
}

/// A directory that another uid can enter (its own mode 0755, and every directory above it
/// searchable by others), holding a copy of the hello worker (mode 0755) that such a uid can
/// run, and room for the attach sockets. The checkout, and so `target/`, may sit where another
/// uid cannot go (a home directory of mode 0700, a `mktemp -d` directory), and so may
/// `TMPDIR`. Removed on drop.
struct Reachable {
    dir: PathBuf,
    worker: PathBuf,
}

impl Reachable {
    /// In the first of the temporary directory and `/tmp` that others can reach; `Err` says
    /// why neither will do.
    fn new(tag: &str) -> Result<Reachable, String> {
        let candidates = [std::env::temp_dir(), PathBuf::from("/tmp")];
        let base = candidates
            .iter()
            .find(|dir| searchable_by_others(dir))
            .ok_or_else(|| {
                format!(
                    "none of {candidates:?} can be entered by another uid (each directory on \
                     the way must have the o+x bit)"
                )
            })?;
        let dir = base.join(format!("stickyd-attach-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        // Set by hand: the umask may be stricter.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("chmod {}: {e}", dir.display()))?;
        let reachable = Reachable {
            worker: dir.join("hello_worker"),
            dir,
        };
        std::fs::copy(hello_worker_bin(), &reachable.worker)
            .map_err(|e| format!("copy the hello worker: {e}"))?;
        std::fs::set_permissions(&reachable.worker, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("chmod {}: {e}", reachable.worker.display()))?;
        Ok(reachable)
    }

    /// A socket path in the directory.
    fn socket(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.sock"))
    }
}

impl Drop for Reachable {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether a uid that owns none of them (and is in none of their groups) may search `dir` and
/// every directory above it.
fn searchable_by_others(dir: &Path) -> bool {
    dir.is_absolute()
        && dir.ancestors().all(|d| {
            std::fs::metadata(d).is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o001 != 0)
        })
}

fn euid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

fn is_root() -> bool {
    euid() == 0
}

fn start(path: &Path, extra: &[&str]) -> Stickyd {
    let path = path.to_str().expect("utf-8 path");
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--key",
        "header:x-user",
        "--attach",
        path,
    ];
    args.extend_from_slice(extra);
    Stickyd::start(&args)
}

fn user(s: &Stickyd, user: &str) -> u32 {
    let header = format!("X-User: {user}");
    let r = get(s.addr(), None, "/", &[&header]);
    assert_eq!(r.status, 200);
    r.worker()
}

#[test]
fn attached_workers_fill_the_slots_and_serve() {
    let path = socket_path("fill");
    let mut s = start(&path, &[]);
    s.wait_log("started 2 workers (attached workers only)", TIMEOUT);
    let meta = std::fs::metadata(&path).expect("the attach socket exists");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), euid());

    // Nothing is live yet: a client waits in the backlog until a worker attaches.
    let early = std::thread::spawn({
        let addr = s.addr();
        move || get(addr, None, "/", &["X-User: early"]).worker()
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut first = Attached::start(&path, None, None);
    let _second = Attached::start(&path, None, None);
    s.wait_ready(2);
    let early = early.join().expect("the early client");
    assert!(early < 2);

    for i in 0..20 {
        let name = format!("u{i}");
        assert_eq!(user(&s, &name), util::owner(Key::Bytes(name.as_bytes()), 2));
    }

    // A third finds no free slot.
    let out = attach_refused(&path, None, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("all 2 worker slots are taken"), "{stderr}");
    s.wait_log("attach refused to pid", TIMEOUT);

    // The first leaves: its keys move to the other; a newcomer takes its slot back, and the
    // keys return.
    let w0 = s.worker_pid(0);
    let w1 = s.worker_pid(1);
    let leaving = if first.0.id() == w0 { 0 } else { 1 };
    assert_eq!(first.0.id(), if leaving == 0 { w0 } else { w1 });
    let moved: Vec<String> = (0..20)
        .map(|i| format!("u{i}"))
        .filter(|n| util::owner(Key::Bytes(n.as_bytes()), 2) == leaving)
        .collect();
    first.kill();
    assert!(util::eventually(TIMEOUT, || user(&s, &moved[0]) != leaving));
    for name in &moved {
        assert_eq!(user(&s, name), 1 - leaving);
    }
    let _again = Attached::start(&path, Some(leaving), None);
    assert!(util::eventually(TIMEOUT, || user(&s, &moved[0]) == leaving));

    s.signal(libc::SIGTERM);
    assert!(s.wait_exit(TIMEOUT).success(), "{:#?}", s.log());
    assert!(!path.exists(), "the attach socket is removed at exit");
}

#[test]
fn a_taken_or_unknown_slot_is_refused_with_the_reason() {
    let path = socket_path("slots");
    let s = start(&path, &[]);
    s.wait_log("started 2 workers", TIMEOUT);
    let _zero = Attached::start(&path, Some(0), None);
    s.wait_ready(1);
    let out = attach_refused(&path, Some(0), None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("worker slot 0 is taken"), "{stderr}");
    let out = attach_refused(&path, Some(7), None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("worker id 7 is out of range"), "{stderr}");
}

#[test]
fn another_uid_is_refused_unless_allowed() {
    if !is_root() {
        eprintln!(
            "attach: uid tests skipped: they start workers as uid {OTHER_UID}, which needs root"
        );
        return;
    }
    // The other uid runs a copy of the worker, from a directory it can enter, where the
    // sockets are too: wherever the checkout is, only the socket's own mode and the master's
    // uid check keep it out.
    let reachable = Reachable::new("uid").unwrap_or_else(|why| {
        panic!("cannot run workers as uid {OTHER_UID}: {why}");
    });
    let worker = reachable.worker.as_path();
    let path = reachable.socket("uid");
    let s = start(&path, &[]);
    s.wait_log("started 2 workers", TIMEOUT);
    // The socket is 0600: the filesystem already keeps another uid out.
    let out = attach_refused_program(worker, &path, None, Some(OTHER_UID));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot attach"), "{stderr}");
    // Opened up by hand, the master itself refuses it, by its SO_PEERCRED uid.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = attach_refused_program(worker, &path, None, Some(OTHER_UID));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("uid {OTHER_UID} may not attach")),
        "{stderr}"
    );
    s.wait_log(
        &format!("(uid {OTHER_UID}): uid {OTHER_UID} may not attach"),
        TIMEOUT,
    );
    drop(s);

    // With --attach-uid, the socket is reachable and that uid is welcome.
    let path = reachable.socket("uid-allowed");
    let uid = OTHER_UID.to_string();
    let s = start(&path, &["--attach-uid", &uid]);
    s.wait_log("started 2 workers", TIMEOUT);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o666);
    let _w = Attached::start_program(worker, &path, None, Some(OTHER_UID));
    s.wait_ready(1);
    assert!(user(&s, "anyone") < 2);
}

#[test]
fn spawned_workers_and_attached_ones_share_the_slots() {
    // With a worker command, stickyd starts every slot; an attached worker is refused while
    // they are all taken.
    let path = socket_path("mixed");
    let path_str = path.to_str().unwrap();
    let bin = hello_worker_bin();
    let s = Stickyd::start(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--attach",
        path_str,
        "--",
        bin.to_str().unwrap(),
    ]);
    s.wait_ready(2);
    let out = attach_refused(&path, None, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("all 2 worker slots are taken"), "{stderr}");
    let mut status = Attached(attach_command(&bin, &path, None, None).spawn().unwrap());
    assert!(!status.wait_exit().success());
}

#[test]
fn attached_workers_reattach_to_an_upgrades_successor() {
    util::become_subreaper();
    let mut successors = util::Successors::default();
    let path = socket_path("upgrade");
    let mut s = start(&path, &[]);
    s.wait_log("started 2 workers", TIMEOUT);
    // A supervisor of its own keeps one attached worker per slot running: each exits once
    // drained, and its loop starts it again, so it attaches to whichever master owns PATH.
    let script = format!(
        "while [ ! -e {stop} ]; do STICKYD_WORKER_ID=$0 {bin}; sleep 0.05; done",
        stop = path.with_extension("stop").display(),
        bin = hello_worker_bin().display(),
    );
    let loops: Vec<Attached> = (0..2)
        .map(|id| {
            let mut cmd = Command::new("sh");
            cmd.arg("-c")
                .arg(&script)
                .arg(id.to_string())
                .env("STICKYD_ATTACH", &path)
                .env_remove("STICKYD_FD")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            Attached(cmd.spawn().expect("start the worker loop"))
        })
        .collect();
    s.wait_ready(2);
    let before: Vec<u32> = (0..10).map(|i| user(&s, &format!("k{i}"))).collect();

    s.signal(libc::SIGUSR2);
    let successor = util::wait_started(&s, 1);
    successors.0.push(successor);
    s.wait_log(
        &format!("upgrade: the successor (pid {successor}) is ready: handing over to it"),
        TIMEOUT,
    );
    assert_eq!(s.wait_exit(TIMEOUT).code(), Some(0));
    assert!(path.exists(), "the successor owns the attach socket now");
    // The workers re-attached to the successor: the same keys on the same ids.
    let after: Vec<u32> = (0..10).map(|i| user(&s, &format!("k{i}"))).collect();
    assert_eq!(before, after);

    std::fs::write(path.with_extension("stop"), b"").unwrap();
    util::signal(successor, libc::SIGTERM);
    assert_eq!(util::wait_orphan(successor), Some(0));
    assert!(!path.exists(), "the last master removes the attach socket");
    for mut l in loops {
        let _ = l.wait_exit();
    }
    let _ = std::fs::remove_file(path.with_extension("stop"));
}
