//! The `exec` job kind on the real binary: real child processes, real signals, `/proc` to prove
//! that no process outlives its job — through SIGTERM, the forced path and SIGKILL of the worker.

mod common;

use common::*;
use handover::lifecycle::Outcome;
use handover::store::{JobId, JobStatus, NewJob};
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Process start/exit and store writes on a loaded 2-core machine fit easily in this.
const MARGIN: Duration = Duration::from_millis(1500);

// ---------------------------------------------------------------------------------------------
// Helpers

fn write_script(store: &TestStore, name: &str, text: &str) -> PathBuf {
    let path = store.dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

async fn submit_exec(store: &TestStore, payload: Value, max_attempts: i32) -> JobId {
    let job = NewJob {
        max_attempts,
        ..NewJob::new("exec", payload)
    };
    store.store.submit(&[job]).await.unwrap()[0]
}

/// (state, process group) of a process, from `/proc/PID/stat`.
fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let _parent = fields.next()?;
    Some((state, fields.next()?.parse().ok()?))
}

/// A process that exists and is not a zombie. (A zombie has exited; this machine's init may be
/// slow to reap orphans, so zombies count as gone.)
fn alive(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| !matches!(state, 'Z' | 'X'))
}

/// Live processes of a process group.
fn group_members(pgid: i32) -> Vec<i32> {
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid| proc_stat(*pid).is_some_and(|(state, group)| group == pgid && state != 'Z'))
        .collect();
    pids.sort();
    pids
}

/// Waits for a file a script writes atomically (write, then rename) and returns its text.
async fn read_when_written(path: &Path, limit: Duration) -> String {
    wait_for(
        &format!("{} to be written", path.display()),
        limit,
        || async { std::fs::read_to_string(path).ok() },
    )
    .await
}

/// Waits until the process group has at least `count` live members; returns them.
async fn wait_for_members(pgid: i32, count: usize) -> Vec<i32> {
    wait_for(
        &format!("{count} processes in group {pgid}"),
        Duration::from_secs(10),
        || async {
            let members = group_members(pgid);
            (members.len() >= count).then_some(members)
        },
    )
    .await
}

fn assert_all_gone(pids: &[i32], when: &str) {
    let left: Vec<(i32, Option<(char, i32)>)> = pids
        .iter()
        .filter(|pid| alive(**pid))
        .map(|pid| (*pid, proc_stat(*pid)))
        .collect();
    assert!(left.is_empty(), "{when}, still alive: {left:?}");
}

/// The log without terminal colour codes.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

async fn shutdown_record(store: &TestStore, worker_id: &str) -> handover::store::ShutdownRecord {
    store
        .store
        .list_shutdowns(50)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.worker_id == worker_id)
        .expect("a shutdown record for the worker")
}

