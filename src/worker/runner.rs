//! Runs one claimed job: the handler in its own task, then the one fenced write that ends the
//! attempt (complete, fail, hand back) — or nothing at all when the lease was lost.
//!
//! The job's slot is freed as soon as its handler returns: the final write no longer holds up the
//! next job. What bounds those writes is [`Runner::backlog`]; until the write commits the job stays
//! held (its lease renewed, a drain waits for it), so a crash before the commit runs it again from
//! its checkpoint — at least once, as before — and the fence keeps the completion at most once.

use super::completer::Completer;
use super::health::StoreHealth;
use super::prefetch::{Pace, Slot};
use crate::jobs::inflight::{InFlight, JobState, JobTokens};
use crate::jobs::{AttemptSignals, JobContext, JobError, JobOutcome, Registry};
use crate::model::{ClaimedJob, FailOutcome, Lease};
use crate::store::{retry_backoff, SharedStore, StoreError};
use crate::telemetry::events::{AttemptEnd, AttemptEnded};
use crate::telemetry::Metrics;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub struct Runner {
    pub store: SharedStore,
    pub metrics: Arc<Metrics>,
    pub jobs: Arc<InFlight>,
    pub handlers: Registry,
    pub completer: Completer,
    pub health: Arc<StoreHealth>,
    /// Cancelled in `checkpointing`: handlers stop at their next checkpoint.
    pub checkpoint_request: CancellationToken,
    /// Cancelled on the forced path: handlers are abandoned and their leases left to the machine.
    pub forced: CancellationToken,
    /// Final writes (completions, failures, hand-backs) not yet committed after their slot was
    /// freed: at most this many; beyond it a returned handler keeps its slot until one commits.
    pub backlog: Arc<Semaphore>,
    /// Learns how long handlers take, to size the held jobs.
    pub pace: Arc<Pace>,
    /// `--cancel-grace`: a cancelled job's processes get this long after SIGTERM.
    pub cancel_grace: Duration,
}

/// How many final writes may wait for their commit with their slots already freed.
pub fn backlog_size(concurrency: usize) -> usize {
    concurrency.saturating_mul(16).clamp(256, 1024)
}

/// A job that hands itself back outside a shutdown (exec exit 75) is claimable again only after
/// this long, so a child that always yields cannot spin the fleet.
const YIELD_PAUSE: Duration = Duration::from_secs(1);

/// How long an abandoned handler may take to clean up before it is dropped.
const HANDLER_CLEANUP: Duration = Duration::from_millis(800);

/// How the handler's part of an attempt ended.
enum Ending {
    Returned(Result<JobOutcome, JobError>),
    LeaseLost,
    Forced,
}

impl Runner {
    /// Registers a claimed job as held: leased, waiting for a slot.
    pub fn hold(&self, job: ClaimedJob) {
        let progress = match (self.handlers.get(&job.kind), &job.checkpoint) {
            (Some(handler), Some(checkpoint)) => handler.progress(&job.payload, checkpoint),
            _ => None,
        };
        self.jobs.hold(job, progress);
    }

    /// Runs a job just taken from the held ones (see [`InFlight::start_next`]), in its span.
    pub async fn start(self: Arc<Self>, job: ClaimedJob, tokens: JobTokens, slot: Slot) {
        let span = tracing::info_span!(
            "job",
            otel.name = "job.attempt",
            job_id = job.lease.job_id,
            kind = %job.kind,
            attempt = job.attempt,
            epoch = job.lease.epoch,
            outcome = tracing::field::Empty,
            checkpoints = tracing::field::Empty,
        );
        self.run(job, tokens, slot).instrument(span).await;
    }

