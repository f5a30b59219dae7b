//! A set of keys in one arena, ordered by fingerprint.

use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_128;

use crate::{
    spill::{Runs, Spill},
    MappedKeySet, SnapshotError,
};

/// The fingerprint of a key: xxh3, 128 bits.
///
/// Sets are ordered by (fingerprint, key bytes), so they are exact whatever the fingerprints.
/// Membership probes ([`crate::Index`]) trust the fingerprint alone: two distinct keys share a
/// 128-bit fingerprint with odds of about 10⁻²¹ in a set of a billion keys.
pub fn fingerprint(key: &[u8]) -> u128 {
    xxh3_128(key)
}

/// Read access to keys ordered by (fingerprint, bytes): an in-memory [`KeySet`] or a
/// snapshot file ([`crate::MappedKeySet`]).
pub trait SortedKeys {
    /// How many keys.
    fn len(&self) -> usize;
    /// The fingerprint of key `index`.
    fn fingerprint(&self, index: usize) -> u128;
    /// The bytes of key `index`.
    fn key(&self, index: usize) -> &[u8];
    /// Whether there are no keys.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Says that a scan is done with keys `indices` for now: a set mapped from a file lets the
    /// operating system take their pages back from the process (they stay in the page cache,
    /// and come back if read again). Sets in memory ignore it.
    fn release(&self, _indices: std::ops::Range<usize>) {}
}

/// How many entries a scan reads between two releases of the pages behind it.
pub(crate) const RELEASE_STEP: usize = 1 << 16;

/// Sorts pairs by their fingerprint's high 64 bits: a least-significant-digit radix sort, eight
/// passes of 8 bits (256 buckets stay in cache), linear in the number of keys.
fn radix_sort(pairs: &mut Vec<(u64, u32)>) {
    const BITS: u32 = 8;
    const BUCKETS: usize = 1 << BITS;
    if pairs.len() < 256 {
        pairs.sort_unstable_by_key(|pair| pair.0);
        return;
    }
    let mut buffer = vec![(0_u64, 0_u32); pairs.len()];
    let mut counts = [[0_usize; BUCKETS]; 8];
    let digit = |value: u64, pass: usize| ((value >> (pass * 8)) & 0xff) as usize;
    // One counting pass for all eight digits.
    for pair in pairs.iter() {
        for (pass, count) in counts.iter_mut().enumerate() {
            count[digit(pair.0, pass)] += 1;
        }
    }
    for (pass, count) in counts.iter_mut().enumerate() {
        // A digit every key shares orders nothing: skip its pass.
        if count.contains(&pairs.len()) {
            continue;
        }
        let mut position = 0;
        for slot in count.iter_mut() {
            let here = *slot;
            *slot = position;
            position += here;
        }
        for pair in pairs.iter() {
            let slot = &mut count[digit(pair.0, pass)];
            buffer[*slot] = *pair;
            *slot += 1;
        }
        std::mem::swap(pairs, &mut buffer);
    }
}

/// Collects keys in any order; [`KeySetBuilder::build`] orders them and drops duplicates.
///
/// Given a [`Spill`] ([`KeySetBuilder::spilling`]), it holds at most the spill's threshold of
/// keys in memory and writes sorted runs past it; [`KeySetBuilder::finish`] then merges them
/// into one file.
#[derive(Debug, Default)]
pub struct KeySetBuilder {
    unsorted: KeySet,
    /// Keys pushed, duplicates and spilled keys included.
    pushed: usize,
    runs: Option<Runs>,
}

impl KeySetBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty builder that spills past `spill`'s threshold.
    pub fn spilling(spill: Spill) -> Self {
        Self { runs: Some(Runs::new(spill)), ..Self::default() }
    }

    /// From now on, spill past `spill`'s threshold.
    pub fn spill_to(&mut self, spill: Spill) {
        self.runs = Some(Runs::new(spill));
    }

    /// Adds a key.
    pub fn push(&mut self, key: &[u8]) {
        self.push_with_fingerprint(key, fingerprint(key));
    }

    /// Adds a key whose fingerprint the caller computed already.
    pub fn push_with_fingerprint(&mut self, key: &[u8], fingerprint: u128) {
        self.unsorted.push(key, fingerprint);
        self.pushed += 1;
        if let Some(runs) = &mut self.runs {
            if runs.due(&self.unsorted) {
                let sorted = std::mem::take(&mut self.unsorted).sorted();
                if let Some(kept) = runs.write(sorted) {
                    self.unsorted = kept;
                }
            }
        }
    }

    /// Keys pushed so far, duplicates included.
    pub fn len(&self) -> usize {
        self.pushed
    }

    /// Where the builder spills, if it does.
    pub fn spill(&self) -> Option<&Spill> {
        self.runs.as_ref().map(Runs::spill)
    }

    /// Whether nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.pushed == 0
    }

    /// The ordered, distinct set.
    ///
    /// # Panics
    ///
    /// When the builder spilled: use [`KeySetBuilder::finish`], which reports a failed write.
    pub fn build(self) -> KeySet {
        self.finish().expect("a builder that never spilled cannot fail")
    }

    /// The ordered, distinct set: in memory, or, when the builder spilled, merged into one
    /// file in the spill folder and read in place.
    ///
    /// # Errors
    ///
    /// When a run could not be written or read back.
    pub fn finish(self) -> Result<KeySet, SnapshotError> {
        let Some(mut runs) = self.runs.filter(|runs| !runs.is_empty() || runs.failed()) else {
            return Ok(self.unsorted.sorted());
        };
        if !self.unsorted.is_empty() {
            if let Some(kept) = runs.write(self.unsorted.sorted()) {
                drop(kept);
            }
        }
        runs.merge()
    }
}

