//! Job handlers: the [`Handler`] trait users implement, the [`JobContext`] they work through, and the
//! registry of kinds a worker runs.

pub mod cadence;
pub mod demo;
pub mod exec;
// Public for other layers and the tests, not part of the embedding surface.
#[doc(hidden)]
pub mod inflight;
pub mod noop;

use self::inflight::InFlight;
use crate::store::{ClaimedJob, JobId, SharedStore, StoreError};
use crate::telemetry::Metrics;
use async_trait::async_trait;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How a handler's run ended, when it did not fail.
#[derive(Clone, Debug, PartialEq)]
pub enum JobOutcome {
    /// The job is done; the value is stored as its `result`.
    Completed(Value),
    /// The job stopped at a checkpoint and should be resumed later (by any worker).
    Interrupted,
}

/// Why a handler's run failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A failed attempt: retried with backoff, `dead` when attempts are exhausted.
    #[error("{0}")]
    Failed(String),
    /// Another worker holds the job now; stop at once and write nothing more.
    #[error("lease lost")]
    LeaseLost,
}

/// Why a checkpoint could not be saved.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The attempt's lease is held by another worker now: stop at once.
    #[error("lease lost")]
    LeaseLost,
    /// The store did not answer; the job may keep working and try again at its next checkpoint.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

impl From<CheckpointError> for JobError {
    fn from(err: CheckpointError) -> Self {
        match err {
            CheckpointError::LeaseLost => JobError::LeaseLost,
            CheckpointError::Unavailable(msg) => JobError::Failed(msg),
        }
    }
}

/// A kind of job. Implement it to run your own jobs on handover's workers.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// The `kind` this handler runs.
    fn kind(&self) -> &str;

    /// Checks a payload before it is accepted by `submit`; the error is shown to the submitter.
    fn validate(&self, _payload: &Value) -> Result<(), String> {
        Ok(())
    }

    /// How far along a job is (0.0 to 1.0) given its payload and a checkpoint, for the pages.
    fn progress(&self, _payload: &Value, _checkpoint: &Value) -> Option<f64> {
        None
    }

    /// Runs one attempt. Save checkpoints with [`JobContext::save_checkpoint`]; when
    /// [`JobContext::stop_requested`] turns true, save one at the next boundary and return
    /// [`JobOutcome::Interrupted`].
    async fn run(&self, ctx: JobContext) -> Result<JobOutcome, JobError>;
}

/// The handlers a worker runs, by kind.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: BTreeMap<String, Arc<dyn Handler>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// The built-in kinds: `demo`, `exec` and `noop`.
    pub fn builtin() -> Self {
        Registry::new()
            .with(demo::DemoHandler)
            .with(exec::ExecHandler)
            .with(noop::NoopHandler)
    }

    /// Adds (or replaces) a handler.
    pub fn with(mut self, handler: impl Handler) -> Self {
        self.handlers
            .insert(handler.kind().to_string(), Arc::new(handler));
        self
    }

    /// The handler of `kind`, if one is registered.
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn Handler>> {
        self.handlers.get(kind)
    }

    /// The registered kinds, sorted.
    pub fn kinds(&self) -> Vec<String> {
        self.handlers.keys().cloned().collect()
    }
}

/// Checks a job kind name: non-empty, at most 64 characters of `[A-Za-z0-9_.-]`.
pub fn validate_kind(kind: &str) -> Result<(), String> {
    let valid_chars = kind
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if kind.is_empty() || kind.len() > 64 || !valid_chars {
        return Err(format!(
            "invalid job kind {kind:?}: use 1-64 characters of letters, digits, '_', '.', '-'"
        ));
    }
    Ok(())
}

/// Refuses a kind no worker can run: neither built in nor announced by any worker of `store`.
/// Returns the one-line reason, naming the kinds that are known.
pub async fn unknown_kind(
    store: &crate::store::SharedStore,
    kind: &str,
) -> crate::store::StoreResult<Option<String>> {
    if crate::model::BUILT_IN_KINDS.contains(&kind) {
        return Ok(None);
    }
    let mut known: Vec<String> = crate::model::BUILT_IN_KINDS
        .iter()
        .map(|k| k.to_string())
        .collect();
    for served in store.served_kinds().await? {
        if served == kind {
            return Ok(None);
        }
        if !known.contains(&served) {
            known.push(served);
        }
    }
    known.sort();
    Ok(Some(format!(
        "no worker of this store serves {kind:?} jobs (known kinds: {})",
        known.join(", ")
    )))
}

/// Everything a handler may know and do about the job it runs.
#[derive(Clone)]
pub struct JobContext {
    inner: Arc<ContextInner>,
}

struct ContextInner {
    job: ClaimedJob,
    handler: Arc<dyn Handler>,
    store: SharedStore,
    metrics: Arc<Metrics>,
    jobs: Arc<InFlight>,
    /// Cancelled when the worker wants jobs to stop at their next checkpoint.
    stop: CancellationToken,
    /// Cancelled when the job must stop at once (lease lost, or a forced shutdown).
    abandon: CancellationToken,
    /// Cancelled when an operator cancels the job.
    cancel: CancellationToken,
    /// How long a cancelled job's processes get between SIGTERM and SIGKILL (`--cancel-grace`).
    cancel_grace: std::time::Duration,
}

