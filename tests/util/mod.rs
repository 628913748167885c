//! Helpers shared by the integration tests: start the real `stickyd` binary on port 0, read its
//! log, talk HTTP to it from chosen loopback source addresses, and look at its processes.

#![allow(dead_code)]

pub mod haproxy;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Generous: the machine has 2 cores and tests run in parallel.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The `stickyd` binary cargo built for these tests.
pub fn stickyd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_stickyd"))
}

/// The long flags `stickyd --help` lists (`--help` and `--version` included), and the help
/// text they were read from.
pub fn help_flags() -> (std::collections::BTreeSet<String>, String) {
    let out = Command::new(stickyd_bin())
        .arg("--help")
        .output()
        .expect("stickyd --help");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let flags = text
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| {
            l.split([' ', ','])
                .find(|w| w.starts_with("--") && w.len() > 2)
        })
        .map(str::to_owned)
        .collect();
    (flags, text)
}

/// An example program built by `cargo build --workspace --examples` (the SDK's `hello_worker`
/// and `long_poll`, the dispatcher's `path_token`, the end-to-end benchmark's
/// `reuseport_worker`).
pub fn example_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/examples/<name>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target profile dir");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins --examples` first",
        path.display()
    );
    path
}

/// The SDK's example worker.
pub fn hello_worker_bin() -> PathBuf {
    example_bin("hello_worker")
}

/// A running `stickyd` master. Killed (with its workers, by their parent-death signal) on drop.
pub struct Stickyd {
    child: Option<Child>,
    pub pid: u32,
    /// The listeners, in command-line order: (name, address).
    pub listeners: Vec<(String, SocketAddr)>,
    log: Arc<Mutex<Vec<String>>>,
    lines: Receiver<String>,
}

