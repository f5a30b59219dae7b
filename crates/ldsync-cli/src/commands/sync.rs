//! `ldsync plan`, `ldsync run` and `ldsync backfill`, for every kind of sync.

use std::{process::ExitCode, sync::Arc};

use anyhow::Context as _;
use ldsync_config::{Project, StateSpec, SyncObject, SyncSpec};
use ldsync_core::Secret;
use ldsync_engine::{
    events::{Backfill, EventsReport, EventsSync},
    metrics::{MetricsOptions, MetricsReport, MetricsSync},
    segment::{RunOptions, SegmentReport, SegmentSync},
};
use ldsync_launchdarkly::{Limiter, RequestObserver};
use ldsync_state::StateDir;
use ldsync_state_pg::{PgStateStore, StoreOptions};
use serde::Serialize;
use tracing::Instrument as _;

use crate::{
    cli::{AllowArgs, BackfillArgs, GlobalArgs, OutputFormat, PlanArgs, RunArgs},
    exit, output, wiring,
};

/// Exit code of `plan --detailed-exitcode` when changes are pending.
const CHANGES_PENDING: u8 = 2;

/// What the command does to each sync.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mode {
    /// Show what a run would send.
    Plan,
    /// One incremental run.
    Run,
    /// A full resync (segments, metrics) or a time range (events); `plan` only shows it.
    Backfill { range: Option<Backfill>, plan: bool },
}

impl Mode {
    fn is_plan(self) -> bool {
        matches!(self, Self::Plan | Self::Backfill { plan: true, .. })
    }

    fn command(self) -> &'static str {
        match self {
            Self::Plan => "plan",
            Self::Run => "run",
            Self::Backfill { .. } => "backfill",
        }
    }
}

/// The JSON document of `plan`, `run` and `backfill`.
#[derive(Debug, Serialize)]
struct Document {
    command: &'static str,
    ok: bool,
    changes_pending: bool,
    syncs: Vec<SyncResult>,
}

/// One sync's report, whichever its object.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum Report {
    Segment(SegmentReport),
    Events(EventsReport),
    Metrics(MetricsReport),
}

impl Report {
    pub(crate) fn has_changes(&self) -> bool {
        match self {
            Self::Segment(report) => report.has_changes(),
            Self::Events(report) => report.has_changes(),
            Self::Metrics(report) => report.has_changes(),
        }
    }

    /// Whether the sync reached the state the warehouse asks for (or would, for a plan).
    pub(crate) fn ok(&self) -> bool {
        match self {
            Self::Segment(report) => report.refusal.is_none(),
            Self::Events(_) => true,
            Self::Metrics(report) => report.refused.is_empty(),
        }
    }
}

#[derive(Debug, Serialize)]
struct SyncResult {
    sync: String,
    object: &'static str,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<Report>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Loads the project, or prints its problems; `Err` carries the exit code.
pub(crate) fn load(global: &GlobalArgs) -> Result<Project, ExitCode> {
    match ldsync_config::load(&global.config) {
        Ok(project) => Ok(project),
        Err(ldsync_config::Error::Invalid(problems)) => {
            for problem in &problems {
                eprintln!("{problem}");
            }
            eprintln!("the configuration is invalid: run `ldsync validate` for details");
            Err(ExitCode::from(exit::CONFIG))
        }
        Err(error) => {
            eprintln!("error: {}", ldsync_engine::chain(&error));
            Err(ExitCode::from(exit::CONFIG))
        }
    }
}

/// The syncs named on the command line, in order; all of them when none is named.
pub(crate) fn select<'p>(
    project: &'p Project,
    names: &[String],
) -> Result<Vec<&'p SyncSpec>, ExitCode> {
    if names.is_empty() {
        return Ok(project.syncs.values().collect());
    }
    let mut selected = Vec::new();
    for name in names {
        let Some(sync) = project.syncs.get(name.as_str()) else {
            let known: Vec<_> = project.syncs.keys().map(|k| format!("`{k}`")).collect();
            eprintln!(
                "error: unknown sync `{name}`: expected one of {}",
                if known.is_empty() {
                    "none (syncs/ is empty)".to_owned()
                } else {
                    known.join(", ")
                }
            );
            return Err(ExitCode::from(exit::CONFIG));
        };
        selected.push(sync);
    }
    Ok(selected)
}

