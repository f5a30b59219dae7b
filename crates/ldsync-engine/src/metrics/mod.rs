//! Metric syncs: keep LaunchDarkly's metric definitions equal to a query's rows (update or
//! create, with minimal patches).
//!
//! One function, [`MetricsSync::run`], shows a run from top to bottom: finish a journaled plan
//! a previous run left, query → check each row → read what LaunchDarkly holds (one paged list)
//! → plan creates, minimal JSON Patches and archives → journal → deliver, acknowledging each
//! operation → commit the managed keys. Only the fields whose columns the query returns are
//! managed. A run that died is finished by the next: a create that had already happened
//! answers `409` and becomes a patch, and a patch is recomputed from a fresh read, so finishing
//! it twice changes nothing.

mod definition;
mod diff;
mod state;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::Utc;
use futures_util::TryStreamExt;
use ldsync_config::MetricsSpec;
use ldsync_core::{Source, SyncName, DEFAULT_BATCH_ROWS};
use ldsync_launchdarkly::{LaunchDarklyClient, MetricPost, MetricRep, PatchOp};
use ldsync_state::{Journal, Plan, Rejection, RunRecord, StateDir};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

pub use self::definition::MetricKind;
pub use self::diff::FieldChange;
use self::{
    definition::{Definition, Layout},
    state::{MetricsState, STATE_NAME},
};
use crate::{Error, Result, RunId, RunOutcome};

/// The most rejections kept with their reasons; the rest are counted.
const KEPT_REJECTIONS: usize = 1_000;

/// Everything a metrics sync needs, wired by the binary.
#[derive(Debug)]
pub struct MetricsSync<'a, S> {
    /// The sync's name.
    pub name: &'a SyncName,
    /// The `[metrics]` table.
    pub spec: &'a MetricsSpec,
    /// The warehouse.
    pub source: &'a S,
    /// The LaunchDarkly client of the sync's environment.
    pub client: &'a LaunchDarklyClient,
    /// The LaunchDarkly project key (metrics belong to the project, not an environment).
    pub project: &'a str,
    /// The state store.
    pub state: &'a StateDir,
}

/// What the command asked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsOptions {
    /// Delete and re-create a metric whose kind the warehouse changed (its experiment history
    /// in LaunchDarkly goes with it); without it such a metric is refused.
    pub allow_recreate: bool,
}

/// A metric the run creates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricCreate {
    /// The metric key.
    pub key: String,
    /// Its kind.
    pub kind: MetricKind,
    /// The fields sent, by API name.
    pub fields: BTreeMap<String, Json>,
}

/// A metric the run patches.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricPatch {
    /// The metric key.
    pub key: String,
    /// The fields that change, old → new.
    pub changes: Vec<FieldChange>,
}

impl MetricPatch {
    /// Whether a change undoes an edit made in LaunchDarkly.
    pub fn is_drift(&self) -> bool {
        self.changes.iter().any(|change| change.drift)
    }
}

/// A metric whose kind changes: deleted and created again.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricRecreate {
    /// The metric key.
    pub key: String,
    /// The kind LaunchDarkly holds.
    pub from: String,
    /// The kind the warehouse says.
    pub to: MetricKind,
}

/// A metric the run leaves alone, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetricRefusal {
    /// The metric key.
    pub key: String,
    /// Why, and how to get past it.
    pub reason: String,
}

