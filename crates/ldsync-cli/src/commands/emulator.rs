//! `ldsync emulator`: a local LaunchDarkly, until Ctrl-C or SIGTERM.

use std::{io::Write, process::ExitCode};

use ldsync_emulator::{Emulator, EmulatorConfig, TokenSpec};

use crate::cli::EmulatorArgs;

pub(crate) async fn run(args: EmulatorArgs) -> anyhow::Result<ExitCode> {
    let mut config = EmulatorConfig {
        host: args.host,
        port: args.port,
        state_file: args.state_file,
        rate_limits: args.rate_limits,
        faults: args.faults,
        seed: args.seed,
        ..EmulatorConfig::default()
    };
    config.tokens = vec![TokenSpec::full(args.token)];
    config.tokens.extend(args.limited_tokens);
    if !args.projects.is_empty() {
        config.projects = args.projects;
    }
    config.events_port = args.events_port;
    if let Some(delay) = args.import_delay {
        config.import_delay = delay.get();
    }
    let emulator = Emulator::start(config).await?;
    {
        // Scripts read these two lines to find the emulator.
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "api_url: {}", emulator.api_url())?;
        writeln!(stdout, "events_url: {}", emulator.events_url())?;
        stdout.flush()?;
    }
    tracing::info!(api_url = %emulator.api_url(), "Emulator listening; Ctrl-C stops it.");
    emulator.run_until(shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(error = %error, "Cannot listen for SIGTERM; only Ctrl-C stops the emulator.");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
