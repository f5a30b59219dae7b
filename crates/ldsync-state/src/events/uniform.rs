//! Sorting by uniform 128-bit hashes: one counting pass over the top 16 bits, then each of the
//! 65 536 small buckets sorted on its own. Identity hashes are uniform, so the buckets hold
//! a few items each; a general sort of a million of them costs several times more.

/// Sorts `items` ascending (by `Ord`, which must order them by `key` first), where `key` is a
/// uniform 128-bit hash.
pub fn sort_by_uniform_key<T: Copy + Ord>(items: &mut Vec<T>, key: impl Fn(&T) -> u128) {
    UniformSort::default().sort(items, key);
}

/// [`sort_by_uniform_key`] with its buffers kept from one sort to the next (a run sorts a
/// chunk of hashes at a time, and fresh buffers would cost their page faults each time).
#[derive(Debug)]
pub struct UniformSort<T> {
    sorted: Vec<T>,
    starts: Vec<usize>,
    next: Vec<usize>,
}

impl<T> Default for UniformSort<T> {
    fn default() -> Self {
        Self { sorted: Vec::new(), starts: Vec::new(), next: Vec::new() }
    }
}

impl<T: Copy + Ord> UniformSort<T> {
    /// Sorts `items` as [`sort_by_uniform_key`] does.
    pub fn sort(&mut self, items: &mut Vec<T>, key: impl Fn(&T) -> u128) {
        const BITS: u32 = 16;
        // Small inputs: the counting pass would cost more than it saves.
        if items.len() < 1 << 12 {
            items.sort_unstable();
            return;
        }
        let bucket = |item: &T| (key(item) >> (128 - BITS)) as usize;
        let starts = &mut self.starts;
        starts.clear();
        starts.resize((1 << BITS) + 1, 0);
        for item in items.iter() {
            starts[bucket(item) + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        self.next.clear();
        self.next.extend_from_slice(starts);
        let sorted = &mut self.sorted;
        sorted.clear();
        // Every slot is written once below; `T: Copy` has no drop to skip.
        sorted.resize(items.len(), items[0]);
        for item in items.iter() {
            let slot = &mut self.next[bucket(item)];
            sorted[*slot] = *item;
            *slot += 1;
        }
        for window in starts.windows(2) {
            sorted[window[0]..window[1]].sort_unstable();
        }
        // The unsorted buffer is the next sort's.
        std::mem::swap(items, sorted);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The same order as `sort_unstable`, for uniform hashes and for ones that share
        /// their top bits (one bucket holds them all).
        #[test]
        fn sorts_as_sort_unstable_does(
            hashes in prop::collection::vec(any::<u128>(), 0..10_000),
            crowded in any::<bool>(),
        ) {
            let mut items: Vec<(u128, u32)> = hashes
                .iter()
                .enumerate()
                .map(|(i, &h)| (if crowded { h >> 20 } else { h }, u32::try_from(i % 7).unwrap()))
                .collect();
            let mut expected = items.clone();
            expected.sort_unstable();
            sort_by_uniform_key(&mut items, |(hash, _)| *hash);
            prop_assert_eq!(items, expected);
        }
    }
}
