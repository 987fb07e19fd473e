//! Operators' requests reaching this worker where the store cannot push them (SQLite): a drain
//! request is noticed within one poll, not at the next heartbeat, and cancels of its jobs reach
//! their handlers (at once on a PostgreSQL NOTIFY, else every poll). A held job that never
//! started is recorded `cancelled` here.

use super::health::StoreHealth;
use crate::jobs::inflight::{CancelSignal, InFlight};
use crate::store::SharedStore;
use crate::telemetry::Metrics;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub struct RequestWatcher {
    pub store: SharedStore,
    pub worker_id: String,
    pub jobs: Arc<InFlight>,
    /// How often to look without being told: the poll interval where the store cannot push.
    pub interval: Duration,
    /// Notified when the store says a job of this worker was cancelled.
    pub wake: Arc<Notify>,
    /// Where drain requests are not pushed: the heartbeat's "beat now", told when one is waiting
    /// (the beat takes it, as it would at its next turn).
    pub drain_poll: Option<Arc<Notify>>,
    pub health: Arc<StoreHealth>,
    pub metrics: Arc<Metrics>,
    pub stop: CancellationToken,
}

impl RequestWatcher {
    pub async fn run(self) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = self.wake.notified() => {}
                _ = self.stop.cancelled() => return,
            }
            tokio::select! {
                _ = self.look_for_a_drain() => {}
                _ = self.stop.cancelled() => return,
            }
            if self.jobs.is_empty() {
                continue;
            }
            tokio::select! {
                _ = self.look_for_cancels() => {}
                _ = self.stop.cancelled() => return,
            }
        }
    }

    async fn look_for_a_drain(&self) {
        let Some(beat_now) = &self.drain_poll else {
            return;
        };
        match self.store.drain_requested(&self.worker_id).await {
            Ok(true) => beat_now.notify_one(),
            Ok(false) => {}
            Err(err) => {
                self.health.failed(&err);
                tracing::debug!(%err, "could not look for a drain request; the heartbeat will");
            }
        }
    }

    async fn look_for_cancels(&self) {
        let requested = match self.store.cancels_requested(&self.worker_id).await {
            Ok(requested) => requested,
            Err(err) => {
                self.health.failed(&err);
                tracing::debug!(%err, "could not look for cancelled jobs; looking again later");
                return;
            }
        };
        for lease in requested {
            match self.jobs.cancel(&lease) {
                CancelSignal::Signalled { kind } => {
                    tracing::info!(
                        job_id = lease.job_id,
                        kind,
                        "job cancelled by an operator; stopping it"
                    );
                }
                CancelSignal::WasHeld(held) => match self.store.finish_cancelled(&lease).await {
                    Ok(true) => {
                        self.metrics
                            .jobs_cancelled
                            .with_label_values(&[held.kind.as_str()])
                            .inc();
                        tracing::info!(
                            job_id = lease.job_id,
                            kind = held.kind,
                            "held job cancelled before it started"
                        );
                    }
                    Ok(false) => {}
                    Err(err) => {
                        tracing::warn!(%err, job_id = lease.job_id, "could not record a held job cancelled; its lease will expire and the rescuer will")
                    }
                },
                CancelSignal::Nothing => {}
            }
        }
    }
}
