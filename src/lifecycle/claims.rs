//! The switch the phase machine flips to stop and restart claiming and starting held jobs; the
//! claim loop obeys it.

use tokio::sync::{watch, Mutex, MutexGuard};

/// Whether the claim loop may claim and start jobs; the phase machine pauses and resumes it.
pub struct ClaimControl {
    allowed: watch::Sender<bool>,
    /// Held by the claim loop from the moment it decides to claim until the claimed jobs are
    /// registered.
    in_progress: Mutex<()>,
    /// Held by the claim loop while it starts a held job (until its attempt task is registered).
    starting: Mutex<()>,
}

impl Default for ClaimControl {
    fn default() -> Self {
        ClaimControl {
            allowed: watch::channel(false).0,
            in_progress: Mutex::new(()),
            starting: Mutex::new(()),
        }
    }
}

impl ClaimControl {
    /// Stops claiming and starting held jobs; returns once no claim or start is in progress, so
    /// every claimed job is registered and every started one has its attempt task.
    pub async fn pause(&self) {
        self.allowed.send_replace(false);
        drop(self.in_progress.lock().await);
        drop(self.starting.lock().await);
    }

    /// Allows claiming and starting held jobs again.
    pub fn resume(&self) {
        self.allowed.send_replace(true);
    }

    /// Whether claiming is allowed now.
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

    /// Marks a held job being started until the guard is dropped (after its attempt task is
    /// registered); a pausing machine waits for it. Separate from [`ClaimControl::claiming`], so
    /// a claim's round trip never holds up a start.
    pub async fn starting(&self) -> MutexGuard<'_, ()> {
        self.starting.lock().await
    }
}
