//! Property test of the HTTP edge: a few hundred hostile requests (random bytes, random JSON with
//! control characters, huge strings, wrong types, every content type, evil `next` URLs) against one
//! real worker. None may answer 5xx, every error must be JSON with `error`, no session may be set
//! but by the right token, and nothing holding a control character may reach the store.

mod common;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use reqwest::header::{CONTENT_TYPE, LOCATION, SET_COOKIE};
use serde_json::{json, Map, Value};

/// Cases run; each is one request (a few ms in a debug build).
const CASES: u32 = 1000;
/// A fixed seed: the same requests every run, so a failure reproduces.
const SEED: [u8; 32] = *b"handover hostile edge input seed";

#[derive(Clone, Debug)]
enum Hostile {
    /// `POST /api/jobs`.
    Submit {
        content_type: Option<&'static str>,
        body: Vec<u8>,
    },
    /// `POST /drain` with a reason that always holds a control character: must never start a drain.
    Drain {
        content_type: &'static str,
        body: Vec<u8>,
    },
    /// `POST /fleet/{worker}/drain` for a worker that does not exist.
    FleetDrain {
        worker: String,
        content_type: Option<&'static str>,
        body: Vec<u8>,
    },
    /// `POST /drain/cancel` while running: nothing to cancel.
    Cancel {
        content_type: Option<&'static str>,
        body: Vec<u8>,
    },
    /// `/login` with a raw query string or form body (never the right token).
    Login {
        query: String,
        form: Option<Vec<u8>>,
    },
    /// `/login` with the right token and a hostile `next`.
    LoginNext { next: String, post: bool },
    /// A listing with a raw query string.
    List { path: &'static str, query: String },
}

fn hostile_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => proptest::char::range('a', 'z'),
        2 => (0u32..0x20).prop_map(|c| char::from_u32(c).unwrap()),
        1 => Just('\u{7f}'),
        1 => Just('\u{9b}'),
        2 => prop::sample::select(vec!['/', '\\', '%', '.', ':', ' ', '?', '#', '&', '=', '"']),
        1 => any::<char>(),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::collection::vec(hostile_char(), 0..24).prop_map(String::from_iter),
        1 => (1usize..40_000).prop_map(|n| "x".repeat(n)),
    ]
}

/// Text with at least one control character in it.
fn control_text() -> impl Strategy<Value = String> {
    (
        text(),
        (0u32..0x20).prop_map(|c| char::from_u32(c).unwrap()),
        text(),
    )
        .prop_map(|(a, c, b)| format!("{a}{c}{b}"))
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-5i64..1000).prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        let key = prop_oneof![
            prop::sample::select(vec!["cmd", "env", "seed", "iterations", "note"])
                .prop_map(String::from),
            text(),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key, inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn content_type() -> impl Strategy<Value = Option<&'static str>> {
    prop::sample::select(vec![
        Some("application/json"),
        Some("application/json; charset=utf-8"),
        Some("application/x-www-form-urlencoded"),
        Some("text/plain"),
        None,
    ])
}

fn form_body() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((text(), text()), 0..5).prop_map(|pairs| {
        serde_urlencoded::to_string(pairs)
            .unwrap_or_default()
            .into_bytes()
    })
}

/// A body of any shape: bytes, a JSON value, a form.
fn any_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        form_body(),
    ]
}

/// A job as a client might get it wrong: kinds, payloads and counts of any type.
fn job_body() -> impl Strategy<Value = Vec<u8>> {
    let kind = prop_oneof![
        prop::sample::select(vec!["noop", "demo"]).prop_map(Value::from),
        text().prop_map(Value::from),
        json_value(),
    ];
    let count = prop_oneof![3 => (0i64..3).prop_map(Value::from), 1 => json_value()];
    (
        kind,
        prop::option::of(json_value()),
        prop::option::of(count),
    )
        .prop_map(|(kind, payload, count)| {
            let mut body = json!({ "kind": kind });
            if let Some(payload) = payload {
                body["payload"] = payload;
            }
            if let Some(count) = count {
                body["count"] = count;
            }
            body.to_string().into_bytes()
        })
}

