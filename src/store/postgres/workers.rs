//! Worker rows on PostgreSQL: registration, phase, the heartbeat (which renews leases, reports what
//! a drain would cost and takes drain requests), deregistration and direct drain requests.

use super::rows::{drain_from_row, millis, worker_from_row};
use super::{PostgresStore, RENEW_SQL};
use crate::model::{DrainCost, Phase};
use crate::store::{
    seconds_to_ms, DrainRequest, HeartbeatReport, Lease, StoreError, StoreResult,
    WorkerRegistration, WorkerRow,
};
use sqlx::Row;
use std::time::Duration;

impl PostgresStore {
    pub(super) async fn register_row(&self, worker: &WorkerRegistration) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO workers (id, name, version, phase, listen_addr, concurrency, lease_ttl_ms, kinds) \
             VALUES ($1, $2, $3, 'starting', $4, $5, $6, $7)",
        )
        .bind(&worker.id)
        .bind(&worker.name)
        .bind(&worker.version)
        .bind(&worker.listen_addr)
        .bind(i64::from(worker.concurrency))
        .bind(millis(worker.lease_ttl))
        .bind(&worker.kinds)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn revive_row(&self, worker_id: &str) -> StoreResult<()> {
        sqlx::query(
            "UPDATE workers SET declared_dead_at = NULL, heartbeat_at = now() \
             WHERE id = $1 AND phase <> 'stopped'",
        )
        .bind(worker_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn set_phase_row(&self, worker_id: &str, phase: Phase) -> StoreResult<()> {
        sqlx::query("UPDATE workers SET phase = $2 WHERE id = $1 AND phase <> 'stopped'")
            .bind(worker_id)
            .bind(phase.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(super) async fn beat(
        &self,
        worker_id: &str,
        held: &[Lease],
        lease_ttl: Duration,
        cost: DrainCost,
    ) -> StoreResult<HeartbeatReport> {
        let mut sorted: Vec<&Lease> = held.iter().collect();
        sorted.sort_by_key(|lease| lease.job_id);
        let ids: Vec<i64> = sorted.iter().map(|l| l.job_id).collect();
        let epochs: Vec<i64> = sorted.iter().map(|l| l.epoch).collect();
        let mut tx = self.hot_pool.begin().await?;
        // Take any drain request in the same statement that touches the row.
        let touched = sqlx::query(
            "UPDATE workers w SET heartbeat_at = now(), in_flight = $2, drain_eta_ms = $3, work_at_risk_ms = $4, \
                drain_mode = NULL, drain_reason = NULL, drain_requested_by = NULL, drain_requested_at = NULL, \
                phase = CASE WHEN old.drain_mode IS NOT NULL AND w.phase IN ('starting', 'running') \
                        THEN 'draining' ELSE w.phase END \
             FROM (SELECT id, drain_mode, drain_reason, drain_requested_by, drain_requested_at \
                   FROM workers WHERE id = $1 FOR UPDATE) AS old \
             WHERE w.id = old.id AND w.declared_dead_at IS NULL AND w.phase <> 'stopped' \
             RETURNING old.drain_mode, old.drain_reason, old.drain_requested_by, old.drain_requested_at",
        )
        .bind(worker_id)
        .bind(held.len() as i64)
        .bind(seconds_to_ms(cost.drain_eta_seconds))
        .bind(seconds_to_ms(cost.work_at_risk_seconds))
        .fetch_optional(&mut *tx)
        .await?;
        // Rows are locked in id order, like every batch write, so two batches cannot deadlock.
        let renewed = sqlx::query(RENEW_SQL)
            .bind(worker_id)
            .bind(millis(lease_ttl))
            .bind(&ids)
            .bind(&epochs)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(HeartbeatReport {
            worker_known: touched.is_some(),
            drain_request: touched.as_ref().map(drain_from_row).transpose()?.flatten(),
            renewed: renewed
                .iter()
                .map(|row| {
                    Ok(Lease {
                        job_id: row.try_get("id")?,
                        owner: worker_id.to_string(),
                        epoch: row.try_get("lease_epoch")?,
                    })
                })
                .collect::<StoreResult<_>>()?,
        })
    }

    pub(super) async fn deregister_row(&self, worker_id: &str) -> StoreResult<()> {
        sqlx::query(
            "UPDATE workers SET phase = 'stopped', in_flight = 0, stopped_at = now(), \
                drain_mode = NULL, drain_reason = NULL, drain_requested_by = NULL, drain_requested_at = NULL \
             WHERE id = $1",
        )
        .bind(worker_id)
        .execute(&self.pool)
        .await?;
        // Its place in the rolling-drain budget goes to the next queued request at once. The
        // worker is stopped either way: if this fails, the next heartbeat of any worker retries.
        if let Err(err) = self.promote_queued_drains().await {
            tracing::warn!(%err, "could not start a queued drain request");
        }
        Ok(())
    }

    pub(super) async fn worker_rows(&self) -> StoreResult<Vec<WorkerRow>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            worker_columns!(),
            " FROM workers ORDER BY started_at DESC, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(worker_from_row).collect()
    }

    pub(super) async fn write_drain_request(
        &self,
        worker: &str,
        request: &DrainRequest,
    ) -> StoreResult<WorkerRow> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            worker_columns!(),
            " FROM workers WHERE id = $1 OR name = $1"
        ))
        .bind(worker)
        .fetch_all(&self.pool)
        .await?;
        let candidates: Vec<WorkerRow> =
            rows.iter().map(worker_from_row).collect::<Result<_, _>>()?;
        let target = crate::store::pick_drain_target(worker, &candidates)?;
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(concat!(
            "UPDATE workers SET drain_mode = $2, drain_reason = $3, drain_requested_by = $4, \
                drain_requested_at = now() WHERE id = $1 AND phase <> 'stopped' RETURNING ",
            worker_columns!()
        ))
        .bind(&target.id)
        .bind(request.mode.as_str())
        .bind(&request.reason)
        .bind(&request.requested_by)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::Conflict(format!("worker {worker:?} stopped meanwhile")))?;
        sqlx::query("SELECT pg_notify($1, 'drain:' || $2)")
            .bind(&self.channel)
            .bind(&target.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        worker_from_row(&row)
    }
}
