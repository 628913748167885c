//! The small synchronous syscalls the master's event loop needs beside the ring.
//!
//! Every call goes through one helper (`cvt`), which turns the C convention (-1 and errno) into
//! `io::Result`; new fds are wrapped in [`OwnedFd`] on the line that receives them.
//!
//! Errors of the calls whose errno a caller acts on ([`pidfd_open`]: ESRCH, [`kill`]: EPERM,
//! [`try_wait`]: ECHILD, [`read_signal`], [`socket_kind`]: ENOTSOCK) are the bare errno, so
//! `raw_os_error()` works; the setup calls name the failed syscall in the message and keep the
//! error's kind.

use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::ptr;

/// Return values that signal failure with -1 and errno.
pub(crate) trait MinusOne: Copy + PartialEq {
    const MINUS_ONE: Self;
}

impl MinusOne for i32 {
    const MINUS_ONE: i32 = -1;
}

impl MinusOne for i64 {
    const MINUS_ONE: i64 = -1;
}

impl MinusOne for isize {
    const MINUS_ONE: isize = -1;
}

/// A syscall's return value as `io::Result`: -1 becomes the thread's errno.
pub(crate) fn cvt<T: MinusOne>(res: T) -> io::Result<T> {
    if res == T::MINUS_ONE {
        Err(io::Error::last_os_error())
    } else {
        Ok(res)
    }
}

/// `e` with `what` in front of its message, keeping its kind.
pub(crate) fn context(what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// A pid as the kernel's `pid_t`; pids above `i32::MAX` do not exist.
fn pid_t(pid: u32) -> io::Result<libc::pid_t> {
    libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// setsockopt(SOL_SOCKET, SO_RCVLOWAT, bytes): poll reports a TCP socket readable only once
/// `bytes` bytes are queued (or at end of file).
pub fn set_rcvlowat(fd: BorrowedFd<'_>, bytes: u32) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: `value` is a live c_int and the length passed is its size.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            ptr::from_ref(&value).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map_err(|e| context("setsockopt(SO_RCVLOWAT)", e))?;
    Ok(())
}

/// pidfd_open(pid, 0): an fd (close-on-exec, as the kernel gives it) that becomes readable
/// (POLLIN) when the process has exited.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = pid_t(pid)?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = cvt(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("pidfd_open: fd out of range"))?;
    // SAFETY: the syscall succeeded, so `fd` is a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Blocks `signals` in the calling thread (pthread_sigmask SIG_BLOCK) and returns a signalfd
/// (SFD_CLOEXEC | SFD_NONBLOCK) for them.
///
/// The mask is per thread: call it on the thread that reads the signalfd, before other
/// threads are spawned (they inherit the mask), or process-directed signals may be delivered
/// to a thread that has them unblocked.
pub fn signalfd(signals: &[i32]) -> io::Result<OwnedFd> {
    let set = block_signals(signals)?;
    // SAFETY: -1 asks for a new signalfd for the initialised `set`.
    let fd = cvt(unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) })
        .map_err(|e| context("signalfd", e))?;
    // SAFETY: signalfd succeeded, so `fd` is a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Blocks `signals` in the calling thread (threads it spawns afterwards inherit the mask), so
/// that they wait for a signalfd instead of taking their default action; returns the set.
pub fn block_signals(signals: &[i32]) -> io::Result<libc::sigset_t> {
    let mut set = mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set it points at.
    cvt(unsafe { libc::sigemptyset(set.as_mut_ptr()) })?;
    // SAFETY: initialised by sigemptyset just above.
    let mut set = unsafe { set.assume_init() };
    for &signal in signals {
        // SAFETY: `set` is an initialised sigset_t; an invalid signal number is EINVAL.
        cvt(unsafe { libc::sigaddset(&mut set, signal) })
            .map_err(|e| context(&format!("sigaddset({signal})"), e))?;
    }
    // SAFETY: `set` is initialised; the old mask is not asked for (null).
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, ptr::null_mut()) };
    if rc != 0 {
        return Err(context("pthread_sigmask", io::Error::from_raw_os_error(rc)));
    }
    Ok(set)
}

