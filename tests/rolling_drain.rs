//! Drain cost and rolling drains with real binaries (SPEC §10 "Fleet operations"): the drain ETA
//! and work at risk of a job with a known checkpoint period, the warning when checkpoints are
//! farther apart than `--grace` allows, a rolling drain of three PostgreSQL workers one at a time,
//! two concurrent `drain --all` callers sharing one budget, and bad input on the CLI and HTTP.

mod common;

use common::{handover_command, run_cli, wait_for, DemoSpec, TestStore, WorkerProcess};
use handover::lifecycle::Phase;
use handover::store::{JobStatus, WorkerRow};
use serde_json::{json, Value};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The job rows in `status`'s `in_flight` that are running.
fn running(status: &Value) -> Vec<Value> {
    status["in_flight"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["state"] == "running")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_eta_and_work_at_risk_follow_the_jobs_checkpoint_period() {
    let store = TestStore::new().await;
    let mut worker = WorkerProcess::start(
        &store,
        &[("--heartbeat-interval", "200ms"), ("--lease-ttl", "3s")],
    )
    .await;
    let spec = DemoSpec::timed("eta", 1.0, 40);
    let id = store.submit("demo", spec.payload()).await;
    // The intervals as the worker lives them, timed from the store (this machine's speed varies,
    // and another test's load can change it from one interval to the next). The worker's period
    // is a running average of both, so the expectation is bounded by the two.
    store
        .wait_for_status(id, JobStatus::Running, Duration::from_secs(30))
        .await;
    let started = Instant::now();
    store
        .wait_for_checkpoint(id, spec.checkpoint_every, Duration::from_secs(30))
        .await;
    let first = Instant::now();
    store
        .wait_for_checkpoint(id, 2 * spec.checkpoint_every, Duration::from_secs(30))
        .await;
    let intervals = [
        (first - started).as_secs_f64(),
        first.elapsed().as_secs_f64(),
    ];
    let (shortest, period) = (
        intervals[0].min(intervals[1]),
        intervals[0].max(intervals[1]),
    );
    let about_a_period =
        |seconds: f64| seconds > 0.75 * shortest - 0.05 && seconds < 1.25 * period + 0.05;
    let status = worker.status().await;
    let job = running(&status).remove(0);
    let since = job["since_checkpoint_ms"].as_f64().unwrap() / 1000.0;
    let eta = job["next_checkpoint_eta_ms"].as_f64().unwrap() / 1000.0;
    // Between two checkpoints: what is done since the last plus what is left to the next is one
    // period (within a generous tolerance for this shared machine).
    assert!(
        about_a_period(since + eta),
        "since {since:.3}s + eta {eta:.3}s should be about one period {intervals:.3?}"
    );
    assert!((status["drain_eta_seconds"].as_f64().unwrap() - eta).abs() < 1e-3);
    assert!((status["work_at_risk_seconds"].as_f64().unwrap() - since).abs() < 1e-3);
    assert_eq!(status["drain_eta_unknown_jobs"], 0);
    assert_eq!(
        status["drain_would_force"], false,
        "1 s checkpoints, 30 s grace"
    );
    let worst = status["drain_eta_worst_seconds"].as_f64().unwrap();
    assert!(
        about_a_period(worst),
        "worst case {worst}, intervals {intervals:.3?}"
    );
    // The gauges follow within their one-second refresh; the worker row within a heartbeat.
    let gauge = wait_for("the drain gauges", Duration::from_secs(5), || async {
        let eta = worker.metric("handover_drain_eta_seconds").await;
        (eta > 0.0).then_some(eta)
    })
    .await;
    assert!(gauge <= period * 1.4, "gauge {gauge}");
    let row = wait_for("the heartbeat's report", Duration::from_secs(5), || async {
        let row = store.worker_row(&worker.id).await;
        row.drain_eta_seconds.map(|_| row)
    })
    .await;
    assert!(row.work_at_risk_seconds.unwrap() <= period * 1.4, "{row:?}");
    // `handover workers` shows both from the row: seconds with one decimal, not `-`.
    let (code, table, _) = run_cli(&["workers", "--store", &store.url]);
    assert_eq!(code, 0);
    let header = table.lines().next().unwrap();
    let line = table.lines().find(|l| l.contains(&worker.name)).unwrap();
    for column in ["DRAIN ETA", "AT RISK"] {
        // Cells are left-aligned under their header.
        let at = header.find(column).expect(column);
        let cell = line[at..].split_whitespace().next().unwrap_or_default();
        let seconds = cell.strip_suffix('s').and_then(|n| n.parse::<f64>().ok());
        assert!(
            seconds.is_some_and(|s| s <= period * 1.4),
            "{column}: {table}"
        );
    }
    // The prediction holds: a drain started now ends at the job's next checkpoint, not a whole
    // period later (the slack is for this shared machine, where a period can stretch).
    let status = worker.status().await;
    let predicted = status["drain_eta_seconds"].as_f64().unwrap();
    let asked = Instant::now();
    worker.signal(nix::sys::signal::Signal::SIGTERM);
    let exit = worker.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(exit.code(), Some(0), "{}", worker.log());
    let took = asked.elapsed().as_secs_f64();
    assert!(
        took < predicted + period + 1.0,
        "predicted {predicted:.2}s, the drain took {took:.2}s"
    );
    let job = store.job(id).await;
    assert_eq!(job.status, JobStatus::Pending, "handed back");
    assert!(job.checkpoint.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_farther_apart_than_the_grace_raise_the_warning() {
    let store = TestStore::new().await;
    let mut worker = WorkerProcess::start(&store, &[("--grace", "2s")]).await;
    // Checkpoints every 5 s: more than the 1.8 s a 2 s grace gives a drain's jobs.
    let spec = DemoSpec::timed("slow-checkpoints", 5.0, 20);
    let id = store.submit("demo", spec.payload()).await;
    store
        .wait_for_checkpoint(id, spec.checkpoint_every, Duration::from_secs(30))
        .await;
    let status = wait_for(
        "the warning in the status",
        Duration::from_secs(5),
        || async {
            let status = worker.status().await;
            (status["drain_would_force"] == true).then_some(status)
        },
    )
    .await;
    assert!(status["drain_eta_worst_seconds"].as_f64().unwrap() > 1.8);
    assert!((status["drain_allowance_seconds"].as_f64().unwrap() - 1.8).abs() < 1e-9);
    wait_for("the gauge", Duration::from_secs(5), || async {
        (worker.metric("handover_drain_would_force").await == 1.0).then_some(())
    })
    .await;
    wait_for("the log line", Duration::from_secs(5), || async {
        worker
            .log()
            .contains("a drain could outlast --grace and force-kill")
            .then_some(())
    })
    .await;
    // The page says it too, next to the drain buttons.
    let page = worker.admin_get("/").await.text().await.unwrap();
    let warning = page
        .split("id=\"drain-force-warning\"")
        .nth(1)
        .expect("the warning element");
    assert!(!warning[..warning.find('>').unwrap()].contains("hidden"));
    assert!(page.contains("A drain now takes ≈"));
    // It was right: a drain that starts just after a checkpoint (the worst moment) is forced.
    let saved = store.job(id).await.checkpoint.unwrap()["i"]
        .as_u64()
        .unwrap();
    store
        .wait_for_checkpoint(id, saved + spec.checkpoint_every, Duration::from_secs(30))
        .await;
    worker
        .sigterm_expecting_forced_exit(Duration::ZERO, Duration::from_secs(10))
        .await;
}

/// Watches the store until stopped, recording the most workers ever out at once and whether any
/// request ever waited queued.
struct BudgetWatch {
    max_out: Arc<AtomicUsize>,
    saw_queued: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl BudgetWatch {
    fn start(store: &TestStore) -> BudgetWatch {
        let (max_out, saw_queued, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let task = tokio::spawn({
            let (store, max_out, saw_queued, stop) = (
                store.store.clone(),
                max_out.clone(),
                saw_queued.clone(),
                stop.clone(),
            );
            async move {
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(rows) = store.list_workers().await {
                        let out = rows.iter().filter(|w| w.is_out()).count();
                        max_out.fetch_max(out, Ordering::SeqCst);
                    }
                    if store.queued_drains().await.is_ok_and(|q| !q.is_empty()) {
                        saw_queued.store(true, Ordering::SeqCst);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        BudgetWatch {
            max_out,
            saw_queued,
            stop,
            task,
        }
    }

    async fn finish(self) -> (usize, bool) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        (
            self.max_out.load(Ordering::SeqCst),
            self.saw_queued.load(Ordering::SeqCst),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_drain_of_three_postgres_workers_takes_one_at_a_time() {
    let store = TestStore::postgres().await;
    let overrides = [("--concurrency", "1"), ("--heartbeat-interval", "500ms")];
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(WorkerProcess::start(&store, &overrides).await);
    }
    let specs: Vec<DemoSpec> = (0..3)
        .map(|i| DemoSpec::timed(&format!("rolling-{i}"), 0.5, 24))
        .collect();
    let mut ids = Vec::new();
    for spec in &specs {
        ids.push(store.submit("demo", spec.payload()).await);
    }
    for (id, spec) in ids.iter().zip(&specs) {
        store
            .wait_for_checkpoint(*id, spec.checkpoint_every, Duration::from_secs(30))
            .await;
    }
    let watch = BudgetWatch::start(&store);
    let (code, stdout, stderr) = tokio::task::spawn_blocking({
        let url = store.url.clone();
        move || {
            run_cli(&[
                "drain",
                "--store",
                &url,
                "--all",
                "--max-draining",
                "1",
                "--reason",
                "rolling test",
                "--wait",
            ])
        }
    })
    .await
    .unwrap();
    let (max_out, saw_queued) = watch.finish().await;
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        max_out <= 1,
        "{max_out} workers were out at once:\n{stdout}"
    );
    assert!(saw_queued, "two requests waited queued:\n{stdout}");
    assert!(stdout.contains("(0 left, 0 queued)"), "{stdout}");
    for worker in &mut workers {
        assert_eq!(
            worker.wait_exit(Duration::from_secs(30)).await.code(),
            Some(0),
            "{}",
            worker.log()
        );
    }
    // The shutdowns did not overlap: each began after the one before it left the budget, which
    // is the write that deregistered it (its row's `stopped_at`; its own record's duration goes
    // on a little past that write).
    let mut spans = Vec::new();
    for worker in &workers {
        let record = store.shutdown_of(&worker.id).await.expect("record");
        assert_eq!(record.reason.as_deref(), Some("rolling test"));
        let stopped = store
            .worker_row(&worker.id)
            .await
            .stopped_at
            .expect("deregistered");
        spans.push((record.started_at, stopped));
    }
    spans.sort();
    for pair in spans.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "overlapping drains: {spans:?}");
    }
    // Every job was handed back (none completed by a drained worker's forced path) and a new
    // worker finishes each with the right digest.
    let _finisher = WorkerProcess::start(&store, &[]).await;
    for (id, spec) in ids.iter().zip(&specs) {
        let job = store
            .wait_for_status(*id, JobStatus::Completed, Duration::from_secs(60))
            .await;
        assert_eq!(job.result.unwrap()["digest"], spec.expected_digest());
    }
    let counts = store.store.completion_counts().await.unwrap();
    assert!(counts.iter().all(|(_, n)| *n == 1), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_drain_all_callers_share_one_budget() {
    let store = TestStore::new().await;
    let mut workers = Vec::new();
    for _ in 0..3 {
        let overrides = [("--poll-interval", "100ms"), ("--concurrency", "1")];
        workers.push(WorkerProcess::start(&store, &overrides).await);
    }
    // A job on each keeps its drain going for a moment (a checkpoint every 0.5 s).
    for i in 0..3 {
        let spec = DemoSpec::timed(&format!("concurrent-{i}"), 0.5, 40);
        store.submit("demo", spec.payload()).await;
    }
    wait_for("every worker busy", Duration::from_secs(20), || async {
        let rows: Vec<WorkerRow> = store.store.list_workers().await.ok()?;
        rows.iter().all(|w| w.in_flight >= 1).then_some(())
    })
    .await;
    let watch = BudgetWatch::start(&store);
    let callers: Vec<_> = (0..2)
        .map(|_| {
            handover_command()
                .args([
                    "drain",
                    "--store",
                    &store.url,
                    "--all",
                    "--max-draining",
                    "1",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for caller in callers {
        let output = caller.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    for worker in &mut workers {
        assert_eq!(
            worker.wait_exit(Duration::from_secs(60)).await.code(),
            Some(0),
            "{}",
            worker.log()
        );
    }
    let (max_out, saw_queued) = watch.finish().await;
    assert!(max_out <= 1, "{max_out} workers were out at once");
    assert!(saw_queued);
    let stopped = store.store.list_workers().await.unwrap();
    assert!(stopped.iter().all(|w| w.phase == Phase::Stopped));
}

#[tokio::test]
async fn rolling_drains_refuse_bad_input_and_withdraw_queued_requests() {
    let store = TestStore::new().await;
    // The command line: a target is required, and the flags must make sense together.
    for (args, needle) in [
        (vec!["drain", "--store", &store.url], "required"),
        (
            vec![
                "drain",
                "--store",
                &store.url,
                "--all",
                "--max-draining",
                "0",
            ],
            "0 is not in 1..=10000",
        ),
        (
            vec!["drain", "--store", &store.url, "--all", "w1"],
            "cannot be used with",
        ),
        (
            vec![
                "drain", "--store", &store.url, "--all", "--cancel", "--wait",
            ],
            "cannot be used with",
        ),
    ] {
        let (code, _, stderr) = run_cli(&args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    let (code, _, stderr) = run_cli(&["drain", "--store", &store.url, "nobody", "w2"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("no worker with id or name \"nobody\""),
        "{stderr}"
    );

    let a = WorkerProcess::start(&store, &[]).await;
    let b = WorkerProcess::start(&store, &[]).await;
    // Over HTTP: bad bodies are 400 with a reason, unknown workers 404; nothing is written.
    for (body, status, needle) in [
        (
            json!({"max_draining": 0}),
            400,
            "max_draining must be between 1 and 10000",
        ),
        (json!({"mode": "gently"}), 400, "handoff"),
        (json!({"colour": "red"}), 400, "unknown field"),
        (
            json!({"workers": ["nobody"]}),
            404,
            "no worker with id or name",
        ),
        (json!({"reason": "two\nlines"}), 400, "control character"),
    ] {
        let response = a.admin_post("/fleet/drain", body.clone()).await;
        assert_eq!(response.status().as_u16(), status, "{body}");
        let text = response.text().await.unwrap();
        assert!(text.contains(needle), "{body}: {text}");
    }
    assert!(store.store.queued_drains().await.unwrap().is_empty());
    let response = a.admin_post("/fleet/nobody/drain/cancel", json!({})).await;
    assert_eq!(response.status().as_u16(), 404);
    let response = a
        .admin_post(&format!("/fleet/{}/drain/cancel", b.id), json!({}))
        .await;
    assert_eq!(response.status().as_u16(), 409, "nothing queued for b");

    // b is made out by hand-written phase (as if SIGTERM'd), so a's request waits queued.
    store
        .store
        .set_worker_phase(&b.id, Phase::Draining)
        .await
        .unwrap();
    let response = a
        .admin_post("/fleet/drain", json!({"workers": [a.name.clone()]}))
        .await;
    assert_eq!(response.status().as_u16(), 202);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["workers"][0]["state"], "queued", "{answer}");
    let queue: Value = a.admin_get("/api/drain-queue").await.json().await.unwrap();
    assert_eq!(queue[0]["worker_id"], a.id.as_str());
    assert_eq!(queue[0]["max_draining"], 1);
    let fleet = a.admin_get("/fleet").await.text().await.unwrap();
    assert!(fleet.contains("1 queued"), "the fleet page shows the queue");
    // Withdrawn like any drain: on the worker itself.
    let response = a.admin_post("/drain/cancel", json!({})).await;
    assert_eq!(response.status().as_u16(), 200);
    assert!(store.store.queued_drains().await.unwrap().is_empty());
    assert_eq!(a.status().await["phase"], "running");
    // And from the CLI.
    let (code, stdout, _) = run_cli(&[
        "drain",
        "--store",
        &store.url,
        &a.name,
        "--max-draining",
        "1",
    ]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("queued (at most 1 out at once)"),
        "{stdout}"
    );
    let (code, table, _) = run_cli(&["workers", "--store", &store.url]);
    assert_eq!(code, 0);
    let line = table.lines().find(|l| l.contains(&a.name)).unwrap();
    assert!(line.contains("handoff queued (at most 1 out)"), "{table}");
    let (code, stdout, _) = run_cli(&["drain", "--store", &store.url, "--cancel", &a.name]);
    assert_eq!(code, 0);
    assert!(stdout.contains("queued drain withdrawn"), "{stdout}");
    assert!(store.store.queued_drains().await.unwrap().is_empty());
}
