//! Keys that do not fit in memory: sorted runs on disk, merged into one snapshot file.
//!
//! A [`crate::KeySetBuilder`] given a [`Spill`] holds at most `chunk_bytes` of unsorted keys.
//! Past that it sorts them and writes them out as a run (a snapshot file that is never flushed
//! to disk: only this process reads it, and only while it runs). When it is done, the runs are
//! merged, duplicates dropped, into one snapshot file read in place ([`KeySet::from_file`]).
//! Memory stays about twice `chunk_bytes` while keys come, and two bytes a key while the runs
//! are merged (the record of which run each key comes from).

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    path::{Path, PathBuf},
};

use crate::{
    keyset::RELEASE_STEP,
    snapshot::{write_keys, SnapshotError},
    KeySet, MappedKeySet, SortedKeys,
};

/// Where a builder spills, and past how many bytes of keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spill {
    dir: PathBuf,
    chunk_bytes: usize,
}

impl Spill {
    /// Spill into `dir` (created when first needed; the caller removes it) whenever the keys
    /// held in memory pass `chunk_bytes` (their bytes plus 24 a key for the fingerprint and the
    /// offset).
    pub fn new(dir: impl Into<PathBuf>, chunk_bytes: usize) -> Self {
        Self { dir: dir.into(), chunk_bytes: chunk_bytes.max(1) }
    }

    /// The folder the runs go to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The threshold, in bytes.
    pub fn chunk_bytes(&self) -> usize {
        self.chunk_bytes
    }
}

/// The runs a builder has written so far.
#[derive(Debug)]
pub(crate) struct Runs {
    spill: Spill,
    paths: Vec<PathBuf>,
    /// The first failure to write a run: the keys stay in memory, and the builder reports it.
    error: Option<SnapshotError>,
}

impl Runs {
    pub(crate) fn new(spill: Spill) -> Self {
        Self { spill, paths: Vec::new(), error: None }
    }

    pub(crate) fn spill(&self) -> &Spill {
        &self.spill
    }

    /// Whether `held` (the unsorted keys in memory) should go to disk now.
    pub(crate) fn due(&self, held: &KeySet) -> bool {
        self.error.is_none() && held.used_bytes() >= self.spill.chunk_bytes
    }

    /// Writes `sorted` as a run; on failure hands it back, to be kept in memory.
    pub(crate) fn write(&mut self, sorted: KeySet) -> Option<KeySet> {
        let path = self.spill.dir.join(format!("run-{}.keys", self.paths.len()));
        let written = create_dir(&self.spill.dir).and_then(|()| {
            write_keys(
                &path,
                sorted.len() as u64,
                sorted.key_bytes(),
                || (0..sorted.len()).map(|i| (sorted.fingerprint(i), sorted.key(i))),
                false,
            )
        });
        match written {
            Ok(()) => {
                self.paths.push(path);
                None
            }
            Err(error) => {
                self.error = Some(error);
                Some(sorted)
            }
        }
    }

    /// Whether writing a run failed.
    pub(crate) fn failed(&self) -> bool {
        self.error.is_some()
    }

    /// Whether any run was written.
    pub(crate) fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Merges the runs into one snapshot file and reads it in place; the
    /// runs are removed. More runs than [`FAN_IN`] are merged in groups first.
    pub(crate) fn merge(self) -> Result<KeySet, SnapshotError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let dir = &self.spill.dir;
        let mut paths = self.paths;
        let mut level = 0;
        while paths.len() > FAN_IN {
            let mut next = Vec::new();
            for (group, runs) in paths.chunks(FAN_IN).enumerate() {
                let merged = dir.join(format!("merged-{level}-{group}.keys"));
                merge_files(runs, &merged, false)?;
                next.push(merged);
            }
            paths = next;
            level += 1;
        }
        let merged = dir.join("merged.keys");
        // Not flushed here: a plan that keeps the file flushes it as it links it into the
        // journal ([`KeySet::write_file`]); a `plan` never needs it on disk.
        merge_files(&paths, &merged, false)?;
        Ok(KeySet::from_file(MappedKeySet::open(&merged)?))
    }
}

