//! What a drain started now would cost (SPEC §10 "Fleet operations"): how long it would take, from
//! each running job's own checkpoint cadence, and the work a SIGKILL now would lose. A background
//! task keeps the gauges current every second and warns when the drain would outlast the time a
//! drain gives its jobs, that is when this configuration would force-kill.

use crate::jobs::cadence::DrainEstimate;
use crate::jobs::inflight::InFlight;
use crate::lifecycle::machine::force_reserve;
use crate::model::DrainCost;
use crate::telemetry::Metrics;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the gauges follow the jobs.
const EVERY: Duration = Duration::from_secs(1);

/// The drain settings a forecast needs.
#[derive(Clone, Copy, Debug)]
pub struct DrainTimes {
    pub drain_delay: Duration,
    pub grace: Duration,
}

/// A drain started now, as `/api/status` and the pages show it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DrainForecast {
    /// `--drain-delay`, then the wait for the slowest job's next checkpoint.
    pub drain_eta_seconds: f64,
    /// Seconds of work since the running jobs' last checkpoints.
    pub work_at_risk_seconds: f64,
    /// Running jobs whose cadence is not known yet (no checkpoint, no history of their kind).
    pub drain_eta_unknown_jobs: usize,
    /// The longest a drain could take if it started at the worst moment: `--drain-delay` plus the
    /// longest checkpoint period among the running jobs.
    pub drain_eta_worst_seconds: f64,
    /// The time a drain gives its jobs before the forced path: `--grace` less its reserve.
    pub drain_allowance_seconds: f64,
    /// The configuration would force-kill: the ETA now, or at the worst moment, exceeds the
    /// allowance (a job checkpoints less often than a drain allows).
    pub drain_would_force: bool,
}

impl DrainTimes {
    /// The time a drain gives its jobs before the forced path starts.
    pub fn allowance(&self) -> Duration {
        self.grace - force_reserve(self.grace)
    }

    pub fn forecast(&self, jobs: &InFlight) -> DrainForecast {
        self.forecast_of(jobs.estimate())
    }

    /// The forecast from an estimate already taken (with the job views, in one snapshot).
    pub fn forecast_of(&self, estimate: DrainEstimate) -> DrainForecast {
        let delay = self.drain_delay.as_secs_f64();
        let eta = delay + estimate.drain_eta_seconds;
        let worst = (delay + estimate.worst_eta_seconds).max(eta);
        let allowance = self.allowance().as_secs_f64();
        DrainForecast {
            drain_eta_seconds: eta,
            work_at_risk_seconds: estimate.work_at_risk_seconds,
            drain_eta_unknown_jobs: estimate.unknown_jobs,
            drain_eta_worst_seconds: worst,
            drain_allowance_seconds: allowance,
            drain_would_force: worst > allowance,
        }
    }
}

impl DrainForecast {
    /// What the heartbeat writes into the worker row.
    pub fn cost(&self) -> DrainCost {
        DrainCost {
            drain_eta_seconds: self.drain_eta_seconds,
            work_at_risk_seconds: self.work_at_risk_seconds,
        }
    }
}

/// Keeps `handover_drain_eta_seconds`, `handover_work_at_risk_seconds` and
/// `handover_drain_would_force` current, and logs when a drain would start or stop force-killing.
pub struct DrainCostWatch {
    pub jobs: Arc<InFlight>,
    pub times: DrainTimes,
    pub metrics: Arc<Metrics>,
    pub stop: CancellationToken,
}

impl DrainCostWatch {
    pub async fn run(self) {
        let mut ticker = tokio::time::interval(EVERY);
        let mut warned = false;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = self.stop.cancelled() => return,
            }
            let forecast = self.times.forecast(&self.jobs);
            self.metrics.drain_eta.set(forecast.drain_eta_seconds);
            self.metrics.work_at_risk.set(forecast.work_at_risk_seconds);
            self.metrics
                .drain_would_force
                .set(i64::from(forecast.drain_would_force));
            if forecast.drain_would_force && !warned {
                tracing::warn!(
                    drain_eta_seconds = forecast.drain_eta_seconds,
                    drain_eta_worst_seconds = forecast.drain_eta_worst_seconds,
                    allowance_seconds = forecast.drain_allowance_seconds,
                    "a drain could outlast --grace and force-kill: a job checkpoints less often than a drain allows; checkpoint more often or raise --grace"
                );
            } else if !forecast.drain_would_force && warned {
                tracing::info!(
                    drain_eta_seconds = forecast.drain_eta_seconds,
                    "a drain now would finish within --grace again"
                );
            }
            warned = forecast.drain_would_force;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eta_counts_the_drain_delay_and_compares_with_the_allowance() {
        let times = DrainTimes {
            drain_delay: Duration::from_secs(2),
            grace: Duration::from_secs(10),
        };
        assert_eq!(times.allowance(), Duration::from_secs(9));
        let within = times.forecast_of(DrainEstimate {
            drain_eta_seconds: 6.5,
            work_at_risk_seconds: 3.0,
            unknown_jobs: 0,
            worst_eta_seconds: 7.0,
        });
        assert_eq!(within.drain_eta_seconds, 8.5);
        assert!(!within.drain_would_force);
        // Now the next checkpoint is close, but a whole period is longer than the allowance.
        let unlucky = times.forecast_of(DrainEstimate {
            drain_eta_seconds: 0.5,
            worst_eta_seconds: 7.5,
            ..DrainEstimate::default()
        });
        assert!(unlucky.drain_would_force);
        assert_eq!(unlucky.drain_eta_worst_seconds, 9.5);
        assert_eq!(unlucky.cost().drain_eta_seconds, 2.5);
    }
}
