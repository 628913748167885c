//! The worker channel wire protocol, version 1.
//!
//! One `SOCK_SEQPACKET` socket joins the master and each worker. Every message is one packet:
//! a 4-byte header, then a payload, all integers little-endian.
//!
//! | offset | field     | meaning                                                    |
//! | ------ | --------- | ---------------------------------------------------------- |
//! | 0      | `version` | `u8`, always [`VERSION`] (1)                               |
//! | 1      | `type`    | `u8`, a [`MsgType`]                                        |
//! | 2      | `count`   | `u16`, records in `WELCOME`, `CONNS`, `ACK`; fds in `CHANNELS`; listeners in `REHASH`, `HANDBACK`; flags in `HELLO`; 0 otherwise |
//!
//! | type | name      | direction       | payload after the header                              |
//! | ---- | --------- | --------------- | ----------------------------------------------------- |
//! | 1    | `HELLO`   | worker → master | `worker_id: u32`, `pid: u32`; the header's `count` carries flags ([`HELLO_CHANNELS`], [`HELLO_HANDBACK`]) |
//! | 2    | `WELCOME` | master → worker | `worker_id: u32`, `workers: u32`, then `count` names, each `len: u8` (1..=255) + UTF-8 |
//! | 3    | `REFUSED` | master → worker | the reason, UTF-8, 1..=1024 bytes                     |
//! | 4    | `CONNS`   | master → worker | `count` (1..=64) records of [`RECORD_LEN`] bytes, and exactly `count` fds in one `SCM_RIGHTS` message, in record order |
//! | 5    | `ACK`     | worker → master | `count` (0..=64) `seq: u64`: the connections of the one `CONNS` it answers whose fds arrived |
//! | 6    | `DRAIN`   | master → worker | nothing; the master then shuts down its sending side  |
//! | 7    | `CHANNELS`| master → worker | nothing; `count` (1..=64) more channels, as fds in one `SCM_RIGHTS` message |
//! | 8    | `REHASH`  | master → worker | `count` (1..=[`MAX_REHASH`]) `listener: u16`: hand kept-alive connections of these listeners back at a request boundary |
//! | 9    | `HANDBACK`| worker → master | `count` (1..=64) `listener: u16`, and exactly `count` fds in one `SCM_RIGHTS` message: connections handed back, each positioned at the first byte of its next request |
//!
//! A worker whose `HELLO` sets [`HELLO_CHANNELS`] may be sent, once, after `WELCOME`, a
//! `CHANNELS` message: one more `SOCK_SEQPACKET` channel per dispatcher thread of the master.
//! Each carries `CONNS` (with sequence numbers of its own) and takes the `ACK`s of what it
//! carried, exactly as the first channel does; `HELLO`, `WELCOME`, `REFUSED` and `DRAIN` only
//! ever travel on the first channel. The master closes its end of an extra channel once nothing
//! more will be sent on it and every `CONNS` it carried has been acknowledged (after `DRAIN`,
//! possibly), so a worker reads every channel to its end: its connections have ended when all
//! of them have. A master ignores `HELLO` flags it does not
//! know, and a worker that does not set the flag is never sent `CHANNELS`.
//!
//! A worker whose `HELLO` sets [`HELLO_HANDBACK`] may be sent, once, on the first channel after
//! `WELCOME` (and `CHANNELS`), a `REHASH` message naming listeners (`--rehash-per-request`):
//! on a kept-alive connection of one of them, once a response is complete and the next request's
//! first bytes have arrived, none of them read, the worker hands the connection back with
//! `HANDBACK` on its first channel instead of reading on; the master routes it again by the next
//! request's key, as a new connection. A connection a worker received is always served its first
//! request there, so a connection travels at most once per request.
//!
//! A `CONNS` record:
//!
//! | offset | field         | meaning                                                      |
//! | ------ | ------------- | ------------------------------------------------------------ |
//! | 0      | `seq`         | `u64`, sequence number, unique per master                     |
//! | 8      | `key_hash`    | `u64`, the key hash the master routed by                      |
//! | 16     | `accepted_ns` | `u64`, accept time, nanoseconds since the Unix epoch          |
//! | 24     | `addr`        | `[u8; 16]`, IPv4 in bytes 0..4 (the rest zero) or IPv6        |
//! | 40     | `port`        | `u16`, peer port                                              |
//! | 42     | `listener`    | `u16`, index into the `WELCOME` listener names                |
//! | 44     | `proxy_len`   | `u16`, PROXY-protocol header bytes to consume first (0: none) |
//! | 46     | `family`      | `u8`, 4 or 6                                                  |
//! | 47     | `reserved`    | `u8`, 0                                                       |
//!
//! Every message is at least 4 bytes long, so a zero-length read always means the peer has
//! gone. [`decode`] validates everything and borrows the receive buffer; the `encode_*`
//! functions append one message to a `Vec<u8>`:
//!
//! ```
//! use stickyd_worker::wire::{self, ConnRecord, Hello, Message};
//!
//! let mut buf = Vec::new();
//! let hello = Hello { worker_id: 2, pid: 4242, flags: wire::HELLO_CHANNELS };
//! wire::encode_hello(&hello, &mut buf);
//! // The header (version 1, type 1: HELLO, the flags in `count`), then worker id and pid.
//! assert_eq!(buf, [1, 1, 1, 0, 2, 0, 0, 0, 0x92, 0x10, 0, 0]);
//! assert!(matches!(wire::decode(&buf)?, Message::Hello(h) if h == hello));
//!
//! let record = ConnRecord {
//!     seq: 7,
//!     key_hash: 0x5eed,
//!     accepted_ns: 1_700_000_000_000_000_000,
//!     peer: "192.0.2.1:5678".parse().unwrap(),
//!     listener: 0,
//!     proxy_len: 0,
//! };
//! buf.clear();
//! wire::encode_conns(&[record], &mut buf);
//! assert_eq!(buf.len(), wire::HEADER_LEN + wire::RECORD_LEN);
//! let Message::Conns(records) = wire::decode(&buf)? else {
//!     panic!("not CONNS")
//! };
//! assert_eq!(records.get(0), Some(record));
//! # Ok::<(), wire::WireError>(())
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Length of the header every message starts with.
pub const HEADER_LEN: usize = 4;
/// Length of one `CONNS` record.
pub const RECORD_LEN: usize = 48;
/// Most records (and fds) in one `CONNS` message, and most sequence numbers in one `ACK`.
pub const MAX_CONNS: usize = 64;
/// A receive buffer of this size fits any valid message (the largest is a `WELCOME`).
pub const MAX_MESSAGE: usize = 65536 + 16;
/// Most bytes of a `REFUSED` reason.
pub const MAX_REASON: usize = 1024;
/// Most bytes of one listener name in `WELCOME`.
pub const MAX_NAME: usize = 255;
/// The worker id an attached worker sends in `HELLO` to take any free slot; `WELCOME` names
/// the one it got.
pub const ANY_WORKER: u32 = u32::MAX;

