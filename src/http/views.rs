//! View models for the askama page templates: plain strings and numbers, formatted once here.

use crate::jobs::inflight::InFlightView;
use crate::lifecycle::{Phase, Status};
use crate::store::{Job, JobStatus, QueuedDrain, ShutdownRecord, WorkerRow};
use crate::worker::drain_cost::DrainForecast;
use askama::Template;
use chrono::{DateTime, Utc};

/// Common to every page (the layout reads it).
pub struct Chrome {
    pub title: String,
    pub worker_name: String,
    pub worker_id: String,
    pub version: &'static str,
    pub csrf: String,
    pub active: &'static str,
}

#[derive(Template)]
#[template(path = "worker.html")]
pub struct WorkerPage {
    pub chrome: Chrome,
    pub status: StatusView,
    /// The `/api/status` JSON, escaped for embedding in a `<script type="application/json">`.
    pub status_json: String,
}

pub struct StatusView {
    pub phase: String,
    pub ready: bool,
    pub store_up: bool,
    pub trigger: Option<String>,
    pub mode: Option<String>,
    pub reason: Option<String>,
    pub requested_by: Option<String>,
    pub deadline: Option<String>,
    pub cancellable: bool,
    pub draining: bool,
    pub outcome: Option<String>,
    pub phases: Vec<PhaseView>,
    pub in_flight: Vec<InFlightJobView>,
    /// Jobs claimed ahead, waiting for a slot.
    pub held: usize,
    /// What a drain started now would cost.
    pub forecast: ForecastView,
}

/// "A drain now takes ≈ 1.2 s; a SIGKILL now would lose ≈ 14 s of work", and the warning when the
/// drain would outlast `--grace`.
pub struct ForecastView {
    pub drain_eta: String,
    pub work_at_risk: String,
    pub worst: String,
    pub allowance: String,
    pub would_force: bool,
    pub unknown_jobs: usize,
}

impl ForecastView {
    pub fn of(forecast: &DrainForecast) -> Self {
        ForecastView {
            drain_eta: seconds(forecast.drain_eta_seconds),
            work_at_risk: seconds(forecast.work_at_risk_seconds),
            worst: seconds(forecast.drain_eta_worst_seconds),
            allowance: seconds(forecast.drain_allowance_seconds),
            would_force: forecast.drain_would_force,
            unknown_jobs: forecast.drain_eta_unknown_jobs,
        }
    }
}

/// Seconds as the forecasts show them: `0.4 s`, `14 s`, `2.5 min`.
pub fn seconds(value: f64) -> String {
    let value = value.max(0.0);
    if value < 10.0 {
        format!("{value:.1} s")
    } else if value < 120.0 {
        format!("{value:.0} s")
    } else {
        format!("{:.1} min", value / 60.0)
    }
}

pub struct PhaseView {
    pub phase: String,
    pub entered_at: String,
    pub duration: String,
    pub current: bool,
}

pub struct InFlightJobView {
    pub job_id: i64,
    pub kind: String,
    pub attempt: i32,
    pub state: String,
    pub checkpoint: String,
    pub progress_percent: Option<u8>,
    /// The last line its process wrote (exec jobs), and the whole live tail for a tooltip.
    pub output_line: String,
    pub output: String,
}

/// The last non-empty line of a running job's output, stdout first.
pub fn last_output_line(output: &crate::jobs::inflight::OutputTail) -> String {
    [&output.stdout, &output.stderr]
        .iter()
        .find_map(|text| text.lines().rev().find(|line| !line.trim().is_empty()))
        .unwrap_or_default()
        .to_string()
}

#[derive(Template)]
#[template(path = "fleet.html")]
pub struct FleetPage {
    pub chrome: Chrome,
    /// Some live worker could still be drained ("drain all, N at a time").
    pub can_drain_all: bool,
    /// Workers waiting for the rolling-drain budget.
    pub queued: usize,
    pub workers: Vec<FleetWorkerView>,
    pub shutdowns: Vec<ShutdownView>,
}

