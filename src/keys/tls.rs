//! The server name (SNI) of a TLS ClientHello in peeked bytes.
//!
//! A ClientHello travels in TLS records (type 22, handshake; version `0x03xx`; a u16 length of
//! at most 2^14), and a large one (a post-quantum key share, padding) spans several records,
//! which may arrive in several TCP segments. [`server_name`] walks the records with a cursor
//! that reads the handshake message *through* the record fragments, so nothing is copied or
//! allocated and no byte past the slice is read.
//!
//! The answer, httparse-style:
//! - a key: the first `host_name` entry (name type 0) of the `server_name` extension, borrowed
//!   from the bytes as sent (not case-folded: clients send the lowercase name in practice);
//! - [`Found::Partial`]: the bytes so far are a valid prefix of a ClientHello whose server name
//!   has not been reached yet;
//! - [`Found::Absent`]: anything else. Not TLS (the first byte is not 22, the record version is
//!   not `0x03xx`, an SSLv2-style hello), a first handshake message that is not a ClientHello,
//!   a record of another type before the server name, malformed or inconsistent lengths, no
//!   extensions, no `server_name` extension, an empty name. A name whose own bytes straddle a
//!   record boundary (legal, but no client does it) is also Absent: the key must be one slice
//!   of the peeked bytes.
//!
//! The parse reads left to right and decides from the bytes read so far only, so a prefix of
//! a connection's bytes answers Partial or the same as the whole.

use super::{Found, Key};

/// TLS record content type `handshake`.
const HANDSHAKE: u8 = 22;
/// Handshake message type `client_hello`.
const CLIENT_HELLO: u8 = 1;
/// Extension type `server_name` (RFC 6066).
const SERVER_NAME: usize = 0;
/// Server name type `host_name`.
const HOST_NAME: u8 = 0;
/// Record header: type, version (2 bytes), length (2 bytes).
const RECORD_HEADER_LEN: usize = 5;
/// Longest plaintext record fragment (RFC 8446 section 5.1).
const MAX_FRAGMENT_LEN: usize = 1 << 14;
/// Longest legacy session id.
const MAX_SESSION_ID_LEN: usize = 32;
/// The ClientHello's `random`.
const RANDOM_LEN: usize = 32;

/// The server name (SNI host_name) from the TLS ClientHello at the start of `bytes`.
pub(crate) fn server_name(bytes: &[u8]) -> Found<'_> {
    match client_hello_server_name(&mut Records::new(bytes)) {
        Ok(name) => Found::Key(Key::Bytes(name)),
        Err(Stop::Partial) => Found::Partial,
        Err(Stop::Absent) => Found::Absent,
    }
}

/// Why the parse stopped without a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// The bytes end inside a valid prefix.
    Partial,
    /// No server name, whatever follows.
    Absent,
}

/// A cursor over the handshake stream carried by consecutive handshake records.
///
/// `offset` counts handshake bytes consumed (the position in the reassembled message), which
/// the length checks use; `pos` is the position in the peeked bytes, record headers included.
struct Records<'a> {
    bytes: &'a [u8],
    /// Next unread byte in `bytes`; never past `bytes.len()`.
    pos: usize,
    /// End of the current record's fragment in `bytes` (may lie past `bytes.len()`).
    fragment_end: usize,
    /// Handshake bytes consumed so far.
    offset: usize,
}