/// `HELLO` flag: the worker takes extra channels (`CHANNELS`).
pub const HELLO_CHANNELS: u16 = 1;
/// `HELLO` flag: the worker hands kept-alive connections back when asked (`REHASH`,
/// `HANDBACK`).
pub const HELLO_HANDBACK: u16 = 2;
/// The most listeners a `REHASH` names (the message fits in [`MAX_MESSAGE`] bytes).
pub const MAX_REHASH: usize = (MAX_MESSAGE - HEADER_LEN) / 2;
const HELLO_LEN: usize = HEADER_LEN + 8;
const WELCOME_FIXED: usize = HEADER_LEN + 8;

/// A message type (the header's second byte).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsgType {
    /// Worker → master: the worker's id and pid.
    Hello = 1,
    /// Master → worker: accepted; the pool size and the listener names.
    Welcome = 2,
    /// Master → worker: refused, with a reason.
    Refused = 3,
    /// Master → worker: connections, with their fds.
    Conns = 4,
    /// Worker → master: the sequence numbers of one `CONNS` whose fds arrived.
    Ack = 5,
    /// Master → worker: no more connections; the master shuts its sending side next.
    Drain = 6,
    /// Master → worker: more channels, as fds.
    Channels = 7,
    /// Master → worker: the listeners whose kept-alive connections go back at each request.
    Rehash = 8,
    /// Worker → master: connections handed back, as fds.
    Handback = 9,
    /// Worker → master: `DRAIN` read; nothing more is handed back (sent by a worker that got
    /// a `REHASH`).
    Drained = 10,
}