/// The state store a command works with.
#[derive(Debug)]
pub(crate) struct Store {
    /// The folder: the embedded store, or a working copy of the shared one.
    pub(crate) dir: StateDir,
    /// The shared store, when `[state] url` names one.
    pub(crate) shared: Option<Arc<PgStateStore>>,
    /// The private copy a read-only view was made in, removed with the view.
    _view: Option<tempfile::TempDir>,
}

/// Opens the state store for runs: the embedded folder, or the working copy of the shared
/// store (whose locks are leases there).
pub(crate) fn open_state(project: &Project) -> anyhow::Result<Store> {
    match &project.state {
        StateSpec::Local { path } => {
            Ok(Store { dir: StateDir::open(path)?, shared: None, _view: None })
        }
        StateSpec::Postgres { url, cache, lease } => {
            let shared = Arc::new(connect_shared(url, *lease)?);
            let remote: Arc<dyn ldsync_state::Remote> = shared.clone();
            let dir = StateDir::open(cache)
                .with_context(|| {
                    format!("cannot open the shared store's working copy `{}`", cache.display())
                })?
                .with_remote(remote);
            Ok(Store { dir, shared: Some(shared), _view: None })
        }
    }
}

/// Opens the state of `syncs` for reading, without taking their locks: the embedded folder,
/// or a private copy of the shared store's files of these syncs (a run elsewhere may be
/// writing them; the copy is the last state it published).
pub(crate) fn read_state(project: &Project, syncs: &[&SyncSpec]) -> anyhow::Result<Store> {
    let StateSpec::Postgres { url, lease, .. } = &project.state else {
        return open_state(project);
    };
    let shared = Arc::new(connect_shared(url, *lease)?);
    let view = tempfile::Builder::new().prefix("ldsync-state-view").tempdir()?;
    let dir = StateDir::open(view.path().join("state"))?;
    for sync in syncs {
        ldsync_state::Remote::check_out(&*shared, &sync.name, &dir.sync_dir(&sync.name)?)
            .with_context(|| format!("sync `{}`: cannot read its state", sync.name))?;
    }
    Ok(Store { dir, shared: Some(shared), _view: Some(view) })
}

fn connect_shared(url: &Secret, lease: std::time::Duration) -> anyhow::Result<PgStateStore> {
    let options = StoreOptions { lease, ..StoreOptions::default() };
    PgStateStore::connect(url.expose(), options).context("cannot open the PostgreSQL state store")
}

pub(crate) async fn plan(global: &GlobalArgs, args: &PlanArgs) -> anyhow::Result<ExitCode> {
    let document = match execute(global, &args.syncs, Mode::Plan, args.allow).await? {
        Ok(document) => document,
        Err(code) => return Ok(code),
    };
    Ok(if !document.ok {
        ExitCode::from(exit::FAILURE)
    } else if args.detailed_exitcode && document.changes_pending {
        ExitCode::from(CHANGES_PENDING)
    } else {
        ExitCode::SUCCESS
    })
}

pub(crate) async fn run(global: &GlobalArgs, args: &RunArgs) -> anyhow::Result<ExitCode> {
    Ok(exit_code(execute(global, &args.syncs, Mode::Run, args.allow).await?))
}

