//! A packed-pair prefilter: the positions where two bytes stand at fixed distances, found with
//! memchr's vector routines (AVX2 when the CPU has it, else SSE2 on x86_64; a memchr loop
//! elsewhere and on haystacks too short for vectors).
//!
//! Header field lines are found with it on the original bytes, case-insensitively, by choosing
//! the two bytes of `"\n" + name + ":"` that case does not change: the `\n` and the `:`.

use memchr::arch::all::packedpair::{Finder as Scalar, Pair};
#[cfg(target_arch = "x86_64")]
use memchr::arch::x86_64::{avx2::packedpair::Finder as Avx2, sse2::packedpair::Finder as Sse2};

/// The candidates of a needle whose bytes at two offsets are known.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PairFinder {
    scalar: Scalar,
    #[cfg(target_arch = "x86_64")]
    vector: Option<Vector>,
}

/// memchr's vector prefilters on x86_64.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug)]
enum Vector {
    Avx2(Avx2),
    Sse2(Sse2),
}

impl PairFinder {
    /// Candidates for `needle` from its bytes at `index1` and `index2` (distinct offsets in
    /// the needle); `None` if the offsets are not.
    pub(crate) fn new(needle: &[u8], index1: u8, index2: u8) -> Option<PairFinder> {
        let pair = Pair::with_indices(needle, index1, index2)?;
        Some(PairFinder {
            scalar: Scalar::with_pair(needle, pair)?,
            #[cfg(target_arch = "x86_64")]
            vector: Avx2::with_pair(needle, pair)
                .map(Vector::Avx2)
                .or_else(|| Sse2::with_pair(needle, pair).map(Vector::Sse2)),
        })
    }

    /// The first position in `haystack` where the needle's pair of bytes stands (the needle
    /// itself may not: the caller checks).
    pub(crate) fn find(&self, haystack: &[u8]) -> Option<usize> {
        #[cfg(target_arch = "x86_64")]
        match &self.vector {
            Some(Vector::Avx2(avx2)) if haystack.len() >= avx2.min_haystack_len() => {
                return avx2.find_prefilter(haystack);
            }
            Some(Vector::Sse2(sse2)) if haystack.len() >= sse2.min_haystack_len() => {
                return sse2.find_prefilter(haystack);
            }
            _ => {}
        }
        self.scalar.find_prefilter(haystack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every candidate from `at` on, as the callers walk them.
    fn candidates(finder: &PairFinder, haystack: &[u8]) -> Vec<usize> {
        let mut found = Vec::new();
        let mut at = 0;
        while let Some(offset) = haystack.get(at..).and_then(|rest| finder.find(rest)) {
            found.push(at + offset);
            at += offset + 1;
        }
        found
    }

    #[test]
    fn finds_every_pair_at_any_length() {
        let finder = PairFinder::new(b"\nab:", 0, 3).unwrap();
        for len in 0..300 {
            let haystack: Vec<u8> = (0..len)
                .map(|i| match i % 7 {
                    0 => b'\n',
                    3 => b':',
                    _ => b'x',
                })
                .collect();
            let expected: Vec<usize> = (0..len)
                .filter(|&i| haystack.get(i) == Some(&b'\n') && haystack.get(i + 3) == Some(&b':'))
                .collect();
            assert_eq!(candidates(&finder, &haystack), expected, "length {len}");
        }
    }

    #[test]
    fn refuses_bad_offsets() {
        assert!(PairFinder::new(b"ab", 0, 0).is_none());
        assert!(PairFinder::new(b"ab", 0, 2).is_none());
    }
}
