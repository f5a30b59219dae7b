//! `ldsync status [SYNC] [--rejected]`: what the state store says about each sync.

use std::{process::ExitCode, time::Duration};

use chrono::Utc;
use ldsync_config::SyncSpec;
use ldsync_state::{Rejection, RunRecord, StateDir};
use serde::Serialize;

use super::sync::{load, read_state, select};
use crate::{
    cli::{GlobalArgs, OutputFormat, StatusArgs},
    output,
};

/// One sync's status, as `--output json` prints it.
#[derive(Debug, Serialize)]
struct SyncStatus {
    sync: String,
    object: &'static str,
    /// The newest runs, newest last.
    runs: Vec<RunRecord>,
    /// When `serve` runs it next (UTC), if it has a schedule.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_run: Option<String>,
    /// A run died after promising a plan; the next run finishes it first.
    interrupted_run: Option<String>,
    /// With `--rejected`: the records the last run rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    rejected: Option<Vec<Rejection>>,
}

pub(crate) fn run(global: &GlobalArgs, args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let project = match load(global) {
        Ok(project) => project,
        Err(code) => return Ok(code),
    };
    let names: Vec<String> = args.sync.iter().cloned().collect();
    let syncs = match select(&project, &names) {
        Ok(syncs) => syncs,
        Err(code) => return Ok(code),
    };
    let store = read_state(&project, &syncs)?;
    let state = &store.dir;
    let limit = if args.sync.is_some() { args.limit.max(1) } else { 1 };
    let statuses = syncs
        .into_iter()
        .map(|sync| status(state, sync, limit, args.rejected))
        .collect::<anyhow::Result<Vec<_>>>()?;
    match global.output {
        OutputFormat::Json => output::json(&statuses)?,
        OutputFormat::Text => output::lines(&text(&statuses, args.sync.is_some()))?,
    }
    Ok(ExitCode::SUCCESS)
}

fn status(
    state: &StateDir,
    sync: &SyncSpec,
    limit: usize,
    rejected: bool,
) -> anyhow::Result<SyncStatus> {
    let history = state.history(&sync.name)?;
    let interrupted_run =
        state.journal(&sync.name)?.pending::<serde_json::Value>()?.map(|plan| plan.run_id);
    Ok(SyncStatus {
        sync: sync.name.to_string(),
        object: sync.object.kind(),
        runs: history.recent(limit)?,
        next_run: sync
            .schedule
            .as_ref()
            .and_then(|schedule| schedule.next_after(Utc::now()))
            .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        interrupted_run,
        rejected: if rejected { Some(history.rejected()?) } else { None },
    })
}

fn duration(ms: u64) -> String {
    if ms < 1_000 {
        format!("{ms}ms")
    } else {
        format!("{:.1}s", Duration::from_millis(ms).as_secs_f64())
    }
}

fn text(statuses: &[SyncStatus], one_sync: bool) -> Vec<String> {
    let mut lines = vec![format!(
        "{:<24} {:<14} {:<20} {:<10} {:>9} {:>9} {:>8} {:>8} {:>8}  {}",
        "SYNC",
        "OBJECT",
        "STARTED",
        "RESULT",
        "DURATION",
        "ROWS",
        "ADDS",
        "REMOVES",
        "REJECTED",
        "NEXT RUN"
    )];
    for status in statuses {
        let next = status.next_run.clone().unwrap_or_else(|| "-".to_owned());
        if status.runs.is_empty() {
            lines.push(format!(
                "{:<24} {:<14} {:<20} {:<10} {:>9} {:>9} {:>8} {:>8} {:>8}  {next}",
                status.sync, status.object, "never run", "-", "-", "-", "-", "-", "-"
            ));
        }
        for run in &status.runs {
            let started = run.started_at.get(..19).unwrap_or(&run.started_at).replace('T', " ");
            lines.push(format!(
                "{:<24} {:<14} {:<20} {:<10} {:>9} {:>9} {:>8} {:>8} {:>8}  {next}",
                status.sync,
                status.object,
                started,
                run.outcome,
                duration(run.duration_ms),
                run.rows,
                run.adds,
                run.removes,
                run.rejected
            ));
            if let Some(error) = &run.error {
                lines
                    .push(format!("    {}: {error}", if one_sync { &run.run_id } else { "error" }));
            }
        }
        if let Some(run) = &status.interrupted_run {
            lines.push(format!("    run {run} was interrupted: the next run finishes it first"));
        }
        if let Some(rejected) = &status.rejected {
            if rejected.is_empty() {
                lines.push(format!("    {}: the last run rejected nothing", status.sync));
            }
            for rejection in rejected {
                let key = rejection.key.as_deref().map(|k| format!(" `{k}`")).unwrap_or_default();
                lines
                    .push(format!("    rejected row {}{key}: {}", rejection.row, rejection.reason));
            }
        }
    }
    lines
}