impl<'a> Records<'a> {
    fn new(bytes: &'a [u8]) -> Records<'a> {
        Records {
            bytes,
            pos: 0,
            fragment_end: 0,
            offset: 0,
        }
    }

    /// Makes the current fragment hold an unread byte, reading the next record header when the
    /// current fragment is used up.
    fn fill(&mut self) -> Result<(), Stop> {
        if self.pos < self.fragment_end {
            return Ok(());
        }
        let header = self.bytes.get(self.pos..).unwrap_or_default();
        // Checked byte by byte, so that "not TLS" is known from the first bytes.
        match header.first() {
            None => return Err(Stop::Partial),
            Some(&HANDSHAKE) => {}
            Some(_) => return Err(Stop::Absent),
        }
        match header.get(1) {
            None => return Err(Stop::Partial),
            Some(&3) => {}
            Some(_) => return Err(Stop::Absent),
        }
        let Some(&[_, _, _, high, low]) = header.first_chunk::<RECORD_HEADER_LEN>() else {
            return Err(Stop::Partial);
        };
        let len = usize::from(u16::from_be_bytes([high, low]));
        // Zero-length handshake fragments are forbidden (RFC 8446 section 5.1).
        if len == 0 || len > MAX_FRAGMENT_LEN {
            return Err(Stop::Absent);
        }
        self.pos += RECORD_HEADER_LEN;
        self.fragment_end = self.pos + len;
        Ok(())
    }

    fn u8(&mut self) -> Result<u8, Stop> {
        self.fill()?;
        let byte = *self.bytes.get(self.pos).ok_or(Stop::Partial)?;
        self.pos += 1;
        self.offset += 1;
        Ok(byte)
    }

    fn u16(&mut self) -> Result<usize, Stop> {
        Ok(usize::from(u16::from_be_bytes([self.u8()?, self.u8()?])))
    }

    fn u24(&mut self) -> Result<usize, Stop> {
        let [a, b, c] = [self.u8()?, self.u8()?, self.u8()?];
        Ok(usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c))
    }

    /// Skips `n` handshake bytes, through as many records as they span.
    fn skip(&mut self, mut n: usize) -> Result<(), Stop> {
        while n > 0 {
            self.fill()?;
            let step = n.min(self.fragment_end - self.pos);
            if self.pos + step > self.bytes.len() {
                return Err(Stop::Partial);
            }
            self.pos += step;
            self.offset += step;
            n -= step;
        }
        Ok(())
    }

    /// The next `n` (> 0) handshake bytes as one slice: Absent if they straddle a record
    /// boundary.
    fn slice(&mut self, n: usize) -> Result<&'a [u8], Stop> {
        self.fill()?;
        if self.fragment_end - self.pos < n {
            return Err(Stop::Absent);
        }
        let slice = self
            .bytes
            .get(self.pos..self.pos + n)
            .ok_or(Stop::Partial)?;
        self.pos += n;
        self.offset += n;
        Ok(slice)
    }

    /// Checks that `n` more bytes fit before `end` (a handshake offset).
    fn room(&self, n: usize, end: usize) -> Result<(), Stop> {
        if self.offset + n > end {
            return Err(Stop::Absent);
        }
        Ok(())
    }

    /// The end (a handshake offset) of a vector of `len` bytes starting here, checked to lie
    /// within its enclosing structure, which ends at `end`.
    fn vector_end(&self, len: usize, end: usize) -> Result<usize, Stop> {
        self.room(len, end)?;
        Ok(self.offset + len)
    }
}

/// Walks the ClientHello (RFC 8446 section 4.1.2) to its `server_name` extension.
fn client_hello_server_name<'a>(records: &mut Records<'a>) -> Result<&'a [u8], Stop> {
    if records.u8()? != CLIENT_HELLO {
        return Err(Stop::Absent);
    }
    let body_len = records.u24()?;
    let body_end = records.offset + body_len;

    records.room(2 + RANDOM_LEN + 1, body_end)?;
    let legacy_version = records.u16()?;
    if legacy_version >> 8 != 3 {
        return Err(Stop::Absent);
    }
    records.skip(RANDOM_LEN)?;
    let session_id_len = usize::from(records.u8()?);
    if session_id_len > MAX_SESSION_ID_LEN {
        return Err(Stop::Absent);
    }
    records.room(session_id_len, body_end)?;
    records.skip(session_id_len)?;

    records.room(2, body_end)?;
    let suites_len = records.u16()?;
    if suites_len == 0 || suites_len % 2 != 0 {
        return Err(Stop::Absent);
    }
    records.room(suites_len, body_end)?;
    records.skip(suites_len)?;

    records.room(1, body_end)?;
    let compression_len = usize::from(records.u8()?);
    if compression_len == 0 {
        return Err(Stop::Absent);
    }
    records.room(compression_len, body_end)?;
    records.skip(compression_len)?;

    // A TLS 1.2 ClientHello may end here, without extensions, hence without a name.
    if records.offset == body_end {
        return Err(Stop::Absent);
    }
    records.room(2, body_end)?;
    let extensions_len = records.u16()?;
    let extensions_end = records.vector_end(extensions_len, body_end)?;
    while records.offset < extensions_end {
        records.room(4, extensions_end)?;
        let kind = records.u16()?;
        let len = records.u16()?;
        let end = records.vector_end(len, extensions_end)?;
        if kind == SERVER_NAME {
            return host_name(records, end);
        }
        records.skip(len)?;
    }
    Err(Stop::Absent)
}

