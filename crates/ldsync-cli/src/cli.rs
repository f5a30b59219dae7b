//! The flags and subcommands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Keeps LaunchDarkly in step with a data warehouse.
#[derive(Debug, Parser)]
#[command(name = "ldsync", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Flags every command takes.
#[derive(Debug, Args)]
pub(crate) struct GlobalArgs {
    /// The project file; `syncs/` beside it holds the syncs.
    #[arg(long, global = true, env = ldsync_config::CONFIG_ENV_VAR, default_value = ldsync_config::DEFAULT_CONFIG_FILE)]
    pub(crate) config: PathBuf,
    /// What the command prints on stdout.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub(crate) output: OutputFormat,
    /// How logs are written to stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
}

/// What a command prints on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    /// Text for people.
    Text,
    /// One JSON document.
    Json,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Text for people (colours on a terminal).
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Check every file and report every problem at once.
    Validate(ValidateArgs),
    /// Run the queries and the diffs, and show what a run would send; sends nothing.
    Plan(PlanArgs),
    /// One incremental run of the named syncs (all when none is named).
    Run(RunArgs),
    /// A full resync of one sync that ignores its snapshot.
    Backfill(BackfillArgs),
    /// Each sync's recent runs, counts, errors and next scheduled run.
    Status(StatusArgs),
    /// Run every sync on its schedule until stopped; serve /metrics and /healthz.
    Serve(ServeArgs),
    /// Serve a local LaunchDarkly (REST API and metric import) until stopped.
    Emulator(EmulatorArgs),
    /// Run a SQL script against a DuckDB file (how the demo and tests fill a warehouse).
    #[command(hide = true)]
    SeedDuckdb(SeedDuckdbArgs),
}

/// `ldsync status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// One sync: its recent runs (all syncs, their last run, when none is named).
    pub(crate) sync: Option<String>,
    /// List the records the last run rejected, with their reasons.
    #[arg(long)]
    pub(crate) rejected: bool,
    /// How many recent runs to show for one sync.
    #[arg(long, default_value_t = 10)]
    pub(crate) limit: usize,
}

/// `ldsync serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Where `/metrics` (Prometheus) and `/healthz` are served; loopback unless told otherwise.
    #[arg(long, default_value = "127.0.0.1:9184")]
    pub(crate) listen: std::net::SocketAddr,
    /// How long runs in flight may take to finish after SIGTERM or SIGINT.
    #[arg(long, default_value = "60s")]
    pub(crate) shutdown_timeout: ldsync_config::HumanDuration,
    /// A run still going when its sync is due again: `skip` that time, or `queue` one run.
    #[arg(long, value_enum, default_value_t = Overlap::Skip)]
    pub(crate) overlap: Overlap,
}

/// What `serve` does when a sync is due while its last run is still going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Overlap {
    /// Skip the time that came due, and log it.
    Skip,
    /// Run once more right after, never more than one queued.
    Queue,
}

