//! Where one HTTP/1.x request ends in a byte stream, for workers that hand connections back
//! at request boundaries.
//!
//! A worker that gives a kept-alive connection back to the master ([`Worker::hand_back`])
//! must not have read any byte of the next request: the next worker reads it from the
//! socket, from its first byte. A worker that reads whatever the socket holds can take in
//! pipelined requests behind the one it serves. Peeking first and reading only
//! [`request_end`]'s length keeps the next request in the socket.
//!
//! ```
//! use stickyd_worker::http::{RequestEnd, request_end};
//!
//! let two = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\n";
//! assert_eq!(request_end(two), RequestEnd::At(28));
//! assert_eq!(request_end(&two[..20]), RequestEnd::Incomplete);
//! ```
//!
//! [`Worker::hand_back`]: crate::Worker::hand_back

/// Where the first request in some bytes ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestEnd {
    /// The head has not ended yet: every one of these bytes belongs to the first request.
    Incomplete,
    /// The first request (any blank lines before it, its head and its `Content-Length` body)
    /// is the first this many bytes. It can be more than were given: the body is still on its
    /// way.
    At(u64),
    /// The head has ended but says nothing certain about where the body ends (a
    /// `Transfer-Encoding`, a `Content-Length` that is not one decimal number, two that
    /// differ): the stream cannot be cut after this request without decoding its body.
    Unknown,
}

/// Where the first HTTP/1.x request in `bytes` ends.
///
/// The head ends at the first empty line (`\r\n\r\n` or `\n\n`, as stickyd's key parser
/// reads it); blank lines before the request line belong to the request (RFC 9112, section
/// 2.2). The body is `Content-Length` bytes, or none when neither `Content-Length` nor
/// `Transfer-Encoding` is present. Nothing is allocated.
pub fn request_end(bytes: &[u8]) -> RequestEnd {
    let start = bytes
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    let head = &bytes[start..];
    let Some(head_len) = head_end(head) else {
        return RequestEnd::Incomplete;
    };
    let mut length: Option<u64> = None;
    // Every line after the request line, up to the empty one.
    for line in head[..head_len].split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return RequestEnd::Unknown;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            match (decimal(value), length) {
                (Some(n), None) => length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => return RequestEnd::Unknown,
            }
        }
    }
    let head_total = (start + head_len) as u64;
    match head_total.checked_add(length.unwrap_or(0)) {
        Some(end) => RequestEnd::At(end),
        None => RequestEnd::Unknown,
    }
}

/// The length of a head through its empty line, if it has ended.
fn head_end(head: &[u8]) -> Option<usize> {
    // Each `\n` that is followed by `\n` or by `\r\n` ends the block.
    let newlines = head.iter().enumerate().filter(|&(_, &b)| b == b'\n');
    newlines
        .map(|(at, _)| at)
        .find_map(|at| match head.get(at + 1..) {
            Some([b'\n', ..]) => Some(at + 2),
            Some([b'\r', b'\n', ..]) => Some(at + 3),
            _ => None,
        })
}

/// A decimal number of digits only (no sign, no spaces), if it fits a `u64`.
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let digit = (b as char).to_digit(10)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// `bytes` without the spaces and tabs around it.
fn trim(bytes: &[u8]) -> &[u8] {
    let is_space = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes
        .iter()
        .position(|b| !is_space(b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

#[cfg(test)]
mod tests {
    use super::RequestEnd::{At, Incomplete, Unknown};
    use super::*;

    #[test]
    fn a_head_without_a_body() {
        let get = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(request_end(get), At(get.len() as u64));
        let lf = b"GET / HTTP/1.1\nHost: a\n\n";
        assert_eq!(request_end(lf), At(lf.len() as u64));
        let bare = b"GET / HTTP/1.1\r\n\r\n";
        assert_eq!(request_end(bare), At(bare.len() as u64));
    }

    #[test]
    fn the_body_counts() {
        let post = b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET";
        assert_eq!(request_end(post), At(post.len() as u64 - 3));
        let spaced = b"POST / HTTP/1.1\r\ncontent-length:\t 5 \r\n\r\n";
        assert_eq!(request_end(spaced), At(spaced.len() as u64 + 5));
        let same_twice = b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(request_end(same_twice), At(same_twice.len() as u64 + 2));
    }

    #[test]
    fn blank_lines_before_the_request_belong_to_it() {
        let get = b"\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        assert_eq!(request_end(get), At(get.len() as u64));
        assert_eq!(request_end(b"\r\n\r\n"), Incomplete);
        assert_eq!(request_end(b""), Incomplete);
    }

    #[test]
    fn an_unfinished_head_is_incomplete_at_every_cut() {
        let get = b"GET /x HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1\r\nContent-Length: 3\r\n\r\n";
        for cut in 0..get.len() {
            assert_eq!(request_end(&get[..cut]), Incomplete, "cut at {cut}");
        }
        assert_eq!(request_end(get), At(get.len() as u64 + 3));
    }

    #[test]
    fn bodies_whose_end_is_not_known() {
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(request_end(chunked), Unknown);
        for length in ["x", "-1", "1 2", "", "99999999999999999999999"] {
            let head = format!("POST / HTTP/1.1\r\nContent-Length: {length}\r\n\r\n");
            assert_eq!(request_end(head.as_bytes()), Unknown, "{length:?}");
        }
        let differ = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(request_end(differ), Unknown);
    }

    proptest::proptest! {
        /// Requests of any shape written back to back: each is cut exactly where it ends,
        /// and every prefix of one is incomplete or that same end.
        #[test]
        fn a_pipeline_is_cut_between_its_requests(
            requests in proptest::collection::vec(
                (0usize..3, "[a-z/]{1,12}", "[ -~]{0,20}", 0usize..40),
                1..6,
            ),
        ) {
            let mut all = Vec::new();
            let mut ends = Vec::new();
            for (blank, path, value, body) in &requests {
                all.extend(std::iter::repeat_n(b"\r\n".as_slice(), *blank).flatten());
                let head = format!(
                    "POST /{path} HTTP/1.1\r\nX-Key: {value}\r\nContent-Length: {body}\r\n\r\n"
                );
                all.extend_from_slice(head.as_bytes());
                all.extend(std::iter::repeat_n(b'\n', *body));
                ends.push(all.len());
            }
            let mut from = 0;
            for &end in &ends {
                let rest = &all[from..];
                let length = (end - from) as u64;
                proptest::prop_assert_eq!(request_end(rest), At(length));
                for cut in 0..rest.len() {
                    let answer = request_end(&rest[..cut]);
                    proptest::prop_assert!(answer == Incomplete || answer == At(length));
                }
                from = end;
            }
        }
    }

    #[test]
    fn a_header_named_like_one_is_not_it() {
        let get = b"GET / HTTP/1.1\r\nX-Content-Length: 9\r\n\r\n";
        assert_eq!(request_end(get), At(get.len() as u64));
    }
}
