//! Child processes, below the jobs that start them: spawning (one long-lived spawner thread, so
//! that PDEATHSIG means "the worker died"), process groups, the `handover-watch` watchdog, the
//! PID-1 orphan reaper and the one `/proc` parser they share.
//!
//! What it guarantees (the `exec` kind's "no orphans"):
//! - Every child runs in its own process group, with `PR_SET_PDEATHSIG(SIGKILL)` set between fork
//!   and exec, so it never runs an instruction of its program without it; a `getppid()` check
//!   closes the race with a worker that died just before. PDEATHSIG fires when the *thread* that
//!   forked exits, so children are forked by one dedicated thread that lives as long as the
//!   process (not by a tokio worker thread, which `block_in_place` can turn into a blocking-pool
//!   thread that exits when idle).
//! - PDEATHSIG reaches only the direct child. For the rest of its group the watchdog process
//!   SIGKILLs every group still listed when the worker dies, even by SIGKILL.
//! - Dropping a [`Group`] that was not released SIGKILLs it.
//! - Children are registered with the orphan reaper as they are spawned, so that when the worker
//!   is PID 1 its sweep never reaps one before tokio has collected its exit status.
//!
//! This module knows nothing of jobs, the worker, the lifecycle, HTTP or the store, and starts no
//! task of its own: [`orphan_reaper`] hands its sweep to the caller. Unix only; PDEATHSIG,
//! `close_range` and `/proc` are Linux features, and elsewhere those guarantees are lost, not
//! correctness.

mod group;
pub mod procfs;
mod reaper;
mod spawn;
mod watchdog;

pub use group::{Group, GROUP_EXIT_WAIT};
pub use reaper::{orphan_reaper, spawn_registered, Registration};
pub use spawn::{spawn, Spawned};
