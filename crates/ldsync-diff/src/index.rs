//! A directory over keys ordered by fingerprint, for membership probes in constant time.

use crate::SortedKeys;

/// The most bits of fingerprint the directory spans: 256 K entries (1 MiB) at most.
const MAX_BITS: u32 = 18;
/// Keys per bucket the directory aims at: 8 fingerprints are 128 bytes, two cache lines.
const KEYS_PER_BUCKET_BITS: u32 = 3;

/// Buckets of fewer keys are read from their start: they span a cache line or two.
const INTERPOLATE_FROM: usize = 16;

/// For each value of the fingerprints' top bits, where its keys start in the ordered set.
///
/// Fingerprints are uniform, so each bucket holds about eight keys. The directory is small
/// enough to stay in the processor's cache (512 KiB for a million keys), and a bucket's
/// fingerprints are adjacent: a probe costs about one miss to memory, whatever the set's size.
#[derive(Debug, Clone)]
pub struct Index {
    bits: u32,
    starts: Vec<u32>,
}

impl Default for Index {
    /// The index of the empty set.
    fn default() -> Self {
        Self { bits: 0, starts: vec![0, 0] }
    }
}

impl Index {
    /// The directory of `keys`.
    ///
    /// # Panics
    ///
    /// When `keys` holds 2^32 keys or more (snapshot files refuse those).
    pub fn build(keys: &impl SortedKeys) -> Self {
        let mut index = Self::counting(keys.len());
        for position in 0..keys.len() {
            index.count(keys.fingerprint(position));
        }
        index.counted()
    }

    /// An empty directory for `len` keys, to be given each fingerprint ([`Index::count`]) and
    /// finished ([`Index::counted`]): for a pass that reads the fingerprints anyway.
    ///
    /// # Panics
    ///
    /// When `len` is 2^32 or more.
    pub(crate) fn counting(len: usize) -> Self {
        assert!(u32::try_from(len).is_ok(), "an index spans fewer than 2^32 keys");
        let bits = if len <= 1 {
            0
        } else {
            (usize::BITS - (len - 1).leading_zeros())
                .saturating_sub(KEYS_PER_BUCKET_BITS)
                .min(MAX_BITS)
        };
        Self { bits, starts: vec![0; (1 << bits) + 1] }
    }

    /// Counts one key's fingerprint, in the set's order.
    pub(crate) fn count(&mut self, fingerprint: u128) {
        let bucket = self.bucket(fingerprint);
        self.starts[bucket + 1] += 1;
    }

    /// The directory, once every fingerprint was counted.
    pub(crate) fn counted(mut self) -> Self {
        for bucket in 1..self.starts.len() {
            self.starts[bucket] += self.starts[bucket - 1];
        }
        self
    }

    fn bucket(&self, fingerprint: u128) -> usize {
        if self.bits == 0 {
            0
        } else {
            // At most MAX_BITS bits remain after the shift.
            (fingerprint >> (128 - self.bits)) as usize
        }
    }

    /// Where the keys whose fingerprints share `fingerprint`'s bucket are: the key with this
    /// fingerprint, if the set holds one, is in this range.
    pub fn bucket_range(&self, fingerprint: u128) -> std::ops::Range<usize> {
        let bucket = self.bucket(fingerprint);
        self.starts[bucket] as usize..self.starts[bucket + 1] as usize
    }

    /// The position in `keys` (the set this index was built over) of the key with this
    /// fingerprint, if the set holds one.
    pub fn find(&self, keys: &impl SortedKeys, fingerprint: u128) -> Option<usize> {
        self.find_in(keys, fingerprint, self.bucket_range(fingerprint))
    }

    /// Where in `range` (the bucket of `fingerprint`) a key with that fingerprint most likely
    /// is: fingerprints are uniform, so the bits after the bucket's place it within the
    /// bucket. In a large bucket (about forty keys at ten million, where the directory stops
    /// growing to stay in cache) a lookup starts there and reads a cache line or two, not the
    /// whole bucket; a small bucket is read from its start.
    pub fn likely_position(&self, fingerprint: u128, range: &std::ops::Range<usize>) -> usize {
        let len = range.end.saturating_sub(range.start);
        if len < INTERPOLATE_FROM {
            return range.start;
        }
        // The 32 bits after the bucket's (bits <= MAX_BITS, so the shift stays in range).
        let within = ((fingerprint << self.bits) >> 96) as u64;
        let offset = ((within * len as u64) >> 32) as usize;
        range.start + offset
    }

    /// [`Index::find`], given the fingerprint's [`Index::bucket_range`].
    pub fn find_in(
        &self,
        keys: &impl SortedKeys,
        fingerprint: u128,
        range: std::ops::Range<usize>,
    ) -> Option<usize> {
        if range.is_empty() {
            return None;
        }
        if range.len() < INTERPOLATE_FROM {
            // A cache line or two: read from the start.
            for position in range {
                let here = keys.fingerprint(position);
                if here >= fingerprint {
                    return (here == fingerprint).then_some(position);
                }
            }
            return None;
        }
        let mut at = self.likely_position(fingerprint, &range);
        let here = keys.fingerprint(at);
        if here == fingerprint {
            return Some(at);
        }
        if here < fingerprint {
            // Forward to the first fingerprint not below.
            for position in at + 1..range.end {
                let here = keys.fingerprint(position);
                if here >= fingerprint {
                    return (here == fingerprint).then_some(position);
                }
            }
            return None;
        }
        // Back to the first fingerprint not below.
        while at > range.start && keys.fingerprint(at - 1) >= fingerprint {
            at -= 1;
        }
        (keys.fingerprint(at) == fingerprint).then_some(at)
    }

    /// Bytes of memory the index holds.
    pub fn heap_bytes(&self) -> usize {
        4 * self.starts.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{fingerprint, KeySet};

    #[test]
    fn a_large_bucket_is_searched_from_a_guess_both_ways() {
        struct Fixed(Vec<u128>);
        impl SortedKeys for Fixed {
            fn len(&self) -> usize {
                self.0.len()
            }
            fn fingerprint(&self, index: usize) -> u128 {
                self.0[index]
            }
            fn key(&self, _: usize) -> &[u8] {
                b""
            }
        }
        // Sixteen keys, one bucket; the guess of `j << 123` is position j. Half the keys
        // crowd at the bucket's end, so guesses there overshoot and the search walks back.
        let mut fingerprints: Vec<u128> = (0..8).map(|j| j << 123).collect();
        fingerprints.extend((0..8).map(|i| (15 << 123) + i));
        let keys = Fixed(fingerprints);
        let index = Index::build(&keys);
        assert_eq!(index.bucket_range(0), 0..16);
        assert_eq!(index.find(&keys, 7 << 123), Some(7));
        assert_eq!(index.find(&keys, (15 << 123) + 3), Some(11));
        assert_eq!(index.find(&keys, 14 << 123), None);
        assert_eq!(index.find(&keys, (3 << 123) + 1), None);
        assert_eq!(index.find(&keys, (15 << 123) + 8), None);
    }

    #[test]
    fn finds_every_member_and_nothing_else() {
        for size in [0_usize, 1, 2, 3, 100, 5_000] {
            let set = KeySet::from_keys((0..size).map(|i| format!("member-{i}")));
            let index = Index::build(&set);
            for i in 0..size {
                let key = format!("member-{i}");
                let at = index.find(&set, fingerprint(key.as_bytes())).expect("a member is found");
                assert_eq!(set.key(at), key.as_bytes());
            }
            for i in 0..100 {
                assert_eq!(index.find(&set, fingerprint(format!("other-{i}").as_bytes())), None);
            }
        }
    }
}
