//! The syscalls of the epoll backend, each as `io::Result`: the only place it touches libc.
//!
//! Fds come in as [`BorrowedFd`]s, new ones go out as [`OwnedFd`]s; the operations that
//! the loop retries later keep an fd *number* (the caller keeps the fd open until the
//! operation's completion), and turn it back into a [`BorrowedFd`] here, for the one call.
//! Every data-moving call is non-blocking whatever the socket's mode (`MSG_DONTWAIT`), except
//! `accept4`, which has no such flag: listeners are switched to `O_NONBLOCK` when armed.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::ptr;
use std::time::Duration;

use crate::msg::{InMsg, OutMsg};
use crate::sys::{context, cvt};

/// epoll_create1(EPOLL_CLOEXEC).
pub(crate) fn epoll_create() -> io::Result<OwnedFd> {
    // SAFETY: epoll_create1 takes flags and returns a new fd or -1; it touches no memory.
    let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })
        .map_err(|e| context("epoll_create1", e))?;
    // SAFETY: epoll_create1 succeeded: `fd` is a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// epoll_ctl(op, fd) with `events` and `data`; the bare errno on failure (callers match it).
pub(crate) fn epoll_ctl(
    epoll: BorrowedFd<'_>,
    op: libc::c_int,
    fd: RawFd,
    events: u32,
    data: u64,
) -> io::Result<()> {
    let mut event = libc::epoll_event { events, u64: data };
    // SAFETY: `event` is a live epoll_event the kernel only reads (it is ignored for DEL); `fd`
    // is a number the kernel resolves, a closed one is EBADF.
    cvt(unsafe { libc::epoll_ctl(epoll.as_raw_fd(), op, fd, &mut event) })?;
    Ok(())
}

/// epoll_wait into `events` (its whole capacity), for up to `timeout` (None: no limit),
/// rounded up to the next millisecond so a timer is never woken for too early. Returns how
/// many events were written; EINTR is the error, for the caller to treat as a wake-up.
pub(crate) fn epoll_wait(
    epoll: BorrowedFd<'_>,
    events: &mut Vec<libc::epoll_event>,
    timeout: Option<Duration>,
) -> io::Result<usize> {
    let millis = match timeout {
        None => -1,
        Some(t) => {
            let ms = t.as_nanos().div_ceil(1_000_000);
            libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
        }
    };
    events.clear();
    let room = libc::c_int::try_from(events.capacity()).unwrap_or(libc::c_int::MAX);
    // SAFETY: the kernel writes at most `room` events into the vector's spare capacity, which
    // holds `room` of them.
    let n = cvt(unsafe { libc::epoll_wait(epoll.as_raw_fd(), events.as_mut_ptr(), room, millis) })?;
    let n = usize::try_from(n).unwrap_or(0).min(events.capacity());
    // SAFETY: epoll_wait initialised the first n entries.
    unsafe { events.set_len(n) };
    Ok(n)
}

/// Sets `O_NONBLOCK` on `fd` (an open file description flag: every copy of the fd sees it).
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: fcntl F_GETFL on an fd number touches no memory.
    let flags = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    if flags & libc::O_NONBLOCK == 0 {
        // SAFETY: fcntl F_SETFL with an int touches no memory.
        cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    }
    Ok(())
}

/// accept4(SOCK_CLOEXEC) on a non-blocking listener: the connection, owned at once.
pub(crate) fn accept(listener: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: no peer address is asked for (null pointers); accept4 returns a new fd or -1.
    let fd = cvt(unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            ptr::null_mut(),
            ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    })?;
    // SAFETY: accept4 succeeded: `fd` is a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// recv into `buf` from index 0 (cleared first), up to its capacity, with `flags` plus
/// `MSG_DONTWAIT`; `buf`'s length is set to the bytes received.
pub(crate) fn recv(fd: BorrowedFd<'_>, buf: &mut Vec<u8>, flags: i32) -> io::Result<usize> {
    buf.clear();
    // SAFETY: the kernel writes at most `capacity` bytes into the vector's buffer.
    let n = cvt(unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.capacity(),
            flags | libc::MSG_DONTWAIT,
        )
    })?;
    let n = usize::try_from(n).unwrap_or(0).min(buf.capacity());
    // SAFETY: the kernel wrote n <= capacity bytes from the start of the buffer.
    unsafe { buf.set_len(n) };
    Ok(n)
}

/// sendmsg of `msg` with `MSG_NOSIGNAL | MSG_DONTWAIT`: the data bytes sent.
pub(crate) fn send_msg(fd: BorrowedFd<'_>, msg: &mut OutMsg) -> io::Result<usize> {
    let hdr = msg.prepare();
    // SAFETY: `hdr` points into `msg`'s boxed header, which `prepare` has just pointed at the
    // message's own data and control buffers; `msg` is borrowed for the whole call.
    let n = cvt(unsafe {
        libc::sendmsg(fd.as_raw_fd(), hdr, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
    })?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// recvmsg into `msg` (reset first) with `MSG_CMSG_CLOEXEC | MSG_DONTWAIT`: the data bytes
/// received; the fds are owned by `msg` as soon as the call returns.
pub(crate) fn recv_msg(fd: BorrowedFd<'_>, msg: &mut InMsg) -> io::Result<usize> {
    let hdr = msg.prepare();
    // SAFETY: `hdr` points into `msg`'s boxed header, which `prepare` has just pointed at the
    // message's own data and control buffers, sized as the header says; `msg` is borrowed for
    // the whole call.
    let n = cvt(unsafe {
        libc::recvmsg(
            fd.as_raw_fd(),
            hdr,
            libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT,
        )
    })?;
    let n = usize::try_from(n).unwrap_or(0);
    msg.finish(n);
    Ok(msg.data().len())
}

/// close, with its result (dropping an `OwnedFd` ignores it). The number is released whatever
/// the result: Linux frees it even when close reports an error.
pub(crate) fn close(fd: OwnedFd) -> io::Result<()> {
    let raw = fd.into_raw_fd();
    // SAFETY: `raw` was just released from its owner, so this is its one and only close.
    cvt(unsafe { libc::close(raw) })?;
    Ok(())
}

/// The fd number of a pending operation as a borrowed fd, for one syscall.
///
/// # Safety
///
/// `fd` must be open for the duration of the borrow: the caller of the operation keeps it
/// open until the operation's completion (the documented contract of the epoll backend).
pub(crate) unsafe fn borrow(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: the caller guarantees `fd` is open while it is used (see above).
    unsafe { BorrowedFd::borrow_raw(fd) }
}
