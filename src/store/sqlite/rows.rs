//! SQLite rows to and from the model's records: times as Unix milliseconds, JSON as text.

use crate::model::{DrainRequest, Job, JobId, PhaseSpan, ShutdownRecord, WorkerRow};
use crate::store::{parse_enum, StoreError, StoreResult};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::Row;
use std::time::Duration;

pub(super) fn millis_to_time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

pub(super) fn opt_time(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.map(millis_to_time)
}

pub(super) fn parse_json(text: Option<String>) -> StoreResult<Option<Value>> {
    text.map(|t| serde_json::from_str(&t))
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("JSON in store: {e}")))
}

pub(super) fn job_from_row(row: &sqlx::sqlite::SqliteRow) -> StoreResult<Job> {
    Ok(Job {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        payload: parse_json(Some(row.try_get("payload")?))?.unwrap_or(Value::Null),
        status: parse_enum(&row.try_get::<String, _>("status")?)?,
        priority: row.try_get("priority")?,
        attempts: row.try_get("attempts")?,
        max_attempts: row.try_get("max_attempts")?,
        run_after: millis_to_time(row.try_get("run_after")?),
        owner: row.try_get("owner")?,
        lease_epoch: row.try_get("lease_epoch")?,
        lease_expires_at: opt_time(row.try_get("lease_expires_at")?),
        checkpoint: parse_json(row.try_get("checkpoint")?)?,
        result: parse_json(row.try_get("result")?)?,
        error: row.try_get("error")?,
        created_at: millis_to_time(row.try_get("created_at")?),
        updated_at: millis_to_time(row.try_get("updated_at")?),
        claimed_at: opt_time(row.try_get("claimed_at")?),
        cancel_requested: row.try_get("cancel_requested")?,
    })
}

pub(super) fn worker_from_row(row: &sqlx::sqlite::SqliteRow) -> StoreResult<WorkerRow> {
    let drain_mode: Option<String> = row.try_get("drain_mode")?;
    let drain_request = drain_mode
        .map(|mode| -> StoreResult<DrainRequest> {
            Ok(DrainRequest {
                mode: parse_enum(&mode)?,
                reason: row.try_get("drain_reason")?,
                requested_by: row.try_get("drain_requested_by")?,
                requested_at: opt_time(row.try_get("drain_requested_at")?),
            })
        })
        .transpose()?;
    Ok(WorkerRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        phase: parse_enum(&row.try_get::<String, _>("phase")?)?,
        version: row.try_get("version")?,
        listen_addr: row.try_get("listen_addr")?,
        concurrency: row.try_get("concurrency")?,
        started_at: millis_to_time(row.try_get("started_at")?),
        heartbeat_at: millis_to_time(row.try_get("heartbeat_at")?),
        in_flight: row.try_get("in_flight")?,
        drain_request,
        declared_dead_at: opt_time(row.try_get("declared_dead_at")?),
        stopped_at: opt_time(row.try_get("stopped_at")?),
        kinds: serde_json::from_str(&row.try_get::<String, _>("kinds")?)
            .map_err(|e| StoreError::Corrupt(format!("worker kinds: {e}")))?,
        drain_eta_seconds: crate::store::ms_to_seconds(row.try_get("drain_eta_ms")?),
        work_at_risk_seconds: crate::store::ms_to_seconds(row.try_get("work_at_risk_ms")?),
    })
}

pub(super) fn shutdown_from_row(row: &sqlx::sqlite::SqliteRow) -> StoreResult<ShutdownRecord> {
    let phases: Vec<PhaseSpan> = serde_json::from_str(&row.try_get::<String, _>("phases")?)
        .map_err(|e| StoreError::Corrupt(format!("shutdown phases: {e}")))?;
    let forced_jobs: Vec<JobId> =
        serde_json::from_str(&row.try_get::<String, _>("forced_jobs")?)
            .map_err(|e| StoreError::Corrupt(format!("shutdown job list: {e}")))?;
    Ok(ShutdownRecord {
        worker_id: row.try_get("worker_id")?,
        worker_name: row.try_get("worker_name")?,
        trigger: parse_enum(&row.try_get::<String, _>("trigger")?)?,
        mode: parse_enum(&row.try_get::<String, _>("mode")?)?,
        outcome: parse_enum(&row.try_get::<String, _>("outcome")?)?,
        requested_by: row.try_get("requested_by")?,
        reason: row.try_get("reason")?,
        started_at: millis_to_time(row.try_get("started_at")?),
        duration_ms: row.try_get("duration_ms")?,
        phases,
        jobs_released: row.try_get("jobs_released")?,
        forced_jobs,
    })
}

pub(super) fn to_json_text<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Invalid(e.to_string()))
}

pub(super) fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
