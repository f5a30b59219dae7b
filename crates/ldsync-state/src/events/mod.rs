//! The committed progress of a metric-events sync: its cursor, the identities of the events it
//! delivered, and the progress of a backfill.
//!
//! Files, under `syncs/<sync>/events/`:
//! - `state.json`: the cursor and the backfill in progress. Small, read by every run, written
//!   atomically.
//! - `identities/*.ids`: a 128-bit hash of the identity of every event delivered, with the day
//!   it was delivered, in compact sorted segments (see [`IdentityIndex`]). An identity is kept
//!   for the sync's retention after its delivery, whatever its `occurred_at`, and is never read
//!   whole into memory.
//!
//! A commit writes its identities before the state that moves the cursor, so a crash between
//! the two loses nothing: committing the same delivery again is harmless (a segment is named
//! after the plan that delivered it, the cursor only moves forward).
//!
//! Version 1 of `state.json` kept the identities themselves, the recent ones inline and older
//! ones in `days/<day>.json`; [`EventLedger::upgrade`] moves them into segments.

mod identities;
mod uniform;

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use ldsync_core::SyncName;
use serde::{Deserialize, Serialize};

use self::identities::IdentityStore;
#[cfg(test)]
use self::identities::MAX_SEGMENTS;
pub use self::identities::{IdentityIndex, Prepared};
pub use self::uniform::{sort_by_uniform_key, UniformSort};
use crate::{
    error::io,
    journal::{create_private_dir, write_atomically},
    Error, Result, StateDir,
};

/// Milliseconds in a UTC day: the unit of identity retention.
pub const DAY_MS: i64 = 86_400_000;
/// The version of `state.json` this build writes (it also reads version 1).
const STATE_VERSION: u32 = 2;

/// The committed progress of a metric-events sync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventsState {
    /// The latest `occurred_at` delivered, epoch milliseconds; `None` before the first delivery.
    pub cursor_ms: Option<i64>,
    /// The backfill in progress, if one was started and not finished.
    pub backfill: Option<BackfillProgress>,
}

/// How far a backfill got: windows before `done_until_ms` are committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillProgress {
    /// The start of the range, epoch milliseconds (inclusive).
    pub from_ms: i64,
    /// The end of the range, epoch milliseconds (exclusive).
    pub to_ms: i64,
    /// The length of one window, milliseconds.
    pub window_ms: i64,
    /// Every window ending at or before this is committed.
    pub done_until_ms: i64,
}

#[derive(Deserialize)]
struct StateFileIn {
    version: u32,
    cursor_ms: Option<i64>,
    /// Version 1 only: identities delivered inside the lookback.
    #[serde(default)]
    recent: BTreeMap<String, i64>,
    #[serde(default)]
    backfill: Option<BackfillProgress>,
}

#[derive(Serialize)]
struct StateFileOut {
    version: u32,
    cursor_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backfill: Option<BackfillProgress>,
}

/// The events files of one sync.
#[derive(Debug, Clone)]
pub struct EventLedger {
    dir: PathBuf,
    identities: IdentityStore,
}

impl StateDir {
    /// The cursor, delivered identities and backfill progress of the metric-events `sync`.
    pub fn event_ledger(&self, sync: &SyncName) -> Result<EventLedger> {
        let dir = self.sync_dir(sync)?.join("events");
        Ok(EventLedger { identities: IdentityStore::new(dir.join("identities")), dir })
    }
}

impl EventLedger {
    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn days_dir(&self) -> PathBuf {
        self.dir.join("days")
    }

