//! The request head in the peeked bytes, searched whole instead of line by line.
//!
//! A header field `Name: value` is found with one vectorised pass per rule, not one step per
//! line: a packed-pair prefilter (the `pair` module) reports where a `\n` is followed, at the
//! distance of the name's length, by a `:`, the two bytes of `"\n" + name + ":"` that ASCII
//! case does not change; each candidate (usually the field itself, sometimes a field whose name
//! has the same length) is then compared with the name ignoring ASCII case. The prefilters are
//! built once per rule, at configuration time; nothing is copied or allocated per connection.
//!
//! The header block ends at the first empty line, found with two more passes, for `"\n\r\n"`
//! and `"\n\n"`; a candidate at or past it is not a header field. Every line after the first
//! `\n` is a header line, so the request line never matches.
//!
//! The semantics are those of the line-by-line scan in the `http` module, which the custom key
//! view uses and the property tests compare against: a field line is `name:` at the start of a
//! line (no whitespace before the colon), its value runs to the next `\n`, one `\r` before it
//! is dropped, and the value is trimmed of spaces and tabs. Where the bytes end before the
//! field line, or before the header block when the field is not in it, the answer is
//! "partial".

use std::cell::OnceCell;
use std::sync::LazyLock;

use memchr::memchr;

use super::http::trim_ows;
use super::pair::PairFinder;

/// The end of a header block ending in CRLF lines: `\n\r` (then `\n`, checked).
static CRLF_END: LazyLock<Option<PairFinder>> = LazyLock::new(|| PairFinder::new(b"\n\r\n", 0, 1));
/// The end of a header block ending in bare LF lines.
static LF_END: LazyLock<Option<PairFinder>> = LazyLock::new(|| PairFinder::new(b"\n\n", 0, 1));

/// Where the header block ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct End {
    /// The `\n` just before the empty line: header lines start after `\n`s before this one.
    pub(crate) newline: usize,
    /// The length of the head, through the empty line's `\n`.
    pub(crate) len: usize,
}

/// The first `\n\r\n` in `bytes`.
fn find_crlf_end(bytes: &[u8]) -> Option<usize> {
    let finder = CRLF_END.as_ref()?;
    let mut at = 0;
    while let Some(found) = bytes.get(at..).and_then(|rest| finder.find(rest)) {
        let newline = at + found;
        if bytes.get(newline + 2) == Some(&b'\n') {
            return Some(newline);
        }
        at = newline + 1;
    }
    None
}

/// The end of the header block: the first `\n` followed by an empty line (`\r\n` or `\n`).
pub(crate) fn find_end(bytes: &[u8]) -> Option<End> {
    let crlf = find_crlf_end(bytes);
    // A bare-LF end counts only before the CRLF one; `bytes[crlf + 1]` is `\r`, so `\n\n`
    // cannot start at `crlf` itself.
    let before_crlf = crlf.map_or(bytes, |at| bytes.get(..at + 1).unwrap_or(bytes));
    match LF_END.as_ref().and_then(|finder| finder.find(before_crlf)) {
        Some(at) => Some(End {
            newline: at,
            len: at + 2,
        }),
        None => crlf.map(|at| End {
            newline: at,
            len: at + 3,
        }),
    }
}

/// A prebuilt search for the header field lines of one name.
#[derive(Clone, Debug)]
pub(crate) struct FieldFinder {
    /// The name, lower case, every byte ORed with `0x20`.
    folded: Box<[u8]>,
    /// The name's bytes that are not ASCII letters, with their offsets: there, ORing `0x20`
    /// would also accept another byte (`\r` for `-`, `~` for `^`), so they are compared
    /// exactly. A letter ORed with `0x20` can only come from that letter in either case.
    exact: Box<[(usize, u8)]>,
    /// Finds the `:` and the `\n` (or the name's first byte that is not a letter) at their
    /// offsets in `"\n" + name + ":"`; `None` for a name too long for a pair's offsets (over
    /// 254 bytes), which falls back to every `\n`.
    pair: Option<PairFinder>,
}

