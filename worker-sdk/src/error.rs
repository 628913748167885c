//! Errors of [`Worker::from_env`](crate::Worker::from_env) and
//! [`Worker::from_fd`](crate::Worker::from_fd): everything that can go wrong before the
//! master's `WELCOME`.

use std::io;
use std::os::fd::RawFd;

use crate::wire::WireError;

/// Why a worker could not join the master.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A required environment variable is not set.
    #[error("environment variable {name} is not set (is this process started by stickyd?)")]
    MissingEnv {
        /// The variable's name.
        name: &'static str,
    },
    /// An environment variable does not hold what it should.
    #[error("environment variable {name}={value:?} is invalid: expected {expected}")]
    InvalidEnv {
        /// The variable's name.
        name: &'static str,
        /// Its value (lossily decoded).
        value: String,
        /// What it should hold.
        expected: &'static str,
    },
    /// Connecting to the `STICKYD_ATTACH` socket failed.
    #[error("cannot attach to {path}: {source}")]
    Attach {
        /// The socket path.
        path: std::path::PathBuf,
        /// The `connect` error.
        source: io::Error,
    },
    /// `Worker::from_env` already took the inherited channel in this process.
    #[error("the STICKYD_FD channel was already taken by an earlier Worker::from_env()")]
    AlreadyTaken,
    /// The inherited fd number names no open fd.
    #[error("STICKYD_FD={fd} is not an open file descriptor: {source}")]
    NotOpen {
        /// The fd number.
        fd: RawFd,
        /// The `fcntl` error.
        source: io::Error,
    },
    /// The channel is not a `SOCK_SEQPACKET` socket.
    #[error("fd {fd} is not a SOCK_SEQPACKET socket: {detail}")]
    NotSeqpacket {
        /// The fd number.
        fd: RawFd,
        /// What it is instead.
        detail: String,
    },
    /// A system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The error.
        source: io::Error,
    },
    /// The master answered `REFUSED`, with this reason.
    #[error("refused by the master: {0}")]
    Refused(String),
    /// The master sent a message that does not decode.
    #[error("malformed message from the master: {0}")]
    Protocol(#[from] WireError),
    /// The master sent a valid message that does not belong in the handshake.
    #[error("unexpected from the master during the handshake: {0}")]
    Unexpected(String),
    /// The master closed the channel before answering `HELLO`.
    #[error("the master closed the channel before WELCOME")]
    Closed,
}
