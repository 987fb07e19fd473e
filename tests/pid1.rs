//! handover as PID 1 (a container's entrypoint): run in its own PID namespace
//! (`unshare --pid --fork --mount-proc`, as root), it handles SIGTERM and reaps the orphans an exec
//! job leaves behind, instead of collecting zombies.

mod common;

use common::*;
use handover::store::JobStatus;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Host pids of the processes whose parent is `parent`, with their state letter.
fn children_of(parent: i32) -> Vec<(i32, char)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        if fields.next().and_then(|p| p.parse::<i32>().ok()) == Some(parent) {
            found.push((pid, state));
        }
    }
    found
}

/// Starts `sleep` in a session of its own (leaving the job's process group, as a daemon does),
/// waits until it really has left (its process group in /proc is no longer the shell's), exits.
const ORPHAN_MAKER: &str = "setsid sleep 2 & child=$!; \
     while read -r _ _ _ _ group _ < /proc/$child/stat && [ \"$group\" = \"$$\" ]; do :; done; exit 0";

struct Namespace(Child);

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_pid_1_it_reaps_orphans_and_stops_cleanly_on_sigterm() {
    if !running_as_root() {
        panic!("this test needs root to create a PID namespace (CI runs as root)");
    }
    let store = TestStore::new().await;
    let log = std::fs::File::create(store.dir.path().join("pid1.log")).unwrap();
    let mut namespace = Namespace(
        Command::new("unshare")
            .args([
                "--pid",
                "--fork",
                "--kill-child",
                "--mount-proc",
                BIN,
                "worker",
                "--store",
                &store.url,
            ])
            .args([
                "--listen",
                "127.0.0.1:0",
                "--name",
                "pid-one",
                "--admin-token",
                TOKEN,
            ])
            .args([
                "--heartbeat-interval",
                "200ms",
                "--lease-ttl",
                "1s",
                "--poll-interval",
                "50ms",
            ])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("unshare (util-linux)"),
    );
    let unshare_pid = namespace.0.id() as i32;
    // handover itself: the one child of `unshare --fork`, PID 1 inside the namespace.
    let handover = wait_for(
        "handover to start in its namespace",
        Duration::from_secs(10),
        || async { children_of(unshare_pid).first().map(|(pid, _)| *pid) },
    )
    .await;
    wait_for("the worker to run", Duration::from_secs(15), || async {
        let workers = store.store.list_workers().await.ok()?;
        workers
            .iter()
            .any(|w| w.name == "pid-one" && w.phase == handover::lifecycle::Phase::Running)
            .then_some(())
    })
    .await;
    let log_text =
        || std::fs::read_to_string(store.dir.path().join("pid1.log")).unwrap_or_default();
    assert!(log_text().contains("running as PID 1"), "{}", log_text());

    // The shell exits at once; its background `sleep` left the job's process group (as a daemon
    // does, so the job's group kill does not reach it), is orphaned and re-parented to PID 1.
    let job = store
        .submit("exec", json!({"cmd": ["sh", "-c", ORPHAN_MAKER]}))
        .await;
    store
        .wait_for_status(job, JobStatus::Completed, Duration::from_secs(15))
        .await;
    let orphan = wait_for(
        "the orphan to be PID 1's child",
        Duration::from_secs(5),
        || async {
            children_of(handover)
                .into_iter()
                .find(|(pid, _)| command_name(*pid).as_deref() == Some("sleep"))
        },
    )
    .await;
    assert_ne!(orphan.1, 'Z', "it is still running");
    // Once it exits it must be reaped: a zombie would stay here (as `sleep`, state Z) forever.
    wait_for(
        "the orphan to exit and be reaped",
        Duration::from_secs(10),
        || async {
            children_of(handover)
                .iter()
                .all(|(pid, _)| *pid != orphan.0)
                .then_some(())
        },
    )
    .await;

    // PID 1 ignores signals it has no handler for; handover has one, so SIGTERM drains it.
    kill(Pid::from_raw(handover), Signal::SIGTERM).unwrap();
    let status = wait_for("the namespace to end", Duration::from_secs(15), || {
        let status = namespace.0.try_wait().unwrap();
        async move { status }
    })
    .await;
    assert_eq!(status.code(), Some(0), "log:\n{}", log_text());
    let record = store.store.list_shutdowns(1).await.unwrap().remove(0);
    assert_eq!(record.outcome, handover::lifecycle::Outcome::Clean);
}

fn command_name(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|name| name.trim().to_string())
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let uids = status.lines().find(|l| l.starts_with("Uid:"))?.to_string();
            Some(uids.split_whitespace().nth(2)? == "0")
        })
        .unwrap_or(false)
}