/// Distinct keys, ordered by (fingerprint, bytes), stored in one arena, or in a snapshot file
/// when they outgrew the memory a run may use ([`KeySet::from_file`]).
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    arena: Vec<u8>,
    /// `ends[i]` is where key `i` ends in the arena; it starts where key `i - 1` ends.
    ends: Vec<u64>,
    fingerprints: Vec<u128>,
    /// The file that holds the keys instead, when they spilled to disk (the vectors are empty).
    pub(crate) file: Option<Arc<MappedKeySet>>,
}

impl PartialEq for KeySet {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && (0..self.len())
                .all(|i| self.fingerprint(i) == other.fingerprint(i) && self.key(i) == other.key(i))
    }
}

impl Eq for KeySet {}

impl SortedKeys for KeySet {
    fn len(&self) -> usize {
        match &self.file {
            Some(file) => file.len(),
            None => self.ends.len(),
        }
    }

    fn fingerprint(&self, index: usize) -> u128 {
        match &self.file {
            Some(file) => file.fingerprint(index),
            None => self.fingerprints[index],
        }
    }

    fn release(&self, indices: std::ops::Range<usize>) {
        if let Some(file) = &self.file {
            file.release(indices);
        }
    }

    fn key(&self, index: usize) -> &[u8] {
        if let Some(file) = &self.file {
            return file.key(index);
        }
        let start = if index == 0 { 0 } else { self.ends[index - 1] };
        #[expect(
            clippy::cast_possible_truncation,
            reason = "the arena fits in memory, so in usize"
        )]
        let range = start as usize..self.ends[index] as usize;
        &self.arena[range]
    }
}

impl KeySet {
    /// Collects keys in any order; duplicates collapse to one.
    pub fn from_keys<K: AsRef<[u8]>>(keys: impl IntoIterator<Item = K>) -> Self {
        let mut unsorted = Self::default();
        for key in keys {
            unsorted.push(key.as_ref(), fingerprint(key.as_ref()));
        }
        unsorted.sorted()
    }

    /// Keys that spilled to a snapshot file, read in place: the set holds none of them in
    /// memory, and scans let the file's pages go behind them ([`SortedKeys::release`]).
    pub fn from_file(file: MappedKeySet) -> Self {
        Self { file: Some(Arc::new(file)), ..Self::default() }
    }

    /// Whether the keys live in a file rather than in memory.
    pub fn is_on_disk(&self) -> bool {
        self.file.is_some()
    }

    /// Appends a key. The caller keeps the order, or sorts afterwards.
    pub(crate) fn push(&mut self, key: &[u8], fingerprint: u128) {
        debug_assert!(self.file.is_none(), "a set read from a file is never appended to");
        self.arena.extend_from_slice(key);
        self.ends.push(self.arena.len() as u64);
        self.fingerprints.push(fingerprint);
    }

