//! Job control on SQLite: cancel, the owner's cancelled write, retry, the events those and the
//! hand-backs, failures and rescues write, and a job's recorded history. Each change and its
//! events commit together, in a transaction whose first statement writes.

use super::rows::{millis_to_time, opt_time, parse_json, to_json_text};
use super::SqliteStore;
use crate::model::{CancelOutcome, CompletionRecord, JobEvent, JobEventKind, RetryOutcome};
use crate::store::control::{cancel_outcomes, cancelled_events, retried_events, retry_outcomes};
use crate::store::{parse_enum, JobId, JobStatus, Lease, NewEvent, StoreResult};
use serde_json::{Map, Value};
use sqlx::{Connection, Row, SqliteConnection};
use std::collections::BTreeMap;

/// Writes `events` (on the caller's transaction).
pub(super) async fn insert_events(
    conn: &mut SqliteConnection,
    events: &[NewEvent],
) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    const INSERT: &str = concat!(
        "INSERT INTO job_events (job_id, event, at, worker_id, lease_epoch, detail) ",
        "SELECT value ->> '$.job_id', value ->> '$.event', ",
        now_ms!(),
        ", value ->> '$.worker_id', value ->> '$.lease_epoch', value -> '$.detail' FROM json_each(?1)"
    );
    sqlx::query(INSERT)
        .bind(to_json_text(&events)?)
        .execute(conn)
        .await?;
    Ok(())
}

/// `?1` as a JSON array of ids.
fn ids_json(ids: &[JobId]) -> StoreResult<String> {
    to_json_text(&ids)
}

/// The status of each of `ids` that exists.
async fn statuses(
    conn: &mut SqliteConnection,
    ids: &[JobId],
) -> StoreResult<BTreeMap<JobId, JobStatus>> {
    let rows: Vec<(JobId, String)> =
        sqlx::query_as("SELECT id, status FROM jobs WHERE id IN (SELECT value FROM json_each(?1))")
            .bind(ids_json(ids)?)
            .fetch_all(conn)
            .await?;
    rows.into_iter()
        .map(|(id, status)| Ok((id, parse_enum(&status)?)))
        .collect()
}