/// Reads one pending signal number from a signalfd (non-blocking); Ok(None) on EAGAIN.
pub fn read_signal(fd: BorrowedFd<'_>) -> io::Result<Option<i32>> {
    let mut info = [0u8; mem::size_of::<libc::signalfd_siginfo>()];
    // SAFETY: `info` is a writable buffer of exactly the length passed.
    let read = cvt(unsafe { libc::read(fd.as_raw_fd(), info.as_mut_ptr().cast(), info.len()) });
    let read = match read {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
        Err(e) => return Err(e),
    };
    if read.unsigned_abs() != info.len() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("read(signalfd): short read of {read} bytes"),
        ));
    }
    // ssi_signo is the first field, a u32 in native byte order.
    let [a, b, c, d, ..] = info;
    let signo = u32::from_ne_bytes([a, b, c, d]);
    Ok(Some(i32::try_from(signo).unwrap_or(i32::MAX)))
}

/// shutdown(fd, SHUT_WR)
pub fn shutdown_write(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: shutdown takes an fd number and a constant; it touches no memory of ours.
    cvt(unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_WR) })
        .map_err(|e| context("shutdown(SHUT_WR)", e))?;
    Ok(())
}

/// shutdown(fd, SHUT_RDWR): both directions end; a receive pending on our side returns end of
/// file, and the peer reads end of file.
pub fn shutdown_both(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: shutdown takes an fd number and a constant; it touches no memory of ours.
    cvt(unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RDWR) })
        .map_err(|e| context("shutdown(SHUT_RDWR)", e))?;
    Ok(())
}

/// listen(fd, backlog): on a socket that is already listening (as a bound
/// `std::net::TcpListener` is), sets a new backlog; the kernel caps it at `net.core.somaxconn`.
pub fn listen(fd: BorrowedFd<'_>, backlog: i32) -> io::Result<()> {
    // SAFETY: listen takes an fd number and an int; it touches no memory of ours.
    cvt(unsafe { libc::listen(fd.as_raw_fd(), backlog) })
        .map_err(|e| context(&format!("listen(backlog {backlog})"), e))?;
    Ok(())
}

/// setsockopt(IPPROTO_TCP, TCP_DEFER_ACCEPT, seconds) on a listening socket: the kernel
/// completes the accept of a connection only once its first bytes have arrived (or, after
/// about `seconds`, without them), so a dispatcher that must read the client's first bytes
/// finds them there instead of waiting for them.
pub fn set_defer_accept(fd: BorrowedFd<'_>, seconds: u32) -> io::Result<()> {
    let value = libc::c_int::try_from(seconds).unwrap_or(libc::c_int::MAX);
    // SAFETY: `value` is a live c_int and the length passed is its size.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            ptr::from_ref(&value).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map_err(|e| context("setsockopt(TCP_DEFER_ACCEPT)", e))?;
    Ok(())
}

/// How many connections wait in a TCP listening socket's accept queue (`TCP_INFO`'s
/// `tcpi_unacked`, which a listening socket fills with its accept backlog).
pub fn accept_queue_len(fd: BorrowedFd<'_>) -> io::Result<u32> {
    // SAFETY: tcp_info is plain data, valid zeroed.
    let mut info: libc::tcp_info = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is a live tcp_info and `len` its size; the kernel writes at most `len`
    // bytes and says how many in `len`.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            ptr::from_mut(&mut info).cast(),
            &mut len,
        )
    })
    .map_err(|e| context("getsockopt(TCP_INFO)", e))?;
    Ok(info.tcpi_unacked)
}

