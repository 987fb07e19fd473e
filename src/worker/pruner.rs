//! The pruner every worker runs: a retention pass (SPEC §10) a minute after start, then every
//! hour, only while the worker is `running`. A drain cuts a pass short at once (what it deleted
//! stays deleted); the lock in the store lets one pass run at a time across the fleet, and a worker
//! that finds it held skips that turn. A failed pass is logged and tried again next turn: the
//! pruner never fails the worker over a store error.
//!
//! Why hourly: retention is counted in hours and days, so an hour late is noise, while a pass that
//! finds nothing to delete still reads what is kept (a walk of the recent finished jobs). Workers
//! started together (a deploy) try together, and all but one find the lock held.

use super::health::StoreHealth;
use crate::lifecycle::Status;
use crate::model::{Phase, Retention};
use crate::store::prune::{prune_pass, PRUNE_BATCH};
use crate::store::SharedStore;
use crate::telemetry::events::RowsPruned;
use crate::telemetry::Metrics;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The first pass, after start: late enough that a worker in a crash loop does not prune on
/// every start, early enough to see it work.
pub const FIRST_PASS_AFTER: Duration = Duration::from_secs(60);
/// Between passes.
pub const PASS_EVERY: Duration = Duration::from_secs(3600);

pub struct Pruner {
    pub store: SharedStore,
    pub policy: Retention,
    pub first_after: Duration,
    pub every: Duration,
    /// The machine's status: passes run only in `running`.
    pub status: watch::Receiver<Status>,
    pub health: Arc<StoreHealth>,
    pub metrics: Arc<Metrics>,
    pub stop: CancellationToken,
}

impl Pruner {
    pub async fn run(mut self) {
        if self.policy == Retention::FOREVER {
            return self.stop.cancelled().await;
        }
        let mut next = Instant::now() + self.first_after;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = self.stop.cancelled() => return,
            }
            next = Instant::now() + self.every;
            if self.status.borrow().phase != Phase::Running {
                continue;
            }
            let metrics = self.metrics.clone();
            let pass = prune_pass(&*self.store, &self.policy, PRUNE_BATCH, |deleted| {
                RowsPruned { deleted }.emit(&metrics)
            });
            let started = Instant::now();
            let ran = tokio::select! {
                ran = pass => Some(ran),
                _ = self.status.wait_for(|s| s.phase != Phase::Running) => None,
                _ = self.stop.cancelled() => return,
            };
            let took_ms = started.elapsed().as_millis() as u64;
            match ran {
                Some(Ok(Some(report))) if report.total() > 0 => {
                    tracing::info!(?report, took_ms, "retention pass deleted old rows")
                }
                Some(Ok(Some(_))) => tracing::debug!(took_ms, "retention pass: nothing to delete"),
                Some(Ok(None)) => {
                    tracing::debug!("another worker's retention pass holds the lock; skipped")
                }
                Some(Err(err)) => {
                    self.health.failed(&err);
                    tracing::warn!(%err, "retention pass failed; trying again next turn");
                }
                None => tracing::info!(took_ms, "retention pass cut short by the drain"),
            }
        }
    }
}
