//! Reads for operators and pages on SQLite: the queue metrics' counts, a page of jobs for the jobs page, and
//! whether a drain request waits for a worker.

use super::rows::job_from_row;
use super::SqliteStore;
use crate::model::{Job, JobStatus, QueueCount};
use crate::store::{parse_enum, JobFilter, JobId, JobPageQuery, StoreResult};
use std::time::Duration;

impl SqliteStore {
    pub(super) async fn count_queue(&self) -> StoreResult<Vec<QueueCount>> {
        const COUNTS: &str = concat!(
            "SELECT kind, status, COUNT(*) AS jobs, ",
            now_ms!(),
            " - MIN(CASE WHEN status = 'pending' AND run_after <= ",
            now_ms!(),
            " THEN run_after END) AS oldest_wait_ms FROM jobs INDEXED BY jobs_by_status ",
            "WHERE status IN ('pending', 'running', 'failed', 'dead') GROUP BY kind, status"
        );
        let rows: Vec<(String, String, i64, Option<i64>)> =
            sqlx::query_as(COUNTS).fetch_all(&self.reader).await?;
        rows.into_iter()
            .map(|(kind, status, jobs, wait)| {
                Ok(QueueCount {
                    kind,
                    status: parse_enum(&status)?,
                    jobs,
                    oldest_wait: wait.map(|ms| Duration::from_millis(ms.max(0) as u64)),
                })
            })
            .collect()
    }

    pub(super) async fn has_drain_request(&self, worker_id: &str) -> StoreResult<bool> {
        let waiting: Option<bool> =
            sqlx::query_scalar("SELECT drain_mode IS NOT NULL FROM workers WHERE id = ?1")
                .bind(worker_id)
                .fetch_optional(&self.reader)
                .await?;
        Ok(waiting.unwrap_or(false))
    }

    pub(super) async fn jobs_page(&self, query: &JobPageQuery) -> StoreResult<Vec<Job>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR kind = ?2) \
             AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4"
        ))
        .bind(query.status.map(JobStatus::as_str))
        .bind(&query.kind)
        .bind(query.before)
        .bind(query.limit)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    pub(super) async fn job_by_id(&self, id: JobId) -> StoreResult<Option<Job>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE id = ?1"
        ))
        .bind(id)
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    pub(super) async fn jobs_listed(&self, filter: &JobFilter) -> StoreResult<Vec<Job>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE (?1 IS NULL OR status = ?1) ORDER BY id LIMIT COALESCE(?2, -1)"
        ))
        .bind(filter.status.map(JobStatus::as_str))
        .bind(filter.limit)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    pub(super) async fn counts_by_status(&self) -> StoreResult<Vec<(JobStatus, i64)>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM jobs GROUP BY status ORDER BY status")
                .fetch_all(&self.reader)
                .await?;
        rows.into_iter()
            .map(|(status, count)| Ok((parse_enum(&status)?, count)))
            .collect()
    }
}
