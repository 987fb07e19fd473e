//! The PostgreSQL fleet store: claims with `FOR UPDATE SKIP LOCKED` for up to the free slots in one
//! round trip, every job write fenced by `(owner, lease_epoch)`, time from the database's `now()`,
//! and LISTEN/NOTIFY to wake idle workers and deliver drain requests at once.
//!
//! A queue table's statistics are stale by nature (a burst of submissions arrives, then claims
//! drain it), so the hot statements leave the planner no bad choice: they run on connections that
//! rule out the plans whose cost grows with the table (`HOT_CONNECTION_SETTINGS`), and batched writes
//! by id fence on `lease_expires_at IS NOT NULL` where one would write `status = 'running'` (the
//! same thing, by the table's CHECK constraint) so that no partial index matches: the plan is a
//! primary-key probe per row rather than a walk of every running job (and of every dead index
//! entry since the last vacuum), which is what a planner believing few jobs running picked.

use super::{
    applied_flags, one_line, CancelOutcome, ClaimedJob, CompletionRecord, DrainRequest,
    FailOutcome, HeartbeatReport, Job, JobEvent, JobEventKind, JobFilter, JobId, JobStatus, Lease,
    NewEvent, NewJob, ReleaseReason, RetryOutcome, ShutdownRecord, Store, StoreError, StoreEvent,
    StoreResult, Subscription, WorkerRegistration, WorkerRow,
};
mod control;
mod fleet;
mod prune;
mod rows;

use self::rows::{lease_arrays, millis, shutdown_from_row};
use crate::model::{DrainCost, DrainQueued, Phase, QueuedDrain};
use async_trait::async_trait;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::Row;
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The schema's migrations. Migrations applied by a newer binary are tolerated, so an older
/// worker still starts during a rolling upgrade (migrations are only ever additive).
fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("./migrations/postgres");
    migrator.set_ignore_missing(true);
    migrator
}

/// Connections per worker for everything but the hot statements (LISTEN holds one of them).
const POOL_CONNECTIONS: u32 = 5;
/// Connections per worker for the hot statements: the claim loop, the completion writer and the
/// heartbeat each use one at a time.
const HOT_CONNECTIONS: u32 = 3;
/// How the hot statements' connections are set up.
/// - `handover.completion_audit = statement`: the completion statement writes its own audit rows,
///   and the audit trigger (kept for older workers and manual updates) leaves them to it.
/// - No sorts, sequential or bitmap scans. A queue table's statistics are stale by nature (a burst
///   of submissions arrives, then the claims drain it), and the planner, believing few jobs
///   runnable or running, picked plans whose cost grows with the table: a claim that sorted every
///   runnable job (seen: 83,000 rows sorted on disk to hand out 4), batched writes that scanned the
///   table or every running job for each row. Without those, the plans left are the ones that
///   scale: the claim walks `jobs_runnable` in claim order and stops at the limit; a batched write
///   probes the primary key once per row.
const HOT_CONNECTION_SETTINGS: [(&str, &str); 4] = [
    ("handover.completion_audit", "statement"),
    ("enable_sort", "off"),
    ("enable_seqscan", "off"),
    ("enable_bitmapscan", "off"),
];
/// How long an operation waits for a pooled connection before the store counts as unreachable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// Rows per INSERT statement when submitting.
const SUBMIT_ROWS_PER_STATEMENT: usize = 5000;

/// The columns a job row is read with. Never `SELECT *`: a statement a connection prepared before
/// another process's migration added columns fails with "cached plan must not change result type"
/// (and, on SQLite, misreads the row).
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
     in_flight, drain_mode, drain_reason, drain_requested_by, drain_requested_at, declared_dead_at, \
     stopped_at, kinds, drain_eta_ms, work_at_risk_ms"
    };
}

// After the column macros, which it uses.
mod workers;

/// Claims up to $4 runnable jobs of kinds $3 for owner $1 with a lease of $2 ms (claim connection).
const CLAIM_SQL: &str = "WITH picked AS ( \
        SELECT id FROM jobs \
        WHERE status IN ('pending', 'failed') AND run_after <= now() AND kind = ANY($3) \
        ORDER BY priority DESC, run_after, id LIMIT $4 FOR UPDATE SKIP LOCKED) \
    UPDATE jobs j SET status = 'running', owner = $1, lease_epoch = j.lease_epoch + 1, \
        lease_expires_at = now() + $2 * interval '1 millisecond', \
        attempts = j.attempts + 1, updated_at = now(), claimed_at = now() \
    FROM picked WHERE j.id = picked.id \
    RETURNING j.id, j.kind, j.payload, j.attempts, j.max_attempts, j.lease_epoch, j.checkpoint";

