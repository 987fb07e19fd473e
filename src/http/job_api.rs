//! One job, for operators: its journey (`GET /api/jobs/{id}`), cancel and retry (JSON, or the
//! job page's forms, which come back to the page).

use super::api::{is_form, parse_body, read_body};
use super::fleet_api::store_error;
use super::{error, ErrorBody, HttpState};
use crate::model::{CancelOutcome, Job, JobEvent, JobStatus, RetryOutcome};
use crate::store::{journey, JobId, SharedStore, StoreError};
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

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

/// A job with its whole journey: the job's fields, and `events`.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobJourney {
    #[serde(flatten)]
    pub job: Job,
    /// Every step of its journey, oldest first.
    pub events: Vec<JobEvent>,
}

/// One job and its whole journey: submitted, claimed, released, rescued, failed, completed,
/// cancelled, retried.
#[utoipa::path(
    get,
    path = "/api/jobs/{id}",
    operation_id = "get_job",
    tag = "jobs",
    params(("id" = i64, Path, minimum = 1, example = 1, description = "The job id.")),
    responses(
        (status = 200, description = "The job and its journey.", body = JobJourney),
        (status = 400, description = "The id is not a positive integer.", body = ErrorBody),
        (status = 404, description = "No such job.", body = ErrorBody),
        (status = 500, description = "The store failed in a way an operator must look at.", body = ErrorBody),
        (status = 503, description = "The store is down or slow.", body = ErrorBody),
    )
)]
pub async fn job(State(state): State<Arc<HttpState>>, Path(id): Path<String>) -> Response {
    let id = match job_id(&id) {
        Ok(id) => id,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    match job_with_journey(&state.store, id).await {
        Ok(Some((job, events))) => Json(JobJourney { job, events }).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("job {id} not found")),
        Err(err) => store_error(err),
    }
}

/// The optional body of a cancel or a retry (JSON, or the job page's form).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ControlBody {
    /// Retry only: drop the checkpoint and start over [default: false]. A cancel refuses it.
    #[schema(nullable = false)]
    from_scratch: Option<bool>,
    /// A form's CSRF token (browsers): checked by the auth layer before the handler runs.
    #[serde(default, rename = "csrf")]
    #[schema(nullable = false)]
    _csrf: Option<String>,
}

