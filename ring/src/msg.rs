//! Messages for sendmsg/recvmsg: bytes plus file descriptors in one SCM_RIGHTS control message.
//!
//! Each message owns its `msghdr` and iovec in a `Box` and its control buffer in a `Vec`, so the
//! addresses the kernel reads and writes stay put while the message moves in and out of the ring.
//! The header's pointers are (re)written just before each submission.

use std::fmt;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

/// Size in bytes of one fd in an SCM_RIGHTS payload.
const FD_SIZE: usize = mem::size_of::<RawFd>();

/// The kernel-visible header of a message: boxed for a stable address.
struct Header {
    hdr: libc::msghdr,
    iov: libc::iovec,
}

impl Header {
    /// Points the header at `len` bytes of `data` and the first `control_len` bytes of
    /// `control` (none when 0); returns the msghdr for the syscall or SQE.
    fn point(
        &mut self,
        data: *mut u8,
        len: usize,
        control: &mut [u64],
        control_len: usize,
    ) -> *mut libc::msghdr {
        self.iov.iov_base = data.cast();
        self.iov.iov_len = len;
        self.hdr.msg_name = ptr::null_mut();
        self.hdr.msg_namelen = 0;
        self.hdr.msg_iov = &mut self.iov;
        self.hdr.msg_iovlen = 1;
        if control_len == 0 {
            self.hdr.msg_control = ptr::null_mut();
            self.hdr.msg_controllen = 0;
        } else {
            self.hdr.msg_control = control.as_mut_ptr().cast();
            self.hdr.msg_controllen = control_len as _;
        }
        self.hdr.msg_flags = 0;
        &mut self.hdr
    }

    fn new() -> Box<Header> {
        Box::new(Header {
            // SAFETY: msghdr is a plain C struct (integers and pointers) for which all-zero
            // bytes are a valid value: no name, no iovec, no control buffer.
            hdr: unsafe { mem::zeroed() },
            iov: libc::iovec {
                iov_base: ptr::null_mut(),
                iov_len: 0,
            },
        })
    }
}

/// Bytes of control buffer needed for `fds` descriptors (`CMSG_SPACE`), 0 for none.
fn control_space(fds: usize) -> usize {
    if fds == 0 {
        return 0;
    }
    let payload = u32::try_from(fds.saturating_mul(FD_SIZE)).unwrap_or(u32::MAX / 2);
    // SAFETY: CMSG_SPACE only does arithmetic on its argument.
    unsafe { libc::CMSG_SPACE(payload) as usize }
}

/// A zeroed control buffer of at least `bytes` bytes, aligned for `cmsghdr` (8 bytes).
fn control_buffer(bytes: usize) -> Vec<u64> {
    vec![0u64; bytes.div_ceil(mem::size_of::<u64>())]
}

/// An outgoing message: bytes plus fds for one SCM_RIGHTS control message.
///
/// Owns its `msghdr`, iovec and control buffer at stable addresses until the `Sent` completion
/// gives it back, ready to be sent again or turned back into its byte buffer.
pub struct OutMsg {
    data: Vec<u8>,
    fd_count: usize,
    control: Vec<u64>,
    control_len: usize,
    header: Box<Header>,
}

// SAFETY: the raw pointers inside `header` point only into this message's own heap
// allocations (`data`, `control`, `header` itself) or are null; Rust code never dereferences
// them, and they are rewritten before each submission. Moving the message to another thread
// moves those allocations with it.
unsafe impl Send for OutMsg {}