    async fn run(&self, job: ClaimedJob, tokens: JobTokens, slot: Slot) {
        let JobTokens { abandon, cancel } = tokens;
        let lease = job.lease.clone();
        let kind = job.kind.clone();
        let started = Instant::now();
        let Some(handler) = self.handlers.get(&kind).cloned() else {
            let message = format!("no handler for kind {kind:?} on this worker");
            return self
                .finish_failed(&lease, &kind, job.attempt, message, started)
                .await;
        };
        let attempt = job.attempt;
        let ctx = JobContext::new(
            job,
            handler.clone(),
            self.store.clone(),
            self.metrics.clone(),
            self.jobs.clone(),
            AttemptSignals {
                stop: self.checkpoint_request.clone(),
                abandon: abandon.clone(),
                cancel: cancel.clone(),
                cancel_grace: self.cancel_grace,
            },
        );
        // What the submit → start benchmark times (RUST_LOG=handover::worker::runner=debug).
        tracing::debug!("attempt started");
        let mut task = tokio::spawn(async move { handler.run(ctx).await }.in_current_span());
        let job_id = lease.job_id;
        let ending = tokio::select! {
            joined = &mut task => Ending::Returned(joined.unwrap_or_else(|err| {
                Err(JobError::Failed(if err.is_panic() {
                    format!("handler panicked: {}", crate::text::panic_message(err.into_panic()))
                } else {
                    "handler task was cancelled".to_string()
                }))
            })),
            _ = abandon.cancelled() => Ending::LeaseLost,
            _ = self.forced.cancelled() => Ending::Forced,
        };
        // Held until the final write commits: the backlog's share once the slot is freed.
        let mut _writing = None;
        if matches!(ending, Ending::Returned(_)) {
            self.jobs.handler_returned(job_id);
            self.pace.handler_returned(started.elapsed());
            // The slot goes to the next job now, unless too many writes are already waiting.
            _writing = self.backlog.clone().acquire_owned().await.ok();
            drop(slot);
        } else {
            // Tell the handler to stop now and give it a moment to clean up (an exec job kills its
            // process group and waits for it to exit); a handler that does not listen is dropped.
            abandon.cancel();
            if tokio::time::timeout(HANDLER_CLEANUP, &mut task)
                .await
                .is_err()
            {
                task.abort();
                let _ = task.await;
            }
        }
        match ending {
            // A completion racing a cancel wins if it lands first: the fence decides, once.
            Ending::Returned(Ok(JobOutcome::Completed(result))) => {
                self.finish_completed(lease, &kind, result, started).await
            }
            Ending::Returned(_) if cancel.is_cancelled() => {
                self.finish_cancelled(&lease, &kind, started).await
            }
            Ending::Returned(Ok(JobOutcome::Interrupted)) => {
                self.finish_interrupted(&lease, &kind, started).await
            }
            Ending::Returned(Err(JobError::Failed(message))) => {
                self.finish_failed(&lease, &kind, attempt, message, started)
                    .await
            }
            Ending::Returned(Err(JobError::LeaseLost)) | Ending::LeaseLost => {
                self.finish_lease_lost(&lease, &kind, started)
            }
            Ending::Forced => {
                self.ended(job_id, &kind, started, AttemptEnd::Forced);
                self.jobs.set_state(lease.job_id, JobState::Aborted);
            }
        }
    }

    /// Emits how the attempt ended: log line, metrics and the job span's fields together.
    fn ended(&self, job_id: i64, kind: &str, started: Instant, end: AttemptEnd<'_>) {
        AttemptEnded {
            kind,
            took: started.elapsed(),
            checkpoints: self.jobs.checkpoints_saved(job_id),
            end,
        }
        .emit(&self.metrics);
    }

    async fn finish_completed(
        &self,
        lease: Lease,
        kind: &str,
        result: serde_json::Value,
        started: Instant,
    ) {
        let written = self
            .persist(|| self.completer.complete(lease.clone(), result.clone()))
            .await;
        match written {
            Some(Ok(true)) => {
                self.ended(lease.job_id, kind, started, AttemptEnd::Completed);
                self.jobs.remove(lease.job_id);
            }
            Some(Ok(false)) | Some(Err(StoreError::LeaseLost { .. })) => {
                self.finish_lease_lost(&lease, kind, started)
            }
            Some(Err(err)) => self.give_up(&lease, err),
            None => self.jobs.set_state(lease.job_id, JobState::Aborted),
        }
    }

