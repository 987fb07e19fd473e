//! How everything else talks to the phase machine: drain and cancel requests, signals, task
//! failures, and the published status. Cheap to clone; never blocks.

use super::status::Status;
use crate::model::{Mode, Phase, Task, Trigger};
use std::sync::{Arc, OnceLock};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// A request to drain.
#[derive(Clone, Debug)]
pub struct DrainOrder {
    /// What asked for the drain.
    pub trigger: Trigger,
    /// Hand jobs back at once (`handoff`) or let them finish first (`finish`).
    pub mode: Mode,
    /// Who asked, when known (shown on the pages and in the shutdown record).
    pub requested_by: Option<String>,
    /// Why, in the requester's words.
    pub reason: Option<String>,
}

/// The machine's answer to a drain request.
#[derive(Clone, Debug)]
pub enum DrainAnswer {
    /// This request started the drain.
    Started(Status),
    /// A drain was already under way; nothing new was started.
    AlreadyShuttingDown(Status),
}

/// Why a drain could not be cancelled.
#[derive(Debug, thiserror::Error)]
pub enum CancelRefused {
    /// The worker is not draining.
    #[error("no drain is in progress")]
    NotDraining,
    /// Drains started by signals or a failed task cannot be cancelled.
    #[error("a drain started by {0} cannot be cancelled")]
    NotCancellable(Trigger),
    /// The drain has gone past `draining`.
    #[error("the drain is already in {0}; only a drain still in draining can be cancelled")]
    TooLate(Phase),
}

pub(super) enum Command {
    Drain {
        order: DrainOrder,
        reply: Option<oneshot::Sender<DrainAnswer>>,
    },
    Cancel {
        reply: oneshot::Sender<Result<Status, CancelRefused>>,
    },
}

/// How callers talk to the machine; cheap to clone.
#[derive(Clone)]
pub struct MachineHandle {
    pub(super) commands: mpsc::UnboundedSender<Command>,
    pub(super) status: watch::Receiver<Status>,
    pub(super) changes: broadcast::Sender<Status>,
    /// How many signals were delivered, for waits after `stopped` that a signal must cut short.
    pub(super) signals: Arc<watch::Sender<u64>>,
    /// The first essential task that failed: from that moment the worker is not ready.
    pub(super) failure: Arc<OnceLock<Task>>,
}

impl MachineHandle {
    /// The latest published status.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.status.borrow().phase
    }

    /// A receiver of the latest status (intermediate ones may be skipped).
    pub fn subscribe(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// A receiver of every status change, in order (lagging far behind skips some).
    pub fn follow(&self) -> broadcast::Receiver<Status> {
        self.changes.subscribe()
    }

    /// Delivers a signal; never blocks and never drops one.
    pub fn signal(&self, trigger: Trigger) {
        self.signals.send_modify(|count| *count += 1);
        let order = DrainOrder {
            trigger,
            mode: Mode::Handoff,
            requested_by: None,
            reason: Some(format!("{trigger} received")),
        };
        let _ = self.commands.send(Command::Drain { order, reply: None });
    }

    /// Asks for a drain without waiting for the answer (a remote request picked up by the
    /// heartbeat, which must not wait on the machine).
    pub fn request(&self, order: DrainOrder) {
        let _ = self.commands.send(Command::Drain { order, reply: None });
    }

    /// An essential task failed: the worker stops being ready at once and drains with trigger
    /// `internal` (a drain already under way goes on as it was).
    pub fn fail(&self, task: Task, why: &str) {
        let _ = self.failure.set(task);
        self.request(DrainOrder {
            trigger: Trigger::Internal,
            mode: Mode::Handoff,
            requested_by: None,
            reason: Some(format!("task {task} {why}")),
        });
    }

    /// The first essential task that failed, if any did.
    pub fn failed_task(&self) -> Option<Task> {
        self.failure.get().copied()
    }

    /// Watches the count of signals delivered (it changes with each one, after `stopped` too).
    pub fn signals(&self) -> watch::Receiver<u64> {
        self.signals.subscribe()
    }

    /// Asks for a drain; idempotent while one is under way.
    pub async fn drain(&self, order: DrainOrder) -> DrainAnswer {
        let (reply, answer) = oneshot::channel();
        let sent = self.commands.send(Command::Drain {
            order,
            reply: Some(reply),
        });
        match (sent, answer.await) {
            (Ok(()), Ok(answer)) => answer,
            _ => DrainAnswer::AlreadyShuttingDown(self.status()),
        }
    }

    /// Cancels an http/remote drain that is still in `draining`.
    pub async fn cancel(&self) -> Result<Status, CancelRefused> {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::Cancel { reply }).is_err() {
            return Err(CancelRefused::TooLate(self.phase()));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(CancelRefused::TooLate(self.phase())))
    }
}
