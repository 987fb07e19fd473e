//! Whether the store takes this worker's writes: feeds `/readyz`, `handover_store_up`, and the
//! rescuer's rule that it waits one full lease TTL of connectivity before rescuing.
//!
//! Only writes report success here, so a store that answers reads but cannot write (a full disk)
//! is down. A broken store (a corrupt file, or one deleted or replaced underneath the worker) stays
//! down for the life of the process: no later success can vouch for it.

use crate::store::StoreError;
use prometheus::IntGauge;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct StoreHealth {
    up: AtomicBool,
    broken: AtomicBool,
    connected_since: Mutex<Option<Instant>>,
    gauge: IntGauge,
}

impl StoreHealth {
    /// Starts as connected now (the worker has just reached the store).
    pub fn new(gauge: IntGauge) -> Self {
        gauge.set(1);
        StoreHealth {
            up: AtomicBool::new(true),
            broken: AtomicBool::new(false),
            connected_since: Mutex::new(Some(Instant::now())),
            gauge,
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }

    /// Records a successful store write.
    pub fn succeeded(&self) {
        if self.broken.load(Ordering::SeqCst) {
            return;
        }
        if !self.up.swap(true, Ordering::SeqCst) {
            tracing::info!("store reachable again");
        }
        self.gauge.set(1);
        let mut since = self
            .connected_since
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        since.get_or_insert_with(Instant::now);
    }

    /// Records a failed store round trip; only failures of the store itself (not of one request's
    /// input) mark it down.
    pub fn failed(&self, err: &StoreError) {
        if !err.store_is_down() {
            return;
        }
        let broken = matches!(err, StoreError::Broken(_));
        if broken && !self.broken.swap(true, Ordering::SeqCst) {
            tracing::error!(%err, "the store is unusable; this worker stays not ready until it is restarted");
        }
        if self.up.swap(false, Ordering::SeqCst) && !broken {
            tracing::warn!(%err, "store unreachable or not writable");
        }
        self.gauge.set(0);
        *self
            .connected_since
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Whether the store has answered continuously for at least `span`.
    pub fn connected_for(&self, span: Duration) -> bool {
        self.connected_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|since| since.elapsed() >= span)
    }
}
