//! `handover drain WORKER`: write a drain request into the store; with `--wait`, follow the target's
//! phases until it stops and exit with its outcome.

use super::{open_store, EXIT_FORCED};
use crate::cli::DrainArgs;
use crate::lifecycle::{Outcome, Phase};
use crate::store::DrainRequest;
use crate::text;
use anyhow::anyhow;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const FOLLOW_EVERY: Duration = Duration::from_millis(100);

pub async fn run(args: DrainArgs) -> anyhow::Result<ExitCode> {
    // The same rules as `POST /fleet/{worker}/drain`, checked before the store is touched.
    if let Err(message) = text::check_name("worker", &args.worker) {
        return Ok(text::refuse_cli(&message));
    }
    if let Some(Err(message)) = args.reason.as_deref().map(text::check_reason) {
        return Ok(text::refuse_cli(&message));
    }
    let store = open_store(&args.store.store).await?;
    let requested_by = format!(
        "cli {}@{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into()),
        hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "unknown-host".into())
    );
    let request = DrainRequest {
        mode: args.mode,
        reason: args.reason.clone(),
        requested_by: Some(requested_by),
        requested_at: None,
    };
    let target = store
        .request_drain(&args.worker, &request)
        .await
        .map_err(|e| anyhow!("cannot drain {:?}: {e}", args.worker))?;
    println!(
        "drain ({}) requested for worker {} ({}); it starts at once on PostgreSQL, within one poll on SQLite",
        args.mode,
        text::escape_control(&target.name),
        target.id
    );
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let started = Instant::now();
    let mut last_phase = target.phase;
    println!("{:>8.1}s  {}", 0.0, last_phase);
    loop {
        tokio::time::sleep(FOLLOW_EVERY).await;
        let workers = store.list_workers().await?;
        let Some(row) = workers.iter().find(|w| w.id == target.id) else {
            return Err(anyhow!("worker {} disappeared from the store", target.id));
        };
        if row.phase != last_phase {
            last_phase = row.phase;
            println!("{:>8.1}s  {}", started.elapsed().as_secs_f64(), row.phase);
        }
        if row.phase == Phase::Stopped {
            break;
        }
        if row.declared_dead_at.is_some() {
            return Err(anyhow!(
                "worker {} was declared dead (no heartbeat) before it finished draining",
                text::escape_control(&target.name)
            ));
        }
    }
    let record = store
        .list_shutdowns(100)
        .await?
        .into_iter()
        .find(|r| r.worker_id == target.id);
    let Some(record) = record else {
        return Err(anyhow!("worker stopped but left no shutdown record"));
    };
    for phase in &record.phases {
        println!(
            "  {:<14} {:>10.1} ms",
            phase.phase.as_str(),
            phase.duration_ms.unwrap_or(0.0)
        );
    }
    println!(
        "shutdown {} (trigger {}, {} jobs handed back) in {:.1} ms",
        record.outcome, record.trigger, record.jobs_released, record.duration_ms
    );
    Ok(match record.outcome {
        Outcome::Clean => ExitCode::SUCCESS,
        Outcome::Forced => ExitCode::from(EXIT_FORCED),
    })
}
