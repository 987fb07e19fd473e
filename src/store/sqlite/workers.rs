//! Worker rows on SQLite: registration, phase, the heartbeat (which renews leases, reports what a
//! drain would cost and takes drain requests), deregistration and direct drain requests.

use super::rows::{duration_ms, opt_time, to_json_text, worker_from_row};
use super::SqliteStore;
use crate::model::{DrainCost, Phase};
use crate::store::{
    parse_enum, seconds_to_ms, DrainRequest, HeartbeatReport, Lease, StoreError, StoreResult,
    WorkerRegistration, WorkerRow,
};
use sqlx::{Connection, Row};
use std::time::Duration;

impl SqliteStore {
    pub(super) async fn register_row(&self, worker: &WorkerRegistration) -> StoreResult<()> {
        const REGISTER: &str = concat!(
            "INSERT INTO workers (id, name, version, phase, listen_addr, concurrency, lease_ttl_ms, kinds, started_at, heartbeat_at) ",
            "VALUES (?1, ?2, ?3, 'starting', ?4, ?5, ?6, ?7, ",
            now_ms!(),
            ", ",
            now_ms!(),
            ")"
        );
        let mut w = self.write().await?;
        sqlx::query(REGISTER)
            .bind(&worker.id)
            .bind(&worker.name)
            .bind(&worker.version)
            .bind(&worker.listen_addr)
            .bind(worker.concurrency)
            .bind(duration_ms(worker.lease_ttl))
            .bind(to_json_text(&worker.kinds)?)
            .execute(&mut *w)
            .await?;
        w.finish();
        Ok(())
    }

    pub(super) async fn revive_row(&self, worker_id: &str) -> StoreResult<()> {
        const REVIVE: &str = concat!(
            "UPDATE workers SET declared_dead_at = NULL, heartbeat_at = ",
            now_ms!(),
            " WHERE id = ?1 AND phase <> 'stopped'"
        );
        let mut w = self.write().await?;
        sqlx::query(REVIVE).bind(worker_id).execute(&mut *w).await?;
        w.finish();
        Ok(())
    }

    pub(super) async fn set_phase_row(&self, worker_id: &str, phase: Phase) -> StoreResult<()> {
        let mut w = self.write().await?;
        sqlx::query("UPDATE workers SET phase = ?2 WHERE id = ?1 AND phase <> 'stopped'")
            .bind(worker_id)
            .bind(phase.as_str())
            .execute(&mut *w)
            .await?;
        w.finish();
        Ok(())
    }

