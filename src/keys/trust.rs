//! Trusted proxies (`--trust CIDR`, repeatable): the networks whose X-Forwarded-For (and PROXY
//! headers) are believed.
//!
//! A client can write any X-Forwarded-For header it likes, and so pick its worker, or pass for
//! another client. Only a proxy's word is worth anything, so with a trust list:
//!
//! - X-Forwarded-For from a peer outside the trusted networks yields no key;
//! - from a trusted peer, the key is the rightmost element that is not a trusted address,
//!   reading every X-Forwarded-For header in order: the address the last trusted proxy saw,
//!   which the client cannot forge. Elements to its left were written by the client or by
//!   proxies nobody vouches for.
//!
//! The peer checked is the effective client address: with the PROXY protocol, the address its
//! header carries. Without any `--trust`, X-Forwarded-For is read as before, from anyone.
//!
//! Addresses are compared with IPv4-mapped IPv6 folded to IPv4, so `::ffff:10.0.0.1` is in
//! `10.0.0.0/8`; a network written in the mapped range (`::ffff:10.0.0.0/104`) is folded too.
//!
//! ```
//! use std::net::IpAddr;
//! use stickyd::keys::{Cidr, Trust};
//!
//! let trust = Trust::new(vec!["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()]);
//! assert!(trust.contains("10.1.2.3".parse::<IpAddr>().unwrap()));
//! assert!(trust.contains("::ffff:10.1.2.3".parse::<IpAddr>().unwrap()));
//! assert!(!trust.contains("192.0.2.1".parse::<IpAddr>().unwrap()));
//! assert_eq!("10.1.2.3/8".parse::<Cidr>().unwrap().to_string(), "10.0.0.0/8");
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use super::addr::fold_addr;

/// An IPv4 or IPv6 network: an address prefix, host bits zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

/// Why a network was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CidrError {
    /// The part before `/` (or the whole text) is not an IP address.
    #[error("'{0}' is not an IP address")]
    Address(String),
    /// The part after `/` is not a number.
    #[error("'{0}' is not a prefix length")]
    PrefixLen(String),
    /// The prefix is longer than the address.
    #[error("prefix length {len} is longer than the {max} bits of an IPv{version} address")]
    TooLong {
        /// The prefix length given.
        len: u8,
        /// 32 or 128.
        max: u8,
        /// 4 or 6.
        version: u8,
    },
}

/// `value` with all but its `len` leading bits zero (`bits` wide).
fn mask(value: u128, len: u8, bits: u8) -> u128 {
    let host_bits = u32::from(bits - len.min(bits));
    let ones = u128::MAX.checked_shl(host_bits).unwrap_or(0);
    value & ones & (u128::MAX >> (128 - u32::from(bits)))
}

