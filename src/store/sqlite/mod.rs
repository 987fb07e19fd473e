//! The embedded SQLite store: WAL mode, one writer connection per process, fenced single-statement writes.
//!
//! Several processes may share one file: every write is one statement (or a transaction whose first
//! statement writes), so SQLite takes its write lock up front and `busy_timeout` orders the writers.
//! Hot statements pin their plans (`INDEXED BY`, a unary `+` to keep an index out): a claim walks the
//! runnable index in order and stops at its limit; a batch drives primary-key lookups.

use super::{
    applied_flags, one_line, CancelOutcome, ClaimedJob, CompletionRecord, DrainRequest,
    FailOutcome, HeartbeatReport, Job, JobEvent, JobEventKind, JobFilter, JobId, JobStatus, Lease,
    NewEvent, NewJob, ReleaseReason, RetryOutcome, ShutdownRecord, Store, StoreError, StoreResult,
    WorkerRegistration, WorkerRow,
};
use crate::model::{DrainCost, DrainQueued, QueuedDrain};
mod file;
mod rows;

use self::file::{DatabaseFile, WriteConn};
use self::rows::{duration_ms, opt_time, parse_json, shutdown_from_row, to_json_text};
use crate::model::Phase;
use async_trait::async_trait;
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Row, SqlitePool};
use std::path::Path;
use std::time::Duration;

/// The current time in Unix milliseconds, from SQLite's clock (stable within one statement).
macro_rules! now_ms {
    () => {
        "CAST(unixepoch('subsec') * 1000 AS INTEGER)"
    };
}

// After `now_ms!`, which it uses.
mod prune;

/// The schema's migrations. Migrations applied by a newer binary are tolerated, so an older
/// worker still starts during a rolling upgrade (migrations are only ever additive).
fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("./migrations/sqlite");
    migrator.set_ignore_missing(true);
    migrator
}

/// How long a writer waits for another process's write lock before reporting the store busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Rows per INSERT statement when submitting (SQLite allows 32766 bound parameters).
const SUBMIT_ROWS_PER_STATEMENT: usize = 500;

/// The embedded SQLite backend: one file, shared by every process that opens it (WAL).
pub struct SqliteStore {
    /// One connection: this process's writes queue here instead of spinning on SQLite's lock.
    /// Borrowed through [`SqliteStore::write`] only, so a failed write never reuses it.
    writer: SqlitePool,
    /// Readers see a consistent WAL snapshot without blocking the writer.
    reader: SqlitePool,
    /// The file the pools opened, to notice it deleted or replaced underneath them.
    file: DatabaseFile,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let cannot_open = |err: sqlx::Error| {
            StoreError::Unavailable(format!(
                "cannot open SQLite store {}: {} (does the directory exist and is it writable?)",
                path.display(),
                one_line(&err)
            ))
        };
        let writer = connect_retrying_while_locked(|| {
            SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(BUSY_TIMEOUT * 2)
                .connect_with(options.clone())
        })
        .await
        .map_err(cannot_open)?;
        let reader = connect_retrying_while_locked(|| {
            SqlitePoolOptions::new()
                .max_connections(4)
                .acquire_timeout(BUSY_TIMEOUT)
                .connect_with(options.clone().read_only(true))
        })
        .await
        .map_err(cannot_open)?;
        let file = DatabaseFile::open(path).map_err(|err| {
            StoreError::Unavailable(format!(
                "cannot open SQLite store {}: {err}",
                path.display()
            ))
        })?;
        Ok(SqliteStore {
            writer,
            reader,
            file,
        })
    }

    /// Borrows the writer connection for one write; refused once the file is known to be lost.
    async fn write(&self) -> StoreResult<WriteConn> {
        if let Some(why) = self.file.lost() {
            return Err(StoreError::Broken(why));
        }
        Ok(WriteConn {
            conn: self.writer.acquire().await?,
            finished: false,
        })
    }
}

