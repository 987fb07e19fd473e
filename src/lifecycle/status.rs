//! The machine's published state: current phase, the drain in progress, and the timeline of phases.

use super::{Mode, Outcome, Phase, Trigger};
use crate::store::PhaseSpan;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::Duration;
use tokio::time::Instant;

/// What the machine publishes on every change (read by probes, the API and the pages).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Status {
    /// The current phase.
    pub phase: Phase,
    /// What started the drain in progress (or the last one, once stopped).
    pub trigger: Option<Trigger>,
    /// The drain's mode.
    pub mode: Option<Mode>,
    /// Who asked for the drain, when known.
    pub requested_by: Option<String>,
    /// Why the drain was asked for.
    pub reason: Option<String>,
    /// When the forced path starts if the shutdown has not finished.
    pub deadline: Option<DateTime<Utc>>,
    /// Whether the drain in progress may still be cancelled.
    pub cancellable: bool,
    /// How the shutdown ended, once `stopped`.
    pub outcome: Option<Outcome>,
    /// The phases lived so far, oldest first.
    pub phases: Vec<PhaseSpan>,
}

impl Status {
    /// The status of a worker that has not started running yet.
    pub fn starting() -> Status {
        Status {
            phase: Phase::Starting,
            trigger: None,
            mode: None,
            requested_by: None,
            reason: None,
            deadline: None,
            cancellable: false,
            outcome: None,
            phases: vec![PhaseSpan {
                phase: Phase::Starting,
                entered_at: Utc::now(),
                duration_ms: None,
            }],
        }
    }
}

/// One phase as lived, with a monotonic clock for its duration.
#[derive(Clone, Debug)]
pub struct LivedPhase {
    /// Which phase.
    pub phase: Phase,
    /// When it was entered (wall clock).
    pub entered_at: DateTime<Utc>,
    /// When it was entered (monotonic clock, for the duration).
    pub entered: Instant,
    /// How long it lasted, once it ended.
    pub duration: Option<Duration>,
}

impl LivedPhase {
    /// A phase entered now.
    pub fn new(phase: Phase) -> Self {
        LivedPhase {
            phase,
            entered_at: Utc::now(),
            entered: Instant::now(),
            duration: None,
        }
    }

    /// The span as published; a current phase shows no duration.
    pub fn span(&self) -> PhaseSpan {
        PhaseSpan {
            phase: self.phase,
            entered_at: self.entered_at,
            duration_ms: self.duration.map(|d| d.as_secs_f64() * 1000.0),
        }
    }

    /// The span with a current phase measured up to now.
    pub fn span_so_far(&self) -> PhaseSpan {
        PhaseSpan {
            duration_ms: Some(
                self.duration
                    .unwrap_or_else(|| self.entered.elapsed())
                    .as_secs_f64()
                    * 1000.0,
            ),
            ..self.span()
        }
    }
}