fn result_text(job: &handover::store::Job, field: &str) -> String {
    job.result.as_ref().expect("a result")[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {:?}", job.result))
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// Shutdown: SIGTERM, the deadline, grandchildren, SIGKILL

/// Counts to argv[1] at 100 ms a step, checkpointing `{"i": n}` each step; on SIGTERM writes a
/// last checkpoint marked `stopped`, a `sigterm` marker file, and exits 75. Each run writes
/// `run-PID` with the checkpoint it was given.
const COUNTER_PY: &str = r#"#!/usr/bin/env python3
import json, os, signal, sys, time
target, marks = int(sys.argv[1]), sys.argv[2]
resume = os.environ["HANDOVER_CHECKPOINT"]
start = json.loads(resume)["i"] if resume else 0
i = start
run = os.path.join(marks, "run-%d" % os.getpid())
with open(run + ".tmp", "w") as f:
    json.dump({"pid": os.getpid(), "checkpoint": resume, "attempt": os.environ["HANDOVER_ATTEMPT"]}, f)
os.rename(run + ".tmp", run)
def on_term(signum, frame):
    os.write(3, (json.dumps({"i": i, "stopped": True}) + "\n").encode())
    with open(os.path.join(marks, "sigterm"), "w") as f:
        f.write(str(i))
    sys.exit(75)
signal.signal(signal.SIGTERM, on_term)
while i < target:
    time.sleep(0.1)
    i += 1
    os.write(3, (json.dumps({"i": i}) + "\n").encode())
print("counted to %d, resumed from %d" % (target, start))
"#;

fn runs(marks: &Path) -> Vec<Value> {
    let mut runs: Vec<Value> = std::fs::read_dir(marks)
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            (name.starts_with("run-") && !name.ends_with(".tmp"))
                .then(|| serde_json::from_str(&std::fs::read_to_string(e.path()).ok()?).ok())
                .flatten()
        })
        .collect();
    runs.sort_by_key(|r| {
        r["attempt"].as_str().unwrap().to_string() + r["checkpoint"].as_str().unwrap()
    });
    runs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_reaches_the_child_which_checkpoints_and_a_second_worker_resumes_it() {
    let store = TestStore::new().await;
    let script = write_script(&store, "counter.py", COUNTER_PY);
    let marks = store.dir.path().join("marks");
    std::fs::create_dir(&marks).unwrap();
    let job_id = submit_exec(
        &store,
        json!({"cmd": ["python3", path_str(&script), "15", path_str(&marks)]}),
        5,
    )
    .await;

    let mut first = WorkerProcess::start(&store, &[("--concurrency", "1")]).await;
    store
        .wait_for_checkpoint(job_id, 3, Duration::from_secs(20))
        .await;
    let first_run = runs(&marks).remove(0);
    let pid = first_run["pid"].as_i64().unwrap() as i32;
    assert_eq!(
        first_run["checkpoint"], "",
        "a first run gets an empty checkpoint"
    );
    assert!(alive(pid));

    let signalled = Instant::now();
    first.signal(Signal::SIGTERM);
    let status = first.wait_exit(Duration::from_secs(20)).await;
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "clean exit; log:\n{}", first.log());
    assert!(took < MARGIN, "shutdown took {took:?}");

    let job = store.job(job_id).await;
    assert_eq!(job.status, JobStatus::Pending);
    assert_eq!(job.owner, None);
    assert_eq!(job.attempts, 0, "a hand-back does not burn an attempt");
    let checkpoint = job.checkpoint.expect("handed back with its checkpoint");
    assert_eq!(
        checkpoint["stopped"], true,
        "the child's own SIGTERM checkpoint: {checkpoint}"
    );
    let stopped_at = checkpoint["i"].as_u64().unwrap();
    assert!(stopped_at >= 3);
    let marker = std::fs::read_to_string(marks.join("sigterm")).expect("the child got SIGTERM");
    assert_eq!(marker, stopped_at.to_string());
    assert!(!alive(pid), "the child is gone when the worker has exited");
    let record = shutdown_record(&store, &first.id).await;
    assert_eq!(record.outcome, Outcome::Clean);
    assert_eq!(record.jobs_released, 1);

    let second = WorkerProcess::start(&store, &[]).await;
    let done = store
        .wait_for_status(job_id, JobStatus::Completed, Duration::from_secs(30))
        .await;
    assert_eq!(
        result_text(&done, "stdout_tail"),
        format!("counted to 15, resumed from {stopped_at}\n")
    );
    assert_eq!(done.result.as_ref().unwrap()["exit_code"], 0);
    let all_runs = runs(&marks);
    assert_eq!(all_runs.len(), 2, "{all_runs:?}");
    let seen: Value = serde_json::from_str(all_runs[1]["checkpoint"].as_str().unwrap()).unwrap();
    assert_eq!(seen, checkpoint, "the resumed child saw the checkpoint");
    assert_eq!(done.attempts, 1);
    assert_eq!(
        store.store.completion_counts().await.unwrap(),
        vec![(job_id, 1)]
    );
    drop(second);
}

