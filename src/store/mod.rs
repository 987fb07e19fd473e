//! The store contract (SPEC §1-§3): every rule about jobs, leases and workers is a method of [`Store`].
//!
//! Backends implement it with atomic, fenced statements; nothing outside `store/` writes SQL.

mod control;
mod journey;
mod postgres;
// Public for the pruner and `handover prune`, not part of the embedding surface.
#[doc(hidden)]
pub mod prune;
mod rolling;
mod sqlite;
mod url;

pub use self::journey::journey;

pub use self::postgres::PostgresStore;
pub use self::sqlite::SqliteStore;
pub use self::url::StoreUrl;

pub use crate::model::{
    CancelOutcome, ClaimedJob, CompletionRecord, DrainRequest, FailOutcome, HeartbeatReport, Job,
    JobEvent, JobEventKind, JobId, JobStatus, Lease, NewJob, PhaseSpan, ReleaseReason,
    RetryOutcome, ShutdownRecord, WorkerRegistration, WorkerRow, DEFAULT_MAX_ATTEMPTS,
};
pub use crate::model::{DrainCost, DrainQueued, QueuedDrain};
pub use crate::model::{PruneReport, PrunedTable, Retention};

use crate::model::Phase;
use async_trait::async_trait;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A store shared by every part of a worker.
pub type SharedStore = Arc<dyn Store>;

/// Something a store pushes to workers as it happens (PostgreSQL LISTEN/NOTIFY).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreEvent {
    /// Jobs became claimable (submitted, handed back or rescued).
    JobsAvailable,
    /// A drain request was written for this worker id.
    DrainRequested {
        /// The worker asked to drain.
        worker_id: String,
    },
    /// An operator cancelled a running job of this worker id.
    CancelRequested {
        /// The worker running the cancelled job.
        worker_id: String,
    },
    /// The push connection was re-established; events may have been missed meanwhile.
    Reconnected,
}

/// Pushed store events, and the task that listens for them: the caller runs `listener` (under
/// its supervisor); it ends when the subscription's stop token is cancelled.
pub struct Subscription {
    /// The events, as they arrive.
    pub events: mpsc::UnboundedReceiver<StoreEvent>,
    /// The task that receives them; the caller runs it.
    pub listener: futures_util::future::BoxFuture<'static, ()>,
}

/// Filters for listing jobs.
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    /// Only jobs in this status.
    pub status: Option<JobStatus>,
    /// At most this many.
    pub limit: Option<i64>,
}

/// One page of jobs, newest first: at most `limit` jobs with an id below `before` (keyset
/// pagination: the next page starts below the last id shown, at the same cost however deep).
#[derive(Clone, Debug, Default)]
pub struct JobPageQuery {
    /// Only jobs in this status.
    pub status: Option<JobStatus>,
    /// Only jobs of this kind.
    pub kind: Option<String>,
    /// Only jobs with an id below this one.
    pub before: Option<JobId>,
    /// At most this many.
    pub limit: i64,
}

