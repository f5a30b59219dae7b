//! `/_emulator/`: state, statistics, reset and run-time configuration, without auth.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api_error::{ApiError, ApiResult};
use crate::faults::{FaultEngine, FaultSpec};
use crate::limits::{Limiter, RateLimitSpec};
use crate::server::AppState;
use crate::snapshot::{Snapshot, Stats};
use crate::state::now_ms;

/// The run-time configuration as `/_emulator/config` shows it.
#[derive(Debug, Clone, Serialize)]
struct RuntimeConfig {
    rate_limits: Vec<RateLimitSpec>,
    faults: Vec<FaultSpec>,
    seed: u64,
    import_delay_ms: u64,
}

/// A change to the run-time configuration; absent fields stay as they are.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigChange {
    rate_limits: Option<Vec<RateLimitSpec>>,
    faults: Option<Vec<FaultSpec>>,
    seed: Option<u64>,
    import_delay_ms: Option<u64>,
}

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/_emulator/state", get(state))
        .route("/_emulator/stats", get(stats))
        .route("/_emulator/reset", post(reset))
        .route(
            "/_emulator/config",
            get(config).put(change_config).post(change_config).patch(change_config),
        )
}

async fn state(State(shared): State<AppState>) -> Json<Snapshot> {
    let mut inner = shared.lock();
    inner.model.advance_all_imports(now_ms());
    Json(inner.model.snapshot())
}

async fn stats(State(shared): State<AppState>) -> Json<Stats> {
    Json(shared.lock().stats.clone())
}

async fn reset(State(shared): State<AppState>) -> StatusCode {
    shared.reset();
    StatusCode::NO_CONTENT
}

fn current(shared: &AppState) -> RuntimeConfig {
    let inner = shared.lock();
    RuntimeConfig {
        rate_limits: inner.limiter.specs(),
        faults: inner.faults.specs(),
        seed: inner.faults.seed(),
        import_delay_ms: u64::try_from(inner.import_delay.as_millis()).unwrap_or(u64::MAX),
    }
}

async fn config(State(shared): State<AppState>) -> Json<Value> {
    Json(serde_json::to_value(current(&shared)).expect("plain data serialises"))
}

async fn change_config(State(shared): State<AppState>, body: Bytes) -> ApiResult<Json<Value>> {
    let change: ConfigChange = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("Invalid configuration: {e}")))?;
    {
        let mut inner = shared.lock();
        if let Some(limits) = change.rate_limits {
            inner.limiter = Limiter::new(limits);
        }
        if change.faults.is_some() || change.seed.is_some() {
            let specs = change.faults.unwrap_or_else(|| inner.faults.specs());
            let seed = change.seed.unwrap_or_else(|| inner.faults.seed());
            inner.faults = FaultEngine::new(specs, seed);
        }
        if let Some(ms) = change.import_delay_ms {
            inner.import_delay = Duration::from_millis(ms);
        }
    }
    Ok(Json(serde_json::to_value(current(&shared)).expect("plain data serialises")))
}
