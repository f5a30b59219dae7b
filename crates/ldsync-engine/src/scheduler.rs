//! Runs each sync on its cron schedule (UTC) until cancelled: the heart of `ldsync serve`.
//!
//! One task per sync, so a sync never runs twice at once: a due time that finds its sync still
//! running is skipped (or, with [`OverlapPolicy::QueueOnce`], queued once). A semaphore shared
//! by the tasks caps how many syncs run together. A sync whose run fails backs off
//! exponentially without holding up the others. On cancellation no new run starts and the runs
//! in flight get [`SchedulerOptions::shutdown_timeout`] to finish.
//!
//! The run itself is the caller's closure, so the scheduler knows nothing of sources or
//! LaunchDarkly. Time comes from a [`Clock`]: [`SystemClock`] in production, [`TokioClock`]
//! under tokio's paused time in tests, which therefore never sleep for real.
//!
//! ```
//! use chrono::{DateTime, Utc};
//! use ldsync_core::SyncName;
//! use ldsync_engine::scheduler::{Scheduler, SchedulerOptions};
//!
//! let beta = SyncName::new("beta-users").unwrap();
//! let manual = SyncName::new("manual").unwrap();
//! let scheduler = Scheduler::new(
//!     vec![(beta.clone(), Some("*/15 * * * *".parse().unwrap())), (manual, None)],
//!     SchedulerOptions::default(),
//! );
//! let now: DateTime<Utc> = "2026-01-01T10:07:00Z".parse().unwrap();
//! let next = scheduler.next_times(now);
//! assert_eq!(next, vec![(beta, "2026-01-01T10:15:00Z".parse().unwrap())]);
//! ```

use std::{
    any::Any,
    collections::BTreeMap,
    future::Future,
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use futures_util::FutureExt;
use ldsync_config::{Schedule, DEFAULT_MAX_CONCURRENT_SYNCS};
use ldsync_core::SyncName;
use tokio::{sync::Semaphore, task::JoinSet};
use tokio_util::sync::CancellationToken;

/// The longest [`SystemClock`] sleeps before it reads the wall clock again, so that a clock
/// step (NTP, a suspended machine) delays a run by at most this much.
const MAX_NAP: Duration = Duration::from_mins(1);

/// Where the scheduler reads the time (UTC, as cron schedules are evaluated) and how it waits.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;

    /// Waits until `at`; returns at once when `at` has passed.
    fn sleep_until(&self, at: DateTime<Utc>) -> impl Future<Output = ()> + Send;
}

/// The wall clock: what `ldsync serve` uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    async fn sleep_until(&self, at: DateTime<Utc>) {
        // Naps of at most a minute, each followed by a fresh reading: a monotonic timer alone
        // would drift from the wall clock the schedule is written in.
        while let Ok(left) = (at - Utc::now()).to_std() {
            if left.is_zero() {
                return;
            }
            tokio::time::sleep(left.min(MAX_NAP)).await;
        }
    }
}

/// UTC time read from tokio's clock, counted from a fixed start: under paused time
/// (`#[tokio::test(start_paused = true)]`) it moves only when tokio's time does, so tests of
/// schedules run instantly.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    start: DateTime<Utc>,
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock that reads `start` now.
    pub fn starting_at(start: DateTime<Utc>) -> Self {
        Self { start, origin: tokio::time::Instant::now() }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        self.start + TimeDelta::from_std(self.origin.elapsed()).unwrap_or(TimeDelta::MAX)
    }

    fn sleep_until(&self, at: DateTime<Utc>) -> impl Future<Output = ()> + Send {
        let deadline = (at - self.start)
            .to_std()
            .ok()
            .and_then(|offset| self.origin.checked_add(offset))
            .unwrap_or(self.origin);
        tokio::time::sleep_until(deadline)
    }
}

/// What to do when a sync is due while its previous run is still going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverlapPolicy {
    /// Skip the due time, with a warning.
    #[default]
    Skip,
    /// Start one run right after the current one; further due times meanwhile are skipped.
    QueueOnce,
}