/// recvmsg into `msg` (reset first) now, without waiting (`MSG_CMSG_CLOEXEC | MSG_DONTWAIT`):
/// the data bytes received (0: the peer has gone), `WouldBlock` when nothing is queued; the fds
/// are owned by `msg`. For reading what else is queued on a socket after a completion, in the
/// same round.
pub fn recv_msg_now(fd: BorrowedFd<'_>, msg: &mut crate::InMsg) -> io::Result<usize> {
    crate::epoll::sys::recv_msg(fd, msg)
}

/// socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC) as two OwnedFds.
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    socket_pair(libc::SOCK_SEQPACKET, "socketpair(AF_UNIX, SOCK_SEQPACKET)")
}

/// A connected pair of `AF_UNIX` `SOCK_STREAM` sockets, both close-on-exec (Node's IPC channel
/// is one).
pub fn stream_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    socket_pair(libc::SOCK_STREAM, "socketpair(AF_UNIX, SOCK_STREAM)")
}

fn socket_pair(kind: i32, what: &'static str) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: `fds` has room for the two fds socketpair writes.
    cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            kind | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })
    .map_err(|e| context(what, e))?;
    let [a, b] = fds;
    // SAFETY: socketpair succeeded: both are new fds that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(a), OwnedFd::from_raw_fd(b)) })
}

/// A listening `SOCK_SEQPACKET` Unix socket bound at `path`, created with file mode `mode`
/// (the umask is not consulted: the socket is bound under a umask that leaves exactly `mode`,
/// then its mode is set again, so no other mode is ever visible). A socket file left at
/// `path` by an earlier run is replaced; any other kind of file is an error.
///
/// The umask is process-wide: call this before other threads create files.
pub fn seqpacket_listener(path: &std::path::Path, mode: u32, backlog: i32) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain old data; all zeroes is a valid (empty) value.
    let mut addr: libc::sockaddr_un = unsafe { mem::zeroed() };
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{}: a Unix socket path must be 1 to {} bytes, without NUL",
                path.display(),
                addr.sun_path.len() - 1
            ),
        ));
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)
            .map_err(|e| context(&format!("removing the old socket {}", path.display()), e))?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(context(&path.display().to_string(), e)),
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, &src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    // SAFETY: plain socket(2) call; the result is checked and wrapped at once.
    let fd =
        cvt(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) })
            .map_err(|e| context("socket(AF_UNIX, SOCK_SEQPACKET)", e))?;
    // SAFETY: socket succeeded: a new fd nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: umask only swaps the process's file creation mask; the old one is restored below.
    let old = unsafe { libc::umask(!mode & 0o777) };
    // SAFETY: `addr` is an initialised sockaddr_un and `len` covers its family, the path and
    // its terminating NUL, within the struct.
    let bound = cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast::<libc::sockaddr>(),
            len as libc::socklen_t,
        )
    });
    // SAFETY: as above: restores the mask saved before bind.
    unsafe { libc::umask(old) };
    bound.map_err(|e| context(&format!("bind({})", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| context(&format!("chmod({})", path.display()), e))?;
    listen(fd.as_fd(), backlog)?;
    Ok(fd)
}

/// The credentials of a connected Unix socket's peer (`SO_PEERCRED`): pid, uid, gid, as they
/// were when it connected.
pub fn peer_credentials(fd: BorrowedFd<'_>) -> io::Result<(u32, u32, u32)> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a live ucred and `len` its size, as SO_PEERCRED writes.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    })
    .map_err(|e| context("getsockopt(SO_PEERCRED)", e))?;
    Ok((u32::try_from(cred.pid).unwrap_or(0), cred.uid, cred.gid))
}

/// The process's effective uid.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// One message on a `SOCK_SEQPACKET` socket, without waiting (`MSG_DONTWAIT | MSG_NOSIGNAL`).
pub fn send_now(fd: BorrowedFd<'_>, data: &[u8]) -> io::Result<usize> {
    // SAFETY: `data` is a live buffer of the length passed.
    let sent = cvt(unsafe {
        libc::send(
            fd.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    })?;
    Ok(sent as usize)
}

/// A non-blocking, close-on-exec eventfd: one thread wakes another's ring by writing to it.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes an initial value and flags; the result is checked and owned at once.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })
        .map_err(|e| context("eventfd", e))?;
    // SAFETY: eventfd succeeded: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd's counter, making it readable.
pub fn eventfd_wake(fd: BorrowedFd<'_>) -> io::Result<()> {
    let one: u64 = 1;
    // SAFETY: writes the 8 bytes of a live u64, as eventfd requires.
    match cvt(unsafe { libc::write(fd.as_raw_fd(), (&raw const one).cast(), 8) }) {
        Ok(_) => Ok(()),
        // The counter is at its maximum: it is readable anyway.
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(context("write(eventfd)", e)),
    }
}

/// Resets an eventfd's counter (it is no longer readable); fine if it was not set.
pub fn eventfd_clear(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut value: u64 = 0;
    // SAFETY: reads at most 8 bytes into a live u64, as eventfd requires.
    match cvt(unsafe { libc::read(fd.as_raw_fd(), (&raw mut value).cast(), 8) }) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(context("read(eventfd)", e)),
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
///
/// An unlimited hard limit is read as the kernel's `fs.nr_open`, the most a process may have.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a writable rlimit.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) })
        .map_err(|e| context("getrlimit(RLIMIT_NOFILE)", e))?;
    let mut target = limit.rlim_max;
    if target == libc::RLIM_INFINITY {
        target = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1 << 20);
    }
    if limit.rlim_cur >= target {
        return Ok(limit.rlim_cur);
    }
    limit.rlim_cur = target;
    // SAFETY: `limit` is an initialised rlimit.
    cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) })
        .map_err(|e| context("setrlimit(RLIMIT_NOFILE)", e))?;
    Ok(limit.rlim_cur)
}

