//! The phase machine's deadlines (SPEC §4) on paused virtual time: `--grace`, the forced path's
//! reserve, the finish budget, a second signal, cancelling, and `--drain-delay`, each asserted at
//! the exact virtual moment it happens instead of within wall-clock margins.
//!
//! Each test drives [`PhaseMachine`] directly (joined with the test's own driver on the paused
//! current-thread runtime), with simulated attempts ([`Sim`]) registered in its `InFlight`, and
//! [`MemoryStore`], an in-memory store, never a real one. Paused time cannot coexist with real I/O: the clock jumps to the next
//! timer as soon as the runtime has nothing to run, and a real store (sqlx on SQLite or PostgreSQL)
//! works on other threads, so while one of its writes is in flight the runtime looks idle and the
//! clock would leap to the next deadline, firing the forced path in the middle of a hand-back.
//! `MemoryStore` answers at once on the test's own thread, so virtual time only moves when the
//! machine or a simulated job waits on a timer. How the machine behaves against the real stores
//! (slow, down, or corrupt ones included) stays covered by the process tests (`tests/shutdown.rs`,
//! `tests/faults.rs`, `tests/pg_outage.rs`).

use async_trait::async_trait;
use handover::jobs::inflight::{InFlight, JobState};
use handover::lifecycle::{
    CancelRefused, ClaimControl, DrainAnswer, DrainOrder, MachineHandle, MachineSettings, Mode,
    Outcome, Phase, PhaseMachine, ShutdownSummary, Trigger, WorkerParts,
};
use handover::model::ReleaseReason;
use handover::store::{
    ClaimedJob, DrainCost, DrainRequest, FailOutcome, HeartbeatReport, Job, JobFilter, JobId,
    JobStatus, Lease, NewJob, ShutdownRecord, Store, StoreResult, WorkerRegistration, WorkerRow,
};
use handover::telemetry::Metrics;
use serde_json::Value;
use std::cell::Cell;
use std::future::{pending, Future};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::time::{sleep, Instant};
use tokio_util::sync::CancellationToken;

const WORKER_ID: &str = "worker-deadlines";
const KIND: &str = "simulated";
/// Paused time is exact (these tests pass with no slack at all); this only absorbs the record's
/// durations going through f64 milliseconds and the timer wheel's millisecond ticks.
const SLACK: Duration = Duration::from_millis(1);

fn secs(secs: f64) -> Duration {
    Duration::from_secs_f64(secs)
}

fn assert_at(what: &str, actual: Duration, expected: Duration) {
    let off = actual.abs_diff(expected);
    assert!(
        off <= SLACK,
        "{what}: expected at {expected:?}, happened at {actual:?}"
    );
}

/// A store write the machine made.
#[derive(Clone, Debug, PartialEq)]
enum Call {
    Release(Vec<JobId>),
    Deregister(String),
    RecordShutdown(Box<ShutdownRecord>),
    SetPhase(Phase),
}

/// The machine's store: records each write with the virtual moment it was made and answers it at
/// once (see the file's header for why nothing real is used).
struct MemoryStore {
    start: Instant,
    calls: Mutex<Vec<(Duration, Call)>>,
}

impl MemoryStore {
    fn note(&self, call: Call) {
        let at = self.start.elapsed();
        self.calls.lock().unwrap().push((at, call));
    }
}

const UNUSED: &str = "not used by the machine";

#[async_trait]
impl Store for MemoryStore {
    async fn release(
        &self,
        leases: &[Lease],
        _resume_after: Duration,
        _reason: handover::store::ReleaseReason,
    ) -> StoreResult<Vec<bool>> {
        self.note(Call::Release(leases.iter().map(|l| l.job_id).collect()));
        Ok(vec![true; leases.len()])
    }
    async fn deregister_worker(&self, worker_id: &str) -> StoreResult<()> {
        self.note(Call::Deregister(worker_id.to_string()));
        Ok(())
    }
    async fn record_shutdown(&self, record: &ShutdownRecord) -> StoreResult<()> {
        self.note(Call::RecordShutdown(Box::new(record.clone())));
        Ok(())
    }
    async fn set_worker_phase(&self, _worker_id: &str, phase: Phase) -> StoreResult<()> {
        self.note(Call::SetPhase(phase));
        Ok(())
    }

