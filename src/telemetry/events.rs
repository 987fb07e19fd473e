//! Typed events: each job outcome, each phase change, the end of a shutdown and a failed task is
//! one value whose `emit` writes the log line, the metric and the span field together, so the
//! three never disagree. Label values come from the model's enums, never from loose strings.

use super::{phase_spans, Metrics};
use crate::model::{
    AttemptOutcome, JobId, Mode, Outcome, Phase, PruneReport, ReleaseReason, Task, Trigger,
};
use std::time::Duration;
use tokio::time::Instant;
use tracing::Span;

/// How an attempt ended on this worker.
#[derive(Clone, Copy, Debug)]
pub enum AttemptEnd<'a> {
    Completed,
    /// A failed attempt, retried after `retry_in`, or dead when that is `None`.
    Failed {
        error: &'a str,
        retry_in: Option<Duration>,
    },
    /// Stopped at a checkpoint for the machine to hand back with the others.
    Parked,
    /// Handed back at its own request (exec exit 75) outside a shutdown.
    Yielded,
    /// Another worker holds the job now; this worker stopped it.
    LeaseLost,
    /// Abandoned by a forced shutdown; the machine hands its lease back.
    Forced,
    /// Stopped because an operator cancelled it; recorded `cancelled`.
    Cancelled,
}

impl AttemptEnd<'_> {
    /// The `outcome` label of `handover_job_duration_seconds`.
    pub fn outcome(&self) -> AttemptOutcome {
        match self {
            AttemptEnd::Completed => AttemptOutcome::Completed,
            AttemptEnd::Failed { .. } => AttemptOutcome::Failed,
            AttemptEnd::Parked | AttemptEnd::Yielded => AttemptOutcome::Interrupted,
            AttemptEnd::LeaseLost => AttemptOutcome::LeaseLost,
            AttemptEnd::Forced => AttemptOutcome::Forced,
            AttemptEnd::Cancelled => AttemptOutcome::Cancelled,
        }
    }
}

/// One attempt's end, emitted once, inside the attempt's `job` span.
pub struct AttemptEnded<'a> {
    pub kind: &'a str,
    pub took: Duration,
    pub checkpoints: u64,
    pub end: AttemptEnd<'a>,
}

impl AttemptEnded<'_> {
    pub fn emit(&self, metrics: &Metrics) {
        let outcome = self.end.outcome();
        let span = Span::current();
        span.record("outcome", outcome.as_str());
        span.record("checkpoints", self.checkpoints);
        metrics
            .job_duration
            .with_label_values(&[self.kind, outcome.as_str()])
            .observe(self.took.as_secs_f64());
        match self.end {
            AttemptEnd::Completed => {
                metrics.jobs_completed.with_label_values(&[self.kind]).inc();
                tracing::debug!("job completed");
            }
            AttemptEnd::Failed { error, retry_in } => {
                metrics.jobs_failed.with_label_values(&[self.kind]).inc();
                match retry_in {
                    Some(retry_in) => tracing::warn!(%error, ?retry_in, "job attempt failed"),
                    None => tracing::error!(
                        %error,
                        "job attempt failed; attempts exhausted, job is dead"
                    ),
                }
            }
            AttemptEnd::Parked => tracing::debug!("job stopped at a checkpoint"),
            AttemptEnd::Yielded => {
                count_release(metrics, self.kind, ReleaseReason::Yielded);
                tracing::info!("job handed back at its own request");
            }
            AttemptEnd::LeaseLost => {
                count_release(metrics, self.kind, ReleaseReason::LeaseLost);
                tracing::warn!("lease lost: another worker holds this job now; stopped it");
            }
            AttemptEnd::Forced => tracing::debug!("job abandoned by the forced shutdown"),
            AttemptEnd::Cancelled => {
                metrics.jobs_cancelled.with_label_values(&[self.kind]).inc();
                tracing::info!("job cancelled by an operator; stopped and recorded cancelled");
            }
        }
    }
}

/// A held job let go by the phase machine (handed back, or found taken by another worker).
pub struct JobReleased<'a> {
    pub job_id: JobId,
    pub kind: &'a str,
    pub reason: ReleaseReason,
}

impl JobReleased<'_> {
    pub fn emit(&self, metrics: &Metrics) {
        count_release(metrics, self.kind, self.reason);
        tracing::debug!(job_id = self.job_id, kind = self.kind, reason = %self.reason, "job let go");
    }
}

