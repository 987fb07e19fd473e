//! One job, for operators: its journey (`GET /api/jobs/{id}`), cancel and retry (JSON, or the
//! job page's forms, which come back to the page).

use super::api::{is_form, parse_body, read_body};
use super::fleet_api::store_error;
use super::{error, HttpState};
use crate::model::{CancelOutcome, Job, JobEvent, RetryOutcome};
use crate::store::{journey, JobId, SharedStore, StoreError};
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// Shutdown records searched for the ones a job's hand-backs belong to.
const SHUTDOWNS_SEARCHED: i64 = 1000;

/// A job id from the path: a positive integer, else the message for a 400.
pub(super) fn job_id(text: &str) -> Result<JobId, String> {
    match text.parse::<JobId>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(format!("job id must be a positive integer, not {text:?}")),
    }
}

/// The job and its whole journey, or None when there is no such job.
pub(super) async fn job_with_journey(
    store: &SharedStore,
    id: JobId,
) -> Result<Option<(Job, Vec<JobEvent>)>, StoreError> {
    let Some(job) = store.get_job(id).await? else {
        return Ok(None);
    };
    let (written, completions) = store.job_history(id).await?;
    let shutdowns = store.list_shutdowns(SHUTDOWNS_SEARCHED).await?;
    let events = journey(&job, written, completions, &shutdowns);
    Ok(Some((job, events)))
}

pub async fn job(State(state): State<Arc<HttpState>>, Path(id): Path<String>) -> Response {
    let id = match job_id(&id) {
        Ok(id) => id,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    match job_with_journey(&state.store, id).await {
        Ok(Some((job, events))) => {
            let mut body = serde_json::to_value(&job).unwrap_or_default();
            body["events"] = json!(events);
            Json(body).into_response()
        }
        Ok(None) => error(StatusCode::NOT_FOUND, format!("job {id} not found")),
        Err(err) => store_error(err),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlBody {
    from_scratch: Option<bool>,
    /// A form's CSRF token: checked by the auth layer before the handler runs.
    #[serde(default, rename = "csrf")]
    _csrf: Option<String>,
}

/// The job id of a cancel or retry, whether it came from the job page's form, and its optional
/// body (JSON, or the form).
async fn control_request(
    id: &str,
    request: Request,
) -> Result<(JobId, bool, ControlBody), Response> {
    let id = job_id(id).map_err(|message| error(StatusCode::BAD_REQUEST, message))?;
    let (content_type, body) = read_body(request).await?;
    let parsed = parse_body::<ControlBody>(&content_type, &body)
        .map_err(|message| error(StatusCode::BAD_REQUEST, message))?;
    Ok((id, is_form(&content_type), parsed))
}

/// `POST /api/jobs/{id}/cancel`: 200 when cancelled, 202 when its worker was asked to stop it,
/// 409 when already finished, 404 when there is no such job.
pub async fn cancel(
    State(state): State<Arc<HttpState>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    let (id, form, body) = match control_request(&id, request).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    if body.from_scratch.is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            "from_scratch applies to retry only",
        );
    }
    let outcome = match state.store.cancel(&[id]).await {
        Ok(mut outcomes) => outcomes.pop().unwrap_or(CancelOutcome::NotFound),
        Err(err) => return store_error(err),
    };
    let (status, answer) = match outcome {
        CancelOutcome::Cancelled => (StatusCode::OK, json!({"id": id, "status": "cancelled"})),
        CancelOutcome::Requested { owner } => (
            StatusCode::ACCEPTED,
            json!({"id": id, "status": "running", "cancel_requested": true, "owner": owner}),
        ),
        CancelOutcome::Finished(status) => {
            return error(
                StatusCode::CONFLICT,
                format!("job {id} is {status}; there is nothing to cancel"),
            )
        }
        CancelOutcome::NotFound => {
            return error(StatusCode::NOT_FOUND, format!("job {id} not found"))
        }
    };
    if form {
        return Redirect::to(&format!("/jobs/{id}")).into_response();
    }
    (status, Json(answer)).into_response()
}

/// `POST /api/jobs/{id}/retry` (`{"from_scratch": true}` drops the checkpoint): 200, 409 when
/// the job is not dead, failed or cancelled, 404 when there is no such job.
pub async fn retry(
    State(state): State<Arc<HttpState>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    let (id, form, body) = match control_request(&id, request).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    let from_scratch = body.from_scratch.unwrap_or(false);
    let outcome = match state.store.retry(&[id], from_scratch).await {
        Ok(mut outcomes) => outcomes.pop().unwrap_or(RetryOutcome::NotFound),
        Err(err) => return store_error(err),
    };
    match outcome {
        RetryOutcome::Retried if form => Redirect::to(&format!("/jobs/{id}")).into_response(),
        RetryOutcome::Retried => {
            Json(json!({"id": id, "status": "pending", "from_scratch": from_scratch}))
                .into_response()
        }
        RetryOutcome::Refused(status) => error(
            StatusCode::CONFLICT,
            format!("job {id} is {status}; only dead, failed and cancelled jobs can be retried"),
        ),
        RetryOutcome::NotFound => error(StatusCode::NOT_FOUND, format!("job {id} not found")),
    }
}

/// Jobs one bulk action may name.
const MAX_BULK: usize = 1000;

/// `POST /jobs/bulk` (the jobs page's form): `action` = `cancel` or `retry`, `ids` = each selected
/// job; back to the jobs page saying how many were done and how many refused.
pub async fn bulk(State(state): State<Arc<HttpState>>, request: Request) -> Response {
    let (content_type, body) = match read_body(request).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    if !is_form(&content_type) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the selected jobs as a form (application/x-www-form-urlencoded)",
        );
    }
    let pairs: Vec<(String, String)> = match serde_urlencoded::from_bytes(&body) {
        Ok(pairs) => pairs,
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("malformed form body: {err}"),
            )
        }
    };
    let mut action = None;
    let mut ids = Vec::new();
    for (key, value) in pairs {
        match key.as_str() {
            "csrf" => {}
            "action" => action = Some(value),
            "ids" => match job_id(&value) {
                Ok(id) => ids.push(id),
                Err(message) => return error(StatusCode::BAD_REQUEST, message),
            },
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("unknown field {other:?} (expected action, ids)"),
                )
            }
        }
    }
    if ids.is_empty() {
        return error(StatusCode::BAD_REQUEST, "select at least one job");
    }
    if ids.len() > MAX_BULK {
        return error(
            StatusCode::BAD_REQUEST,
            format!("at most {MAX_BULK} jobs at once"),
        );
    }
    let (action, done) = match action.as_deref() {
        Some("cancel") => match state.store.cancel(&ids).await {
            Ok(outcomes) => (
                "cancel",
                outcomes
                    .iter()
                    .filter(|o| {
                        matches!(
                            o,
                            CancelOutcome::Cancelled | CancelOutcome::Requested { .. }
                        )
                    })
                    .count(),
            ),
            Err(err) => return store_error(err),
        },
        Some("retry") => match state.store.retry(&ids, false).await {
            Ok(outcomes) => (
                "retry",
                outcomes
                    .iter()
                    .filter(|o| matches!(o, RetryOutcome::Retried))
                    .count(),
            ),
            Err(err) => return store_error(err),
        },
        _ => return error(StatusCode::BAD_REQUEST, "action must be cancel or retry"),
    };
    let refused = ids.len() - done;
    Redirect::to(&format!(
        "/jobs?bulk={action}&done={done}&refused={refused}"
    ))
    .into_response()
}
