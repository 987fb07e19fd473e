//! The `exec` handler: validates the payload, starts the child through [`crate::process`],
//! forwards the worker's shutdown to its process group, and turns how it ended into the job's
//! outcome (see [`super`] for the protocol).

use super::payload::{parse_payload, ExecPayload};
use super::protocol::{
    capture, read_checkpoints, save_checkpoints, Output, Stream, Tail, OUTPUT_TAIL,
};
use crate::jobs::{Handler, JobContext, JobError, JobOutcome};
use crate::process::{self, Group};
use async_trait::async_trait;
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

/// The child's checkpoint descriptor.
pub const CHECKPOINT_FD: RawFd = 3;
/// EX_TEMPFAIL: "interrupted, resume me later".
pub const EXIT_TEMPFAIL: i32 = 75;
/// Bytes of stderr quoted in a failed attempt's error.
pub const ERROR_TAIL: usize = 8 * 1024;
/// Longest checkpoint passed back in `HANDOVER_CHECKPOINT` (Linux: 128 KiB per environment
/// string, name included).
const MAX_ENV_CHECKPOINT: usize = 128 * 1024 - 64;
/// After the main process exits and its group is killed, how long to wait for the pipes to close.
/// Only a process that left the group (`setsid`) can hold them open longer; it is not waited for.
const OUTPUT_DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// How an attempt ended, as the job sees it.
#[derive(Debug, PartialEq)]
enum Verdict {
    Completed,
    Interrupted,
    Failed(String),
}

/// Exit 0 completes; 75, or the worker's own SIGTERM, hands the job back; anything else fails it.
fn classify(status: ExitStatus, program: &str, term_sent: bool) -> Verdict {
    let sigterm = Signal::SIGTERM as i32;
    match (status.code(), status.signal()) {
        (Some(0), _) => Verdict::Completed,
        (Some(EXIT_TEMPFAIL), _) => Verdict::Interrupted,
        // Our own SIGTERM ended it (128 + 15 is how shells report that).
        (Some(code), _) if term_sent && code == 128 + sigterm => Verdict::Interrupted,
        (_, Some(signal)) if term_sent && signal == sigterm => Verdict::Interrupted,
        (Some(code), _) => Verdict::Failed(format!("{program} exited with status {code}")),
        (None, Some(signal)) => {
            let name = Signal::try_from(signal).map_or("unknown signal", |s| s.as_str());
            let core = if status.core_dumped() {
                ", core dumped"
            } else {
                ""
            };
            Verdict::Failed(format!(
                "{program} was killed by signal {signal} ({name}{core})"
            ))
        }
        (None, None) => Verdict::Failed(format!("{program} ended with {status}")),
    }
}

/// A failed attempt's error: what happened, then the end of stderr.
fn failure_message(what: &str, stderr: &Tail) -> String {
    let tail = stderr.text(ERROR_TAIL);
    let tail = tail.trim_end();
    if tail.is_empty() {
        format!("{what} (no stderr output)")
    } else {
        format!("{what}; stderr tail:\n{tail}")
    }
}

/// Runs `cmd` as a child process; see the module documentation for the protocol.
pub struct ExecHandler;

#[async_trait]
impl Handler for ExecHandler {
    fn kind(&self) -> &str {
        "exec"
    }

    fn validate(&self, payload: &Value) -> Result<(), String> {
        parse_payload(payload).map(|_| ())
    }

    async fn run(&self, ctx: JobContext) -> Result<JobOutcome, JobError> {
        let payload = parse_payload(ctx.payload()).map_err(JobError::Failed)?;
        if ctx.stop_requested() {
            // Claimed just as the worker began to stop: do not start what would be stopped at once.
            return Ok(JobOutcome::Interrupted);
        }
        let program = payload.cmd[0].as_str();
        let resume = ctx
            .resume_checkpoint()
            .map(Value::to_string)
            .unwrap_or_default();
        if resume.len() > MAX_ENV_CHECKPOINT {
            return Err(JobError::Failed(format!(
                "cannot start {program}: its checkpoint ({} bytes) is too large to pass in HANDOVER_CHECKPOINT (at most {MAX_ENV_CHECKPOINT})",
                resume.len()
            )));
        }
        if let Some(cwd) = &payload.cwd {
            match tokio::fs::metadata(cwd).await {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(JobError::Failed(format!(
                        "cannot start {program}: cwd {cwd} is not a directory"
                    )))
                }
                Err(err) => {
                    return Err(JobError::Failed(format!(
                        "cannot start {program}: cwd {cwd}: {err}"
                    )))
                }
            }
        }

