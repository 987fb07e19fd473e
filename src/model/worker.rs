//! Workers as the store knows them (SPEC §3): registration, the worker row, drain requests and
//! what a heartbeat learns.

use super::{Lease, Mode, Phase};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A request, written into the store, that a worker drain itself.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct DrainRequest {
    /// How to drain.
    pub mode: Mode,
    /// Why, as given.
    pub reason: Option<String>,
    /// Who asked.
    pub requested_by: Option<String>,
    /// When it was asked.
    pub requested_at: Option<DateTime<Utc>>,
}

/// What a worker says about itself when it registers.
#[derive(Clone, Debug)]
pub struct WorkerRegistration {
    /// The worker's id (a UUID per process).
    pub id: String,
    /// Its name.
    pub name: String,
    /// The handover version it runs.
    pub version: String,
    /// Where its HTTP server listens.
    pub listen_addr: Option<String>,
    /// How many jobs it runs at once.
    pub concurrency: u32,
    /// Its `--lease-ttl`: how old its heartbeat may get before it is declared dead.
    pub lease_ttl: Duration,
    /// The kinds this worker serves.
    pub kinds: Vec<String>,
}

/// A worker row (SPEC §3).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct WorkerRow {
    /// The worker's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its phase, as last reported.
    pub phase: Phase,
    /// The handover version it runs.
    pub version: String,
    /// Where its HTTP server listens.
    pub listen_addr: Option<String>,
    /// How many jobs it runs at once.
    pub concurrency: i64,
    /// When it registered.
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat.
    pub heartbeat_at: DateTime<Utc>,
    /// Jobs it held at its last heartbeat.
    pub in_flight: i64,
    /// A drain request waiting for it, if any.
    pub drain_request: Option<DrainRequest>,
    /// Set by a rescuer that found this worker's heartbeat older than its lease TTL.
    pub declared_dead_at: Option<DateTime<Utc>>,
    /// When it deregistered.
    pub stopped_at: Option<DateTime<Utc>>,
    /// The kinds it serves.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// What its last heartbeat said a handoff drain would take now, in seconds.
    #[serde(default)]
    pub drain_eta_seconds: Option<f64>,
    /// What its last heartbeat said a SIGKILL now would lose, in seconds of work.
    #[serde(default)]
    pub work_at_risk_seconds: Option<f64>,
}

impl WorkerRow {
    /// Running or draining, and not declared dead: it may still run jobs.
    pub fn is_live(&self) -> bool {
        self.stopped_at.is_none()
            && self.declared_dead_at.is_none()
            && !matches!(self.phase, super::Phase::Stopped)
    }
}

/// What a worker reports of its running jobs on every heartbeat (SPEC §10 "Fleet operations").
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DrainCost {
    /// How long a handoff drain started now would wait for its jobs' next checkpoints.
    pub drain_eta_seconds: f64,
    /// Seconds of work since its running jobs' last checkpoints.
    pub work_at_risk_seconds: f64,
}

/// A drain request waiting for the rolling-drain budget (`handover drain --max-draining N`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct QueuedDrain {
    /// The worker it is for.
    pub worker_id: String,
    /// How its jobs will be treated.
    pub mode: Mode,
    /// Why, recorded in the shutdown record.
    pub reason: Option<String>,
    /// Who asked.
    pub requested_by: Option<String>,
    /// It starts once fewer than this many workers are out (draining, or asked to).
    pub max_draining: u32,
    /// When it was queued.
    pub queued_at: DateTime<Utc>,
}

/// What became of a rolling-drain request for one worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DrainQueued {
    /// Within the budget: the worker was asked to drain now.
    Started,
    /// Beyond the budget: it waits as `queued`.
    Queued,
    /// Already draining or asked to (nothing written).
    AlreadyOut,
}

impl WorkerRow {
    /// Out of service as far as the rolling-drain budget counts: draining, or asked to drain and
    /// not yet started, and not stopped or dead.
    pub fn is_out(&self) -> bool {
        self.is_live() && (self.phase.is_shutting_down() || self.drain_request.is_some())
    }
}

/// What a heartbeat learnt from the store.
#[derive(Clone, Debug, Default)]
pub struct HeartbeatReport {
    /// The leases the store renewed (jobs this worker still owns).
    pub renewed: Vec<Lease>,
    /// False when the store no longer knows this worker as alive (it was declared dead or deleted).
    pub worker_known: bool,
    /// A drain request addressed to this worker, taken (cleared) from the store by this heartbeat.
    pub drain_request: Option<DrainRequest>,
}
