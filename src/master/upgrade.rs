//! The master's life as systemd and a successor see it: saying it is ready, and the
//! zero-downtime upgrade.
//!
//! Readiness: once every worker slot has said `HELLO` for the first time, a master tells
//! systemd `READY=1` (under `NOTIFY_SOCKET`), or, if it is an upgrade's successor, tells its
//! predecessor `READY <mapping fingerprint>` on the channel it inherited. A successor accepts
//! nothing before that: until then its predecessor serves.
//!
//! The upgrade, on SIGUSR2: the master starts its successor (the executable at the path it was
//! started from, with the same arguments and environment), passing it its listening sockets,
//! its metrics socket and one end of a readiness channel (see [`inherit`]).
//! It serves on while it watches the channel and the successor's pidfd on the ring:
//! - `READY`: it compares the fingerprints (a difference is a warning: keys would move), tells
//!   systemd `MAINPID=<successor>`, then shuts down as for SIGTERM: stops accepting, routes
//!   what it has accepted, drains its workers and exits 0. The successor serves meanwhile.
//! - the successor exits, closes the channel, says something else, or is not ready within
//!   [`READY_TIMEOUT`]: `upgrade failed: ...` is logged with the reason (its exit status), the
//!   successor is killed if it still runs, and this master serves on.
//!
//! A second SIGUSR2 while an upgrade is in progress, or during a shutdown, is logged and
//! ignored; SIGTERM during an upgrade kills the successor before the shutdown.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use stickyd_ring::sys;

use super::Master;
use super::inherit::{self, Inherited, Origin, Passed};
use super::notify::Notifier;
use super::token::Token;
use crate::route::{self, Fingerprint};

/// How long a successor has to say it is ready before it is killed.
pub(super) const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest readiness line read from a successor.
const MAX_READY_LINE: usize = 128;
/// What a successor says once its workers are live, before its fingerprint.
const READY_WORD: &str = "READY";

/// The master's readiness and upgrade state.
#[derive(Debug)]
pub(super) struct Upgrade {
    /// The executable a successor is started from, or why there is none.
    exe: Result<PathBuf, String>,
    /// This process's `argv[0]` and arguments, the successor's too.
    arg0: OsString,
    args: Vec<OsString>,
    notify: Option<Notifier>,
    /// As a successor: the predecessor's pid, and the readiness channel until `READY` is said.
    predecessor: Option<(u32, Option<UnixStream>)>,
    /// The worker slots that have said `HELLO` at least once.
    greeted: Vec<bool>,
    /// Every slot has said `HELLO` once, and that has been told.
    ready: bool,
    /// A copy of the metrics endpoint's socket, to pass to a successor.
    metrics: Option<TcpListener>,
    successor: Option<Successor>,
}

/// A successor being started, or handed over to.
#[derive(Debug)]
struct Successor {
    pid: u32,
    /// Until the process has been reaped.
    pidfd: Option<OwnedFd>,
    /// The readiness channel, until `READY` or its end has been read.
    ready: Option<UnixStream>,
    line: Vec<u8>,
    deadline: Instant,
    handed_over: bool,
    /// It failed and was killed (the failure is logged): its exit is only reaped.
    failed: bool,
    /// Its readiness channel ended before it said `READY`: it was killed.
    closed_early: bool,
}

impl Upgrade {
    /// The state of a master that inherited `inherited` (its listeners already taken), with
    /// `workers` slots and a copy of its metrics socket.
    pub(super) fn new(
        inherited: &mut Inherited,
        workers: u32,
        metrics: Option<TcpListener>,
    ) -> Upgrade {
        let mut argv = std::env::args_os();
        let arg0 = argv.next().unwrap_or_default();
        let exe = resolve_exe(
            &arg0,
            std::env::current_dir,
            std::env::var_os("PATH").as_deref(),
            is_executable,
        );
        match &exe {
            Ok(path) => debug!("upgrade: a successor will start from {}", path.display()),
            Err(why) => debug!("upgrade: no successor can start: {why}"),
        }
        let predecessor = match inherited.origin {
            Origin::Predecessor(pid) => Some((pid, inherited.ready.take())),
            Origin::Systemd | Origin::None => None,
        };
        Upgrade {
            exe,
            arg0,
            args: argv.collect(),
            notify: Notifier::from_env(),
            predecessor,
            greeted: vec![false; workers as usize],
            ready: false,
            metrics,
            successor: None,
        }
    }