pub(crate) async fn backfill(global: &GlobalArgs, args: &BackfillArgs) -> anyhow::Result<ExitCode> {
    let range = match (args.from, args.to) {
        (Some(from), Some(to)) => Some(Backfill::new(from, to).with_window(args.window.get())),
        (None, None) => None,
        _ => {
            eprintln!("error: `--from` and `--to` go together");
            return Ok(ExitCode::from(exit::CONFIG));
        }
    };
    let mode = Mode::Backfill { range, plan: args.plan };
    Ok(exit_code(execute(global, std::slice::from_ref(&args.sync), mode, args.allow).await?))
}

fn exit_code(document: Result<Document, ExitCode>) -> ExitCode {
    match document {
        Ok(document) if document.ok => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(exit::FAILURE),
        Err(code) => code,
    }
}

async fn execute(
    global: &GlobalArgs,
    names: &[String],
    mode: Mode,
    allow: AllowArgs,
) -> anyhow::Result<Result<Document, ExitCode>> {
    let project = match load(global) {
        Ok(project) => project,
        Err(code) => return Ok(Err(code)),
    };
    let syncs = match select(&project, names) {
        Ok(syncs) => syncs,
        Err(code) => return Ok(Err(code)),
    };
    let store = if mode.is_plan() { read_state(&project, &syncs) } else { open_state(&project) }
        .context("cannot open the state store")?;
    let context = Context {
        show_progress: global.output == OutputFormat::Text,
        ..Context::new(&project, &store, None)
    };
    let mut results = Vec::new();
    for sync in syncs {
        let span = tracing::info_span!("sync", sync = %sync.name, object = sync.object.kind(), run_id = tracing::field::Empty);
        let (report, error) = match one(&context, sync, mode, allow).instrument(span).await {
            Ok(report) => (Some(report), None),
            Err(error) => {
                let message = format!("{error:#}");
                tracing::error!(sync = %sync.name, error = %message, "The sync failed.");
                (None, Some(message))
            }
        };
        results.push(SyncResult {
            sync: sync.name.to_string(),
            object: sync.object.kind(),
            ok: report.as_ref().is_some_and(Report::ok),
            report,
            error,
        });
    }
    let document = Document {
        command: mode.command(),
        ok: results.iter().all(|r| r.ok),
        changes_pending: results.iter().any(|r| r.report.as_ref().is_some_and(Report::has_changes)),
        syncs: results,
    };
    match global.output {
        OutputFormat::Json => output::json(&document)?,
        OutputFormat::Text => output::lines(&text(&document, mode))?,
    }
    Ok(Ok(document))
}

/// What every run of a process shares: the project, the state store, one limiter (every sync
/// shares LaunchDarkly's account limits) and whoever counts requests.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    pub(crate) project: Project,
    pub(crate) state: StateDir,
    /// The shared state store, whose schedule claims `serve` takes.
    pub(crate) shared: Option<Arc<PgStateStore>>,
    pub(crate) limiter: Arc<Limiter>,
    pub(crate) observer: Option<Arc<dyn RequestObserver>>,
    /// Draw progress on a terminal (text output, not under `serve`).
    pub(crate) show_progress: bool,
}

impl Context {
    pub(crate) fn new(
        project: &Project,
        store: &Store,
        observer: Option<Arc<dyn RequestObserver>>,
    ) -> Self {
        Self {
            project: project.clone(),
            state: store.dir.clone(),
            shared: store.shared.clone(),
            limiter: Arc::new(wiring::limiter(&project.limits)),
            observer,
            show_progress: false,
        }
    }
}

