//! The HTTP surface on `--listen`: probes and metrics for everyone, status and drain for admins.
//! It serves for the whole life of the process and is stopped last.

mod api;
mod assets;
mod auth;
mod events;
mod fleet_api;
mod job_api;
mod login;
pub mod openapi;
mod pages;
mod probes;
mod rolling_api;
pub mod session;
pub mod views;

use crate::jobs::inflight::InFlight;
use crate::jobs::Registry;
use crate::lifecycle::MachineHandle;
use crate::store::SharedStore;
use crate::telemetry::Metrics;
use crate::worker::health::StoreHealth;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the handlers read.
pub struct HttpState {
    pub machine: MachineHandle,
    pub health: Arc<StoreHealth>,
    pub metrics: Arc<Metrics>,
    pub jobs: Arc<InFlight>,
    pub admin_token: String,
    pub worker_id: String,
    pub worker_name: String,
    pub store: SharedStore,
    /// The kinds this worker runs, for validating submitted payloads.
    pub handlers: Registry,
    pub sessions: session::Sessions,
    /// What a drain gives its jobs, for the drain forecast.
    pub drain_times: crate::worker::drain_cost::DrainTimes,
}

impl HttpState {
    /// Ready means: in `running`, no essential task failed, and the store reachable.
    pub fn is_ready(&self) -> bool {
        self.is_ready_in(self.machine.phase())
    }

    /// The readiness rule for a given phase (a status published a moment ago has its own).
    pub fn is_ready_in(&self, phase: crate::model::Phase) -> bool {
        phase == crate::model::Phase::Running
            && self.machine.failed_task().is_none()
            && self.health.is_up()
    }
}

/// Security headers for every response: the pages load nothing from elsewhere and run no inline code.
async fn security_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::http::header::HeaderValue;
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// Every route, and who may call it.
///
/// Every route is described in `GET /api/openapi.json` (see [`openapi`]): `tests/openapi.rs` reads
/// the `.route(..)` calls below and fails on any path or method the document leaves out. To add
/// a route:
/// 1. annotate its handler with `#[utoipa::path(METHOD, path = "...", ...)]` (copy the one on a
///    handler like it, e.g. `fleet_api::workers` for an admin GET, `job_api::cancel` for an admin
///    POST: security, request body, every status it answers with its body type);
/// 2. add the handler to `paths(..)` in `src/http/openapi.rs` (one line);
/// 3. derive `utoipa::ToSchema` on any new type its JSON uses.
pub fn router(state: Arc<HttpState>) -> Router {
    let pages = Router::new()
        .route("/", get(pages::worker))
        .route("/fleet", get(pages::fleet))
        .route("/jobs", get(pages::jobs))
        .route("/jobs/{id}", get(pages::job))
        .route("/jobs/bulk", post(job_api::bulk))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin_page,
        ));
    let admin = Router::new()
        .route("/api/status", get(api::status))
        .route("/api/events", get(events::events))
        .route("/logout", post(login::logout))
        .route("/drain", post(api::drain))
        .route("/drain/cancel", post(api::cancel_drain))
        .route("/fleet/{worker}/drain", post(fleet_api::drain_other))
        .route("/fleet/drain", post(rolling_api::drain_all))
        .route("/fleet/{worker}/drain/cancel", post(rolling_api::withdraw))
        .route("/api/drain-queue", get(rolling_api::queue))
        .route("/api/workers", get(fleet_api::workers))
        .route("/api/shutdowns", get(fleet_api::shutdowns))
        .route("/api/jobs", get(fleet_api::jobs).post(fleet_api::submit))
        .route("/api/jobs/{id}", get(job_api::job))
        .route("/api/jobs/{id}/cancel", post(job_api::cancel))
        .route("/api/jobs/{id}/retry", post(job_api::retry))
        .route("/api/openapi.json", get(openapi::document))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin,
        ));
    Router::new()
        .route("/livez", get(probes::livez))
        .route("/readyz", get(probes::readyz))
        .route("/metrics", get(probes::metrics))
        .route(
            "/login",
            get(login::form)
                .post(login::submit)
                .layer(DefaultBodyLimit::max(login::MAX_FORM)),
        )
        .route("/static/admin.css", get(assets::css))
        .route("/static/admin.js", get(assets::js))
        .merge(pages)
        .merge(admin)
        .fallback(not_found)
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
}

/// Serves until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    state: Arc<HttpState>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}

/// Longest plain-text error body carried over into JSON.
const MAX_PLAIN_ERROR: usize = 4 * 1024;

/// Every error is JSON: a 4xx/5xx answered in plain text or with no body at all (axum's own
/// rejections: a query string or path that does not parse, a wrong method, a body over a limit)
/// becomes `{"error": "..."}` with the same status and headers. HTML (the login page's own 401)
/// and JSON pass through.
async fn json_errors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_none_or(|v| v.as_bytes().starts_with(b"text/plain"));
    if !plain {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_PLAIN_ERROR)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_ascii_lowercase()
    } else {
        text
    };
    let mut json = error(status, message);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            json.headers_mut().append(name, value.clone());
        }
    }
    json
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such page")
}

/// The body of every JSON error (4xx and 5xx) the API answers.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, in one line for a person.
    pub error: String,
}

/// A JSON error body: `{"error": "..."}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(ErrorBody {
            error: message.into(),
        }),
    )
        .into_response()
}
