//! The HTTP surface on `--listen`: probes and metrics for everyone, status and drain for admins.
//! It serves for the whole life of the process and is stopped last.

mod api;
mod auth;
mod fleet_api;
mod probes;

use crate::jobs::Registry;
use crate::lifecycle::MachineHandle;
use crate::store::SharedStore;
use crate::telemetry::Metrics;
use crate::worker::health::StoreHealth;
use crate::worker::inflight::InFlight;
use axum::http::StatusCode;
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
}

impl HttpState {
    /// Ready means: in `running` with the store reachable.
    pub fn is_ready(&self) -> bool {
        self.machine.phase() == crate::lifecycle::Phase::Running && self.health.is_up()
    }
}

pub fn router(state: Arc<HttpState>) -> Router {
    let admin = Router::new()
        .route("/api/status", get(api::status))
        .route("/drain", post(api::drain))
        .route("/drain/cancel", post(api::cancel_drain))
        .route("/fleet/{worker}/drain", post(fleet_api::drain_other))
        .route("/api/workers", get(fleet_api::workers))
        .route("/api/shutdowns", get(fleet_api::shutdowns))
        .route("/api/jobs", get(fleet_api::jobs).post(fleet_api::submit))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin,
        ));
    Router::new()
        .route("/livez", get(probes::livez))
        .route("/readyz", get(probes::readyz))
        .route("/metrics", get(probes::metrics))
        .merge(admin)
        .fallback(not_found)
        .with_state(state)
}

/// Serves until `stop` is cancelled.
pub async fn serve(listener: TcpListener, state: Arc<HttpState>, stop: CancellationToken) {
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    if let Err(err) = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::error!(%err, "HTTP server failed");
    }
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such page")
}

/// A JSON error body: `{"error": "..."}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}
