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
        /// The worker running it.
        owner: String,
    },
    /// Already finished (`completed`, `dead`, `cancelled`): nothing to cancel.
    Finished(JobStatus),
    /// No job has this id.
    NotFound,
}

/// What a retry did to one job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RetryOutcome {
    /// Back to `pending`, attempts reset.
    Retried,
    /// Not `dead`, `failed` or `cancelled`: nothing to retry.
    Refused(JobStatus),
    /// No job has this id.
    NotFound,
}

wire_enum!(
    /// One step of a job's journey (the `event` of `GET /api/jobs/{id}`).
    JobEventKind {
        /// Submitted (by `submit`, the API or a program).
        Submitted => "submitted",
        /// Claimed by a worker.
        Claimed => "claimed",
        /// Handed back without completing (detail: `reason`, `checkpoint`, and `shutdown_id`
        /// when a shutdown did it).
        Released => "released",
        /// Its lease expired and a rescuer returned it (or declared it dead).
        Rescued => "rescued",
        /// An attempt failed.
        Failed => "failed",
        /// Completed.
        Completed => "completed",
        /// An operator cancelled it while it ran; its owner was told.
        CancelRequested => "cancel_requested",
        /// Cancelled.
        Cancelled => "cancelled",
        /// Sent back to `pending` by a retry.
        Retried => "retried",
    }
);

/// One event of a job's journey.
#[derive(Clone, Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub struct JobEvent {
    /// What happened.
    pub event: JobEventKind,
    /// When.
    pub at: DateTime<Utc>,
    /// The worker it happened on, if any.
    pub worker_id: Option<String>,
    /// The attempt's lease epoch, if any.
    pub lease_epoch: Option<i64>,
    /// More about it (for example a release's `reason`).
    pub detail: Option<Value>,
}

/// A completion audit row, with when that attempt was claimed.
#[derive(Clone, Debug, PartialEq)]
pub struct CompletionRecord {
    /// The job completed.
    pub job_id: JobId,
    /// The epoch of the attempt that completed it.
    pub lease_epoch: i64,
    /// The worker that completed it.
    pub worker_id: String,
    /// When it was completed.
    pub completed_at: DateTime<Utc>,
    /// When that attempt was claimed.
    pub claimed_at: Option<DateTime<Utc>>,
}

/// The jobs of one kind in one status, as the queue metrics count them.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueCount {
    /// The kind counted.
    pub kind: String,
    /// The status counted.
    pub status: JobStatus,
    /// How many jobs.
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
