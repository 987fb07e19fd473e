//! `handover jobs` and `handover workers`: a table for people (control characters escaped, one
//! line per row; workers with their drain cost and any queued rolling drain), `--json` for
//! scripts.

use super::open_store;
use crate::cli::{JobsArgs, WorkersArgs};
use crate::model::QueuedDrain;
use crate::store::{JobFilter, WorkerRow};
use crate::text;
use chrono::Utc;
use std::io::Write;
use std::process::ExitCode;

pub async fn jobs(args: JobsArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(&args.store.store).await?;
    let jobs = store
        .list_jobs(&JobFilter {
            status: args.status,
            limit: args.limit,
        })
        .await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if args.json {
        serde_json::to_writer(&mut out, &jobs)?;
        writeln!(out)?;
    } else {
        let rows = jobs.iter().map(|job| {
            vec![
                job.id.to_string(),
                job.kind.clone(),
                job.status.to_string(),
                format!("{}/{}", job.attempts, job.max_attempts),
                job.owner.as_deref().map_or("-".into(), short_id),
                job.checkpoint
                    .as_ref()
                    .map_or("-".into(), |c| truncate(&c.to_string(), 48)),
                job.error
                    .as_deref()
                    .map_or("-".into(), |e| truncate(&text::escape_control(e), 48)),
            ]
        });
        print_table(
            &mut out,
            &[
                "ID",
                "KIND",
                "STATUS",
                "ATTEMPTS",
                "OWNER",
                "CHECKPOINT",
                "ERROR",
            ],
            rows,
        )?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub async fn workers(args: WorkersArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(&args.store.store).await?;
    let workers = store.list_workers().await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if args.json {
        serde_json::to_writer(&mut out, &workers)?;
        writeln!(out)?;
    } else {
        let queued = store.queued_drains().await?;
        let rows = workers.iter().map(|worker| {
            let queued = queued.iter().find(|q| q.worker_id == worker.id);
            worker_row(worker, queued)
        });
        print_table(
            &mut out,
            &[
                "NAME",
                "ID",
                "PHASE",
                "VERSION",
                "HEARTBEAT",
                "IN FLIGHT",
                "DRAIN ETA",
                "AT RISK",
                "DRAIN",
                "LISTEN",
            ],
            rows,
        )?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn worker_row(worker: &WorkerRow, queued: Option<&QueuedDrain>) -> Vec<String> {
    let age = (Utc::now() - worker.heartbeat_at).num_milliseconds().max(0) as f64 / 1000.0;
    let phase =
        if worker.declared_dead_at.is_some() && worker.phase != crate::lifecycle::Phase::Stopped {
            format!("{} (declared dead)", worker.phase)
        } else {
            worker.phase.to_string()
        };
    vec![
        worker.name.clone(),
        short_id(&worker.id),
        phase,
        worker.version.clone(),
        format!("{age:.1}s ago"),
        worker.in_flight.to_string(),
        seconds_while_live(worker, worker.drain_eta_seconds),
        seconds_while_live(worker, worker.work_at_risk_seconds),
        match (&worker.drain_request, queued) {
            (Some(request), _) => format!("{} requested", request.mode),
            (None, Some(queued)) => format!(
                "{} queued (at most {} out)",
                queued.mode, queued.max_draining
            ),
            (None, None) => "-".into(),
        },
        worker.listen_addr.clone().unwrap_or_else(|| "-".into()),
    ]
}

/// A drain-cost figure from the worker's last heartbeat, as `1.2s`; `-` when it reported none
/// or is no longer live (a stopped or dead worker's last figures would mislead).
fn seconds_while_live(worker: &WorkerRow, seconds: Option<f64>) -> String {
    match seconds {
        Some(seconds) if worker.is_live() => format!("{seconds:.1}s"),
        _ => "-".into(),
    }
}

fn short_id(id: &str) -> String {
    id.chars().take(8).collect()
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let cut: String = text.chars().take(max - 1).collect();
        format!("{cut}…")
    }
}

fn print_table(
    out: &mut impl Write,
    headers: &[&str],
    rows: impl Iterator<Item = Vec<String>>,
) -> std::io::Result<()> {
    // Text from the store (exec stderr, worker names) may hold newlines and terminal escapes.
    let rows: Vec<Vec<String>> = rows
        .map(|row| row.iter().map(|cell| text::escape_control(cell)).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    writeln!(
        out,
        "{}",
        line(headers.iter().map(|h| h.to_string()).collect())
    )?;
    for row in rows {
        writeln!(out, "{}", line(row))?;
    }
    Ok(())
}
