//! `handover drain WORKER... | --all [--max-draining N]`: write drain requests into the store, at
//! once or through the rolling-drain budget; with `--wait`, follow every target's phases until it
//! stops and exit with the worst outcome; with `--cancel`, withdraw queued requests.

use super::{open_store, EXIT_ERROR, EXIT_FORCED};
use crate::cli::DrainArgs;
use crate::lifecycle::{Outcome, Phase};
use crate::store::{DrainQueued, DrainRequest, SharedStore, WorkerRow};
use crate::text;
use anyhow::anyhow;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const FOLLOW_EVERY: Duration = Duration::from_millis(100);

pub async fn run(args: DrainArgs) -> anyhow::Result<ExitCode> {
    // The same rules as `POST /fleet/{worker}/drain`, checked before the store is touched.
    for worker in &args.workers {
        if let Err(message) = text::check_name("worker", worker) {
            return Ok(text::refuse_cli(&message));
        }
    }
    if let Some(Err(message)) = args.reason.as_deref().map(text::check_reason) {
        return Ok(text::refuse_cli(&message));
    }
    let store = open_store(&args.store.store).await?;
    let rows = store.list_workers().await?;
    let targets = crate::store::drain_targets(&rows, &args.workers)
        .map_err(|e| anyhow!("cannot drain: {e}"))?;
    if args.cancel {
        return withdraw(&store, &targets).await;
    }
    if targets.is_empty() {
        println!("no live worker to drain (every worker is stopped, dead or already draining)");
        return Ok(ExitCode::SUCCESS);
    }
    let request = DrainRequest {
        mode: args.mode,
        reason: args.reason.clone(),
        requested_by: Some(requested_by()),
        requested_at: None,
    };
    let direct = !args.all && targets.len() == 1 && args.max_draining.is_none();
    if direct {
        let target = store
            .request_drain(&targets[0].id, &request)
            .await
            .map_err(|e| anyhow!("cannot drain {:?}: {e}", args.workers[0]))?;
        println!(
            "drain ({}) requested for worker {} ({}); it starts at once on PostgreSQL, within one poll on SQLite",
            args.mode,
            text::escape_control(&target.name),
            target.id
        );
    } else {
        let max_draining = args.max_draining.unwrap_or(1);
        let ids: Vec<String> = targets.iter().map(|t| t.id.clone()).collect();
        let answers = store
            .queue_drains(&ids, &request, max_draining)
            .await
            .map_err(|e| anyhow!("cannot drain: {e}"))?;
        for (id, answer) in &answers {
            let what = match answer {
                DrainQueued::Started => "asked to drain now".to_string(),
                DrainQueued::Queued => format!("queued (at most {max_draining} out at once)"),
                DrainQueued::AlreadyOut => "already draining".to_string(),
            };
            println!("worker {} ({id}): {what}", name_of(&targets, id));
        }
    }
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    follow(&store, &targets).await
}

fn requested_by() -> String {
    format!(
        "cli {}@{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into()),
        hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "unknown-host".into())
    )
}

fn name_of(targets: &[WorkerRow], id: &str) -> String {
    let name = targets
        .iter()
        .find(|t| t.id == id)
        .map_or(id, |t| t.name.as_str());
    text::escape_control(name)
}

/// `--cancel`: withdraws what is still queued; a worker already draining is left to its own page.
async fn withdraw(store: &SharedStore, targets: &[WorkerRow]) -> anyhow::Result<ExitCode> {
    let ids: Vec<String> = targets.iter().map(|t| t.id.clone()).collect();
    let withdrawn = store.cancel_queued_drains(&ids).await?;
    for target in targets {
        if withdrawn.contains(&target.id) {
            println!(
                "worker {} ({}): queued drain withdrawn",
                name_of(targets, &target.id),
                target.id
            );
        } else if target.is_out() {
            println!(
                "worker {} ({}): already draining; a drain in progress is cancelled on the worker (its page, or POST /drain/cancel)",
                name_of(targets, &target.id),
                target.id
            );
        }
    }
    if withdrawn.is_empty() {
        println!("no queued drain request to withdraw");
    }
    Ok(ExitCode::SUCCESS)
}

/// Where one target stands, as `--wait` reports it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Progress {
    Queued,
    Phase(Phase),
    Dead,
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Progress::Queued => f.write_str("queued"),
            Progress::Phase(phase) => f.write_str(phase.as_str()),
            Progress::Dead => f.write_str("declared dead"),
        }
    }
}

/// Follows every target until each has stopped (or died), one line per change with how many are
/// left, then prints each shutdown and exits with the worst outcome.
async fn follow(store: &SharedStore, targets: &[WorkerRow]) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut seen: BTreeMap<String, Progress> = BTreeMap::new();
    loop {
        let rows = store.list_workers().await?;
        let queued = store.queued_drains().await?;
        let mut changes = Vec::new();
        for target in targets {
            let row = rows.iter().find(|w| w.id == target.id);
            let progress = match row {
                None => return Err(anyhow!("worker {} disappeared from the store", target.id)),
                Some(row) if row.phase == Phase::Stopped => Progress::Phase(Phase::Stopped),
                Some(row) if row.declared_dead_at.is_some() => Progress::Dead,
                Some(_) if queued.iter().any(|q| q.worker_id == target.id) => Progress::Queued,
                Some(row) if row.drain_request.is_some() => Progress::Phase(Phase::Draining),
                Some(row) => Progress::Phase(row.phase),
            };
            if seen.insert(target.id.clone(), progress) != Some(progress) {
                changes.push((target, progress));
            }
        }
        let done = |p: &Progress| matches!(p, Progress::Phase(Phase::Stopped) | Progress::Dead);
        let left = seen.values().filter(|p| !done(p)).count();
        let waiting = seen.values().filter(|p| **p == Progress::Queued).count();
        for (target, progress) in changes {
            println!(
                "{:>8.1}s  {:<24} {:<14} ({left} left, {waiting} queued)",
                started.elapsed().as_secs_f64(),
                text::escape_control(&target.name),
                progress.to_string(),
            );
        }
        if left == 0 {
            break;
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
    report(store, targets, &seen).await
}

async fn report(
    store: &SharedStore,
    targets: &[WorkerRow],
    seen: &BTreeMap<String, Progress>,
) -> anyhow::Result<ExitCode> {
    let records = store.list_shutdowns(1000).await?;
    let mut code = ExitCode::SUCCESS;
    for target in targets {
        let name = text::escape_control(&target.name);
        if seen.get(&target.id) == Some(&Progress::Dead) {
            eprintln!(
                "error: worker {name} was declared dead (no heartbeat) before it finished draining"
            );
            code = ExitCode::from(EXIT_ERROR);
            continue;
        }
        let Some(record) = records.iter().find(|r| r.worker_id == target.id) else {
            eprintln!("error: worker {name} stopped but left no shutdown record");
            code = ExitCode::from(EXIT_ERROR);
            continue;
        };
        println!("worker {name}:");
        for phase in &record.phases {
            println!(
                "  {:<14} {:>10.1} ms",
                phase.phase.as_str(),
                phase.duration_ms.unwrap_or(0.0)
            );
        }
        println!(
            "  shutdown {} (trigger {}, {} jobs handed back) in {:.1} ms",
            record.outcome, record.trigger, record.jobs_released, record.duration_ms
        );
        if record.outcome == Outcome::Forced && code == ExitCode::SUCCESS {
            code = ExitCode::from(EXIT_FORCED);
        }
    }
    Ok(code)
}
