//! X-Forwarded-For: a comma-separated list of the addresses a request came through, the client
//! first.
//!
//! Elements are trimmed of spaces and tabs; empty and `unknown` (any case) elements are
//! skipped. An element that reads as an address (with or without a port, see
//! `addr::parse_addr`) is a [`Key::Addr`], folded like the peer address; any other element
//! (an obfuscated identifier such as `_hidden`) is a [`Key::Bytes`].
//!
//! Without `--trust` the key is the leftmost element of the first X-Forwarded-For header, from
//! any peer. With `--trust` (see the `trust` module for why):
//!
//! - from a peer outside the trusted networks, no key, whatever the headers say;
//! - from a trusted peer, the elements of every X-Forwarded-For header, in order, make one
//!   list, and the key is its rightmost element that is not a trusted address. An element that
//!   is not an address is untrusted (no proxy vouches for it) and is the key if it is the
//!   rightmost such, hashed as bytes. If every element is a trusted address, the request came
//!   through trusted proxies only, and the leftmost element (the first of them, the closest to
//!   the client) is the key. With no element at all, no key.
//! - All headers are needed, so the answer is partial until the header block ends.

use std::net::IpAddr;

use memchr::memchr;

use super::addr::{fold_addr, parse_addr};
use super::head::{FieldFinder, Head, Next};
use super::http::trim_ows;
use super::trust::Trust;
use super::{Found, Key};

/// The usable elements of one X-Forwarded-For value, left to right, trimmed.
pub(crate) fn elements(value: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|element| !element.is_empty() && !element.eq_ignore_ascii_case(b"unknown"))
}

/// The key of one element: its address if it is one, else its bytes.
pub(crate) fn element_key(element: &[u8]) -> Key<'_> {
    match parse_addr(element) {
        Some(ip) => Key::Addr(fold_addr(ip)),
        None => Key::Bytes(element),
    }
}

/// The key of the leftmost usable element of a value; absent when there is none.
pub(crate) fn leftmost(value: &[u8]) -> Found<'_> {
    let mut rest = value;
    loop {
        let (element, after) = match memchr(b',', rest) {
            Some(comma) => (rest.get(..comma).unwrap_or_default(), rest.get(comma + 1..)),
            None => (rest, None),
        };
        let element = trim_ows(element);
        if !element.is_empty() && !element.eq_ignore_ascii_case(b"unknown") {
            return Found::Key(element_key(element));
        }
        match after {
            Some(after) => rest = after,
            None => return Found::Absent,
        }
    }
}