/// What went wrong with a store operation. Each variant says who can fix it: retrying
/// (`Unavailable`, `TimedOut`), the caller (`Invalid`, `NotFound`, `Conflict`), nobody but the
/// fence (`LeaseLost`), or an operator (`Corrupt`, `Broken`, `Database`, `Migrate`).
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// A fenced write found the job no longer held at this (owner, epoch).
    #[error("lease lost: job {job_id} is no longer held at epoch {epoch}")]
    LeaseLost {
        /// The job written for.
        job_id: JobId,
        /// The epoch the writer held.
        epoch: i64,
    },
    /// The store cannot be reached or cannot take writes now; the operation may be retried.
    #[error("store unreachable: {0}")]
    Unavailable(String),
    /// The store did not answer within the time the operation had.
    #[error("store timed out: {operation} took longer than {}", humantime::format_duration(*after))]
    TimedOut {
        /// What was being done.
        operation: &'static str,
        /// The time it had.
        after: Duration,
    },
    /// No such job or worker.
    #[error("{0}")]
    NotFound(String),
    /// The request contradicts the row's state (for example, a worker not live).
    #[error("{0}")]
    Conflict(String),
    /// The caller's input is wrong (the only store error an HTTP caller gets a 400 for).
    #[error("{0}")]
    Invalid(String),
    /// A stored row cannot be read back: an unknown wire name, or JSON that does not parse.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database refused a statement for a reason that is neither its health nor the input.
    #[error("store error: {0}")]
    Database(String),
    /// A schema migration failed.
    #[error("schema migration failed: {0}")]
    Migrate(String),
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
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(one_line(&err)),
            sqlx::Error::Database(ref db) => match classify(db.as_ref()) {
                DatabaseFault::Transient => StoreError::Unavailable(one_line(&err)),
                DatabaseFault::Broken => StoreError::Broken(one_line(&err)),
                DatabaseFault::Other => StoreError::Database(one_line(&err)),
            },
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
                StoreError::Corrupt(one_line(&err))
            }
            other => StoreError::Database(one_line(&other)),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        match err {
            sqlx::migrate::MigrateError::Execute(inner) => match StoreError::from(inner) {
                StoreError::Database(message) => StoreError::Migrate(message),
                other => other,
            },
            other => StoreError::Migrate(other.to_string()),
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
        matches!(
            self,
            StoreError::Unavailable(_) | StoreError::TimedOut { .. }
        )
    }

    /// Whether this error means the store is not usable by this worker (down, slow, full, corrupt
    /// or replaced), as opposed to a problem with one request.
    pub fn store_is_down(&self) -> bool {
        self.is_transient() || matches!(self, StoreError::Broken(_))
    }

    /// Runs `operation`, turning "no answer within `after`" into [`StoreError::TimedOut`].
    pub async fn within<T>(
        operation: &'static str,
        after: Duration,
        future: impl std::future::Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        tokio::time::timeout(after, future)
            .await
            .unwrap_or(Err(StoreError::TimedOut { operation, after }))
    }
}

