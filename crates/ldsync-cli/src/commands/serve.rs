//! `ldsync serve`: every sync on its schedule until SIGTERM or SIGINT, with `/metrics` and
//! `/healthz`; SIGHUP reloads the configuration (an invalid one is refused, the old one kept).

use std::{process::ExitCode, sync::Arc, time::Instant};

use axum::{extract::State, http::header, response::IntoResponse, routing::get, Router};
use chrono::{DateTime, Utc};
use ldsync_config::Project;
use ldsync_core::SyncName;
use ldsync_engine::{
    scheduler::{OverlapPolicy, RunResult, Scheduler, SchedulerOptions, SystemClock},
    telemetry::{RunCounts, RunStatus, Telemetry, CONTENT_TYPE},
};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::sync::{load, one, open_state, Context, Mode, Report};
use crate::cli::{AllowArgs, GlobalArgs, Overlap, ServeArgs};

pub(crate) async fn run(global: &GlobalArgs, args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let mut project = match load(global) {
        Ok(project) => project,
        Err(code) => return Ok(code),
    };
    let telemetry = Arc::new(Telemetry::new());
    let stop = CancellationToken::new();

    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(listen = %listener.local_addr()?, "Serving /metrics and /healthz.");
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(Arc::clone(&telemetry));
    let server_stop = stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app).with_graceful_shutdown(server_stop.cancelled_owned()).await
    });

    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    loop {
        // One generation of the scheduler per configuration.
        let generation = stop.child_token();
        let mut scheduler = tokio::spawn(schedule(&project, args, &telemetry, generation.clone())?);
        let reload = loop {
            tokio::select! {
                _ = terminate.recv() => break false,
                _ = interrupt.recv() => break false,
                _ = hangup.recv() => {
                    if let Ok(new) = load(global) {
                        tracing::info!("Reloaded the configuration; restarting the schedules.");
                        project = new;
                        break true;
                    }
                    tracing::error!("The new configuration is invalid (see above); keeping the old one.");
                }
                finished = &mut scheduler => {
                    // The scheduler only ends when told to; anything else is a bug to report.
                    anyhow::bail!("the scheduler stopped on its own: {finished:?}");
                }
            }
        };
        tracing::info!("Stopping: no new runs start; waiting for runs in flight.");
        generation.cancel();
        let report = scheduler.await?;
        if !report.unfinished.is_empty() {
            let names: Vec<_> = report.unfinished.iter().map(ToString::to_string).collect();
            tracing::warn!(
                syncs = %names.join(", "),
                "Runs were still going at the shutdown timeout; the next run finishes their plans."
            );
        }
        if !reload {
            break;
        }
    }
    stop.cancel();
    server.await??;
    Ok(ExitCode::SUCCESS)
}

/// The lock error under `error`, if the run failed because another process holds the sync.
fn locked(error: &anyhow::Error) -> Option<&ldsync_state::Error> {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<ldsync_state::Error>())
        .find(|cause| matches!(cause, ldsync_state::Error::Locked { .. }))
}

async fn metrics(State(telemetry): State<Arc<Telemetry>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], telemetry.render())
}

/// The scheduler of one configuration, ready to run until `cancel`.
fn schedule(
    project: &Project,
    args: &ServeArgs,
    telemetry: &Arc<Telemetry>,
    cancel: CancellationToken,
) -> anyhow::Result<impl std::future::Future<Output = ldsync_engine::scheduler::SchedulerReport>> {
    let store = open_state(project)?;
    let observer: Arc<dyn ldsync_launchdarkly::RequestObserver> = telemetry.clone();
    let context = Arc::new(Context::new(project, &store, Some(observer)));
    let entries = project
        .syncs
        .values()
        .map(|sync| {
            telemetry.register_sync(&sync.name);
            (sync.name.clone(), sync.schedule.clone())
        })
        .collect();
    let options = SchedulerOptions {
        max_concurrent: project.limits.max_concurrent_syncs as usize,
        overlap: match args.overlap {
            Overlap::Skip => OverlapPolicy::Skip,
            Overlap::Queue => OverlapPolicy::QueueOnce,
        },
        shutdown_timeout: args.shutdown_timeout.get(),
        ..SchedulerOptions::default()
    };
    let telemetry = Arc::clone(telemetry);
    let run_sync = move |name: SyncName, due: DateTime<Utc>| {
        let (context, telemetry) = (Arc::clone(&context), Arc::clone(&telemetry));
        async move { run_one(&context, &telemetry, &name, due).await }
    };
    Ok(Scheduler::new(entries, options).run(SystemClock, run_sync, cancel))
}

/// One scheduled run, for the due time `due`, counted in `/metrics`.
///
/// With a shared state store, the process first claims the due time there: of several `serve`
/// processes sharing the store, the one that claims it runs it, and the others skip it. A sync
/// whose lease another process holds (a run still going there) is skipped too, as an overlap.
async fn run_one(
    context: &Context,
    telemetry: &Telemetry,
    name: &SyncName,
    due: DateTime<Utc>,
) -> RunResult {
    let Some(sync) = context.project.syncs.get(name) else {
        return RunResult::Failed(format!("sync `{name}` is no longer declared"));
    };
    if let Some(shared) = &context.shared {
        let claim = {
            let (shared, name) = (Arc::clone(shared), name.clone());
            tokio::task::spawn_blocking(move || shared.claim(&name, due)).await
        };
        match claim {
            Ok(Ok(true)) => {
                tracing::info!(sync = %name, due = %due.to_rfc3339(), "Claimed the scheduled run.");
            }
            Ok(Ok(false)) => {
                tracing::info!(
                    sync = %name,
                    due = %due.to_rfc3339(),
                    "Another process claimed this scheduled run; skipping it."
                );
                return RunResult::Succeeded;
            }
            Ok(Err(error)) => {
                let error = ldsync_core::error_chain(&error);
                tracing::error!(sync = %name, %error, "Could not claim the scheduled run.");
                return RunResult::Failed(error);
            }
            Err(panic) => return RunResult::Failed(format!("claiming the run panicked: {panic}")),
        }
    }
    let started = Instant::now();
    let span = tracing::info_span!("sync", sync = %name, object = sync.object.kind(), run_id = tracing::field::Empty);
    let result = one(context, sync, Mode::Run, AllowArgs::default()).instrument(span).await;
    if context.shared.is_some() {
        if let Err(error) = &result {
            if let Some(ldsync_state::Error::Locked { holder, .. }) = locked(error) {
                tracing::warn!(
                    sync = %name,
                    holder = %holder,
                    "Another process is still running the sync; skipping this scheduled run."
                );
                return RunResult::Succeeded;
            }
        }
    }
    let (status, counts, outcome) = match &result {
        Ok(report) => {
            let (outcome, counts) = match report {
                Report::Segment(r) => (r.outcome, RunCounts::from(r)),
                Report::Events(r) => (r.outcome, RunCounts::from(r)),
                Report::Metrics(r) => (r.outcome, RunCounts::from(r)),
            };
            let status = if report.ok() { RunStatus::from(outcome) } else { RunStatus::Refused };
            let result = if report.ok() {
                RunResult::Succeeded
            } else {
                RunResult::Failed(format!("sync `{name}` was refused by a guardrail"))
            };
            (status, counts, result)
        }
        Err(error) => {
            tracing::error!(sync = %name, error = %format!("{error:#}"), "The scheduled run failed.");
            (RunStatus::Failed, RunCounts::default(), RunResult::Failed(format!("{error:#}")))
        }
    };
    telemetry.record_run(name, status, started.elapsed(), &counts, Utc::now());
    outcome
}
