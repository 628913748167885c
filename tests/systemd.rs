//! systemd: socket activation (`LISTEN_FDS`) the way systemd does it (the sockets at fd 3 on,
//! `LISTEN_PID` the pid that execs stickyd), and readiness notification (`NOTIFY_SOCKET`).

mod util;

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::process::Stdio;

use util::*;

fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

#[test]
fn serves_the_sockets_systemd_passes_and_tells_it_when_ready_and_stopping() {
    let (web, web_addr) = listener();
    let (admin, admin_addr) = listener();
    let notify = NotifySocket::at_path("systemd-activated");
    // `--listen web=...` takes the socket named web (its address here does not matter);
    // `admin`, which no --listen names, is served under its own name.
    let mut cmd = activated_fds(
        &[web.as_raw_fd(), admin.as_raw_fd()],
        None,
        &["--listen", "web=127.0.0.1:1", "--workers", "2"],
    );
    cmd.env("LISTEN_FDNAMES", "web:admin")
        .env("NOTIFY_SOCKET", &notify.name);
    let mut s = Stickyd::launch(cmd, 2);
    drop((web, admin));
    assert_eq!(
        s.listeners,
        vec![
            ("web".to_owned(), web_addr),
            ("admin".to_owned(), admin_addr)
        ]
    );
    assert_eq!(notify.next(), "READY=1");
    // READY=1 comes after the last worker's HELLO.
    s.wait_ready(2);
    for (name, addr) in [("web", web_addr), ("admin", admin_addr)] {
        let r = get(addr, None, "/", &[]);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-listener"), Some(name));
    }
    // The master was told; its workers never are.
    let master_env = environ_names(s.pid);
    for var in ["LISTEN_PID", "LISTEN_FDS", "NOTIFY_SOCKET"] {
        assert!(
            master_env.iter().any(|v| v == var),
            "{var} not set for the master"
        );
    }
    let workers = s.worker_pids();
    assert_eq!(workers.len(), 2);
    for pid in workers {
        let env = environ_names(pid);
        let leaked: Vec<&String> = env
            .iter()
            .filter(|v| {
                v.starts_with("LISTEN_")
                    || *v == "NOTIFY_SOCKET"
                    || v.starts_with("STICKYD_UPGRADE")
            })
            .collect();
        assert!(leaked.is_empty(), "worker {pid} sees {leaked:?}");
    }
    s.signal(libc::SIGTERM);
    assert_eq!(notify.next(), "STOPPING=1");
    assert_eq!(s.wait_exit(TIMEOUT).code(), Some(0));
}

#[test]
fn an_abstract_notify_socket_hears_ready_too() {
    let notify = NotifySocket::abstract_("systemd-abstract");
    let mut s = Stickyd::start_with_env(
        &["--listen", "127.0.0.1:0", "--workers", "3"],
        &[("NOTIFY_SOCKET", notify.name.as_str())],
    );
    assert_eq!(notify.next(), "READY=1");
    s.wait_ready(3);
    assert_eq!(get(s.addr(), None, "/", &[]).status, 200);
    s.signal(libc::SIGINT);
    assert_eq!(notify.next(), "STOPPING=1");
    assert_eq!(s.wait_exit(TIMEOUT).code(), Some(0));
}

#[test]
fn without_listen_the_passed_sockets_replace_the_default_address() {
    let (sock, addr) = listener();
    let cmd = activated_fds(&[sock.as_raw_fd()], None, &["--workers", "1"]);
    let s = Stickyd::launch(cmd, 1);
    drop(sock);
    // No LISTEN_FDNAMES: systemd's sockets get positional names; 127.0.0.1:3000 is not bound.
    assert_eq!(s.listeners, vec![("l0".to_owned(), addr)]);
    s.wait_ready(1);
    assert_eq!(get(addr, None, "/", &[]).worker(), 0);
}

/// Runs stickyd activated with `fd` at fd 3; returns its exit code and stderr.
fn run_activated(fd: RawFd, listen_pid: Option<&str>) -> (Option<i32>, String) {
    let out = activated_fds(
        &[fd],
        listen_pid,
        &["--listen", "127.0.0.1:0", "--workers", "1"],
    )
    .env("RUST_LOG", "info")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start stickyd")
    .wait_with_output()
    .expect("stickyd output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_passed_fd_that_is_not_a_listening_tcp_socket_is_fatal() {
    let file = std::fs::File::open("/proc/self/stat").unwrap();
    let (code, err) = run_activated(file.as_raw_fd(), None);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("fd 3 is not a socket"), "{err}");

    let unbound = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let (code, err) = run_activated(unbound.as_raw_fd(), None);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("fd 3 is a TCP socket but not listening"),
        "{err}"
    );

    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (code, err) = run_activated(udp.as_raw_fd(), None);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("fd 3 is not a stream (TCP) socket"), "{err}");
}

#[test]
fn sockets_passed_to_another_pid_are_not_taken() {
    // LISTEN_PID names another process (as when a parent's variables leak to a child): the
    // fd is left alone and --listen is bound as usual. A SIGTERM ends it once it listens.
    let file = std::fs::File::open("/proc/self/stat").unwrap();
    let cmd = activated_fds(
        &[file.as_raw_fd()],
        Some("1"),
        &["--listen", "127.0.0.1:0", "--workers", "1"],
    );
    let mut s = Stickyd::launch(cmd, 1);
    s.wait_ready(1);
    assert_eq!(get(s.addr(), None, "/", &[]).status, 200);
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(TIMEOUT).code(), Some(0));
}

#[test]
fn an_activated_master_hands_its_sockets_and_systemd_over_to_its_successor() {
    become_subreaper();
    let mut successors = Successors::default();
    let (web, web_addr) = listener();
    let notify = NotifySocket::at_path("systemd-upgrade");
    let mut cmd = activated_fds(&[web.as_raw_fd()], None, &["--workers", "2"]);
    cmd.env("LISTEN_FDNAMES", "web")
        .env("NOTIFY_SOCKET", &notify.name);
    let mut s = Stickyd::launch(cmd, 1);
    drop(web);
    assert_eq!(notify.next(), "READY=1");
    s.signal(libc::SIGUSR2);
    let successor = wait_started(&s, 1);
    successors.0.push(successor);
    // systemd follows the successor; the old master stops without saying STOPPING=1.
    assert_eq!(notify.next(), format!("MAINPID={successor}"));
    assert_eq!(s.wait_exit(TIMEOUT).code(), Some(0));
    let r = get(web_addr, None, "/", &[]);
    assert_eq!(r.header("x-listener"), Some("web"));
    // The successor was not given LISTEN_* (its LISTEN_PID would not be its own anyway).
    let env = environ_names(successor);
    assert!(!env.iter().any(|v| v.starts_with("LISTEN_")), "{env:?}");
    assert!(env.iter().any(|v| v == "NOTIFY_SOCKET"), "{env:?}");
    signal(successor, libc::SIGTERM);
    assert_eq!(notify.next(), "STOPPING=1");
    assert_eq!(wait_orphan(successor), Some(0));
}
