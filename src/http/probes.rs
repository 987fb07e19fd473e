//! `/livez`, `/readyz` and `/metrics`: open to anyone, never blocked by the store or a drain.

use super::HttpState;
use crate::model::Phase;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use std::sync::Arc;
use utoipa::ToSchema;

/// Liveness: 200 while the process is responsive, draining included.
#[utoipa::path(
    get,
    path = "/livez",
    operation_id = "livez",
    tag = "probes",
    responses((status = 200, description = "`ok`.", body = String, content_type = "text/plain"))
)]
pub async fn livez() -> &'static str {
    "ok\n"
}

/// The body of `/readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// In `running`, no essential task failed, and the store reachable.
    pub ready: bool,
    pub phase: Phase,
    pub store_up: bool,
}

/// Readiness: 200 in `running` with the store reachable, else 503; the body names the phase.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "probes",
    responses(
        (status = 200, description = "Ready for work.", body = Readiness),
        (status = 503, description = "Not ready: starting, draining, an essential task failed, or the store is down.", body = Readiness),
    )
)]
pub async fn readyz(State(state): State<Arc<HttpState>>) -> Response {
    let phase = state.machine.phase();
    let store_up = state.health.is_up();
    let ready = state.is_ready();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(Readiness {
            ready,
            phase,
            store_up,
        }),
    )
        .into_response()
}

/// Prometheus metrics, text format 0.0.4 (SPEC §8).
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "probes",
    responses((status = 200, description = "Every metric of this worker.", body = String, content_type = "text/plain; version=0.0.4"))
)]
pub async fn metrics(State(state): State<Arc<HttpState>>) -> Response {
    // Phase and readiness are read at scrape time from the phase machine, between its changes:
    // the two gauges agree with each other, with /readyz's rule and with the phase timings.
    let read_state = || {
        let phase = state.machine.phase();
        (phase, state.is_ready_in(phase))
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(read_state),
    )
        .into_response()
}
