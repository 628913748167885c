//! Scanning the head of an HTTP/1 request line by line, in the peeked bytes, which may be
//! incomplete. This scan defines what a header field is; the rules find fields faster with the
//! `head` module's whole-head search, which gives the same answers (property-tested), and the
//! custom key view ([`super::Request`]) looks names up with this one.
//!
//! - The request line is skipped, through the first `\n`.
//! - Header lines end with `\n`, optionally preceded by `\r` (a bare LF is accepted). An empty
//!   line ends the header block; nothing after it is read.
//! - A line without `:`, or whose name is empty or ends in whitespace, is not a header field:
//!   it is skipped and never matches. So is any other non-HTTP byte soup; NUL bytes and invalid
//!   UTF-8 are just bytes.
//! - Where a `\n` is needed and the bytes end first, the answer is "partial": the request line,
//!   or a header line that might be (or might complete) the one looked for, is cut short.
//! - Continuation lines (obsolete line folding) are not joined to the field before them.
//!
//! Nothing here allocates or reads past the given slice.

use memchr::memchr;

/// One step of a scan over header lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Line<'a> {
    /// A complete header field line: its name as sent, and its value trimmed of spaces and tabs.
    Field { name: &'a [u8], value: &'a [u8] },
    /// The empty line that ends the header block was reached.
    End,
    /// The bytes end before the next line does.
    Partial,
}

/// The header field lines of a request head, in order.
#[derive(Clone, Debug)]
pub(crate) struct Lines<'a> {
    rest: &'a [u8],
    past_request_line: bool,
    ended: bool,
}

impl<'a> Lines<'a> {
    /// Starts a scan at the beginning of a request (its request line).
    pub(crate) fn new(bytes: &'a [u8]) -> Lines<'a> {
        Lines {
            rest: bytes,
            past_request_line: false,
            ended: false,
        }
    }

    /// The next header field line; after [`Line::End`] or [`Line::Partial`], the same again.
    pub(crate) fn next_line(&mut self) -> Line<'a> {
        loop {
            if self.ended {
                return Line::End;
            }
            let Some(newline) = memchr(b'\n', self.rest) else {
                return Line::Partial;
            };
            let (line, rest) = self.rest.split_at(newline);
            self.rest = rest.get(1..).unwrap_or_default();
            if !self.past_request_line {
                self.past_request_line = true;
                continue;
            }
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                self.ended = true;
                return Line::End;
            }
            if let Some((name, value)) = split_field(line) {
                return Line::Field { name, value };
            }
        }
    }
}

/// Splits `name: value`; `None` for a line that is not a header field.
fn split_field(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = memchr(b':', line)?;
    let (name, value) = line.split_at(colon);
    match name.last() {
        None | Some(b' ' | b'\t') => None,
        Some(_) => Some((name, trim_ows(value.get(1..).unwrap_or_default()))),
    }
}

/// What the first header field of a name holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Field<'a> {
    /// The first field of that name, its value trimmed (possibly empty).
    Value(&'a [u8]),
    /// The header block ended without such a field.
    Absent,
    /// The bytes end before the field, or the header block, does.
    Partial,
}

/// The first header field named `name` (compared ASCII case-insensitively).
pub(crate) fn first_header<'a>(bytes: &'a [u8], name: &[u8]) -> Field<'a> {
    let mut lines = Lines::new(bytes);
    loop {
        match lines.next_line() {
            Line::Field { name: found, value } if found.eq_ignore_ascii_case(name) => {
                return Field::Value(value);
            }
            Line::Field { .. } => {}
            Line::End => return Field::Absent,
            Line::Partial => return Field::Partial,
        }
    }
}

