//! Metric-event syncs: send each event a query returns to LaunchDarkly exactly once.
//!
//! An incremental run ([`EventsSync::run`]) binds `$1` to the cursor (the first time
//! `initial_cursor`, later the latest delivered `occurred_at` minus `lookback`), drops the rows
//! whose identity it already delivered (`event_id`, or a hash of the row), and sends the rest.
//! A backfill ([`EventsSync::backfill`]) reads a past range window by window, `$1` bound to
//! each window's start; the query binds only `$1`, so the engine keeps each window's rows to
//! `[start, end)` itself, and a query that ignores the end reads more than it needs (restrict
//! it in SQL to keep windows cheap). [`EventsSync::plan`] and [`EventsSync::plan_backfill`]
//! say what would be sent, and send and write nothing.
//!
//! A run streams: rows are checked and batched as they arrive, and each batch is journaled
//! and sent while the next rows are read, so a run holds a chunk of rows and a few batches,
//! never the whole result.
//!
//! Exactly once: a run journals its plan (its scope), then each batch (gzip body, payload ID,
//! identities) before sending it, acknowledges each batch as LaunchDarkly accepts it, and
//! commits (identities, then the cursor or the backfill's progress) when all are settled. A run
//! that finds a plan left by a crashed run first finishes it: unacknowledged batches go again
//! with the same bodies and payload IDs, which LaunchDarkly counts once, and identities
//! committed stop later runs from sending the same rows again. A batch LaunchDarkly refuses
//! (a `400`: its content, not the weather) is settled as refused: its events become rejected
//! records with LaunchDarkly's reason, their identities are not committed, and the next run
//! reads them again while they are inside its window.

mod batches;
mod courier;
mod cursor;
mod identity;
mod seen;
mod stage;

use std::{future::Future, time::Duration};

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use ldsync_config::MetricEventsSpec;
use ldsync_core::{Source, SyncName, Value, DEFAULT_BATCH_ROWS};
use ldsync_launchdarkly::{CustomEvent, LaunchDarklyClient, MAX_EVENT_PAYLOAD_BYTES};
use ldsync_state::{
    BackfillProgress, EventLedger, EventsState, Journal, Plan, Prepared, Rejection, RunRecord,
    StateDir, DAY_MS,
};
use serde::{Deserialize, Serialize};

use self::{
    batches::{Batch, BatchBuilder, Part},
    courier::Courier,
    stage::{HashSet128, Reading, Stager},
};
use crate::{Error, Result, RunId, RunOutcome};

/// Batches built ahead of the one being sent: enough to keep the warehouse reading while
/// LaunchDarkly answers, few enough to bound memory.
const IN_FLIGHT: usize = 2;
/// The journal file that says a plan read its whole range, with the scope its commit moves.
const END_FILE: &str = "events-end.json";

/// Everything a metric-events sync needs, wired by the binary.
#[derive(Debug)]
pub struct EventsSync<'a, S> {
    /// The sync's name.
    pub name: &'a SyncName,
    /// The `[metric_events]` table.
    pub spec: &'a MetricEventsSpec,
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
}

/// The most windows one backfill may be cut into.
const MAX_BACKFILL_WINDOWS: i64 = 100_000;

/// A past time range to send again, in windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backfill {
    /// The start of the range (inclusive).
    pub from: DateTime<Utc>,
    /// The end of the range (exclusive).
    pub to: DateTime<Utc>,
    /// The length of one window: one query, one journal plan, one commit.
    pub window: Duration,
}

impl Backfill {
    /// The window unless told otherwise: one day.
    pub const DEFAULT_WINDOW: Duration = Duration::from_hours(24);

    /// The range `[from, to)` in windows of [`Backfill::DEFAULT_WINDOW`].
    pub fn new(from: DateTime<Utc>, to: DateTime<Utc>) -> Self {
        Self { from, to, window: Self::DEFAULT_WINDOW }
    }

    /// The same range in windows of `window`.
    #[must_use]
    pub fn with_window(self, window: Duration) -> Self {
        Self { window, ..self }
    }
}

/// What one backfill window read, sent (or would send) and skipped.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowReport {
    /// The start of the window (inclusive).
    pub start: DateTime<Utc>,
    /// The end of the window (exclusive).
    pub end: DateTime<Utc>,
    /// Whether an earlier, interrupted backfill of the same range already committed it.
    pub already_done: bool,
    /// Rows the query returned.
    pub rows: u64,
    /// Events sent (or, for a plan, to send).
    pub events: u64,
    /// Rows already delivered, skipped.
    pub duplicates: u64,
    /// Rows rejected.
    pub rejected: u64,
    /// Requests.
    pub batches: u64,
}

