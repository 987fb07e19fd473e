//! Rolling drains through the admin API (SPEC §10): drain every live worker (or the ones named), at
//! most N out at once with the budget kept in the store; withdraw a queued request; list the queue.

use super::api::{check_drain_fields, is_form, parse_body, peer, read_body};
use super::fleet_api::{drain_request, store_error};
use super::{error, ErrorBody, HttpState};
use crate::model::{Mode, QueuedDrain};
use crate::store::DrainQueued;
use crate::text;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

/// The largest budget accepted (the CLI's bound too).
const MAX_DRAINING: u32 = 10_000;

/// A rolling drain: which workers, how many out at once, and the drain's mode and reason.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RollingDrainBody {
    /// Worker ids or names; none means every live worker not already out.
    #[serde(default)]
    workers: Vec<String>,
    /// At most this many workers out (draining, or asked to) at once [default 1].
    #[schema(minimum = 1, maximum = 10000, nullable = false)]
    max_draining: Option<u32>,
    /// `handoff` (the default) or `finish`.
    #[schema(value_type = Option<Mode>, nullable = false)]
    mode: Option<String>,
    /// Why, recorded in each shutdown record: one line of at most 500 bytes.
    #[schema(nullable = false)]
    reason: Option<String>,
    /// Who asked, one line of at most 200 bytes [default: the client's address].
    #[schema(nullable = false)]
    requested_by: Option<String>,
    /// A form's CSRF token (browsers): checked by the auth layer before the handler runs.
    #[serde(default, rename = "csrf")]
    #[schema(nullable = false)]
    _csrf: Option<String>,
}

/// What a rolling drain did for each worker.
#[derive(Debug, Serialize, ToSchema)]
pub struct RollingDrainAnswer {
    /// The budget the requests were queued with.
    pub max_draining: u32,
    pub workers: Vec<RollingDrainWorker>,
}

/// One worker of a rolling drain.
#[derive(Debug, Serialize, ToSchema)]
pub struct RollingDrainWorker {
    pub worker_id: String,
    pub name: Option<String>,
    /// `started` (asked now), `queued` (waiting for the budget) or `already_out`.
    pub state: DrainQueued,
}

/// A queued drain request taken back.
#[derive(Debug, Serialize, ToSchema)]
pub struct Withdrawn {
    pub worker_id: String,
    pub withdrawn: bool,
}

