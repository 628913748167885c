//! HAProxy in front of stickyd, for the tests that need a real proxy: found on PATH (or where
//! distributions install it), checked with `haproxy -c`, run in the foreground with its
//! frontend socket inherited, killed with the test.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::TIMEOUT;

/// `haproxy` on PATH, or where distributions install it (`/usr/sbin` is not on every user's
/// PATH).
pub fn find() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("haproxy"))
        .find(|bin| bin.is_file())
}

/// HAProxy for test `test`: `None`, said on stderr, when it is not installed, and a failure
/// then if `STICKYD_REQUIRE_HAPROXY=1` (set by `.ci/run`, which installs it).
pub fn required(test: &str) -> Option<PathBuf> {
    let bin = find();
    if bin.is_none() {
        assert!(
            std::env::var("STICKYD_REQUIRE_HAPROXY").as_deref() != Ok("1"),
            "haproxy is not on PATH (nor in /usr/sbin, /usr/local/sbin) and \
             STICKYD_REQUIRE_HAPROXY=1"
        );
        // Straight to stderr, past the test harness's capture, so the skip is seen.
        let _ = writeln!(
            std::io::stderr(),
            "{test}: skipped: haproxy is not on PATH (STICKYD_REQUIRE_HAPROXY=1 makes this a \
             failure)"
        );
    }
    bin
}

/// A running `haproxy -db` (foreground), killed on drop.
pub struct Haproxy {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Haproxy {
    /// Checks `config` with `env` and `STICKYD_FRONTEND` set to the frontend's address, then
    /// runs it with the frontend on `frontend` (inherited, `fd@N`, so no other process can take
    /// the port between choosing and binding it).
    pub fn start(
        bin: &Path,
        config: &Path,
        frontend: TcpListener,
        env: &[(&str, String)],
    ) -> Haproxy {
        let front_addr = frontend.local_addr().expect("frontend address");
        let check = Command::new(bin)
            .arg("-c")
            .arg("-f")
            .arg(config)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("STICKYD_FRONTEND", front_addr.to_string())
            .output()
            .expect("run haproxy -c");
        assert!(
            check.status.success(),
            "haproxy rejects {}: {}{}",
            config.display(),
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );

        let fd: RawFd = frontend.as_raw_fd();
        let parent = std::process::id();
        let mut cmd = Command::new(bin);
        cmd.arg("-db")
            .arg("-f")
            .arg(config)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("STICKYD_FRONTEND", format!("fd@{fd}"))
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
    pub fn wait_log(&mut self, needle: &str) {
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
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
