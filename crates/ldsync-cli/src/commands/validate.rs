//! `ldsync validate [--check-connections]`.

use std::process::ExitCode;

use ldsync_config::{Diagnostic, Project};
use ldsync_core::Source as _;
use serde::Serialize;

use crate::{
    cli::{GlobalArgs, OutputFormat, ValidateArgs},
    exit, output, wiring,
};

/// The JSON document `validate --output json` prints.
#[derive(Debug, Serialize)]
struct Report {
    config: String,
    valid: bool,
    problems: Vec<Diagnostic>,
    syncs: Vec<SyncSummary>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    connections: Vec<ConnectionCheck>,
}

#[derive(Debug, Serialize)]
struct SyncSummary {
    name: String,
    path: String,
    object: &'static str,
    warehouse: String,
    environment: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    schedule: Option<String>,
}

#[derive(Debug, Serialize)]
struct ConnectionCheck {
    /// `warehouse` or `environment`.
    kind: &'static str,
    name: String,
    ok: bool,
    /// What was checked, or why it failed.
    detail: String,
}

pub(crate) async fn run(global: &GlobalArgs, args: &ValidateArgs) -> anyhow::Result<ExitCode> {
    let config = global.config.display().to_string();
    let project = match ldsync_config::load(&global.config) {
        Ok(project) => project,
        Err(ldsync_config::Error::Invalid(diagnostics)) => {
            let problems = diagnostics.0;
            report_problems(global, &config, problems)?;
            return Ok(ExitCode::from(exit::CONFIG));
        }
        Err(error) => {
            let problem = Diagnostic::in_file(&global.config, cause_chain(&error));
            report_problems(global, &config, vec![problem])?;
            return Ok(ExitCode::from(exit::CONFIG));
        }
    };
    let connections =
        if args.check_connections { check_connections(&project).await } else { Vec::new() };
    let all_reached = connections.iter().all(|check| check.ok);
    let report = Report {
        config,
        valid: true,
        problems: Vec::new(),
        syncs: summaries(&project),
        connections,
    };
    match global.output {
        OutputFormat::Json => output::json(&report)?,
        OutputFormat::Text => output::lines(&text(&report))?,
    }
    Ok(if all_reached { ExitCode::SUCCESS } else { ExitCode::from(exit::FAILURE) })
}

use ldsync_engine::chain as cause_chain;

fn report_problems(
    global: &GlobalArgs,
    config: &str,
    problems: Vec<Diagnostic>,
) -> anyhow::Result<()> {
    for problem in &problems {
        eprintln!("{problem}");
    }
    let count = problems.len();
    eprintln!(
        "{count} problem{} found: the configuration is invalid",
        if count == 1 { "" } else { "s" }
    );
    if global.output == OutputFormat::Json {
        let report = Report {
            config: config.to_owned(),
            valid: false,
            problems,
            syncs: Vec::new(),
            connections: Vec::new(),
        };
        output::json(&report)?;
    }
    Ok(())
}

fn summaries(project: &Project) -> Vec<SyncSummary> {
    project
        .syncs
        .values()
        .map(|sync| SyncSummary {
            name: sync.name.to_string(),
            path: sync.path.display().to_string(),
            object: sync.object.kind(),
            warehouse: sync.warehouse.to_string(),
            environment: sync.environment.to_string(),
            schedule: sync.schedule.as_ref().map(ToString::to_string),
        })
        .collect()
}

fn text(report: &Report) -> Vec<String> {
    let mut lines = Vec::new();
    for sync in &report.syncs {
        let what = match sync.object {
            "segment" => "segment",
            "metric_events" => "metric events",
            _ => "metrics",
        };
        let schedule =
            sync.schedule.as_ref().map(|s| format!(", schedule `{s}`")).unwrap_or_default();
        lines.push(format!(
            "sync `{}`: {what} from `{}` to `{}`{schedule}",
            sync.name, sync.warehouse, sync.environment
        ));
    }
    for check in &report.connections {
        let verdict = if check.ok { "ok" } else { "FAILED" };
        lines.push(format!("{} `{}`: {verdict}: {}", check.kind, check.name, check.detail));
    }
    let count = report.syncs.len();
    lines.push(format!(
        "{}: valid, {count} sync{}",
        report.config,
        if count == 1 { "" } else { "s" }
    ));
    lines
}

/// Reaches every warehouse and environment at once; each check reports on its own.
async fn check_connections(project: &Project) -> Vec<ConnectionCheck> {
    let warehouses = project.warehouses.iter().map(|(name, spec)| async move {
        let result = match wiring::Warehouse::new(spec) {
            Ok(warehouse) => warehouse.healthcheck().await,
            Err(error) => Err(error),
        };
        ConnectionCheck {
            kind: "warehouse",
            name: name.to_string(),
            ok: result.is_ok(),
            detail: match result {
                Ok(()) => format!("{} answered `select 1`", spec.kind()),
                Err(error) => cause_chain(&error),
            },
        }
    });
    let limiter = std::sync::Arc::new(wiring::limiter(&project.limits));
    let environments = project.environments.iter().map(|(name, spec)| {
        let limiter = std::sync::Arc::clone(&limiter);
        async move {
            let result = match wiring::launchdarkly_client(spec, &limiter, None) {
                Ok(client) => {
                    client
                        .check_environment(
                            spec.project.as_str(),
                            &spec.environment,
                            spec.client_side_id.as_deref(),
                        )
                        .await
                }
                Err(error) => Err(error),
            };
            ConnectionCheck {
                kind: "environment",
                name: name.to_string(),
                ok: result.is_ok(),
                detail: match result {
                    Ok(rep) => format!(
                        "project `{}` environment `{}` at {} (client-side ID {})",
                        spec.project, spec.environment, spec.api_url, rep.id
                    ),
                    Err(error) => cause_chain(&error),
                },
            }
        }
    });
    let mut checks = futures_util::future::join_all(warehouses).await;
    checks.extend(futures_util::future::join_all(environments).await);
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sync_kind_has_a_summary_word() {
        for kind in ["segment", "metric_events", "metrics"] {
            let report = Report {
                config: "ldsync.toml".into(),
                valid: true,
                problems: Vec::new(),
                syncs: vec![SyncSummary {
                    name: "s".into(),
                    path: "syncs/s.toml".into(),
                    object: kind,
                    warehouse: "w".into(),
                    environment: "e".into(),
                    schedule: None,
                }],
                connections: Vec::new(),
            };
            assert!(text(&report)[0].starts_with("sync `s`: "));
        }
    }
}
