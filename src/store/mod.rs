//! The store contract (SPEC §1-§3): every rule about jobs, leases and workers is a method of [`Store`].
//!
//! Backends implement it with atomic, fenced statements; nothing outside `store/` writes SQL.

mod postgres;
mod sqlite;
mod url;

pub use self::postgres::PostgresStore;
pub use self::sqlite::SqliteStore;
pub use self::url::StoreUrl;

use crate::lifecycle::{Mode, Outcome, Phase, Trigger};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

pub type JobId = i64;

/// A store shared by every part of a worker.
pub type SharedStore = Arc<dyn Store>;

crate::lifecycle::phase::wire_enum!(
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
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
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

/// A request, written into the store, that a worker drain itself.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DrainRequest {
    pub mode: Mode,
    pub reason: Option<String>,
    pub requested_by: Option<String>,
    pub requested_at: Option<DateTime<Utc>>,
}

/// What a worker says about itself when it registers.
#[derive(Clone, Debug)]
pub struct WorkerRegistration {
    pub id: String,
    pub name: String,
    pub version: String,
    pub listen_addr: Option<String>,
    pub concurrency: u32,
    pub lease_ttl: Duration,
}

/// A worker row (SPEC §3).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WorkerRow {
    pub id: String,
    pub name: String,
    pub phase: Phase,
    pub version: String,
    pub listen_addr: Option<String>,
    pub concurrency: i64,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    pub in_flight: i64,
    pub drain_request: Option<DrainRequest>,
    /// Set by a rescuer that found this worker's heartbeat older than its lease TTL.
    pub declared_dead_at: Option<DateTime<Utc>>,
    pub stopped_at: Option<DateTime<Utc>>,
}

/// What a heartbeat learnt from the store.
#[derive(Clone, Debug, Default)]
pub struct HeartbeatReport {
    /// The leases the store renewed (jobs this worker still owns).
    pub renewed: Vec<Lease>,
    /// False when the store no longer knows this worker as alive (it was declared dead or deleted).
    pub worker_known: bool,
    /// A drain request addressed to this worker, taken (cleared) from the store by this heartbeat.
    pub drain_request: Option<DrainRequest>,
}

/// One phase of a shutdown as it was lived.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PhaseSpan {
    pub phase: Phase,
    pub entered_at: DateTime<Utc>,
    /// None while the phase is current.
    pub duration_ms: Option<f64>,
}

/// The record every shutdown leaves in the store (SPEC §4).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ShutdownRecord {
    pub worker_id: String,
    pub worker_name: String,
    pub trigger: Trigger,
    pub mode: Mode,
    pub outcome: Outcome,
    pub requested_by: Option<String>,
    pub reason: Option<String>,
    pub started_at: DateTime<Utc>,
    pub duration_ms: f64,
    pub phases: Vec<PhaseSpan>,
    pub jobs_released: i64,
    /// Jobs that were still running when the shutdown was forced.
    pub forced_jobs: Vec<JobId>,
}

/// Something a store pushes to workers as it happens (PostgreSQL LISTEN/NOTIFY).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreEvent {
    /// Jobs became claimable (submitted, handed back or rescued).
    JobsAvailable,
    /// A drain request was written for this worker id.
    DrainRequested { worker_id: String },
    /// The push connection was re-established; events may have been missed meanwhile.
    Reconnected,
}

/// Filters for listing jobs.
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    pub limit: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A fenced write found the job no longer held at this (owner, epoch).
    #[error("lease lost: job {job_id} is no longer held at epoch {epoch}")]
    LeaseLost { job_id: JobId, epoch: i64 },
    /// The store cannot be reached; the operation may be retried.
    #[error("store unreachable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("store error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("schema migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Invalid(String),
    /// The store answers but cannot be trusted or written: a corrupt SQLite file, or one deleted
    /// or replaced underneath the worker. Retrying does not help; an operator must act.
    #[error("store unusable: {0}")]
    Broken(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(err),
            sqlx::Error::Database(ref db) => match classify(db.as_ref()) {
                DatabaseFault::Transient => StoreError::Unavailable(err),
                DatabaseFault::Broken => StoreError::Broken(one_line(&err)),
                DatabaseFault::Other => StoreError::Database(err),
            },
            other => StoreError::Database(other),
        }
    }
}

