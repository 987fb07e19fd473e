//! Retention passes (SPEC §10), the part common to every backend: which rows go in which order,
//! in small batches with a pause after each, under a lock that lets one pass run at a time.
//!
//! A backend provides the lock and one batch ([`Store::begin_prune`], [`PruneSession`]); a batch
//! is one short write transaction of at most `batch` rows, so claims never wait behind more than
//! one batch. After each batch the pass pauses as long as that batch took: it never takes more
//! than about half of the store's write time, however many rows have aged out.

use super::{PruneReport, Retention, Store, StoreResult};
use async_trait::async_trait;
use std::time::{Duration, Instant};

/// Rows per batch: one short write transaction (a few milliseconds on SQLite).
pub const PRUNE_BATCH: usize = 1000;
/// The shortest pause between two batches.
const MIN_PAUSE: Duration = Duration::from_millis(1);
/// The longest pause between two batches (a batch slowed by a busy store).
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// The kinds of rows a pass deletes, in the order it deletes them: jobs first, so that a worker
/// row whose dead jobs age out in the same pass is no longer named as their owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PruneClass {
    /// Completed jobs and their `job_completions` audit rows.
    Completed,
    Dead,
    Cancelled,
    /// Stopped or declared-dead workers that no job names as its owner.
    Workers,
    Shutdowns,
}

impl PruneClass {
    pub const ORDER: [PruneClass; 5] = [
        PruneClass::Completed,
        PruneClass::Dead,
        PruneClass::Cancelled,
        PruneClass::Workers,
        PruneClass::Shutdowns,
    ];

    /// How long `policy` keeps rows of this class (`None`: forever).
    pub fn kept_for(self, policy: &Retention) -> Option<Duration> {
        match self {
            PruneClass::Completed => policy.completed,
            PruneClass::Dead | PruneClass::Cancelled => policy.dead,
            PruneClass::Workers => policy.workers,
            PruneClass::Shutdowns => policy.shutdowns,
        }
    }

    /// The job status of a job class.
    pub fn job_status(self) -> Option<&'static str> {
        match self {
            PruneClass::Completed => Some("completed"),
            PruneClass::Dead => Some("dead"),
            PruneClass::Cancelled => Some("cancelled"),
            PruneClass::Workers | PruneClass::Shutdowns => None,
        }
    }

    /// A report of `rows` deleted rows of this class (audit rows aside).
    pub fn report(self, rows: u64) -> PruneReport {
        let mut report = PruneReport::default();
        match self {
            PruneClass::Completed => report.completed_jobs = rows,
            PruneClass::Dead => report.dead_jobs = rows,
            PruneClass::Cancelled => report.cancelled_jobs = rows,
            PruneClass::Workers => report.workers = rows,
            PruneClass::Shutdowns => report.shutdowns = rows,
        }
        report
    }
}

/// What one batch did.
#[derive(Clone, Copy, Debug, Default)]
pub struct PruneBatch {
    pub deleted: PruneReport,
    /// Whether rows of this class may remain past what this batch looked at.
    pub more: bool,
}

/// A retention pass holding the store's prune lock. Dropping it without [`end`](Self::end) (a
/// cancelled pass) releases the lock too: with its connection on PostgreSQL, when its lease
/// expires on SQLite.
#[async_trait]
pub trait PruneSession: Send {
    /// Deletes at most `limit` rows of `class` that last changed more than `older_than` ago,
    /// going on from where the previous batch of this class in this session stopped.
    async fn delete_batch(
        &mut self,
        class: PruneClass,
        older_than: Duration,
        limit: usize,
    ) -> StoreResult<PruneBatch>;
    /// Releases the lock.
    async fn end(self: Box<Self>) -> StoreResult<()>;
}

/// Runs one retention pass: `None` when another pass holds the lock (nothing was done).
/// `on_batch` sees each batch's deletions as they commit (for metrics and progress).
pub async fn prune_pass(
    store: &dyn Store,
    policy: &Retention,
    batch: usize,
    mut on_batch: impl FnMut(&PruneReport) + Send,
) -> StoreResult<Option<PruneReport>> {
    let Some(mut session) = store.begin_prune().await? else {
        return Ok(None);
    };
    let mut total = PruneReport::default();
    let ran = async {
        for class in PruneClass::ORDER {
            let Some(older_than) = class.kept_for(policy) else {
                continue;
            };
            loop {
                let started = Instant::now();
                let done = session
                    .delete_batch(class, older_than, batch.max(1))
                    .await?;
                total.add(&done.deleted);
                on_batch(&done.deleted);
                if !done.more {
                    break;
                }
                tokio::time::sleep(started.elapsed().clamp(MIN_PAUSE, MAX_PAUSE)).await;
            }
        }
        StoreResult::Ok(())
    }
    .await;
    let ended = session.end().await;
    ran?;
    ended?;
    Ok(Some(total))
}