/// The columns a job row is read with. Never `SELECT *`: a statement prepared on a connection
/// whose schema is older than another process's migration would describe fewer columns than it
/// then returns; with named columns SQLite notices the change and prepares it again.
macro_rules! job_columns {
    () => {
        "id, kind, payload, status, priority, attempts, max_attempts, run_after, owner, lease_epoch, \
         lease_expires_at, checkpoint, result, error, created_at, updated_at, claimed_at, cancel_requested"
    };
}

/// The columns a worker row is read with (see `job_columns!`).
macro_rules! worker_columns {
    () => {
        "id, name, version, phase, listen_addr, concurrency, lease_ttl_ms, started_at, heartbeat_at, \
         in_flight, drain_mode, drain_reason, drain_requested_by, drain_requested_at, \
         declared_dead_at, stopped_at, kinds, drain_eta_ms, work_at_risk_ms"
    };
}

mod control;

/// Opens a pool, trying again a few times while the file is locked: two processes opening a new
/// file at once both switch it to WAL, and SQLite answers the loser "database is locked" at once
/// rather than waiting out the busy timeout.
async fn connect_retrying_while_locked<F, Fut>(connect: F) -> Result<SqlitePool, sqlx::Error>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<SqlitePool, sqlx::Error>>,
{
    let mut attempt = 0u32;
    loop {
        match connect().await {
            Err(sqlx::Error::Database(err))
                if attempt < 5 && err.message().contains("database is locked") =>
            {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
            }
            other => return other,
        }
    }
}

