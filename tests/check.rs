//! `stickyd --check`: the flags and the configuration file validated without starting anything
//! (like `nginx -t`): the effective configuration on stdout and exit 0, or exit 2 with one line
//! saying what is wrong (`file:line: ...` for the configuration file).

mod util;

use std::net::TcpListener;
use std::process::{Command, Output};

use util::*;

fn check(args: &[&str]) -> Output {
    Command::new(stickyd_bin())
        .arg("--check")
        .args(args)
        .output()
        .expect("run stickyd --check")
}

#[test]
fn a_good_configuration_is_printed_and_nothing_starts() {
    // The port is taken: stickyd would fail to bind it if it started anything.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = check(&[
        "--listen",
        &addr,
        "--workers",
        "2",
        "--key",
        "cookie:sid",
        "--",
        "sh",
        "-c",
        "exit 0",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(stdout.contains("workers = 2\n"), "{stdout}");
    assert!(stdout.contains("key = [\"cookie:sid\"]"), "{stdout}");
    assert!(stdout.contains(&format!("addr = \"{addr}\"")), "{stdout}");
    assert!(!stderr.contains("listening on"), "{stderr}");
}

#[test]
fn a_broken_configuration_file_names_its_line_and_exits_2() {
    let dir = TempDir::new("check");
    let path = dir.0.join("stickyd.toml");
    std::fs::write(&path, "workers = 2\n\n[[listener]]\naddr = \"1.2.3.4\"\n").unwrap();
    let out = check(&["--config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:4:", path.display())),
        "no file:line in {stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_flags_and_a_missing_worker_program_exit_2() {
    for (args, needle) in [
        (&["--workers", "0"][..], "--workers"),
        (&["--", "/nonexistent/worker"][..], "no such file"),
        (&["--ipc", "node"][..], "--ipc node"),
    ] {
        let out = check(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn every_example_configuration_in_the_repository_passes_the_check() {
    // stickyd*.toml under contrib/ and examples/.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    for dir in ["contrib", "examples"] {
        let mut stack = vec![root.join(dir)];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.file_name().is_some_and(|n| n == "node_modules") {
                    continue;
                }
                if path.is_dir() {
                    stack.push(path);
                } else if path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("stickyd") && n.ends_with(".toml"))
                {
                    found.push(path);
                }
            }
        }
    }
    assert!(!found.is_empty(), "no example configuration found");
    for path in found {
        let out = check(&["--config", path.to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
