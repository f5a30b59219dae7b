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
//! Exactly once: a run journals its batches (gzip bodies and payload IDs) before sending any,
//! acknowledges each batch as LaunchDarkly accepts it, and commits (cursor, identities,
//! backfill progress) only when all are accepted. A run that finds a plan left by a crashed
//! run first finishes it: unacknowledged batches go again with the same bodies and payload
//! IDs, which LaunchDarkly counts once, and identities committed stop later runs from sending
//! the same rows again.

mod batches;
mod cursor;
mod identity;
mod stage;

use std::{collections::HashSet, future::Future, time::Duration};

use chrono::{DateTime, Utc};
use ldsync_config::MetricEventsSpec;
use ldsync_core::{Source, SyncName};
use ldsync_launchdarkly::{CustomEvent, LaunchDarklyClient};
use ldsync_state::{
    BackfillProgress, EventLedger, EventsState, Journal, Plan, Rejection, RunRecord, StateDir,
};
use serde::{Deserialize, Serialize};

use self::{
    batches::{plan_batches, PlannedBatch},
    stage::{Reading, Staged},
};
use crate::{Error, Result, RunId, RunOutcome};

/// How many sample events a report shows.
const SAMPLES: usize = 5;

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
}

impl EventsReport {
    /// Whether the run would send anything.
    pub fn has_changes(&self) -> bool {
        self.events > 0 || self.resumed_batches > 0
    }
}

/// The plan written to the journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EventsPlan {
    scope: Scope,
    batches: Vec<PlannedBatch>,
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

/// The unfinished plan of an earlier run, if any.
struct Pending {
    run_id: String,
    plan: EventsPlan,
    unacknowledged: u64,
}