mod reads;
// After the column macros, which they use.
mod fleet;
mod workers;

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> StoreResult<()> {
        // Two processes starting on a fresh file may race to create the schema; the loser's
        // transaction fails and a second pass finds the migration applied.
        let mut attempt = 0;
        loop {
            let mut w = self.write().await?;
            let ran = migrator().run_direct(&mut *w.conn).await;
            if ran.is_ok() {
                w.finish();
            }
            match ran {
                Ok(()) => return Ok(()),
                Err(_) if attempt < 3 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                }
                Err(err) => return Err(err.into()),
            }
        }
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn submit(&self, jobs: &[NewJob]) -> StoreResult<Vec<JobId>> {
        // Submitted ids are acknowledged to a caller: never into a file that is gone.
        self.file.check()?;
        let mut w = self.write().await?;
        let mut tx = w.begin().await?;
        let mut ids = Vec::with_capacity(jobs.len());
        for chunk in jobs.chunks(SUBMIT_ROWS_PER_STATEMENT) {
            let mut sql = String::from(
                "INSERT INTO jobs (kind, payload, priority, max_attempts, run_after, created_at, updated_at) VALUES ",
            );
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push(',');
                }
                sql.push_str(concat!(
                    "(?, ?, ?, ?, ",
                    now_ms!(),
                    ", ",
                    now_ms!(),
                    ", ",
                    now_ms!(),
                    ")"
                ));
            }
            sql.push_str(" RETURNING id");
            let mut query = sqlx::query_scalar::<_, i64>(&sql);
            for job in chunk {
                query = query
                    .bind(&job.kind)
                    .bind(to_json_text(&job.payload)?)
                    .bind(job.priority)
                    .bind(job.max_attempts);
            }
            let mut chunk_ids = query.fetch_all(&mut *tx).await?;
            chunk_ids.sort_unstable();
            ids.extend(chunk_ids);
        }
        tx.commit().await?;
        w.finish();
        Ok(ids)
    }

    async fn claim(
        &self,
        owner: &str,
        kinds: &[String],
        limit: usize,
        lease_ttl: Duration,
    ) -> StoreResult<Vec<ClaimedJob>> {
        if limit == 0 || kinds.is_empty() {
            return Ok(Vec::new());
        }
        const CLAIM: &str = concat!(
            "UPDATE jobs SET status = 'running', owner = ?1, lease_epoch = lease_epoch + 1, ",
            "lease_expires_at = ",
            now_ms!(),
            " + ?2, attempts = attempts + 1, updated_at = ",
            now_ms!(),
            ", claimed_at = ",
            now_ms!(),
            " WHERE id IN (SELECT id FROM jobs INDEXED BY jobs_runnable WHERE status IN ('pending', 'failed') AND run_after <= ",
            now_ms!(),
            " AND kind IN (SELECT value FROM json_each(?3)) ORDER BY priority DESC, run_after, id LIMIT ?4) ",
            "RETURNING id, kind, payload, attempts, max_attempts, lease_epoch, checkpoint"
        );
        let mut w = self.write().await?;
        let rows = sqlx::query(CLAIM)
            .bind(owner)
            .bind(duration_ms(lease_ttl))
            .bind(to_json_text(&kinds)?)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&mut *w)
            .await?;
        w.finish();
        rows.iter()
            .map(|row| {
                Ok(ClaimedJob {
                    lease: Lease {
                        job_id: row.try_get("id")?,
                        owner: owner.to_string(),
                        epoch: row.try_get("lease_epoch")?,
                    },
                    kind: row.try_get("kind")?,
                    payload: parse_json(Some(row.try_get("payload")?))?.unwrap_or(Value::Null),
                    attempt: row.try_get("attempts")?,
                    max_attempts: row.try_get("max_attempts")?,
                    checkpoint: parse_json(row.try_get("checkpoint")?)?,
                })
            })
            .collect()
    }

    async fn checkpoint(&self, lease: &Lease, checkpoint: &Value) -> StoreResult<()> {
        const CHECKPOINT: &str = concat!(
            "UPDATE jobs SET checkpoint = ?4, updated_at = ",
            now_ms!(),
            " WHERE id = ?1 AND owner = ?2 AND lease_epoch = ?3 AND status = 'running'"
        );
        let mut w = self.write().await?;
        let done = sqlx::query(CHECKPOINT)
            .bind(lease.job_id)
            .bind(&lease.owner)
            .bind(lease.epoch)
            .bind(to_json_text(checkpoint)?)
            .execute(&mut *w)
            .await?;
        w.finish();
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StoreError::LeaseLost {
                job_id: lease.job_id,
                epoch: lease.epoch,
            })
        }
    }

    async fn complete(&self, items: &[(Lease, Value)]) -> StoreResult<Vec<bool>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        const COMPLETE: &str = concat!(
            "UPDATE jobs SET status = 'completed', result = b.value -> '$.result', error = NULL, ",
            "lease_expires_at = NULL, updated_at = ",
            now_ms!(),
            " FROM (SELECT value FROM json_each(?1)) AS b ",
            "WHERE jobs.id = b.value ->> '$.job_id' AND jobs.owner = b.value ->> '$.owner' ",
            "AND jobs.lease_epoch = b.value ->> '$.epoch' AND +jobs.status = 'running' RETURNING jobs.id"
        );
        let batch: Vec<Value> = items
            .iter()
            .map(|(lease, result)| {
                serde_json::json!({
                    "job_id": lease.job_id, "owner": lease.owner, "epoch": lease.epoch, "result": result
                })
            })
            .collect();
        let mut w = self.write().await?;
        let applied: Vec<JobId> = sqlx::query_scalar(COMPLETE)
            .bind(to_json_text(&batch)?)
            .fetch_all(&mut *w)
            .await?;
        w.finish();
        Ok(applied_flags(
            items.iter().map(|(lease, _)| lease.job_id),
            &applied,
        ))
    }

    async fn fail(
        &self,
        lease: &Lease,
        error: &str,
        backoff: Duration,
    ) -> StoreResult<FailOutcome> {
        const FAIL: &str = concat!(
            "UPDATE jobs SET status = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'failed' END, ",
            "owner = CASE WHEN attempts >= max_attempts THEN owner ELSE NULL END, ",
            "error = ?4, lease_expires_at = NULL, run_after = ",
            now_ms!(),
            " + ?5, updated_at = ",
            now_ms!(),
            " WHERE id = ?1 AND owner = ?2 AND lease_epoch = ?3 AND status = 'running' RETURNING status, claimed_at"
        );
        let mut w = self.write().await?;
        let mut tx = w.begin().await?;
        let row: Option<(String, Option<i64>)> = sqlx::query_as(FAIL)
            .bind(lease.job_id)
            .bind(&lease.owner)
            .bind(lease.epoch)
            .bind(error)
            .bind(duration_ms(backoff))
            .fetch_optional(&mut *tx)
            .await?;
        if let Some((status, claimed_at)) = &row {
            let detail = serde_json::json!({"error": error, "dead": status == "dead"});
            let event = NewEvent::of_attempt(
                JobEventKind::Failed,
                lease,
                opt_time(*claimed_at),
                detail.as_object().cloned().unwrap_or_default(),
            );
            control::insert_events(&mut tx, &[event]).await?;
        }
        tx.commit().await?;
        w.finish();
        let status = row.map(|(status, _)| status);
        match status.as_deref() {
            Some("dead") => Ok(FailOutcome::Dead),
            Some(_) => Ok(FailOutcome::Retry),
            None => Err(StoreError::LeaseLost {
                job_id: lease.job_id,
                epoch: lease.epoch,
            }),
        }
    }

    async fn release(
        &self,
        leases: &[Lease],
        resume_after: Duration,
        reason: ReleaseReason,
    ) -> StoreResult<Vec<bool>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        const RELEASE: &str = concat!(
            "UPDATE jobs SET status = 'pending', owner = NULL, lease_expires_at = NULL, ",
            "attempts = MAX(attempts - 1, 0), run_after = ",
            now_ms!(),
            " + ?2, updated_at = ",
            now_ms!(),
            " FROM (SELECT value FROM json_each(?1)) AS b ",
            "WHERE jobs.id = b.value ->> '$.job_id' AND jobs.owner = b.value ->> '$.owner' ",
            "AND jobs.lease_epoch = b.value ->> '$.epoch' AND +jobs.status = 'running' ",
            "RETURNING jobs.id, jobs.checkpoint, jobs.claimed_at"
        );
        let mut w = self.write().await?;
        let mut tx = w.begin().await?;
        let rows: Vec<(JobId, Option<String>, Option<i64>)> = sqlx::query_as(RELEASE)
            .bind(to_json_text(&leases)?)
            .bind(duration_ms(resume_after))
            .fetch_all(&mut *tx)
            .await?;
        let by_id: std::collections::HashMap<JobId, &Lease> =
            leases.iter().map(|lease| (lease.job_id, lease)).collect();
        let mut events = Vec::with_capacity(rows.len());
        let mut applied = Vec::with_capacity(rows.len());
        for (id, checkpoint, claimed_at) in rows {
            applied.push(id);
            let Some(lease) = by_id.get(&id) else {
                continue;
            };
            let mut detail = serde_json::Map::new();
            detail.insert("reason".into(), Value::from(reason.as_str()));
            detail.insert(
                "checkpoint".into(),
                parse_json(checkpoint)?.unwrap_or(Value::Null),
            );
            events.push(NewEvent::of_attempt(
                JobEventKind::Released,
                lease,
                opt_time(claimed_at),
                detail,
            ));
        }
        control::insert_events(&mut tx, &events).await?;
        tx.commit().await?;
        w.finish();
        Ok(applied_flags(
            leases.iter().map(|lease| lease.job_id),
            &applied,
        ))
    }

    async fn rescue_expired(&self) -> StoreResult<Vec<JobId>> {
        // The events first (a write, so the transaction takes the write lock up front), with the
        // owner and claim time the rescue is about to clear; then the jobs they name.
        const RESCUED_EVENTS: &str = concat!(
            "INSERT INTO job_events (job_id, event, at, worker_id, lease_epoch, detail) ",
            "SELECT id, 'rescued', ",
            now_ms!(),
            ", owner, lease_epoch, json_object('claimed_at', ",
            "strftime('%Y-%m-%dT%H:%M:%fZ', claimed_at / 1000.0, 'unixepoch'), 'outcome', ",
            "CASE WHEN cancel_requested = 1 THEN 'cancelled' WHEN attempts >= max_attempts THEN 'dead' ELSE 'pending' END) ",
            "FROM jobs INDEXED BY jobs_running_lease WHERE status = 'running' AND lease_expires_at < ",
            now_ms!(),
            " RETURNING job_id"
        );
        // A job whose cancel was requested ends `cancelled`: its owner is gone, so nobody else
        // would stop it.
        const RESCUE: &str = concat!(
            "UPDATE jobs SET status = CASE WHEN cancel_requested = 1 THEN 'cancelled' ",
            "WHEN attempts >= max_attempts THEN 'dead' ELSE 'pending' END, ",
            "error = 'lease expired while held by worker ' || owner || ' at epoch ' || lease_epoch, ",
            "owner = CASE WHEN cancel_requested = 1 OR attempts >= max_attempts THEN owner ELSE NULL END, ",
            "lease_expires_at = NULL, run_after = ",
            now_ms!(),
            ", updated_at = ",
            now_ms!(),
            " WHERE id IN (SELECT value FROM json_each(?1)) AND status = 'running' RETURNING id"
        );
        const DECLARE_DEAD: &str = concat!(
            "UPDATE workers SET declared_dead_at = ",
            now_ms!(),
            " WHERE declared_dead_at IS NULL AND phase <> 'stopped' AND heartbeat_at + lease_ttl_ms < ",
            now_ms!()
        );
        let mut w = self.write().await?;
        let mut tx = w.begin().await?;
        let expired: Vec<JobId> = sqlx::query_scalar(RESCUED_EVENTS)
            .fetch_all(&mut *tx)
            .await?;
        let mut rescued: Vec<JobId> = if expired.is_empty() {
            Vec::new()
        } else {
            sqlx::query_scalar(RESCUE)
                .bind(to_json_text(&expired)?)
                .fetch_all(&mut *tx)
                .await?
        };
        sqlx::query(DECLARE_DEAD).execute(&mut *tx).await?;
        tx.commit().await?;
        w.finish();
        rescued.sort_unstable();
        Ok(rescued)
    }

    async fn cancel(&self, ids: &[JobId]) -> StoreResult<Vec<CancelOutcome>> {
        self.cancel_jobs(ids).await
    }

    async fn finish_cancelled(&self, lease: &Lease) -> StoreResult<bool> {
        self.write_cancelled(lease).await
    }

    async fn cancels_requested(&self, owner: &str) -> StoreResult<Vec<Lease>> {
        self.requested_cancels(owner).await
    }

    async fn retry(&self, ids: &[JobId], from_scratch: bool) -> StoreResult<Vec<RetryOutcome>> {
        self.retry_jobs(ids, from_scratch).await
    }

    async fn job_history(&self, id: JobId) -> StoreResult<(Vec<JobEvent>, Vec<CompletionRecord>)> {
        self.history(id).await
    }

    async fn served_kinds(&self) -> StoreResult<Vec<String>> {
        self.announced_kinds().await
    }

    async fn queue_counts(&self) -> StoreResult<Vec<crate::model::QueueCount>> {
        self.count_queue().await
    }

    async fn drain_requested(&self, worker_id: &str) -> StoreResult<bool> {
        self.has_drain_request(worker_id).await
    }

    async fn page_jobs(&self, query: &super::JobPageQuery) -> StoreResult<Vec<Job>> {
        self.jobs_page(query).await
    }

    async fn get_job(&self, id: JobId) -> StoreResult<Option<Job>> {
        self.job_by_id(id).await
    }

    async fn list_jobs(&self, filter: &JobFilter) -> StoreResult<Vec<Job>> {
        self.jobs_listed(filter).await
    }

    async fn count_jobs(&self) -> StoreResult<Vec<(JobStatus, i64)>> {
        self.counts_by_status().await
    }

    async fn register_worker(&self, worker: &WorkerRegistration) -> StoreResult<()> {
        self.register_row(worker).await
    }

    async fn revive_worker(&self, worker_id: &str) -> StoreResult<()> {
        self.revive_row(worker_id).await
    }

    async fn set_worker_phase(&self, worker_id: &str, phase: Phase) -> StoreResult<()> {
        self.set_phase_row(worker_id, phase).await
    }

    async fn heartbeat(
        &self,
        worker_id: &str,
        held: &[Lease],
        lease_ttl: Duration,
        cost: DrainCost,
    ) -> StoreResult<HeartbeatReport> {
        self.beat(worker_id, held, lease_ttl, cost).await
    }

    async fn deregister_worker(&self, worker_id: &str) -> StoreResult<()> {
        self.deregister_row(worker_id).await
    }

    async fn list_workers(&self) -> StoreResult<Vec<WorkerRow>> {
        self.worker_rows().await
    }

    async fn request_drain(&self, worker: &str, request: &DrainRequest) -> StoreResult<WorkerRow> {
        self.write_drain_request(worker, request).await
    }

    async fn queue_drains(
        &self,
        worker_ids: &[String],
        request: &DrainRequest,
        max_draining: u32,
    ) -> StoreResult<Vec<(String, DrainQueued)>> {
        self.queue_drains_now(worker_ids, request, max_draining)
            .await
    }

    async fn promote_drains(&self) -> StoreResult<Vec<String>> {
        self.promote_queued_drains().await
    }

    async fn cancel_queued_drains(&self, worker_ids: &[String]) -> StoreResult<Vec<String>> {
        self.withdraw_queued_drains(worker_ids).await
    }

    async fn queued_drains(&self) -> StoreResult<Vec<QueuedDrain>> {
        self.read_queued_drains().await
    }

    async fn record_shutdown(&self, record: &ShutdownRecord) -> StoreResult<()> {
        let mut w = self.write().await?;
        sqlx::query(
            "INSERT INTO shutdowns (worker_id, worker_name, trigger, mode, outcome, requested_by, reason, \
             started_at, duration_ms, phases, jobs_released, forced_jobs) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )
        .bind(&record.worker_id)
        .bind(&record.worker_name)
        .bind(record.trigger.as_str())
        .bind(record.mode.as_str())
        .bind(record.outcome.as_str())
        .bind(&record.requested_by)
        .bind(&record.reason)
        .bind(record.started_at.timestamp_millis())
        .bind(record.duration_ms)
        .bind(to_json_text(&record.phases)?)
        .bind(record.jobs_released)
        .bind(to_json_text(&record.forced_jobs)?)
        .execute(&mut *w)
        .await?;
        w.finish();
        Ok(())
    }

    async fn list_shutdowns(&self, limit: i64) -> StoreResult<Vec<ShutdownRecord>> {
        let rows =
            sqlx::query("SELECT * FROM shutdowns ORDER BY started_at DESC, id DESC LIMIT ?1")
                .bind(limit)
                .fetch_all(&self.reader)
                .await?;
        rows.iter().map(shutdown_from_row).collect()
    }

    async fn completion_counts(&self) -> StoreResult<Vec<(JobId, i64)>> {
        Ok(sqlx::query_as(
            "SELECT job_id, COUNT(*) FROM job_completions GROUP BY job_id ORDER BY job_id",
        )
        .fetch_all(&self.reader)
        .await?)
    }

    async fn begin_prune<'a>(
        &'a self,
    ) -> StoreResult<Option<Box<dyn super::prune::PruneSession + 'a>>> {
        Ok(prune::begin(self)
            .await?
            .map(|session| Box::new(session) as Box<dyn super::prune::PruneSession + 'a>))
    }
}
