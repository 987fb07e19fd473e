//! Whether the store answers, as seen by this worker: feeds `/readyz`, `handover_store_up`, and the
//! rescuer's rule that it waits one full lease TTL of connectivity before rescuing.

use crate::store::StoreError;
use prometheus::IntGauge;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct StoreHealth {
    up: AtomicBool,
    connected_since: Mutex<Option<Instant>>,
    gauge: IntGauge,
}

impl StoreHealth {
    /// Starts as connected now (the worker has just reached the store).
    pub fn new(gauge: IntGauge) -> Self {
        gauge.set(1);
        StoreHealth {
            up: AtomicBool::new(true),
            connected_since: Mutex::new(Some(Instant::now())),
            gauge,
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }

    /// Records a successful store round trip.
    pub fn succeeded(&self) {
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

    /// Records a failed store round trip; only transient failures mark the store down.
    pub fn failed(&self, err: &StoreError) {
        if !err.is_transient() {
            return;
        }
        if self.up.swap(false, Ordering::SeqCst) {
            tracing::warn!(%err, "store unreachable");
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
