//! The claim loop: keeps the worker's held jobs topped up (one store call claims for every free
//! slot plus the jobs [`Pace`] says to hold ahead), starts held jobs as slots free, and hands back
//! held jobs that waited too long. The phase machine pauses and resumes it through
//! [`ClaimControl`].

use super::health::StoreHealth;
use super::prefetch::{Pace, Slots, HOLD_LIMIT};
use super::runner::Runner;
use crate::jobs::inflight::LeasedJob;
use crate::lifecycle::ClaimControl;
use crate::model::ReleaseReason;
use crate::store::{SharedStore, StoreError};
use crate::telemetry::events::JobReleased;
use crate::telemetry::Metrics;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// When jobs are waiting but few slots are free and nothing is held ahead, how long to let more
/// slots free up before claiming.
const CLAIM_LINGER: Duration = Duration::from_millis(1);
/// Claims that fail in a row for a reason other than the store being down (a schema that is gone,
/// a statement the database refuses) before the loop gives up: retrying will not fix them, and a
/// worker that can never claim must not keep saying it is ready.
const GIVE_UP_AFTER: u32 = 10;
/// With jobs held, how often to look for ones that waited too long.
const STALE_CHECK: Duration = Duration::from_millis(250);
/// How long handing back stale held jobs may take (a drain waits for it) before their leases are
/// left to expire.
const HAND_BACK_BUDGET: Duration = Duration::from_secs(1);

pub struct ClaimLoop {
    pub store: SharedStore,
    pub worker_id: String,
    pub kinds: Vec<String>,
    pub slots: Arc<Slots>,
    pub pace: Arc<Pace>,
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
    /// Claims and starts until `stop` is cancelled; an error when claiming keeps failing for a
    /// reason that retrying cannot fix.
    pub async fn run(self) -> Result<(), String> {
        tokio::select! {
            claimed = self.claim() => claimed,
            () = self.start_held() => Ok(()),
        }
    }

    /// Starts held jobs, the longest-held first, one per free slot.
    async fn start_held(&self) {
        let mut held = self.runner.jobs.subscribe_held();
        let mut allowed = self.control.subscribe();
        loop {
            tokio::select! {
                some = held.wait_for(|held| *held > 0) => if some.is_err() { return },
                _ = self.stop.cancelled() => return,
            }
            let slot = tokio::select! {
                slot = self.slots.acquire(&self.pace) => slot,
                _ = self.stop.cancelled() => return,
            };
            if !*allowed.borrow_and_update() {
                slot.unused();
                tokio::select! {
                    _ = allowed.changed() => continue,
                    _ = self.stop.cancelled() => return,
                }
            }
            let gate = self.control.starting().await;
            let next = if self.control.is_allowed() {
                self.runner.jobs.start_next()
            } else {
                None
            };
            match next {
                Some((job, tokens)) => {
                    // Spawned before the gate opens, so a pausing machine waits for this attempt.
                    self.runner
                        .jobs
                        .spawn(self.runner.clone().start(job, tokens, slot));
                }
                _ => slot.unused(),
            }
            drop(gate);
        }
    }

