//! Admin JSON views of the whole store: workers, shutdown records, jobs (list and submit), and
//! draining another worker through the store.

use super::api::{drain_mode_and_reason, is_form, parse_body, peer, read_body, DrainBody};
use super::{error, ErrorBody, HttpState};
use crate::jobs::validate_kind;
use crate::model::{Job, JobId, ShutdownRecord, WorkerRow};
use crate::store::{DrainRequest, JobFilter, JobStatus, NewJob, StoreError, DEFAULT_MAX_ATTEMPTS};
use crate::text;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

/// Jobs listed per call unless `limit` says otherwise (at most `MAX_LIST`).
const DEFAULT_LIST: i64 = 100;
/// Shutdown records listed per call unless `limit` says otherwise (at most `MAX_LIST`).
const DEFAULT_SHUTDOWNS: i64 = 50;
const MAX_LIST: i64 = 1000;
/// Jobs one POST may submit.
const MAX_SUBMIT: u32 = 10_000;

/// Maps a store failure to an HTTP answer.
pub(super) fn store_error(err: StoreError) -> Response {
    match err {
        StoreError::NotFound(message) => error(StatusCode::NOT_FOUND, message),
        StoreError::Conflict(message) => error(StatusCode::CONFLICT, message),
        StoreError::Invalid(message) => error(StatusCode::BAD_REQUEST, message),
        other if other.store_is_down() => error(StatusCode::SERVICE_UNAVAILABLE, other.to_string()),
        other => error(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

/// A listing's `limit`: `default` when absent; outside 1..=`MAX_LIST` the message for a 400.
fn list_limit(limit: Option<i64>, default: i64) -> Result<i64, String> {
    let limit = limit.unwrap_or(default);
    if (1..=MAX_LIST).contains(&limit) {
        Ok(limit)
    } else {
        Err(format!("limit must be between 1 and {MAX_LIST}"))
    }
}

/// Every worker in the store, live or stopped, with any drain request waiting for it.
#[utoipa::path(
    get,
    path = "/api/workers",
    operation_id = "list_workers",
    tag = "fleet",
    responses(
        (status = 200, description = "The worker rows.", body = Vec<WorkerRow>),
        (status = 500, description = "The store failed in a way an operator must look at.", body = ErrorBody),
        (status = 503, description = "The store is down or slow.", body = ErrorBody),
    )
)]
pub async fn workers(State(state): State<Arc<HttpState>>) -> Response {
    match state.store.list_workers().await {
        Ok(workers) => Json(workers).into_response(),
        Err(err) => store_error(err),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ShutdownQuery {
    /// At most this many records, newest first [default: 50].
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// The records shutdowns left (SPEC §4), newest first.
#[utoipa::path(
    get,
    path = "/api/shutdowns",
    operation_id = "list_shutdowns",
    tag = "fleet",
    params(ShutdownQuery),
    responses(
        (status = 200, description = "The shutdown records.", body = Vec<ShutdownRecord>),
        (status = 400, description = "A limit outside 1..=1000, or an unknown parameter.", body = ErrorBody),
        (status = 500, description = "The store failed in a way an operator must look at.", body = ErrorBody),
        (status = 503, description = "The store is down or slow.", body = ErrorBody),
    )
)]
pub async fn shutdowns(
    State(state): State<Arc<HttpState>>,
    Query(query): Query<ShutdownQuery>,
) -> Response {
    let limit = match list_limit(query.limit, DEFAULT_SHUTDOWNS) {
        Ok(limit) => limit,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    match state.store.list_shutdowns(limit).await {
        Ok(records) => Json(records).into_response(),
        Err(err) => store_error(err),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct JobsQuery {
    /// Only jobs with this status.
    #[param(value_type = Option<JobStatus>)]
    status: Option<String>,
    /// At most this many jobs [default: 100].
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// Jobs in the store, oldest first.
#[utoipa::path(
    get,
    path = "/api/jobs",
    operation_id = "list_jobs",
    tag = "jobs",
    params(JobsQuery),
    responses(
        (status = 200, description = "The jobs.", body = Vec<Job>),
        (status = 400, description = "An unknown status, a limit outside 1..=1000, or an unknown parameter.", body = ErrorBody),
        (status = 500, description = "The store failed in a way an operator must look at.", body = ErrorBody),
        (status = 503, description = "The store is down or slow.", body = ErrorBody),
    )
)]
pub async fn jobs(State(state): State<Arc<HttpState>>, Query(query): Query<JobsQuery>) -> Response {
    let status = match query
        .status
        .as_deref()
        .map(str::parse::<JobStatus>)
        .transpose()
    {
        Ok(status) => status,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let limit = match list_limit(query.limit, DEFAULT_LIST) {
        Ok(limit) => limit,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    match state
        .store
        .list_jobs(&JobFilter {
            status,
            limit: Some(limit),
        })
        .await
    {
        Ok(jobs) => Json(jobs).into_response(),
        Err(err) => store_error(err),
    }
}

/// Jobs to submit: `count` copies of one job.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"kind": "noop", "payload": {}, "priority": 0, "count": 1}))]
pub struct SubmitBody {
    /// The job kind: `demo`, `noop`, `exec`, or a kind some worker of this store registers.
    #[schema(value_type = String, required = true, pattern = "^[A-Za-z0-9_.-]{1,64}$")]
    kind: Option<String>,
    /// The job's input, checked by its kind's handler when this worker runs that kind
    /// [default: `{}`]. No string in it may hold a control character other than tab, newline and
    /// carriage return.
    payload: Option<Value>,
    /// Attempts before a failing job becomes `dead` [default: 5].
    #[schema(minimum = 1, maximum = 1000, nullable = false)]
    max_attempts: Option<i32>,
    /// Higher runs first [default: 0].
    #[schema(nullable = false)]
    priority: Option<i32>,
    /// Copies to submit [default: 1].
    #[schema(minimum = 1, maximum = 10000, nullable = false)]
    count: Option<u32>,
    /// Submit a kind that no worker of this store serves yet.
    #[schema(nullable = false)]
    allow_unknown_kind: Option<bool>,
}

/// The ids of the jobs a submit created, in order.
#[derive(Debug, Serialize, ToSchema)]
pub struct Submitted {
    pub ids: Vec<JobId>,
}

/// Submits jobs: `{"kind", "payload", "max_attempts", "priority", "count"}` → 201 `{"ids": [...]}`.
#[utoipa::path(
    post,
    path = "/api/jobs",
    operation_id = "submit_jobs",
    tag = "jobs",
    request_body(content = SubmitBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Submitted.", body = Submitted),
        (status = 400, description = "A malformed body, a missing or invalid kind, a payload its handler refuses, or a number out of range.", body = ErrorBody),
        (status = 413, description = "The body is larger than 16 KiB.", body = ErrorBody),
        (status = 415, description = "The body is not application/json.", body = ErrorBody),
        (status = 500, description = "The store failed in a way an operator must look at.", body = ErrorBody),
        (status = 503, description = "The store is down or slow.", body = ErrorBody),
    )
)]
pub async fn submit(State(state): State<Arc<HttpState>>, request: Request) -> Response {
    let (content_type, body) = match read_body(request).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    if !content_type.starts_with("application/json") {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the job as application/json",
        );
    }
    let body: SubmitBody = match parse_body(&content_type, &body) {
        Ok(body) => body,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let Some(kind) = body.kind else {
        return error(StatusCode::BAD_REQUEST, "missing field `kind`");
    };
    if let Err(message) = validate_kind(&kind) {
        return error(StatusCode::BAD_REQUEST, message);
    }
    let payload = body.payload.unwrap_or_else(|| json!({}));
    if let Err(message) = text::check_payload(&payload) {
        return error(StatusCode::BAD_REQUEST, message);
    }
    match state.handlers.get(&kind) {
        Some(handler) => {
            if let Err(message) = handler.validate(&payload) {
                return error(StatusCode::BAD_REQUEST, message);
            }
        }
        None if body.allow_unknown_kind == Some(true) => {}
        None => match crate::jobs::unknown_kind(&state.store, &kind).await {
            Ok(None) => {}
            Ok(Some(message)) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "this worker runs no {kind:?} jobs and {message}; \"allow_unknown_kind\": true submits it anyway"
                    ),
                )
            }
            Err(err) => return store_error(err),
        },
    }
    let max_attempts = body.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
    if !(1..=1000).contains(&max_attempts) {
        return error(
            StatusCode::BAD_REQUEST,
            "max_attempts must be between 1 and 1000",
        );
    }
    let count = body.count.unwrap_or(1);
    if !(1..=MAX_SUBMIT).contains(&count) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("count must be between 1 and {MAX_SUBMIT}"),
        );
    }
    let job = NewJob {
        kind,
        payload,
        priority: body.priority.unwrap_or(0),
        max_attempts,
    };
    let jobs = vec![job; count as usize];
    match state.store.submit(&jobs).await {
        Ok(ids) => (StatusCode::CREATED, Json(Submitted { ids })).into_response(),
        Err(err) => store_error(err),
    }
}

