//! One function per CLI command; `run` dispatches and maps the outcome to an exit code.

mod demo;
mod drain;
mod listing;
mod submit;
mod worker;

use crate::cli::{Cli, Command};
use crate::telemetry::tracing::TraceFlusher;
use std::process::ExitCode;

/// Exit code of an error (a shutdown whose writes the store never took included).
pub const EXIT_ERROR: u8 = 1;
/// Exit code of a shutdown that took the forced path.
pub const EXIT_FORCED: u8 = 3;

pub async fn run(cli: Cli, traces: TraceFlusher) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Worker(args) => worker::run(args, traces).await,
        Command::Demo(args) => demo::run(args, traces).await,
        Command::Submit(args) => submit::run(args).await,
        Command::Jobs(args) => listing::jobs(args).await,
        Command::Workers(args) => listing::workers(args).await,
        Command::Drain(args) => drain::run(args).await,
        Command::Migrate(args) => {
            crate::store::open_migrated(&args.store)
                .await
                .map_err(|e| anyhow::anyhow!("cannot migrate store {}: {e}", args.store))?;
            println!("store {} is migrated to the current schema", args.store);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Opens and migrates a store for a CLI command, with the URL in any error.
pub(crate) async fn open_store(
    url: &crate::store::StoreUrl,
) -> anyhow::Result<crate::store::SharedStore> {
    crate::store::open_migrated(url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot use store {url}: {e}"))
}
