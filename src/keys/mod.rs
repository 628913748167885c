//! Key rules: what part of a connection's first bytes decides its worker.
//!
//! A key rule (`--key RULE`, repeatable) names where the routing key comes from:
//!
//! - `ip`: the TCP peer's address.
//! - `header:NAME`: the value of the first `NAME` header of the request. Names match
//!   ASCII case-insensitively; the value is trimmed of spaces and tabs; an empty value (also an
//!   empty *first* occurrence followed by a non-empty one) yields no key.
//! - `header:x-forwarded-for` (any case) reads the value as an address list and takes its
//!   leftmost element, skipping empty and `unknown` elements; a port (`1.2.3.4:5678`,
//!   `[2001:db8::1]:443`) is dropped, and `[2001:db8::1]` or bare `2001:db8::1` are addresses
//!   too. An element that is not an address is used as bytes.
//! - `cookie:NAME`, `query:NAME` and `sni` are recognised and their names checked, but they are
//!   refused as not supported yet.
//!
//! Rules are tried in order and the first that yields a key wins (see [`crate::decide`]); the
//! fallback rule decides when none does, and if even the fallback yields nothing, the peer
//! address is used.
//!
//! Address-valued keys ([`Key::Addr`]: `ip` and address elements of X-Forwarded-For) are hashed
//! as the binary address with IPv4-mapped IPv6 folded to IPv4, so one client reaches the same
//! worker directly and through a proxy; other values ([`Key::Bytes`]) are hashed as their bytes.
//! The rule's kind is not part of the hash.
//!
//! Extraction reads only the given slice, allocates nothing, and answers like httparse: a key,
//! no key ([`Found::Absent`]), or [`Found::Partial`] when the bytes seen so far cannot tell yet.
//! The scanning rules for the request head are in the `http` module.
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr};
//! use stickyd::keys::{Found, Key, KeyRule};
//!
//! let rule: KeyRule = "header:X-Forwarded-For".parse().unwrap();
//! let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
//! let head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: unknown, 10.0.0.1:5678\r\n\r\n";
//! let client = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
//! assert_eq!(rule.extract(head, peer), Found::Key(Key::Addr(client)));
//! assert_eq!(rule.extract(&head[..20], peer), Found::Partial);
//! ```

mod addr;
mod http;
mod xff;

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

pub use addr::fold_addr;

/// A key found in the peeked bytes (borrowing them) or derived from the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key<'a> {
    /// An address, hashed as its binary form (IPv4-mapped IPv6 folded to IPv4).
    Addr(IpAddr),
    /// Any other value, hashed as its bytes.
    Bytes(&'a [u8]),
}

/// What a rule found, httparse-style.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found<'a> {
    /// The rule yields this key.
    Key(Key<'a>),
    /// The rule yields no key from these bytes, and more bytes would not change that.
    Absent,
    /// The bytes end before the rule can tell: peek again, or treat as absent when they
    /// cannot grow.
    Partial,
}

/// Longest header, cookie or query parameter name a rule accepts.
const MAX_NAME_LEN: usize = 256;

/// A key rule: where a connection's routing key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRule {
    /// The TCP peer's address.
    Ip,
    /// The first header of this name (an address list for X-Forwarded-For).
    Header(HeaderName),
}

/// A validated header name, stored lowercase (RFC 9110 token characters, 1..=256 bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderName(String);

impl HeaderName {
    /// The name, lowercase.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is `x-forwarded-for`, whose value is read as an address list.
    pub fn is_x_forwarded_for(&self) -> bool {
        self.0 == "x-forwarded-for"
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a key rule was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum RuleError {
    /// Not one of the rule kinds.
    #[error("unknown key rule '{0}' (expected ip, header:NAME, cookie:NAME, query:NAME or sni)")]
    Unknown(String),
    /// `header:`, `cookie:` or `query:` without a name.
    #[error("empty {kind} name in '{rule}'")]
    EmptyName {
        /// `header`, `cookie` or `query`.
        kind: &'static str,
        /// The rule as given.
        rule: String,
    },
    /// A name with a character its kind does not allow, or too long.
    #[error("invalid {kind} name in '{rule}': {reason}")]
    InvalidName {
        /// `header`, `cookie` or `query`.
        kind: &'static str,
        /// The rule as given.
        rule: String,
        /// What is wrong with the name.
        reason: String,
    },
    /// A rule this version recognises but cannot apply yet.
    #[error("'{rule}': {kind} rules are not supported yet")]
    NotSupported {
        /// `cookie`, `query` or `sni`.
        kind: &'static str,
        /// The rule as given.
        rule: String,
    },
}

impl FromStr for KeyRule {
    type Err = RuleError;

    /// Parses `ip` or `header:NAME`; `cookie:NAME`, `query:NAME` and `sni` are checked and then
    /// refused as not supported yet.
    fn from_str(rule: &str) -> Result<KeyRule, RuleError> {
        if rule == "ip" {
            return Ok(KeyRule::Ip);
        }
        if rule == "sni" {
            return Err(not_supported("sni", rule));
        }
        let Some((kind, name)) = rule.split_once(':') else {
            return Err(RuleError::Unknown(rule.to_owned()));
        };
        match kind {
            "header" => {
                check_name("header", rule, name, is_token)?;
                Ok(KeyRule::Header(HeaderName(name.to_ascii_lowercase())))
            }
            "cookie" => {
                check_name("cookie", rule, name, is_token)?;
                Err(not_supported("cookie", rule))
            }
            "query" => {
                check_name("query", rule, name, is_query_name_byte)?;
                Err(not_supported("query", rule))
            }
            _ => Err(RuleError::Unknown(rule.to_owned())),
        }
    }
}

impl fmt::Display for KeyRule {
    /// Writes the rule as [`FromStr`] reads it (`ip`, `header:NAME` with NAME lowercase).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyRule::Ip => f.write_str("ip"),
            KeyRule::Header(name) => write!(f, "header:{name}"),
        }
    }
}

