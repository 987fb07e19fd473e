//! The claim loop: asks the store for as many jobs as there are free slots, in one call, and hands
//! each to the runner. The phase machine pauses and resumes it through [`ClaimControl`].

use super::health::StoreHealth;
use super::runner::Runner;
use crate::lifecycle::ClaimControl;
use crate::store::SharedStore;
use crate::telemetry::Metrics;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

/// When jobs are waiting but few slots are free, how long to let more slots free up before claiming.
const CLAIM_LINGER: Duration = Duration::from_millis(1);
/// Claims that fail in a row for a reason other than the store being down (a schema that is gone,
/// a statement the database refuses) before the loop gives up: retrying will not fix them, and a
/// worker that can never claim must not keep saying it is ready.
const GIVE_UP_AFTER: u32 = 10;

pub struct ClaimLoop {
    pub store: SharedStore,
    pub worker_id: String,
    pub kinds: Vec<String>,
    pub concurrency: usize,
    pub lease_ttl: Duration,
    pub poll_interval: Duration,
    pub control: Arc<ClaimControl>,
    pub runner: Arc<Runner>,
    pub health: Arc<StoreHealth>,
    pub metrics: Arc<Metrics>,
    /// Notified when the store says jobs became claimable; cuts the idle poll short.
    pub wake: Arc<Notify>,
    pub stop: CancellationToken,
}

impl ClaimLoop {
    /// Claims until `stop` is cancelled; an error when claiming keeps failing for a reason that
    /// retrying cannot fix.
    pub async fn run(self) -> Result<(), String> {
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let mut allowed = self.control.subscribe();
        let mut failures = 0u32;
        let mut refusals = 0u32;
        // The last claim found as many jobs as it asked for: more are probably waiting.
        let mut queue_busy = false;
        loop {
            if !*allowed.borrow_and_update() {
                tokio::select! {
                    _ = allowed.changed() => continue,
                    _ = self.stop.cancelled() => return Ok(()),
                }
            }
            let first = tokio::select! {
                permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                _ = allowed.changed() => continue,
                _ = self.stop.cancelled() => return Ok(()),
            };
            let mut permits = vec![first];
            while let Ok(permit) = slots.clone().try_acquire_owned() {
                permits.push(permit);
            }
            if queue_busy && permits.len() < self.concurrency / 2 {
                // Jobs are waiting and slots free up as completions commit: let a few more free up,
                // so one claim (one commit) takes many jobs rather than a trickle of small claims.
                tokio::time::sleep(CLAIM_LINGER).await;
                while let Ok(permit) = slots.clone().try_acquire_owned() {
                    permits.push(permit);
                }
            }
            let asked = permits.len();
            let gate = self.control.claiming().await;
            if !self.control.is_allowed() {
                continue;
            }
            let claimed = self
                .store
                .claim(&self.worker_id, &self.kinds, asked, self.lease_ttl)
                .await;
            let wait = match claimed {
                Ok(jobs) => {
                    self.health.succeeded();
                    failures = 0;
                    refusals = 0;
                    let got = jobs.len();
                    for (job, permit) in jobs.into_iter().zip(permits.drain(..)) {
                        self.metrics
                            .jobs_claimed
                            .with_label_values(&[job.kind.as_str()])
                            .inc();
                        // Registered before the gate opens, so a pausing machine sees every job.
                        self.runner
                            .jobs
                            .spawn(self.runner.clone().start(job, permit));
                    }
                    queue_busy = got == asked;
                    (got < asked).then_some(self.poll_interval)
                }
                Err(err) => {
                    self.health.failed(&err);
                    failures += 1;
                    refusals = if err.store_is_down() { 0 } else { refusals + 1 };
                    if refusals >= GIVE_UP_AFTER {
                        return Err(format!("{refusals} claims in a row were refused: {err}"));
                    }
                    tracing::warn!(%err, "claim failed; retrying");
                    Some(Duration::from_millis(100 * u64::from(failures.min(50))))
                }
            };
            drop(gate);
            drop(permits);
            if let Some(wait) = wait {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.wake.notified() => {}
                    _ = self.stop.cancelled() => return Ok(()),
                }
            }
        }
    }
}
