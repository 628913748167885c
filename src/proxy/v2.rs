//! PROXY protocol v2: a binary header.
//!
//! ```text
//! 0..12   signature \r\n\r\n\0\r\nQUIT\n
//! 12      version (high nibble, 2) and command (low nibble: 0 LOCAL, 1 PROXY)
//! 13      family (high nibble) and transport (low nibble)
//! 14..16  length of what follows, big-endian
//! 16..    addresses (IPv4: 12 bytes, IPv6: 36 bytes), then TLVs up to the length
//! ```
//!
//! Each byte is checked as soon as it arrives, and the length against `max_len`, so a bad
//! header is refused before its body is waited for. TLVs are skipped unread.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{Error, Header};

/// The v2 signature.
const SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version/command, family/transport, length.
const FIXED_LEN: usize = 16;
const COMMAND_LOCAL: u8 = 0;
const COMMAND_PROXY: u8 = 1;
/// Family/transport bytes the specification defines.
const UNSPEC: u8 = 0x00;
const TCP4: u8 = 0x11;
const UDP4: u8 = 0x12;
const TCP6: u8 = 0x21;
const UDP6: u8 = 0x22;
const UNIX_STREAM: u8 = 0x31;
const UNIX_DGRAM: u8 = 0x32;
/// Address block of TCP over IPv4: two addresses and two ports.
const TCP4_LEN: usize = 4 + 4 + 2 + 2;
/// Address block of TCP over IPv6.
const TCP6_LEN: usize = 16 + 16 + 2 + 2;

/// Parses a v2 header (`bytes` starts with `\r`).
pub(super) fn parse(bytes: &[u8], max_len: usize) -> Result<Option<Header>, Error> {
    let n = bytes.len().min(SIGNATURE.len());
    if bytes.get(..n) != SIGNATURE.get(..n) {
        return Err(Error::NotProxy);
    }
    let Some(&version_command) = bytes.get(12) else {
        return Ok(None);
    };
    let (version, command) = (version_command >> 4, version_command & 0x0f);
    if version != 2 {
        return Err(Error::V2Version(version));
    }
    if command != COMMAND_LOCAL && command != COMMAND_PROXY {
        return Err(Error::V2Command(command));
    }
    let Some(&family) = bytes.get(13) else {
        return Ok(None);
    };
    // With LOCAL the receiver discards the family, as the specification says.
    if command == COMMAND_PROXY {
        match family {
            UNSPEC | TCP4 | TCP6 => {}
            UDP4 | UDP6 | UNIX_STREAM | UNIX_DGRAM => return Err(Error::Unsupported(family)),
            _ => return Err(Error::V2Family(family)),
        }
    }
    let Some(&[high, low]) = bytes.get(14..FIXED_LEN).and_then(|b| b.first_chunk()) else {
        return Ok(None);
    };
    let body_len = usize::from(u16::from_be_bytes([high, low]));
    let len = FIXED_LEN + body_len;
    if len > max_len {
        return Err(Error::TooLong { max_len });
    }
    let needed = match (command, family) {
        (COMMAND_PROXY, TCP4) => TCP4_LEN,
        (COMMAND_PROXY, TCP6) => TCP6_LEN,
        _ => 0,
    };
    if body_len < needed {
        return Err(Error::V2Length { len: body_len });
    }
    let Some(body) = bytes.get(FIXED_LEN..len) else {
        return Ok(None);
    };
    if command == COMMAND_LOCAL {
        return Ok(Some(Header::Local { len }));
    }
    let header = match family {
        TCP4 => addresses::<4>(body, len, |octets| Ipv4Addr::from(octets).into()),
        TCP6 => addresses::<16>(body, len, |octets| Ipv6Addr::from(octets).into()),
        // PROXY with an unspecified family: the balancer does not know the client.
        _ => Some(Header::Local { len }),
    };
    header.map(Some).ok_or(Error::V2Length { len: body_len })
}

/// Source, destination, source port, destination port: the address block of TCP over IPv4
/// (`N` = 4) or IPv6 (`N` = 16). None if `body` is too short.
fn addresses<const N: usize>(
    body: &[u8],
    len: usize,
    address: fn([u8; N]) -> IpAddr,
) -> Option<Header> {
    let (source, rest) = body.split_first_chunk::<N>()?;
    let (destination, rest) = rest.split_first_chunk::<N>()?;
    let (source_port, rest) = rest.split_first_chunk::<2>()?;
    let (destination_port, _tlvs) = rest.split_first_chunk::<2>()?;
    Some(Header::Proxied {
        len,
        source: SocketAddr::new(address(*source), u16::from_be_bytes(*source_port)),
        destination: SocketAddr::new(address(*destination), u16::from_be_bytes(*destination_port)),
    })
}
