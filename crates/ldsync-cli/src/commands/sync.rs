//! `ldsync plan`, `ldsync run` and `ldsync backfill`.

use std::{process::ExitCode, sync::Arc};

use anyhow::Context as _;
use ldsync_config::{Project, StateSpec, SyncObject, SyncSpec};
use ldsync_engine::segment::{RunOptions, SegmentReport, SegmentSync};
use ldsync_launchdarkly::Limiter;
use ldsync_state::StateDir;
use serde::Serialize;

use crate::{
    cli::{BackfillArgs, GlobalArgs, OutputFormat, PlanArgs, RunArgs},
    exit, output, wiring,
};

/// Exit code of `plan --detailed-exitcode` when changes are pending.
const CHANGES_PENDING: u8 = 2;

/// What the command does to each sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Plan,
    Run,
}

/// The JSON document of `plan`, `run` and `backfill`.
#[derive(Debug, Serialize)]
struct Document {
    command: &'static str,
    ok: bool,
    changes_pending: bool,
    syncs: Vec<SyncResult>,
}

#[derive(Debug, Serialize)]
struct SyncResult {
    sync: String,
    object: &'static str,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<SegmentReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Loads the project, or prints its problems; `Err` carries the exit code.
fn load(global: &GlobalArgs) -> Result<Project, ExitCode> {
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
fn select<'p>(project: &'p Project, names: &[String]) -> Result<Vec<&'p SyncSpec>, ExitCode> {
    if names.is_empty() {
        return Ok(project.syncs.values().collect());
    }
    let mut selected = Vec::new();
    for name in names {
        match project.syncs.get(name.as_str()) {
            Some(sync) => selected.push(sync),
            None => {
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
            }
        }
    }
    Ok(selected)
}

fn state_dir(project: &Project) -> anyhow::Result<StateDir> {
    match &project.state {
        StateSpec::Local { path } => Ok(StateDir::open(path)?),
        StateSpec::Postgres { .. } => anyhow::bail!(
            "the PostgreSQL state store (`[state] url`) is not available in this version: use `[state] path`"
        ),
    }
}