        let started = Instant::now();
        let (checkpoint_tx, checkpoint_rx) = tokio::net::unix::pipe::pipe()
            .map_err(|e| JobError::Failed(format!("cannot create the checkpoint pipe: {e}")))?;
        // Blocking, as a child expects of its descriptors; close-on-exec until dup2'd onto fd 3.
        let write_end = checkpoint_tx
            .into_blocking_fd()
            .map_err(|e| JobError::Failed(format!("cannot create the checkpoint pipe: {e}")))?;
        let command = build_command(&payload, &ctx, &resume);
        // `_registered` lives until the end: after the child has been waited for.
        let (mut child, _registered) = process::spawn(command, write_end, CHECKPOINT_FD)
            .await
            .map_err(|e| JobError::Failed(format!("cannot start {program}: {e}")))?;
        let Some(pid) = child.id() else {
            return Err(JobError::Failed(format!(
                "cannot start {program}: the child has no pid"
            )));
        };
        let mut group = Group::new(pid as i32);
        tracing::debug!(
            pid,
            spawn_us = started.elapsed().as_micros() as u64,
            "exec child started"
        );

        let output = Arc::new(Output::new());
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        // The tasks log inside this job's span, and are aborted if this future is dropped.
        let stdout = stdout.expect("stdout is piped");
        let stdout = AbortOnDropHandle::new(tokio::spawn(
            capture(stdout, output.clone(), Stream::Stdout).in_current_span(),
        ));
        let stderr = stderr.expect("stderr is piped");
        let stderr = AbortOnDropHandle::new(tokio::spawn(
            capture(stderr, output.clone(), Stream::Stderr).in_current_span(),
        ));
        let (newest_tx, newest_rx) = watch::channel(None);
        let reader = AbortOnDropHandle::new(tokio::spawn(
            read_checkpoints(checkpoint_rx, newest_tx, output.clone()).in_current_span(),
        ));
        let saver = AbortOnDropHandle::new(tokio::spawn(
            save_checkpoints(ctx.clone(), newest_rx).in_current_span(),
        ));
        let _live =
            AbortOnDropHandle::new(tokio::spawn(publish_output(ctx.clone(), output.clone())));

        let mut term_sent = false;
        // Once cancelled: when the group gets SIGKILL if it has not exited by then.
        let mut kill_at: Option<tokio::time::Instant> = None;
        let waited = loop {
            let kill_due = async {
                match kill_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = ctx.abandoning() => {
                    tracing::warn!(pid, "job abandoned: SIGKILL to the child's process group");
                    group.signal(Signal::SIGKILL);
                    let _ = child.wait().await;
                    group.wait_gone().await;
                    group.release();
                    return Err(JobError::LeaseLost);
                }
                waited = child.wait() => break waited,
                _ = ctx.cancelled(), if kill_at.is_none() => {
                    kill_at = Some(tokio::time::Instant::now() + ctx.cancel_grace());
                    tracing::info!(pid, grace = ?ctx.cancel_grace(), "job cancelled: SIGTERM to the child's process group, SIGKILL after the grace");
                    if !term_sent {
                        term_sent = true;
                        group.signal(Signal::SIGTERM);
                    }
                }
                _ = kill_due => {
                    tracing::warn!(pid, "cancelled job still running after the grace: SIGKILL to its process group");
                    group.signal(Signal::SIGKILL);
                    kill_at = Some(tokio::time::Instant::now() + Duration::from_secs(3600));
                }
                _ = ctx.stopping(), if !term_sent => {
                    term_sent = true;
                    tracing::info!(pid, "asking the child to checkpoint and exit 75: SIGTERM to its process group");
                    group.signal(Signal::SIGTERM);
                }
            }
        };
        // Nothing of the job outlives its main process.
        group.signal(Signal::SIGKILL);
        group.wait_gone().await;
        group.release();
        let status =
            waited.map_err(|e| JobError::Failed(format!("waiting for {program} failed: {e}")))?;