    async fn migrate(&self) -> StoreResult<()> {
        unimplemented!("{UNUSED}")
    }
    async fn ping(&self) -> StoreResult<()> {
        unimplemented!("{UNUSED}")
    }
    async fn submit(&self, _jobs: &[NewJob]) -> StoreResult<Vec<JobId>> {
        unimplemented!("{UNUSED}")
    }
    async fn claim(
        &self,
        _owner: &str,
        _kinds: &[String],
        _limit: usize,
        _lease_ttl: Duration,
    ) -> StoreResult<Vec<ClaimedJob>> {
        unimplemented!("{UNUSED}")
    }
    async fn checkpoint(&self, _lease: &Lease, _checkpoint: &Value) -> StoreResult<()> {
        unimplemented!("{UNUSED}")
    }
    async fn complete(&self, _items: &[(Lease, Value)]) -> StoreResult<Vec<bool>> {
        unimplemented!("{UNUSED}")
    }
    async fn fail(
        &self,
        _lease: &Lease,
        _error: &str,
        _backoff: Duration,
    ) -> StoreResult<FailOutcome> {
        unimplemented!("{UNUSED}")
    }
    async fn rescue_expired(&self) -> StoreResult<Vec<JobId>> {
        unimplemented!("{UNUSED}")
    }
    async fn cancel(&self, _ids: &[JobId]) -> StoreResult<Vec<handover::store::CancelOutcome>> {
        unimplemented!("{UNUSED}")
    }
    async fn finish_cancelled(&self, _lease: &Lease) -> StoreResult<bool> {
        unimplemented!("{UNUSED}")
    }
    async fn cancels_requested(&self, _owner: &str) -> StoreResult<Vec<Lease>> {
        unimplemented!("{UNUSED}")
    }
    async fn retry(
        &self,
        _ids: &[JobId],
        _from_scratch: bool,
    ) -> StoreResult<Vec<handover::store::RetryOutcome>> {
        unimplemented!("{UNUSED}")
    }
    async fn job_history(
        &self,
        _id: JobId,
    ) -> StoreResult<(
        Vec<handover::store::JobEvent>,
        Vec<handover::store::CompletionRecord>,
    )> {
        unimplemented!("{UNUSED}")
    }
    async fn served_kinds(&self) -> StoreResult<Vec<String>> {
        unimplemented!("{UNUSED}")
    }
    async fn page_jobs(&self, _query: &handover::store::JobPageQuery) -> StoreResult<Vec<Job>> {
        unimplemented!("{UNUSED}")
    }
    async fn drain_requested(&self, _worker_id: &str) -> StoreResult<bool> {
        unimplemented!("{UNUSED}")
    }
    async fn queue_counts(&self) -> StoreResult<Vec<handover::model::QueueCount>> {
        unimplemented!("{UNUSED}")
    }
    async fn get_job(&self, _id: JobId) -> StoreResult<Option<Job>> {
        unimplemented!("{UNUSED}")
    }
    async fn list_jobs(&self, _filter: &JobFilter) -> StoreResult<Vec<Job>> {
        unimplemented!("{UNUSED}")
    }
    async fn count_jobs(&self) -> StoreResult<Vec<(JobStatus, i64)>> {
        unimplemented!("{UNUSED}")
    }
    async fn register_worker(&self, _worker: &WorkerRegistration) -> StoreResult<()> {
        unimplemented!("{UNUSED}")
    }
    async fn revive_worker(&self, _worker_id: &str) -> StoreResult<()> {
        unimplemented!("{UNUSED}")
    }
    async fn heartbeat(
        &self,
        _worker_id: &str,
        _held: &[Lease],
        _lease_ttl: Duration,
        _cost: DrainCost,
    ) -> StoreResult<HeartbeatReport> {
        unimplemented!("{UNUSED}")
    }
    async fn list_workers(&self) -> StoreResult<Vec<WorkerRow>> {
        unimplemented!("{UNUSED}")
    }
    async fn request_drain(
        &self,
        _worker: &str,
        _request: &DrainRequest,
    ) -> StoreResult<WorkerRow> {
        unimplemented!("{UNUSED}")
    }
    async fn list_shutdowns(&self, _limit: i64) -> StoreResult<Vec<ShutdownRecord>> {
        unimplemented!("{UNUSED}")
    }
    async fn completion_counts(&self) -> StoreResult<Vec<(JobId, i64)>> {
        unimplemented!("{UNUSED}")
    }
}

