//! `/login` (form, or `?token=` from the login URL a worker logs) and `/logout`.

use super::auth::{constant_time_eq, Caller};
use super::session;
use super::views::LoginPage;
use super::HttpState;
use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Debug, Default, Deserialize)]
pub struct LoginInput {
    token: Option<String>,
    next: Option<String>,
}

/// Only paths on this site: `/x`, never `//host` or `http://...`.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(path) if path.starts_with('/') && !path.starts_with("//") && !path.contains('\\') => {
            path.to_string()
        }
        _ => "/".to_string(),
    }
}

fn page(state: &HttpState, status: StatusCode, error: Option<String>, next: String) -> Response {
    let body = LoginPage {
        error,
        next,
        worker_name: state.worker_name.clone(),
    }
    .render()
    .unwrap_or_else(|e| format!("template error: {e}"));
    (status, Html(body)).into_response()
}

fn login(state: &HttpState, input: LoginInput) -> Response {
    let next = safe_next(input.next.as_deref());
    match input.token.as_deref().map(str::trim) {
        None | Some("") => page(state, StatusCode::OK, None, next),
        Some(token) if constant_time_eq(token.as_bytes(), state.admin_token.as_bytes()) => {
            let id = state.sessions.create();
            let mut response = Redirect::to(&next).into_response();
            if let Ok(cookie) = header::HeaderValue::from_str(&session::set_cookie(&id)) {
                response.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            response
        }
        Some(_) => page(
            state,
            StatusCode::UNAUTHORIZED,
            Some("That is not this worker's admin token.".into()),
            next,
        ),
    }
}

pub async fn form(
    State(state): State<Arc<HttpState>>,
    Query(input): Query<LoginInput>,
) -> Response {
    login(&state, input)
}

pub async fn submit(
    State(state): State<Arc<HttpState>>,
    Form(input): Form<LoginInput>,
) -> Response {
    login(&state, input)
}

pub async fn logout(
    State(state): State<Arc<HttpState>>,
    Extension(caller): Extension<Caller>,
) -> Response {
    if let Caller::Session { id, .. } = caller {
        state.sessions.remove(&id);
    }
    let mut response = Redirect::to("/login").into_response();
    if let Ok(cookie) = header::HeaderValue::from_str(&session::clear_cookie()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn login_redirects_stay_on_this_site() {
        assert_eq!(safe_next(Some("/fleet")), "/fleet");
        assert_eq!(safe_next(Some("/jobs?status=dead")), "/jobs?status=dead");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(Some("/\\evil")), "/");
        assert_eq!(safe_next(None), "/");
    }
}