/// Marks every fd from `first` on close-on-exec (close_range with CLOSE_RANGE_CLOEXEC, Linux
/// 5.11+), so that fds the process inherited from whatever started it do not leak into the
/// children it spawns. Falls back to fcntl on each fd listed in /proc/self/fd.
pub fn close_on_exec_from(first: u32) -> io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes fd flags; it touches no memory
    // and closes nothing.
    let res = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if cvt(res).is_ok() {
        return Ok(());
    }
    let dir = std::fs::read_dir("/proc/self/fd").map_err(|e| context("/proc/self/fd", e))?;
    for entry in dir.flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<libc::c_int>() else {
            continue;
        };
        if u32::try_from(fd).is_ok_and(|n| n >= first) {
            // SAFETY: fcntl F_GETFD/F_SETFD on an fd number touches no memory; a number that
            // was closed meanwhile (the directory's own fd) fails with EBADF, ignored.
            unsafe {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags >= 0 {
                    libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
                }
            }
        }
    }
    Ok(())
}

/// In a child between fork and exec: clears FD_CLOEXEC on `fds` (so exec keeps them) and
/// unblocks every signal. Async-signal-safe: fcntl, sigemptyset and pthread_sigmask only, no
/// allocation.
fn inherit_and_unblock(fds: &[i32]) -> io::Result<()> {
    for &fd in fds {
        // SAFETY: fcntl on an fd number with F_GETFD touches no memory.
        let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
        // SAFETY: fcntl on an fd number with F_SETFD and an int touches no memory.
        cvt(unsafe { libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) })?;
    }
    // SAFETY: `set` is a local sigset_t that sigemptyset initialises before pthread_sigmask
    // reads it; both are async-signal-safe.
    unsafe {
        let mut set: libc::sigset_t = mem::zeroed();
        libc::sigemptyset(&mut set);
        let rc = libc::pthread_sigmask(libc::SIG_SETMASK, &set, ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
    }
    Ok(())
}