    pub(super) async fn beat(
        &self,
        worker_id: &str,
        held: &[Lease],
        lease_ttl: Duration,
        cost: DrainCost,
    ) -> StoreResult<HeartbeatReport> {
        const TOUCH_WORKER: &str = concat!(
            "UPDATE workers SET heartbeat_at = ",
            now_ms!(),
            ", in_flight = ?2, drain_eta_ms = ?3, work_at_risk_ms = ?4 WHERE id = ?1 AND declared_dead_at IS NULL AND phase <> 'stopped' ",
            "RETURNING drain_mode, drain_reason, drain_requested_by, drain_requested_at"
        );
        const RENEW_LEASES: &str = concat!(
            "UPDATE jobs SET lease_expires_at = ",
            now_ms!(),
            " + ?2 FROM (SELECT value FROM json_each(?3)) AS b ",
            "WHERE jobs.id = b.value ->> '$.job_id' AND jobs.lease_epoch = b.value ->> '$.epoch' ",
            "AND jobs.owner = ?1 AND +jobs.status = 'running' RETURNING jobs.id, jobs.lease_epoch"
        );
        // A file deleted or replaced underneath is found here, within one heartbeat.
        self.file.check()?;
        // The first statement writes, so the transaction holds the write lock from its start.
        let mut w = self.write().await?;
        let mut tx = w.begin().await?;
        let touched = sqlx::query(TOUCH_WORKER)
            .bind(worker_id)
            .bind(held.len() as i64)
            .bind(seconds_to_ms(cost.drain_eta_seconds))
            .bind(seconds_to_ms(cost.work_at_risk_seconds))
            .fetch_optional(&mut *tx)
            .await?;
        let mut report = HeartbeatReport {
            worker_known: touched.is_some(),
            ..HeartbeatReport::default()
        };
        if let Some(row) = touched {
            if let Some(mode) = row.try_get::<Option<String>, _>("drain_mode")? {
                report.drain_request = Some(DrainRequest {
                    mode: parse_enum(&mode)?,
                    reason: row.try_get("drain_reason")?,
                    requested_by: row.try_get("drain_requested_by")?,
                    requested_at: opt_time(row.try_get("drain_requested_at")?),
                });
                // Out from this commit on, as the rolling-drain budget counts (SPEC §10).
                sqlx::query(
                    "UPDATE workers SET drain_mode = NULL, drain_reason = NULL, drain_requested_by = NULL, drain_requested_at = NULL, \
                     phase = CASE WHEN phase IN ('starting', 'running') THEN 'draining' ELSE phase END WHERE id = ?1",
                )
                .bind(worker_id)
                .execute(&mut *tx)
                .await?;
            }
        }
        let renewed = if held.is_empty() {
            Vec::new()
        } else {
            sqlx::query(RENEW_LEASES)
                .bind(worker_id)
                .bind(duration_ms(lease_ttl))
                .bind(to_json_text(&held)?)
                .fetch_all(&mut *tx)
                .await?
        };
        tx.commit().await?;
        w.finish();
        report.renewed = renewed
            .iter()
            .map(|row| {
                Ok(Lease {
                    job_id: row.try_get("id")?,
                    owner: worker_id.to_string(),
                    epoch: row.try_get("lease_epoch")?,
                })
            })
            .collect::<StoreResult<_>>()?;
        Ok(report)
    }

    pub(super) async fn deregister_row(&self, worker_id: &str) -> StoreResult<()> {
        const DEREGISTER: &str = concat!(
            "UPDATE workers SET phase = 'stopped', in_flight = 0, stopped_at = ",
            now_ms!(),
            ", drain_mode = NULL, drain_reason = NULL, drain_requested_by = NULL, drain_requested_at = NULL",
            " WHERE id = ?1"
        );
        let mut w = self.write().await?;
        sqlx::query(DEREGISTER)
            .bind(worker_id)
            .execute(&mut *w)
            .await?;
        w.finish();
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
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(worker_from_row).collect()
    }

    pub(super) async fn write_drain_request(
        &self,
        worker: &str,
        request: &DrainRequest,
    ) -> StoreResult<WorkerRow> {
        let mut w = self.write().await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            worker_columns!(),
            " FROM workers WHERE id = ?1 OR name = ?1"
        ))
        .bind(worker)
        .fetch_all(&mut *w)
        .await?;
        w.finish();
        let candidates: Vec<WorkerRow> =
            rows.iter().map(worker_from_row).collect::<Result<_, _>>()?;
        let target = crate::store::pick_drain_target(worker, &candidates)?;
        const REQUEST: &str = concat!(
            "UPDATE workers SET drain_mode = ?2, drain_reason = ?3, drain_requested_by = ?4, drain_requested_at = ",
            now_ms!(),
            " WHERE id = ?1 AND phase <> 'stopped' RETURNING ",
            worker_columns!()
        );
        let mut w = self.write().await?;
        let row = sqlx::query(REQUEST)
            .bind(&target.id)
            .bind(request.mode.as_str())
            .bind(&request.reason)
            .bind(&request.requested_by)
            .fetch_optional(&mut *w)
            .await?;
        w.finish();
        let row = row
            .ok_or_else(|| StoreError::Conflict(format!("worker {worker:?} stopped meanwhile")))?;
        worker_from_row(&row)
    }
}
