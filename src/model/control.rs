//! Job control (SPEC §10): what a cancel or a retry did to each job, and the events of a job's
//! journey.

use super::job::{JobId, JobStatus};
use super::wire_enum;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

/// The kinds every worker runs, whether or not a worker of the store has announced them.
pub const BUILT_IN_KINDS: &[&str] = &["demo", "exec", "noop"];

/// What a cancel did to one job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was pending or failed: it is `cancelled` now.
    Cancelled,
    /// It is running: its owner has been told and will stop it and write `cancelled`.
    Requested {
        owner: String,
    },
    /// Already finished (`completed`, `dead`, `cancelled`): nothing to cancel.
    Finished(JobStatus),
    NotFound,
}

/// What a retry did to one job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RetryOutcome {
    /// Back to `pending`, attempts reset.
    Retried,
    /// Not `dead`, `failed` or `cancelled`: nothing to retry.
    Refused(JobStatus),
    NotFound,
}

wire_enum!(
    /// One step of a job's journey (the `event` of `GET /api/jobs/{id}`).
    JobEventKind {
        Submitted => "submitted",
        Claimed => "claimed",
        /// Handed back without completing (detail: `reason`, `checkpoint`, and `shutdown_id`
        /// when a shutdown did it).
        Released => "released",
        /// Its lease expired and a rescuer returned it (or declared it dead).
        Rescued => "rescued",
        Failed => "failed",
        Completed => "completed",
        CancelRequested => "cancel_requested",
        Cancelled => "cancelled",
        Retried => "retried",
    }
);

/// One event of a job's journey.
#[derive(Clone, Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub struct JobEvent {
    pub event: JobEventKind,
    pub at: DateTime<Utc>,
    pub worker_id: Option<String>,
    pub lease_epoch: Option<i64>,
    pub detail: Option<Value>,
}

/// A completion audit row, with when that attempt was claimed.
#[derive(Clone, Debug, PartialEq)]
pub struct CompletionRecord {
    pub job_id: JobId,
    pub lease_epoch: i64,
    pub worker_id: String,
    pub completed_at: DateTime<Utc>,
    pub claimed_at: Option<DateTime<Utc>>,
}

/// The jobs of one kind in one status, as the queue metrics count them.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueCount {
    pub kind: String,
    pub status: JobStatus,
    pub jobs: i64,
    /// For `pending`: how long the longest-waiting runnable job has waited (by the store's clock).
    pub oldest_wait: Option<std::time::Duration>,
}

/// The statuses the queue metrics count: the queue itself and its casualties. Completed and
/// cancelled jobs only accumulate until retention deletes them; the jobs page counts those.
pub const QUEUE_STATUSES: &[JobStatus] = &[
    JobStatus::Pending,
    JobStatus::Running,
    JobStatus::Failed,
    JobStatus::Dead,
];
