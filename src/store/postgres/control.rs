//! Job control on PostgreSQL: cancel (its owner told by NOTIFY), the owner's cancelled write,
//! retry, the events those and the hand-backs and failures write, and a job's recorded history.
//! Each change and its events commit together.

use super::PostgresStore;
use crate::model::{CancelOutcome, CompletionRecord, JobEvent, JobEventKind, RetryOutcome};
use crate::store::control::{cancel_outcomes, cancelled_events, retried_events, retry_outcomes};
use crate::store::{parse_enum, JobId, JobStatus, Lease, NewEvent, StoreResult};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::{PgConnection, Row};
use std::collections::{BTreeMap, BTreeSet};

/// Writes `events` (on the caller's transaction).
pub(super) async fn insert_events(conn: &mut PgConnection, events: &[NewEvent]) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO job_events (job_id, event, worker_id, lease_epoch, detail) \
         SELECT job_id, event, worker_id, lease_epoch, detail \
         FROM jsonb_to_recordset($1::jsonb) \
         AS e(job_id bigint, event text, worker_id text, lease_epoch bigint, detail jsonb)",
    )
    .bind(serde_json::to_string(events).unwrap_or_default())
    .execute(conn)
    .await?;
    Ok(())
}

/// The status of each of `ids` that exists.
async fn statuses(
    conn: &mut PgConnection,
    ids: &[JobId],
) -> StoreResult<BTreeMap<JobId, JobStatus>> {
    let rows: Vec<(JobId, String)> =
        sqlx::query_as("SELECT id, status FROM jobs WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(conn)
            .await?;
    rows.into_iter()
        .map(|(id, status)| Ok((id, parse_enum(&status)?)))
        .collect()
}

impl PostgresStore {
    pub(super) async fn cancel_jobs(&self, ids: &[JobId]) -> StoreResult<Vec<CancelOutcome>> {
        let mut tx = self.pool.begin().await?;
        let cancelled: Vec<JobId> = sqlx::query_scalar(
            "UPDATE jobs SET status = 'cancelled', cancel_requested = false, updated_at = now() \
             WHERE id = ANY($1) AND status IN ('pending', 'failed') RETURNING id",
        )
        .bind(ids)
        .fetch_all(&mut *tx)
        .await?;
        let requested = sqlx::query(
            "UPDATE jobs SET cancel_requested = true, updated_at = now() \
             WHERE id = ANY($1) AND status = 'running' RETURNING id, owner, lease_epoch, claimed_at",
        )
        .bind(ids)
        .fetch_all(&mut *tx)
        .await?;
        let mut owners = BTreeMap::new();
        let mut events = cancelled_events(&cancelled);
        for row in &requested {
            let lease = Lease {
                job_id: row.try_get("id")?,
                owner: row.try_get("owner")?,
                epoch: row.try_get("lease_epoch")?,
            };
            let claimed_at: Option<DateTime<Utc>> = row.try_get("claimed_at")?;
            events.push(NewEvent::of_attempt(
                JobEventKind::CancelRequested,
                &lease,
                claimed_at,
                Map::new(),
            ));
            owners.insert(lease.job_id, lease.owner);
        }
        insert_events(&mut tx, &events).await?;
        for owner in owners.values().collect::<BTreeSet<_>>() {
            sqlx::query("SELECT pg_notify($1, 'cancel:' || $2)")
                .bind(&self.channel)
                .bind(owner)
                .execute(&mut *tx)
                .await?;
        }
        let found = statuses(&mut tx, ids).await?;
        tx.commit().await?;
        Ok(cancel_outcomes(ids, &cancelled, &owners, &found))
    }

    pub(super) async fn write_cancelled(&self, lease: &Lease) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let claimed_at: Option<Option<DateTime<Utc>>> = sqlx::query_scalar(
            "UPDATE jobs SET status = 'cancelled', lease_expires_at = NULL, cancel_requested = false, \
                updated_at = now() \
             WHERE id = $1 AND owner = $2 AND lease_epoch = $3 AND status = 'running' RETURNING claimed_at",
        )
        .bind(lease.job_id)
        .bind(&lease.owner)
        .bind(lease.epoch)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(claimed_at) = claimed_at {
            let event =
                NewEvent::of_attempt(JobEventKind::Cancelled, lease, claimed_at, Map::new());
            insert_events(&mut tx, &[event]).await?;
        }
        tx.commit().await?;
        Ok(claimed_at.is_some())
    }

    pub(super) async fn requested_cancels(&self, owner: &str) -> StoreResult<Vec<Lease>> {
        let rows: Vec<(JobId, i64)> = sqlx::query_as(
            "SELECT id, lease_epoch FROM jobs \
             WHERE owner = $1 AND cancel_requested AND status = 'running'",
        )
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(job_id, epoch)| Lease {
                job_id,
                owner: owner.to_string(),
                epoch,
            })
            .collect())
    }

    pub(super) async fn retry_jobs(
        &self,
        ids: &[JobId],
        from_scratch: bool,
    ) -> StoreResult<Vec<RetryOutcome>> {
        let mut tx = self.pool.begin().await?;
        let retried: Vec<JobId> = sqlx::query_scalar(
            "UPDATE jobs SET status = 'pending', attempts = 0, owner = NULL, lease_expires_at = NULL, \
                error = NULL, cancel_requested = false, \
                checkpoint = CASE WHEN $2 THEN NULL ELSE checkpoint END, \
                run_after = now(), updated_at = now() \
             WHERE id = ANY($1) AND status IN ('dead', 'failed', 'cancelled') RETURNING id",
        )
        .bind(ids)
        .bind(from_scratch)
        .fetch_all(&mut *tx)
        .await?;
        let events = retried_events(&retried, from_scratch);
        insert_events(&mut tx, &events).await?;
        if !retried.is_empty() {
            sqlx::query("SELECT pg_notify($1, 'jobs')")
                .bind(&self.channel)
                .execute(&mut *tx)
                .await?;
        }
        let found = statuses(&mut tx, ids).await?;
        tx.commit().await?;
        Ok(retry_outcomes(ids, &retried, &found))
    }

    pub(super) async fn history(
        &self,
        id: JobId,
    ) -> StoreResult<(Vec<JobEvent>, Vec<CompletionRecord>)> {
        let rows = sqlx::query(
            "SELECT event, at, worker_id, lease_epoch, detail FROM job_events WHERE job_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let events = rows
            .iter()
            .map(|row| {
                Ok(JobEvent {
                    event: parse_enum(&row.try_get::<String, _>("event")?)?,
                    at: row.try_get("at")?,
                    worker_id: row.try_get("worker_id")?,
                    lease_epoch: row.try_get("lease_epoch")?,
                    detail: row
                        .try_get::<Option<Value>, _>("detail")?
                        .filter(|d| !d.is_null()),
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let rows = sqlx::query(
            "SELECT job_id, lease_epoch, worker_id, completed_at, claimed_at FROM job_completions \
             WHERE job_id = $1 ORDER BY completed_at",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let completions = rows
            .iter()
            .map(|row| {
                Ok(CompletionRecord {
                    job_id: row.try_get("job_id")?,
                    lease_epoch: row.try_get("lease_epoch")?,
                    worker_id: row.try_get("worker_id")?,
                    completed_at: row.try_get("completed_at")?,
                    claimed_at: row.try_get("claimed_at")?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok((events, completions))
    }

    pub(super) async fn announced_kinds(&self) -> StoreResult<Vec<String>> {
        let kinds: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT kind FROM workers, unnest(kinds) AS kind ORDER BY kind",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(kinds)
    }
}
