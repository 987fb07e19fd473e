//! Retention (SPEC §10): how long finished rows are kept, and what a retention pass deleted.
//!
//! Only finished rows are ever candidates: completed, dead and cancelled jobs, stopped (or
//! declared-dead) workers, shutdown records. Pending, running and failed jobs and live workers are
//! never deleted, whatever the policy says.

use super::wire_enum;
use serde::Serialize;
use std::time::Duration;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// How long each kind of finished row is kept after it last changed; `None` keeps it forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Completed jobs (by `updated_at`), with their `job_completions` audit rows.
    pub completed: Option<Duration>,
    /// Dead and cancelled jobs (by `updated_at`).
    pub dead: Option<Duration>,
    /// Stopped or declared-dead worker rows that no job names as its owner.
    pub workers: Option<Duration>,
    /// Shutdown records (by `started_at`).
    pub shutdowns: Option<Duration>,
}

impl Default for Retention {
    /// SPEC §10: completed 24h, dead and cancelled 7d, workers 7d, shutdown records 30d.
    fn default() -> Self {
        Retention {
            completed: Some(24 * HOUR),
            dead: Some(7 * DAY),
            workers: Some(7 * DAY),
            shutdowns: Some(30 * DAY),
        }
    }
}

impl Retention {
    /// Keeps everything: a pass under this policy deletes nothing.
    pub const FOREVER: Retention = Retention {
        completed: None,
        dead: None,
        workers: None,
        shutdowns: None,
    };
}

wire_enum!(
    /// A table a retention pass deletes from (the `table` label of `handover_pruned_total`).
    PrunedTable {
        /// Completed, dead and cancelled jobs.
        Jobs => "jobs",
        /// The completion audit rows of the deleted completed jobs.
        JobCompletions => "job_completions",
        /// The journey events of the deleted jobs.
        JobEvents => "job_events",
        /// Stopped or declared-dead worker rows.
        Workers => "workers",
        /// Shutdown records.
        Shutdowns => "shutdowns",
    }
);

/// Rows deleted by a retention pass (or one batch of it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// Completed jobs deleted.
    pub completed_jobs: u64,
    /// Dead jobs deleted.
    pub dead_jobs: u64,
    /// Cancelled jobs deleted.
    pub cancelled_jobs: u64,
    /// Audit rows of the deleted completed jobs.
    pub job_completions: u64,
    /// Journey events of the deleted jobs.
    pub job_events: u64,
    /// Worker rows deleted.
    pub workers: u64,
    /// Shutdown records deleted.
    pub shutdowns: u64,
}

impl PruneReport {
    /// Adds another report's counts to this one.
    pub fn add(&mut self, other: &PruneReport) {
        self.completed_jobs += other.completed_jobs;
        self.dead_jobs += other.dead_jobs;
        self.cancelled_jobs += other.cancelled_jobs;
        self.job_completions += other.job_completions;
        self.job_events += other.job_events;
        self.workers += other.workers;
        self.shutdowns += other.shutdowns;
    }

    /// Rows deleted per table.
    pub fn by_table(&self) -> [(PrunedTable, u64); 5] {
        [
            (
                PrunedTable::Jobs,
                self.completed_jobs + self.dead_jobs + self.cancelled_jobs,
            ),
            (PrunedTable::JobCompletions, self.job_completions),
            (PrunedTable::JobEvents, self.job_events),
            (PrunedTable::Workers, self.workers),
            (PrunedTable::Shutdowns, self.shutdowns),
        ]
    }

    /// Rows deleted in all.
    pub fn total(&self) -> u64 {
        self.by_table().iter().map(|(_, n)| n).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_add_up_per_table() {
        let mut total = PruneReport::default();
        total.add(&PruneReport {
            completed_jobs: 3,
            job_completions: 3,
            dead_jobs: 1,
            ..PruneReport::default()
        });
        total.add(&PruneReport {
            cancelled_jobs: 2,
            workers: 1,
            shutdowns: 4,
            ..PruneReport::default()
        });
        assert_eq!(
            total.by_table(),
            [
                (PrunedTable::Jobs, 6),
                (PrunedTable::JobCompletions, 3),
                (PrunedTable::JobEvents, 0),
                (PrunedTable::Workers, 1),
                (PrunedTable::Shutdowns, 4)
            ]
        );
        assert_eq!(total.total(), 14);
    }
}
