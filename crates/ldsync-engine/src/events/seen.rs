//! The identities a run has staged so far: a set of 128-bit hashes built for the way a run
//! fills it, a chunk at a time in hash order.
//!
//! The hashes themselves are kept as the runs they arrive in (each chunk's new hashes,
//! ascending), one after another in memory, and are merged into one ascending sequence only
//! when the run commits them. Whether a hash is new is answered by a Bloom filter in front of
//! them, a few bytes a hash: nearly every new hash is told apart by the filter alone, and only
//! the few it lets through (one in tens of thousands, or far fewer) are looked up in the runs. A hash
//! table of all of them (16 bytes a hash, at most three quarters full, and twice the table
//! when it grows) cost a million-event run a cache miss per insert and 32 MiB of fresh pages;
//! the filter of a million hashes is 4 MiB, read front to back as a sorted chunk is checked.
//!
//! A result that repeats many rows lets many hashes through the filter; once looking them up
//! in the runs would cost more than the inserts themselves, the set answers from a hash set of
//! all its hashes instead.

use std::sync::Arc;

use super::stage::HashSet128;

/// A set of 128-bit hashes that says, as each is inserted, whether it was new.
#[derive(Debug)]
#[cfg_attr(test, derive(Clone))]
pub(crate) struct SeenSet {
    /// The Bloom filter: blocks of one cache line, a hash's block picked by its top bits, so
    /// hashes inserted in ascending order read the filter front to back.
    filter: Vec<Block>,
    /// `128 - log2(filter.len())`: a hash's block is `hash >> shift`.
    shift: u32,
    /// The finished runs, each ascending.
    runs: Vec<Vec<u128>>,
    /// The run being filled: a hash below its last one starts the next run.
    open: Vec<u128>,
    len: usize,
    /// Runs read to look up the hashes the filter let through; past the inserts made, the
    /// set answers from `exact`.
    runs_read: usize,
    /// All the hashes, once looking them up in the runs has cost too much.
    exact: Option<HashSet128>,
}

/// A block of the filter: one cache line of eight words. A hash sets one bit in each word.
type Block = [u64; 8];

/// Hashes a block holds before the filter doubles. At this load each word has about a quarter
/// of its bits set, and a new hash passes when its eight bits all are: about one in 30 000
/// (more in the blocks that hold more than their share), and far fewer just after a doubling.
const HASHES_PER_BLOCK: usize = 20;

/// Blocks of a new set's filter (64 KiB).
const FIRST_BLOCKS: usize = 1 << 10;

impl Default for SeenSet {
    fn default() -> Self {
        Self::with_blocks(FIRST_BLOCKS)
    }
}

impl SeenSet {
    fn with_blocks(blocks: usize) -> Self {
        let (filter, shift) = empty_filter(blocks);
        Self {
            filter,
            shift,
            runs: Vec::new(),
            open: Vec::new(),
            len: 0,
            runs_read: 0,
            exact: None,
        }
    }

    /// Hashes in the set.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The hashes in the set, ascending.
    #[cfg(test)]
    pub(crate) fn into_sorted(self) -> SortedHashes {
        self.into_sorted_parts(1).pop().expect("one part").1
    }

    /// The hashes in the set, ascending, in `parts` parts that follow one another (each the
    /// hashes of a range of top bits), each with its count: parts can be written side by
    /// side.
    pub(crate) fn into_sorted_parts(mut self, parts: usize) -> Vec<(usize, SortedHashes)> {
        self.finish_run();
        SortedHashes::parts(self.runs, parts)
    }

    /// [`SeenSet::into_sorted`], collected.
    #[cfg(test)]
    pub(crate) fn into_sorted_hashes(self) -> Vec<u128> {
        self.into_sorted().collect()
    }

    /// Makes room for `additional` more hashes, which start a run of their own: the filter
    /// grows now rather than in the middle of them, and their run is allocated once.
    pub(crate) fn reserve(&mut self, additional: usize) {
        self.finish_run();
        self.grow_filter(self.len + additional);
        self.open.reserve_exact(additional);
    }

    /// Adds `hash`; whether it was new. Inserting in ascending order is fastest, after
    /// [`SeenSet::reserve`] for the whole run of hashes.
    pub(crate) fn insert(&mut self, hash: u128) -> bool {
        let new = match &mut self.exact {
            Some(exact) => exact.insert(hash),
            None => self.filter_insert(hash),
        };
        if !new {
            return false;
        }
        if self.open.last().is_some_and(|&last| last > hash) {
            self.finish_run();
        }
        self.open.push(hash);
        self.len += 1;
        if self.exact.is_none() && self.len > self.filter.len() * HASHES_PER_BLOCK {
            self.grow_filter(self.len);
        }
        true
    }

