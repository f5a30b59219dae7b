//! A segment's committed membership on disk: a base snapshot, the delta committed on top of it,
//! and a manifest that names both.
//!
//! ```text
//! snapshots/<segment>/manifest.json   {"base": 3, "delta": 5, "committed_run": "…"}
//! snapshots/<segment>/base-3.keys     the members at some commit
//! snapshots/<segment>/adds-5.keys     added since the base
//! snapshots/<segment>/removes-5.keys  removed since the base
//! ```
//!
//! Files are written once under a new generation number and never changed; a commit writes its
//! files, then replaces the manifest atomically, then deletes what the manifest no longer names.
//! A crash at any point leaves the old manifest or the new one, each naming whole files. A commit
//! costs the size of the delta, not of the segment: the delta is folded into a new base only
//! once it outgrows [`FOLD_SHARE`] of the base.

use std::path::PathBuf;

use ldsync_diff::{
    write_applied, Arrival, ArrivalHint, Committed, Delta, KeySet, MappedKeySet, SnapshotError,
};
use ldsync_state::{create_private_dir, sync_dir, write_atomically, Journal};
use serde::{Deserialize, Serialize};

/// The delta is folded into a new base once it holds more than this share of the base's
/// members (plus a floor, so that small segments do not rewrite their base on every run).
const FOLD_SHARE: usize = 8;
const FOLD_FLOOR: usize = 4_096;

/// What the manifest says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    /// The generation of the base file (`None`: no base, the empty set).
    base: Option<u64>,
    /// The generation of the delta files, if a delta is committed on top of the base.
    delta: Option<u64>,
    /// The last generation used.
    generation: u64,
    /// The run whose plan was committed last (a resumed commit of that plan changes nothing).
    committed_run: String,
}

/// Why the store failed: a state error or a snapshot error, as the engine reports them.
#[derive(Debug)]
pub(crate) enum StoreError {
    State(ldsync_state::Error),
    Snapshot(SnapshotError),
}

impl From<ldsync_state::Error> for StoreError {
    fn from(error: ldsync_state::Error) -> Self {
        Self::State(error)
    }
}

impl From<SnapshotError> for StoreError {
    fn from(error: SnapshotError) -> Self {
        Self::Snapshot(error)
    }
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The on-disk membership of one segment.
#[derive(Debug, Clone)]
pub(crate) struct SegmentStore {
    dir: PathBuf,
}

impl SegmentStore {
    pub(crate) fn new(journal: &Journal, segment: &str) -> Self {
        Self { dir: journal.snapshot_dir(segment) }
    }

    fn manifest_path(&self) -> PathBuf {
        self.dir.join("manifest.json")
    }

    fn file(&self, kind: &str, generation: u64) -> PathBuf {
        self.dir.join(format!("{kind}-{generation}.keys"))
    }

    /// The arrival hint of the base of `generation` (see [`ArrivalHint`]).
    fn hint(&self, generation: u64) -> PathBuf {
        self.dir.join(format!("hint-{generation}.order"))
    }

    /// Whether anything was ever committed (a segment without is loaded for the first time).
    pub(crate) fn exists(&self) -> bool {
        self.manifest_path().exists()
    }

    fn manifest(&self) -> Result<Option<Manifest>> {
        let path = self.manifest_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|err| {
                StoreError::Snapshot(SnapshotError::Corrupt {
                    path,
                    reason: format!("the manifest cannot be read: {err}"),
                })
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Snapshot(SnapshotError::Io { path, source })),
        }
    }

    /// The run whose plan was committed last.
    pub(crate) fn committed_run(&self) -> Result<Option<String>> {
        Ok(self.manifest()?.map(|manifest| manifest.committed_run))
    }

    /// The committed membership (empty when nothing was committed).
    pub(crate) fn load(&self) -> Result<Committed> {
        let Some(manifest) = self.manifest()? else {
            return Ok(Committed::default());
        };
        let (base, hint) = match manifest.base {
            Some(generation) => {
                let base = MappedKeySet::open(&self.file("base", generation))?;
                let hint = ArrivalHint::open(&self.hint(generation), &base);
                (base, hint)
            }
            None => (MappedKeySet::empty(), None),
        };
        let delta = match manifest.delta {
            Some(generation) => Delta {
                adds: KeySet::read_file(&self.file("adds", generation))?,
                removes: KeySet::read_file(&self.file("removes", generation))?,
            },
            None => Delta::default(),
        };
        Ok(Committed::new(base, delta).with_hint(hint))
    }