/// What tells an attempt to stop, and how.
pub(crate) struct AttemptSignals {
    /// Stop at the next checkpoint (the worker is draining).
    pub stop: CancellationToken,
    /// Stop at once (lease lost, forced shutdown).
    pub abandon: CancellationToken,
    /// An operator cancelled the job.
    pub cancel: CancellationToken,
    /// `--cancel-grace`.
    pub cancel_grace: std::time::Duration,
}

/// How often a checkpoint write is retried while the store is unavailable.
const CHECKPOINT_RETRIES: u32 = 3;

impl JobContext {
    pub(crate) fn new(
        job: ClaimedJob,
        handler: Arc<dyn Handler>,
        store: SharedStore,
        metrics: Arc<Metrics>,
        jobs: Arc<InFlight>,
        signals: AttemptSignals,
    ) -> Self {
        JobContext {
            inner: Arc::new(ContextInner {
                job,
                handler,
                store,
                metrics,
                jobs,
                stop: signals.stop,
                abandon: signals.abandon,
                cancel: signals.cancel,
                cancel_grace: signals.cancel_grace,
            }),
        }
    }

    /// The id of the job this attempt runs.
    pub fn job_id(&self) -> JobId {
        self.inner.job.lease.job_id
    }

    /// The job's kind.
    pub fn kind(&self) -> &str {
        &self.inner.job.kind
    }

    /// 1 for the first attempt; hand-backs at shutdown do not count.
    pub fn attempt(&self) -> i32 {
        self.inner.job.attempt
    }

    /// The job's payload, as submitted.
    pub fn payload(&self) -> &Value {
        &self.inner.job.payload
    }

    /// The checkpoint this attempt resumes from (None on a first run).
    pub fn resume_checkpoint(&self) -> Option<&Value> {
        self.inner.job.checkpoint.as_ref()
    }

    /// True once the worker asks jobs to stop at their next checkpoint boundary, or the job is
    /// cancelled.
    pub fn stop_requested(&self) -> bool {
        self.inner.stop.is_cancelled() || self.cancel_requested()
    }

    /// Resolves when the worker asks jobs to stop at their next checkpoint boundary, or the job
    /// is cancelled.
    pub async fn stopping(&self) {
        tokio::select! {
            _ = self.inner.stop.cancelled() => {}
            _ = self.inner.cancel.cancelled() => {}
        }
    }

    /// True once an operator has cancelled the job: stop as soon as possible; whatever the
    /// handler returns then (other than a completion) records the job `cancelled`.
    pub fn cancel_requested(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// Resolves when an operator cancels the job.
    pub async fn cancelled(&self) {
        self.inner.cancel.cancelled().await
    }

    /// Shows the end of what the job's process wrote on the worker's pages and `/api/status`,
    /// live (each call replaces the last).
    pub fn publish_output(&self, stdout: String, stderr: String) {
        self.inner
            .jobs
            .set_output(self.job_id(), inflight::OutputTail { stdout, stderr });
    }

    /// How long a cancelled job's processes get to exit after SIGTERM before SIGKILL.
    pub fn cancel_grace(&self) -> std::time::Duration {
        self.inner.cancel_grace
    }

    /// True when the job must stop at once without writing anything (lease lost or forced exit).
    /// Blocking loops should poll this.
    pub fn abandoned(&self) -> bool {
        self.inner.abandon.is_cancelled()
    }

    /// Resolves when the job must stop at once (lease lost, or a forced shutdown). A handler that
    /// owns resources (child processes) should release them then and return promptly.
    pub async fn abandoning(&self) {
        self.inner.abandon.cancelled().await
    }

    /// Saves a checkpoint, fenced by this attempt's lease.
    pub async fn save_checkpoint(&self, checkpoint: Value) -> Result<(), CheckpointError> {
        let lease = &self.inner.job.lease;
        let mut attempt = 0;
        loop {
            if self.abandoned() {
                return Err(CheckpointError::LeaseLost);
            }
            let started = Instant::now();
            match self.inner.store.checkpoint(lease, &checkpoint).await {
                Ok(()) => {
                    let metrics = &self.inner.metrics;
                    metrics
                        .checkpoint_duration
                        .observe(started.elapsed().as_secs_f64());
                    metrics.checkpoints.with_label_values(&[self.kind()]).inc();
                    let progress = self.inner.handler.progress(self.payload(), &checkpoint);
                    self.inner
                        .jobs
                        .set_checkpoint(lease.job_id, checkpoint, progress);
                    return Ok(());
                }
                Err(StoreError::LeaseLost { .. }) => {
                    self.inner.abandon.cancel();
                    return Err(CheckpointError::LeaseLost);
                }
                Err(err) if err.is_transient() && attempt < CHECKPOINT_RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
                Err(err) => return Err(CheckpointError::Unavailable(err.to_string())),
            }
        }
    }
}
