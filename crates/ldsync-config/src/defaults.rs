//! Defaults and environment variable names, each documented in one place.

/// The environment variable that names the project file (the `--config` flag wins over it).
pub const CONFIG_ENV_VAR: &str = "LDSYNC_CONFIG";
/// The project file read when neither `--config` nor `LDSYNC_CONFIG` names one.
pub const DEFAULT_CONFIG_FILE: &str = "ldsync.toml";
/// The folder, beside the project file, that holds one sync per `*.toml` file.
pub const SYNCS_DIR: &str = "syncs";
/// The embedded state store's folder, relative to the project file.
pub const DEFAULT_STATE_DIR: &str = ".ldsync";
/// The local working copy of a PostgreSQL state store, beside `ldsync.toml`.
pub const DEFAULT_STATE_CACHE_DIR: &str = ".ldsync-cache";
/// How long a lease in a PostgreSQL state store lasts without renewal, in seconds.
pub const DEFAULT_STATE_LEASE_SECS: u64 = 60;
/// LaunchDarkly's REST API in the commercial instance.
pub const DEFAULT_API_URL: &str = "https://app.launchdarkly.com";
/// LaunchDarkly's event ingestion host in the commercial instance.
pub const DEFAULT_EVENTS_URL: &str = "https://events.launchdarkly.com";
/// Context keys per `POST …/contexts` request.
pub const DEFAULT_SEGMENT_BATCH_SIZE: u32 = 1_000;
/// Members at or above which a first load or backfill goes through a CSV import.
pub const DEFAULT_IMPORT_THRESHOLD: u64 = 100_000;
/// The share of a segment's members a run may remove before it stops and asks.
pub const DEFAULT_MAX_REMOVAL_RATIO: f64 = 0.5;
/// Events per metric import request (each request also stays under 10 MB).
pub const DEFAULT_EVENT_BATCH_SIZE: u32 = 50_000;
/// How far before the cursor an incremental events run looks again, for late rows.
pub const DEFAULT_LOOKBACK_SECS: u64 = 3_600;
/// How long an events sync remembers the identity of an event it delivered: 400 days, so
/// that an `event_id` re-emitted within a year (and a month) is never sent twice.
pub const DEFAULT_IDENTITY_RETENTION_SECS: u64 = 400 * 86_400;
/// How long one warehouse query may run.
pub const DEFAULT_STATEMENT_TIMEOUT_SECS: u64 = 3_600;
/// The memory the diff may use before it spills to disk, in MiB.
pub const DEFAULT_MEMORY_BUDGET_MIB: u64 = 1_024;
/// How many syncs `serve` runs at the same time.
pub const DEFAULT_MAX_CONCURRENT_SYNCS: u32 = 4;
/// Requests a second the process sends to one LaunchDarkly account, at most. LaunchDarkly does
/// not publish its limits; the client also slows down when its answers say a window runs out.
pub const DEFAULT_REQUESTS_PER_SECOND: u32 = 50;
/// Requests a second the process sends to one LaunchDarkly route (verb and URL pattern).
pub const DEFAULT_ROUTE_REQUESTS_PER_SECOND: u32 = 20;