    fn read_state(&self) -> Result<Option<StateFileIn>> {
        let path = self.state_path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(io(&path)(error)),
        };
        let file: StateFileIn = serde_json::from_slice(&bytes)
            .map_err(|err| Error::Corrupt { path: path.clone(), reason: err.to_string() })?;
        if !(1..=STATE_VERSION).contains(&file.version) {
            return Err(Error::Corrupt {
                path,
                reason: format!(
                    "version {} is not a version this ldsync reads (1 to {STATE_VERSION})",
                    file.version
                ),
            });
        }
        Ok(Some(file))
    }

    /// The committed state; the empty state before the first commit.
    pub fn load(&self) -> Result<EventsState> {
        Ok(self.read_state()?.map_or_else(EventsState::default, |file| EventsState {
            cursor_ms: file.cursor_ms,
            backfill: file.backfill,
        }))
    }

    /// Replaces the committed state, atomically.
    pub fn save(&self, state: &EventsState) -> Result<()> {
        create_private_dir(&self.dir)?;
        let file = StateFileOut {
            version: STATE_VERSION,
            cursor_ms: state.cursor_ms,
            backfill: state.backfill,
        };
        let bytes = serde_json::to_vec(&file).expect("the events state always serialises");
        write_atomically(&self.state_path(), &bytes)
    }

    /// The identities a version-1 state still holds as text (inline and in `days/`): none
    /// once [`EventLedger::upgrade`] ran.
    pub fn legacy_identities(&self) -> Result<Vec<String>> {
        let mut legacy: Vec<String> =
            self.read_state()?.map(|file| file.recent.into_keys().collect()).unwrap_or_default();
        let dir = self.days_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(legacy),
            Err(error) => return Err(io(&dir)(error)),
        };
        for entry in entries {
            let path = entry.map_err(io(&dir))?.path();
            if path.extension().is_some_and(|ext| ext == "json") {
                legacy.extend(read_day(&path)?);
            }
        }
        Ok(legacy)
    }

    /// Moves the identities of a version-1 state into a segment (each hashed with `hash`,
    /// counted as delivered on `today`), then rewrites the state without them. Does nothing on
    /// a version-2 state; safe to repeat after a crash.
    pub fn upgrade(&self, hash: impl Fn(&str) -> u128, today: i64) -> Result<()> {
        let legacy = self.legacy_identities()?;
        let version_1 = self.read_state()?.is_some_and(|file| file.version == 1);
        if legacy.is_empty() && !version_1 {
            return Ok(());
        }
        let hashes = legacy.iter().map(|identity| hash(identity)).collect();
        self.identities.add("upgrade", hashes, today)?;
        self.save(&self.load()?)?;
        match fs::remove_dir_all(self.days_dir()) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(io(&self.days_dir())(error)),
        }
    }

    /// The delivered identities, open for lookups.
    pub fn identities(&self) -> Result<IdentityIndex> {
        self.identities.open()
    }

    /// Makes a delivery durable: the hashes of the identities `plan` delivered (on `today`,
    /// days since 1970-01-01) first, then `state`. Identities delivered before
    /// `today - retention_days` may be forgotten from here on.
    pub fn commit(
        &self,
        state: &EventsState,
        plan: &str,
        delivered: Vec<u128>,
        today: i64,
        retention_days: i64,
    ) -> Result<()> {
        self.identities.add(plan, delivered, today)?;
        self.save(state)?;
        self.identities.compact(today.saturating_sub(retention_days))
    }

    /// Writes the identities a commit of `plan` will add (see [`EventLedger::commit_prepared`])
    /// ahead of it, while its last batches are delivered.
    pub fn prepare_identities(
        &self,
        plan: &str,
        delivered: Vec<u128>,
        today: i64,
    ) -> Result<Prepared> {
        self.identities.prepare(plan, delivered, today)
    }

    /// [`EventLedger::prepare_identities`] of identities ascending and unique, handed over in
    /// parts that follow one another, each with its count, and written side by side;
    /// identities out of order, or parts not of their counts, fail it.
    pub fn prepare_sorted_identities<I>(
        &self,
        plan: &str,
        parts: Vec<(usize, I)>,
        today: i64,
    ) -> Result<Prepared>
    where
        I: Iterator<Item = u128> + Send,
    {
        self.identities.prepare_sorted_parts(plan, parts, today)
    }

    /// [`EventLedger::commit`] with the identities written ahead.
    pub fn commit_prepared(
        &self,
        state: &EventsState,
        prepared: Prepared,
        retention_days: i64,
    ) -> Result<()> {
        let today = prepared.day();
        self.identities.add_prepared(prepared)?;
        self.save(state)?;
        self.identities.compact(today.saturating_sub(retention_days))
    }
}