/// What a cancel did: `cancelled` at once (200), or `running` with its owner asked to stop it (202).
#[derive(Debug, Serialize, ToSchema)]
pub struct Cancelled {
    pub id: JobId,
    /// `cancelled`, or `running` while its owner stops it.
    pub status: JobStatus,
    /// Set (true) when its owner was asked to stop it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_requested: Option<bool>,
    /// The worker running it, when that worker was asked to stop it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// What a retry did: the job is `pending` again.
#[derive(Debug, Serialize, ToSchema)]
pub struct Retried {
    pub id: JobId,
    /// `pending`.
    pub status: JobStatus,
    /// Its checkpoint was dropped: it starts over.
    pub from_scratch: bool,
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
#[utoipa::path(
    post,
    path = "/api/jobs/{id}/cancel",
    operation_id = "cancel_job",
    tag = "jobs",
    params(("id" = i64, Path, minimum = 1, example = 1, description = "The job id.")),
    request_body(
        description = "Optional, and empty for a cancel (a form carries its CSRF token).",
        content(
            (Option<ControlBody> = "application/json"),
            (Option<ControlBody> = "application/x-www-form-urlencoded")
        )
    ),
    responses(
        (status = 200, description = "It was pending or failed: it is cancelled now.", body = Cancelled),
        (status = 202, description = "It is running: its owner was told and will stop it and write `cancelled`.", body = Cancelled),
        (status = 303, description = "A form post: back to the job's page `/jobs/{id}`."),
        (status = 400, description = "The id is not a positive integer, a malformed body, or `from_scratch` given.", body = ErrorBody),
        (status = 404, description = "No such job.", body = ErrorBody),
        (status = 409, description = "Already finished: completed, dead or cancelled.", body = ErrorBody),
        (status = 413, description = "The body is larger than 16 KiB.", body = ErrorBody),
        (status = 500, description = "The store failed in a way an operator must look at.", body = ErrorBody),
        (status = 503, description = "The store is down or slow.", body = ErrorBody),
    )
)]
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
        CancelOutcome::Cancelled => (
            StatusCode::OK,
            Cancelled {
                id,
                status: JobStatus::Cancelled,
                cancel_requested: None,
                owner: None,
            },
        ),
        CancelOutcome::Requested { owner } => (
            StatusCode::ACCEPTED,
            Cancelled {
                id,
                status: JobStatus::Running,
                cancel_requested: Some(true),
                owner: Some(owner),
            },
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
#[utoipa::path(
    post,
    path = "/api/jobs/{id}/retry",
    operation_id = "retry_job",
    tag = "jobs",
    params(("id" = i64, Path, minimum = 1, example = 1, description = "The job id.")),
    request_body(
        description = "Optional: an empty body resumes from the checkpoint.",
        content(
            (Option<ControlBody> = "application/json"),
            (Option<ControlBody> = "application/x-www-form-urlencoded")
        )
    ),
    responses(
        (status = 200, description = "Back to pending, its attempts reset.", body = Retried),
        (status = 303, description = "A form post: back to the job's page `/jobs/{id}`."),
        (status = 400, description = "The id is not a positive integer, or a malformed body.", body = ErrorBody),
        (status = 404, description = "No such job.", body = ErrorBody),
        (status = 409, description = "Not dead, failed or cancelled: nothing to retry.", body = ErrorBody),
        (status = 413, description = "The body is larger than 16 KiB.", body = ErrorBody),
        (status = 500, description = "The store failed in a way an operator must look at.", body = ErrorBody),
        (status = 503, description = "The store is down or slow.", body = ErrorBody),
    )
)]
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
        RetryOutcome::Retried => Json(Retried {
            id,
            status: JobStatus::Pending,
            from_scratch,
        })
        .into_response(),
        RetryOutcome::Refused(status) => error(
            StatusCode::CONFLICT,
            format!("job {id} is {status}; only dead, failed and cancelled jobs can be retried"),
        ),
        RetryOutcome::NotFound => error(StatusCode::NOT_FOUND, format!("job {id} not found")),
    }
}

/// Jobs one bulk action may name.
const MAX_BULK: usize = 1000;

/// The jobs page's bulk form, as [`bulk`] reads it field by field (`ids` repeats).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct BulkForm {
    /// `cancel` or `retry`.
    #[schema(pattern = "^(cancel|retry)$")]
    action: String,
    /// The selected jobs: one `ids` field each, 1 to 1000 of them.
    #[schema(min_items = 1, max_items = 1000)]
    ids: Vec<JobId>,
    /// The session's CSRF token (browsers).
    #[schema(nullable = false)]
    csrf: Option<String>,
}

/// `POST /jobs/bulk` (the jobs page's form): `action` = `cancel` or `retry`, `ids` = each selected
/// job; back to the jobs page saying how many were done and how many refused.
#[utoipa::path(
    post,
    path = "/jobs/bulk",
    operation_id = "bulk_jobs_form",
    tag = "pages",
    request_body(content = BulkForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Done: back to `/jobs?bulk=ACTION&done=N&refused=M`."),
        (status = 400, description = "A malformed form, no job or more than 1000, an id that is not a positive integer, an unknown field or action.", body = ErrorBody),
        (status = 413, description = "The body is larger than 16 KiB.", body = ErrorBody),
        (status = 415, description = "The body is not a form.", body = ErrorBody),
        (status = 500, description = "The store failed in a way an operator must look at.", body = ErrorBody),
        (status = 503, description = "The store is down or slow.", body = ErrorBody),
    )
)]
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
