//! Rolling drains on SQLite (SPEC §10): the queue of drain requests waiting for the budget, and
//! moving them into worker rows while fewer than the budget are out. Every change runs in a
//! transaction whose first statement writes, so it holds the file's write lock throughout and two
//! callers cannot both take the last free place.

use super::rows::{millis_to_time, to_json_text};
use super::SqliteStore;
use crate::model::{DrainQueued, DrainRequest, QueuedDrain};
use crate::store::rolling::{count_out, outcomes, to_start, IN_SERVICE_PHASES};
use crate::store::{parse_enum, StoreResult};
use sqlx::{Connection, Row, SqliteConnection};

/// Queue rows for workers no longer in service (stopped, dead, gone, or already asked to drain)
/// are dropped first; this is also the statement that takes the write lock.
fn forget_out_of_service() -> String {
    format!(
        "DELETE FROM drain_queue WHERE worker_id NOT IN (SELECT id FROM workers WHERE phase IN {IN_SERVICE_PHASES} \
         AND declared_dead_at IS NULL AND stopped_at IS NULL AND drain_mode IS NULL)"
    )
}

async fn read_queue(conn: &mut SqliteConnection) -> StoreResult<Vec<QueuedDrain>> {
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
                mode: parse_enum(&row.try_get::<String, _>("mode")?)?,
                reason: row.try_get("reason")?,
                requested_by: row.try_get("requested_by")?,
                max_draining: row
                    .try_get::<i64, _>("max_draining")?
                    .clamp(1, u32::MAX as i64) as u32,
                queued_at: millis_to_time(row.try_get("queued_at")?),
            })
        })
        .collect()
}

/// Moves queued requests into worker rows while the budget allows (on the caller's transaction,
/// after [`forget_out_of_service`]); returns the workers asked now.
async fn start_queued(conn: &mut SqliteConnection) -> StoreResult<Vec<String>> {
    const ASK: &str = concat!(
        "UPDATE workers SET drain_mode = ?2, drain_reason = ?3, drain_requested_by = ?4, drain_requested_at = ",
        now_ms!(),
        " WHERE id = ?1 AND drain_mode IS NULL"
    );
    let out: i64 = sqlx::query_scalar(&count_out())
        .fetch_one(&mut *conn)
        .await?;
    let queue = read_queue(&mut *conn).await?;
    let mut started = Vec::new();
    for queued in to_start(out.max(0) as usize, &queue) {
        sqlx::query(ASK)
            .bind(&queued.worker_id)
            .bind(queued.mode.as_str())
            .bind(&queued.reason)
            .bind(&queued.requested_by)
            .execute(&mut *conn)
            .await?;
        sqlx::query("DELETE FROM drain_queue WHERE worker_id = ?1")
            .bind(&queued.worker_id)
            .execute(&mut *conn)
            .await?;
        started.push(queued.worker_id.clone());
    }
    Ok(started)
}

impl SqliteStore {
    pub(super) async fn queue_drains_now(
        &self,
        worker_ids: &[String],
        request: &DrainRequest,
        max_draining: u32,
    ) -> StoreResult<Vec<(String, DrainQueued)>> {
        const ENQUEUE: &str = concat!(
            "INSERT INTO drain_queue (worker_id, mode, reason, requested_by, max_draining, queued_at) ",
            "SELECT value, ?2, ?3, ?4, ?5, ",
            now_ms!(),
            " FROM json_each(?1) WHERE true ON CONFLICT (worker_id) DO NOTHING"
        );
        let mut w = self.write().await?;
        let mut tx = w.begin().await?;
        sqlx::query(&forget_out_of_service())
            .execute(&mut *tx)
            .await?;
        // Only workers in service and not yet asked are queued; the others are already out.
        let in_service: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT id FROM workers WHERE id IN (SELECT value FROM json_each(?1)) AND phase IN {IN_SERVICE_PHASES} \
             AND declared_dead_at IS NULL AND stopped_at IS NULL AND drain_mode IS NULL"
        ))
        .bind(to_json_text(&worker_ids)?)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(ENQUEUE)
            .bind(to_json_text(&in_service)?)
            .bind(request.mode.as_str())
            .bind(&request.reason)
            .bind(&request.requested_by)
            .bind(i64::from(max_draining.max(1)))
            .execute(&mut *tx)
            .await?;
        let started = start_queued(&mut tx).await?;
        tx.commit().await?;
        w.finish();
        Ok(outcomes(worker_ids, &in_service, &started))
    }

    pub(super) async fn promote_queued_drains(&self) -> StoreResult<Vec<String>> {
        let waiting: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM drain_queue)")
            .fetch_one(&self.reader)
            .await?;
        if !waiting {
            return Ok(Vec::new());
        }
        let mut w = self.write().await?;
        let mut tx = w.begin().await?;
        sqlx::query(&forget_out_of_service())
            .execute(&mut *tx)
            .await?;
        let started = start_queued(&mut tx).await?;
        tx.commit().await?;
        w.finish();
        Ok(started)
    }

    pub(super) async fn withdraw_queued_drains(
        &self,
        worker_ids: &[String],
    ) -> StoreResult<Vec<String>> {
        let mut w = self.write().await?;
        let withdrawn = sqlx::query_scalar(
            "DELETE FROM drain_queue WHERE worker_id IN (SELECT value FROM json_each(?1)) RETURNING worker_id",
        )
        .bind(to_json_text(&worker_ids)?)
        .fetch_all(&mut *w)
        .await?;
        w.finish();
        Ok(withdrawn)
    }

    pub(super) async fn read_queued_drains(&self) -> StoreResult<Vec<QueuedDrain>> {
        let mut conn = self.reader.acquire().await?;
        read_queue(&mut conn).await
    }
}
