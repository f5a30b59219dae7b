//! Validated declarations: only the validator builds these, so holding one means it is valid.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use chrono::{DateTime, Utc};
use ldsync_core::{
    ContextKind, EnvironmentName, ProjectKey, Secret, SegmentKey, SyncName, WarehouseName,
};

use crate::{Query, Ratio, Schedule};

/// A whole project: `ldsync.toml` and every sync in `syncs/`.
#[derive(Debug, Clone)]
pub struct Project {
    /// The project file.
    pub config_path: PathBuf,
    /// The folder of the project file; relative paths in it are read from here.
    pub root: PathBuf,
    /// Where run state lives.
    pub state: StateSpec,
    /// The warehouses, by name.
    pub warehouses: BTreeMap<WarehouseName, WarehouseSpec>,
    /// The LaunchDarkly environments, by name.
    pub environments: BTreeMap<EnvironmentName, EnvironmentSpec>,
    /// Process-wide limits.
    pub limits: LimitsSpec,
    /// The syncs, by name.
    pub syncs: BTreeMap<SyncName, SyncSpec>,
}

/// Where run state lives.
#[derive(Debug, Clone, PartialEq)]
pub enum StateSpec {
    /// The embedded store, in a local folder.
    Local {
        /// The folder (absolute, or relative to the working directory).
        path: PathBuf,
    },
    /// A PostgreSQL database shared by several ldsync processes.
    Postgres {
        /// The connection string; it may hold a password.
        url: Secret,
        /// The local working copy of the syncs' files (absolute, or relative to the working
        /// directory).
        cache: PathBuf,
        /// How long a process's lease on a sync lasts without renewal: after it dies, another
        /// process takes its syncs over this long after its last renewal.
        lease: Duration,
    },
}

/// A warehouse that syncs read from.
#[derive(Debug, Clone, PartialEq)]
pub enum WarehouseSpec {
    /// PostgreSQL, or any engine that speaks its wire protocol.
    Postgres {
        /// The connection string; it may hold a password.
        url: Secret,
        /// How long one query may run.
        statement_timeout: Duration,
    },
    /// An embedded DuckDB database.
    DuckDb {
        /// The database file, or `None` for an in-memory database.
        path: Option<PathBuf>,
        /// How long one query may run.
        statement_timeout: Duration,
    },
}

impl WarehouseSpec {
    /// The engine's name, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Postgres { .. } => "postgres",
            Self::DuckDb { .. } => "duckdb",
        }
    }
}

/// A LaunchDarkly environment and the token that writes to it.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvironmentSpec {
    /// The name `ldsync.toml` gives it.
    pub name: EnvironmentName,
    /// The access token, from the environment.
    pub token: Secret,
    /// The LaunchDarkly project key.
    pub project: ProjectKey,
    /// The LaunchDarkly environment key.
    pub environment: String,
    /// The client-side ID to check against the environment's `_id`, when set.
    pub client_side_id: Option<String>,
    /// The REST API's base URL, without a final `/`.
    pub api_url: String,
    /// The event ingestion base URL, without a final `/`.
    pub events_url: String,
}

/// Process-wide limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsSpec {
    /// Memory the diff may use before it spills to disk, in bytes.
    pub memory_budget_bytes: u64,
    /// How many syncs run at the same time under `serve`.
    pub max_concurrent_syncs: u32,
    /// Requests a second to the LaunchDarkly account, at most (every sync together).
    pub requests_per_second: u32,
    /// Requests a second to one LaunchDarkly route, at most (every sync together).
    pub route_requests_per_second: u32,
}

/// One sync, from one file in `syncs/`.
#[derive(Debug, Clone)]
pub struct SyncSpec {
    /// The sync's name: its file's stem.
    pub name: SyncName,
    /// The file that declares it.
    pub path: PathBuf,
    /// The warehouse it reads from.
    pub warehouse: WarehouseName,
    /// The LaunchDarkly environment it writes to.
    pub environment: EnvironmentName,
    /// When `serve` runs it (UTC), if at all.
    pub schedule: Option<Schedule>,
    /// What the file says the sync is for.
    pub description: Option<String>,
    /// The LaunchDarkly object it keeps.
    pub object: SyncObject,
}

/// The LaunchDarkly object a sync keeps, with its options.
#[derive(Debug, Clone)]
pub enum SyncObject {
    /// Mirror context keys into one or several big segments.
    Segment(SegmentSpec),
    /// Send events to the metric import API, each exactly once.
    MetricEvents(MetricEventsSpec),
    /// Keep metric definitions equal to a table.
    Metrics(MetricsSpec),
}

impl SyncObject {
    /// The table name of the object in a sync file.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Segment(_) => "segment",
            Self::MetricEvents(_) => "metric_events",
            Self::Metrics(_) => "metrics",
        }
    }

    /// The sync's query.
    pub fn query(&self) -> &Query {
        match self {
            Self::Segment(spec) => &spec.query,
            Self::MetricEvents(spec) => &spec.query,
            Self::Metrics(spec) => &spec.query,
        }
    }
}

/// `[segment]`.
#[derive(Debug, Clone)]
pub struct SegmentSpec {
    /// The segment, or `None` when the query's `segment_key` column names the segments.
    pub key: Option<SegmentKey>,
    /// The segment's name when ldsync creates it (its key when not set).
    pub name: Option<String>,
    /// The segment's description when ldsync creates it.
    pub description: Option<String>,
    /// The segment's tags when ldsync creates it.
    pub tags: Vec<String>,
    /// The context kind of every member.
    pub context_kind: ContextKind,
    /// The share of members a run may remove before it stops.
    pub max_removal_ratio: Ratio,
    /// Context keys per request.
    pub batch_size: u32,
    /// Members at or above which a first load goes through a CSV import.
    pub import_threshold: u64,
    /// The query; it returns `context_key` and optionally `segment_key`.
    pub query: Query,
}

/// `[metric_events]`.
#[derive(Debug, Clone)]
pub struct MetricEventsSpec {
    /// The context kind of `context_key`.
    pub context_kind: ContextKind,
    /// How far before the cursor each run reads again, for late rows.
    pub lookback: Duration,
    /// How long after its delivery an event's identity is remembered, whatever its
    /// `occurred_at`: an `event_id` that comes back within it is never sent again.
    pub identity_retention: Duration,
    /// The cursor of the first run.
    pub initial_cursor: DateTime<Utc>,
    /// Events per request.
    pub batch_size: u32,
    /// The query; `$1` is bound to the cursor.
    pub query: Query,
}

/// `[metrics]`.
#[derive(Debug, Clone)]
pub struct MetricsSpec {
    /// Whether metrics that leave the query are archived.
    pub archive_removed: bool,
    /// The query: one row per metric.
    pub query: Query,
}