/// The result of a store operation.
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
    /// Hands leased jobs back to `pending`, claimable again after `resume_after`, each with a
    /// `released` event naming `reason`; returns, per lease, whether it was still held.
    async fn release(
        &self,
        leases: &[Lease],
        resume_after: Duration,
        reason: ReleaseReason,
    ) -> StoreResult<Vec<bool>>;
    /// Returns jobs whose lease expired to `pending` (or `dead` when out of attempts, or
    /// `cancelled` when a cancel was requested), with a `rescued` event each, and marks workers
    /// whose heartbeat is older than their lease TTL as declared dead. Returns the job ids.
    async fn rescue_expired(&self) -> StoreResult<Vec<JobId>>;

    /// Cancels jobs: pending and failed ones at once; for running ones the request is recorded
    /// and their owner told (it stops the job and calls [`Store::finish_cancelled`]).
    async fn cancel(&self, ids: &[JobId]) -> StoreResult<Vec<CancelOutcome>>;
    /// The owner's fenced write that ends a cancelled attempt; false if the lease was lost.
    async fn finish_cancelled(&self, lease: &Lease) -> StoreResult<bool>;
    /// The running jobs of `owner` whose cancel was requested.
    async fn cancels_requested(&self, owner: &str) -> StoreResult<Vec<Lease>>;
    /// Sends `dead`, `failed` and `cancelled` jobs back to `pending` with their attempts reset,
    /// keeping the checkpoint unless `from_scratch`.
    async fn retry(&self, ids: &[JobId], from_scratch: bool) -> StoreResult<Vec<RetryOutcome>>;
    /// The events written for a job (hand-backs, rescues, failures, cancels, retries) and its
    /// completion audit rows, oldest first; [`journey`] makes the whole journey of them.
    async fn job_history(&self, id: JobId) -> StoreResult<(Vec<JobEvent>, Vec<CompletionRecord>)>;
    /// Every kind any worker of this store has announced.
    async fn served_kinds(&self) -> StoreResult<Vec<String>>;
    /// One page of jobs, newest first (see [`JobPageQuery`]).
    async fn page_jobs(&self, query: &JobPageQuery) -> StoreResult<Vec<Job>>;
    /// Whether a drain request waits for this worker (the heartbeat takes it); a read only.
    async fn drain_requested(&self, worker_id: &str) -> StoreResult<bool>;
    /// Jobs per kind and status for [`crate::model::QUEUE_STATUSES`], with the oldest runnable
    /// pending job's wait: what the queue metrics show.
    async fn queue_counts(&self) -> StoreResult<Vec<crate::model::QueueCount>>;

    /// One job, or None when no job has this id.
    async fn get_job(&self, id: JobId) -> StoreResult<Option<Job>>;
    /// Jobs matching `filter`, oldest first.
    async fn list_jobs(&self, filter: &JobFilter) -> StoreResult<Vec<Job>>;
    /// Counts jobs by status.
    async fn count_jobs(&self) -> StoreResult<Vec<(JobStatus, i64)>>;

    /// Adds (or replaces) this worker's row, `starting`, with the kinds it serves.
    async fn register_worker(&self, worker: &WorkerRegistration) -> StoreResult<()>;
    /// Clears a declared-dead mark for a worker that turned out to be alive (only while running).
    async fn revive_worker(&self, worker_id: &str) -> StoreResult<()>;
    /// Writes the worker's current phase into its row.
    async fn set_worker_phase(&self, worker_id: &str, phase: Phase) -> StoreResult<()>;
    /// Renews the worker row and the given leases together. Only these leases are renewed: a job
    /// the worker no longer holds (abandoned, or given up) must be left to expire and be rescued.
    /// Taking a drain request also moves the row to `draining`, so the rolling-drain budget
    /// counts the worker out from that very commit. `cost` is what a drain would cost now.
    async fn heartbeat(
        &self,
        worker_id: &str,
        held: &[Lease],
        lease_ttl: Duration,
        cost: DrainCost,
    ) -> StoreResult<HeartbeatReport>;
    /// Marks the worker stopped.
    async fn deregister_worker(&self, worker_id: &str) -> StoreResult<()>;
    /// Every worker row, live or not.
    async fn list_workers(&self) -> StoreResult<Vec<WorkerRow>>;
    /// Writes a drain request for a live worker, found by id or name.
    async fn request_drain(&self, worker: &str, request: &DrainRequest) -> StoreResult<WorkerRow>;

    /// Writes the record a shutdown leaves.
    async fn record_shutdown(&self, record: &ShutdownRecord) -> StoreResult<()>;
    /// The latest shutdown records, at most `limit`, newest first.
    async fn list_shutdowns(&self, limit: i64) -> StoreResult<Vec<ShutdownRecord>>;
    /// How many times each job was completed (the at-most-once audit; test and audit use).
    async fn completion_counts(&self) -> StoreResult<Vec<(JobId, i64)>>;

    /// Events pushed as they happen, until `stop` is cancelled; None where the backend has no push
    /// and workers poll (SQLite).
    async fn subscribe(&self, _stop: CancellationToken) -> StoreResult<Option<Subscription>> {
        Ok(None)
    }

    /// Asks these workers (ids) to drain with at most `max_draining` out at once, the budget
    /// checked in one serialized transaction: those within it are asked now, the rest wait as
    /// queued until [`Store::promote_drains`] finds room. Both backends implement the rolling-drain
    /// methods; a test double that does not refuses.
    async fn queue_drains(
        &self,
        _worker_ids: &[String],
        _request: &DrainRequest,
        _max_draining: u32,
    ) -> StoreResult<Vec<(String, DrainQueued)>> {
        Err(StoreError::Invalid(
            "this store has no rolling drains".into(),
        ))
    }
    /// Starts queued drain requests while their budget allows (run by every heartbeat and by a
    /// worker as it stops); returns the workers asked now. One read when nothing is queued.
    async fn promote_drains(&self) -> StoreResult<Vec<String>> {
        Ok(Vec::new())
    }
    /// Withdraws queued (not yet started) drain requests; returns the workers withdrawn.
    async fn cancel_queued_drains(&self, _worker_ids: &[String]) -> StoreResult<Vec<String>> {
        Ok(Vec::new())
    }
    /// The drain requests waiting for the budget, oldest first.
    async fn queued_drains(&self) -> StoreResult<Vec<QueuedDrain>> {
        Ok(Vec::new())
    }

    /// Takes the retention lock, which one pass at a time holds across every worker of this store;
    /// `None` while another pass holds it. The pass itself is [`prune::prune_pass`]. Both backends
    /// implement it; a store without retention (a test double) answers `None` and never prunes.
    async fn begin_prune<'a>(&'a self) -> StoreResult<Option<Box<dyn prune::PruneSession + 'a>>> {
        Ok(None)
    }
}