/// How many runs are merged at once: each is an open file and a mapping.
const FAN_IN: usize = 256;

/// Where the next key of a merge comes from: a run's number, and whether the key is a
/// duplicate of the one before (read past, not written).
type Source = u16;
const DUPLICATE: Source = 1 << 15;

/// Merges the sorted `runs` into one snapshot file at `out`, each key once, and removes them.
/// One merge by comparison records which run each key comes from; the file's three sections
/// are then written by replaying that record, each a sequential read of the runs.
fn merge_files(runs: &[PathBuf], out: &Path, durable: bool) -> Result<(), SnapshotError> {
    let sets = runs.iter().map(|path| MappedKeySet::open(path)).collect::<Result<Vec<_>, _>>()?;
    let total = sets.iter().map(MappedKeySet::len).sum();
    let mut record: Vec<Source> = Vec::with_capacity(total);
    let (mut count, mut bytes) = (0_u64, 0_u64);
    for (run, duplicate, key) in merged(&sets) {
        #[expect(clippy::cast_possible_truncation, reason = "at most FAN_IN runs")]
        record.push(run as Source | if duplicate { DUPLICATE } else { 0 });
        if !duplicate {
            count += 1;
            bytes += key.len() as u64;
        }
    }
    write_keys(out, count, bytes, || replay(&sets, &record), durable)?;
    drop(sets);
    for run in runs {
        std::fs::remove_file(run)
            .map_err(|source| SnapshotError::Io { path: run.clone(), source })?;
    }
    Ok(())
}

/// The keys a merge recorded, read from the runs in that order; the runs' pages are let go
/// behind the reads.
fn replay<'r>(
    runs: &'r [MappedKeySet],
    record: &'r [Source],
) -> impl Iterator<Item = (u128, &'r [u8])> + 'r {
    let mut next = vec![0_usize; runs.len()];
    record.iter().filter_map(move |&source| {
        let run = usize::from(source & !DUPLICATE);
        let (keys, index) = (&runs[run], next[run]);
        next[run] += 1;
        release_behind(keys, index + 1);
        (source & DUPLICATE == 0).then(|| (keys.fingerprint(index), keys.key(index)))
    })
}

/// Lets a run's pages go every [`RELEASE_STEP`] keys read, and at its end.
fn release_behind(keys: &MappedKeySet, read: usize) {
    if read.is_multiple_of(RELEASE_STEP) || read == keys.len() {
        keys.release(read.saturating_sub(RELEASE_STEP)..read);
    }
}

/// The keys of sorted `runs` in order, each with its run and whether it repeats the key
/// before it (the same key in two runs).
fn merged(runs: &[MappedKeySet]) -> impl Iterator<Item = (usize, bool, &[u8])> + '_ {
    let mut heap = BinaryHeap::with_capacity(runs.len());
    for (run, keys) in runs.iter().enumerate() {
        if !keys.is_empty() {
            heap.push(Reverse((keys.fingerprint(0), keys.key(0), run, 0_usize)));
        }
    }
    let mut last: Option<(u128, &[u8])> = None;
    std::iter::from_fn(move || {
        let Reverse((fingerprint, key, run, index)) = heap.pop()?;
        let keys = &runs[run];
        let next = index + 1;
        if next < keys.len() {
            heap.push(Reverse((keys.fingerprint(next), keys.key(next), run, next)));
        }
        release_behind(keys, next);
        let duplicate = last == Some((fingerprint, key));
        last = Some((fingerprint, key));
        Some((run, duplicate, key))
    })
}