pub struct FleetWorkerView {
    pub id: String,
    pub short_id: String,
    pub name: String,
    pub phase: String,
    pub version: String,
    pub heartbeat_age: String,
    pub in_flight: i64,
    pub listen_addr: String,
    pub is_self: bool,
    pub can_drain: bool,
    pub declared_dead: bool,
    pub drain_requested: Option<String>,
    /// Waiting for the rolling-drain budget: "at most N out".
    pub queued: Option<String>,
    /// From its last heartbeat; "—" until it reports.
    pub drain_eta: String,
    pub work_at_risk: String,
    /// What the table sorts live workers by, cheapest to drain first.
    pub risk_seconds: f64,
    /// Not stopped and not declared dead.
    pub live: bool,
}

pub struct ShutdownView {
    pub worker_name: String,
    /// The anchor a job's journey links its hand-backs to.
    pub worker_id: String,
    pub worker_short_id: String,
    pub trigger: String,
    pub mode: String,
    pub outcome: String,
    pub requested_by: String,
    pub reason: String,
    pub started_at: String,
    pub duration: String,
    pub jobs_released: i64,
    pub phases: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "jobs.html")]
pub struct JobsPage {
    pub chrome: Chrome,
    pub status_filter: Option<String>,
    pub kind_filter: String,
    pub counts: Vec<(String, i64)>,
    pub jobs: Vec<JobView>,
    pub limit: i64,
    pub total_shown: usize,
    pub first_page: bool,
    pub first_page_link: String,
    pub next_page: Option<String>,
    /// What the last bulk action did.
    pub notice: Option<String>,
}

pub struct JobView {
    pub id: i64,
    pub kind: String,
    pub status: String,
    pub attempts: String,
    pub owner: String,
    pub checkpoint: String,
    pub error: String,
    pub updated_at: String,
    pub payload: String,
    /// Pending, and no live worker serves its kind: it waits for a worker that is not there.
    pub unservable: bool,
}

#[derive(Template)]
#[template(path = "job.html")]
pub struct JobPage {
    pub chrome: Chrome,
    pub job: JobDetailView,
    pub events: Vec<JobEventView>,
}

pub struct JobDetailView {
    pub id: i64,
    pub kind: String,
    pub status: String,
    pub attempts: String,
    pub priority: i32,
    pub owner: String,
    pub lease_epoch: i64,
    pub payload: String,
    pub checkpoint: String,
    pub result: String,
    pub error: String,
    pub created_at: String,
    pub cancel_requested: bool,
    pub cancellable: bool,
    pub retryable: bool,
}

pub struct JobEventView {
    pub at: String,
    pub event: String,
    pub worker_id: String,
    /// The worker's short id (its first 8 characters).
    pub worker_name: String,
    pub epoch: String,
    pub detail: String,
    /// The shutdown record (by worker id) a hand-back belongs to.
    pub shutdown_id: Option<String>,
}

pub fn job_detail_view(job: &Job) -> JobDetailView {
    let pretty = |value: Option<&serde_json::Value>| {
        value.map_or_else(
            || "—".to_string(),
            |v| serde_json::to_string_pretty(v).unwrap_or_default(),
        )
    };
    JobDetailView {
        id: job.id,
        kind: job.kind.clone(),
        status: job.status.to_string(),
        attempts: format!("{}/{}", job.attempts, job.max_attempts),
        priority: job.priority,
        owner: job.owner.clone().unwrap_or_else(|| "—".into()),
        lease_epoch: job.lease_epoch,
        payload: pretty(Some(&job.payload)),
        checkpoint: pretty(job.checkpoint.as_ref()),
        result: pretty(job.result.as_ref()),
        error: job.error.clone().unwrap_or_else(|| "—".into()),
        created_at: clock(job.created_at),
        cancel_requested: job.cancel_requested,
        cancellable: matches!(
            job.status,
            JobStatus::Pending | JobStatus::Failed | JobStatus::Running
        ) && !job.cancel_requested,
        retryable: matches!(
            job.status,
            JobStatus::Dead | JobStatus::Failed | JobStatus::Cancelled
        ),
    }
}

