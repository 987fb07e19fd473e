//! Batches job completions: every completion waiting at the moment a write starts goes into that
//! one fenced statement, so throughput grows with load while a lone completion is written at once.

use crate::store::{Lease, SharedStore, StoreError, StoreResult};
use serde_json::Value;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

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

#[derive(Clone)]
pub struct Completer {
    queue: mpsc::UnboundedSender<Completion>,
}

impl Completer {
    /// Starts the batching task; it ends when every `Completer` clone is dropped.
    pub fn spawn(store: SharedStore) -> Completer {
        let (queue, receiver) = mpsc::unbounded_channel();
        tokio::spawn(write_batches(store, receiver));
        Completer { queue }
    }

    /// Completes a held job; Ok(false) means the lease was lost and nothing was written.
    pub async fn complete(&self, lease: Lease, result: Value) -> StoreResult<bool> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Completion {
                lease,
                result,
                reply,
            })
            .map_err(|_| StoreError::Invalid("completion writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Invalid("completion writer has stopped".into()))?
    }
}

async fn write_batches(store: SharedStore, mut receiver: mpsc::UnboundedReceiver<Completion>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if batch.len() < MAX_BATCH {
            let room = MAX_BATCH - batch.len();
            let _ = tokio::time::timeout(LINGER, receiver.recv_many(&mut batch, room)).await;
        }
        let (items, replies): (Vec<_>, Vec<_>) = batch
            .drain(..)
            .map(|c| ((c.lease, c.result), c.reply))
            .unzip();
        match store.complete(&items).await {
            Ok(applied) => {
                for (reply, applied) in replies.into_iter().zip(applied) {
                    let _ = reply.send(Ok(applied));
                }
            }
            Err(err) => {
                let transient = err.is_transient();
                let message = err.to_string();
                for reply in replies {
                    let copy = if transient {
                        StoreError::Unavailable(sqlx::Error::Protocol(message.clone()))
                    } else {
                        StoreError::Invalid(message.clone())
                    };
                    let _ = reply.send(Err(copy));
                }
            }
        }
    }
}