/// How the scheduler runs the syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerOptions {
    /// How many syncs run at the same time (at least one); `limits.max_concurrent_syncs`.
    pub max_concurrent: usize,
    /// What to do when a sync is due while it is still running.
    pub overlap: OverlapPolicy,
    /// The wait after a first failure; it doubles with each further one.
    pub backoff_base: Duration,
    /// The longest wait after failures.
    pub backoff_max: Duration,
    /// How long runs in flight may take to finish once the scheduler is cancelled.
    pub shutdown_timeout: Duration,
}

impl Default for SchedulerOptions {
    /// Four syncs at once, skip overlaps, back off from 30 s to 30 min, and 25 s to shut down
    /// (under the 30 s Kubernetes waits between SIGTERM and SIGKILL).
    fn default() -> Self {
        Self {
            max_concurrent: DEFAULT_MAX_CONCURRENT_SYNCS as usize,
            overlap: OverlapPolicy::Skip,
            backoff_base: Duration::from_secs(30),
            backoff_max: Duration::from_mins(30),
            shutdown_timeout: Duration::from_secs(25),
        }
    }
}

/// How one run ended, as far as the scheduler cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunResult {
    /// The run succeeded: the backoff is reset.
    Succeeded,
    /// The run failed, with the error on one line: the sync backs off.
    Failed(String),
}

/// What one sync did while the scheduler ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Runs started.
    pub started: u64,
    /// Runs that succeeded.
    pub succeeded: u64,
    /// Runs that failed (a panic counts as a failure).
    pub failed: u64,
    /// Due times skipped because the sync was still running or waiting for a slot.
    pub skipped: u64,
    /// Due times queued to run right after the current run ([`OverlapPolicy::QueueOnce`]).
    pub queued: u64,
}

/// What the scheduler did, once it has stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchedulerReport {
    /// Each scheduled sync, by name.
    pub syncs: BTreeMap<SyncName, SyncStats>,
    /// The syncs whose run was still going when the shutdown timeout ran out; that run was
    /// dropped, which the journal makes as safe as a crash: the next run finishes it.
    pub unfinished: Vec<SyncName>,
}

/// Runs each scheduled sync on its schedule until cancelled.
#[derive(Debug, Clone)]
pub struct Scheduler {
    scheduled: BTreeMap<SyncName, Schedule>,
    unscheduled: Vec<SyncName>,
    options: SchedulerOptions,
}

impl Scheduler {
    /// A scheduler of `entries`; a sync without a schedule is never run (it runs only through
    /// `ldsync run`). When a name appears twice, the last entry wins.
    pub fn new(entries: Vec<(SyncName, Option<Schedule>)>, options: SchedulerOptions) -> Self {
        let mut scheduled = BTreeMap::new();
        let mut unscheduled = Vec::new();
        for (name, schedule) in entries {
            if let Some(schedule) = schedule {
                unscheduled.retain(|other| other != &name);
                scheduled.insert(name, schedule);
            } else {
                scheduled.remove(&name);
                unscheduled.push(name);
            }
        }
        Self { scheduled, unscheduled, options }
    }

    /// The next time each scheduled sync is due after `now`, by name (backoff aside).
    pub fn next_times(&self, now: DateTime<Utc>) -> Vec<(SyncName, DateTime<Utc>)> {
        self.scheduled
            .iter()
            .filter_map(|(name, schedule)| Some((name.clone(), next_after(schedule, now)?)))
            .collect()
    }

