//! The key hash: ahash with fixed seeds over the key's bytes.

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;

use ahash::RandomState;

use crate::keys::{Key, fold_addr};

/// The fixed ahash seeds. Changing any of them (or the ahash version, pinned in the workspace
/// manifest) changes every key's hash, and so reshuffles every user's sessions across workers.
const SEEDS: [u64; 4] = [
    0x7374_6963_6b79_6430, // "stickyd0"
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
];

static STATE: RandomState = RandomState::with_seeds(SEEDS[0], SEEDS[1], SEEDS[2], SEEDS[3]);

/// The 64-bit hash of a key: one `Hasher::write` of its bytes, then `finish`.
///
/// Addresses are written as their binary form, 4 bytes for IPv4 and 16 for IPv6, IPv4-mapped
/// IPv6 folded to IPv4 first; other keys as their bytes. The kind of key is not hashed, so the
/// 4 bytes `0a 00 00 01` hash like the address 10.0.0.1.
pub fn key_hash(key: Key<'_>) -> u64 {
    let mut hasher = STATE.build_hasher();
    match key {
        Key::Addr(ip) => match fold_addr(ip) {
            IpAddr::V4(v4) => hasher.write(&v4.octets()),
            IpAddr::V6(v6) => hasher.write(&v6.octets()),
        },
        Key::Bytes(bytes) => hasher.write(bytes),
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Found, KeyRule};

    fn hash_of(found: Found<'_>) -> u64 {
        match found {
            Found::Key(key) => key_hash(key),
            other => panic!("no key: {other:?}"),
        }
    }

    #[test]
    fn ip_and_x_forwarded_for_hash_the_same() {
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let via_ip = hash_of(KeyRule::Ip.extract(b"", peer));
        let xff: KeyRule = "header:x-forwarded-for".parse().unwrap();
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        for head in [
            &b"GET / HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1:4321, 127.0.0.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-Forwarded-For: unknown, ::ffff:10.0.0.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-Forwarded-For: [::ffff:10.0.0.1]:80\r\n\r\n",
        ] {
            assert_eq!(hash_of(xff.extract(head, proxy)), via_ip);
        }
    }

    #[test]
    fn v4_mapped_hashes_like_v4() {
        let mapped = Key::Addr("::ffff:10.0.0.1".parse().unwrap());
        let v4 = Key::Addr("10.0.0.1".parse().unwrap());
        assert_eq!(key_hash(mapped), key_hash(v4));
        assert_eq!(key_hash(v4), key_hash(Key::Bytes(&[10, 0, 0, 1])));
        assert_ne!(key_hash(v4), key_hash(Key::Bytes(b"10.0.0.1")));
        let v6 = Key::Addr("2001:db8::1".parse().unwrap());
        assert_ne!(key_hash(v6), key_hash(v4));
    }

    #[test]
    fn different_keys_hash_differently() {
        let a = key_hash(Key::Bytes(b"session-a"));
        assert_eq!(a, key_hash(Key::Bytes(b"session-a")));
        assert_ne!(a, key_hash(Key::Bytes(b"session-b")));
        assert_ne!(key_hash(Key::Bytes(b"")), key_hash(Key::Bytes(b"\0")));
    }
}