/// Completes a batch: ids, owners, epochs and results as parallel arrays; writes the audit rows.
const COMPLETE_SQL: &str = "WITH done AS ( \
        UPDATE jobs j SET status = 'completed', result = b.result::jsonb, error = NULL, \
            lease_expires_at = NULL, updated_at = now() \
        FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::text[]) AS b(id, owner, epoch, result) \
        WHERE j.id = b.id AND j.owner = b.owner AND j.lease_epoch = b.epoch AND j.lease_expires_at IS NOT NULL \
        RETURNING j.id, j.lease_epoch, j.owner, j.updated_at, j.claimed_at), \
    audit AS ( \
        INSERT INTO job_completions (job_id, lease_epoch, worker_id, completed_at, claimed_at) \
        SELECT id, lease_epoch, owner, updated_at, claimed_at FROM done) \
    SELECT id FROM done";

/// Renews the given (id, epoch) leases of worker $1 by $2 ms.
const RENEW_SQL: &str = "UPDATE jobs j SET lease_expires_at = now() + $2 * interval '1 millisecond' \
    FROM UNNEST($3::bigint[], $4::bigint[]) AS b(id, epoch) \
    WHERE j.id = b.id AND j.lease_epoch = b.epoch AND j.owner = $1 AND j.lease_expires_at IS NOT NULL \
    RETURNING j.id, j.lease_epoch";

/// The PostgreSQL backend, with LISTEN/NOTIFY for pushed events.
pub struct PostgresStore {
    pool: PgPool,
    /// The hot statements' connections (claim, completion, hand-back, renewal), set up with
    /// [`HOT_CONNECTION_SETTINGS`].
    hot_pool: PgPool,
    /// NOTIFY channel, per schema so that separate deployments in one database do not wake each other.
    channel: String,
}

impl PostgresStore {
    /// Connects (lazily retrying is the pool's job); fails fast with a clear error when unreachable.
    pub async fn open(url: &str, display: &str) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Invalid(format!("invalid PostgreSQL URL {display}: {e}")))?;
        let unreachable = |e: sqlx::Error| {
            StoreError::Unavailable(format!(
                "cannot connect to PostgreSQL store {display}: {}",
                one_line(&e)
            ))
        };
        let pool = PgPoolOptions::new()
            .max_connections(POOL_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await
            .map_err(unreachable)?;
        let hot_pool = PgPoolOptions::new()
            .max_connections(HOT_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(|conn, _| Box::pin(check_hot_settings(conn)))
            .connect_lazy_with(options.options(HOT_CONNECTION_SETTINGS));
        // Connect one now, so that a connection that loses its settings is an error at start.
        drop(hot_pool.acquire().await.map_err(unreachable)?);
        // The schema the jobs table lives in (before the first migration: the one it will be
        // created in), whose channel the insert trigger notifies.
        let schema: String = sqlx::query_scalar(
            "SELECT COALESCE((SELECT n.nspname::text FROM pg_class c \
                JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass('jobs')), \
                current_schema())",
        )
        .fetch_one(&pool)
        .await?;
        Ok(PostgresStore {
            pool,
            hot_pool,
            channel: notify_channel(&schema),
        })
    }
}

mod reads;

/// PostgreSQL's longest identifier, in bytes (NAMEDATALEN - 1): a NOTIFY channel longer than this
/// is refused by `pg_notify`, and LISTEN would silently truncate it.
const MAX_CHANNEL_BYTES: usize = 63;

/// The NOTIFY channel of a schema: `handover_SCHEMA`, or, when that is too long for PostgreSQL,
/// as much of the schema as fits followed by a hash of the whole name, so that two long schema
/// names never share a channel.
fn notify_channel(schema: &str) -> String {
    let plain = format!("handover_{schema}");
    if plain.len() <= MAX_CHANNEL_BYTES {
        return plain;
    }
    use sha2::Digest;
    let hash = hex::encode(&sha2::Sha256::digest(schema.as_bytes())[..8]);
    let room = MAX_CHANNEL_BYTES - "handover_".len() - 1 - hash.len();
    let mut cut = room;
    while !schema.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("handover_{}_{hash}", &schema[..cut])
}