/// What a database error says about the store itself.
enum DatabaseFault {
    /// Retrying the same write may succeed: the store is down or busy for now.
    Transient,
    /// The store cannot be trusted until an operator acts (a corrupt SQLite file).
    Broken,
    /// About this statement or its input, not the store.
    Other,
}

fn classify(err: &dyn sqlx::error::DatabaseError) -> DatabaseFault {
    if err
        .try_downcast_ref::<sqlx::sqlite::SqliteError>()
        .is_some()
    {
        // Extended result codes carry the primary code in their low byte.
        let primary = err
            .code()
            .and_then(|code| code.parse::<i64>().ok())
            .map_or(0, |code| code & 0xff);
        return match primary {
            // BUSY, LOCKED: another writer; FULL, IOERR, CANTOPEN, READONLY (a disk remounted
            // read-only, a file moved away): the disk, until it comes back.
            5 | 6 | 8 | 10 | 13 | 14 => DatabaseFault::Transient,
            // CORRUPT ("database disk image is malformed"), NOTADB.
            11 | 26 => DatabaseFault::Broken,
            _ => DatabaseFault::Other,
        };
    }
    // PostgreSQL's connection-exception (08xxx), transaction-rollback (40xxx: serialization
    // failure, deadlock), insufficient-resources (53xxx: disk full, out of memory) and
    // admin-shutdown (57P0x) classes: retrying the same write may succeed.
    match err.code() {
        Some(code)
            if code.starts_with("08")
                || code.starts_with("40")
                || code.starts_with("53")
                || code.starts_with("57P") =>
        {
            DatabaseFault::Transient
        }
        _ => DatabaseFault::Other,
    }
}

impl StoreError {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// Whether this error means the store is not usable by this worker (down, full, corrupt or
    /// replaced), as opposed to a problem with one request.
    pub fn store_is_down(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Broken(_))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The operations a worker, the CLI and the admin pages need from a store.
///
/// Rules every implementation keeps (SPEC §2):
/// - `claim` sets owner, a strictly greater `lease_epoch` and `lease_expires_at` atomically;
/// - every write for a held job is conditional on `(owner, lease_epoch)` and reports a lost lease;
/// - `release` returns a job to `pending`, keeps its checkpoint and does not count the attempt;
/// - `rescue_expired` returns expired leases to `pending`, keeping their checkpoint.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies pending schema migrations.
    async fn migrate(&self) -> StoreResult<()>;
    /// Checks that the store answers.
    async fn ping(&self) -> StoreResult<()>;

    /// Inserts jobs in one transaction and returns their ids in order.
    async fn submit(&self, jobs: &[NewJob]) -> StoreResult<Vec<JobId>>;
    /// Claims up to `limit` runnable jobs of the given kinds for `owner`.
    async fn claim(
        &self,
        owner: &str,
        kinds: &[String],
        limit: usize,
        lease_ttl: Duration,
    ) -> StoreResult<Vec<ClaimedJob>>;
    /// Saves a checkpoint for a held job.
    async fn checkpoint(&self, lease: &Lease, checkpoint: &Value) -> StoreResult<()>;
    /// Completes held jobs; returns, per item, whether the lease was still held (false = lost).
    async fn complete(&self, items: &[(Lease, Value)]) -> StoreResult<Vec<bool>>;
    /// Records a failed attempt: `failed` with `run_after = now + backoff`, or `dead` when exhausted.
    async fn fail(&self, lease: &Lease, error: &str, backoff: Duration)
        -> StoreResult<FailOutcome>;
    /// Hands held jobs back to `pending`, claimable again after `resume_after`; returns, per
    /// lease, whether it was still held.
    async fn release(&self, leases: &[Lease], resume_after: Duration) -> StoreResult<Vec<bool>>;
    /// Returns jobs whose lease expired to `pending` (or `dead` when out of attempts), and marks
    /// workers whose heartbeat is older than their lease TTL as declared dead. Returns the job ids.
    async fn rescue_expired(&self) -> StoreResult<Vec<JobId>>;

    async fn get_job(&self, id: JobId) -> StoreResult<Option<Job>>;
    async fn list_jobs(&self, filter: &JobFilter) -> StoreResult<Vec<Job>>;
    /// Counts jobs by status.
    async fn count_jobs(&self) -> StoreResult<Vec<(JobStatus, i64)>>;