    async fn claim(&self) -> Result<(), String> {
        let mut allowed = self.control.subscribe();
        let mut held_changes = self.runner.jobs.subscribe_held();
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
            self.hand_back_stale().await;
            let free = self.slots.free();
            let held = self.runner.jobs.held();
            let target = self.pace.target(free);
            // Claim for every free slot without a held job, and top the held jobs up to the
            // target once they have fallen to half of it (so one claim fetches many).
            let wanted = (free + target).saturating_sub(held);
            let needed = held < free || (target > 0 && held <= target / 2);
            if wanted == 0 || !needed {
                held_changes.borrow_and_update();
                tokio::select! {
                    _ = self.slots.freed() => {}
                    _ = held_changes.changed() => {}
                    _ = allowed.changed() => {}
                    _ = tokio::time::sleep(STALE_CHECK) => {}
                    _ = self.stop.cancelled() => return Ok(()),
                }
                continue;
            }
            let mut wanted = wanted;
            if target == 0 && queue_busy && wanted < self.slots.concurrency() / 2 {
                // Jobs are waiting and slots free up as completions are handed over: let a few
                // more free up, so one claim (one commit) takes many jobs rather than a trickle.
                tokio::time::sleep(CLAIM_LINGER).await;
                wanted = self.slots.free().saturating_sub(self.runner.jobs.held());
                if wanted == 0 {
                    continue;
                }
            }
            let gate = self.control.claiming().await;
            if !self.control.is_allowed() {
                continue;
            }
            let claimed = self
                .store
                .claim(&self.worker_id, &self.kinds, wanted, self.lease_ttl)
                .await;
            let wait = match claimed {
                Ok(jobs) => {
                    self.health.succeeded();
                    failures = 0;
                    refusals = 0;
                    let got = jobs.len();
                    for job in jobs {
                        self.metrics
                            .jobs_claimed
                            .with_label_values(&[job.kind.as_str()])
                            .inc();
                        // Registered before the gate opens, so a pausing machine sees every job.
                        self.runner.hold(job);
                    }
                    queue_busy = got == wanted;
                    (got < wanted).then_some(self.poll_interval)
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
            if let Some(mut wait) = wait {
                if self.runner.jobs.held() > 0 {
                    wait = wait.min(STALE_CHECK);
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.wake.notified() => {}
                    _ = self.stop.cancelled() => return Ok(()),
                }
            }
        }
    }

    /// Hands back, free, the held jobs that have waited longer than [`HOLD_LIMIT`] for a slot
    /// (the running jobs turned out long): another worker may be idle. Claiming ahead then stops
    /// until a slot frees.
    async fn hand_back_stale(&self) {
        if self.runner.jobs.held() == 0 {
            return;
        }
        let gate = self.control.claiming().await;
        let stale = self.runner.jobs.take_held_longer_than(HOLD_LIMIT);
        if stale.is_empty() {
            return;
        }
        self.pace.held_went_stale();
        tracing::info!(
            jobs = stale.len(),
            waited = ?HOLD_LIMIT,
            "handing back held jobs that waited too long for a slot"
        );
        let _ = hand_back_held(&self.store, &self.metrics, &stale, HAND_BACK_BUDGET).await;
        drop(gate);
    }
}

/// Hands held jobs back to `pending`, free (no attempt counted), retrying while the store is
/// unreachable for up to `budget`; jobs whose hand-back never lands are rescued when their lease
/// expires. Returns how many were handed back.
async fn hand_back_held(
    store: &SharedStore,
    metrics: &Metrics,
    held: &[LeasedJob],
    budget: Duration,
) -> Result<usize, StoreError> {
    let leases: Vec<_> = held.iter().map(|job| job.lease.clone()).collect();
    let deadline = tokio::time::Instant::now() + budget;
    let mut delay = Duration::from_millis(50);
    let applied = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match StoreError::within(
            "handing back held jobs",
            left,
            store.release(&leases, Duration::ZERO, ReleaseReason::Prefetch),
        )
        .await
        {
            Err(err) if err.is_transient() && left > delay => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            Ok(applied) => break applied,
            Err(err) => {
                let ids: Vec<_> = leases.iter().map(|lease| lease.job_id).collect();
                tracing::warn!(%err, jobs = ?ids, "could not hand held jobs back; they return when their leases expire");
                return Err(err);
            }
        }
    };
    let mut released = 0;
    for (job, applied) in held.iter().zip(applied) {
        if applied {
            released += 1;
        }
        JobReleased {
            job_id: job.lease.job_id,
            kind: &job.kind,
            reason: if applied {
                ReleaseReason::Prefetch
            } else {
                ReleaseReason::LeaseLost
            },
        }
        .emit(metrics);
    }
    Ok(released)
}
