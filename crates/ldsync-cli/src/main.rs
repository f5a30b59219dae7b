//! The `ldsync` command line: reads the sync declarations, wires sources and LaunchDarkly
//! clients, and runs a command.
//!
//! `main` parses the flags, sets up logging, runs the command and maps its outcome to an exit
//! code: 0 success, 1 a sync or a connection failed, 2 `plan --detailed-exitcode` with pending
//! changes, 78 (EX_CONFIG) invalid configuration.

mod cli;
mod commands;
mod logging;
mod output;
mod progress;
mod wiring;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;

/// Exit codes, as PRODUCT.md lists them.
pub(crate) mod exit {
    /// A sync, a connection or the command failed.
    pub(crate) const FAILURE: u8 = 1;
    /// The configuration is invalid (EX_CONFIG from sysexits.h).
    pub(crate) const CONFIG: u8 = 78;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.global.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(exit::FAILURE)
        }
    }
}