/// A rolling drain: the workers named (or every live one not already out) are asked to drain
/// with at most `max_draining` out at once, the budget kept in the store; the others wait queued.
#[utoipa::path(
    post,
    path = "/fleet/drain",
    operation_id = "drain_fleet",
    tag = "fleet",
    request_body(
        description = "Optional: an empty body drains every live worker, one at a time, in handoff mode.",
        content(
            (Option<RollingDrainBody> = "application/json"),
            (Option<RollingDrainBody> = "application/x-www-form-urlencoded")
        )
    ),
    responses(
        (status = 202, description = "What became of each worker.", body = RollingDrainAnswer),
        (status = 303, description = "A form post: back to the fleet page `/fleet`."),
        (status = 400, description = "A malformed body, a budget outside 1..=10000, an unknown mode, or a name or reason that is not one line.", body = ErrorBody),
        (status = 404, description = "No such worker.", body = ErrorBody),
        (status = 409, description = "A named worker has stopped, or the name is that of more than one live worker.", body = ErrorBody),
        (status = 413, description = "The body is larger than 16 KiB.", body = ErrorBody),
        (status = 500, description = "The store failed in a way an operator must look at.", body = ErrorBody),
        (status = 503, description = "The store is down or slow.", body = ErrorBody),
    )
)]
pub async fn drain_all(State(state): State<Arc<HttpState>>, request: Request) -> Response {
    let peer = peer(&request);
    let (content_type, body) = match read_body(request).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    let body: RollingDrainBody = match parse_body(&content_type, &body) {
        Ok(body) => body,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let checked = (|| -> Result<(u32, Mode, Option<String>), String> {
        let max_draining = body.max_draining.unwrap_or(1);
        if !(1..=MAX_DRAINING).contains(&max_draining) {
            return Err(format!("max_draining must be between 1 and {MAX_DRAINING}"));
        }
        for worker in &body.workers {
            text::check_name("worker", worker)?;
        }
        let (mode, reason) = check_drain_fields(
            body.mode.as_deref(),
            body.reason.as_deref(),
            body.requested_by.as_deref(),
        )?;
        Ok((max_draining, mode, reason))
    })();
    let (max_draining, mode, reason) = match checked {
        Ok(checked) => checked,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let rows = match state.store.list_workers().await {
        Ok(rows) => rows,
        Err(err) => return store_error(err),
    };
    let targets = match crate::store::drain_targets(&rows, &body.workers) {
        Ok(targets) => targets,
        Err(err) => return store_error(err),
    };
    let request = drain_request(&state, mode, reason, body.requested_by.clone(), peer);
    let ids: Vec<String> = targets.iter().map(|t| t.id.clone()).collect();
    let answers = if ids.is_empty() {
        Vec::new()
    } else {
        match state.store.queue_drains(&ids, &request, max_draining).await {
            Ok(answers) => answers,
            Err(err) => return store_error(err),
        }
    };
    if is_form(&content_type) {
        return Redirect::to("/fleet").into_response();
    }
    let workers = answers
        .into_iter()
        .map(|(worker_id, state)| RollingDrainWorker {
            name: targets
                .iter()
                .find(|t| t.id == worker_id)
                .map(|t| t.name.clone()),
            worker_id,
            state,
        })
        .collect();
    let answer = RollingDrainAnswer {
        max_draining,
        workers,
    };
    (StatusCode::ACCEPTED, Json(answer)).into_response()
}

/// Withdraws a worker's queued (not yet started) rolling-drain request.
#[utoipa::path(
    post,
    path = "/fleet/{worker}/drain/cancel",
    operation_id = "withdraw_queued_drain",
    tag = "fleet",
    params(("worker" = String, Path, description = "The worker's id or name.")),
    responses(
        (status = 200, description = "Withdrawn.", body = Withdrawn),
        (status = 303, description = "A form post: back to the fleet page `/fleet`."),
        (status = 400, description = "A worker name that is not one line.", body = ErrorBody),
        (status = 404, description = "No such worker.", body = ErrorBody),
        (status = 409, description = "Nothing of that worker is queued (a drain in progress is cancelled on the worker: POST /drain/cancel).", body = ErrorBody),
        (status = 500, description = "The store failed in a way an operator must look at.", body = ErrorBody),
        (status = 503, description = "The store is down or slow.", body = ErrorBody),
    )
)]
pub async fn withdraw(
    State(state): State<Arc<HttpState>>,
    Path(worker): Path<String>,
    request: Request,
) -> Response {
    if let Err(message) = text::check_name("worker", &worker) {
        return error(StatusCode::BAD_REQUEST, message);
    }
    let content_type = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let rows = match state.store.list_workers().await {
        Ok(rows) => rows,
        Err(err) => return store_error(err),
    };
    let ids: Vec<String> = rows
        .iter()
        .filter(|w| w.id == worker || w.name == worker)
        .map(|w| w.id.clone())
        .collect();
    if ids.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            format!("no worker with id or name {worker:?}"),
        );
    }
    let withdrawn = match state.store.cancel_queued_drains(&ids).await {
        Ok(withdrawn) => withdrawn,
        Err(err) => return store_error(err),
    };
    if is_form(&content_type) {
        return Redirect::to("/fleet").into_response();
    }
    match withdrawn.first() {
        Some(id) => Json(Withdrawn {
            worker_id: id.clone(),
            withdrawn: true,
        })
        .into_response(),
        None => error(
            StatusCode::CONFLICT,
            format!("worker {worker:?} has no queued drain request (a drain in progress is cancelled on the worker itself: POST /drain/cancel there)"),
        ),
    }
}

/// The drain requests waiting for the rolling-drain budget, oldest first.
#[utoipa::path(
    get,
    path = "/api/drain-queue",
    operation_id = "list_drain_queue",
    tag = "fleet",
    responses(
        (status = 200, description = "The queue, oldest first.", body = Vec<QueuedDrain>),
        (status = 500, description = "The store failed in a way an operator must look at.", body = ErrorBody),
        (status = 503, description = "The store is down or slow.", body = ErrorBody),
    )
)]
pub async fn queue(State(state): State<Arc<HttpState>>) -> Response {
    match state.store.queued_drains().await {
        Ok(queued) => Json(queued).into_response(),
        Err(err) => store_error(err),
    }
}
