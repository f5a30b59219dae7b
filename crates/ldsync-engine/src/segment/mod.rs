//! Segment syncs: mirror a query's context keys into big segments.
//!
//! One function, [`SegmentSync::run`], shows a run from top to bottom; [`SegmentSync::plan`]
//! stops after the diff. The batches are a pure function of the committed snapshot and the
//! target (`batches.rs`), so a run that died is finished by the next one exactly as planned.

mod batches;
mod stage;
mod store;

use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt;
use ldsync_config::SegmentSpec;
use ldsync_core::{SegmentKey, Source, SyncName};
use ldsync_diff::{Committed, Delta, KeySet, MappedKeySet, Spill};
use ldsync_launchdarkly::{is_import_conflict, LaunchDarklyClient, NewBigSegment};
use ldsync_state::{Journal, Plan, Rejection, RunRecord, StateDir};
use serde::{Deserialize, Serialize};

use self::{
    batches::{import_batches, member_batches, Batch, Sources},
    store::{SegmentStore, StoreError},
};
use crate::{Error, Result, RunId, RunOutcome};

/// Member batches of one segment in flight at once: enough to hide a round trip, few enough to
/// share the account's rate limit politely (every request still waits on the limiter).
const MEMBER_BATCHES_IN_FLIGHT: usize = 4;

/// How many sample keys a plan shows per segment and direction.
const SAMPLES: usize = 5;

/// Everything a segment sync needs, wired by the binary.
#[derive(Debug)]
pub struct SegmentSync<'a, S> {
    /// The sync's name.
    pub name: &'a SyncName,
    /// The `[segment]` table.
    pub spec: &'a SegmentSpec,
    /// The warehouse.
    pub source: &'a S,
    /// The LaunchDarkly client of the sync's environment.
    pub client: &'a LaunchDarklyClient,
    /// The LaunchDarkly project key.
    pub project: &'a str,
    /// The LaunchDarkly environment key.
    pub environment: &'a str,
    /// The state store.
    pub state: &'a StateDir,
    /// Hears the run's progress ([`crate::Silent`] when nobody watches).
    pub progress: &'a dyn crate::Progress,
}

/// What the command asked for.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// Send a run that removes more than `max_removal_ratio` (or empties a segment).
    pub allow_mass_removal: bool,
    /// Ignore the snapshot: replace every segment's membership with the query's result.
    pub backfill: bool,
    /// How often a CSV import's status is polled.
    pub import_poll: Duration,
    /// `[limits] memory_budget_mib`, in bytes: a segment's new members past a share of it
    /// spill to sorted runs on disk ([`spill_threshold`]).
    pub memory_budget_bytes: u64,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            allow_mass_removal: false,
            backfill: false,
            import_poll: Duration::from_millis(500),
            memory_budget_bytes: 1 << 30,
        }
    }
}

/// How many bytes of a segment's new members (their bytes plus 24 a key) a run holds in memory
/// before it sorts them and writes them to a run on disk: a sixty-fourth of the memory budget
/// (16 MiB of the default 1 GiB, at least 1 MiB). Sorting a run needs about as much again, and
/// a first load of a million members makes three runs, so a run's memory stays well inside
/// the budget, and inside PRODUCT.md's 1.5 x the raw keys + 64 MiB, however large the load.
pub fn spill_threshold(memory_budget_bytes: u64) -> usize {
    usize::try_from(memory_budget_bytes / 64).unwrap_or(usize::MAX).max(1 << 20)
}

/// What a run planned or did to one segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegmentChanges {
    /// The segment.
    pub segment: String,
    /// Members in the committed snapshot before the run.
    pub members_before: u64,
    /// Members after the run.
    pub members_after: u64,
    /// Members added.
    pub adds: u64,
    /// Members removed.
    pub removes: u64,
    /// A few of the keys added.
    pub sample_adds: Vec<String>,
    /// A few of the keys removed.
    pub sample_removes: Vec<String>,
    /// Whether the members go through CSV imports rather than batches.
    pub via_import: bool,
    /// Requests the delivery takes (or took).
    pub requests: u64,
}