/// The result of a plan, a run or a backfill.
#[derive(Debug, Clone, Serialize)]
pub struct MetricsReport {
    /// The sync.
    pub sync: String,
    /// The run (for a plan, the run it would be).
    pub run_id: RunId,
    /// How it ended.
    pub outcome: RunOutcome,
    /// Rows the query returned.
    pub rows: u64,
    /// Rows rejected, by the checks or by LaunchDarkly.
    pub rejected: u64,
    /// The first rejections, with their reasons.
    pub rejections: Vec<Rejection>,
    /// Metrics created.
    pub creates: Vec<MetricCreate>,
    /// Metrics patched, with the fields that change.
    pub patches: Vec<MetricPatch>,
    /// Metrics deleted and created again (a kind change, with `allow_recreate`).
    pub recreates: Vec<MetricRecreate>,
    /// Metrics archived (they left the query, ldsync created them, and `archive_removed`).
    pub archives: Vec<String>,
    /// Metrics left alone, with the reason (a kind change without `allow_recreate`).
    pub refused: Vec<MetricRefusal>,
    /// Metrics already equal to the warehouse.
    pub unchanged: u64,
    /// Requests the delivery takes (or took), the listing aside.
    pub requests: u64,
    /// The run whose unfinished plan this run finished first, if any.
    pub resumed: Option<String>,
}

impl MetricsReport {
    /// Whether the run would change anything in LaunchDarkly.
    pub fn has_changes(&self) -> bool {
        !(self.creates.is_empty()
            && self.patches.is_empty()
            && self.recreates.is_empty()
            && self.archives.is_empty())
    }

    /// How many patches undo edits made in LaunchDarkly.
    pub fn drifted(&self) -> usize {
        self.patches.iter().filter(|patch| patch.is_drift()).count()
    }

    fn reject(&mut self, rejection: Rejection) {
        self.rejected += 1;
        if self.rejections.len() < KEPT_REJECTIONS {
            self.rejections.push(rejection);
        }
    }
}

/// One operation of the journaled plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
enum Op {
    /// `POST` the definition; a `409` turns into a patch.
    Create { definition: Definition },
    /// `PATCH` these operations (recomputed from a fresh read when resumed).
    Patch { definition: Definition, ops: Vec<PatchOp> },
    /// `DELETE`, then `POST` (a kind change).
    Recreate { definition: Definition },
    /// `PATCH` `/archived` to true.
    Archive { key: String, ops: Vec<PatchOp> },
}

impl Op {
    fn key(&self) -> &str {
        match self {
            Self::Create { definition }
            | Self::Patch { definition, .. }
            | Self::Recreate { definition } => &definition.key,
            Self::Archive { key, .. } => key,
        }
    }

    fn requests(&self) -> u64 {
        match self {
            Self::Recreate { .. } => 2,
            _ => 1,
        }
    }
}

/// The plan written to the journal: the operations, and the state to commit once they are
/// delivered (adjusted by what LaunchDarkly answered).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct MetricsPlan {
    ops: Vec<Op>,
    next: MetricsState,
}

/// How one operation ended, as its acknowledgement in the journal records it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Done; the metric is not one ldsync created.
    Done,
    /// Done; ldsync created the metric.
    Created,
    /// LaunchDarkly refused it; the reason.
    Rejected(String),
    /// The metric no longer exists (an archive of a deleted metric).
    Gone,
}

impl Outcome {
    const SUFFIXES: [&'static str; 4] = ["done", "created", "rejected", "gone"];

    fn suffix(&self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Created => "created",
            Self::Rejected(_) => "rejected",
            Self::Gone => "gone",
        }
    }
}

/// The journal id of operation `index` with `suffix`.
fn ack_id(index: usize, key: &str, suffix: &str) -> String {
    format!("{index}:{key}:{suffix}")
}

/// The query result, checked.
#[derive(Debug, Default)]
struct Staged {
    definitions: Vec<Definition>,
    /// Every key the query returned, rejected rows included.
    seen: BTreeSet<String>,
    rows: u64,
    rejected: u64,
    rejections: Vec<Rejection>,
}

/// What kind of run plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Incremental,
    Backfill,
}