fn not_supported(kind: &'static str, rule: &str) -> RuleError {
    RuleError::NotSupported {
        kind,
        rule: rule.to_owned(),
    }
}

/// Checks a rule's name: non-empty, at most [`MAX_NAME_LEN`] bytes, every byte allowed.
fn check_name(
    kind: &'static str,
    rule: &str,
    name: &str,
    allowed: fn(u8) -> bool,
) -> Result<(), RuleError> {
    let invalid = |reason: String| RuleError::InvalidName {
        kind,
        rule: rule.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(RuleError::EmptyName {
            kind,
            rule: rule.to_owned(),
        });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(invalid(format!("longer than {MAX_NAME_LEN} bytes")));
    }
    match name.chars().find(|&c| !u8::try_from(c).is_ok_and(allowed)) {
        Some(c) => Err(invalid(format!("{c:?} is not allowed"))),
        None => Ok(()),
    }
}

/// RFC 9110 `tchar`: the characters of a header name (and of a cookie name, RFC 6265).
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A byte a query parameter name may hold as matched raw: visible ASCII but the separators.
fn is_query_name_byte(b: u8) -> bool {
    b.is_ascii_graphic() && !b"&=#?".contains(&b)
}

impl KeyRule {
    /// Whether this rule needs the request bytes (false for `ip`).
    pub fn needs_bytes(&self) -> bool {
        !matches!(self, KeyRule::Ip)
    }