/// The result of a plan, a run or a backfill.
#[derive(Debug, Clone, Serialize)]
pub struct EventsReport {
    /// The sync.
    pub sync: String,
    /// The run (for a plan, the run it would be).
    pub run_id: RunId,
    /// `run` or `backfill`.
    pub command: String,
    /// How it ended.
    pub outcome: RunOutcome,
    /// Rows the queries returned.
    pub rows: u64,
    /// Events sent (or, for a plan, to send), not counting a finished earlier plan.
    pub events: u64,
    /// Rows whose event was already delivered, skipped.
    pub duplicates: u64,
    /// Rows outside the range read (the query returned rows before `$1`, or past a window).
    pub outside_window: u64,
    /// Rows rejected.
    pub rejected: u64,
    /// The first rejections, with their reasons.
    pub rejections: Vec<Rejection>,
    /// Requests the delivery takes (or took).
    pub batches: u64,
    /// What `$1` was bound to (for a backfill, the start of the range).
    pub read_from: DateTime<Utc>,
    /// The cursor before: the latest `occurred_at` delivered by incremental runs.
    pub cursor_before: Option<DateTime<Utc>>,
    /// The cursor after the run (a backfill does not move it).
    pub cursor_after: Option<DateTime<Utc>>,
    /// A few of the events, as LaunchDarkly receives them.
    pub samples: Vec<CustomEvent>,
    /// A backfill's windows.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<WindowReport>,
    /// The run whose unfinished plan this run finished first (a plan: would finish).
    pub resumed: Option<String>,
    /// Batches of that plan sent again (a plan: still to send).
    pub resumed_batches: u64,
    /// Batches LaunchDarkly refused (a `400`): their events are counted in `rejected`, not in
    /// `events`, and are read again by the next run while inside its window.
    pub refused_batches: u64,
    /// Why LaunchDarkly refused the first refused batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
}

impl EventsReport {
    /// Whether the run would send anything.
    pub fn has_changes(&self) -> bool {
        self.events > 0 || self.resumed_batches > 0
    }
}

/// The plan written to the journal before its first batch. Its batches are the journal files
/// `events-000000.batch`, `events-000001.batch`, … that carry its `plan_id`, each written before
/// it is sent; `events-end.json` says the plan read its whole range.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EventsPlan {
    /// Names the plan's batch files and the identity segment its commit writes.
    plan_id: String,
    /// What the plan reads (the cursor it moves is known only at its end).
    scope: Scope,
}

/// What the delivery of a plan settled.
#[derive(Debug, Default)]
struct Delivery {
    /// The batches LaunchDarkly accepted (their identities are in their journal files).
    accepted: Vec<usize>,
    /// Events in them.
    accepted_events: u64,
    /// Batches sent (not counting those acknowledged before).
    sent: u64,
    /// Batches refused.
    refused_batches: u64,
    /// Events in them.
    refused_events: u64,
    /// Their events, as rejected records.
    rejections: Vec<Rejection>,
    /// Why the first was refused.
    refusal: Option<String>,
}

impl Delivery {
    fn add_to(self, report: &mut EventsReport) {
        report.refused_batches += self.refused_batches;
        report.rejected += self.refused_events;
        let room = stage::KEPT_REJECTIONS.saturating_sub(report.rejections.len());
        report.rejections.extend(self.rejections.into_iter().take(room));
        if report.refusal.is_none() {
            report.refusal = self.refusal;
        }
    }
}

/// Whether LaunchDarkly's answer refuses the batch itself (its content), rather than the
/// token, the project or the schema (which refuse every batch alike, and which a fix of the
/// configuration lets the next run send).
fn refuses_batch(error: &ldsync_launchdarkly::Error) -> bool {
    matches!(error.status(), Some(status)
        if (400..500).contains(&status) && !matches!(status, 401 | 403 | 404 | 406 | 408 | 429))
}

/// What a plan is part of, and so what its commit moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Scope {
    /// An incremental run: the cursor moves to `cursor_ms`.
    Incremental { cursor_ms: Option<i64> },
    /// The window `[start_ms, end_ms)` of a backfill of `[from_ms, to_ms)`.
    Backfill { from_ms: i64, to_ms: i64, window_ms: i64, start_ms: i64, end_ms: i64 },
}

impl Scope {
    /// Applies the scope's progress to `state`; returns the cursor the commit moves to.
    fn apply(self, state: &mut EventsState) -> Option<i64> {
        match self {
            Self::Incremental { cursor_ms } => cursor_ms,
            Self::Backfill { from_ms, to_ms, window_ms, end_ms, .. } => {
                let earlier = state
                    .backfill
                    .filter(|p| (p.from_ms, p.to_ms, p.window_ms) == (from_ms, to_ms, window_ms))
                    .map_or(from_ms, |p| p.done_until_ms);
                let done_until_ms = earlier.max(end_ms);
                state.backfill = (done_until_ms < to_ms).then_some(BackfillProgress {
                    from_ms,
                    to_ms,
                    window_ms,
                    done_until_ms,
                });
                None
            }
        }
    }
}

