//! The record every shutdown leaves (SPEC §4), with its phases as lived.

use super::{JobId, Mode, Outcome, Phase, Trigger};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One phase of a shutdown as it was lived.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct PhaseSpan {
    pub phase: Phase,
    pub entered_at: DateTime<Utc>,
    /// None while the phase is current.
    pub duration_ms: Option<f64>,
}

/// The record every shutdown leaves in the store (SPEC §4).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ShutdownRecord {
    pub worker_id: String,
    pub worker_name: String,
    pub trigger: Trigger,
    pub mode: Mode,
    pub outcome: Outcome,
    pub requested_by: Option<String>,
    pub reason: Option<String>,
    pub started_at: DateTime<Utc>,
    pub duration_ms: f64,
    pub phases: Vec<PhaseSpan>,
    pub jobs_released: i64,
    /// Jobs that were still running when the shutdown was forced.
    pub forced_jobs: Vec<JobId>,
}
