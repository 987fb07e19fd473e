//! Every Prometheus metric of SPEC §8, registered once in one [`Metrics`] value that is passed down.
//!
//! Label values are bounded (phases, triggers, modes, outcomes, job kinds, release reasons), and every
//! known label combination is initialised at zero so `rate()`, `increase()` and `absent()` behave
//! from the first scrape.

use crate::model::{
    AttemptOutcome, Mode, Outcome, Phase, PrunedTable, ReleaseReason, Task, Trigger,
};
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio::sync::watch;

/// Phase and shutdown durations: 1 ms to 60 s (and beyond, for slow forced shutdowns).
/// 25 s sits under the default 30 s grace so "slower than budget" alerts read true values.
const PHASE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 25.0,
    30.0, 45.0, 60.0, 120.0,
];
/// Job attempts: 1 ms to 1 hour.
const JOB_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.025, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
/// Checkpoint writes: 100 µs to 5 s.
const CHECKPOINT_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
];

pub struct Metrics {
    registry: Registry,
    /// Set only while rendering, from the phase machine's status (see [`Metrics::render`]).
    phase: IntGaugeVec,
    ready: IntGauge,
    pub shutdown_phase_duration: HistogramVec,
    pub shutdown_duration: HistogramVec,
    pub shutdowns: IntCounterVec,
    pub jobs_claimed: IntCounterVec,
    pub jobs_completed: IntCounterVec,
    pub jobs_failed: IntCounterVec,
    pub jobs_cancelled: IntCounterVec,
    pub jobs_released: IntCounterVec,
    pub jobs_rescued: IntCounter,
    pub jobs_in_flight: IntGauge,
    pub jobs_held: IntGauge,
    pub job_duration: HistogramVec,
    pub checkpoints: IntCounterVec,
    pub checkpoint_duration: Histogram,
    pub lease_lost: IntCounter,
    pub heartbeat_failures: IntCounter,
    pub task_failures: IntCounterVec,
    pub store_up: IntGauge,
    pub build_info: GaugeVec,
    pub pruned: IntCounterVec,
    pub queue_jobs: IntGaugeVec,
    pub queue_oldest_pending_age: GaugeVec,
    pub queue_unserved: IntGaugeVec,
    pub drain_eta: Gauge,
    pub work_at_risk: Gauge,
    pub drain_would_force: IntGauge,
    /// Whether a scrape has shown `handover_phase{phase="stopped"}`: the final scrape.
    final_scrape: watch::Sender<bool>,
    /// Held while a scrape reads the phase, sets the gauges and gathers, and while the machine
    /// changes phase.
    render_lock: std::sync::Mutex<()>,
}

fn registered<T: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: T,
) -> T {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique and valid");
    metric
}