/// Plans or runs one sync: the wiring of its warehouse and environment, then its object.
pub(crate) async fn one(
    context: &Context,
    sync: &SyncSpec,
    mode: Mode,
    allow: AllowArgs,
) -> anyhow::Result<Report> {
    let (project, state) = (&context.project, &context.state);
    let environment = &project.environments[&sync.environment];
    let warehouse = wiring::Warehouse::new(&project.warehouses[&sync.warehouse])
        .with_context(|| format!("sync `{}`: warehouse `{}`", sync.name, sync.warehouse))?;
    let client =
        wiring::launchdarkly_client(environment, &context.limiter, context.observer.clone())
            .with_context(|| format!("sync `{}`: environment `{}`", sync.name, sync.environment))?;
    let (name, project_key, env_key) =
        (&sync.name, environment.project.as_str(), environment.environment.as_str());
    Ok(match &sync.object {
        SyncObject::Segment(spec) => {
            let terminal = crate::progress::TerminalProgress::for_terminal(name.as_str())
                .filter(|_| context.show_progress);
            let progress: &dyn ldsync_engine::Progress = match &terminal {
                Some(terminal) => terminal,
                None => &ldsync_engine::Silent,
            };
            let segments = SegmentSync {
                name,
                spec,
                source: &warehouse,
                client: &client,
                project: project_key,
                environment: env_key,
                state,
                progress,
            };
            let options = RunOptions {
                allow_mass_removal: allow.allow_mass_removal,
                backfill: matches!(mode, Mode::Backfill { .. }),
                memory_budget_bytes: project.limits.memory_budget_bytes,
                ..RunOptions::default()
            };
            Report::Segment(if mode.is_plan() {
                segments.plan(options).await?
            } else {
                segments.run(options).await?
            })
        }
        SyncObject::MetricEvents(spec) => {
            let events = EventsSync {
                name,
                spec,
                source: &warehouse,
                client: &client,
                project: project_key,
                environment: env_key,
                state,
            };
            Report::Events(match mode {
                Mode::Plan => events.plan().await?,
                Mode::Run => events.run().await?,
                Mode::Backfill { range: None, .. } => anyhow::bail!(
                    "sync `{name}`: a metric events backfill needs a time range: `--from T --to T`"
                ),
                Mode::Backfill { range: Some(range), plan: true } => {
                    events.plan_backfill(range).await?
                }
                Mode::Backfill { range: Some(range), plan: false } => {
                    events.backfill(range).await?
                }
            })
        }
        SyncObject::Metrics(spec) => {
            let metrics = MetricsSync {
                name,
                spec,
                source: &warehouse,
                client: &client,
                project: project_key,
                state,
            };
            let options = MetricsOptions { allow_recreate: allow.allow_recreate };
            Report::Metrics(match mode {
                Mode::Plan | Mode::Backfill { plan: true, .. } => metrics.plan(options).await?,
                Mode::Run => metrics.run(options).await?,
                Mode::Backfill { plan: false, .. } => metrics.backfill(options).await?,
            })
        }
    })
}

fn text(document: &Document, mode: Mode) -> Vec<String> {
    let mut lines = Vec::new();
    let verb = if mode.is_plan() { "would take" } else { "took" };
    for result in &document.syncs {
        match &result.report {
            None => lines.push(format!(
                "sync `{}`: FAILED: {}",
                result.sync,
                result.error.as_deref().unwrap_or_default()
            )),
            Some(Report::Segment(report)) => segment_lines(&mut lines, report, mode, verb),
            Some(Report::Events(report)) => events_lines(&mut lines, report, verb),
            Some(Report::Metrics(report)) => metrics_lines(&mut lines, report),
        }
    }
    lines
}

fn segment_lines(lines: &mut Vec<String>, report: &SegmentReport, mode: Mode, verb: &str) {
    if let Some(run) = &report.resumed {
        let who = if mode.is_plan() { "`ldsync run` will finish" } else { "finished" };
        lines.push(format!("sync `{}`: {who} the interrupted run {run} first", report.sync));
    }
    for segment in &report.segments {
        let how = if segment.via_import { "CSV import" } else { "request" };
        lines.push(format!(
            "sync `{}` → segment `{}`: +{} −{} (members {} → {}), {verb} {} {how}{}",
            report.sync,
            segment.segment,
            segment.adds,
            segment.removes,
            segment.members_before,
            segment.members_after,
            segment.requests,
            if segment.requests == 1 { "" } else { "s" }
        ));
        if !segment.sample_adds.is_empty() {
            lines.push(format!("  adds: {}", samples(&segment.sample_adds, segment.adds)));
        }
        if !segment.sample_removes.is_empty() {
            lines.push(format!("  removes: {}", samples(&segment.sample_removes, segment.removes)));
        }
    }
    rejected_lines(lines, &report.rejections, report.rejected, report.rows);
    if let Some(refusal) = &report.refusal {
        lines.push(format!("sync `{}`: REFUSED: {refusal}", report.sync));
    }
}