/// Prepares `cmd` for a worker child.
///
/// In the child, between fork and exec (async-signal-safe calls only): unblocks every signal
/// (the master blocks the ones it reads from a signalfd, and `Command` keeps the mask); clears
/// FD_CLOEXEC on
/// `inherit`, so the child gets exactly that one extra fd provided every other fd of the
/// process is close-on-exec; sets PR_SET_PDEATHSIG to SIGKILL; then checks getppid() against
/// the pid captured here, and if the parent has already died, fails the exec so `spawn`
/// returns an error (ESRCH). The child is put in its own process group, so a terminal's Ctrl-C
/// reaches only the master.
///
/// The caller keeps `inherit` open until `spawn` returns. The parent-death signal fires when
/// the *thread* that forked exits: spawn workers from the main thread.
pub fn prepare_worker_command(cmd: &mut Command, inherit: BorrowedFd<'_>) {
    let fd = inherit.as_raw_fd();
    let parent = std::process::id();
    cmd.process_group(0);
    let child_setup = move || -> io::Result<()> {
        // The master blocks the signals it reads from a signalfd; a blocked mask survives
        // exec, and a worker must get SIGTERM.
        inherit_and_unblock(&[fd])?;
        let sigkill = libc::c_ulong::try_from(libc::SIGKILL).unwrap_or(9);
        // SAFETY: PR_SET_PDEATHSIG takes a signal number and ignores the other arguments.
        cvt(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sigkill, 0, 0, 0) })?;
        // SAFETY: getppid cannot fail and touches no memory.
        let ppid = unsafe { libc::getppid() };
        if u32::try_from(ppid).ok() != Some(parent) {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        Ok(())
    };
    // SAFETY: the closure runs in the child between fork and exec and only makes
    // async-signal-safe calls (sigemptyset, pthread_sigmask, fcntl, prctl, getppid); it
    // allocates nothing (errors are built from errno values, which does not allocate) and
    // touches no lock.
    unsafe { cmd.pre_exec(child_setup) };
}

/// kill(pid, sig): Ok(true) when delivered, Ok(false) when there is no such process (ESRCH).
pub fn kill(pid: u32, signal: i32) -> io::Result<bool> {
    let pid = pid_t(pid)?;
    // SAFETY: kill takes a pid and a signal number and touches no memory.
    match cvt(unsafe { libc::kill(pid, signal) }) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(false),
        Err(e) => Err(e),
    }
}

/// waitpid(pid, WNOHANG): Ok(Some(raw wait status)) if reaped, Ok(None) if still running.
pub fn try_wait(pid: u32) -> io::Result<Option<i32>> {
    let pid = pid_t(pid)?;
    let mut status = 0;
    // SAFETY: `status` is a writable c_int.
    let reaped = cvt(unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) })?;
    Ok((reaped != 0).then_some(status))
}

/// Whether [`take_inherited_fds`] has run in this process.
static INHERITED_TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Takes ownership of file descriptors this process was started with (systemd's `LISTEN_FDS`,
/// or the sockets a predecessor passes in an upgrade), marking each close-on-exec so that they
/// reach no child.
///
/// The numbers come from the environment of whatever started the process; the function is
/// what makes owning them sound. It runs at most once per process (a second call is an error),
/// refuses duplicates and the standard streams 0 to 2, and refuses any number that is not open
/// or that is already close-on-exec: every fd this process opens for itself through `std` (or
/// through this crate) is close-on-exec, and one inherited across `exec` is not, so an fd
/// without the flag is one nothing in the process has claimed. Call it early, before other code
/// marks inherited fds close-on-exec ([`close_on_exec_from`]). All or nothing: on an error no fd
/// is taken.
pub fn take_inherited_fds(fds: &[i32]) -> io::Result<Vec<OwnedFd>> {
    use std::sync::atomic::Ordering;

    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
    for (i, &fd) in fds.iter().enumerate() {
        if fd < 3 {
            return Err(invalid(format!(
                "fd {fd} is a standard stream, not a socket"
            )));
        }
        if fds[..i].contains(&fd) {
            return Err(invalid(format!("fd {fd} is listed twice")));
        }
        // SAFETY: fcntl F_GETFD on an fd number reads its flags and touches no memory.
        let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFD) })
            .map_err(|e| context(&format!("inherited fd {fd}"), e))?;
        if flags & libc::FD_CLOEXEC != 0 {
            return Err(invalid(format!(
                "fd {fd} is close-on-exec: not one this process inherited"
            )));
        }
    }
    if INHERITED_TAKEN.swap(true, Ordering::SeqCst) {
        return Err(io::Error::other(
            "inherited fds have been taken already in this process",
        ));
    }
    for &fd in fds {
        // SAFETY: fcntl F_SETFD on an fd number checked open above sets its flags and touches
        // no memory.
        cvt(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) })
            .map_err(|e| context(&format!("fcntl(F_SETFD) on inherited fd {fd}"), e))?;
    }
    Ok(fds
        .iter()
        // SAFETY: `fd` is open, was inherited across exec (it was not close-on-exec, which
        // every fd the process opens for itself is), is listed once, and this is the only
        // call that takes inherited fds in this process: nothing else owns it.
        .map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect())
}

