//! Store pushes turned into wake-ups (new jobs wake the claim loop; a drain request for this
//! worker makes the heartbeat, which takes the request, run at once; a cancel of one of its jobs
//! makes the cancel watcher look at once), and the machine's phase
//! mirrored into the worker row for the fleet view.

use crate::lifecycle::MachineHandle;
use crate::model::Phase;
use crate::store::{SharedStore, StoreEvent};
use std::sync::Arc;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

/// Relays store events until `stop` is cancelled (or the listener is gone).
pub async fn relay_store_events(
    mut events: mpsc::UnboundedReceiver<StoreEvent>,
    worker_id: String,
    claim_wake: Arc<Notify>,
    beat_now: Arc<Notify>,
    cancel_wake: Arc<Notify>,
    stop: CancellationToken,
) -> Result<(), String> {
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = stop.cancelled() => return Ok(()),
        };
        match event {
            Some(StoreEvent::JobsAvailable) => claim_wake.notify_one(),
            Some(StoreEvent::DrainRequested { worker_id: target }) if target == worker_id => {
                beat_now.notify_one()
            }
            Some(StoreEvent::DrainRequested { .. }) => {}
            Some(StoreEvent::CancelRequested { worker_id: target }) if target == worker_id => {
                cancel_wake.notify_one()
            }
            Some(StoreEvent::CancelRequested { .. }) => {}
            Some(StoreEvent::Reconnected) => {
                claim_wake.notify_one();
                beat_now.notify_one();
                cancel_wake.notify_one();
            }
            // The listener stops with the same token; only an early end is a failure.
            None if stop.is_cancelled() => return Ok(()),
            None => return Err("the store's listener stopped sending".into()),
        }
    }
}

/// Mirrors the machine's phase into the worker row, coalescing quick changes, until `stop` is
/// cancelled. From `deregistering` on it writes nothing: that phase writes `stopped` itself.
pub async fn report_phases(
    store: SharedStore,
    worker_id: String,
    machine: MachineHandle,
    stop: CancellationToken,
) {
    let mut status = machine.subscribe();
    let mut written = Phase::Starting;
    loop {
        let phase = status.borrow_and_update().phase;
        if matches!(phase, Phase::Deregistering | Phase::Stopped) {
            break;
        }
        if phase != written {
            let recorded = tokio::select! {
                recorded = store.set_worker_phase(&worker_id, phase) => recorded,
                _ = stop.cancelled() => return,
            };
            match recorded {
                Ok(()) => written = phase,
                Err(err) => tracing::debug!(%err, "could not record the phase; will retry"),
            }
        }
        tokio::select! {
            changed = status.changed() => if changed.is_err() { break },
            _ = stop.cancelled() => return,
        }
    }
    stop.cancelled().await
}
