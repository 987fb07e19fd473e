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
    let status = worker.status().await;
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