impl MsgType {
    /// The type for a header's type byte, if it names one.
    pub fn from_u8(byte: u8) -> Option<MsgType> {
        Some(match byte {
            1 => MsgType::Hello,
            2 => MsgType::Welcome,
            3 => MsgType::Refused,
            4 => MsgType::Conns,
            5 => MsgType::Ack,
            6 => MsgType::Drain,
            7 => MsgType::Channels,
            8 => MsgType::Rehash,
            9 => MsgType::Handback,
            10 => MsgType::Drained,
            _ => return None,
        })
    }
}

impl fmt::Display for MsgType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MsgType::Hello => "HELLO",
            MsgType::Welcome => "WELCOME",
            MsgType::Refused => "REFUSED",
            MsgType::Conns => "CONNS",
            MsgType::Ack => "ACK",
            MsgType::Drain => "DRAIN",
            MsgType::Channels => "CHANNELS",
            MsgType::Rehash => "REHASH",
            MsgType::Handback => "HANDBACK",
            MsgType::Drained => "DRAINED",
        })
    }
}

/// `HELLO`: the first message of a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The slot the worker was started for (`STICKYD_WORKER_ID`).
    pub worker_id: u32,
    /// The worker's process id.
    pub pid: u32,
    /// What the worker can do: [`HELLO_CHANNELS`], [`HELLO_HANDBACK`]; bits this side does not
    /// know are ignored.
    pub flags: u16,
}

/// `WELCOME`: the master accepted the worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Welcome {
    /// The worker's slot, `0..workers`.
    pub worker_id: u32,
    /// The pool size.
    pub workers: u32,
    /// Listener names; a record's `listener` indexes this list. At least one.
    pub listeners: Vec<String>,
}

/// One connection of a `CONNS` message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnRecord {
    /// Sequence number, unique per master.
    pub seq: u64,
    /// The key hash the master routed the connection by.
    pub key_hash: u64,
    /// Accept time, nanoseconds since the Unix epoch.
    pub accepted_ns: u64,
    /// The client's address: the TCP peer, or the source a PROXY header carries.
    pub peer: SocketAddr,
    /// Index of the listener that accepted it (into [`Welcome::listeners`]).
    pub listener: u16,
    /// Bytes of PROXY-protocol header at the start of the stream, to consume before the
    /// application reads (0: none).
    pub proxy_len: u16,
}

