//! PostgreSQL rows to and from the model's records, and the array binding of lease batches.

use crate::model::{DrainRequest, Job, JobId, Lease, PhaseSpan, ShutdownRecord, WorkerRow};
use crate::store::{parse_enum, StoreError, StoreResult};
use sqlx::postgres::PgRow;
use sqlx::Row;
use std::time::Duration;

pub(super) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

pub(super) fn job_from_row(row: &PgRow) -> StoreResult<Job> {
    Ok(Job {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        payload: row.try_get("payload")?,
        status: parse_enum(&row.try_get::<String, _>("status")?)?,
        priority: row.try_get("priority")?,
        attempts: row.try_get("attempts")?,
        max_attempts: row.try_get("max_attempts")?,
        run_after: row.try_get("run_after")?,
        owner: row.try_get("owner")?,
        lease_epoch: row.try_get("lease_epoch")?,
        lease_expires_at: row.try_get("lease_expires_at")?,
        checkpoint: row.try_get("checkpoint")?,
        result: row.try_get("result")?,
        error: row.try_get("error")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        claimed_at: row.try_get("claimed_at")?,
        cancel_requested: row.try_get("cancel_requested")?,
    })
}

pub(super) fn drain_from_row(row: &PgRow) -> StoreResult<Option<DrainRequest>> {
    let mode: Option<String> = row.try_get("drain_mode")?;
    mode.map(|mode| {
        Ok(DrainRequest {
            mode: parse_enum(&mode)?,
            reason: row.try_get("drain_reason")?,
            requested_by: row.try_get("drain_requested_by")?,
            requested_at: row.try_get("drain_requested_at")?,
        })
    })
    .transpose()
}

pub(super) fn worker_from_row(row: &PgRow) -> StoreResult<WorkerRow> {
    Ok(WorkerRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        phase: parse_enum(&row.try_get::<String, _>("phase")?)?,
        version: row.try_get("version")?,
        listen_addr: row.try_get("listen_addr")?,
        concurrency: row.try_get("concurrency")?,
        started_at: row.try_get("started_at")?,
        heartbeat_at: row.try_get("heartbeat_at")?,
        in_flight: row.try_get("in_flight")?,
        drain_request: drain_from_row(row)?,
        declared_dead_at: row.try_get("declared_dead_at")?,
        stopped_at: row.try_get("stopped_at")?,
        kinds: row.try_get("kinds")?,
        drain_eta_seconds: crate::store::ms_to_seconds(row.try_get("drain_eta_ms")?),
        work_at_risk_seconds: crate::store::ms_to_seconds(row.try_get("work_at_risk_ms")?),
    })
}

pub(super) fn shutdown_from_row(row: &PgRow) -> StoreResult<ShutdownRecord> {
    let phases: Vec<PhaseSpan> = serde_json::from_value(row.try_get("phases")?)
        .map_err(|e| StoreError::Corrupt(format!("shutdown phases: {e}")))?;
    let forced_jobs: Vec<JobId> = serde_json::from_value(row.try_get("forced_jobs")?)
        .map_err(|e| StoreError::Corrupt(format!("shutdown job list: {e}")))?;
    Ok(ShutdownRecord {
        worker_id: row.try_get("worker_id")?,
        worker_name: row.try_get("worker_name")?,
        trigger: parse_enum(&row.try_get::<String, _>("trigger")?)?,
        mode: parse_enum(&row.try_get::<String, _>("mode")?)?,
        outcome: parse_enum(&row.try_get::<String, _>("outcome")?)?,
        requested_by: row.try_get("requested_by")?,
        reason: row.try_get("reason")?,
        started_at: row.try_get("started_at")?,
        duration_ms: row.try_get("duration_ms")?,
        phases,
        jobs_released: row.try_get("jobs_released")?,
        forced_jobs,
    })
}

/// The lease columns of a batch as parallel arrays for `UNNEST`, in job-id order: every batch
/// write locks its rows in that order, so two batches cannot deadlock.
pub(super) fn lease_arrays(leases: &[&Lease]) -> (Vec<i64>, Vec<String>, Vec<i64>) {
    (
        leases.iter().map(|l| l.job_id).collect(),
        leases.iter().map(|l| l.owner.clone()).collect(),
        leases.iter().map(|l| l.epoch).collect(),
    )
}