fn count_release(metrics: &Metrics, kind: &str, reason: ReleaseReason) {
    if reason == ReleaseReason::LeaseLost {
        metrics.lease_lost.inc();
    }
    metrics
        .jobs_released
        .with_label_values(&[kind, reason.as_str()])
        .inc();
}

/// Jobs this worker's rescuer returned to the queue after their lease expired.
pub struct JobsRescued<'a> {
    pub jobs: &'a [JobId],
}

impl JobsRescued<'_> {
    pub fn emit(&self, metrics: &Metrics) {
        if self.jobs.is_empty() {
            return;
        }
        metrics.jobs_rescued.inc_by(self.jobs.len() as u64);
        tracing::warn!(jobs = ?self.jobs, "rescued jobs whose lease expired");
    }
}

/// A phase ended after `lived`; shutdown phases are observed per trigger and logged in their span.
pub struct PhaseEnded<'a> {
    pub phase: Phase,
    /// When the phase began (its clock; its span was opened at the same moment).
    pub entered: Instant,
    pub trigger: Option<Trigger>,
    /// The phase's own span (shutdown phases have one).
    pub span: Option<&'a Span>,
}

impl PhaseEnded<'_> {
    /// Logs, records and observes the phase's end; returns how long it lived. The duration is
    /// read once, inside the phase's span: the metric, the log line, the record and the span's
    /// `duration_ms` are one figure, and the exported span is given exactly that length
    /// (see [`crate::telemetry::phase_spans`]).
    pub fn emit(&self, metrics: &Metrics) -> Duration {
        let (Some(trigger), true) = (self.trigger, Phase::SHUTDOWN.contains(&self.phase)) else {
            return self.entered.elapsed();
        };
        let current = Span::current();
        let span = self.span.unwrap_or(&current);
        span.in_scope(|| {
            let lived = self.entered.elapsed();
            let millis = lived.as_secs_f64() * 1000.0;
            span.record(phase_spans::DURATION_ATTRIBUTE, millis);
            metrics
                .shutdown_phase_duration
                .with_label_values(&[self.phase.as_str(), trigger.as_str()])
                .observe(lived.as_secs_f64());
            tracing::info!(
                phase = %self.phase,
                duration_ms = format_args!("{millis:.1}"),
                "phase finished"
            );
            lived
        })
    }
}

/// A shutdown finished (emitted just before `stopped` is published, so no scrape sees a stop
/// without its shutdown).
pub struct ShutdownEnded {
    pub trigger: Trigger,
    pub mode: Mode,
    pub outcome: Outcome,
    pub took: Duration,
    pub released: i64,
}

impl ShutdownEnded {
    /// The `shutdown` span's own fields are recorded before it is closed and flushed, by
    /// [`ShutdownEnded::record_in`].
    pub fn emit(&self, metrics: &Metrics) {
        metrics
            .shutdown_duration
            .with_label_values(&[self.trigger.as_str(), self.outcome.as_str()])
            .observe(self.took.as_secs_f64());
        metrics
            .shutdowns
            .with_label_values(&[
                self.trigger.as_str(),
                self.mode.as_str(),
                self.outcome.as_str(),
            ])
            .inc();
        tracing::info!(
            outcome = %self.outcome,
            total_ms = format_args!("{:.1}", self.took.as_secs_f64() * 1000.0),
            released = self.released,
            "stopped"
        );
    }
}

impl ShutdownEnded {
    /// Records the outcome on the `shutdown` span (before the span ends and is exported).
    pub fn record_in(outcome: Outcome, released: i64, span: &Span) {
        span.record("outcome", outcome.as_str());
        span.record("jobs_released", released);
    }
}

/// An essential task panicked or ended while the worker needed it.
pub struct TaskFailed<'a> {
    pub task: Task,
    /// "panicked: ..." or "ended unexpectedly".
    pub why: &'a str,
}

impl TaskFailed<'_> {
    pub fn emit(&self, metrics: &Metrics) {
        metrics
            .task_failures
            .with_label_values(&[self.task.as_str()])
            .inc();
        tracing::error!(task = %self.task, why = self.why, "essential task failed; draining this worker");
    }
}

/// Rows a retention batch deleted (counted as each batch commits, so a pass cut short counts
/// what it did).
pub struct RowsPruned<'a> {
    pub deleted: &'a PruneReport,
}

impl RowsPruned<'_> {
    pub fn emit(&self, metrics: &Metrics) {
        for (table, rows) in self.deleted.by_table() {
            if rows > 0 {
                metrics
                    .pruned
                    .with_label_values(&[table.as_str()])
                    .inc_by(rows);
            }
        }
    }
}
