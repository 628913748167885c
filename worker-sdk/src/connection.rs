//! A received connection: the stream, ready for the application, and its metadata.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::time::{Duration, SystemTime};

use crate::wire::ConnRecord;

/// A connection handed off by the master.
///
/// The stream is in blocking mode and positioned at the first byte of the request (after
/// any PROXY-protocol header, which the SDK has consumed).
#[derive(Debug)]
pub struct Connection {
    /// The client connection.
    pub stream: TcpStream,
    /// What the master knew about it.
    pub meta: Meta,
}

/// Metadata of a [`Connection`].
#[derive(Clone, Debug)]
pub struct Meta {
    /// Sequence number, unique per master.
    pub seq: u64,
    /// Index of the listener that accepted it: see
    /// [`Worker::listener_name`](crate::Worker::listener_name).
    pub listener: u16,
    /// The client's address: the TCP peer, or the source a PROXY header carried.
    pub peer: SocketAddr,
    /// The key hash the master routed it by.
    pub key_hash: u64,
    /// When the master accepted it.
    pub accepted_at: SystemTime,
}

impl From<&ConnRecord> for Meta {
    fn from(rec: &ConnRecord) -> Meta {
        let since_epoch = Duration::from_nanos(rec.accepted_ns);
        Meta {
            seq: rec.seq,
            listener: rec.listener,
            peer: rec.peer,
            key_hash: rec.key_hash,
            accepted_at: SystemTime::UNIX_EPOCH
                .checked_add(since_epoch)
                .unwrap_or(SystemTime::UNIX_EPOCH),
        }
    }
}

impl Connection {
    /// A connection from its record and fd, as a worker receives them: consumes the PROXY
    /// header the record says there is, and puts the stream in blocking mode. For
    /// dispatchers that hand connections over by other means than the channel (threads of
    /// one process).
    pub fn from_parts(rec: ConnRecord, fd: OwnedFd) -> io::Result<Connection> {
        finish(rec, fd)
    }
}

/// Makes the received fd a [`Connection`]: consumes the PROXY header, if any, and puts the
/// stream in blocking mode (`O_NONBLOCK` lives on the open file description the master
/// shares, so the mode is set explicitly either way).
pub(crate) fn finish(rec: ConnRecord, fd: OwnedFd) -> io::Result<Connection> {
    let mut stream = TcpStream::from(fd);
    let context = |what: &str, e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("connection {} from {}: {what}: {e}", rec.seq, rec.peer),
        )
    };
    stream
        .set_nonblocking(false)
        .map_err(|e| context("setting blocking mode", e))?;
    if rec.proxy_len > 0 {
        skip(&mut stream, usize::from(rec.proxy_len))
            .map_err(|e| context("consuming the PROXY header", e))?;
    }
    Ok(Connection {
        stream,
        meta: Meta::from(&rec),
    })
}

/// Reads and discards exactly `len` bytes (already queued: the master peeked them).
fn skip(stream: &mut TcpStream, mut len: usize) -> io::Result<()> {
    let mut scratch = [0u8; 512];
    while len > 0 {
        let want = len.min(scratch.len());
        match stream.read(&mut scratch[..want]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "end of stream",
                ));
            }
            Ok(n) => len -= n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
