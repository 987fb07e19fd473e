//! The switch the phase machine flips to stop and restart claiming; the claim loop obeys it.

use tokio::sync::{watch, Mutex, MutexGuard};

pub struct ClaimControl {
    allowed: watch::Sender<bool>,
    /// Held by the claim loop from the moment it decides to claim until the claimed jobs are
    /// registered.
    in_progress: Mutex<()>,
}

impl Default for ClaimControl {
    fn default() -> Self {
        ClaimControl {
            allowed: watch::channel(false).0,
            in_progress: Mutex::new(()),
        }
    }
}

impl ClaimControl {
    /// Stops claiming; returns once no claim is in progress, so every claimed job is registered.
    pub async fn pause(&self) {
        self.allowed.send_replace(false);
        drop(self.in_progress.lock().await);
    }

    pub fn resume(&self) {
        self.allowed.send_replace(true);
    }

    pub fn is_allowed(&self) -> bool {
        *self.allowed.borrow()
    }

    /// Follows the switch.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.allowed.subscribe()
    }

    /// Marks a claim in progress until the guard is dropped (after its jobs are registered); a
    /// pausing machine waits for it.
    pub async fn claiming(&self) -> MutexGuard<'_, ()> {
        self.in_progress.lock().await
    }
}
