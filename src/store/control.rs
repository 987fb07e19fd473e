//! What both backends share of job control: the per-job answers of a cancel or a retry, and the
//! operator events they write.

use super::{JobId, JobStatus, NewEvent};
use crate::model::{CancelOutcome, JobEventKind, RetryOutcome};
use serde_json::json;
use std::collections::BTreeMap;

/// Per asked id: cancelled at once, requested of its owner, or why not.
pub(crate) fn cancel_outcomes(
    ids: &[JobId],
    cancelled: &[JobId],
    owners: &BTreeMap<JobId, String>,
    found: &BTreeMap<JobId, JobStatus>,
) -> Vec<CancelOutcome> {
    ids.iter()
        .map(|id| {
            if cancelled.contains(id) {
                CancelOutcome::Cancelled
            } else if let Some(owner) = owners.get(id) {
                CancelOutcome::Requested {
                    owner: owner.clone(),
                }
            } else {
                found.get(id).map_or(CancelOutcome::NotFound, |status| {
                    CancelOutcome::Finished(*status)
                })
            }
        })
        .collect()
}

/// Per asked id: retried, or why not.
pub(crate) fn retry_outcomes(
    ids: &[JobId],
    retried: &[JobId],
    found: &BTreeMap<JobId, JobStatus>,
) -> Vec<RetryOutcome> {
    ids.iter()
        .map(|id| {
            if retried.contains(id) {
                RetryOutcome::Retried
            } else {
                found.get(id).map_or(RetryOutcome::NotFound, |status| {
                    RetryOutcome::Refused(*status)
                })
            }
        })
        .collect()
}

/// `cancelled` events for jobs an operator cancelled before they ran.
pub(crate) fn cancelled_events(cancelled: &[JobId]) -> Vec<NewEvent> {
    cancelled
        .iter()
        .map(|id| NewEvent::by_operator(JobEventKind::Cancelled, *id, json!({})))
        .collect()
}

/// `retried` events.
pub(crate) fn retried_events(retried: &[JobId], from_scratch: bool) -> Vec<NewEvent> {
    retried
        .iter()
        .map(|id| {
            NewEvent::by_operator(
                JobEventKind::Retried,
                *id,
                json!({ "from_scratch": from_scratch }),
            )
        })
        .collect()
}