/// How a simulated attempt behaves.
#[derive(Clone, Copy, Debug)]
struct Sim {
    /// Finishes by itself (leaves the registry) after this long; None: works until stopped.
    runs_for: Option<Duration>,
    /// Asked to checkpoint, parks after this long; None: ignores the request.
    checkpoints_in: Option<Duration>,
    /// Lets go (aborted) at once when the shutdown is forced; false: a handler stuck for good.
    obeys_force: bool,
}

impl Sim {
    fn cooperative(checkpoints_in: Duration) -> Sim {
        Sim {
            runs_for: None,
            checkpoints_in: Some(checkpoints_in),
            obeys_force: true,
        }
    }

    fn runs_for(self, runs_for: Duration) -> Sim {
        Sim {
            runs_for: Some(runs_for),
            ..self
        }
    }

    /// Ignores the checkpoint request; only the forced path stops it.
    fn stubborn() -> Sim {
        Sim {
            runs_for: None,
            checkpoints_in: None,
            obeys_force: true,
        }
    }

    /// Ignores everything, even the forced path.
    fn hung() -> Sim {
        Sim {
            obeys_force: false,
            ..Sim::stubborn()
        }
    }
}

/// Waits for `ready` if there is something to wait for, else forever.
async fn after(ready: Option<impl Future<Output = ()>>) {
    match ready {
        Some(ready) => ready.await,
        None => pending().await,
    }
}

/// The virtual moment a token was cancelled (since the rig's start), if it was.
struct Stamp {
    token: CancellationToken,
    at: Arc<OnceLock<Duration>>,
}

impl Stamp {
    fn new(token: &CancellationToken, start: Instant) -> Stamp {
        let at = Arc::new(OnceLock::new());
        let (cancelled, set) = (token.clone(), at.clone());
        tokio::spawn(async move {
            cancelled.cancelled().await;
            let _ = set.set(start.elapsed());
        });
        Stamp {
            token: token.clone(),
            at,
        }
    }

    /// The stamping task is woken by the cancel and runs before the clock can move on (paused time
    /// only advances when nothing is ready to run); this waits for it to have run.
    async fn read(&self) -> Option<Duration> {
        while self.token.is_cancelled() && self.at.get().is_none() {
            tokio::task::yield_now().await;
        }
        self.at.get().copied()
    }
}

/// A machine on the test's paused clock, with its store, jobs and tokens. Time 0 is when the rig
/// was made. The machine runs on the test's own task, joined with the test's driver (its future is
/// not `Send`, so it cannot be spawned).
struct Rig {
    start: Instant,
    handle: MachineHandle,
    machine: Cell<Option<PhaseMachine>>,
    store: Arc<MemoryStore>,
    metrics: Arc<Metrics>,
    jobs: Arc<InFlight>,
    checkpoint_request: CancellationToken,
    forced: CancellationToken,
    checkpoint_requested_at: Stamp,
    forced_at: Stamp,
}

/// What a rig's shutdown left.
struct Ended {
    summary: ShutdownSummary,
    calls: Vec<(Duration, Call)>,
    checkpoint_requested_at: Option<Duration>,
    forced_at: Option<Duration>,
    released_shutdown: u64,
    released_forced: u64,
}

