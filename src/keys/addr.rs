//! Addresses as keys: folding IPv4-mapped IPv6 and reading an address with an optional port.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// Fold an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) to IPv4; other addresses are unchanged.
///
/// ```
/// use std::net::IpAddr;
/// use stickyd::keys::fold_addr;
///
/// let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
/// assert_eq!(fold_addr(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
/// ```
pub fn fold_addr(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Reads `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:443` as
/// an address, dropping the port; `None` for anything else (including a port out of range).
pub(crate) fn parse_addr(text: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(text).ok()?;
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sock) = text.parse::<SocketAddr>() {
        return Some(sock.ip());
    }
    let bracketed = text.strip_prefix('[')?.strip_suffix(']')?;
    bracketed.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn folds_only_v4_mapped() {
        assert_eq!(fold_addr(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(fold_addr(ip("::192.0.2.7")), ip("::192.0.2.7"));
        assert_eq!(fold_addr(ip("2001:db8::1")), ip("2001:db8::1"));
        assert_eq!(fold_addr(ip("10.0.0.1")), ip("10.0.0.1"));
    }

    #[test]
    fn parses_addresses_with_and_without_ports() {
        assert_eq!(parse_addr(b"1.2.3.4"), Some(ip("1.2.3.4")));
        assert_eq!(parse_addr(b"1.2.3.4:5678"), Some(ip("1.2.3.4")));
        assert_eq!(parse_addr(b"2001:db8::1"), Some(ip("2001:db8::1")));
        assert_eq!(parse_addr(b"[2001:db8::1]"), Some(ip("2001:db8::1")));
        assert_eq!(parse_addr(b"[2001:db8::1]:443"), Some(ip("2001:db8::1")));
        assert_eq!(parse_addr(b"::ffff:10.0.0.1"), Some(ip("::ffff:10.0.0.1")));
    }

    #[test]
    fn rejects_what_is_not_an_address() {
        for text in [
            &b""[..],
            b"unknown",
            b"_hidden",
            b"1.2.3",
            b"1.2.3.4:",
            b"1.2.3.4:99999",
            b"[1.2.3.4]",
            b"[2001:db8::1",
            b"2001:db8::1]",
            b"\xff\x00",
        ] {
            assert_eq!(
                parse_addr(text),
                None,
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
    }
}
