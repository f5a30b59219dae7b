//! The files as written: serde mirrors of `ldsync.toml` and `syncs/*.toml`.
//!
//! Unknown keys are rejected and values with rules are checked here, through newtypes, so that
//! TOML's deserialiser reports them at their line and column. Rules across fields and files run
//! later, in `validate`, on `Spanned` fields.

use ldsync_core::{ContextKind, SegmentKey};
use serde::Deserialize;
use toml::Spanned;

use crate::{HumanDuration, Query, Ratio, Schedule};

/// `[state]`: where run state lives.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawState {
    pub(crate) path: Option<Spanned<String>>,
    pub(crate) url: Option<Spanned<String>>,
    pub(crate) cache: Option<Spanned<String>>,
    pub(crate) lease: Option<Spanned<HumanDuration>>,
}

/// `[warehouses.NAME]`: one warehouse; exactly one of `postgres` and `duckdb`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWarehouse {
    pub(crate) postgres: Option<Spanned<String>>,
    pub(crate) duckdb: Option<Spanned<String>>,
    pub(crate) statement_timeout: Option<HumanDuration>,
}

/// `[environments.NAME]`: one LaunchDarkly environment and the token that writes to it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEnvironment {
    pub(crate) token: Spanned<String>,
    pub(crate) project: Spanned<String>,
    pub(crate) environment: Spanned<String>,
    pub(crate) client_side_id: Option<Spanned<String>>,
    pub(crate) api_url: Option<Spanned<String>>,
    pub(crate) events_url: Option<Spanned<String>>,
}

/// `[limits]`: process-wide limits.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub(crate) memory_budget_mib: Option<Spanned<u64>>,
    pub(crate) max_concurrent_syncs: Option<Spanned<u32>>,
    pub(crate) requests_per_second: Option<Spanned<u32>>,
    pub(crate) route_requests_per_second: Option<Spanned<u32>>,
}

/// One `syncs/NAME.toml` file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSync {
    pub(crate) warehouse: Spanned<String>,
    pub(crate) environment: Spanned<String>,
    pub(crate) schedule: Option<Schedule>,
    pub(crate) description: Option<String>,
    pub(crate) segment: Option<Spanned<RawSegment>>,
    pub(crate) metric_events: Option<Spanned<RawMetricEvents>>,
    pub(crate) metrics: Option<Spanned<RawMetrics>>,
}

/// `[segment]`: mirror a query's context keys into a big segment.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSegment {
    pub(crate) key: Option<Spanned<SegmentKey>>,
    pub(crate) name: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) tags: Option<Vec<String>>,
    pub(crate) context_kind: Option<ContextKind>,
    pub(crate) max_removal_ratio: Option<Ratio>,
    pub(crate) batch_size: Option<Spanned<u32>>,
    pub(crate) import_threshold: Option<u64>,
    pub(crate) query: Spanned<Query>,
}

/// `[metric_events]`: send new warehouse events to the metric import API.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMetricEvents {
    pub(crate) context_kind: Option<ContextKind>,
    pub(crate) lookback: Option<HumanDuration>,
    pub(crate) identity_retention: Option<HumanDuration>,
    pub(crate) initial_cursor: Option<Spanned<String>>,
    pub(crate) batch_size: Option<Spanned<u32>>,
    pub(crate) query: Spanned<Query>,
}

/// `[metrics]`: keep metric definitions equal to a table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMetrics {
    pub(crate) archive_removed: Option<bool>,
    pub(crate) query: Spanned<Query>,
}