    /// Rebuilds a set from its parts, checking that they describe an ordered set. (The snapshot
    /// file's checksum already vouches for every byte, so fingerprints are not recomputed.)
    pub(crate) fn from_parts(
        arena: Vec<u8>,
        ends: Vec<u64>,
        fingerprints: Vec<u128>,
    ) -> Result<Self, &'static str> {
        if ends.len() != fingerprints.len() {
            return Err("as many offsets as fingerprints");
        }
        check_ends(ends.len(), arena.len() as u64, |i| ends[i])?;
        let set = Self { arena, ends, fingerprints, file: None };
        check_order(&set, set.arena.len() as u64)?;
        Ok(set)
    }

    /// Orders the keys and drops duplicates.
    fn sorted(mut self) -> Self {
        assert!(u32::try_from(self.len()).is_ok(), "a key set holds fewer than 2^32 keys");
        // The ordered copy is built beside this set: give back the room its growth reserved
        // first (up to as much again as it holds), so that the two never need three sets' room.
        self.arena.shrink_to_fit();
        self.ends.shrink_to_fit();
        self.fingerprints.shrink_to_fit();
        #[expect(clippy::cast_possible_truncation, reason = "checked above: len < 2^32; high bits")]
        let mut order: Vec<(u64, u32)> = self
            .fingerprints
            .iter()
            .enumerate()
            .map(|(i, &fp)| ((fp >> 64) as u64, i as u32))
            .collect();
        radix_sort(&mut order);
        // Equal high halves (duplicates, or a rare collision) are ordered by the whole
        // fingerprint, then the key.
        let full = |index: u32| (self.fingerprints[index as usize], self.key(index as usize));
        let mut start = 0;
        while start < order.len() {
            let mut end = start + 1;
            while end < order.len() && order[end].0 == order[start].0 {
                end += 1;
            }
            if end - start > 1 {
                order[start..end].sort_unstable_by(|a, b| full(a.1).cmp(&full(b.1)));
            }
            start = end;
        }
        order.dedup_by(|a, b| full(a.1) == full(b.1));
        // One part at a time, each old part let go once copied: the fingerprints first, then
        // the keys, so the copy never holds both sets whole.
        let fingerprints: Vec<u128> =
            order.iter().map(|&(_, index)| self.fingerprints[index as usize]).collect();
        self.fingerprints = Vec::new();
        let mut sorted = Self {
            arena: Vec::with_capacity(self.arena.len()),
            ends: Vec::with_capacity(order.len()),
            fingerprints,
            file: None,
        };
        for &(_, index) in &order {
            sorted.arena.extend_from_slice(self.key(index as usize));
            sorted.ends.push(sorted.arena.len() as u64);
        }
        sorted
    }

    /// How many distinct keys the set holds.
    pub fn len(&self) -> usize {
        SortedKeys::len(self)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes of key `index`, in (fingerprint, bytes) order.
    pub fn key(&self, index: usize) -> &[u8] {
        SortedKeys::key(self, index)
    }

    /// The fingerprint of key `index`.
    pub fn fingerprint(&self, index: usize) -> u128 {
        SortedKeys::fingerprint(self, index)
    }

    /// Whether the set holds `key`.
    pub fn contains(&self, key: &[u8]) -> bool {
        let target = (fingerprint(key), key);
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let mid = low + (high - low) / 2;
            match (self.fingerprint(mid), self.key(mid)).cmp(&target) {
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

    /// Total bytes of the keys.
    pub fn key_bytes(&self) -> u64 {
        match &self.file {
            Some(file) => file.key_bytes(),
            None => self.arena.len() as u64,
        }
    }

    /// Bytes of memory the set holds (none for a set read from a file).
    pub fn heap_bytes(&self) -> usize {
        self.arena.capacity() + 8 * self.ends.capacity() + 16 * self.fingerprints.capacity()
    }

    /// Bytes of memory the keys use, growth room left out: what a builder weighs against its
    /// spill threshold.
    pub(crate) fn used_bytes(&self) -> usize {
        self.arena.len() + 24 * self.ends.len()
    }
}

/// Checks that `count` end offsets never go back and stay inside an arena of `arena_len`
/// bytes, so that every key is a slice of the arena; run it before reading any key.
pub(crate) fn check_ends(
    count: usize,
    arena_len: u64,
    end: impl Fn(usize) -> u64,
) -> Result<(), &'static str> {
    let mut start = 0;
    for index in 0..count {
        let here = end(index);
        if here < start || here > arena_len {
            return Err("key offsets out of range");
        }
        start = here;
    }
    if start == arena_len {
        Ok(())
    } else {
        Err("the arena holds bytes past the last key")
    }
}

/// Checks that `keys` are strictly ordered by (fingerprint, bytes); `arena_len` is the total
/// of their lengths as the file or the set claims it.
pub(crate) fn check_order(keys: &impl SortedKeys, arena_len: u64) -> Result<(), &'static str> {
    let mut total = 0_u64;
    for index in 0..keys.len() {
        total += keys.key(index).len() as u64;
        if index > 0 {
            let (before, here) = (keys.fingerprint(index - 1), keys.fingerprint(index));
            if before > here || (before == here && keys.key(index - 1) >= keys.key(index)) {
                return Err("keys out of order");
            }
        }
    }
    if total == arena_len {
        Ok(())
    } else {
        Err("the key lengths do not add up to the arena")
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
        for key in &keys {
            assert!(set.contains(key.as_bytes()));
        }
        assert!(!set.contains(b"k3000"));
    }
}