    /// Whether `hash` is new, by the filter (and the runs, when the filter lets it through);
    /// sets its bits in the filter when it is.
    fn filter_insert(&mut self, hash: u128) -> bool {
        let (block, bits) = probe(hash, self.shift);
        let passed = self.filter[block].iter().zip(&bits).all(|(word, bit)| word & bit != 0);
        if passed {
            // The hash just inserted: a row repeated in the same chunk.
            if self.open.last() == Some(&hash) {
                return false;
            }
            if self.runs_read > self.len + EXACT_AFTER {
                return self.make_exact().insert(hash);
            }
            if self.in_runs(hash) {
                return false;
            }
        }
        set_bits(&mut self.filter[block], bits);
        true
    }

    /// Whether `hash`, let through by the filter, is in the runs (counted in `runs_read`).
    #[cold]
    fn in_runs(&mut self, hash: u128) -> bool {
        self.runs_read += self.runs.len() + 1;
        self.runs.iter().chain([&self.open]).any(|run| run.binary_search(&hash).is_ok())
    }

    /// Puts every hash into `exact`, which answers from now on, and drops the filter.
    #[cold]
    fn make_exact(&mut self) -> &mut HashSet128 {
        let mut exact = HashSet128::default();
        exact.reserve(self.len);
        exact.extend(self.runs.iter().flatten().chain(&self.open).copied());
        self.filter = Vec::new();
        self.exact.insert(exact)
    }

    /// Ends the open run (if it holds any hash).
    fn finish_run(&mut self) {
        if !self.open.is_empty() {
            self.runs.push(std::mem::take(&mut self.open));
        }
    }

    /// Makes the filter large enough for `hashes` (doubling it, and setting the bits of every
    /// hash again).
    fn grow_filter(&mut self, hashes: usize) {
        if self.exact.is_some() || hashes <= self.filter.len() * HASHES_PER_BLOCK {
            return;
        }
        let (mut filter, shift) =
            empty_filter(hashes.div_ceil(HASHES_PER_BLOCK).next_power_of_two());
        for &hash in self.runs.iter().flatten().chain(&self.open) {
            let (block, bits) = probe(hash, shift);
            set_bits(&mut filter[block], bits);
        }
        self.filter = filter;
        self.shift = shift;
    }
}

/// A filter of `blocks` blocks (a power of two) with no bit set, and its shift.
fn empty_filter(blocks: usize) -> (Vec<Block>, u32) {
    debug_assert!(blocks.is_power_of_two());
    (vec![[0; 8]; blocks], 128 - blocks.trailing_zeros())
}

/// Sets a hash's `bits` (from [`probe`]) in its block.
fn set_bits(block: &mut Block, bits: Block) {
    for (word, bit) in block.iter_mut().zip(bits) {
        *word |= bit;
    }
}

/// The block of `hash` in a filter of `2^(128 - shift)` blocks (from its top bits), and the bit
/// it sets in each word of the block (from its low 48 bits, six for each word, which the block
/// does not depend on).
fn probe(hash: u128, shift: u32) -> (usize, Block) {
    let block = usize::try_from(hash >> shift).expect("shifted below the filter's size");
    #[expect(clippy::cast_possible_truncation, reason = "the low 64 bits")]
    let low = hash as u64;
    let bits = std::array::from_fn(|word| 1 << ((low >> (6 * word)) & 63));
    (block, bits)
}

/// Inserts beyond those made that look-ups in the runs may read runs for, before the set
/// keeps an exact hash set instead.
const EXACT_AFTER: usize = 1 << 16;

/// The hashes of a [`SeenSet`] in a range of buckets, ascending, a bucket at a time: the
/// hashes whose top bits are the same are taken from the front of each run (where they lie
/// together, the runs being sorted), sorted (a few, or a dozen), and handed out. The hashes
/// are uniform, so a bucket holds few of them; a merge of the runs by comparisons cost a
/// sixth of a million-event run's CPU at its end, when nothing else is left to do.
#[derive(Debug)]
pub(crate) struct SortedHashes {
    runs: Arc<[Vec<u128>]>,
    /// The next position in each run.
    next: Vec<usize>,
    /// The bucket of each run's next hash ([`u64::MAX`], no bucket's number, past its end):
    /// a bucket's runs are found in one pass over these.
    heads: Vec<u64>,
    /// `128 - log2(buckets)`: a hash's bucket is `hash >> shift`.
    shift: u32,
    /// The next bucket to gather.
    bucket: u64,
    /// The first bucket past the range.
    end: u64,
    /// The bucket being handed out, sorted descending (handed out from its end).
    gathered: Vec<u128>,
}