    async fn register_worker(&self, worker: &WorkerRegistration) -> StoreResult<()>;
    /// Clears a declared-dead mark for a worker that turned out to be alive (only while running).
    async fn revive_worker(&self, worker_id: &str) -> StoreResult<()>;
    async fn set_worker_phase(&self, worker_id: &str, phase: Phase) -> StoreResult<()>;
    /// Renews the worker row and the given leases together. Only these leases are renewed: a job
    /// the worker no longer holds (abandoned, or given up) must be left to expire and be rescued.
    async fn heartbeat(
        &self,
        worker_id: &str,
        held: &[Lease],
        lease_ttl: Duration,
    ) -> StoreResult<HeartbeatReport>;
    /// Marks the worker stopped.
    async fn deregister_worker(&self, worker_id: &str) -> StoreResult<()>;
    async fn list_workers(&self) -> StoreResult<Vec<WorkerRow>>;
    /// Writes a drain request for a live worker, found by id or name.
    async fn request_drain(&self, worker: &str, request: &DrainRequest) -> StoreResult<WorkerRow>;

    async fn record_shutdown(&self, record: &ShutdownRecord) -> StoreResult<()>;
    async fn list_shutdowns(&self, limit: i64) -> StoreResult<Vec<ShutdownRecord>>;
    /// How many times each job was completed (the at-most-once audit; test and audit use).
    async fn completion_counts(&self) -> StoreResult<Vec<(JobId, i64)>>;

    /// Events pushed as they happen; None where the backend has no push and workers poll (SQLite).
    async fn subscribe(&self) -> StoreResult<Option<mpsc::UnboundedReceiver<StoreEvent>>> {
        Ok(None)
    }
}

/// A driver error as one line: the database's own message where there is one.
pub(crate) fn one_line(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Database(db) => db.message().to_string(),
        other => other.to_string().replace('\n', " "),
    }
}

/// Parses a wire name read back from the store (a bad one means a corrupt row).
pub(crate) fn parse_enum<T: std::str::FromStr<Err = String>>(text: &str) -> StoreResult<T> {
    text.parse().map_err(StoreError::Invalid)
}

/// For a batch write: which of the `asked` job ids the store `applied` to, in the order asked.
pub(crate) fn applied_flags(asked: impl Iterator<Item = JobId>, applied: &[JobId]) -> Vec<bool> {
    asked.map(|id| applied.contains(&id)).collect()
}

/// Chooses the worker a drain request is for, among the rows whose id or name is `worker`:
/// exactly one live worker, or a clear error.
pub(crate) fn pick_drain_target<'a>(
    worker: &str,
    candidates: &'a [WorkerRow],
) -> StoreResult<&'a WorkerRow> {
    let live: Vec<&WorkerRow> = candidates
        .iter()
        .filter(|w| w.phase != Phase::Stopped && w.declared_dead_at.is_none())
        .collect();
    match live.as_slice() {
        [one] => Ok(one),
        [] if candidates.is_empty() => Err(StoreError::NotFound(format!(
            "no worker with id or name {worker:?}"
        ))),
        [] => Err(StoreError::Conflict(format!(
            "worker {worker:?} is not running (already stopped or declared dead)"
        ))),
        many => Err(StoreError::Conflict(format!(
            "{} live workers are named {worker:?}; give a worker id instead",
            many.len()
        ))),
    }
}

/// Opens (creating if needed) the store a URL names. Does not migrate.
pub async fn open(url: &StoreUrl) -> StoreResult<SharedStore> {
    match url {
        StoreUrl::Sqlite { path } => Ok(Arc::new(SqliteStore::open(path).await?)),
        StoreUrl::Postgres { url: full } => {
            Ok(Arc::new(PostgresStore::open(full, &url.to_string()).await?))
        }
    }
}

/// Opens a store and applies its migrations.
pub async fn open_migrated(url: &StoreUrl) -> StoreResult<SharedStore> {
    let store = open(url).await?;
    store.migrate().await?;
    Ok(store)
}

/// The delay before a failed attempt is retried: 1s, 2s, 4s ... capped at 10 minutes.
pub fn retry_backoff(attempt: i32) -> Duration {
    let exponent = attempt.clamp(1, 20) as u32 - 1;
    Duration::from_secs((1u64 << exponent).min(600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(retry_backoff(1), Duration::from_secs(1));
        assert_eq!(retry_backoff(2), Duration::from_secs(2));
        assert_eq!(retry_backoff(4), Duration::from_secs(8));
        assert_eq!(retry_backoff(40), Duration::from_secs(600));
        assert_eq!(retry_backoff(0), Duration::from_secs(1));
    }
}
