//! Helpers shared by the integration tests: a fake master over a real
//! `socketpair(AF_UNIX, SOCK_SEQPACKET)`, TCP connections on 127.0.0.1, and child processes
//! that inherit a channel end.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use stickyd_worker::wire::{self, ConnRecord, Hello, Message, Welcome};

/// How long any single wait in a test may take before it fails.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A `SOCK_SEQPACKET` socket pair, both ends close-on-exec: (master, worker).
pub fn seqpacket_pair() -> (OwnedFd, OwnedFd) {
    let mut fds = [-1 as RawFd; 2];
    // SAFETY: `fds` has room for the two fds socketpair writes.
    let ret = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(ret, 0, "socketpair: {}", io::Error::last_os_error());
    // SAFETY: socketpair succeeded, so both numbers are new fds owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// The master's end of a channel.
pub struct Master {
    sock: UnixDatagram,
}

impl Master {
    /// Wraps a master end (reads time out after [`TIMEOUT`]).
    pub fn new(fd: OwnedFd) -> Master {
        let sock = UnixDatagram::from(fd);
        sock.set_read_timeout(Some(TIMEOUT)).unwrap();
        Master { sock }
    }

    /// Sends one message with `fds` in one SCM_RIGHTS control message.
    pub fn send(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        send_with_fds(self.sock.as_fd(), bytes, fds)
    }

    /// Sends a WELCOME.
    pub fn welcome(&self, worker_id: u32, workers: u32, listeners: &[&str]) {
        let mut buf = Vec::new();
        let listeners = listeners.iter().map(|s| s.to_string()).collect();
        wire::encode_welcome(
            &Welcome {
                worker_id,
                workers,
                listeners,
            },
            &mut buf,
        );
        self.send(&buf, &[]).unwrap();
    }

    /// Sends a CONNS with the given records and fds.
    pub fn conns(&self, records: &[ConnRecord], fds: &[BorrowedFd<'_>]) {
        let mut buf = Vec::new();
        wire::encode_conns(records, &mut buf);
        self.send(&buf, fds).unwrap();
    }

    /// Sends `n` fresh loopback connections (seqs `0..n`, each client having written `first`)
    /// in one CONNS; returns the (client, accepted) pairs, which the caller keeps open.
    pub fn conns_of_fresh(&self, n: u64, first: &[u8]) -> Vec<(TcpStream, TcpStream)> {
        self.conns_of_fresh_from(0, n, first)
    }

    /// Like [`conns_of_fresh`](Master::conns_of_fresh), with seqs `seq..seq + n`.
    pub fn conns_of_fresh_from(
        &self,
        seq: u64,
        n: u64,
        first: &[u8],
    ) -> Vec<(TcpStream, TcpStream)> {
        let lst = listener();
        let pairs: Vec<_> = (0..n).map(|_| tcp_pair(&lst, first)).collect();
        let records: Vec<_> = (seq..seq + n)
            .zip(&pairs)
            .map(|(seq, (c, _))| record(seq, c.local_addr().unwrap(), 0, 0))
            .collect();
        let fds: Vec<_> = pairs.iter().map(|(_, a)| a.as_fd()).collect();
        self.conns(&records, &fds);
        pairs
    }

    /// Sends DRAIN and shuts down the sending side.
    pub fn drain(&self) {
        let mut buf = Vec::new();
        wire::encode_drain(&mut buf);
        self.send(&buf, &[]).unwrap();
        self.sock.shutdown(std::net::Shutdown::Write).unwrap();
    }

    /// Shuts down the sending side only: the worker reads to the end, and this side can
    /// still read what the worker sends.
    pub fn shutdown_sending(&self) {
        self.sock.shutdown(std::net::Shutdown::Write).unwrap();
    }

    /// Receives one message, blocking up to [`TIMEOUT`]; empty at end of file.
    pub fn recv(&self) -> Vec<u8> {
        let mut buf = vec![0u8; wire::MAX_MESSAGE];
        let n = self
            .sock
            .recv(&mut buf)
            .expect("master: receiving from the worker");
        buf.truncate(n);
        buf
    }

    /// Receives one message and the fds that came with it, blocking up to [`TIMEOUT`].
    pub fn recv_with_fds(&self) -> (Vec<u8>, Vec<OwnedFd>) {
        recv_with_fds(self.sock.as_fd())
    }

    /// Receives one message if one is queued now.
    pub fn try_recv(&self) -> Option<Vec<u8>> {
        self.sock.set_nonblocking(true).unwrap();
        let mut buf = vec![0u8; wire::MAX_MESSAGE];
        let got = self.sock.recv(&mut buf);
        self.sock.set_nonblocking(false).unwrap();
        match got {
            Ok(n) => {
                buf.truncate(n);
                Some(buf)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) => panic!("master: try_recv: {e}"),
        }
    }

    /// Receives the HELLO and returns (worker_id, pid).
    pub fn hello(&self) -> (u32, u32) {
        let h = self.hello_message();
        (h.worker_id, h.pid)
    }

    /// Receives the HELLO.
    pub fn hello_message(&self) -> Hello {
        let buf = self.recv();
        match wire::decode(&buf).expect("HELLO decodes") {
            Message::Hello(h) => h,
            other => panic!("expected HELLO, got {other:?}"),
        }
    }

    /// Sends a CHANNELS announcing `count` channels, carrying `fds`.
    pub fn channels_message(&self, count: usize, fds: &[BorrowedFd<'_>]) {
        let mut buf = Vec::new();
        wire::encode_channels(count, &mut buf);
        self.send(&buf, fds).unwrap();
    }

    /// Makes `n` extra channels and sends the worker their ends in one CHANNELS (closing this
    /// side's copies of them); returns the master's ends.
    pub fn extra_channels(&self, n: usize) -> Vec<Master> {
        let pairs: Vec<_> = (0..n).map(|_| seqpacket_pair()).collect();
        let fds: Vec<_> = pairs.iter().map(|(_, w)| w.as_fd()).collect();
        self.channels_message(n, &fds);
        pairs.into_iter().map(|(m, _)| Master::new(m)).collect()
    }

    /// Receives an ACK and returns its seqs.
    pub fn ack(&self) -> Vec<u64> {
        let buf = self.recv();
        decode_ack(&buf)
    }
}

/// The seqs of an encoded ACK.
pub fn decode_ack(buf: &[u8]) -> Vec<u64> {
    match wire::decode(buf).expect("ACK decodes") {
        Message::Ack(seqs) => seqs.iter().collect(),
        other => panic!("expected ACK, got {other:?}"),
    }
}

/// sendmsg with one SCM_RIGHTS control message carrying `fds` (none: no control message).
pub fn send_with_fds(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let data_len = std::mem::size_of_val(raw.as_slice());
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(data_len as u32) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut _,
        iov_len: bytes.len(),
    };
    // SAFETY: all-zero is a valid empty msghdr; it is filled in below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !raw.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer is `space` bytes, aligned for cmsghdr (u64 storage), so
        // the first header and its data of `data_len` bytes lie within it.
        unsafe {
            let hdr = libc::CMSG_FIRSTHDR(&msg);
            (*hdr).cmsg_level = libc::SOL_SOCKET;
            (*hdr).cmsg_type = libc::SCM_RIGHTS;
            (*hdr).cmsg_len = libc::CMSG_LEN(data_len as u32) as _;
            std::ptr::copy_nonoverlapping(
                raw.as_ptr(),
                libc::CMSG_DATA(hdr).cast::<RawFd>(),
                raw.len(),
            );
        }
    }
    // SAFETY: `msg` points at `bytes` and `control`, both alive for the call; the fds are
    // borrowed, so they stay open during it.
    let ret = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// recvmsg of one message with MSG_CMSG_CLOEXEC; every fd of its SCM_RIGHTS control messages
/// is owned at once. Panics on an error or truncation.
pub fn recv_with_fds(sock: BorrowedFd<'_>) -> (Vec<u8>, Vec<OwnedFd>) {
    let mut buf = vec![0u8; wire::MAX_MESSAGE];
    let mut control = vec![0u64; 128];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: all-zero is a valid empty msghdr; it is filled in below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(control.as_slice()) as _;
    // SAFETY: `msg` points at `buf` and `control` with their lengths; both outlive the call.
    let ret = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    assert!(ret >= 0, "master: recvmsg: {}", io::Error::last_os_error());
    assert_eq!(
        msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC),
        0,
        "truncated"
    );
    buf.truncate(ret as usize);
    let mut fds = Vec::new();
    // SAFETY: `msg` was just filled by recvmsg; the CMSG_* walk stays within its control data.
    let mut hdr = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !hdr.is_null() {
        // SAFETY: a non-null header from CMSG_FIRSTHDR/CMSG_NXTHDR lies within the buffer.
        let h = unsafe { std::ptr::read_unaligned(hdr) };
        if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN is a pure size computation.
            let data_len = h.cmsg_len as usize - unsafe { libc::CMSG_LEN(0) } as usize;
            // SAFETY: the header is valid (above); its payload follows it.
            let data = unsafe { libc::CMSG_DATA(hdr) }.cast::<RawFd>();
            for i in 0..data_len / std::mem::size_of::<RawFd>() {
                // SAFETY: within the payload; the kernel just installed the fd for this
                // process, so it is owned here only.
                fds.push(unsafe { OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))) });
            }
        }
        // SAFETY: as above; returns the next header within the control length, or null.
        hdr = unsafe { libc::CMSG_NXTHDR(&msg, hdr) };
    }
    (buf, fds)
}

