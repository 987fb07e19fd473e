//! The admin pages: this worker (`/`), the fleet (`/fleet`) and the jobs (`/jobs`), rendered
//! server-side; the worker page then follows `/api/events`.

use super::api::worker_status;
use super::auth::Caller;
use super::fleet_api::store_error;
use super::views::{self, Chrome, FleetPage, JobPage, JobsPage, WorkerPage};
use super::{error, ErrorBody, HttpState};
use crate::store::{JobPageQuery, JobStatus};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::Extension;
use serde::Deserialize;
use std::sync::Arc;

/// Jobs shown per page unless `limit` says otherwise.
const JOBS_PER_PAGE: i64 = 200;
const MAX_JOBS_PER_PAGE: i64 = 2000;
const SHUTDOWNS_SHOWN: i64 = 20;

fn chrome(state: &HttpState, caller: &Caller, title: &str, active: &'static str) -> Chrome {
    Chrome {
        title: title.to_string(),
        worker_name: state.worker_name.clone(),
        worker_id: state.worker_id.clone(),
        version: env!("CARGO_PKG_VERSION"),
        csrf: caller.csrf(),
        active,
    }
}

fn render(template: impl Template) -> Response {
    match template.render() {
        Ok(html) => Html(html).into_response(),
        Err(err) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("page could not be rendered: {err}"),
        ),
    }
}

/// This worker's page: phase timeline, deadline countdown, in-flight jobs, drain and cancel.
#[utoipa::path(
    get,
    path = "/",
    operation_id = "worker_page",
    tag = "pages",
    responses(
        (status = 200, description = "The page.", body = String, content_type = "text/html"),
        (status = 303, description = "Not logged in: on to `/login?next=...`."),
        (status = 500, description = "The page could not be rendered.", body = ErrorBody),
    )
)]
pub async fn worker(
    State(state): State<Arc<HttpState>>,
    Extension(caller): Extension<Caller>,
) -> Response {
    // One read of the status serves both the rendered page and the JSON it embeds.
    let current = worker_status(&state, &state.machine.status());
    render(WorkerPage {
        chrome: chrome(&state, &caller, "Worker", "worker"),
        status: views::status_view(
            &current.status,
            current.ready,
            current.store_up,
            &current.in_flight,
            current.held,
            &current.forecast,
        ),
        status_json: views::embeddable_json(&serde_json::to_value(&current).unwrap_or_default()),
    })
}