impl<S: Source> EventsSync<'_, S> {
    fn sync(&self) -> String {
        self.name.to_string()
    }

    fn state_error(&self) -> impl Fn(ldsync_state::Error) -> Error + '_ {
        |source| Error::State { sync: self.sync(), source }
    }

    /// `$1` of an incremental run, and the horizon of the live identities, for a cursor.
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
        let started = Utc::now();
        let clock = std::time::Instant::now();
        // Never two runs of one sync at once, across processes.
        let _lock = self.state.lock_sync(self.name).map_err(self.state_error())?;
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
                    error: None,
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

    /// A plan (`dry`) or a run of `mode`, top to bottom.
    async fn execute(&self, mode: Mode, dry: bool) -> Result<EventsReport> {
        let journal = self.state.journal(self.name).map_err(self.state_error())?;
        let ledger = self.state.event_ledger(self.name).map_err(self.state_error())?;
        // 1. An unfinished plan of a crashed run: finished first (a plan counts it as done).
        let pending = self.pending(&journal)?;
        let resumed = pending.as_ref().map(|p| (p.run_id.clone(), p.unacknowledged));
        let mut state = ledger.load().map_err(self.state_error())?;
        let mut in_flight = HashSet::new();
        if let Some(pending) = pending {
            if dry {
                let cursor = pending.plan.scope.apply(&mut state);
                state.cursor_ms = state.cursor_ms.max(cursor);
                in_flight = pending
                    .plan
                    .batches
                    .iter()
                    .flat_map(|b| b.identities.iter())
                    .map(|(id, _)| id.clone())
                    .collect();
            } else {
                tracing::info!(sync = %self.name, run_id = %pending.run_id, "Finishing the plan of an interrupted run.");
                self.deliver_and_commit(&journal, &ledger, &pending.plan).await?;
                state = ledger.load().map_err(self.state_error())?;
            }
        }
        let horizon = self.horizon();
        let mut report = EventsReport {
            sync: self.sync(),
            run_id: RunId::new(),
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
        };
        match mode {
            Mode::Incremental => {
                let from_ms = horizon(state.cursor_ms);
                // The cursor never passes the run's own clock: an event stamped in the future
                // (a skewed device clock) would otherwise move it past late rows still to come.
                // Such an event stays among the recent identities, so it is never sent twice.
                let now_ms = Utc::now().timestamp_millis();
                let scope = move |staged: &Staged| Scope::Incremental {
                    cursor_ms: staged.latest_ms().map(|latest| latest.min(now_ms)),
                };
                self.window(
                    &journal,
                    &ledger,
                    &state,
                    (from_ms, None),
                    &in_flight,
                    scope,
                    dry,
                    &mut report,
                )
                .await?;
            }
            Mode::Backfill(backfill) => {
                self.backfill_windows(
                    &journal,
                    &ledger,
                    state,
                    backfill,
                    &in_flight,
                    dry,
                    &mut report,
                )
                .await?;
            }
        }
        if !dry && report.has_changes() {
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
                "Metric events delivered."
            );
        }
        Ok(report)
    }

    /// Every window of a backfill, from where an interrupted backfill of the same range left.
    #[expect(clippy::too_many_arguments, reason = "the parts of one run, passed down once")]
    async fn backfill_windows(
        &self,
        journal: &Journal,
        ledger: &EventLedger,
        mut state: EventsState,
        backfill: Backfill,
        in_flight: &HashSet<String>,
        dry: bool,
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
                let scope =
                    |_: &Staged| Scope::Backfill { from_ms, to_ms, window_ms, start_ms, end_ms };
                self.window(
                    journal,
                    ledger,
                    &state,
                    (start_ms, Some(end_ms)),
                    in_flight,
                    scope,
                    dry,
                    report,
                )
                .await?;
                if !dry {
                    state = ledger.load().map_err(self.state_error())?;
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

    /// One query over `[from, until)`: stage → journal → deliver → commit (a plan stops after
    /// staging). Adds its counts to `report`.
    #[expect(clippy::too_many_arguments, reason = "the parts of one run, passed down once")]
    async fn window(
        &self,
        journal: &Journal,
        ledger: &EventLedger,
        state: &EventsState,
        (from_ms, until_ms): (i64, Option<i64>),
        in_flight: &HashSet<String>,
        scope: impl Fn(&Staged) -> Scope,
        dry: bool,
        report: &mut EventsReport,
    ) -> Result<()> {
        // 2. Query and stage: `$1` = the start, rows kept to the range, known rows dropped.
        let mut known = ledger.known(state, from_ms, until_ms).map_err(self.state_error())?;
        known.extend(in_flight.iter().cloned());
        let sync = self.sync();
        let reading = Reading {
            sync: &sync,
            query: self.spec.query.as_str(),
            context_kind: &self.spec.context_kind,
            from_ms,
            until_ms,
            known: &known,
        };
        let staged = stage::stage(self.source, &reading).await?;
        drop(known);
        let planned = plan_batches(&staged.events, self.spec.batch_size as usize);
        report.rows += staged.rows;
        report.events += staged.events.len() as u64;
        report.duplicates += staged.duplicates;
        report.outside_window += staged.outside;
        report.rejected += staged.rejected;
        report.batches += planned.len() as u64;
        let room = stage::KEPT_REJECTIONS.saturating_sub(report.rejections.len());
        report.rejections.extend(staged.rejections.iter().take(room).cloned());
        let room = SAMPLES.saturating_sub(report.samples.len());
        report.samples.extend(staged.events.iter().take(room).map(|e| e.event.clone()));
        let scope = scope(&staged);
        if let Scope::Incremental { cursor_ms } = scope {
            report.cursor_after = state.cursor_ms.max(cursor_ms).map(time);
        }
        if dry || (planned.is_empty() && matches!(scope, Scope::Incremental { .. })) {
            // Nothing to promise. (An empty backfill window is still journaled and committed,
            // so that its progress is recorded.)
            return Ok(());
        }
        // 3. Journal: the bodies first, then the plan that promises them.
        let mut plan = EventsPlan { scope, batches: Vec::with_capacity(planned.len()) };
        for (batch, payload) in planned {
            journal.write_pending(&batch.file, &payload.body).map_err(self.state_error())?;
            plan.batches.push(batch);
        }
        let promise = Plan {
            run_id: report.run_id.to_string(),
            created_at: Utc::now().to_rfc3339(),
            body: plan,
        };
        journal.begin(&promise).map_err(self.state_error())?;
        // 4. Deliver, then 5. commit.
        self.deliver_and_commit(journal, ledger, &promise.body).await
    }

    /// The pending plan, with how many of its batches are not yet acknowledged.
    fn pending(&self, journal: &Journal) -> Result<Option<Pending>> {
        let Some(plan) = journal.pending::<EventsPlan>().map_err(self.state_error())? else {
            return Ok(None);
        };
        let acked = journal.acknowledged().map_err(self.state_error())?;
        let unacknowledged =
            plan.body.batches.iter().filter(|batch| !acked.contains(&batch.id)).count() as u64;
        Ok(Some(Pending { run_id: plan.run_id, plan: plan.body, unacknowledged }))
    }

    /// Sends every batch of `plan` not yet acknowledged, then commits it.
    async fn deliver_and_commit(
        &self,
        journal: &Journal,
        ledger: &EventLedger,
        plan: &EventsPlan,
    ) -> Result<()> {
        let acked = journal.acknowledged().map_err(self.state_error())?;
        for batch in &plan.batches {
            if acked.contains(&batch.id) {
                continue;
            }
            let body = journal.read_pending(&batch.file).map_err(self.state_error())?.ok_or_else(
                || Error::Internal {
                    sync: self.sync(),
                    message: format!(
                        "the body of planned batch `{}` (`{}`) is missing from the journal",
                        batch.id, batch.file
                    ),
                },
            )?;
            self.client
                .import_events(self.project, self.environment, &batch.payload_id, body.into())
                .await
                .map_err(|source| Error::Events {
                    sync: self.sync(),
                    batch: batch.id.clone(),
                    payload_id: batch.payload_id.clone(),
                    source: Box::new(source),
                })?;
            journal.acknowledge(&batch.id).map_err(self.state_error())?;
            tracing::debug!(sync = %self.name, batch = %batch.id, events = batch.len(), "Metric-event batch accepted.");
        }
        // Commit: the identities and the cursor (or the backfill's progress), then the journal
        // goes. Committing twice (a crash between the two) changes nothing.
        let mut state = ledger.load().map_err(self.state_error())?;
        let cursor_ms = plan.scope.apply(&mut state);
        let delivered = plan.batches.iter().flat_map(|batch| batch.identities.iter().cloned());
        ledger
            .commit(&mut state, delivered, cursor_ms, self.horizon())
            .map_err(self.state_error())?;
        journal.commit(&[]).map_err(self.state_error())
    }
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

    #[test]
    fn report_times_saturate() {
        assert_eq!(time(0), DateTime::<Utc>::UNIX_EPOCH);
        assert_eq!(time(i64::MAX), DateTime::<Utc>::MAX_UTC);
    }
}