/// A decoded message, borrowing the receive buffer.
#[derive(Debug)]
pub enum Message<'a> {
    /// `HELLO`.
    Hello(Hello),
    /// `WELCOME`.
    Welcome(Welcome),
    /// `REFUSED`, with its reason.
    Refused(&'a str),
    /// `CONNS`, with its (validated) records.
    Conns(Records<'a>),
    /// `ACK`, with its sequence numbers.
    Ack(Seqs<'a>),
    /// `DRAIN`.
    Drain,
    /// `CHANNELS`, with the number of fds it carries.
    Channels(u16),
    /// `REHASH`, with its listener indices.
    Rehash(Listeners<'a>),
    /// `HANDBACK`, with the listener index of each connection it carries, in fd order.
    Handback(Listeners<'a>),
    /// `DRAINED`.
    Drained,
}

impl Message<'_> {
    /// The message's type.
    pub fn msg_type(&self) -> MsgType {
        match self {
            Message::Hello(_) => MsgType::Hello,
            Message::Welcome(_) => MsgType::Welcome,
            Message::Refused(_) => MsgType::Refused,
            Message::Conns(_) => MsgType::Conns,
            Message::Ack(_) => MsgType::Ack,
            Message::Drain => MsgType::Drain,
            Message::Channels(_) => MsgType::Channels,
            Message::Rehash(_) => MsgType::Rehash,
            Message::Handback(_) => MsgType::Handback,
            Message::Drained => MsgType::Drained,
        }
    }
}

/// Why a message could not be decoded.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum WireError {
    /// A zero-length message (on the channel that means end of file, not a message).
    #[error("channel message is empty")]
    Empty,
    /// Fewer bytes than a header.
    #[error("channel message of {len} bytes is shorter than the {HEADER_LEN}-byte header")]
    Short {
        /// The message's length.
        len: usize,
    },
    /// A version other than [`VERSION`].
    #[error("channel message has protocol version {0}, this side speaks version {VERSION}")]
    Version(u8),
    /// An unknown type byte.
    #[error("channel message has unknown type {0}")]
    Type(u8),
    /// A header count out of range for the type.
    #[error("{msg} message has count {count}, out of range")]
    Count {
        /// The message's type.
        msg: MsgType,
        /// The count it carried.
        count: u16,
    },
    /// A length that does not match the type and count.
    #[error("{msg} message is {got} bytes long, expected {expected}")]
    Length {
        /// The message's type.
        msg: MsgType,
        /// The length the type and count call for (for `WELCOME`: as far as it could be
        /// parsed).
        expected: usize,
        /// The message's length.
        got: usize,
    },
    /// A `WELCOME` with `workers` 0 or a `worker_id` outside the pool.
    #[error("WELCOME names worker {worker_id} of a pool of {workers}")]
    WorkerId {
        /// The worker id it carried.
        worker_id: u32,
        /// The pool size it carried.
        workers: u32,
    },
    /// A `WELCOME` listener name of length 0.
    #[error("WELCOME listener name {index} is empty")]
    EmptyName {
        /// The name's index.
        index: usize,
    },
    /// A `REFUSED` reason that is empty or longer than [`MAX_REASON`].
    #[error("REFUSED reason is {len} bytes long, expected 1..={MAX_REASON}")]
    ReasonLength {
        /// The reason's length.
        len: usize,
    },
    /// Text that is not UTF-8.
    #[error("{msg} message carries text that is not UTF-8")]
    Utf8 {
        /// The message's type.
        msg: MsgType,
    },
    /// A `CONNS` record with an address family other than 4 or 6.
    #[error("CONNS record {index} has address family {family}, expected 4 or 6")]
    Family {
        /// The record's index.
        index: usize,
        /// The family byte.
        family: u8,
    },
    /// A `CONNS` record with non-zero reserved bytes (the reserved byte, or the padding
    /// after an IPv4 address).
    #[error("CONNS record {index} has non-zero reserved bytes")]
    Reserved {
        /// The record's index.
        index: usize,
    },
}

/// Decodes one message, validating everything, borrowing `buf`.
pub fn decode(buf: &[u8]) -> Result<Message<'_>, WireError> {
    let (header, payload) = match buf.split_first_chunk::<HEADER_LEN>() {
        Some(split) => split,
        None if buf.is_empty() => return Err(WireError::Empty),
        None => return Err(WireError::Short { len: buf.len() }),
    };
    let [version, kind, c0, c1] = *header;
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    let msg = MsgType::from_u8(kind).ok_or(WireError::Type(kind))?;
    let count = u16::from_le_bytes([c0, c1]);
    let counted = usize::from(count);
    let check_count = |ok: bool| {
        if ok {
            Ok(())
        } else {
            Err(WireError::Count { msg, count })
        }
    };
    let check_len = |expected: usize| {
        if buf.len() == expected {
            Ok(())
        } else {
            Err(WireError::Length {
                msg,
                expected,
                got: buf.len(),
            })
        }
    };
    match msg {
        MsgType::Hello => {
            check_len(HELLO_LEN)?;
            Ok(Message::Hello(Hello {
                worker_id: le_u32(payload, 0),
                pid: le_u32(payload, 4),
                flags: count,
            }))
        }
        MsgType::Welcome => decode_welcome(buf, count).map(Message::Welcome),
        MsgType::Refused => {
            check_count(count == 0)?;
            if payload.is_empty() || payload.len() > MAX_REASON {
                return Err(WireError::ReasonLength { len: payload.len() });
            }
            let reason = std::str::from_utf8(payload).map_err(|_| WireError::Utf8 { msg })?;
            Ok(Message::Refused(reason))
        }
        MsgType::Conns => {
            check_count((1..=MAX_CONNS).contains(&counted))?;
            check_len(HEADER_LEN + counted * RECORD_LEN)?;
            let records = Records { bytes: payload };
            for (index, rec) in payload.chunks_exact(RECORD_LEN).enumerate() {
                validate_record(index, rec)?;
            }
            Ok(Message::Conns(records))
        }
        MsgType::Ack => {
            check_count(counted <= MAX_CONNS)?;
            check_len(HEADER_LEN + counted * 8)?;
            Ok(Message::Ack(Seqs { bytes: payload }))
        }
        MsgType::Drain => {
            check_count(count == 0)?;
            check_len(HEADER_LEN)?;
            Ok(Message::Drain)
        }
        MsgType::Drained => {
            check_count(count == 0)?;
            check_len(HEADER_LEN)?;
            Ok(Message::Drained)
        }
        MsgType::Channels => {
            check_count((1..=MAX_CONNS).contains(&counted))?;
            check_len(HEADER_LEN)?;
            Ok(Message::Channels(count))
        }
        MsgType::Rehash => {
            check_count((1..=MAX_REHASH).contains(&counted))?;
            check_len(HEADER_LEN + counted * 2)?;
            Ok(Message::Rehash(Listeners { bytes: payload }))
        }
        MsgType::Handback => {
            check_count((1..=MAX_CONNS).contains(&counted))?;
            check_len(HEADER_LEN + counted * 2)?;
            Ok(Message::Handback(Listeners { bytes: payload }))
        }
    }
}

fn decode_welcome(buf: &[u8], count: u16) -> Result<Welcome, WireError> {
    let msg = MsgType::Welcome;
    if count == 0 {
        return Err(WireError::Count { msg, count });
    }
    let short = |expected: usize| WireError::Length {
        msg,
        expected,
        got: buf.len(),
    };
    let fixed = buf
        .get(HEADER_LEN..WELCOME_FIXED)
        .ok_or(short(WELCOME_FIXED))?;
    let worker_id = le_u32(fixed, 0);
    let workers = le_u32(fixed, 4);
    if worker_id >= workers {
        return Err(WireError::WorkerId { worker_id, workers });
    }
    let mut listeners = Vec::with_capacity(usize::from(count));
    let mut at = WELCOME_FIXED;
    for index in 0..usize::from(count) {
        let len = usize::from(*buf.get(at).ok_or(short(at + 1))?);
        if len == 0 {
            return Err(WireError::EmptyName { index });
        }
        let end = at + 1 + len;
        let name = buf.get(at + 1..end).ok_or(short(end))?;
        let name = std::str::from_utf8(name).map_err(|_| WireError::Utf8 { msg })?;
        listeners.push(name.to_owned());
        at = end;
    }
    if at != buf.len() {
        return Err(short(at));
    }
    Ok(Welcome {
        worker_id,
        workers,
        listeners,
    })
}

fn validate_record(index: usize, rec: &[u8]) -> Result<(), WireError> {
    let family = rec.get(46).copied().unwrap_or(0);
    let reserved = rec.get(47).copied().unwrap_or(0);
    match family {
        4 => {
            let padding = rec.get(28..40).unwrap_or(&[]);
            if padding.iter().any(|&b| b != 0) {
                return Err(WireError::Reserved { index });
            }
        }
        6 => {}
        _ => return Err(WireError::Family { index, family }),
    }
    if reserved != 0 {
        return Err(WireError::Reserved { index });
    }
    Ok(())
}

/// The records of a `CONNS` message (validated by [`decode`]).
#[derive(Clone, Copy)]
pub struct Records<'a> {
    bytes: &'a [u8],
}

