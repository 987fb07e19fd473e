//! `/login` (form, or `?token=` from the login URL a worker logs) and `/logout`.

use super::auth::{constant_time_eq, Caller};
use super::session;
use super::views::LoginPage;
use super::{error, HttpState};
use askama::Template;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;
use std::sync::Arc;

/// A login: the form's fields, or the query of the login URL a worker logs.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LoginInput {
    /// The admin token; without it the login page is shown.
    #[schema(nullable = false)]
    #[param(nullable = false)]
    token: Option<String>,
    /// Where to go after logging in: a path on this site [default: `/`].
    #[schema(nullable = false)]
    #[param(nullable = false)]
    next: Option<String>,
}

/// A fixed base to resolve `next` against: only what stays on it is a path on this site.
const NEXT_BASE: &str = "http://handover.invalid/";
/// Longest `next` followed; anything longer goes to `/`.
const MAX_NEXT: usize = 2048;
/// Largest login form body.
pub(super) const MAX_FORM: usize = 16 * 1024;

/// Where to send a browser after login: a path (and query) on this site, else `/`.
///
/// `next` must start with a single `/`, hold no control character or backslash (browsers strip
/// or reinterpret those, turning `/\t/evil` into `//evil`), and still be on this site once parsed
/// as a URL. The answer is re-serialized by the parser, so it is ASCII with everything else
/// percent-encoded; a fragment is dropped.
pub(super) fn safe_next(next: Option<&str>) -> String {
    let home = || "/".to_string();
    let Some(raw) = next else {
        return home();
    };
    if raw.len() > MAX_NEXT
        || !raw.starts_with('/')
        || raw.starts_with("//")
        || raw.chars().any(|c| c.is_control() || c == '\\')
    {
        return home();
    }
    let Ok(base) = url::Url::parse(NEXT_BASE) else {
        return home();
    };
    let Ok(resolved) = base.join(raw) else {
        return home();
    };
    // Dot segments can turn `/..//host` into the path `//host`, which a browser reads as a host.
    if resolved.origin() != base.origin() || resolved.path().starts_with("//") {
        return home();
    }
    match resolved.query() {
        Some(query) => format!("{}?{query}", resolved.path()),
        None => resolved.path().to_string(),
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
            // The Location is checked before a session exists, and a session whose cookie cannot
            // be built is dropped again: no error path leaves a session behind.
            let Ok(location) = header::HeaderValue::from_str(&next) else {
                return error(StatusCode::BAD_REQUEST, "unusable next address");
            };
            let id = state.sessions.create();
            let Ok(cookie) = header::HeaderValue::from_str(&session::set_cookie(&id)) else {
                state.sessions.remove(&id);
                return error(StatusCode::BAD_REQUEST, "cannot set the session cookie");
            };
            (
                StatusCode::SEE_OTHER,
                [(header::LOCATION, location), (header::SET_COOKIE, cookie)],
            )
                .into_response()
        }
        Some(_) => page(
            state,
            StatusCode::UNAUTHORIZED,
            Some("That is not this worker's admin token.".into()),
            next,
        ),
    }
}

/// The login page; with `?token=` (the login URL a worker logs) it logs the browser in.
#[utoipa::path(
    get,
    path = "/login",
    operation_id = "login_page",
    tag = "login",
    params(LoginInput),
    responses(
        (status = 200, description = "The login form.", body = String, content_type = "text/html"),
        (status = 303, description = "Logged in: a session cookie (`Set-Cookie: handover_session=...; HttpOnly; SameSite=Strict`), and on to `next`."),
        (status = 400, description = "A malformed query.", body = super::ErrorBody),
        (status = 401, description = "Not this worker's admin token: the login form again, saying so.", body = String, content_type = "text/html"),
    )
)]
pub async fn form(
    State(state): State<Arc<HttpState>>,
    input: Result<Query<LoginInput>, QueryRejection>,
) -> Response {
    match input {
        Ok(Query(input)) => login(&state, input),
        Err(rejection) => error(rejection.status(), rejection.body_text()),
    }
}

/// `POST /login`; the router caps its body at [`MAX_FORM`].
#[utoipa::path(
    post,
    path = "/login",
    operation_id = "login",
    tag = "login",
    request_body(content = LoginInput, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "No token given: the login form.", body = String, content_type = "text/html"),
        (status = 303, description = "Logged in: a session cookie (`Set-Cookie: handover_session=...; HttpOnly; SameSite=Strict`), and on to `next`."),
        (status = 400, description = "A malformed form.", body = super::ErrorBody),
        (status = 401, description = "Not this worker's admin token: the login form again, saying so.", body = String, content_type = "text/html"),
        (status = 413, description = "The form is larger than 16 KiB.", body = super::ErrorBody),
        (status = 415, description = "The body is not a form.", body = super::ErrorBody),
    )
)]
pub async fn submit(
    State(state): State<Arc<HttpState>>,
    input: Result<Form<LoginInput>, FormRejection>,
) -> Response {
    match input {
        Ok(Form(input)) => login(&state, input),
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("login form is larger than {MAX_FORM} bytes"),
        ),
        Err(rejection) => error(rejection.status(), rejection.body_text()),
    }
}

/// Ends the caller's session (a bearer caller has none) and clears its cookie.
#[utoipa::path(
    post,
    path = "/logout",
    operation_id = "logout",
    tag = "login",
    responses((status = 303, description = "Logged out: on to `/login`, the cookie cleared."))
)]
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

    #[test]
    fn evil_next_values_go_home() {
        let long = format!("/{}", "a".repeat(5000));
        for evil in [
            "/\t/evil.example",
            "/\t/evil.example/x",
            "/\n/evil.example",
            "/\r\nSet-Cookie: x=y",
            "/\0",
            "/\u{1b}[2J",
            "/\u{7f}",
            "/\u{85}/evil.example",
            "\t//evil.example",
            " //evil.example",
            "//evil.example",
            "///evil.example",
            "/\\evil.example",
            "/\\/evil.example",
            "\\\\evil.example",
            "https:evil.example",
            "https://evil.example",
            "javascript:alert(1)",
            "evil.example",
            "",
            "/..//evil.example",
            "/.//evil.example",
            "/%2e%2e//evil.example",
            "/a/../..//evil.example",
            long.as_str(),
        ] {
            assert_eq!(safe_next(Some(evil)), "/", "{evil:?}");
        }
    }

    #[test]
    fn odd_but_local_next_values_stay_local_and_encoded() {
        for (next, expected) in [
            ("/%09/evil.example", "/%09/evil.example"),
            ("/%0A", "/%0A"),
            ("/ /evil.example", "/%20/evil.example"),
            ("/für alle", "/f%C3%BCr%20alle"),
            ("/jobs?status=dead&x=ü", "/jobs?status=dead&x=%C3%BC"),
            ("/fleet#top", "/fleet"),
            ("/a/./b/../c", "/a/c"),
            ("/../fleet", "/fleet"),
        ] {
            assert_eq!(safe_next(Some(next)), expected, "{next:?}");
        }
    }
}
