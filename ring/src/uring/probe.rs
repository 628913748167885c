//! Setting up a ring and checking, for real, that the kernel can do what stickyd needs.
//!
//! Kernels 5.10 and 5.15 set up rings but reject multishot accept with EINVAL, and io_uring may
//! be refused outright (the `kernel.io_uring_disabled` sysctl, a seccomp filter): every missing
//! piece is an error whose message names it, so the caller can fall back and say why.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use io_uring::{IoUring, Probe, cqueue, opcode, types};

use super::inflight::Cqe;

/// user_data of the probe's multishot accept.
const PROBE_ACCEPT: u64 = u64::MAX - 1;
/// user_data of the probe's cancel.
const PROBE_CANCEL: u64 = u64::MAX - 2;
/// How long the multishot accept probe may take at most.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// An error whose message says what is missing, keeping the kind of `source` if any.
fn missing(what: &str, source: Option<io::Error>) -> io::Error {
    match source {
        Some(e) => io::Error::new(e.kind(), format!("io_uring: {what}: {e}")),
        None => io::Error::new(io::ErrorKind::Unsupported, format!("io_uring: {what}")),
    }
}

/// Sets up a ring of `entries` SQ entries and a CQ four times larger, with SUBMIT_ALL,
/// COOP_TASKRUN, SINGLE_ISSUER and DEFER_TASKRUN when the kernel knows them.
///
/// DEFER_TASKRUN (Linux 6.1) keeps the kernel's completion work for the ring (a socket became
/// readable, so the peek or the `ACK`'s `recvmsg` runs) until the ring's thread waits for
/// completions, and wakes that thread only once as many are ready as it waits for: a loop that
/// waits for a batch sleeps until the batch is there instead of being woken for each one. (An
/// accept, an exclusive waiter, still wakes it at once.) The ring must then only be used by the
/// thread that made it, which SINGLE_ISSUER asks already.
pub(crate) fn setup(entries: u32) -> io::Result<IoUring> {
    let entries = entries.max(1);
    let cq_entries = entries.saturating_mul(4);
    let tuned = |defer: bool| {
        let mut builder = IoUring::builder();
        builder
            .setup_cqsize(cq_entries)
            .setup_clamp()
            .setup_submit_all()
            .setup_coop_taskrun()
            .setup_single_issuer();
        if defer {
            builder.setup_defer_taskrun();
        }
        builder.build(entries)
    };
    let einval =
        |r: &io::Result<IoUring>| matches!(r, Err(e) if e.raw_os_error() == Some(libc::EINVAL));
    let mut ring = tuned(true);
    if einval(&ring) {
        ring = tuned(false);
    }
    if einval(&ring) {
        ring = IoUring::builder()
            .setup_cqsize(cq_entries)
            .setup_clamp()
            .build(entries);
    }
    ring.map_err(|e| match e.raw_os_error() {
        Some(libc::ENOSYS) => missing(
            "not available (kernel without io_uring, or seccomp)",
            Some(e),
        ),
        Some(libc::EPERM) => missing(
            "setup refused (kernel.io_uring_disabled sysctl or seccomp?)",
            Some(e),
        ),
        _ => missing("setup failed", Some(e)),
    })
}

/// Checks the features and opcodes stickyd relies on.
pub(crate) fn features(ring: &IoUring) -> io::Result<()> {
    let params = ring.params();
    if !params.is_feature_ext_arg() {
        return Err(missing(
            "IORING_FEAT_EXT_ARG not supported (waits with a timeout; kernel too old?)",
            None,
        ));
    }
    if !params.is_feature_nodrop() {
        return Err(missing(
            "IORING_FEAT_NODROP not supported (completions could be lost; kernel too old?)",
            None,
        ));
    }
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| missing("opcode probe failed", Some(e)))?;
    let needed = [
        (opcode::Accept::CODE, "Accept"),
        (opcode::Recv::CODE, "Recv"),
        (opcode::PollAdd::CODE, "PollAdd"),
        (opcode::SendMsg::CODE, "SendMsg"),
        (opcode::RecvMsg::CODE, "RecvMsg"),
        (opcode::Close::CODE, "Close"),
        (opcode::Timeout::CODE, "Timeout"),
        (opcode::AsyncCancel::CODE, "AsyncCancel"),
    ];
    for (code, name) in needed {
        if !probe.is_supported(code) {
            return Err(missing(
                &format!("opcode {name} not supported (kernel too old?)"),
                None,
            ));
        }
    }
    Ok(())
}