    /// Applies the rule to the bytes peeked so far from a connection whose peer is `peer`.
    pub fn extract<'a>(&self, bytes: &'a [u8], peer: IpAddr) -> Found<'a> {
        match self {
            KeyRule::Ip => Found::Key(Key::Addr(fold_addr(peer))),
            KeyRule::Header(name) => match http::first_header(bytes, name.as_str().as_bytes()) {
                http::Field::Value(value) if name.is_x_forwarded_for() => xff::leftmost(value),
                http::Field::Value([]) => Found::Absent,
                http::Field::Value(value) => Found::Key(Key::Bytes(value)),
                http::Field::Absent => Found::Absent,
                http::Field::Partial => Found::Partial,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn rule(text: &str) -> KeyRule {
        text.parse().unwrap()
    }

    fn header(name: &str) -> KeyRule {
        KeyRule::Header(HeaderName(name.to_owned()))
    }

    #[test]
    fn parses_ip_and_header_rules() {
        assert_eq!(rule("ip"), KeyRule::Ip);
        assert_eq!(rule("header:X-Session"), header("x-session"));
        assert_eq!(rule("header:x-session"), header("x-session"));
        assert!(rule("header:X-Forwarded-For").needs_bytes());
        assert!(!KeyRule::Ip.needs_bytes());
        let KeyRule::Header(name) = rule("header:X-FORWARDED-FOR") else {
            panic!("not a header rule");
        };
        assert!(name.is_x_forwarded_for());
        assert_eq!(name.as_str(), "x-forwarded-for");
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "ip",
            "header:x-session",
            "header:X-Forwarded-For",
            "header:a!#$%&'*+-.^_`|~9",
        ] {
            let parsed = rule(text);
            assert_eq!(rule(&parsed.to_string()), parsed);
        }
        assert_eq!(rule("header:X-Real-IP").to_string(), "header:x-real-ip");
    }

    #[test]
    fn refuses_bad_rules_with_clear_messages() {
        let message = |text: &str| text.parse::<KeyRule>().unwrap_err().to_string();
        assert_eq!(
            message("foo"),
            "unknown key rule 'foo' (expected ip, header:NAME, cookie:NAME, query:NAME or sni)"
        );
        assert!(message("IP").starts_with("unknown key rule 'IP'"));
        assert!(message("ip:x").starts_with("unknown key rule 'ip:x'"));
        assert_eq!(message("header:"), "empty header name in 'header:'");
        assert_eq!(message("cookie:"), "empty cookie name in 'cookie:'");
        assert_eq!(
            message("header:x y"),
            "invalid header name in 'header:x y': ' ' is not allowed"
        );
        assert!(message("header:a:b").contains("':' is not allowed"));
        assert!(message("header:é").contains("'é' is not allowed"));
        assert!(message(&format!("header:{}", "a".repeat(257))).contains("longer than 256"));
        assert!(
            format!("header:{}", "a".repeat(256))
                .parse::<KeyRule>()
                .is_ok()
        );
    }

    #[test]
    fn later_rules_are_checked_then_refused() {
        let err = |text: &str| text.parse::<KeyRule>().unwrap_err();
        assert_eq!(
            err("cookie:sid").to_string(),
            "'cookie:sid': cookie rules are not supported yet"
        );
        assert_eq!(
            err("query:session_id").to_string(),
            "'query:session_id': query rules are not supported yet"
        );
        assert_eq!(
            err("sni").to_string(),
            "'sni': sni rules are not supported yet"
        );
        assert!(matches!(err("cookie:a=b"), RuleError::InvalidName { .. }));
        assert!(matches!(err("query:a&b"), RuleError::InvalidName { .. }));
    }

    #[test]
    fn ip_is_the_folded_peer() {
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let v4 = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(KeyRule::Ip.extract(b"", mapped), Found::Key(Key::Addr(v4)));
        assert_eq!(
            KeyRule::Ip.extract(b"GET", PEER),
            Found::Key(Key::Addr(PEER))
        );
    }

    #[test]
    fn header_rule_values() {
        let session = rule("header:x-session");
        let found = |head: &'static [u8]| session.extract(head, PEER);
        let key = |value: &'static [u8]| Found::Key(Key::Bytes(value));
        assert_eq!(
            found(b"GET / HTTP/1.1\r\nX-SESSION: \tabc \r\n\r\n"),
            key(b"abc")
        );
        assert_eq!(
            found(b"GET / HTTP/1.1\r\nx-session: a\r\nX-Session: b\r\n\r\n"),
            key(b"a")
        );
        assert_eq!(
            found(b"GET / HTTP/1.1\r\nX-Session: \r\nX-Session: b\r\n\r\n"),
            Found::Absent
        );
        assert_eq!(found(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Found::Absent);
        assert_eq!(found(b"GET / HTTP/1.1\r\nX-Session: abc"), Found::Partial);
        // Another header's value is bytes, even when it reads as an address.
        let real_ip = rule("header:x-real-ip");
        let head = b"GET / HTTP/1.1\r\nX-Real-IP: 10.0.0.1\r\n\r\n";
        assert_eq!(real_ip.extract(head, PEER), key(b"10.0.0.1"));
    }

    #[test]
    fn x_forwarded_for_rule_values() {
        let xff = rule("header:X-Forwarded-For");
        let addr = |text: &str| Found::Key(Key::Addr(text.parse().unwrap()));
        let found = |head: &'static [u8]| xff.extract(head, PEER);
        let head = b"GET / HTTP/1.1\r\nx-forwarded-for: unknown, ::ffff:10.0.0.1:80\r\n\r\n";
        assert_eq!(found(head), Found::Key(Key::Bytes(b"::ffff:10.0.0.1:80")));
        let head = b"GET / HTTP/1.1\r\nX-Forwarded-For: , [::ffff:10.0.0.1]:80, 1.1.1.1\r\n\r\n";
        assert_eq!(found(head), addr("10.0.0.1"));
        let head =
            b"GET / HTTP/1.1\r\nX-Forwarded-For: unknown\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n";
        assert_eq!(found(head), Found::Absent);
        let head = b"GET / HTTP/1.1\nX-Forwarded-For: 2001:db8::1\n\n";
        assert_eq!(found(head), addr("2001:db8::1"));
        let head = b"GET / HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1, 10.0.0.2";
        assert_eq!(found(head), Found::Partial);
    }

    #[test]
    fn a_split_header_is_partial_until_complete() {
        let xff = rule("header:x-forwarded-for");
        let head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 192.0.2.1, 10.0.0.1\r\n\r\n";
        let complete = head.len() - 2;
        let key = Found::Key(Key::Addr("192.0.2.1".parse().unwrap()));
        for cut in 0..=head.len() {
            let expected = if cut < complete { Found::Partial } else { key };
            assert_eq!(xff.extract(&head[..cut], PEER), expected, "cut at {cut}");
        }
    }
}
