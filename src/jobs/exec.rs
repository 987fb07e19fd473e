//! The `exec` kind (SPEC §6): any program, in any language, as a job — with checkpoints over a
//! pipe, the worker's shutdown forwarded to it within the deadline, and no process left behind.
//!
//! # The protocol, as the child sees it
//! - Payload `{"cmd": [PROGRAM, ARGS...], "env": {NAME: VALUE}, "cwd": PATH}` (`env`, `cwd`
//!   optional). PROGRAM is looked up in `PATH` like a shell does.
//! - Descriptors: stdin is `/dev/null`, stdout and stderr are captured, fd 3 is the checkpoint
//!   pipe; nothing else (descriptors the worker inherited are not passed on).
//! - Environment: the worker's own without its `HANDOVER_*` variables (no admin token or store
//!   URL leaks into jobs), plus `env`, plus `HANDOVER_JOB_ID`, `HANDOVER_ATTEMPT`,
//!   `HANDOVER_CHECKPOINT` (the last checkpoint as compact JSON, empty on a first run) and
//!   `HANDOVER_CHECKPOINT_FD=3`.
//! - Each line written to fd 3 is one JSON checkpoint, saved in order and fenced by the lease
//!   like every write. When the child writes them faster than the store saves, only the newest
//!   waiting one is saved: checkpoints supersede each other. A line that is not JSON, is `null`,
//!   or is longer than [`MAX_CHECKPOINT_LINE`] is ignored — logged with a warning, counted in the
//!   result's `ignored_checkpoint_lines` and noted in the stderr tail (so a failed attempt's
//!   error shows it). The limit stays under Linux's 128 KiB cap on one environment string, so
//!   every saved checkpoint can be handed back in `HANDOVER_CHECKPOINT`. A last line without
//!   `\n` counts.
//! - Exit 0: completed, with result `{"exit_code": 0, "stdout_tail", "stderr_tail",
//!   "stdout_bytes", "stderr_bytes", "ignored_checkpoint_lines"}` (the tails are the last
//!   [`OUTPUT_TAIL`] bytes of each stream). Exit 75 (EX_TEMPFAIL): interrupted, handed back with
//!   its last checkpoint, not counted as an attempt. Any other exit, or death by a signal: a
//!   failed attempt whose error names the exit status or the signal and ends with the last
//!   [`ERROR_TAIL`] bytes of stderr. A program that cannot be started fails the attempt with
//!   `cannot start PROGRAM: REASON`.
//!
//! # Shutdown and the deadline
//! When the machine enters `checkpointing`, the child's process group gets SIGTERM; the child
//! should write a checkpoint and exit 75. (Dying of that very SIGTERM, or exiting 143, also counts
//! as interrupted: a program that knows nothing of the protocol loses no attempt to a deploy.)
//! Its share of the deadline is the rest of `checkpointing`: the forced path starts a reserve
//! before `--grace` ends (a tenth of it, at most 1 s). Then the job is abandoned: its group gets
//! SIGKILL, the child is reaped and the group waited for (at most [`GROUP_EXIT_WAIT`]), and only
//! then does the handler return — the machine releases the lease with the last saved checkpoint
//! once the processes are really gone. A lost lease abandons the job the same way.
//!
//! # No orphans
//! - Every child runs in its own process group, so signals reach a whole pipeline. When the main
//!   process exits, whatever is left in its group is SIGKILLed: nothing of a job outlives it.
//! - `PR_SET_PDEATHSIG(SIGKILL)` is set between fork and exec, so the child never runs an
//!   instruction of the job without it; a `getppid()` check closes the race with a worker that
//!   died just before. PDEATHSIG fires when the *thread* that forked exits, so children are forked
//!   by one dedicated thread that lives as long as the process (not by a tokio worker thread,
//!   which `block_in_place` can turn into a blocking-pool thread that exits when idle).
//! - PDEATHSIG reaches only the direct child. For the rest of its group, each worker keeps one
//!   small watchdog process, `handover-watch`: a fork of the worker that closes every descriptor
//!   but the read end of a pipe on which the worker writes the process groups it starts and ends.
//!   When the worker dies — even by SIGKILL — the kernel closes the write end; the watchdog reads
//!   EOF, SIGKILLs every group still listed, and exits.
//! - Dropping a running handler future SIGKILLs the group as a last resort.
//! - Children are spawned through [`crate::worker::reaper::spawn_registered`], so that when the
//!   worker is PID 1 its orphan sweep never reaps one before tokio has collected its exit status.
//!
//! Unix only. PDEATHSIG, `close_range` and the `/proc` scan are Linux features; elsewhere those
//! guarantees are lost, not correctness.

