//! Each running job's checkpoint cadence, and what it tells about a drain started now: how long
//! until the job's next checkpoint (a handoff drain waits for it) and how much work it has done
//! since its last one (what a SIGKILL now would lose). SPEC §10 "Fleet operations".

use serde::Serialize;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

/// How much a new interval moves the running estimate (exponentially weighted): recent cadence
/// counts most, one odd interval does not swing it.
const WEIGHT: f64 = 0.3;

fn blend(old: Option<Duration>, new: Duration) -> Duration {
    match old {
        None => new,
        Some(old) => old.mul_f64(1.0 - WEIGHT) + new.mul_f64(WEIGHT),
    }
}

/// One attempt's clock: when it started, when it last saved a checkpoint, and its own period.
#[derive(Clone, Debug)]
pub struct Cadence {
    started: Instant,
    last_checkpoint: Instant,
    period: Option<Duration>,
}

impl Cadence {
    /// An attempt starting now: its starting point (the resumed checkpoint, or the beginning) is
    /// its last checkpoint.
    pub fn start(now: Instant) -> Self {
        Cadence {
            started: now,
            last_checkpoint: now,
            period: None,
        }
    }

    /// A checkpoint was saved at `now`; returns the interval since the previous one.
    pub fn checkpoint(&mut self, now: Instant) -> Duration {
        let interval = now.saturating_duration_since(self.last_checkpoint);
        self.period = Some(blend(self.period, interval));
        self.last_checkpoint = now;
        interval
    }

    /// How long the attempt has run.
    pub fn running_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }

    /// Work done since the last checkpoint (or the attempt's start).
    pub fn since_checkpoint(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_checkpoint)
    }

    /// This attempt's own checkpoint period, once it has saved one.
    pub fn period(&self) -> Option<Duration> {
        self.period
    }
}

/// What this worker has seen of a kind's attempts, for jobs that have not checkpointed yet.
#[derive(Clone, Copy, Debug, Default)]
pub struct KindHistory {
    /// Checkpoint period, over every attempt of the kind.
    pub period: Option<Duration>,
    /// How long an attempt runs from start to its handler's return.
    pub run: Option<Duration>,
}

/// The per-kind histories, learnt as attempts checkpoint and end.
#[derive(Debug, Default)]
pub struct KindHistories(HashMap<String, KindHistory>);

impl KindHistories {
    /// A job of `kind` saved a checkpoint `interval` after its previous one.
    pub fn checkpointed(&mut self, kind: &str, interval: Duration) {
        let history = self.0.entry(kind.to_string()).or_default();
        history.period = Some(blend(history.period, interval));
    }

    /// An attempt of `kind` ran `took` from its start to its handler's return.
    pub fn ran(&mut self, kind: &str, took: Duration) {
        let history = self.0.entry(kind.to_string()).or_default();
        history.run = Some(blend(history.run, took));
    }

    /// What is known of `kind` (nothing yet: the default).
    pub fn get(&self, kind: &str) -> KindHistory {
        self.0.get(kind).copied().unwrap_or_default()
    }
}

/// One running job's estimate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JobEstimate {
    /// Work since its last checkpoint: lost if the process died now.
    pub since_checkpoint: Duration,
    /// Until its handler would stop for a handoff drain: its next checkpoint or its end, whichever
    /// is expected first; `None` when neither it nor its kind has shown a cadence yet.
    pub next_checkpoint_eta: Option<Duration>,
    /// The longest a handoff drain could wait for it, whenever it starts: a whole checkpoint
    /// period (or what is left of its run, if shorter).
    pub worst_eta: Option<Duration>,
}

impl JobEstimate {
    /// The estimate at `now` of a job with this cadence, its kind's history filling the gaps.
    pub fn of(cadence: &Cadence, history: KindHistory, now: Instant) -> Self {
        let since_checkpoint = cadence.since_checkpoint(now);
        let to_checkpoint = cadence
            .period()
            .or(history.period)
            .map(|period| period.saturating_sub(since_checkpoint));
        let to_end = history
            .run
            .map(|run| run.saturating_sub(cadence.running_for(now)));
        let earliest = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        JobEstimate {
            since_checkpoint,
            next_checkpoint_eta: earliest(to_checkpoint, to_end),
            worst_eta: earliest(cadence.period().or(history.period), to_end),
        }
    }
}