    /// Runs each scheduled sync through `run_sync` when it is due, until `cancel` is
    /// cancelled; then waits for the runs in flight, up to the shutdown timeout.
    ///
    /// `run_sync` should capture `cancel` if a run is to stop early (after its batch in
    /// flight) on shutdown. A panic in a run counts as a failure of that run.
    pub async fn run<C, F, Fut>(
        self,
        clock: C,
        run_sync: F,
        cancel: CancellationToken,
    ) -> SchedulerReport
    where
        C: Clock,
        F: Fn(SyncName, DateTime<Utc>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = RunResult> + Send + 'static,
    {
        let clock = Arc::new(clock);
        let run_sync = Arc::new(run_sync);
        let slots = Arc::new(Semaphore::new(self.options.max_concurrent.max(1)));
        for name in &self.unscheduled {
            tracing::info!(sync = %name, "Sync has no schedule; serve does not run it.");
        }
        let mut tasks = JoinSet::new();
        let mut states = Vec::with_capacity(self.scheduled.len());
        for (name, schedule) in self.scheduled {
            let state = Arc::new(Mutex::new(TaskState::default()));
            states.push((name.clone(), Arc::clone(&state)));
            let task = SyncTask {
                name,
                schedule,
                options: self.options,
                clock: Arc::clone(&clock),
                run_sync: Arc::clone(&run_sync),
                slots: Arc::clone(&slots),
                cancel: cancel.child_token(),
                state,
            };
            tasks.spawn(task.run());
        }

        cancel.cancelled().await;
        let in_flight = states.iter().filter(|(_, state)| lock(state).running).count();
        tracing::info!(in_flight, "Scheduler stopping; waiting for the runs in flight.");
        let drain = async { while tasks.join_next().await.is_some() {} };
        let drained = tokio::time::timeout(self.options.shutdown_timeout, drain).await.is_ok();
        // Dropping the tasks drops the runs still going.
        tasks.abort_all();

        let mut report = SchedulerReport::default();
        for (name, state) in states {
            let state = lock(&state);
            if !drained && state.running {
                report.unfinished.push(name.clone());
            }
            report.syncs.insert(name, state.stats);
        }
        if !report.unfinished.is_empty() {
            let syncs: Vec<&str> = report.unfinished.iter().map(SyncName::as_str).collect();
            tracing::warn!(
                syncs = ?syncs,
                timeout_secs = self.options.shutdown_timeout.as_secs_f64(),
                "Runs still going at the shutdown timeout were stopped; the next run finishes them."
            );
        }
        report
    }
}

/// The wait before the next run after `failures` consecutive failures:
/// `min(base · 2^(failures − 1), max)`.
fn backoff(base: Duration, max: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    base.saturating_mul(1 << doublings).min(max)
}

/// The first time strictly after `after` when `schedule` fires, on a whole second.
///
/// `Schedule::next_after` carries the fraction of a second of its argument into its answer
/// (10:14:59.25 gives 10:15:00.25), so the argument is truncated first: the schedule's times
/// are whole seconds, so the first one after the truncated time is also after `after`.
fn next_after(schedule: &Schedule, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule.next_after(after.trunc_subsecs(0))
}

/// The first time at or after `at` when `schedule` fires.
fn first_at_or_after(schedule: &Schedule, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let mut next = next_after(schedule, at - TimeDelta::seconds(1))?;
    while next < at {
        next = next_after(schedule, next)?;
    }
    Some(next)
}

/// What a sync's task shares with the scheduler, which reads it when it stops.
#[derive(Debug, Default)]
struct TaskState {
    stats: SyncStats,
    running: bool,
}

/// The counters are plain data, so a panic elsewhere cannot leave them broken.
fn lock(state: &Mutex<TaskState>) -> std::sync::MutexGuard<'_, TaskState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The loop of one sync: wait for the due time, run, repeat.
struct SyncTask<C, F> {
    name: SyncName,
    schedule: Schedule,
    options: SchedulerOptions,
    clock: Arc<C>,
    run_sync: Arc<F>,
    slots: Arc<Semaphore>,
    cancel: CancellationToken,
    state: Arc<Mutex<TaskState>>,
}

impl<C, F, Fut> SyncTask<C, F>
where
    C: Clock,
    F: Fn(SyncName, DateTime<Utc>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = RunResult> + Send + 'static,
{
    async fn run(self) {
        let mut due = next_after(&self.schedule, self.clock.now());
        let mut failures: u32 = 0;
        // The due time queued to run right after the current run, if any.
        let mut queued: Option<DateTime<Utc>> = None;
        loop {
            let slot = if let Some(slot) = queued.take() {
                slot
            } else {
                let Some(at) = due else {
                    tracing::info!(sync = %self.name, "Sync's schedule has no more times.");
                    return;
                };
                tokio::select! {
                    biased;
                    () = self.cancel.cancelled() => return,
                    () = self.clock.sleep_until(at) => {}
                }
                at
            };
            // The due time this run answers is used up; watch the next one while it runs.
            let now = self.clock.now();
            if due.is_some_and(|at| at <= now) {
                due = next_after(&self.schedule, now);
            }
            let Some(result) = self.attempt(slot, &mut due, &mut queued).await else {
                return;
            };
            match result {
                RunResult::Succeeded => {
                    failures = 0;
                    lock(&self.state).stats.succeeded += 1;
                }
                RunResult::Failed(error) => {
                    failures = failures.saturating_add(1);
                    lock(&self.state).stats.failed += 1;
                    let delay =
                        backoff(self.options.backoff_base, self.options.backoff_max, failures);
                    let not_before =
                        self.clock.now() + TimeDelta::from_std(delay).unwrap_or(TimeDelta::MAX);
                    // The backoff decides the next run, a queued one included.
                    queued = None;
                    if due.is_some_and(|at| at < not_before) {
                        due = first_at_or_after(&self.schedule, not_before);
                    }
                    tracing::warn!(
                        sync = %self.name,
                        failures,
                        backoff_secs = delay.as_secs(),
                        next_run = ?due,
                        %error,
                        "Sync run failed; backing off."
                    );
                }
            }
        }
    }

    /// Waits for a slot and runs the sync for the due time `slot`, skipping or queueing the
    /// due times that pass meanwhile; `None` when cancelled before the run started.
    async fn attempt(
        &self,
        slot: DateTime<Utc>,
        due: &mut Option<DateTime<Utc>>,
        queued: &mut Option<DateTime<Utc>>,
    ) -> Option<RunResult> {
        let run = self.start_run(slot);
        tokio::pin!(run);
        let mut stopping = false;
        loop {
            let next = *due;
            tokio::select! {
                biased;
                result = &mut run => return result,
                () = self.cancel.cancelled(), if !stopping => stopping = true,
                () = self.clock.sleep_until(next.unwrap_or_default()), if !stopping && next.is_some() => {
                    let at = next.expect("the branch is enabled only with a due time");
                    *due = next_after(&self.schedule, at.max(self.clock.now()));
                    if self.options.overlap == OverlapPolicy::QueueOnce && queued.is_none() {
                        *queued = Some(at);
                        lock(&self.state).stats.queued += 1;
                        tracing::info!(
                            sync = %self.name,
                            due = %at,
                            "Sync is still running (or waiting for a slot); its next run starts right after."
                        );
                    } else {
                        lock(&self.state).stats.skipped += 1;
                        tracing::warn!(
                            sync = %self.name,
                            due = %at,
                            "Sync is still running (or waiting for a slot); skipping its scheduled run."
                        );
                    }
                }
            }
        }
    }

    /// Takes a place among the concurrent runs, then runs the sync for the due time `due`;
    /// `None` when cancelled before that.
    async fn start_run(&self, due: DateTime<Utc>) -> Option<RunResult> {
        let _slot = tokio::select! {
            biased;
            () = self.cancel.cancelled() => return None,
            slot = self.slots.acquire() => slot.expect("the scheduler never closes its semaphore"),
        };
        {
            let mut state = lock(&self.state);
            state.running = true;
            state.stats.started += 1;
        }
        tracing::debug!(sync = %self.name, "Sync run starting.");
        let run = async { (self.run_sync)(self.name.clone(), due).await };
        let result = AssertUnwindSafe(run).catch_unwind().await.unwrap_or_else(|panic| {
            RunResult::Failed(format!("the run panicked: {}", panic_message(panic.as_ref())))
        });
        lock(&self.state).running = false;
        Some(result)
    }
}

/// The message a panic was raised with, when it is text.
fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        format!("2026-01-01T{text}Z").parse().unwrap()
    }

