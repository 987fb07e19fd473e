//! The shutdown phase machine on the real binary: SIGTERM, the forced path, a second signal,
//! SIGKILL and rescue, HTTP drains — asserting exit codes, timings against budgets and the store.

mod common;

use common::*;
use handover::lifecycle::{Outcome, Phase, Trigger};
use handover::store::{JobStatus, NewJob};
use nix::sys::signal::Signal;
use serde_json::json;
use std::time::{Duration, Instant};

/// Process start/exit and store writes on a loaded 2-core machine fit easily in this.
const MARGIN: Duration = Duration::from_millis(1500);

async fn shutdown_record(store: &TestStore, worker_id: &str) -> handover::store::ShutdownRecord {
    store
        .store
        .list_shutdowns(50)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.worker_id == worker_id)
        .expect("a shutdown record for the worker")
}

fn phase_names(record: &handover::store::ShutdownRecord) -> Vec<Phase> {
    record.phases.iter().map(|p| p.phase).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_the_job_back_at_its_checkpoint_and_another_worker_finishes_it() {
    let store = TestStore::new().await;
    let spec = DemoSpec::timed("sigterm", 0.3, 30);
    let job_id = store.submit("demo", spec.payload()).await;
    let mut first = WorkerProcess::start(&store, &[("--concurrency", "1")]).await;
    store
        .wait_for_checkpoint(job_id, spec.checkpoint_every, Duration::from_secs(20))
        .await;

    // Watch readiness from the moment the signal is sent.
    let ready_url = first.url("/readyz");
    let watcher = tokio::spawn(async move {
        let client = reqwest::Client::new();
        loop {
            match client.get(&ready_url).send().await {
                Ok(response) if response.status() == 503 => return true,
                Ok(_) => {}
                Err(_) => return false, // the process is gone and never said 503
            }
        }
    });
    let signalled = Instant::now();
    first.signal(Signal::SIGTERM);
    let status = first.wait_exit(Duration::from_secs(20)).await;
    let took = signalled.elapsed();
    assert!(
        watcher.await.unwrap(),
        "/readyz answered 503 before the process exited"
    );
    assert_eq!(status.code(), Some(0), "clean exit; log:\n{}", first.log());
    assert!(
        took < spec.interval + MARGIN,
        "shutdown took {took:?}, budget one checkpoint interval ({:?}) plus {MARGIN:?}",
        spec.interval
    );

    let job = store.job(job_id).await;
    assert_eq!(job.status, JobStatus::Pending);
    assert_eq!(job.owner, None);
    assert_eq!(job.attempts, 0, "a hand-back does not burn an attempt");
    let checkpoint = job.checkpoint.expect("handed back with its checkpoint");
    assert!(checkpoint["i"].as_u64().unwrap() >= spec.checkpoint_every);
    assert_eq!(store.worker_row(&first.id).await.phase, Phase::Stopped);

    let record = shutdown_record(&store, &first.id).await;
    assert_eq!(record.trigger, Trigger::Sigterm);
    assert_eq!(record.outcome, Outcome::Clean);
    assert_eq!(record.jobs_released, 1);
    assert_eq!(
        phase_names(&record),
        vec![
            Phase::Draining,
            Phase::Checkpointing,
            Phase::Releasing,
            Phase::Deregistering
        ]
    );
    assert!(record.phases.iter().all(|p| p.duration_ms.is_some()));

    let second = WorkerProcess::start(&store, &[]).await;
    let done = store
        .wait_for_status(job_id, JobStatus::Completed, Duration::from_secs(30))
        .await;
    assert_eq!(done.result.unwrap()["digest"], spec.expected_digest());
    let completions = store.store.completion_counts().await.unwrap();
    assert_eq!(completions, vec![(job_id, 1)]);
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grace_deadline_forces_exit_and_keeps_the_last_checkpoint() {
    let store = TestStore::new().await;
    // One checkpoint interval is far longer than --grace.
    let spec = DemoSpec::timed("forced", 20.0, 2);
    let job_id = store.submit("demo", spec.payload()).await;
    // Give the job a real last checkpoint, as an earlier worker would have saved.
    let resume_at = 1000;
    let holder = store
        .store
        .claim(
            "earlier-worker",
            &["demo".into()],
            1,
            Duration::from_secs(60),
        )
        .await
        .unwrap()
        .remove(0);
    let digest = handover::jobs::demo::chain_steps(
        handover::jobs::demo::chain_start(&spec.seed),
        resume_at,
        || false,
    )
    .unwrap();
    let checkpoint = json!({"i": resume_at, "digest": hex::encode(digest)});
    store
        .store
        .checkpoint(&holder.lease, &checkpoint)
        .await
        .unwrap();
    store
        .store
        .release(
            &[holder.lease],
            std::time::Duration::ZERO,
            handover::store::ReleaseReason::Shutdown,
        )
        .await
        .unwrap();

    let grace = Duration::from_secs(1);
    let mut worker = WorkerProcess::start(&store, &[("--grace", "1s")]).await;
    store
        .wait_for_status(job_id, JobStatus::Running, Duration::from_secs(10))
        .await;
    // The forced path starts a tenth of --grace early so that the process is gone within --grace.
    worker
        .sigterm_expecting_forced_exit(grace * 9 / 10, grace + Duration::from_millis(300))
        .await;
    let log = worker.log();
    assert!(log.contains("forcing shutdown"), "{log}");
    assert!(
        log.contains(&format!("job {job_id} (demo")),
        "the warning names the job:\n{log}"
    );

    let job = store.job(job_id).await;
    assert_eq!(job.status, JobStatus::Pending);
    assert_eq!(job.owner, None);
    assert_eq!(
        job.checkpoint,
        Some(checkpoint),
        "released with its last saved checkpoint"
    );
    let record = shutdown_record(&store, &worker.id).await;
    assert_eq!(record.outcome, Outcome::Forced);
    assert_eq!(record.forced_jobs, vec![job_id]);
    assert_eq!(store.worker_row(&worker.id).await.phase, Phase::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_forces_at_once() {
    let store = TestStore::new().await;
    let spec = DemoSpec::timed("double", 30.0, 2);
    let job_id = store.submit("demo", spec.payload()).await;
    let mut worker = WorkerProcess::start(&store, &[("--grace", "30s")]).await;
    store
        .wait_for_status(job_id, JobStatus::Running, Duration::from_secs(10))
        .await;
    worker.signal(Signal::SIGTERM);
    let status_url = worker.url("/readyz");
    wait_for("readiness to turn off", Duration::from_secs(5), || async {
        let response = reqwest::get(&status_url).await.ok()?;
        (response.status() == 503).then_some(())
    })
    .await;
    let second = Instant::now();
    worker.signal(Signal::SIGINT);
    let status = worker.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(3), "log:\n{}", worker.log());
    assert!(
        second.elapsed() < MARGIN,
        "forced at once, took {:?}",
        second.elapsed()
    );
    let record = shutdown_record(&store, &worker.id).await;
    assert_eq!(record.outcome, Outcome::Forced);
    assert_eq!(record.trigger, Trigger::Sigterm);
    assert_eq!(store.job(job_id).await.status, JobStatus::Pending);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_workers_job_is_rescued_and_finished_from_its_checkpoint() {
    let store = TestStore::new().await;
    let spec = DemoSpec::timed("sigkill", 0.2, 20);
    let job_id = store.submit("demo", spec.payload()).await;
    let mut doomed = WorkerProcess::start(&store, &[("--concurrency", "1")]).await;
    store
        .wait_for_checkpoint(job_id, 3 * spec.checkpoint_every, Duration::from_secs(20))
        .await;
    doomed.signal(Signal::SIGKILL);
    doomed.wait_exit(Duration::from_secs(5)).await;
    let at_kill = store.job(job_id).await;
    assert_eq!(at_kill.status, JobStatus::Running, "nobody released it");
    let checkpoints_before =
        at_kill.checkpoint.unwrap()["i"].as_u64().unwrap() / spec.checkpoint_every;

    let rescuer = WorkerProcess::start(&store, &[]).await;
    let done = store
        .wait_for_status(job_id, JobStatus::Completed, Duration::from_secs(30))
        .await;
    assert_eq!(done.result.unwrap()["digest"], spec.expected_digest());
    assert_eq!(rescuer.metric("handover_jobs_rescued_total").await, 1.0);
    // Resumed, not restarted: the rescuer saved only the checkpoints after the last one kept.
    let total_checkpoints = spec.iterations / spec.checkpoint_every - 1;
    let saved = rescuer
        .metric(r#"handover_checkpoints_total{kind="demo"}"#)
        .await;
    assert_eq!(saved as u64, total_checkpoints - checkpoints_before);
    assert_eq!(
        store.store.completion_counts().await.unwrap(),
        vec![(job_id, 1)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_drain_runs_the_same_phases_as_sigterm() {
    let store = TestStore::new().await;
    let spec = DemoSpec::timed("http", 0.2, 50);
    let mut by_signal = WorkerProcess::start(&store, &[("--concurrency", "1")]).await;
    let a = store.submit("demo", spec.payload()).await;
    store
        .wait_for_checkpoint(a, 1, Duration::from_secs(20))
        .await;
    by_signal.signal(Signal::SIGTERM);
    assert_eq!(
        by_signal.wait_exit(Duration::from_secs(10)).await.code(),
        Some(0)
    );

    let mut by_http = WorkerProcess::start(&store, &[("--concurrency", "1")]).await;
    store
        .wait_for_checkpoint(a, 2 * spec.checkpoint_every, Duration::from_secs(20))
        .await;
    let response = by_http
        .admin_post("/drain", json!({"mode": "handoff", "reason": "rebalance"}))
        .await;
    assert_eq!(response.status(), 202);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["trigger"], "http");
    assert_eq!(
        body["ready"], false,
        "the answer already shows readiness off"
    );
    assert_eq!(
        by_http.wait_exit(Duration::from_secs(10)).await.code(),
        Some(0)
    );

    let signal_record = shutdown_record(&store, &by_signal.id).await;
    let http_record = shutdown_record(&store, &by_http.id).await;
    assert_eq!(phase_names(&http_record), phase_names(&signal_record));
    assert_eq!(http_record.trigger, Trigger::Http);
    assert_eq!(http_record.reason.as_deref(), Some("rebalance"));
    assert!(http_record
        .requested_by
        .unwrap()
        .starts_with("http client 127.0.0.1"));
    assert_eq!(http_record.jobs_released, 1);
    assert_eq!(store.job(a).await.status, JobStatus::Pending);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finish_drain_can_be_cancelled_and_claiming_resumes() {
    let store = TestStore::new().await;
    let spec = DemoSpec::timed("cancel", 0.2, 100);
    let first = store.submit("demo", spec.payload()).await;
    // The drain delay keeps the SIGTERM drain below in `draining` long enough to be asked to
    // cancel it (without it, the worker can be gone by then).
    let mut worker =
        WorkerProcess::start(&store, &[("--concurrency", "2"), ("--drain-delay", "2s")]).await;
    store
        .wait_for_checkpoint(first, 1, Duration::from_secs(20))
        .await;

    let answer = worker.admin_post("/drain", json!({"mode": "finish"})).await;
    assert_eq!(answer.status(), 202);
    assert_eq!(
        reqwest::get(worker.url("/readyz")).await.unwrap().status(),
        503
    );
    // A second click does not start a second drain.
    let again = worker
        .admin_post("/drain", json!({"mode": "handoff"}))
        .await;
    assert_eq!(again.status(), 200);
    assert_eq!(
        again.json::<serde_json::Value>().await.unwrap()["mode"],
        "finish"
    );

    let cancelled = worker.admin_post("/drain/cancel", json!({})).await;
    assert_eq!(cancelled.status(), 200);
    let status: serde_json::Value = cancelled.json().await.unwrap();
    assert_eq!(status["phase"], "running");
    assert_eq!(
        reqwest::get(worker.url("/readyz")).await.unwrap().status(),
        200
    );
    // Nothing to cancel now.
    assert_eq!(
        worker.admin_post("/drain/cancel", json!({})).await.status(),
        409
    );

    // Claiming resumed: a new job is picked up on the free slot while the long job still runs.
    let second = store
        .store
        .submit(&[NewJob::new("noop", json!({}))])
        .await
        .unwrap()[0];
    store
        .wait_for_status(second, JobStatus::Completed, Duration::from_secs(10))
        .await;
    assert_eq!(store.job(first).await.status, JobStatus::Running);

    // A signal-started drain cannot be cancelled.
    worker.signal(Signal::SIGTERM);
    let ready_url = worker.url("/readyz");
    wait_for(
        "SIGTERM to start a drain",
        Duration::from_secs(5),
        || async { (reqwest::get(&ready_url).await.ok()?.status() == 503).then_some(()) },
    )
    .await;
    let refused = worker.admin_post("/drain/cancel", json!({})).await;
    assert_eq!(refused.status(), 409);
    let error: serde_json::Value = refused.json().await.unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("sigterm"),
        "refused because a signal started it: {error}"
    );
    assert_eq!(
        worker.wait_exit(Duration::from_secs(10)).await.code(),
        Some(0)
    );
    let status_phases: Vec<Phase> = shutdown_record(&store, &worker.id)
        .await
        .phases
        .iter()
        .map(|p| p.phase)
        .collect();
    assert_eq!(status_phases.first(), Some(&Phase::Draining));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_processes_share_one_sqlite_file_without_losing_or_repeating_jobs() {
    let store = TestStore::new().await;
    let specs: Vec<DemoSpec> = (0..24)
        .map(|n| DemoSpec::timed(&format!("shared-{n}"), 0.05, 4))
        .collect();
    let jobs: Vec<NewJob> = specs
        .iter()
        .map(|s| NewJob::new("demo", s.payload()))
        .collect();
    let ids = store.store.submit(&jobs).await.unwrap();
    let workers = vec![
        WorkerProcess::start(&store, &[]).await,
        WorkerProcess::start(&store, &[]).await,
        WorkerProcess::start(&store, &[]).await,
    ];
    for (id, spec) in ids.iter().zip(&specs) {
        let job = store
            .wait_for_status(*id, JobStatus::Completed, Duration::from_secs(60))
            .await;
        assert_eq!(
            job.result.unwrap()["digest"],
            spec.expected_digest(),
            "job {id}"
        );
    }
    let counts = store.store.completion_counts().await.unwrap();
    assert_eq!(counts.len(), ids.len());
    assert!(counts.iter().all(|(_, n)| *n == 1), "{counts:?}");
    drop(workers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_drain_from_the_cli_is_recorded_with_who_and_why() {
    let store = TestStore::new().await;
    let mut worker = WorkerProcess::start(&store, &[]).await;
    let (code, stdout, stderr) = run_cli(&[
        "drain",
        "--store",
        &store.url,
        &worker.name,
        "--reason",
        "node maintenance",
        "--wait",
    ]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("stopped"), "{stdout}");
    assert_eq!(
        worker.wait_exit(Duration::from_secs(10)).await.code(),
        Some(0)
    );
    let record = shutdown_record(&store, &worker.id).await;
    assert_eq!(record.trigger, Trigger::Remote);
    assert_eq!(record.reason.as_deref(), Some("node maintenance"));
    assert!(record.requested_by.unwrap().starts_with("cli "));
    // Draining a stopped worker is a clear error.
    let (code, _, stderr) = run_cli(&["drain", "--store", &store.url, &worker.name]);
    assert_eq!(code, 1);
    assert!(stderr.contains("not running"), "{stderr}");
}

/// Freezes `worker` (SIGSTOP: a long GC pause or VM freeze) until another worker has rescued and
/// claimed `job_id`; returns that rescuer, which then completes the job.
async fn freeze_until_rescued(
    store: &TestStore,
    worker: &WorkerProcess,
    job_id: i64,
) -> WorkerProcess {
    worker.signal(Signal::SIGSTOP);
    let rescuer = WorkerProcess::start(store, &[("--concurrency", "1")]).await;
    wait_for(
        "the rescuer to take the job",
        Duration::from_secs(20),
        || async {
            let job = store.job(job_id).await;
            (job.owner.as_deref() == Some(rescuer.id.as_str())).then_some(())
        },
    )
    .await;
    assert!(store
        .worker_row(&worker.id)
        .await
        .declared_dead_at
        .is_some());
    rescuer
}

async fn assert_completed_once_by(store: &TestStore, job_id: i64, spec: &DemoSpec, owner: &str) {
    let done = store
        .wait_for_status(job_id, JobStatus::Completed, Duration::from_secs(30))
        .await;
    assert_eq!(done.result.unwrap()["digest"], spec.expected_digest());
    assert_eq!(done.owner.as_deref(), Some(owner));
    assert_eq!(
        store.store.completion_counts().await.unwrap(),
        vec![(job_id, 1)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_worker_that_lost_its_lease_stops_the_job_and_carries_on() {
    let store = TestStore::new().await;
    let spec = DemoSpec::timed("frozen", 0.3, 12);
    let job_id = store.submit("demo", spec.payload()).await;
    let mut frozen = WorkerProcess::start(&store, &[("--concurrency", "1")]).await;
    store
        .wait_for_checkpoint(job_id, spec.checkpoint_every, Duration::from_secs(20))
        .await;
    let rescuer = freeze_until_rescued(&store, &frozen, job_id).await;

    // Thawed while running: its writes for the job are refused, it stops the job, and being alive
    // it registers again and stays ready.
    frozen.signal(Signal::SIGCONT);
    wait_for(
        "the thawed worker to re-register",
        Duration::from_secs(10),
        || async {
            store
                .worker_row(&frozen.id)
                .await
                .declared_dead_at
                .is_none()
                .then_some(())
        },
    )
    .await;
    wait_for(
        "the thawed worker to let the job go",
        Duration::from_secs(10),
        || async {
            let metrics = reqwest::get(frozen.url("/metrics"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            (metric_value(&metrics, "handover_lease_lost_total") == Some(1.0)).then_some(())
        },
    )
    .await;
    assert_eq!(
        reqwest::get(frozen.url("/readyz")).await.unwrap().status(),
        200
    );
    assert_completed_once_by(&store, job_id, &spec, &rescuer.id).await;

    frozen.signal(Signal::SIGTERM);
    assert_eq!(
        frozen.wait_exit(Duration::from_secs(10)).await.code(),
        Some(0)
    );
    assert!(frozen.log().contains("lease lost"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_declared_dead_during_its_drain_finishes_it_without_coming_back() {
    let store = TestStore::new().await;
    let spec = DemoSpec::timed("dead-drain", 0.3, 12);
    let job_id = store.submit("demo", spec.payload()).await;
    // The drain delay outlasts the freeze (a lease TTL of 15 s, then the rescue): after SIGCONT
    // the worker is still in `draining`, so its heartbeat runs and learns it was declared dead
    // before the drain reaches `deregistering` and stops it.
    let mut draining = WorkerProcess::start(
        &store,
        &[
            ("--concurrency", "1"),
            ("--drain-delay", "30s"),
            ("--grace", "60s"),
        ],
    )
    .await;
    store
        .wait_for_checkpoint(job_id, spec.checkpoint_every, Duration::from_secs(20))
        .await;
    draining.signal(Signal::SIGTERM);
    let ready_url = draining.url("/readyz");
    wait_for("the drain to start", Duration::from_secs(5), || async {
        (reqwest::get(&ready_url).await.ok()?.status() == 503).then_some(())
    })
    .await;
    let rescuer = freeze_until_rescued(&store, &draining, job_id).await;

    draining.signal(Signal::SIGCONT);
    let status = draining.wait_exit(Duration::from_secs(45)).await;
    let log = draining.log();
    assert_eq!(status.code(), Some(0), "log:\n{log}");
    assert!(
        log.contains("declared this worker dead during its shutdown"),
        "log:\n{log}"
    );
    assert!(!log.contains("registering again"), "log:\n{log}");
    assert!(log.contains("lease lost"), "log:\n{log}");
    let record = shutdown_record(&store, &draining.id).await;
    assert_eq!(record.jobs_released, 0, "it had nothing left to hand back");
    assert_eq!(store.worker_row(&draining.id).await.phase, Phase::Stopped);
    assert_completed_once_by(&store, job_id, &spec, &rescuer.id).await;
}

/// Slots are freed when a handler returns, so at any moment completions may be waiting for their
/// commit: a SIGTERM in the middle of a stream of short jobs must commit every one of them (or hand
/// the job back), never leave one `running`, and never complete one twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_waiting_for_their_commit_at_sigterm_are_all_written() {
    let store = TestStore::new().await;
    let jobs: Vec<NewJob> = (0..20_000)
        .map(|_| NewJob::new("noop", json!({})))
        .collect();
    store.store.submit(&jobs).await.unwrap();
    let mut worker = WorkerProcess::start(&store, &[("--concurrency", "16")]).await;
    wait_for("jobs to be completing", Duration::from_secs(20), || async {
        let counts = store.store.count_jobs().await.unwrap();
        let completed = counts
            .iter()
            .find(|(status, _)| *status == JobStatus::Completed)
            .map_or(0, |(_, n)| *n);
        (completed >= 200).then_some(())
    })
    .await;
    worker.signal(Signal::SIGTERM);
    let status = worker.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0), "log:\n{}", worker.log());
    let all = store.all_jobs().await;
    let running: Vec<_> = all
        .iter()
        .filter(|j| j.status == JobStatus::Running)
        .collect();
    assert!(running.is_empty(), "left running: {running:?}");
    let completed = all
        .iter()
        .filter(|j| j.status == JobStatus::Completed)
        .count();
    assert!((200..20_000).contains(&completed), "{completed} completed");
    let pending = all
        .iter()
        .filter(|j| j.status == JobStatus::Pending)
        .count();
    assert_eq!(completed + pending, 20_000);
    let audit = store.store.completion_counts().await.unwrap();
    assert_eq!(audit.len(), completed);
    assert!(audit.iter().all(|(_, n)| *n == 1), "a job completed twice");
}