impl SqliteStore {
    pub(super) async fn cancel_jobs(&self, ids: &[JobId]) -> StoreResult<Vec<CancelOutcome>> {
        const CANCEL_WAITING: &str = concat!(
            "UPDATE jobs SET status = 'cancelled', cancel_requested = 0, updated_at = ",
            now_ms!(),
            " WHERE id IN (SELECT value FROM json_each(?1)) AND status IN ('pending', 'failed') RETURNING id"
        );
        const REQUEST: &str = concat!(
            "UPDATE jobs SET cancel_requested = 1, updated_at = ",
            now_ms!(),
            " WHERE id IN (SELECT value FROM json_each(?1)) AND status = 'running' ",
            "RETURNING id, owner, lease_epoch, claimed_at"
        );
        self.file.check()?;
        let mut w = self.write().await?;
        let mut tx = w.begin().await?;
        let cancelled: Vec<JobId> = sqlx::query_scalar(CANCEL_WAITING)
            .bind(ids_json(ids)?)
            .fetch_all(&mut *tx)
            .await?;
        let requested = sqlx::query(REQUEST)
            .bind(ids_json(ids)?)
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
            let claimed_at = opt_time(row.try_get("claimed_at")?);
            events.push(NewEvent::of_attempt(
                JobEventKind::CancelRequested,
                &lease,
                claimed_at,
                Map::new(),
            ));
            owners.insert(lease.job_id, lease.owner);
        }
        insert_events(&mut tx, &events).await?;
        let found = statuses(&mut tx, ids).await?;
        tx.commit().await?;
        w.finish();
        Ok(cancel_outcomes(ids, &cancelled, &owners, &found))
    }

    pub(super) async fn write_cancelled(&self, lease: &Lease) -> StoreResult<bool> {
        const FINISH: &str = concat!(
            "UPDATE jobs SET status = 'cancelled', lease_expires_at = NULL, cancel_requested = 0, ",
            "updated_at = ",
            now_ms!(),
            " WHERE id = ?1 AND owner = ?2 AND lease_epoch = ?3 AND status = 'running' RETURNING claimed_at"
        );
        let mut w = self.write().await?;
        let mut tx = w.begin().await?;
        let claimed_at: Option<Option<i64>> = sqlx::query_scalar(FINISH)
            .bind(lease.job_id)
            .bind(&lease.owner)
            .bind(lease.epoch)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(claimed_at) = claimed_at {
            let event = NewEvent::of_attempt(
                JobEventKind::Cancelled,
                lease,
                opt_time(claimed_at),
                Map::new(),
            );
            insert_events(&mut tx, &[event]).await?;
        }
        tx.commit().await?;
        w.finish();
        Ok(claimed_at.is_some())
    }

    pub(super) async fn requested_cancels(&self, owner: &str) -> StoreResult<Vec<Lease>> {
        let rows: Vec<(JobId, i64)> = sqlx::query_as(
            "SELECT id, lease_epoch FROM jobs INDEXED BY jobs_cancel_requested \
             WHERE owner = ?1 AND cancel_requested = 1 AND status = 'running'",
        )
        .bind(owner)
        .fetch_all(&self.reader)
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
        const RETRY: &str = concat!(
            "UPDATE jobs SET status = 'pending', attempts = 0, owner = NULL, lease_expires_at = NULL, ",
            "error = NULL, cancel_requested = 0, checkpoint = CASE WHEN ?2 THEN NULL ELSE checkpoint END, ",
            "run_after = ",
            now_ms!(),
            ", updated_at = ",
            now_ms!(),
            " WHERE id IN (SELECT value FROM json_each(?1)) AND status IN ('dead', 'failed', 'cancelled') RETURNING id"
        );
        self.file.check()?;
        let mut w = self.write().await?;
        let mut tx = w.begin().await?;
        let retried: Vec<JobId> = sqlx::query_scalar(RETRY)
            .bind(ids_json(ids)?)
            .bind(from_scratch)
            .fetch_all(&mut *tx)
            .await?;
        let events = retried_events(&retried, from_scratch);
        insert_events(&mut tx, &events).await?;
        let found = statuses(&mut tx, ids).await?;
        tx.commit().await?;
        w.finish();
        Ok(retry_outcomes(ids, &retried, &found))
    }

    pub(super) async fn history(
        &self,
        id: JobId,
    ) -> StoreResult<(Vec<JobEvent>, Vec<CompletionRecord>)> {
        let rows = sqlx::query(
            "SELECT event, at, worker_id, lease_epoch, detail FROM job_events WHERE job_id = ?1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.reader)
        .await?;
        let events = rows
            .iter()
            .map(|row| {
                Ok(JobEvent {
                    event: parse_enum(&row.try_get::<String, _>("event")?)?,
                    at: millis_to_time(row.try_get("at")?),
                    worker_id: row.try_get("worker_id")?,
                    lease_epoch: row.try_get("lease_epoch")?,
                    detail: parse_json(row.try_get("detail")?)?.filter(|d| !d.is_null()),
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let rows = sqlx::query(
            "SELECT job_id, lease_epoch, worker_id, completed_at, claimed_at FROM job_completions \
             WHERE job_id = ?1 ORDER BY completed_at",
        )
        .bind(id)
        .fetch_all(&self.reader)
        .await?;
        let completions = rows
            .iter()
            .map(|row| {
                Ok(CompletionRecord {
                    job_id: row.try_get("job_id")?,
                    lease_epoch: row.try_get("lease_epoch")?,
                    worker_id: row.try_get("worker_id")?,
                    completed_at: millis_to_time(row.try_get("completed_at")?),
                    claimed_at: opt_time(row.try_get("claimed_at")?),
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok((events, completions))
    }

    pub(super) async fn announced_kinds(&self) -> StoreResult<Vec<String>> {
        let lists: Vec<String> = sqlx::query_scalar("SELECT DISTINCT kinds FROM workers")
            .fetch_all(&self.reader)
            .await?;
        let mut kinds = std::collections::BTreeSet::new();
        for list in lists {
            if let Some(Value::Array(items)) = parse_json(Some(list))? {
                kinds.extend(
                    items
                        .into_iter()
                        .filter_map(|k| k.as_str().map(String::from)),
                );
            }
        }
        Ok(kinds.into_iter().collect())
    }
}
