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
}

/// `ldsync validate`.
#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    /// Also reach each warehouse (`select 1`) and each LaunchDarkly environment (one cheap
    /// authenticated call).
    #[arg(long)]
    pub(crate) check_connections: bool,
}
