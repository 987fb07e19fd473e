//! Jobs as every layer sees them (SPEC §2): ids, statuses, the stored row, a submission, the
//! lease that fences every write, a claimed job, and how attempts end.

use super::wire_enum;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub type JobId = i64;

wire_enum!(
    /// The status of a job (SPEC §2).
    JobStatus {
        Pending => "pending",
        Running => "running",
        Completed => "completed",
        Failed => "failed",
        Dead => "dead",
        Cancelled => "cancelled",
    }
);

/// A job as stored, with the field names of SPEC §2.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Job {
    pub id: JobId,
    pub kind: String,
    pub payload: Value,
    pub status: JobStatus,
    pub priority: i32,
    pub attempts: i32,
    pub max_attempts: i32,
    pub run_after: DateTime<Utc>,
    pub owner: Option<String>,
    pub lease_epoch: i64,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub checkpoint: Option<Value>,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the current (or last) attempt was claimed.
    pub claimed_at: Option<DateTime<Utc>>,
    /// An operator cancelled it while it ran; its owner is stopping it.
    pub cancel_requested: bool,
}

/// A job to submit.
#[derive(Clone, Debug)]
pub struct NewJob {
    pub kind: String,
    pub payload: Value,
    pub priority: i32,
    pub max_attempts: i32,
}

/// Default number of attempts before a failing job becomes `dead`.
pub const DEFAULT_MAX_ATTEMPTS: i32 = 5;

impl NewJob {
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
    pub job_id: JobId,
    pub owner: String,
    pub epoch: i64,
}

/// A job handed to a worker by a claim.
#[derive(Clone, Debug)]
pub struct ClaimedJob {
    pub lease: Lease,
    pub kind: String,
    pub payload: Value,
    /// 1 for the first attempt; released (handed-back) runs do not count.
    pub attempt: i32,
    pub max_attempts: i32,
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
        Completed => "completed",
        Failed => "failed",
        /// Stopped at a checkpoint to be handed back.
        Interrupted => "interrupted",
        LeaseLost => "lease_lost",
        /// Abandoned by a forced shutdown.
        Forced => "forced",
        /// Stopped because an operator cancelled the job.
        Cancelled => "cancelled",
    }
);