impl Rig {
    fn start(grace: Duration, drain_delay: Duration) -> Rig {
        let start = Instant::now();
        let store = Arc::new(MemoryStore {
            start,
            calls: Mutex::new(Vec::new()),
        });
        let metrics = Arc::new(Metrics::new(&[KIND.to_string()]));
        let jobs = Arc::new(InFlight::new(
            metrics.jobs_in_flight.clone(),
            metrics.jobs_held.clone(),
        ));
        let (checkpoint_request, forced) = (CancellationToken::new(), CancellationToken::new());
        let parts = WorkerParts {
            worker_id: WORKER_ID.to_string(),
            worker_name: "deadlines".to_string(),
            store: store.clone(),
            metrics: metrics.clone(),
            claims: Arc::new(ClaimControl::default()),
            jobs: jobs.clone(),
            checkpoint_request: checkpoint_request.clone(),
            forced: forced.clone(),
            background: CancellationToken::new(),
        };
        let settings = MachineSettings { grace, drain_delay };
        let (machine, handle) = PhaseMachine::new(parts, settings);
        Rig {
            start,
            handle,
            machine: Cell::new(Some(machine)),
            store,
            metrics,
            jobs,
            checkpoint_requested_at: Stamp::new(&checkpoint_request, start),
            forced_at: Stamp::new(&forced, start),
            checkpoint_request,
            forced,
        }
    }

    /// Registers a held job and runs its simulated attempt.
    fn hold(&self, job_id: JobId, sim: Sim) {
        let lease = Lease {
            job_id,
            owner: WORKER_ID.to_string(),
            epoch: 1,
        };
        self.jobs.insert(lease, KIND, 1, None, None);
        let jobs = self.jobs.clone();
        let asked = self.checkpoint_request.clone();
        let forced = self.forced.clone();
        self.jobs.spawn(async move {
            let done = after(sim.runs_for.map(sleep));
            let parked = after(sim.checkpoints_in.map(|took| async move {
                asked.cancelled().await;
                sleep(took).await;
            }));
            let aborted = after(sim.obeys_force.then(|| forced.cancelled()));
            tokio::select! {
                () = done => jobs.remove(job_id),
                () = parked => jobs.set_state(job_id, JobState::Parked),
                () = aborted => jobs.set_state(job_id, JobState::Aborted),
            }
        });
    }

    /// Runs the machine to `stopped` with nothing more from the test.
    async fn stopped(&self) -> Ended {
        self.run_while(async {}).await
    }

