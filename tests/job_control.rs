//! Job control on the real binary: a cancel reaches a running `exec` job's processes (SIGTERM,
//! then SIGKILL after `--cancel-grace`) and leaves the worker ready and claiming; retry; a job's
//! journey over HTTP; and every new endpoint and command tried with bad input.

mod common;

use common::{run_cli, wait_for, TestStore, WorkerProcess};
use handover::store::{JobId, JobStatus, NewJob};
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const GRACE_MS: u64 = 600;

/// A script that ignores SIGTERM (so only the SIGKILL after the grace ends it), writes its pid to
/// `$1` once started, and runs until killed, with a child in its process group.
fn stubborn_script(store: &TestStore) -> PathBuf {
    let path = store.dir.path().join("stubborn.sh");
    std::fs::write(
        &path,
        "trap '' TERM\necho $$ > \"$1.tmp\" && mv \"$1.tmp\" \"$1\"\nwhile :; do sleep 1; done\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Live (not zombie) members of a process group.
fn group_members(pgid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                return false;
            };
            let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
            fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
        })
        .collect()
}

async fn read_pid(path: &Path) -> i32 {
    wait_for("the job's pid file", Duration::from_secs(20), || async {
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    })
    .await
}

async fn events(worker: &WorkerProcess, id: JobId) -> Vec<Value> {
    let job: Value = worker
        .admin_get(&format!("/api/jobs/{id}"))
        .await
        .json()
        .await
        .unwrap();
    job["events"].as_array().cloned().unwrap_or_default()
}

fn names(events: &[Value]) -> Vec<&str> {
    events.iter().filter_map(|e| e["event"].as_str()).collect()
}

