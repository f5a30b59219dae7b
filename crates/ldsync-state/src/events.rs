//! The committed progress of a metric-events sync: its cursor, the identities of the events it
//! delivered, and the progress of a backfill.
//!
//! Files, under `syncs/<sync>/events/`:
//! - `state.json`: the cursor, the identities delivered at or after the horizon (the cursor
//!   minus the lookback: what the next incremental run reads again), each with its
//!   `occurred_at`, and the backfill in progress. Small, read by every run, written atomically.
//! - `days/<day>.json`: identities older than the horizon, one sorted JSON array per UTC day
//!   (`<day>` counts days since 1970-01-01). Incremental runs never read that far back, so
//!   these leave `state.json`; a backfill over those days loads only the days it reads, and so
//!   still never sends an event twice.
//!
//! Every write is atomic, and a commit archives before it prunes, so a crash between two files
//! loses nothing: committing the same delivery again is harmless (sets only grow, the cursor
//! only moves forward).

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    fs,
    path::{Path, PathBuf},
};

use ldsync_core::SyncName;
use serde::{Deserialize, Serialize};

use crate::{
    error::io,
    journal::{create_private_dir, write_atomically},
    Error, Result, StateDir,
};

/// Milliseconds in a UTC day: the unit of the identity archive.
pub const DAY_MS: i64 = 86_400_000;
/// The version of `state.json` this build reads and writes.
const STATE_VERSION: u32 = 1;

/// The committed progress of a metric-events sync.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventsState {
    /// The latest `occurred_at` delivered, epoch milliseconds; `None` before the first delivery.
    pub cursor_ms: Option<i64>,
    /// Identities delivered at or after the horizon, with their `occurred_at`.
    pub recent: BTreeMap<String, i64>,
    /// The backfill in progress, if one was started and not finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    #[serde(flatten)]
    state: EventsState,
}

impl EventsState {
    /// Adds delivered identities, moves the cursor to the latest `occurred_at` among `cursor_ms`
    /// and the old cursor, and takes out of `recent` every identity older than the horizon that
    /// `horizon` computes from the new cursor. Returns what was taken out, to archive.
    pub fn record(
        &mut self,
        delivered: impl IntoIterator<Item = (String, i64)>,
        cursor_ms: Option<i64>,
        horizon: impl Fn(Option<i64>) -> i64,
    ) -> Vec<(String, i64)> {
        self.cursor_ms = self.cursor_ms.max(cursor_ms);
        let horizon_ms = horizon(self.cursor_ms);
        let mut archived = Vec::new();
        for (identity, at) in delivered {
            if at < horizon_ms {
                archived.push((identity, at));
            } else {
                self.recent.insert(identity, at);
            }
        }
        self.recent.retain(|identity, at| {
            let keep = *at >= horizon_ms;
            if !keep {
                archived.push((identity.clone(), *at));
            }
            keep
        });
        archived
    }
}

/// The events files of one sync.
#[derive(Debug, Clone)]
pub struct EventLedger {
    dir: PathBuf,
}

impl StateDir {
    /// The cursor, delivered identities and backfill progress of the metric-events `sync`.
    pub fn event_ledger(&self, sync: &SyncName) -> Result<EventLedger> {
        Ok(EventLedger { dir: self.sync_dir(sync)?.join("events") })
    }
}

impl EventLedger {
    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn days_dir(&self) -> PathBuf {
        self.dir.join("days")
    }

    fn day_path(&self, day: i64) -> PathBuf {
        self.days_dir().join(format!("{day}.json"))
    }

