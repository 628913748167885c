//! `--config FILE` end to end: the real binary reads its listeners, each with key rules of its
//! own, from a TOML file, lays the command line's flags over it, and refuses a bad file with
//! exit 2 and one line naming the file, the line and the key.

mod util;

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use stickyd::keys::Key;
use util::*;

/// A configuration file in the temporary directory, removed on drop.
struct ConfigFile(PathBuf);

impl ConfigFile {
    fn new(text: &str) -> ConfigFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "stickyd-config-file-test-{}-{}.toml",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, text).expect("write the configuration file");
        ConfigFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temporary path")
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Waits for `n` `listening on` lines (a file's listeners are not counted by `Stickyd::start`,
/// which counts `--listen` flags) and records them as the listeners, in order.
fn wait_listeners(s: &mut Stickyd, n: usize) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let listening: Vec<(String, SocketAddr)> = s
            .log()
            .iter()
            .filter_map(|l| l.strip_prefix("stickyd: listening on "))
            .filter_map(|rest| {
                let (addr, name) = rest.split_once(' ')?;
                let name = name.trim_start_matches('(').trim_end_matches(')');
                Some((name.to_owned(), addr.parse().ok()?))
            })
            .collect();
        if listening.len() >= n {
            s.listeners = listening;
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} listeners; log: {:#?}",
            listening.len(),
            s.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The address of the listener named `name`.
fn addr_of(s: &Stickyd, name: &str) -> SocketAddr {
    s.listeners
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no listener {name} in {:?}", s.listeners))
        .1
}

const TWO_LISTENERS: &str = r#"
workers = 4
key = ["query:room"]   # for the listeners that give no rule of their own

[[listener]]
name = "a"
addr = "127.0.0.1:0"
key = ["header:x-user"]

[[listener]]
name = "b"
addr = "127.0.0.1:0"
key = ["cookie:sid"]

[[listener]]
name = "c"
addr = "127.0.0.1:0"
proxy-protocol = true
"#;

#[test]
fn each_listener_routes_by_its_own_rules() {
    let file = ConfigFile::new(TWO_LISTENERS);
    let mut s = Stickyd::start(&["--config", file.path(), "--listen", "d=127.0.0.1:0"]);
    wait_listeners(&mut s, 4);
    let names: Vec<&str> = s.listeners.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a", "b", "c", "d"]);
    s.wait_ready(4);
    let (a, b, c, d) = (
        addr_of(&s, "a"),
        addr_of(&s, "b"),
        addr_of(&s, "c"),
        addr_of(&s, "d"),
    );

    let mut discriminating = 0;
    for n in 0..12u8 {
        let user = format!("user-{n}");
        let sid = format!("session-{n}");
        let by_user = owner(Key::Bytes(user.as_bytes()), 4);
        let by_sid = owner(Key::Bytes(sid.as_bytes()), 4);
        let source = lo(20 + n);
        let by_source = owner(Key::Addr(source), 4);
        let x_user = format!("X-User: {user}");
        let cookie = format!("Cookie: sid={sid}");
        if by_user != by_source {
            discriminating += 1;
        }

        // Listener a: the X-User header decides, whatever the cookie.
        let r = get(a, Some(source), "/", &[&x_user, &cookie]);
        assert_eq!(r.worker(), by_user, "{x_user} on a");
        assert_eq!(r.header("x-listener"), Some("a"));
        // Listener b: the cookie decides; X-User means nothing there.
        let r = get(b, Some(source), "/", &[&x_user, &cookie]);
        assert_eq!(r.worker(), by_sid, "{cookie} on b");
        assert_eq!(r.header("x-listener"), Some("b"));
        let r = get(b, Some(source), "/", &[&x_user]);
        assert_eq!(
            r.worker(),
            by_source,
            "{x_user} alone on b: the client address"
        );
        // Listener d (from the command line): the dispatcher-wide rule.
        let room = format!("/?room={user}");
        assert_eq!(get(d, Some(source), &room, &[&cookie]).worker(), by_user);
        assert_eq!(get(d, Some(source), "/", &[&x_user]).worker(), by_source);
    }
    assert!(discriminating >= 3, "too few users whose worker differs");

    // Listener c: a PROXY header first; the dispatcher-wide rule, else the carried address.
    for client in ["10.1.1.1", "192.0.2.77", "2001:db8::5"] {
        let ip: IpAddr = client.parse().unwrap();
        let family = if ip.is_ipv4() { "TCP4" } else { "TCP6" };
        let dst = if ip.is_ipv4() { "127.0.0.1" } else { "::1" };
        let header = format!("PROXY {family} {client} {dst} 4321 80\r\n");
        for (path, expected) in [
            ("/", owner(Key::Addr(ip), 4)),
            ("/?room=lobby", owner(Key::Bytes(b"lobby"), 4)),
        ] {
            let mut conn = connect(c, Some(lo(9)));
            conn.write_all(header.as_bytes()).unwrap();
            conn.write_all(request(path, &[]).as_bytes()).unwrap();
            let r = read_response(&mut conn);
            assert_eq!(r.header("x-peer"), Some(client), "{client} {path}");
            assert_eq!(r.worker(), expected, "{client} {path}");
        }
    }
}

#[test]
fn a_flag_overrides_the_file() {
    let file = ConfigFile::new("workers = 3\n[[listener]]\naddr = \"127.0.0.1:0\"\n");
    let s = Stickyd::start(&["--config", file.path(), "--workers", "2"]);
    s.wait_ready(2);
    s.wait_log("started 2 workers", TIMEOUT);
    assert_eq!(s.worker_pids().len(), 2, "log: {:#?}", s.log());
    assert_eq!(s.listeners.len(), 1);
    let r = get(s.addr(), Some(lo(3)), "/", &[]);
    assert_eq!(r.worker(), owner(Key::Addr(lo(3)), 2));
}

/// Runs stickyd with `args`, expecting it to refuse them: exit 2 and one line on stderr.
fn refused(args: &[&str]) -> String {
    let out = Command::new(stickyd_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run stickyd");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    stderr.trim_end().to_owned()
}

#[test]
fn a_bad_file_exits_2_with_one_line_naming_the_file_line_and_key() {
    let file = ConfigFile::new(
        "workers = 2\n\n[[listener]]\nname = \"a\"\naddr = \"1.2.3.4\"\nkey = [\"ip\"]\n",
    );
    assert_eq!(
        refused(&["--config", file.path()]),
        format!(
            "stickyd: {}:5: listener.addr: '1.2.3.4' is not an address:port \
             (e.g. 127.0.0.1:3000 or [::1]:3000)",
            file.path()
        )
    );
    let file = ConfigFile::new("workers = 2\nlisten = \"127.0.0.1:0\"\n");
    let line = refused(&["--config", file.path()]);
    let prefix = format!("stickyd: {}:2: listen: unknown field `listen`", file.path());
    assert!(line.starts_with(&prefix), "{line}");

    let missing = std::env::temp_dir().join("stickyd-config-file-test-missing.toml");
    let missing = missing.to_str().unwrap();
    assert_eq!(
        refused(&["--config", missing]),
        format!(
            "stickyd: {missing}: cannot read the configuration file: \
             No such file or directory (os error 2)"
        )
    );
}
