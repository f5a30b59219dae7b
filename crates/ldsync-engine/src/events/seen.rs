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
/// (each page faulted twice: read as the zero page, then copied on its first write). The
/// mapping reserves address space for the table to double in place ([`RESERVED_BYTES`]): only
/// the pages of the table in use are ever touched, and a table that doubles keeps its pages
/// rather than faulting in a new table twice its size beside the old one (on a virtual machine
/// whose host takes back free memory, a fresh huge page costs 1-2 ms a MiB to fault in).
#[derive(Debug)]
pub(crate) struct SeenSet {
    /// The table is its first `capacity` slots; the rest is address space, never touched.
    slots: memmap2::MmapMut,
    /// `128 - log2(slots)`: a hash's slot is `hash >> shift`.
    shift: u32,
    /// Slots in the table.
    capacity: usize,
    len: usize,
    has_zero: bool,
    /// Bytes of address space a new mapping reserves, at least.
    reserve: usize,
}

impl Default for SeenSet {
    fn default() -> Self {
        Self::with_bits(10, RESERVED_BYTES)
    }
}

/// Bytes in a slot.
const SLOT: usize = 16;

/// Address space reserved for a table to grow in place: 1 GiB, room for 48 million identities.
/// Reserving costs no memory until the pages are written; a system that refuses that much
/// address space gets a mapping of the table alone, which grows by copying into a larger one.
const RESERVED_BYTES: usize = 1 << 30;

impl SeenSet {
    fn with_bits(bits: u32, reserve: usize) -> Self {
        let capacity = 1_usize << bits;
        let bytes = capacity * SLOT;
        // Past the reservation, room for two more doublings.
        let reserved = reserve.max(bytes * 4);
        // Like a `Vec` that cannot allocate, a table that cannot be mapped ends the process.
        let slots = memmap2::MmapMut::map_anon(reserved)
            .or_else(|_| memmap2::MmapMut::map_anon(bytes))
            .expect("memory for the identities of the run");
        // Advice only: without huge pages the table works the same, slower.
        let _ = slots.advise(memmap2::Advice::HugePage);
        Self { slots, shift: 128 - bits, capacity, len: 0, has_zero: false, reserve }
    }

    /// Hashes in the set.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len + usize::from(self.has_zero)
    }

    /// The hashes in the set, ascending, read out of the table as they are handed out.
    pub(crate) fn into_sorted(self) -> SortedHashes {
        SortedHashes::new(self)
    }

    /// [`SeenSet::into_sorted`], collected.
    #[cfg(test)]
    pub(crate) fn into_sorted_hashes(self) -> Vec<u128> {
        self.into_sorted().collect()
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
                    self.set_slot(at, hash);
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

    fn set_slot(&mut self, at: usize, hash: u128) {
        self.slots[at * SLOT..(at + 1) * SLOT].copy_from_slice(&hash.to_ne_bytes());
    }

    fn home(&self, hash: u128) -> usize {
        usize::try_from(hash >> self.shift).expect("shifted below the table's size")
    }

    /// Doubles the table: in place when the mapping has room, else into a new mapping.
    fn grow(&mut self) {
        if self.capacity * 2 * SLOT <= self.slots.len() {
            self.grow_in_place();
            return;
        }
        let bits = 128 - self.shift + 1;
        let old = std::mem::replace(self, Self::with_bits(bits, self.reserve));
        self.has_zero = old.has_zero;
        // The old slots are in (nearly) ascending order of hash, so the new table is filled
        // front to back as well.
        for at in 0..old.capacity {
            let hash = old.slot(at);
            if hash != 0 {
                self.insert(hash);
            }
        }
    }

    /// Doubles the table within its mapping, moving each hash from the last slot to the first.
    ///
    /// A hash's new home is twice its old one (or one past), so a hash at or before its new
    /// home moves up, into slots already moved out of or never used: it never lands on a hash
    /// not yet moved, and never probes across one (which, moved later, would leave a hole
    /// before it). The few hashes that would (far past their old home at the table's start,
    /// or probing past its new end) are set aside and inserted afterwards.
    fn grow_in_place(&mut self) {
        let old_capacity = self.capacity;
        self.capacity *= 2;
        self.shift -= 1;
        let mut aside = Vec::new();
        for at in (0..old_capacity).rev() {
            let hash = self.slot(at);
            if hash == 0 {
                continue;
            }
            self.set_slot(at, 0);
            let home = self.home(hash);
            if home < at {
                aside.push(hash);
                continue;
            }
            let mut to = home;
            while to < self.capacity && self.slot(to) != 0 {
                to += 1;
            }
            if to == self.capacity {
                aside.push(hash);
            } else {
                self.set_slot(to, hash);
            }
        }
        self.len -= aside.len();
        for hash in aside {
            self.insert(hash);
        }
    }
}

