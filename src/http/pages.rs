//! The admin pages: this worker (`/`), the fleet (`/fleet`) and the jobs (`/jobs`), rendered
//! server-side; the worker page then follows `/api/events`.

use super::api::status_json;
use super::auth::Caller;
use super::fleet_api::store_error;
use super::views::{self, Chrome, FleetPage, JobPage, JobsPage, WorkerPage};
use super::{error, HttpState};
use crate::store::{JobFilter, JobStatus};
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

pub async fn worker(
    State(state): State<Arc<HttpState>>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let status = state.machine.status();
    let in_flight = state.jobs.views();
    render(WorkerPage {
        chrome: chrome(&state, &caller, "Worker", "worker"),
        status: views::status_view(
            &status,
            state.is_ready(),
            state.health.is_up(),
            &in_flight,
            state.jobs.held(),
        ),
        status_json: views::embeddable_json(&status_json(&state)),
    })
}

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
    let now = chrono::Utc::now();
    render(FleetPage {
        chrome: chrome(&state, &caller, "Fleet", "fleet"),
        workers: workers
            .iter()
            .map(|w| views::fleet_worker_view(w, &state.worker_id, now))
            .collect(),
        shutdowns: shutdowns.iter().map(views::shutdown_view).collect(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsQuery {
    status: Option<String>,
    limit: Option<i64>,
}

pub async fn jobs(
    State(state): State<Arc<HttpState>>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<JobsQuery>,
) -> Response {
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
    let limit = query.limit.unwrap_or(JOBS_PER_PAGE);
    if !(1..=MAX_JOBS_PER_PAGE).contains(&limit) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("limit must be between 1 and {MAX_JOBS_PER_PAGE}"),
        );
    }
    let filter = JobFilter {
        status,
        limit: Some(limit),
    };
    let (jobs, counts) =
        match tokio::try_join!(state.store.list_jobs(&filter), state.store.count_jobs()) {
            Ok(found) => found,
            Err(err) => return store_error(err),
        };
    render(JobsPage {
        chrome: chrome(&state, &caller, "Jobs", "jobs"),
        status_filter: status.map(|s| s.to_string()),
        counts: views::status_counts(&counts),
        total_shown: jobs.len(),
        jobs: jobs.iter().map(views::job_view).collect(),
        limit,
    })
}

/// `/jobs/{id}`: one job, its data and its whole journey, with cancel and retry.
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