pub fn job_event_view(event: &crate::model::JobEvent) -> JobEventView {
    let worker_id = event.worker_id.clone().unwrap_or_default();
    let shutdown_id = event
        .detail
        .as_ref()
        .and_then(|d| d.get("shutdown_id"))
        .and_then(|v| v.as_str())
        .map(String::from);
    JobEventView {
        at: clock(event.at),
        event: event.event.to_string(),
        worker_name: short(&worker_id),
        worker_id,
        epoch: event
            .lease_epoch
            .map_or_else(String::new, |epoch| epoch.to_string()),
        // What the columns and the link already say is left out.
        detail: match &event.detail {
            Some(serde_json::Value::Object(detail)) => {
                let mut shown = detail.clone();
                for said in ["claimed_at", "shutdown_id", "shutdown_trigger"] {
                    shown.remove(said);
                }
                if shown.is_empty() {
                    String::new()
                } else {
                    serde_json::Value::Object(shown).to_string()
                }
            }
            Some(other) => other.to_string(),
            None => String::new(),
        },
        shutdown_id,
    }
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub error: Option<String>,
    pub next: String,
    pub worker_name: String,
}

/// Wall-clock time as shown on the pages.
pub fn clock(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string()
}

pub fn millis(ms: f64) -> String {
    if ms >= 10_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else {
        format!("{ms:.1} ms")
    }
}

fn short(id: &str) -> String {
    id.chars().take(8).collect()
}

fn compact_json(value: Option<&serde_json::Value>) -> String {
    value.map_or_else(|| "—".to_string(), |v| v.to_string())
}

