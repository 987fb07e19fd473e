//! Every long-lived task of a worker runs here, by name, with the token that tells it to stop. A
//! task that panics, fails, or ends before its token was cancelled is an internal failure: it is
//! logged and counted ([`TaskFailed`]), and the machine drains with trigger `internal`. At exit
//! every task is told to stop and joined; nothing is left detached.

use crate::lifecycle::MachineHandle;
use crate::model::Task;
use crate::telemetry::events::TaskFailed;
use crate::telemetry::Metrics;
use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::{Id, JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

/// What a task's return value says about how it ended.
pub trait TaskExit: Send + 'static {
    /// Why the task failed, if its value says it did.
    fn failure(self) -> Option<String>;
}

impl TaskExit for () {
    fn failure(self) -> Option<String> {
        None
    }
}

impl<E: Display + Send + 'static> TaskExit for Result<(), E> {
    fn failure(self) -> Option<String> {
        self.err().map(|err| format!("failed: {err}"))
    }
}

struct Running {
    task: Task,
    stop: CancellationToken,
}

pub struct Supervisor {
    tasks: JoinSet<Option<String>>,
    running: HashMap<Id, Running>,
    failed: Vec<Task>,
    metrics: Arc<Metrics>,
    machine: MachineHandle,
}

impl Supervisor {
    pub fn new(metrics: Arc<Metrics>, machine: MachineHandle) -> Supervisor {
        Supervisor {
            tasks: JoinSet::new(),
            running: HashMap::new(),
            failed: Vec::new(),
            metrics,
            machine,
        }
    }

    /// Runs `future` as the essential task `task`, which may end only once `stop` is cancelled.
    pub fn spawn<F>(&mut self, task: Task, stop: &CancellationToken, future: F)
    where
        F: Future + Send + 'static,
        F::Output: TaskExit,
    {
        let handle = self.tasks.spawn(async move { future.await.failure() });
        let stop = stop.clone();
        self.running.insert(handle.id(), Running { task, stop });
    }

    /// Judges tasks as they end; never returns while any task runs (use it in a `select!`).
    pub async fn watch(&mut self) {
        while let Some(ended) = self.tasks.join_next_with_id().await {
            self.judge(ended);
        }
        std::future::pending::<()>().await
    }

    /// Cancels `root` (every task's token descends from it), joins every task within `budget`,
    /// aborts any still running then, and returns the tasks that failed over the whole run.
    pub async fn shut_down(mut self, root: &CancellationToken, budget: Duration) -> Vec<Task> {
        root.cancel();
        let joined = tokio::time::timeout(budget, async {
            while let Some(ended) = self.tasks.join_next_with_id().await {
                self.judge(ended);
            }
        })
        .await;
        if joined.is_err() {
            let late: Vec<Task> = self.running.values().map(|r| r.task).collect();
            tracing::error!(tasks = ?late, ?budget, "tasks did not stop in time; aborting them");
            self.tasks.shutdown().await;
        }
        self.failed
    }

    fn judge(&mut self, ended: Result<(Id, Option<String>), JoinError>) {
        let (id, failure, panicked) = match ended {
            Ok((id, failure)) => (id, failure, false),
            Err(err) if err.is_panic() => {
                let id = err.id();
                let text = crate::text::panic_message(err.into_panic());
                (id, Some(format!("panicked: {text}")), true)
            }
            Err(err) => (err.id(), None, false),
        };
        let Some(Running { task, stop }) = self.running.remove(&id) else {
            return;
        };
        tracing::debug!(task = %task, "task ended");
        let why = match failure {
            // An error while stopping is the stop racing the task's own work, not a failure; a
            // panic is a bug whenever it happens.
            Some(why) if stop.is_cancelled() && !panicked => {
                tracing::warn!(task = %task, why, "task ended with an error while stopping");
                None
            }
            Some(why) => Some(why),
            None => (!stop.is_cancelled()).then(|| "ended unexpectedly".to_string()),
        };
        if let Some(why) = why {
            TaskFailed { task, why: &why }.emit(&self.metrics);
            self.machine.fail(task, &why);
            self.failed.push(task);
        }
    }
}
