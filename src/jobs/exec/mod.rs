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
//! - Children are spawned through [`crate::process::spawn`], which registers them with
//!   [`crate::process::spawn_registered`], so that when the worker is PID 1 its orphan sweep
//!   never reaps one before tokio has collected its exit status.
//!
//! Unix only. PDEATHSIG, `close_range` and the `/proc` scan are Linux features; elsewhere those
//! guarantees are lost, not correctness.
//!
//! # Where it lives
//! - `payload.rs`: [`ExecPayload`] and [`parse_payload`], the payload's shape and its errors.
//! - `protocol.rs`: the output tails and the fd-3 checkpoint lines.
//! - `handler.rs`: [`ExecHandler`], how an attempt ended, and the child's command.
//! - The process machinery (spawner thread, groups, PDEATHSIG, `handover-watch`, the PID-1
//!   reaper, `/proc`) is [`crate::process`], a layer below the jobs.

mod handler;
mod payload;
mod protocol;

pub use crate::process::GROUP_EXIT_WAIT;
pub use handler::{ExecHandler, CHECKPOINT_FD, ERROR_TAIL, EXIT_TEMPFAIL};
pub use payload::{parse_payload, ExecPayload};
pub use protocol::{MAX_CHECKPOINT_LINE, OUTPUT_TAIL};