impl<'a> Records<'a> {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.bytes.len() / RECORD_LEN
    }

    /// True if there are none (never, for a decoded `CONNS`).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Record `index`, if there is one.
    pub fn get(&self, index: usize) -> Option<ConnRecord> {
        let start = index.checked_mul(RECORD_LEN)?;
        let rec = self.bytes.get(start..start.checked_add(RECORD_LEN)?)?;
        Some(parse_record(rec))
    }

    /// The records, in order.
    pub fn iter(&self) -> RecordIter<'a> {
        RecordIter {
            chunks: self.bytes.chunks_exact(RECORD_LEN),
        }
    }
}

impl fmt::Debug for Records<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for Records<'a> {
    type Item = ConnRecord;
    type IntoIter = RecordIter<'a>;
    fn into_iter(self) -> RecordIter<'a> {
        self.iter()
    }
}

/// Iterator over the records of a `CONNS` message.
#[derive(Clone, Debug)]
pub struct RecordIter<'a> {
    chunks: std::slice::ChunksExact<'a, u8>,
}

impl Iterator for RecordIter<'_> {
    type Item = ConnRecord;
    fn next(&mut self) -> Option<ConnRecord> {
        self.chunks.next().map(parse_record)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.chunks.size_hint()
    }
}

impl ExactSizeIterator for RecordIter<'_> {}

