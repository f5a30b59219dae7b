//! The committed membership of a segment, and the diff of a query's keys against it as they
//! stream in.
//!
//! What LaunchDarkly holds is a base snapshot plus a small delta committed on top of it
//! ([`Committed`]). A run offers each key the query returns to a [`Probe`] while the rows
//! arrive: a key the membership holds is marked, any other key is an add. When the query ends,
//! the unmarked members are the removes. Nothing is sorted but the adds, and nothing of the
//! query's result is kept but the adds: a run that changes 1 % of a segment orders 1 % of it.
//!
//! A commit composes the run's delta with the committed one ([`Delta::compose`]); when the
//! delta has grown past a share of the base, the two are folded into a new base
//! ([`write_applied`]).

use std::path::Path;

use crate::snapshot::write_keys;

use crate::{
    fingerprint, keyset::RELEASE_STEP, merge::order, write_sorted, Arrival, ArrivalHint,
    ArrivalLog, Index, KeySet, KeySetBuilder, MappedKeySet, SnapshotError, SortedKeys,
};

/// The members a run adds and removes, each set ordered by (fingerprint, bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    /// Keys to add: not members before.
    pub adds: KeySet,
    /// Keys to remove: members before.
    pub removes: KeySet,
}

impl Delta {
    /// Adds plus removes.
    pub fn len(&self) -> usize {
        self.adds.len() + self.removes.len()
    }

    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// [`Delta::compose`], borrowing instead of copying when either side changes nothing (a
    /// first load composes its whole membership with an empty delta).
    #[must_use]
    pub fn compose_or_borrow<'a>(&'a self, next: &'a Delta) -> std::borrow::Cow<'a, Delta> {
        use std::borrow::Cow;
        if self.is_empty() {
            Cow::Borrowed(next)
        } else if next.is_empty() {
            Cow::Borrowed(self)
        } else {
            Cow::Owned(self.compose(next))
        }
    }

    /// The delta of `self` followed by `next` (which was computed against the membership with
    /// `self` applied), against the same base: a key added then removed, or removed then added
    /// back, drops out.
    #[must_use]
    pub fn compose(&self, next: &Delta) -> Delta {
        Delta {
            adds: union(&minus(&self.adds, &next.removes), &minus(&next.adds, &self.removes)),
            removes: union(&minus(&self.removes, &next.adds), &minus(&next.removes, &self.adds)),
        }
    }
}

/// Keys of `a` not in `b`.
fn minus(a: &KeySet, b: &KeySet) -> KeySet {
    let mut out = KeySet::default();
    let mut j = 0;
    for i in 0..a.len() {
        while j < b.len() && order(b, j, a, i).is_lt() {
            j += 1;
        }
        if j < b.len() && order(b, j, a, i).is_eq() {
            continue;
        }
        out.push(a.key(i), a.fingerprint(i));
    }
    out
}

/// The union of two sets.
fn union(a: &KeySet, b: &KeySet) -> KeySet {
    let mut out = KeySet::default();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let take_a = j == b.len() || (i < a.len() && order(a, i, b, j).is_le());
        if take_a {
            if j < b.len() && order(a, i, b, j).is_eq() {
                j += 1;
            }
            out.push(a.key(i), a.fingerprint(i));
            i += 1;
        } else {
            out.push(b.key(j), b.fingerprint(j));
            j += 1;
        }
    }
    out
}

/// A segment's committed membership: the base snapshot and the delta committed on top of it.
#[derive(Debug, Default)]
pub struct Committed {
    base: MappedKeySet,
    base_index: Index,
    delta: Delta,
    adds_index: Index,
    removes_index: Index,
    hint: Option<ArrivalHint>,
}

impl Committed {
    /// The membership `base` with `delta` applied (the delta's adds are not in the base, its
    /// removes are).
    pub fn new(base: MappedKeySet, delta: Delta) -> Self {
        // Built as the file was checked, in one pass that let the pages go behind it: a probe
        // reads few of them again (the hint places most keys).
        let base_index = base.index().clone();
        Self {
            base_index,
            adds_index: Index::build(&delta.adds),
            removes_index: Index::build(&delta.removes),
            base,
            delta,
            hint: None,
        }
    }

