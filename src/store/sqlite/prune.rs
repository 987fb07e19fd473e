//! Retention on SQLite: the lock is a lease row (`prune_lease`, one pass at a time across every
//! process on the file), and each batch is one short write transaction that renews the lease and
//! deletes rows by primary key.
//!
//! What to delete is found first on a reader connection, outside the write lock: finding the next
//! thousand aged-out rows may walk every row still kept (recent completed jobs, the jobs naming a
//! worker), and a walk like that must never hold the file's only write lock while claims wait.
//! The delete then checks each row's status and age again, so a row that changed meanwhile stays.

use super::rows::duration_ms;
use super::SqliteStore;
use crate::store::prune::{PruneBatch, PruneClass, PruneSession};
use crate::store::{StoreError, StoreResult};
use async_trait::async_trait;
use sqlx::Connection;
use std::collections::HashMap;
use std::time::Duration;

/// How long a pass holds the lease without renewing it (each batch renews it). A pass that died
/// blocks the next one for at most this long.
const LEASE_TTL: Duration = Duration::from_secs(60);

/// A stopped or declared-dead worker whose row last changed before `now - ?2` ms.
macro_rules! stale_worker {
    () => {
        concat!(
            "((phase = 'stopped' AND COALESCE(stopped_at, heartbeat_at) < ",
            now_ms!(),
            " - ?2) OR (declared_dead_at < ",
            now_ms!(),
            " - ?2 AND heartbeat_at < ",
            now_ms!(),
            " - ?2))"
        )
    };
}

pub(super) struct SqlitePrune<'a> {
    store: &'a SqliteStore,
    /// This pass's name in the lease row.
    holder: String,
    /// Per job class, the last job id looked at.
    jobs_after: HashMap<PruneClass, i64>,
    /// The last worker id looked at.
    workers_after: String,
}

/// Takes the lease, unless another live pass holds it.
pub(super) async fn begin(store: &SqliteStore) -> StoreResult<Option<SqlitePrune<'_>>> {
    const TAKE: &str = concat!(
        "INSERT INTO prune_lease (id, holder, expires_at) VALUES (1, ?1, ",
        now_ms!(),
        " + ?2) ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at ",
        "WHERE prune_lease.expires_at < ",
        now_ms!(),
        " RETURNING holder"
    );
    let holder = uuid::Uuid::new_v4().to_string();
    let mut w = store.write().await?;
    let taken: Option<String> = sqlx::query_scalar(TAKE)
        .bind(&holder)
        .bind(duration_ms(LEASE_TTL))
        .fetch_optional(&mut *w)
        .await?;
    w.finish();
    Ok(taken.map(|_| SqlitePrune {
        store,
        holder,
        jobs_after: HashMap::new(),
        workers_after: String::new(),
    }))
}