/// The result of a plan or a run.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentReport {
    /// The sync.
    pub sync: String,
    /// The run (for a plan, the run it would be).
    pub run_id: RunId,
    /// How it ended.
    pub outcome: RunOutcome,
    /// Rows the query returned.
    pub rows: u64,
    /// Rows rejected.
    pub rejected: u64,
    /// The first rejections, with their reasons.
    pub rejections: Vec<Rejection>,
    /// Per segment.
    pub segments: Vec<SegmentChanges>,
    /// Whether the run first finished a plan a previous run left unfinished.
    pub resumed: Option<String>,
    /// Why a guardrail stopped the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
}

impl SegmentReport {
    /// Whether the run would change anything.
    pub fn has_changes(&self) -> bool {
        self.segments.iter().any(|s| s.adds + s.removes > 0 || (s.via_import && s.requests > 0))
    }
}

/// The plan written to the journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SegmentPlan {
    segments: Vec<PlannedSegment>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PlannedSegment {
    key: String,
    /// Deliver the whole target by CSV import (first loads and backfills).
    import: bool,
    batch_size: usize,
}

/// A segment's diff, computed by `plan`, or read back from the journal to finish a plan.
struct Planned {
    key: String,
    /// The membership the delta was computed against.
    committed: std::sync::Arc<Committed>,
    delta: std::sync::Arc<Delta>,
    import: bool,
    batch_size: usize,
}

impl Planned {
    /// The batches that deliver the delta: a pure function of the membership and the delta,
    /// so a resumed run sends exactly what the crashed run promised. `target` holds the whole
    /// new membership's delta against the base when the segment goes by import.
    fn batches<'a>(&'a self, target: Option<&'a Delta>) -> Vec<Batch<'a>> {
        match target {
            Some(composed) => import_batches(&self.key, self.committed.base(), composed),
            None => {
                member_batches(&self.key, &self.delta.adds, &self.delta.removes, self.batch_size)
            }
        }
    }

    /// Where the batches' keys are read from.
    fn sources<'a>(&'a self, target: Option<&'a Delta>) -> Sources<'a> {
        Sources { base: self.committed.base(), delta: &self.delta, target }
    }

    /// For an import, the new membership as one delta against the base.
    fn import_target(&self) -> Option<std::borrow::Cow<'_, Delta>> {
        self.import.then(|| self.committed.delta().compose_or_borrow(&self.delta))
    }
}

/// A run's scratch folder (new members spilled to disk), removed when the run is done with it.
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        // Files of a plan were linked into the journal before this goes: only copies go.
        if let Err(error) = std::fs::remove_dir_all(&self.0) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(folder = %self.0.display(), %error, "Could not remove a run's scratch folder.");
            }
        }
    }
}

fn delta_file(segment: &str, part: &str) -> String {
    format!("{segment}.{part}")
}