/// A drain body whose reason (or who asked) always holds a control character.
fn drain_body() -> impl Strategy<Value = (&'static str, Vec<u8>)> {
    let mode = prop::sample::select(vec!["handoff", "finish"]);
    (mode, control_text(), any::<bool>(), any::<bool>()).prop_map(
        |(mode, bad, in_reason, as_form)| {
            let field = if in_reason { "reason" } else { "requested_by" };
            if as_form {
                let body =
                    serde_urlencoded::to_string([("mode", mode), (field, bad.as_str())]).unwrap();
                ("application/x-www-form-urlencoded", body.into_bytes())
            } else {
                let body = json!({ "mode": mode, field: bad });
                ("application/json", body.to_string().into_bytes())
            }
        },
    )
}

fn raw_query() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9%=&+;/?.:_-]{0,60}",
        prop::collection::vec((text(), text()), 0..4)
            .prop_map(|pairs| serde_urlencoded::to_string(pairs).unwrap_or_default()),
        "(limit|status|token|next)=[a-zA-Z0-9%-]{0,12}(&(limit|status|token|next)=[a-zA-Z0-9%-]{0,12}){0,3}",
    ]
}

fn hostile() -> impl Strategy<Value = Hostile> {
    prop_oneof![
        3 => (content_type(), prop_oneof![job_body(), any_body()])
            .prop_map(|(content_type, body)| Hostile::Submit { content_type, body }),
        2 => drain_body().prop_map(|(content_type, body)| Hostile::Drain { content_type, body }),
        2 => (text(), content_type(), any_body()).prop_map(|(worker, content_type, body)| {
            Hostile::FleetDrain { worker, content_type, body }
        }),
        1 => (content_type(), any_body())
            .prop_map(|(content_type, body)| Hostile::Cancel { content_type, body }),
        2 => (raw_query(), prop::option::of(prop_oneof![form_body(), any_body()]))
            .prop_map(|(query, form)| Hostile::Login { query, form }),
        3 => (text(), any::<bool>()).prop_map(|(next, post)| Hostile::LoginNext { next, post }),
        2 => (prop::sample::select(vec!["/api/jobs", "/api/shutdowns", "/jobs"]), raw_query())
            .prop_map(|(path, query)| Hostile::List { path, query }),
    ]
}

fn fail(message: String) -> Result<(), TestCaseError> {
    Err(TestCaseError::fail(message))
}

/// What every answer must be: never 5xx, and any error (but the login page's own 401) JSON.
async fn check_answer(
    what: &str,
    response: reqwest::Response,
) -> Result<(u16, reqwest::header::HeaderMap, Vec<u8>), TestCaseError> {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.unwrap_or_default().to_vec();
    if status >= 500 {
        return Err(TestCaseError::fail(format!(
            "{what}: {status} {}",
            String::from_utf8_lossy(&body)
        )));
    }
    let is_html = headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
    let login_page = is_html && status == 401 && what.starts_with("/login");
    if status >= 400 && !login_page {
        let error = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string));
        let json_type = headers
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        if !json_type || error.is_none_or(|e| e.trim().is_empty()) {
            return Err(TestCaseError::fail(format!(
                "{what}: {status} is not a JSON error: {headers:?} {}",
                String::from_utf8_lossy(&body)
            )));
        }
    }
    Ok((status, headers, body))
}

/// A `Location` that stays on this site: one leading `/`, no control characters or backslashes,
/// and the same origin once resolved.
fn is_local_location(location: &[u8]) -> bool {
    let Ok(location) = std::str::from_utf8(location) else {
        return false;
    };
    let base = url::Url::parse("http://handover.invalid/").unwrap();
    location.starts_with('/')
        && !location.starts_with("//")
        && !location
            .chars()
            .any(|c| c.is_control() || c == '\\' || !c.is_ascii())
        && base
            .join(location)
            .is_ok_and(|resolved| resolved.origin() == base.origin())
}