/// Refuses a hot connection whose startup settings did not arrive (a connection pooler that drops
/// or ignores the `options` startup parameter): its plans would not be pinned and the audit
/// trigger would write a second audit row for each of its completions.
async fn check_hot_settings(conn: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    let (names, values): (Vec<&str>, Vec<&str>) = HOT_CONNECTION_SETTINGS.into_iter().unzip();
    let kept: bool = sqlx::query_scalar(
        "SELECT bool_and(current_setting(name, true) IS NOT DISTINCT FROM value) \
         FROM UNNEST($1::text[], $2::text[]) AS s(name, value)",
    )
    .bind(&names)
    .bind(&values)
    .fetch_one(&mut *conn)
    .await?;
    if kept {
        Ok(())
    } else {
        Err(sqlx::Error::Configuration(
            "the connection lost its startup settings (\"options\"); a connection pooler in \
             front of PostgreSQL must pass them through (PgBouncer: session pooling, and not \
             ignore_startup_parameters = options)"
                .into(),
        ))
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn migrate(&self) -> StoreResult<()> {
        // sqlx's PostgreSQL migrator holds an advisory lock while it runs, so many workers
        // starting together apply each migration once.
        Ok(migrator().run(&self.pool).await?)
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn submit(&self, jobs: &[NewJob]) -> StoreResult<Vec<JobId>> {
        let mut tx = self.pool.begin().await?;
        let mut ids = Vec::with_capacity(jobs.len());
        for chunk in jobs.chunks(SUBMIT_ROWS_PER_STATEMENT) {
            let kinds: Vec<&str> = chunk.iter().map(|j| j.kind.as_str()).collect();
            let payloads: Vec<String> = chunk.iter().map(|j| j.payload.to_string()).collect();
            let priorities: Vec<i32> = chunk.iter().map(|j| j.priority).collect();
            let max_attempts: Vec<i32> = chunk.iter().map(|j| j.max_attempts).collect();
            let mut chunk_ids: Vec<i64> = sqlx::query_scalar(
                "INSERT INTO jobs (kind, payload, priority, max_attempts) \
                 SELECT kind, payload::jsonb, priority, max_attempts \
                 FROM UNNEST($1::text[], $2::text[], $3::int[], $4::int[]) \
                 AS b(kind, payload, priority, max_attempts) RETURNING id",
            )
            .bind(&kinds)
            .bind(&payloads)
            .bind(&priorities)
            .bind(&max_attempts)
            .fetch_all(&mut *tx)
            .await?;
            chunk_ids.sort_unstable();
            ids.extend(chunk_ids);
        }
        // No NOTIFY here: the jobs table's statement trigger (migration 0006) sends it for every
        // INSERT, this one included, and PostgreSQL delivers one per transaction at commit.
        tx.commit().await?;
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
        // One statement in one round trip, committed before it returns (sqlx reads up to the
        // server's ReadyForQuery), so every lease is visible to the heartbeat before any claimed
        // job starts. See HOT_CONNECTION_SETTINGS for its plan.
        let rows = sqlx::query(CLAIM_SQL)
            .bind(owner)
            .bind(millis(lease_ttl))
            .bind(kinds)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.hot_pool)
            .await?;
        let mut claimed = rows
            .iter()
            .map(|row| {
                Ok(ClaimedJob {
                    lease: Lease {
                        job_id: row.try_get("id")?,
                        owner: owner.to_string(),
                        epoch: row.try_get("lease_epoch")?,
                    },
                    kind: row.try_get("kind")?,
                    payload: row.try_get("payload")?,
                    attempt: row.try_get("attempts")?,
                    max_attempts: row.try_get("max_attempts")?,
                    checkpoint: row.try_get("checkpoint")?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        claimed.sort_by_key(|job| job.lease.job_id);
        Ok(claimed)
    }

    async fn checkpoint(&self, lease: &Lease, checkpoint: &Value) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE jobs SET checkpoint = $4, updated_at = now() \
             WHERE id = $1 AND owner = $2 AND lease_epoch = $3 AND status = 'running'",
        )
        .bind(lease.job_id)
        .bind(&lease.owner)
        .bind(lease.epoch)
        .bind(checkpoint)
        .execute(&self.pool)
        .await?;
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
        let mut sorted: Vec<&(Lease, Value)> = items.iter().collect();
        sorted.sort_by_key(|(lease, _)| lease.job_id);
        let leases: Vec<&Lease> = sorted.iter().map(|(lease, _)| lease).collect();
        let (ids, owners, epochs) = lease_arrays(&leases);
        let results: Vec<String> = sorted
            .iter()
            .map(|(_, result)| result.to_string())
            .collect();
        // The audit rows (the at-most-once record) are written by this same statement; the
        // connection tells the audit trigger to leave them to it.
        let applied: Vec<JobId> = sqlx::query_scalar(COMPLETE_SQL)
            .bind(&ids)
            .bind(&owners)
            .bind(&epochs)
            .bind(&results)
            .fetch_all(&self.hot_pool)
            .await?;
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
        let mut tx = self.pool.begin().await?;
        let row: Option<(String, Option<chrono::DateTime<chrono::Utc>>)> = sqlx::query_as(
            "UPDATE jobs SET status = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'failed' END, \
                owner = CASE WHEN attempts >= max_attempts THEN owner ELSE NULL END, \
                error = $4, lease_expires_at = NULL, \
                run_after = now() + $5 * interval '1 millisecond', updated_at = now() \
             WHERE id = $1 AND owner = $2 AND lease_epoch = $3 AND status = 'running' \
             RETURNING status, claimed_at",
        )
        .bind(lease.job_id)
        .bind(&lease.owner)
        .bind(lease.epoch)
        .bind(error)
        .bind(millis(backoff))
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((status, claimed_at)) = &row {
            let detail = serde_json::json!({"error": error, "dead": status == "dead"});
            let event = NewEvent::of_attempt(
                JobEventKind::Failed,
                lease,
                *claimed_at,
                detail.as_object().cloned().unwrap_or_default(),
            );
            control::insert_events(&mut tx, &[event]).await?;
        }
        tx.commit().await?;
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
        let mut refs: Vec<&Lease> = leases.iter().collect();
        refs.sort_by_key(|lease| lease.job_id);
        let (ids, owners, epochs) = lease_arrays(&refs);
        let mut tx = self.hot_pool.begin().await?;
        let released = sqlx::query(
            "UPDATE jobs j SET status = 'pending', owner = NULL, lease_expires_at = NULL, \
                attempts = GREATEST(j.attempts - 1, 0), \
                run_after = now() + $4 * interval '1 millisecond', updated_at = now() \
             FROM UNNEST($1::bigint[], $2::text[], $3::bigint[]) AS b(id, owner, epoch) \
             WHERE j.id = b.id AND j.owner = b.owner AND j.lease_epoch = b.epoch AND j.lease_expires_at IS NOT NULL \
             RETURNING j.id, j.checkpoint, j.claimed_at",
        )
        .bind(&ids)
        .bind(&owners)
        .bind(&epochs)
        .bind(millis(resume_after))
        .fetch_all(&mut *tx)
        .await?;
        let by_id: std::collections::HashMap<JobId, &Lease> =
            leases.iter().map(|lease| (lease.job_id, lease)).collect();
        let mut events = Vec::with_capacity(released.len());
        let mut applied: Vec<JobId> = Vec::with_capacity(released.len());
        for row in &released {
            let id: JobId = row.try_get("id")?;
            applied.push(id);
            let Some(lease) = by_id.get(&id) else {
                continue;
            };
            let mut detail = serde_json::Map::new();
            detail.insert("reason".into(), Value::from(reason.as_str()));
            detail.insert(
                "checkpoint".into(),
                row.try_get::<Option<Value>, _>("checkpoint")?
                    .unwrap_or(Value::Null),
            );
            events.push(NewEvent::of_attempt(
                JobEventKind::Released,
                lease,
                row.try_get("claimed_at")?,
                detail,
            ));
        }
        control::insert_events(&mut tx, &events).await?;
        if !applied.is_empty() {
            sqlx::query("SELECT pg_notify($1, 'jobs')")
                .bind(&self.channel)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(applied_flags(
            leases.iter().map(|lease| lease.job_id),
            &applied,
        ))
    }

    async fn rescue_expired(&self) -> StoreResult<Vec<JobId>> {
        let mut tx = self.pool.begin().await?;
        // A job whose cancel was requested ends `cancelled`: its owner is gone, so nobody else
        // would stop it. Each rescue writes a `rescued` event with the owner it had.
        let mut rescued: Vec<JobId> = sqlx::query_scalar(
            "WITH expired AS ( \
                SELECT id, owner, claimed_at FROM jobs \
                WHERE status = 'running' AND lease_expires_at < now() FOR UPDATE SKIP LOCKED), \
             done AS ( \
                UPDATE jobs j SET status = CASE WHEN j.cancel_requested THEN 'cancelled' \
                        WHEN j.attempts >= j.max_attempts THEN 'dead' ELSE 'pending' END, \
                    error = 'lease expired while held by worker ' || j.owner || ' at epoch ' || j.lease_epoch, \
                    owner = CASE WHEN j.cancel_requested OR j.attempts >= j.max_attempts THEN j.owner ELSE NULL END, \
                    lease_expires_at = NULL, run_after = now(), updated_at = now() \
                FROM expired e WHERE j.id = e.id \
                RETURNING j.id, e.owner AS held_by, j.lease_epoch, e.claimed_at, j.status), \
             events AS ( \
                INSERT INTO job_events (job_id, event, worker_id, lease_epoch, detail) \
                SELECT id, 'rescued', held_by, lease_epoch, \
                    jsonb_build_object('claimed_at', claimed_at, 'outcome', status) FROM done) \
             SELECT id FROM done",
        )
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE workers SET declared_dead_at = now() \
             WHERE declared_dead_at IS NULL AND phase <> 'stopped' \
               AND heartbeat_at + lease_ttl_ms * interval '1 millisecond' < now()",
        )
        .execute(&mut *tx)
        .await?;
        if !rescued.is_empty() {
            sqlx::query("SELECT pg_notify($1, 'jobs')")
                .bind(&self.channel)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
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
        let phases =
            serde_json::to_value(&record.phases).map_err(|e| StoreError::Invalid(e.to_string()))?;
        sqlx::query(
            "INSERT INTO shutdowns (worker_id, worker_name, trigger, mode, outcome, requested_by, reason, \
             started_at, duration_ms, phases, jobs_released, forced_jobs) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&record.worker_id)
        .bind(&record.worker_name)
        .bind(record.trigger.as_str())
        .bind(record.mode.as_str())
        .bind(record.outcome.as_str())
        .bind(&record.requested_by)
        .bind(&record.reason)
        .bind(record.started_at)
        .bind(record.duration_ms)
        .bind(phases)
        .bind(record.jobs_released)
        .bind(serde_json::json!(record.forced_jobs))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_shutdowns(&self, limit: i64) -> StoreResult<Vec<ShutdownRecord>> {
        let rows =
            sqlx::query("SELECT * FROM shutdowns ORDER BY started_at DESC, id DESC LIMIT $1")
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(shutdown_from_row).collect()
    }

    async fn completion_counts(&self) -> StoreResult<Vec<(JobId, i64)>> {
        Ok(sqlx::query_as(
            "SELECT job_id, COUNT(*) FROM job_completions GROUP BY job_id ORDER BY job_id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    async fn subscribe(&self, stop: CancellationToken) -> StoreResult<Option<Subscription>> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(&self.channel).await?;
        let (events, receiver) = mpsc::unbounded_channel();
        let listen = async move {
            loop {
                let received = tokio::select! {
                    received = listener.try_recv() => received,
                    _ = stop.cancelled() => return,
                };
                let event = match received {
                    Ok(Some(notification)) => {
                        let payload = notification.payload();
                        if let Some(worker_id) = payload.strip_prefix("drain:") {
                            StoreEvent::DrainRequested {
                                worker_id: worker_id.to_string(),
                            }
                        } else if let Some(worker_id) = payload.strip_prefix("cancel:") {
                            StoreEvent::CancelRequested {
                                worker_id: worker_id.to_string(),
                            }
                        } else {
                            StoreEvent::JobsAvailable
                        }
                    }
                    // The connection dropped (and will be re-established by the next call):
                    // anything sent meanwhile is lost, so have everyone look again.
                    Ok(None) => StoreEvent::Reconnected,
                    Err(err) => {
                        tracing::debug!(%err, "LISTEN connection failed; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = stop.cancelled() => return,
                        }
                        continue;
                    }
                };
                if events.send(event).is_err() {
                    return; // the worker no longer listens
                }
            }
        };
        Ok(Some(Subscription {
            events: receiver,
            listener: Box::pin(listen),
        }))
    }
    async fn begin_prune<'a>(
        &'a self,
    ) -> StoreResult<Option<Box<dyn super::prune::PruneSession + 'a>>> {
        Ok(prune::begin(self)
            .await?
            .map(|session| Box::new(session) as Box<dyn super::prune::PruneSession + 'a>))
    }
}

#[cfg(test)]
mod tests;
