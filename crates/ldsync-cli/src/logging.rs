//! Logging to stderr, as text or JSON lines, filtered by `LDSYNC_LOG` (default `info`).

use std::io::IsTerminal;

use tracing_subscriber::{fmt, EnvFilter};

use crate::cli::LogFormat;

/// The environment variable that sets the log filter, in `tracing`'s `EnvFilter` syntax.
pub(crate) const LOG_ENV_VAR: &str = "LDSYNC_LOG";

pub(crate) fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env(LOG_ENV_VAR).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    // A second initialisation (never in the binary) is harmless, so its error is ignored.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
