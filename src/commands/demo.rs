//! `handover demo`: a worker on an embedded store with a stream of demo jobs of a few seconds each;
//! Ctrl-C shows the drain phases finishing, with their durations.

use super::exit_code;
use crate::app::{App, WorkerConfig};
use crate::cli::DemoArgs;
use crate::jobs::demo::{chain_start, chain_steps};
use crate::jobs::Registry;
use crate::lifecycle::{signals::SignalListener, MachineHandle};
use crate::model::{JobStatus, NewJob, Phase};
use crate::store::SharedStore;
use crate::telemetry::tracing::TraceFlusher;
use serde_json::json;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Keep this many demo jobs waiting.
const QUEUE_DEPTH: i64 = 4;
const JOB_SECONDS: f64 = 4.0;
const CHECKPOINT_SECONDS: f64 = 0.5;

pub async fn run(args: DemoArgs, traces: TraceFlusher) -> anyhow::Result<ExitCode> {
    let signals = SignalListener::install()?;
    let mut config = WorkerConfig::new(args.store.clone());
    config.listen = args.listen;
    config.name = "demo".into();
    config.concurrency = 2;
    config.grace = Duration::from_secs(10);
    config.heartbeat_interval = Duration::from_secs(1);
    config.lease_ttl = Duration::from_secs(5);
    let mut app = App::build(config, Registry::builtin()).await?;
    app.set_trace_flusher(traces);
    let store = super::open_store(&args.store).await?;
    let (iterations, checkpoint_every) = size_jobs();

    println!();
    println!("  handover demo: worker \"demo\" on {}", args.store);
    println!(
        "  admin:   http://{}/login?token={}",
        app.addr, app.admin_token
    );
    println!(
        "  status:  curl -H 'Authorization: Bearer {}' http://{}/api/status",
        app.admin_token, app.addr
    );
    println!("  ready:   curl -i http://{}/readyz", app.addr);
    println!("  metrics: curl http://{}/metrics", app.addr);
    println!("  jobs:    handover jobs --store {}", args.store);
    println!("  Each job hashes {iterations} times (about {JOB_SECONDS}s), checkpointing every {checkpoint_every}.");
    println!("  Press Ctrl-C to drain: jobs checkpoint, are handed back, and the phases are timed below.");
    println!();

    let handle = app.handle();
    app.forward_signals(signals);
    // The feed stops by itself once the worker deregisters.
    let (summary, ()) = tokio::join!(
        app.run_until_stopped(),
        feed(store, handle, iterations, checkpoint_every)
    );

    let record = &summary.record;
    println!();
    println!(
        "  shutdown {} after {} (trigger {}):",
        record.outcome,
        format_ms(record.duration_ms),
        record.trigger
    );
    for phase in &record.phases {
        println!(
            "    {:<14} {:>10}",
            phase.phase.as_str(),
            format_ms(phase.duration_ms.unwrap_or(0.0))
        );
    }
    println!(
        "  {} job(s) handed back with their checkpoints; run the demo again to resume them.",
        record.jobs_released
    );
    Ok(exit_code(&summary))
}

fn format_ms(ms: f64) -> String {
    format!("{ms:.1} ms")
}

/// Measures this machine's hash rate so demo jobs last about `JOB_SECONDS`.
fn size_jobs() -> (u64, u64) {
    let sample = 100_000;
    let started = Instant::now();
    let _ = chain_steps(chain_start("calibration"), sample, || false);
    let per_second = sample as f64 / started.elapsed().as_secs_f64().max(1e-6);
    let iterations = (per_second * JOB_SECONDS) as u64;
    let checkpoint_every = ((per_second * CHECKPOINT_SECONDS) as u64).max(1);
    (iterations.max(checkpoint_every), checkpoint_every)
}

/// Tops the queue up while the worker runs.
async fn feed(store: SharedStore, machine: MachineHandle, iterations: u64, checkpoint_every: u64) {
    let mut next = 0u64;
    loop {
        match machine.phase() {
            Phase::Stopped | Phase::Deregistering => return,
            Phase::Running => {
                let pending = store
                    .count_jobs()
                    .await
                    .ok()
                    .and_then(|counts| counts.into_iter().find(|(s, _)| *s == JobStatus::Pending))
                    .map_or(0, |(_, n)| n);
                let wanted = (QUEUE_DEPTH - pending).max(0);
                let jobs: Vec<NewJob> = (0..wanted)
                    .map(|_| {
                        next += 1;
                        NewJob::new(
                            "demo",
                            json!({
                                "seed": format!("demo-{}-{next}", std::process::id()),
                                "iterations": iterations,
                                "checkpoint_every": checkpoint_every,
                            }),
                        )
                    })
                    .collect();
                if !jobs.is_empty() {
                    if let Err(err) = store.submit(&jobs).await {
                        tracing::warn!(%err, "demo could not submit jobs");
                    }
                }
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