/// Ignores SIGTERM (and so does a grandchild), saves one checkpoint, then runs forever.
const STUBBORN_PY: &str = r#"#!/usr/bin/env python3
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
helper = subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 1000; echo never"])
os.write(3, b'{"i": 1}\n')
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write("%d %d" % (os.getpid(), helper.pid))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
while True:
    time.sleep(1)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_ignoring_sigterm_is_killed_at_the_deadline_and_handed_back() {
    let store = TestStore::new().await;
    let script = write_script(&store, "stubborn.py", STUBBORN_PY);
    let pid_file = store.dir.path().join("pids");
    let job_id = submit_exec(
        &store,
        json!({"cmd": [path_str(&script), path_str(&pid_file)]}),
        5,
    )
    .await;
    let grace = Duration::from_secs(2);
    let mut worker = WorkerProcess::start(&store, &[("--grace", "2s")]).await;
    let pids: Vec<i32> = read_when_written(&pid_file, Duration::from_secs(20))
        .await
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    store
        .wait_for_checkpoint(job_id, 1, Duration::from_secs(10))
        .await;
    assert!(pids.iter().all(|p| alive(*p)));

    // Forced near the end of --grace; exits within --grace plus a little.
    worker
        .sigterm_expecting_forced_exit(grace * 8 / 10, grace + Duration::from_millis(500))
        .await;
    assert_all_gone(&pids, "after a forced shutdown");

    let job = store.job(job_id).await;
    assert_eq!(job.status, JobStatus::Pending);
    assert_eq!(job.owner, None);
    assert_eq!(job.checkpoint, Some(json!({"i": 1})), "its last checkpoint");
    let record = shutdown_record(&store, &worker.id).await;
    assert_eq!(record.outcome, Outcome::Forced);
    assert_eq!(record.forced_jobs, vec![job_id]);
    let log = worker.log();
    assert!(log.contains("forcing shutdown"), "{log}");
    assert!(
        log.contains("SIGKILL to the child's process group"),
        "{log}"
    );
}

/// Runs `text` as an exec job (its first argument: a file to write its pid to) on a fresh worker
/// and waits until its process group has `group_size` members and its first checkpoint is saved.
/// Returns the job, the worker, the group leader's pid and the group's members.
async fn start_group_script(
    store: &TestStore,
    name: &str,
    text: &str,
    group_size: usize,
) -> (JobId, WorkerProcess, i32, Vec<i32>) {
    let script = write_script(store, name, text);
    let pid_file = store.dir.path().join("leader");
    let job_id = submit_exec(
        store,
        json!({"cmd": ["sh", path_str(&script), path_str(&pid_file)]}),
        5,
    )
    .await;
    let worker = WorkerProcess::start(store, &[]).await;
    let leader: i32 = read_when_written(&pid_file, Duration::from_secs(20))
        .await
        .trim()
        .parse()
        .unwrap();
    let members = wait_for_members(leader, group_size).await;
    store
        .wait_for_checkpoint(job_id, 1, Duration::from_secs(10))
        .await;
    (job_id, worker, leader, members)
}

/// A shell with a pipeline, a subshell that ignores SIGTERM, and a nested shell, all in the
/// background; exits 75 on SIGTERM.
const PIPELINE_SH: &str = r#"#!/bin/sh
trap 'echo "{\"i\":2,\"stopped\":true}" >&3; exit 75' TERM
sleep 1000 | cat &
(trap '' TERM; exec sleep 1001) &
sh -c 'sleep 1002; echo never' &
echo '{"i":1}' >&3
echo $$ > "$1.tmp" && mv "$1.tmp" "$1"
wait
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_pipeline_leaves_no_process_after_a_sigterm_shutdown() {
    let store = TestStore::new().await;
    // sh, sleep | cat, the subshell's sleep, the nested sh and its sleep.
    let (job_id, mut worker, leader, members) =
        start_group_script(&store, "pipeline.sh", PIPELINE_SH, 6).await;
    assert!(members.contains(&leader));
    eprintln!("the job's process group: {members:?}");

    worker.signal(Signal::SIGTERM);
    let status = worker.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0), "log:\n{}", worker.log());
    assert_all_gone(&members, "after a SIGTERM shutdown");
    assert_eq!(group_members(leader), Vec::<i32>::new());
    let job = store.job(job_id).await;
    assert_eq!(job.status, JobStatus::Pending);
    assert_eq!(job.checkpoint, Some(json!({"i": 2, "stopped": true})));
}

