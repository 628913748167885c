//! Node's IPC channel, as stickyd speaks it to the workers of `--ipc node`: the lines stickyd
//! writes and what the lines a Node worker writes mean. No I/O here: the master's loop sends
//! and receives, this module encodes and decodes.
//!
//! A Node program started with `NODE_CHANNEL_FD` (an `AF_UNIX` stream socket) and
//! `NODE_CHANNEL_SERIALIZATION_MODE=json` reads and writes one JSON value per line; a handle
//! travels by `SCM_RIGHTS` beside a `{"cmd":"NODE_HANDLE",...}` line, one handle per `sendmsg`
//! (Node's `lib/internal/child_process.js`: each chunk it reads carries at most one handle).
//! With `NODE_UNIQUE_ID` it is a `cluster` worker: it says `{"cmd":"NODE_CLUSTER","act":
//! "online"}` first (before the application's code has run), answers every handle with
//! `NODE_HANDLE_ACK` (or `NODE_HANDLE_NACK` when the fd did not arrive), and exits at once when
//! its channel closes. The `stickyd` npm package says `{"cmd":"NODE_STICKYD","act":"ready"}`
//! when the application first hands it a server (`listen(server, port)`): that is the
//! worker's readiness, so that no connection reaches a worker whose application is not
//! listening yet.
//!
//! What stickyd sends are internal messages (`cmd` starting with `NODE_`): Node gives them to
//! `process.on('internalMessage')`, where the `stickyd` npm package (`worker-sdk/node/`) takes
//! them, and an application's own `process.on('message')` handlers never see them:
//! - `{"cmd":"NODE_STICKYD","act":"welcome","worker":W,"workers":N,"listeners":[{"name":..,
//!   "address":..,"port":..},..]}` once the worker is online;
//! - `{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"cmd":"NODE_STICKYD","act":"conn",
//!   "listener":..,"index":..,"port":..,"seq":..,"address":..,"remotePort":..,"hash":..,
//!   "proxyLen":..}}` with each connection's fd (and `"rehash":true` after `"port"` on the
//!   listeners of `--rehash-per-request`);
//! - `{"cmd":"NODE_STICKYD","act":"drain"}`: the worker finishes and exits (the channel stays
//!   open meanwhile: closing it would end a cluster worker at once);
//! - `NODE_HANDLE_ACK` for each handle a worker sends (`NODE_HANDLE_NACK` when its fd did not
//!   arrive: Node sends it again).
//!
//! A worker gives a kept-alive connection of a `rehash` listener back at a request boundary
//! with `{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"cmd":"NODE_STICKYD","act":
//! "handback","index":I}}` and its fd (`process.send(message, socket)`), I the listener's
//! index.

use std::fmt::Write as _;
use std::net::SocketAddr;

use memchr::memchr;
use serde_json::Value;
use stickyd_worker::wire::ConnRecord;

/// The longest line a worker may write; longer is a protocol violation.
pub const MAX_LINE: usize = 1 << 20;

/// Node's acknowledgement of a handle, exactly as Node writes it (the common case, matched
/// without parsing).
const HANDLE_ACK: &[u8] = br#"{"cmd":"NODE_HANDLE_ACK"}"#;

/// `errno` of the answer to a worker's `server.listen()`: `UV_ENOTSUP`, so the worker's server
/// emits `error` with `listen ENOTSUP`.
const ENOTSUP: i32 = -95;

