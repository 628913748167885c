//! The syscalls of the SDK: the only module with `unsafe`.
//!
//! Raw fd numbers exist here only: received fds become [`OwnedFd`]s before `recv_msg`
//! returns, and the inherited channel becomes one in [`take_inherited`].

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

use crate::wire::MAX_CONNS;

/// Turns a `-1` return into the thread's `errno`.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn check_size(ret: libc::ssize_t) -> io::Result<usize> {
    usize::try_from(ret).map_err(|_| io::Error::last_os_error())
}

/// A `SOCK_SEQPACKET` Unix socket (close-on-exec) connected to `path`.
pub(crate) fn connect_seqpacket(path: &std::path::Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;

    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain old data; all zeroes is a valid (empty) value.
    let mut addr: libc::sockaddr_un = unsafe { mem::zeroed() };
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a Unix socket path must be 1 to 107 bytes, without NUL",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, &src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    // SAFETY: plain socket(2) call; the result is checked and owned at once.
    let fd = check(unsafe {
        libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0)
    })?;
    // SAFETY: socket succeeded: a new fd nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: `addr` is an initialised sockaddr_un; `len` covers its family, the path and the
    // terminating NUL, within the struct.
    check(unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&raw const addr).cast::<libc::sockaddr>(),
            len as libc::socklen_t,
        )
    })?;
    Ok(fd)
}