/// JSON safe to embed inside a `<script>` element: no `</script>`, no HTML-significant characters.
pub fn embeddable_json(value: &serde_json::Value) -> String {
    value
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

pub fn status_view(
    status: &Status,
    ready: bool,
    store_up: bool,
    in_flight: &[InFlightView],
    held: usize,
    forecast: &DrainForecast,
) -> StatusView {
    let current = status.phases.len().saturating_sub(1);
    StatusView {
        phase: status.phase.to_string(),
        ready,
        store_up,
        trigger: status.trigger.map(|t| t.to_string()),
        mode: status.mode.map(|m| m.to_string()),
        reason: status.reason.clone(),
        requested_by: status.requested_by.clone(),
        deadline: status.deadline.map(|d| d.to_rfc3339()),
        cancellable: status.cancellable,
        draining: status.phase != Phase::Running,
        outcome: status.outcome.map(|o| o.to_string()),
        phases: status
            .phases
            .iter()
            .enumerate()
            .map(|(index, span)| PhaseView {
                phase: span.phase.to_string(),
                entered_at: clock(span.entered_at),
                duration: span.duration_ms.map(millis).unwrap_or_default(),
                current: index == current && status.phase != Phase::Stopped,
            })
            .collect(),
        held,
        forecast: ForecastView::of(forecast),
        in_flight: in_flight
            .iter()
            .map(|job| InFlightJobView {
                job_id: job.job_id,
                kind: job.kind.clone(),
                attempt: job.attempt,
                state: serde_json::to_value(job.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                checkpoint: compact_json(job.checkpoint.as_ref()),
                progress_percent: job.progress.map(|p| (p.clamp(0.0, 1.0) * 100.0) as u8),
                output_line: job
                    .output
                    .as_ref()
                    .map(last_output_line)
                    .unwrap_or_default(),
                output: job
                    .output
                    .as_ref()
                    .map(|o| format!("{}{}", o.stdout, o.stderr))
                    .unwrap_or_default(),
            })
            .collect(),
    }
}

pub fn fleet_worker_view(
    worker: &WorkerRow,
    self_id: &str,
    now: DateTime<Utc>,
    queued: Option<&QueuedDrain>,
) -> FleetWorkerView {
    let age = (now - worker.heartbeat_at).num_milliseconds().max(0) as f64 / 1000.0;
    let live = worker.phase != Phase::Stopped && worker.declared_dead_at.is_none();
    FleetWorkerView {
        id: worker.id.clone(),
        short_id: short(&worker.id),
        name: worker.name.clone(),
        phase: worker.phase.to_string(),
        version: worker.version.clone(),
        heartbeat_age: if worker.phase == Phase::Stopped {
            "—".into()
        } else {
            format!("{age:.1}s ago")
        },
        in_flight: worker.in_flight,
        listen_addr: worker.listen_addr.clone().unwrap_or_else(|| "—".into()),
        is_self: worker.id == self_id,
        can_drain: live && matches!(worker.phase, Phase::Running | Phase::Starting),
        declared_dead: worker.declared_dead_at.is_some() && worker.phase != Phase::Stopped,
        drain_requested: worker.drain_request.as_ref().map(|d| d.mode.to_string()),
        queued: queued.map(|q| format!("{} · at most {} out", q.mode, q.max_draining)),
        drain_eta: match worker.drain_eta_seconds {
            Some(eta) if live => seconds(eta),
            _ => "—".into(),
        },
        work_at_risk: match worker.work_at_risk_seconds {
            Some(risk) if live => seconds(risk),
            _ => "—".into(),
        },
        risk_seconds: worker.work_at_risk_seconds.unwrap_or(0.0),
        live,
    }
}

/// The fleet table's order: live workers first, the least work at risk (the cheapest to drain)
/// first among them; then the others as the store listed them (newest first).
pub fn sort_fleet(workers: &mut [FleetWorkerView]) {
    workers.sort_by(|a, b| {
        b.live.cmp(&a.live).then(if a.live && b.live {
            a.risk_seconds.total_cmp(&b.risk_seconds)
        } else {
            std::cmp::Ordering::Equal
        })
    });
}

pub fn shutdown_view(record: &ShutdownRecord) -> ShutdownView {
    ShutdownView {
        worker_name: record.worker_name.clone(),
        worker_id: record.worker_id.clone(),
        worker_short_id: short(&record.worker_id),
        trigger: record.trigger.to_string(),
        mode: record.mode.to_string(),
        outcome: record.outcome.to_string(),
        requested_by: record.requested_by.clone().unwrap_or_default(),
        reason: record.reason.clone().unwrap_or_default(),
        started_at: clock(record.started_at),
        duration: millis(record.duration_ms),
        jobs_released: record.jobs_released,
        phases: record
            .phases
            .iter()
            .map(|p| {
                (
                    p.phase.to_string(),
                    p.duration_ms.map(millis).unwrap_or_default(),
                )
            })
            .collect(),
    }
}

pub fn job_view(job: &Job, live_kinds: &std::collections::BTreeSet<String>) -> JobView {
    JobView {
        id: job.id,
        kind: job.kind.clone(),
        status: job.status.to_string(),
        attempts: format!("{}/{}", job.attempts, job.max_attempts),
        owner: job.owner.as_deref().map_or_else(|| "—".into(), short),
        checkpoint: compact_json(job.checkpoint.as_ref()),
        error: job.error.clone().unwrap_or_default(),
        updated_at: clock(job.updated_at),
        payload: job.payload.to_string(),
        unservable: matches!(job.status, JobStatus::Pending | JobStatus::Failed)
            && !live_kinds.contains(&job.kind),
    }
}

/// Counts for every status, in the order the page lists them.
pub fn status_counts(counts: &[(JobStatus, i64)]) -> Vec<(String, i64)> {
    JobStatus::ALL
        .iter()
        .map(|status| {
            let count = counts
                .iter()
                .find(|(s, _)| s == status)
                .map_or(0, |(_, n)| *n);
            (status.to_string(), count)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_json_cannot_close_its_script_element() {
        let value = serde_json::json!({"reason": "</script><script>alert(1)</script> & more"});
        let text = embeddable_json(&value);
        assert!(!text.contains('<') && !text.contains('>') && !text.contains('&'));
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, value);
    }
}
