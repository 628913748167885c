//! PROXY protocol v1: one text line.
//!
//! ```text
//! PROXY TCP4 <source> <destination> <source port> <destination port>\r\n
//! PROXY TCP6 <source> <destination> <source port> <destination port>\r\n
//! PROXY UNKNOWN[ <anything>]\r\n
//! ```
//!
//! The line is read field by field. A field cut short by the end of the bytes is checked as a
//! prefix (its characters, its length, and for IPv4 and ports their shape and range), so a line
//! that cannot become valid is refused as soon as the offending byte arrives.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use super::{Error, Header};

/// The longest v1 line, CRLF included.
const MAX_LINE_LEN: usize = 107;
const PREFIX: &[u8] = b"PROXY ";
/// Longest IPv4 text (`255.255.255.255`).
const MAX_V4_LEN: usize = 15;
/// Longest IPv6 text (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`).
const MAX_V6_LEN: usize = 45;

/// Why reading a field stopped.
enum Stop {
    /// The bytes end inside a valid prefix.
    Partial,
    /// The line cannot become valid.
    Bad(Error),
}

impl From<Error> for Stop {
    fn from(error: Error) -> Stop {
        Stop::Bad(error)
    }
}

/// The address family of a `TCP4` or `TCP6` line.
#[derive(Clone, Copy)]
enum Family {
    V4,
    V6,
}

/// Parses a v1 header (`bytes` starts with `P`).
pub(super) fn parse(bytes: &[u8]) -> Result<Option<Header>, Error> {
    let line = bytes.get(..MAX_LINE_LEN).unwrap_or(bytes);
    let mut cursor = Line {
        bytes: line,
        pos: 0,
    };
    match cursor.header() {
        Ok(header) => Ok(Some(header)),
        Err(Stop::Bad(error)) => Err(error),
        Err(Stop::Partial) if bytes.len() >= MAX_LINE_LEN => Err(Error::V1LineTooLong),
        Err(Stop::Partial) => Ok(None),
    }
}

/// A cursor over the line (at most [`MAX_LINE_LEN`] bytes).
struct Line<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Line<'a> {
    fn header(&mut self) -> Result<Header, Stop> {
        self.prefix()?;
        let protocol = self.token(is_protocol_byte, is_protocol_prefix, Error::V1Protocol)?;
        match protocol {
            b"UNKNOWN" => self.unknown(),
            b"TCP4" => self.family(Family::V4),
            b"TCP6" => self.family(Family::V6),
            _ => Err(Stop::Bad(Error::V1Protocol)),
        }
    }

    /// `PROXY `, compared as far as the bytes go.
    fn prefix(&mut self) -> Result<(), Stop> {
        let n = self.bytes.len().min(PREFIX.len());
        if self.bytes.get(..n) != PREFIX.get(..n) {
            return Err(Stop::Bad(Error::NotProxy));
        }
        if n < PREFIX.len() {
            return Err(Stop::Partial);
        }
        self.pos = n;
        Ok(())
    }

    /// `UNKNOWN` then CRLF, or a space and anything up to CRLF.
    fn unknown(&mut self) -> Result<Header, Stop> {
        match self.next()? {
            b'\r' => self.line_feed()?,
            b' ' => loop {
                match self.next()? {
                    b'\n' if self.bytes.get(self.pos.wrapping_sub(2)) == Some(&b'\r') => break,
                    b'\n' => return Err(Stop::Bad(Error::V1Syntax)),
                    _ => {}
                }
            },
            _ => return Err(Stop::Bad(Error::V1Syntax)),
        }
        Ok(Header::Local { len: self.pos })
    }

    /// The rest of a `TCP4` or `TCP6` line, after its protocol's space.
    fn family(&mut self, family: Family) -> Result<Header, Stop> {
        self.separator(b' ')?;
        let source = self.address(family, b' ')?;
        let destination = self.address(family, b' ')?;
        let source_port = self.port(b' ')?;
        let destination_port = self.port(b'\r')?;
        self.line_feed()?;
        Ok(Header::Proxied {
            len: self.pos,
            source: SocketAddr::new(source, source_port),
            destination: SocketAddr::new(destination, destination_port),
        })
    }

    fn next(&mut self) -> Result<u8, Stop> {
        let byte = *self.bytes.get(self.pos).ok_or(Stop::Partial)?;
        self.pos += 1;
        Ok(byte)
    }

    fn line_feed(&mut self) -> Result<(), Stop> {
        self.separator(b'\n')
    }

    fn separator(&mut self, expected: u8) -> Result<(), Stop> {
        if self.next()? != expected {
            return Err(Stop::Bad(Error::V1Syntax));
        }
        Ok(())
    }

    /// A non-empty run of `allowed` bytes, left at the byte that ends it (not consumed). When
    /// the bytes end first, the run must satisfy `prefix_ok` to be worth waiting for.
    fn token(
        &mut self,
        allowed: fn(u8) -> bool,
        prefix_ok: fn(&[u8]) -> bool,
        error: Error,
    ) -> Result<&'a [u8], Stop> {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        let len = rest.iter().position(|&b| !allowed(b));
        let token = rest.get(..len.unwrap_or(rest.len())).unwrap_or_default();
        if !prefix_ok(token) {
            return Err(Stop::Bad(error));
        }
        match len {
            None => Err(Stop::Partial),
            Some(0) => Err(Stop::Bad(error)),
            Some(len) => {
                self.pos += len;
                Ok(token)
            }
        }
    }

    /// An address of `family`, then `end`.
    fn address(&mut self, family: Family, end: u8) -> Result<IpAddr, Stop> {
        let address = match family {
            Family::V4 => {
                let token = self.token(is_v4_byte, is_v4_prefix, Error::V1Address)?;
                parse_text::<Ipv4Addr>(token).map(IpAddr::V4)
            }
            Family::V6 => {
                let token = self.token(is_v6_byte, is_v6_prefix, Error::V1Address)?;
                parse_text::<Ipv6Addr>(token).map(IpAddr::V6)
            }
        };
        let address = address.ok_or(Error::V1Address)?;
        self.separator(end)?;
        Ok(address)
    }

    /// A decimal port, then `end`.
    fn port(&mut self, end: u8) -> Result<u16, Stop> {
        let token = self.token(|b| b.is_ascii_digit(), is_port_prefix, Error::V1Port)?;
        let port = parse_text::<u16>(token).ok_or(Error::V1Port)?;
        self.separator(end)?;
        Ok(port)
    }
}