/// What the command asked for.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Incremental,
    Backfill(Backfill),
}

/// A time as the report shows it.
fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(if ms < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

impl<S: Source> EventsSync<'_, S> {
    fn sync(&self) -> String {
        self.name.to_string()
    }

    fn state_error(&self) -> impl Fn(ldsync_state::Error) -> Error + '_ {
        |source| Error::State { sync: self.sync(), source }
    }

    /// `$1` of an incremental run, for a cursor.
    fn horizon(&self) -> impl Fn(Option<i64>) -> i64 {
        let lookback_ms = cursor::millis(self.spec.lookback);
        let initial_ms = self.spec.initial_cursor.timestamp_millis();
        move |cursor_ms| cursor::read_from(cursor_ms, lookback_ms, initial_ms)
    }

    /// What an incremental run would send; sends nothing and writes nothing.
    pub async fn plan(&self) -> Result<EventsReport> {
        self.execute(Mode::Incremental, true).await
    }

    /// One incremental run: finish what a previous run left, then query → stage → journal →
    /// deliver → commit.
    pub async fn run(&self) -> Result<EventsReport> {
        self.recorded("run", self.execute(Mode::Incremental, false)).await
    }

    /// What a backfill would send; sends nothing and writes nothing.
    pub async fn plan_backfill(&self, backfill: Backfill) -> Result<EventsReport> {
        self.execute(Mode::Backfill(backfill), true).await
    }

    /// Sends the events of a past range again, window by window, never an event already
    /// delivered. Each window is one journal plan and one commit; a backfill interrupted and
    /// started again with the same range and window goes on after the last committed window.
    pub async fn backfill(&self, backfill: Backfill) -> Result<EventsReport> {
        self.recorded("backfill", self.execute(Mode::Backfill(backfill), false)).await
    }

    /// Runs `work` under the sync's lock and records it in the run history.
    async fn recorded(
        &self,
        command: &str,
        work: impl Future<Output = Result<EventsReport>>,
    ) -> Result<EventsReport> {
        // Never two runs of one sync at once, across processes. The run's time starts once it
        // holds the sync, so that no two runs' times overlap in the history.
        let _lock = self.state.lock_sync(self.name).map_err(self.state_error())?;
        let started = Utc::now();
        let clock = std::time::Instant::now();
        let history = self.state.history(self.name).map_err(self.state_error())?;
        let result = work.await;
        let duration_ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
        let record = match &result {
            Ok(report) => {
                history.set_rejected(&report.rejections).map_err(self.state_error())?;
                RunRecord {
                    run_id: report.run_id.to_string(),
                    command: command.to_owned(),
                    started_at: started.to_rfc3339(),
                    duration_ms,
                    outcome: match report.outcome {
                        RunOutcome::Unchanged => "unchanged",
                        _ => "succeeded",
                    }
                    .to_owned(),
                    rows: report.rows,
                    adds: report.events,
                    removes: 0,
                    rejected: report.rejected,
                    error: report.refusal.clone(),
                }
            }
            Err(error) => RunRecord {
                run_id: RunId::starting_at(started).to_string(),
                command: command.to_owned(),
                started_at: started.to_rfc3339(),
                duration_ms,
                outcome: "failed".to_owned(),
                rows: 0,
                adds: 0,
                removes: 0,
                rejected: 0,
                error: Some(crate::chain(error)),
            },
        };
        history.record(&record).map_err(self.state_error())?;
        result
    }

    /// Today, in days since 1970-01-01: the unit of identity retention.
    fn today() -> i64 {
        Utc::now().timestamp_millis().div_euclid(DAY_MS)
    }

    /// The identity retention, in whole days.
    fn retention_days(&self) -> i64 {
        i64::try_from(self.spec.identity_retention.as_secs().div_ceil(86_400)).unwrap_or(i64::MAX)
    }

    /// A plan (`dry`) or a run of `mode`, top to bottom.
    #[expect(clippy::too_many_lines, reason = "one run from top to bottom, one step after another")]
    async fn execute(&self, mode: Mode, dry: bool) -> Result<EventsReport> {
        let journal = self.state.journal(self.name).map_err(self.state_error())?;
        let ledger = self.state.event_ledger(self.name).map_err(self.state_error())?;
        // Identities a version-1 state kept as text move into the compact files (a plan only
        // reads them).
        let mut extra = HashSet128::default();
        if dry {
            extra.extend(
                ledger
                    .legacy_identities()
                    .map_err(self.state_error())?
                    .iter()
                    .map(|identity| identity::hash(identity)),
            );
        } else {
            ledger.upgrade(identity::hash, Self::today()).map_err(self.state_error())?;
        }
        // 1. An unfinished plan of a crashed run: finished first (a plan counts it as done).
        let mut state = ledger.load().map_err(self.state_error())?;
        let mut resumed = None;
        let mut finished = None;
        if let Some(pending) = journal.pending::<EventsPlan>().map_err(self.state_error())? {
            let plan = pending.body;
            if dry {
                let acked = journal.acknowledged().map_err(self.state_error())?;
                let mut unacknowledged = 0;
                for index in 0.. {
                    let Some(batch) = self.read_batch(&journal, &plan.plan_id, index)? else {
                        break;
                    };
                    unacknowledged += u64::from(!acked.contains(&batch.id()));
                    extra.extend(batch.hashes);
                }
                if let Some(scope) = read_end(&journal).map_err(self.state_error())? {
                    let cursor = scope.apply(&mut state);
                    state.cursor_ms = state.cursor_ms.max(cursor);
                }
                resumed = Some((pending.run_id, unacknowledged));
            } else {
                tracing::info!(sync = %self.name, run_id = %pending.run_id, "Finishing the plan of an interrupted run.");
                let delivery = self.finish(&journal, &ledger, &plan).await?;
                resumed = Some((pending.run_id, delivery.sent));
                finished = Some(delivery);
                state = ledger.load().map_err(self.state_error())?;
            }
        }
        let horizon = self.horizon();
        let mut report = EventsReport {
            sync: self.sync(),
            run_id: RunId::start(),
            command: match mode {
                Mode::Incremental => "run",
                Mode::Backfill(_) => "backfill",
            }
            .to_owned(),
            outcome: RunOutcome::Unchanged,
            rows: 0,
            events: 0,
            duplicates: 0,
            outside_window: 0,
            rejected: 0,
            rejections: Vec::new(),
            batches: 0,
            read_from: time(horizon(state.cursor_ms)),
            cursor_before: state.cursor_ms.map(time),
            cursor_after: state.cursor_ms.map(time),
            samples: Vec::new(),
            windows: Vec::new(),
            resumed: resumed.as_ref().map(|(run_id, _)| run_id.clone()),
            resumed_batches: resumed.map_or(0, |(_, batches)| batches),
            refused_batches: 0,
            refusal: None,
        };
        if let Some(delivery) = finished {
            delivery.add_to(&mut report);
        }
        let parts = Parts { journal: &journal, ledger: &ledger, extra: &extra, dry };
        match mode {
            Mode::Incremental => {
                let from_ms = horizon(state.cursor_ms);
                // The cursor never passes the run's own clock: an event stamped in the future
                // (a skewed device clock) would otherwise move it past late rows still to come.
                // Such an event's identity is kept, so it is never sent twice.
                let now_ms = Utc::now().timestamp_millis();
                let scope = move |latest: Option<i64>| Scope::Incremental {
                    cursor_ms: latest.map(|latest| latest.min(now_ms)),
                };
                self.window(&parts, &state, (from_ms, None), scope, &mut report).await?;
            }
            Mode::Backfill(backfill) => {
                self.backfill_windows(&parts, state, backfill, &mut report).await?;
            }
        }
        if !dry && (report.has_changes() || report.refused_batches > 0) {
            report.outcome = RunOutcome::Succeeded;
        }
        if !dry {
            tracing::info!(
                sync = %self.name,
                run_id = %report.run_id,
                command = %report.command,
                rows = report.rows,
                events = report.events,
                duplicates = report.duplicates,
                rejected = report.rejected,
                batches = report.batches,
                refused_batches = report.refused_batches,
                "Metric events delivered."
            );
        }
        Ok(report)
    }

    /// Every window of a backfill, from where an interrupted backfill of the same range left.
    async fn backfill_windows(
        &self,
        parts: &Parts<'_>,
        mut state: EventsState,
        backfill: Backfill,
        report: &mut EventsReport,
    ) -> Result<()> {
        let (from_ms, to_ms) = (backfill.from.timestamp_millis(), backfill.to.timestamp_millis());
        if from_ms >= to_ms {
            return Err(Error::Guardrail {
                sync: self.sync(),
                message: format!(
                    "the backfill range is empty: `--from` ({}) must be before `--to` ({})",
                    backfill.from.to_rfc3339(),
                    backfill.to.to_rfc3339()
                ),
            });
        }
        let window_ms = cursor::millis(backfill.window).max(1);
        // Each window is one query and one journaled plan: a range cut into millions of them
        // is a typo in `--window`, and would only exhaust memory listing them.
        let windows = (to_ms - from_ms).div_euclid(window_ms).saturating_add(1);
        if windows > MAX_BACKFILL_WINDOWS {
            return Err(Error::Guardrail {
                sync: self.sync(),
                message: format!(
                    "the backfill would run {windows} windows, more than {MAX_BACKFILL_WINDOWS}: choose a longer `--window`"
                ),
            });
        }
        report.read_from = backfill.from;
        let done_until = state
            .backfill
            .filter(|p| (p.from_ms, p.to_ms, p.window_ms) == (from_ms, to_ms, window_ms))
            .map_or(from_ms, |p| p.done_until_ms);
        for (start_ms, end_ms) in cursor::windows(from_ms, to_ms, window_ms) {
            let before =
                (report.rows, report.events, report.duplicates, report.rejected, report.batches);
            let already_done = end_ms <= done_until;
            if !already_done {
                let scope = |_: Option<i64>| Scope::Backfill {
                    from_ms,
                    to_ms,
                    window_ms,
                    start_ms,
                    end_ms,
                };
                self.window(parts, &state, (start_ms, Some(end_ms)), scope, report).await?;
                if !parts.dry {
                    state = parts.ledger.load().map_err(self.state_error())?;
                }
            }
            report.windows.push(WindowReport {
                start: time(start_ms),
                end: time(end_ms),
                already_done,
                rows: report.rows - before.0,
                events: report.events - before.1,
                duplicates: report.duplicates - before.2,
                rejected: report.rejected - before.3,
                batches: report.batches - before.4,
            });
        }
        Ok(())
    }

    /// One query over `[from, until)`, streamed: stage → journal → deliver, batch by batch,
    /// then commit (a plan stops after staging). Adds its counts to `report`.
    #[expect(
        clippy::too_many_lines,
        reason = "the producer and the sender of one stream, side by side"
    )]
    async fn window(
        &self,
        parts: &Parts<'_>,
        state: &EventsState,
        (from_ms, until_ms): (i64, Option<i64>),
        scope: impl Fn(Option<i64>) -> Scope,
        report: &mut EventsReport,
    ) -> Result<()> {
        let sync = self.sync();
        let known = parts.ledger.identities().map_err(self.state_error())?;
        let reading = Reading {
            sync: &sync,
            query: self.spec.query.as_str(),
            context_kind: &self.spec.context_kind,
            from_ms,
            until_ms,
            future_limit_ms: Utc::now()
                .timestamp_millis()
                .saturating_add(stage::FUTURE_TOLERANCE_MS),
        };
        let mut stager = Stager::new(&reading, &known, parts.extra);
        let mut builder = BatchBuilder::new(self.spec.batch_size as usize, MAX_EVENT_PAYLOAD_BYTES);
        let plan_id = builder.plan_id().to_owned();
        let plan = Plan {
            run_id: report.run_id.to_string(),
            created_at: String::new(),
            body: EventsPlan { plan_id: plan_id.clone(), scope: scope(None) },
        };
        // 4. Seal, journal and deliver each batch on tasks of their own (a plan sends nothing).
        let mut pipeline = (!parts.dry)
            .then(|| self.courier(parts.journal).start(plan, parts.ledger.clone(), Self::today()));
        // 2. Query and stage, 3. hand each batch over as it closes.
        let produced = async {
            let params = [Value::TimestampMillis(from_ms)];
            let mut stream = self.source.fetch_cells(reading.query, &params, DEFAULT_BATCH_ROWS);
            let (mut chunk, mut chunk_rows, mut full) = (Vec::new(), 0, Vec::new());
            let mut chunk_size = stage::FIRST_CHUNK_ROWS;
            loop {
                let next = stream.try_next().await.map_err(|source| {
                    let retryable = ldsync_core::Classify::is_retryable(&source);
                    Error::Source { sync: sync.clone(), source: Box::new(source), retryable }
                })?;
                let done = next.is_none();
                if let Some(rows) = next {
                    chunk_rows += rows.len();
                    chunk.push(rows);
                    if chunk_rows < chunk_size {
                        continue;
                    }
                    chunk_size = (chunk_size * 2).min(stage::CHUNK_ROWS);
                }
                while let Some(spare) = pipeline.as_ref().and_then(courier::Pipeline::spare) {
                    builder.recycle(spare);
                }
                stager.chunk(&chunk, |event| {
                    builder.push(event.hash, event.row, event.shown, event.json, &mut full)
                })?;
                chunk.clear();
                chunk_rows = 0;
                if done {
                    builder.finish(&mut full);
                }
                for part in full.drain(..) {
                    let Some(pipeline) = &mut pipeline else {
                        // A plan only counts the batches; its pieces are built in again.
                        if let Part::Json(json) = part {
                            builder.recycle(json);
                        }
                        continue;
                    };
                    if !pipeline.part(part).await {
                        // Delivery stopped: its error is the run's.
                        return Ok(());
                    }
                }
                if done {
                    break;
                }
            }
            // The whole range was read: a resumed plan may move the cursor.
            if let Some(pipeline) = &mut pipeline {
                pipeline.end(scope(stager.counts.latest_ms), stager.take_seen()).await;
            }
            Ok::<_, Error>(())
        }
        .await;
        let (begun, delivery, prepared) = match pipeline {
            Some(pipeline) => {
                let finished = pipeline.finish(&sync).await?;
                (finished.begun, finished.delivery, finished.prepared)
            }
            None => (false, Delivery::default(), None),
        };
        produced?;
        let counts = std::mem::take(&mut stager.counts);
        report.rows += counts.rows;
        report.events += counts.events - delivery.refused_events;
        report.duplicates += counts.duplicates;
        report.outside_window += counts.outside;
        report.rejected += counts.rejected;
        report.batches += builder.finished() as u64;
        let room = stage::KEPT_REJECTIONS.saturating_sub(report.rejections.len());
        report.rejections.extend(counts.rejections.into_iter().take(room));
        let room = stage::SAMPLES.saturating_sub(report.samples.len());
        report.samples.extend(counts.samples.into_iter().take(room));
        let scope = scope(counts.latest_ms);
        if let Scope::Incremental { cursor_ms } = scope {
            report.cursor_after = state.cursor_ms.max(cursor_ms).map(time);
        }
        let mut delivery = delivery;
        let (accepted, accepted_events) =
            (std::mem::take(&mut delivery.accepted), delivery.accepted_events);
        delivery.add_to(report);
        if parts.dry {
            return Ok(());
        }
        // 5. Commit: the identities accepted, then the cursor or the window's progress.
        if begun {
            let accepted = Accepted { batches: &accepted, events: accepted_events, prepared };
            self.commit(parts.journal, parts.ledger, &plan_id, Some(scope), accepted)
        } else if matches!(scope, Scope::Backfill { .. }) {
            // Nothing sent, but the window is done: its progress is recorded.
            let mut state = parts.ledger.load().map_err(self.state_error())?;
            scope.apply(&mut state);
            parts
                .ledger
                .commit(&state, &plan_id, Vec::new(), Self::today(), self.retention_days())
                .map_err(self.state_error())
        } else {
            Ok(())
        }
    }

    /// Batch `index` of plan `plan_id`, from the journal; `None` past the last one.
    fn read_batch(&self, journal: &Journal, plan_id: &str, index: usize) -> Result<Option<Batch>> {
        let Some(bytes) =
            journal.read_pending(&batches::file_name(index)).map_err(self.state_error())?
        else {
            return Ok(None);
        };
        let batch = Batch::decode(&bytes).map_err(|reason| Error::Internal {
            sync: self.sync(),
            message: format!("journal file `{}`: {reason}", batches::file_name(index)),
        })?;
        // A file of another plan is a leftover, never this plan's work.
        Ok((batch.plan_id == plan_id && batch.index == index).then_some(batch))
    }

    /// What the sync sends with, owned (for the tasks that deliver a plan).
    fn courier(&self, journal: &Journal) -> Courier {
        Courier {
            name: self.name.clone(),
            client: self.client.clone(),
            journal: journal.clone(),
            project: self.project.to_owned(),
            environment: self.environment.to_owned(),
        }
    }

    /// Finishes the plan of a crashed run: sends its batches not yet acknowledged (the same
    /// bytes, the same payload IDs), then commits it. Its cursor moves only if it read its
    /// whole range; otherwise the next query reads the rest again.
    async fn finish(
        &self,
        journal: &Journal,
        ledger: &EventLedger,
        plan: &EventsPlan,
    ) -> Result<Delivery> {
        let acked = journal.acknowledged().map_err(self.state_error())?;
        let mut delivery = Delivery::default();
        let courier = self.courier(journal);
        for index in 0.. {
            let Some(batch) = self.read_batch(journal, &plan.plan_id, index)? else { break };
            if acked.contains(&batch.id()) {
                delivery.accepted.push(batch.index);
                delivery.accepted_events += batch.len() as u64;
            } else {
                courier.send(&batch, &mut delivery).await?;
            }
        }
        let end = read_end(journal).map_err(self.state_error())?;
        let accepted = Accepted {
            batches: &delivery.accepted,
            events: delivery.accepted_events,
            prepared: None,
        };
        self.commit(journal, ledger, &plan.plan_id, end, accepted)?;
        Ok(delivery)
    }

    /// Commits a delivered plan: the identities accepted, the cursor or backfill progress
    /// (`scope`, when the plan read its whole range), then the journal goes. Committing twice
    /// (a crash between the steps) changes nothing.
    fn commit(
        &self,
        journal: &Journal,
        ledger: &EventLedger,
        plan_id: &str,
        scope: Option<Scope>,
        accepted: Accepted<'_>,
    ) -> Result<()> {
        let mut state = ledger.load().map_err(self.state_error())?;
        if let Some(scope) = scope {
            let cursor = scope.apply(&mut state);
            state.cursor_ms = state.cursor_ms.max(cursor);
        }
        // The identities written ahead are the commit's when they are exactly the accepted
        // ones (every batch was accepted); otherwise they are read back from the journal.
        let prepared = accepted
            .prepared
            .filter(|prepared| prepared.count() == accepted.events && prepared.name() == plan_id);
        let committed = if let Some(prepared) = prepared {
            tracing::debug!(sync = %self.name, identities = prepared.count(), "Committing the identities written ahead.");
            ledger.commit_prepared(&state, prepared, self.retention_days())
        } else {
            tracing::debug!(sync = %self.name, batches = accepted.batches.len(), "Committing the identities of the accepted batches, read back from the journal.");
            let mut identities = Vec::new();
            for &index in accepted.batches {
                let batch =
                    self.read_batch(journal, plan_id, index)?.ok_or_else(|| Error::Internal {
                        sync: self.sync(),
                        message: format!(
                            "journal file `{}` of an accepted batch is missing",
                            batches::file_name(index)
                        ),
                    })?;
                identities.extend_from_slice(&batch.hashes);
            }
            ledger.commit(&state, plan_id, identities, Self::today(), self.retention_days())
        };
        committed.map_err(self.state_error())?;
        journal.commit(&[]).map_err(self.state_error())
    }
}