use super::{CheckpointError, Handler, JobContext, JobError, JobOutcome};
use crate::worker::reaper::{spawn_registered, Registration};
use async_trait::async_trait;
use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::{killpg, SigSet, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{oneshot, watch};
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

/// The child's checkpoint descriptor.
pub const CHECKPOINT_FD: RawFd = 3;
/// EX_TEMPFAIL: "interrupted, resume me later".
pub const EXIT_TEMPFAIL: i32 = 75;
/// Bytes of stdout and of stderr kept per attempt (the last ones).
pub const OUTPUT_TAIL: usize = 64 * 1024;
/// Bytes of stderr quoted in a failed attempt's error.
pub const ERROR_TAIL: usize = 8 * 1024;
/// Longest checkpoint line accepted on fd 3 (without its newline).
pub const MAX_CHECKPOINT_LINE: usize = 64 * 1024;
/// Longest checkpoint passed back in `HANDOVER_CHECKPOINT` (Linux: 128 KiB per environment
/// string, name included).
const MAX_ENV_CHECKPOINT: usize = 128 * 1024 - 64;
/// How long a dying process group is waited for before the handler returns anyway.
pub const GROUP_EXIT_WAIT: Duration = Duration::from_millis(300);
/// After the main process exits and its group is killed, how long to wait for the pipes to close.
/// Only a process that left the group (`setsid`) can hold them open longer; it is not waited for.
const OUTPUT_DRAIN_LIMIT: Duration = Duration::from_secs(1);
const READ_CHUNK: usize = 16 * 1024;
/// Ignored checkpoint lines logged per attempt (all are counted).
const LOGGED_NOTES: u64 = 10;
/// Variables the worker sets for the child; a payload cannot override them.
const PROTOCOL_ENV: [&str; 4] = [
    "HANDOVER_JOB_ID",
    "HANDOVER_ATTEMPT",
    "HANDOVER_CHECKPOINT",
    "HANDOVER_CHECKPOINT_FD",
];

// ---------------------------------------------------------------------------------------------
// Payload

/// A validated `exec` payload.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecPayload {
    pub cmd: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<String>,
}

const PAYLOAD_SHAPE: &str = r#"expected {"cmd": [PROGRAM, ARGS...], "env": {NAME: VALUE}, "cwd": PATH} (env and cwd optional)"#;

/// Parses and checks a payload; the error names the problem and starts with "invalid exec payload".
pub fn parse_payload(payload: &Value) -> Result<ExecPayload, String> {
    parse_fields(payload).map_err(|e| format!("invalid exec payload: {e}"))
}

fn parse_fields(payload: &Value) -> Result<ExecPayload, String> {
    let Value::Object(fields) = payload else {
        return Err(format!("got {}; {PAYLOAD_SHAPE}", describe(payload)));
    };
    if let Some(unknown) = fields
        .keys()
        .find(|k| !matches!(k.as_str(), "cmd" | "env" | "cwd"))
    {
        return Err(format!("unknown field {unknown:?}; {PAYLOAD_SHAPE}"));
    }
    let items = match fields.get("cmd") {
        None | Some(Value::Null) => return Err(format!("\"cmd\" is missing; {PAYLOAD_SHAPE}")),
        Some(Value::Array(items)) => items,
        Some(Value::String(line)) => {
            return Err(format!(
                "\"cmd\" must be an array [PROGRAM, ARGS...], not a string (for a shell command use [\"sh\", \"-c\", {line:?}])"
            ))
        }
        Some(other) => {
            return Err(format!(
                "\"cmd\" must be an array [PROGRAM, ARGS...], got {}",
                describe(other)
            ))
        }
    };
    if items.is_empty() {
        return Err("\"cmd\" is empty; give at least the program to run".into());
    }
    let mut cmd = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let Value::String(arg) = item else {
            return Err(format!(
                "cmd[{index}] must be a string, got {}",
                describe(item)
            ));
        };
        if arg.contains('\0') {
            return Err(format!("cmd[{index}] contains a NUL byte"));
        }
        cmd.push(arg.clone());
    }
    if cmd[0].is_empty() {
        return Err("cmd[0], the program, is empty".into());
    }
    let mut env = BTreeMap::new();
    match fields.get("env") {
        None | Some(Value::Null) => {}
        Some(Value::Object(vars)) => {
            for (name, value) in vars {
                if name.is_empty() || name.contains('=') || name.contains('\0') {
                    return Err(format!("env name {name:?} is not a valid variable name"));
                }
                if PROTOCOL_ENV.contains(&name.as_str()) {
                    return Err(format!(
                        "env {name} is set by the worker and cannot be given"
                    ));
                }
                let Value::String(text) = value else {
                    return Err(format!(
                        "env {name} must be a string, got {}",
                        describe(value)
                    ));
                };
                if text.contains('\0') {
                    return Err(format!("env {name} contains a NUL byte"));
                }
                env.insert(name.clone(), text.clone());
            }
        }
        Some(other) => {
            return Err(format!(
                "\"env\" must be an object of string values, got {}",
                describe(other)
            ))
        }
    }
    let cwd = match fields.get("cwd") {
        None | Some(Value::Null) => None,
        Some(Value::String(path)) if !path.is_empty() && !path.contains('\0') => Some(path.clone()),
        Some(other) => {
            return Err(format!(
                "\"cwd\" must be a non-empty path, got {}",
                describe(other)
            ))
        }
    };
    Ok(ExecPayload { cmd, env, cwd })
}

