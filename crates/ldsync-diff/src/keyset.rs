//! A set of keys in one arena, ordered by fingerprint.

use xxhash_rust::xxh3::xxh3_64;

/// The fingerprint that orders keys: xxh3, 64 bits.
pub fn fingerprint(key: &[u8]) -> u64 {
    xxh3_64(key)
}

/// Sorts pairs by their fingerprint: a least-significant-digit radix sort, four passes of 16
/// bits, linear in the number of keys (the comparison sort it replaces was the costliest step
/// of ordering a million keys).
fn radix_sort(pairs: &mut Vec<(u64, u32)>) {
    const BITS: u32 = 16;
    const BUCKETS: usize = 1 << BITS;
    if pairs.len() < 256 {
        pairs.sort_unstable_by_key(|pair| pair.0);
        return;
    }
    let mut buffer = vec![(0_u64, 0_u32); pairs.len()];
    let mut counts = vec![0_usize; BUCKETS];
    for pass in 0..64 / BITS {
        let shift = pass * BITS;
        #[expect(clippy::cast_possible_truncation, reason = "masked to 16 bits")]
        let digit = |fingerprint: u64| ((fingerprint >> shift) & (BUCKETS as u64 - 1)) as usize;
        counts.fill(0);
        for pair in pairs.iter() {
            counts[digit(pair.0)] += 1;
        }
        let mut position = 0;
        for count in &mut counts {
            let here = *count;
            *count = position;
            position += here;
        }
        for pair in pairs.iter() {
            let slot = &mut counts[digit(pair.0)];
            buffer[*slot] = *pair;
            *slot += 1;
        }
        std::mem::swap(pairs, &mut buffer);
    }
}

/// Collects keys in any order; [`KeySetBuilder::build`] orders them and drops duplicates.
#[derive(Debug, Default)]
pub struct KeySetBuilder {
    unsorted: KeySet,
}

impl KeySetBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key.
    pub fn push(&mut self, key: &[u8]) {
        self.unsorted.push_unsorted(key);
    }

    /// Keys pushed so far, duplicates included.
    pub fn len(&self) -> usize {
        self.unsorted.len()
    }

    /// Whether nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.unsorted.is_empty()
    }

    /// The ordered, distinct set.
    pub fn build(self) -> KeySet {
        self.unsorted.sorted()
    }
}

/// Distinct keys, ordered by (fingerprint, bytes), stored in one arena.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    arena: Vec<u8>,
    /// `ends[i]` is where key `i` ends in the arena; it starts where key `i - 1` ends.
    ends: Vec<u64>,
    fingerprints: Vec<u64>,
}

impl KeySet {
    /// Collects keys in any order; duplicates collapse to one.
    pub fn from_keys<K: AsRef<[u8]>>(keys: impl IntoIterator<Item = K>) -> Self {
        let mut unsorted = Self::default();
        for key in keys {
            unsorted.push_unsorted(key.as_ref());
        }
        unsorted.sorted()
    }

    fn push_unsorted(&mut self, key: &[u8]) {
        self.arena.extend_from_slice(key);
        self.ends.push(self.arena.len() as u64);
        self.fingerprints.push(fingerprint(key));
    }

