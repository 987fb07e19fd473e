//! A job's journey (SPEC §10): the events its statements wrote, and the ones derived from data that
//! already exists — `submitted` from the row, each attempt's `claimed` from the claim time its
//! ending kept, `completed` from the completion audit — with every hand-back made by a shutdown
//! linked to that shutdown's record.

use crate::model::{
    CompletionRecord, Job, JobEvent, JobEventKind, JobStatus, ReleaseReason, ShutdownRecord,
};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// Slack around a shutdown's recorded span when matching its hand-backs (clocks of one store).
const SHUTDOWN_SLACK_MS: i64 = 1000;

/// The whole journey, oldest first.
pub fn journey(
    job: &Job,
    written: Vec<JobEvent>,
    completions: Vec<CompletionRecord>,
    shutdowns: &[ShutdownRecord],
) -> Vec<JobEvent> {
    let mut events = vec![JobEvent {
        event: JobEventKind::Submitted,
        at: job.created_at,
        worker_id: None,
        lease_epoch: None,
        detail: None,
    }];
    // Each attempt, by (worker, epoch), gets one `claimed` event from whichever record kept it.
    let mut attempts = BTreeSet::new();
    let mut claimed = |worker: &Option<String>, epoch: Option<i64>, at: Option<DateTime<Utc>>| {
        let (Some(worker), Some(epoch), Some(at)) = (worker, epoch, at) else {
            return None;
        };
        attempts.insert((worker.clone(), epoch)).then(|| JobEvent {
            event: JobEventKind::Claimed,
            at,
            worker_id: Some(worker.clone()),
            lease_epoch: Some(epoch),
            detail: None,
        })
    };
    for mut event in written {
        let claimed_at = event
            .detail
            .as_ref()
            .and_then(|d| d.get("claimed_at"))
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<DateTime<Utc>>().ok());
        events.extend(claimed(&event.worker_id, event.lease_epoch, claimed_at));
        if event.event == JobEventKind::Released {
            link_shutdown(&mut event, shutdowns);
        }
        events.push(event);
    }
    for done in completions {
        let worker = Some(done.worker_id.clone());
        events.extend(claimed(&worker, Some(done.lease_epoch), done.claimed_at));
        events.push(JobEvent {
            event: JobEventKind::Completed,
            at: done.completed_at,
            worker_id: worker,
            lease_epoch: Some(done.lease_epoch),
            detail: None,
        });
    }
    if job.status == JobStatus::Running {
        events.extend(claimed(&job.owner, Some(job.lease_epoch), job.claimed_at));
    }
    // Stable: events of the same instant keep the order they were written in.
    events.sort_by_key(|e| e.at);
    events
}

/// Adds `shutdown_id` (the worker id its record is kept under) to a hand-back that happened
/// during that worker's shutdown.
fn link_shutdown(event: &mut JobEvent, shutdowns: &[ShutdownRecord]) {
    let reason = event
        .detail
        .as_ref()
        .and_then(|d| d.get("reason"))
        .and_then(Value::as_str);
    if !matches!(
        reason.and_then(|r| r.parse::<ReleaseReason>().ok()),
        Some(ReleaseReason::Shutdown | ReleaseReason::Forced | ReleaseReason::Prefetch)
    ) {
        return;
    }
    let Some(worker) = &event.worker_id else {
        return;
    };
    let during = shutdowns.iter().find(|s| {
        let from = s.started_at - chrono::Duration::milliseconds(SHUTDOWN_SLACK_MS);
        let to =
            s.started_at + chrono::Duration::milliseconds(s.duration_ms as i64 + SHUTDOWN_SLACK_MS);
        s.worker_id == *worker && (from..=to).contains(&event.at)
    });
    if let (Some(record), Some(Value::Object(detail))) = (during, event.detail.as_mut()) {
        detail.insert("shutdown_id".into(), json!(record.worker_id));
        detail.insert("shutdown_trigger".into(), json!(record.trigger));
    }
}
