//! Reaps orphaned descendants when handover is PID 1 (a container's entrypoint): a job's
//! grandchild whose parent exits is re-parented to PID 1 and would stay a zombie forever.
//!
//! It must never reap a child that tokio is waiting for (an exec job's own child), or that job's
//! exit status would be lost. Such children are spawned with [`spawn_registered`], which records
//! them under the same lock the sweep takes, so there is no window in which one is unregistered.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

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

/// When this process is PID 1, the task that reaps orphans on every SIGCHLD and every few
/// seconds until `stop` is cancelled.
pub fn orphan_reaper(
    stop: tokio_util::sync::CancellationToken,
) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
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
                _ = children.recv() => {}
                _ = tokio::time::sleep(SWEEP_EVERY) => {}
                _ = stop.cancelled() => return,
            }
            let reaped = tokio::task::spawn_blocking(reap_orphans).await.unwrap_or(0);
            if reaped > 0 {
                tracing::debug!(reaped, "reaped orphaned processes");
            }
        }
    })
}

/// Waits for every zombie child of this process that is not a managed child; returns how many.
/// Needs the /proc of this process's PID namespace (what a container has).
fn reap_orphans() -> usize {
    use nix::sys::wait::{waitpid, WaitPidFlag};
    use nix::unistd::Pid;
    let me = std::process::id() as i32;
    let managed = MANAGED.lock().unwrap_or_else(|e| e.into_inner());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut reaped = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if managed.contains(&pid) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((state, ppid)) = zombie_state_and_parent(&stat) {
            if state == 'Z'
                && ppid == me
                && waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)).is_ok()
            {
                reaped += 1;
            }
        }
    }
    reaped
}

/// (state, ppid) from a /proc/PID/stat line; the command name may contain spaces and parentheses.
fn zombie_state_and_parent(stat: &str) -> Option<(char, i32)> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

#[cfg(test)]
mod tests {
    use super::zombie_state_and_parent;

    #[test]
    fn parses_stat_lines_with_awkward_names() {
        assert_eq!(
            zombie_state_and_parent("42 (sleep) Z 1 42 42 0 -1"),
            Some(('Z', 1))
        );
        assert_eq!(
            zombie_state_and_parent("7 (my (odd) name) S 3 7 7 0"),
            Some(('S', 3))
        );
        assert_eq!(zombie_state_and_parent("garbage"), None);
    }
}