/// The hashes of a [`SeenSet`], ascending, without a copy of them all.
///
/// The table holds them nearly in order: a hash sits at its home slot (its top bits) or past
/// it, in the same run of occupied slots. Two hashes out of order are therefore always in one
/// run (the smaller one's home is at or before the larger one's, and the larger one was
/// pushed past it), so sorting each run on its own (a few slots) sorts them all. The last run
/// may wrap around the table's end: its wrapped part, at the table's start, is set aside
/// until then.
#[derive(Debug)]
pub(crate) struct SortedHashes {
    set: SeenSet,
    /// The next slot to read.
    at: usize,
    /// The start of the table that belongs to the run wrapping around its end.
    wrapped: Vec<u128>,
    /// The run being handed out, sorted descending (handed out from its end).
    run: Vec<u128>,
    zero: bool,
}

impl SortedHashes {
    fn new(set: SeenSet) -> Self {
        let zero = set.has_zero;
        let (mut wrapped, mut run) = (Vec::new(), Vec::new());
        // The table is never full, so there is an empty slot: the runs start after it.
        let mut at = 0;
        while at < set.capacity {
            let hash = set.slot(at);
            if hash == 0 {
                break;
            }
            // Before its home: pushed past the end of the table.
            if set.home(hash) > at {
                wrapped.push(hash);
            } else {
                run.push(hash);
            }
            at += 1;
        }
        run.sort_unstable_by(|a, b| b.cmp(a));
        Self { set, at, wrapped, run, zero }
    }

    /// Reads the next run into `run`; `false` past the end of the table.
    fn next_run(&mut self) -> bool {
        let capacity = self.set.capacity;
        while self.at < capacity && self.set.slot(self.at) == 0 {
            self.at += 1;
        }
        while self.at < capacity {
            let hash = self.set.slot(self.at);
            if hash == 0 {
                break;
            }
            self.run.push(hash);
            self.at += 1;
        }
        if self.at == capacity {
            self.run.append(&mut self.wrapped);
        }
        self.run.sort_unstable_by(|a, b| b.cmp(a));
        !self.run.is_empty()
    }
}

impl Iterator for SortedHashes {
    type Item = u128;

    fn next(&mut self) -> Option<u128> {
        if std::mem::take(&mut self.zero) {
            return Some(0);
        }
        loop {
            if let Some(hash) = self.run.pop() {
                return Some(hash);
            }
            if !self.next_run() {
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

        /// A table mapped with little room (it doubles in place twice, then copies itself
        /// into a larger mapping) answers as one that only grows in place.
        #[test]
        fn grows_alike_in_place_and_by_copying(
            hashes in prop::collection::vec(
                prop_oneof![
                    any::<u128>(),
                    (0_u128..256).prop_map(|low| low << 112),
                    (0_u128..64).prop_map(|low| u128::MAX - (low << 100)),
                ],
                0..5_000,
            ),
        ) {
            let mut copied = SeenSet::with_bits(4, 0);
            let mut in_place = SeenSet::with_bits(4, RESERVED_BYTES);
            for &hash in &hashes {
                prop_assert_eq!(copied.insert(hash), in_place.insert(hash), "{:#x}", hash);
            }
            prop_assert!(hashes.iter().all(|&hash| !in_place.insert(hash)));
            prop_assert_eq!(copied.len(), in_place.len());
            prop_assert_eq!(copied.into_sorted_hashes(), in_place.into_sorted_hashes());
        }

        /// Runs of slots that wrap around the table's end come out in order too.
        #[test]
        fn hashes_crowded_at_both_ends_come_out_sorted(
            low in prop::collection::vec(0_u128..1 << 120, 0..200),
            high in prop::collection::vec(u128::MAX - (1 << 120)..=u128::MAX, 0..200),
        ) {
            let mut set = SeenSet::default();
            let mut expected: Vec<u128> = high.iter().chain(&low).copied().collect();
            for &hash in &expected {
                set.insert(hash);
            }
            expected.sort_unstable();
            expected.dedup();
            prop_assert_eq!(set.into_sorted_hashes(), expected);
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
