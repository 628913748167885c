//! A worker in another language: `examples/python/worker.py`, written from the wire protocol
//! page (docs/src/wire-protocol.md) with Python's standard library, served through stickyd.

mod util;

use std::io::Write;
use std::process::Command;

use stickyd::keys::Key;
use util::*;

#[test]
fn the_python_worker_is_served_through_stickyd() {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("skipped: no python3 on this machine");
        return;
    }
    let worker = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python/worker.py");
    let mut s = Stickyd::start_ready(
        &[
            "--listen",
            "py=127.0.0.1:0",
            "--workers",
            "2",
            "--",
            "python3",
            worker,
        ],
        2,
    );
    for n in 2..12u8 {
        let source = lo(n);
        let r = get(s.addr(), Some(source), "/", &[]);
        assert_eq!(r.status, 200);
        assert_eq!(r.worker(), owner(Key::Addr(source), 2), "{source}");
        assert_eq!(r.header("x-peer"), Some(source.to_string().as_str()));
        assert_eq!(r.header("x-listener"), Some("py"));
        assert_eq!(r.body, format!("worker: {}\n", r.worker()).into_bytes());
    }
    // Keep-alive: the connection stays with its worker.
    let mut c = connect(s.addr(), Some(lo(20)));
    let first = {
        c.write_all(request("/", &[]).as_bytes()).unwrap();
        read_response(&mut c).worker()
    };
    for _ in 0..3 {
        c.write_all(request("/", &[]).as_bytes()).unwrap();
        assert_eq!(read_response(&mut c).worker(), first);
    }
    drop(c);
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(TIMEOUT).code(), Some(0));
}