/// `ldsync emulator`.
#[derive(Debug, Args)]
pub(crate) struct EmulatorArgs {
    /// The port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8765)]
    pub(crate) port: u16,
    /// The address to bind; loopback unless told otherwise.
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) host: std::net::IpAddr,
    /// The access token the emulator accepts.
    #[arg(long, env = "LDSYNC_EMULATOR_TOKEN", default_value = ldsync_emulator::DEFAULT_TOKEN, hide_env_values = true)]
    pub(crate) token: String,
    /// Load the state from this file at start (when it exists) and save it there.
    #[arg(long)]
    pub(crate) state_file: Option<PathBuf>,
    /// A request budget, such as `global=100/10s` or `POST /api/v2/segments/*/*/*/contexts=20/10s`
    /// (repeatable; see docs/emulator.md).
    #[arg(long = "rate-limit", value_name = "SPEC")]
    pub(crate) rate_limits: Vec<ldsync_emulator::RateLimitSpec>,
    /// A fault rule, such as `503@rate=0.1` or `reset@route=POST /v2/event-data-import/*/*,nth=3`
    /// (repeatable; see docs/emulator.md).
    #[arg(long = "faults", value_name = "SPEC")]
    pub(crate) faults: Vec<ldsync_emulator::FaultSpec>,
    /// The seed of fault rates, so that a run can be replayed.
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// A further token limited to some actions, as `TOKEN=ACTION,ACTION` (repeatable): any
    /// other action answers 403.
    #[arg(long = "limited-token", value_name = "TOKEN=ACTIONS")]
    pub(crate) limited_tokens: Vec<ldsync_emulator::TokenSpec>,
    /// The projects and their environments, as `KEY=ENV,ENV` (repeatable; default
    /// `default=production,test`).
    #[arg(long = "project", value_name = "KEY=ENVS")]
    pub(crate) projects: Vec<ldsync_emulator::ProjectSpec>,
    /// Serve the metric import on a port of its own (by default it shares `--port`).
    #[arg(long)]
    pub(crate) events_port: Option<u16>,
    /// How long a segment import stays `in_progress` (`200ms`, `2s` …).
    #[arg(long)]
    pub(crate) import_delay: Option<ldsync_config::HumanDuration>,
}

/// `ldsync seed-duckdb`.
#[derive(Debug, Args)]
pub(crate) struct SeedDuckdbArgs {
    /// The database file; created when missing.
    #[arg(long)]
    pub(crate) database: PathBuf,
    /// The SQL script.
    #[arg(long)]
    pub(crate) script: PathBuf,
}

/// `ldsync plan`.
#[derive(Debug, Args)]
pub(crate) struct PlanArgs {
    /// The syncs to plan (all when none is named).
    pub(crate) syncs: Vec<String>,
    /// Exit 2 when a sync has changes pending (0 when none has, 1 on failure).
    #[arg(long)]
    pub(crate) detailed_exitcode: bool,
    #[command(flatten)]
    pub(crate) allow: AllowArgs,
}

/// Flags that let a run past a guardrail.
#[derive(Debug, Clone, Copy, Default, Args)]
pub(crate) struct AllowArgs {
    /// Segments: send a run that removes more than `max_removal_ratio` or empties a segment.
    #[arg(long)]
    pub(crate) allow_mass_removal: bool,
    /// Metrics: delete and re-create a metric whose kind changed.
    #[arg(long)]
    pub(crate) allow_recreate: bool,
}

/// `ldsync run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The syncs to run (all when none is named).
    pub(crate) syncs: Vec<String>,
    #[command(flatten)]
    pub(crate) allow: AllowArgs,
}

/// `ldsync backfill`.
#[derive(Debug, Args)]
pub(crate) struct BackfillArgs {
    /// The sync to backfill.
    pub(crate) sync: String,
    /// Metric events: the start of the time range (RFC 3339, or a date for its midnight UTC).
    #[arg(long, value_parser = parse_instant)]
    pub(crate) from: Option<chrono::DateTime<chrono::Utc>>,
    /// Metric events: the end of the time range, excluded.
    #[arg(long, value_parser = parse_instant)]
    pub(crate) to: Option<chrono::DateTime<chrono::Utc>>,
    /// Metric events: the length of each window (`1d`, `6h` …), each journaled on its own.
    #[arg(long, default_value = "1d")]
    pub(crate) window: ldsync_config::HumanDuration,
    /// Show what the backfill would send; send nothing.
    #[arg(long)]
    pub(crate) plan: bool,
    #[command(flatten)]
    pub(crate) allow: AllowArgs,
}

/// An RFC 3339 time, or a date read as its midnight in UTC.
fn parse_instant(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(instant) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(instant.to_utc());
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map(|time| time.and_utc())
        .ok_or_else(|| format!("invalid time `{text}`: expected RFC 3339 such as `2024-01-01T00:00:00Z`, or a date such as `2024-01-01`"))
}

/// `ldsync validate`.
#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    /// Also reach each warehouse (`select 1`) and each LaunchDarkly environment (one cheap
    /// authenticated call).
    #[arg(long)]
    pub(crate) check_connections: bool,
}
