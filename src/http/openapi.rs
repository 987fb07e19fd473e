//! `GET /api/openapi.json` (SPEC §10 "Self-description"): the OpenAPI 3.1 document of every route,
//! generated from the handlers' own `#[utoipa::path]` annotations and the `ToSchema` types their
//! JSON is made of — never a hand-kept file. `tests/openapi.rs` checks that it names every route
//! of [`super::router`] with its methods, and `scripts/fuzz-api` holds the answers to it.
//!
//! Who may call what is decided here once, from each operation's tag, as `auth.rs` decides it:
//! the probes, the login page and the static assets are open to anyone; every other route is an
//! admin route, for a bearer token (API clients) or a browser session, whose state-changing
//! requests also need the session's CSRF token. Admin routes answer 401 without either (pages
//! asked by GET send the browser to `/login` instead), and 403 for a session request without its
//! CSRF token.
//!
//! The document itself is admin-only like the rest of `/api`: it reveals nothing secret, but
//! everything it describes needs the admin token anyway, so a client generator or a fuzzer fetches
//! it with the same `Authorization: Bearer TOKEN` it then calls the API with.

use super::api::DrainBody;
use super::ErrorBody;
use crate::model::JobId;
use axum::http::header;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::sync::LazyLock;
use utoipa::openapi::path::{HttpMethod, Operation};
use utoipa::openapi::schema::{Schema, SchemaType, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Required, Response, ResponseBuilder, SecurityRequirement};
use utoipa::{Modify, OpenApi, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "handover",
        description = "The HTTP surface of a handover worker (SPEC §7): probes and metrics for \
            anyone; this worker's status, drain and events, the fleet, and job control for admins.",
    ),
    paths(
        super::probes::livez,
        super::probes::readyz,
        super::probes::metrics,
        super::login::form,
        super::login::submit,
        super::login::logout,
        super::assets::css,
        super::assets::js,
        super::pages::worker,
        super::pages::fleet,
        super::pages::jobs,
        super::pages::job,
        super::job_api::bulk,
        super::api::status,
        super::events::events,
        super::api::drain,
        super::api::cancel_drain,
        super::fleet_api::drain_other,
        super::rolling_api::drain_all,
        super::rolling_api::withdraw,
        super::rolling_api::queue,
        super::fleet_api::workers,
        super::fleet_api::shutdowns,
        super::fleet_api::jobs,
        super::fleet_api::submit,
        super::job_api::job,
        super::job_api::cancel,
        super::job_api::retry,
        document,
    ),
    components(schemas(ErrorBody, DrainBody)),
    modifiers(&Access),
    tags(
        (name = "worker", description = "This worker: its status, its events, its drain."),
        (name = "fleet", description = "Every worker of the store and their shutdowns; draining another worker."),
        (name = "jobs", description = "Jobs: list, submit, look at one, cancel, retry."),
        (name = "pages", description = "The admin pages (HTML, for browsers)."),
        (name = "probes", description = "Liveness, readiness and metrics: open to anyone."),
        (name = "login", description = "Browser sessions: open to anyone (logout needs a session or the token)."),
        (name = "assets", description = "The admin pages' stylesheet and script: open to anyone."),
        (name = "meta", description = "This document."),
    )
)]
pub struct ApiDoc;

/// The security scheme of API clients: `Authorization: Bearer TOKEN` (`--admin-token`).
pub const BEARER: &str = "bearer";
/// A browser's session cookie, set by `/login`.
pub const SESSION: &str = "session";
/// The session's CSRF token, in the `X-CSRF-Token` header (or a form's `csrf` field).
pub const CSRF: &str = "csrf";

/// Tags whose operations anyone may call.
const OPEN_TAGS: &[&str] = &["probes", "login", "assets"];

/// Declares the security schemes and gives every operation its security and its 401/403 answers;
/// makes each `Option<Body>` request body an optional body (see [`optional_body`]).
struct Access;

