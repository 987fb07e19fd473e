//! Contract test of `GET /api/openapi.json` (SPEC §10): a real worker serves a document that parses
//! as OpenAPI 3.1, whose every reference resolves, and that names every route the router serves
//! with its methods — and no route it does not serve. The routes are read from the `.route(..)`
//! calls of `src/http/mod.rs` itself, so a new route without its annotation fails here.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The HTTP methods an axum `MethodRouter` can be built from.
const METHODS: &[&str] = &[
    "get", "post", "put", "patch", "delete", "head", "options", "trace",
];

/// The source without its comments (`//` to the end of a line, outside string literals).
fn without_comments(source: &str) -> String {
    source
        .lines()
        .map(|line| {
            let mut in_string = false;
            let mut previous = ' ';
            for (i, c) in line.char_indices() {
                match c {
                    '"' if previous != '\\' => in_string = !in_string,
                    '/' if !in_string && previous == '/' => return &line[..i - 1],
                    _ => {}
                }
                previous = c;
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Each `.route("PATH", METHOD(..).METHOD(..))` of the router's source, as (METHOD, PATH) pairs.
fn routes_in(source: &str) -> BTreeSet<(String, String)> {
    let source = without_comments(source);
    let mut routes = BTreeSet::new();
    let mut rest = source.as_str();
    while let Some(at) = rest.find(".route(") {
        let call = &rest[at + ".route(".len()..];
        // The call's arguments: up to the parenthesis that closes `.route(`.
        let mut depth = 1;
        let mut in_string = false;
        let mut end = call.len();
        for (i, c) in call.char_indices() {
            match c {
                '"' => in_string = !in_string,
                '(' if !in_string => depth += 1,
                ')' if !in_string => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let args = &call[..end];
        let path = args
            .split('"')
            .nth(1)
            .unwrap_or_else(|| panic!("a .route( without a path literal: {args}"));
        let handlers = &args[args.find(',').expect("a method router") + 1..];
        let mut found = false;
        for method in METHODS {
            // `get(` or `.get(`, never `forget(` or `max(`.
            let mut from = 0;
            while let Some(pos) = handlers[from..].find(&format!("{method}(")) {
                let start = from + pos;
                let before = handlers[..start].chars().next_back();
                if before.is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == ':')) {
                    routes.insert((method.to_string(), path.to_string()));
                    found = true;
                }
                from = start + method.len();
            }
        }
        assert!(found, "no method in the route {path}: {args}");
        rest = &call[end..];
    }
    routes
}

#[test]
fn the_route_reader_reads_method_routers() {
    let source = r#"
        /// Routes: `.route("/doc", get(..))` in a comment is not one.
        Router::new()
            .route("/a", get(x::a)) // .route("/b", put(..)) neither
            .route(
                "/b",
                get(login::form)
                    .post(login::submit)
                    .layer(DefaultBodyLimit::max(login::MAX_FORM)),
            )
            .route("/c/{id}", post(y::c))
            .route_layer(z)
    "#;
    let expected: BTreeSet<(String, String)> = [
        ("get", "/a"),
        ("get", "/b"),
        ("post", "/b"),
        ("post", "/c/{id}"),
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    assert_eq!(routes_in(source), expected);
}

/// Every `$ref` in the document, e.g. `#/components/schemas/Job`.
fn refs(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref", Value::String(target)) => {
                        out.insert(target.clone());
                    }
                    _ => refs(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_served_document_is_openapi_3_and_names_every_route_with_its_methods() {
    let store = TestStore::new().await;
    let mut worker = WorkerProcess::start(&store, &[]).await;

    // Admin-only, like the rest of /api.
    let anonymous = reqwest::get(worker.url("/api/openapi.json")).await.unwrap();
    assert_eq!(anonymous.status(), 401);

    let response = worker.admin_get("/api/openapi.json").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let text = response.text().await.unwrap();

    // It parses as an OpenAPI 3.1 document.
    let spec = oas3::from_json(&text).unwrap_or_else(|e| panic!("not OpenAPI 3.1: {e}\n{text}"));
    let version = spec
        .validate_version()
        .expect("a supported OpenAPI version");
    assert_eq!(version.major, 3);
    assert_eq!(spec.info.version, env!("CARGO_PKG_VERSION"));

    // Every route of the router, with every method, and nothing else.
    let source = std::fs::read_to_string(format!("{ROOT}/src/http/mod.rs")).unwrap();
    let routed = routes_in(&source);
    assert!(
        routed.contains(&("get".to_string(), "/api/openapi.json".to_string()))
            && routed.contains(&("post".to_string(), "/api/jobs".to_string()))
            && routed.len() >= 25,
        "the router's routes were read: {routed:?}"
    );
    let documented: BTreeSet<(String, String)> = spec
        .operations()
        .map(|(path, method, _)| (method.as_str().to_ascii_lowercase(), path))
        .collect();
    let missing: Vec<_> = routed.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes missing from /api/openapi.json (annotate the handler with #[utoipa::path] and \
         list it in src/http/openapi.rs): {missing:?}"
    );
    let stale: Vec<_> = documented.difference(&routed).collect();
    assert!(stale.is_empty(), "documented but not routed: {stale:?}");

    // Every operation has its own id (client generators name methods by it), answers something,
    // and resolves its request body and responses.
    let mut ids = BTreeSet::new();
    for (path, method, operation) in spec.operations() {
        let id = operation.operation_id.clone().expect("an operationId");
        assert!(
            ids.insert(id.clone()),
            "operationId {id} twice ({method} {path})"
        );
        let responses = operation.responses(&spec);
        assert!(
            !responses.is_empty(),
            "{method} {path} documents no response"
        );
        operation
            .request_body(&spec)
            .unwrap_or_else(|e| panic!("{method} {path}: request body: {e}"));
    }
    let raw: Value = serde_json::from_str(&text).unwrap();
    let mut targets = BTreeSet::new();
    refs(&raw, &mut targets);
    for target in &targets {
        let pointer = target
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("an outside reference {target}"));
        assert!(raw.pointer(pointer).is_some(), "{target} does not resolve");
    }

    // The error shape and the auth the API really uses.
    let schemas = &raw["components"]["schemas"];
    assert_eq!(
        schemas["ErrorBody"]["required"],
        serde_json::json!(["error"])
    );
    let schemes = &raw["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["type"], "http");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["session"]["in"], "cookie");
    assert_eq!(schemes["session"]["name"], "handover_session");
    assert_eq!(schemes["csrf"]["in"], "header");
    assert_eq!(schemes["csrf"]["name"], "X-CSRF-Token");
    assert_eq!(
        raw["paths"]["/readyz"]["get"]["security"],
        serde_json::json!([{}]),
        "probes are open"
    );
    assert_eq!(
        raw["paths"]["/api/jobs"]["post"]["responses"]["401"]["content"]["application/json"]
            ["schema"]["$ref"],
        "#/components/schemas/ErrorBody"
    );

    // Every field /api/status serves is documented (WorkerStatus with the flattened Status).
    let status = worker.status().await;
    let mut properties = BTreeSet::new();
    for schema in schemas["WorkerStatus"]["allOf"]
        .as_array()
        .expect("WorkerStatus is allOf (Status, its own fields)")
    {
        let schema = match schema["$ref"].as_str() {
            Some(target) => raw.pointer(&target[1..]).unwrap(),
            None => schema,
        };
        properties.extend(schema["properties"].as_object().unwrap().keys().cloned());
    }
    let served: BTreeSet<String> = status.as_object().unwrap().keys().cloned().collect();
    let undocumented: Vec<_> = served.difference(&properties).collect();
    assert!(
        undocumented.is_empty(),
        "/api/status fields missing from WorkerStatus: {undocumented:?}"
    );

    worker.signal(nix::sys::signal::Signal::SIGTERM);
    let exit = worker.wait_exit(Duration::from_secs(30)).await;
    assert!(exit.success(), "{exit}:\n{}", worker.log());
}