impl Metrics {
    /// Creates and registers every metric; `kinds` are the job kinds this worker runs.
    pub fn new(kinds: &[String]) -> Metrics {
        let registry = Registry::new();
        let r = &registry;
        let phase = registered(
            r,
            IntGaugeVec::new(
                Opts::new(
                    "handover_phase",
                    "1 for the worker's current phase, 0 for the others.",
                ),
                &["phase"],
            )
            .unwrap(),
        );
        let ready = registered(
            r,
            IntGauge::new(
                "handover_ready",
                "1 while the worker is running with its store reachable (what /readyz answers).",
            )
            .unwrap(),
        );
        let shutdown_phase_duration = registered(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "handover_shutdown_phase_duration_seconds",
                    "Time spent in each shutdown phase, observed when the phase ends.",
                )
                .buckets(PHASE_BUCKETS.to_vec()),
                &["phase", "trigger"],
            )
            .unwrap(),
        );
        let shutdown_duration = registered(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "handover_shutdown_duration_seconds",
                    "Time from the start of a drain to the end of deregistering.",
                )
                .buckets(PHASE_BUCKETS.to_vec()),
                &["trigger", "outcome"],
            )
            .unwrap(),
        );
        let shutdowns = registered(
            r,
            IntCounterVec::new(
                Opts::new(
                    "handover_shutdowns_total",
                    "Shutdowns by trigger, mode and outcome.",
                ),
                &["trigger", "mode", "outcome"],
            )
            .unwrap(),
        );
        let counter_by_kind = |name: &str, help: &str| {
            registered(
                r,
                IntCounterVec::new(Opts::new(name, help), &["kind"]).unwrap(),
            )
        };
        let jobs_claimed = counter_by_kind("handover_jobs_claimed_total", "Jobs claimed.");
        let jobs_completed = counter_by_kind("handover_jobs_completed_total", "Jobs completed.");
        let jobs_failed = counter_by_kind(
            "handover_jobs_failed_total",
            "Failed job attempts (retried, or dead when attempts are exhausted).",
        );
        let jobs_cancelled = counter_by_kind(
            "handover_jobs_cancelled_total",
            "Running jobs this worker stopped and recorded cancelled because an operator cancelled them.",
        );
        let checkpoints = counter_by_kind("handover_checkpoints_total", "Checkpoints saved.");
        let jobs_released = registered(
            r,
            IntCounterVec::new(
                Opts::new(
                    "handover_jobs_released_total",
                    "Held jobs let go without completing, by reason.",
                ),
                &["kind", "reason"],
            )
            .unwrap(),
        );
        let jobs_rescued = registered(
            r,
            IntCounter::new(
                "handover_jobs_rescued_total",
                "Jobs this worker's rescuer returned to the queue after their lease expired.",
            )
            .unwrap(),
        );
        let jobs_in_flight = registered(
            r,
            IntGauge::new(
                "handover_jobs_in_flight",
                "Jobs started on this worker whose attempt has not ended (held jobs not included).",
            )
            .unwrap(),
        );
        let jobs_held = registered(
            r,
            IntGauge::new(
                "handover_jobs_held",
                "Jobs claimed ahead and leased by this worker, waiting for a free slot.",
            )
            .unwrap(),
        );
        let job_duration = registered(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "handover_job_duration_seconds",
                    "Duration of job attempts on this worker.",
                )
                .buckets(JOB_BUCKETS.to_vec()),
                &["kind", "outcome"],
            )
            .unwrap(),
        );
        let checkpoint_duration = registered(
            r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "handover_checkpoint_duration_seconds",
                    "Time to write a checkpoint to the store.",
                )
                .buckets(CHECKPOINT_BUCKETS.to_vec()),
            )
            .unwrap(),
        );
        let lease_lost = registered(
            r,
            IntCounter::new(
                "handover_lease_lost_total",
                "Jobs stopped because another worker took their lease.",
            )
            .unwrap(),
        );
        let heartbeat_failures = registered(
            r,
            IntCounter::new(
                "handover_heartbeat_failures_total",
                "Heartbeats the store did not accept.",
            )
            .unwrap(),
        );
        let task_failures = registered(
            r,
            IntCounterVec::new(
                Opts::new(
                    "handover_task_failures_total",
                    "Essential background tasks that panicked or ended while the worker ran.",
                ),
                &["task"],
            )
            .unwrap(),
        );
        let store_up = registered(
            r,
            IntGauge::new(
                "handover_store_up",
                "1 while the store answers, 0 while it does not.",
            )
            .unwrap(),
        );
        let build_info = registered(
            r,
            GaugeVec::new(
                Opts::new(
                    "handover_build_info",
                    "Always 1; the version is in the label.",
                ),
                &["version"],
            )
            .unwrap(),
        );
        let pruned = registered(
            r,
            IntCounterVec::new(
                Opts::new(
                    "handover_pruned_total",
                    "Rows deleted by this worker's retention passes, by table.",
                ),
                &["table"],
            )
            .unwrap(),
        );
        let queue_jobs = registered(
            r,
            IntGaugeVec::new(
                Opts::new(
                    "handover_queue_jobs",
                    "Jobs in the store by kind and status (pending, running, failed, dead), \
                     refreshed in the background every --queue-metrics-interval.",
                ),
                &["kind", "status"],
            )
            .unwrap(),
        );
        let queue_oldest_pending_age = registered(
            r,
            GaugeVec::new(
                Opts::new(
                    "handover_queue_oldest_pending_age_seconds",
                    "How long the longest-waiting runnable pending job of each kind has waited.",
                ),
                &["kind"],
            )
            .unwrap(),
        );
        let queue_unserved = registered(
            r,
            IntGaugeVec::new(
                Opts::new(
                    "handover_queue_unserved_jobs",
                    "Waiting jobs (pending or failed) of a kind no live worker of the store serves.",
                ),
                &["kind"],
            )
            .unwrap(),
        );
        let drain_eta = registered(
            r,
            Gauge::new(
                "handover_drain_eta_seconds",
                "How long a handoff drain started now would wait for this worker's jobs to reach their next checkpoints, from each job's own cadence.",
            )
            .unwrap(),
        );
        let work_at_risk = registered(
            r,
            Gauge::new(
                "handover_work_at_risk_seconds",
                "Seconds of work since the last checkpoint, summed over this worker's running jobs: what a SIGKILL now would lose.",
            )
            .unwrap(),
        );
        let drain_would_force = registered(
            r,
            IntGauge::new(
                "handover_drain_would_force",
                "1 while a drain could outlast the time --grace gives its jobs: --drain-delay plus the longest checkpoint period among the running jobs exceeds --grace less the forced path's reserve, so a drain at the wrong moment would force-kill.",
            )
            .unwrap(),
        );

        let metrics = Metrics {
            registry,
            phase,
            ready,
            shutdown_phase_duration,
            shutdown_duration,
            shutdowns,
            jobs_claimed,
            jobs_completed,
            jobs_failed,
            jobs_cancelled,
            jobs_released,
            jobs_rescued,
            jobs_in_flight,
            jobs_held,
            job_duration,
            checkpoints,
            checkpoint_duration,
            lease_lost,
            heartbeat_failures,
            task_failures,
            store_up,
            build_info,
            pruned,
            queue_jobs,
            queue_oldest_pending_age,
            queue_unserved,
            drain_eta,
            work_at_risk,
            drain_would_force,
            final_scrape: watch::channel(false).0,
            render_lock: std::sync::Mutex::new(()),
        };
        metrics.initialise_labels(kinds);
        metrics
    }

    fn initialise_labels(&self, kinds: &[String]) {
        for phase in Phase::ALL {
            self.phase.with_label_values(&[phase.as_str()]).set(0);
        }
        self.set_phase(Phase::Starting);
        for trigger in Trigger::ALL {
            for phase in Phase::SHUTDOWN {
                self.shutdown_phase_duration
                    .with_label_values(&[phase.as_str(), trigger.as_str()]);
            }
            for outcome in Outcome::ALL {
                self.shutdown_duration
                    .with_label_values(&[trigger.as_str(), outcome.as_str()]);
                for mode in Mode::ALL {
                    self.shutdowns.with_label_values(&[
                        trigger.as_str(),
                        mode.as_str(),
                        outcome.as_str(),
                    ]);
                }
            }
        }
        for kind in kinds {
            let kind = kind.as_str();
            for status in crate::model::QUEUE_STATUSES {
                self.queue_jobs.with_label_values(&[kind, status.as_str()]);
            }
            self.queue_oldest_pending_age.with_label_values(&[kind]);
            self.queue_unserved.with_label_values(&[kind]);
            self.jobs_claimed.with_label_values(&[kind]);
            self.jobs_completed.with_label_values(&[kind]);
            self.jobs_failed.with_label_values(&[kind]);
            self.jobs_cancelled.with_label_values(&[kind]);
            self.checkpoints.with_label_values(&[kind]);
            for reason in ReleaseReason::ALL {
                self.jobs_released
                    .with_label_values(&[kind, reason.as_str()]);
            }
            for outcome in AttemptOutcome::ALL {
                self.job_duration
                    .with_label_values(&[kind, outcome.as_str()]);
            }
        }
        for task in Task::ALL {
            self.task_failures.with_label_values(&[task.as_str()]);
        }
        self.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1.0);
        for table in PrunedTable::ALL {
            self.pruned.with_label_values(&[table.as_str()]);
        }
    }

    /// Sets `handover_phase` to 1 for `current` and 0 for every other phase.
    fn set_phase(&self, current: Phase) {
        for phase in Phase::ALL {
            self.phase
                .with_label_values(&[phase.as_str()])
                .set(i64::from(*phase == current));
        }
    }

    /// Held by the phase machine while it ends one phase and enters the next (observing the
    /// ended phase, publishing the new one): a scrape renders before the change or after it,
    /// never halfway through.
    pub fn hold_scrapes(&self) -> std::sync::MutexGuard<'_, ()> {
        self.render_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Renders the text exposition format. `read_state` gives the worker's phase and readiness,
    /// read from the phase machine under the same lock as the gathering (and the machine's
    /// changes, see [`Metrics::hold_scrapes`]): `handover_phase`, `handover_ready` and every
    /// figure of a scrape belong to one instant. Counts it as a final scrape when it shows
    /// `stopped` (the machine publishes `stopped` after every other metric of the shutdown, so
    /// such a scrape carries them all).
    pub fn render(&self, read_state: impl FnOnce() -> (Phase, bool)) -> String {
        let mut buffer = Vec::new();
        let phase = {
            let _no_phase_change = self.hold_scrapes();
            let (phase, ready) = read_state();
            self.set_phase(phase);
            self.ready.set(i64::from(ready));
            TextEncoder::new()
                .encode(&self.registry.gather(), &mut buffer)
                .expect("encoding to a Vec cannot fail");
            phase
        };
        if phase == Phase::Stopped {
            self.final_scrape.send_replace(true);
        }
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }

    /// Resolves once a scrape that showed phase `stopped` has been rendered (at once if one
    /// already was).
    pub async fn wait_for_final_scrape(&self) {
        let mut receiver = self.final_scrape.subscribe();
        let _ = receiver.wait_for(|answered| *answered).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spec_metric_is_present_from_the_first_scrape() {
        let metrics = Metrics::new(&["demo".to_string()]);
        let text = metrics.render(|| (Phase::Starting, false));
        for name in [
            "handover_phase",
            "handover_ready",
            "handover_shutdown_phase_duration_seconds",
            "handover_shutdown_duration_seconds",
            "handover_shutdowns_total",
            "handover_jobs_claimed_total",
            "handover_jobs_completed_total",
            "handover_jobs_failed_total",
            "handover_jobs_cancelled_total",
            "handover_jobs_released_total",
            "handover_jobs_rescued_total",
            "handover_jobs_in_flight",
            "handover_jobs_held",
            "handover_job_duration_seconds",
            "handover_checkpoints_total",
            "handover_checkpoint_duration_seconds",
            "handover_lease_lost_total",
            "handover_heartbeat_failures_total",
            "handover_task_failures_total",
            "handover_store_up",
            "handover_build_info",
            "handover_pruned_total",
            "handover_queue_jobs",
            "handover_queue_oldest_pending_age_seconds",
            "handover_queue_unserved_jobs",
            "handover_drain_eta_seconds",
            "handover_work_at_risk_seconds",
            "handover_drain_would_force",
        ] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
        }
        assert!(text.contains(r#"handover_jobs_released_total{kind="demo",reason="shutdown"} 0"#));
        assert!(text.contains(r#"handover_phase{phase="starting"} 1"#));
        assert!(text.contains(r#"handover_task_failures_total{task="heartbeat"} 0"#));
        assert!(text.contains(
            r#"handover_shutdowns_total{mode="handoff",outcome="clean",trigger="internal"} 0"#
        ));
        assert!(text.contains(r#"handover_phase{phase="running"} 0"#));
        assert!(text.contains(r#"handover_pruned_total{table="jobs"} 0"#));
        assert!(text.contains(r#"handover_task_failures_total{task="pruner"} 0"#));
    }

    #[test]
    fn set_phase_leaves_exactly_one_phase_at_one() {
        let metrics = Metrics::new(&[]);
        metrics.set_phase(Phase::Checkpointing);
        let ones: Vec<_> = Phase::ALL
            .iter()
            .filter(|p| metrics.phase.with_label_values(&[p.as_str()]).get() == 1)
            .collect();
        assert_eq!(ones, vec![&Phase::Checkpointing]);
    }

    #[test]
    fn a_scrape_shows_the_phase_and_readiness_it_was_given_and_stopped_is_final() {
        let metrics = Metrics::new(&[]);
        let running = metrics.render(|| (Phase::Running, true));
        assert!(running.contains("handover_phase{phase=\"running\"} 1"));
        assert!(running.contains("handover_ready 1"));
        assert!(!*metrics.final_scrape.borrow());
        let draining = metrics.render(|| (Phase::Draining, false));
        assert!(draining.contains("handover_phase{phase=\"draining\"} 1"));
        assert!(draining.contains("handover_phase{phase=\"running\"} 0"));
        assert!(draining.contains("handover_ready 0"));
        assert!(!*metrics.final_scrape.borrow());
        metrics.render(|| (Phase::Stopped, false));
        assert!(*metrics.final_scrape.borrow());
    }
}