/// Creates the spill folder, readable by its owner only (the runs hold member keys).
pub(crate) fn create_dir(dir: &Path) -> Result<(), SnapshotError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| SnapshotError::Io { path: dir.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;
    use crate::{Committed, Delta, KeySetBuilder};

    fn texts(set: &KeySet) -> Vec<String> {
        set.iter().map(|k| String::from_utf8(k.to_vec()).unwrap()).collect()
    }

    #[test]
    fn a_spilled_set_equals_the_set_built_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        // Duplicates far apart land in different runs: the merge drops them.
        let keys: Vec<String> = (0..20_000).map(|i| format!("member-{}", i % 15_000)).collect();
        let mut builder = KeySetBuilder::spilling(Spill::new(dir.path().join("spill"), 64 << 10));
        for key in &keys {
            builder.push(key.as_bytes());
        }
        assert_eq!(builder.len(), 20_000);
        let spilled = builder.finish().unwrap();
        assert!(spilled.is_on_disk());
        let in_memory = KeySet::from_keys(&keys);
        assert_eq!(spilled.len(), 15_000);
        assert_eq!(spilled, in_memory);
        assert_eq!(spilled.key_bytes(), in_memory.key_bytes());
        assert!(spilled.contains(b"member-14999") && !spilled.contains(b"member-15000"));
        // Only the merged file is left.
        let left: Vec<_> = std::fs::read_dir(dir.path().join("spill"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, ["merged.keys"]);
        // It is a snapshot file like any other: the journal can keep it.
        let copy = dir.path().join("copy.keys");
        spilled.write_file(&copy).unwrap();
        assert_eq!(KeySet::read_file(&copy).unwrap(), in_memory);
    }

    #[test]
    fn more_runs_than_one_merge_takes_are_merged_in_groups() {
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<String> = (0..12_000).map(|i| format!("k{}", i % 11_000)).collect();
        // About 30 keys a run: 400 runs, two groups of at most FAN_IN first.
        let mut builder = KeySetBuilder::spilling(Spill::new(dir.path().join("spill"), 1_000));
        for key in &keys {
            builder.push(key.as_bytes());
        }
        let spilled = builder.finish().unwrap();
        assert_eq!(spilled, KeySet::from_keys(&keys));
        let left = std::fs::read_dir(dir.path().join("spill")).unwrap().count();
        assert_eq!(left, 1, "only the merged file is left");
    }

    /// A base snapshot of `m0` … `m4999` in `dir`, and its keys.
    fn five_thousand_members(dir: &Path) -> (PathBuf, Vec<String>) {
        let base = dir.join("base.keys");
        let members: Vec<String> = (0..5_000).map(|i| format!("m{i}")).collect();
        KeySet::from_keys(&members).write_file(&base).unwrap();
        (base, members)
    }

    #[test]
    fn removing_more_than_the_threshold_writes_the_removes_to_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (base, members) = five_thousand_members(dir.path());
        let committed = || Committed::new(MappedKeySet::open(&base).unwrap(), Delta::default());
        let mut probe = committed().into_probe();
        probe.spill_to(Spill::new(dir.path().join("spill"), 16 << 10));
        probe.offer(b"m7");
        let (_, delta) = probe.finish().unwrap();
        assert!(delta.removes.is_on_disk());
        assert_eq!(delta.removes.len(), 4_999);
        let mut all = KeySet::from_keys(&members);
        all = KeySet::from_keys(all.iter().filter(|key| *key != b"m7"));
        assert_eq!(delta.removes, all);
        // Under the threshold, they stay in memory.
        let mut probe = committed().into_probe();
        probe.spill_to(Spill::new(dir.path().join("spill-2"), 1 << 20));
        let (_, delta) = probe.finish().unwrap();
        assert!(!delta.removes.is_on_disk());
        assert_eq!(delta.removes.len(), 5_000);
    }

    /// An empty base whose committed adds are all removed: the removes spill though no new key
    /// did (and the probe had no order of the base to log), so their folder is made for them.
    #[test]
    fn removes_spill_alone_into_a_folder_made_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.keys");
        KeySet::default().write_file(&base).unwrap();
        let adds: Vec<String> = (0..100).map(|i| format!("added-{i}")).collect();
        let delta = Delta { adds: KeySet::from_keys(&adds), removes: KeySet::default() };
        let mut probe = Committed::new(MappedKeySet::open(&base).unwrap(), delta).into_probe();
        probe.spill_to(Spill::new(dir.path().join("spill"), 1_024));
        probe.offer(b"new-key");
        let (_, delta) = probe.finish().unwrap();
        assert!(delta.removes.is_on_disk());
        assert_eq!(delta.removes, KeySet::from_keys(&adds));
        assert_eq!(delta.adds, KeySet::from_keys([b"new-key"]));
    }

    #[test]
    fn a_builder_under_its_threshold_never_touches_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut builder = KeySetBuilder::spilling(Spill::new(dir.path().join("spill"), 1 << 20));
        builder.push(b"a");
        let set = builder.finish().unwrap();
        assert!(!set.is_on_disk());
        assert!(!dir.path().join("spill").exists());
    }

    #[test]
    fn a_run_that_cannot_be_written_fails_the_build() {
        let dir = tempfile::tempdir().unwrap();
        let blocked = dir.path().join("file");
        std::fs::write(&blocked, b"not a folder").unwrap();
        let mut builder = KeySetBuilder::spilling(Spill::new(blocked.join("spill"), 100));
        for i in 0..100 {
            builder.push(format!("k{i}").as_bytes());
        }
        assert!(matches!(builder.finish(), Err(SnapshotError::Io { .. })));
    }

    #[test]
    fn an_arrival_order_written_as_it_comes_is_the_hint_held_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let (base, members) = five_thousand_members(dir.path());
        let committed = || Committed::new(MappedKeySet::open(&base).unwrap(), Delta::default());
        let (mut listed, mut logged) = (committed().into_probe(), committed().into_probe());
        logged.spill_to(Spill::new(dir.path().join("spill"), 1 << 20));
        for key in members.iter().rev().chain([&"new".to_owned()]) {
            listed.offer(key.as_bytes());
            logged.offer(key.as_bytes());
        }
        let (a, b) = (listed.take_arrival_order().unwrap(), logged.take_arrival_order().unwrap());
        assert!(matches!(b, crate::Arrival::Logged(_)));
        let open = MappedKeySet::open(&base).unwrap();
        a.write_hint(&dir.path().join("a.order"), &open).unwrap();
        b.write_hint(&dir.path().join("b.order"), &open).unwrap();
        let (a, b) = (dir.path().join("a.order"), dir.path().join("b.order"));
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        let hint = crate::ArrivalHint::open(&b, &open).expect("a valid hint");
        assert_eq!(hint.len(), 5_000);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// A probe that spills its adds gives the delta of one that does not.
        #[test]
        fn spilling_changes_no_delta(
            members in proptest::collection::btree_set("[a-z0-9]{1,12}", 0..300),
            extra in proptest::collection::btree_set("[a-z0-9]{1,12}", 0..100),
            current in proptest::collection::vec("[a-z0-9]{1,12}", 0..600),
            chunk in 1_usize..2_000,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let base = dir.path().join("base.keys");
            KeySet::from_keys(&members).write_file(&base).unwrap();
            // A committed delta on top: adds outside the base, every third base key removed.
            let delta = Delta {
                adds: KeySet::from_keys(extra.difference(&members)),
                removes: KeySet::from_keys(members.iter().step_by(3)),
            };
            let committed =
                || Committed::new(MappedKeySet::open(&base).unwrap(), delta.clone());
            let mut plain = committed().into_probe();
            let mut spilling = committed().into_probe();
            spilling.spill_to(Spill::new(dir.path().join("spill"), chunk));
            for key in &current {
                plain.offer(key.as_bytes());
                spilling.offer(key.as_bytes());
            }
            let (_, expected) = plain.finish().unwrap();
            let (_, delta) = spilling.finish().unwrap();
            prop_assert_eq!(texts(&delta.adds), texts(&expected.adds));
            prop_assert_eq!(&delta, &expected);
            // Spilled or not, the delta takes the membership to the keys offered.
            let mut after: BTreeSet<String> = members.union(&extra).cloned().collect();
            for removed in members.iter().step_by(3) {
                after.remove(removed);
            }
            for key in texts(&delta.removes) {
                prop_assert!(after.remove(&key));
            }
            after.extend(texts(&delta.adds));
            prop_assert_eq!(after, current.iter().cloned().collect::<BTreeSet<_>>());
        }
    }
}
