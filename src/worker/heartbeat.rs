//! The heartbeat: one store transaction every `--heartbeat-interval` that renews the worker row and
//! the leases of all its jobs together, reports what a drain would cost, finds leases this worker
//! lost, picks up remote drains, and starts queued rolling-drain requests as places free up.

use super::drain_cost::DrainTimes;
use super::health::StoreHealth;
use crate::jobs::inflight::InFlight;
use crate::lifecycle::{DrainOrder, MachineHandle};
use crate::model::{Phase, Trigger};
use crate::store::{SharedStore, StoreError};
use crate::telemetry::Metrics;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

pub struct Heartbeat {
    pub store: SharedStore,
    pub worker_id: String,
    pub interval: Duration,
    pub lease_ttl: Duration,
    pub jobs: Arc<InFlight>,
    pub machine: MachineHandle,
    pub health: Arc<StoreHealth>,
    pub metrics: Arc<Metrics>,
    /// For the drain cost each beat reports.
    pub drain_times: DrainTimes,
    /// Notified to beat now (a drain request for this worker was announced).
    pub beat_now: Arc<Notify>,
    pub stop: CancellationToken,
}

impl Heartbeat {
    pub async fn run(self) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = self.beat_now.notified() => {}
                _ = self.stop.cancelled() => return,
            }
            // A beat waiting on a store that is down must not hold up the stop.
            tokio::select! {
                _ = self.beat() => {}
                _ = self.stop.cancelled() => return,
            }
        }
    }

    async fn beat(&self) {
        let held = self.jobs.leases();
        let cost = self.drain_times.forecast(&self.jobs).cost();
        let answer = StoreError::within(
            "the heartbeat",
            self.interval.max(Duration::from_secs(1)),
            self.store
                .heartbeat(&self.worker_id, &held, self.lease_ttl, cost),
        )
        .await;
        let report = match answer {
            Ok(report) => report,
            Err(err) => {
                self.health.failed(&err);
                self.metrics.heartbeat_failures.inc();
                tracing::warn!(%err, "heartbeat failed");
                return;
            }
        };
        self.health.succeeded();
        for lease in held.iter().filter(|lease| !report.renewed.contains(lease)) {
            if self.jobs.lose(lease) {
                tracing::warn!(
                    job_id = lease.job_id,
                    epoch = lease.epoch,
                    "heartbeat found the lease lost"
                );
            }
        }
        if !report.worker_known {
            if self.machine.phase() == Phase::Running {
                tracing::warn!(
                    "the store had declared this worker dead; it is alive, registering again"
                );
                if let Err(err) = self.store.revive_worker(&self.worker_id).await {
                    tracing::warn!(%err, "could not revive the worker row");
                }
            } else {
                tracing::info!("the store declared this worker dead during its shutdown; finishing the shutdown");
            }
        }
        if let Some(request) = report.drain_request {
            let order = DrainOrder {
                trigger: Trigger::Remote,
                mode: request.mode,
                requested_by: request.requested_by,
                reason: request.reason,
            };
            self.machine.request(order);
        }
        // A rolling drain's queued requests start as places free up; every worker helps, so a
        // queue whose caller has gone still moves.
        if let Err(err) = self.store.promote_drains().await {
            tracing::debug!(%err, "could not start queued drain requests");
        }
    }
}