/// The `SO_TYPE` of a socket (`ENOTSOCK` if it is not one).
pub(crate) fn socket_type(fd: BorrowedFd<'_>) -> io::Result<libc::c_int> {
    let mut ty: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` is a live borrowed fd; `ty` and `len` are valid for writes and `len` holds
    // the size of `ty`, so the kernel writes within it.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&raw mut ty).cast(),
            &mut len,
        )
    })?;
    Ok(ty)
}

/// Why an inherited fd number could not become the channel.
#[derive(Debug)]
pub(crate) enum Inherit {
    /// `fcntl(F_GETFD)` failed: the number names no open fd (or another error).
    NotOpen(io::Error),
    /// `getsockopt(SO_TYPE)` failed (`ENOTSOCK`: not a socket).
    NotSocket(io::Error),
    /// A socket of another type.
    WrongType(libc::c_int),
    /// Setting `FD_CLOEXEC` failed.
    Cloexec(io::Error),
}

/// Takes ownership of the inherited channel fd `raw` after checking that it is an open
/// `SOCK_SEQPACKET` socket, and marks it close-on-exec. On error the fd is left untouched
/// and not owned.
///
/// The caller must call this at most once per inherited fd number (the crate guards this with
/// a process-wide flag), since the returned `OwnedFd` closes it on drop.
pub(crate) fn take_inherited(raw: RawFd) -> Result<OwnedFd, Inherit> {
    // SAFETY: F_GETFD only reads the fd's flags; on a number that is not open it fails with
    // EBADF and touches nothing.
    let flags = check(unsafe { libc::fcntl(raw, libc::F_GETFD) }).map_err(Inherit::NotOpen)?;
    // SAFETY: the fcntl above proved `raw` open, and nothing closes it while this borrow
    // lives (it is used for the two calls below only).
    let borrowed = unsafe { BorrowedFd::borrow_raw(raw) };
    let ty = socket_type(borrowed).map_err(Inherit::NotSocket)?;
    if ty != libc::SOCK_SEQPACKET {
        return Err(Inherit::WrongType(ty));
    }
    // SAFETY: setting FD_CLOEXEC on an open fd changes only its descriptor flags.
    check(unsafe { libc::fcntl(raw, libc::F_SETFD, flags | libc::FD_CLOEXEC) })
        .map_err(Inherit::Cloexec)?;
    // SAFETY: `raw` is open (checked above) and was handed to this process to own via
    // STICKYD_FD; the caller guarantees it is taken once, so this is its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// `send` with `MSG_NOSIGNAL` (EPIPE instead of SIGPIPE), retried on EINTR. If the socket is
/// in non-blocking mode and full, waits until it is writable: callers need the message sent.
pub(crate) fn send(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the whole call.
        let ret = unsafe {
            libc::send(
                fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        match check_size(ret) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_writable(fd)?,
            Err(e) => return Err(e),
        }
    }
}

/// `sendmsg` of `buf` with `fds` (1..=`MAX_CONNS`) in one `SCM_RIGHTS` control message, with
/// `MSG_NOSIGNAL`, retried on EINTR; like [`send`], waits for room if the socket is
/// non-blocking and full. The fds are only borrowed: the kernel takes its own references to
/// their open files, so the caller may close its copies once this returns `Ok`.
pub(crate) fn send_fds(
    fd: BorrowedFd<'_>,
    buf: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    if fds.is_empty() || fds.len() > MAX_CONNS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("one message carries 1..={MAX_CONNS} fds, not {}", fds.len()),
        ));
    }
    let data_len = mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE is a pure size computation on its argument; it touches no memory.
    let space = unsafe { libc::CMSG_SPACE(data_len as libc::c_uint) } as usize;
    let mut cmsg = CmsgBuf([0; 512]);
    if space > cmsg.0.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many fds for the control buffer",
        ));
    }
    let header = libc::cmsghdr {
        // SAFETY: CMSG_LEN is a pure size computation on its argument; it touches no memory.
        cmsg_len: unsafe { libc::CMSG_LEN(data_len as libc::c_uint) } as _,
        cmsg_level: libc::SOL_SOCKET,
        cmsg_type: libc::SCM_RIGHTS,
    };
    let header_ptr = cmsg.0.as_mut_ptr().cast::<libc::cmsghdr>();
    // SAFETY: `cmsg` is aligned for cmsghdr (align(8)) and `space` (checked above to fit in
    // it) covers the header and its payload, so both writes stay within the buffer.
    unsafe {
        ptr::write(header_ptr, header);
        let data = libc::CMSG_DATA(header_ptr).cast::<RawFd>();
        for (i, fd) in fds.iter().enumerate() {
            ptr::write_unaligned(data.add(i), fd.as_raw_fd());
        }
    }
    loop {
        let mut iov = libc::iovec {
            iov_base: buf.as_ptr().cast_mut().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain data; all-zero is a valid empty header, filled in below.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cmsg.0.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: `msg` points at one iovec covering `buf` (only read by sendmsg) and at the
        // control data written above, `space` bytes; both outlive the call, and the fds it
        // names are borrowed, so open, for the whole call.
        let ret = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        match check_size(ret) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_writable(fd)?,
            Err(e) => return Err(e),
        }
    }
}

fn wait_writable(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid pollfd, and the count passed is 1.
    match check(unsafe { libc::poll(&mut pfd, 1, -1) }) {
        Err(e) if e.kind() != io::ErrorKind::Interrupted => Err(e),
        _ => Ok(()),
    }
}

/// What one `recv_msg` got.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Received {
    /// Bytes of the message (0: the peer has gone).
    pub(crate) len: usize,
    /// `MSG_TRUNC`: the message was longer than the buffer.
    pub(crate) truncated: bool,
    /// `MSG_CTRUNC`: some fds were dropped by the kernel.
    pub(crate) fds_truncated: bool,
}

/// Control buffer, aligned for `cmsghdr`, with room for `MAX_CONNS` fds plus one spare
/// slot (so a sender's extra fd shows as a count mismatch rather than only as `MSG_CTRUNC`).
/// Sending uses it too, for up to `MAX_CONNS` fds.
#[repr(C, align(8))]
struct CmsgBuf([u8; 512]);

/// One `recvmsg` into `buf` with `MSG_CMSG_CLOEXEC` (and `MSG_DONTWAIT` if `nonblocking`),
/// retried on EINTR. Every fd received is appended to `fds` as an `OwnedFd` before anything
/// else happens.
pub(crate) fn recv_msg(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    nonblocking: bool,
) -> io::Result<Received> {
    let fd_bytes = (MAX_CONNS + 1) * mem::size_of::<RawFd>();
    // SAFETY: CMSG_SPACE is a pure size computation on its argument; it touches no memory.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as libc::c_uint) } as usize;
    let mut cmsg = CmsgBuf([0; 512]);
    debug_assert!(space <= cmsg.0.len());
    let mut flags = libc::MSG_CMSG_CLOEXEC;
    if nonblocking {
        flags |= libc::MSG_DONTWAIT;
    }
    loop {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain data; all-zero is a valid empty header, filled in below.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cmsg.0.as_mut_ptr().cast();
        msg.msg_controllen = space.min(cmsg.0.len()) as _;
        // SAFETY: `msg` points at one iovec covering `buf` and at `cmsg` with the length
        // given; both outlive the call, and the kernel writes within those lengths.
        let ret = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, flags) };
        let len = match check_size(ret) {
            Ok(len) => len,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        collect_fds(&msg, fds);
        return Ok(Received {
            len,
            truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
            fds_truncated: msg.msg_flags & libc::MSG_CTRUNC != 0,
        });
    }
}

/// Wraps every fd of every `SCM_RIGHTS` message in `msg` in an `OwnedFd`.
fn collect_fds(msg: &libc::msghdr, fds: &mut Vec<OwnedFd>) {
    // SAFETY: `msg` was just filled by recvmsg; its control pointer and (kernel-updated)
    // length describe the initialized control data, which the CMSG_* walk stays within.
    let mut hdr = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !hdr.is_null() {
        // SAFETY: CMSG_FIRSTHDR/CMSG_NXTHDR return null or a header that lies within the
        // control buffer; reading it unaligned is fine for any alignment.
        let h: libc::cmsghdr = unsafe { ptr::read_unaligned(hdr) };
        if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN is a pure size computation on its argument; it touches no memory.
            let header_len = unsafe { libc::CMSG_LEN(0) } as usize;
            let data_len = (h.cmsg_len as usize).saturating_sub(header_len);
            let count = data_len / mem::size_of::<RawFd>();
            // SAFETY: `hdr` is a valid header within the buffer (above); CMSG_DATA points
            // just past it, where its `data_len` bytes of payload lie.
            let data = unsafe { libc::CMSG_DATA(hdr) }.cast::<RawFd>();
            for i in 0..count {
                // SAFETY: `i < count` keeps the read within the payload; unaligned read.
                let raw = unsafe { ptr::read_unaligned(data.add(i)) };
                // SAFETY: the kernel just installed `raw` in this process for this message;
                // nothing else knows the number, so this is its only owner.
                fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
        // SAFETY: `msg` and `hdr` are as above; CMSG_NXTHDR returns the next header within
        // the control length or null.
        hdr = unsafe { libc::CMSG_NXTHDR(msg, hdr) };
    }
}

/// A new epoll instance, close-on-exec.
pub(crate) fn epoll_create() -> io::Result<OwnedFd> {
    // SAFETY: plain epoll_create1(2) call; the result is checked and owned at once.
    let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    // SAFETY: epoll_create1 succeeded: a new fd nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds `fd` to the epoll instance `epoll`, level-triggered, for readability.
pub(crate) fn epoll_add(epoll: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut event = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: fd.as_raw_fd() as u64,
    };
    // SAFETY: both fds are live borrowed fds and `event` is a valid epoll_event the kernel
    // only reads.
    check(unsafe {
        libc::epoll_ctl(
            epoll.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            fd.as_raw_fd(),
            &mut event,
        )
    })?;
    Ok(())
}

/// Removes `fd` from the epoll instance `epoll`.
pub(crate) fn epoll_remove(epoll: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: both fds are live borrowed fds; EPOLL_CTL_DEL ignores the event argument, and a
    // null pointer is accepted for it since Linux 2.6.9.
    check(unsafe {
        libc::epoll_ctl(
            epoll.as_raw_fd(),
            libc::EPOLL_CTL_DEL,
            fd.as_raw_fd(),
            ptr::null_mut(),
        )
    })?;
    Ok(())
}

/// Waits until at least one of `fds` is readable (or has an error or hang-up pending).
/// Returns early, without error, when a signal interrupts the wait.
pub(crate) fn wait_readable(fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `pfds` holds `pfds.len()` valid pollfds the kernel writes `revents` into, and
    // the fds they name are borrowed for the whole call.
    match check(unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, -1) }) {
        Err(e) if e.kind() != io::ErrorKind::Interrupted => Err(e),
        _ => Ok(()),
    }
}