impl<S: Source> MetricsSync<'_, S> {
    fn sync(&self) -> String {
        self.name.to_string()
    }

    fn state_error(&self) -> impl Fn(ldsync_state::Error) -> Error + '_ {
        |source| Error::State { sync: self.sync(), source }
    }

    fn ld_error(&self, what: String) -> impl FnOnce(ldsync_launchdarkly::Error) -> Error + '_ {
        move |source| Error::Metrics { sync: self.sync(), what, source: Box::new(source) }
    }

    /// Runs the query, reads LaunchDarkly and plans; sends nothing but the listing and writes
    /// nothing.
    pub async fn plan(&self, options: MetricsOptions) -> Result<MetricsReport> {
        let journal = self.state.journal(self.name).map_err(self.state_error())?;
        let resumed =
            journal.pending::<MetricsPlan>().map_err(self.state_error())?.map(|plan| plan.run_id);
        let (report, _) = self.stage_and_plan(&journal, options, Mode::Incremental).await?;
        Ok(MetricsReport { resumed, ..report })
    }

    /// One run: finish what a previous run left, then query → check → read LaunchDarkly →
    /// plan → journal → deliver → commit.
    pub async fn run(&self, options: MetricsOptions) -> Result<MetricsReport> {
        self.run_recorded(options, Mode::Incremental).await
    }

    /// Re-sends every definition: a patch of every managed field of each metric that exists,
    /// a create of each that does not.
    pub async fn backfill(&self, options: MetricsOptions) -> Result<MetricsReport> {
        self.run_recorded(options, Mode::Backfill).await
    }

    async fn run_recorded(&self, options: MetricsOptions, mode: Mode) -> Result<MetricsReport> {
        // Never two runs of one sync at once, across processes. The run's time starts once it
        // holds the sync, so that no two runs' times overlap in the history.
        let _lock = self.state.lock_sync(self.name).map_err(self.state_error())?;
        let started = Utc::now();
        let clock = std::time::Instant::now();
        let journal = self.state.journal(self.name).map_err(self.state_error())?;
        let history = self.state.history(self.name).map_err(self.state_error())?;

        let result = self.run_locked(&journal, options, mode).await;
        let record =
            |outcome: &str, report: Option<&MetricsReport>, error: Option<String>| RunRecord {
                run_id: report.map_or_else(
                    || RunId::starting_at(started).to_string(),
                    |r| r.run_id.to_string(),
                ),
                command: if mode == Mode::Backfill { "backfill" } else { "run" }.to_owned(),
                started_at: started.to_rfc3339(),
                duration_ms: u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX),
                outcome: outcome.to_owned(),
                rows: report.map_or(0, |r| r.rows),
                adds: report.map_or(0, |r| (r.creates.len() + r.recreates.len()) as u64),
                removes: report.map_or(0, |r| (r.patches.len() + r.archives.len()) as u64),
                rejected: report.map_or(0, |r| r.rejected + r.refused.len() as u64),
                error,
            };
        let entry = match &result {
            Ok(report) => {
                let mut rejected = report.rejections.clone();
                let rows: BTreeMap<&str, u64> = report
                    .rejections
                    .iter()
                    .filter_map(|r| r.key.as_deref().map(|key| (key, r.row)))
                    .collect();
                rejected.extend(report.refused.iter().map(|refusal| Rejection {
                    row: rows.get(refusal.key.as_str()).copied().unwrap_or(0),
                    key: Some(refusal.key.clone()),
                    reason: refusal.reason.clone(),
                }));
                history.set_rejected(&rejected).map_err(self.state_error())?;
                let outcome = match report.outcome {
                    RunOutcome::Unchanged => "unchanged",
                    RunOutcome::Refused => "refused",
                    _ => "succeeded",
                };
                record(outcome, Some(report), None)
            }
            Err(error) => record("failed", None, Some(crate::chain(error))),
        };
        history.record(&entry).map_err(self.state_error())?;
        result
    }

    async fn run_locked(
        &self,
        journal: &Journal,
        options: MetricsOptions,
        mode: Mode,
    ) -> Result<MetricsReport> {
        // 1. Finish a plan a previous run promised and did not commit.
        let resumed = match journal.pending::<MetricsPlan>().map_err(self.state_error())? {
            Some(plan) => {
                tracing::info!(sync = %self.name, run_id = %plan.run_id, "Finishing the plan of an interrupted run.");
                self.deliver_and_commit(journal, &plan.body, true).await?;
                Some(plan.run_id)
            }
            None => None,
        };
        // 2. Query and check the rows, read LaunchDarkly, and plan.
        let (mut report, plan) = self.stage_and_plan(journal, options, mode).await?;
        report.resumed = resumed;
        let committed = MetricsState::read(journal).map_err(self.state_error())?;
        if plan.ops.is_empty() {
            report.outcome = if report.refused.is_empty() || report.has_changes() {
                RunOutcome::Unchanged
            } else {
                RunOutcome::Refused
            };
            if plan.next == committed {
                return Ok(report);
            }
        }
        // 3. Journal: the plan is the promise.
        let promise = Plan {
            run_id: report.run_id.to_string(),
            created_at: Utc::now().to_rfc3339(),
            body: plan,
        };
        journal.begin(&promise).map_err(self.state_error())?;
        // 4. Deliver, then 5. commit.
        let refused_by_ld = self.deliver_and_commit(journal, &promise.body, false).await?;
        for rejection in refused_by_ld {
            report.reject(rejection);
        }
        if !promise.body.ops.is_empty() {
            report.outcome = RunOutcome::Succeeded;
        }
        tracing::info!(
            sync = %self.name,
            run_id = %report.run_id,
            rows = report.rows,
            creates = report.creates.len() + report.recreates.len(),
            patches = report.patches.len(),
            drifted = report.drifted(),
            archives = report.archives.len(),
            refused = report.refused.len(),
            rejected = report.rejected,
            "Metrics sync delivered."
        );
        Ok(report)
    }

    /// Runs the query and checks each row.
    async fn stage(&self) -> Result<Staged> {
        let sync = self.sync();
        let mut staged = Staged::default();
        let mut batches = self.source.fetch(self.spec.query.as_str(), &[], DEFAULT_BATCH_ROWS);
        let mut layout: Option<Layout> = None;
        let mut positions: BTreeMap<String, u64> = BTreeMap::new();
        while let Some(batch) = batches.try_next().await.map_err(|source| {
            let retryable = ldsync_core::Classify::is_retryable(&source);
            Error::Source { sync: sync.clone(), source: Box::new(source), retryable }
        })? {
            if layout.is_none() {
                layout = Some(
                    Layout::of(&batch)
                        .map_err(|message| Error::Contract { sync: sync.clone(), message })?,
                );
            }
            let layout = layout.as_ref().expect("set from the first batch");
            for row in &batch.rows {
                staged.rows += 1;
                let position = staged.rows;
                let key = layout.key_of(row);
                let mut reject = |reason: String| {
                    staged.rejected += 1;
                    if staged.rejections.len() < KEPT_REJECTIONS {
                        staged.rejections.push(Rejection {
                            row: position,
                            key: key.clone(),
                            reason,
                        });
                    }
                };
                if let Some(key) = &key {
                    if let Some(first) = positions.get(key) {
                        reject(format!(
                            "metric `{key}` appears again: row {first} already defines it"
                        ));
                        continue;
                    }
                }
                match layout.definition(row, position) {
                    Ok(definition) => {
                        positions.insert(definition.key.clone(), position);
                        staged.definitions.push(definition);
                    }
                    Err(reason) => {
                        if let Some(key) = &key {
                            positions.insert(key.clone(), position);
                        }
                        reject(reason);
                    }
                }
                if let Some(key) = key {
                    staged.seen.insert(key);
                }
            }
        }
        Ok(staged)
    }

    async fn stage_and_plan(
        &self,
        journal: &Journal,
        options: MetricsOptions,
        mode: Mode,
    ) -> Result<(MetricsReport, MetricsPlan)> {
        let staged = self.stage().await?;
        let committed = MetricsState::read(journal).map_err(self.state_error())?;
        let held: BTreeMap<String, MetricRep> = self
            .client
            .list_metrics(self.project)
            .await
            .map_err(self.ld_error(format!("listing the metrics of project `{}`", self.project)))?
            .into_iter()
            .map(|metric| (metric.key.clone(), metric))
            .collect();
        let mut report = MetricsReport {
            sync: self.sync(),
            run_id: RunId::start(),
            outcome: RunOutcome::Unchanged,
            rows: staged.rows,
            rejected: staged.rejected,
            rejections: staged.rejections.clone(),
            creates: Vec::new(),
            patches: Vec::new(),
            recreates: Vec::new(),
            archives: Vec::new(),
            refused: Vec::new(),
            unchanged: 0,
            requests: 0,
            resumed: None,
        };
        let plan =
            plan(&staged, &held, &committed, self.spec.archive_removed, options, mode, &mut report);
        Ok((report, plan))
    }

    /// Delivers every operation not yet acknowledged, then commits the state. Returns the
    /// operations LaunchDarkly refused in this call, as rejections.
    async fn deliver_and_commit(
        &self,
        journal: &Journal,
        plan: &MetricsPlan,
        resumed: bool,
    ) -> Result<Vec<Rejection>> {
        let acked = journal.acknowledged().map_err(self.state_error())?;
        let mut rejections = Vec::new();
        for (index, op) in plan.ops.iter().enumerate() {
            let key = op.key();
            if Outcome::SUFFIXES.iter().any(|suffix| acked.contains(&ack_id(index, key, suffix))) {
                continue;
            }
            let sent = ack_id(index, key, "sent");
            let sent_before = acked.contains(&sent);
            let outcome = match op {
                Op::Create { definition } => {
                    journal.acknowledge(&sent).map_err(self.state_error())?;
                    self.create(definition, sent_before).await
                }
                Op::Patch { definition, ops } => {
                    if resumed {
                        self.reconcile(definition).await
                    } else {
                        self.patch(definition, ops).await
                    }
                }
                Op::Recreate { definition } => {
                    let already = if sent_before {
                        self.client.get_metric(self.project, key).await.map(|held| {
                            held.is_some_and(|held| held.kind == definition.kind.as_str())
                        })
                    } else {
                        Ok(false)
                    };
                    match already {
                        Ok(true) => self.reconcile(definition).await.map(|outcome| match outcome {
                            Outcome::Done => Outcome::Created,
                            other => other,
                        }),
                        Ok(false) => {
                            journal.acknowledge(&sent).map_err(self.state_error())?;
                            match self.client.delete_metric(self.project, key).await {
                                Ok(_) => self.create(definition, true).await,
                                Err(error) => Err(error),
                            }
                        }
                        Err(error) => Err(error),
                    }
                }
                Op::Archive { ops, .. } => {
                    match self.client.patch_metric(self.project, key, ops).await {
                        Ok(_) => Ok(Outcome::Done),
                        Err(error) if error.status() == Some(404) => Ok(Outcome::Gone),
                        Err(error) if matches!(error.status(), Some(400 | 422)) => {
                            Ok(Outcome::Rejected(format!(
                                "LaunchDarkly refused to archive metric `{key}`: {error}"
                            )))
                        }
                        Err(error) => Err(error),
                    }
                }
            }
            .map_err(self.ld_error(format!("metric `{key}`")))?;
            if let Outcome::Rejected(reason) = &outcome {
                let row = match op {
                    Op::Create { definition }
                    | Op::Patch { definition, .. }
                    | Op::Recreate { definition } => definition.row,
                    Op::Archive { .. } => 0,
                };
                tracing::warn!(sync = %self.name, metric = %key, error = %reason, "LaunchDarkly refused a metric.");
                rejections.push(Rejection {
                    row,
                    key: Some(key.to_owned()),
                    reason: reason.clone(),
                });
            }
            journal
                .acknowledge(&ack_id(index, key, outcome.suffix()))
                .map_err(self.state_error())?;
        }
        // Every operation is acknowledged: what ldsync now owns and has delivered.
        let acked = journal.acknowledged().map_err(self.state_error())?;
        let next = next_state(plan, &acked);
        next.write_target(journal).map_err(self.state_error())?;
        journal.commit(&[STATE_NAME.to_owned()]).map_err(self.state_error())?;
        Ok(rejections)
    }

    /// `POST`s a definition; on `409` (it exists: created meanwhile, or by this very plan
    /// before a crash) patches what differs instead.
    async fn create(
        &self,
        definition: &Definition,
        sent_before: bool,
    ) -> Result<Outcome, ldsync_launchdarkly::Error> {
        match self.client.create_metric(self.project, &post(definition)).await {
            Ok(_) => Ok(Outcome::Created),
            Err(error) if error.status() == Some(409) => {
                tracing::info!(sync = %self.name, metric = %definition.key, "The metric exists already: patching it instead.");
                // Ours when this plan had sent the create before: its answer was lost.
                self.reconcile(definition).await.map(|outcome| match outcome {
                    Outcome::Done if sent_before => Outcome::Created,
                    other => other,
                })
            }
            Err(error) if matches!(error.status(), Some(400 | 422)) => Ok(Outcome::Rejected(
                format!("LaunchDarkly refused to create metric `{}`: {error}", definition.key),
            )),
            Err(error) => Err(error),
        }
    }

    /// Sends a planned patch; when it no longer applies (`422`, or the metric is gone),
    /// recomputes it from a fresh read.
    async fn patch(
        &self,
        definition: &Definition,
        ops: &[PatchOp],
    ) -> Result<Outcome, ldsync_launchdarkly::Error> {
        match self.client.patch_metric(self.project, &definition.key, ops).await {
            Ok(_) => Ok(Outcome::Done),
            Err(error) if matches!(error.status(), Some(404 | 422)) => {
                self.reconcile(definition).await
            }
            Err(error) if error.status() == Some(400) => Ok(Outcome::Rejected(format!(
                "LaunchDarkly refused to patch metric `{}`: {error}",
                definition.key
            ))),
            Err(error) => Err(error),
        }
    }

    /// Reads the metric afresh and sends what differs: a create when it is missing, a minimal
    /// patch when it differs, nothing when it is equal.
    async fn reconcile(
        &self,
        definition: &Definition,
    ) -> Result<Outcome, ldsync_launchdarkly::Error> {
        let refused = |what: &str, error: &ldsync_launchdarkly::Error| {
            Outcome::Rejected(format!(
                "LaunchDarkly refused to {what} metric `{}`: {error}",
                definition.key
            ))
        };
        let Some(held) = self.client.get_metric(self.project, &definition.key).await? else {
            return match self.client.create_metric(self.project, &post(definition)).await {
                Ok(_) => Ok(Outcome::Created),
                Err(error) if matches!(error.status(), Some(400 | 422)) => {
                    Ok(refused("create", &error))
                }
                Err(error) => Err(error),
            };
        };
        if held.kind != definition.kind.as_str() {
            return Ok(Outcome::Rejected(format!(
                "metric `{}` is a {} metric in LaunchDarkly, and the query says {}",
                definition.key,
                held.kind,
                definition.kind.as_str()
            )));
        }
        let ops = diff::patch(&diff::changes(definition, &held, None));
        if ops.is_empty() {
            return Ok(Outcome::Done);
        }
        match self.client.patch_metric(self.project, &definition.key, &ops).await {
            Ok(_) => Ok(Outcome::Done),
            Err(error) if matches!(error.status(), Some(400 | 422)) => Ok(refused("patch", &error)),
            Err(error) => Err(error),
        }
    }
}

