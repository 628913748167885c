//! Key rules: what part of a connection's first bytes decides its worker.
//!
//! A key rule (`--key RULE`, repeatable) names where the routing key comes from:
//!
//! - `ip`: the peer's address (with the PROXY protocol, the address its header carries).
//! - `header:NAME`: the value of the first `NAME` header of the request. Names match
//!   ASCII case-insensitively; the value is trimmed of spaces and tabs; an empty value (also an
//!   empty *first* occurrence followed by a non-empty one) yields no key.
//! - `header:x-forwarded-for` (any case) reads the value as an address list: without trusted
//!   proxies, its leftmost element; with `--trust`, the rightmost untrusted element of every
//!   X-Forwarded-For header, and nothing from an untrusted peer (see [`Trust`]). Empty and
//!   `unknown` elements are skipped; a port (`1.2.3.4:5678`, `[2001:db8::1]:443`) is dropped,
//!   and `[2001:db8::1]` or bare `2001:db8::1` are addresses too. An element that is not an
//!   address is used as bytes.
//! - `cookie:NAME`: the first cookie `NAME` (exact name) across every `Cookie` header, raw.
//! - `query:NAME`: the first parameter `NAME` (exact name) of the request target's query
//!   string, raw (not percent-decoded); the fragment is ignored.
//! - `sni`: the server name of a TLS ClientHello.
//! - a custom rule ([`key_fn`]): a function of the embedding application over a [`Request`].
//!
//! Empty values yield no key. Rules are tried in order and the first that yields a key wins
//! (see [`crate::decide`]); the fallback rule decides when none does, and if even the fallback
//! yields nothing, the peer address is used.
//!
//! Address-valued keys ([`Key::Addr`]: `ip` and address elements of X-Forwarded-For) are hashed
//! as the binary address with IPv4-mapped IPv6 folded to IPv4, so one client reaches the same
//! worker directly and through a proxy; other values ([`Key::Bytes`]) are hashed as their bytes.
//! The rule's kind is not part of the hash.
//!
//! Extraction reads only the given slice, allocates nothing, and answers like httparse: a key,
//! no key ([`Found::Absent`]), or [`Found::Partial`] when the bytes seen so far cannot tell
//! yet. Header fields are found by one vectorised pass per rule over the whole head (the `head`
//! and `pair` modules), not line by line; the line-by-line scan in the `http` module defines
//! the same semantics and serves [`Request`].
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
//!
//! let rule: KeyRule = "cookie:sid".parse().unwrap();
//! let head = b"GET / HTTP/1.1\r\nCookie: theme=dark; sid=\"a1\"\r\n\r\n";
//! assert_eq!(rule.extract(head, peer), Found::Key(Key::Bytes(b"\"a1\"")));
//! ```

mod addr;
mod cookie;
mod head;
mod http;
mod names;
mod pair;
mod query;
mod request;
mod rule;
mod tls;
mod trust;
mod xff;

use std::net::IpAddr;

pub use addr::fold_addr;
pub(crate) use head::Head;
pub use names::{CookieName, HeaderName, QueryName, RuleError};
pub use request::{CustomKey, KeyFn, Request, key_fn};
pub(crate) use rule::Context;
pub use rule::KeyRule;
pub use trust::{Cidr, CidrError, Trust};

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
