//! `handover worker`: build the app, forward signals, run until stopped, exit with what the
//! shutdown says (0 clean, 1 writes lost, 3 forced, 4 a task failed).

use super::exit_code;
use crate::app::{default_concurrency, default_worker_name, App, WorkerConfig};
use crate::cli::WorkerArgs;
use crate::jobs::Registry;
use crate::lifecycle::signals::SignalListener;
use crate::telemetry::tracing::TraceFlusher;
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
        cancel_grace: args.cancel_grace,
        queue_metrics_interval: args.queue_metrics_interval,
        admin_token: args.admin_token,
        final_scrape_wait: args.final_scrape_wait,
        retention: args.retention.policy(),
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
    app.forward_signals(signals);
    let summary = app.run_until_stopped().await;
    Ok(exit_code(&summary))
}