/// Parses a validated 48-byte record.
fn parse_record(rec: &[u8]) -> ConnRecord {
    let mut addr = [0u8; 16];
    if let Some(src) = rec.get(24..40) {
        addr.copy_from_slice(src);
    }
    let port = le_u16(rec, 40);
    let ip = if rec.get(46) == Some(&4) {
        IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(addr))
    };
    let peer = match ip {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V4(v4), port),
        IpAddr::V6(v6) => SocketAddr::V6(SocketAddrV6::new(v6, port, 0, 0)),
    };
    ConnRecord {
        seq: le_u64(rec, 0),
        key_hash: le_u64(rec, 8),
        accepted_ns: le_u64(rec, 16),
        peer,
        listener: le_u16(rec, 42),
        proxy_len: le_u16(rec, 44),
    }
}

/// The sequence numbers of an `ACK` message.
#[derive(Clone, Copy)]
pub struct Seqs<'a> {
    bytes: &'a [u8],
}

/// The listener indices of a `REHASH` or `HANDBACK` message, borrowing the receive buffer.
#[derive(Clone, Copy, Debug)]
pub struct Listeners<'a> {
    bytes: &'a [u8],
}

impl Listeners<'_> {
    /// Number of indices.
    pub fn len(&self) -> usize {
        self.bytes.len() / 2
    }

    /// True if there are none (never, in a valid message).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The indices, in order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.bytes.chunks_exact(2).map(|b| le_u16(b, 0))
    }
}

impl<'a> Seqs<'a> {
    /// Number of sequence numbers.
    pub fn len(&self) -> usize {
        self.bytes.len() / 8
    }

    /// True if the `ACK` names none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sequence number `index`, if there is one.
    pub fn get(&self, index: usize) -> Option<u64> {
        let start = index.checked_mul(8)?;
        self.bytes
            .get(start..start.checked_add(8)?)
            .map(|b| le_u64(b, 0))
    }