impl Modify for Access {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The admin token (`--admin-token`, `HANDOVER_ADMIN_TOKEN`): what API \
                         clients send. Needs no CSRF token.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            SESSION,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                super::session::COOKIE,
                "A browser's session, from logging in at `/login` with the admin token \
                 (HttpOnly, SameSite=Strict, 12 hours).",
            ))),
        );
        components.add_security_scheme(
            CSRF,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-CSRF-Token",
                "The session's CSRF token (or a form field `csrf`): every state-changing request \
                 made with a session needs it; a bearer caller needs none.",
            ))),
        );
        for item in openapi.paths.paths.values_mut() {
            for (method, operation) in [
                (HttpMethod::Get, &mut item.get),
                (HttpMethod::Post, &mut item.post),
                (HttpMethod::Put, &mut item.put),
                (HttpMethod::Patch, &mut item.patch),
                (HttpMethod::Delete, &mut item.delete),
            ] {
                if let Some(operation) = operation {
                    secure(method, operation);
                    optional_body(operation);
                }
            }
        }
    }
}

/// The security and the authentication answers of one operation, from its tag and method.
fn secure(method: HttpMethod, operation: &mut Operation) {
    let tags = operation.tags.as_deref().unwrap_or_default();
    if tags.iter().any(|tag| OPEN_TAGS.contains(&tag.as_str())) {
        if operation.security.is_none() {
            // No requirement: anyone.
            operation.security = Some(vec![SecurityRequirement::default()]);
        }
        return;
    }
    let safe = method == HttpMethod::Get;
    let session = if safe {
        SecurityRequirement::new(SESSION, Vec::<String>::new())
    } else {
        SecurityRequirement::new(SESSION, Vec::<String>::new()).add(CSRF, Vec::<String>::new())
    };
    operation.security = Some(vec![
        SecurityRequirement::new(BEARER, Vec::<String>::new()),
        session,
    ]);
    let page = tags.iter().any(|tag| tag == "pages");
    let responses = &mut operation.responses.responses;
    if !(safe && page) {
        responses.entry("401".to_string()).or_insert_with(|| {
            error_response("Neither the admin token nor a session (`WWW-Authenticate: Bearer`).")
        });
    }
    if !safe {
        responses.entry("403".to_string()).or_insert_with(|| {
            error_response("A session request without its CSRF token, or with another one.")
        });
    }
}

/// A handler that takes an empty body as all defaults declares `Option<Body>`, which utoipa writes
/// as "Body or null": but no body is not a JSON `null` (the handler refuses that, and a form cannot
/// say it). Such a body is made `Body`, and not required.
fn optional_body(operation: &mut Operation) {
    let Some(RefOr::T(body)) = operation.request_body.as_mut() else {
        return;
    };
    let is_null = |schema: &RefOr<Schema>| {
        matches!(schema, RefOr::T(Schema::Object(object))
            if object.schema_type == SchemaType::Type(Type::Null))
    };
    let mut optional = false;
    for content in body.content.values_mut() {
        let RefOr::T(content) = content else { continue };
        let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema else {
            continue;
        };
        if one_of.items.len() == 2 && one_of.items.iter().any(is_null) {
            content.schema = one_of.items.iter().find(|s| !is_null(s)).cloned();
            optional = true;
        }
    }
    if optional {
        body.required = Some(Required::False);
    }
}

fn error_response(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                utoipa::openapi::ContentBuilder::new()
                    .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                        "ErrorBody",
                    ))))
                    .build(),
            )
            .build(),
    )
}

/// The document, built once.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    ApiDoc::openapi()
        .to_json()
        .unwrap_or_else(|err| format!("{{\"error\":\"the OpenAPI document: {err}\"}}"))
});

/// This OpenAPI document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    operation_id = "openapi_document",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of every route.", body = Value))
)]
pub async fn document() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
}

/// One job this worker holds, as `in_flight` of the status shows it.
///
/// Mirrors `jobs::inflight::InFlightView` (the jobs layer stays free of HTTP concerns); a unit
/// test below fails when the two disagree.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct InFlightJob {
    job_id: JobId,
    kind: String,
    attempt: i32,
    lease_epoch: i64,
    started_at: DateTime<Utc>,
    /// Its last checkpoint.
    checkpoint: Option<Value>,
    /// 0.0 to 1.0 when the handler can tell.
    progress: Option<f64>,
    state: InFlightState,
    /// The end of its process's output, live (exec jobs); absent otherwise.
    #[schema(required = false)]
    output: Option<OutputTail>,
    /// Milliseconds of work since its last checkpoint (what a SIGKILL now would lose); null for
    /// held and aborted jobs.
    since_checkpoint_ms: Option<f64>,
    /// Milliseconds until its next checkpoint is expected (a handoff drain waits for it); null
    /// while neither it nor its kind has shown a cadence.
    next_checkpoint_eta_ms: Option<f64>,
}