/// Trims spaces and tabs (HTTP's optional whitespace) from both ends.
pub(crate) fn trim_ows(bytes: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    bytes.get(start..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &[u8] = b"host";

    #[test]
    fn finds_value_case_insensitively_and_trims() {
        let head = b"GET / HTTP/1.1\r\nHOST: \t example.com \t\r\n\r\n";
        assert_eq!(first_header(head, HOST), Field::Value(b"example.com"));
    }

    #[test]
    fn first_occurrence_wins_even_when_empty() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n";
        assert_eq!(first_header(head, HOST), Field::Value(b"a"));
        let head = b"GET / HTTP/1.1\r\nHost:  \r\nHost: b\r\n\r\n";
        assert_eq!(first_header(head, HOST), Field::Value(b""));
    }

    #[test]
    fn bare_lf_is_accepted() {
        let head = b"GET / HTTP/1.1\nAccept: */*\nHost: a\n\nHost: body";
        assert_eq!(first_header(head, HOST), Field::Value(b"a"));
        assert_eq!(first_header(b"GET / HTTP/1.1\n\n", HOST), Field::Absent);
    }

    #[test]
    fn end_of_headers_without_the_field_is_absent() {
        let head = b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\nHost: in-the-body\r\n";
        assert_eq!(first_header(head, HOST), Field::Absent);
    }

    #[test]
    fn the_request_line_is_never_a_field() {
        let head = b"Host: a\r\n\r\n";
        assert_eq!(first_header(head, HOST), Field::Absent);
    }

    #[test]
    fn cut_anywhere_is_partial_until_the_line_ends() {
        let head = b"GET / HTTP/1.1\r\nAccept: */*\r\nHost: example.com\r\n\r\n";
        let line_end = head.len() - 3; // the `\n` ending the Host line
        for cut in 0..head.len() {
            let expected = if cut <= line_end {
                Field::Partial
            } else {
                Field::Value(b"example.com")
            };
            assert_eq!(first_header(&head[..cut], HOST), expected, "cut at {cut}");
        }
    }

    #[test]
    fn absent_needs_the_whole_header_block() {
        let head = b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n";
        for cut in 0..head.len() {
            assert_eq!(
                first_header(&head[..cut], HOST),
                Field::Partial,
                "cut {cut}"
            );
        }
        assert_eq!(first_header(head, HOST), Field::Absent);
    }

    #[test]
    fn malformed_lines_never_match() {
        let head = b"GET / HTTP/1.1\r\nHost a\r\nHost : b\r\n\tHost: c\r\n: d\r\nHost\r\n\r\n";
        assert_eq!(first_header(head, HOST), Field::Absent);
        let head = b"GET / HTTP/1.1\r\nno colon here\r\nHost: e\r\n\r\n";
        assert_eq!(first_header(head, HOST), Field::Value(b"e"));
    }

    #[test]
    fn garbage_nul_and_invalid_utf8_are_bytes() {
        let head = b"\x16\x03\x01\x00\xff\n\x00\xc3\x28: x\r\nHost: \xff\x00\xfe\r\n\r\n";
        assert_eq!(first_header(head, HOST), Field::Value(b"\xff\x00\xfe"));
        assert_eq!(
            first_header(b"\x16\x03\x01\x02\x00\x01\x00", HOST),
            Field::Partial
        );
        assert_eq!(first_header(b"", HOST), Field::Partial);
        assert_eq!(first_header(b"\n\n", HOST), Field::Absent);
        assert_eq!(first_header(b"\n\r", HOST), Field::Partial);
    }

    #[test]
    fn lines_stay_ended() {
        let mut lines = Lines::new(b"GET / HTTP/1.1\r\nA: 1\r\n\r\nB: 2\r\n");
        assert_eq!(
            lines.next_line(),
            Line::Field {
                name: b"A",
                value: b"1"
            }
        );
        assert_eq!(lines.next_line(), Line::End);
        assert_eq!(lines.next_line(), Line::End);
    }

    #[test]
    fn trim_ows_trims_only_spaces_and_tabs() {
        assert_eq!(trim_ows(b" \t a b \t"), b"a b");
        assert_eq!(trim_ows(b" \t "), b"");
        assert_eq!(trim_ows(b""), b"");
        assert_eq!(trim_ows(b"\x0ba\r"), b"\x0ba\r");
    }
}