impl Stickyd {
    /// Starts `stickyd ARGS` and waits for its `listening on` lines (one per `--listen`, or one
    /// when there is none).
    pub fn start(args: &[&str]) -> Stickyd {
        Self::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Stickyd {
        Self::spawn(&stickyd_bin(), args, env, None)
    }

    /// Starts another program that embeds the dispatcher (an example) the same way.
    pub fn start_program(program: &std::path::Path, args: &[&str]) -> Stickyd {
        Self::spawn(program, args, &[], None)
    }

    /// Starts stickyd with its file descriptor limit (soft and hard) set to `nofile`.
    pub fn start_with_nofile(args: &[&str], nofile: u64) -> Stickyd {
        Self::spawn(&stickyd_bin(), args, &[], Some(nofile))
    }

    fn spawn(
        program: &std::path::Path,
        args: &[&str],
        env: &[(&str, &str)],
        nofile: Option<u64>,
    ) -> Stickyd {
        let expected = args.iter().filter(|a| **a == "--listen").count().max(1);
        let mut cmd = Command::new(program);
        cmd.args(with_test_backend(args));
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(n) = nofile {
            let limit = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            let set_limit = move || -> std::io::Result<()> {
                // SAFETY: setrlimit reads the rlimit the closure owns; it is async-signal-safe.
                if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            };
            // SAFETY: the closure only calls setrlimit, which is async-signal-safe, and
            // allocates nothing on success.
            unsafe { std::os::unix::process::CommandExt::pre_exec(&mut cmd, set_limit) };
        }
        Self::launch(cmd, expected)
    }

    /// Starts `cmd` (stickyd, or a program that execs it) with its stderr read into the log,
    /// and waits for `expected` `listening on` lines.
    pub fn launch(cmd: Command, expected: usize) -> Stickyd {
        Self::launch_inner(cmd, expected, false)
    }

    /// As [`Stickyd::launch`], with stdout (which the workers inherit) read into the log too:
    /// for workers that log with `console.log`.
    pub fn launch_with_stdout(cmd: Command, expected: usize) -> Stickyd {
        Self::launch_inner(cmd, expected, true)
    }

    fn launch_inner(mut cmd: Command, expected: usize, with_stdout: bool) -> Stickyd {
        cmd.stdin(Stdio::null())
            .stdout(if with_stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped());
        if !cmd.get_envs().any(|(k, _)| k == "RUST_LOG") {
            cmd.env("RUST_LOG", "debug");
        }
        let mut child = cmd.spawn().expect("start stickyd");
        let pid = child.id();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let mut streams: Vec<(Box<dyn Read + Send>, &'static str)> =
            vec![(Box::new(child.stderr.take().expect("stderr")), "")];
        if let Some(stdout) = child.stdout.take() {
            streams.push((Box::new(stdout), " stdout"));
        }
        for (stream, label) in streams {
            let sink = Arc::clone(&log);
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    eprintln!("[stickyd {pid}{label}] {line}");
                    sink.lock().unwrap().push(line.clone());
                    if tx.send(line).is_err() {
                        // Nobody waits for lines any more; keep draining the stream.
                    }
                }
            });
        }
        drop(tx);
        let mut s = Stickyd {
            child: Some(child),
            pid,
            listeners: Vec::new(),
            log,
            lines: rx,
        };
        while s.listeners.len() < expected {
            let line = s.next_line(TIMEOUT).unwrap_or_else(|| {
                panic!("stickyd printed no `listening on` line; log: {:?}", s.log())
            });
            if let Some(rest) = line.strip_prefix("stickyd: listening on ") {
                let (addr, name) = rest.split_once(' ').expect("listening line shape");
                let name = name.trim_start_matches('(').trim_end_matches(')');
                s.listeners
                    .push((name.to_owned(), addr.parse().expect("listen address")));
            }
        }
        s
    }

    /// Starts stickyd and waits until `workers` workers said HELLO.
    pub fn start_ready(args: &[&str], workers: usize) -> Stickyd {
        let s = Self::start(args);
        s.wait_ready(workers);
        s
    }

    /// The first listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.listeners[0].1
    }

    fn next_line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Every log line so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until a log line contains `needle`; returns it.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.log().into_iter().find(|l| l.contains(needle)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?} within {timeout:?}; log: {:#?}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `n` workers are ready.
    pub fn wait_ready(&self, n: usize) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let ready = self
                .log()
                .iter()
                .filter(|l| l.contains(" ready (pid "))
                .count();
            if ready >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {ready} of {n} workers ready; log: {:#?}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal to the master.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with a pid we started and still own (not yet reaped); no memory
        // is involved.
        let rc = unsafe { libc::kill(self.pid as i32, sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.pid);
    }

    /// Waits for the master to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "stickyd did not exit within {timeout:?}; log: {:#?}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// How many `worker ID ready (pid P)` lines the log has: 1 for the first process in slot
    /// `id`, one more for each replacement that said `HELLO`.
    pub fn ready_count(&self, id: u32) -> usize {
        let needle = format!("worker {id} ready (pid ");
        self.log().iter().filter(|l| l.contains(&needle)).count()
    }

    /// The pid of the worker in slot `id`, from the last `worker N ready (pid P)` line.
    pub fn worker_pid(&self, id: u32) -> u32 {
        let prefix = format!("worker {id} ready (pid ");
        self.log()
            .iter()
            .rev()
            .find_map(|l| l.split_once(&prefix).map(|(_, rest)| rest.to_owned()))
            .and_then(|rest| rest.trim_end_matches(')').parse().ok())
            .unwrap_or_else(|| panic!("no ready line for worker {id}"))
    }

    /// The metrics endpoint's address, from the `stickyd: metrics on ADDR` line.
    pub fn metrics_addr(&self) -> SocketAddr {
        let line = self.wait_log("stickyd: metrics on ", TIMEOUT);
        line.rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .expect("metrics address")
    }

    /// The master's worker processes (its children).
    pub fn worker_pids(&self) -> Vec<u32> {
        children_of(self.pid)
    }

    /// The master's CPU time (user + system), from /proc/PID/stat.
    pub fn cpu_time(&self) -> Duration {
        cpu_time(self.pid)
    }

    /// Open file descriptors of the master.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for Stickyd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let workers = children_of(child.id());
            let _ = child.kill();
            let _ = child.wait();
            for pid in workers {
                // SAFETY: kill(2) on a pid; at worst it names a process that already exited.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }
}

/// `args` with `--backend` inserted (before any `--`) when STICKYD_TEST_BACKEND picks one: the
/// suite runs against each backend.
pub fn with_test_backend(args: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let backend = std::env::var("STICKYD_TEST_BACKEND")
        .ok()
        .filter(|b| !b.is_empty());
    if let Some(backend) = backend {
        if !args.iter().any(|a| a == "--backend") {
            let at = args.iter().position(|a| a == "--").unwrap_or(args.len());
            args.insert(at, "--backend".to_owned());
            args.insert(at + 1, backend);
        }
    }
    args
}

/// The worker a key goes to when `workers` workers are all live.
pub fn owner(key: stickyd::keys::Key<'_>, workers: u32) -> u32 {
    stickyd::route::pick(stickyd::route::key_hash(key), 0..workers).expect("a worker")
}

/// The worker a key goes to when only `workers` are live: its first rendezvous choice among
/// them (its next choice while its own worker is away).
pub fn owner_among(key: stickyd::keys::Key<'_>, workers: impl IntoIterator<Item = u32>) -> u32 {
    stickyd::route::pick(stickyd::route::key_hash(key), workers).expect("a worker")
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a pid of a process we started; no memory is involved.
    let rc = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig})");
}