/// Where a held job is (mirrors `jobs::inflight::JobState`).
#[derive(ToSchema, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum InFlightState {
    /// Claimed ahead and leased, waiting for a free slot: no handler has seen it yet.
    Held,
    /// The handler is working.
    Running,
    /// The handler stopped at a checkpoint; the lease is held until the machine hands it back.
    Parked,
    /// The handler was abandoned by a forced shutdown; the lease is held until it is released.
    Aborted,
}

/// The end of what a running job's process wrote (mirrors `jobs::inflight::OutputTail`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct OutputTail {
    stdout: String,
    stderr: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::inflight::{InFlightView, JobState, OutputTail as Tail};
    use std::collections::BTreeSet;

    fn document() -> Value {
        serde_json::from_str(&DOCUMENT).unwrap()
    }

    fn properties(doc: &Value, schema: &str) -> BTreeSet<String> {
        doc["components"]["schemas"][schema]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("schema {schema} has properties"))
            .keys()
            .cloned()
            .collect()
    }

    /// The mirror of `InFlightView` names exactly its fields, and of `JobState` exactly its values.
    #[test]
    fn the_in_flight_schema_matches_what_the_status_serializes() {
        let doc = document();
        let view = InFlightView {
            job_id: 1,
            kind: "demo".into(),
            attempt: 1,
            lease_epoch: 1,
            started_at: Utc::now(),
            checkpoint: None,
            progress: None,
            state: JobState::Running,
            output: Some(Tail::default()),
            since_checkpoint_ms: Some(1.0),
            next_checkpoint_eta_ms: None,
        };
        let json = serde_json::to_value(&view).unwrap();
        let keys: BTreeSet<String> = json.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            properties(&doc, "InFlightJob"),
            "jobs::inflight::InFlightView changed: update InFlightJob in src/http/openapi.rs"
        );
        let tail: BTreeSet<String> = json["output"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(tail, properties(&doc, "OutputTail"));
        let states = [
            JobState::Held,
            JobState::Running,
            JobState::Parked,
            JobState::Aborted,
        ];
        // A new state fails to compile here: add it to InFlightState too.
        for state in states {
            match state {
                JobState::Held | JobState::Running | JobState::Parked | JobState::Aborted => {}
            }
        }
        let served: Vec<Value> = states
            .iter()
            .map(|s| serde_json::to_value(s).unwrap())
            .collect();
        assert_eq!(
            Value::from(served),
            doc["components"]["schemas"]["InFlightState"]["enum"]
        );
    }

    #[test]
    fn an_optional_body_is_no_body_not_a_null_one() {
        let doc = document();
        for (path, method) in [
            ("/drain", "post"),
            ("/fleet/{worker}/drain", "post"),
            ("/api/jobs/{id}/cancel", "post"),
            ("/api/jobs/{id}/retry", "post"),
        ] {
            let body = &doc["paths"][path][method]["requestBody"];
            assert_eq!(body["required"], false, "{method} {path}");
            for (_, content) in body["content"].as_object().unwrap() {
                assert!(
                    content["schema"]["$ref"].is_string(),
                    "{method} {path}: {content}"
                );
            }
        }
        assert_eq!(
            doc["paths"]["/api/jobs"]["post"]["requestBody"]["required"],
            true
        );
    }

    #[test]
    fn every_admin_operation_needs_the_token_or_a_session_and_says_so() {
        let doc = document();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let security = operation["security"].as_array().unwrap();
                let open = operation["tags"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|t| OPEN_TAGS.contains(&t.as_str().unwrap()));
                if open {
                    assert_eq!(security, &vec![Value::Object(Default::default())]);
                    continue;
                }
                assert!(
                    security.iter().any(|s| s.get(BEARER).is_some()),
                    "{method} {path}"
                );
                if method != "get" {
                    assert!(
                        operation["responses"]["403"].is_object(),
                        "{method} {path} documents its 403"
                    );
                }
                if path.starts_with("/api/") {
                    assert!(
                        operation["responses"]["401"].is_object(),
                        "{method} {path} documents its 401"
                    );
                }
            }
        }
    }
}
