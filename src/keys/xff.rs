//! X-Forwarded-For: a comma-separated list of the addresses a request came through, the client
//! first.
//!
//! Elements are trimmed of spaces and tabs; empty and `unknown` (any case) elements are
//! skipped. An element that reads as an address (with or without a port, see
//! `addr::parse_addr`) is a [`Key::Addr`], folded like the peer address; any other element
//! (an obfuscated identifier such as `_hidden`) is a [`Key::Bytes`].
//!
//! Without `--trust` the key is the leftmost element of the first X-Forwarded-For header.
//! (`--trust` will take the rightmost untrusted element across every X-Forwarded-For header:
//! [`elements`] walked from the back over each header that `http::Lines` yields.)

use super::addr::{fold_addr, parse_addr};
use super::http::trim_ows;
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
    elements(value)
        .next()
        .map_or(Found::Absent, |element| Found::Key(element_key(element)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

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
}
