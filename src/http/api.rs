//! The admin JSON API: `/api/status`, `POST /drain`, `POST /drain/cancel`.

use super::openapi::InFlightJob;
use super::{error, ErrorBody, HttpState};
use crate::jobs::inflight::InFlightView;
use crate::lifecycle::{DrainAnswer, DrainOrder, Mode, Status, Trigger};
use crate::model::Task;
use crate::text;
use crate::worker::drain_cost::DrainForecast;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use utoipa::ToSchema;

/// Largest drain request body accepted.
const MAX_BODY: usize = 16 * 1024;

/// This worker now: the status JSON of `GET /api/status`, of each `/api/events` event, and of the
/// answer to a drain or its cancel.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct WorkerStatus {
    pub worker_id: String,
    pub name: String,
    /// The worker's version.
    pub version: String,
    /// Ready for work: in `running`, no essential task failed, the store reachable.
    pub ready: bool,
    /// The store answered the worker's last health check.
    pub store_up: bool,
    /// The essential task whose failure started an `internal` drain.
    pub failed_task: Option<Task>,
    /// The phase, the drain under way (trigger, mode, who, why, deadline) and the phases lived.
    #[serde(flatten)]
    pub status: Status,
    /// The jobs this worker holds: running, parked at a checkpoint, or claimed ahead.
    #[schema(value_type = Vec<InFlightJob>)]
    pub in_flight: Vec<InFlightView>,
    /// Jobs claimed ahead and waiting for a free slot.
    pub held: usize,
    /// What a drain started now would cost: `drain_eta_seconds`, `work_at_risk_seconds` and the
    /// warning when a drain could outlast `--grace` (SPEC §10).
    #[serde(flatten)]
    pub forecast: DrainForecast,
    /// The worker's clock when this was read.
    pub now: DateTime<Utc>,
}

pub fn status_json(state: &HttpState) -> Value {
    status_json_of(state, &state.machine.status())
}

/// The status JSON for a given machine status (with the current jobs and readiness).
pub fn status_json_of(state: &HttpState, status: &Status) -> Value {
    serde_json::to_value(worker_status(state, status)).unwrap_or_default()
}

/// The status for a given machine status (with the current jobs and readiness).
pub fn worker_status(state: &HttpState, status: &Status) -> WorkerStatus {
    let (in_flight, estimate) = state.jobs.views_with_estimate();
    WorkerStatus {
        worker_id: state.worker_id.clone(),
        name: state.worker_name.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        ready: state.is_ready_in(status.phase),
        store_up: state.health.is_up(),
        failed_task: state.machine.failed_task(),
        status: status.clone(),
        in_flight,
        held: state.jobs.held(),
        forecast: state.drain_times.forecast_of(estimate),
        now: Utc::now(),
    }
}

/// This worker's status: its phase, the drain under way, its jobs.
#[utoipa::path(
    get,
    path = "/api/status",
    operation_id = "get_status",
    tag = "worker",
    responses((status = 200, description = "This worker now.", body = WorkerStatus))
)]
pub async fn status(State(state): State<Arc<HttpState>>) -> Json<WorkerStatus> {
    Json(worker_status(&state, &state.machine.status()))
}

/// A drain request: `POST /drain` (this worker) or `POST /fleet/{worker}/drain` (another), as
/// JSON or a form; every field is optional, and an empty body drains in `handoff` mode.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct DrainBody {
    /// `handoff` (checkpoint and hand jobs back now, the default) or `finish` (let them complete
    /// within the grace period).
    #[schema(value_type = Option<Mode>, nullable = false)]
    pub mode: Option<String>,
    /// Why, recorded in the shutdown record: one line of at most 500 bytes (UTF-8).
    #[schema(nullable = false)]
    pub reason: Option<String>,
    /// Who asked, one line of at most 200 bytes [default: the client's address].
    #[schema(nullable = false)]
    pub requested_by: Option<String>,
    /// A form's CSRF token (browsers): checked by the auth layer before the handler runs.
    #[serde(default, rename = "csrf")]
    #[schema(nullable = false)]
    _csrf: Option<String>,
}

/// Parses a JSON or form body (empty means all defaults).
pub(super) fn parse_body<T: serde::de::DeserializeOwned + Default>(
    content_type: &str,
    body: &[u8],
) -> Result<T, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    if content_type.starts_with("application/json") {
        serde_json::from_slice(body).map_err(|e| format!("malformed JSON body: {e}"))
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        serde_urlencoded::from_bytes(body).map_err(|e| format!("malformed form body: {e}"))
    } else {
        Err(format!(
            "unsupported content type {content_type:?}; send application/json or a form"
        ))
    }
}

fn parse_drain_body(content_type: &str, body: &[u8]) -> Result<DrainBody, String> {
    parse_body(content_type, body)
}

/// Reads a request's content type (lowercased) and body (at most `MAX_BODY` bytes).
pub(super) async fn read_body(request: Request) -> Result<(String, axum::body::Bytes), Response> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    match axum::body::to_bytes(request.into_body(), MAX_BODY).await {
        Ok(body) => Ok((content_type, body)),
        Err(_) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {MAX_BODY} bytes"),
        )),
    }
}

/// Checks a drain body's mode, reason and who asked (one-line fields within the limits of
/// [`crate::text`]); the error is the message for a 400.
pub(super) fn drain_mode_and_reason(body: &DrainBody) -> Result<(Mode, Option<String>), String> {
    check_drain_fields(
        body.mode.as_deref(),
        body.reason.as_deref(),
        body.requested_by.as_deref(),
    )
}

