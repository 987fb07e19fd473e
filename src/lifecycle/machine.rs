//! The phase machine: the one place where shutdown is decided.
//!
//! Every trigger (signal, HTTP, remote request, a failed task) arrives as a command on one channel. The machine
//! turns readiness off before anything else, then walks `draining → checkpointing → releasing →
//! deregistering → stopped` inside the `--grace` deadline, taking the forced path when the deadline
//! passes or a second signal arrives. Nothing else may change the phase.

use super::claims::ClaimControl;
use super::handle::{CancelRefused, Command, DrainAnswer, DrainOrder, MachineHandle};
use super::status::{LivedPhase, Status};
use crate::jobs::inflight::{InFlight, JobState, LeasedJob};
use crate::model::{JobId, Lease, Mode, Outcome, Phase, ReleaseReason, ShutdownRecord, Task};
use crate::store::{SharedStore, StoreError, StoreResult};
use crate::telemetry::events::{JobReleased, PhaseEnded, ShutdownEnded};
use crate::telemetry::phase_spans::PHASE_SPAN_PREFIX;
use crate::telemetry::tracing::TraceFlusher;
use crate::telemetry::Metrics;
use chrono::{DateTime, Utc};
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::field::Empty;
use tracing::Span;

/// A store write still gets this long when the deadline has (nearly) passed; with the store down
/// the whole forced path then ends within a few of these after `--grace`.
const LATE_WRITE_BUDGET: Duration = Duration::from_millis(150);
/// On the forced path, how long abandoned handlers get to let go (an exec job kills its process
/// group and waits for it) before their leases are released.
const ABANDON_SETTLE: Duration = Duration::from_secs(1);
/// The forced path starts this long before `--grace` ends, so that abandoning handlers and handing
/// their leases back still happen inside `--grace`: a tenth of it, at most one second.
pub fn force_reserve(grace: Duration) -> Duration {
    (grace / 10).min(Duration::from_secs(1))
}
/// In `finish` mode, the share of `--grace` kept for checkpointing and handing back (at most 10 s).
const FINISH_RESERVE_DIVISOR: u32 = 3;
const FINISH_RESERVE_MAX: Duration = Duration::from_secs(10);

/// The worker parts the machine drives.
pub struct WorkerParts {
    /// The worker's id in the store.
    pub worker_id: String,
    /// The worker's name.
    pub worker_name: String,
    /// The store the shutdown writes to.
    pub store: SharedStore,
    /// Where phases and shutdowns are counted.
    pub metrics: Arc<Metrics>,
    /// The claim loop's switch.
    pub claims: Arc<ClaimControl>,
    /// The jobs this worker holds and runs.
    pub jobs: Arc<InFlight>,
    /// Cancelled in `checkpointing`.
    pub checkpoint_request: CancellationToken,
    /// Cancelled on the forced path.
    pub forced: CancellationToken,
    /// Cancelled in `deregistering`: stops the heartbeat and the rescuer.
    pub background: CancellationToken,
}

/// The timings the machine keeps.
#[derive(Clone, Copy, Debug)]
pub struct MachineSettings {
    /// `--grace`: the whole shutdown's budget.
    pub grace: Duration,
    /// `--drain-delay`: how long `draining` lasts before jobs are checkpointed.
    pub drain_delay: Duration,
}

impl MachineSettings {
    /// In `finish` mode, how long jobs may run on before they are checkpointed.
    pub fn finish_budget(&self) -> Duration {
        let reserve = (self.grace / FINISH_RESERVE_DIVISOR).min(FINISH_RESERVE_MAX);
        self.grace.saturating_sub(reserve)
    }
}

/// How a shutdown ended.
#[derive(Clone, Debug)]
pub struct ShutdownSummary {
    /// The shutdown as recorded in the store: trigger, mode, outcome, phases, jobs released.
    pub record: ShutdownRecord,
    /// Store writes of the shutdown that never succeeded (hand-back, worker row, shutdown record):
    /// the worker must not exit 0 as if they had.
    pub unwritten: Vec<&'static str>,
    /// Essential tasks that failed while the worker ran (filled in by the app's supervisor).
    pub failed_tasks: Vec<Task>,
}

