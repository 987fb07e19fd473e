//! Every HTTP route with good and bad input: auth (401), wrong methods (405), malformed bodies (400),
//! unknown paths (404) — and a rejected request changes nothing.

mod common;

use common::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_and_metrics_are_open_and_admin_routes_are_not() {
    let store = TestStore::new().await;
    let worker = WorkerProcess::start(&store, &[]).await;
    let client = reqwest::Client::new();

    let live = client.get(worker.url("/livez")).send().await.unwrap();
    assert_eq!(live.status(), 200);
    let ready = client.get(worker.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(
        body,
        json!({"ready": true, "phase": "running", "store_up": true})
    );
    let metrics = client.get(worker.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = metrics.text().await.unwrap();
    assert_eq!(metric_value(&text, "handover_ready"), Some(1.0));
    assert_eq!(
        metric_value(&text, r#"handover_phase{phase="running"}"#),
        Some(1.0)
    );

    for (method, path) in [
        ("GET", "/api/status"),
        ("POST", "/drain"),
        ("POST", "/drain/cancel"),
    ] {
        let request = client.request(method.parse().unwrap(), worker.url(path));
        let anonymous = request.try_clone().unwrap().send().await.unwrap();
        assert_eq!(anonymous.status(), 401, "{method} {path} without a token");
        assert_eq!(
            anonymous.headers().get("www-authenticate").unwrap(),
            "Bearer"
        );
        let wrong = request
            .bearer_auth("not-the-token-at-all")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401, "{method} {path} with a wrong token");
    }
    assert_eq!(
        worker.status().await["phase"],
        "running",
        "nothing was drained"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_methods_unknown_paths_and_malformed_bodies_are_refused() {
    let store = TestStore::new().await;
    let worker = WorkerProcess::start(&store, &[]).await;
    let client = reqwest::Client::new();

    worker
        .assert_methods_not_allowed(&[
            ("POST", "/readyz"),
            ("POST", "/livez"),
            ("DELETE", "/metrics"),
            ("GET", "/drain"),
            ("GET", "/drain/cancel"),
            ("POST", "/api/status"),
        ])
        .await;
    let missing = client
        .get(worker.url("/no/such/page"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    let post = |body: &'static str, content_type: &'static str| {
        client
            .post(worker.url("/drain"))
            .bearer_auth(TOKEN)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    for (body, content_type, needle) in [
        ("{\"mode\":", "application/json", "malformed JSON"),
        (
            "{\"mode\":\"gently\"}",
            "application/json",
            "handoff, finish",
        ),
        ("{\"colour\":\"red\"}", "application/json", "unknown field"),
        ("[1,2]", "application/json", "malformed JSON"),
        ("drain now", "text/plain", "unsupported content type"),
        (
            "mode=sideways",
            "application/x-www-form-urlencoded",
            "handoff, finish",
        ),
    ] {
        let response = post(body, content_type).await.unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        assert!(
            error["error"].as_str().unwrap().contains(needle),
            "{body}: {error}"
        );
    }
    let huge = "x".repeat(64 * 1024);
    let response = client
        .post(worker.url("/drain"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(format!("{{\"reason\":\"{huge}\"}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let status = worker.status().await;
    assert_eq!(
        status["phase"], "running",
        "no rejected request started a drain"
    );
    assert_eq!(status["ready"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_the_spec_fields_and_in_flight_jobs() {
    let store = TestStore::new().await;
    let spec = DemoSpec::timed("status", 0.2, 200);
    let job_id = store.submit("demo", spec.payload()).await;
    let worker = WorkerProcess::start(&store, &[]).await;
    store
        .wait_for_checkpoint(job_id, 1, std::time::Duration::from_secs(20))
        .await;
    // The running job's checkpoint reaches its in-memory view just after the store write.
    let status = wait_for(
        "the checkpoint in /api/status",
        std::time::Duration::from_secs(5),
        || async {
            let status = worker.status().await;
            (!status["in_flight"][0]["checkpoint"].is_null()).then_some(status)
        },
    )
    .await;
    for field in [
        "worker_id",
        "name",
        "phase",
        "ready",
        "trigger",
        "mode",
        "deadline",
        "phases",
        "in_flight",
    ] {
        assert!(status.get(field).is_some(), "status has {field}: {status}");
    }
    assert_eq!(status["worker_id"], worker.id.as_str());
    assert_eq!(status["name"], worker.name.as_str());
    let in_flight = status["in_flight"].as_array().unwrap();
    assert_eq!(in_flight.len(), 1);
    assert_eq!(in_flight[0]["job_id"], job_id);
    assert_eq!(in_flight[0]["kind"], "demo");
    assert!(in_flight[0]["checkpoint"]["i"].as_u64().unwrap() >= spec.checkpoint_every);
    let phases: Vec<&str> = status["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, vec!["starting", "running"]);

    // During a drain the deadline is set and counts down from --grace.
    let answer = worker
        .admin_post("/drain", json!({"mode": "handoff"}))
        .await;
    let body: Value = answer.json().await.unwrap();
    let deadline: chrono::DateTime<chrono::Utc> =
        body["deadline"].as_str().unwrap().parse().unwrap();
    let left = deadline - chrono::Utc::now();
    assert!(
        left > chrono::Duration::seconds(15) && left <= chrono::Duration::seconds(20),
        "{left}"
    );
}

/// Asserts an error answer: `status`, a JSON content type and a non-empty `error` field; returns it.
async fn assert_json_error(response: reqwest::Response, status: u16, what: &str) -> String {
    assert_eq!(response.status(), status, "{what}");
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "{what}: content type {content_type:?}"
    );
    let body: Value = response.json().await.unwrap();
    let error = body["error"].as_str().unwrap_or_default().to_string();
    assert!(!error.trim().is_empty(), "{what}: {body}");
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejection_is_a_json_error() {
    let store = TestStore::new().await;
    let worker = WorkerProcess::start(&store, &[]).await;
    // A fresh connection per request: the server closes one whose oversized body it did not read.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();

    // Query strings the extractors refuse, on the API, the pages and the login URL.
    for path in [
        "/api/jobs?limit=abc",
        "/api/jobs?colour=red",
        "/api/jobs?limit=1&limit=2",
        "/api/shutdowns?limit=abc",
        "/api/shutdowns?since=yesterday",
        "/jobs?limit=abc",
        "/login?token=a&token=b",
        "/login?next=%2F&next=%2Fx",
    ] {
        let response = client
            .get(worker.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert!(
            response.headers().get("set-cookie").is_none(),
            "{path} set no session"
        );
        assert_json_error(response, 400, path).await;
    }
    // A path segment that is not UTF-8 once decoded.
    let response = client
        .post(worker.url("/fleet/%FF%FE/drain"))
        .bearer_auth(TOKEN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_json_error(response, 400, "/fleet/%FF%FE/drain").await;

    // Oversized bodies: the login form, a job, a drain.
    let huge = "x".repeat(64 * 1024);
    let response = client
        .post(worker.url("/login"))
        .form(&[("token", huge.as_str())])
        .send()
        .await
        .unwrap();
    assert!(response.headers().get("set-cookie").is_none());
    assert_json_error(response, 413, "an oversized login form").await;
    for path in ["/api/jobs", "/drain", "/fleet/nobody/drain"] {
        let response = client
            .post(worker.url(path))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(format!("{{\"reason\":\"{huge}\"}}"))
            .send()
            .await
            .unwrap();
        assert_json_error(response, 413, path).await;
    }

    // Wrong methods and unknown paths.
    for (method, path) in [
        ("DELETE", "/api/jobs"),
        ("GET", "/drain"),
        ("PUT", "/login"),
        ("POST", "/livez"),
    ] {
        let response = client
            .request(method.parse().unwrap(), worker.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_json_error(response, 405, &format!("{method} {path}")).await;
    }
    let missing = client.get(worker.url("/no/such")).send().await.unwrap();
    assert_json_error(missing, 404, "/no/such").await;

    let status = worker.status().await;
    assert_eq!(status["phase"], "running", "nothing was drained");
    assert!(store
        .store
        .list_jobs(&Default::default())
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_limits_out_of_range_are_refused_alike() {
    let store = TestStore::new().await;
    let worker = WorkerProcess::start(&store, &[]).await;
    for path in ["/api/jobs", "/api/shutdowns"] {
        for limit in ["0", "-1", "1001", "9223372036854775807"] {
            let url = format!("{path}?limit={limit}");
            let error = assert_json_error(worker.admin_get(&url).await, 400, &url).await;
            assert!(
                error.contains("limit must be between 1 and 1000"),
                "{url}: {error}"
            );
        }
        for limit in ["1", "1000"] {
            let url = format!("{path}?limit={limit}");
            let response = worker.admin_get(&url).await;
            assert_eq!(response.status(), 200, "{url}");
            let _: Vec<Value> = response.json().await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_and_long_text_are_refused_at_the_edge() {
    let store = TestStore::new().await;
    let worker = WorkerProcess::start(&store, &[]).await;
    let long_reason = "r".repeat(501);
    let long_name = "n".repeat(201);

    // This worker's drain: the reason and who asked are one-line fields.
    for (body, needle) in [
        (
            json!({"reason": "r\u{0}r"}),
            "reason contains a control character (U+0000)",
        ),
        (
            json!({"reason": "two\nlines"}),
            "reason contains a control character (U+000A)",
        ),
        (
            json!({"reason": "\u{1b}[2J"}),
            "reason contains a control character (U+001B)",
        ),
        (
            json!({"reason": long_reason}),
            "reason is longer than 500 bytes",
        ),
        (
            json!({"requested_by": "me\tyou"}),
            "requested_by contains a control character (U+0009)",
        ),
        (
            json!({"requested_by": long_name}),
            "requested_by is longer than 200 bytes",
        ),
    ] {
        let response = worker.admin_post("/drain", body.clone()).await;
        let error = assert_json_error(response, 400, &body.to_string()).await;
        assert!(error.contains(needle), "{body}: {error}");
    }
    let form = reqwest::Client::new()
        .post(worker.url("/drain"))
        .bearer_auth(TOKEN)
        .form(&[("reason", "a\u{0}b")])
        .send()
        .await
        .unwrap();
    let error = assert_json_error(form, 400, "a form reason with NUL").await;
    assert!(error.contains("U+0000"), "{error}");

    // Another worker's drain: the worker in the path and the body.
    let id = worker.id.as_str();
    for (path, body, needle) in [
        (
            "/fleet/w%00x/drain".to_string(),
            json!({}),
            "worker contains a control character (U+0000)",
        ),
        (
            format!("/fleet/{long_name}/drain"),
            json!({}),
            "worker is longer than 200 bytes",
        ),
        (
            format!("/fleet/{id}/drain"),
            json!({"reason": "r\u{0}r"}),
            "reason contains a control character (U+0000)",
        ),
        (
            format!("/fleet/{id}/drain"),
            json!({"requested_by": "x\u{7}"}),
            "requested_by contains a control character (U+0007)",
        ),
    ] {
        let response = worker.admin_post(&path, body.clone()).await;
        let error = assert_json_error(response, 400, &format!("{path} {body}")).await;
        assert!(error.contains(needle), "{path} {body}: {error}");
    }

    // Jobs: payload strings and keys, with the JSON path named.
    for (body, needle) in [
        (
            json!({"kind": "noop", "payload": {"cmd": ["sh", "a\u{0}b"]}}),
            "payload.cmd[1] contains a control character (U+0000)",
        ),
        (
            json!({"kind": "noop", "payload": {"env": {"K\u{1}": "v"}}}),
            "a key in payload.env contains a control character (U+0001)",
        ),
        (
            json!({"kind": "demo", "payload": {"seed": "\u{1b}]0;x\u{7}", "iterations": 5}}),
            "payload.seed contains a control character (U+001B)",
        ),
        (json!({"kind": "no\u{0}op"}), "invalid job kind"),
    ] {
        let response = worker.admin_post("/api/jobs", body.clone()).await;
        let error = assert_json_error(response, 400, &body.to_string()).await;
        assert!(error.contains(needle), "{body}: {error}");
    }

    // Nothing was written: no job, no drain request, no drain, no shutdown record.
    assert!(store
        .store
        .list_jobs(&Default::default())
        .await
        .unwrap()
        .is_empty());
    let row = store.worker_row(&worker.id).await;
    assert!(row.drain_request.is_none(), "{row:?}");
    assert_eq!(worker.status().await["phase"], "running");
    assert!(store.store.list_shutdowns(10).await.unwrap().is_empty());

    // Multi-line text is fine inside a payload, and reaches the store as sent.
    let created = worker
        .admin_post(
            "/api/jobs",
            json!({"kind": "noop", "payload": {"script": "a\n\tb\r\n", "é": "ü"}}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let ids: Value = created.json().await.unwrap();
    let job = store.job(ids["ids"][0].as_i64().unwrap()).await;
    assert_eq!(job.payload, json!({"script": "a\n\tb\r\n", "é": "ü"}));
}
