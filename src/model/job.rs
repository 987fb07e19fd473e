//! Jobs as every layer sees them (SPEC §2): ids, statuses, the stored row, a submission, the
//! lease that fences every write, a claimed job, and how attempts end.

use super::wire_enum;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A job's id, assigned by the store in submission order.
pub type JobId = i64;

wire_enum!(
    /// The status of a job (SPEC §2).
    JobStatus {
        /// Waiting to be claimed (new, handed back or rescued).
        Pending => "pending",
        /// Leased by a worker.
        Running => "running",
        /// Done, with its result.
        Completed => "completed",
        /// An attempt failed; it will be retried after `run_after`.
        Failed => "failed",
        /// Attempts exhausted; its last error is kept.
        Dead => "dead",
        /// Cancelled by an operator.
        Cancelled => "cancelled",
    }
);

/// A job as stored, with the field names of SPEC §2.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Job {
    /// The job's id.
    pub id: JobId,
    /// Which handler runs it.
    pub kind: String,
    /// What the handler is asked to do (JSON).
    pub payload: Value,
    /// Where the job is in its life.
    pub status: JobStatus,
    /// Higher runs first.
    pub priority: i32,
    /// Attempts counted so far (hand-backs do not count; rescues do).
    pub attempts: i32,
    /// After this many failed attempts the job is `dead`.
    pub max_attempts: i32,
    /// Not claimed before this time (retry backoff).
    pub run_after: DateTime<Utc>,
    /// The id of the worker holding the lease, while one does.
    pub owner: Option<String>,
    /// Raised by every claim; fences every write of an attempt.
    pub lease_epoch: i64,
    /// When the lease expires unless renewed.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// The last checkpoint saved; the next attempt resumes from it.
    pub checkpoint: Option<Value>,
    /// What the handler returned on completion.
    pub result: Option<Value>,
    /// The last failed attempt's error.
    pub error: Option<String>,
    /// When it was submitted.
    pub created_at: DateTime<Utc>,
    /// When its row last changed.
    pub updated_at: DateTime<Utc>,
    /// When the current (or last) attempt was claimed.
    pub claimed_at: Option<DateTime<Utc>>,
    /// An operator cancelled it while it ran; its owner is stopping it.
    pub cancel_requested: bool,
}

/// A job to submit.
#[derive(Clone, Debug)]
pub struct NewJob {
    /// Which handler runs it; see [`crate::jobs::validate_kind`].
    pub kind: String,
    /// What the handler is asked to do (JSON).
    pub payload: Value,
    /// Higher runs first (default 0).
    pub priority: i32,
    /// After this many failed attempts the job is `dead` (default [`DEFAULT_MAX_ATTEMPTS`]).
    pub max_attempts: i32,
}

/// Default number of attempts before a failing job becomes `dead`.
pub const DEFAULT_MAX_ATTEMPTS: i32 = 5;

impl NewJob {
    /// A job of `kind` with `payload`, priority 0 and the default attempts.
    pub fn new(kind: impl Into<String>, payload: Value) -> Self {
        NewJob {
            kind: kind.into(),
            payload,
            priority: 0,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }
}

/// Proof of holding a job: every write for the job is conditional on all three fields.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Lease {
    /// The job held.
    pub job_id: JobId,
    /// The worker holding it.
    pub owner: String,
    /// The claim's `lease_epoch`.
    pub epoch: i64,
}

/// A job handed to a worker by a claim.
#[derive(Clone, Debug)]
pub struct ClaimedJob {
    /// The lease every write of this attempt is fenced by.
    pub lease: Lease,
    /// Which handler runs it.
    pub kind: String,
    /// What the handler is asked to do.
    pub payload: Value,
    /// 1 for the first attempt; released (handed-back) runs do not count.
    pub attempt: i32,
    /// After this many failed attempts the job is `dead`.
    pub max_attempts: i32,
    /// The checkpoint to resume from (None on a first run).
    pub checkpoint: Option<Value>,
}

/// What a failed attempt did to the job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailOutcome {
    /// Status `failed`: it will be claimed again after `run_after`.
    Retry,
    /// Status `dead`: attempts are exhausted.
    Dead,
}

wire_enum!(
    /// Why a held job was let go without completing (the `reason` label of
    /// `handover_jobs_released_total`).
    ReleaseReason {
        /// Handed back with its checkpoint during a clean shutdown.
        Shutdown => "shutdown",
        /// Handed back when the shutdown was forced.
        Forced => "forced",
        /// Another worker holds it now; this worker stopped it.
        LeaseLost => "lease_lost",
        /// The handler itself asked to be resumed later (exec exit 75) outside a shutdown.
        Yielded => "yielded",
        /// Claimed ahead but never started: handed back by a drain (first thing, in
        /// `draining`), or after waiting too long for a slot. No attempt is counted.
        Prefetch => "prefetch",
    }
);

wire_enum!(
    /// How one attempt ended on this worker (the `outcome` label of
    /// `handover_job_duration_seconds`).
    AttemptOutcome {
        /// The handler completed the job.
        Completed => "completed",
        /// The handler failed the attempt.
        Failed => "failed",
        /// Stopped at a checkpoint to be handed back.
        Interrupted => "interrupted",
        /// Another worker took the job; this attempt stopped.
        LeaseLost => "lease_lost",
        /// Abandoned by a forced shutdown.
        Forced => "forced",
        /// Stopped because an operator cancelled the job.
        Cancelled => "cancelled",
    }
);