impl ShutdownSummary {
    /// Whether the shutdown was clean or forced.
    pub fn outcome(&self) -> Outcome {
        self.record.outcome
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ForceReason {
    Deadline,
    SecondSignal,
}

/// Why a wait inside a drain ended early.
enum Interruption {
    Force(ForceReason),
    Cancelled(oneshot::Sender<Result<Status, CancelRefused>>),
}

struct ActiveDrain {
    order: DrainOrder,
    started: Instant,
    started_at: DateTime<Utc>,
    /// The end of `--grace`.
    deadline: Instant,
    /// When the forced path starts (a reserve before the deadline).
    force_at: Instant,
    cancellable: bool,
    /// Index in the timeline of this drain's `draining` entry.
    first_phase: usize,
    signals: u32,
    /// The `shutdown` span; each phase gets a child span.
    span: Span,
}

/// The one owner of the phase: runs a worker from `running` to `stopped` (SPEC §4).
pub struct PhaseMachine {
    commands: mpsc::UnboundedReceiver<Command>,
    commands_open: bool,
    status: watch::Sender<Status>,
    changes: broadcast::Sender<Status>,
    timeline: Vec<LivedPhase>,
    parts: WorkerParts,
    settings: MachineSettings,
    drain: Option<ActiveDrain>,
    outcome: Outcome,
    /// Jobs taken out of the registry to be handed back.
    to_release: Vec<LeasedJob>,
    jobs_released: i64,
    forced_jobs: Vec<JobId>,
    /// Shutdown writes the store never took.
    unwritten: Vec<&'static str>,
    /// The span of the current shutdown phase (closed when the phase ends).
    phase_span: Option<Span>,
    traces: TraceFlusher,
}

impl PhaseMachine {
    /// Creates the machine in `starting`, with the handle everyone else uses.
    pub fn new(parts: WorkerParts, settings: MachineSettings) -> (PhaseMachine, MachineHandle) {
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let (status, status_rx) = watch::channel(Status::starting());
        let changes = broadcast::channel(64).0;
        let machine = PhaseMachine {
            commands,
            commands_open: true,
            status,
            changes: changes.clone(),
            timeline: vec![LivedPhase::new(Phase::Starting)],
            parts,
            settings,
            drain: None,
            outcome: Outcome::Clean,
            to_release: Vec::new(),
            jobs_released: 0,
            forced_jobs: Vec::new(),
            unwritten: Vec::new(),
            phase_span: None,
            traces: TraceFlusher::default(),
        };
        let handle = MachineHandle {
            commands: commands_tx,
            status: status_rx,
            changes,
            signals: Arc::new(watch::channel(0).0),
            failure: Arc::new(OnceLock::new()),
        };
        (machine, handle)
    }

    /// Lets `deregistering` flush exported spans.
    pub fn set_trace_flusher(&mut self, traces: TraceFlusher) {
        self.traces = traces;
    }

    /// Runs the worker from `running` to `stopped`.
    pub async fn run(mut self) -> ShutdownSummary {
        self.enter(Phase::Running);
        self.parts.claims.resume();
        let mut forced = loop {
            let (order, reply) = self.next_drain().await;
            self.begin_drain(order, reply);
            self.parts.claims.pause().await;
            match self.draining().await {
                Ok(()) => break None,
                Err(Interruption::Cancelled(reply)) => self.resume(reply),
                Err(Interruption::Force(why)) => break Some(why),
            }
        };
        if forced.is_none() {
            forced = self.checkpointing().await.err();
        }
        if forced.is_none() {
            forced = self.releasing().await.err();
        }
        if let Some(why) = forced {
            self.force(why).await;
        }
        self.deregistering().await
    }

    fn publish(&self) {
        let drain = self.drain.as_ref();
        // What operators count down to: the moment the forced path starts.
        let deadline = drain.map(|d| {
            d.started_at + chrono::Duration::from_std(d.force_at - d.started).unwrap_or_default()
        });
        let phase = self.current_phase();
        let status = Status {
            phase,
            trigger: drain.map(|d| d.order.trigger),
            mode: drain.map(|d| d.order.mode),
            requested_by: drain.and_then(|d| d.order.requested_by.clone()),
            reason: drain.and_then(|d| d.order.reason.clone()),
            deadline,
            cancellable: drain.is_some_and(|d| d.cancellable) && phase == Phase::Draining,
            outcome: (phase == Phase::Stopped).then_some(self.outcome),
            phases: self.timeline.iter().map(LivedPhase::span).collect(),
        };
        // Every change goes to the broadcast (live pages get one event per phase change), the
        // latest also to the watch (probes and polls).
        let _ = self.changes.send(status.clone());
        self.status.send_replace(status);
    }

    fn current_phase(&self) -> Phase {
        self.timeline.last().map_or(Phase::Starting, |p| p.phase)
    }

    /// Ends the current phase once: records its duration, emits it (shutdown phases are observed
    /// and logged inside their span), and closes that span.
    fn finish_current_phase(&mut self) {
        let trigger = self.drain.as_ref().map(|d| d.order.trigger);
        let ended_span = self.phase_span.take();
        let Some(current) = self.timeline.last_mut() else {
            return;
        };
        if current.duration.is_some() {
            return;
        }
        let lived = PhaseEnded {
            phase: current.phase,
            entered: current.entered,
            trigger,
            span: ended_span.as_ref(),
        }
        .emit(&self.parts.metrics);
        current.duration = Some(lived);
    }

    /// Ends the current phase and enters `phase`, publishing the new status.
    fn enter(&mut self, phase: Phase) {
        let metrics = self.parts.metrics.clone();
        // A scrape shows the ended phase's timing together with the new phase, or neither.
        let _scrapes_wait = metrics.hold_scrapes();
        self.finish_current_phase();
        if let (Some(drain), true) = (&self.drain, Phase::SHUTDOWN.contains(&phase)) {
            self.phase_span = Some(tracing::info_span!(
                parent: &drain.span,
                "shutdown_phase",
                otel.name = %format_args!("{PHASE_SPAN_PREFIX}{phase}"),
                phase = %phase,
                trigger = %drain.order.trigger,
                duration_ms = Empty,
            ));
        }
        // The phase's clock starts once its span exists; the exported span is given the length
        // this clock measures (`telemetry::phase_spans`), which the metric observes too.
        self.timeline.push(LivedPhase::new(phase));
        tracing::debug!(%phase, "phase entered");
        self.publish();
    }

    /// Waits in `running` for a drain, refusing cancels (there is nothing to cancel).
    async fn next_drain(&mut self) -> (DrainOrder, Option<oneshot::Sender<DrainAnswer>>) {
        loop {
            match self.recv().await {
                Command::Drain { order, reply } => return (order, reply),
                Command::Cancel { reply } => {
                    let _ = reply.send(Err(CancelRefused::NotDraining));
                }
            }
        }
    }

    async fn recv(&mut self) -> Command {
        if self.commands_open {
            if let Some(command) = self.commands.recv().await {
                return command;
            }
            self.commands_open = false;
        }
        std::future::pending().await
    }

    fn begin_drain(&mut self, order: DrainOrder, reply: Option<oneshot::Sender<DrainAnswer>>) {
        let now = Instant::now();
        let span = tracing::info_span!(
            parent: None,
            "shutdown",
            worker.id = %self.parts.worker_id,
            worker.name = %self.parts.worker_name,
            trigger = %order.trigger,
            mode = %order.mode,
            reason = order.reason.as_deref().unwrap_or(""),
            requested_by = order.requested_by.as_deref().unwrap_or(""),
            outcome = Empty,
            jobs_released = Empty,
        );
        self.drain = Some(ActiveDrain {
            span,
            signals: u32::from(order.trigger.is_signal()),
            cancellable: order.trigger.is_cancellable(),
            started: now,
            started_at: Utc::now(),
            deadline: now + self.settings.grace,
            force_at: now + self.settings.grace - force_reserve(self.settings.grace),
            first_phase: self.timeline.len(),
            order,
        });
        // Readiness turns false here, before anything else happens.
        self.enter(Phase::Draining);
        if let Some(drain) = &self.drain {
            let _entered = drain.span.enter();
            tracing::info!(
                trigger = %drain.order.trigger,
                mode = %drain.order.mode,
                reason = drain.order.reason.as_deref().unwrap_or(""),
                requested_by = drain.order.requested_by.as_deref().unwrap_or(""),
                grace = ?self.settings.grace,
                "drain started"
            );
        }
        if let Some(reply) = reply {
            let _ = reply.send(DrainAnswer::Started(self.status.borrow().clone()));
        }
    }

    fn resume(&mut self, reply: oneshot::Sender<Result<Status, CancelRefused>>) {
        if let Some(drain) = &self.drain {
            drain.span.record("outcome", "cancelled");
            drain
                .span
                .in_scope(|| tracing::info!("drain cancelled; back to running"));
        }
        self.enter(Phase::Running);
        self.drain = None;
        self.publish();
        self.parts.claims.resume();
        let _ = reply.send(Ok(self.status.borrow().clone()));
    }

    fn drain(&self) -> &ActiveDrain {
        self.drain.as_ref().expect("a drain is under way")
    }

    /// Waits for `until`, answering commands meanwhile; ends early on the deadline, a second
    /// signal, or an accepted cancel.
    async fn wait<F: Future>(&mut self, until: F) -> Result<F::Output, Interruption> {
        tokio::pin!(until);
        let deadline = self.drain().force_at;
        loop {
            tokio::select! {
                output = &mut until => return Ok(output),
                _ = sleep_until(deadline) => return Err(Interruption::Force(ForceReason::Deadline)),
                command = self.recv() => {
                    if let Some(interruption) = self.answer_during_drain(command) {
                        return Err(interruption);
                    }
                }
            }
        }
    }

    fn answer_during_drain(&mut self, command: Command) -> Option<Interruption> {
        let phase = self.current_phase();
        match command {
            Command::Drain { order, reply } => {
                let drain = self.drain.as_mut().expect("a drain is under way");
                if order.trigger.is_signal() {
                    drain.signals += 1;
                    drain.cancellable = false;
                    if drain.signals >= 2 {
                        return Some(Interruption::Force(ForceReason::SecondSignal));
                    }
                    tracing::info!(signal = %order.trigger, "signal during drain: it can no longer be cancelled; another signal forces");
                    self.publish();
                }
                if let Some(reply) = reply {
                    let _ = reply.send(DrainAnswer::AlreadyShuttingDown(
                        self.status.borrow().clone(),
                    ));
                }
                None
            }
            Command::Cancel { reply } => {
                let drain = self.drain();
                if phase != Phase::Draining {
                    let _ = reply.send(Err(CancelRefused::TooLate(phase)));
                    None
                } else if !drain.cancellable {
                    let _ = reply.send(Err(CancelRefused::NotCancellable(drain.order.trigger)));
                    None
                } else {
                    Some(Interruption::Cancelled(reply))
                }
            }
        }
    }

    /// `draining`: claims are paused; hand the held jobs (claimed ahead, never started) back,
    /// wait out `--drain-delay`, and in `finish` mode let the started jobs finish.
    async fn draining(&mut self) -> Result<(), Interruption> {
        self.hand_back_held().await?;
        self.wait(tokio::time::sleep(self.settings.drain_delay))
            .await?;
        if self.drain().order.mode == Mode::Finish {
            let budget_end = self.drain().started + self.settings.finish_budget();
            let jobs = self.parts.jobs.clone();
            self.wait(async move {
                tokio::select! {
                    _ = jobs.wait_until_empty() => {}
                    _ = sleep_until(budget_end) => {
                        tracing::info!(still_held = jobs.len(), "finish budget spent; checkpointing the rest");
                    }
                }
            })
            .await?;
        }
        Ok(())
    }

    /// Hands every held job back, free, in one write. Commands wait meanwhile (the write is short);
    /// a cancel that arrives is answered afterwards, with the claiming resumed.
    async fn hand_back_held(&mut self) -> Result<(), Interruption> {
        let held = self.parts.jobs.take_held();
        if held.is_empty() {
            return Ok(());
        }
        let leases: Vec<Lease> = held.iter().map(|j| j.lease.clone()).collect();
        let store = self.parts.store.clone();
        let force_at = self.drain().force_at;
        match tokio::time::timeout_at(
            force_at,
            release_until_written(store, leases, ReleaseReason::Prefetch),
        )
        .await
        {
            Ok(applied) => {
                tracing::info!(held = held.len(), "held jobs handed back");
                self.count_releases(&held, applied, ReleaseReason::Prefetch);
                Ok(())
            }
            Err(_) => {
                // The forced path hands them back with the rest.
                self.to_release = held;
                Err(Interruption::Force(ForceReason::Deadline))
            }
        }
    }

    /// `checkpointing`: ask every handler to stop at its next checkpoint and wait for all of them.
    async fn checkpointing(&mut self) -> Result<(), ForceReason> {
        self.enter(Phase::Checkpointing);
        self.parts.checkpoint_request.cancel();
        let jobs = self.parts.jobs.clone();
        self.wait(async move { jobs.wait_until_attempts_end().await })
            .await
            .map_err(Self::force_reason)
    }

    fn force_reason(interruption: Interruption) -> ForceReason {
        match interruption {
            Interruption::Force(why) => why,
            Interruption::Cancelled(_) => unreachable!("cancel is refused after draining"),
        }
    }

    /// `releasing`: hand every parked job back to `pending` with its checkpoint, in one write.
    async fn releasing(&mut self) -> Result<(), ForceReason> {
        self.enter(Phase::Releasing);
        self.to_release = self.parts.jobs.take_all();
        if self.to_release.is_empty() {
            return Ok(());
        }
        let leases: Vec<Lease> = self.to_release.iter().map(|j| j.lease.clone()).collect();
        let store = self.parts.store.clone();
        let applied = self
            .wait(release_until_written(
                store,
                leases,
                ReleaseReason::Shutdown,
            ))
            .await
            .map_err(Self::force_reason)?;
        let held = std::mem::take(&mut self.to_release);
        self.count_releases(&held, applied, ReleaseReason::Shutdown);
        Ok(())
    }

    fn count_releases(
        &mut self,
        held: &[LeasedJob],
        applied: StoreResult<Vec<bool>>,
        reason: ReleaseReason,
    ) {
        match applied {
            Ok(flags) => {
                for (job, released) in held.iter().zip(flags) {
                    let reason = if released {
                        self.jobs_released += 1;
                        if job.state == JobState::Held {
                            ReleaseReason::Prefetch
                        } else {
                            reason
                        }
                    } else if matches!(job.state, JobState::Parked | JobState::Held) {
                        // Nothing of ours was writing it: another worker took it.
                        ReleaseReason::LeaseLost
                    } else {
                        continue;
                    };
                    JobReleased {
                        job_id: job.lease.job_id,
                        kind: &job.kind,
                        reason,
                    }
                    .emit(&self.parts.metrics);
                }
                tracing::info!(released = self.jobs_released, "jobs handed back");
            }
            Err(err) => {
                let ids: Vec<JobId> = held.iter().map(|j| j.lease.job_id).collect();
                self.unwritten.push("hand-back");
                tracing::error!(%err, jobs = ?ids, "could not hand jobs back; their leases will expire and be rescued");
            }
        }
    }

    /// The forced path: abandon what still runs, release every lease with its last checkpoint.
    async fn force(&mut self, why: ForceReason) {
        self.outcome = Outcome::Forced;
        let views = self.parts.jobs.views();
        let still_running: Vec<String> = views
            .iter()
            .filter(|v| v.state != JobState::Parked)
            .map(|v| {
                format!(
                    "job {} ({}, attempt {}, checkpoint {})",
                    v.job_id,
                    v.kind,
                    v.attempt,
                    v.checkpoint
                        .as_ref()
                        .map_or_else(|| "none".to_string(), |c| c.to_string())
                )
            })
            .collect();
        self.forced_jobs = views
            .iter()
            .filter(|v| v.state != JobState::Parked)
            .map(|v| v.job_id)
            .collect();
        let cause = match why {
            ForceReason::Deadline => format!("grace period of {:?} expired", self.settings.grace),
            ForceReason::SecondSignal => "second signal received".to_string(),
        };
        let still_running = if still_running.is_empty() {
            "nothing".to_string()
        } else {
            still_running.join("; ")
        };
        // Entered only around the log line: a span guard held across an await would make the
        // machine's future !Send.
        self.drain().span.in_scope(
            || tracing::warn!(cause = %cause, still_running = %still_running, "forcing shutdown"),
        );
        self.parts.checkpoint_request.cancel();
        self.parts.forced.cancel();
        let jobs = self.parts.jobs.clone();
        let settle = ABANDON_SETTLE.min(self.time_left() / 2);
        let _ = tokio::time::timeout(settle, jobs.wait_until_attempts_end()).await;
        if self.current_phase() != Phase::Releasing {
            self.enter(Phase::Releasing);
        }
        let mut held = std::mem::take(&mut self.to_release);
        held.extend(self.parts.jobs.take_all());
        if held.is_empty() {
            return;
        }
        let leases: Vec<Lease> = held.iter().map(|j| j.lease.clone()).collect();
        let store = self.parts.store.clone();
        let applied = tokio::time::timeout(
            self.write_budget(),
            release_until_written(store, leases, ReleaseReason::Forced),
        )
        .await
        .unwrap_or(Err(StoreError::TimedOut {
            operation: "the forced hand-back",
            after: self.write_budget(),
        }));
        self.count_releases(&held, applied, ReleaseReason::Forced);
    }

    fn time_left(&self) -> Duration {
        self.drain()
            .deadline
            .saturating_duration_since(Instant::now())
    }

    /// Time left before the deadline, but never less than a short budget for a late write.
    fn write_budget(&self) -> Duration {
        self.time_left().max(LATE_WRITE_BUDGET)
    }

    /// `deregistering`: mark the worker stopped and write the shutdown record, then `stopped`.
    async fn deregistering(mut self) -> ShutdownSummary {
        self.enter(Phase::Deregistering);
        self.parts.background.cancel();
        let budget = self.write_budget();
        let store = self.parts.store.clone();
        let worker_id = self.parts.worker_id.clone();
        let deregistered = until_written("deregistering", budget, || {
            store.deregister_worker(&worker_id)
        })
        .await;
        if let Err(err) = deregistered {
            self.unwritten.push("worker row");
            tracing::error!(%err, "could not mark the worker stopped; a rescuer will declare it dead");
        }
        let drain = self.drain();
        let record = ShutdownRecord {
            worker_id: self.parts.worker_id.clone(),
            worker_name: self.parts.worker_name.clone(),
            trigger: drain.order.trigger,
            mode: drain.order.mode,
            outcome: self.outcome,
            // The record must never be lost to its own content: one printable line each.
            requested_by: drain
                .order
                .requested_by
                .as_deref()
                .map(crate::text::escape_control),
            reason: drain
                .order
                .reason
                .as_deref()
                .map(crate::text::escape_control),
            started_at: drain.started_at,
            duration_ms: drain.started.elapsed().as_secs_f64() * 1000.0,
            phases: self.timeline[drain.first_phase..]
                .iter()
                .map(LivedPhase::span_so_far)
                .collect(),
            jobs_released: self.jobs_released,
            forced_jobs: self.forced_jobs.clone(),
        };
        let recorded = until_written("the shutdown record", self.write_budget(), || {
            store.record_shutdown(&record)
        })
        .await;
        let record_lost = recorded.is_err();
        if let Err(err) = recorded {
            tracing::error!(%err, "could not write the shutdown record; it is lost");
        }
        let (trigger, mode, started) = (drain.order.trigger, drain.order.mode, drain.started);
        ShutdownEnded::record_in(self.outcome, self.jobs_released, &drain.span);
        if record_lost {
            self.unwritten.push("shutdown record");
        }
        // Close `deregistering` and the shutdown span so the flush exports the whole shutdown,
        // inside the deadline. (The flush's own time shows in the total, not in the phase.)
        self.finish_current_phase();
        if let Some(drain) = self.drain.as_mut() {
            // The exported span ends at its last exit, not when it is closed: without this it
            // would end where it was last entered ("drain started"), before its own phases.
            drain.span.in_scope(|| {});
            drain.span = Span::none();
        }
        self.traces.flush(self.write_budget()).await;
        // Emitted before `stopped` is published, so no scrape sees a stop without its shutdown.
        ShutdownEnded {
            trigger,
            mode,
            outcome: self.outcome,
            took: started.elapsed(),
            released: self.jobs_released,
        }
        .emit(&self.parts.metrics);
        self.enter(Phase::Stopped);
        ShutdownSummary {
            record,
            unwritten: self.unwritten,
            failed_tasks: Vec::new(),
        }
    }
}

/// Runs a store write until it succeeds, fails for a reason other than the store being down, or
/// `budget` passes.
async fn until_written<T, F, Fut>(
    operation: &'static str,
    budget: Duration,
    write: F,
) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = StoreResult<T>>,
{
    StoreError::within(operation, budget, retry_while_down(write)).await
}

/// Runs a store write until it succeeds or fails for a reason other than the store being down
/// (the caller bounds the time).
async fn retry_while_down<T, F, Fut>(mut write: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = StoreResult<T>>,
{
    let mut delay = Duration::from_millis(50);
    loop {
        match write().await {
            Err(err) if err.is_transient() => {
                tracing::warn!(%err, "shutdown write failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            other => return other,
        }
    }
}

/// Releases leases, retrying while the store is unreachable (the caller bounds the time).
async fn release_until_written(
    store: SharedStore,
    leases: Vec<Lease>,
    reason: ReleaseReason,
) -> StoreResult<Vec<bool>> {
    retry_while_down(|| store.release(&leases, Duration::ZERO, reason)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_budget_keeps_a_third_of_grace_up_to_ten_seconds() {
        let settings = |grace| MachineSettings {
            grace: Duration::from_secs(grace),
            drain_delay: Duration::ZERO,
        };
        assert_eq!(settings(30).finish_budget(), Duration::from_secs(20));
        assert_eq!(settings(60).finish_budget(), Duration::from_secs(50));
        assert_eq!(settings(3).finish_budget(), Duration::from_secs(2));
    }
}