    fn sync(name: &str) -> SyncName {
        SyncName::new(name).unwrap()
    }

    fn cron(text: &str) -> Schedule {
        text.parse().unwrap()
    }

    fn options() -> SchedulerOptions {
        SchedulerOptions { shutdown_timeout: Duration::from_hours(1), ..Default::default() }
    }

    /// Each run's sync and start time, in order.
    type Starts = Arc<Mutex<Vec<(String, DateTime<Utc>)>>>;

    fn starts_of(starts: &Starts, name: &str) -> Vec<DateTime<Utc>> {
        starts.lock().unwrap().iter().filter(|(n, _)| n == name).map(|(_, t)| *t).collect()
    }

    /// A run that records its start, then takes `length(name)` and succeeds.
    fn timed_run(
        clock: TokioClock,
        starts: &Starts,
        length: impl Fn(&str) -> Duration + Send + Sync + 'static,
    ) -> impl Fn(SyncName, DateTime<Utc>) -> futures_util::future::BoxFuture<'static, RunResult>
           + Send
           + Sync {
        let starts = Arc::clone(starts);
        move |name: SyncName, _due: DateTime<Utc>| {
            starts.lock().unwrap().push((name.to_string(), clock.now()));
            let length = length(name.as_str());
            Box::pin(async move {
                tokio::time::sleep(length).await;
                RunResult::Succeeded
            })
        }
    }