    /// The same membership, probed with the help of the order its base's keys arrived in
    /// last time (see [`ArrivalHint`]).
    #[must_use]
    pub fn with_hint(mut self, hint: Option<ArrivalHint>) -> Self {
        self.hint = hint;
        self
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.base.len() - self.delta.removes.len() + self.delta.adds.len()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The base snapshot.
    pub fn base(&self) -> &MappedKeySet {
        &self.base
    }

    /// Whether an arrival hint came with the base.
    pub fn has_hint(&self) -> bool {
        self.hint.is_some()
    }

    /// The delta committed on top of the base.
    pub fn delta(&self) -> &Delta {
        &self.delta
    }

    /// Starts diffing a query's keys against this membership.
    pub fn into_probe(self) -> Probe {
        // Without a hint, the run records the order it sees the base's keys in, for the next.
        let arrival = (self.hint.is_none() && !self.base.is_empty())
            .then(|| Arrival::Listed(Vec::with_capacity(self.base.len())));
        // The base positions of the delta's removes, found once here rather than looked up
        // for every key the hint places.
        let mut removed =
            vec![0; if self.delta.removes.is_empty() { 0 } else { self.base.len().div_ceil(64) }];
        for i in 0..self.delta.removes.len() {
            let fp = self.delta.removes.fingerprint(i);
            if let Some(position) = self.base_index.find(&self.base, fp) {
                mark(&mut removed, position);
            }
        }
        Probe {
            arrival,
            removed,
            cursor: 0,
            hint_released: 0,
            predicted: 0,
            base_hits: 0,
            base_seen: vec![0; self.base.len().div_ceil(64)],
            adds_seen: vec![0; self.delta.adds.len().div_ceil(64)],
            new: KeySetBuilder::new(),
            committed: self,
        }
    }

    /// Whether `key` is a member.
    pub fn contains(&self, key: &[u8]) -> bool {
        let fp = fingerprint(key);
        if self.adds_index.find(&self.delta.adds, fp).is_some() {
            return true;
        }
        self.removes_index.find(&self.delta.removes, fp).is_none()
            && self.base_index.find(&self.base, fp).is_some()
    }
}

fn mark(bits: &mut [u64], position: usize) {
    bits[position / 64] |= 1 << (position % 64);
}

fn marked(bits: &[u64], position: usize) -> bool {
    bits[position / 64] & (1 << (position % 64)) != 0
}

/// The diff of a query's keys against a [`Committed`] membership, fed one key at a time.
#[derive(Debug)]
pub struct Probe {
    committed: Committed,
    /// The base keys seen, in order, as (fingerprint, position), when there is no hint.
    arrival: Option<Arrival>,
    /// The base positions of the committed delta's removes (empty when it has none).
    removed: Vec<u64>,
    /// The next entry of the hint.
    cursor: usize,
    /// The hint's entries before this one had their pages released.
    hint_released: usize,
    /// Base keys found where the hint expected them.
    predicted: u64,
    /// Base keys found.
    base_hits: u64,
    base_seen: Vec<u64>,
    adds_seen: Vec<u64>,
    new: KeySetBuilder,
}

impl Probe {
    /// The membership the keys are diffed against.
    pub fn committed(&self) -> &Committed {
        &self.committed
    }

    /// Offers one key of the query's result (duplicates are fine).
    pub fn offer(&mut self, key: &[u8]) {
        let fp = fingerprint(key);
        if !self.resolve_fast(key, fp) {
            let range = self.committed.base_index.bucket_range(fp);
            self.resolve_in_base(key, fp, range);
        }
    }

    /// Offers keys of the query's result, as [`Probe::offer`] does one by one, but faster:
    /// keys the hint does not place are looked up in groups, the fingerprints of a group read
    /// from the snapshot together so that their trips to memory overlap.
    pub fn offer_many<'k>(&mut self, keys: impl IntoIterator<Item = &'k [u8]>) {
        const GROUP: usize = 16;
        let mut group: [(&[u8], u128, std::ops::Range<usize>); GROUP] =
            std::array::from_fn(|_| (&[][..], 0, 0..0));
        let mut len = 0;
        for key in keys {
            let fp = fingerprint(key);
            if self.resolve_fast(key, fp) {
                continue;
            }
            group[len] = (key, fp, self.committed.base_index.bucket_range(fp));
            len += 1;
            if len == GROUP {
                self.resolve_group(&group[..len]);
                len = 0;
            }
        }
        self.resolve_group(&group[..len]);
    }