    /// Keeps the order a run saw the base's keys in, for the next run; or, with `None`, drops
    /// a hint that no longer matches the warehouse's order. Best effort: a hint is never
    /// needed for a correct run.
    pub(crate) fn update_hint(&self, committed: &Committed, arrival: Option<Arrival>) {
        let Ok(Some(Manifest { base: Some(generation), .. })) = self.manifest() else { return };
        let path = self.hint(generation);
        let result = match arrival {
            Some(order) => order.write_hint(&path, committed.base()),
            None => std::fs::remove_file(&path),
        };
        if let Err(error) = result {
            tracing::debug!(path = %path.display(), error = %error, "Could not update the arrival hint.");
        }
    }

    /// Commits `delta` (computed against `committed`, this store's membership) for `run_id`;
    /// with `fold`, into a new base whatever the delta's size (an import replaced the whole
    /// membership: the next run starts from a base). Committing the same run twice changes
    /// nothing the second time.
    #[cfg(test)]
    pub(crate) fn commit(
        &self,
        committed: &Committed,
        delta: &Delta,
        fold: bool,
        run_id: &str,
    ) -> Result<()> {
        match self.prepare(committed, delta, fold, run_id)? {
            Some(next) => self.finish(&next),
            None => Ok(()),
        }
    }

    /// The first half of a commit: writes the next generation's files and returns the manifest
    /// that will name them, or `None` when `run_id` is committed already. Nothing is committed
    /// until [`SegmentStore::finish`]; files prepared for a commit that never finishes are
    /// overwritten or removed by the next one.
    pub(crate) fn prepare(
        &self,
        committed: &Committed,
        delta: &Delta,
        fold: bool,
        run_id: &str,
    ) -> Result<Option<Manifest>> {
        let old = self.manifest()?.unwrap_or_default();
        if old.committed_run == run_id {
            return Ok(None);
        }
        create_private_dir(&self.dir)?;
        let generation = old.generation + 1;
        let mut next =
            Manifest { generation, committed_run: run_id.to_owned(), ..Manifest::default() };
        let composed = committed.delta().compose_or_borrow(delta);
        if fold || composed.len() > FOLD_FLOOR + committed.base().len() / FOLD_SHARE {
            write_applied(&self.file("base", generation), committed.base(), &composed)?;
            next.base = Some(generation);
        } else {
            next.base = old.base;
            if !composed.is_empty() {
                composed.adds.write_file(&self.file("adds", generation))?;
                composed.removes.write_file(&self.file("removes", generation))?;
                next.delta = Some(generation);
            }
        }
        Ok(Some(next))
    }

    /// The second half of a commit: the manifest naming the prepared files replaces the old
    /// one atomically, then the files it no longer names go.
    pub(crate) fn finish(&self, next: &Manifest) -> Result<()> {
        // The new files' names, durable before the manifest that names them.
        sync_dir(&self.dir)?;
        let manifest = serde_json::to_vec_pretty(next).expect("a manifest serializes");
        write_atomically(&self.manifest_path(), &manifest)?;
        self.remove_unnamed(next);
        Ok(())
    }

