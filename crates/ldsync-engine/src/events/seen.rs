//! The identities a run has staged so far: a set of 128-bit hashes built for the way a run
//! fills it, a chunk at a time in hash order.
//!
//! Identity hashes are uniform, so a slot is picked by the hash's top bits, and a chunk
//! inserted in hash order walks the table from its start to its end: the processor's
//! prefetcher sees an ascending stream instead of a random read per insert. A general hash set
//! (`hashbrown`) spent a sixth of a 1 M-event run's CPU on cache misses here, two per insert
//! (its control bytes, then the slot).

/// A set of 128-bit hashes, open addressing with linear probing; `0` marks an empty slot
/// (the hash 0 itself is kept aside).
///
/// The table is an anonymous mapping advised to use huge pages: a million identities take a
/// 32 MiB table, which in 4 KiB pages cost a sixth of the staging thread's time in page faults
/// (each page faulted twice: read as the zero page, then copied on its first write).
#[derive(Debug)]
pub(crate) struct SeenSet {
    slots: memmap2::MmapMut,
    /// `128 - log2(slots)`: a hash's slot is `hash >> shift`.
    shift: u32,
    /// Slots in the table.
    capacity: usize,
    len: usize,
    has_zero: bool,
}

impl Default for SeenSet {
    fn default() -> Self {
        Self::with_bits(10)
    }
}

/// Bytes in a slot.
const SLOT: usize = 16;

impl SeenSet {
    fn with_bits(bits: u32) -> Self {
        let capacity = 1_usize << bits;
        // Like a `Vec` that cannot allocate, a table that cannot be mapped ends the process.
        let slots = memmap2::MmapMut::map_anon(capacity * SLOT)
            .expect("memory for the identities of the run");
        // Advice only: without huge pages the table works the same, slower.
        let _ = slots.advise(memmap2::Advice::HugePage);
        Self { slots, shift: 128 - bits, capacity, len: 0, has_zero: false }
    }

    /// Hashes in the set.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len + usize::from(self.has_zero)
    }

    /// The hashes in the set, ascending, the table let go.
    ///
    /// The table holds them nearly in order already: a hash sits at its home slot (its top
    /// bits) or a few slots past it, so only neighbours are out of order, and they are put
    /// right in place rather than sorted again with a scratch copy of them all.
    pub(crate) fn into_sorted_hashes(self) -> Vec<u128> {
        let mut hashes = Vec::with_capacity(self.len + usize::from(self.has_zero));
        if self.has_zero {
            hashes.push(0);
        }
        hashes.extend((0..self.capacity).map(|at| self.slot(at)).filter(|&hash| hash != 0));
        drop(self);
        settle(&mut hashes);
        hashes
    }

    /// Makes room for `additional` more hashes without growing. A sorted chunk must fit
    /// before it is inserted: a table grown in the middle of one would hold the chunk's first
    /// part (its smallest hashes) in a few slots at its start, one long probe for all.
    pub(crate) fn reserve(&mut self, additional: usize) {
        while Self::over_load(self.len + additional, self.capacity) {
            self.grow();
        }
    }

    /// Adds `hash`; whether it was new. Inserting in ascending order is fastest, after
    /// [`SeenSet::reserve`] for the whole run of hashes.
    pub(crate) fn insert(&mut self, hash: u128) -> bool {
        if hash == 0 {
            return !std::mem::replace(&mut self.has_zero, true);
        }
        if Self::over_load(self.len + 1, self.capacity) {
            self.grow();
        }
        let mask = self.capacity - 1;
        let mut at = self.home(hash);
        loop {
            match self.slot(at) {
                0 => {
                    self.slots[at * SLOT..(at + 1) * SLOT].copy_from_slice(&hash.to_ne_bytes());
                    self.len += 1;
                    return true;
                }
                slot if slot == hash => return false,
                _ => at = (at + 1) & mask,
            }
        }
    }

    /// Whether `len` hashes fill more of `capacity` slots than probes stay short at: three
    /// quarters (a chunk inserted in hash order probes its neighbours' slots, which are in
    /// cache; at most half full, ten million identities took 512 MiB instead of 256).
    fn over_load(len: usize, capacity: usize) -> bool {
        len * 4 > capacity * 3
    }

    fn slot(&self, at: usize) -> u128 {
        let bytes = &self.slots[at * SLOT..(at + 1) * SLOT];
        u128::from_ne_bytes(bytes.try_into().expect("a slot is 16 bytes"))
    }

    fn home(&self, hash: u128) -> usize {
        usize::try_from(hash >> self.shift).expect("shifted below the table's size")
    }

    /// Doubles the table. The old slots are in (nearly) ascending order of hash, so the new
    /// table is filled front to back as well.
    fn grow(&mut self) {
        let bits = 128 - self.shift + 1;
        let old = std::mem::replace(self, Self::with_bits(bits));
        self.has_zero = old.has_zero;
        for at in 0..old.capacity {
            let hash = old.slot(at);
            if hash != 0 {
                self.insert(hash);
            }
        }
    }
}

/// Sorts `hashes`, which are nearly sorted, by moving each one back past the larger ones
/// before it; past a budget of moves (hashes far from their place), by a full sort instead.
fn settle(hashes: &mut [u128]) {
    let mut budget = hashes.len().saturating_mul(4);
    for at in 1..hashes.len() {
        let hash = hashes[at];
        let mut to = at;
        while to > 0 && hashes[to - 1] > hash {
            if budget == 0 {
                hashes[to] = hash;
                hashes.sort_unstable();
                return;
            }
            budget -= 1;
            hashes[to] = hashes[to - 1];
            to -= 1;
        }
        hashes[to] = hash;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever is inserted, in whatever order, the set answers as a `HashSet` does;
        /// hashes share their top bits often, so probes run long and wrap around.
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

        /// Whatever the order, settling sorts: nearly sorted input in place, anything else
        /// past the budget by a full sort.
        #[test]
        fn settling_sorts(
            mut hashes in prop::collection::vec(any::<u128>(), 0..2_000),
            swaps in prop::collection::vec((0_usize..2_000, 0_usize..4), 0..300),
            presort in any::<bool>(),
        ) {
            if presort {
                hashes.sort_unstable();
            }
            let len = hashes.len();
            for (at, step) in swaps {
                if len > 1 {
                    hashes.swap(at % len, (at + step) % len);
                }
            }
            let mut expected = hashes.clone();
            expected.sort_unstable();
            settle(&mut hashes);
            prop_assert_eq!(hashes, expected);
        }
    }

    #[test]
    fn sorted_chunks_of_a_million_hashes_are_each_new_once() {
        let hashes: Vec<u128> = (1..=1_000_000_u128)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
            .collect();
        let mut set = SeenSet::default();
        for chunk in hashes.chunks(65_536) {
            set.reserve(chunk.len());
            let mut sorted = chunk.to_vec();
            sorted.sort_unstable();
            assert!(sorted.iter().all(|&hash| set.insert(hash)));
        }
        assert!(hashes.iter().all(|&hash| !set.insert(hash)));
        assert_eq!(set.len(), hashes.len());
        set.insert(0);
        let all = set.into_sorted_hashes();
        let mut expected = hashes;
        expected.push(0);
        expected.sort_unstable();
        assert_eq!(all, expected);
    }
}