impl SortedHashes {
    /// The hashes of `runs`, in `parts` ranges of buckets (at least one), with their counts.
    fn parts(runs: Vec<Vec<u128>>, parts: usize) -> Vec<(usize, Self)> {
        let hashes: usize = runs.iter().map(Vec::len).sum();
        // A few hashes a bucket (fewer to sort), between 16 and 65 536 buckets.
        let bits = (hashes / 4).max(1).ilog2().clamp(4, 16);
        let shift = 128 - bits;
        let buckets = 1_u64 << bits;
        let parts = u64::try_from(parts).unwrap_or(u64::MAX).clamp(1, buckets);
        let runs: Arc<[Vec<u128>]> = runs.into();
        let starts = |bucket: u64| -> Vec<usize> {
            runs.iter()
                .map(|run| run.partition_point(|&hash| self::bucket(hash, shift) < bucket))
                .collect()
        };
        let mut next = starts(0);
        (1..=parts)
            .map(|part| {
                let begin = buckets * (part - 1) / parts;
                let end = buckets * part / parts;
                let ends = starts(end);
                let count = next.iter().zip(&ends).map(|(start, end)| end - start).sum();
                let heads = runs
                    .iter()
                    .zip(&next)
                    .map(|(run, &at)| run.get(at).map_or(u64::MAX, |&hash| bucket(hash, shift)))
                    .collect();
                let sorted = Self {
                    runs: Arc::clone(&runs),
                    next: std::mem::replace(&mut next, ends),
                    heads,
                    shift,
                    bucket: begin,
                    end,
                    gathered: Vec::new(),
                };
                (count, sorted)
            })
            .collect()
    }

    /// Gathers the next bucket of the range that holds a hash; `false` past the last.
    fn gather(&mut self) -> bool {
        let shift = self.shift;
        while self.bucket < self.end {
            let current = self.bucket;
            for (index, head) in self.heads.iter_mut().enumerate() {
                if *head != current {
                    continue;
                }
                let run = &self.runs[index];
                let mut at = self.next[index];
                while let Some(&hash) = run.get(at).filter(|&&hash| bucket(hash, shift) == current)
                {
                    self.gathered.push(hash);
                    at += 1;
                }
                self.next[index] = at;
                *head = run.get(at).map_or(u64::MAX, |&hash| bucket(hash, shift));
            }
            self.bucket += 1;
            if !self.gathered.is_empty() {
                self.gathered.sort_unstable_by(|a, b| b.cmp(a));
                return true;
            }
        }
        false
    }
}

/// The bucket of `hash`: its top `128 - shift` bits (at most 16).
fn bucket(hash: u128, shift: u32) -> u64 {
    u64::try_from(hash >> shift).expect("at most 16 bits")
}

impl Iterator for SortedHashes {
    type Item = u128;