    fn resolve_group(&mut self, group: &[(&[u8], u128, std::ops::Range<usize>)]) {
        // Touch where each key most likely is: independent loads, in flight together;
        // the lookups below then find them in the cache.
        let (base, index) = (&self.committed.base, &self.committed.base_index);
        let mut touched = [0_u128; 16];
        for (slot, (_, fp, range)) in touched.iter_mut().zip(group) {
            if range.start < range.end {
                *slot = base.fingerprint(index.likely_position(*fp, range));
            }
        }
        std::hint::black_box(&touched);
        for (key, fp, range) in group {
            self.resolve_in_base(key, *fp, range.clone());
        }
    }

    /// Settles a key the hint places, or the delta decides; false when the base's index must.
    ///
    /// The hint goes first: it holds base keys only, which the delta's adds never are, and a
    /// base key the delta removed is known by its position, so most keys cost one comparison.
    fn resolve_fast(&mut self, key: &[u8], fp: u128) -> bool {
        let committed = &self.committed;
        if let Some(hint) = &committed.hint {
            // The expected entry, or one of the next two (rows that left since).
            for at in self.cursor..(self.cursor + 3).min(hint.len()) {
                if hint.fingerprint(at) == fp {
                    let position = hint.position(at) as usize;
                    self.cursor = at + 1;
                    // The entries well behind the cursor are done with: let their pages go.
                    if self.cursor >= self.hint_released + 2 * RELEASE_STEP {
                        let upto = self.cursor - RELEASE_STEP;
                        hint.release(self.hint_released..upto);
                        self.hint_released = upto;
                    }
                    self.predicted += 1;
                    self.base_hits += 1;
                    if !self.removed.is_empty() && marked(&self.removed, position) {
                        // A member the delta removed is back: an add.
                        self.new.push_with_fingerprint(key, fp);
                    } else {
                        mark(&mut self.base_seen, position);
                    }
                    return true;
                }
            }
        }
        if !committed.delta.adds.is_empty() {
            if let Some(position) = committed.adds_index.find(&committed.delta.adds, fp) {
                mark(&mut self.adds_seen, position);
                return true;
            }
        }
        if !committed.delta.removes.is_empty()
            && committed.removes_index.find(&committed.delta.removes, fp).is_some()
        {
            self.new.push_with_fingerprint(key, fp);
            return true;
        }
        false
    }