pub(crate) async fn plan(global: &GlobalArgs, args: &PlanArgs) -> anyhow::Result<ExitCode> {
    let options =
        RunOptions { allow_mass_removal: args.allow_mass_removal, ..RunOptions::default() };
    let document = match execute(global, &args.syncs, Mode::Plan, options).await? {
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
    let options =
        RunOptions { allow_mass_removal: args.allow_mass_removal, ..RunOptions::default() };
    finish(execute(global, &args.syncs, Mode::Run, options).await?)
}

pub(crate) async fn backfill(global: &GlobalArgs, args: &BackfillArgs) -> anyhow::Result<ExitCode> {
    let options = RunOptions {
        allow_mass_removal: args.allow_mass_removal,
        backfill: true,
        ..RunOptions::default()
    };
    finish(execute(global, std::slice::from_ref(&args.sync), Mode::Run, options).await?)
}

fn finish(document: Result<Document, ExitCode>) -> anyhow::Result<ExitCode> {
    Ok(match document {
        Ok(document) if document.ok => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(exit::FAILURE),
        Err(code) => code,
    })
}

async fn execute(
    global: &GlobalArgs,
    names: &[String],
    mode: Mode,
    options: RunOptions,
) -> anyhow::Result<Result<Document, ExitCode>> {
    let project = match load(global) {
        Ok(project) => project,
        Err(code) => return Ok(Err(code)),
    };
    let syncs = match select(&project, names) {
        Ok(syncs) => syncs,
        Err(code) => return Ok(Err(code)),
    };
    let state = state_dir(&project).context("cannot open the state store")?;
    let limiter = Arc::new(Limiter::default());
    let mut results = Vec::new();
    for sync in syncs {
        let result = match one(&project, sync, &state, &limiter, mode, options).await {
            Ok(report) => {
                let ok = report.refusal.is_none();
                SyncResult {
                    sync: sync.name.to_string(),
                    object: sync.object.kind(),
                    ok,
                    report: Some(report),
                    error: None,
                }
            }
            Err(error) => {
                let message = format!("{error:#}");
                tracing::error!(sync = %sync.name, error = %message, "The sync failed.");
                SyncResult {
                    sync: sync.name.to_string(),
                    object: sync.object.kind(),
                    ok: false,
                    report: None,
                    error: Some(message),
                }
            }
        };
        results.push(result);
    }
    let document = Document {
        command: match (mode, options.backfill) {
            (Mode::Plan, _) => "plan",
            (Mode::Run, false) => "run",
            (Mode::Run, true) => "backfill",
        },
        ok: results.iter().all(|r| r.ok),
        changes_pending: results
            .iter()
            .any(|r| r.report.as_ref().is_some_and(SegmentReport::has_changes)),
        syncs: results,
    };
    match global.output {
        OutputFormat::Json => output::json(&document)?,
        OutputFormat::Text => output::lines(&text(&document, mode))?,
    }
    Ok(Ok(document))
}

async fn one(
    project: &Project,
    sync: &SyncSpec,
    state: &StateDir,
    limiter: &Arc<Limiter>,
    mode: Mode,
    options: RunOptions,
) -> anyhow::Result<SegmentReport> {
    let SyncObject::Segment(spec) = &sync.object else {
        anyhow::bail!(
            "sync `{}`: `[{}]` syncs cannot be planned or run by this version of ldsync yet",
            sync.name,
            sync.object.kind()
        );
    };
    let warehouse_spec = &project.warehouses[&sync.warehouse];
    let environment = &project.environments[&sync.environment];
    let warehouse = wiring::Warehouse::new(warehouse_spec)
        .with_context(|| format!("sync `{}`: warehouse `{}`", sync.name, sync.warehouse))?;
    let client = wiring::launchdarkly_client(environment, limiter)
        .with_context(|| format!("sync `{}`: environment `{}`", sync.name, sync.environment))?;
    let segment_sync = SegmentSync {
        name: &sync.name,
        spec,
        source: &warehouse,
        client: &client,
        project: environment.project.as_str(),
        environment: &environment.environment,
        state,
    };
    let report = match mode {
        Mode::Plan => segment_sync.plan(options).await?,
        Mode::Run => segment_sync.run(options).await?,
    };
    Ok(report)
}

fn text(document: &Document, mode: Mode) -> Vec<String> {
    let mut lines = Vec::new();
    let verb = if mode == Mode::Plan { "would" } else { "did" };
    for result in &document.syncs {
        let Some(report) = &result.report else {
            lines.push(format!(
                "sync `{}`: FAILED: {}",
                result.sync,
                result.error.as_deref().unwrap_or("")
            ));
            continue;
        };
        if let Some(run) = &report.resumed {
            lines.push(format!(
                "sync `{}`: {} finish the interrupted run {run} first",
                report.sync,
                if mode == Mode::Plan { "`ldsync run` will" } else { "did" }
            ));
        }
        for segment in &report.segments {
            let how = if segment.via_import { "CSV import" } else { "request" };
            lines.push(format!(
                "sync `{}` → segment `{}`: +{} −{} (members {} → {}), {verb} take {} {how}{}",
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
                lines.push(format!(
                    "  removes: {}",
                    samples(&segment.sample_removes, segment.removes)
                ));
            }
        }
        if report.rejected > 0 {
            let first: Vec<_> = report
                .rejections
                .iter()
                .take(3)
                .map(|r| format!("row {}: {}", r.row, r.reason))
                .collect();
            lines.push(format!(
                "  rejected {} of {} rows: {}",
                report.rejected,
                report.rows,
                first.join("; ")
            ));
        }
        if let Some(refusal) = &report.refusal {
            lines.push(format!("sync `{}`: REFUSED: {refusal}", report.sync));
        }
    }
    lines
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
