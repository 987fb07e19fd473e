//! The admin pages and JSON API over real HTTP: login and sessions, CSRF on every browser form,
//! 401/403/405/400/404/415 for bad calls, the event stream, and headers that keep pages safe.

mod common;

use common::*;
use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use serde_json::{json, Value};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// Logs in with the admin token; returns the session cookie ("name=value").
async fn login(worker: &WorkerProcess) -> String {
    let response = client()
        .post(worker.url("/login"))
        .form(&[("token", TOKEN), ("next", "/fleet")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()[LOCATION], "/fleet");
    let cookie = response.headers()[SET_COOKIE].to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    cookie.split(';').next().unwrap().to_string()
}

/// The CSRF token a page hands its forms.
async fn csrf_of(worker: &WorkerProcess, cookie: &str) -> String {
    let html = client()
        .get(worker.url("/"))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("a csrf field on the page") + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_log_in_once_and_carry_a_session_and_csrf_token() {
    let store = TestStore::new().await;
    let worker = WorkerProcess::start(&store, &[]).await;
    let http = client();

    // Pages send browsers without a session to the login page; the API says 401.
    let page = http.get(worker.url("/fleet")).send().await.unwrap();
    assert_eq!(page.status(), 303);
    assert_eq!(page.headers()[LOCATION], "/login?next=%2Ffleet");
    let form = http.get(worker.url("/login")).send().await.unwrap();
    assert_eq!(form.status(), 200);
    assert!(form.text().await.unwrap().contains("name=\"token\""));
    let wrong = http
        .post(worker.url("/login"))
        .form(&[("token", "not-the-token-at-all")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get(SET_COOKIE).is_none());
    // The login URL a worker logs works too, and never redirects off-site.
    let by_url = http
        .get(worker.url(&format!("/login?token={TOKEN}&next=//evil.example")))
        .send()
        .await
        .unwrap();
    assert_eq!(by_url.status(), 303);
    assert_eq!(by_url.headers()[LOCATION], "/");

    let cookie = login(&worker).await;
    for path in ["/", "/fleet", "/jobs", "/jobs?status=pending"] {
        let response = http
            .get(worker.url(path))
            .header(COOKIE, &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let csp = response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert_eq!(response.headers()["x-frame-options"], "DENY");
        let html = response.text().await.unwrap();
        assert!(html.contains(&worker.name), "{path}");
    }
    let status = http
        .get(worker.url("/api/status"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 200, "the session also opens the JSON API");

    // Every state-changing browser request needs this session's CSRF token.
    let csrf = csrf_of(&worker, &cookie).await;
    for (path, body) in [
        ("/drain", vec![("mode", "handoff")]),
        ("/drain", vec![("mode", "handoff"), ("csrf", "forged")]),
        ("/drain/cancel", vec![]),
        ("/fleet/nobody/drain", vec![("csrf", "forged")]),
        ("/logout", vec![]),
    ] {
        let response = http
            .post(worker.url(path))
            .header(COOKIE, &cookie)
            .form(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{path} {body:?}");
    }
    let json_without_header = http
        .post(worker.url("/drain"))
        .header(COOKIE, &cookie)
        .json(&json!({"mode": "handoff"}))
        .send()
        .await
        .unwrap();
    assert_eq!(json_without_header.status(), 403);
    assert_eq!(
        worker.status().await["phase"],
        "running",
        "no forged request drained it"
    );

    // With the token: an unknown worker is 404, a bad mode 400 — through the form path too.
    let unknown = http
        .post(worker.url("/fleet/nobody/drain"))
        .header(COOKIE, &cookie)
        .form(&[("csrf", csrf.as_str()), ("mode", "handoff")])
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let bad_mode = http
        .post(worker.url("/drain"))
        .header(COOKIE, &cookie)
        .header("x-csrf-token", &csrf)
        .json(&json!({"mode": "sideways"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_mode.status(), 400);

    // Logging out ends the session.
    let out = http
        .post(worker.url("/logout"))
        .header(COOKIE, &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert_eq!(out.headers()[LOCATION], "/login");
    let after = http
        .get(worker.url("/api/status"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_form_with_its_token_redirects_back_and_starts_the_drain() {
    let store = TestStore::new().await;
    let mut worker = WorkerProcess::start(&store, &[]).await;
    let cookie = login(&worker).await;
    let csrf = csrf_of(&worker, &cookie).await;
    let response = client()
        .post(worker.url("/drain"))
        .header(COOKIE, &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("mode", "handoff"),
            ("reason", "from the page"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()[LOCATION], "/");
    assert_eq!(
        worker
            .wait_exit(std::time::Duration::from_secs(10))
            .await
            .code(),
        Some(0)
    );
    let record = store.store.list_shutdowns(1).await.unwrap().remove(0);
    assert_eq!(record.reason.as_deref(), Some("from the page"));
    assert!(record.requested_by.unwrap().starts_with("admin page"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_api_lists_submits_and_refuses_bad_input() {
    let store = TestStore::new().await;
    let worker = WorkerProcess::start(&store, &[("--concurrency", "1")]).await;
    let http = client();
    let get = |path: &str| http.get(worker.url(path)).bearer_auth(TOKEN).send();

    let created = worker
        .admin_post(
            "/api/jobs",
            json!({"kind": "noop", "count": 3, "max_attempts": 2}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let ids: Value = created.json().await.unwrap();
    assert_eq!(ids["ids"].as_array().unwrap().len(), 3);
    for (body, needle) in [
        (json!({"payload": {}}), "missing field `kind`"),
        (
            json!({"kind": "demo", "payload": {"seed": 1}}),
            "invalid demo payload",
        ),
        (json!({"kind": "bad kind!"}), "invalid job kind"),
        (json!({"kind": "teleport"}), "runs no \"teleport\" jobs"),
        (json!({"kind": "noop", "count": 0}), "count must be"),
        (
            json!({"kind": "noop", "max_attempts": 0}),
            "max_attempts must be",
        ),
        (json!({"kind": "noop", "colour": "red"}), "unknown field"),
    ] {
        let response = worker.admin_post("/api/jobs", body.clone()).await;
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        assert!(
            error["error"].as_str().unwrap().contains(needle),
            "{body}: {error}"
        );
    }
    let as_form = http
        .post(worker.url("/api/jobs"))
        .bearer_auth(TOKEN)
        .form(&[("kind", "noop")])
        .send()
        .await
        .unwrap();
    assert_eq!(as_form.status(), 415);
    assert_eq!(
        store
            .store
            .list_jobs(&Default::default())
            .await
            .unwrap()
            .len(),
        3,
        "nothing else was written"
    );

    let listed: Value = get("/api/jobs?limit=2")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    for path in [
        "/api/jobs?status=bogus",
        "/api/jobs?limit=0",
        "/api/jobs?limit=x",
        "/api/shutdowns?limit=x",
        "/api/jobs?colour=red",
    ] {
        assert_eq!(get(path).await.unwrap().status(), 400, "{path}");
    }
    let workers: Value = get("/api/workers").await.unwrap().json().await.unwrap();
    assert_eq!(workers[0]["id"], worker.id.as_str());
    assert_eq!(get("/api/shutdowns").await.unwrap().status(), 200);
    let not_found = worker.admin_post("/fleet/nobody/drain", json!({})).await;
    assert_eq!(not_found.status(), 404);

    worker
        .assert_methods_not_allowed(&[
            ("DELETE", "/api/jobs"),
            ("GET", "/logout"),
            ("PUT", "/fleet/x/drain"),
            ("POST", "/api/workers"),
            ("POST", "/api/events"),
            ("DELETE", "/"),
        ])
        .await;
    for path in ["/api/workers", "/api/shutdowns", "/api/jobs", "/api/events"] {
        assert_eq!(
            http.get(worker.url(path)).send().await.unwrap().status(),
            401,
            "{path}"
        );
    }
    for (path, content_type) in [
        ("/static/admin.css", "text/css"),
        ("/static/admin.js", "application/javascript"),
    ] {
        let asset = http.get(worker.url(path)).send().await.unwrap();
        assert_eq!(asset.status(), 200, "{path}");
        let got = asset.headers()[CONTENT_TYPE].to_str().unwrap().to_string();
        assert!(got.starts_with(content_type), "{path}: {got}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_starts_with_the_status_and_ends_with_stopped() {
    let store = TestStore::new().await;
    let mut worker = WorkerProcess::start(&store, &[]).await;
    let mut stream = client()
        .get(worker.url("/api/events"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(stream.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut text = String::new();
    let mut phases = Vec::new();
    let mut signalled = false;
    while let Some(chunk) = tokio::time::timeout(std::time::Duration::from_secs(10), stream.chunk())
        .await
        .expect("events keep coming until stopped")
        .unwrap()
    {
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) {
                assert!(event.contains("event: status"), "{event}");
                let status: Value = serde_json::from_str(data).unwrap();
                phases.push(status["phase"].as_str().unwrap().to_string());
            }
        }
        if !signalled && !phases.is_empty() {
            assert_eq!(
                phases[0], "running",
                "the first event is the current status"
            );
            worker.signal(nix::sys::signal::Signal::SIGTERM);
            signalled = true;
        }
    }
    // One event per phase change, none skipped even though this shutdown takes about a millisecond.
    let mut distinct = phases.clone();
    distinct.dedup();
    assert_eq!(
        distinct,
        [
            "running",
            "draining",
            "checkpointing",
            "releasing",
            "deregistering",
            "stopped"
        ],
        "{phases:?}"
    );
    assert_eq!(
        worker
            .wait_exit(std::time::Duration::from_secs(10))
            .await
            .code(),
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_redirects_only_to_this_site_and_never_fails() {
    let store = TestStore::new().await;
    let worker = WorkerProcess::start(&store, &[]).await;
    let http = client();
    // (the `next` query value as sent on the wire, the Location expected)
    for (next, expected) in [
        ("/fleet", "/fleet"),
        ("/jobs%3Fstatus%3Ddead", "/jobs?status=dead"),
        ("/%09/evil.example/x", "/"),
        ("/%0A/evil.example", "/"),
        ("/%0A", "/"),
        ("/%0D%0ASet-Cookie:%20x=y", "/"),
        ("/%00", "/"),
        ("%09//evil.example", "/"),
        ("//evil.example", "/"),
        ("/%5Cevil.example", "/"),
        ("/%5C/evil.example", "/"),
        ("https:evil.example", "/"),
        ("https://evil.example/", "/"),
        ("/..//evil.example", "/"),
        ("/.//evil.example", "/"),
        ("/%2e%2e//evil.example", "/"),
        ("/%20/evil.example", "/%20/evil.example"),
        ("/f%C3%BCr%20alle", "/f%C3%BCr%20alle"),
        ("/fleet%23top", "/fleet"),
    ] {
        let response = http
            .get(worker.url(&format!("/login?token={TOKEN}&next={next}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 303, "next={next}");
        assert_eq!(
            response.headers()[LOCATION].as_bytes(),
            expected.as_bytes(),
            "next={next}"
        );
        assert!(
            response.headers().get(SET_COOKIE).is_some(),
            "next={next}: logged in"
        );
    }
    let long = format!("/{}", "a".repeat(10_000));
    let response = http
        .post(worker.url("/login"))
        .form(&[("token", TOKEN), ("next", long.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()[LOCATION], "/", "a very long next");

    // Error paths never answer 5xx and never set a session.
    for path in [
        "/login?token=not-the-token-at-all&next=/%0A".to_string(),
        format!("/login?token={TOKEN}&token={TOKEN}&next=/"),
        format!("/login?token={TOKEN}&next=/a&next=/b"),
    ] {
        let response = http.get(worker.url(&path)).send().await.unwrap();
        assert!(
            response.status().is_client_error(),
            "{path}: {}",
            response.status()
        );
        assert!(response.headers().get(SET_COOKIE).is_none(), "{path}");
    }
}