    fn resolve_in_base(&mut self, key: &[u8], fp: u128, range: std::ops::Range<usize>) {
        let committed = &self.committed;
        match committed.base_index.find_in(&committed.base, fp, range) {
            Some(position) => {
                mark(&mut self.base_seen, position);
                self.base_hits += 1;
                if let Some(arrival) = &mut self.arrival {
                    #[expect(
                        clippy::cast_possible_truncation,
                        reason = "a base holds < 2^32 keys"
                    )]
                    arrival.push(fp, position as u32);
                }
                // Lost our place in the hint: the next key is likely the one after this.
                if let Some(entry) = committed.hint.as_ref().and_then(|h| h.entry_of(position)) {
                    self.cursor = entry + 1;
                }
            }
            None => self.new.push_with_fingerprint(key, fp),
        }
    }

    /// The order the base's keys arrived in, when this probe recorded it (there was no hint):
    /// for [`Arrival::write_hint`].
    pub fn take_arrival_order(&mut self) -> Option<Arrival> {
        self.arrival.take()
    }

    /// Base keys found where the hint expected them, so far.
    pub fn predicted(&self) -> u64 {
        self.predicted
    }

    /// Whether the hint placed fewer than nine in ten of the base keys found: the warehouse's
    /// order changed, and the next run had better record a new one.
    pub fn hint_is_stale(&self) -> bool {
        self.committed.hint.is_some() && self.predicted * 10 < self.base_hits * 9
    }

    /// Keys offered so far that are not members (duplicates included).
    pub fn new_keys(&self) -> usize {
        self.new.len()
    }

    /// From now on, hold at most `spill`'s threshold of new keys in memory, and write the rest
    /// to sorted runs on disk (a first load of a large segment).
    ///
    /// The order of the base's keys, when the probe records it, is written to the same folder
    /// as the keys come, rather than held.
    pub fn spill_to(&mut self, spill: crate::Spill) {
        if matches!(&self.arrival, Some(Arrival::Listed(order)) if order.is_empty()) {
            // A log that cannot be started leaves the order in memory: a hint is never an error.
            let log = crate::spill::create_dir(spill.dir())
                .ok()
                .and_then(|()| ArrivalLog::create(spill.dir().join("arrival.order")).ok());
            if let Some(log) = log {
                self.arrival = Some(Arrival::Logged(log));
            }
        }
        self.new.spill_to(spill);
    }

    /// The delta: keys offered that are not members, and members never offered; and the
    /// membership, for the commit.
    ///
    /// # Errors
    ///
    /// When the new keys spilled to disk and the runs could not be written or merged.
    pub fn finish(self) -> Result<(Committed, Delta), SnapshotError> {
        let removes = match self.new.spill() {
            Some(spill) if self.removes_outgrow(spill.chunk_bytes()) => {
                // The folder exists only once new keys spilled, and the removes may spill
                // alone (many members, few of them offered).
                crate::spill::create_dir(spill.dir())?;
                self.write_removes(&spill.dir().join("removes.keys"))?
            }
            _ => self.collect_removes(),
        };
        let adds = self.new.finish()?;
        Ok((self.committed, Delta { adds, removes }))
    }

    /// The members never offered, in order: base positions and committed adds.
    fn removed_members(&self) -> impl Iterator<Item = Member> + '_ {
        let committed = &self.committed;
        let (base, delta) = (&committed.base, &committed.delta);
        let next_base = move |mut b: usize| {
            while b < base.len()
                && (marked(&self.base_seen, b)
                    || (!self.removed.is_empty() && marked(&self.removed, b)))
            {
                b += 1;
            }
            b
        };
        let next_add = move |mut a: usize| {
            while a < delta.adds.len() && marked(&self.adds_seen, a) {
                a += 1;
            }
            a
        };
        let (mut b, mut a) = (next_base(0), next_add(0));
        std::iter::from_fn(move || {
            if b == base.len() && a == delta.adds.len() {
                return None;
            }
            if a == delta.adds.len() || (b < base.len() && order(base, b, &delta.adds, a).is_lt()) {
                let member = Member::Base(b);
                b = next_base(b + 1);
                Some(member)
            } else {
                let member = Member::Add(a);
                a = next_add(a + 1);
                Some(member)
            }
        })
    }

    /// Whether the removes would hold more than `bytes` in memory (their bytes, estimated
    /// from the membership's average, plus 24 a key): counted from the marks, not listed.
    fn removes_outgrow(&self, bytes: usize) -> bool {
        let ones = |bits: &[u64]| bits.iter().map(|word| word.count_ones() as usize).sum::<usize>();
        let committed = &self.committed;
        let base = &committed.base;
        let count = base.len() - ones(&self.base_seen) - ones(&self.removed)
            + committed.delta.adds.len()
            - ones(&self.adds_seen);
        let average = usize::try_from(base.key_bytes()).unwrap_or(usize::MAX) / base.len().max(1);
        count.saturating_mul(average + 24) >= bytes
    }

    /// The removes, in memory. A base key is read from the file rather than through the
    /// mapping: a few thousand removes scattered over the snapshot would fault in a page each.
    fn collect_removes(&self) -> KeySet {
        let (base, adds) = (&self.committed.base, &self.committed.delta.adds);
        let mut removes = KeySet::default();
        let mut key = Vec::new();
        for member in self.removed_members() {
            match member {
                Member::Base(b) => {
                    base.copy_key(b, &mut key);
                    removes.push(&key, base.fingerprint(b));
                }
                Member::Add(a) => removes.push(adds.key(a), adds.fingerprint(a)),
            }
        }
        removes
    }

    /// The removes, written to `path` and read in place: a run that empties a large segment
    /// holds none of its keys. The scans let the base's pages go behind them.
    fn write_removes(&self, path: &Path) -> Result<KeySet, SnapshotError> {
        let (base, adds) = (&self.committed.base, &self.committed.delta.adds);
        let entries = || {
            let mut released = 0;
            self.removed_members().map(move |member| match member {
                Member::Base(b) => {
                    if b >= released + 2 * RELEASE_STEP {
                        base.release(released..b - RELEASE_STEP);
                        released = b - RELEASE_STEP;
                    }
                    (base.fingerprint(b), base.key(b))
                }
                Member::Add(a) => (adds.fingerprint(a), adds.key(a)),
            })
        };
        let (mut count, mut bytes) = (0_u64, 0_u64);
        for (_, key) in entries() {
            count += 1;
            bytes += key.len() as u64;
        }
        write_keys(path, count, bytes, entries, false)?;
        base.release(0..base.len());
        Ok(KeySet::from_file(MappedKeySet::open(path)?))
    }
}