    /// The sequence numbers, in order.
    pub fn iter(&self) -> SeqIter<'a> {
        SeqIter {
            chunks: self.bytes.chunks_exact(8),
        }
    }
}

impl fmt::Debug for Seqs<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for Seqs<'a> {
    type Item = u64;
    type IntoIter = SeqIter<'a>;
    fn into_iter(self) -> SeqIter<'a> {
        self.iter()
    }
}

/// Iterator over the sequence numbers of an `ACK` message.
#[derive(Clone, Debug)]
pub struct SeqIter<'a> {
    chunks: std::slice::ChunksExact<'a, u8>,
}

impl Iterator for SeqIter<'_> {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        self.chunks.next().map(|b| le_u64(b, 0))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.chunks.size_hint()
    }
}

impl ExactSizeIterator for SeqIter<'_> {}

fn header(msg: MsgType, count: u16, out: &mut Vec<u8>) {
    out.push(VERSION);
    out.push(msg as u8);
    out.extend_from_slice(&count.to_le_bytes());
}

/// Appends a `HELLO`.
pub fn encode_hello(h: &Hello, out: &mut Vec<u8>) {
    header(MsgType::Hello, h.flags, out);
    out.extend_from_slice(&h.worker_id.to_le_bytes());
    out.extend_from_slice(&h.pid.to_le_bytes());
}

/// Appends a `WELCOME`.
///
/// # Panics
///
/// If `w.listeners` is empty, if a name is empty or longer than [`MAX_NAME`] bytes, if
/// `w.worker_id >= w.workers`, or if the message would exceed [`MAX_MESSAGE`] bytes (255
/// names of 255 bytes fit). These are the caller's configuration errors, not peer input.
pub fn encode_welcome(w: &Welcome, out: &mut Vec<u8>) {
    assert!(
        !w.listeners.is_empty(),
        "WELCOME needs at least one listener name"
    );
    assert!(
        w.worker_id < w.workers,
        "WELCOME worker id {} outside a pool of {}",
        w.worker_id,
        w.workers
    );
    let size = WELCOME_FIXED + w.listeners.iter().map(|n| 1 + n.len()).sum::<usize>();
    assert!(
        size <= MAX_MESSAGE,
        "WELCOME of {size} bytes exceeds MAX_MESSAGE"
    );
    let count = u16::try_from(w.listeners.len()).unwrap_or(u16::MAX);
    header(MsgType::Welcome, count, out);
    out.extend_from_slice(&w.worker_id.to_le_bytes());
    out.extend_from_slice(&w.workers.to_le_bytes());
    for name in &w.listeners {
        let len = u8::try_from(name.len()).ok().filter(|&l| l > 0);
        let len = len.unwrap_or_else(|| panic!("listener name {name:?} must be 1..=255 bytes"));
        out.push(len);
        out.extend_from_slice(name.as_bytes());
    }
}

/// Appends a `REFUSED`. The reason is truncated to [`MAX_REASON`] bytes at a character
/// boundary; an empty reason is sent as `"refused"`, so the message is always valid.
pub fn encode_refused(reason: &str, out: &mut Vec<u8>) {
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = match &reason[..end] {
        "" => "refused",
        r => r,
    };
    header(MsgType::Refused, 0, out);
    out.extend_from_slice(reason.as_bytes());
}

