//! Addresses as keys: folding IPv4-mapped IPv6 and reading an address with an optional port.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

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
    if let Some(v4) = parse_plain_v4(text) {
        return Some(IpAddr::V4(v4));
    }
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

/// The common case, quickly: a plain dotted-quad IPv4 address, four decimal octets of one to
/// three digits, at most 255, without leading zeros. It accepts a subset of what the standard
/// library's parser accepts, with the same result; anything else is left to that parser.
fn parse_plain_v4(text: &[u8]) -> Option<Ipv4Addr> {
    if text.len() > 15 {
        return None;
    }
    let mut octets = [0u8; 4];
    let mut octet = 0;
    let mut value: u16 = 0;
    let mut digits = 0;
    for &b in text {
        match b {
            b'0'..=b'9' => {
                // A leading zero (`01`) is refused, as by the standard parser.
                if digits == 3 || (digits == 1 && value == 0) {
                    return None;
                }
                value = value * 10 + u16::from(b - b'0');
                digits += 1;
            }
            b'.' if digits > 0 && octet < 3 => {
                *octets.get_mut(octet)? = u8::try_from(value).ok()?;
                octet += 1;
                value = 0;
                digits = 0;
            }
            _ => return None,
        }
    }
    if digits == 0 || octet != 3 {
        return None;
    }
    *octets.get_mut(3)? = u8::try_from(value).ok()?;
    Some(Ipv4Addr::from(octets))
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

    #[test]
    fn the_quick_v4_path_agrees_with_the_standard_parser() {
        for text in [
            "0.0.0.0",
            "255.255.255.255",
            "1.2.3.4",
            "10.0.0.1",
            "203.0.113.195",
            "01.2.3.4",
            "1.2.3.04",
            "256.1.1.1",
            "1.2.3",
            "1.2.3.4.5",
            "1..3.4",
            ".1.2.3",
            "1.2.3.",
            "",
            "1.2.3.4 ",
            "+1.2.3.4",
            "1.2.3.4:80",
            "1000.1.1.1",
            "1.2.3.-4",
            "127.000.0.1",
        ] {
            let quick = parse_plain_v4(text.as_bytes());
            if let Some(v4) = quick {
                assert_eq!(Ok(v4), text.parse::<Ipv4Addr>(), "{text}");
            }
            assert_eq!(
                parse_addr(text.as_bytes()),
                text.parse::<IpAddr>()
                    .ok()
                    .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip())),
                "{text}"
            );
        }
        let mut bytes = [0u8; 4];
        for seed in 0..5000u32 {
            bytes.copy_from_slice(&seed.wrapping_mul(2_654_435_761).to_be_bytes());
            let text = Ipv4Addr::from(bytes).to_string();
            assert_eq!(parse_plain_v4(text.as_bytes()), Some(Ipv4Addr::from(bytes)));
        }
    }
}