/// First run: a pipeline and a nested shell in the background, one checkpoint, wait forever.
/// A resumed run reports what it resumed from.
const RESCUED_SH: &str = r#"#!/bin/sh
if [ -n "$HANDOVER_CHECKPOINT" ]; then
  echo "rescued from $HANDOVER_CHECKPOINT on attempt $HANDOVER_ATTEMPT"
  exit 0
fi
sleep 1000 | cat &
sh -c 'sleep 1001; echo never' &
echo '{"i":1}' >&3
echo $$ > "$1.tmp" && mv "$1.tmp" "$1"
wait
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_worker_leaves_no_process_and_its_job_is_rescued() {
    let store = TestStore::new().await;
    let (job_id, mut doomed, leader, members) =
        start_group_script(&store, "rescued.sh", RESCUED_SH, 5).await;

    doomed.signal(Signal::SIGKILL);
    doomed.wait_exit(Duration::from_secs(5)).await;
    let killed = Instant::now();
    wait_for(
        "every process of the job to be gone",
        Duration::from_secs(1),
        || async { members.iter().all(|p| !alive(*p)).then_some(()) },
    )
    .await;
    eprintln!(
        "all {} processes gone {:?} after the worker died",
        members.len(),
        killed.elapsed()
    );
    assert_eq!(group_members(leader), Vec::<i32>::new());
    assert_eq!(
        store.job(job_id).await.status,
        JobStatus::Running,
        "nobody released it"
    );

    let _rescuer = WorkerProcess::start(&store, &[]).await;
    let done = store
        .wait_for_status(job_id, JobStatus::Completed, Duration::from_secs(30))
        .await;
    assert_eq!(
        result_text(&done, "stdout_tail"),
        "rescued from {\"i\":1} on attempt 2\n"
    );
    assert_eq!(
        store.store.completion_counts().await.unwrap(),
        vec![(job_id, 1)]
    );
}