impl OutMsg {
    /// A message carrying `data` and, in one SCM_RIGHTS control message, the fds `fds`.
    ///
    /// The fds are borrowed only to read their numbers: the caller must keep them open until
    /// the `Sent` completion arrives. Memory safety does not depend on it, but a number closed
    /// and reused meanwhile would send the wrong file. Up to 253 fds (the kernel's
    /// `SCM_MAX_FD`); with more, the send fails with `EINVAL`.
    pub fn new(data: Vec<u8>, fds: &[BorrowedFd<'_>]) -> OutMsg {
        let mut msg = OutMsg {
            data,
            fd_count: 0,
            control: Vec::new(),
            control_len: 0,
            header: Header::new(),
        };
        msg.set_fds(fds.iter().copied());
        msg
    }

    /// An empty message with room for `data` bytes and `max_fds` fds, to fill with
    /// [`OutMsg::data_mut`] and [`OutMsg::set_fds`] and to send again and again: a message
    /// reused this way costs no allocation per send.
    pub fn with_capacity(data: usize, max_fds: usize) -> OutMsg {
        OutMsg {
            data: Vec::with_capacity(data),
            fd_count: 0,
            control: control_buffer(control_space(max_fds)),
            control_len: 0,
            header: Header::new(),
        }
    }

    /// The bytes to send, to fill in place.
    pub fn data_mut(&mut self) -> &mut Vec<u8> {
        &mut self.data
    }

    /// Sets the fds the message carries, in one SCM_RIGHTS control message (none when empty),
    /// growing the control buffer only if it is too small.
    ///
    /// The fds are borrowed only to read their numbers: the caller must keep them open until
    /// the `Sent` completion arrives (see [`OutMsg::new`]).
    pub fn set_fds<'a>(&mut self, fds: impl ExactSizeIterator<Item = BorrowedFd<'a>>) {
        let count = fds.len();
        let control_len = control_space(count);
        if self.control.len() * mem::size_of::<u64>() < control_len {
            self.control = control_buffer(control_len);
        }
        self.fd_count = count;
        self.control_len = control_len;
        if count == 0 {
            return;
        }
        let header = &mut self.header;
        header.hdr.msg_control = self.control.as_mut_ptr().cast();
        header.hdr.msg_controllen = control_len as _;
        // SAFETY: msg_control points at `control`, which holds at least `control_len` =
        // CMSG_SPACE(count * 4) bytes, aligned for cmsghdr, so CMSG_FIRSTHDR returns a header
        // inside it (not null) and CMSG_DATA has room for `count` fds, written unaligned; at
        // most `count` are written (`take`); nothing else references the buffer.
        let written = unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&header.hdr);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
            let mut written = 0;
            for fd in fds.take(count) {
                ptr::write_unaligned(data.add(written), fd.as_raw_fd());
                written += 1;
            }
            // An iterator that yields fewer than it announced: carry what it yielded, never
            // a stale number left in the buffer by an earlier message.
            (*cmsg).cmsg_len = libc::CMSG_LEN((written * FD_SIZE) as u32) as _;
            written
        };
        if written < count {
            self.fd_count = written;
            self.control_len = control_space(written);
        }
    }

    /// The bytes of the message.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The byte buffer back, for reuse.
    pub fn into_data(self) -> Vec<u8> {
        self.data
    }

    /// The number of fds the message carries.
    pub fn fd_count(&self) -> usize {
        self.fd_count
    }

    /// Points the header at the data and control buffers; returns the header for the SQE.
    pub(crate) fn prepare(&mut self) -> *const libc::msghdr {
        let len = self.data.len();
        let data = self.data.as_mut_ptr();
        self.header
            .point(data, len, &mut self.control, self.control_len)
            .cast_const()
    }
}

impl fmt::Debug for OutMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutMsg")
            .field("len", &self.data.len())
            .field("fd_count", &self.fd_count)
            .finish()
    }
}

/// An incoming message buffer: data capacity plus room for up to `max_fds` fds.
///
/// After a `ReceivedMsg` completion it holds the bytes received and the fds, already owned:
/// fds not taken with [`take_fds`](InMsg::take_fds) are closed when the message is dropped or
/// reset.
pub struct InMsg {
    data: Vec<u8>,
    control: Vec<u64>,
    control_len: usize,
    header: Box<Header>,
    fds: Vec<OwnedFd>,
    flags: i32,
}

// SAFETY: as for OutMsg: the header's raw pointers point only into this message's own heap
// allocations or are null, are never dereferenced by Rust code outside the completion of the
// message's own recvmsg, and move with the message.
unsafe impl Send for InMsg {}

impl InMsg {
    /// Room for `capacity` bytes of data and up to `max_fds` fds.
    pub fn new(capacity: usize, max_fds: usize) -> InMsg {
        let control_len = control_space(max_fds);
        InMsg {
            data: Vec::with_capacity(capacity),
            control: control_buffer(control_len),
            control_len,
            header: Header::new(),
            fds: Vec::new(),
            flags: 0,
        }
    }