/// GET a path of the metrics endpoint: (status, body).
pub fn scrape(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut c = connect(addr, None);
    write!(c, "GET {path} HTTP/1.1\r\nHost: m\r\n\r\n").unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).unwrap();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

/// The sum of every sample of a metric family in a scrape (`name{...} value` or `name value`).
pub fn metric_sum(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Processes whose parent is `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Some(stat) = proc_stat(child) {
            if stat.ppid == pid {
                out.push(child);
            }
        }
    }
    out
}

/// Whether `pid` names a live process (not a zombie).
pub fn alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|s| s.state != 'Z' && s.state != 'X')
}

struct Stat {
    state: char,
    ppid: u32,
    utime: u64,
    stime: u64,
}

fn proc_stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: split after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        utime: fields.get(11)?.parse().ok()?,
        stime: fields.get(12)?.parse().ok()?,
    })
}

/// CPU time (user + system) of a process.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = proc_stat(pid).expect("process stat");
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis((stat.utime + stat.stime) * 1000 / hz)
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The `X-Worker` header, as a number.
    pub fn worker(&self) -> u32 {
        self.header("x-worker")
            .unwrap_or_else(|| panic!("no X-Worker in {self:?}"))
            .parse()
            .expect("X-Worker number")
    }
}

/// Connects to `addr`, from `source` when given (any 127.0.0.0/8 address works on loopback).
pub fn connect(addr: SocketAddr, source: Option<IpAddr>) -> TcpStream {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .expect("socket");
    if let Some(ip) = source {
        socket
            .bind(&SocketAddr::new(ip, 0).into())
            .unwrap_or_else(|e| panic!("bind {ip}: {e}"));
    }
    socket
        .connect_timeout(&addr.into(), TIMEOUT)
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    stream.set_write_timeout(Some(TIMEOUT)).expect("timeout");
    stream
}

/// The loopback address 127.0.0.`n`.
pub fn lo(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// A GET request with extra header lines (each without CRLF).
pub fn request(path: &str, headers: &[&str]) -> String {
    let mut r = format!("GET {path} HTTP/1.1\r\nHost: test\r\n");
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r
}

/// Reads one response (headers and a Content-Length body) from a stream.
pub fn read_response(stream: &mut TcpStream) -> Response {
    try_read_response(stream).unwrap_or_else(|e| panic!("{e}"))
}

/// As [`read_response`], with an error if the connection ends or fails first.
pub fn try_read_response(stream: &mut TcpStream) -> std::io::Result<Response> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(0) => {
                let what = format!(
                    "connection closed mid-response: {:?}",
                    String::from_utf8_lossy(&buf)
                );
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, what));
            }
            Ok(_) => buf.push(byte[0]),
            Err(e) => {
                let what = format!(
                    "reading the response: {e}; got {:?}",
                    String::from_utf8_lossy(&buf)
                );
                return Err(std::io::Error::new(e.kind(), what));
            }
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// One request on a new connection from `source`.
pub fn get(addr: SocketAddr, source: Option<IpAddr>, path: &str, headers: &[&str]) -> Response {
    let mut stream = connect(addr, source);
    stream
        .write_all(request(path, headers).as_bytes())
        .expect("send request");
    read_response(&mut stream)
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The names of the variables in a process's environment.
pub fn environ_names(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    raw.split(|&b| b == 0)
        .filter_map(|kv| kv.split(|&b| b == b'=').next())
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .filter(|k| !k.is_empty())
        .collect()
}

/// Makes orphaned descendants (a successor whose predecessor exited) children of this process.
pub fn become_subreaper() {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "prctl: {}", std::io::Error::last_os_error());
}

/// Kills, on drop, the processes that are not the test's direct children (successors), with
/// their workers.
#[derive(Default)]
pub struct Successors(pub Vec<u32>);

impl Drop for Successors {
    fn drop(&mut self) {
        for &pid in &self.0 {
            if alive(pid) {
                let workers = children_of(pid);
                // SAFETY: kill(2) on a pid this test saw started; no memory is involved.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                for w in workers {
                    // SAFETY: as above; the workers die with their master anyway.
                    unsafe { libc::kill(w as i32, libc::SIGKILL) };
                }
            }
            let mut status = 0;
            // SAFETY: waitpid with WNOHANG on a pid, writing into a local int.
            unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
        }
    }
}

/// Waits for `pid`, once it has become this process's child, to exit: its exit code.
pub fn wait_orphan(pid: u32) -> Option<i32> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut status = 0;
        // SAFETY: waitpid with WNOHANG on a pid, writing into a local int.
        let rc = unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
        if rc == pid as i32 {
            return libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
        }
        // 0: still running; -1 (ECHILD): not reparented to us yet.
        assert!(
            Instant::now() < deadline,
            "pid {pid} did not exit within {TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The successors a master (or its successors, which share its stderr) said it started, in
/// order.
pub fn started(s: &Stickyd) -> Vec<u32> {
    s.log()
        .iter()
        .filter_map(|l| l.split_once("SIGUSR2: upgrading: started ").map(|(_, r)| r))
        .filter_map(|r| r.rsplit_once("(pid ").map(|(_, p)| p))
        .filter_map(|p| p.split(')').next()?.parse().ok())
        .collect()
}

/// Waits for the `n`th successor to be started; its pid.
pub fn wait_started(s: &Stickyd, n: usize) -> u32 {
    assert!(
        eventually(TIMEOUT, || started(s).len() >= n),
        "successor {n} never started; log: {:#?}",
        s.log()
    );
    started(s)[n - 1]
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("stickyd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A datagram socket standing in for systemd's notification socket.
pub struct NotifySocket {
    socket: UnixDatagram,
    /// What NOTIFY_SOCKET says.
    pub name: String,
    _dir: Option<TempDir>,
}

impl NotifySocket {
    pub fn at_path(test: &str) -> NotifySocket {
        let dir = TempDir::new(test);
        let path = dir.0.join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        NotifySocket::timed(socket, path.to_string_lossy().into_owned(), Some(dir))
    }

    pub fn abstract_(test: &str) -> NotifySocket {
        let name = format!("stickyd-{test}-{}", std::process::id());
        let addr = UnixAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).expect("bind the abstract notify socket");
        NotifySocket::timed(socket, format!("@{name}"), None)
    }

    fn timed(socket: UnixDatagram, name: String, dir: Option<TempDir>) -> NotifySocket {
        socket.set_read_timeout(Some(TIMEOUT)).unwrap();
        NotifySocket {
            socket,
            name,
            _dir: dir,
        }
    }

    /// The next notification.
    pub fn next(&self) -> String {
        let mut buf = [0u8; 512];
        let n = self
            .socket
            .recv(&mut buf)
            .expect("a notification within the timeout");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

/// A command that starts stickyd with `listeners` passed by socket activation, as systemd
/// does (the sockets at fd 3, 4, ..., `LISTEN_FDS`, `LISTEN_FDNAMES` their names, `LISTEN_PID`
/// the pid that execs stickyd): the test binds port 0 itself and knows each port before
/// stickyd starts, so its workers can be told (stickyd still prints a `listening on` line for
/// each). Start it with [`Stickyd::launch`] and `listeners.len()` expected lines.
pub fn activated_command(listeners: &[(&str, &std::net::TcpListener)], args: &[&str]) -> Command {
    use std::os::fd::AsRawFd;
    let fds: Vec<_> = listeners.iter().map(|(_, l)| l.as_raw_fd()).collect();
    let names: Vec<&str> = listeners.iter().map(|(name, _)| *name).collect();
    let mut cmd = activated_fds(&fds, None, args);
    cmd.env("LISTEN_FDNAMES", names.join(":"));
    cmd
}

/// A command that starts stickyd as systemd does: `fds` at 3, 4, ..., `LISTEN_FDS` their
/// count, no `LISTEN_FDNAMES`, and `LISTEN_PID` the pid that execs stickyd (bash's `$$`, which
/// `exec` keeps); `listen_pid` overrides it.
pub fn activated_fds(
    fds: &[std::os::fd::RawFd],
    listen_pid: Option<&str>,
    args: &[&str],
) -> Command {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::os::unix::process::CommandExt;

    // Copies numbered 100 or above (close-on-exec), so that moving several fds down to 3, 4,
    // ... in the child cannot overwrite one still to be moved.
    let copies: Vec<OwnedFd> = fds
        .iter()
        .map(|&fd| {
            // SAFETY: F_DUPFD_CLOEXEC on a live fd returns a new fd that nothing else owns.
            let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100) };
            assert!(
                copy >= 100,
                "fcntl(F_DUPFD_CLOEXEC): {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: just created, owned by nobody else.
            unsafe { OwnedFd::from_raw_fd(copy) }
        })
        .collect();
    let script = match listen_pid {
        Some(pid) => format!("LISTEN_PID={pid} exec \"$0\" \"$@\""),
        None => "LISTEN_PID=$$ exec \"$0\" \"$@\"".to_owned(),
    };
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(script)
        .arg(stickyd_bin())
        .args(with_test_backend(args))
        .env("LISTEN_FDS", fds.len().to_string())
        .env_remove("LISTEN_FDNAMES")
        .env_remove("NOTIFY_SOCKET");
    let raw: Vec<RawFd> = copies.iter().map(AsRawFd::as_raw_fd).collect();
    let place = move || -> std::io::Result<()> {
        // Keeps the copies open until the command is dropped, after the spawn.
        let _ = &copies;
        for (i, &fd) in raw.iter().enumerate() {
            // SAFETY: dup2 onto 3 + i, an fd number below 100 that the sources (all 100 or
            // above) cannot be; the new fd is not close-on-exec. Async-signal-safe.
            if unsafe { libc::dup2(fd, 3 + i as RawFd) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the closure only calls dup2, which is async-signal-safe, and allocates nothing.
    unsafe { cmd.pre_exec(place) };
    cmd
}

/// An attached hello worker, killed on drop.
pub struct Attached(pub Child);

impl Attached {
    pub fn start(path: &Path, id: Option<u32>, uid: Option<u32>) -> Attached {
        Attached::start_program(&hello_worker_bin(), path, id, uid)
    }

    /// Starts `program` (a hello worker) attaching to `path`.
    pub fn start_program(
        program: &Path,
        path: &Path,
        id: Option<u32>,
        uid: Option<u32>,
    ) -> Attached {
        let mut cmd = attach_command(program, path, id, uid);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        Attached(cmd.spawn().expect("start hello_worker"))
    }

    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Waits for the worker to exit on its own.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "attached worker did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The command that starts `program` attaching to `path` (`STICKYD_ATTACH`), in slot `id`
/// (`STICKYD_WORKER_ID`) if given, as user `uid` if given.
pub fn attach_command(program: &Path, path: &Path, id: Option<u32>, uid: Option<u32>) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("STICKYD_ATTACH", path)
        .env_remove("STICKYD_FD")
        .env_remove("STICKYD_WORKER_ID")
        .stdin(Stdio::null());
    if let Some(id) = id {
        cmd.env("STICKYD_WORKER_ID", id.to_string());
    }
    if let Some(uid) = uid {
        use std::os::unix::process::CommandExt;
        // And a working directory that uid may enter (the test's own may not be).
        cmd.uid(uid).gid(uid).current_dir("/");
    }
    cmd
}
