//! One function per CLI command; `run` dispatches and maps the outcome to an exit code.

mod control;
mod demo;
mod drain;
mod listing;
mod prune;
mod submit;
mod worker;

use crate::cli::{Cli, Command};
use crate::lifecycle::ShutdownSummary;
use crate::model::Outcome;
use crate::telemetry::tracing::TraceFlusher;
use std::process::ExitCode;

/// Exit code of an error (a shutdown whose writes the store never took included).
pub const EXIT_ERROR: u8 = 1;
/// Exit code of a shutdown that took the forced path.
pub const EXIT_FORCED: u8 = 3;
/// Exit code of a worker stopped because an essential task of its own failed (SPEC §10).
pub const EXIT_INTERNAL: u8 = 4;

/// How a worker's shutdown maps to its exit status: 4 when an essential task failed (whatever
/// started the drain), else 3 when forced, 1 when a write of the shutdown never reached the
/// store (its jobs are then left to lease expiry and rescue, and a script must not read the exit
/// as a clean hand-back), and 0 for a clean stop.
pub fn exit_status(summary: &ShutdownSummary) -> u8 {
    if !summary.failed_tasks.is_empty() {
        return EXIT_INTERNAL;
    }
    match summary.outcome() {
        Outcome::Forced => EXIT_FORCED,
        Outcome::Clean if !summary.unwritten.is_empty() => EXIT_ERROR,
        Outcome::Clean => 0,
    }
}

/// [`exit_status`] as the process's exit code, logging what made it an error.
pub fn exit_code(summary: &ShutdownSummary) -> ExitCode {
    if !summary.failed_tasks.is_empty() {
        tracing::error!(tasks = ?summary.failed_tasks, "stopped because essential tasks failed");
    } else if !summary.unwritten.is_empty() {
        tracing::error!(
            unwritten = ?summary.unwritten,
            "the store did not take every write of this shutdown"
        );
    }
    ExitCode::from(exit_status(summary))
}

pub async fn run(cli: Cli, traces: TraceFlusher) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Worker(args) => worker::run(args, traces).await,
        Command::Demo(args) => demo::run(args, traces).await,
        Command::Submit(args) => submit::run(args).await,
        Command::Jobs(args) => listing::jobs(args).await,
        Command::Workers(args) => listing::workers(args).await,
        Command::Drain(args) => drain::run(args).await,
        Command::Cancel(args) => control::cancel(args).await,
        Command::Retry(args) => control::retry(args).await,
        Command::Prune(args) => prune::run(args).await,
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