/// A short description of a JSON value for error messages.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("a boolean ({b})"),
        Value::Number(n) => format!("a number ({n})"),
        Value::String(s) if s.is_empty() => "an empty string".into(),
        Value::String(s) if s.chars().count() > 40 => {
            format!("a string ({:?}...)", s.chars().take(40).collect::<String>())
        }
        Value::String(s) => format!("a string ({s:?})"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Output tails and checkpoint lines

/// The last `cap` bytes of a stream, in bounded memory however much is written.
#[derive(Debug)]
struct Tail {
    buf: Vec<u8>,
    cap: usize,
    /// Bytes the child wrote (notes excluded).
    total: u64,
}

impl Tail {
    fn new(cap: usize) -> Tail {
        Tail {
            buf: Vec::new(),
            cap,
            total: 0,
        }
    }

    fn push(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        self.keep(data);
    }

    /// Adds a line of our own (not counted as the child's output), on a line of its own.
    fn note(&mut self, line: &str) {
        if self.buf.last().is_some_and(|b| *b != b'\n') {
            self.keep(b"\n");
        }
        self.keep(line.as_bytes());
        self.keep(b"\n");
    }

    fn keep(&mut self, data: &[u8]) {
        if data.len() >= self.cap {
            self.buf.clear();
            self.buf.extend_from_slice(&data[data.len() - self.cap..]);
            return;
        }
        self.buf.extend_from_slice(data);
        // Trim only past twice the cap, so trimming costs O(1) per byte written.
        if self.buf.len() > 2 * self.cap {
            self.buf.drain(..self.buf.len() - self.cap);
        }
    }

    /// The last `limit` bytes (at most the cap) as text, starting on a character boundary.
    fn text(&self, limit: usize) -> String {
        let limit = limit.min(self.cap);
        let bytes = &self.buf[self.buf.len().saturating_sub(limit)..];
        let cut = bytes.len() < self.buf.len() || (self.total as usize) > bytes.len();
        let skip = if cut {
            bytes
                .iter()
                .take(3)
                .take_while(|b| (**b & 0xC0) == 0x80)
                .count()
        } else {
            0
        };
        String::from_utf8_lossy(&bytes[skip..]).into_owned()
    }
}

/// What [`LineSplitter`] found.
#[derive(Debug, PartialEq)]
enum Line {
    Complete(Vec<u8>),
    /// A line longer than the limit (its full length); its bytes were not kept.
    TooLong(usize),
}

/// Splits a byte stream into lines of at most `max` bytes without ever holding more than that.
struct LineSplitter {
    buf: Vec<u8>,
    max: usize,
    /// Bytes of an over-long line seen so far, while skipping to its end.
    skipping: Option<usize>,
}

impl LineSplitter {
    fn new(max: usize) -> LineSplitter {
        LineSplitter {
            buf: Vec::new(),
            max,
            skipping: None,
        }
    }

    fn feed(&mut self, mut data: &[u8], lines: &mut Vec<Line>) {
        while !data.is_empty() {
            let (part, rest, ends) = match data.iter().position(|b| *b == b'\n') {
                Some(at) => (&data[..at], &data[at + 1..], true),
                None => (data, &data[data.len()..], false),
            };
            data = rest;
            if let Some(seen) = self.skipping.as_mut() {
                *seen += part.len();
            } else if self.buf.len() + part.len() > self.max {
                self.skipping = Some(self.buf.len() + part.len());
                self.buf = Vec::new();
            } else {
                self.buf.extend_from_slice(part);
            }
            if ends {
                lines.push(self.take());
            }
        }
    }

    /// The last line, if the stream ended without a newline.
    fn finish(&mut self) -> Option<Line> {
        (self.skipping.is_some() || !self.buf.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> Line {
        match self.skipping.take() {
            Some(len) => Line::TooLong(len),
            None => Line::Complete(std::mem::take(&mut self.buf)),
        }
    }
}

/// A checkpoint line: `Ok(None)` for a blank line (ignored silently), `Err(why)` for a bad one.
fn parse_checkpoint_line(line: &[u8]) -> Result<Option<Value>, String> {
    let text = line.trim_ascii();
    if text.is_empty() {
        return Ok(None);
    }
    match serde_json::from_slice::<Value>(text) {
        Ok(Value::Null) => Err("null is not a checkpoint".into()),
        Ok(value) => Ok(Some(value)),
        Err(err) => Err(format!("not JSON ({err})")),
    }
}

/// What an attempt's child wrote, shared by the tasks that read it.
struct Output {
    stdout: Mutex<Tail>,
    stderr: Mutex<Tail>,
    ignored_lines: AtomicU64,
}

#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

impl Output {
    fn new() -> Output {
        Output {
            stdout: Mutex::new(Tail::new(OUTPUT_TAIL)),
            stderr: Mutex::new(Tail::new(OUTPUT_TAIL)),
            ignored_lines: AtomicU64::new(0),
        }
    }

    fn tail(&self, stream: Stream) -> std::sync::MutexGuard<'_, Tail> {
        let tail = match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        };
        tail.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ignored_line(&self, number: u64, why: &str) {
        let count = self.ignored_lines.fetch_add(1, Ordering::Relaxed) + 1;
        if count <= LOGGED_NOTES {
            tracing::warn!(line = number, reason = %why, "ignored a checkpoint line on fd 3");
        }
        self.tail(Stream::Stderr).note(&format!(
            "handover: ignored checkpoint line {number}: {why}"
        ));
    }
}

/// Copies a stream into its tail until EOF.
async fn capture(mut pipe: impl AsyncRead + Unpin, output: Arc<Output>, stream: Stream) {
    let mut chunk = vec![0u8; READ_CHUNK];
    while let Ok(n @ 1..) = pipe.read(&mut chunk).await {
        output.tail(stream).push(&chunk[..n]);
    }
}

/// Reads checkpoint lines from fd 3 until EOF, publishing each valid one as the newest.
async fn read_checkpoints(
    mut pipe: impl AsyncRead + Unpin,
    newest: watch::Sender<Option<Value>>,
    output: Arc<Output>,
) {
    let mut splitter = LineSplitter::new(MAX_CHECKPOINT_LINE);
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut lines = Vec::new();
    let mut number = 0u64;
    loop {
        let ended = match pipe.read(&mut chunk).await {
            Ok(n @ 1..) => {
                splitter.feed(&chunk[..n], &mut lines);
                false
            }
            _ => {
                lines.extend(splitter.finish());
                true
            }
        };
        for line in lines.drain(..) {
            number += 1;
            let parsed = match line {
                Line::Complete(bytes) => parse_checkpoint_line(&bytes),
                Line::TooLong(len) => Err(format!(
                    "{len} bytes, over the {MAX_CHECKPOINT_LINE}-byte limit"
                )),
            };
            match parsed {
                Ok(Some(checkpoint)) => {
                    newest.send_replace(Some(checkpoint));
                }
                Ok(None) => {}
                Err(why) => output.ignored_line(number, &why),
            }
        }
        if ended {
            return;
        }
    }
}

/// Saves the newest checkpoint whenever there is one, until the reader is done.
async fn save_checkpoints(
    ctx: JobContext,
    mut newest: watch::Receiver<Option<Value>>,
) -> Result<(), JobError> {
    while newest.changed().await.is_ok() {
        let Some(checkpoint) = newest.borrow_and_update().clone() else {
            continue;
        };
        match ctx.save_checkpoint(checkpoint).await {
            Ok(()) => {}
            Err(CheckpointError::LeaseLost) => return Err(JobError::LeaseLost),
            Err(CheckpointError::Unavailable(err)) => {
                // The next checkpoint will be tried; an older one only costs recomputation.
                tracing::warn!(%err, "checkpoint not saved; the child keeps running");
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// How an attempt ended

#[derive(Debug, PartialEq)]
enum Verdict {
    Completed,
    Interrupted,
    Failed(String),
}

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

fn failure_message(what: &str, stderr: &Tail) -> String {
    let tail = stderr.text(ERROR_TAIL);
    let tail = tail.trim_end();
    if tail.is_empty() {
        format!("{what} (no stderr output)")
    } else {
        format!("{what}; stderr tail:\n{tail}")
    }
}

// ---------------------------------------------------------------------------------------------
// The handler

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
        let command = build_command(&payload, &ctx, &resume, write_end.as_raw_fd());
        // `_registered` lives until the end: after the child has been waited for.
        let (mut child, _registered) = spawn(command, write_end)
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

        let mut term_sent = false;
        let waited = loop {
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
                "ignored_checkpoint_lines": output.ignored_lines.load(Ordering::Relaxed),
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

fn build_command(
    payload: &ExecPayload,
    ctx: &JobContext,
    resume: &str,
    checkpoint_fd: RawFd,
) -> tokio::process::Command {
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
        .kill_on_drop(true)
        // setpgid(0, 0) in the child, before `child_setup` runs.
        .process_group(0);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: `child_setup` only makes async-signal-safe system calls (see there).
    unsafe {
        command.pre_exec(move || child_setup(parent, checkpoint_fd));
    }
    command
}

/// Runs in the child between fork and exec. A fork of a multi-threaded process may only make
/// async-signal-safe calls here: system calls, no allocation, no locks.
fn child_setup(parent: libc::pid_t, checkpoint_fd: RawFd) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
        // The worker may have died between fork and prctl; then nothing would ever kill us.
        if nix::unistd::getppid().as_raw() != parent {
            // SAFETY: _exit is async-signal-safe and ends this process only.
            unsafe { libc::_exit(1) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = parent;
    // SAFETY: plain system calls on descriptors this process owns.
    unsafe {
        if checkpoint_fd == CHECKPOINT_FD {
            // dup2 onto itself would keep close-on-exec.
            if libc::fcntl(CHECKPOINT_FD, libc::F_SETFD, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
        } else if libc::dup2(checkpoint_fd, CHECKPOINT_FD) == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    // Descriptors the worker itself inherited without close-on-exec (a supervisor's or a CI
    // harness's pipes) are not the job's: mark everything above fd 3 close-on-exec. (Not closed
    // here: std reports a failed exec through one of them.)
    // SAFETY: a plain system call.
    #[cfg(target_os = "linux")]
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            CHECKPOINT_FD as libc::c_uint + 1,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
    // std keeps the forking thread's signal mask; a job starts with nothing blocked.
    SigSet::empty().thread_set_mask()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The child's process group

/// A running child's process group. Dropping it SIGKILLs the group (a handler future dropped
/// mid-run); [`Group::release`] ends the watch once the group is gone.
struct Group {
    pgid: i32,
    live: bool,
}

impl Group {
    fn new(pgid: i32) -> Group {
        Group { pgid, live: true }
    }

    /// Signals the whole group. After the leader is reaped the group's id stays reserved as long
    /// as any member exists, so this cannot reach an unrelated process while there is one to reach.
    fn signal(&self, signal: Signal) {
        match killpg(Pid::from_raw(self.pgid), signal) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(err) => {
                tracing::warn!(pgid = self.pgid, %signal, %err, "cannot signal the process group")
            }
        }
    }

    /// Waits until no live process is left in the group (zombies waiting for a parent, or for an
    /// init that does not reap, count as gone), at most [`GROUP_EXIT_WAIT`].
    async fn wait_gone(&self) {
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
    fn release(&mut self) {
        if std::mem::replace(&mut self.live, false) {
            send(Request::Forget(self.pgid), false);
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
#[cfg(target_os = "linux")]
fn live_group_members(pgid: i32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().as_bytes().iter().all(u8::is_ascii_digit))
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
        .filter_map(|stat| parse_proc_stat(&stat))
        .filter(|(state, group)| *group == pgid && !matches!(state, 'Z' | 'X'))
        .count()
}

#[cfg(not(target_os = "linux"))]
fn live_group_members(_pgid: i32) -> usize {
    0
}

/// (state, process group) from the text of `/proc/PID/stat`.
fn parse_proc_stat(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let _parent = fields.next()?;
    let group = fields.next()?.parse().ok()?;
    Some((state, group))
}

// ---------------------------------------------------------------------------------------------
// The spawner thread and the watchdog process

struct Spawn {
    command: tokio::process::Command,
    /// The worker's copy of fd 3's write end: open until the fork, closed right after.
    keep_open: OwnedFd,
    runtime: tokio::runtime::Handle,
    reply: oneshot::Sender<io::Result<Spawned>>,
}

/// A started child, with the registration that keeps a PID-1 orphan sweep from reaping it
/// (and so stealing its exit status) until it has been waited for.
type Spawned = (tokio::process::Child, Registration);

enum Request {
    Spawn(Box<Spawn>),
    /// A child's group is gone; the watchdog may forget it.
    Forget(i32),
}

/// Starts a child on the spawner thread.
async fn spawn(command: tokio::process::Command, keep_open: OwnedFd) -> io::Result<Spawned> {
    let (reply, answer) = oneshot::channel();
    let request = Request::Spawn(Box::new(Spawn {
        command,
        keep_open,
        runtime: tokio::runtime::Handle::current(),
        reply,
    }));
    if !send(request, true) {
        return Err(io::Error::other(
            "the exec spawner thread cannot be started",
        ));
    }
    answer
        .await
        .map_err(|_| io::Error::other("the exec spawner thread failed"))?
}

/// Sends a request to the spawner thread, starting it if needed (and allowed); false if it could
/// not be delivered.
fn send(request: Request, start: bool) -> bool {
    static SPAWNER: Mutex<Option<mpsc::Sender<Request>>> = Mutex::new(None);
    let mut spawner = SPAWNER.lock().unwrap_or_else(|e| e.into_inner());
    let mut request = request;
    if let Some(sender) = spawner.as_ref() {
        match sender.send(request) {
            Ok(()) => return true,
            Err(mpsc::SendError(back)) => {
                request = back;
                *spawner = None;
            }
        }
    }
    if !start {
        return false;
    }
    let (sender, requests) = mpsc::channel();
    let started = std::thread::Builder::new()
        .name("handover-exec".into())
        .spawn(move || spawner_loop(requests));
    if let Err(err) = started {
        tracing::error!(%err, "cannot start the exec spawner thread");
        return false;
    }
    let sent = sender.send(request).is_ok();
    *spawner = Some(sender);
    sent
}

/// The thread that forks every child, so that PDEATHSIG means "the worker died" (it fires when the
/// forking thread exits; this one lives as long as the process).
fn spawner_loop(requests: mpsc::Receiver<Request>) {
    ensure_stdio_open();
    let mut watchdog = Watchdog::default();
    for request in requests {
        // A panic must not end this thread: its exit would SIGKILL every child it forked.
        let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match request {
            Request::Spawn(spawn) => start_child(*spawn, &mut watchdog),
            Request::Forget(pgid) => watchdog.forget(pgid),
        }));
        if handled.is_err() {
            tracing::error!("the exec spawner recovered from a panic");
        }
    }
}

fn start_child(spawn: Spawn, watchdog: &mut Watchdog) {
    let Spawn {
        mut command,
        keep_open,
        runtime,
        reply,
    } = spawn;
    let _runtime = runtime.enter();
    let spawned = spawn_registered(|| command.spawn());
    // The child has its own copy on fd 3 now; ours must go, or fd 3 never reads EOF.
    drop(keep_open);
    match spawned {
        Ok((child, registration)) => {
            let pid = child.id().map(|p| p as i32);
            if let Some(pid) = pid {
                watchdog.watch(pid);
            }
            if let Err(Ok(spawned)) = reply.send(Ok((child, registration))) {
                // The job went away while its child started.
                if let Some(pid) = pid {
                    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                    watchdog.forget(pid);
                }
                drop(spawned);
            }
        }
        Err(err) => {
            let _ = reply.send(Err(err));
        }
    }
}

/// Descriptors 0-2 must be open: otherwise a pipe created for a child could take one of those
/// numbers and be clobbered by the child's own stdio set-up.
fn ensure_stdio_open() {
    for fd in 0..=2 {
        // SAFETY: fcntl(F_GETFD) and open/close of /dev/null have no memory effects.
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) == -1 {
                let opened = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                if opened > 2 {
                    libc::close(opened);
                }
            }
        }
    }
}

/// Process groups the watchdog process tracks at most (far above any sane concurrency).
const WATCHDOG_CAPACITY: usize = 8192;
/// After the watchdog process could not be started, how long before trying again.
const WATCHDOG_RETRY: Duration = Duration::from_secs(10);

/// The worker's side of the `handover-watch` process (see the module documentation).
#[derive(Default)]
struct Watchdog {
    process: Option<(libc::pid_t, OwnedFd)>,
    groups: HashSet<i32>,
    retry_at: Option<Instant>,
}

impl Watchdog {
    fn watch(&mut self, pgid: i32) {
        self.groups.insert(pgid);
        self.record(pgid);
    }

    fn forget(&mut self, pgid: i32) {
        if self.groups.remove(&pgid) {
            self.record(-pgid);
        }
    }

    fn record(&mut self, record: i32) {
        let written = self
            .process
            .as_ref()
            .is_some_and(|(_, lifeline)| write_record(lifeline, record));
        if !written {
            self.restart();
        }
    }

    /// Replaces a missing, dead or stuck watchdog with a new one that knows every live group.
    fn restart(&mut self) {
        if let Some((pid, lifeline)) = self.process.take() {
            // Kill it first: closing its lifeline alone would make it kill every live group. Only
            // while it is surely still our unreaped child (a PID-1 orphan sweep may have reaped
            // it, and its pid been reused).
            // SAFETY: signalling and reaping our own child.
            unsafe {
                if libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) == 0 {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
            }
            drop(lifeline);
            tracing::warn!("the handover-watch process was gone or stuck; starting a new one");
        }
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        match start_watchdog() {
            Ok((pid, lifeline)) => {
                self.retry_at = None;
                if !self.groups.iter().all(|g| write_record(&lifeline, *g)) {
                    tracing::error!("cannot hand the live process groups to handover-watch");
                }
                self.process = Some((pid, lifeline));
            }
            Err(err) => {
                self.retry_at = Some(Instant::now() + WATCHDOG_RETRY);
                tracing::error!(%err, "cannot start handover-watch: if this worker is killed, processes its jobs started may survive it");
            }
        }
    }
}

/// Writes one record without blocking; false if the watchdog is gone or not reading.
fn write_record(lifeline: &OwnedFd, record: i32) -> bool {
    let bytes = record.to_ne_bytes();
    // SAFETY: writing 4 bytes from a live buffer to a descriptor we own.
    let written = unsafe { libc::write(lifeline.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
    written == bytes.len() as isize
}

/// Forks the watchdog process; returns its pid and the write end of its lifeline.
fn start_watchdog() -> io::Result<(libc::pid_t, OwnedFd)> {
    // Close-on-exec from the start: a job child that inherited the write end would keep the
    // lifeline open after the worker died.
    let (read_end, write_end) = cloexec_pipe()?;
    // A watchdog that stops reading must never block a spawn.
    // SAFETY: as above.
    if unsafe { libc::fcntl(write_end.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } == -1 {
        return Err(io::Error::last_os_error());
    }
    let (read_fd, write_fd) = (read_end.as_raw_fd(), write_end.as_raw_fd());
    // SAFETY: the child only runs `watchdog_main`, which makes async-signal-safe calls and never
    // returns.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => unsafe { watchdog_main(read_fd, write_fd) },
        pid => {
            drop(read_end);
            Ok((pid, write_end))
        }
    }
}

#[cfg(target_os = "linux")]
fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])))
    }
}

#[cfg(not(target_os = "linux"))]
fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe fills two descriptors we then own; fcntl on them.
    unsafe {
        if libc::pipe(fds.as_mut_ptr()) == -1 {
            return Err(io::Error::last_os_error());
        }
        let ends = (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]));
        for fd in fds {
            if libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) == -1 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(ends)
    }
}

/// The watchdog process: a fork of the worker that keeps only its lifeline. Records are native
/// i32s: `+pgid` watch, `-pgid` forget. EOF means the worker is gone: SIGKILL what is left.
///
/// # Safety
/// Only in a freshly forked child. Everything here is async-signal-safe: system calls on the
/// stack's data, no allocation, no locks.
unsafe fn watchdog_main(read_fd: RawFd, write_fd: RawFd) -> ! {
    let mut all: libc::sigset_t = std::mem::zeroed();
    libc::sigfillset(&mut all);
    libc::pthread_sigmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
    // Out of the worker's group, so a terminal's Ctrl-C or Ctrl-Z is not for it.
    libc::setpgid(0, 0);
    #[cfg(target_os = "linux")]
    libc::prctl(
        libc::PR_SET_NAME,
        c"handover-watch".as_ptr() as libc::c_ulong,
        0,
        0,
        0,
    );
    libc::close(write_fd);
    if read_fd != 0 {
        libc::dup2(read_fd, 0);
    }
    close_from(1);
    libc::chdir(c"/".as_ptr());

    let mut groups = [0 as libc::pid_t; WATCHDOG_CAPACITY];
    let mut count = 0usize;
    let mut buf = [0u8; 4096];
    let mut filled = 0usize;
    loop {
        let n = libc::read(0, buf.as_mut_ptr().add(filled).cast(), buf.len() - filled);
        if n == 0 {
            break;
        }
        if n < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break;
        }
        filled += n as usize;
        let whole = filled - filled % 4;
        let mut at = 0;
        while at < whole {
            let record = i32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
            at += 4;
            if record > 0 {
                if count < groups.len() {
                    groups[count] = record;
                    count += 1;
                }
            } else if record < 0 {
                let mut i = 0;
                while i < count {
                    if groups[i] == -record {
                        count -= 1;
                        groups[i] = groups[count];
                        break;
                    }
                    i += 1;
                }
            }
        }
        buf.copy_within(whole..filled, 0);
        filled -= whole;
    }
    let mut i = 0;
    while i < count {
        libc::kill(-groups[i], libc::SIGKILL);
        i += 1;
    }
    libc::_exit(0)
}

/// Closes every descriptor from `first` up (async-signal-safe).
unsafe fn close_from(first: libc::c_int) {
    #[cfg(target_os = "linux")]
    if libc::syscall(
        libc::SYS_close_range,
        first as libc::c_uint,
        libc::c_uint::MAX,
        0,
    ) == 0
    {
        return;
    }
    let mut limit: libc::rlimit = std::mem::zeroed();
    let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
        limit.rlim_cur.min(1 << 20) as libc::c_int
    } else {
        1024
    };
    let mut fd = first;
    while fd < max {
        libc::close(fd);
        fd += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_payloads_parse() {
        let parsed = parse_payload(&json!({"cmd": ["python3", "job.py", "--n", "5"]})).unwrap();
        assert_eq!(parsed.cmd, ["python3", "job.py", "--n", "5"]);
        assert!(parsed.env.is_empty());
        assert_eq!(parsed.cwd, None);
        let full =
            parse_payload(&json!({"cmd": ["ls"], "env": {"X": "1", "EMPTY": ""}, "cwd": "/tmp"}))
                .unwrap();
        assert_eq!(full.env["X"], "1");
        assert_eq!(full.env["EMPTY"], "");
        assert_eq!(full.cwd.as_deref(), Some("/tmp"));
        assert!(parse_payload(&json!({"cmd": ["ls"], "env": null, "cwd": null})).is_ok());
    }

    #[test]
    fn bad_payloads_name_the_problem() {
        for (bad, says) in [
            (json!("ls"), "got a string"),
            (json!({}), "\"cmd\" is missing"),
            (json!({"cmd": []}), "\"cmd\" is empty"),
            (json!({"cmd": "ls -l"}), "[\"sh\", \"-c\", \"ls -l\"]"),
            (json!({"cmd": {"a": 1}}), "got an object"),
            (
                json!({"cmd": ["ls", 5]}),
                "cmd[1] must be a string, got a number (5)",
            ),
            (json!({"cmd": [""]}), "the program, is empty"),
            (json!({"cmd": ["ls\u{0}x"]}), "NUL"),
            (
                json!({"cmd": ["ls"], "env": ["X=1"]}),
                "\"env\" must be an object",
            ),
            (
                json!({"cmd": ["ls"], "env": {"X": 1}}),
                "env X must be a string",
            ),
            (
                json!({"cmd": ["ls"], "env": {"A=B": "1"}}),
                "not a valid variable name",
            ),
            (
                json!({"cmd": ["ls"], "env": {"HANDOVER_CHECKPOINT": "{}"}}),
                "set by the worker",
            ),
            (
                json!({"cmd": ["ls"], "cwd": 3}),
                "\"cwd\" must be a non-empty path",
            ),
            (
                json!({"cmd": ["ls"], "cwd": ""}),
                "\"cwd\" must be a non-empty path",
            ),
            (json!({"cmd": ["ls"], "args": []}), "unknown field \"args\""),
        ] {
            let err = parse_payload(&bad).unwrap_err();
            assert!(err.starts_with("invalid exec payload: "), "{bad}: {err}");
            assert!(err.contains(says), "{bad}: {err:?} should say {says:?}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn a_tail_keeps_the_last_bytes_in_bounded_memory() {
        let mut tail = Tail::new(10);
        for _ in 0..1000 {
            tail.push(b"0123456");
            assert!(tail.buf.len() <= 20);
        }
        tail.push(b"end");
        assert_eq!(tail.text(100), "0123456end");
        assert_eq!(tail.text(3), "end");
        assert_eq!(tail.total, 7003);
        tail.push(&[b'x'; 50]);
        assert_eq!(tail.text(100), "x".repeat(10));
        let mut small = Tail::new(100);
        small.push(b"ab");
        assert_eq!(small.text(100), "ab");
    }

    #[test]
    fn a_tail_starts_on_a_character_boundary_and_keeps_notes_on_their_own_line() {
        let mut tail = Tail::new(4);
        tail.push("aé€".as_bytes()); // 1 + 2 + 3 bytes: the cut falls inside 'é'
        assert_eq!(tail.text(4), "€");
        let mut notes = Tail::new(100);
        notes.push(b"partial");
        notes.note("handover: note");
        assert_eq!(notes.text(100), "partial\nhandover: note\n");
        assert_eq!(notes.total, 7, "notes are not the child's bytes");
    }

    #[test]
    fn lines_are_split_and_over_long_ones_skipped_without_buffering_them() {
        let mut splitter = LineSplitter::new(8);
        let mut lines = Vec::new();
        splitter.feed(b"{\"i\":1}\n{\"i\"", &mut lines);
        splitter.feed(b":2}\n0123456789", &mut lines);
        assert!(splitter.buf.is_empty(), "an over-long line is not kept");
        splitter.feed(b"abc\n\nlast", &mut lines);
        lines.extend(splitter.finish());
        assert_eq!(
            lines,
            vec![
                Line::Complete(b"{\"i\":1}".to_vec()),
                Line::Complete(b"{\"i\":2}".to_vec()),
                Line::TooLong(13),
                Line::Complete(Vec::new()),
                Line::Complete(b"last".to_vec()),
            ]
        );
        assert_eq!(splitter.finish(), None);
    }

    #[test]
    fn checkpoint_lines_must_be_json_values() {
        assert_eq!(
            parse_checkpoint_line(b" {\"i\": 3}\r").unwrap(),
            Some(json!({"i": 3}))
        );
        assert_eq!(parse_checkpoint_line(b"42").unwrap(), Some(json!(42)));
        assert_eq!(parse_checkpoint_line(b"  ").unwrap(), None);
        assert!(parse_checkpoint_line(b"null").is_err());
        assert!(parse_checkpoint_line(b"{\"i\":")
            .unwrap_err()
            .starts_with("not JSON"));
    }

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

    #[test]
    fn proc_stat_lines_give_state_and_group() {
        assert_eq!(
            parse_proc_stat("123 (a (weird) name) S 1 4567 4567 0 -1"),
            Some(('S', 4567))
        );
        assert_eq!(parse_proc_stat("123 (x) Z 1 99 99"), Some(('Z', 99)));
        assert_eq!(parse_proc_stat("garbage"), None);
    }
}
