//! The mapping fingerprint: one number that changes when the key-to-worker mapping does.
//!
//! The mapping depends on the ahash version and on the CPU features the binary was compiled
//! for. The fingerprint is logged at start and compared on upgrade, so a successor that would
//! reshuffle sessions is noticed.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use super::{key_hash, pick};
use crate::keys::Key;

/// The mapping fingerprint logged at start: the workers chosen, among `workers` all live, for
/// a fixed probe set, folded into one u64 with the key hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint(pub u64);

impl fmt::Display for Fingerprint {
    /// 16 lowercase hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The fingerprint of the mapping onto `workers` workers (ids `0..workers`, all live).
///
/// The probe set is 512 keys: the IPv4 addresses 192.0.2.0 to 192.0.2.255 and the byte strings
/// `probe-0` to `probe-255`. The worker count and the worker chosen for each probe (little
/// endian, `u32::MAX` when there is no worker) are hashed with [`key_hash`]. Same binary and
/// same count, same value; a different hash function changes it.
pub fn fingerprint(workers: u32) -> Fingerprint {
    let mut chosen = Vec::with_capacity(4 * (1 + 512));
    chosen.extend_from_slice(&workers.to_le_bytes());
    let mut record = |key: Key<'_>| {
        let worker = pick(key_hash(key), 0..workers).unwrap_or(u32::MAX);
        chosen.extend_from_slice(&worker.to_le_bytes());
    };
    for last in 0..=255u8 {
        record(Key::Addr(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))));
    }
    for i in 0..256u32 {
        record(Key::Bytes(format!("probe-{i}").as_bytes()));
    }
    Fingerprint(key_hash(Key::Bytes(&chosen)))
}

/// Which hash path the build uses, for the start-up log: `"aes"` if compiled with
/// `target_feature = "aes"` on `x86` or `x86_64`, else `"fallback"`.
///
/// ahash 0.8 takes its AES path on `x86` and `x86_64` only (on Arm it needs a nightly-only
/// feature), so an `aarch64` build reports `"fallback"`, which is the path it runs.
pub fn hash_path() -> &'static str {
    if cfg!(all(
        any(target_arch = "x86", target_arch = "x86_64"),
        target_feature = "aes",
        not(miri)
    )) {
        "aes"
    } else {
        "fallback"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_sixteen_hex_digits() {
        assert_eq!(Fingerprint(0xab).to_string(), "00000000000000ab");
        assert_eq!(Fingerprint(u64::MAX).to_string(), "ffffffffffffffff");
    }

    #[test]
    fn depends_on_the_worker_count_only() {
        assert_eq!(fingerprint(4), fingerprint(4));
        let all: Vec<Fingerprint> = (0..=8).map(fingerprint).collect();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn names_a_hash_path() {
        assert!(["aes", "fallback"].contains(&hash_path()));
    }
}