/// A member of the committed membership: a base position, or a committed add.
#[derive(Debug, Clone, Copy)]
enum Member {
    Base(usize),
    Add(usize),
}

/// Writes `base` with `delta` applied to `path`, as a new base snapshot; the keys stream from
/// the two, never gathered.
pub fn write_applied(path: &Path, base: &MappedKeySet, delta: &Delta) -> Result<(), SnapshotError> {
    let count = (base.len() + delta.adds.len() - delta.removes.len()) as u64;
    let bytes = base.key_bytes() + delta.adds.key_bytes() - delta.removes.key_bytes();
    write_sorted(path, count, bytes, || applied(base, delta))
}

/// The keys of `base` with `delta` applied, in order, streamed from the two.
pub fn applied<'s>(base: &'s MappedKeySet, delta: &'s Delta) -> Applied<'s> {
    applied_from(base, delta, AppliedAt::default())
}

/// [`applied`], from where an earlier scan of the same two stood ([`Applied::at`]).
pub fn applied_from<'s>(base: &'s MappedKeySet, delta: &'s Delta, at: AppliedAt) -> Applied<'s> {
    Applied { base, delta, b: at.base, r: at.removes, a: at.adds }
}

/// Where a scan of a base with a delta applied stands: what the next key is, for a later scan
/// to start there ([`applied_from`]) without walking the keys before it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppliedAt {
    base: usize,
    removes: usize,
    adds: usize,
}

/// The keys of a base with a delta applied, in order ([`applied`]).
#[derive(Debug)]
pub struct Applied<'s> {
    base: &'s MappedKeySet,
    delta: &'s Delta,
    b: usize,
    r: usize,
    a: usize,
}

impl Applied<'_> {
    /// Where the scan stands: the next key it yields.
    pub fn at(&self) -> AppliedAt {
        AppliedAt { base: self.b, removes: self.r, adds: self.a }
    }
}

