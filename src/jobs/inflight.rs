//! The jobs this worker holds a lease on: who is running, who is parked waiting to be handed back,
//! each one's last checkpoint, and the tasks that run them. Shared by the claim loop, the runner,
//! the heartbeat, the machine and the pages.

use crate::store::{JobId, Lease};
use chrono::{DateTime, Utc};
use prometheus::IntGauge;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// The handler is working.
    Running,
    /// The handler stopped at a checkpoint; the lease is held until the machine hands it back.
    Parked,
    /// The handler was abandoned by a forced shutdown; the lease is held until it is released.
    Aborted,
}

struct Entry {
    lease: Lease,
    kind: String,
    attempt: i32,
    started_at: DateTime<Utc>,
    checkpoint: Option<Value>,
    progress: Option<f64>,
    state: JobState,
    abandon: CancellationToken,
    checkpoints_saved: u64,
    /// The handler has returned: the attempt's own fenced write (complete, fail, hand back) now
    /// decides its fate, so a heartbeat that races that write is no news.
    handler_returned: bool,
}

/// A held job as shown by the status API and pages.
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
}

/// A held job taken out of the registry to be handed back.
#[derive(Clone, Debug)]
pub struct HeldJob {
    pub lease: Lease,
    pub kind: String,
    pub state: JobState,
}

pub struct InFlight {
    entries: Mutex<BTreeMap<JobId, Entry>>,
    /// Jobs held.
    held: watch::Sender<usize>,
    /// One task per attempt, from its claim to its final write.
    tasks: TaskTracker,
    /// Bumped on every change (claims, checkpoints, ends): what live pages follow.
    version: watch::Sender<u64>,
    gauge: IntGauge,
}

impl InFlight {
    pub fn new(gauge: IntGauge) -> Self {
        InFlight {
            entries: Mutex::new(BTreeMap::new()),
            held: watch::channel(0).0,
            tasks: TaskTracker::new(),
            version: watch::channel(0).0,
            gauge,
        }
    }

    /// Reads the registry (no change is signalled).
    fn read<T>(&self, f: impl FnOnce(&BTreeMap<JobId, Entry>) -> T) -> T {
        f(&self.entries.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Changes the registry and signals the change to the gauge, the counts and live pages.
    fn with_entries<T>(&self, f: impl FnOnce(&mut BTreeMap<JobId, Entry>) -> T) -> T {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let result = f(&mut entries);
        self.gauge.set(entries.len() as i64);
        self.version.send_modify(|v| *v += 1);
        let held = entries.len();
        self.held
            .send_if_modified(|count| std::mem::replace(count, held) != held);
        result
    }

    /// Registers a newly claimed job; returns the token that abandons it.
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
            lease: lease.clone(),
            kind: kind.to_string(),
            attempt,
            started_at: Utc::now(),
            checkpoint,
            progress,
            state: JobState::Running,
            abandon: abandon.clone(),
            checkpoints_saved: 0,
            handler_returned: false,
        };
        self.with_entries(|entries| entries.insert(lease.job_id, entry));
        abandon
    }

    pub fn set_checkpoint(&self, job_id: JobId, checkpoint: Value, progress: Option<f64>) {
        self.with_entries(|entries| {
            if let Some(entry) = entries.get_mut(&job_id) {
                entry.checkpoint = Some(checkpoint);
                entry.progress = progress;
                entry.checkpoints_saved += 1;
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

    pub fn remove(&self, job_id: JobId) {
        self.with_entries(|entries| entries.remove(&job_id));
    }

    /// Notes that the job's handler has returned (nothing a page shows changes).
    pub fn handler_returned(&self, job_id: JobId) {
        if let Some(entry) = self
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&job_id)
        {
            entry.handler_returned = true;
        }
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

    /// The leases currently held.
    pub fn leases(&self) -> Vec<Lease> {
        self.read(|entries| entries.values().map(|e| e.lease.clone()).collect())
    }

    pub fn len(&self) -> usize {
        self.read(|entries| entries.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn views(&self) -> Vec<InFlightView> {
        self.read(|entries| {
            entries
                .values()
                .map(|e| InFlightView {
                    job_id: e.lease.job_id,
                    kind: e.kind.clone(),
                    attempt: e.attempt,
                    lease_epoch: e.lease.epoch,
                    started_at: e.started_at,
                    checkpoint: e.checkpoint.clone(),
                    progress: e.progress,
                    state: e.state,
                })
                .collect()
        })
    }

    /// Removes and returns every held job (for the releasing phase).
    pub fn take_all(&self) -> Vec<HeldJob> {
        self.with_entries(|entries| {
            std::mem::take(entries)
                .into_values()
                .map(|e| HeldJob {
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

    /// Resolves when no job is held at all.
    pub async fn wait_until_empty(&self) {
        let mut receiver = self.held.subscribe();
        let _ = receiver.wait_for(|held| *held == 0).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry_with_one_job() -> (InFlight, Lease, CancellationToken) {
        let jobs = InFlight::new(IntGauge::new("held", "held jobs").unwrap());
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
