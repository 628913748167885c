//! The request line and `query:NAME`: a parameter of the request target's query string.
//!
//! The request line is `METHOD SP TARGET SP VERSION`: the method runs to the first space, the
//! target from there to the next space (or to the end of the line, less a `\r`, for a line
//! without a version). A line that ends before its first space has no target. Only the request
//! line is read, and the target is known as soon as the space after it arrives.
//!
//! The target's fragment (from its first `#`) is ignored, and its query is what follows the
//! first `?`. Parameters are separated by `&` only; a parameter's name runs to its first `=`
//! and matches exactly, and its value is the rest, raw (not percent-decoded). The first
//! parameter of the name decides: an empty value, or a bare `NAME` without `=`, yields no key
//! even when a later parameter of that name has one.

use memchr::{memchr, memchr2};

use super::names::QueryName;
use super::{Found, Key};

/// The request line's method and target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RequestLine<'a> {
    /// Both are complete.
    Parsed { method: &'a [u8], target: &'a [u8] },
    /// The line ends before a target starts, or the method is empty: not a request line.
    Malformed,
    /// The bytes end before the target does.
    Partial,
}

/// Reads the method and target at the start of `bytes`.
pub(crate) fn request_line(bytes: &[u8]) -> RequestLine<'_> {
    let Some(space) = memchr2(b' ', b'\n', bytes) else {
        return RequestLine::Partial;
    };
    if space == 0 || bytes.get(space) != Some(&b' ') {
        return RequestLine::Malformed;
    }
    let method = bytes.get(..space).unwrap_or_default();
    let rest = bytes.get(space + 1..).unwrap_or_default();
    let Some(end) = memchr2(b' ', b'\n', rest) else {
        return RequestLine::Partial;
    };
    let target = rest.get(..end).unwrap_or_default();
    let target = if rest.get(end) == Some(&b'\n') {
        target.strip_suffix(b"\r").unwrap_or(target)
    } else {
        target
    };
    RequestLine::Parsed { method, target }
}

/// The target without its fragment.
fn without_fragment(target: &[u8]) -> &[u8] {
    let end = memchr(b'#', target).unwrap_or(target.len());
    target.get(..end).unwrap_or_default()
}

/// The target's path: up to its first `?` or `#`.
pub(crate) fn path(target: &[u8]) -> &[u8] {
    let end = memchr2(b'?', b'#', target).unwrap_or(target.len());
    target.get(..end).unwrap_or_default()
}

/// The target's query string, if it has one (after the first `?`, up to the fragment).
pub(crate) fn query(target: &[u8]) -> Option<&[u8]> {
    let target = without_fragment(target);
    let start = memchr(b'?', target)?;
    target.get(start + 1..)
}

/// The raw value of the first parameter `name` of a query string: `Some(b"")` for `name=` or
/// a bare `name`.
pub(crate) fn param<'a>(query: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    query.split(|&b| b == b'&').find_map(|pair| {
        let rest = pair.strip_prefix(name)?;
        match rest.split_first() {
            None => Some(rest),
            Some((b'=', value)) => Some(value),
            Some(_) => None,
        }
    })
}

/// The `query:NAME` rule on the peeked bytes.
pub(crate) fn find<'a>(bytes: &'a [u8], name: &QueryName) -> Found<'a> {
    match request_line(bytes) {
        RequestLine::Parsed { target, .. } => {
            match query(target).and_then(|query| param(query, name.as_str().as_bytes())) {
                None | Some([]) => Found::Absent,
                Some(value) => Found::Key(Key::Bytes(value)),
            }
        }
        RequestLine::Malformed => Found::Absent,
        RequestLine::Partial => Found::Partial,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found<'a>(bytes: &'a [u8], name: &str) -> Found<'a> {
        find(bytes, &QueryName::parse("query:", name).unwrap())
    }

    fn key(value: &[u8]) -> Found<'_> {
        Found::Key(Key::Bytes(value))
    }

    #[test]
    fn reads_the_request_line() {
        let parsed =
            |method: &'static [u8], target: &'static [u8]| RequestLine::Parsed { method, target };
        assert_eq!(
            request_line(b"GET /a?b HTTP/1.1\r\n"),
            parsed(b"GET", b"/a?b")
        );
        assert_eq!(request_line(b"GET /a?b "), parsed(b"GET", b"/a?b"));
        assert_eq!(request_line(b"GET /a\r\nX: 1"), parsed(b"GET", b"/a"));
        assert_eq!(request_line(b"GET  /a "), parsed(b"GET", b""));
        assert_eq!(request_line(b"GET /a"), RequestLine::Partial);
        assert_eq!(request_line(b"GET"), RequestLine::Partial);
        assert_eq!(request_line(b"GET\r\n /a "), RequestLine::Malformed);
        assert_eq!(request_line(b" /a "), RequestLine::Malformed);
        assert_eq!(request_line(b""), RequestLine::Partial);
    }

    #[test]
    fn paths_and_queries() {
        assert_eq!(path(b"/a/b?c=1#d"), b"/a/b");
        assert_eq!(path(b"/a#b?c"), b"/a");
        assert_eq!(query(b"/a?b=1&c#d?e"), Some(&b"b=1&c"[..]));
        assert_eq!(query(b"/a#b?c=1"), None);
        assert_eq!(query(b"/a??x"), Some(&b"?x"[..]));
        assert_eq!(query(b"/a"), None);
    }

    #[test]
    fn params() {
        let query = b"a=1&sid=%41+b&sid=2&x";
        assert_eq!(param(query, b"sid"), Some(&b"%41+b"[..]));
        assert_eq!(param(query, b"x"), Some(&b""[..]));
        assert_eq!(param(query, b"si"), None);
        assert_eq!(param(b"sid;a=1", b"sid"), None);
        assert_eq!(param(b"", b"sid"), None);
    }

    #[test]
    fn query_rule() {
        let head = b"GET /p?x=1&sid=abc&sid=def#sid=frag HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(found(head, "sid"), key(b"abc"));
        assert_eq!(found(head, "SID"), Found::Absent);
        assert_eq!(
            found(b"GET /p?sid=&sid=1 HTTP/1.1\r\n", "sid"),
            Found::Absent
        );
        assert_eq!(
            found(b"GET /p?sid&sid=1 HTTP/1.1\r\n", "sid"),
            Found::Absent
        );
        assert_eq!(found(b"GET /p#?sid=1 HTTP/1.1\r\n", "sid"), Found::Absent);
        assert_eq!(found(b"\x16\x03\x01\x00", "sid"), Found::Partial);
    }

    #[test]
    fn decided_once_the_target_ends() {
        let head = b"GET /p?sid=abc HTTP/1.1\r\n";
        let space = 14;
        for cut in 0..head.len() {
            let expected = if cut <= space {
                Found::Partial
            } else {
                key(b"abc")
            };
            assert_eq!(found(&head[..cut], "sid"), expected, "cut at {cut}");
        }
    }
}