impl<'s> Iterator for Applied<'s> {
    type Item = (u128, &'s [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (base, adds, removes) = (self.base, &self.delta.adds, &self.delta.removes);
        // Skip base keys the delta removes.
        while self.b < base.len() {
            while self.r < removes.len() && order(removes, self.r, base, self.b).is_lt() {
                self.r += 1;
            }
            if self.r < removes.len() && order(removes, self.r, base, self.b).is_eq() {
                self.b += 1;
                self.r += 1;
            } else {
                break;
            }
        }
        let take_base = self.a == adds.len()
            || (self.b < base.len() && order(base, self.b, adds, self.a).is_lt());
        // A scan of the whole membership lets the pages behind it go (for a base, or adds
        // that spilled to disk; sets in memory ignore it).
        if take_base {
            if self.b == base.len() {
                return None;
            }
            self.b += 1;
            if self.b.is_multiple_of(RELEASE_STEP) {
                base.release(self.b - RELEASE_STEP..self.b);
            }
            Some((base.fingerprint(self.b - 1), base.key(self.b - 1)))
        } else {
            self.a += 1;
            if self.a.is_multiple_of(RELEASE_STEP) {
                adds.release(self.a - RELEASE_STEP..self.a);
            }
            Some((adds.fingerprint(self.a - 1), adds.key(self.a - 1)))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn set_of(keys: &BTreeSet<String>) -> KeySet {
        KeySet::from_keys(keys)
    }

    fn texts(set: &KeySet) -> BTreeSet<String> {
        set.iter().map(|k| String::from_utf8(k.to_vec()).unwrap()).collect()
    }

    /// A membership of `base` with a delta that takes it to `members`.
    fn committed(dir: &Path, base: &BTreeSet<String>, members: &BTreeSet<String>) -> Committed {
        let path = dir.join(format!("base-{}.keys", base.len()));
        set_of(base).write_file(&path).unwrap();
        let delta = Delta {
            adds: set_of(&members.difference(base).cloned().collect()),
            removes: set_of(&base.difference(members).cloned().collect()),
        };
        Committed::new(MappedKeySet::open(&path).unwrap(), delta)
    }

    fn keys() -> impl Strategy<Value = BTreeSet<String>> {
        prop::collection::btree_set(prop_oneof!["[a-e]{1,3}", "\\PC{0,12}", "[x]{300,400}",], 0..60)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Probing a query's keys gives exactly the adds and removes that take the membership
        /// to the query's keys; composing and folding deltas keeps the membership.
        #[test]
        fn a_probe_diffs_and_a_commit_applies(
            base in keys(),
            members in keys(),
            query in prop::collection::vec(keys(), 1..3),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let committed = committed(dir.path(), &base, &members);
            prop_assert_eq!(committed.len(), members.len());
            let current: BTreeSet<String> = query.iter().flatten().cloned().collect();
            let mut probe = committed.into_probe();
            // Every key of the query, duplicates included.
            for (i, part) in query.iter().enumerate() {
                if i % 2 == 0 {
                    probe.offer_many(part.iter().map(String::as_bytes));
                } else {
                    for key in part {
                        probe.offer(key.as_bytes());
                    }
                }
            }
            let arrival = probe.take_arrival_order();
            let (committed, delta) = probe.finish().unwrap();
            prop_assert_eq!(texts(&delta.adds), current.difference(&members).cloned().collect::<BTreeSet<_>>());
            prop_assert_eq!(texts(&delta.removes), members.difference(&current).cloned().collect::<BTreeSet<_>>());

            // The order this run saw, as a hint for the next: the same keys, in the same order
            // or reversed, give the same delta with it; so does a hint that was damaged.
            if let Some(arrival) = arrival {
                let hint = dir.path().join("hint.order");
                arrival.write_hint(&hint, committed.base()).unwrap();
                let keys: Vec<&String> = query.iter().flatten().collect();
                for reversed in [false, true] {
                    let hinted = Committed::new(
                        MappedKeySet::open(&dir.path().join(format!("base-{}.keys", base.len()))).unwrap(),
                        committed.delta().clone(),
                    )
                    .with_hint(ArrivalHint::open(&hint, committed.base()));
                    let mut again = hinted.into_probe();
                    let ordered: Vec<&[u8]> = if reversed {
                        keys.iter().rev().map(|k| k.as_bytes()).collect()
                    } else {
                        keys.iter().map(|k| k.as_bytes()).collect()
                    };
                    again.offer_many(ordered);
                    let (_, same) = again.finish().unwrap();
                    prop_assert_eq!(&same, &delta);
                }
                let mut bytes = std::fs::read(&hint).unwrap();
                let last = bytes.len() - 9;
                bytes[last] ^= 1;
                std::fs::write(&hint, &bytes).unwrap();
                prop_assert!(ArrivalHint::open(&hint, committed.base()).is_none());
            }

            // Compose with the committed delta, then fold into a new base.
            let composed = committed.delta().compose(&delta);
            let folded = dir.path().join("folded.keys");
            write_applied(&folded, committed.base(), &composed).unwrap();
            let folded = KeySet::read_file(&folded).unwrap();
            prop_assert_eq!(texts(&folded), current.clone());
            let again = Committed::new(MappedKeySet::open(&dir.path().join(format!("base-{}.keys", base.len()))).unwrap(), composed);
            for key in &current {
                prop_assert!(again.contains(key.as_bytes()));
            }
            prop_assert_eq!(again.len(), current.len());
        }
    }
}
