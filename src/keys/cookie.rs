//! `cookie:NAME`: the first cookie of a name across every `Cookie` header of the request.
//!
//! A `Cookie` header value is a list of `name=value` pairs separated by `;`, with optional
//! spaces and tabs around each pair (RFC 6265 section 4.2, read leniently). The name is the
//! pair up to its first `=` and matches exactly (case-sensitive); the value is the rest of the
//! pair trimmed of spaces and tabs, raw: a value in double quotes keeps its quotes. A pair
//! without `=` names no cookie and is skipped.
//!
//! The first pair of the name decides, whichever `Cookie` header holds it: an empty value
//! yields no key even when a later pair of that name has one (as for `header:`). Until that
//! pair is seen in a complete line, the answer is partial while the header block is incomplete.

use std::sync::LazyLock;

use memchr::memchr;
use memchr::memmem::Finder;

use super::head::{FieldFinder, Head, Next};
use super::http::{Line, Lines, trim_ows};
use super::names::CookieName;
use super::{Found, Key};

/// The search for `Cookie` header lines.
static COOKIE: LazyLock<FieldFinder> = LazyLock::new(|| FieldFinder::new("cookie"));

/// The `cookie:NAME` rule on a request head.
pub(crate) fn find<'a>(head: &Head<'a>, name: &CookieName) -> Found<'a> {
    let mut from = 0;
    loop {
        match head.next_field(&COOKIE, from) {
            Next::Field { value, newline } => {
                if let Some(cookie) = pair_value(value, name.pair_finder()) {
                    return match cookie {
                        [] => Found::Absent,
                        cookie => Found::Key(Key::Bytes(cookie)),
                    };
                }
                from = newline;
            }
            Next::Absent => return Found::Absent,
            Next::Partial => return Found::Partial,
        }
    }
}

/// The value of the first pair found by `pair` (a search for `name=`) in one header value.
fn pair_value<'a>(value: &'a [u8], pair: &Finder<'_>) -> Option<&'a [u8]> {
    let mut at = 0;
    while let Some(found) = value.get(at..).and_then(|rest| pair.find(rest)) {
        let start = at + found;
        at = start + 1;
        // A pair starts the value or follows a `;`, maybe with spaces and tabs between.
        let before = value.get(..start).unwrap_or_default();
        let before = trim_ows_end(before);
        if before.is_empty() || before.ends_with(b";") {
            let rest = value.get(start + pair.needle().len()..).unwrap_or_default();
            let end = memchr(b';', rest).unwrap_or(rest.len());
            return Some(trim_ows(rest.get(..end).unwrap_or_default()));
        }
    }
    None
}

/// Trims trailing spaces and tabs.
fn trim_ows_end(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(0, |i| i + 1);
    bytes.get(..end).unwrap_or_default()
}

/// The first cookie `name` across the `Cookie` headers of a head, found line by line (for the
/// custom key view; the same answers as [`find`] on a complete head).
pub(crate) fn lookup<'a>(head: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let mut lines = Lines::new(head);
    loop {
        match lines.next_line() {
            Line::Field { name: field, value } if field.eq_ignore_ascii_case(b"cookie") => {
                let found = value.split(|&b| b == b';').find_map(|pair| {
                    let (pair_name, cookie) = split_once(trim_ows(pair), b'=')?;
                    (pair_name == name.as_bytes()).then(|| trim_ows(cookie))
                });
                if found.is_some() {
                    return found;
                }
            }
            Line::Field { .. } => {}
            Line::End | Line::Partial => return None,
        }
    }
}

/// Splits at the first `byte`.
fn split_once(bytes: &[u8], byte: u8) -> Option<(&[u8], &[u8])> {
    let at = memchr(byte, bytes)?;
    Some((bytes.get(..at)?, bytes.get(at + 1..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookie<'a>(head: &'a [u8], name: &str) -> Found<'a> {
        let name = CookieName::parse("cookie:", name).unwrap();
        find(&Head::new(head), &name)
    }

    fn key(value: &[u8]) -> Found<'_> {
        Found::Key(Key::Bytes(value))
    }

    #[test]
    fn pairs_and_whitespace() {
        let value = b" a=1;sid = x;\tsid=\t\"q v\" ; xsid=2; sid=3";
        let pair = Finder::new(b"sid=");
        assert_eq!(pair_value(value, &pair), Some(&b"\"q v\""[..]));
        assert_eq!(pair_value(b"sid=", &pair), Some(&b""[..]));
        assert_eq!(pair_value(b"x=sid=1; sid", &pair), None);
        assert_eq!(pair_value(b"ssid=1;sid=a=b", &pair), Some(&b"a=b"[..]));
        assert_eq!(pair_value(b"", &pair), None);
    }

    #[test]
    fn the_first_cookie_across_headers() {
        let head = b"GET / HTTP/1.1\r\nCookie: a=1\r\nX: sid=0\r\ncookie: sid=2; sid=3\r\n\
COOKIE: sid=4\r\n\r\n";
        assert_eq!(cookie(head, "sid"), key(b"2"));
        assert_eq!(cookie(head, "a"), key(b"1"));
        assert_eq!(cookie(head, "Sid"), Found::Absent);
        assert_eq!(lookup(head, "sid"), Some(&b"2"[..]));
        assert_eq!(lookup(head, "Sid"), None);
        assert_eq!(lookup(head, ""), None);
    }

    #[test]
    fn an_empty_first_cookie_is_no_key() {
        let head = b"GET / HTTP/1.1\r\nCookie: sid= ; a=1\r\nCookie: sid=2\r\n\r\n";
        assert_eq!(cookie(head, "sid"), Found::Absent);
    }

    #[test]
    fn partial_until_found_or_the_block_ends() {
        let head = b"GET / HTTP/1.1\r\nCookie: a=1\r\nCookie: sid=2\r\n\r\n";
        let newline = head.len() - 3; // the `\n` ending the second Cookie line
        for cut in 0..head.len() {
            let expected = if cut <= newline {
                Found::Partial
            } else {
                key(b"2")
            };
            assert_eq!(cookie(&head[..cut], "sid"), expected, "cut at {cut}");
        }
        let head = b"GET / HTTP/1.1\r\nCookie: sid=1\r\nCookie: a=";
        assert_eq!(cookie(head, "sid"), key(b"1"));
    }
}