fn read_day(path: &Path) -> Result<Vec<String>> {
    let bytes = fs::read(path).map_err(io(path))?;
    serde_json::from_slice(&bytes)
        .map_err(|err| Error::Corrupt { path: path.to_path_buf(), reason: err.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger() -> (tempfile::TempDir, EventLedger) {
        let temp = tempfile::tempdir().unwrap();
        let state = StateDir::open(temp.path().join("state")).unwrap();
        let ledger = state.event_ledger(&"checkouts".parse().unwrap()).unwrap();
        (temp, ledger)
    }

    fn hash(identity: &str) -> u128 {
        xxhash_rust::xxh3::xxh3_128(identity.as_bytes())
    }

    fn known(ledger: &EventLedger, identities: &[&str]) -> Vec<bool> {
        let index = ledger.identities().unwrap();
        identities
            .iter()
            .map(|identity| {
                let mut found = [false];
                index.find_sorted(&[hash(identity)], &mut found).unwrap();
                found[0]
            })
            .collect()
    }

    #[test]
    fn a_commit_keeps_identities_for_the_retention_whatever_their_time() {
        let (_temp, ledger) = ledger();
        assert_eq!(ledger.load().unwrap(), EventsState::default());
        let state = EventsState { cursor_ms: Some(5), backfill: None };
        ledger.commit(&state, "p1", vec![hash("a"), hash("b"), hash("a")], 100, 30).unwrap();
        assert_eq!(ledger.load().unwrap(), state);
        assert_eq!(known(&ledger, &["a", "b", "c"]), [true, true, false]);
        // Committing the same plan again changes nothing.
        ledger.commit(&state, "p1", vec![hash("a"), hash("b")], 100, 30).unwrap();
        assert_eq!(ledger.identities().unwrap().len(), 2);
        // 30 days later the first delivery is still known; past the retention, once enough
        // segments pile up to be merged, it is forgotten.
        ledger.commit(&state, "p2", vec![hash("c")], 130, 30).unwrap();
        assert_eq!(known(&ledger, &["a", "c"]), [true, true]);
        for n in 0..MAX_SEGMENTS {
            ledger.commit(&state, &format!("q{n}"), vec![hash(&format!("q{n}"))], 131, 30).unwrap();
        }
        assert_eq!(known(&ledger, &["a", "b", "c", "q0"]), [false, false, true, true]);
    }

    #[test]
    fn identities_written_ahead_count_only_once_committed() {
        let (_temp, ledger) = ledger();
        let state = EventsState { cursor_ms: Some(5), backfill: None };
        let prepared =
            ledger.prepare_identities("p1", vec![hash("a"), hash("b"), hash("a")], 100).unwrap();
        assert_eq!((prepared.count(), prepared.name(), prepared.day()), (2, "p1", 100));
        // Written, but not yet part of the store: a crash here forgets them, as it should.
        assert_eq!(known(&ledger, &["a", "b"]), [false, false]);
        ledger.commit_prepared(&state, prepared, 30).unwrap();
        assert_eq!(known(&ledger, &["a", "b", "c"]), [true, true, false]);
        assert_eq!(ledger.load().unwrap(), state);
        // One a run wrote ahead and never committed is removed by the next commit.
        let abandoned = ledger.prepare_identities("p2", vec![hash("c")], 100).unwrap();
        ledger.commit(&state, "p3", vec![hash("d")], 100, 30).unwrap();
        assert!(!abandoned.temporary_path().exists());
        assert_eq!(known(&ledger, &["c", "d"]), [false, true]);
        // Handed over sorted, they are written as they come; out of order, they are refused.
        let (low, high) = (hash("a").min(hash("e")), hash("a").max(hash("e")));
        let part = |hashes: Vec<u128>| (hashes.len(), hashes.into_iter());
        let sorted =
            ledger.prepare_sorted_identities("p5", vec![part(vec![low, high])], 100).unwrap();
        assert_eq!(sorted.count(), 2);
        let refused = ledger.prepare_sorted_identities("p6", vec![part(vec![high, low])], 100);
        assert!(refused.unwrap_err().to_string().contains("out of order"));
        assert!(!ledger.dir.join("identities").join("c-p6.prepared.tmp").exists());
        // Parts out of order, or not of their counts, are refused too.
        let swapped =
            ledger.prepare_sorted_identities("p7", vec![part(vec![high]), part(vec![low])], 100);
        assert!(swapped.unwrap_err().to_string().contains("out of order"));
        let short = ledger.prepare_sorted_identities("p8", vec![(3, vec![low].into_iter())], 100);
        assert!(short.unwrap_err().to_string().contains("fewer identities"));
        let long =
            ledger.prepare_sorted_identities("p9", vec![(1, vec![low, high].into_iter())], 100);
        assert!(long.unwrap_err().to_string().contains("more identities"));
        assert!(!ledger.dir.join("identities").join("c-p9.prepared.tmp").exists());
    }

    #[test]
    fn a_version_1_state_is_upgraded_without_forgetting() {
        let (_temp, ledger) = ledger();
        fs::create_dir_all(ledger.days_dir()).unwrap();
        fs::write(
            ledger.state_path(),
            br#"{"version": 1, "cursor_ms": 9, "recent": {"id:1:a:x": 9}}"#,
        )
        .unwrap();
        fs::write(ledger.days_dir().join("3.json"), br#"["h:old"]"#).unwrap();
        assert_eq!(ledger.load().unwrap().cursor_ms, Some(9));
        let mut legacy = ledger.legacy_identities().unwrap();
        legacy.sort();
        assert_eq!(legacy, ["h:old", "id:1:a:x"]);
        ledger.upgrade(hash, 100).unwrap();
        assert!(ledger.legacy_identities().unwrap().is_empty());
        assert!(!ledger.days_dir().exists());
        assert_eq!(ledger.load().unwrap().cursor_ms, Some(9));
        assert_eq!(known(&ledger, &["h:old", "id:1:a:x", "h:new"]), [true, true, false]);
        ledger.upgrade(hash, 100).unwrap();
        assert_eq!(ledger.identities().unwrap().len(), 2);
    }

    #[test]
    fn a_damaged_state_is_refused() {
        let (_temp, ledger) = ledger();
        ledger.save(&EventsState::default()).unwrap();
        fs::write(ledger.state_path(), b"{\"version\": 2, \"cursor").unwrap();
        assert!(matches!(ledger.load(), Err(Error::Corrupt { .. })));
        fs::write(ledger.state_path(), b"{\"version\": 9, \"cursor_ms\": null}").unwrap();
        assert!(ledger.load().unwrap_err().to_string().contains("version 9"));
    }

    #[test]
    fn pending_files_live_and_go_with_the_plan() {
        let temp = tempfile::tempdir().unwrap();
        let state = StateDir::open(temp.path().join("state")).unwrap();
        let journal = state.journal(&"checkouts".parse().unwrap()).unwrap();
        assert_eq!(journal.read_pending("batch-0.json.gz").unwrap(), None);
        journal.write_pending("batch-0.json.gz", b"body").unwrap();
        journal
            .begin(&crate::Plan { run_id: "r".into(), created_at: "t".into(), body: 1 })
            .unwrap();
        assert_eq!(journal.read_pending("batch-0.json.gz").unwrap().as_deref(), Some(&b"body"[..]));
        journal.commit(&[]).unwrap();
        assert_eq!(journal.read_pending("batch-0.json.gz").unwrap(), None);
    }
}