/// What a Node worker said.
#[derive(Debug, PartialEq)]
pub enum FromNode {
    /// `{"cmd":"NODE_STICKYD","act":"ready"}`: the application listens; the worker is ready.
    Ready,
    /// `{"cmd":"NODE_CLUSTER","act":"online"}`: Node is up (the application may not be).
    Online,
    /// `NODE_HANDLE_ACK`: the oldest handle not yet answered arrived (and is the worker's).
    HandleAck,
    /// `NODE_HANDLE_NACK`: that handle's fd did not arrive (the worker's fd limit).
    HandleNack,
    /// The application called `server.listen()` itself in the worker (`queryServer`).
    QueryServer {
        /// The cluster message number to answer.
        seq: u64,
        /// The port it asked for.
        port: Option<i64>,
        /// The server data to echo back (TLS servers keep ticket keys there).
        data: Value,
    },
    /// Another `cluster` message stickyd has no use for (`listening`, `close`,
    /// `exitedAfterDisconnect`, ...): the action it names.
    Cluster(String),
    /// `process.send(['sticky:masterclose', wait])`: a graceful shutdown of the whole pool.
    MasterClose {
        /// Wait for open connections (stickyd's shutdown always routes what it accepted and
        /// drains the workers).
        wait: bool,
    },
    /// A handle the worker sent (`process.send(msg, handle)`) for a reason of its own: not
    /// taken.
    Handle,
    /// A connection handed back at a request boundary (`--rehash-per-request`), with its fd.
    HandBack {
        /// The listener it came from (`index` in its `conn` line).
        listener: u16,
    },
    /// One of the application's own messages (`process.send(value)`): stickyd does not use
    /// it.
    User,
}

/// A line a Node worker may not write.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not one JSON value.
    #[error("sent a line that is not JSON ({0})")]
    NotJson(String),
    /// An internal message (`cmd` starting with `NODE_`) stickyd does not know.
    #[error("sent an unknown internal message {0:?}")]
    UnknownCmd(String),
    /// A line longer than [`MAX_LINE`].
    #[error("sent a line longer than {MAX_LINE} bytes")]
    TooLong,
}

/// Decodes one line (without its newline).
pub fn decode(line: &[u8]) -> Result<FromNode, DecodeError> {
    if line == HANDLE_ACK {
        return Ok(FromNode::HandleAck);
    }
    let value: Value = serde_json::from_slice(line).map_err(|e| {
        let start = String::from_utf8_lossy(&line[..line.len().min(40)]).into_owned();
        DecodeError::NotJson(format!("{e}; it begins {start:?}"))
    })?;
    let cmd = value.get("cmd").and_then(Value::as_str);
    match cmd {
        Some("NODE_HANDLE_ACK") => Ok(FromNode::HandleAck),
        Some("NODE_HANDLE_NACK") => Ok(FromNode::HandleNack),
        Some("NODE_HANDLE") => {
            let msg = value.get("msg");
            let field = |name| msg.and_then(|m| m.get(name)).and_then(Value::as_str);
            if field("cmd") != Some("NODE_STICKYD") || field("act") != Some("handback") {
                return Ok(FromNode::Handle);
            }
            let index = msg.and_then(|m| m.get("index")).and_then(Value::as_u64);
            match index.and_then(|i| u16::try_from(i).ok()) {
                Some(listener) => Ok(FromNode::HandBack { listener }),
                None => Err(DecodeError::UnknownCmd(
                    "NODE_STICKYD handback without a listener index".to_owned(),
                )),
            }
        }
        Some("NODE_STICKYD") => match value.get("act").and_then(Value::as_str) {
            Some("ready") => Ok(FromNode::Ready),
            other => Err(DecodeError::UnknownCmd(format!(
                "NODE_STICKYD {}",
                other.unwrap_or("(no act)")
            ))),
        },
        Some("NODE_CLUSTER") => {
            let act = value.get("act").and_then(Value::as_str).unwrap_or("");
            match act {
                "online" => Ok(FromNode::Online),
                "queryServer" => Ok(FromNode::QueryServer {
                    seq: value.get("seq").and_then(Value::as_u64).unwrap_or(0),
                    port: value.get("port").and_then(Value::as_i64),
                    data: value.get("data").cloned().unwrap_or(Value::Null),
                }),
                other => Ok(FromNode::Cluster(other.to_owned())),
            }
        }
        Some(internal) if internal.starts_with("NODE_") => {
            Err(DecodeError::UnknownCmd(internal.to_owned()))
        }
        _ => match value.as_array().map(Vec::as_slice) {
            Some([Value::String(what), rest @ ..]) if what == "sticky:masterclose" => {
                Ok(FromNode::MasterClose {
                    wait: rest.first().is_some_and(|w| w.as_bool() == Some(true)),
                })
            }
            _ => Ok(FromNode::User),
        },
    }
}

