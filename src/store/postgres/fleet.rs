//! Rolling drains on PostgreSQL (SPEC §10): the queue of drain requests waiting for the budget, and
//! moving them into worker rows (with the NOTIFY that delivers them at once) while fewer than the
//! budget are out. Every change first takes a lock on the queue table that conflicts with itself,
//! so two callers (or a caller and a stopping worker) decide one after the other, each seeing what
//! the other committed.

use super::PostgresStore;
use crate::model::{DrainQueued, DrainRequest, Mode, QueuedDrain};
use crate::store::rolling::{count_out, outcomes, to_start, IN_SERVICE_PHASES};
use crate::store::{parse_enum, StoreResult};
use sqlx::{PgConnection, Row};

const LOCK: &str = "LOCK TABLE drain_queue IN SHARE ROW EXCLUSIVE MODE";

/// Drops queue rows for workers no longer in service (stopped, dead, gone, or already asked).
fn forget_out_of_service() -> String {
    format!(
        "DELETE FROM drain_queue q WHERE NOT EXISTS (SELECT 1 FROM workers w WHERE w.id = q.worker_id \
         AND w.phase IN {IN_SERVICE_PHASES} AND w.declared_dead_at IS NULL AND w.stopped_at IS NULL \
         AND w.drain_mode IS NULL)"
    )
}

async fn read_queue(conn: &mut PgConnection) -> StoreResult<Vec<QueuedDrain>> {
    let rows = sqlx::query(
        "SELECT worker_id, mode, reason, requested_by, max_draining, queued_at FROM drain_queue \
         ORDER BY queued_at, worker_id",
    )
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(QueuedDrain {
                worker_id: row.try_get("worker_id")?,
                mode: parse_enum::<Mode>(&row.try_get::<String, _>("mode")?)?,
                reason: row.try_get("reason")?,
                requested_by: row.try_get("requested_by")?,
                max_draining: row.try_get::<i32, _>("max_draining")?.max(1) as u32,
                queued_at: row.try_get("queued_at")?,
            })
        })
        .collect()
}

impl PostgresStore {
    /// Moves queued requests into worker rows while the budget allows (on the caller's locked
    /// transaction); returns the workers asked now.
    async fn start_queued(&self, conn: &mut PgConnection) -> StoreResult<Vec<String>> {
        sqlx::query(&forget_out_of_service())
            .execute(&mut *conn)
            .await?;
        let out: i64 = sqlx::query_scalar(&count_out())
            .fetch_one(&mut *conn)
            .await?;
        let queue = read_queue(&mut *conn).await?;
        let mut started = Vec::new();
        for queued in to_start(out.max(0) as usize, &queue) {
            sqlx::query(
                "UPDATE workers SET drain_mode = $2, drain_reason = $3, drain_requested_by = $4, \
                 drain_requested_at = now() WHERE id = $1 AND drain_mode IS NULL",
            )
            .bind(&queued.worker_id)
            .bind(queued.mode.as_str())
            .bind(&queued.reason)
            .bind(&queued.requested_by)
            .execute(&mut *conn)
            .await?;
            sqlx::query("DELETE FROM drain_queue WHERE worker_id = $1")
                .bind(&queued.worker_id)
                .execute(&mut *conn)
                .await?;
            sqlx::query("SELECT pg_notify($1, 'drain:' || $2)")
                .bind(&self.channel)
                .bind(&queued.worker_id)
                .execute(&mut *conn)
                .await?;
            started.push(queued.worker_id.clone());
        }
        Ok(started)
    }

    pub(super) async fn queue_drains_now(
        &self,
        worker_ids: &[String],
        request: &DrainRequest,
        max_draining: u32,
    ) -> StoreResult<Vec<(String, DrainQueued)>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(LOCK).execute(&mut *tx).await?;
        // Only workers in service and not yet asked are queued; the others are already out.
        let in_service: Vec<String> = sqlx::query_scalar(&format!(
            "INSERT INTO drain_queue (worker_id, mode, reason, requested_by, max_draining) \
             SELECT id, $2, $3, $4, $5 FROM workers WHERE id = ANY($1) AND phase IN {IN_SERVICE_PHASES} \
             AND declared_dead_at IS NULL AND stopped_at IS NULL AND drain_mode IS NULL \
             ON CONFLICT (worker_id) DO UPDATE SET worker_id = EXCLUDED.worker_id RETURNING worker_id"
        ))
        .bind(worker_ids)
        .bind(request.mode.as_str())
        .bind(&request.reason)
        .bind(&request.requested_by)
        .bind(max_draining.clamp(1, i32::MAX as u32) as i32)
        .fetch_all(&mut *tx)
        .await?;
        let started = self.start_queued(&mut tx).await?;
        tx.commit().await?;
        Ok(outcomes(worker_ids, &in_service, &started))
    }

    pub(super) async fn promote_queued_drains(&self) -> StoreResult<Vec<String>> {
        let waiting: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM drain_queue)")
            .fetch_one(&self.pool)
            .await?;
        if !waiting {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query(LOCK).execute(&mut *tx).await?;
        let started = self.start_queued(&mut tx).await?;
        tx.commit().await?;
        Ok(started)
    }

    pub(super) async fn withdraw_queued_drains(
        &self,
        worker_ids: &[String],
    ) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "DELETE FROM drain_queue WHERE worker_id = ANY($1) RETURNING worker_id",
        )
        .bind(worker_ids)
        .fetch_all(&self.pool)
        .await?)
    }

    pub(super) async fn read_queued_drains(&self) -> StoreResult<Vec<QueuedDrain>> {
        let mut conn = self.pool.acquire().await?;
        read_queue(&mut conn).await
    }
}
