//! The rescuer every worker runs: returns jobs whose lease expired to `pending`, keeping their
//! checkpoint — but only after this worker has itself been connected for a full lease TTL, so that
//! after a store outage live owners get the chance to renew first.

use super::health::StoreHealth;
use crate::store::SharedStore;
use crate::telemetry::events::JobsRescued;
use crate::telemetry::Metrics;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

pub struct Rescuer {
    pub store: SharedStore,
    pub interval: Duration,
    pub lease_ttl: Duration,
    pub health: Arc<StoreHealth>,
    pub metrics: Arc<Metrics>,
    pub stop: CancellationToken,
}

impl Rescuer {
    pub async fn run(self) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = self.stop.cancelled() => return,
            }
            if !self.health.connected_for(self.lease_ttl) {
                continue;
            }
            let pass = tokio::select! {
                pass = self.store.rescue_expired() => pass,
                _ = self.stop.cancelled() => return,
            };
            match pass {
                Ok(rescued) => JobsRescued { jobs: &rescued }.emit(&self.metrics),
                Err(err) => {
                    self.health.failed(&err);
                    tracing::warn!(%err, "rescue pass failed");
                }
            }
        }
    }
}
