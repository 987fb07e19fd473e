//! Workers as the store knows them (SPEC §3): registration, the worker row, drain requests and
//! what a heartbeat learns.

use super::{Lease, Mode, Phase};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A request, written into the store, that a worker drain itself.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct DrainRequest {
    pub mode: Mode,
    pub reason: Option<String>,
    pub requested_by: Option<String>,
    pub requested_at: Option<DateTime<Utc>>,
}

/// What a worker says about itself when it registers.
#[derive(Clone, Debug)]
pub struct WorkerRegistration {
    pub id: String,
    pub name: String,
    pub version: String,
    pub listen_addr: Option<String>,
    pub concurrency: u32,
    pub lease_ttl: Duration,
    /// The kinds this worker serves.
    pub kinds: Vec<String>,
}

/// A worker row (SPEC §3).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct WorkerRow {
    pub id: String,
    pub name: String,
    pub phase: Phase,
    pub version: String,
    pub listen_addr: Option<String>,
    pub concurrency: i64,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    pub in_flight: i64,
    pub drain_request: Option<DrainRequest>,
    /// Set by a rescuer that found this worker's heartbeat older than its lease TTL.
    pub declared_dead_at: Option<DateTime<Utc>>,
    pub stopped_at: Option<DateTime<Utc>>,
    /// The kinds it serves.
    #[serde(default)]
    pub kinds: Vec<String>,
}

impl WorkerRow {
    /// Running or draining, and not declared dead: it may still run jobs.
    pub fn is_live(&self) -> bool {
        self.stopped_at.is_none()
            && self.declared_dead_at.is_none()
            && !matches!(self.phase, super::Phase::Stopped)
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