/// Appends a `CONNS` carrying `records` (the fds go in the same `sendmsg`, in this order).
///
/// # Panics
///
/// If `records` is empty or longer than [`MAX_CONNS`].
pub fn encode_conns(records: &[ConnRecord], out: &mut Vec<u8>) {
    assert!(
        (1..=MAX_CONNS).contains(&records.len()),
        "CONNS carries 1..={MAX_CONNS} records, not {}",
        records.len()
    );
    header(MsgType::Conns, records.len() as u16, out);
    for r in records {
        out.extend_from_slice(&r.seq.to_le_bytes());
        out.extend_from_slice(&r.key_hash.to_le_bytes());
        out.extend_from_slice(&r.accepted_ns.to_le_bytes());
        let (addr, family) = match r.peer.ip() {
            IpAddr::V4(v4) => {
                let mut a = [0u8; 16];
                a[..4].copy_from_slice(&v4.octets());
                (a, 4u8)
            }
            IpAddr::V6(v6) => (v6.octets(), 6u8),
        };
        out.extend_from_slice(&addr);
        out.extend_from_slice(&r.peer.port().to_le_bytes());
        out.extend_from_slice(&r.listener.to_le_bytes());
        out.extend_from_slice(&r.proxy_len.to_le_bytes());
        out.push(family);
        out.push(0);
    }
}

/// Appends an `ACK` naming `seqs`.
///
/// # Panics
///
/// If `seqs` is longer than [`MAX_CONNS`].
pub fn encode_ack(seqs: &[u64], out: &mut Vec<u8>) {
    assert!(
        seqs.len() <= MAX_CONNS,
        "ACK names at most {MAX_CONNS} seqs, not {}",
        seqs.len()
    );
    header(MsgType::Ack, seqs.len() as u16, out);
    for seq in seqs {
        out.extend_from_slice(&seq.to_le_bytes());
    }
}

/// Appends a `DRAIN`.
pub fn encode_drain(out: &mut Vec<u8>) {
    header(MsgType::Drain, 0, out);
}

/// Appends a `DRAINED`.
pub fn encode_drained(out: &mut Vec<u8>) {
    header(MsgType::Drained, 0, out);
}

/// Appends a `CHANNELS` announcing `count` channels (the fds go in the same `sendmsg`).
///
/// # Panics
///
/// If `count` is not in `1..=`[`MAX_CONNS`].
pub fn encode_channels(count: usize, out: &mut Vec<u8>) {
    assert!(
        (1..=MAX_CONNS).contains(&count),
        "CHANNELS carries 1..={MAX_CONNS} channels, not {count}"
    );
    header(MsgType::Channels, count as u16, out);
}

/// Appends a `REHASH` naming `listeners`.
///
/// # Panics
///
/// If `listeners` is empty or longer than [`MAX_REHASH`].
pub fn encode_rehash(listeners: &[u16], out: &mut Vec<u8>) {
    assert!(
        (1..=MAX_REHASH).contains(&listeners.len()),
        "REHASH names 1..={MAX_REHASH} listeners, not {}",
        listeners.len()
    );
    listener_list(MsgType::Rehash, listeners, out);
}

/// Appends a `HANDBACK` for connections of `listeners` (their fds go in the same `sendmsg`, in
/// this order).
///
/// # Panics
///
/// If `listeners` is empty or longer than [`MAX_CONNS`].
pub fn encode_handback(listeners: &[u16], out: &mut Vec<u8>) {
    assert!(
        (1..=MAX_CONNS).contains(&listeners.len()),
        "HANDBACK carries 1..={MAX_CONNS} connections, not {}",
        listeners.len()
    );
    listener_list(MsgType::Handback, listeners, out);
}

/// A header counting `listeners`, then each index (`REHASH`, `HANDBACK`; bounds checked by the
/// caller).
fn listener_list(msg: MsgType, listeners: &[u16], out: &mut Vec<u8>) {
    header(msg, listeners.len() as u16, out);
    for l in listeners {
        out.extend_from_slice(&l.to_le_bytes());
    }
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    let mut v = [0u8; 2];
    if let Some(src) = b.get(at..at + 2) {
        v.copy_from_slice(src);
    }
    u16::from_le_bytes(v)
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    if let Some(src) = b.get(at..at + 4) {
        v.copy_from_slice(src);
    }
    u32::from_le_bytes(v)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    if let Some(src) = b.get(at..at + 8) {
        v.copy_from_slice(src);
    }
    u64::from_le_bytes(v)
}