// ---------------------------------------------------------------------------------------------
// Outcomes, errors and output

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_complete_hand_back_or_fail_the_attempt() {
    let store = TestStore::new().await;
    let ok = submit_exec(
        &store,
        json!({"cmd": ["sh", "-c", "echo hello; echo careful >&2"]}),
        5,
    )
    .await;
    let yields = submit_exec(
        &store,
        json!({"cmd": ["sh", "-c", r#"if [ -z "$HANDOVER_CHECKPOINT" ]; then echo '{"i":7}' >&3; exit 75; fi; echo "resumed $HANDOVER_CHECKPOINT""#]}),
        5,
    )
    .await;
    let fails = submit_exec(
        &store,
        json!({"cmd": ["sh", "-c", "echo noise >&2; echo 'the real problem' >&2; exit 3"]}),
        2,
    )
    .await;
    let killed = submit_exec(&store, json!({"cmd": ["sh", "-c", "kill -KILL $$"]}), 1).await;
    let worker = WorkerProcess::start(&store, &[("--concurrency", "4")]).await;

    let done = store
        .wait_for_status(ok, JobStatus::Completed, Duration::from_secs(20))
        .await;
    assert_eq!(
        done.result,
        Some(json!({
            "exit_code": 0,
            "stdout_tail": "hello\n",
            "stderr_tail": "careful\n",
            "stdout_bytes": 6,
            "stderr_bytes": 8,
            "ignored_checkpoint_lines": 0,
        }))
    );

    let resumed = store
        .wait_for_status(yields, JobStatus::Completed, Duration::from_secs(20))
        .await;
    assert_eq!(result_text(&resumed, "stdout_tail"), "resumed {\"i\":7}\n");
    assert_eq!(resumed.attempts, 1, "exit 75 does not burn an attempt");
    assert_eq!(
        worker
            .metric(r#"handover_jobs_released_total{kind="exec",reason="yielded"}"#)
            .await,
        1.0
    );

    let dead = store
        .wait_for_status(fails, JobStatus::Dead, Duration::from_secs(20))
        .await;
    assert_eq!(dead.attempts, 2, "retried once, then dead");
    let error = dead.error.unwrap();
    assert!(
        error.starts_with("sh exited with status 3; stderr tail:\n"),
        "{error}"
    );
    assert!(error.ends_with("noise\nthe real problem"), "{error}");

    let signalled = store
        .wait_for_status(killed, JobStatus::Dead, Duration::from_secs(20))
        .await;
    assert_eq!(
        signalled.error.as_deref(),
        Some("sh was killed by signal 9 (SIGKILL) (no stderr output)")
    );
    worker
        .wait_for_metric(r#"handover_jobs_failed_total{kind="exec"}"#, 3.0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_that_cannot_start_fails_its_job_not_the_worker() {
    let store = TestStore::new().await;
    let missing = submit_exec(
        &store,
        json!({"cmd": ["/nonexistent/handover-no-such-program", "x"]}),
        1,
    )
    .await;
    let not_executable = store.dir.path().join("not-executable.sh");
    std::fs::write(&not_executable, "#!/bin/sh\necho hi\n").unwrap();
    let denied = submit_exec(&store, json!({"cmd": [path_str(&not_executable)]}), 1).await;
    let bad_cwd = submit_exec(
        &store,
        json!({"cmd": ["true"], "cwd": "/nonexistent-handover-dir"}),
        1,
    )
    .await;
    let mut worker = WorkerProcess::start(&store, &[]).await;

    let error = |id| {
        let store = &store;
        async move {
            store
                .wait_for_status(id, JobStatus::Dead, Duration::from_secs(20))
                .await
                .error
                .unwrap()
        }
    };
    let missing_error = error(missing).await;
    assert!(
        missing_error.starts_with(
            "cannot start /nonexistent/handover-no-such-program: No such file or directory"
        ),
        "{missing_error}"
    );
    let denied_error = error(denied).await;
    assert!(
        denied_error.starts_with(&format!(
            "cannot start {}: Permission denied",
            not_executable.display()
        )),
        "{denied_error}"
    );
    assert_eq!(
        error(bad_cwd).await,
        "cannot start true: cwd /nonexistent-handover-dir: No such file or directory (os error 2)"
    );

    // The worker is unharmed and keeps working.
    assert!(worker.child.try_wait().unwrap().is_none());
    let ready = reqwest::get(worker.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let after = submit_exec(&store, json!({"cmd": ["true"]}), 1).await;
    store
        .wait_for_status(after, JobStatus::Completed, Duration::from_secs(20))
        .await;
    worker.signal(Signal::SIGTERM);
    assert_eq!(
        worker.wait_exit(Duration::from_secs(10)).await.code(),
        Some(0)
    );
}

/// Valid checkpoints interleaved with garbage; the last one has no newline.
const GARBAGE_PY: &str = r#"#!/usr/bin/env python3
import os
def put(data):
    while data:
        data = data[os.write(3, data):]
put(b'not json\n')
put(b'{"i": 1}\n')
put(b'{"i": \n')
put(b'x' * (2 << 20) + b'\n')
put(b'null\n')
put(b'\n')
put(b'{"i": 2}\n')
put(b'{"i": 3}')
print("done")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_fd_3_is_noted_and_ignored_and_valid_checkpoints_are_saved() {
    let store = TestStore::new().await;
    let script = write_script(&store, "garbage.py", GARBAGE_PY);
    let job_id = submit_exec(&store, json!({"cmd": [path_str(&script)]}), 1).await;
    let worker = WorkerProcess::start(&store, &[]).await;
    let done = store
        .wait_for_status(job_id, JobStatus::Completed, Duration::from_secs(20))
        .await;
    assert_eq!(done.checkpoint, Some(json!({"i": 3})));
    let result = done.result.as_ref().unwrap();
    assert_eq!(result["ignored_checkpoint_lines"], 4);
    assert_eq!(result["stdout_tail"], "done\n");
    let notes = result_text(&done, "stderr_tail");
    for expected in [
        "handover: ignored checkpoint line 1: not JSON",
        "handover: ignored checkpoint line 3: not JSON",
        "handover: ignored checkpoint line 4: 2097152 bytes, over the 65536-byte limit",
        "handover: ignored checkpoint line 5: null is not a checkpoint",
    ] {
        assert!(notes.contains(expected), "{expected:?} in {notes}");
    }
    assert_eq!(notes.lines().count(), 4, "{notes}");
    let log = strip_ansi(&worker.log());
    let warning = log
        .lines()
        .find(|l| l.contains("ignored a checkpoint line on fd 3"))
        .unwrap_or_else(|| panic!("a warning in the log:\n{log}"));
    assert!(
        warning.contains(&format!("job_id={job_id}")),
        "logged in the job's span: {warning}"
    );
}

const FLOOD_PY: &str = r#"#!/usr/bin/env python3
import os
def put(fd, data):
    while data:
        data = data[os.write(fd, data):]
line = b"y" * 65535 + b"\n"
for _ in range(512):
    put(1, line)
put(2, b"e" * (1 << 20))
put(1, b"THE END\n")
"#;

fn peak_rss_kib(pid: nix::unistd::Pid) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_writing_megabytes_completes_with_a_bounded_tail() {
    let store = TestStore::new().await;
    let script = write_script(&store, "flood.py", FLOOD_PY);
    let worker = WorkerProcess::start(&store, &[]).await;
    let peak_before = peak_rss_kib(worker.pid());
    let job_id = submit_exec(&store, json!({"cmd": [path_str(&script)]}), 1).await;
    let done = store
        .wait_for_status(job_id, JobStatus::Completed, Duration::from_secs(60))
        .await;
    let result = done.result.as_ref().unwrap();
    assert_eq!(result["stdout_bytes"], 512 * 65536 + 8);
    assert_eq!(result["stderr_bytes"], 1 << 20);
    let stdout = result_text(&done, "stdout_tail");
    assert_eq!(stdout.len(), 64 * 1024, "the tail is capped");
    assert!(stdout.ends_with("y\nTHE END\n"));
    assert_eq!(result_text(&done, "stderr_tail").len(), 64 * 1024);
    let grew = peak_rss_kib(worker.pid()).saturating_sub(peak_before);
    assert!(
        grew < 16 * 1024,
        "32 MiB of output grew the worker's peak RSS by {grew} KiB"
    );
}

/// Prints the HANDOVER_* variables, GREETING, the working directory and the open descriptors.
const ENV_AND_FDS_PY: &str = r#"
import os
for name in sorted(n for n in os.environ if n.startswith("HANDOVER_")):
    print("%s=%s" % (name, os.environ[name]))
print("%s from %s" % (os.environ["GREETING"], os.getcwd()))
def is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False
listed = [int(f) for f in os.listdir("/proc/self/fd")]  # includes the listing's own, now closed
print(sorted(fd for fd in listed if is_open(fd)))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_child_gets_the_protocol_environment_and_nothing_else_of_the_worker() {
    let store = TestStore::new().await;
    let job_id = submit_exec(
        &store,
        json!({
            "cmd": ["python3", "-c", ENV_AND_FDS_PY],
            "env": {"GREETING": "hi"},
            "cwd": "/tmp",
        }),
        1,
    )
    .await;
    let _worker = WorkerProcess::start_with(
        &store,
        &[],
        &[],
        &[("HANDOVER_TEST_SECRET", "must-not-leak")],
    )
    .await;
    let done = store
        .wait_for_status(job_id, JobStatus::Completed, Duration::from_secs(20))
        .await;
    assert_eq!(
        result_text(&done, "stdout_tail"),
        format!(
            "HANDOVER_ATTEMPT=1\nHANDOVER_CHECKPOINT=\nHANDOVER_CHECKPOINT_FD=3\nHANDOVER_JOB_ID={job_id}\nhi from /tmp\n[0, 1, 2, 3]\n"
        ),
        "the worker's HANDOVER_* variables and descriptors stay in the worker"
    );
}

// ---------------------------------------------------------------------------------------------
// The command line and the examples

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_builds_exec_jobs_and_refuses_bad_payloads_in_one_line() {
    let store = TestStore::new().await;
    let (code, stdout, stderr) = run_cli(&[
        "submit",
        "--store",
        &store.url,
        "--kind",
        "exec",
        "--",
        "sh",
        "-c",
        "echo from the command line $HANDOVER_JOB_ID",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let from_args: JobId = stdout.trim().parse().unwrap();
    let (code, stdout, stderr) = run_cli(&[
        "submit",
        "--store",
        &store.url,
        "--kind",
        "exec",
        "--payload",
        r#"{"cmd":["sh","-c","echo \"$X in $(pwd)\""],"env":{"X":"1"},"cwd":"/tmp"}"#,
    ]);
    assert_eq!(code, 0, "{stderr}");
    let from_payload: JobId = stdout.trim().parse().unwrap();

    for (payload, says) in [
        ("{}", "\"cmd\" is missing"),
        (r#"{"cmd":[]}"#, "\"cmd\" is empty"),
        (r#"{"cmd":"ls -l"}"#, "not a string"),
        (r#"{"cmd":["ls",1]}"#, "cmd[1] must be a string"),
        (r#"{"cmd":["ls"],"env":{"X":1}}"#, "env X must be a string"),
        (r#"{"cmd":["ls"],"env":"X=1"}"#, "\"env\" must be an object"),
        (
            r#"{"cmd":["ls"],"cwd":5}"#,
            "\"cwd\" must be a non-empty path",
        ),
        (r#"{"cmd":["ls"],"shell":true}"#, "unknown field \"shell\""),
    ] {
        let (code, stdout, stderr) = run_cli(&[
            "submit",
            "--store",
            &store.url,
            "--kind",
            "exec",
            "--payload",
            payload,
        ]);
        assert_ne!(code, 0, "{payload} was accepted: {stdout}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.contains("invalid exec payload") && stderr.contains(says),
            "{payload}: {stderr}"
        );
    }
    let (code, _, stderr) = run_cli(&["submit", "--store", &store.url, "--kind", "exec", "--"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("\"cmd\" is missing"), "{stderr}");
    assert_eq!(
        store
            .store
            .list_jobs(&Default::default())
            .await
            .unwrap()
            .len(),
        2
    );

    let _worker = WorkerProcess::start(&store, &[]).await;
    let done = store
        .wait_for_status(from_args, JobStatus::Completed, Duration::from_secs(20))
        .await;
    assert_eq!(
        result_text(&done, "stdout_tail"),
        format!("from the command line {from_args}\n")
    );
    let done = store
        .wait_for_status(from_payload, JobStatus::Completed, Duration::from_secs(20))
        .await;
    assert_eq!(result_text(&done, "stdout_tail"), "1 in /tmp\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_scripts_checkpoint_hand_back_and_resume() {
    let store = TestStore::new().await;
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut ids = Vec::new();
    for command in [
        vec!["python3", "checkpointing_counter.py", "40", "0.1"],
        vec!["sh", "checkpointing_loop.sh", "40", "0.1"],
    ] {
        let script = examples.join(command[1]);
        let mut args = vec![
            "submit", "--store", &store.url, "--kind", "exec", "--", command[0],
        ];
        args.push(path_str(&script));
        args.extend(&command[2..]);
        let (code, stdout, stderr) = run_cli(&args);
        assert_eq!(code, 0, "{stderr}");
        ids.push(stdout.trim().parse::<JobId>().unwrap());
    }
    let mut first = WorkerProcess::start(&store, &[]).await;
    for id in &ids {
        store
            .wait_for_checkpoint(*id, 3, Duration::from_secs(20))
            .await;
    }
    first.signal(Signal::SIGTERM);
    assert_eq!(
        first.wait_exit(Duration::from_secs(20)).await.code(),
        Some(0),
        "log:\n{}",
        first.log()
    );
    let mut resumed_from = Vec::new();
    for id in &ids {
        let job = store.job(*id).await;
        assert_eq!(job.status, JobStatus::Pending, "job {id}");
        let i = job.checkpoint.unwrap()["i"].as_u64().unwrap();
        assert!((3..40).contains(&i), "job {id} handed back at {i}");
        resumed_from.push(i);
    }
    let _second = WorkerProcess::start(&store, &[]).await;
    for (id, from) in ids.iter().zip(resumed_from) {
        let done = store
            .wait_for_status(*id, JobStatus::Completed, Duration::from_secs(30))
            .await;
        assert_eq!(
            result_text(&done, "stdout_tail"),
            format!("counted to 40 (resumed from {from})\n"),
            "job {id}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Measurements (run with `cargo nextest run --test exec --run-ignored only --no-capture`)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn measure_exec_throughput_with_true() {
    for (kind, payload) in [("noop", json!({})), ("exec", json!({"cmd": ["true"]}))] {
        let store = TestStore::new().await;
        let jobs: Vec<NewJob> = (0..2000)
            .map(|_| NewJob::new(kind, payload.clone()))
            .collect();
        store.store.submit(&jobs).await.unwrap();
        let started = Instant::now();
        let _worker = WorkerProcess::start(&store, &[("--concurrency", "8")]).await;
        wait_for("all jobs to complete", Duration::from_secs(300), || async {
            let counts = store.store.count_jobs().await.unwrap();
            counts
                .iter()
                .any(|(status, n)| *status == JobStatus::Completed && *n == 2000)
                .then_some(())
        })
        .await;
        let took = started.elapsed();
        eprintln!(
            "{kind}: 2000 jobs in {took:?} (worker start included): {:.0} jobs/s",
            2000.0 / took.as_secs_f64()
        );
    }
}

const STAMP_C: &str = r#"#include <stdio.h>
#include <time.h>
#include <unistd.h>
int main(void) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    printf("%lld\n", (long long)now.tv_sec * 1000000 + now.tv_nsec / 1000);
    fflush(stdout);
    usleep(200000);
    return 0;
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn measure_claim_to_first_instruction() {
    let store = TestStore::new().await;
    let source = store.dir.path().join("stamp.c");
    std::fs::write(&source, STAMP_C).unwrap();
    let binary = store.dir.path().join("stamp");
    let compiled = std::process::Command::new("cc")
        .args(["-O2", "-static", "-o"])
        .arg(&binary)
        .arg(&source)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
        || std::process::Command::new("cc")
            .args(["-O2", "-o"])
            .arg(&binary)
            .arg(&source)
            .status()
            .unwrap()
            .success();
    assert!(compiled, "a C compiler is needed for this measurement");
    let _worker = WorkerProcess::start(
        &store,
        &[("--concurrency", "1"), ("--poll-interval", "5ms")],
    )
    .await;
    let mut samples = Vec::new();
    for _ in 0..30 {
        let id = submit_exec(&store, json!({"cmd": [path_str(&binary)]}), 1).await;
        // `updated_at` is the claim time while the child runs (it writes no checkpoint).
        let claimed = wait_for("the claim", Duration::from_secs(10), || async {
            let job = store.job(id).await;
            (job.status == JobStatus::Running).then_some(job.updated_at)
        })
        .await;
        let done = store
            .wait_for_status(id, JobStatus::Completed, Duration::from_secs(10))
            .await;
        let child_us: i64 = result_text(&done, "stdout_tail").trim().parse().unwrap();
        samples.push((child_us - claimed.timestamp_micros()) as f64 / 1000.0);
    }
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    eprintln!(
        "claim -> child's first instruction (ms, claim time has 1 ms resolution): min {:.2} median {:.2} p90 {:.2} max {:.2}",
        samples[0],
        samples[samples.len() / 2],
        samples[samples.len() * 9 / 10],
        samples[samples.len() - 1]
    );
}
