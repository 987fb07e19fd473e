//! The jobs this worker holds a lease on: who is held (claimed ahead, waiting for a slot), who is
//! running, who is parked waiting to be handed back, each one's last checkpoint, and the tasks that
//! run them. Shared by the claim loop, the runner, the heartbeat, the machine and the pages.

use super::cadence::{Cadence, DrainEstimate, JobEstimate, KindHistories};
use crate::model::ClaimedJob;
use crate::store::{JobId, Lease};
use chrono::{DateTime, Utc};
use prometheus::IntGauge;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Claimed ahead and leased, waiting for a free slot: no handler has seen it yet.
    Held,
    /// The handler is working.
    Running,
    /// The handler stopped at a checkpoint; the lease is held until the machine hands it back.
    Parked,
    /// The handler was abandoned by a forced shutdown; the lease is held until it is released.
    Aborted,
}

struct Entry {
    /// The claimed job itself while it is held; taken when it starts.
    job: Option<ClaimedJob>,
    held_since: Instant,
    lease: Lease,
    kind: String,
    attempt: i32,
    started_at: DateTime<Utc>,
    checkpoint: Option<Value>,
    progress: Option<f64>,
    state: JobState,
    abandon: CancellationToken,
    /// Cancelled when an operator cancels the job.
    cancel: CancellationToken,
    checkpoints_saved: u64,
    /// The handler has returned: the attempt's own fenced write (complete, fail, hand back) now
    /// decides its fate, so a heartbeat that races that write is no news.
    handler_returned: bool,
    /// What the job's process wrote lately (an `exec` job), while it runs.
    output: Option<OutputTail>,
    /// When it started and last checkpointed, and its period.
    cadence: Cadence,
}

impl Entry {
    /// The job's drain estimate now; a parked job has stopped at its checkpoint.
    fn estimate(&self, histories: &KindHistories, now: Instant) -> Option<JobEstimate> {
        match self.state {
            JobState::Running => Some(JobEstimate::of(
                &self.cadence,
                histories.get(&self.kind),
                now,
            )),
            JobState::Parked => Some(JobEstimate {
                since_checkpoint: Duration::ZERO,
                next_checkpoint_eta: Some(Duration::ZERO),
                worst_eta: Some(Duration::ZERO),
            }),
            JobState::Held | JobState::Aborted => None,
        }
    }
}

/// The end of what a running job's process wrote, as the pages show it live.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OutputTail {
    pub stdout: String,
    pub stderr: String,
}

/// A started job as shown by the status API and pages.
#[derive(Clone, Debug, Serialize)]
pub struct InFlightView {
    pub job_id: JobId,
    pub kind: String,
    pub attempt: i32,
    pub lease_epoch: i64,
    pub started_at: DateTime<Utc>,
    pub checkpoint: Option<Value>,
    /// 0.0 to 1.0 when the handler can tell.
    pub progress: Option<f64>,
    pub state: JobState,
    /// The end of its process's output, live (exec jobs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<OutputTail>,
    /// Milliseconds of work since its last checkpoint (what a SIGKILL now would lose).
    pub since_checkpoint_ms: Option<f64>,
    /// Milliseconds until its next checkpoint is expected (a handoff drain waits for it); null
    /// while neither it nor its kind has shown a cadence.
    pub next_checkpoint_eta_ms: Option<f64>,
}

/// A leased job taken out of the registry to be handed back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeasedJob {
    pub lease: Lease,
    pub kind: String,
    pub state: JobState,
}

/// A started job's tokens.
#[derive(Clone, Debug)]
pub struct JobTokens {
    /// Stop at once (lease lost, forced shutdown).
    pub abandon: CancellationToken,
    /// An operator cancelled the job.
    pub cancel: CancellationToken,
}

/// What asking this worker to cancel one of its jobs did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CancelSignal {
    /// The job was held, not started: taken out, for the caller to record `cancelled`.
    WasHeld(LeasedJob),
    /// Its handler has been told (the first time this returns for the job).
    Signalled { kind: String },
    /// Already told, or not this worker's job at this lease.
    Nothing,
}

#[derive(Default)]
struct Entries {
    by_id: BTreeMap<JobId, Entry>,
    /// Held jobs in claim order (the store's priority order): the next to start is at the front.
    waiting: VecDeque<JobId>,
    /// Each kind's cadence and run time as seen on this worker.
    histories: KindHistories,
}

pub struct InFlight {
    entries: Mutex<Entries>,
    /// Jobs leased (held or started).
    leased: watch::Sender<usize>,
    /// Jobs held: claimed ahead, not started.
    held: watch::Sender<usize>,
    /// One task per attempt, from its claim to its final write.
    tasks: TaskTracker,
    /// Bumped on every change (claims, checkpoints, ends): what live pages follow.
    version: watch::Sender<u64>,
    /// `handover_jobs_in_flight`: started jobs.
    in_flight_gauge: IntGauge,
    /// `handover_jobs_held`.
    held_gauge: IntGauge,
}

