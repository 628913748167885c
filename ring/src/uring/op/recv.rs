//! recv into the spare capacity of a caller's buffer.

use std::os::fd::{AsRawFd, BorrowedFd};

use io_uring::{opcode, squeue, types};

use crate::completion::Outcome;

/// A recv of up to `buf.capacity()` bytes into `buf` from index 0 (`buf` is cleared first).
/// The entry points into `buf`'s heap buffer: the caller keeps `buf` parked, unchanged, until
/// the completion.
pub(crate) fn entry(fd: BorrowedFd<'_>, buf: &mut Vec<u8>, flags: i32) -> squeue::Entry {
    buf.clear();
    let len = u32::try_from(buf.capacity()).unwrap_or(u32::MAX);
    opcode::Recv::new(types::Fd(fd.as_raw_fd()), buf.as_mut_ptr(), len)
        .flags(flags)
        .build()
}

/// Hands `buf` back with its length set to the bytes received.
pub(crate) fn complete(mut buf: Vec<u8>, res: i32) -> Outcome {
    let result = super::result(res).map(|n| {
        let n = (n as usize).min(buf.capacity());
        // SAFETY: the kernel wrote n bytes (the recv result) from the start of the buffer,
        // and n <= capacity.
        unsafe { buf.set_len(n) };
        n
    });
    Outcome::Received { buf, result }
}
