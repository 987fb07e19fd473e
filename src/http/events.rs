//! `GET /api/events`: Server-Sent Events carrying the `/api/status` JSON — the current status at
//! connect, one event per phase change (never coalesced), and job updates (checkpoints, claims,
//! ends) at most ten a second. The stream ends after the `stopped` status, so the page learns how
//! the worker ended.

use super::api::status_json_of;
use super::HttpState;
use crate::lifecycle::{Phase, Status};
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

/// Job updates closer together than this are coalesced into one event.
const JOB_UPDATE_GAP: Duration = Duration::from_millis(100);

struct Follow {
    state: Arc<HttpState>,
    phases: broadcast::Receiver<Status>,
    jobs: watch::Receiver<u64>,
    /// Set until the first (current) status has been sent.
    first: bool,
    last_job_update: Instant,
    /// A job update is waiting to be sent (held back to at most one per `JOB_UPDATE_GAP`).
    jobs_changed: bool,
    finished: bool,
}

impl Follow {
    fn event(&mut self, status: &Status) -> Event {
        self.finished = status.phase == Phase::Stopped;
        self.jobs.borrow_and_update();
        Event::default()
            .event("status")
            .data(status_json_of(&self.state, status).to_string())
    }

    /// The next status to send, or None when the machine is gone. Queued phase changes always go
    /// first, so a job update can never skip one.
    async fn next_status(&mut self) -> Option<Status> {
        if std::mem::take(&mut self.first) {
            return Some(self.state.machine.status());
        }
        loop {
            match self.phases.try_recv() {
                Ok(status) => return Some(status),
                Err(broadcast::error::TryRecvError::Lagged(_)) => {
                    return Some(self.state.machine.status())
                }
                Err(broadcast::error::TryRecvError::Closed) => return None,
                Err(broadcast::error::TryRecvError::Empty) => {}
            }
            let due = self.last_job_update + JOB_UPDATE_GAP;
            if self.jobs_changed && Instant::now() >= due {
                self.jobs_changed = false;
                self.last_job_update = Instant::now();
                return Some(self.state.machine.status());
            }
            tokio::select! {
                change = self.phases.recv() => match change {
                    Ok(status) => return Some(status),
                    Err(broadcast::error::RecvError::Lagged(_)) => return Some(self.state.machine.status()),
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                changed = self.jobs.changed(), if !self.jobs_changed => {
                    if changed.is_err() {
                        return None;
                    }
                    self.jobs_changed = true;
                }
                _ = tokio::time::sleep_until(due), if self.jobs_changed => {}
            }
        }
    }
}

/// Server-Sent Events: `status` events, each the `/api/status` JSON ([`WorkerStatus`]) — the
/// current status at connect, one per phase change, and job updates at most ten a second. The
/// stream ends after the `stopped` status.
///
/// [`WorkerStatus`]: super::api::WorkerStatus
#[utoipa::path(
    get,
    path = "/api/events",
    operation_id = "follow_events",
    tag = "worker",
    responses(
        (status = 200, description = "An endless `text/event-stream`: `event: status`, `data:` a WorkerStatus as JSON on one line.", body = String, content_type = "text/event-stream"),
    )
)]
pub async fn events(
    State(state): State<Arc<HttpState>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let follow = Follow {
        phases: state.machine.follow(),
        jobs: state.jobs.subscribe(),
        state,
        first: true,
        last_job_update: Instant::now(),
        jobs_changed: false,
        finished: false,
    };
    let updates = stream::unfold(follow, |mut follow| async move {
        if follow.finished {
            return None;
        }
        let status = follow.next_status().await?;
        let event = follow.event(&status);
        Some((Ok(event), follow))
    });
    Sse::new(updates).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
