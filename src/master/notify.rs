//! systemd's readiness protocol (`sd_notify`): datagrams such as `READY=1` to the socket named
//! by `NOTIFY_SOCKET`, a path or, with a leading `@`, an abstract address.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use log::{debug, warn};

/// The variable naming systemd's notification socket.
pub(crate) const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// A sender of notifications to systemd.
#[derive(Debug)]
pub(crate) struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// What `NOTIFY_SOCKET` says, for the log.
    name: String,
}

impl Notifier {
    /// A notifier for `NOTIFY_SOCKET`, if it is set and usable; a warning says why not when it
    /// is set but is not.
    pub(crate) fn from_env() -> Option<Notifier> {
        let value = std::env::var_os(NOTIFY_SOCKET)?;
        let name = value.to_string_lossy().into_owned();
        match Self::open(&name) {
            Ok(notifier) => Some(notifier),
            Err(e) => {
                warn!("{NOTIFY_SOCKET}={name}: {e}: systemd will not hear from stickyd");
                None
            }
        }
    }

    fn open(name: &str) -> io::Result<Notifier> {
        let addr = parse_addr(name)?;
        let socket = UnixDatagram::unbound()?;
        Ok(Notifier {
            socket,
            addr,
            name: name.to_owned(),
        })
    }

    /// Sends `state` (newline-separated `KEY=VALUE` assignments); a failure is logged.
    pub(crate) fn send(&self, state: &str) {
        match self.socket.send_to_addr(state.as_bytes(), &self.addr) {
            Ok(_) => debug!("told systemd {}", state.replace('\n', " ")),
            Err(e) => warn!(
                "cannot tell systemd {} on {}: {e}",
                state.replace('\n', " "),
                self.name
            ),
        }
    }
}

/// The address `NOTIFY_SOCKET` names: an absolute path, or `@name` for an abstract address.
fn parse_addr(name: &str) -> io::Result<SocketAddr> {
    if let Some(abstract_name) = name.strip_prefix('@') {
        SocketAddr::from_abstract_name(abstract_name.as_bytes())
    } else if name.starts_with('/') {
        SocketAddr::from_pathname(name)
    } else {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "not a socket path or an abstract (@) address",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let a = parse_addr("/run/systemd/notify").unwrap();
        assert_eq!(
            a.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        let a = parse_addr("@stickyd/notify").unwrap();
        assert_eq!(a.as_abstract_name(), Some(&b"stickyd/notify"[..]));
        assert!(parse_addr("vsock:2:1234").is_err());
        assert!(parse_addr("").is_err());
    }

    #[test]
    fn sends_datagrams_to_a_path() {
        let dir = std::env::temp_dir().join(format!("stickyd-notify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let receiver = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::open(path.to_str().unwrap()).unwrap();
        notifier.send("READY=1");
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