impl InFlight {
    pub fn new(in_flight_gauge: IntGauge, held_gauge: IntGauge) -> Self {
        InFlight {
            entries: Mutex::new(Entries::default()),
            leased: watch::channel(0).0,
            held: watch::channel(0).0,
            tasks: TaskTracker::new(),
            version: watch::channel(0).0,
            in_flight_gauge,
            held_gauge,
        }
    }

    /// Reads the registry (no change is signalled).
    fn read<T>(&self, f: impl FnOnce(&BTreeMap<JobId, Entry>) -> T) -> T {
        f(&self.entries.lock().unwrap_or_else(|e| e.into_inner()).by_id)
    }

    /// Reads the registry with the kinds' histories (no change is signalled).
    fn read_all<T>(&self, f: impl FnOnce(&Entries) -> T) -> T {
        f(&self.entries.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Changes the started jobs and signals the change to the gauges, the counts and live pages.
    fn with_entries<T>(&self, f: impl FnOnce(&mut BTreeMap<JobId, Entry>) -> T) -> T {
        self.with_all(|all| f(&mut all.by_id))
    }

    /// Changes the registry, held jobs included, and signals the change.
    fn with_all<T>(&self, f: impl FnOnce(&mut Entries) -> T) -> T {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let result = f(&mut entries);
        let leased = entries.by_id.len();
        let held = entries.waiting.len();
        self.in_flight_gauge.set((leased - held) as i64);
        self.held_gauge.set(held as i64);
        self.version.send_modify(|v| *v += 1);
        self.leased
            .send_if_modified(|count| std::mem::replace(count, leased) != leased);
        self.held
            .send_if_modified(|count| std::mem::replace(count, held) != held);
        result
    }

    /// Registers a job claimed ahead: leased (its lease renews with the others) but not started.
    pub fn hold(&self, job: ClaimedJob, progress: Option<f64>) {
        let entry = Entry {
            lease: job.lease.clone(),
            kind: job.kind.clone(),
            attempt: job.attempt,
            started_at: Utc::now(),
            checkpoint: job.checkpoint.clone(),
            progress,
            state: JobState::Held,
            abandon: CancellationToken::new(),
            cancel: CancellationToken::new(),
            checkpoints_saved: 0,
            handler_returned: false,
            output: None,
            held_since: Instant::now(),
            cadence: Cadence::start(Instant::now()),
            job: Some(job),
        };
        self.with_all(|all| {
            all.waiting.push_back(entry.lease.job_id);
            all.by_id.insert(entry.lease.job_id, entry);
        });
    }

    /// Starts the longest-held job: it becomes running and its claimed job and tokens are
    /// returned. A held job whose lease the heartbeat found lost is dropped on the way.
    pub fn start_next(&self) -> Option<(ClaimedJob, JobTokens)> {
        self.with_all(|all| {
            while let Some(job_id) = all.waiting.pop_front() {
                let Some(entry) = all.by_id.get_mut(&job_id) else {
                    continue;
                };
                if entry.abandon.is_cancelled() {
                    all.by_id.remove(&job_id);
                    continue;
                }
                let job = entry.job.take()?;
                entry.state = JobState::Running;
                entry.started_at = Utc::now();
                entry.cadence = Cadence::start(Instant::now());
                let tokens = JobTokens {
                    abandon: entry.abandon.clone(),
                    cancel: entry.cancel.clone(),
                };
                return Some((job, tokens));
            }
            None
        })
    }

    /// Takes every held job out of the registry (to hand them back).
    pub fn take_held(&self) -> Vec<LeasedJob> {
        self.take_held_while(|_| true)
    }

    /// Takes out the held jobs that have waited longer than `bound` for a slot.
    pub fn take_held_longer_than(&self, bound: Duration) -> Vec<LeasedJob> {
        self.take_held_while(|entry| entry.held_since.elapsed() > bound)
    }

    /// Takes held jobs from the front of the queue (the oldest first) while `take` says so.
    fn take_held_while(&self, take: impl Fn(&Entry) -> bool) -> Vec<LeasedJob> {
        if self.held() == 0 {
            return Vec::new();
        }
        self.with_all(|all| {
            let mut taken = Vec::new();
            while let Some(&job_id) = all.waiting.front() {
                if all.by_id.get(&job_id).is_some_and(|entry| !take(entry)) {
                    break;
                }
                all.waiting.pop_front();
                if let Some(entry) = all.by_id.remove(&job_id) {
                    taken.push(LeasedJob {
                        lease: entry.lease,
                        kind: entry.kind,
                        state: entry.state,
                    });
                }
            }
            taken
        })
    }

    /// Jobs held: claimed ahead, not started.
    pub fn held(&self) -> usize {
        *self.held.borrow()
    }

    /// Follows the number of held jobs.
    pub fn subscribe_held(&self) -> watch::Receiver<usize> {
        self.held.subscribe()
    }

    /// Registers a job that starts at once (no time held); returns the token that abandons it.
    pub fn insert(
        &self,
        lease: Lease,
        kind: &str,
        attempt: i32,
        checkpoint: Option<Value>,
        progress: Option<f64>,
    ) -> CancellationToken {
        let abandon = CancellationToken::new();
        let entry = Entry {
            job: None,
            held_since: Instant::now(),
            lease: lease.clone(),
            kind: kind.to_string(),
            attempt,
            started_at: Utc::now(),
            checkpoint,
            progress,
            state: JobState::Running,
            abandon: abandon.clone(),
            cancel: CancellationToken::new(),
            checkpoints_saved: 0,
            handler_returned: false,
            output: None,
            cadence: Cadence::start(Instant::now()),
        };
        self.with_entries(|entries| entries.insert(lease.job_id, entry));
        abandon
    }

    pub fn set_checkpoint(&self, job_id: JobId, checkpoint: Value, progress: Option<f64>) {
        self.with_all(|all| {
            if let Some(entry) = all.by_id.get_mut(&job_id) {
                entry.checkpoint = Some(checkpoint);
                entry.progress = progress;
                entry.checkpoints_saved += 1;
                let interval = entry.cadence.checkpoint(Instant::now());
                all.histories.checkpointed(&entry.kind, interval);
            }
        });
    }

    /// The latest end of a running job's output (what live pages show).
    pub fn set_output(&self, job_id: JobId, output: OutputTail) {
        self.with_entries(|entries| {
            if let Some(entry) = entries.get_mut(&job_id) {
                entry.output = Some(output);
            }
        });
    }

    pub fn set_state(&self, job_id: JobId, state: JobState) {
        self.with_entries(|entries| {
            if let Some(entry) = entries.get_mut(&job_id) {
                entry.state = state;
            }
        });
    }

    /// Checkpoints this attempt has saved so far.
    pub fn checkpoints_saved(&self, job_id: JobId) -> u64 {
        self.read(|entries| entries.get(&job_id).map_or(0, |e| e.checkpoints_saved))
    }

    /// Takes a job out once its attempt's final write is made; a handler that returned by itself
    /// teaches its kind's run time.
    pub fn remove(&self, job_id: JobId) {
        self.with_all(|all| {
            if let Some(entry) = all.by_id.remove(&job_id) {
                if entry.handler_returned && entry.state == JobState::Running {
                    let took = entry.cadence.running_for(Instant::now());
                    all.histories.ran(&entry.kind, took);
                }
            }
        });
    }

    /// A handoff drain started now: how long its jobs would take to stop, and the work at risk.
    pub fn estimate(&self) -> DrainEstimate {
        let now = Instant::now();
        self.read_all(|all| estimate_of(all, now))
    }

    /// The started jobs and a drain's estimate over them, read under one lock at one instant,
    /// so that a status shows per-job figures and totals that agree.
    pub fn views_with_estimate(&self) -> (Vec<InFlightView>, DrainEstimate) {
        let now = Instant::now();
        self.read_all(|all| (views_of(all, now), estimate_of(all, now)))
    }

    /// Notes that the job's handler has returned (nothing a page shows changes).
    pub fn handler_returned(&self, job_id: JobId) {
        if let Some(entry) = self
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_id
            .get_mut(&job_id)
        {
            entry.handler_returned = true;
        }
    }

    /// An operator cancelled this job: tells its handler, or takes it out if it was only held.
    pub fn cancel(&self, lease: &Lease) -> CancelSignal {
        self.with_all(|all| {
            let Some(entry) = all.by_id.get(&lease.job_id) else {
                return CancelSignal::Nothing;
            };
            if entry.lease != *lease {
                return CancelSignal::Nothing;
            }
            if entry.state == JobState::Held {
                all.waiting.retain(|id| *id != lease.job_id);
                return match all.by_id.remove(&lease.job_id) {
                    Some(entry) => CancelSignal::WasHeld(LeasedJob {
                        lease: entry.lease,
                        kind: entry.kind,
                        state: entry.state,
                    }),
                    None => CancelSignal::Nothing,
                };
            }
            if entry.cancel.is_cancelled() {
                return CancelSignal::Nothing;
            }
            entry.cancel.cancel();
            CancelSignal::Signalled {
                kind: entry.kind.clone(),
            }
        })
    }

    /// The heartbeat found this lease no longer held: abandons the handler if this exact lease is
    /// still registered and its handler still working. Returns whether it did. A job whose handler
    /// has returned is left to its own fenced write, which reports a lost lease itself (and usually
    /// is the very write, a completion, that ended the lease under the heartbeat's feet).
    pub fn lose(&self, lease: &Lease) -> bool {
        self.read(|entries| match entries.get(&lease.job_id) {
            Some(entry) if entry.lease == *lease && !entry.handler_returned => {
                entry.abandon.cancel();
                true
            }
            _ => false,
        })
    }

    /// Every lease this worker holds, held jobs included (the heartbeat renews them all).
    pub fn leases(&self) -> Vec<Lease> {
        self.read(|entries| entries.values().map(|e| e.lease.clone()).collect())
    }

    /// Jobs leased, held or started.
    pub fn len(&self) -> usize {
        self.read(|entries| entries.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The started jobs (held ones are only counted, by [`InFlight::held`]).
    pub fn views(&self) -> Vec<InFlightView> {
        let now = Instant::now();
        self.read_all(|all| views_of(all, now))
    }

    /// Removes and returns every leased job (for the releasing phase).
    pub fn take_all(&self) -> Vec<LeasedJob> {
        self.with_all(|all| {
            all.waiting.clear();
            std::mem::take(&mut all.by_id)
                .into_values()
                .map(|e| LeasedJob {
                    lease: e.lease,
                    kind: e.kind,
                    state: e.state,
                })
                .collect()
        })
    }

    /// A receiver that changes whenever anything about the held jobs changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Runs one attempt's task (registered with [`InFlight::insert`] first).
    pub fn spawn(&self, attempt: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(attempt);
    }

    /// Resolves when every attempt's task has ended: its handler returned (parked, or its final
    /// write made) or was abandoned. Only for once claiming has stopped for good.
    pub async fn wait_until_attempts_end(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Resolves when no job is leased at all.
    pub async fn wait_until_empty(&self) {
        let mut receiver = self.leased.subscribe();
        let _ = receiver.wait_for(|leased| *leased == 0).await;
    }
}

/// The started jobs as pages and the status show them, at `now`.
fn views_of(all: &Entries, now: Instant) -> Vec<InFlightView> {
    all.by_id
        .values()
        .filter(|e| e.state != JobState::Held)
        .map(|e| (e, e.estimate(&all.histories, now)))
        .map(|(e, estimate)| InFlightView {
            job_id: e.lease.job_id,
            kind: e.kind.clone(),
            attempt: e.attempt,
            lease_epoch: e.lease.epoch,
            started_at: e.started_at,
            checkpoint: e.checkpoint.clone(),
            progress: e.progress,
            state: e.state,
            output: e.output.clone(),
            since_checkpoint_ms: estimate.map(|x| x.since_checkpoint.as_secs_f64() * 1e3),
            next_checkpoint_eta_ms: estimate
                .and_then(|x| x.next_checkpoint_eta)
                .map(|eta| eta.as_secs_f64() * 1e3),
        })
        .collect()
}

/// A handoff drain's estimate over every leased job, at `now`.
fn estimate_of(all: &Entries, now: Instant) -> DrainEstimate {
    DrainEstimate::over(
        all.by_id
            .values()
            .filter_map(|entry| entry.estimate(&all.histories, now)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauged() -> InFlight {
        InFlight::new(
            IntGauge::new("in_flight", "started jobs").unwrap(),
            IntGauge::new("held", "held jobs").unwrap(),
        )
    }

    fn registry_with_one_job() -> (InFlight, Lease, CancellationToken) {
        let jobs = gauged();
        let lease = Lease {
            job_id: 7,
            owner: "worker-a".into(),
            epoch: 3,
        };
        let abandon = jobs.insert(lease.clone(), "noop", 1, None, None);
        (jobs, lease, abandon)
    }

    #[test]
    fn a_lost_lease_abandons_a_working_handler() {
        let (jobs, lease, abandon) = registry_with_one_job();
        assert!(jobs.lose(&lease));
        assert!(abandon.is_cancelled());
    }

    #[test]
    fn a_lease_of_another_epoch_is_not_this_job() {
        let (jobs, lease, abandon) = registry_with_one_job();
        let older = Lease {
            epoch: lease.epoch - 1,
            ..lease
        };
        assert!(!jobs.lose(&older));
        assert!(!abandon.is_cancelled());
    }

    #[test]
    fn a_heartbeat_racing_the_final_write_is_no_news() {
        // The completion committed between the heartbeat's snapshot and its statement: the lease
        // is gone because the job is done, which the completion's own answer reports.
        let (jobs, lease, abandon) = registry_with_one_job();
        jobs.handler_returned(lease.job_id);
        assert!(!jobs.lose(&lease));
        assert!(!abandon.is_cancelled());
    }
}
