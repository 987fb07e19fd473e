//! Operating a fleet: a SQLite worker takes a drain request within one poll, not at its next
//! heartbeat; the queue metrics count jobs per kind and status and name the waiting jobs no live
//! worker can run.

mod common;

use common::{run_cli, wait_for, TestStore, WorkerProcess};
use handover::lifecycle::Trigger;
use handover::store::NewJob;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_sqlite_worker_takes_a_drain_request_within_one_poll() {
    let store = TestStore::new().await;
    // A heartbeat far longer than the poll: only the poll can explain a quick pick-up.
    let mut worker = WorkerProcess::start(
        &store,
        &[
            ("--heartbeat-interval", "20s"),
            ("--lease-ttl", "60s"),
            ("--poll-interval", "100ms"),
        ],
    )
    .await;
    let asked = Instant::now();
    let (code, stdout, stderr) = run_cli(&["drain", "--store", &store.url, &worker.id]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("within one poll on SQLite"), "{stdout}");
    // With no job to hand back the drain ends at once, so the worker's exit marks the pick-up.
    let exit = worker.wait_exit(Duration::from_secs(30)).await;
    let took = asked.elapsed();
    assert_eq!(exit.code(), Some(0), "log:\n{}", worker.log());
    assert!(
        took < Duration::from_secs(3),
        "a drain request took {took:?}; one poll is 100 ms, the next heartbeat up to 20 s"
    );
    let record = store
        .shutdown_of(&worker.id)
        .await
        .expect("shutdown record");
    assert_eq!(record.trigger, Trigger::Remote);
}

#[tokio::test]
async fn the_queue_metrics_count_jobs_and_name_kinds_no_worker_serves() {
    let store = TestStore::new().await;
    let worker = WorkerProcess::start(&store, &[("--queue-metrics-interval", "100ms")]).await;
    let waiting: Vec<NewJob> = (0..7)
        .map(|_| NewJob::new("nobody-serves", json!({})))
        .collect();
    store.store.submit(&waiting).await.unwrap();
    // Refreshed in the background: wait for the values, never for a guessed time.
    wait_for(
        "the queue metrics to count them",
        Duration::from_secs(15),
        || async {
            let text = reqwest::get(worker.url("/metrics"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let pending = common::metric_value(
                &text,
                r#"handover_queue_jobs{kind="nobody-serves",status="pending"}"#,
            );
            (pending == Some(7.0)).then_some(())
        },
    )
    .await;
    let text = reqwest::get(worker.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sample = |name: &str| common::metric_value(&text, name);
    assert_eq!(
        sample(r#"handover_queue_unserved_jobs{kind="nobody-serves"}"#),
        Some(7.0)
    );
    assert!(
        sample(r#"handover_queue_oldest_pending_age_seconds{kind="nobody-serves"}"#).unwrap()
            >= 0.0
    );
    // Kinds this worker serves are present from the first scrape, and not unserved.
    assert_eq!(
        sample(r#"handover_queue_unserved_jobs{kind="demo"}"#),
        Some(0.0)
    );
    assert_eq!(
        sample(r#"handover_queue_jobs{kind="demo",status="pending"}"#),
        Some(0.0)
    );
    // A bad interval is refused like any duration flag.
    let (code, _, stderr) = run_cli(&[
        "worker",
        "--store",
        &store.url,
        "--queue-metrics-interval",
        "0s",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--queue-metrics-interval"), "{stderr}");
}