/// The first `host_name` of a `server_name` extension's body (RFC 6066 section 3), which ends
/// at `end`.
fn host_name<'a>(records: &mut Records<'a>, end: usize) -> Result<&'a [u8], Stop> {
    records.room(2, end)?;
    let list_len = records.u16()?;
    let list_end = records.vector_end(list_len, end)?;
    while records.offset < list_end {
        records.room(3, list_end)?;
        let kind = records.u8()?;
        let len = records.u16()?;
        records.room(len, list_end)?;
        if kind == HOST_NAME {
            return match len {
                0 => Err(Stop::Absent),
                len => records.slice(len),
            };
        }
        records.skip(len)?;
    }
    Err(Stop::Absent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NAME: &[u8] = b"www.example.com";

    /// A ClientHello handshake message (type, u24 length, body) as a browser sends it.
    struct Hello {
        session_id: Vec<u8>,
        suites: usize,
        /// Extensions before server_name.
        before: Vec<(u16, Vec<u8>)>,
        /// The server_name extension's body, if any.
        server_name: Option<Vec<u8>>,
        /// Bytes of key share after the name (1216 for X25519MLKEM768 plus X25519).
        key_share: usize,
    }

    impl Hello {
        fn browser(name: &[u8]) -> Hello {
            Hello {
                session_id: vec![0x5a; 32],
                suites: 16,
                before: vec![(0x0a0a, vec![]), (0x0017, vec![]), (0xff01, vec![0])],
                server_name: Some(sni_body(&[(HOST_NAME, name)])),
                key_share: 32,
            }
        }

        fn message(&self) -> Vec<u8> {
            self.message_and_sni().0
        }

        /// The message and where the server_name extension's body starts in it.
        fn message_and_sni(&self) -> (Vec<u8>, usize) {
            let mut sni_at = 0;
            let mut body = vec![3, 3];
            body.extend([0x11; RANDOM_LEN]);
            body.push(self.session_id.len() as u8);
            body.extend(&self.session_id);
            body.extend((2 * self.suites as u16).to_be_bytes());
            for i in 0..self.suites {
                body.extend((0x1301 + i as u16).to_be_bytes());
            }
            body.extend([1, 0]);
            let mut extensions = Vec::new();
            fn push(extensions: &mut Vec<u8>, kind: u16, data: &[u8]) {
                extensions.extend(kind.to_be_bytes());
                extensions.extend((data.len() as u16).to_be_bytes());
                extensions.extend(data);
            }
            for (kind, data) in &self.before {
                push(&mut extensions, *kind, data);
            }
            if let Some(data) = &self.server_name {
                push(&mut extensions, SERVER_NAME as u16, data);
                sni_at = body.len() + 2 + extensions.len() - data.len();
            }
            push(&mut extensions, 0x0010, b"\x00\x0c\x02h2\x08http/1.1");
            push(&mut extensions, 0x002b, &[4, 3, 4, 3, 3]);
            let mut share = vec![0, 0, 0x11, 0xec];
            share.extend(vec![0x42; self.key_share]);
            push(&mut extensions, 0x0033, &share);
            body.extend((extensions.len() as u16).to_be_bytes());
            body.extend(extensions);
            let mut message = vec![CLIENT_HELLO];
            message.extend(&(body.len() as u32).to_be_bytes()[1..]);
            message.extend(body);
            (message, sni_at + 4)
        }

        /// Where the (single) host name lies in the message.
        fn name_range(&self) -> std::ops::Range<usize> {
            let (_, sni_at) = self.message_and_sni();
            let len = self.server_name.as_ref().map_or(0, |data| data.len() - 5);
            sni_at + 5..sni_at + 5 + len
        }
    }

    fn sni_body(entries: &[(u8, &[u8])]) -> Vec<u8> {
        let mut list = Vec::new();
        for (kind, name) in entries {
            list.push(*kind);
            list.extend((name.len() as u16).to_be_bytes());
            list.extend(*name);
        }
        let mut body = (list.len() as u16).to_be_bytes().to_vec();
        body.extend(list);
        body
    }

    /// `message` in records cut at `cuts` (offsets in the message, ascending).
    fn records(message: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut start = 0;
        for &end in cuts.iter().chain([&message.len()]) {
            out.extend([HANDSHAKE, 3, 1]);
            out.extend(((end - start) as u16).to_be_bytes());
            out.extend(&message[start..end]);
            start = end;
        }
        out
    }

    fn key(name: &[u8]) -> Found<'_> {
        Found::Key(Key::Bytes(name))
    }

    #[test]
    fn finds_the_name_in_one_record() {
        let message = Hello::browser(NAME).message();
        assert_eq!(server_name(&records(&message, &[])), key(NAME));
    }

    #[test]
    fn every_prefix_is_partial_until_the_name_is_complete() {
        let hello = Hello::browser(NAME);
        let bytes = records(&hello.message(), &[]);
        let end = RECORD_HEADER_LEN + hello.name_range().end;
        for cut in 0..=bytes.len() {
            let expected = if cut < end { Found::Partial } else { key(NAME) };
            assert_eq!(server_name(&bytes[..cut]), expected, "cut at {cut}");
        }
    }

    #[test]
    fn two_and_three_records_at_every_offset() {
        let mut hello = Hello::browser(NAME);
        hello.key_share = 400;
        let message = hello.message();
        let name = hello.name_range();
        let straddles = |cut: usize| name.start < cut && cut < name.end;
        for a in 1..message.len() {
            let expected = if straddles(a) {
                Found::Absent
            } else {
                key(NAME)
            };
            assert_eq!(server_name(&records(&message, &[a])), expected, "cut {a}");
        }
        for a in (1..message.len()).step_by(7) {
            for b in a + 1..message.len() {
                let bytes = records(&message, &[a, b]);
                let expected = if straddles(a) || straddles(b) {
                    Found::Absent
                } else {
                    key(NAME)
                };
                assert_eq!(server_name(&bytes), expected, "cuts {a} {b}");
            }
        }
    }

    #[test]
    fn a_large_hello_over_records_and_segments() {
        let mut hello = Hello::browser(NAME);
        hello.key_share = 1216;
        hello.before.push((0x0015, vec![0; 600]));
        let message = hello.message();
        assert!(message.len() > 1800, "{}", message.len());
        let cuts = [100, 1400];
        let bytes = records(&message, &cuts);
        let name_end = hello.name_range().end;
        let headers = 1 + cuts.iter().filter(|&&cut| cut < name_end).count();
        let end = name_end + headers * RECORD_HEADER_LEN;
        for cut in 0..=bytes.len() {
            let expected = if cut < end { Found::Partial } else { key(NAME) };
            assert_eq!(server_name(&bytes[..cut]), expected, "cut at {cut}");
        }
    }

    #[test]
    fn first_host_name_entry_wins() {
        let mut hello = Hello::browser(NAME);
        hello.server_name = Some(sni_body(&[(7, b"other"), (0, b"a.test"), (0, b"b.test")]));
        let bytes = records(&hello.message(), &[]);
        assert_eq!(server_name(&bytes), key(b"a.test"));
    }

    #[test]
    fn no_name_is_absent() {
        let absent = |hello: Hello| server_name(&records(&hello.message(), &[])) == Found::Absent;
        let mut hello = Hello::browser(NAME);
        hello.server_name = None;
        assert!(absent(hello));
        let mut hello = Hello::browser(NAME);
        hello.server_name = Some(sni_body(&[(0, b"")]));
        assert!(absent(hello));
        let mut hello = Hello::browser(NAME);
        hello.server_name = Some(sni_body(&[(1, b"x")]));
        assert!(absent(hello));
        let mut hello = Hello::browser(NAME);
        hello.server_name = Some(vec![0, 0]);
        assert!(absent(hello));
        // The server's reply carries an empty server_name extension.
        let mut hello = Hello::browser(NAME);
        hello.server_name = Some(vec![]);
        assert!(absent(hello));
    }

    #[test]
    fn a_hello_without_extensions_is_absent() {
        let mut body = vec![3, 3];
        body.extend([0; RANDOM_LEN]);
        body.extend([0, 0, 2, 0x13, 0x01, 1, 0]);
        let mut message = vec![CLIENT_HELLO, 0, 0, body.len() as u8];
        message.extend(body);
        let bytes = records(&message, &[]);
        assert_eq!(server_name(&bytes), Found::Absent);
        assert_eq!(server_name(&bytes[..bytes.len() - 1]), Found::Partial);
    }

    #[test]
    fn not_tls_is_absent_at_once() {
        assert_eq!(server_name(b""), Found::Partial);
        assert_eq!(server_name(&[HANDSHAKE]), Found::Partial);
        assert_eq!(server_name(b"G"), Found::Absent);
        assert_eq!(server_name(b"GET / HTTP/1.1\r\n"), Found::Absent);
        assert_eq!(server_name(&[HANDSHAKE, 2]), Found::Absent);
        // SSLv2-style hello.
        assert_eq!(server_name(&[0x80, 0x2e, 1, 3, 1]), Found::Absent);
        // An alert record.
        assert_eq!(server_name(&[21, 3, 3, 0, 2, 2, 40]), Found::Absent);
        // A handshake that is not a ClientHello (a ServerHello).
        assert_eq!(server_name(&[HANDSHAKE, 3, 3, 0, 4, 2]), Found::Absent);
    }

    #[test]
    fn malformed_lengths_are_absent() {
        let message = Hello::browser(NAME).message();
        let bytes = records(&message, &[]);
        let mutate = |at: usize, value: u8| {
            let mut bytes = bytes.clone();
            bytes[at] = value;
            server_name(&bytes) == Found::Absent
        };
        // Record length zero or over 2^14.
        assert_eq!(server_name(&[HANDSHAKE, 3, 1, 0, 0]), Found::Absent);
        assert_eq!(server_name(&[HANDSHAKE, 3, 1, 0x40, 1]), Found::Absent);
        // Handshake length shorter than its content.
        assert!(mutate(8, 10));
        // legacy_version not 3.x.
        assert!(mutate(9, 2));
        // Session id longer than 32.
        assert!(mutate(43, 33));
        // Odd cipher suite length.
        assert!(mutate(44 + 32 + 1, 31));
        // Empty compression methods.
        assert!(mutate(44 + 32 + 2 + 32, 0));
        // Extensions longer than the message.
        assert!(mutate(44 + 32 + 2 + 32 + 2, 0xff));
    }

    #[test]
    fn another_record_type_mid_hello_is_absent() {
        let message = Hello::browser(NAME).message();
        let mut bytes = records(&message, &[20]);
        bytes[5 + 20] = 20;
        assert_eq!(server_name(&bytes), Found::Absent);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = server_name(&bytes);
        }

        #[test]
        fn prefixes_agree_with_the_whole(
            tail in proptest::collection::vec(any::<u8>(), 0..64),
            flip in any::<(usize, u8)>(),
            cuts in proptest::collection::vec(1usize..300, 0..3),
            keep in any::<proptest::sample::Index>(),
        ) {
            let message = Hello::browser(NAME).message();
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|&c| c < message.len()).collect();
            cuts.sort_unstable();
            cuts.dedup();
            let mut bytes = records(&message, &cuts);
            // Damage one byte (often harmless), then cut or extend.
            let at = flip.0 % bytes.len();
            bytes[at] ^= flip.1;
            bytes.truncate(keep.index(bytes.len() + 1));
            bytes.extend(tail);
            let whole = server_name(&bytes);
            for cut in 0..bytes.len() {
                let prefix = server_name(&bytes[..cut]);
                prop_assert!(prefix == Found::Partial || prefix == whole, "cut {cut}: {prefix:?} vs {whole:?}");
            }
        }

        #[test]
        fn any_record_split_finds_the_name(
            name in "[a-z0-9.-]{1,60}",
            cuts in proptest::collection::vec(1usize..2000, 0..4),
            key_share in 0usize..1300,
        ) {
            let mut hello = Hello::browser(name.as_bytes());
            hello.key_share = key_share;
            let message = hello.message();
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|&c| c < message.len()).collect();
            cuts.sort_unstable();
            cuts.dedup();
            let range = hello.name_range();
            let straddles = cuts.iter().any(|&c| range.start < c && c < range.end);
            let bytes = records(&message, &cuts);
            let expected = if straddles { Found::Absent } else { key(name.as_bytes()) };
            prop_assert_eq!(server_name(&bytes), expected);
        }
    }
}
