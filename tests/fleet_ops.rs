//! Operating a fleet: a SQLite worker takes a drain request within one poll, not at its next
//! heartbeat.

mod common;

use common::{run_cli, TestStore, WorkerProcess};
use handover::lifecycle::Trigger;
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