    /// Runs `scheduler` from `start` (virtual time), cancels it at `stop`, and returns its
    /// report and the time it returned.
    async fn serve<F, Fut>(
        scheduler: Scheduler,
        start: &str,
        stop: &str,
        run_sync: impl FnOnce(TokioClock) -> F,
    ) -> (SchedulerReport, DateTime<Utc>)
    where
        F: Fn(SyncName, DateTime<Utc>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = RunResult> + Send + 'static,
    {
        let clock = TokioClock::starting_at(at(start));
        let cancel = CancellationToken::new();
        let handle = tokio::spawn(scheduler.run(clock, run_sync(clock), cancel.clone()));
        clock.sleep_until(at(stop)).await;
        cancel.cancel();
        let report = handle.await.unwrap();
        (report, clock.now())
    }

    #[tokio::test(start_paused = true)]
    async fn runs_fire_exactly_on_their_schedule() {
        let scheduler = Scheduler::new(vec![(sync("a"), Some(cron("*/15 * * * *")))], options());
        let starts = Starts::default();
        let (report, ended) = serve(scheduler, "10:07:00", "10:50:00", |clock| {
            timed_run(clock, &starts, |_| Duration::ZERO)
        })
        .await;
        assert_eq!(starts_of(&starts, "a"), [at("10:15:00"), at("10:30:00"), at("10:45:00")]);
        let a = report.syncs[&sync("a")];
        assert_eq!((a.started, a.succeeded, a.skipped), (3, 3, 0));
        assert!(report.unfinished.is_empty());
        assert_eq!(ended, at("10:50:00"), "nothing in flight: it returns at once");
    }

    #[tokio::test(start_paused = true)]
    async fn seconds_schedules_fire_on_the_second() {
        let scheduler = Scheduler::new(vec![(sync("a"), Some(cron("*/20 * * * * *")))], options());
        let starts = Starts::default();
        serve(scheduler, "10:00:05.250", "10:00:59", |clock| {
            timed_run(clock, &starts, |_| Duration::ZERO)
        })
        .await;
        assert_eq!(starts_of(&starts, "a"), [at("10:00:20"), at("10:00:40")]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_longer_than_the_interval_skips_due_times() {
        let scheduler = Scheduler::new(vec![(sync("a"), Some(cron("*/15 * * * *")))], options());
        let starts = Starts::default();
        let (report, ended) = serve(scheduler, "10:07:00", "11:20:00", |clock| {
            timed_run(clock, &starts, |_| Duration::from_mins(20))
        })
        .await;
        // 10:30 and 11:00 find the run still going.
        assert_eq!(starts_of(&starts, "a"), [at("10:15:00"), at("10:45:00"), at("11:15:00")]);
        let expected = SyncStats { started: 3, succeeded: 3, skipped: 2, ..Default::default() };
        assert_eq!(report.syncs[&sync("a")], expected);
        assert_eq!(ended, at("11:35:00"), "the run in flight is awaited");
        assert!(report.unfinished.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn queue_once_starts_one_run_right_after() {
        let options = SchedulerOptions { overlap: OverlapPolicy::QueueOnce, ..options() };
        let scheduler = Scheduler::new(vec![(sync("a"), Some(cron("*/15 * * * *")))], options);
        let starts = Starts::default();
        let (report, ended) = serve(scheduler, "10:07:00", "11:29:00", |clock| {
            timed_run(clock, &starts, |_| Duration::from_mins(35))
        })
        .await;
        // 10:30 is queued and starts when the 10:15 run ends (10:50); 10:45 is skipped.
        assert_eq!(starts_of(&starts, "a"), [at("10:15:00"), at("10:50:00"), at("11:25:00")]);
        let expected = SyncStats { started: 3, succeeded: 3, skipped: 2, queued: 2, failed: 0 };
        assert_eq!(report.syncs[&sync("a")], expected);
        assert_eq!(ended, at("12:00:00"));
    }

    #[tokio::test(start_paused = true)]
    async fn each_run_is_told_the_due_time_it_answers() {
        let options = SchedulerOptions { overlap: OverlapPolicy::QueueOnce, ..options() };
        let scheduler = Scheduler::new(vec![(sync("a"), Some(cron("*/15 * * * *")))], options);
        let dues = Starts::default();
        serve(scheduler, "10:07:00", "11:29:00", |_| {
            let dues = Arc::clone(&dues);
            move |name: SyncName, due: DateTime<Utc>| {
                dues.lock().unwrap().push((name.to_string(), due));
                Box::pin(async {
                    tokio::time::sleep(Duration::from_mins(35)).await;
                    RunResult::Succeeded
                })
            }
        })
        .await;
        // A queued run answers the due time it was queued for: several processes sharing a
        // state store claim each due time once by it.
        assert_eq!(starts_of(&dues, "a"), [at("10:15:00"), at("10:30:00"), at("11:00:00")]);
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_max_concurrent_runs_at_once() {
        let names = ["a", "b", "c", "d", "e"];
        let entries = names.iter().map(|n| (sync(n), Some(cron("* * * * *")))).collect();
        let scheduler =
            Scheduler::new(entries, SchedulerOptions { max_concurrent: 2, ..options() });
        let starts = Starts::default();
        let current = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (report, _) = serve(scheduler, "10:00:30", "10:01:45", |clock| {
            let (starts, current, peak) = (Arc::clone(&starts), current.clone(), peak.clone());
            move |name: SyncName, _due: DateTime<Utc>| {
                starts.lock().unwrap().push((name.to_string(), clock.now()));
                let (current, peak) = (Arc::clone(&current), Arc::clone(&peak));
                async move {
                    let now = current.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    current.fetch_sub(1, Ordering::SeqCst);
                    RunResult::Succeeded
                }
            }
        })
        .await;
        assert_eq!(peak.load(Ordering::SeqCst), 2);
        let mut times: Vec<_> = starts.lock().unwrap().iter().map(|(_, t)| *t).collect();
        times.sort();
        let expected = ["10:01:00", "10:01:00", "10:01:10", "10:01:10", "10:01:20"].map(at);
        assert_eq!(times, expected, "each sync runs once, two at a time");
        assert!(report.syncs.values().all(|s| s.started == 1 && s.skipped == 0));
    }

    /// A run that records its start and whose `n`th run (from 0) ends as `script(name, n)`.
    fn scripted_run(
        clock: TokioClock,
        starts: &Starts,
        script: impl Fn(&str, usize) -> RunResult + Send + Sync + 'static,
    ) -> impl Fn(SyncName, DateTime<Utc>) -> std::future::Ready<RunResult> + Send + Sync {
        let starts = Arc::clone(starts);
        move |name: SyncName, _due: DateTime<Utc>| {
            let n = {
                let mut starts = starts.lock().unwrap();
                let n = starts.iter().filter(|(other, _)| other == name.as_str()).count();
                starts.push((name.to_string(), clock.now()));
                n
            };
            std::future::ready(script(name.as_str(), n))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_sync_backs_off_while_the_others_keep_their_schedule() {
        let options = SchedulerOptions {
            backoff_base: Duration::from_mins(1),
            backoff_max: Duration::from_mins(10),
            ..options()
        };
        let entries = vec![
            (sync("broken"), Some(cron("* * * * *"))),
            (sync("fine"), Some(cron("* * * * *"))),
        ];
        let starts = Starts::default();
        let (report, _) =
            serve(Scheduler::new(entries, options), "10:00:30", "10:30:30", |clock| {
                scripted_run(clock, &starts, |name, _| match name {
                    "broken" => RunResult::Failed("connection refused".to_owned()),
                    _ => RunResult::Succeeded,
                })
            })
            .await;
        // Waits of 1, 2, 4 and 8 minutes, then the 10-minute cap.
        let expected = ["10:01:00", "10:02:00", "10:04:00", "10:08:00", "10:16:00", "10:26:00"];
        assert_eq!(starts_of(&starts, "broken"), expected.map(at));
        let fine = starts_of(&starts, "fine");
        assert_eq!(fine.len(), 30);
        assert!(fine.windows(2).all(|w| w[1] - w[0] == TimeDelta::minutes(1)), "{fine:?}");
        assert_eq!(report.syncs[&sync("broken")].failed, 6);
        assert_eq!(report.syncs[&sync("fine")].succeeded, 30);
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_backoff() {
        let options = SchedulerOptions {
            backoff_base: Duration::from_mins(1),
            backoff_max: Duration::from_hours(1),
            ..options()
        };
        let scheduler = Scheduler::new(vec![(sync("a"), Some(cron("* * * * *")))], options);
        let starts = Starts::default();
        serve(scheduler, "10:00:30", "10:12:30", |clock| {
            scripted_run(clock, &starts, |_, n| match n {
                0..=2 | 4 => RunResult::Failed("timeout".to_owned()),
                _ => RunResult::Succeeded,
            })
        })
        .await;
        let expected = [
            "10:01:00", "10:02:00", "10:04:00", "10:08:00", // three failures: 1, 2, 4 minutes
            "10:09:00", // success: back on schedule
            "10:10:00", // a new failure waits the base again
            "10:11:00", "10:12:00",
        ];
        assert_eq!(starts_of(&starts, "a"), expected.map(at));
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_run_counts_as_a_failure() {
        let options = SchedulerOptions { backoff_base: Duration::from_mins(1), ..options() };
        let entries =
            vec![(sync("boom"), Some(cron("* * * * *"))), (sync("fine"), Some(cron("* * * * *")))];
        let starts = Starts::default();
        let (report, _) =
            serve(Scheduler::new(entries, options), "10:00:30", "10:03:30", |clock| {
                scripted_run(clock, &starts, |name, _| {
                    assert_ne!(name, "boom", "a bug in a run");
                    RunResult::Succeeded
                })
            })
            .await;
        assert_eq!(starts_of(&starts, "boom"), [at("10:01:00"), at("10:02:00")]);
        assert_eq!(report.syncs[&sync("boom")].failed, 2);
        assert_eq!(report.syncs[&sync("fine")].succeeded, 3);
    }

    /// Three syncs due at 10:00: `long` takes 10 minutes, `short` one, `often` none (and is due
    /// every minute); the scheduler is cancelled at 10:00:30.
    async fn cancel_during_runs(
        shutdown_timeout: Duration,
    ) -> (SchedulerReport, DateTime<Utc>, Starts) {
        let entries = vec![
            (sync("long"), Some(cron("0 * * * *"))),
            (sync("short"), Some(cron("0 * * * *"))),
            (sync("often"), Some(cron("* * * * *"))),
        ];
        let scheduler = Scheduler::new(entries, SchedulerOptions { shutdown_timeout, ..options() });
        let starts = Starts::default();
        let (report, ended) = serve(scheduler, "09:59:30", "10:00:30", |clock| {
            timed_run(clock, &starts, |name| match name {
                "long" => Duration::from_mins(10),
                "short" => Duration::from_mins(1),
                _ => Duration::ZERO,
            })
        })
        .await;
        (report, ended, starts)
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_stops_new_runs_and_waits_for_runs_in_flight() {
        let (report, ended, starts) = cancel_during_runs(Duration::from_mins(15)).await;
        assert_eq!(starts.lock().unwrap().len(), 3, "nothing starts after 10:00:30");
        assert_eq!(ended, at("10:10:00"), "it returns when the last run ends");
        assert!(report.unfinished.is_empty());
        assert!(report.syncs.values().all(|s| s.started == 1 && s.succeeded == 1));
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_gives_up_on_runs_at_the_shutdown_timeout() {
        let (report, ended, starts) = cancel_during_runs(Duration::from_mins(5)).await;
        assert_eq!(starts.lock().unwrap().len(), 3);
        assert_eq!(ended, at("10:05:30"));
        assert_eq!(report.unfinished, [sync("long")]);
        assert_eq!(report.syncs[&sync("long")].succeeded, 0);
        assert_eq!(report.syncs[&sync("short")].succeeded, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_waiting_for_a_slot_does_not_start_after_cancellation() {
        let entries =
            vec![(sync("a"), Some(cron("0 * * * *"))), (sync("b"), Some(cron("0 * * * *")))];
        let scheduler =
            Scheduler::new(entries, SchedulerOptions { max_concurrent: 1, ..options() });
        let starts = Starts::default();
        let (report, ended) = serve(scheduler, "09:59:30", "10:05:00", |clock| {
            timed_run(clock, &starts, |_| Duration::from_mins(10))
        })
        .await;
        assert_eq!(starts.lock().unwrap().len(), 1);
        assert_eq!(ended, at("10:10:00"));
        assert_eq!(report.syncs.values().map(|s| s.started).sum::<u64>(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_sync_without_a_schedule_is_never_run() {
        let entries = vec![(sync("manual"), None), (sync("hourly"), Some(cron("0 * * * *")))];
        let scheduler = Scheduler::new(entries, options());
        let starts = Starts::default();
        let (report, _) = serve(scheduler, "09:30:00", "12:30:00", |clock| {
            timed_run(clock, &starts, |_| Duration::ZERO)
        })
        .await;
        assert!(starts_of(&starts, "manual").is_empty());
        assert_eq!(starts_of(&starts, "hourly").len(), 3);
        assert_eq!(report.syncs.keys().collect::<Vec<_>>(), [&sync("hourly")]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_system_clock_does_not_wait_for_the_past() {
        SystemClock.sleep_until(Utc::now() - TimeDelta::seconds(5)).await;
        let clock = TokioClock::starting_at(at("10:00:00"));
        clock.sleep_until(at("09:00:00")).await;
        assert_eq!(clock.now(), at("10:00:00"));
        clock.sleep_until(at("10:00:01.5")).await;
        assert_eq!(clock.now(), at("10:00:01.5"));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let waits: Vec<u64> = (1..=8)
            .map(|k| backoff(Duration::from_secs(30), Duration::from_mins(30), k).as_secs())
            .collect();
        assert_eq!(waits, [30, 60, 120, 240, 480, 960, 1_800, 1_800]);
        assert_eq!(backoff(Duration::from_secs(30), Duration::MAX, 200).as_secs(), 30 << 31);
    }

    #[test]
    fn the_first_time_at_or_after_includes_the_time_itself() {
        let schedule = cron("*/15 * * * *");
        assert_eq!(first_at_or_after(&schedule, at("10:15:00")), Some(at("10:15:00")));
        assert_eq!(first_at_or_after(&schedule, at("10:15:00.001")), Some(at("10:30:00")));
        let every_second = cron("* * * * * *");
        assert_eq!(first_at_or_after(&every_second, at("10:00:00.5")), Some(at("10:00:01")));
    }

    #[test]
    fn next_times_lists_scheduled_syncs_by_name() {
        let entries = vec![
            (sync("b"), Some(cron("0 * * * *"))),
            (sync("a"), Some(cron("*/15 * * * *"))),
            (sync("c"), None),
            (sync("d"), Some(cron("0 * * * *"))),
            (sync("d"), None),
        ];
        let scheduler = Scheduler::new(entries, SchedulerOptions::default());
        let next = scheduler.next_times(at("10:07:00.500"));
        assert_eq!(next, [(sync("a"), at("10:15:00")), (sync("b"), at("11:00:00"))]);
    }
}
