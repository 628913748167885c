//! Custom keys: a function of the embedding application that reads the peeked request and
//! returns its key.
//!
//! [`Request`] is a read-only view of the request head (request line and header fields), built
//! without allocating and without consuming a byte. A custom rule waits for the whole head
//! (the empty line); when the bytes stop growing first (the client closed, `--max-peek`, the
//! peek deadline) it runs on what arrived, and [`Request::complete`] says so.
//!
//! The function must not panic: the master does not catch panics, so one takes the dispatcher
//! down. It should be quick too, since it runs on the master's event loop for every
//! connection.
//!
//! ```
//! use std::net::IpAddr;
//! use stickyd::decide::{Decision, KeyPlan};
//! use stickyd::keys::{Key, KeyRule, key_fn};
//! use stickyd::route::key_hash;
//!
//! // Route `/t/<tenant>/...` by the tenant.
//! let tenant = key_fn(|request| {
//!     let rest = request.path().strip_prefix(b"/t/")?;
//!     let tenant = rest.split(|&b| b == b'/').next()?;
//!     (!tenant.is_empty()).then_some(Key::Bytes(tenant))
//! });
//! let plan = KeyPlan::new(vec![tenant], KeyRule::Ip);
//! let peer: IpAddr = "127.0.0.1".parse().unwrap();
//! let head = b"GET /t/acme/orders?page=2 HTTP/1.1\r\nHost: a\r\n\r\n";
//! let expected = Decision::Route { hash: key_hash(Key::Bytes(b"acme")), fallback: false };
//! assert_eq!(plan.decide(head, peer, false), expected);
//! assert_eq!(plan.decide(&head[..30], peer, false), Decision::NeedMore);
//! ```

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use super::head::{End, find_end};
use super::query::{RequestLine, param, path, query, request_line};
use super::{Key, KeyRule, cookie, http};

/// A read-only view of a peeked request head.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    head: &'a [u8],
    method: &'a [u8],
    target: &'a [u8],
    peer: IpAddr,
    complete: bool,
}

impl<'a> Request<'a> {
    /// A view of the request at the start of `bytes`, from the client `peer`.
    pub fn new(bytes: &'a [u8], peer: IpAddr) -> Request<'a> {
        Request::with_end(bytes, find_end(bytes), peer)
    }

    /// A view of `bytes` whose header block ends at `end`.
    pub(crate) fn with_end(bytes: &'a [u8], end: Option<End>, peer: IpAddr) -> Request<'a> {
        let head = end.map_or(bytes, |end| bytes.get(..end.len).unwrap_or(bytes));
        let (method, target) = match request_line(head) {
            RequestLine::Parsed { method, target } => (method, target),
            RequestLine::Malformed | RequestLine::Partial => (&[][..], &[][..]),
        };
        Request {
            head,
            method,
            target,
            peer,
            complete: end.is_some(),
        }
    }

    /// The request head: the request line and header lines through the empty line (all the
    /// bytes that arrived, when incomplete).
    pub fn head(&self) -> &'a [u8] {
        self.head
    }

    /// The method (`GET`...); empty if the request line did not arrive whole.
    pub fn method(&self) -> &'a [u8] {
        self.method
    }

    /// The request target as sent (`/path?query#fragment`); empty if it did not arrive whole.
    pub fn target(&self) -> &'a [u8] {
        self.target
    }

    /// The target's path: up to its first `?` or `#`.
    pub fn path(&self) -> &'a [u8] {
        path(self.target)
    }

    /// The raw (not percent-decoded) value of the first query parameter `name` (matched
    /// exactly): `Some(b"")` for `name=` or a bare `name`.
    pub fn query(&self, name: &str) -> Option<&'a [u8]> {
        param(query(self.target)?, name.as_bytes())
    }

    /// The value of the first header field `name` (ASCII case-insensitive), trimmed of spaces
    /// and tabs; `None` if absent or if its line did not arrive whole.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        match http::first_header(self.head, name.as_bytes()) {
            http::Field::Value(value) => Some(value),
            http::Field::Absent | http::Field::Partial => None,
        }
    }

    /// The value of the first cookie `name` (matched exactly) across the `Cookie` headers,
    /// trimmed of spaces and tabs, quotes kept.
    pub fn cookie(&self, name: &str) -> Option<&'a [u8]> {
        cookie::lookup(self.head, name)
    }

    /// The effective client address: the TCP peer, or with the PROXY protocol the address its
    /// header carries.
    pub fn peer(&self) -> IpAddr {
        self.peer
    }

    /// Whether the whole head arrived (its empty line was seen).
    pub fn complete(&self) -> bool {
        self.complete
    }
}

