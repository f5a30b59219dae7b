//! One module per subcommand.

mod emulator;
mod serve;
mod status;
mod sync;
mod validate;

use std::process::ExitCode;

use anyhow::Context as _;

use crate::cli::{Cli, Command};

/// Runs the command the user asked for.
pub(crate) async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate(args) => validate::run(&cli.global, &args).await,
        Command::Plan(args) => sync::plan(&cli.global, &args).await,
        Command::Run(args) => sync::run(&cli.global, &args).await,
        Command::Backfill(args) => sync::backfill(&cli.global, &args).await,
        Command::Status(args) => status::run(&cli.global, &args),
        Command::Serve(args) => serve::run(&cli.global, &args).await,
        Command::Emulator(args) => emulator::run(args).await,
        Command::SeedDuckdb(args) => {
            let sql = std::fs::read_to_string(&args.script)
                .with_context(|| format!("cannot read `{}`", args.script.display()))?;
            ldsync_source::DuckDbSource::execute_script(args.database.clone(), sql).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