    /// The bytes received (length = the recvmsg result).
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The fds received, owned (close-on-exec, as received with `MSG_CMSG_CLOEXEC`).
    pub fn take_fds(&mut self) -> Vec<OwnedFd> {
        mem::take(&mut self.fds)
    }

    /// Whether the data was cut short (`MSG_TRUNC`): the datagram was longer than the buffer.
    pub fn truncated(&self) -> bool {
        self.flags & libc::MSG_TRUNC != 0
    }

    /// Whether the control data was cut short (`MSG_CTRUNC`): some fds did not fit, or the
    /// receiver hit its fd limit; those fds were not received.
    pub fn ctrl_truncated(&self) -> bool {
        self.flags & libc::MSG_CTRUNC != 0
    }

    /// Makes the message ready for another recvmsg: clears the data and flags and closes any
    /// fds not taken.
    pub fn reset(&mut self) {
        self.data.clear();
        self.fds.clear();
        self.flags = 0;
        self.control.fill(0);
    }

    /// Resets the message and points its header at the empty data and control buffers;
    /// returns the header for the SQE.
    pub(crate) fn prepare(&mut self) -> *mut libc::msghdr {
        self.reset();
        let capacity = self.data.capacity();
        let data = self.data.as_mut_ptr();
        self.header
            .point(data, capacity, &mut self.control, self.control_len)
    }

    /// Takes in the result of the completed recvmsg: `len` bytes, the flags and the fds the
    /// kernel wrote back into the header, each fd owned at once.
    pub(crate) fn finish(&mut self, len: usize) {
        let len = len.min(self.data.capacity());
        // SAFETY: the kernel wrote `len` bytes (the recvmsg result) from the start of the
        // buffer, and len <= capacity.
        unsafe { self.data.set_len(len) };
        self.flags = self.header.hdr.msg_flags;
        if self.control_len == 0 {
            return;
        }
        // The kernel wrote back how much control data it stored; never trust more than ours.
        #[allow(clippy::unnecessary_cast)] // usize on glibc, socklen_t on musl
        let used = (self.header.hdr.msg_controllen as usize).min(self.control_len);
        self.header.hdr.msg_control = self.control.as_mut_ptr().cast();
        self.header.hdr.msg_controllen = used as _;
        let base = self.control.as_ptr() as usize;
        let hdr: *const libc::msghdr = &self.header.hdr;
        // SAFETY: the header describes our control buffer with the length the kernel used, so
        // CMSG_FIRSTHDR/CMSG_NXTHDR stay inside it (they return null past the end); each
        // cmsghdr is aligned (the buffer is 8-byte aligned and the kernel pads to CMSG_ALIGN).
        let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(hdr) };
        while !cmsg.is_null() {
            // SAFETY: cmsg is non-null, so it points at a whole cmsghdr inside the buffer.
            let (level, kind, cmsg_len) = unsafe {
                (
                    (*cmsg).cmsg_level,
                    (*cmsg).cmsg_type,
                    (*cmsg).cmsg_len as usize,
                )
            };
            let offset = cmsg as usize - base;
            // SAFETY: CMSG_LEN only does arithmetic on its argument.
            let head = unsafe { libc::CMSG_LEN(0) } as usize;
            if cmsg_len < head || offset + cmsg_len > used {
                break;
            }
            if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
                let count = (cmsg_len - head) / FD_SIZE;
                // SAFETY: the payload of `count` fds lies inside the used part of the buffer
                // (checked above); each is read unaligned. Every number is an fd the kernel
                // has just installed for us and that nothing else owns, so it is wrapped in
                // its owner at once.
                unsafe {
                    let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                    for i in 0..count {
                        let fd = ptr::read_unaligned(data.add(i));
                        self.fds.push(OwnedFd::from_raw_fd(fd));
                    }
                }
            }
            // SAFETY: hdr and cmsg describe the buffer as above; CMSG_NXTHDR returns null when
            // the next header would not fit in msg_controllen.
            cmsg = unsafe { libc::CMSG_NXTHDR(hdr, cmsg) };
        }
    }
}

impl fmt::Debug for InMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMsg")
            .field("len", &self.data.len())
            .field("capacity", &self.data.capacity())
            .field("fds", &self.fds)
            .field("truncated", &self.truncated())
            .field("ctrl_truncated", &self.ctrl_truncated())
            .finish()
    }
}