/// Seconds from an optional millisecond column.
pub(crate) fn ms_to_seconds(ms: Option<i64>) -> Option<f64> {
    ms.map(|ms| ms as f64 / 1000.0)
}

/// Milliseconds for a column, from a non-negative seconds figure.
pub(crate) fn seconds_to_ms(seconds: f64) -> i64 {
    (seconds.max(0.0) * 1000.0).round() as i64
}

/// A driver error as one line: the database's own message where there is one.
/// An event a job-control statement writes (`job_events`), as both backends bind it.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct NewEvent {
    pub job_id: JobId,
    pub event: JobEventKind,
    pub worker_id: Option<String>,
    pub lease_epoch: Option<i64>,
    pub detail: Value,
}

impl NewEvent {
    /// An event of an attempt: by its lease, keeping when the attempt was claimed.
    pub fn of_attempt(
        event: JobEventKind,
        lease: &Lease,
        claimed_at: Option<chrono::DateTime<chrono::Utc>>,
        mut detail: serde_json::Map<String, Value>,
    ) -> NewEvent {
        if let Some(at) = claimed_at {
            detail.insert("claimed_at".into(), Value::String(at.to_rfc3339()));
        }
        NewEvent {
            job_id: lease.job_id,
            event,
            worker_id: Some(lease.owner.clone()),
            lease_epoch: Some(lease.epoch),
            detail: Value::Object(detail),
        }
    }

    /// An operator's event on a job (no attempt).
    pub fn by_operator(event: JobEventKind, job_id: JobId, detail: Value) -> NewEvent {
        NewEvent {
            job_id,
            event,
            worker_id: None,
            lease_epoch: None,
            detail,
        }
    }
}

pub(crate) fn one_line(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Database(db) => db.message().to_string(),
        other => other.to_string().replace('\n', " "),
    }
}

/// Parses a wire name read back from the store (a bad one means a corrupt row).
pub(crate) fn parse_enum<T: std::str::FromStr<Err = String>>(text: &str) -> StoreResult<T> {
    text.parse().map_err(StoreError::Corrupt)
}

/// For a batch write: which of the `asked` job ids the store `applied` to, in the order asked.
pub(crate) fn applied_flags(asked: impl Iterator<Item = JobId>, applied: &[JobId]) -> Vec<bool> {
    asked.map(|id| applied.contains(&id)).collect()
}

/// Chooses the worker a drain request is for, among the rows whose id or name is `worker`:
/// exactly one live worker, or a clear error.
pub fn pick_drain_target<'a>(
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

/// The workers a rolling drain is for: each named one (by id or name, as [`pick_drain_target`]
/// decides), or with no names every live worker not already out. Duplicates are dropped.
pub fn drain_targets(rows: &[WorkerRow], names: &[String]) -> StoreResult<Vec<WorkerRow>> {
    let mut targets: Vec<WorkerRow> = Vec::new();
    if names.is_empty() {
        targets.extend(rows.iter().filter(|w| w.is_live() && !w.is_out()).cloned());
    }
    for name in names {
        let candidates: Vec<WorkerRow> = rows
            .iter()
            .filter(|w| w.id == *name || w.name == *name)
            .cloned()
            .collect();
        let target = pick_drain_target(name, &candidates)?;
        if !targets.iter().any(|t| t.id == target.id) {
            targets.push(target.clone());
        }
    }
    Ok(targets)
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
