//! `handover worker`: build the app, forward signals, run until stopped, exit 0 (clean) or 3 (forced).

use super::{EXIT_ERROR, EXIT_FORCED};
use crate::cli::WorkerArgs;
use crate::jobs::Registry;
use crate::lifecycle::{signals::SignalListener, Outcome, ShutdownSummary};
use crate::telemetry::tracing::TraceFlusher;
use crate::worker::{default_concurrency, default_worker_name, App, WorkerConfig};
use std::process::ExitCode;

pub fn config_from_args(args: WorkerArgs) -> WorkerConfig {
    WorkerConfig {
        store: args.store.store,
        listen: args.listen,
        name: args.name.unwrap_or_else(default_worker_name),
        concurrency: args
            .concurrency
            .map_or_else(default_concurrency, |n| n as usize),
        grace: args.grace,
        drain_delay: args.drain_delay,
        heartbeat_interval: args
            .heartbeat_interval
            .unwrap_or_else(|| WorkerConfig::default_heartbeat(args.lease_ttl)),
        lease_ttl: args.lease_ttl,
        poll_interval: args.poll_interval,
        admin_token: args.admin_token,
        final_scrape_wait: args.final_scrape_wait,
    }
}

pub async fn run(args: WorkerArgs, traces: TraceFlusher) -> anyhow::Result<ExitCode> {
    // Handlers first: from here on a signal is queued for the machine, never fatal.
    let signals = SignalListener::install()?;
    let mut app = App::build(config_from_args(args), Registry::builtin()).await?;
    app.set_trace_flusher(traces);
    if app.token_generated {
        tracing::info!(
            login = %format!("http://{}/login?token={}", app.addr, app.admin_token),
            "no --admin-token given; generated one for this run (0.0.0.0 means any address of this host)"
        );
    }
    signals.forward_to(app.handle());
    let summary = app.run_until_stopped().await;
    Ok(exit_code(&summary))
}

/// 0 clean, 3 forced, 1 when a write of the shutdown never reached the store (its jobs are then
/// left to lease expiry and rescue, and a script must not read the exit as a clean hand-back).
pub fn exit_code(summary: &ShutdownSummary) -> ExitCode {
    match summary.outcome() {
        Outcome::Forced => ExitCode::from(EXIT_FORCED),
        Outcome::Clean if !summary.unwritten.is_empty() => {
            tracing::error!(
                unwritten = ?summary.unwritten,
                "the store did not take every write of this shutdown"
            );
            ExitCode::from(EXIT_ERROR)
        }
        Outcome::Clean => ExitCode::SUCCESS,
    }
}