/// The fleet page: every worker in the store, per-worker drain, recent shutdown records.
#[utoipa::path(
    get,
    path = "/fleet",
    operation_id = "fleet_page",
    tag = "pages",
    responses(
        (status = 200, description = "The page.", body = String, content_type = "text/html"),
        (status = 303, description = "Not logged in: on to `/login?next=...`."),
        (status = 500, description = "The store failed, or the page could not be rendered.", body = ErrorBody),
        (status = 503, description = "The store is down or slow.", body = ErrorBody),
    )
)]
pub async fn fleet(
    State(state): State<Arc<HttpState>>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let workers = match state.store.list_workers().await {
        Ok(workers) => workers,
        Err(err) => return store_error(err),
    };
    let shutdowns = match state.store.list_shutdowns(SHUTDOWNS_SHOWN).await {
        Ok(records) => records,
        Err(err) => return store_error(err),
    };
    let queued = match state.store.queued_drains().await {
        Ok(queued) => queued,
        Err(err) => return store_error(err),
    };
    let now = chrono::Utc::now();
    let mut rows: Vec<views::FleetWorkerView> = workers
        .iter()
        .map(|w| {
            let waiting = queued.iter().find(|q| q.worker_id == w.id);
            views::fleet_worker_view(w, &state.worker_id, now, waiting)
        })
        .collect();
    views::sort_fleet(&mut rows);
    render(FleetPage {
        chrome: chrome(&state, &caller, "Fleet", "fleet"),
        can_drain_all: rows.iter().any(|w| w.can_drain && w.queued.is_none()),
        queued: rows.iter().filter(|w| w.queued.is_some()).count(),
        workers: rows,
        shutdowns: shutdowns.iter().map(views::shutdown_view).collect(),
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct JobsQuery {
    /// Only jobs with this status (`all` or empty: every status).
    status: Option<String>,
    /// Only jobs of this kind.
    kind: Option<String>,
    /// Keyset pagination: show jobs with a smaller id.
    #[param(value_type = Option<i64>, minimum = 1)]
    before: Option<String>,
    /// Jobs per page [default: 200].
    #[param(minimum = 1, maximum = 2000)]
    limit: Option<i64>,
    /// "Find by id": go to that job's page.
    #[param(value_type = Option<i64>, minimum = 1)]
    id: Option<String>,
    /// What a bulk action did (shown once, after its redirect).
    bulk: Option<String>,
    /// How many jobs the bulk action did.
    done: Option<u32>,
    /// How many jobs the bulk action refused.
    refused: Option<u32>,
}

/// `/jobs`: jobs newest first, by status and kind, a page at a time, with bulk cancel and retry.
#[utoipa::path(
    get,
    path = "/jobs",
    operation_id = "jobs_page",
    tag = "pages",
    params(JobsQuery),
    responses(
        (status = 200, description = "The page.", body = String, content_type = "text/html"),
        (status = 303, description = "Find by id: on to `/jobs/{id}`; or not logged in: on to `/login?next=...`."),
        (status = 400, description = "An unknown status, an invalid kind, id or `before`, a limit out of range, or an unknown parameter.", body = ErrorBody),
        (status = 500, description = "The store failed, or the page could not be rendered.", body = ErrorBody),
        (status = 503, description = "The store is down or slow.", body = ErrorBody),
    )
)]
pub async fn jobs(
    State(state): State<Arc<HttpState>>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<JobsQuery>,
) -> Response {
    if let Some(id) = query
        .id
        .as_deref()
        .map(str::trim)
        .filter(|id| !id.is_empty())
    {
        return match super::job_api::job_id(id) {
            Ok(id) => axum::response::Redirect::to(&format!("/jobs/{id}")).into_response(),
            Err(message) => error(StatusCode::BAD_REQUEST, message),
        };
    }
    let status = match query
        .status
        .as_deref()
        .filter(|s| !s.is_empty() && *s != "all")
        .map(str::parse::<JobStatus>)
        .transpose()
    {
        Ok(status) => status,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let kind = query
        .kind
        .as_deref()
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(String::from);
    if let Some(kind) = &kind {
        if let Err(message) = crate::jobs::validate_kind(kind) {
            return error(StatusCode::BAD_REQUEST, message);
        }
    }
    let before = match query.before.as_deref().filter(|b| !b.is_empty()) {
        Some(text) => match super::job_api::job_id(text) {
            Ok(id) => Some(id),
            Err(message) => return error(StatusCode::BAD_REQUEST, format!("before: {message}")),
        },
        None => None,
    };
    let limit = query.limit.unwrap_or(JOBS_PER_PAGE);
    if !(1..=MAX_JOBS_PER_PAGE).contains(&limit) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("limit must be between 1 and {MAX_JOBS_PER_PAGE}"),
        );
    }
    let page = JobPageQuery {
        status,
        kind: kind.clone(),
        before,
        // One more than shown tells whether there is a next page.
        limit: limit + 1,
    };
    let (mut jobs, counts, workers) = match tokio::try_join!(
        state.store.page_jobs(&page),
        state.store.count_jobs(),
        state.store.list_workers()
    ) {
        Ok(found) => found,
        Err(err) => return store_error(err),
    };
    let more = jobs.len() as i64 > limit;
    jobs.truncate(limit as usize);
    let live_kinds: std::collections::BTreeSet<String> = workers
        .iter()
        .filter(|w| w.is_live())
        .flat_map(|w| w.kinds.iter().cloned())
        .collect();
    let link = |before: Option<i64>| {
        let mut params = Vec::new();
        if let Some(status) = status {
            params.push(format!("status={status}"));
        }
        if let Some(kind) = &kind {
            params.push(format!("kind={kind}"));
        }
        if let Some(before) = before {
            params.push(format!("before={before}"));
        }
        if limit != JOBS_PER_PAGE {
            params.push(format!("limit={limit}"));
        }
        format!("/jobs?{}", params.join("&"))
    };
    let next_page = more.then(|| link(jobs.last().map(|j| j.id)));
    let notice = match (query.bulk.as_deref(), query.done, query.refused) {
        (Some(action @ ("cancel" | "retry")), Some(done), refused) => Some(format!(
            "{action}: {done} done{}",
            refused
                .filter(|n| *n > 0)
                .map_or_else(String::new, |n| format!(
                    ", {n} refused (finished, or not in a state that allows it)"
                ))
        )),
        _ => None,
    };
    render(JobsPage {
        chrome: chrome(&state, &caller, "Jobs", "jobs"),
        status_filter: status.map(|s| s.to_string()),
        kind_filter: kind.clone().unwrap_or_default(),
        counts: views::status_counts(&counts),
        total_shown: jobs.len(),
        jobs: jobs
            .iter()
            .map(|job| views::job_view(job, &live_kinds))
            .collect(),
        limit,
        first_page: before.is_none(),
        first_page_link: link(None),
        next_page,
        notice,
    })
}

/// `/jobs/{id}`: one job, its data and its whole journey, with cancel and retry.
#[utoipa::path(
    get,
    path = "/jobs/{id}",
    operation_id = "job_page",
    tag = "pages",
    params(("id" = i64, Path, minimum = 1, example = 1, description = "The job id.")),
    responses(
        (status = 200, description = "The page.", body = String, content_type = "text/html"),
        (status = 303, description = "Not logged in: on to `/login?next=...`."),
        (status = 400, description = "The id is not a positive integer.", body = ErrorBody),
        (status = 404, description = "No such job.", body = ErrorBody),
        (status = 500, description = "The store failed, or the page could not be rendered.", body = ErrorBody),
        (status = 503, description = "The store is down or slow.", body = ErrorBody),
    )
)]
pub async fn job(
    State(state): State<Arc<HttpState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let id = match super::job_api::job_id(&id) {
        Ok(id) => id,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    match super::job_api::job_with_journey(&state.store, id).await {
        Ok(Some((job, events))) => render(JobPage {
            chrome: chrome(&state, &caller, &format!("Job #{id}"), "jobs"),
            job: views::job_detail_view(&job),
            events: events.iter().map(views::job_event_view).collect(),
        }),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("job {id} not found")),
        Err(err) => store_error(err),
    }
}
