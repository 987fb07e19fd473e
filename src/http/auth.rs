//! Admin access. API callers send `Authorization: Bearer TOKEN`; browsers carry a session cookie
//! and, on every state-changing request, that session's CSRF token (form field `csrf` or header
//! `X-CSRF-Token`). Unauthenticated API calls get 401, pages redirect to `/login`, bad CSRF is 403.

use super::session;
use super::{error, HttpState};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use std::sync::Arc;

/// Form bodies are read whole to find the CSRF field; anything larger is refused.
const MAX_FORM: usize = 16 * 1024;

/// Who is calling, put in the request's extensions for handlers.
#[derive(Clone, Debug)]
pub enum Caller {
    Bearer,
    Session { id: String, csrf: String },
}

impl Caller {
    /// The CSRF token forms on a page must carry (empty for bearer callers).
    pub fn csrf(&self) -> String {
        match self {
            Caller::Bearer => String::new(),
            Caller::Session { csrf, .. } => csrf.clone(),
        }
    }
}

fn identify(state: &HttpState, request: &Request) -> Option<Caller> {
    let headers = request.headers();
    if let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return constant_time_eq(token.trim().as_bytes(), state.admin_token.as_bytes())
            .then_some(Caller::Bearer);
    }
    let id = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(session::from_cookie_header)?;
    let csrf = state.sessions.csrf(id)?;
    Some(Caller::Session {
        id: id.to_string(),
        csrf,
    })
}

fn unauthorized() -> Response {
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "admin access needs the admin token: send Authorization: Bearer TOKEN, or log in at /login",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

/// For admin API routes and every state-changing request.
pub async fn require_admin(
    State(state): State<Arc<HttpState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(caller) = identify(&state, &request) else {
        return unauthorized();
    };
    let mut request = match (&caller, request.method()) {
        (Caller::Session { csrf, .. }, method) if !is_safe(method) => {
            match check_csrf(request, csrf).await {
                Ok(request) => request,
                Err(response) => return response,
            }
        }
        _ => request,
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// For pages: like `require_admin`, but a browser without a session is sent to the login page.
pub async fn require_admin_page(
    State(state): State<Arc<HttpState>>,
    mut request: Request,
    next: Next,
) -> Response {
    match identify(&state, &request) {
        Some(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        None if request.method() == Method::GET => {
            let next_path = request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string();
            let query = serde_urlencoded::to_string([("next", next_path)]).unwrap_or_default();
            Redirect::to(&format!("/login?{query}")).into_response()
        }
        None => unauthorized(),
    }
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Checks the CSRF token of a session-authenticated request, from the header or the form body.
async fn check_csrf(request: Request, expected: &str) -> Result<Request, Response> {
    let forbidden = || {
        error(
            StatusCode::FORBIDDEN,
            "missing or invalid CSRF token: reload the page and try again",
        )
    };
    if let Some(token) = request
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
    {
        return if constant_time_eq(token.as_bytes(), expected.as_bytes()) {
            Ok(request)
        } else {
            Err(forbidden())
        };
    }
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(forbidden());
    }
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_FORM).await.map_err(|_| {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("form body is larger than {MAX_FORM} bytes"),
        )
    })?;
    let field: Option<String> = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
        .ok()
        .and_then(|pairs| pairs.into_iter().find(|(k, _)| k == "csrf").map(|(_, v)| v));
    match field {
        Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => {
            Ok(Request::from_parts(parts, Body::from(bytes)))
        }
        _ => Err(forbidden()),
    }
}

/// Compares without an early exit, so response time does not leak how much of a token matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn compares_whole_tokens() {
        assert!(constant_time_eq(b"secret-token", b"secret-token"));
        assert!(!constant_time_eq(b"secret-token", b"secret-tokeN"));
        assert!(!constant_time_eq(b"secret", b"secret-token"));
    }
}