/// The lines of a stream: bytes in as they arrive, whole lines out.
#[derive(Debug, Default)]
pub struct Lines {
    buf: Vec<u8>,
    /// Where the next line starts in `buf`.
    start: usize,
}

impl Lines {
    /// Appends what was received.
    pub fn push(&mut self, data: &[u8]) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next whole line, decoded; `None` until one is complete. A line over [`MAX_LINE`]
    /// is an error as soon as that many bytes have come without a newline.
    pub fn next_message(&mut self) -> Option<Result<FromNode, DecodeError>> {
        let pending = &self.buf[self.start..];
        let Some(end) = memchr(b'\n', pending) else {
            return (pending.len() > MAX_LINE).then_some(Err(DecodeError::TooLong));
        };
        let line = &pending[..end];
        self.start += end + 1;
        if line.len() > MAX_LINE {
            return Some(Err(DecodeError::TooLong));
        }
        Some(decode(line))
    }
}

/// A listener as a Node worker sees it.
#[derive(Clone, Debug)]
pub struct ListenerInfo {
    /// Its name (`l0`, or the one given).
    pub name: String,
    /// The address it is bound to, with the real port.
    pub addr: SocketAddr,
    /// Its kept-alive connections come back at each request boundary
    /// (`--rehash-per-request`).
    pub rehash: bool,
}

/// The encoder of one master's lines: the part of each connection's line that depends only on
/// its listener, made once.
#[derive(Debug)]
pub struct Encoder {
    listeners: Vec<ListenerInfo>,
    /// Per listener: the connection line up to its per-connection fields.
    conn_prefix: Vec<String>,
}

impl Encoder {
    /// The encoder for these listeners (in their index order).
    pub fn new(listeners: Vec<ListenerInfo>) -> Encoder {
        let conn_prefix = listeners
            .iter()
            .enumerate()
            .map(|(i, l)| {
                format!(
                    r#"{{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{{"cmd":"NODE_STICKYD","act":"conn","listener":{},"index":{i},"port":{},{}"#,
                    json_string(&l.name),
                    l.addr.port(),
                    if l.rehash { r#""rehash":true,"# } else { "" }
                )
            })
            .collect();
        Encoder {
            listeners,
            conn_prefix,
        }
    }

    /// The line that goes with connection `rec`'s fd.
    pub fn conn(&self, rec: &ConnRecord, out: &mut Vec<u8>) {
        let prefix = self
            .conn_prefix
            .get(usize::from(rec.listener))
            .map_or("", String::as_str);
        out.extend_from_slice(prefix.as_bytes());
        write_fields(rec, out);
    }

    /// The welcome: which slot this is, how many there are, the listeners.
    pub fn welcome(&self, worker: u32, workers: u32, out: &mut Vec<u8>) {
        let mut line = format!(
            r#"{{"cmd":"NODE_STICKYD","act":"welcome","worker":{worker},"workers":{workers},"listeners":["#
        );
        for (i, l) in self.listeners.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            let _ = write!(
                line,
                r#"{{"name":{},"address":"{}","port":{}}}"#,
                json_string(&l.name),
                l.addr.ip(),
                l.addr.port()
            );
        }
        line.push_str("]}\n");
        out.extend_from_slice(line.as_bytes());
    }
}

/// The per-connection fields (numbers and an IP address: nothing to escape), and the end of
/// the line, written into `out` without an allocation of their own.
fn write_fields(rec: &ConnRecord, out: &mut Vec<u8>) {
    use std::io::Write as _;
    // Writing to a Vec cannot fail.
    let _ = writeln!(
        out,
        r#""seq":{},"address":"{}","remotePort":{},"hash":"{:016x}","proxyLen":{}}}}}"#,
        rec.seq,
        rec.peer.ip(),
        rec.peer.port(),
        rec.key_hash,
        rec.proxy_len
    );
}

