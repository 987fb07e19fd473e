//! The admin pages' stylesheet and script, compiled into the binary (no CDN, no files to deploy).

use axum::http::header;
use axum::response::IntoResponse;

/// The admin pages' stylesheet.
#[utoipa::path(
    get,
    path = "/static/admin.css",
    operation_id = "admin_css",
    tag = "assets",
    responses((status = 200, description = "The stylesheet.", body = String, content_type = "text/css"))
)]
pub async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../../static/admin.css"),
    )
}

/// The admin pages' script.
#[utoipa::path(
    get,
    path = "/static/admin.js",
    operation_id = "admin_js",
    tag = "assets",
    responses((status = 200, description = "The script.", body = String, content_type = "application/javascript"))
)]
pub async fn js() -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_TYPE,
                "application/javascript; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../../static/admin.js"),
    )
}