/// Cancels the running job over HTTP; returns how long until the store says `cancelled`.
async fn cancel_and_wait(store: &TestStore, worker: &WorkerProcess, id: JobId) -> Duration {
    let asked = Instant::now();
    let response = worker
        .admin_post(&format!("/api/jobs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["cancel_requested"], true);
    assert_eq!(body["owner"], json!(worker.id));
    store
        .wait_for_status(id, JobStatus::Cancelled, Duration::from_secs(20))
        .await;
    asked.elapsed()
}

async fn a_cancel_reaches_a_running_exec_job(store: TestStore) {
    let grace = format!("{GRACE_MS}ms");
    let mut worker = WorkerProcess::start(
        &store,
        &[("--cancel-grace", &grace), ("--concurrency", "2")],
    )
    .await;
    let script = stubborn_script(&store);
    let pid_file = store.dir.path().join("pid");
    let id = store
        .store
        .submit(&[NewJob::new(
            "exec",
            json!({"cmd": ["sh", script.to_str().unwrap(), pid_file.to_str().unwrap()]}),
        )])
        .await
        .unwrap()[0];
    let leader = read_pid(&pid_file).await;
    wait_for("the script's child", Duration::from_secs(10), || async {
        (group_members(leader).len() >= 2).then_some(())
    })
    .await;

    let took = cancel_and_wait(&store, &worker, id).await;
    // SIGTERM is ignored: only the SIGKILL after the grace ends the group.
    assert!(
        took >= Duration::from_millis(GRACE_MS),
        "cancelled after {took:?}, before the grace"
    );
    assert!(took < Duration::from_secs(10), "cancel took {took:?}");
    assert!(
        group_members(leader).is_empty(),
        "processes left: {:?}",
        group_members(leader)
    );
    let job = store.job(id).await;
    assert_eq!(job.status, JobStatus::Cancelled);
    assert_eq!(job.attempts, 1);
    // The worker stays ready, counted the cancel, freed the slot and goes on claiming.
    assert_eq!(worker.admin_get("/readyz").await.status(), 200);
    worker
        .wait_for_metric(r#"handover_jobs_cancelled_total{kind="exec"}"#, 1.0)
        .await;
    let status = wait_for("the slot to be freed", Duration::from_secs(5), || async {
        let status = worker.status().await;
        (status["in_flight"] == json!([])).then_some(status)
    })
    .await;
    assert_eq!(status["in_flight"], json!([]), "{status}");
    let noop = store.submit("noop", json!({})).await;
    store
        .wait_for_status(noop, JobStatus::Completed, Duration::from_secs(10))
        .await;
    let journey = events(&worker, id).await;
    assert_eq!(
        names(&journey),
        ["submitted", "claimed", "cancel_requested", "cancelled"]
    );
    assert!(journey[1..]
        .iter()
        .all(|e| e["worker_id"] == json!(worker.id)));

    // Finished: a second cancel is refused; a retry runs it again, and it can be cancelled again.
    let again = worker
        .admin_post(&format!("/api/jobs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(again.status(), 409);
    std::fs::remove_file(&pid_file).unwrap();
    let retried = worker
        .admin_post(&format!("/api/jobs/{id}/retry"), json!({}))
        .await;
    assert_eq!(retried.status(), 200);
    let leader = read_pid(&pid_file).await;
    assert_eq!(store.job(id).await.attempts, 1, "attempts were reset");
    cancel_and_wait(&store, &worker, id).await;
    assert!(group_members(leader).is_empty());
    assert_eq!(
        names(&events(&worker, id).await),
        [
            "submitted",
            "claimed",
            "cancel_requested",
            "cancelled",
            "retried",
            "claimed",
            "cancel_requested",
            "cancelled"
        ]
    );

    worker.signal(Signal::SIGTERM);
    let exit = worker.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(exit.code(), Some(0), "log:\n{}", worker.log());
}

#[tokio::test]
async fn a_cancel_reaches_a_running_exec_job_on_sqlite() {
    a_cancel_reaches_a_running_exec_job(TestStore::new().await).await;
}

#[tokio::test]
async fn a_cancel_reaches_a_running_exec_job_on_postgres() {
    a_cancel_reaches_a_running_exec_job(TestStore::postgres().await).await;
}

#[tokio::test]
async fn the_journey_shows_a_sigterm_hand_back_and_the_second_worker() {
    let store = TestStore::new().await;
    let mut first = WorkerProcess::start(&store, &[]).await;
    let spec = common::DemoSpec::timed("journey", 0.1, 30);
    let id = store.submit("demo", spec.payload()).await;
    store
        .wait_for_checkpoint(id, 1, Duration::from_secs(20))
        .await;
    first.signal(Signal::SIGTERM);
    assert_eq!(
        first.wait_exit(Duration::from_secs(20)).await.code(),
        Some(0)
    );
    let mut second = WorkerProcess::start(&store, &[]).await;
    store
        .wait_for_status(id, JobStatus::Completed, Duration::from_secs(60))
        .await;
    let journey = events(&second, id).await;
    assert_eq!(
        names(&journey),
        ["submitted", "claimed", "released", "claimed", "completed"]
    );
    assert_eq!(journey[1]["worker_id"], json!(first.id));
    let released = &journey[2];
    assert_eq!(released["worker_id"], json!(first.id));
    assert_eq!(released["detail"]["reason"], "shutdown");
    assert_eq!(released["detail"]["shutdown_id"], json!(first.id));
    assert!(released["detail"]["checkpoint"]["i"].as_u64().unwrap() > 0);
    assert_eq!(journey[3]["worker_id"], json!(second.id));
    assert_eq!(journey[4]["worker_id"], json!(second.id));
    // The page shows both workers and links the hand-back to the shutdown record.
    let page = second
        .admin_get(&format!("/jobs/{id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains(&format!("href=\"/fleet#shutdown-{}\"", first.id)));
    assert!(page.contains(&second.id[..8]));
    second.signal(Signal::SIGTERM);
    assert_eq!(
        second.wait_exit(Duration::from_secs(20)).await.code(),
        Some(0)
    );
}

#[tokio::test]
async fn the_job_endpoints_refuse_bad_input_with_a_clear_error() {
    let store = TestStore::new().await;
    let mut worker = WorkerProcess::start(&store, &[]).await;
    let pending = store
        .store
        .submit(&[NewJob::new("noop-later", json!({}))])
        .await
        .unwrap()[0];
    for (path, status, message) in [
        ("/api/jobs/abc", 400, "positive integer"),
        ("/api/jobs/0", 400, "positive integer"),
        ("/api/jobs/-3", 400, "positive integer"),
        ("/api/jobs/999999", 404, "not found"),
        ("/jobs/abc", 400, "positive integer"),
        ("/jobs/999999", 404, "not found"),
    ] {
        let response = worker.admin_get(path).await;
        assert_eq!(response.status(), status, "GET {path}");
        let body = response.text().await.unwrap();
        assert!(body.contains(message), "GET {path}: {body}");
    }
    let posts = [
        ("/api/jobs/abc/cancel", json!({}), 400, "positive integer"),
        ("/api/jobs/999999/cancel", json!({}), 404, "not found"),
        (
            &*format!("/api/jobs/{pending}/cancel"),
            json!({"bogus": 1}),
            400,
            "unknown field",
        ),
        (
            &*format!("/api/jobs/{pending}/cancel"),
            json!({"from_scratch": true}),
            400,
            "retry only",
        ),
        (
            &*format!("/api/jobs/{pending}/retry"),
            json!({"from_scratch": "yes"}),
            400,
            "malformed",
        ),
        (
            &*format!("/api/jobs/{pending}/retry"),
            json!({}),
            409,
            "only dead, failed and cancelled",
        ),
        ("/api/jobs/999999/retry", json!({}), 404, "not found"),
        (
            "/api/jobs",
            json!({"kind": "teleport"}),
            400,
            "known kinds: demo, exec, noop",
        ),
    ];
    for (path, body, status, message) in posts {
        let response = worker.admin_post(path, body.clone()).await;
        assert_eq!(response.status(), status, "POST {path} {body}");
        let text = response.text().await.unwrap();
        assert!(text.contains(message), "POST {path} {body}: {text}");
    }
    // Nothing was changed by the refusals.
    assert_eq!(store.job(pending).await.status, JobStatus::Pending);
    let allowed = worker
        .admin_post(
            "/api/jobs",
            json!({"kind": "teleport", "allow_unknown_kind": true}),
        )
        .await;
    assert_eq!(allowed.status(), 201);
    let cancelled = worker
        .admin_post(&format!("/api/jobs/{pending}/cancel"), json!({}))
        .await;
    assert_eq!(cancelled.status(), 200);
    assert_eq!(store.job(pending).await.status, JobStatus::Cancelled);
    worker.signal(Signal::SIGTERM);
    worker.wait_exit(Duration::from_secs(20)).await;
}

#[tokio::test]
async fn cancel_retry_and_submit_on_the_command_line() {
    let store = TestStore::new().await;
    let url = store.url.as_str();
    for (args, message) in [
        (vec!["cancel", "--store", url], "JOB"),
        (vec!["cancel", "--store", url, "abc"], "invalid value"),
        (vec!["cancel", "--store", url, "0"], "invalid value"),
        (vec!["retry", "--store", url, "-1"], "unexpected argument"),
        (
            vec!["retry", "--store", url, "1", "--from-scratch=maybe"],
            "from-scratch",
        ),
    ] {
        let (code, _, stderr) = run_cli(&args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    let (code, _, stderr) = run_cli(&["submit", "--store", url, "--kind", "teleport"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("known kinds: demo, exec, noop") && stderr.contains("--allow-unknown-kind"),
        "{stderr}"
    );
    assert!(
        store.all_jobs().await.is_empty(),
        "a refused submit writes nothing"
    );
    let (code, stdout, stderr) = run_cli(&[
        "submit",
        "--store",
        url,
        "--kind",
        "teleport",
        "--allow-unknown-kind",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let id: i64 = stdout.trim().parse().unwrap();
    let done = store.submit("noop", json!({})).await;

    let (code, stdout, stderr) = run_cli(&["cancel", "--store", url, &id.to_string(), "999999"]);
    assert_eq!(code, 1, "one of them was not found");
    assert!(stdout.contains(&format!("job {id}: cancelled")), "{stdout}");
    assert!(stderr.contains("job 999999 not found"), "{stderr}");
    assert_eq!(store.job(id).await.status, JobStatus::Cancelled);

    let (code, stdout, stderr) = run_cli(&["retry", "--store", url, &id.to_string()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("pending again"), "{stdout}");
    assert_eq!(store.job(id).await.status, JobStatus::Pending);
    let (code, _, stderr) = run_cli(&["retry", "--store", url, &done.to_string()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("is pending"), "{stderr}");
}

/// A POST of a form body with the admin token (the jobs page's bulk form).
async fn post_form(worker: &WorkerProcess, path: &str, body: &str) -> reqwest::Response {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(worker.url(path))
        .bearer_auth(common::TOKEN)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

async fn page(worker: &WorkerProcess, path: &str) -> (u16, String) {
    let response = worker.admin_get(path).await;
    (response.status().as_u16(), response.text().await.unwrap())
}

fn row_ids(html: &str) -> Vec<i64> {
    html.split("<tr data-job-id=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next()?.parse().ok())
        .collect()
}

#[tokio::test]
async fn the_jobs_page_filters_pages_by_keyset_and_acts_in_bulk() {
    let store = TestStore::new().await;
    let mut worker = WorkerProcess::start(&store, &[]).await;
    // A kind no worker serves: nothing runs meanwhile, and the page marks every one of them.
    let waiting: Vec<NewJob> = (0..250)
        .map(|_| NewJob::new("nobody-serves", json!({})))
        .collect();
    let ids = store.store.submit(&waiting).await.unwrap();

    let (status, first) = page(&worker, "/jobs").await;
    assert_eq!(status, 200);
    let shown = row_ids(&first);
    assert_eq!(shown.len(), 200);
    assert_eq!(shown[0], *ids.last().unwrap(), "newest first");
    assert!(shown.windows(2).all(|w| w[0] > w[1]));
    assert_eq!(
        first.matches("unservable").count(),
        200,
        "no live worker runs them"
    );
    let next = first
        .split("id=\"next-page\" href=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a link to the older jobs")
        .replace("&amp;", "&");
    assert_eq!(next, format!("/jobs?before={}", shown[199]));
    let (_, second) = page(&worker, &next).await;
    let older = row_ids(&second);
    assert_eq!(older.len(), 50);
    assert_eq!(
        older[0],
        shown[199] - 1,
        "the next page starts below the last id shown"
    );
    assert!(!second.contains("id=\"next-page\""));

    let (_, filtered) = page(&worker, "/jobs?kind=demo").await;
    assert!(row_ids(&filtered).is_empty());
    let (_, by_status) = page(&worker, "/jobs?status=pending&kind=nobody-serves&limit=10").await;
    assert_eq!(row_ids(&by_status).len(), 10);

    let found = worker.admin_get(&format!("/jobs?id={}", ids[6])).await;
    assert_eq!(found.status(), 200);
    assert_eq!(found.url().path(), format!("/jobs/{}", ids[6]));
    for (path, message) in [
        ("/jobs?id=abc", "positive integer"),
        ("/jobs?before=x", "before"),
        ("/jobs?kind=bad%20kind", "kind"),
        ("/jobs?limit=0", "limit"),
        ("/jobs?status=sleeping", "sleeping"),
        ("/jobs?colour=red", "unknown field"),
    ] {
        let (status, body) = page(&worker, path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains(message), "{path}: {body}");
    }

    // Bulk cancel, then bulk retry, of selected jobs; one of them cannot be retried.
    let body = format!("action=cancel&ids={}&ids={}", ids[0], ids[1]);
    let response = post_form(&worker, "/jobs/bulk", &body).await;
    assert_eq!(response.status(), 303);
    assert_eq!(
        response.headers()["location"],
        "/jobs?bulk=cancel&done=2&refused=0"
    );
    assert_eq!(store.job(ids[0]).await.status, JobStatus::Cancelled);
    assert_eq!(store.job(ids[1]).await.status, JobStatus::Cancelled);
    let body = format!("action=retry&ids={}&ids={}", ids[0], ids[2]);
    let response = post_form(&worker, "/jobs/bulk", &body).await;
    assert_eq!(
        response.headers()["location"],
        "/jobs?bulk=retry&done=1&refused=1"
    );
    assert_eq!(store.job(ids[0]).await.status, JobStatus::Pending);
    let (_, notice) = page(&worker, "/jobs?bulk=retry&done=1&refused=1").await;
    assert!(notice.contains("retry: 1 done, 1 refused"), "{notice}");

    for (body, status, message) in [
        ("action=cancel".to_string(), 400, "select at least one job"),
        (
            format!("action=delete&ids={}", ids[3]),
            400,
            "cancel or retry",
        ),
        ("action=cancel&ids=abc".to_string(), 400, "positive integer"),
        (
            format!("action=cancel&ids={}&who=me", ids[3]),
            400,
            "unknown field",
        ),
    ] {
        let response = post_form(&worker, "/jobs/bulk", &body).await;
        assert_eq!(response.status(), status, "{body}");
        let text = response.text().await.unwrap();
        assert!(text.contains(message), "{body}: {text}");
    }
    let json_body = worker
        .admin_post("/jobs/bulk", json!({"action": "cancel", "ids": [ids[3]]}))
        .await;
    assert_eq!(json_body.status(), 415);
    assert_eq!(
        store.job(ids[3]).await.status,
        JobStatus::Pending,
        "refusals change nothing"
    );
    worker.signal(Signal::SIGTERM);
    worker.wait_exit(Duration::from_secs(20)).await;
}

#[tokio::test]
async fn an_exec_jobs_output_streams_live_over_the_status_events() {
    let store = TestStore::new().await;
    let mut worker = WorkerProcess::start(&store, &[]).await;
    let id = store
        .store
        .submit(&[NewJob::new(
            "exec",
            json!({"cmd": ["sh", "-c", "i=0; while :; do i=$((i+1)); echo \"line $i\"; sleep 0.05; done"]}),
        )])
        .await
        .unwrap()[0];
    let mut events = reqwest::Client::new()
        .get(worker.url("/api/events"))
        .bearer_auth(common::TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    // Read status events until one shows the running job's output having reached line 5.
    let mut buffer = String::new();
    let seen = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let chunk = events
                .chunk()
                .await
                .unwrap()
                .expect("the stream stays open");
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                let Some(data) = event.lines().find_map(|l| l.strip_prefix("data:")) else {
                    continue;
                };
                let status: Value = serde_json::from_str(data.trim()).unwrap();
                let Some(job) = status["in_flight"]
                    .as_array()
                    .and_then(|jobs| jobs.iter().find(|j| j["job_id"] == json!(id)))
                else {
                    continue;
                };
                let stdout = job["output"]["stdout"].as_str().unwrap_or_default();
                if stdout.contains("line 5\n") {
                    return stdout.to_string();
                }
            }
        }
    })
    .await
    .expect("the output arrived live within 20 s");
    assert!(seen.starts_with("line 1\n"), "{seen}");
    assert_eq!(
        store.job(id).await.status,
        JobStatus::Running,
        "still running"
    );
    let page = worker.admin_get("/").await.text().await.unwrap();
    assert!(
        page.contains("cell-output"),
        "the worker page has an output column"
    );
    cancel_and_wait(&store, &worker, id).await;
    worker.signal(Signal::SIGTERM);
    assert_eq!(
        worker.wait_exit(Duration::from_secs(20)).await.code(),
        Some(0)
    );
}