        // Collect the rest of the output and of the checkpoints, then let the last one be saved.
        let drained = async move {
            let _ = tokio::join!(stdout, stderr, reader);
        };
        tokio::select! {
            biased;
            _ = ctx.abandoning() => return Err(JobError::LeaseLost),
            drained = tokio::time::timeout(OUTPUT_DRAIN_LIMIT, drained) => if drained.is_err() {
                tracing::warn!(pid, "a process that left the job's process group still holds its output open; not waiting for it");
            }
        }
        let saved = tokio::select! {
            biased;
            _ = ctx.abandoning() => return Err(JobError::LeaseLost),
            saved = saver => saved,
        };
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return Err(err),
            Err(err) => tracing::warn!(%err, "the checkpoint task failed"),
        }

        let verdict = classify(status, program, term_sent);
        tracing::debug!(pid, %status, ?verdict, "exec child exited");
        let stdout = output.tail(Stream::Stdout);
        let stderr = output.tail(Stream::Stderr);
        match verdict {
            Verdict::Completed => Ok(JobOutcome::Completed(json!({
                "exit_code": 0,
                "stdout_tail": stdout.text(OUTPUT_TAIL),
                "stderr_tail": stderr.text(OUTPUT_TAIL),
                "stdout_bytes": stdout.total,
                "stderr_bytes": stderr.total,
                "ignored_checkpoint_lines": output.ignored_lines(),
            }))),
            Verdict::Interrupted => {
                if !term_sent {
                    tracing::info!(pid, "the child asked to be resumed later (exit 75)");
                }
                Ok(JobOutcome::Interrupted)
            }
            Verdict::Failed(what) => Err(JobError::Failed(failure_message(&what, &stderr))),
        }
    }
}

/// The child's command line, environment, directory and stdio; [`process::spawn()`] adds its own
/// process group, PDEATHSIG and fd 3.
fn build_command(payload: &ExecPayload, ctx: &JobContext, resume: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(&payload.cmd[0]);
    command.args(&payload.cmd[1..]);
    for (name, _) in std::env::vars_os() {
        if name.as_bytes().starts_with(b"HANDOVER_") {
            command.env_remove(name);
        }
    }
    command
        .envs(&payload.env)
        .env("HANDOVER_JOB_ID", ctx.job_id().to_string())
        .env("HANDOVER_ATTEMPT", ctx.attempt().to_string())
        .env("HANDOVER_CHECKPOINT", resume)
        .env("HANDOVER_CHECKPOINT_FD", CHECKPOINT_FD.to_string());
    if let Some(cwd) = &payload.cwd {
        command.current_dir(cwd);
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// How often a running child's output tail is published to the pages.
const LIVE_OUTPUT_EVERY: Duration = Duration::from_millis(250);
/// How much of each stream the pages show live.
const LIVE_OUTPUT_TAIL: usize = 2048;

/// Publishes the end of the child's output whenever it grew, until aborted (when the child is
/// gone).
async fn publish_output(ctx: JobContext, output: Arc<Output>) {
    let mut published = (0, 0);
    let mut ticker = tokio::time::interval(LIVE_OUTPUT_EVERY);
    loop {
        ticker.tick().await;
        let written = (
            output.tail(Stream::Stdout).total,
            output.tail(Stream::Stderr).total,
        );
        if written != published {
            published = written;
            let stdout = output.tail(Stream::Stdout).text(LIVE_OUTPUT_TAIL);
            let stderr = output.tail(Stream::Stderr).text(LIVE_OUTPUT_TAIL);
            ctx.publish_output(stdout, stderr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_map_to_outcomes() {
        let exited = |code: i32| ExitStatus::from_raw(code << 8);
        let killed = |signal: i32| ExitStatus::from_raw(signal);
        assert_eq!(classify(exited(0), "p", false), Verdict::Completed);
        assert_eq!(classify(exited(75), "p", false), Verdict::Interrupted);
        assert_eq!(
            classify(exited(3), "p", false),
            Verdict::Failed("p exited with status 3".into())
        );
        assert_eq!(
            classify(killed(9), "p", false),
            Verdict::Failed("p was killed by signal 9 (SIGKILL)".into())
        );
        // SIGTERM is only an interruption when the worker sent it.
        assert!(matches!(
            classify(killed(15), "p", false),
            Verdict::Failed(_)
        ));
        assert_eq!(classify(killed(15), "p", true), Verdict::Interrupted);
        assert_eq!(classify(exited(143), "p", true), Verdict::Interrupted);
        assert!(matches!(
            classify(exited(143), "p", false),
            Verdict::Failed(_)
        ));
        assert!(matches!(classify(exited(1), "p", true), Verdict::Failed(_)));
    }

    #[test]
    fn failure_messages_end_with_the_stderr_tail() {
        let mut stderr = Tail::new(OUTPUT_TAIL);
        assert_eq!(
            failure_message("p exited with status 3", &stderr),
            "p exited with status 3 (no stderr output)"
        );
        stderr.push(&vec![b'a'; 3 * ERROR_TAIL]);
        stderr.push(b"\nthe real problem\n");
        let message = failure_message("p exited with status 3", &stderr);
        assert!(message.starts_with("p exited with status 3; stderr tail:\n"));
        assert!(message.ends_with("the real problem"));
        assert!(message.len() < ERROR_TAIL + 100);
    }
}