    async fn finish_interrupted(&self, lease: &Lease, kind: &str, started: Instant) {
        if self.checkpoint_request.is_cancelled() {
            // The machine hands every parked job back together in `releasing`.
            self.ended(lease.job_id, kind, started, AttemptEnd::Parked);
            self.jobs.set_state(lease.job_id, JobState::Parked);
            return;
        }
        let leases = std::slice::from_ref(lease);
        match self
            .persist(|| {
                self.store
                    .release(leases, YIELD_PAUSE, crate::model::ReleaseReason::Yielded)
            })
            .await
        {
            Some(Ok(applied)) if applied.first() == Some(&true) => {
                self.ended(lease.job_id, kind, started, AttemptEnd::Yielded);
                self.jobs.remove(lease.job_id);
            }
            Some(Ok(_)) => self.finish_lease_lost(lease, kind, started),
            Some(Err(err)) => self.give_up(lease, err),
            None => self.jobs.set_state(lease.job_id, JobState::Aborted),
        }
    }

    async fn finish_failed(
        &self,
        lease: &Lease,
        kind: &str,
        attempt: i32,
        message: String,
        started: Instant,
    ) {
        let backoff = retry_backoff(attempt);
        match self
            .persist(|| self.store.fail(lease, &message, backoff))
            .await
        {
            Some(Ok(outcome)) => {
                let retry_in = (outcome == FailOutcome::Retry).then_some(backoff);
                let end = AttemptEnd::Failed {
                    error: &message,
                    retry_in,
                };
                self.ended(lease.job_id, kind, started, end);
                self.jobs.remove(lease.job_id);
            }
            Some(Err(StoreError::LeaseLost { .. })) => self.finish_lease_lost(lease, kind, started),
            Some(Err(err)) => self.give_up(lease, err),
            None => self.jobs.set_state(lease.job_id, JobState::Aborted),
        }
    }

    async fn finish_cancelled(&self, lease: &Lease, kind: &str, started: Instant) {
        match self.persist(|| self.store.finish_cancelled(lease)).await {
            Some(Ok(true)) => {
                self.ended(lease.job_id, kind, started, AttemptEnd::Cancelled);
                self.jobs.remove(lease.job_id);
            }
            Some(Ok(false)) | Some(Err(StoreError::LeaseLost { .. })) => {
                self.finish_lease_lost(lease, kind, started)
            }
            Some(Err(err)) => self.give_up(lease, err),
            None => self.jobs.set_state(lease.job_id, JobState::Aborted),
        }
    }

    fn finish_lease_lost(&self, lease: &Lease, kind: &str, started: Instant) {
        self.ended(lease.job_id, kind, started, AttemptEnd::LeaseLost);
        self.jobs.remove(lease.job_id);
    }

    /// A write failed for a reason retrying cannot fix: leave the lease to expire and be rescued.
    fn give_up(&self, lease: &Lease, err: StoreError) {
        tracing::error!(%err, "could not record the end of this attempt; its lease will expire and be rescued");
        self.jobs.remove(lease.job_id);
    }

    /// Runs a store write, retrying while the store is unreachable; None if a forced shutdown
    /// interrupts the retries (the machine then releases the lease).
    async fn persist<T, F, Fut>(&self, mut write: F) -> Option<Result<T, StoreError>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut delay = Duration::from_millis(50);
        loop {
            match write().await {
                Err(err) if err.is_transient() => {
                    self.health.failed(&err);
                    tracing::warn!(%err, ?delay, "store write failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.forced.cancelled() => return None,
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                other => {
                    match &other {
                        Ok(_) => self.health.succeeded(),
                        Err(err) => self.health.failed(err),
                    }
                    return Some(other);
                }
            }
        }
    }
}