    /// Whether this master succeeds another in an upgrade.
    pub(super) fn is_successor(&self) -> bool {
        self.predecessor.is_some()
    }

    /// Whether the master may accept: a successor waits until it is ready.
    pub(super) fn may_accept(&self) -> bool {
        self.predecessor.is_none() || self.ready
    }

    /// When the successor's time to be ready runs out.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.successor
            .as_ref()
            .filter(|s| !s.handed_over && !s.failed)
            .map(|s| s.deadline)
    }

    /// Forgets a successor once it has been reaped and its channel closed.
    fn settle(&mut self) {
        if self
            .successor
            .as_ref()
            .is_some_and(|s| s.pidfd.is_none() && s.ready.is_none())
        {
            self.successor = None;
        }
    }
}

impl Master {
    /// Worker `w` said `HELLO`: once every slot has, the master is ready.
    pub(super) fn note_hello(&mut self, w: u32) {
        let up = &mut self.upgrade;
        if up.ready {
            return;
        }
        if let Some(greeted) = up.greeted.get_mut(w as usize) {
            *greeted = true;
        }
        if !up.greeted.iter().all(|&g| g) {
            return;
        }
        up.ready = true;
        match &mut up.predecessor {
            Some((pid, channel)) => {
                let line = format!("{READY_WORD} {}\n", route::fingerprint(self.config.workers));
                let told = match channel.take() {
                    Some(mut channel) => channel.write_all(line.as_bytes()),
                    None => Err(io::Error::other("no readiness channel was passed")),
                };
                match told {
                    Ok(()) => info!(
                        "upgrade: all {} workers ready: taking over from pid {pid}",
                        self.config.workers
                    ),
                    Err(e) => warn!(
                        "upgrade: cannot tell pid {pid} that this master is ready ({e}): \
                         serving anyway"
                    ),
                }
            }
            None => {
                debug!("all {} workers ready", self.config.workers);
                if let Some(notify) = &up.notify {
                    notify.send("READY=1");
                }
            }
        }
    }

    /// A shutdown asked for by `signal` begins: systemd hears `STOPPING=1`, and an upgrade
    /// in progress ends with its successor killed.
    pub(super) fn note_shutdown(&mut self, signal: &str) {
        if let Some(notify) = &self.upgrade.notify {
            notify.send("STOPPING=1");
        }
        if let Some(s) = &mut self.upgrade.successor {
            if !s.handed_over && !s.failed {
                warn!(
                    "{signal} during an upgrade: killing the successor (pid {})",
                    s.pid
                );
                s.failed = true;
                let _ = sys::kill(s.pid, libc::SIGKILL);
            }
        }
    }

    /// SIGUSR2: starts the successor, unless an upgrade or a shutdown is under way.
    pub(super) fn on_upgrade_signal(&mut self) {
        if self.core.shutting_down() {
            warn!("SIGUSR2 during a shutdown: ignored");
            return;
        }
        if let Some(s) = &self.upgrade.successor {
            warn!(
                "SIGUSR2 while an upgrade is in progress (successor pid {}): ignored",
                s.pid
            );
            return;
        }
        let exe = match &self.upgrade.exe {
            Ok(exe) => exe.clone(),
            Err(why) => {
                error!("upgrade failed: {why}; still serving");
                return;
            }
        };
        match self.start_successor(&exe) {
            Ok(successor) => {
                info!(
                    "SIGUSR2: upgrading: started {} (pid {}); serving until it is ready",
                    exe.display(),
                    successor.pid
                );
                if let Some(ready) = &successor.ready {
                    self.ring.poll(
                        ready.as_fd(),
                        libc::POLLIN as u32,
                        Token::SuccessorReady.encode(),
                    );
                }
                if let Some(pidfd) = &successor.pidfd {
                    self.ring.poll(
                        pidfd.as_fd(),
                        libc::POLLIN as u32,
                        Token::SuccessorExit.encode(),
                    );
                }
                self.upgrade.successor = Some(successor);
            }
            Err(e) => error!(
                "upgrade failed: cannot start {}: {e}; still serving",
                exe.display()
            ),
        }
    }