    fn next(&mut self) -> Option<u128> {
        loop {
            if let Some(hash) = self.gathered.pop() {
                return Some(hash);
            }
            if !self.gather() {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    /// `count` distinct uniform hashes (an odd multiplier is a bijection).
    pub(super) fn uniform(count: u128, salt: u128) -> Vec<u128> {
        (1..=count)
            .map(|i| (i + salt).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
            .collect()
    }

    proptest! {
        /// Whatever is inserted, in whatever order, the set answers as a `HashSet` does;
        /// hashes share their top and low bits often, so the filter lets many through.
        #[test]
        fn answers_as_a_hash_set_does(
            hashes in prop::collection::vec(
                prop_oneof![
                    any::<u128>(),
                    (0_u128..64).prop_map(|low| low),
                    (0_u128..64).prop_map(|low| u128::MAX - low),
                    (0_u128..64).prop_map(|low| (1 << 127) | low),
                ],
                0..3_000,
            ),
        ) {
            let mut set = SeenSet::default();
            let mut reference = HashSet::new();
            for hash in hashes {
                prop_assert_eq!(set.insert(hash), reference.insert(hash), "{:#x}", hash);
            }
            prop_assert_eq!(set.len(), reference.len());
            let mut expected: Vec<u128> = reference.into_iter().collect();
            expected.sort_unstable();
            prop_assert_eq!(set.into_sorted_hashes(), expected);
        }

        /// Chunks inserted as a run inserts them (sorted, after `reserve`), some hashes
        /// repeated within a chunk and across chunks: the answers of a `HashSet`.
        #[test]
        fn sorted_chunks_answer_as_a_hash_set_does(
            chunks in prop::collection::vec(
                prop::collection::vec(
                    prop_oneof![4 => any::<u128>(), 1 => (0_u128..32).prop_map(|i| i << 123)],
                    0..600,
                ),
                0..12,
            ),
        ) {
            let mut set = SeenSet::default();
            let mut reference = HashSet::new();
            for mut chunk in chunks {
                chunk.sort_unstable();
                set.reserve(chunk.len());
                for hash in chunk {
                    prop_assert_eq!(set.insert(hash), reference.insert(hash), "{:#x}", hash);
                }
            }
            let mut expected: Vec<u128> = reference.into_iter().collect();
            expected.sort_unstable();
            prop_assert_eq!(set.into_sorted_hashes(), expected);
        }
    }

    #[test]
    fn sorted_chunks_of_a_million_hashes_are_each_new_once() {
        let hashes = uniform(1_000_000, 0);
        let mut set = SeenSet::default();
        for chunk in hashes.chunks(16_384) {
            set.reserve(chunk.len());
            let mut sorted = chunk.to_vec();
            sorted.sort_unstable();
            assert!(sorted.iter().all(|&hash| set.insert(hash)));
        }
        // The filter told nearly all of them apart: few look-ups in the runs, no exact set.
        assert!(set.runs_read < 62 * 100, "{} runs read", set.runs_read);
        assert!(set.exact.is_none());
        assert!(hashes.iter().all(|&hash| !set.insert(hash)));
        assert_eq!(set.len(), hashes.len());
        set.insert(0);
        set.insert(u128::MAX);
        let parts = set.clone().into_sorted_parts(3);
        let mut joined = Vec::new();
        for (count, part) in parts {
            let before = joined.len();
            joined.extend(part);
            assert_eq!(joined.len() - before, count);
        }
        let all = set.into_sorted_hashes();
        assert_eq!(joined, all);
        let mut expected = hashes;
        expected.extend([0, u128::MAX]);
        expected.sort_unstable();
        assert_eq!(all, expected);
    }

    /// A result that repeats every row in a later chunk: the set turns exact early rather than
    /// looking each repeat up in every run.
    #[test]
    fn many_repeats_make_the_set_exact() {
        let hashes = uniform(200_000, 7);
        let mut set = SeenSet::default();
        for chunk in hashes.chunks(4_096).chain(hashes.chunks(4_096)) {
            set.reserve(chunk.len());
            let mut sorted = chunk.to_vec();
            sorted.sort_unstable();
            let new: Vec<bool> = sorted.iter().map(|&hash| set.insert(hash)).collect();
            assert!(new.iter().all(|&n| n) || new.iter().all(|&n| !n));
        }
        assert!(set.exact.is_some());
        assert!(set.runs_read < 200_000 + EXACT_AFTER + 100, "{} runs read", set.runs_read);
        assert_eq!(set.len(), 200_000);
        let mut expected = hashes;
        expected.sort_unstable();
        assert_eq!(set.into_sorted_hashes(), expected);
    }

    #[test]
    fn rows_repeated_within_a_chunk_are_new_once_without_look_ups() {
        let mut set = SeenSet::default();
        let mut chunk: Vec<u128> = uniform(5_000, 3).into_iter().flat_map(|h| [h, h]).collect();
        chunk.sort_unstable();
        set.reserve(chunk.len());
        let new = chunk.iter().filter(|&&hash| set.insert(hash)).count();
        assert_eq!(new, 5_000);
        assert_eq!(set.runs_read, 0);
    }
}

#[cfg(test)]
mod timing {
    use super::*;

    #[test]
    #[ignore = "a timing to run by hand: --release -- --ignored --nocapture"]
    fn timing_of_handing_out_a_million() {
        let hashes = super::tests::uniform(1_000_000, 0);
        for _ in 0..5 {
            let mut set = SeenSet::default();
            for chunk in hashes.chunks(16_384) {
                set.reserve(chunk.len());
                let mut sorted = chunk.to_vec();
                sorted.sort_unstable();
                for hash in sorted {
                    set.insert(hash);
                }
            }
            let start = std::time::Instant::now();
            let count = set.into_sorted().count();
            println!("{count} in {:?}", start.elapsed());
        }
    }
}