/// The worker's estimate over its running jobs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct DrainEstimate {
    /// How long a handoff drain started now would wait for its jobs: the latest of their next
    /// checkpoints (jobs of unknown cadence are counted in `unknown_jobs`, not here).
    pub drain_eta_seconds: f64,
    /// Seconds of work since the last checkpoint, summed over running jobs.
    pub work_at_risk_seconds: f64,
    /// Running jobs with no cadence known yet.
    pub unknown_jobs: usize,
    /// The longest the drain could wait for its jobs if it started at the worst moment: the
    /// largest checkpoint period among them.
    pub worst_eta_seconds: f64,
}

impl DrainEstimate {
    /// Sums the work at risk and takes the slowest job's ETA.
    pub fn over(jobs: impl IntoIterator<Item = JobEstimate>) -> Self {
        let mut estimate = DrainEstimate::default();
        for job in jobs {
            estimate.work_at_risk_seconds += job.since_checkpoint.as_secs_f64();
            match job.next_checkpoint_eta {
                Some(eta) => {
                    estimate.drain_eta_seconds = estimate.drain_eta_seconds.max(eta.as_secs_f64())
                }
                None => estimate.unknown_jobs += 1,
            }
            if let Some(worst) = job.worst_eta {
                estimate.worst_eta_seconds = estimate.worst_eta_seconds.max(worst.as_secs_f64());
            }
        }
        estimate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_steady_cadence_predicts_the_next_checkpoint() {
        let t0 = Instant::now();
        let mut cadence = Cadence::start(t0);
        cadence.checkpoint(t0 + 2 * S);
        cadence.checkpoint(t0 + 4 * S);
        let estimate = JobEstimate::of(&cadence, KindHistory::default(), t0 + 4 * S + S / 2);
        assert_eq!(estimate.since_checkpoint, S / 2);
        assert_eq!(estimate.next_checkpoint_eta, Some(2 * S - S / 2));
        assert_eq!(
            estimate.worst_eta,
            Some(2 * S),
            "a whole period, at the worst moment"
        );
    }

    #[test]
    fn an_overdue_checkpoint_is_expected_now() {
        let t0 = Instant::now();
        let mut cadence = Cadence::start(t0);
        cadence.checkpoint(t0 + S);
        let estimate = JobEstimate::of(&cadence, KindHistory::default(), t0 + 5 * S);
        assert_eq!(estimate.next_checkpoint_eta, Some(Duration::ZERO));
        assert_eq!(estimate.since_checkpoint, 4 * S);
    }

    #[test]
    fn a_new_attempt_borrows_its_kinds_history_and_ends_count() {
        let t0 = Instant::now();
        let cadence = Cadence::start(t0);
        let unknown = JobEstimate::of(&cadence, KindHistory::default(), t0 + S);
        assert_eq!(unknown.next_checkpoint_eta, None);
        let history = KindHistory {
            period: Some(10 * S),
            run: Some(3 * S),
        };
        let known = JobEstimate::of(&cadence, history, t0 + S);
        assert_eq!(
            known.next_checkpoint_eta,
            Some(2 * S),
            "it ends before it checkpoints"
        );
    }

    #[test]
    fn the_drain_waits_for_the_slowest_and_risks_the_sum() {
        let estimate = DrainEstimate::over([
            JobEstimate {
                since_checkpoint: S,
                next_checkpoint_eta: Some(3 * S),
                worst_eta: Some(4 * S),
            },
            JobEstimate {
                since_checkpoint: 2 * S,
                next_checkpoint_eta: Some(S),
                worst_eta: Some(5 * S),
            },
            JobEstimate {
                since_checkpoint: S,
                next_checkpoint_eta: None,
                worst_eta: None,
            },
        ]);
        assert_eq!(estimate.drain_eta_seconds, 3.0);
        assert_eq!(estimate.work_at_risk_seconds, 4.0);
        assert_eq!(estimate.unknown_jobs, 1);
        assert_eq!(estimate.worst_eta_seconds, 5.0);
    }
}
