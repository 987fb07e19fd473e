//! Every essential task is supervised: one that panics (the heartbeat, through a store that panics
//! on its Nth heartbeat) or returns (the claim loop, when every claim is refused) is noticed at
//! once. Readiness turns 503, the worker drains with trigger `internal` naming the task, its jobs
//! are checkpointed and handed back, `handover_task_failures_total{task}` counts it, and the exit
//! status is 4. In-process, with a real SQLite store under the fault and real HTTP.

mod common;

use common::faulty::FaultyStore;
use common::{metric_value, wait_for, DemoSpec, TestStore, TOKEN};
use handover::app::{App, WorkerConfig};
use handover::jobs::Registry;
use handover::lifecycle::ShutdownSummary;
use handover::model::{JobStatus, Mode, Outcome, Task, Trigger};
use std::sync::Arc;
use std::time::Duration;

struct Running {
    addr: std::net::SocketAddr,
    worker_id: String,
    run: tokio::task::JoinHandle<ShutdownSummary>,
}

/// Builds a worker on `store` wrapped in `faulty`, with two long demo jobs running and saving
/// checkpoints, and the worker ready.
async fn worker_with_two_jobs(store: &TestStore, faulty: Arc<FaultyStore>) -> Running {
    let spec = DemoSpec::timed("supervised", 0.05, 100_000);
    for _ in 0..2 {
        store.submit("demo", spec.payload()).await;
    }
    let mut config = WorkerConfig::new(store.url.parse().unwrap());
    config.listen = "127.0.0.1:0".into();
    config.name = "supervised".into();
    config.concurrency = 3;
    config.grace = Duration::from_secs(10);
    config.heartbeat_interval = Duration::from_millis(100);
    config.lease_ttl = Duration::from_secs(3);
    config.poll_interval = Duration::from_millis(50);
    config.admin_token = Some(TOKEN.into());
    // Keeps /metrics up after `stopped` until the test has scraped it.
    config.final_scrape_wait = Duration::from_secs(5);
    let app = App::build_on(config, faulty, Registry::builtin())
        .await
        .unwrap();
    let (addr, worker_id) = (app.addr, app.worker_id.clone());
    let run = tokio::spawn(app.run_until_stopped());
    wait_for(
        "two jobs with checkpoints",
        Duration::from_secs(20),
        || async {
            let jobs = store.all_jobs().await;
            jobs.iter()
                .all(|j| j.status == JobStatus::Running && j.checkpoint.is_some())
                .then_some(())
        },
    )
    .await;
    assert_eq!(readyz(addr).await, 200, "ready before the fault");
    Running {
        addr,
        worker_id,
        run,
    }
}

async fn readyz(addr: std::net::SocketAddr) -> u16 {
    reqwest::get(format!("http://{addr}/readyz"))
        .await
        .map_or(0, |r| r.status().as_u16())
}

/// Checks everything a task failure must leave behind.
async fn assert_internal_drain(store: &TestStore, worker: Running, task: Task, why: &str) {
    wait_for("/readyz to answer 503", Duration::from_secs(10), || async {
        (readyz(worker.addr).await == 503).then_some(())
    })
    .await;
    let status: serde_json::Value = reqwest::Client::new()
        .get(format!("http://{}/api/status", worker.addr))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["failed_task"], task.as_str(), "{status}");
    assert_eq!(status["ready"], false, "{status}");
    // The scrape comes last: once the machine has stopped, the first scrape it answers is the
    // final one, after which the worker closes its listener.
    let metrics = reqwest::get(format!("http://{}/metrics", worker.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let failures = format!("handover_task_failures_total{{task=\"{task}\"}}");
    assert_eq!(metric_value(&metrics, &failures), Some(1.0), "{metrics}");

    let summary = tokio::time::timeout(Duration::from_secs(20), worker.run)
        .await
        .expect("the worker stops after an internal drain")
        .unwrap();
    assert_eq!(summary.failed_tasks, vec![task]);
    assert_eq!(handover::commands::exit_status(&summary), 4);
    let record = &summary.record;
    assert_eq!(record.trigger, Trigger::Internal);
    assert_eq!(record.mode, Mode::Handoff);
    assert_eq!(record.outcome, Outcome::Clean);
    assert_eq!(record.jobs_released, 2);
    let reason = record.reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains(task.as_str()) && reason.contains(why),
        "{reason}"
    );

    let stored = store
        .shutdown_of(&worker.worker_id)
        .await
        .expect("the shutdown is recorded");
    assert_eq!(stored.trigger, Trigger::Internal);
    assert_eq!(stored.reason, record.reason);
    for job in store.all_jobs().await {
        assert_eq!(job.status, JobStatus::Pending, "handed back: {job:?}");
        assert!(job.checkpoint.is_some(), "with its checkpoint: {job:?}");
        assert_eq!(job.attempts, 0, "a hand-back costs no attempt: {job:?}");
        assert_eq!(job.owner, None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_heartbeat_drains_the_worker_and_exits_4() {
    let store = TestStore::new().await;
    let faulty = Arc::new(FaultyStore::new(store.store.clone()));
    let worker = worker_with_two_jobs(&store, faulty.clone()).await;
    faulty.panic_on_heartbeat(2);
    assert_internal_drain(&store, worker, Task::Heartbeat, "panicked").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_loop_that_returns_drains_the_worker_and_exits_4() {
    let store = TestStore::new().await;
    let faulty = Arc::new(FaultyStore::new(store.store.clone()));
    let worker = worker_with_two_jobs(&store, faulty.clone()).await;
    faulty.refuse_claims();
    assert_internal_drain(
        &store,
        worker,
        Task::ClaimLoop,
        "claims in a row were refused",
    )
    .await;
}