impl fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &String::from_utf8_lossy(self.method))
            .field("target", &String::from_utf8_lossy(self.target))
            .field("head_len", &self.head.len())
            .field("peer", &self.peer)
            .field("complete", &self.complete)
            .finish()
    }
}

/// A function that picks a connection's key from its request, or none.
///
/// Implemented by every `Fn(&Request<'a>) -> Option<Key<'a>>` closure; [`key_fn`] wraps one
/// in a rule. It must not panic (the master does not catch it) and should be quick.
pub trait KeyFn: Send + Sync + 'static {
    /// The key of this request, borrowing from it, or `None` to hand over to the next rule.
    fn key<'a>(&self, request: &Request<'a>) -> Option<Key<'a>>;
}

impl<F> KeyFn for F
where
    F: for<'a> Fn(&Request<'a>) -> Option<Key<'a>> + Send + Sync + 'static,
{
    fn key<'a>(&self, request: &Request<'a>) -> Option<Key<'a>> {
        self(request)
    }
}

/// A shared custom key function, the payload of [`KeyRule::Custom`]. Two are equal when they
/// are the same function object (clones of one `CustomKey`).
#[derive(Clone)]
pub struct CustomKey(Arc<dyn KeyFn>);

impl CustomKey {
    /// Wraps a key function.
    pub fn new(key_fn: impl KeyFn) -> CustomKey {
        CustomKey(Arc::new(key_fn))
    }

    /// Runs the function.
    pub(crate) fn key<'a>(&self, request: &Request<'a>) -> Option<Key<'a>> {
        self.0.key(request)
    }
}

impl PartialEq for CustomKey {
    fn eq(&self, other: &CustomKey) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for CustomKey {}

impl fmt::Debug for CustomKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CustomKey(..)")
    }
}

/// A custom key rule from a closure (this signature helps closure type inference pick the
/// higher-ranked signature, so `key_fn(|request| ...)` needs no annotations).
pub fn key_fn<F>(f: F) -> KeyRule
where
    F: for<'a> Fn(&Request<'a>) -> Option<Key<'a>> + Send + Sync + 'static,
{
    KeyRule::Custom(CustomKey::new(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn a_complete_view() {
        let bytes = b"POST /a/b?x=1&sid=%41#f HTTP/1.1\r\nHost:  h \r\nCookie: a=1; sid=\"s\"\r\n\
X-Empty:\r\n\r\nHost: body";
        let request = Request::new(bytes, PEER);
        assert!(request.complete());
        assert_eq!(request.method(), b"POST");
        assert_eq!(request.target(), b"/a/b?x=1&sid=%41#f");
        assert_eq!(request.path(), b"/a/b");
        assert_eq!(request.query("sid"), Some(&b"%41"[..]));
        assert_eq!(request.query("y"), None);
        assert_eq!(request.header("HOST"), Some(&b"h"[..]));
        assert_eq!(request.header("x-empty"), Some(&b""[..]));
        assert_eq!(request.header("x-none"), None);
        assert_eq!(request.cookie("sid"), Some(&b"\"s\""[..]));
        assert_eq!(request.cookie("SID"), None);
        assert_eq!(request.peer(), PEER);
        assert!(request.head().ends_with(b"X-Empty:\r\n\r\n"));
        assert!(format!("{request:?}").contains("POST"));
    }

    #[test]
    fn an_incomplete_view() {
        let request = Request::new(b"GET /a?b=1 HTTP/1.1\r\nHost: h\r\nX-Cut: v", PEER);
        assert!(!request.complete());
        assert_eq!(request.query("b"), Some(&b"1"[..]));
        assert_eq!(request.header("host"), Some(&b"h"[..]));
        assert_eq!(request.header("x-cut"), None);
        let request = Request::new(b"GET /a?b=1", PEER);
        assert_eq!((request.method(), request.target()), (&b""[..], &b""[..]));
        assert_eq!(Request::new(b"", PEER).path(), b"");
    }

    #[test]
    fn custom_keys_compare_by_identity() {
        fn none<'a>(_: &Request<'a>) -> Option<Key<'a>> {
            None
        }
        let a = CustomKey::new(none);
        let b = CustomKey::new(none);
        assert_eq!(a, a.clone());
        assert_ne!(a, b);
        assert_eq!(format!("{a:?}"), "CustomKey(..)");
        let rule = key_fn(|request| request.header("x").map(Key::Bytes));
        assert_eq!(format!("{rule:?}"), "Custom(..)");
        assert_eq!(rule.to_string(), "custom");
        assert_eq!(rule, rule.clone());
    }
}
