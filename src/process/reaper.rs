//! Reaps orphaned descendants when handover is PID 1 (a container's entrypoint): a job's
//! grandchild whose parent exits is re-parented to PID 1 and would stay a zombie forever.
//!
//! It must never reap a child that tokio is waiting for (an exec job's own child), or that job's
//! exit status would be lost. Such children are spawned with [`spawn_registered`], which records
//! them under the same lock the sweep takes, so there is no window in which one is unregistered.
//!
//! It starts no task of its own: [`orphan_reaper`] hands the sweep to the caller to run.

use super::procfs;
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Children whose exit status belongs to someone else (tokio's `Child::wait`).
static MANAGED: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// How often the sweep runs even without SIGCHLD (signals coalesce).
const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// Keeps a spawned child out of the reaper's hands until dropped (after its exit was collected).
#[derive(Debug)]
pub struct Registration {
    pid: Option<i32>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            MANAGED
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&pid);
        }
    }
}

/// Spawns a child whose exit the caller will collect, registering it before any sweep can see it.
pub fn spawn_registered(
    spawn: impl FnOnce() -> std::io::Result<tokio::process::Child>,
) -> std::io::Result<(tokio::process::Child, Registration)> {
    let mut managed = MANAGED.lock().unwrap_or_else(|e| e.into_inner());
    let child = spawn()?;
    let pid = child.id().map(|pid| pid as i32);
    if let Some(pid) = pid {
        managed.insert(pid);
    }
    Ok((child, Registration { pid }))
}

/// When this process is PID 1, the sweep that reaps orphans on every SIGCHLD and every few
/// seconds, until `stop` is cancelled; `None` when it is not PID 1 or cannot watch SIGCHLD (then
/// with a warning). Must be called inside a tokio runtime: SIGCHLD is watched from the call on.
pub fn orphan_reaper(stop: CancellationToken) -> Option<impl Future<Output = ()> + Send + 'static> {
    if std::process::id() != 1 {
        return None;
    }
    let mut children = match signal(SignalKind::child()) {
        Ok(stream) => stream,
        Err(err) => {
            tracing::warn!(%err, "running as PID 1 but cannot watch SIGCHLD; orphans will not be reaped");
            return None;
        }
    };
    tracing::info!("running as PID 1: reaping orphaned processes");
    Some(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = children.recv() => {}
                _ = tokio::time::sleep(SWEEP_EVERY) => {}
            }
            let reaped = tokio::task::spawn_blocking(reap_orphans).await.unwrap_or(0);
            if reaped > 0 {
                tracing::debug!(reaped, "reaped orphaned processes");
            }
        }
    })
}

/// Waits for every zombie child of this process that is not a managed child; returns how many.
fn reap_orphans() -> usize {
    let me = std::process::id() as i32;
    let managed = MANAGED.lock().unwrap_or_else(|e| e.into_inner());
    procfs::processes()
        .filter(|(pid, stat)| stat.state == 'Z' && stat.parent == me && !managed.contains(pid))
        .filter(|(pid, _)| waitpid(Pid::from_raw(*pid), Some(WaitPidFlag::WNOHANG)).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_pid_1_reaps() {
        assert_ne!(std::process::id(), 1, "tests do not run as PID 1");
        assert!(orphan_reaper(CancellationToken::new()).is_none());
    }
}
