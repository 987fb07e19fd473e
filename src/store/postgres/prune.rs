//! Retention on PostgreSQL: the lock is a session advisory lock, per schema, held by one connection
//! taken out of the pool for the pass; each batch is one autocommitted statement of at most a
//! thousand rows on that connection.
//!
//! Claims never wait for a batch: a batch deletes only finished rows, which no claim, completion
//! or heartbeat touches, and it locks its rows with `SKIP LOCKED`. The connection is closed at the
//! end of the pass, and a pass cut short (its future dropped) closes it too, so the server releases
//! the lock with the session: the lock cannot outlive its pass.

use super::rows::millis;
use super::PostgresStore;
use crate::store::prune::{PruneBatch, PruneClass, PruneSession};
use crate::store::StoreResult;
use async_trait::async_trait;
use sqlx::{Connection, PgConnection, Row};
use std::collections::HashMap;
use std::time::Duration;

/// First key of the two-key advisory lock ("hand"); the second is a hash of the schema, so that
/// deployments in separate schemas of one database prune independently. The two-key space never
/// overlaps the one-key locks of sqlx's migrator.
const LOCK_CLASS: i32 = 0x6861_6e64;

/// A stopped or declared-dead worker whose row last changed more than $2 ms ago.
const STALE_WORKER: &str = "((phase = 'stopped' AND COALESCE(stopped_at, heartbeat_at) \
        < now() - $2 * interval '1 millisecond') \
    OR (declared_dead_at < now() - $2 * interval '1 millisecond' \
        AND heartbeat_at < now() - $2 * interval '1 millisecond'))";

/// Deletes up to $4 jobs of status $1 with ids above $2 unchanged for $3 ms, and (for completed
/// jobs) their audit rows; answers how many it looked at, the last id, and what it deleted.
const DELETE_JOBS: &str = "WITH picked AS ( \
        SELECT id FROM jobs WHERE status = $1 AND id > $2 \
            AND updated_at < now() - $3 * interval '1 millisecond' \
        ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED), \
    gone AS (DELETE FROM jobs j USING picked WHERE j.id = picked.id RETURNING j.id), \
    audit AS (DELETE FROM job_completions c USING gone \
        WHERE c.job_id = gone.id AND $1 = 'completed' RETURNING 1), \
    events AS (DELETE FROM job_events e USING gone WHERE e.job_id = gone.id RETURNING 1) \
    SELECT (SELECT count(*) FROM picked) AS picked, (SELECT max(id) FROM picked) AS last, \
        (SELECT count(*) FROM gone) AS gone, (SELECT count(*) FROM audit) AS audit, \
        (SELECT count(*) FROM events) AS events";

pub(super) struct PgPrune {
    /// Out of the pool: holds the advisory lock for the pass, runs its batches.
    conn: PgConnection,
    /// Per job class, the last job id looked at.
    jobs_after: HashMap<PruneClass, i64>,
    /// The last worker id looked at.
    workers_after: String,
}

/// Takes the advisory lock on a connection of its own, unless another pass holds it.
pub(super) async fn begin(store: &PostgresStore) -> StoreResult<Option<PgPrune>> {
    let mut conn = store.pool.acquire().await?.detach();
    // Plans for the LIMIT actually bound, never a generic one that may not use it.
    sqlx::query("SET plan_cache_mode = force_custom_plan")
        .execute(&mut conn)
        .await?;
    let locked: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext(current_schema()))")
            .bind(LOCK_CLASS)
            .fetch_one(&mut conn)
            .await?;
    if !locked {
        let _ = conn.close().await;
        return Ok(None);
    }
    Ok(Some(PgPrune {
        conn,
        jobs_after: HashMap::new(),
        workers_after: String::new(),
    }))
}