impl<S: Source> SegmentSync<'_, S> {
    fn sync(&self) -> String {
        self.name.to_string()
    }

    fn state_error(&self) -> impl Fn(ldsync_state::Error) -> Error + '_ {
        |source| Error::State { sync: self.sync(), source }
    }

    fn snapshot_error(&self) -> impl Fn(ldsync_diff::SnapshotError) -> Error + '_ {
        |source| Error::Snapshot { sync: self.sync(), source }
    }

    fn store_error(&self) -> impl Fn(StoreError) -> Error + '_ {
        |error| match error {
            StoreError::State(source) => Error::State { sync: self.sync(), source },
            StoreError::Snapshot(source) => Error::Snapshot { sync: self.sync(), source },
        }
    }

    /// The committed membership; for a backfill, which replaces the whole membership anyway,
    /// a damaged snapshot is reported and read as empty, so that a backfill is the repair.
    fn committed_or_repair(
        &self,
        loaded: std::result::Result<Committed, StoreError>,
        options: RunOptions,
    ) -> Result<Committed> {
        match loaded {
            Err(StoreError::Snapshot(error)) if options.backfill => {
                tracing::warn!(sync = %self.name, error = %crate::chain(&error), "The committed snapshot is damaged; the backfill replaces it.");
                Ok(Committed::default())
            }
            loaded => loaded.map_err(self.store_error()),
        }
    }

    /// Runs the query and the diff; sends nothing and writes nothing.
    pub async fn plan(&self, options: RunOptions) -> Result<SegmentReport> {
        let journal = self.state.journal(self.name).map_err(self.state_error())?;
        let resumed =
            journal.pending::<SegmentPlan>().map_err(self.state_error())?.map(|plan| plan.run_id);
        let scratch = Scratch(journal.scratch_dir());
        let staged = self.stage_and_diff(&journal, &scratch, options, false).await;
        self.progress.finish();
        let (report, _) = staged?;
        Ok(SegmentReport { resumed, ..report })
    }

    /// One run: finish what a previous run left, then query → stage → diff → journal →
    /// deliver → commit.
    pub async fn run(&self, options: RunOptions) -> Result<SegmentReport> {
        // Never two runs of one sync at once, across processes. The run's time starts once it
        // holds the sync, so that no two runs' times overlap in the history.
        let _lock = self.state.lock_sync(self.name).map_err(self.state_error())?;
        let started = Utc::now();
        let clock = std::time::Instant::now();
        let journal = self.state.journal(self.name).map_err(self.state_error())?;
        let history = self.state.history(self.name).map_err(self.state_error())?;

        let result = self.run_locked(&journal, options).await;
        self.progress.finish();
        let record =
            |outcome: &str, report: Option<&SegmentReport>, error: Option<String>| RunRecord {
                run_id: report.map_or_else(
                    || RunId::starting_at(started).to_string(),
                    |r| r.run_id.to_string(),
                ),
                command: if options.backfill { "backfill" } else { "run" }.to_owned(),
                started_at: started.to_rfc3339(),
                duration_ms: u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX),
                outcome: outcome.to_owned(),
                rows: report.map_or(0, |r| r.rows),
                adds: report.map_or(0, |r| r.segments.iter().map(|s| s.adds).sum()),
                removes: report.map_or(0, |r| r.segments.iter().map(|s| s.removes).sum()),
                rejected: report.map_or(0, |r| r.rejected),
                error,
            };
        let entry = match &result {
            Ok(report) => {
                history.set_rejected(&report.rejections).map_err(self.state_error())?;
                let outcome = match report.outcome {
                    RunOutcome::Unchanged => "unchanged",
                    RunOutcome::Refused => "refused",
                    _ => "succeeded",
                };
                record(outcome, Some(report), report.refusal.clone())
            }
            Err(error) => record("failed", None, Some(crate::chain(error))),
        };
        history.record(&entry).map_err(self.state_error())?;
        result
    }

    /// The plan a previous run promised, read back with its deltas.
    fn pending(&self, journal: &Journal) -> Result<Option<(String, Vec<Planned>)>> {
        let Some(plan) = journal.pending::<SegmentPlan>().map_err(self.state_error())? else {
            return Ok(None);
        };
        let mut segments = Vec::new();
        for segment in plan.body.segments {
            let store = SegmentStore::new(journal, &segment.key);
            if store.committed_run().map_err(self.store_error())?.as_deref() == Some(&plan.run_id) {
                continue; // committed before the crash
            }
            // Read in place: a first load's adds may be larger than the memory budget.
            let read = |part: &str| -> Result<KeySet> {
                let path = journal
                    .target_path(&delta_file(&segment.key, part))
                    .map_err(self.state_error())?;
                let keys = MappedKeySet::open(&path).map_err(self.snapshot_error())?;
                Ok(KeySet::from_file(keys))
            };
            segments.push(Planned {
                committed: std::sync::Arc::new(store.load().map_err(self.store_error())?),
                delta: std::sync::Arc::new(Delta {
                    adds: read("adds")?,
                    removes: read("removes")?,
                }),
                key: segment.key,
                import: segment.import,
                batch_size: segment.batch_size,
            });
        }
        Ok(Some((plan.run_id, segments)))
    }

    async fn run_locked(&self, journal: &Journal, options: RunOptions) -> Result<SegmentReport> {
        // 1. Finish a plan a previous run promised and did not commit.
        let pending = match self.pending(journal) {
            // A backfill replaces every membership: a plan it cannot read back is dropped
            // (sending a segment's changes again is harmless).
            Err(Error::Snapshot { source, .. }) if options.backfill => {
                tracing::warn!(sync = %self.name, error = %crate::chain(&source), "The pending plan cannot be read back; the backfill replaces it.");
                journal.abandon().map_err(self.state_error())?;
                None
            }
            pending => pending?,
        };
        let resumed = match pending {
            Some((run_id, segments)) => {
                tracing::info!(sync = %self.name, run_id = %run_id, "Finishing the plan of an interrupted run.");
                self.deliver_or_abandon(journal, &run_id, &segments, options).await?;
                Some(run_id)
            }
            None => None,
        };
        // 2. Query, stage and diff.
        journal.clear_scratch().map_err(self.state_error())?;
        let scratch = Scratch(journal.scratch_dir());
        let (mut report, planned) = self.stage_and_diff(journal, &scratch, options, true).await?;
        report.resumed = resumed;
        if report.refusal.is_some() {
            report.outcome = RunOutcome::Refused;
            return Ok(report);
        }
        if !report.has_changes() {
            report.outcome = RunOutcome::Unchanged;
            return Ok(report);
        }
        // 3. Journal: the deltas first, then the plan that promises them.
        let clock = std::time::Instant::now();
        let mut plan = SegmentPlan { segments: Vec::new() };
        for segment in &planned {
            for (part, keys) in [("adds", &segment.delta.adds), ("removes", &segment.delta.removes)]
            {
                let path = journal
                    .target_path(&delta_file(&segment.key, part))
                    .map_err(self.state_error())?;
                keys.write_file(&path).map_err(self.snapshot_error())?;
            }
            plan.segments.push(PlannedSegment {
                key: segment.key.clone(),
                import: segment.import,
                batch_size: segment.batch_size,
            });
        }
        let run_id = report.run_id.to_string();
        let promise =
            Plan { run_id: run_id.clone(), created_at: Utc::now().to_rfc3339(), body: plan };
        journal.begin(&promise).map_err(self.state_error())?;
        let journal_ms = clock.elapsed().as_millis();
        // 4. Deliver, then 5. commit.
        self.deliver_or_abandon(journal, &run_id, &planned, options).await?;
        tracing::debug!(
            sync = %self.name,
            journal_ms,
            deliver_and_commit_ms = clock.elapsed().as_millis() - journal_ms,
            "Journaled, delivered and committed the plan."
        );
        report.outcome = RunOutcome::Succeeded;
        tracing::info!(
            sync = %self.name,
            run_id = %report.run_id,
            rows = report.rows,
            adds = report.segments.iter().map(|s| s.adds).sum::<u64>(),
            removes = report.segments.iter().map(|s| s.removes).sum::<u64>(),
            rejected = report.rejected,
            "Segment sync delivered."
        );
        Ok(report)
    }

    /// Runs the query and diffs it; with `keep_hints`, records for the next run the order the
    /// warehouse returned each segment's keys in (a plan writes nothing).
    async fn stage_and_diff(
        &self,
        journal: &Journal,
        scratch: &Scratch,
        options: RunOptions,
        keep_hints: bool,
    ) -> Result<(SegmentReport, Vec<Planned>)> {
        // Each segment's new members spill to a folder of their own past the threshold.
        let threshold = spill_threshold(options.memory_budget_bytes);
        let spill = |number: usize| Spill::new(scratch.0.join(number.to_string()), threshold);
        let sync = self.sync();
        let clock = std::time::Instant::now();
        let load = |segment: &str| {
            self.committed_or_repair(SegmentStore::new(journal, segment).load(), options)
        };
        // The one segment's membership loads on a thread of its own while the query starts.
        let fixed = self.spec.key.as_ref().map(|key| {
            let store = SegmentStore::new(journal, key.as_str());
            let loading = tokio::task::spawn_blocking(move || store.load());
            (key, async move {
                let loaded = loading.await.map_err(|error| Error::Internal {
                    sync: self.sync(),
                    message: format!("loading the committed membership failed: {error}"),
                })?;
                self.committed_or_repair(loaded, options)
            })
        });
        let staged = stage::stage(
            &sync,
            self.source,
            self.spec.query.as_str(),
            fixed,
            &load,
            &spill,
            self.progress,
        )
        .await?;
        let mut segments = staged.segments;
        if self.spec.key.is_none() {
            // A fanned-out segment the query no longer names is emptied, not forgotten.
            for name in journal.snapshot_dirs().map_err(self.state_error())? {
                if !segments.contains_key(&name) {
                    let mut probe = load(&name)?.into_probe();
                    probe.spill_to(spill(segments.len()));
                    segments.insert(name.clone(), probe);
                }
            }
        }
        let staged_ms = clock.elapsed().as_millis();
        let mut report = SegmentReport {
            sync: sync.clone(),
            run_id: RunId::start(),
            outcome: RunOutcome::Unchanged,
            rows: staged.rows,
            rejected: staged.rejected,
            rejections: staged.rejections,
            segments: Vec::new(),
            resumed: None,
            refusal: None,
        };
        let mut planned = Vec::new();
        for (key, probe) in segments {
            let store = SegmentStore::new(journal, &key);
            if let Some(segment) =
                self.diff_one(&store, key, probe, options, keep_hints, &mut report)?
            {
                planned.push(segment);
            }
        }
        tracing::debug!(
            sync = %sync,
            rows = report.rows,
            query_and_diff_ms = staged_ms,
            finish_ms = clock.elapsed().as_millis() - staged_ms,
            "Diffed the query's keys against the committed membership."
        );
        Ok((report, planned))
    }

    /// Finishes one segment's diff: its changes go into `report`, and its plan is returned
    /// when there is anything to deliver.
    fn diff_one(
        &self,
        store: &SegmentStore,
        key: String,
        mut probe: ldsync_diff::Probe,
        options: RunOptions,
        keep_hints: bool,
        report: &mut SegmentReport,
    ) -> Result<Option<Planned>> {
        let first_load = !store.exists();
        let arrival = probe.take_arrival_order();
        let stale_hint = probe.hint_is_stale();
        let (committed, delta) = probe.finish().map_err(self.snapshot_error())?;
        if delta.adds.is_on_disk() {
            tracing::debug!(sync = %self.name, segment = %key, adds = delta.adds.len(), "The new members passed the memory budget's share and were sorted on disk.");
        }
        if keep_hints && (arrival.is_some() || stale_hint) {
            store.update_hint(&committed, arrival);
        }
        let before = committed.len() as u64;
        let after = before - delta.removes.len() as u64 + delta.adds.len() as u64;
        let import = options.backfill || (first_load && after >= self.spec.import_threshold);
        let (adds, removes) = (delta.adds.len() as u64, delta.removes.len() as u64);
        if !options.allow_mass_removal && report.refusal.is_none() {
            report.refusal = self.guardrail(&key, before, after, removes);
        }
        let segment = Planned {
            key: key.clone(),
            committed: std::sync::Arc::new(committed),
            delta: std::sync::Arc::new(delta),
            import,
            batch_size: self.spec.batch_size as usize,
        };
        let target = segment.import_target();
        let requests = segment.batches(target.as_deref()).len();
        drop(target);
        let sample = |keys: &KeySet| -> Vec<String> {
            keys.iter().take(SAMPLES).map(|k| String::from_utf8_lossy(k).into_owned()).collect()
        };
        report.segments.push(SegmentChanges {
            segment: key,
            members_before: before,
            members_after: after,
            adds,
            removes,
            sample_adds: sample(&segment.delta.adds),
            sample_removes: sample(&segment.delta.removes),
            via_import: import,
            requests: requests as u64,
        });
        Ok((import || adds + removes > 0).then_some(segment))
    }

    /// The guardrails: a run may not empty a segment, nor remove more than its share.
    fn guardrail(&self, segment: &str, before: u64, after: u64, removes: u64) -> Option<String> {
        if before > 0 && after == 0 {
            return Some(format!(
                "the query returned no members for segment `{segment}`, which has {before}: refusing to empty it (run again with --allow-mass-removal if that is intended)"
            ));
        }
        let ratio = self.spec.max_removal_ratio.get();
        #[expect(clippy::cast_precision_loss, reason = "a share needs no exact count")]
        let share = if before == 0 { 0.0 } else { removes as f64 / before as f64 };
        (share > ratio).then(|| {
            format!(
                "the run would remove {removes} of {before} members of segment `{segment}` ({:.1} %), more than max_removal_ratio {ratio}: refusing (run again with --allow-mass-removal if that is intended)",
                share * 100.0
            )
        })
    }

    /// Delivers and commits a plan; a refusal no retry can change (a 4xx) abandons the plan,
    /// so that it cannot block every later run: the snapshot stays as it was, and the next run
    /// sends every change again (adding or removing a member twice changes nothing).
    async fn deliver_or_abandon(
        &self,
        journal: &Journal,
        run_id: &str,
        plan: &[Planned],
        options: RunOptions,
    ) -> Result<()> {
        let result = self.deliver_and_commit(journal, run_id, plan, options).await;
        if let Err(error @ Error::LaunchDarkly { .. }) = &result {
            if !ldsync_core::Classify::is_retryable(error) {
                tracing::warn!(sync = %self.name, error = %crate::chain(error), "LaunchDarkly refused a batch; the plan is abandoned and the next run plans again.");
                journal.abandon().map_err(self.state_error())?;
            }
        }
        result
    }

    async fn deliver_and_commit(
        &self,
        journal: &Journal,
        run_id: &str,
        plan: &[Planned],
        options: RunOptions,
    ) -> Result<()> {
        let acked = journal.acknowledged().map_err(self.state_error())?;
        // The commit's files are written while the batches go: only the manifest waits for
        // LaunchDarkly's acknowledgements.
        let preparing: Vec<_> = plan
            .iter()
            .map(|segment| {
                let store = SegmentStore::new(journal, &segment.key);
                let (committed, delta) = (
                    std::sync::Arc::clone(&segment.committed),
                    std::sync::Arc::clone(&segment.delta),
                );
                let (fold, run) = (segment.import, run_id.to_owned());
                let preparer = store.clone();
                let task = tokio::task::spawn_blocking(move || {
                    preparer.prepare(&committed, &delta, fold, &run)
                });
                (store, task)
            })
            .collect();
        let clock = std::time::Instant::now();
        let delivered = self.deliver_plan(journal, plan, &acked, options).await;
        let deliver_ms = clock.elapsed().as_millis();
        // Every preparation ends before this returns, delivered or not: none may still be
        // writing when a later run commits the same segment.
        let mut prepared = Vec::new();
        for (store, task) in preparing {
            let next = task.await.map_err(|error| Error::Internal {
                sync: self.sync(),
                message: format!("preparing the commit failed: {error}"),
            })?;
            prepared.push((store, next));
        }
        let prepare_wait_ms = clock.elapsed().as_millis() - deliver_ms;
        delivered?;
        for (store, next) in prepared {
            if let Some(next) = next.map_err(self.store_error())? {
                store.finish(&next).map_err(self.store_error())?;
            }
        }
        journal.commit(&[]).map_err(self.state_error())?;
        tracing::debug!(
            sync = %self.name,
            deliver_ms,
            prepare_wait_ms,
            commit_ms = clock.elapsed().as_millis() - deliver_ms - prepare_wait_ms,
            "Delivered the plan and committed it."
        );
        Ok(())
    }

    /// Sends every batch of the plan not acknowledged yet.
    async fn deliver_plan(
        &self,
        journal: &Journal,
        plan: &[Planned],
        acked: &std::collections::HashSet<String>,
        options: RunOptions,
    ) -> Result<()> {
        for segment in plan {
            let ld_error = |source| Error::LaunchDarkly {
                sync: self.sync(),
                segment: segment.key.clone(),
                source: Box::new(source),
            };
            let target = segment.import_target();
            let batches = segment.batches(target.as_deref());
            let sources = segment.sources(target.as_deref());
            if batches.iter().all(|batch| acked.contains(batch.id())) {
                continue;
            }
            self.client
                .ensure_big_segment(self.project, self.environment, &self.new_segment(&segment.key))
                .await
                .map_err(ld_error)?;
            let total = batches.len() as u64;
            let mut done = batches.iter().filter(|batch| acked.contains(batch.id())).count() as u64;
            // A plan's adds and removes are disjoint, so its member batches may go in any order
            // and a few at a time; imports go one by one (a replace first, then merges).
            let concurrency = if segment.import { 1 } else { MEMBER_BATCHES_IN_FLIGHT };
            let waiting: Vec<&Batch<'_>> =
                batches.iter().filter(|batch| !acked.contains(batch.id())).collect();
            let mut waiting = waiting.into_iter();
            let mut sending = futures_util::stream::FuturesOrdered::new();
            loop {
                while sending.len() < concurrency {
                    let Some(batch) = waiting.next() else { break };
                    sending.push_back(self.deliver_batch(&segment.key, batch, sources, options));
                }
                let Some(sent) = sending.next().await else { break };
                let batch = sent.map_err(ld_error)?;
                // Sending a segment batch twice changes nothing, so its acknowledgement need
                // not reach the disk before the next batch goes.
                journal.acknowledge_lazily(batch.id()).map_err(self.state_error())?;
                done += 1;
                self.progress.batches(done, total);
            }
        }
        Ok(())
    }

    /// Delivers `batch`, handing it back when LaunchDarkly accepted it.
    async fn deliver_batch<'b>(
        &self,
        segment: &str,
        batch: &'b Batch<'b>,
        sources: Sources<'b>,
        options: RunOptions,
    ) -> Result<&'b Batch<'b>, ldsync_launchdarkly::Error> {
        self.deliver(segment, batch, sources, options).await.map(|()| batch)
    }

    async fn deliver(
        &self,
        segment: &str,
        batch: &Batch<'_>,
        sources: Sources<'_>,
        options: RunOptions,
    ) -> Result<(), ldsync_launchdarkly::Error> {
        let (project, environment) = (self.project, self.environment);
        // The keys are read now, one batch at a time, never the whole plan's.
        match batch {
            Batch::Members { change, .. } => {
                let keys = batch.keys(sources);
                self.client.update_members(project, environment, segment, *change, &keys).await
            }
            Batch::Import { mode, .. } => {
                let file = bytes::Bytes::from(batch.csv(sources));
                let id = loop {
                    match self
                        .client
                        .start_import(project, environment, segment, *mode, file.clone())
                        .await
                    {
                        Ok(id) => break id,
                        // One import at a time per environment: wait for the other one.
                        Err(error) if is_import_conflict(&error) => {
                            tokio::time::sleep(options.import_poll).await;
                        }
                        Err(error) => return Err(error),
                    }
                };
                self.client
                    .wait_for_import(project, environment, segment, &id, options.import_poll)
                    .await
            }
        }
    }

    fn new_segment(&self, key: &str) -> NewBigSegment {
        let fixed = self.spec.key.as_ref().map(SegmentKey::as_str) == Some(key);
        NewBigSegment {
            key: key.to_owned(),
            name: if fixed { self.spec.name.clone() } else { None }
                .unwrap_or_else(|| key.to_owned()),
            description: self.spec.description.clone().or_else(|| {
                Some(format!("Synced from the warehouse by ldsync (sync `{}`)", self.name))
            }),
            tags: self.spec.tags.clone(),
            unbounded: true,
            unbounded_context_kind: self.spec.context_kind.to_string(),
        }
    }
}
