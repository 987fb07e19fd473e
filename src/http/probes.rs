//! `/livez`, `/readyz` and `/metrics`: open to anyone, never blocked by the store or a drain.

use super::HttpState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::Arc;

pub async fn livez() -> &'static str {
    "ok\n"
}

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
        Json(json!({ "ready": ready, "phase": phase, "store_up": store_up })),
    )
        .into_response()
}

pub async fn metrics(State(state): State<Arc<HttpState>>) -> Response {
    // Computed at scrape time, so the gauge can never disagree with /readyz.
    state.metrics.ready.set(i64::from(state.is_ready()));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