    /// The committed state; the empty state before the first commit.
    pub fn load(&self) -> Result<EventsState> {
        let path = self.state_path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(EventsState::default())
            }
            Err(error) => return Err(io(&path)(error)),
        };
        let file: StateFile = serde_json::from_slice(&bytes)
            .map_err(|err| Error::Corrupt { path: path.clone(), reason: err.to_string() })?;
        if file.version != STATE_VERSION {
            return Err(Error::Corrupt {
                path,
                reason: format!(
                    "version {} is not the version {STATE_VERSION} this ldsync reads",
                    file.version
                ),
            });
        }
        Ok(file.state)
    }

    /// Replaces the committed state, atomically.
    pub fn save(&self, state: &EventsState) -> Result<()> {
        create_private_dir(&self.dir)?;
        let file = StateFile { version: STATE_VERSION, state: state.clone() };
        let bytes = serde_json::to_vec(&file).expect("the events state always serialises");
        write_atomically(&self.state_path(), &bytes)
    }

    /// Records a delivery (see [`EventsState::record`]) and makes it durable: archived
    /// identities are written before the state that no longer holds them.
    pub fn commit(
        &self,
        state: &mut EventsState,
        delivered: impl IntoIterator<Item = (String, i64)>,
        cursor_ms: Option<i64>,
        horizon: impl Fn(Option<i64>) -> i64,
    ) -> Result<()> {
        let archived = state.record(delivered, cursor_ms, horizon);
        self.archive(&archived)?;
        self.save(state)
    }

    /// Adds identities to the archive of their UTC days.
    pub fn archive(&self, identities: &[(String, i64)]) -> Result<()> {
        let mut by_day: BTreeMap<i64, Vec<&str>> = BTreeMap::new();
        for (identity, at) in identities {
            by_day.entry(at.div_euclid(DAY_MS)).or_default().push(identity);
        }
        if by_day.is_empty() {
            return Ok(());
        }
        create_private_dir(&self.days_dir())?;
        for (day, new) in by_day {
            let path = self.day_path(day);
            let mut all = read_day(&path)?;
            let before = all.len();
            all.extend(new.into_iter().map(str::to_owned));
            if all.len() != before || !path.exists() {
                let bytes = serde_json::to_vec(&all).expect("strings always serialise");
                write_atomically(&path, &bytes)?;
            }
        }
        Ok(())
    }

    /// The identities delivered for events that occurred in `[from_ms, until_ms)` (`None`: no
    /// end), and possibly a few more: all of `recent`, and the archived days the range touches.
    pub fn known(
        &self,
        state: &EventsState,
        from_ms: i64,
        until_ms: Option<i64>,
    ) -> Result<HashSet<String>> {
        let mut known: HashSet<String> = state.recent.keys().cloned().collect();
        let first = from_ms.div_euclid(DAY_MS);
        let last = until_ms.map(|until| (until - 1).div_euclid(DAY_MS));
        for day in self.archived_days()? {
            if day >= first && last.is_none_or(|last| day <= last) {
                known.extend(read_day(&self.day_path(day))?);
            }
        }
        Ok(known)
    }

    /// The archived days, in order.
    fn archived_days(&self) -> Result<Vec<i64>> {
        let dir = self.days_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(io(&dir)(error)),
        };
        let mut days = Vec::new();
        for entry in entries {
            let path = entry.map_err(io(&dir))?.path();
            if path.extension().is_some_and(|ext| ext == "json") {
                if let Some(day) = path.file_stem().and_then(|s| s.to_str()?.parse().ok()) {
                    days.push(day);
                }
            }
        }
        days.sort_unstable();
        Ok(days)
    }
}

fn read_day(path: &Path) -> Result<BTreeSet<String>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|err| Error::Corrupt { path: path.to_path_buf(), reason: err.to_string() }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(error) => Err(io(path)(error)),
    }
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

    const HOUR: i64 = 3_600_000;

    #[test]
    fn a_commit_moves_the_cursor_and_prunes_behind_the_horizon() {
        let (_temp, ledger) = ledger();
        let mut state = ledger.load().unwrap();
        assert_eq!(state, EventsState::default());
        let horizon = |cursor: Option<i64>| cursor.map_or(i64::MIN, |c| c - HOUR);
        let t0 = 100 * DAY_MS;
        ledger
            .commit(
                &mut state,
                [("a".to_owned(), t0), ("b".to_owned(), t0 + HOUR)],
                Some(t0 + HOUR),
                horizon,
            )
            .unwrap();
        assert_eq!(state.cursor_ms, Some(t0 + HOUR));
        assert_eq!(state.recent.len(), 2);

        // Three hours later: `a` and `b` fall behind the horizon and go to the archive.
        ledger
            .commit(&mut state, [("c".to_owned(), t0 + 3 * HOUR)], Some(t0 + 3 * HOUR), horizon)
            .unwrap();
        assert_eq!(state.recent.keys().collect::<Vec<_>>(), ["c"]);
        assert_eq!(ledger.load().unwrap(), state);
        let known = ledger.known(&state, t0, Some(t0 + 1)).unwrap();
        assert!(known.contains("a") && known.contains("b") && known.contains("c"));
        // A range on another day does not load that day's archive.
        let elsewhere = ledger.known(&state, t0 + DAY_MS, None).unwrap();
        assert_eq!(elsewhere.into_iter().collect::<Vec<_>>(), ["c"]);

        // The cursor never moves back, and committing twice changes nothing.
        let again = state.clone();
        ledger.commit(&mut state, [("c".to_owned(), t0 + 3 * HOUR)], Some(t0), horizon).unwrap();
        assert_eq!(state, again);
    }

    #[test]
    fn a_damaged_state_is_refused() {
        let (_temp, ledger) = ledger();
        ledger.save(&EventsState::default()).unwrap();
        fs::write(ledger.state_path(), b"{\"version\": 1, \"cursor").unwrap();
        assert!(matches!(ledger.load(), Err(Error::Corrupt { .. })));
        fs::write(ledger.state_path(), b"{\"version\": 9, \"cursor_ms\": null, \"recent\": {}}")
            .unwrap();
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

    #[test]
    fn days_before_the_epoch_are_archived_too() {
        let (_temp, ledger) = ledger();
        ledger.archive(&[("old".to_owned(), -5)]).unwrap();
        let known = ledger.known(&EventsState::default(), -DAY_MS, Some(0)).unwrap();
        assert!(known.contains("old"));
    }
}