/// Arms a multishot accept on a throwaway listener on 127.0.0.1, connects to it, and checks
/// that the connection arrives with `IORING_CQE_F_MORE`; then cancels the accept and waits for
/// its final completion, so the ring is left with nothing in flight.
pub(crate) fn multishot_accept(ring: &mut IoUring) -> io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| missing("multishot accept probe: bind 127.0.0.1:0", Some(e)))?;
    let accept = opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd()))
        .flags(libc::SOCK_CLOEXEC)
        .build()
        .user_data(PROBE_ACCEPT);
    push(ring, &accept)?;
    let addr = listener.local_addr()?;
    let _client = TcpStream::connect(addr)
        .map_err(|e| missing("multishot accept probe: connect", Some(e)))?;
    let deadline = Instant::now() + PROBE_TIMEOUT;

    let first = next_cqe(ring, deadline)?;
    if first.user_data != PROBE_ACCEPT {
        return Err(missing(
            "multishot accept probe: unexpected completion",
            None,
        ));
    }
    if first.result < 0 {
        let e = io::Error::from_raw_os_error(-first.result);
        return Err(if first.result == -libc::EINVAL {
            missing("multishot accept not supported (kernel too old?)", Some(e))
        } else {
            missing("multishot accept probe failed", Some(e))
        });
    }
    // SAFETY: a non-negative accept result is a new fd installed for us alone.
    drop(unsafe { OwnedFd::from_raw_fd(first.result) });
    if !cqueue::more(first.flags) {
        return Err(missing(
            "multishot accept not supported (kernel too old?): it ended after one connection",
            None,
        ));
    }

    let cancel = opcode::AsyncCancel::new(PROBE_ACCEPT)
        .build()
        .user_data(PROBE_CANCEL);
    push(ring, &cancel)?;
    let mut accept_done = false;
    let mut cancel_done = false;
    while !(accept_done && cancel_done) {
        let cqe = next_cqe(ring, deadline)?;
        match cqe.user_data {
            PROBE_ACCEPT if cqe.result >= 0 => {
                // A connection that raced the cancel: not ours to keep.
                // SAFETY: a non-negative accept result is a new fd installed for us alone.
                drop(unsafe { OwnedFd::from_raw_fd(cqe.result) });
                accept_done = !cqueue::more(cqe.flags);
            }
            PROBE_ACCEPT => accept_done = !cqueue::more(cqe.flags),
            _ => cancel_done = true,
        }
    }
    Ok(())
}

fn push(ring: &mut IoUring, entry: &io_uring::squeue::Entry) -> io::Result<()> {
    // SAFETY: the probe's entries point at no memory (accept without address, cancel by
    // user_data); the SQ is empty on a new ring, so the push cannot fail for lack of room.
    unsafe { ring.submission().push(entry) }
        .map_err(|_| missing("probe: submission queue full", None))?;
    ring.submit()
        .map_err(|e| missing("probe: submit failed", Some(e)))?;
    Ok(())
}

/// The next completion, waiting for it until `deadline`.
fn next_cqe(ring: &mut IoUring, deadline: Instant) -> io::Result<Cqe> {
    loop {
        if let Some(cqe) = ring.completion().next() {
            return Ok(Cqe::from(cqe));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(missing(
                "multishot accept probe timed out",
                Some(io::Error::from(io::ErrorKind::TimedOut)),
            ));
        }
        let ts = types::Timespec::from(left);
        let args = types::SubmitArgs::new().timespec(&ts);
        match ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => {}
            Err(e) => return Err(missing("multishot accept probe: wait failed", Some(e))),
        }
    }
}
