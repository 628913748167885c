//! Pins the key-to-worker mapping, so that a change which would reshuffle users' sessions
//! (new ahash seeds or version, a different score function, a change in what is hashed) fails
//! here loudly instead of moving every user to another worker after an upgrade.
//!
//! The rendezvous pins hold for every build. The key hashes, mappings and fingerprints are
//! those of ahash's portable (fallback) path on x86_64, the default build; a build with the AES
//! target feature has a different mapping by design, and says so in its start-up fingerprint.
//! If one of these tests fails, the change breaks stickiness across an upgrade: keep the old
//! behaviour, or make the break deliberate and say so in the release notes.
//!
//! Beside the pins, client-address keys must spread evenly (chi-square, p >= 0.001, over
//! 100,000 keys for 2, 3, 4, 8, 16 and 64 workers), and removing a worker must move only its
//! own keys, which come back when it does (the same properties over raw hashes are unit tests
//! in `src/route/rendezvous.rs`).

use stickyd::route::{pick, score};

/// (key hash, worker among 2, among 4, among 16): rendezvous alone, whatever the hash path.
const RAW_PICKS: [(u64, u32, u32, u32); 5] = [
    (0, 1, 1, 14),
    (1, 0, 3, 3),
    (0xdead_beef, 1, 3, 14),
    (u64::MAX, 0, 0, 0),
    (0x0123_4567_89ab_cdef, 0, 0, 15),
];

#[test]
fn rendezvous_picks_are_pinned() {
    for (hash, two, four, sixteen) in RAW_PICKS {
        assert_eq!(pick(hash, 0..2), Some(two), "hash {hash:#x}, 2 workers");
        assert_eq!(pick(hash, 0..4), Some(four), "hash {hash:#x}, 4 workers");
        assert_eq!(
            pick(hash, 0..16),
            Some(sixteen),
            "hash {hash:#x}, 16 workers"
        );
    }
}

#[test]
fn rendezvous_scores_are_pinned() {
    assert_eq!(score(0, 0), 0x4821_8226_ff3c_d4bf);
    assert_eq!(score(0, 5), 0x00e7_8a7f_5764_41a3);
    assert_eq!(score(0xdead_beef, 0), 0x0d29_a930_0569_a165);
    assert_eq!(score(u64::MAX, 5), 0x7a28_4618_e640_d0ed);
}

#[cfg(all(target_arch = "x86_64", not(target_feature = "aes")))]
mod fallback_path {
    use std::net::IpAddr;

    use stickyd::keys::Key;
    use stickyd::route::{Fingerprint, fingerprint, hash_path, key_hash, pick};

