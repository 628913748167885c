//! Where io_uring is refused: stickyd falls back to its epoll backend and says so once, the way
//! it runs under Docker's default seccomp profile or with `kernel.io_uring_disabled` set.

mod util;

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
use util::*;

/// A seccomp program that makes `io_uring_setup` fail with EPERM, as Docker's default profile
/// does, and allows everything else.
fn refuse_io_uring() -> BpfProgram {
    let arch = TargetArch::try_from(std::env::consts::ARCH).expect("a seccompiler target");
    let rules = BTreeMap::from([(libc::SYS_io_uring_setup, vec![])]);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .expect("filter");
    filter.try_into().expect("bpf program")
}

/// `stickyd ARGS` under the filter.
fn command_without_io_uring(args: &[&str]) -> Command {
    let program = refuse_io_uring();
    let mut cmd = Command::new(stickyd_bin());
    cmd.args(args).stdin(Stdio::null()).env("RUST_LOG", "info");
    let install = move || -> std::io::Result<()> {
        seccompiler::apply_filter(&program).map_err(|e| std::io::Error::other(e.to_string()))
    };
    // SAFETY: between fork and exec the closure only calls prctl and seccomp (through
    // apply_filter, on a program built before the fork); it allocates nothing on success.
    unsafe { cmd.pre_exec(install) };
    cmd
}

#[test]
fn without_io_uring_auto_falls_back_to_epoll_says_so_and_serves() {
    let mut child =
        command_without_io_uring(&["--listen", "127.0.0.1:0", "--workers", "2", "--grace", "1s"])
            .stderr(Stdio::piped())
            .spawn()
            .expect("start stickyd");
    let stderr = child.stderr.take().unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = std::sync::Arc::clone(&lines);
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            eprintln!("[stickyd] {line}");
            sink.lock().unwrap().push(line);
        }
    });
    let find = |needle: &str| {
        lines
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains(needle))
            .cloned()
    };
    assert!(
        eventually(TIMEOUT, || find(" ready (pid ").is_some()
            && find("listening on").is_some()),
        "not ready: {:#?}",
        lines.lock().unwrap()
    );
    let listening = find("listening on").unwrap();
    let addr = listening
        .strip_prefix("stickyd: listening on ")
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    let r = get(addr, Some(lo(2)), "/", &[]);
    assert_eq!(r.status, 200);
    let warnings: Vec<String> = lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("epoll"))
        .cloned()
        .collect();
    assert_eq!(warnings.len(), 1, "one line saying why: {warnings:#?}");
    assert!(warnings[0].contains("io_uring"), "{warnings:?}");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(0));
    reader.join().unwrap();
}

#[test]
fn without_io_uring_backend_uring_is_a_fatal_error() {
    let out = command_without_io_uring(&["--listen", "127.0.0.1:0", "--backend", "uring"])
        .output()
        .expect("run stickyd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("io_uring"), "{stderr}");
}