impl FieldFinder {
    /// A search for `name` (ASCII case-insensitive).
    pub(crate) fn new(name: &str) -> FieldFinder {
        let name = name.to_ascii_lowercase().into_bytes();
        let exact = name
            .iter()
            .enumerate()
            .filter(|(_, b)| !b.is_ascii_alphabetic())
            .map(|(at, &b)| (at, b))
            .collect();
        let needle = [&b"\n"[..], &name, b":"].concat();
        // The `:` and, for a name with a byte that is not a letter (`x-forwarded-for`), that
        // byte rather than the `\n`: it also tells apart names of the same length.
        let first = name
            .iter()
            .position(|b| !b.is_ascii_alphabetic())
            .map_or(0, |at| at + 1);
        let pair = match (u8::try_from(first), u8::try_from(name.len() + 1)) {
            (Ok(first), Ok(colon)) => PairFinder::new(&needle, first, colon),
            _ => None,
        };
        FieldFinder {
            folded: name.iter().map(|&b| b | 0x20).collect(),
            exact,
            pair,
        }
    }

    /// The first candidate `\n` at or after `from`.
    fn candidate(&self, bytes: &[u8], from: usize) -> Option<usize> {
        let rest = bytes.get(from..)?;
        let found = match &self.pair {
            Some(pair) => pair.find(rest),
            None => memchr(b'\n', rest),
        };
        found.map(|found| from + found)
    }

    /// Whether the line after the `\n` at `newline` starts with `name:` (any case).
    fn matches(&self, bytes: &[u8], newline: usize) -> bool {
        let start = newline + 1;
        let Some(name) = bytes.get(start..start + self.folded.len()) else {
            return false;
        };
        if name.first().map(|b| b | 0x20) != self.folded.first().copied() {
            return false;
        }
        // A branch-free compare of the folded bytes, then the exact ones.
        let folded_diff = name
            .iter()
            .zip(&*self.folded)
            .fold(0, |diff, (&b, &folded)| diff | ((b | 0x20) ^ folded));
        folded_diff == 0
            && self.exact.iter().all(|&(at, b)| name.get(at) == Some(&b))
            && bytes.get(newline) == Some(&b'\n')
            && bytes.get(start + self.folded.len()) == Some(&b':')
    }

    /// Where the value of a field line at `newline` starts.
    fn value_start(&self, newline: usize) -> usize {
        newline + self.folded.len() + 2
    }
}

/// The next field line of a name, from [`Head::next_field`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next<'a> {
    /// A complete field line: its trimmed value (possibly empty), and the position of the `\n`
    /// ending it, where the search for the next one starts.
    Field { value: &'a [u8], newline: usize },
    /// The header block ended without another such field.
    Absent,
    /// The bytes end before the next such field line, or the header block, does.
    Partial,
}

/// The peeked bytes of one connection, with what the rules of one decision share: where the
/// header block ends, computed at most once and only if a rule asks.
pub(crate) struct Head<'a> {
    bytes: &'a [u8],
    end: OnceCell<Option<End>>,
}

impl<'a> Head<'a> {
    /// A view of `bytes`.
    pub(crate) fn new(bytes: &'a [u8]) -> Head<'a> {
        Head {
            bytes,
            end: OnceCell::new(),
        }
    }

    /// All the peeked bytes.
    pub(crate) fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Where the header block ends, if it does in these bytes.
    pub(crate) fn end(&self) -> Option<End> {
        *self.end.get_or_init(|| find_end(self.bytes))
    }

    /// Where the header block ends if it does before `limit` (computing only that much when
    /// the whole end is not known yet).
    fn end_before(&self, limit: usize) -> Option<End> {
        if let Some(end) = self.end.get() {
            return end.filter(|end| end.newline < limit);
        }
        let end = find_end(self.bytes.get(..limit).unwrap_or(self.bytes));
        if end.is_some() {
            // The first end in a prefix is the first end of all the bytes.
            let _ = self.end.set(end);
        }
        end
    }

    /// The first field line of `field`'s name whose leading `\n` is at `from` or later.
    ///
    /// The end of the header block is looked for only before the field found, so that a field
    /// early in a long head costs little.
    pub(crate) fn next_field(&self, field: &FieldFinder, from: usize) -> Next<'a> {
        let bytes = self.bytes;
        let mut at = from;
        while let Some(newline) = field.candidate(bytes, at) {
            at = newline + 1;
            if !field.matches(bytes, newline) {
                continue;
            }
            // Through this `\n`: an empty line just before the field's line counts.
            if self.end_before(newline + 1).is_some() {
                return Next::Absent;
            }
            let value_start = field.value_start(newline);
            let rest = bytes.get(value_start..).unwrap_or_default();
            let Some(len) = memchr(b'\n', rest) else {
                return Next::Partial;
            };
            let line = rest.get(..len).unwrap_or_default();
            let value = trim_ows(line.strip_suffix(b"\r").unwrap_or(line));
            return Next::Field {
                value,
                newline: value_start + len,
            };
        }
        if self.end().is_some() {
            Next::Absent
        } else {
            Next::Partial
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first<'a>(bytes: &'a [u8], name: &str) -> Next<'a> {
        Head::new(bytes).next_field(&FieldFinder::new(name), 0)
    }

