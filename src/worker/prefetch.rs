//! Claiming ahead: the worker's slots, and how many jobs to hold beyond them, sized from what the
//! worker observes (how long its handlers take, how recently a slot freed up), never a constant.
//!
//! A held job is claimed and leased but not started. Holding some means a freed slot takes its
//! next job without waiting for a round trip to the store, and one claim fetches many jobs. Holding
//! too many would sit on jobs another worker could run now, so the buffer is only as deep as the
//! jobs this worker expects to start within [`HORIZON`], and a held job not started within
//! [`HOLD_LIMIT`] is handed back.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Hold only the jobs expected to start within this long.
pub const HORIZON: Duration = Duration::from_millis(100);
/// A held job that has not started within this long is handed back (no attempt counted), and no
/// more are claimed ahead until a slot frees.
pub const HOLD_LIMIT: Duration = Duration::from_secs(1);
/// Weight of the newest handler duration in the running average.
const SMOOTHING: f64 = 0.2;

/// The most jobs one worker holds ahead, however short its jobs.
pub fn max_held(concurrency: usize) -> usize {
    concurrency.saturating_mul(16).clamp(256, 1024)
}

/// The worker's `--concurrency` slots. Dropping a [`Slot`] frees it and tells the claim loop.
pub struct Slots {
    semaphore: Arc<Semaphore>,
    freed: Arc<Notify>,
    concurrency: usize,
}

/// One running job's slot.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    freed: Arc<Notify>,
    /// Told when the slot frees, unless no job ever ran in it.
    pace: Option<Arc<Pace>>,
}

impl Slot {
    /// Gives the slot back without a job having run in it (what [`Pace`] learns nothing from).
    pub fn unused(mut self) {
        self.pace = None;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(pace) = &self.pace {
            pace.slot_freed();
        }
        self.freed.notify_one();
    }
}

impl Slots {
    pub fn new(concurrency: usize) -> Self {
        Slots {
            semaphore: Arc::new(Semaphore::new(concurrency)),
            freed: Arc::new(Notify::new()),
            concurrency,
        }
    }

    /// Waits for a free slot.
    pub async fn acquire(&self, pace: &Arc<Pace>) -> Slot {
        let permit = self
            .semaphore
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        Slot {
            _permit: permit,
            freed: self.freed.clone(),
            pace: Some(pace.clone()),
        }
    }

    pub fn free(&self) -> usize {
        self.semaphore.available_permits()
    }

    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Resolves when a slot has freed since the last call (a free before the call counts).
    pub async fn freed(&self) {
        self.freed.notified().await
    }
}

/// What the worker has observed of its own jobs, and the held-job target derived from it.
pub struct Pace {
    concurrency: usize,
    max_held: usize,
    observed: Mutex<Observed>,
}

struct Observed {
    /// Running average of how long handlers take, in seconds; None before the first returns.
    handler_seconds: Option<f64>,
    last_freed: Instant,
    /// When held jobs last went stale (handed back for waiting too long).
    last_stale: Option<Instant>,
}

impl Pace {
    pub fn new(concurrency: usize) -> Self {
        Pace {
            concurrency,
            max_held: max_held(concurrency),
            observed: Mutex::new(Observed {
                handler_seconds: None,
                last_freed: Instant::now(),
                last_stale: None,
            }),
        }
    }

    fn observed(&self) -> std::sync::MutexGuard<'_, Observed> {
        self.observed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A handler returned after `took`.
    pub fn handler_returned(&self, took: Duration) {
        let took = took.as_secs_f64();
        let mut observed = self.observed();
        observed.handler_seconds = Some(match observed.handler_seconds {
            Some(average) => average + SMOOTHING * (took - average),
            None => took,
        });
    }

    fn slot_freed(&self) {
        self.observed().last_freed = Instant::now();
    }

    /// Held jobs waited too long for a slot and were handed back: claim nothing ahead until a
    /// slot frees.
    pub fn held_went_stale(&self) {
        self.observed().last_stale = Some(Instant::now());
    }

    /// How many jobs to hold now beyond the free slots: those expected to start within
    /// [`HORIZON`], at the rate this worker's slots free up. Zero before any handler has
    /// returned, after held jobs went stale (until a slot frees), and whenever jobs run long.
    pub fn target(&self, free_slots: usize) -> usize {
        let observed = self.observed();
        let Some(handler_seconds) = observed.handler_seconds else {
            return 0;
        };
        if observed
            .last_stale
            .is_some_and(|stale| stale >= observed.last_freed)
        {
            return 0;
        }
        // With every slot busy for longer than handlers usually take, the jobs now running are
        // the long ones: the next slot frees no sooner than that.
        let mut seconds_per_job = handler_seconds;
        if free_slots == 0 {
            seconds_per_job = seconds_per_job.max(observed.last_freed.elapsed().as_secs_f64());
        }
        let starts_within_horizon =
            self.concurrency as f64 * HORIZON.as_secs_f64() / seconds_per_job.max(1e-9);
        (starts_within_horizon.floor() as usize).min(self.max_held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn nothing_is_held_before_a_handler_has_returned() {
        assert_eq!(Pace::new(16).target(16), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn short_jobs_are_held_up_to_the_cap_long_ones_not_at_all() {
        let short = Pace::new(2);
        short.handler_returned(Duration::from_micros(20));
        assert_eq!(short.target(2), max_held(2));

        let medium = Pace::new(16);
        medium.handler_returned(Duration::from_millis(100));
        // 16 slots, 100 ms each: 16 start within the 100 ms horizon.
        assert_eq!(medium.target(4), 16);

        let long = Pace::new(16);
        long.handler_returned(Duration::from_secs(10));
        assert_eq!(long.target(0), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn slots_busy_for_long_stop_the_claiming_ahead() {
        let pace = Arc::new(Pace::new(4));
        pace.handler_returned(Duration::from_millis(1));
        assert!(pace.target(0) > 0);
        // No slot has freed for 2 s: the jobs running now are long ones.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(pace.target(0), 0);
        // A free slot starts a held job at once, whatever the running ones do.
        assert!(pace.target(1) > 0);
    }

    #[tokio::test(start_paused = true)]
    async fn stale_held_jobs_pause_the_claiming_ahead_until_a_slot_frees() {
        let slots = Slots::new(1);
        let pace = Arc::new(Pace::new(1));
        pace.handler_returned(Duration::from_millis(1));
        let slot = slots.acquire(&pace).await;
        tokio::time::advance(Duration::from_millis(1)).await;
        pace.held_went_stale();
        assert_eq!(pace.target(1), 0);
        tokio::time::advance(Duration::from_millis(1)).await;
        drop(slot);
        assert!(pace.target(1) > 0);
    }
}