/// Parses ASCII text with `FromStr`.
fn parse_text<T: FromStr>(text: &[u8]) -> Option<T> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

fn is_protocol_byte(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit()
}

fn is_protocol_prefix(token: &[u8]) -> bool {
    [&b"TCP4"[..], b"TCP6", b"UNKNOWN"]
        .iter()
        .any(|protocol| protocol.starts_with(token))
}

fn is_v4_byte(b: u8) -> bool {
    b.is_ascii_digit() || b == b'.'
}

/// Whether `token` can begin a dotted quad: at most four groups of at most three digits,
/// each at most 255, without leading zeros; only the last group may be empty so far.
fn is_v4_prefix(token: &[u8]) -> bool {
    if token.len() > MAX_V4_LEN {
        return false;
    }
    let groups = token.split(|&b| b == b'.');
    let count = groups.clone().count();
    count <= 4
        && groups.enumerate().all(|(i, group)| {
            let last = i + 1 == count;
            (last || !group.is_empty()) && is_decimal_prefix(group, 255)
        })
}

fn is_v6_byte(b: u8) -> bool {
    b.is_ascii_hexdigit() || b == b':' || b == b'.'
}

fn is_v6_prefix(token: &[u8]) -> bool {
    token.len() <= MAX_V6_LEN
}

fn is_port_prefix(token: &[u8]) -> bool {
    is_decimal_prefix(token, u16::MAX.into())
}

/// Whether `digits` (ASCII digits) is empty or a decimal number up to `max` without a leading
/// zero (`0` itself is fine).
fn is_decimal_prefix(digits: &[u8], max: u32) -> bool {
    if !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    if digits.len() > 1 && digits.first() == Some(&b'0') {
        return false;
    }
    if digits.len() > 5 {
        return false;
    }
    let value = digits
        .iter()
        .fold(0u32, |value, &b| value * 10 + u32::from(b - b'0'));
    value <= max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_prefixes() {
        for good in [
            "",
            "1",
            "1.",
            "192.168.",
            "255.255.255.25",
            "0.0.0.0",
            "10.0.0",
        ] {
            assert!(is_v4_prefix(good.as_bytes()), "{good}");
        }
        for bad in [
            "256",
            "01",
            "1..",
            ".1",
            "1.2.3.4.",
            "1.2.3.4.5",
            "1.1.1.1000",
        ] {
            assert!(!is_v4_prefix(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn port_prefixes() {
        for good in ["", "0", "6553", "65535", "1"] {
            assert!(is_port_prefix(good.as_bytes()), "{good}");
        }
        for bad in ["00", "01", "65536", "99999", "100000"] {
            assert!(!is_port_prefix(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn protocol_prefixes() {
        for good in ["", "T", "TCP", "TCP4", "UNK", "UNKNOWN"] {
            assert!(is_protocol_prefix(good.as_bytes()), "{good}");
        }
        for bad in ["TCP5", "X", "UNKNOWN1", "TCP44"] {
            assert!(!is_protocol_prefix(bad.as_bytes()), "{bad}");
        }
    }
}
