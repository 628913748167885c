//! Rendezvous (highest random weight) hashing over worker ids.
//!
//! Each worker gets a score for each key hash; the key goes to the live worker with the
//! highest score, ties to the lower id. Removing a worker moves only the keys it held (each to
//! its next worker by rank); adding it back returns exactly those. Scores depend only on the
//! key hash and the worker id, never on the set of workers.

use std::cmp::Reverse;

/// The 64-bit finalizer of splitmix64 (Stafford's "mix13"): a bijection whose every output bit
/// depends on every input bit.
const fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A per-worker constant: the splitmix64 output for the worker's id.
fn worker_salt(worker: u32) -> u64 {
    mix64((u64::from(worker) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// Rendezvous (highest random weight) score of worker `worker` for a key hash.
///
/// A splitmix64 mix of `key_hash` xor a per-worker constant derived from the id. Ties (equal
/// scores) go to the lower worker id.
pub fn score(key_hash: u64, worker: u32) -> u64 {
    mix64(key_hash ^ worker_salt(worker))
}

/// The order of preference: higher score first, then lower id.
fn priority(key_hash: u64, worker: u32) -> (u64, Reverse<u32>) {
    (score(key_hash, worker), Reverse(worker))
}

/// The live worker with the highest score; `None` if `live` is empty.
pub fn pick(key_hash: u64, live: impl IntoIterator<Item = u32>) -> Option<u32> {
    live.into_iter()
        .max_by_key(|&worker| priority(key_hash, worker))
}

/// All given workers ordered by rank for this key (best first): the "next worker by rank".
///
/// A worker given more than once appears once.
pub fn rank(key_hash: u64, workers: impl IntoIterator<Item = u32>) -> Vec<u32> {
    let mut ranked: Vec<u32> = workers.into_iter().collect();
    ranked.sort_unstable_by_key(|&worker| Reverse(priority(key_hash, worker)));
    ranked.dedup();
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Key;
    use crate::route::key_hash;

    /// Key hashes of 10,000 distinct byte keys.
    fn hashes(count: u32) -> impl Iterator<Item = u64> {
        (0..count).map(|i| key_hash(Key::Bytes(&i.to_le_bytes())))
    }

    #[test]
    fn pick_is_the_first_by_rank() {
        for hash in hashes(1000) {
            for n in [1, 2, 3, 7, 16] {
                assert_eq!(pick(hash, 0..n), Some(rank(hash, 0..n)[0]));
            }
            let live = [9, 2, 5];
            assert_eq!(pick(hash, live), Some(rank(hash, live)[0]));
        }
    }

    #[test]
    fn empty_and_duplicates() {
        assert_eq!(pick(1, []), None);
        assert!(rank(1, []).is_empty());
        assert_eq!(pick(1, [4, 4]), Some(4));
        let mut ranked = rank(7, [3, 1, 3, 2, 1]);
        assert_eq!(ranked.len(), 3);
        ranked.sort_unstable();
        assert_eq!(ranked, [1, 2, 3]);
    }

    #[test]
    fn removing_a_worker_moves_only_its_keys_and_adding_it_back_restores_them() {
        let all: Vec<u32> = (0..8).collect();
        let before: Vec<u32> = hashes(10_000)
            .map(|h| pick(h, all.clone()).unwrap())
            .collect();
        for gone in [0, 3, 7] {
            let live = all.iter().copied().filter(|&w| w != gone);
            let mut moved = 0;
            for (hash, &old) in hashes(10_000).zip(&before) {
                let new = pick(hash, live.clone()).unwrap();
                if old == gone {
                    moved += 1;
                    assert_eq!(new, rank(hash, all.clone())[1], "moves to the next by rank");
                } else {
                    assert_eq!(new, old, "a key of a live worker moved");
                }
            }
            assert!(
                moved > 10_000 / 8 / 2,
                "worker {gone} held only {moved} keys"
            );
        }
        let after: Vec<u32> = hashes(10_000)
            .map(|h| pick(h, all.clone()).unwrap())
            .collect();
        assert_eq!(before, after);
    }

    /// Pearson's chi-square statistic of the key counts per worker, for `keys` keys.
    fn chi_square(workers: u32, keys: u32) -> f64 {
        let mut counts = vec![0u32; workers as usize];
        for hash in hashes(keys) {
            counts[pick(hash, 0..workers).unwrap() as usize] += 1;
        }
        let expected = f64::from(keys) / f64::from(workers);
        counts
            .iter()
            .map(|&count| (f64::from(count) - expected).powi(2) / expected)
            .sum()
    }

    #[test]
    fn every_worker_gets_its_share() {
        for workers in 2..=16 {
            let mut counts = vec![0u32; workers as usize];
            for hash in hashes(20_000) {
                counts[pick(hash, 0..workers).unwrap() as usize] += 1;
            }
            let share = 20_000 / workers;
            for (worker, &count) in counts.iter().enumerate() {
                assert!(
                    count > share * 3 / 4 && count < share * 5 / 4,
                    "{workers} workers: worker {worker} got {count} keys, expected about {share}"
                );
            }
        }
    }

    #[test]
    fn keys_spread_evenly() {
        // p >= 0.001 over 100,000 keys: the chi-square statistic stays below the 0.999
        // quantile of the chi-square distribution with workers - 1 degrees of freedom.
        let quantiles = [
            (2, 10.828),
            (3, 13.816),
            (4, 16.266),
            (8, 24.322),
            (16, 37.697),
            (64, 103.442),
        ];
        for (workers, bound) in quantiles {
            let statistic = chi_square(workers, 100_000);
            assert!(
                statistic < bound,
                "{workers} workers: chi-square {statistic:.1} >= {bound:.1}"
            );
        }
    }
}