/// What kind of socket an fd is, as `getsockopt` tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketKind {
    /// `SO_DOMAIN`: `AF_INET`, `AF_INET6`, `AF_UNIX`, ...
    pub domain: i32,
    /// `SO_TYPE`: `SOCK_STREAM`, `SOCK_DGRAM`, ...
    pub kind: i32,
    /// `SO_ACCEPTCONN`: the socket is listening.
    pub listening: bool,
}

impl SocketKind {
    /// A listening TCP socket (IPv4 or IPv6).
    pub fn is_tcp_listener(&self) -> bool {
        matches!(self.domain, libc::AF_INET | libc::AF_INET6)
            && self.kind == libc::SOCK_STREAM
            && self.listening
    }
}

/// The domain, type and listening state of a socket. The error is the bare errno, so that a
/// caller can tell `ENOTSOCK` (`fd` is not a socket).
pub fn socket_kind(fd: BorrowedFd<'_>) -> io::Result<SocketKind> {
    let option = |name: libc::c_int| -> io::Result<libc::c_int> {
        let mut value: libc::c_int = 0;
        let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` is a live c_int and `len` holds its size; the kernel writes at most
        // that many bytes and the new length.
        cvt(unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                name,
                ptr::from_mut(&mut value).cast(),
                &mut len,
            )
        })?;
        Ok(value)
    };
    Ok(SocketKind {
        domain: option(libc::SO_DOMAIN)?,
        kind: option(libc::SO_TYPE)?,
        listening: option(libc::SO_ACCEPTCONN)? != 0,
    })
}

/// Prepares `cmd` for a dispatcher's successor in an upgrade: it inherits exactly the fds in
/// `inherit` (at their numbers here), provided every other fd of the process is close-on-exec.
///
/// In the child, between fork and exec (async-signal-safe calls only): clears FD_CLOEXEC on
/// each fd of `inherit` and unblocks every signal (the master blocks the ones it reads from a
/// signalfd). Unlike a worker, the successor gets no parent-death signal (it outlives the
/// master that starts it) and stays in the master's process group (a terminal's Ctrl-C or a
/// signal to the group reaches both masters, as it reached the one before).
///
/// The caller keeps the fds of `inherit` open until `spawn` returns.
pub fn prepare_successor_command(cmd: &mut Command, inherit: &[BorrowedFd<'_>]) {
    let fds: Vec<i32> = inherit.iter().map(|fd| fd.as_raw_fd()).collect();
    let child_setup = move || -> io::Result<()> { inherit_and_unblock(&fds) };
    // SAFETY: the closure runs in the child between fork and exec and only makes
    // async-signal-safe calls (fcntl, sigemptyset, pthread_sigmask); it reads the vector
    // allocated before the fork without allocating, and touches no lock.
    unsafe { cmd.pre_exec(child_setup) };
}