/// The body that creates a definition's metric.
fn post(definition: &Definition) -> MetricPost {
    serde_json::from_value(Json::Object(definition.create_body()))
        .expect("a checked definition has the types of `MetricPost`")
}

/// The state to commit once every operation of `plan` is acknowledged.
fn next_state(plan: &MetricsPlan, acked: &HashSet<String>) -> MetricsState {
    let mut next = plan.next.clone();
    for (index, op) in plan.ops.iter().enumerate() {
        let key = op.key();
        let has = |suffix: &str| acked.contains(&ack_id(index, key, suffix));
        if has("created") {
            next.owned.insert(key.to_owned());
        }
        if has("gone") {
            next.owned.remove(key);
        }
        if has("rejected") {
            // Not delivered: a LaunchDarkly-side difference is not drift next time.
            next.delivered.remove(key);
        }
    }
    next
}

/// Plans a run: each definition against what LaunchDarkly holds, and the metrics that left
/// the query. Pure; fills the report and returns the journal's plan.
fn plan(
    staged: &Staged,
    held: &BTreeMap<String, MetricRep>,
    committed: &MetricsState,
    archive_removed: bool,
    options: MetricsOptions,
    mode: Mode,
    report: &mut MetricsReport,
) -> MetricsPlan {
    let mut ops = Vec::new();
    // Owned metrics that LaunchDarkly no longer has are owned no more (a create makes them so
    // again).
    let mut next = MetricsState {
        owned: committed.owned.iter().filter(|key| held.contains_key(*key)).cloned().collect(),
        delivered: BTreeMap::new(),
    };
    for definition in &staged.definitions {
        let key = &definition.key;
        let reject = |report: &mut MetricsReport, reason: String| {
            report.reject(Rejection { row: definition.row, key: Some(key.clone()), reason });
        };
        match held.get(key) {
            None => {
                if let Some(reason) = definition.cannot_create() {
                    reject(report, reason);
                    continue;
                }
                report.creates.push(MetricCreate {
                    key: key.clone(),
                    kind: definition.kind,
                    fields: definition
                        .create_body()
                        .into_iter()
                        .filter(|(f, _)| f != "key" && f != "kind")
                        .collect(),
                });
                ops.push(Op::Create { definition: definition.clone() });
            }
            Some(current) if current.kind != definition.kind.as_str() => {
                if !options.allow_recreate {
                    report.refused.push(MetricRefusal {
                        key: key.clone(),
                        reason: format!(
                            "metric `{key}` is a {} metric in LaunchDarkly and the query makes it {}: a kind change deletes and re-creates the metric, losing its results in experiments; refusing (run again with --allow-recreate if that is intended)",
                            current.kind,
                            definition.kind.as_str()
                        ),
                    });
                    if let Some(last) = committed.delivered.get(key) {
                        next.delivered.insert(key.clone(), last.clone());
                    }
                    continue;
                }
                if let Some(reason) = definition.cannot_create() {
                    reject(
                        report,
                        reason.replace("does not exist in LaunchDarkly", "changes kind"),
                    );
                    continue;
                }
                report.recreates.push(MetricRecreate {
                    key: key.clone(),
                    from: current.kind.clone(),
                    to: definition.kind,
                });
                ops.push(Op::Recreate { definition: definition.clone() });
            }
            Some(current) => {
                let changes = match mode {
                    Mode::Incremental => {
                        diff::changes(definition, current, committed.delivered.get(key))
                    }
                    Mode::Backfill => diff::all_fields(definition, current),
                };
                if changes.is_empty() {
                    report.unchanged += 1;
                } else {
                    ops.push(Op::Patch {
                        definition: definition.clone(),
                        ops: diff::patch(&changes),
                    });
                    report.patches.push(MetricPatch { key: key.clone(), changes });
                }
            }
        }
        next.delivered.insert(key.clone(), definition.fields.clone());
    }
    if archive_removed {
        for key in committed.owned.iter().filter(|key| !staged.seen.contains(*key)) {
            if let Some(current) = held.get(key).filter(|current| !current.archived) {
                report.archives.push(key.clone());
                ops.push(Op::Archive { key: key.clone(), ops: diff::archive(current) });
            }
        }
    }
    report.requests = ops.iter().map(Op::requests).sum();
    MetricsPlan { ops, next }
}