/// The fields every drain request shares: the mode (default handoff), a one-line reason (blank
/// means none) and who asked.
pub(super) fn check_drain_fields(
    mode: Option<&str>,
    reason: Option<&str>,
    requested_by: Option<&str>,
) -> Result<(Mode, Option<String>), String> {
    let mode = mode
        .map(str::parse::<Mode>)
        .transpose()?
        .unwrap_or(Mode::Handoff);
    if let Some(reason) = reason {
        text::check_reason(reason)?;
    }
    if let Some(who) = requested_by {
        text::check_name("requested_by", who)?;
    }
    let reason = reason.filter(|r| !r.trim().is_empty()).map(str::to_string);
    Ok((mode, reason))
}

/// The peer's address, when the server was started with connect info.
pub(super) fn peer(request: &Request) -> Option<String> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.to_string())
}

/// Starts this worker's drain.
///
/// 202 with the status when it started one, 200 when a drain was already under way; a form post
/// (the worker page) is sent back to `/` instead.
#[utoipa::path(
    post,
    path = "/drain",
    operation_id = "drain",
    tag = "worker",
    request_body(
        description = "Optional: an empty body drains in handoff mode.",
        content(
            (Option<DrainBody> = "application/json"),
            (Option<DrainBody> = "application/x-www-form-urlencoded")
        )
    ),
    responses(
        (status = 202, description = "The drain started.", body = WorkerStatus),
        (status = 200, description = "A drain was already under way.", body = WorkerStatus),
        (status = 303, description = "A form post: back to the worker page `/`."),
        (status = 400, description = "A malformed body, an unknown mode, or a reason or name that is not one line.", body = ErrorBody),
        (status = 413, description = "The body is larger than 16 KiB.", body = ErrorBody),
    )
)]
pub async fn drain(State(state): State<Arc<HttpState>>, request: Request) -> Response {
    let peer = peer(&request);
    let (content_type, body) = match read_body(request).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    let body = match parse_drain_body(&content_type, &body) {
        Ok(body) => body,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let (mode, reason) = match drain_mode_and_reason(&body) {
        Ok(checked) => checked,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let from_page = is_form(&content_type);
    let requested_by = body
        .requested_by
        .filter(|who| !who.trim().is_empty())
        .or(peer.map(|peer| {
            if from_page {
                format!("admin page, browser at {peer}")
            } else {
                format!("http client {peer}")
            }
        }));
    let answer = start_drain(&state, mode, reason, requested_by).await;
    if from_page {
        return Redirect::to("/").into_response();
    }
    answer
}

/// A browser form post (answered with a redirect back to its page rather than JSON).
pub(super) fn is_form(content_type: &str) -> bool {
    content_type.starts_with("application/x-www-form-urlencoded")
}

/// Runs this worker's machine with trigger `http`: 202 if it started a drain, 200 if one was under way.
pub(super) async fn start_drain(
    state: &HttpState,
    mode: Mode,
    reason: Option<String>,
    requested_by: Option<String>,
) -> Response {
    let order = DrainOrder {
        trigger: Trigger::Http,
        mode,
        requested_by,
        reason,
    };
    match state.machine.drain(order).await {
        DrainAnswer::Started(_) => (StatusCode::ACCEPTED, Json(status_json(state))).into_response(),
        DrainAnswer::AlreadyShuttingDown(_) => {
            (StatusCode::OK, Json(status_json(state))).into_response()
        }
    }
}

/// Cancels this worker's drain: one started over HTTP or through the store, still in `draining`.
#[utoipa::path(
    post,
    path = "/drain/cancel",
    operation_id = "cancel_drain",
    tag = "worker",
    responses(
        (status = 200, description = "Cancelled: the worker is `running` again.", body = WorkerStatus),
        (status = 303, description = "A form post: back to the worker page `/`."),
        (status = 409, description = "Nothing to cancel: no drain, a signal's or an internal one, or past `draining`.", body = ErrorBody),
    )
)]
pub async fn cancel_drain(State(state): State<Arc<HttpState>>, request: Request) -> Response {
    let from_page = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_form);
    let cancelled = match state.machine.cancel().await {
        Ok(_) => true,
        // Not draining: a rolling drain's request for this worker may still wait in the queue.
        Err(refused) => match state
            .store
            .cancel_queued_drains(std::slice::from_ref(&state.worker_id))
            .await
        {
            Ok(withdrawn) if !withdrawn.is_empty() => true,
            _ => return error(StatusCode::CONFLICT, refused.to_string()),
        },
    };
    match cancelled {
        true if from_page => Redirect::to("/").into_response(),
        _ => (StatusCode::OK, Json(status_json(&state))).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_bodies_parse_from_json_form_or_nothing() {
        let json = parse_drain_body(
            "application/json",
            br#"{"mode":"finish","reason":"deploy"}"#,
        )
        .unwrap();
        assert_eq!(json.mode.as_deref(), Some("finish"));
        let form = parse_drain_body(
            "application/x-www-form-urlencoded",
            b"mode=handoff&reason=x",
        )
        .unwrap();
        assert_eq!(form.reason.as_deref(), Some("x"));
        assert!(parse_drain_body("", b"").unwrap().mode.is_none());
    }

    #[test]
    fn malformed_drain_bodies_are_refused_with_a_reason() {
        assert!(parse_drain_body("application/json", b"{mode:")
            .unwrap_err()
            .contains("malformed JSON"));
        assert!(parse_drain_body("application/json", br#"{"colour":"red"}"#)
            .unwrap_err()
            .contains("unknown field"));
        assert!(parse_drain_body("text/plain", b"drain please")
            .unwrap_err()
            .contains("unsupported content type"));
    }
}
