//! Rolling drains through the admin API (SPEC §10): drain every live worker (or the ones named), at
//! most N out at once with the budget kept in the store; withdraw a queued request; list the queue.

use super::api::{check_drain_fields, is_form, parse_body, peer, read_body};
use super::fleet_api::{drain_request, store_error};
use super::{error, HttpState};
use crate::model::Mode;
use crate::store::DrainQueued;
use crate::text;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// The largest budget accepted (the CLI's bound too).
const MAX_DRAINING: u32 = 10_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RollingDrainBody {
    /// Worker ids or names; none means every live worker not already out.
    #[serde(default)]
    workers: Vec<String>,
    /// At most this many out at once (default 1).
    max_draining: Option<u32>,
    mode: Option<String>,
    reason: Option<String>,
    requested_by: Option<String>,
    /// A form's CSRF token: checked by the auth layer before the handler runs.
    #[serde(default, rename = "csrf")]
    _csrf: Option<String>,
}

/// `POST /fleet/drain`: `{"workers"?, "max_draining"?, "mode"?, "reason"?, "requested_by"?}` →
/// 202 `{"max_draining", "workers": [{"worker_id", "name", "state"}]}` with `state` one of
/// `started`, `queued`, `already_out`; a form is redirected to the fleet page.
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
    let workers: Vec<_> = answers
        .iter()
        .map(|(id, answer)| {
            let name = targets.iter().find(|t| t.id == *id).map(|t| t.name.clone());
            let state = match answer {
                DrainQueued::Started => "started",
                DrainQueued::Queued => "queued",
                DrainQueued::AlreadyOut => "already_out",
            };
            json!({"worker_id": id, "name": name, "state": state})
        })
        .collect();
    (
        StatusCode::ACCEPTED,
        Json(json!({"max_draining": max_draining, "workers": workers})),
    )
        .into_response()
}

/// `POST /fleet/{worker}/drain/cancel`: withdraws that worker's queued drain request → 200
/// `{"worker_id", "withdrawn": true}`; 409 when nothing of it is queued.
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
        Some(id) => Json(json!({"worker_id": id, "withdrawn": true})).into_response(),
        None => error(
            StatusCode::CONFLICT,
            format!("worker {worker:?} has no queued drain request (a drain in progress is cancelled on the worker itself: POST /drain/cancel there)"),
        ),
    }
}

/// `GET /api/drain-queue`: the drain requests waiting for the rolling-drain budget, oldest first.
pub async fn queue(State(state): State<Arc<HttpState>>) -> Response {
    match state.store.queued_drains().await {
        Ok(queued) => Json(queued).into_response(),
        Err(err) => store_error(err),
    }
}
