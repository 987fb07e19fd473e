//! The rolling-drain budget (SPEC §10): which queued drain requests start now. Both backends run
//! this inside one serialized write transaction, so two callers (or a caller and a worker handing
//! the budget on as it stops) never see the same free place.

use crate::model::{DrainQueued, QueuedDrain};
use std::collections::BTreeSet;

/// The phases a worker can be asked to drain in (SQL list).
pub(crate) const IN_SERVICE_PHASES: &str = "('starting', 'running')";

/// Counts the workers out as the budget counts them: draining (for any reason), or asked to and not
/// yet started, and still alive. The same SQL on both backends.
pub(crate) fn count_out() -> String {
    format!(
        "SELECT count(*) FROM workers WHERE declared_dead_at IS NULL AND stopped_at IS NULL \
         AND phase <> 'stopped' AND (phase NOT IN {IN_SERVICE_PHASES} OR drain_mode IS NOT NULL)"
    )
}

/// Oldest first, each queued request starts while fewer than its own budget are out; `out` counts
/// the workers draining or asked to. The queue holds only workers still in service.
pub(crate) fn to_start(mut out: usize, queue: &[QueuedDrain]) -> Vec<&QueuedDrain> {
    let mut starting = Vec::new();
    for queued in queue {
        if out < queued.max_draining as usize {
            starting.push(queued);
            out += 1;
        }
    }
    starting
}

/// What became of each worker asked for: started now, queued (now or before), or already out.
pub(crate) fn outcomes(
    worker_ids: &[String],
    in_service: &[String],
    started: &[String],
) -> Vec<(String, DrainQueued)> {
    let started: BTreeSet<&String> = started.iter().collect();
    let in_service: BTreeSet<&String> = in_service.iter().collect();
    worker_ids
        .iter()
        .map(|id| {
            let state = if started.contains(id) {
                DrainQueued::Started
            } else if in_service.contains(id) {
                DrainQueued::Queued
            } else {
                DrainQueued::AlreadyOut
            };
            (id.clone(), state)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Mode;
    use chrono::Utc;

    fn queued(worker: &str, max_draining: u32) -> QueuedDrain {
        QueuedDrain {
            worker_id: worker.into(),
            mode: Mode::Handoff,
            reason: None,
            requested_by: None,
            max_draining,
            queued_at: Utc::now(),
        }
    }

    fn ids(chosen: Vec<&QueuedDrain>) -> Vec<&str> {
        chosen.into_iter().map(|q| q.worker_id.as_str()).collect()
    }

    #[test]
    fn the_budget_counts_workers_already_out() {
        let queue = [queued("a", 2), queued("b", 2), queued("c", 2)];
        assert_eq!(ids(to_start(0, &queue)), ["a", "b"]);
        assert_eq!(ids(to_start(1, &queue)), ["a"]);
        assert!(to_start(2, &queue).is_empty());
    }

    #[test]
    fn each_request_keeps_its_own_budget() {
        // A caller allowing 3 out is not held back by an older one allowing 1.
        let queue = [queued("a", 1), queued("b", 3)];
        assert_eq!(ids(to_start(1, &queue)), ["b"]);
    }
}