impl PgPrune {
    async fn delete_jobs(
        &mut self,
        class: PruneClass,
        status: &'static str,
        older_than: i64,
        limit: usize,
    ) -> StoreResult<PruneBatch> {
        let after = self.jobs_after.get(&class).copied().unwrap_or(0);
        let row = sqlx::query(DELETE_JOBS)
            .bind(status)
            .bind(after)
            .bind(older_than)
            .bind(limit as i64)
            .fetch_one(&mut self.conn)
            .await?;
        let picked: i64 = row.try_get("picked")?;
        if let Some(last) = row.try_get::<Option<i64>, _>("last")? {
            self.jobs_after.insert(class, last);
        }
        let mut deleted = class.report(row.try_get::<i64, _>("gone")? as u64);
        deleted.job_completions = row.try_get::<i64, _>("audit")? as u64;
        deleted.job_events = row.try_get::<i64, _>("events")? as u64;
        Ok(PruneBatch {
            deleted,
            more: picked == limit as i64,
        })
    }

    async fn delete_workers(&mut self, older_than: i64, limit: usize) -> StoreResult<PruneBatch> {
        let candidates: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT id FROM workers WHERE id > $1 AND {STALE_WORKER} ORDER BY id LIMIT $3"
        ))
        .bind(&self.workers_after)
        .bind(older_than)
        .bind(limit as i64)
        .fetch_all(&mut self.conn)
        .await?;
        let Some(last) = candidates.last() else {
            return Ok(PruneBatch::default());
        };
        self.workers_after = last.clone();
        let more = candidates.len() == limit;
        // One walk of the jobs (no index on owner: no hot statement needs one).
        let named: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT owner FROM jobs WHERE owner = ANY($1)")
                .bind(&candidates)
                .fetch_all(&mut self.conn)
                .await?;
        let unnamed: Vec<&String> = candidates.iter().filter(|id| !named.contains(id)).collect();
        if unnamed.is_empty() {
            return Ok(PruneBatch {
                deleted: Default::default(),
                more,
            });
        }
        // Checked again as it deletes: still stale, and running nothing.
        let gone = sqlx::query(&format!(
            "DELETE FROM workers w WHERE id = ANY($1) AND {STALE_WORKER} \
             AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.status = 'running' AND j.owner = w.id)"
        ))
        .bind(&unnamed)
        .bind(older_than)
        .execute(&mut self.conn)
        .await?
        .rows_affected();
        Ok(PruneBatch {
            deleted: PruneClass::Workers.report(gone),
            more,
        })
    }

    async fn delete_shutdowns(&mut self, older_than: i64, limit: usize) -> StoreResult<PruneBatch> {
        // Oldest first along `shutdowns_recent`: every row this finds is deleted, so no cursor.
        let gone = sqlx::query(
            "DELETE FROM shutdowns WHERE id IN (SELECT id FROM shutdowns \
             WHERE started_at < now() - $1 * interval '1 millisecond' \
             ORDER BY started_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(older_than)
        .bind(limit as i64)
        .execute(&mut self.conn)
        .await?
        .rows_affected();
        Ok(PruneBatch {
            deleted: PruneClass::Shutdowns.report(gone),
            more: gone == limit as u64,
        })
    }
}

#[async_trait]
impl PruneSession for PgPrune {
    async fn delete_batch(
        &mut self,
        class: PruneClass,
        older_than: Duration,
        limit: usize,
    ) -> StoreResult<PruneBatch> {
        let older_than = millis(older_than);
        match class.job_status() {
            Some(status) => self.delete_jobs(class, status, older_than, limit).await,
            None if class == PruneClass::Workers => self.delete_workers(older_than, limit).await,
            None => self.delete_shutdowns(older_than, limit).await,
        }
    }

    async fn end(mut self: Box<Self>) -> StoreResult<()> {
        sqlx::query("SELECT pg_advisory_unlock($1, hashtext(current_schema()))")
            .bind(LOCK_CLASS)
            .execute(&mut self.conn)
            .await?;
        self.conn.close().await?;
        Ok(())
    }
}