/// The answer to a handle the worker sent: `NODE_HANDLE_ACK` when its fd arrived (Node then
/// closes its copy), `NODE_HANDLE_NACK` when it did not (Node sends it again).
pub fn handle_answer(arrived: bool) -> Vec<u8> {
    let mut line = if arrived {
        HANDLE_ACK.to_vec()
    } else {
        br#"{"cmd":"NODE_HANDLE_NACK"}"#.to_vec()
    };
    line.push(b'\n');
    line
}

/// `{"cmd":"NODE_STICKYD","act":"drain"}`: finish and exit.
pub fn drain(out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"cmd\":\"NODE_STICKYD\",\"act\":\"drain\"}\n");
}

/// `{"cmd":"NODE_STICKYD","act":"refused","reason":..}`.
pub fn refused(reason: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(
        format!(
            "{{\"cmd\":\"NODE_STICKYD\",\"act\":\"refused\",\"reason\":{}}}\n",
            json_string(reason)
        )
        .as_bytes(),
    );
}

/// The answer to a worker's `queryServer` (its own `server.listen()`): refused with `ENOTSUP`,
/// echoing the server data Node expects back.
pub fn refuse_listen(seq: u64, data: &Value) -> Vec<u8> {
    let mut line = format!(
        r#"{{"cmd":"NODE_CLUSTER","ack":{seq},"errno":{ENOTSUP},"data":{}}}"#,
        serde_json::to_string(data).unwrap_or_else(|_| "null".to_owned())
    );
    line.push('\n');
    line.into_bytes()
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(listener: u16) -> ConnRecord {
        ConnRecord {
            seq: 7,
            key_hash: 0xdead_beef,
            accepted_ns: 1,
            peer: "192.0.2.9:5678".parse().unwrap(),
            listener,
            proxy_len: 0,
        }
    }

    #[test]
    fn a_connection_line_is_one_json_line_node_reads_as_a_handle() {
        let enc = Encoder::new(vec![
            ListenerInfo {
                name: "l0".into(),
                addr: "127.0.0.1:3000".parse().unwrap(),
                rehash: false,
            },
            ListenerInfo {
                name: "api".into(),
                addr: "[::1]:3001".parse().unwrap(),
                rehash: true,
            },
        ]);
        let mut out = Vec::new();
        enc.conn(&rec(1), &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["cmd"], "NODE_HANDLE");
        assert_eq!(v["type"], "net.Socket");
        let msg = &v["msg"];
        assert_eq!(msg["cmd"], "NODE_STICKYD");
        assert_eq!(msg["act"], "conn");
        assert_eq!(msg["listener"], "api");
        assert_eq!(msg["index"], 1);
        assert_eq!(msg["port"], 3001);
        assert_eq!(msg["seq"], 7);
        assert_eq!(msg["address"], "192.0.2.9");
        assert_eq!(msg["remotePort"], 5678);
        assert_eq!(msg["hash"], "00000000deadbeef");
        assert_eq!(msg["proxyLen"], 0);
        assert_eq!(msg["rehash"], true);
        let mut out = Vec::new();
        enc.conn(&rec(0), &mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["msg"].get("rehash"), None);

        let mut out = Vec::new();
        enc.welcome(2, 4, &mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["act"], "welcome");
        assert_eq!(v["worker"], 2);
        assert_eq!(v["workers"], 4);
        assert_eq!(v["listeners"][1]["address"], "::1");
        assert_eq!(v["listeners"][0]["port"], 3000);
    }

    #[test]
    fn handles_a_worker_sends_and_their_answers() {
        let back = br#"{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"cmd":"NODE_STICKYD","act":"handback","index":1},"key":"x"}"#;
        assert_eq!(decode(back), Ok(FromNode::HandBack { listener: 1 }));
        let own = br#"{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"app":"mine"}}"#;
        assert_eq!(decode(own), Ok(FromNode::Handle));
        for index in ["", r#","index":-1"#, r#","index":65536"#, r#","index":"1""#] {
            let line = format!(
                r#"{{"cmd":"NODE_HANDLE","msg":{{"cmd":"NODE_STICKYD","act":"handback"{index}}}}}"#
            );
            assert!(decode(line.as_bytes()).is_err(), "{line}");
        }
        assert_eq!(handle_answer(true), b"{\"cmd\":\"NODE_HANDLE_ACK\"}\n");
        assert_eq!(handle_answer(false), b"{\"cmd\":\"NODE_HANDLE_NACK\"}\n");
    }

    #[test]
    fn what_node_workers_say_is_decoded() {
        assert_eq!(decode(HANDLE_ACK), Ok(FromNode::HandleAck));
        assert_eq!(
            decode(br#"{"cmd":"NODE_HANDLE_ACK" }"#),
            Ok(FromNode::HandleAck)
        );
        assert_eq!(
            decode(br#"{"cmd":"NODE_HANDLE_NACK"}"#),
            Ok(FromNode::HandleNack)
        );
        assert_eq!(
            decode(br#"{"cmd":"NODE_CLUSTER","act":"online","seq":0}"#),
            Ok(FromNode::Online)
        );
        assert_eq!(
            decode(br#"{"cmd":"NODE_STICKYD","act":"ready"}"#),
            Ok(FromNode::Ready)
        );
        assert!(matches!(
            decode(br#"{"cmd":"NODE_STICKYD","act":"conn"}"#),
            Err(DecodeError::UnknownCmd(_))
        ));
        assert_eq!(
            decode(br#"{"cmd":"NODE_CLUSTER","act":"listening","seq":2}"#),
            Ok(FromNode::Cluster("listening".into()))
        );
        assert_eq!(
            decode(br#"["sticky:masterclose",true]"#),
            Ok(FromNode::MasterClose { wait: true })
        );
        assert_eq!(
            decode(br#"["sticky:masterclose"]"#),
            Ok(FromNode::MasterClose { wait: false })
        );
        assert_eq!(decode(br#"{"cmd":"notifyRequest"}"#), Ok(FromNode::User));
        assert_eq!(decode(b"42"), Ok(FromNode::User));
        assert_eq!(
            decode(br#"{"cmd":"NODE_BOGUS"}"#),
            Err(DecodeError::UnknownCmd("NODE_BOGUS".into()))
        );
        assert!(matches!(decode(b"garbage"), Err(DecodeError::NotJson(_))));
        match decode(
            br#"{"cmd":"NODE_CLUSTER","act":"queryServer","seq":3,"port":3000,"data":null}"#,
        ) {
            Ok(FromNode::QueryServer { seq, port, data }) => {
                assert_eq!((seq, port, data), (3, Some(3000), Value::Null));
                let answer = refuse_listen(seq, &Value::Null);
                let v: Value = serde_json::from_slice(&answer).unwrap();
                assert_eq!(v["ack"], 3);
                assert_eq!(v["errno"], ENOTSUP);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lines_are_cut_at_newlines_whatever_the_reads() {
        let stream = b"{\"cmd\":\"NODE_CLUSTER\",\"act\":\"online\",\"seq\":0}\n{\"cmd\":\"NODE_HANDLE_ACK\"}\n{\"cmd\":\"NODE_HANDLE_NACK\"}\n";
        for cut in 1..stream.len() {
            let mut lines = Lines::default();
            let mut got = Vec::new();
            for chunk in stream.chunks(cut) {
                lines.push(chunk);
                while let Some(m) = lines.next_message() {
                    got.push(m.unwrap());
                }
            }
            assert_eq!(
                got,
                [FromNode::Online, FromNode::HandleAck, FromNode::HandleNack],
                "reads of {cut} bytes"
            );
        }
    }

    #[test]
    fn a_line_that_never_ends_is_refused_before_it_is_whole() {
        let mut lines = Lines::default();
        let chunk = vec![b'x'; 64 * 1024];
        let mut refused = false;
        for _ in 0..(MAX_LINE / chunk.len() + 2) {
            lines.push(&chunk);
            if let Some(Err(DecodeError::TooLong)) = lines.next_message() {
                refused = true;
                break;
            }
        }
        assert!(refused);
    }
}
