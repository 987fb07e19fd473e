//! The record every shutdown leaves (SPEC §4), with its phases as lived.

use super::{JobId, Mode, Outcome, Phase, Trigger};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One phase of a shutdown as it was lived.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct PhaseSpan {
    /// Which phase.
    pub phase: Phase,
    /// When it was entered.
    pub entered_at: DateTime<Utc>,
    /// None while the phase is current.
    pub duration_ms: Option<f64>,
}

/// The record every shutdown leaves in the store (SPEC §4).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ShutdownRecord {
    /// The worker that shut down.
    pub worker_id: String,
    /// Its name.
    pub worker_name: String,
    /// What started the shutdown.
    pub trigger: Trigger,
    /// Whether jobs were handed back or allowed to finish.
    pub mode: Mode,
    /// Clean, or forced when `--grace` ran out or a second signal came.
    pub outcome: Outcome,
    /// Who asked for it, when known.
    pub requested_by: Option<String>,
    /// Why, as given.
    pub reason: Option<String>,
    /// When the drain began.
    pub started_at: DateTime<Utc>,
    /// How long the shutdown took, up to the record's writing.
    pub duration_ms: f64,
    /// The shutdown's phases, in order.
    pub phases: Vec<PhaseSpan>,
    /// Jobs handed back to the store.
    pub jobs_released: i64,
    /// Jobs that were still running when the shutdown was forced.
    pub forced_jobs: Vec<JobId>,
}
