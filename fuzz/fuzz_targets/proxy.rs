//! Arbitrary bytes through `stickyd::proxy::parse`: no panic, a header never longer than the
//! bytes or `max_len`, and a prefix answers "partial" or the same as the whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stickyd::proxy::parse;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().map(|&b| usize::from(b)).sum::<usize>() % (data.len() + 1);
    for max_len in [4096, 107, 52, 16] {
        let whole = parse(data, max_len);
        if let Ok(Some(header)) = whole {
            assert!(header.len() <= data.len() && header.len() <= max_len);
        }
        let prefix = parse(&data[..split], max_len);
        assert!(
            prefix == Ok(None) || prefix == whole,
            "{prefix:?} vs {whole:?}"
        );
    }
});