/// Asks another worker (by id or name) to drain, through the store; 202 with its worker row.
///
/// The worker takes the request with its next heartbeat. A form post (the fleet page) is sent
/// back to `/fleet` instead.
#[utoipa::path(
    post,
    path = "/fleet/{worker}/drain",
    operation_id = "drain_worker",
    tag = "fleet",
    params(("worker" = String, Path, description = "The worker's id or name.")),
    request_body(
        description = "Optional: an empty body drains in handoff mode.",
        content(
            (Option<DrainBody> = "application/json"),
            (Option<DrainBody> = "application/x-www-form-urlencoded")
        )
    ),
    responses(
        (status = 202, description = "Requested: the worker's row, with its drain request.", body = WorkerRow),
        (status = 303, description = "A form post: back to the fleet page `/fleet`."),
        (status = 400, description = "A malformed body, an unknown mode, or a name or reason that is not one line.", body = ErrorBody),
        (status = 404, description = "No such worker.", body = ErrorBody),
        (status = 409, description = "The worker has stopped, or the name is that of more than one live worker.", body = ErrorBody),
        (status = 413, description = "The body is larger than 16 KiB.", body = ErrorBody),
        (status = 500, description = "The store failed in a way an operator must look at.", body = ErrorBody),
        (status = 503, description = "The store is down or slow.", body = ErrorBody),
    )
)]
pub async fn drain_other(
    State(state): State<Arc<HttpState>>,
    Path(worker): Path<String>,
    request: Request,
) -> Response {
    if let Err(message) = text::check_name("worker", &worker) {
        return error(StatusCode::BAD_REQUEST, message);
    }
    let peer = peer(&request);
    let (content_type, body) = match read_body(request).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    let body: DrainBody = match parse_body(&content_type, &body) {
        Ok(body) => body,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let (mode, reason) = match drain_mode_and_reason(&body) {
        Ok(checked) => checked,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let request = drain_request(&state, mode, reason, body.requested_by, peer);
    match state.store.request_drain(&worker, &request).await {
        Ok(_) if is_form(&content_type) => Redirect::to("/fleet").into_response(),
        Ok(row) => (StatusCode::ACCEPTED, Json(row)).into_response(),
        Err(err) => store_error(err),
    }
}

/// A drain request asked for through this worker's admin API: who asked defaults to this worker's
/// admin and the client's address.
pub(super) fn drain_request(
    state: &HttpState,
    mode: crate::model::Mode,
    reason: Option<String>,
    requested_by: Option<String>,
    peer: Option<String>,
) -> DrainRequest {
    let requested_by = requested_by
        .filter(|who| !who.trim().is_empty())
        .unwrap_or_else(|| {
            format!(
                "worker {} ({}) admin, for {}",
                state.worker_name,
                state.worker_id,
                peer.as_deref().unwrap_or("unknown client")
            )
        });
    DrainRequest {
        mode,
        reason,
        requested_by: Some(requested_by),
        requested_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_bad_input_is_a_400_and_a_store_that_is_down_or_slow_is_a_503() {
        let status = |err: StoreError| store_error(err).status();
        assert_eq!(
            status(StoreError::Invalid("bad".into())),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(StoreError::NotFound("none".into())),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(StoreError::Conflict("stopped".into())),
            StatusCode::CONFLICT
        );
        for down in [
            StoreError::Unavailable("disk full".into()),
            StoreError::TimedOut {
                operation: "a submit",
                after: Duration::from_secs(3),
            },
            StoreError::Broken("file replaced".into()),
        ] {
            assert_eq!(status(down), StatusCode::SERVICE_UNAVAILABLE);
        }
        for operator in [
            StoreError::Corrupt("unknown status \"x\"".into()),
            StoreError::Database("relation \"jobs\" does not exist".into()),
            StoreError::Migrate("checksum mismatch".into()),
        ] {
            assert_eq!(status(operator), StatusCode::INTERNAL_SERVER_ERROR);
        }
    }
}
