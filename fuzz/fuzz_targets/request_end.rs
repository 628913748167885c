//! Arbitrary bytes through `stickyd_worker::http::request_end`, where a worker cuts a kept-alive
//! connection between requests: no panic, and the answer never changes once the head has
//! ended (every prefix that holds the head gives the same end), so bytes arriving in pieces
//! are cut where they would be cut whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stickyd_worker::http::{RequestEnd, request_end};

fuzz_target!(|data: &[u8]| {
    let whole = request_end(data);
    for cut in 0..data.len() {
        match request_end(&data[..cut]) {
            RequestEnd::Incomplete => {}
            decided => assert_eq!(decided, whole, "cut at {cut}"),
        }
    }
});
