//! The PROXY protocol (v1 text and v2 binary) header at the start of a connection.
//!
//! A balancer in front of stickyd (HAProxy, Envoy, a cloud load balancer) prepends one header
//! to each connection saying who the client is, as haproxy's `proxy-protocol.txt` specifies:
//!
//! - v1, one text line of at most 107 bytes:
//!   `PROXY TCP4 192.0.2.1 198.51.100.2 51234 443\r\n`, `PROXY TCP6 ...`, or
//!   `PROXY UNKNOWN ...\r\n` (anything up to the CRLF). The syntax is checked strictly: single
//!   spaces, addresses valid for the family, decimal ports 0-65535 without leading zeros.
//! - v2, binary: the 12-byte signature `\r\n\r\n\0\r\nQUIT\n`, a version/command byte (`0x20`
//!   LOCAL, `0x21` PROXY), a family/protocol byte (`0x11` TCP over IPv4, `0x21` TCP over IPv6,
//!   `0x00` unspecified), a u16 length, then the addresses and TLVs; TLVs are skipped.
//!
//! [`parse`] answers like httparse: a complete [`Header`], "partial" (the bytes so far are a
//! valid prefix: peek again), or an [`Error`] as soon as the bytes cannot become a valid
//! header. It reads the slice only, allocates nothing and never panics. Addresses are returned
//! as the header carries them (an IPv4-mapped IPv6 address stays IPv6: the key code folds it).
//!
//! ```
//! use std::net::SocketAddr;
//! use stickyd::proxy::{self, Header};
//!
//! let bytes = b"PROXY TCP4 192.0.2.1 198.51.100.2 51234 443\r\nGET / HTTP/1.1\r\n";
//! let source: SocketAddr = "192.0.2.1:51234".parse().unwrap();
//! let destination: SocketAddr = "198.51.100.2:443".parse().unwrap();
//! let header = Header::Proxied { len: 45, source, destination };
//! assert_eq!(proxy::parse(bytes, 4096), Ok(Some(header)));
//! assert_eq!(header.len(), 45);
//! assert_eq!(proxy::parse(&bytes[..20], 4096), Ok(None));
//! assert_eq!(proxy::parse(b"GET / HTTP/1.1\r\n", 4096), Err(proxy::Error::NotProxy));
//! ```

mod v1;
mod v2;

use std::net::SocketAddr;

/// A parsed PROXY header at the start of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Header {
    /// The client's address (and port) as the balancer saw it.
    Proxied {
        /// Header length in bytes.
        len: usize,
        /// The client.
        source: SocketAddr,
        /// The address the client connected to.
        destination: SocketAddr,
    },
    /// v2 `LOCAL` or v1 `UNKNOWN` (the balancer's own health check): use the real peer.
    Local {
        /// Header length in bytes.
        len: usize,
    },
}

impl Header {
    /// The header's length in bytes: what the worker consumes before the application reads.
    // A header is never empty: `is_empty` would only mislead.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        match *self {
            Header::Proxied { len, .. } | Header::Local { len } => len,
        }
    }
}

/// What is malformed in a PROXY header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The bytes start neither `PROXY ` nor the v2 signature.
    #[error("not a PROXY protocol header")]
    NotProxy,
    /// The header is longer than the caller accepts.
    #[error("PROXY header longer than {max_len} bytes")]
    TooLong {
        /// The longest header accepted.
        max_len: usize,
    },
    /// A v1 line without its CRLF within 107 bytes.
    #[error("PROXY v1 line longer than 107 bytes")]
    V1LineTooLong,
    /// A v1 protocol other than `TCP4`, `TCP6` or `UNKNOWN`.
    #[error("PROXY v1: bad protocol (expected TCP4, TCP6 or UNKNOWN)")]
    V1Protocol,
    /// A v1 address that is not an address of the line's family.
    #[error("PROXY v1: bad address")]
    V1Address,
    /// A v1 port that is not decimal 0-65535 without leading zeros.
    #[error("PROXY v1: bad port")]
    V1Port,
    /// A v1 line whose separators are not single spaces, or that does not end in CRLF.
    #[error("PROXY v1: bad syntax (fields are separated by one space, the line ends in CRLF)")]
    V1Syntax,
    /// A v2 version other than 2.
    #[error("PROXY v2: unsupported version {0}")]
    V2Version(u8),
    /// A v2 command other than LOCAL (0) or PROXY (1).
    #[error("PROXY v2: unknown command {0}")]
    V2Command(u8),
    /// A v2 family/protocol byte that the specification does not define.
    #[error("PROXY v2: unknown address family/protocol {0:#04x}")]
    V2Family(u8),
    /// A v2 PROXY header whose address block is shorter than its family needs.
    #[error("PROXY v2: address block of {len} bytes, too short for its family")]
    V2Length {
        /// The length the header declares.
        len: usize,
    },
    /// A v2 PROXY header for UDP or a Unix socket: not a TCP connection's client.
    #[error("PROXY v2: family/protocol {0:#04x} (UDP or UNIX) is not supported")]
    Unsupported(u8),
}

/// `Ok(Some(header))` complete; `Ok(None)` partial (a valid prefix: peek again); `Err`
/// malformed.
///
/// `max_len` is the longest header accepted (the master passes its `--max-peek`): a header
/// that is longer, or a prefix that reaches `max_len` bytes without completing, is
/// [`Error::TooLong`]. A first byte that cannot start a header is [`Error::NotProxy`] at once.
pub fn parse(bytes: &[u8], max_len: usize) -> Result<Option<Header>, Error> {
    // Only the first `max_len` bytes count, so the answer does not depend on what follows.
    let bytes = bytes.get(..max_len).unwrap_or(bytes);
    let parsed = match bytes.first() {
        None => Ok(None),
        Some(b'P') => v1::parse(bytes),
        Some(b'\r') => v2::parse(bytes, max_len),
        Some(_) => Err(Error::NotProxy),
    };
    match parsed {
        Ok(None) if bytes.len() >= max_len => Err(Error::TooLong { max_len }),
        other => other,
    }
}
