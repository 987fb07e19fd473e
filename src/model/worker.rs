//! Workers as the store knows them (SPEC §3): registration, the worker row, drain requests and
//! what a heartbeat learns.

use super::{Lease, Mode, Phase};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A request, written into the store, that a worker drain itself.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
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
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
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