/// The X-Forwarded-For rule on a request head, for a peer `peer` and the trust list `trust`.
pub(crate) fn find<'a>(
    head: &Head<'a>,
    field: &FieldFinder,
    peer: IpAddr,
    trust: &Trust,
) -> Found<'a> {
    if trust.is_empty() {
        return match head.next_field(field, 0) {
            Next::Field { value, .. } => leftmost(value),
            Next::Absent => Found::Absent,
            Next::Partial => Found::Partial,
        };
    }
    if !trust.contains(peer) {
        return Found::Absent;
    }
    if head.end().is_none() {
        return Found::Partial;
    }
    let mut first = None;
    let mut untrusted = None;
    let mut from = 0;
    while let Next::Field { value, newline } = head.next_field(field, from) {
        for element in elements(value) {
            let key = element_key(element);
            first.get_or_insert(key);
            if !matches!(key, Key::Addr(ip) if trust.contains(ip)) {
                untrusted = Some(key);
            }
        }
        from = newline;
    }
    untrusted.or(first).map_or(Found::Absent, Found::Key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> Found<'static> {
        Found::Key(Key::Addr(text.parse::<IpAddr>().unwrap()))
    }

    #[test]
    fn takes_the_leftmost_element() {
        assert_eq!(leftmost(b"10.0.0.1, 10.0.0.2, 10.0.0.3"), addr("10.0.0.1"));
        assert_eq!(leftmost(b"10.0.0.1"), addr("10.0.0.1"));
    }

    #[test]
    fn skips_empty_and_unknown_elements() {
        assert_eq!(
            leftmost(b", ,unknown, UnKnown ,\t10.0.0.9"),
            addr("10.0.0.9")
        );
        assert_eq!(leftmost(b"unknown, ,"), Found::Absent);
        assert_eq!(leftmost(b""), Found::Absent);
    }

    #[test]
    fn drops_ports_and_brackets() {
        assert_eq!(leftmost(b"1.2.3.4:5678, 10.0.0.2"), addr("1.2.3.4"));
        assert_eq!(leftmost(b"[2001:db8::1]:443"), addr("2001:db8::1"));
        assert_eq!(leftmost(b"[2001:db8::1]"), addr("2001:db8::1"));
        assert_eq!(leftmost(b"2001:db8::1, 10.0.0.2"), addr("2001:db8::1"));
    }

    #[test]
    fn folds_v4_mapped() {
        assert_eq!(leftmost(b"::ffff:10.0.0.1"), addr("10.0.0.1"));
        assert_eq!(leftmost(b"[::ffff:10.0.0.1]:80"), addr("10.0.0.1"));
    }

    #[test]
    fn non_address_elements_are_bytes() {
        assert_eq!(
            leftmost(b" _hidden , 10.0.0.1"),
            Found::Key(Key::Bytes(b"_hidden"))
        );
        assert_eq!(
            leftmost(b"1.2.3.4:99999"),
            Found::Key(Key::Bytes(b"1.2.3.4:99999"))
        );
    }

    #[test]
    fn elements_walk_both_ways() {
        let value = b"a, unknown, ,b ,c";
        assert!(elements(value).eq([&b"a"[..], b"b", b"c"]));
        assert!(elements(value).rev().eq([&b"c"[..], b"b", b"a"]));
    }

    fn trusted<'a>(head: &'a [u8], peer: &str, trust: &[&str]) -> Found<'a> {
        let trust = Trust::new(trust.iter().map(|cidr| cidr.parse().unwrap()).collect());
        let field = FieldFinder::new("x-forwarded-for");
        find(&Head::new(head), &field, peer.parse().unwrap(), &trust)
    }

    const CHAIN: &[u8] = b"GET / HTTP/1.1\r\nX-Forwarded-For: 198.51.100.1, 203.0.113.9\r\n\
Host: a\r\nx-forwarded-for: 10.0.0.2, unknown,, 10.0.0.3:80\r\n\r\n";

    #[test]
    fn the_rightmost_untrusted_across_headers() {
        let found = trusted(CHAIN, "10.0.0.1", &["10.0.0.0/8"]);
        assert_eq!(found, addr("203.0.113.9"));
        let found = trusted(CHAIN, "10.0.0.1", &["10.0.0.0/8", "203.0.113.0/24"]);
        assert_eq!(found, addr("198.51.100.1"));
        let found = trusted(CHAIN, "::ffff:10.0.0.1", &["10.0.0.0/8"]);
        assert_eq!(found, addr("203.0.113.9"));
    }

    #[test]
    fn an_untrusted_peer_gets_no_key() {
        assert_eq!(trusted(CHAIN, "192.0.2.1", &["10.0.0.0/8"]), Found::Absent);
        assert_eq!(trusted(b"GET", "192.0.2.1", &["10.0.0.0/8"]), Found::Absent);
    }

    #[test]
    fn all_trusted_gives_the_leftmost() {
        let found = trusted(CHAIN, "10.0.0.1", &["0.0.0.0/0"]);
        assert_eq!(found, addr("198.51.100.1"));
    }

    #[test]
    fn a_non_address_is_untrusted() {
        let head = b"GET / HTTP/1.1\r\nX-Forwarded-For: 198.51.100.1, _proxy, 10.0.0.9\r\n\r\n";
        let found = trusted(head, "10.0.0.1", &["10.0.0.0/8"]);
        assert_eq!(found, Found::Key(Key::Bytes(b"_proxy")));
    }

    #[test]
    fn no_elements_no_key_and_partial_until_the_end() {
        let head = b"GET / HTTP/1.1\r\nX-Forwarded-For: unknown\r\n\r\n";
        assert_eq!(trusted(head, "10.0.0.1", &["10.0.0.0/8"]), Found::Absent);
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(trusted(head, "10.0.0.1", &["10.0.0.0/8"]), Found::Absent);
        for cut in 0..CHAIN.len() - 1 {
            let found = trusted(&CHAIN[..cut], "10.0.0.1", &["10.0.0.0/8"]);
            assert_eq!(found, Found::Partial, "cut at {cut}");
        }
    }
}