impl SqlitePrune<'_> {
    /// Runs `delete` in one write transaction that first renews this pass's lease (so it holds the
    /// write lock from its first statement, and a pass that lost its lease deletes nothing).
    async fn in_batch<T>(
        &self,
        delete: impl for<'c> FnOnce(
            &'c mut sqlx::SqliteConnection,
        ) -> futures_util::future::BoxFuture<'c, StoreResult<T>>,
    ) -> StoreResult<T> {
        const RENEW: &str = concat!(
            "UPDATE prune_lease SET expires_at = ",
            now_ms!(),
            " + ?2 WHERE id = 1 AND holder = ?1"
        );
        let mut w = self.store.write().await?;
        let mut tx = w.begin().await?;
        let renewed = sqlx::query(RENEW)
            .bind(&self.holder)
            .bind(duration_ms(LEASE_TTL))
            .execute(&mut *tx)
            .await?;
        if renewed.rows_affected() != 1 {
            return Err(StoreError::Conflict(
                "the retention lease expired and another pass took it; this pass stops".into(),
            ));
        }
        let done = delete(&mut tx).await?;
        tx.commit().await?;
        w.finish();
        Ok(done)
    }

    async fn delete_jobs(
        &mut self,
        class: PruneClass,
        status: &'static str,
        older_than: i64,
        limit: usize,
    ) -> StoreResult<PruneBatch> {
        const CANDIDATES: &str = concat!(
            "SELECT id FROM jobs INDEXED BY jobs_by_status WHERE status = ?1 AND id > ?2 ",
            "AND updated_at < ",
            now_ms!(),
            " - ?3 ORDER BY id LIMIT ?4"
        );
        const DELETE: &str = concat!(
            "DELETE FROM jobs WHERE id IN (SELECT value FROM json_each(?1)) AND status = ?2 ",
            "AND updated_at < ",
            now_ms!(),
            " - ?3 RETURNING id"
        );
        const DELETE_AUDIT: &str =
            "DELETE FROM job_completions WHERE job_id IN (SELECT value FROM json_each(?1))";
        const DELETE_EVENTS: &str =
            "DELETE FROM job_events WHERE job_id IN (SELECT value FROM json_each(?1))";
        let after = self.jobs_after.get(&class).copied().unwrap_or(0);
        let candidates: Vec<i64> = sqlx::query_scalar(CANDIDATES)
            .bind(status)
            .bind(after)
            .bind(older_than)
            .bind(limit as i64)
            .fetch_all(&self.store.reader)
            .await?;
        let Some(&last) = candidates.last() else {
            return Ok(PruneBatch::default());
        };
        self.jobs_after.insert(class, last);
        let ids = serde_json::to_string(&candidates).expect("ids serialise");
        let (jobs, audit, events) = self
            .in_batch(|tx| {
                Box::pin(async move {
                    let gone: Vec<i64> = sqlx::query_scalar(DELETE)
                        .bind(&ids)
                        .bind(status)
                        .bind(older_than)
                        .fetch_all(&mut *tx)
                        .await?;
                    let gone_ids = serde_json::to_string(&gone).expect("ids serialise");
                    let audit = if class == PruneClass::Completed && !gone.is_empty() {
                        sqlx::query(DELETE_AUDIT)
                            .bind(&gone_ids)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected()
                    } else {
                        0
                    };
                    // Their journeys go with them, in this transaction.
                    let events = if gone.is_empty() {
                        0
                    } else {
                        sqlx::query(DELETE_EVENTS)
                            .bind(&gone_ids)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected()
                    };
                    Ok((gone.len() as u64, audit, events))
                })
            })
            .await?;
        let mut deleted = class.report(jobs);
        deleted.job_completions = audit;
        deleted.job_events = events;
        Ok(PruneBatch {
            deleted,
            more: candidates.len() == limit,
        })
    }

    async fn delete_workers(&mut self, older_than: i64, limit: usize) -> StoreResult<PruneBatch> {
        const CANDIDATES: &str = concat!(
            "SELECT id FROM workers WHERE id > ?1 AND ",
            stale_worker!(),
            " ORDER BY id LIMIT ?3"
        );
        // One walk of the jobs (no index on owner: no hot statement needs one), on the reader.
        const NAMED: &str =
            "SELECT DISTINCT owner FROM jobs WHERE owner IN (SELECT value FROM json_each(?1))";
        // Checked again under the write lock: still stale, and running nothing.
        const DELETE: &str = concat!(
            "DELETE FROM workers WHERE id IN (SELECT value FROM json_each(?1)) AND ",
            stale_worker!(),
            " AND NOT EXISTS (SELECT 1 FROM jobs INDEXED BY jobs_by_status ",
            "WHERE status = 'running' AND owner = workers.id)"
        );
        let candidates: Vec<String> = sqlx::query_scalar(CANDIDATES)
            .bind(&self.workers_after)
            .bind(older_than)
            .bind(limit as i64)
            .fetch_all(&self.store.reader)
            .await?;
        let Some(last) = candidates.last() else {
            return Ok(PruneBatch::default());
        };
        self.workers_after = last.clone();
        let all = serde_json::to_string(&candidates).expect("ids serialise");
        let named: Vec<String> = sqlx::query_scalar(NAMED)
            .bind(&all)
            .fetch_all(&self.store.reader)
            .await?;
        let unnamed: Vec<&String> = candidates.iter().filter(|id| !named.contains(id)).collect();
        let more = candidates.len() == limit;
        if unnamed.is_empty() {
            return Ok(PruneBatch {
                deleted: Default::default(),
                more,
            });
        }
        let ids = serde_json::to_string(&unnamed).expect("ids serialise");
        let gone = self
            .in_batch(|tx| {
                Box::pin(async move {
                    Ok(sqlx::query(DELETE)
                        .bind(&ids)
                        .bind(older_than)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected())
                })
            })
            .await?;
        Ok(PruneBatch {
            deleted: PruneClass::Workers.report(gone),
            more,
        })
    }

    async fn delete_shutdowns(&mut self, older_than: i64, limit: usize) -> StoreResult<PruneBatch> {
        // Oldest first along `shutdowns_recent`: every row this finds is deleted, so no cursor.
        const DELETE: &str = concat!(
            "DELETE FROM shutdowns WHERE id IN (SELECT id FROM shutdowns INDEXED BY shutdowns_recent ",
            "WHERE started_at < ",
            now_ms!(),
            " - ?1 ORDER BY started_at LIMIT ?2)"
        );
        let gone = self
            .in_batch(|tx| {
                Box::pin(async move {
                    Ok(sqlx::query(DELETE)
                        .bind(older_than)
                        .bind(limit as i64)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected())
                })
            })
            .await?;
        Ok(PruneBatch {
            deleted: PruneClass::Shutdowns.report(gone),
            more: gone == limit as u64,
        })
    }
}

#[async_trait]
impl PruneSession for SqlitePrune<'_> {
    async fn delete_batch(
        &mut self,
        class: PruneClass,
        older_than: Duration,
        limit: usize,
    ) -> StoreResult<PruneBatch> {
        let older_than = duration_ms(older_than);
        match class.job_status() {
            Some(status) => self.delete_jobs(class, status, older_than, limit).await,
            None if class == PruneClass::Workers => self.delete_workers(older_than, limit).await,
            None => self.delete_shutdowns(older_than, limit).await,
        }
    }

    async fn end(self: Box<Self>) -> StoreResult<()> {
        let mut w = self.store.write().await?;
        sqlx::query("DELETE FROM prune_lease WHERE holder = ?1")
            .bind(&self.holder)
            .execute(&mut *w)
            .await?;
        w.finish();
        Ok(())
    }
}