impl Cidr {
    /// The network of `prefix_len` bits around `addr`; host bits are cleared, and a network
    /// in the IPv4-mapped range (prefix of 96 bits or more) becomes its IPv4 network.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Cidr, CidrError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            return Err(CidrError::TooLong {
                len: prefix_len,
                max,
                version: if addr.is_ipv4() { 4 } else { 6 },
            });
        }
        let (addr, prefix_len) = match addr {
            IpAddr::V6(v6) if prefix_len >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix_len - 96),
                None => (addr, prefix_len),
            },
            _ => (addr, prefix_len),
        };
        let network = match addr {
            IpAddr::V4(v4) => {
                let bits = mask(u128::from(u32::from(v4)), prefix_len, 32);
                IpAddr::V4(Ipv4Addr::from(u32::try_from(bits).unwrap_or(0)))
            }
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(mask(u128::from(v6), prefix_len, 128))),
        };
        Ok(Cidr {
            network,
            prefix_len,
        })
    }

    /// The network address (host bits zero).
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` (IPv4-mapped IPv6 folded to IPv4) is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, fold_addr(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask(u128::from(u32::from(ip)), self.prefix_len, 32) == u128::from(u32::from(net))
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask(u128::from(ip), self.prefix_len, 128) == u128::from(net)
            }
            // A short IPv6 prefix covering the mapped range (such as `::/0`) holds IPv4 too.
            (IpAddr::V6(net), IpAddr::V4(ip)) => {
                mask(u128::from(ip.to_ipv6_mapped()), self.prefix_len, 128) == u128::from(net)
            }
            (IpAddr::V4(_), IpAddr::V6(_)) => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// Reads `10.0.0.0/8`, `2001:db8::/32`, or a bare address as a single host (`/32`,
    /// `/128`). Host bits set after the prefix are cleared (`10.1.2.3/8` is `10.0.0.0/8`).
    fn from_str(text: &str) -> Result<Cidr, CidrError> {
        let (addr, len) = match text.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| CidrError::Address(addr.to_owned()))?;
        let len = match len {
            None if addr.is_ipv4() => 32,
            None => 128,
            Some(len) if len.bytes().all(|b| b.is_ascii_digit()) => len
                .parse::<u8>()
                .map_err(|_| CidrError::PrefixLen(len.to_owned()))?,
            Some(len) => return Err(CidrError::PrefixLen(len.to_owned())),
        };
        Cidr::new(addr, len)
    }
}

impl fmt::Display for Cidr {
    /// Writes `network/prefix_len`, as [`FromStr`] reads it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// The trusted proxy networks; empty when no `--trust` was given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trust {
    networks: Vec<Cidr>,
}

impl Trust {
    /// No trust list: X-Forwarded-For is read from anyone, its leftmost element.
    pub const fn none() -> Trust {
        Trust {
            networks: Vec::new(),
        }
    }

    /// Trust these networks.
    pub fn new(networks: Vec<Cidr>) -> Trust {
        Trust { networks }
    }

    /// Whether no network is trusted (no `--trust`).
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    /// The trusted networks.
    pub fn networks(&self) -> &[Cidr] {
        &self.networks
    }

    /// Whether `ip` (IPv4-mapped IPv6 folded to IPv4) is in a trusted network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|network| network.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Cidr {
        text.parse().unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn parses_and_masks() {
        assert_eq!(cidr("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(cidr("10.9.8.7/8").to_string(), "10.0.0.0/8");
        assert_eq!(cidr("10.9.8.7").to_string(), "10.9.8.7/32");
        assert_eq!(cidr("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(cidr("::1").to_string(), "::1/128");
        assert_eq!(cidr("2001:db8:ffff::1/32").to_string(), "2001:db8::/32");
        assert_eq!(cidr("::/0").to_string(), "::/0");
        assert_eq!(cidr("::ffff:10.1.0.0/112").to_string(), "10.1.0.0/16");
        assert_eq!(cidr("::ffff:10.1.2.3").to_string(), "10.1.2.3/32");
        assert_eq!(cidr("10.0.0.0/8").prefix_len(), 8);
        assert_eq!(cidr("10.0.0.1/8").network(), ip("10.0.0.0"));
    }

    #[test]
    fn errors_name_the_problem() {
        let message = |text: &str| text.parse::<Cidr>().unwrap_err().to_string();
        assert_eq!(message("nonsense"), "'nonsense' is not an IP address");
        assert_eq!(message("10.0.0/8"), "'10.0.0' is not an IP address");
        assert_eq!(message("10.0.0.0/"), "'' is not a prefix length");
        assert_eq!(message("10.0.0.0/+8"), "'+8' is not a prefix length");
        assert_eq!(message("10.0.0.0/999"), "'999' is not a prefix length");
        assert_eq!(
            message("10.0.0.0/33"),
            "prefix length 33 is longer than the 32 bits of an IPv4 address"
        );
        assert_eq!(
            message("::/129"),
            "prefix length 129 is longer than the 128 bits of an IPv6 address"
        );
    }

    #[test]
    fn contains_with_mapped_folding() {
        let net = cidr("10.0.0.0/8");
        assert!(net.contains(ip("10.255.0.1")));
        assert!(net.contains(ip("::ffff:10.0.0.1")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(!net.contains(ip("::a00:1")));
        let v6 = cidr("2001:db8::/32");
        assert!(v6.contains(ip("2001:db8:1::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        assert!(cidr("::/0").contains(ip("10.0.0.1")));
        assert!(cidr("0.0.0.0/0").contains(ip("::ffff:1.2.3.4")));
        assert!(!cidr("0.0.0.0/0").contains(ip("::1")));
        assert!(cidr("127.0.0.1").contains(ip("127.0.0.1")));
        assert!(!cidr("127.0.0.1").contains(ip("127.0.0.2")));
    }

    #[test]
    fn trust_lists() {
        let none = Trust::none();
        assert!(none.is_empty());
        assert!(!none.contains(ip("127.0.0.1")));
        assert_eq!(none, Trust::default());
        let trust = Trust::new(vec![cidr("127.0.0.0/8"), cidr("::1")]);
        assert!(!trust.is_empty());
        assert_eq!(trust.networks().len(), 2);
        assert!(trust.contains(ip("127.1.2.3")));
        assert!(trust.contains(ip("::1")));
        assert!(!trust.contains(ip("::2")));
    }
}