    /// Rebuilds a set from its parts, checking that they describe an ordered set. (The snapshot
    /// file's checksum already vouches for every byte, so fingerprints are not recomputed.)
    pub(crate) fn from_parts(
        arena: Vec<u8>,
        ends: Vec<u64>,
        fingerprints: Vec<u64>,
    ) -> Result<Self, &'static str> {
        let set = Self { arena, ends, fingerprints };
        let mut start = 0;
        for (index, &end) in set.ends.iter().enumerate() {
            if end < start || end > set.arena.len() as u64 {
                return Err("key offsets out of range");
            }
            start = end;
            if index > 0
                && (set.fingerprints[index - 1], set.key(index - 1))
                    >= (set.fingerprints[index], set.key(index))
            {
                return Err("keys out of order");
            }
        }
        if start != set.arena.len() as u64 {
            return Err("the arena holds bytes past the last key");
        }
        Ok(set)
    }

    pub(crate) fn arena(&self) -> &[u8] {
        &self.arena
    }

    pub(crate) fn ends(&self) -> &[u64] {
        &self.ends
    }

    pub(crate) fn fingerprints(&self) -> &[u64] {
        &self.fingerprints
    }

    /// Orders the keys and drops duplicates.
    fn sorted(self) -> Self {
        assert!(u32::try_from(self.len()).is_ok(), "a key set holds fewer than 2^32 keys");
        #[expect(clippy::cast_possible_truncation, reason = "checked above: len < 2^32")]
        let mut order: Vec<(u64, u32)> =
            self.fingerprints.iter().enumerate().map(|(i, &fp)| (fp, i as u32)).collect();
        radix_sort(&mut order);
        // Equal fingerprints (duplicates, or a rare collision) are ordered by their keys.
        let mut start = 0;
        while start < order.len() {
            let mut end = start + 1;
            while end < order.len() && order[end].0 == order[start].0 {
                end += 1;
            }
            if end - start > 1 {
                order[start..end]
                    .sort_unstable_by(|a, b| self.key(a.1 as usize).cmp(self.key(b.1 as usize)));
            }
            start = end;
        }
        order.dedup_by(|a, b| a.0 == b.0 && self.key(a.1 as usize) == self.key(b.1 as usize));
        let mut sorted = Self {
            arena: Vec::with_capacity(self.arena.len()),
            ends: Vec::with_capacity(order.len()),
            fingerprints: Vec::with_capacity(order.len()),
        };
        for (fingerprint, index) in order {
            sorted.arena.extend_from_slice(self.key(index as usize));
            sorted.ends.push(sorted.arena.len() as u64);
            sorted.fingerprints.push(fingerprint);
        }
        sorted
    }

    /// How many distinct keys the set holds.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The bytes of key `index`, in (fingerprint, bytes) order.
    pub fn key(&self, index: usize) -> &[u8] {
        let start = if index == 0 { 0 } else { self.ends[index - 1] };
        #[expect(
            clippy::cast_possible_truncation,
            reason = "the arena fits in memory, so in usize"
        )]
        let range = start as usize..self.ends[index] as usize;
        &self.arena[range]
    }

    /// The fingerprint of key `index`.
    pub fn fingerprint(&self, index: usize) -> u64 {
        self.fingerprints[index]
    }

    /// Whether the set holds `key`.
    pub fn contains(&self, key: &[u8]) -> bool {
        let target = (fingerprint(key), key);
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let mid = low + (high - low) / 2;
            match (self.fingerprints[mid], self.key(mid)).cmp(&target) {
                std::cmp::Ordering::Less => low = mid + 1,
                std::cmp::Ordering::Greater => high = mid,
                std::cmp::Ordering::Equal => return true,
            }
        }
        false
    }

    /// The keys, in (fingerprint, bytes) order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        (0..self.len()).map(|index| self.key(index))
    }

    /// Bytes of memory the set holds.
    pub fn heap_bytes(&self) -> usize {
        self.arena.capacity() + 8 * self.ends.capacity() + 8 * self.fingerprints.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn radix_sort_orders_like_a_comparison_sort() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut pairs: Vec<(u64, u32)> = (0..20_000)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                // Some fingerprints repeat, as duplicates do.
                (if i % 7 == 0 { 42 } else { state }, i)
            })
            .collect();
        let mut expected = pairs.clone();
        expected.sort_by_key(|pair| pair.0);
        radix_sort(&mut pairs);
        let fingerprints: Vec<u64> = pairs.iter().map(|pair| pair.0).collect();
        let wanted: Vec<u64> = expected.iter().map(|pair| pair.0).collect();
        assert_eq!(fingerprints, wanted);
    }

    #[test]
    fn a_built_set_is_ordered_and_distinct() {
        let keys: Vec<String> = (0..5_000).map(|i| format!("k{}", i % 3_000)).collect();
        let set = KeySet::from_keys(&keys);
        assert_eq!(set.len(), 3_000);
        let parts =
            KeySet::from_parts(set.arena.clone(), set.ends.clone(), set.fingerprints.clone());
        assert_eq!(parts.unwrap(), set, "from_parts accepts only ordered, distinct sets");
    }
}