    fn value(bytes: &[u8], name: &str) -> Option<Vec<u8>> {
        match first(bytes, name) {
            Next::Field { value, .. } => Some(value.to_vec()),
            _ => None,
        }
    }

    #[test]
    fn finds_the_end_of_the_header_block() {
        let end = |bytes: &[u8]| find_end(bytes).map(|end| (end.newline, end.len));
        assert_eq!(end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody"), Some((21, 24)));
        assert_eq!(end(b"GET / HTTP/1.1\nA: b\n\nbody"), Some((19, 21)));
        assert_eq!(end(b"GET / HTTP/1.1\nA: b\n\n\r\n"), Some((19, 21)));
        assert_eq!(end(b"GET / HTTP/1.1\r\nA: b\r\n\r\n\n\n"), Some((21, 24)));
        assert_eq!(end(b"\n\n"), Some((0, 2)));
        assert_eq!(end(b"\r\n\r\n"), Some((1, 4)));
        assert_eq!(end(b"GET / HTTP/1.1\r\nA: b\r\n\r"), None);
        assert_eq!(end(b""), None);
    }

    #[test]
    fn candidates_are_checked_exactly() {
        // `*x:` and `\nx\x1a` are `\nx:` ORed with 0x20; so are `~` and `^`.
        let head = b"GET / HTTP/1.1\r\nA: *x: 1\r\nx\x1a 2\r\nb~: 3\r\nB^: 4\r\nX: 5\r\n\r\n";
        assert_eq!(value(head, "x").as_deref(), Some(&b"5"[..]));
        assert_eq!(value(head, "b^").as_deref(), Some(&b"4"[..]));
    }

    #[test]
    fn fields_in_order_and_the_end() {
        let head = b"GET / HTTP/1.1\r\nC: 1\r\nc:2\r\nD: x\r\nC: 3 \r\n\r\nC: body\r\n";
        let head = Head::new(head);
        let finder = FieldFinder::new("C");
        let mut from = 0;
        let mut seen = Vec::new();
        while let Next::Field { value, newline } = head.next_field(&finder, from) {
            seen.push(value);
            from = newline;
        }
        assert_eq!(seen, [&b"1"[..], b"2", b"3"]);
        assert_eq!(head.next_field(&finder, from), Next::Absent);
    }

    #[test]
    fn partial_until_the_line_or_the_block_ends() {
        assert_eq!(first(b"GET / HTTP/1.1\r\nX: 1", "x"), Next::Partial);
        assert_eq!(first(b"GET / HTTP/1.1\r\nY: 1\r\n", "x"), Next::Partial);
        assert_eq!(first(b"GET / HTTP/1.1\r\nY: 1\r\n\r\n", "x"), Next::Absent);
        assert_eq!(first(b"", "x"), Next::Partial);
        assert_eq!(first(b"X: 1\r\n\r\n", "x"), Next::Absent);
    }

    #[test]
    fn long_names_fall_back_to_every_line() {
        let name = "n".repeat(256);
        let head = format!(
            "GET / HTTP/1.1\r\nA: b\r\n{}: v\r\n\r\n",
            name.to_uppercase()
        );
        assert_eq!(value(head.as_bytes(), &name).as_deref(), Some(&b"v"[..]));
        let name = "n".repeat(254);
        let head = format!("GET / HTTP/1.1\r\n{name}: w\r\n\r\n");
        assert_eq!(value(head.as_bytes(), &name).as_deref(), Some(&b"w"[..]));
    }
}