/// A TCP listener on 127.0.0.1, port chosen by the kernel.
pub fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").unwrap()
}

/// A connected (client, accepted) pair; the client writes `first` before the accept returns.
pub fn tcp_pair(listener: &TcpListener, first: &[u8]) -> (TcpStream, TcpStream) {
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    client.write_all(first).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    (client, accepted)
}

/// A record for `seq`, routed from `peer` on `listener`.
pub fn record(seq: u64, peer: SocketAddr, listener: u16, proxy_len: u16) -> ConnRecord {
    ConnRecord {
        seq,
        key_hash: seq.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        accepted_ns: 1_700_000_000_000_000_000 + seq,
        peer,
        listener,
        proxy_len,
    }
}

/// True if the fd has O_NONBLOCK set.
pub fn is_nonblocking(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: F_GETFL only reads the flags of a live borrowed fd.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    assert!(flags >= 0, "F_GETFL: {}", io::Error::last_os_error());
    flags & libc::O_NONBLOCK != 0
}

/// True if the fd has FD_CLOEXEC set.
pub fn is_cloexec(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: F_GETFD only reads the descriptor flags of a live borrowed fd.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
    assert!(flags >= 0, "F_GETFD: {}", io::Error::last_os_error());
    flags & libc::FD_CLOEXEC != 0
}

/// Makes `cmd`'s child inherit `fd` (clears close-on-exec in the child only) and returns its
/// number, for `STICKYD_FD`.
pub fn inherit(cmd: &mut Command, fd: BorrowedFd<'_>) -> RawFd {
    let raw = fd.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and calls only fcntl, which
    // is async-signal-safe; `raw` is open in the child (a copy of the parent's table), and
    // the parent keeps `fd` open until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(raw, libc::F_SETFD, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    raw
}

/// Reads until end of file (bounded by the stream's read timeout).
pub fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    stream.read_to_end(&mut out).unwrap();
    out
}