    /// A key, as text: an address, or bytes.
    enum K {
        Addr(&'static str),
        Bytes(&'static [u8]),
    }

    /// (key, its hash, its worker among 2, among 4, among 16 workers).
    const TABLE: [(K, u64, u32, u32, u32); 20] = [
        (K::Addr("10.0.0.1"), 0x5ab5_edc2_da5c_15fa, 0, 3, 6),
        (K::Addr("127.0.0.1"), 0x16f1_e41e_fa19_a3df, 1, 1, 1),
        (K::Addr("192.0.2.1"), 0x9557_03ba_845c_df43, 1, 1, 5),
        (K::Addr("192.0.2.255"), 0x6d64_d470_6e0a_f8f4, 0, 0, 6),
        (K::Addr("198.51.100.7"), 0xaa82_1ae8_66e6_6917, 0, 3, 4),
        (K::Addr("203.0.113.42"), 0x4d82_a023_3e00_da6b, 1, 2, 2),
        (K::Addr("0.0.0.0"), 0x45de_a3fb_1173_f589, 1, 1, 12),
        (K::Addr("2001:db8::1"), 0x3fb7_940c_81b1_2655, 1, 3, 5),
        (K::Addr("2001:db8::ffff"), 0xc09d_8fe4_032c_d4df, 1, 3, 4),
        (K::Addr("::1"), 0x95a0_4812_3b71_89f2, 1, 1, 11),
        (K::Addr("fe80::1"), 0x7351_4e57_79c0_082d, 1, 1, 14),
        (
            K::Addr("2001:db8:85a3::8a2e:370:7334"),
            0x0577_fd19_06f0_a7d1,
            0,
            3,
            15,
        ),
        (K::Addr("::ffff:10.0.0.1"), 0x5ab5_edc2_da5c_15fa, 0, 3, 6),
        (K::Bytes(b""), 0x5efa_8c68_89ea_a0b9, 0, 3, 9),
        (K::Bytes(b"a"), 0xacb4_5609_5e4c_4b47, 1, 1, 8),
        (K::Bytes(b"session-1"), 0x4896_54a3_24c7_8858, 1, 1, 6),
        (K::Bytes(b"session-2"), 0x31e1_8e71_46c2_46d4, 0, 0, 9),
        (
            K::Bytes(b"0123456789abcdef"),
            0x11e6_8580_dfb4_b956,
            1,
            3,
            7,
        ),
        (K::Bytes(b"probe-0"), 0xe96d_583d_40de_dc91, 1, 3, 13),
        (
            K::Bytes(b"a-much-longer-session-token-of-sixty-four-bytes-0123456789abcdef"),
            0x4edc_eecd_b075_13b4,
            0,
            2,
            15,
        ),
    ];

    #[test]
    fn the_default_build_uses_the_fallback_path() {
        assert_eq!(hash_path(), "fallback");
    }

    #[test]
    fn keys_keep_their_hashes_and_workers() {
        for (key, hash, two, four, sixteen) in TABLE {
            let (name, found) = match key {
                K::Addr(text) => (
                    text.to_owned(),
                    key_hash(Key::Addr(text.parse::<IpAddr>().unwrap())),
                ),
                K::Bytes(bytes) => (
                    format!("{:?}", String::from_utf8_lossy(bytes)),
                    key_hash(Key::Bytes(bytes)),
                ),
            };
            assert_eq!(found, hash, "hash of {name}");
            assert_eq!(pick(found, 0..2), Some(two), "{name}, 2 workers");
            assert_eq!(pick(found, 0..4), Some(four), "{name}, 4 workers");
            assert_eq!(pick(found, 0..16), Some(sixteen), "{name}, 16 workers");
        }
    }

    #[test]
    fn fingerprints_are_pinned() {
        assert_eq!(fingerprint(2), Fingerprint(0x8c07_9163_b714_1bc3));
        assert_eq!(fingerprint(4), Fingerprint(0x48ef_89ba_c52d_7656));
        assert_eq!(fingerprint(16), Fingerprint(0xb5f0_08b2_7b00_95db));
        assert_eq!(fingerprint(4).to_string(), "48ef89bac52d7656");
    }
}

/// Client-address keys as stickyd hashes them: 100,000 addresses of 10.0.0.0/8 and
/// 2001:db8::/32.
fn client_hashes() -> Vec<u64> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use stickyd::keys::Key;
    use stickyd::route::key_hash;

    (0..100_000u32)
        .map(|i| {
            let ip = if i % 2 == 0 {
                IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i / 2)))
            } else {
                IpAddr::V6(Ipv6Addr::from((0x2001_0db8_u128 << 96) | u128::from(i)))
            };
            key_hash(Key::Addr(ip))
        })
        .collect()
}

#[test]
fn client_addresses_spread_evenly() {
    // Pearson's chi-square of the keys per worker stays below the 0.999 quantile of the
    // chi-square distribution with workers - 1 degrees of freedom (p >= 0.001).
    let hashes = client_hashes();
    let quantiles = [
        (2, 10.828),
        (3, 13.816),
        (4, 16.266),
        (8, 24.322),
        (16, 37.697),
        (64, 103.442),
    ];
    for (workers, bound) in quantiles {
        let mut counts = vec![0u32; workers as usize];
        for &hash in &hashes {
            counts[pick(hash, 0..workers).unwrap() as usize] += 1;
        }
        let expected = hashes.len() as f64 / f64::from(workers);
        let statistic: f64 = counts
            .iter()
            .map(|&count| (f64::from(count) - expected).powi(2) / expected)
            .sum();
        assert!(
            statistic < bound,
            "{workers} workers: chi-square {statistic:.1} >= {bound}"
        );
    }
}

#[test]
fn only_a_removed_workers_keys_move_and_they_come_back() {
    let hashes = &client_hashes()[..20_000];
    let all: Vec<u32> = (0..6).collect();
    let before: Vec<u32> = hashes
        .iter()
        .map(|&h| pick(h, all.clone()).unwrap())
        .collect();
    for gone in all.clone() {
        let live: Vec<u32> = all.iter().copied().filter(|&w| w != gone).collect();
        for (&hash, &old) in hashes.iter().zip(&before) {
            let new = pick(hash, live.clone()).unwrap();
            if old == gone {
                assert_eq!(new, stickyd::route::rank(hash, all.clone())[1]);
            } else {
                assert_eq!(
                    new, old,
                    "worker {gone} removed: a key of worker {old} moved"
                );
            }
        }
    }
    let after: Vec<u32> = hashes
        .iter()
        .map(|&h| pick(h, all.clone()).unwrap())
        .collect();
    assert_eq!(before, after, "every key is back with all workers live");
}
