//! A child's process group: signalled as a whole, waited for until no live member is left, and
//! SIGKILLed if its owner is dropped while it runs. The watchdog tracks it until it is released.

use super::{procfs, spawn};
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::time::{Duration, Instant};

/// How long a dying process group is waited for before the handler returns anyway.
pub const GROUP_EXIT_WAIT: Duration = Duration::from_millis(300);

/// A running child's process group. Dropping it SIGKILLs the group (a handler future dropped
/// mid-run); [`Group::release`] ends the watch once the group is gone.
#[derive(Debug)]
pub struct Group {
    pgid: i32,
    live: bool,
}

impl Group {
    /// The group led by `pgid`, a child started by [`spawn()`](super::spawn()) (which put it in its own
    /// group and under the watchdog).
    pub fn new(pgid: i32) -> Group {
        Group { pgid, live: true }
    }

    /// Signals the whole group. After the leader is reaped the group's id stays reserved as long
    /// as any member exists, so this cannot reach an unrelated process while there is one to reach.
    pub fn signal(&self, signal: Signal) {
        match killpg(Pid::from_raw(self.pgid), signal) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(err) => {
                tracing::warn!(pgid = self.pgid, %signal, %err, "cannot signal the process group")
            }
        }
    }

    /// Waits until no live process is left in the group (zombies waiting for a parent, or for an
    /// init that does not reap, count as gone), at most [`GROUP_EXIT_WAIT`].
    pub async fn wait_gone(&self) {
        let deadline = Instant::now() + GROUP_EXIT_WAIT;
        loop {
            if killpg(Pid::from_raw(self.pgid), None) == Err(Errno::ESRCH) {
                return;
            }
            let pgid = self.pgid;
            let live = tokio::task::spawn_blocking(move || live_group_members(pgid))
                .await
                .unwrap_or(0);
            if live == 0 {
                return;
            }
            if Instant::now() >= deadline {
                tracing::warn!(pgid, live, "processes of the job are still exiting");
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The group is gone: stop watching it.
    pub fn release(&mut self) {
        if std::mem::replace(&mut self.live, false) {
            spawn::forget(self.pgid);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if self.live {
            self.signal(Signal::SIGKILL);
            self.release();
        }
    }
}

/// Live (not zombie) processes whose process group is `pgid`, from `/proc`.
fn live_group_members(pgid: i32) -> usize {
    procfs::processes()
        .filter(|(_, stat)| stat.group == pgid && stat.is_live())
        .count()
}