    /// Deletes the files the manifest does not name (best effort: a leftover costs disk, not
    /// correctness, and the next commit tries again).
    fn remove_unnamed(&self, manifest: &Manifest) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        let keep: Vec<PathBuf> = [
            manifest.base.map(|g| self.file("base", g)),
            manifest.base.map(|g| self.hint(g)),
            manifest.delta.map(|g| self.file("adds", g)),
            manifest.delta.map(|g| self.file("removes", g)),
        ]
        .into_iter()
        .flatten()
        .collect();
        for entry in entries.flatten() {
            let path = entry.path();
            let ours = path.extension().is_some_and(|ext| ext == "keys" || ext == "order");
            if ours && !keep.contains(&path) {
                if let Err(error) = std::fs::remove_file(&path) {
                    tracing::debug!(path = %path.display(), error = %error, "Could not remove an old snapshot file.");
                }
            }
        }
    }

    /// The folder, for tests.
    #[cfg(test)]
    pub(crate) fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn members(store: &SegmentStore) -> BTreeSet<String> {
        // Offering nothing: every member is a remove, which lists them all.
        let (_, delta) = store.load().unwrap().into_probe().finish().unwrap();
        delta.removes.iter().map(|k| String::from_utf8(k.to_vec()).unwrap()).collect()
    }

    fn run(store: &SegmentStore, keys: &[String], run_id: &str) -> Delta {
        let mut probe = store.load().unwrap().into_probe();
        for key in keys {
            probe.offer(key.as_bytes());
        }
        let (committed, delta) = probe.finish().unwrap();
        store.commit(&committed, &delta, !store.exists(), run_id).unwrap();
        delta
    }

    #[test]
    fn deltas_accumulate_then_fold_and_a_repeated_commit_is_a_no_op() {
        let state = tempfile::tempdir().unwrap();
        let dir = ldsync_state::StateDir::open(state.path()).unwrap();
        let journal = dir.journal(&"s".parse().unwrap()).unwrap();
        let store = SegmentStore::new(&journal, "seg");
        assert!(!store.exists());
        let mut keys: Vec<String> = (0..10_000).map(|i| format!("k{i}")).collect();
        run(&store, &keys, "r1");
        assert!(store.exists());
        for round in 0..12 {
            // 1 000 leave and 1 000 join each round: a delta until it outgrows the base's share.
            keys.drain(..1_000);
            keys.extend((0..1_000).map(|i| format!("round{round}-{i}")));
            let run_id = format!("r{}", round + 2);
            let delta = run(&store, &keys, &run_id);
            assert_eq!((delta.adds.len(), delta.removes.len()), (1_000, 1_000));
            let committed = store.load().unwrap();
            // Committing the same plan again (a resumed commit) changes nothing.
            store.commit(&committed, &delta, false, &run_id).unwrap();
            assert_eq!(members(&store), keys.iter().cloned().collect());
        }
        let files = std::fs::read_dir(store.dir()).unwrap().count();
        assert!(files <= 4, "old generations are removed: {files} files");
        let manifest = store.manifest().unwrap().unwrap();
        assert!(manifest.base.unwrap() > 1, "the delta was folded into a new base: {manifest:?}");
        assert_eq!(store.load().unwrap().len(), keys.len());
    }

    #[test]
    fn a_run_leaves_the_order_it_saw_and_the_next_reads_the_base_in_it() {
        let state = tempfile::tempdir().unwrap();
        let dir = ldsync_state::StateDir::open(state.path()).unwrap();
        let journal = dir.journal(&"s".parse().unwrap()).unwrap();
        let store = SegmentStore::new(&journal, "seg");
        let keys: Vec<String> = (0..5_000).map(|i| format!("k{i}")).collect();
        run(&store, &keys, "r1");
        // No hint yet: this run records the order, and leaves it.
        let mut probe = store.load().unwrap().into_probe();
        probe.offer_many(keys.iter().map(String::as_bytes));
        let arrival = probe.take_arrival_order().expect("recorded without a hint");
        let (committed, delta) = probe.finish().unwrap();
        assert!(delta.is_empty());
        store.update_hint(&committed, Some(arrival));
        // The next run finds every key where the hint expects it, but for the ones that left.
        let committed = store.load().unwrap();
        assert!(committed.has_hint());
        let mut probe = committed.into_probe();
        let left: Vec<&String> = keys.iter().filter(|k| !k.ends_with('7')).collect();
        probe.offer_many(left.iter().map(|k| k.as_bytes()));
        assert_eq!(probe.predicted(), left.len() as u64);
        assert!(!probe.hint_is_stale());
        let (_, delta) = probe.finish().unwrap();
        assert_eq!(delta.removes.len(), keys.len() - left.len());
        // Another order entirely: the hint is stale, the result the same; dropping it works.
        let mut probe = store.load().unwrap().into_probe();
        probe.offer_many(keys.iter().rev().map(String::as_bytes));
        assert!(probe.hint_is_stale());
        let (committed, delta) = probe.finish().unwrap();
        assert!(delta.is_empty());
        store.update_hint(&committed, None);
        assert!(!store.load().unwrap().has_hint());
    }
}
