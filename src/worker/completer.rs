//! Batches job completions: every completion waiting at the moment a write starts goes into that
//! one fenced statement, so throughput grows with load while a lone completion is written at once.

use crate::model::Lease;
use crate::store::{SharedStore, StoreResult};
use serde_json::Value;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// At most this many completions share one statement.
const MAX_BATCH: usize = 512;
/// When a batch is not full, wait this long for more: every statement is a commit (an fsync on
/// PostgreSQL), so under load fuller batches are worth far more than this latency.
const LINGER: Duration = Duration::from_millis(1);

struct Completion {
    lease: Lease,
    result: Value,
    reply: oneshot::Sender<StoreResult<bool>>,
}

/// The runners' side: hands a completion to the writer task.
#[derive(Clone)]
pub struct Completer {
    store: SharedStore,
    queue: mpsc::UnboundedSender<Completion>,
}

/// The writer task's side: run it under the supervisor.
pub struct CompletionWriter {
    store: SharedStore,
    receiver: mpsc::UnboundedReceiver<Completion>,
}

impl Completer {
    pub fn new(store: SharedStore) -> (Completer, CompletionWriter) {
        let (queue, receiver) = mpsc::unbounded_channel();
        let writer = CompletionWriter {
            store: store.clone(),
            receiver,
        };
        (Completer { store, queue }, writer)
    }

    /// Completes a held job; Ok(false) means the lease was lost and nothing was written. Should
    /// the writer task be gone, the completion is written on its own.
    pub async fn complete(&self, lease: Lease, result: Value) -> StoreResult<bool> {
        let (reply, answer) = oneshot::channel();
        let completion = Completion {
            lease,
            result,
            reply,
        };
        let completion = match self.queue.send(completion) {
            Ok(()) => match answer.await {
                Ok(written) => return written,
                Err(_) => None,
            },
            Err(unsent) => Some(unsent.0),
        };
        match completion {
            Some(Completion { lease, result, .. }) => self.write_alone(lease, result).await,
            // The writer took it and died before answering: nothing says whether it committed,
            // and the fence makes a second try safe (a committed one answers "lost").
            None => Err(crate::store::StoreError::Unavailable(
                "the completion writer stopped before answering".into(),
            )),
        }
    }

    async fn write_alone(&self, lease: Lease, result: Value) -> StoreResult<bool> {
        let applied = self.store.complete(&[(lease, result)]).await?;
        Ok(applied.first() == Some(&true))
    }
}

impl CompletionWriter {
    /// Writes batches until `stop` is cancelled, then writes what is still queued and returns.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let received = tokio::select! {
                received = self.receiver.recv_many(&mut batch, MAX_BATCH) => received,
                _ = stop.cancelled() => {
                    self.receiver.close();
                    self.receiver.recv_many(&mut batch, MAX_BATCH).await
                }
            };
            if received == 0 {
                return;
            }
            if batch.len() < MAX_BATCH && !stop.is_cancelled() {
                let room = MAX_BATCH - batch.len();
                let _ =
                    tokio::time::timeout(LINGER, self.receiver.recv_many(&mut batch, room)).await;
            }
            // `stop` comes once every attempt has ended: a write it interrupts (one waiting on a
            // store that is down) has nobody left to answer, and the fence keeps it harmless.
            // What was queued when `stop` came is still written.
            let interruptible = !stop.is_cancelled();
            tokio::select! {
                _ = self.write(&mut batch) => {}
                _ = stop.cancelled(), if interruptible => {
                    tracing::warn!("a completion write was still waiting on the store at exit; abandoned");
                    return;
                }
            }
        }
    }

    async fn write(&self, batch: &mut Vec<Completion>) {
        let (items, replies): (Vec<_>, Vec<_>) = batch
            .drain(..)
            .map(|c| ((c.lease, c.result), c.reply))
            .unzip();
        match self.store.complete(&items).await {
            Ok(applied) => {
                for (reply, applied) in replies.into_iter().zip(applied) {
                    let _ = reply.send(Ok(applied));
                }
            }
            Err(err) => {
                for reply in replies {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }
}