async fn send(
    client: &reqwest::Client,
    worker: &WorkerProcess,
    store: &TestStore,
    request: Hostile,
) -> Result<(), TestCaseError> {
    let post = |path: &str, content_type: Option<&str>, body: Vec<u8>| {
        let mut request = client.post(worker.url(path)).bearer_auth(TOKEN).body(body);
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        request.send()
    };
    match request {
        Hostile::Submit { content_type, body } => {
            let response = post("/api/jobs", content_type, body).await.unwrap();
            let (status, _, body) = check_answer("POST /api/jobs", response).await?;
            if status == 201 {
                let answer: Value = serde_json::from_slice(&body).unwrap();
                for id in answer["ids"].as_array().unwrap() {
                    let job = store.job(id.as_i64().unwrap()).await;
                    if let Err(message) = handover::text::check_payload(&job.payload) {
                        return fail(format!("job {id} was stored with {message}"));
                    }
                }
            }
        }
        Hostile::Drain { content_type, body } => {
            let response = post("/drain", Some(content_type), body).await.unwrap();
            let (status, _, _) = check_answer("POST /drain", response).await?;
            if status < 400 {
                return fail(format!(
                    "a drain with a control character was taken: {status}"
                ));
            }
        }
        Hostile::FleetDrain {
            worker: name,
            content_type,
            body,
        } => {
            let segment: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
            let path = format!("/fleet/{segment}/drain");
            let response = post(&path, content_type, body).await.unwrap();
            let (status, _, _) = check_answer(&path, response).await?;
            if status < 400 {
                return fail(format!(
                    "{path} answered {status} for a worker that does not exist"
                ));
            }
        }
        Hostile::Cancel { content_type, body } => {
            let response = post("/drain/cancel", content_type, body).await.unwrap();
            let (status, _, _) = check_answer("POST /drain/cancel", response).await?;
            if status < 400 {
                return fail(format!("cancelled a drain that never started: {status}"));
            }
        }
        Hostile::Login { query, form } => {
            let url = worker.url(&format!("/login?{query}"));
            let request = match form {
                Some(body) => client
                    .post(url)
                    .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(body),
                None => client.get(url),
            };
            let response = request.send().await.unwrap();
            let (status, headers, _) = check_answer("/login", response).await?;
            if status == 303 || headers.contains_key(SET_COOKIE) {
                return fail(format!("logged in without the token: {status} {headers:?}"));
            }
        }
        Hostile::LoginNext { next, post } => {
            let pairs = [("token", TOKEN), ("next", next.as_str())];
            let request = if post {
                client.post(worker.url("/login")).form(&pairs)
            } else {
                let query = serde_urlencoded::to_string(pairs).unwrap();
                client.get(worker.url(&format!("/login?{query}")))
            };
            let response = request.send().await.unwrap();
            let (status, headers, body) = check_answer("/login with the token", response).await?;
            if status == 413 && post {
                // A `next` larger than the form limit: refused, and no session.
                if headers.contains_key(SET_COOKIE) {
                    return fail("a refused login set a session".into());
                }
                return Ok(());
            }
            let location = headers.get(LOCATION).map(|v| v.as_bytes().to_vec());
            if status != 303
                || !headers.contains_key(SET_COOKIE)
                || !location.as_deref().is_some_and(is_local_location)
            {
                return fail(format!(
                    "next={next:?}: {status} Location {:?} {}",
                    location.map(|l| String::from_utf8_lossy(&l).into_owned()),
                    String::from_utf8_lossy(&body)
                ));
            }
        }
        Hostile::List { path, query } => {
            let response = client
                .get(worker.url(&format!("{path}?{query}")))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap();
            check_answer(path, response).await?;
        }
    }
    Ok(())
}

#[test]
fn hostile_requests_never_fail_the_worker_nor_reach_the_store() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = runtime.block_on(TestStore::new());
    let worker = runtime.block_on(WorkerProcess::start(&store, &[]));
    // A fresh connection per request: the server closes one whose oversized body it did not read.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let config = Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &SEED));
    let result = runner.run(&hostile(), |request| {
        runtime.block_on(send(&client, &worker, &store, request))
    });
    if let Err(err) = result {
        panic!("{err}\nworker log:\n{}", worker.log());
    }

    runtime.block_on(async {
        // The worker never drained, and nothing with a control character is in the store.
        assert_eq!(worker.status().await["phase"], "running");
        assert!(store.store.list_shutdowns(10).await.unwrap().is_empty());
        let row = store.worker_row(&worker.id).await;
        assert!(row.drain_request.is_none(), "{row:?}");
        let jobs = store
            .store
            .list_jobs(&handover::store::JobFilter {
                status: None,
                limit: Some(100_000),
            })
            .await
            .unwrap();
        for job in jobs {
            handover::text::check_payload(&job.payload)
                .unwrap_or_else(|message| panic!("job {} holds {message}", job.id));
        }
    });
}