    /// Sleeps until `at` after the start.
    async fn until(&self, at: Duration) {
        tokio::time::sleep_until(self.start + at).await;
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Runs the machine to `stopped` while `driver` runs alongside (sending triggers at chosen
    /// moments).
    async fn run_while(&self, driver: impl Future<Output = ()>) -> Ended {
        let machine = self.machine.take().expect("a rig runs its machine once");
        let (summary, ()) = tokio::join!(machine.run(), driver);
        assert_eq!(self.handle.phase(), Phase::Stopped);
        assert!(summary.unwritten.is_empty(), "{:?}", summary.unwritten);
        let released = |reason: ReleaseReason| {
            self.metrics
                .jobs_released
                .with_label_values(&[KIND, reason.as_str()])
                .get()
        };
        let checkpoint_requested_at = self.checkpoint_requested_at.read().await;
        let forced_at = self.forced_at.read().await;
        let calls = self.store.calls.lock().unwrap().clone();
        Ended {
            released_shutdown: released(ReleaseReason::Shutdown),
            released_forced: released(ReleaseReason::Forced),
            calls,
            checkpoint_requested_at,
            forced_at,
            summary,
        }
    }
}

/// How a shutdown went, in virtual time since the rig's start.
struct Went {
    /// When the drain that stopped the worker began.
    drain: Duration,
    /// When `checkpointing` began; None when the forced path cut `draining` short.
    checkpointing: Option<Duration>,
    /// When the forced path began, if it did.
    forced: Option<Duration>,
    /// When `releasing` began; with a store that answers at once, the shutdown ends then too.
    releasing: Duration,
    /// The jobs handed back, in one write at `releasing`.
    released: Vec<JobId>,
}

impl Ended {
    fn record(&self) -> &ShutdownRecord {
        &self.summary.record
    }

    /// Checks the tokens' moments, the recorded timeline, the store writes and the outcome against
    /// `went`.
    fn assert_went(&self, went: &Went) {
        assert_at_or_never(
            "checkpoint requested",
            self.checkpoint_requested_at,
            // The forced path asks too, in case it cut draining short.
            went.checkpointing.or(went.forced),
        );
        assert_at_or_never("forced", self.forced_at, went.forced);

        // The record's phases, each began at the sum of the durations before it.
        let record = self.record();
        let mut expected = vec![(Phase::Draining, went.drain)];
        expected.extend(went.checkpointing.map(|at| (Phase::Checkpointing, at)));
        expected.push((Phase::Releasing, went.releasing));
        expected.push((Phase::Deregistering, went.releasing));
        let phases: Vec<Phase> = record.phases.iter().map(|p| p.phase).collect();
        let expected_phases: Vec<Phase> = expected.iter().map(|(p, _)| *p).collect();
        assert_eq!(phases, expected_phases, "the phases lived");
        let mut began = went.drain;
        for (span, (phase, at)) in record.phases.iter().zip(&expected) {
            assert_at(&format!("{phase} began"), began, *at);
            began += secs(span.duration_ms.expect("a recorded phase has a duration") / 1000.0);
        }
        assert_at("the end of the last phase", began, went.releasing);
        assert_at(
            "the end (record.duration_ms)",
            went.drain + secs(record.duration_ms / 1000.0),
            went.releasing,
        );

        // The store writes, in order, all at `releasing`; the record written is the summary's.
        let mut writes = Vec::new();
        if !went.released.is_empty() {
            writes.push(Call::Release(went.released.clone()));
        }
        writes.push(Call::Deregister(WORKER_ID.to_string()));
        writes.push(Call::RecordShutdown(Box::new(record.clone())));
        let calls: Vec<&Call> = self.calls.iter().map(|(_, call)| call).collect();
        assert_eq!(calls, writes.iter().collect::<Vec<_>>(), "store writes");
        for (at, call) in &self.calls {
            assert_at(&format!("{call:?}"), *at, went.releasing);
        }

        // Forced hand-backs count as released too, under their own reason.
        let released = went.released.len();
        let (outcome, by_reason) = match went.forced {
            Some(_) => (Outcome::Forced, [0, released as u64]),
            None => (Outcome::Clean, [released as u64, 0]),
        };
        assert_eq!(record.outcome, outcome);
        assert_eq!(record.jobs_released, released as i64);
        assert_eq!(
            [self.released_shutdown, self.released_forced],
            by_reason,
            "handover_jobs_released_total by reason (shutdown, forced)"
        );
    }
}

fn assert_at_or_never(what: &str, actual: Option<Duration>, expected: Option<Duration>) {
    match (actual, expected) {
        (Some(actual), Some(expected)) => assert_at(what, actual, expected),
        (actual, expected) => assert_eq!(actual, expected, "{what}"),
    }
}

fn http_order(mode: Mode) -> DrainOrder {
    DrainOrder {
        trigger: Trigger::Http,
        mode,
        requested_by: Some("operator".to_string()),
        reason: Some("deadline test".to_string()),
    }
}

async fn start_http_drain(rig: &Rig, mode: Mode) {
    let answer = rig.handle.drain(http_order(mode)).await;
    assert!(
        matches!(answer, DrainAnswer::Started(ref s) if s.phase == Phase::Draining),
        "{answer:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn clean_handoff_checkpoints_for_as_long_as_the_job_takes() {
    let rig = Rig::start(secs(30.0), Duration::ZERO);
    rig.hold(1, Sim::cooperative(secs(1.0)));
    rig.handle.signal(Trigger::Sigterm);
    let ended = rig.stopped().await;

    ended.assert_went(&Went {
        drain: Duration::ZERO,
        checkpointing: Some(Duration::ZERO),
        forced: None,
        releasing: secs(1.0),
        released: vec![1],
    });
    let record = ended.record();
    assert_eq!(
        (record.trigger, record.mode),
        (Trigger::Sigterm, Mode::Handoff)
    );
    assert_eq!(record.reason.as_deref(), Some("sigterm received"));
    assert!(record.forced_jobs.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_deadline_forces_a_stubborn_job_one_reserve_before_grace() {
    let rig = Rig::start(secs(30.0), Duration::ZERO);
    rig.hold(1, Sim::stubborn());
    rig.handle.signal(Trigger::Sigterm);
    let ended = rig.stopped().await;

    // The reserve is a tenth of grace, at most 1 s: forced at 30 s - 1 s.
    ended.assert_went(&Went {
        drain: Duration::ZERO,
        checkpointing: Some(Duration::ZERO),
        forced: Some(secs(29.0)),
        releasing: secs(29.0),
        released: vec![1],
    });
    assert_eq!(ended.record().forced_jobs, vec![1]);
    assert!(ended.record().duration_ms <= 30_000.0, "within grace");
}

#[tokio::test(start_paused = true)]
async fn a_short_grace_forces_half_a_second_early_and_ends_within_it_even_with_a_hung_job() {
    let rig = Rig::start(secs(5.0), Duration::ZERO);
    rig.hold(1, Sim::stubborn());
    rig.hold(2, Sim::hung());
    rig.handle.signal(Trigger::Sigterm);
    let ended = rig.stopped().await;

    // Reserve: 5 s / 10 = 0.5 s. The hung handler never lets go: the machine waits half of the
    // 0.5 s left for it, then hands both leases back anyway.
    ended.assert_went(&Went {
        drain: Duration::ZERO,
        checkpointing: Some(Duration::ZERO),
        forced: Some(secs(4.5)),
        releasing: secs(4.75),
        released: vec![1, 2],
    });
    assert_eq!(ended.record().forced_jobs, vec![1, 2]);
    assert!(ended.record().duration_ms <= 5_000.0, "within grace");
}

#[tokio::test(start_paused = true)]
async fn finish_mode_checkpoints_a_long_job_when_the_finish_budget_ends() {
    let settings = MachineSettings {
        grace: secs(30.0),
        drain_delay: Duration::ZERO,
    };
    // Grace minus a third of it, the third capped at 10 s.
    assert_eq!(settings.finish_budget(), secs(20.0));
    let rig = Rig::start(settings.grace, settings.drain_delay);
    rig.hold(1, Sim::cooperative(secs(1.0)).runs_for(secs(60.0)));
    let ended = rig.run_while(start_http_drain(&rig, Mode::Finish)).await;

    ended.assert_went(&Went {
        drain: Duration::ZERO,
        checkpointing: Some(secs(20.0)),
        forced: None,
        releasing: secs(21.0),
        released: vec![1],
    });
    let record = ended.record();
    assert_eq!((record.trigger, record.mode), (Trigger::Http, Mode::Finish));
    assert_eq!(record.requested_by.as_deref(), Some("operator"));
    assert_eq!(record.reason.as_deref(), Some("deadline test"));
}

#[tokio::test(start_paused = true)]
async fn finish_mode_ends_draining_when_the_last_job_finishes_by_itself() {
    let rig = Rig::start(secs(30.0), Duration::ZERO);
    rig.hold(1, Sim::cooperative(secs(1.0)).runs_for(secs(5.0)));
    let ended = rig.run_while(start_http_drain(&rig, Mode::Finish)).await;

    // At 5 s, not at the 20 s budget: nothing is left to checkpoint or hand back.
    ended.assert_went(&Went {
        drain: Duration::ZERO,
        checkpointing: Some(secs(5.0)),
        forced: None,
        releasing: secs(5.0),
        released: vec![],
    });
}

#[tokio::test(start_paused = true)]
async fn a_second_signal_forces_at_once_and_a_signal_drain_cannot_be_cancelled() {
    let rig = Rig::start(secs(30.0), Duration::ZERO);
    rig.hold(1, Sim::stubborn());
    rig.handle.signal(Trigger::Sigterm);
    let ended = rig
        .run_while(async {
            rig.until(secs(1.0)).await;
            let refused = rig.handle.cancel().await;
            assert!(
                matches!(refused, Err(CancelRefused::TooLate(Phase::Checkpointing))),
                "{refused:?}"
            );
            rig.until(secs(5.0)).await;
            rig.handle.signal(Trigger::Sigterm);
        })
        .await;

    // At 5 s, not at 29 s.
    ended.assert_went(&Went {
        drain: Duration::ZERO,
        checkpointing: Some(Duration::ZERO),
        forced: Some(secs(5.0)),
        releasing: secs(5.0),
        released: vec![1],
    });
    assert_eq!(ended.record().trigger, Trigger::Sigterm);
    assert_eq!(ended.record().forced_jobs, vec![1]);
}

#[tokio::test(start_paused = true)]
async fn a_signal_still_in_draining_makes_the_drain_uncancellable() {
    let rig = Rig::start(secs(30.0), secs(10.0));
    rig.hold(1, Sim::stubborn());
    rig.handle.signal(Trigger::Sigterm);
    let ended = rig
        .run_while(async {
            rig.until(secs(1.0)).await;
            assert_eq!(rig.handle.phase(), Phase::Draining);
            assert!(!rig.handle.status().cancellable);
            let refused = rig.handle.cancel().await;
            assert!(
                matches!(
                    refused,
                    Err(CancelRefused::NotCancellable(Trigger::Sigterm))
                ),
                "{refused:?}"
            );
            // A second signal forces from draining too.
            rig.until(secs(2.0)).await;
            rig.handle.signal(Trigger::Sigint);
        })
        .await;

    ended.assert_went(&Went {
        drain: Duration::ZERO,
        checkpointing: None,
        forced: Some(secs(2.0)),
        releasing: secs(2.0),
        released: vec![1],
    });
    assert_eq!(ended.record().forced_jobs, vec![1]);
}

#[tokio::test(start_paused = true)]
async fn an_http_drain_can_be_cancelled_in_draining_until_a_signal_arrives() {
    let rig = Rig::start(secs(30.0), secs(10.0));
    rig.hold(1, Sim::cooperative(secs(1.0)));
    let ended = rig
        .run_while(async {
            start_http_drain(&rig, Mode::Handoff).await;
            assert!(rig.handle.status().cancellable);
            rig.until(secs(1.0)).await;
            let resumed = rig.handle.cancel().await.expect("cancellable in draining");
            assert_eq!(resumed.phase, Phase::Running);
            assert!(!resumed.cancellable);
            assert!(!rig.checkpoint_request.is_cancelled());

            rig.until(secs(2.0)).await;
            start_http_drain(&rig, Mode::Handoff).await;
            rig.until(secs(3.0)).await;
            rig.handle.signal(Trigger::Sigterm);
            let refused = rig.handle.cancel().await;
            assert!(
                matches!(refused, Err(CancelRefused::NotCancellable(Trigger::Http))),
                "{refused:?}"
            );
            assert!(!rig.handle.status().cancellable);
            assert_eq!(rig.now(), secs(3.0));
        })
        .await;

    // The record is the second drain's (from 2 s): its 10 s drain delay, then a clean checkpoint.
    ended.assert_went(&Went {
        drain: secs(2.0),
        checkpointing: Some(secs(12.0)),
        forced: None,
        releasing: secs(13.0),
        released: vec![1],
    });
    assert_eq!(ended.record().trigger, Trigger::Http);
}

#[tokio::test(start_paused = true)]
async fn the_drain_delay_postpones_checkpointing() {
    let rig = Rig::start(secs(30.0), secs(3.0));
    rig.hold(1, Sim::cooperative(secs(1.0)));
    rig.handle.signal(Trigger::Sigterm);
    let ended = rig.stopped().await;

    ended.assert_went(&Went {
        drain: Duration::ZERO,
        checkpointing: Some(secs(3.0)),
        forced: None,
        releasing: secs(4.0),
        released: vec![1],
    });
}

#[tokio::test(start_paused = true)]
async fn a_drain_delay_longer_than_grace_is_cut_short_by_the_forced_path() {
    let rig = Rig::start(secs(30.0), secs(60.0));
    rig.hold(1, Sim::cooperative(secs(1.0)));
    rig.handle.signal(Trigger::Sigterm);
    let ended = rig.stopped().await;

    // Checkpointing is never reached: at 29 s the job is asked to stop and forced at once, so
    // even a job that could checkpoint in 1 s is aborted.
    ended.assert_went(&Went {
        drain: Duration::ZERO,
        checkpointing: None,
        forced: Some(secs(29.0)),
        releasing: secs(29.0),
        released: vec![1],
    });
    assert_eq!(ended.record().forced_jobs, vec![1]);
}