/// What a commit adds to the identities: the accepted batches (their identities are in the
/// journal), and the identities written ahead of it, if any.
struct Accepted<'a> {
    batches: &'a [usize],
    events: u64,
    prepared: Option<Prepared>,
}

/// The parts of one run that every window uses.
struct Parts<'a> {
    journal: &'a Journal,
    ledger: &'a EventLedger,
    /// Identities known besides the identity files (a plan's view of a pending plan).
    extra: &'a HashSet128,
    /// A plan: send and write nothing.
    dry: bool,
}

/// The scope of the pending plan, if it read its whole range.
fn read_end(journal: &Journal) -> ldsync_state::Result<Option<Scope>> {
    Ok(journal.read_pending(END_FILE)?.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backfill_window_records_its_progress_until_the_range_is_done() {
        let mut state = EventsState::default();
        let window = |start_ms, end_ms| Scope::Backfill {
            from_ms: 0,
            to_ms: 30,
            window_ms: 10,
            start_ms,
            end_ms,
        };
        assert_eq!(window(0, 10).apply(&mut state), None);
        assert_eq!(state.backfill.map(|p| p.done_until_ms), Some(10));
        window(10, 20).apply(&mut state);
        // Finishing a window again (a crash before the journal went) does not move back.
        window(0, 10).apply(&mut state);
        assert_eq!(state.backfill.map(|p| p.done_until_ms), Some(20));
        window(20, 30).apply(&mut state);
        assert_eq!(state.backfill, None, "a finished backfill leaves no progress behind");
        // Another range starts its own progress.
        let other =
            Scope::Backfill { from_ms: 5, to_ms: 50, window_ms: 10, start_ms: 5, end_ms: 15 };
        other.apply(&mut state);
        assert_eq!(state.backfill.map(|p| (p.from_ms, p.done_until_ms)), Some((5, 15)));
        assert_eq!(Scope::Incremental { cursor_ms: Some(7) }.apply(&mut state), Some(7));
    }

    /// Times the CPU part of a run of 1 M events (stage, batch, gzip, encode the journal
    /// files; no disk, no network) against a plain pass over the same rows, then the next run
    /// (every row already delivered, checked against the identity files). Prints the numbers:
    /// `cargo test --release -p ldsync-engine measure_1m -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check: run it by hand"]
    #[expect(
        clippy::too_many_lines,
        clippy::cast_precision_loss,
        clippy::cast_possible_wrap,
        reason = "a measurement: synthetic rows, then ratios of sizes and times"
    )]
    fn measure_1m_events() {
        use std::{
            sync::Arc,
            time::{Duration, Instant},
        };

        use ldsync_core::{CellBatch, ContextKind, RowBatch};

        const ROWS: usize = 1_000_000;
        let columns: Arc<[String]> =
            ["event_id", "event_key", "context_key", "metric_value", "occurred_at"]
                .iter()
                .map(|c| (*c).to_owned())
                .collect();
        let t0 = 1_767_225_600_000_i64;
        let make = || -> Vec<CellBatch> {
            (0..ROWS)
                .collect::<Vec<_>>()
                .chunks(DEFAULT_BATCH_ROWS)
                .map(|chunk| RowBatch {
                    columns: columns.clone(),
                    rows: chunk
                        .iter()
                        .map(|&i| {
                            vec![
                                Value::Text(format!("e{i}")),
                                Value::Text("bench-event".to_owned()),
                                Value::Text(format!("user-{}", i % 100_000)),
                                Value::Float(i as f64 * 0.5),
                                Value::TimestampMillis(t0 + i as i64 * 10),
                            ]
                        })
                        .collect(),
                })
                .map(|rows| CellBatch::from_rows(&rows))
                .collect()
        };
        let temp = tempfile::tempdir().unwrap();
        let state = StateDir::open(temp.path().join("state")).unwrap();
        let ledger = state.event_ledger(&"bench".parse().unwrap()).unwrap();
        let kind = ContextKind::user();
        let reading = Reading {
            sync: "bench",
            query: "",
            context_kind: &kind,
            from_ms: t0 - 1,
            until_ms: None,
            future_limit_ms: i64::MAX,
        };
        let extra = HashSet128::default();
        let run = |batches: &[CellBatch]| {
            let known = ledger.identities().unwrap();
            let mut stager = Stager::new(&reading, &known, &extra);
            let mut builder = BatchBuilder::new(
                ldsync_config::DEFAULT_EVENT_BATCH_SIZE as usize,
                MAX_EVENT_PAYLOAD_BYTES,
            );
            let (mut full, mut accepted, mut body_bytes, mut journal_bytes) =
                (Vec::new(), Vec::new(), 0, 0);
            let (mut sealing, mut encoding) = (Duration::ZERO, Duration::ZERO);
            let mut sealer = batches::Sealer::default();
            let mut settle = |builder: &mut BatchBuilder, full: &mut Vec<_>| {
                for part in full.drain(..) {
                    let at = Instant::now();
                    let batch = match part {
                        Part::Json(json) => {
                            builder.recycle(sealer.piece(json));
                            sealing += at.elapsed();
                            continue;
                        }
                        Part::Batch(batch) => sealer.seal(batch),
                    };
                    sealing += at.elapsed();
                    body_bytes += batch.body.len();
                    let at = Instant::now();
                    journal_bytes += batch.encode().len();
                    encoding += at.elapsed();
                    accepted.extend_from_slice(&batch.hashes);
                }
            };
            let started = Instant::now();
            let rows_per_chunk = stage::CHUNK_ROWS.div_ceil(DEFAULT_BATCH_ROWS);
            for chunk in batches.chunks(rows_per_chunk) {
                stager
                    .chunk(chunk, |e| builder.push(e.hash, e.row, e.shown, e.json, &mut full))
                    .unwrap();
                settle(&mut builder, &mut full);
            }
            builder.finish(&mut full);
            settle(&mut builder, &mut full);
            let took = started.elapsed();
            eprintln!("  of which sealing {sealing:?}, encoding the journal files {encoding:?}");
            (took, stager.counts, accepted, body_bytes, journal_bytes)
        };
        let baseline = |batches: &[CellBatch]| {
            let started = Instant::now();
            let mut bytes = 0_usize;
            for row in batches.iter().flat_map(CellBatch::rows) {
                for column in 0..columns.len() {
                    bytes += match row.get(column) {
                        ldsync_core::Cell::Text(text) => text.len(),
                        _ => 8,
                    };
                }
            }
            std::hint::black_box(bytes);
            started.elapsed()
        };
        let rows = make();
        let plain = baseline(&rows);
        // `LDSYNC_MEASURE_REPEAT=n`: the first run n times more, for a profile of staging.
        let repeat = std::env::var("LDSYNC_MEASURE_REPEAT").map_or(0, |n| n.parse().unwrap());
        for _ in 0..repeat {
            let (took, ..) = run(&rows);
            eprintln!("  first run again: {took:?}");
        }
        let (first, counts, accepted, body, journal) = run(&rows);
        assert_eq!(counts.events, ROWS as u64);
        let commit = Instant::now();
        ledger.commit(&EventsState::default(), "bench", accepted, 20_000, 400).unwrap();
        let commit = commit.elapsed();
        let (again, counts, ..) = run(&rows);
        assert_eq!((counts.events, counts.duplicates), (0, ROWS as u64));
        eprintln!(
            "1 M events: iterate {plain:?}; stage + batch + gzip + encode {first:?} ({:.1} × the pass over the rows); {:.1} B gzip body and {:.1} B journal per event; commit of 1 M identities {commit:?}; next run, all known {again:?}",
            first.as_secs_f64() / plain.as_secs_f64(),
            body as f64 / ROWS as f64,
            journal as f64 / ROWS as f64,
        );
    }

    #[test]
    fn report_times_saturate() {
        assert_eq!(time(0), DateTime::<Utc>::UNIX_EPOCH);
        assert_eq!(time(i64::MAX), DateTime::<Utc>::MAX_UTC);
    }
}