fn events_lines(lines: &mut Vec<String>, report: &EventsReport, verb: &str) {
    if let Some(run) = &report.resumed {
        lines.push(format!(
            "sync `{}`: finishing the interrupted run {run}: {} batches",
            report.sync, report.resumed_batches
        ));
    }
    let cursor = |at: Option<chrono::DateTime<chrono::Utc>>| {
        at.map_or_else(|| "none".to_owned(), |at| at.to_rfc3339())
    };
    lines.push(format!(
        "sync `{}` → metric events: {} to send ({} already sent, {} rejected) from {} rows read since {}, {verb} {} request{}; cursor {} → {}",
        report.sync,
        report.events,
        report.duplicates,
        report.rejected,
        report.rows,
        report.read_from.to_rfc3339(),
        report.batches,
        if report.batches == 1 { "" } else { "s" },
        cursor(report.cursor_before),
        cursor(report.cursor_after),
    ));
    for window in &report.windows {
        lines.push(format!(
            "  window {} – {}: {}",
            window.start.to_rfc3339(),
            window.end.to_rfc3339(),
            if window.already_done {
                "already sent".to_owned()
            } else {
                format!("{} events, {} already sent", window.events, window.duplicates)
            }
        ));
    }
    rejected_lines(lines, &report.rejections, report.rejected, report.rows);
}

fn metrics_lines(lines: &mut Vec<String>, report: &MetricsReport) {
    lines.push(format!(
        "sync `{}` → metrics: {} to create, {} to patch, {} to re-create, {} to archive, {} unchanged",
        report.sync,
        report.creates.len(),
        report.patches.len(),
        report.recreates.len(),
        report.archives.len(),
        report.unchanged
    ));
    for create in &report.creates {
        lines.push(format!("  create `{}` ({:?})", create.key, create.kind));
    }
    for patch in &report.patches {
        for change in &patch.changes {
            let show = |value: &Option<serde_json::Value>| {
                value.as_ref().map_or_else(|| "(none)".to_owned(), ToString::to_string)
            };
            lines.push(format!(
                "  patch `{}`: {}: {} → {}{}",
                patch.key,
                change.field,
                show(&change.old),
                show(&change.new),
                if change.drift { " (changed in LaunchDarkly)" } else { "" }
            ));
        }
    }
    for archive in &report.archives {
        lines.push(format!("  archive `{archive}` (it left the query)"));
    }
    for refusal in &report.refused {
        lines.push(format!("  REFUSED `{}`: {}", refusal.key, refusal.reason));
    }
    rejected_lines(lines, &report.rejections, report.rejected, report.rows);
}

fn rejected_lines(
    lines: &mut Vec<String>,
    rejections: &[ldsync_state::Rejection],
    rejected: u64,
    rows: u64,
) {
    if rejected == 0 {
        return;
    }
    let first: Vec<_> =
        rejections.iter().take(3).map(|r| format!("row {}: {}", r.row, r.reason)).collect();
    lines.push(format!("  rejected {rejected} of {rows} rows: {}", first.join("; ")));
}

fn samples(keys: &[String], total: u64) -> String {
    let shown: Vec<_> = keys.iter().map(|k| format!("{k:?}")).collect();
    let more = total.saturating_sub(keys.len() as u64);
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}