    /// Starts the successor with the listeners, the metrics socket and a readiness channel.
    fn start_successor(&self, exe: &Path) -> io::Result<Successor> {
        let (ours, theirs) = UnixStream::pair()?;
        ours.set_nonblocking(true)?;
        let mut passed: Vec<(Passed, BorrowedFd<'_>)> = vec![(Passed::Ready, theirs.as_fd())];
        if let Some(metrics) = &self.upgrade.metrics {
            passed.push((Passed::Metrics, metrics.as_fd()));
        }
        for listener in &self.front.listeners {
            if let Some(socket) = &listener.socket {
                passed.push((Passed::Listen(listener.name.clone()), socket.as_fd()));
            }
        }
        if let Some(socket) = self.attach.as_ref().and_then(|a| a.socket()) {
            passed.push((Passed::Attach, socket));
        }
        let list: Vec<(Passed, i32)> = passed
            .iter()
            .map(|(what, fd)| (what.clone(), fd.as_raw_fd()))
            .collect();
        let mut cmd = Command::new(exe);
        cmd.arg0(&self.upgrade.arg0).args(&self.upgrade.args);
        for var in [
            inherit::LISTEN_PID,
            inherit::LISTEN_FDS,
            inherit::LISTEN_FDNAMES,
        ] {
            cmd.env_remove(var);
        }
        cmd.env(inherit::UPGRADE_FDS, inherit::encode_passed(&list))
            .env(inherit::UPGRADE_FROM, std::process::id().to_string());
        let fds: Vec<BorrowedFd<'_>> = passed.iter().map(|(_, fd)| *fd).collect();
        sys::prepare_successor_command(&mut cmd, &fds);
        let mut child = cmd.spawn()?;
        drop(theirs);
        let pid = child.id();
        let pidfd = match sys::pidfd_open(pid) {
            Ok(pidfd) => pidfd,
            Err(e) => {
                // Unwatched, it must not take over.
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        Ok(Successor {
            pid,
            pidfd: Some(pidfd),
            ready: Some(ours),
            line: Vec::new(),
            deadline: Instant::now() + READY_TIMEOUT,
            handed_over: false,
            failed: false,
            closed_early: false,
        })
    }

    /// The successor's readiness channel became readable (or its poll failed).
    pub(super) fn on_successor_ready(&mut self, result: io::Result<u32>) {
        let Some(s) = &mut self.upgrade.successor else {
            return;
        };
        let Some(channel) = &mut s.ready else {
            return;
        };
        if let Err(e) = result {
            warn!("upgrade: polling the successor's readiness channel failed: {e}");
        }
        let mut buf = [0u8; MAX_READY_LINE];
        let heard = loop {
            match channel.read(&mut buf) {
                Ok(0) => break Heard::Closed,
                Ok(n) => {
                    s.line.extend_from_slice(&buf[..n]);
                    if let Some(end) = memchr::memchr(b'\n', &s.line) {
                        break Heard::Line(String::from_utf8_lossy(&s.line[..end]).into_owned());
                    }
                    if s.line.len() > MAX_READY_LINE {
                        break Heard::Garbled;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Heard::Nothing,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Heard::Failed(e),
            }
        };
        if let Heard::Nothing = heard {
            self.ring.poll(
                channel.as_fd(),
                libc::POLLIN as u32,
                Token::SuccessorReady.encode(),
            );
            return;
        }
        // No poll is in flight on the channel now: it can close.
        s.ready = None;
        if s.failed {
            self.upgrade.settle();
            return;
        }
        match heard {
            Heard::Line(line) => match parse_ready(&line) {
                Some(theirs) => self.hand_over(theirs),
                None => self.fail_successor(&format!("said {line:?} instead of {READY_WORD}")),
            },
            Heard::Closed => {
                // Its exit, when reaped, says why; one that lives on is of no use.
                s.closed_early = true;
                let _ = sys::kill(s.pid, libc::SIGKILL);
            }
            Heard::Garbled => self.fail_successor("sent a garbled readiness line"),
            Heard::Failed(e) => self.fail_successor(&format!("readiness channel failed ({e})")),
            Heard::Nothing => {}
        }
        self.upgrade.settle();
    }

    /// The successor said it is ready: hand over to it and shut down as for SIGTERM.
    fn hand_over(&mut self, theirs: Fingerprint) {
        let Some(s) = &mut self.upgrade.successor else {
            return;
        };
        s.handed_over = true;
        let pid = s.pid;
        let ours = route::fingerprint(self.config.workers);
        if theirs != ours {
            warn!(
                "upgrade: the successor's mapping fingerprint {theirs} differs from this \
                 master's {ours}: keys will move to other worker ids"
            );
        }
        if let Some(notify) = &self.upgrade.notify {
            notify.send(&format!("MAINPID={pid}"));
        }
        if let Some(attach) = &mut self.attach {
            attach.handed_over = true;
        }
        info!("upgrade: the successor (pid {pid}) is ready: handing over to it");
        self.begin_shutdown("upgrade");
    }

    /// The successor failed before it was ready: log why, kill it, serve on.
    fn fail_successor(&mut self, why: &str) {
        let Some(s) = &mut self.upgrade.successor else {
            return;
        };
        error!(
            "upgrade failed: the successor (pid {}) {why}: killing it; still serving",
            s.pid
        );
        s.failed = true;
        let _ = sys::kill(s.pid, libc::SIGKILL);
    }

    /// The successor's pidfd became readable: it has exited.
    pub(super) fn on_successor_exit(&mut self, result: io::Result<u32>) {
        let Some(s) = &mut self.upgrade.successor else {
            return;
        };
        if let Err(e) = result {
            warn!("upgrade: waiting for the successor's exit failed: {e}");
        }
        let pid = s.pid;
        let status = match sys::try_wait(pid) {
            Ok(Some(status)) => ExitStatus::from_raw(status),
            Ok(None) => {
                if let Some(pidfd) = &s.pidfd {
                    self.ring.poll(
                        pidfd.as_fd(),
                        libc::POLLIN as u32,
                        Token::SuccessorExit.encode(),
                    );
                }
                return;
            }
            Err(e) => {
                warn!("upgrade: waitpid on the successor (pid {pid}) failed: {e}");
                s.pidfd = None;
                s.failed = true;
                self.upgrade.settle();
                return;
            }
        };
        // No poll is in flight on the pidfd now: it can close.
        s.pidfd = None;
        if s.handed_over {
            warn!("the successor (pid {pid}) exited: {status}");
        } else if s.failed {
            debug!("the failed successor (pid {pid}) exited: {status}");
        } else if s.closed_early && status.signal() == Some(libc::SIGKILL) {
            error!(
                "upgrade failed: the successor (pid {pid}) closed its readiness channel without \
                 saying it was ready: killed it; still serving"
            );
        } else {
            error!(
                "upgrade failed: the successor (pid {pid}) exited before it was ready \
                 ({status}); still serving"
            );
        }
        s.failed |= !s.handed_over;
        self.upgrade.settle();
    }

    /// Kills a successor that was not ready in time.
    pub(super) fn upgrade_timer(&mut self, now: Instant) {
        if self.upgrade.deadline().is_some_and(|at| at <= now) {
            self.fail_successor(&format!("was not ready within {READY_TIMEOUT:?}"));
        }
    }
}

/// What a read of the readiness channel found.
#[derive(Debug)]
enum Heard {
    /// Nothing more yet.
    Nothing,
    /// A whole line.
    Line(String),
    /// The channel's end, before a whole line.
    Closed,
    /// A line too long to be a readiness line.
    Garbled,
    Failed(io::Error),
}

/// The fingerprint in a readiness line, `READY <16 hex digits>`.
fn parse_ready(line: &str) -> Option<Fingerprint> {
    let hex = line.strip_prefix(READY_WORD)?.strip_prefix(' ')?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok().map(Fingerprint)
}

/// The absolute path of the executable `arg0` names, as a shell would have found it: an
/// absolute path as it is; one containing `/` relative to the current directory; a bare name
/// looked up in `PATH`. Symbolic links are kept: a package upgrade replaces the file a link
/// names, and the successor must be the new one.
fn resolve_exe(
    arg0: &OsStr,
    cwd: impl FnOnce() -> io::Result<PathBuf>,
    path: Option<&OsStr>,
    is_exe: impl Fn(&Path) -> bool,
) -> Result<PathBuf, String> {
    let name = Path::new(arg0);
    if arg0.is_empty() {
        return Err("argv[0] is empty: cannot tell which executable to start".to_owned());
    }
    if name.is_absolute() {
        return Ok(name.to_path_buf());
    }
    let cwd = || {
        cwd().map_err(|e| {
            format!(
                "cannot resolve argv[0] '{}': current directory: {e}",
                name.display()
            )
        })
    };
    if arg0.as_encoded_bytes().contains(&b'/') {
        return Ok(cwd()?.join(name).components().collect());
    }
    let found = path
        .map(|p| std::env::split_paths(p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| {
            // An empty PATH entry is the current directory.
            if dir.as_os_str().is_empty() {
                PathBuf::from(".").join(name)
            } else {
                dir.join(name)
            }
        })
        .find(|candidate| is_exe(candidate))
        .ok_or_else(|| format!("argv[0] '{}' is not found in PATH", name.display()))?;
    if found.is_absolute() {
        Ok(found)
    } else {
        Ok(cwd()?.join(found).components().collect())
    }
}

/// A regular file with some execute permission.
fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(arg0: &str, path: Option<&str>, present: &[&str]) -> Result<PathBuf, String> {
        resolve_exe(
            OsStr::new(arg0),
            || Ok(PathBuf::from("/srv/app")),
            path.map(OsStr::new),
            |p| present.iter().any(|x| Path::new(x) == p),
        )
    }

    #[test]
    fn argv0_resolves_as_a_shell_found_it() {
        assert_eq!(
            resolve("/usr/bin/stickyd", None, &[]),
            Ok("/usr/bin/stickyd".into())
        );
        assert_eq!(
            resolve("./bin/stickyd", None, &[]),
            Ok("/srv/app/bin/stickyd".into())
        );
        assert_eq!(
            resolve("bin/../stickyd", None, &[]),
            Ok("/srv/app/bin/../stickyd".into())
        );
        assert_eq!(
            resolve(
                "stickyd",
                Some("/opt/x:/usr/local/bin:/usr/bin"),
                &["/usr/local/bin/stickyd", "/usr/bin/stickyd"]
            ),
            Ok("/usr/local/bin/stickyd".into())
        );
        assert_eq!(
            resolve("stickyd", Some("/opt/x::/usr/bin"), &["./stickyd"]),
            Ok("/srv/app/stickyd".into())
        );
        assert!(resolve("stickyd", Some("/usr/bin"), &[]).is_err());
        assert!(resolve("stickyd", None, &[]).is_err());
        assert!(resolve("", None, &[]).is_err());
        let no_cwd = resolve_exe(
            OsStr::new("bin/stickyd"),
            || Err(io::Error::other("gone")),
            None,
            |_| true,
        );
        assert!(no_cwd.is_err());
    }

    #[test]
    fn readiness_lines() {
        assert_eq!(
            parse_ready("READY 00000000000000ff"),
            Some(Fingerprint(255))
        );
        let fp = route::fingerprint(4);
        assert_eq!(parse_ready(&format!("READY {fp}")), Some(fp));
        for bad in [
            "READY",
            "READY ",
            "READY ff",
            "ready 00000000000000ff",
            "READY xyz",
            "READY +000000000000fff",
        ] {
            assert_eq!(parse_ready(bad), None, "{bad:?}");
        }
    }
}
