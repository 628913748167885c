//! Arbitrary bytes through the `sni` key rule: no panic, a name borrowed from the bytes, and
//! a prefix answers "partial" or the same as the whole.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use stickyd::keys::{Found, Key, KeyRule};

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// `None` while this version refuses the rule.
static SNI: LazyLock<Option<KeyRule>> = LazyLock::new(|| "sni".parse().ok());

fuzz_target!(|data: &[u8]| {
    let Some(sni) = SNI.as_ref() else {
        return;
    };
    let whole = sni.extract(data, PEER);
    if let Found::Key(Key::Bytes(name)) = whole {
        assert!(!name.is_empty());
        assert!(data.as_ptr_range().contains(&name.as_ptr()));
    }
    let split = data.iter().map(|&b| usize::from(b)).sum::<usize>() % (data.len() + 1);
    let prefix = sni.extract(&data[..split], PEER);
    assert!(
        prefix == Found::Partial || prefix == whole,
        "{prefix:?} vs {whole:?}"
    );
});
