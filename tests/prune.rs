//! `handover prune` as a user runs it: one pass that prints the rows deleted per table, the same
//! refusals as every command for bad input, and a clear error while another pass holds the lock.

mod common;

use common::*;
use handover::store::NewJob;
use serde_json::json;
use std::time::Duration;

/// Asserts a refused run: the exit code, one stderr line containing `needle`, no panic.
fn assert_refused(args: &[&str], code: i32, needle: &str) {
    let (got, stdout, stderr) = run_cli(args);
    assert_eq!(got, code, "{args:?}: stdout {stdout:?} stderr {stderr:?}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{args:?}: one line of error, got {stderr:?}"
    );
    assert!(lines[0].starts_with("error: "), "{args:?}: {stderr:?}");
    assert!(
        lines[0].contains(needle),
        "{args:?}: expected {needle:?} in {stderr:?}"
    );
    assert!(!stderr.contains("panicked"));
}

/// A store with two completed jobs, one of them completed two hours ago.
async fn store_with_an_old_completed_job() -> TestStore {
    let store = TestStore::new().await;
    let jobs = [
        NewJob::new("noop", json!({})),
        NewJob::new("noop", json!({})),
    ];
    let ids = store.store.submit(&jobs).await.unwrap();
    let claimed = store
        .store
        .claim("w1", &["noop".to_string()], 2, Duration::from_secs(60))
        .await
        .unwrap();
    let items: Vec<_> = claimed
        .iter()
        .map(|c| (c.lease.clone(), json!({})))
        .collect();
    store.store.complete(&items).await.unwrap();
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&store.url).await.unwrap();
    sqlx::query("UPDATE jobs SET updated_at = updated_at - 7200000 WHERE id = ?1")
        .bind(ids[0])
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_deletes_what_aged_out_and_prints_it_per_table() {
    let store = store_with_an_old_completed_job().await;
    // The default keeps completed jobs for 24h: nothing to delete.
    let (code, stdout, stderr) = run_cli(&["prune", "--store", &store.url]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("jobs                      0 deleted"),
        "{stdout}"
    );
    assert_eq!(store.all_jobs().await.len(), 2);

    let (code, stdout, stderr) =
        run_cli(&["prune", "--store", &store.url, "--retain-completed", "1h"]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "jobs                      1 deleted",
            "job_completions           1 deleted",
            "job_events                0 deleted",
            "workers                   0 deleted",
            "shutdowns                 0 deleted",
        ]
    );
    assert_eq!(store.all_jobs().await.len(), 1);

    // `forever` keeps even the recent one, whatever its age; --json is one object.
    let (code, stdout, _) = run_cli(&[
        "prune",
        "--store",
        &store.url,
        "--retain-completed",
        "forever",
        "--json",
    ]);
    assert_eq!(code, 0);
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        report,
        json!({"jobs": 0, "job_completions": 0, "job_events": 0, "workers": 0, "shutdowns": 0})
    );
    assert_eq!(store.all_jobs().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_refuses_to_run_beside_another_pass() {
    let store = store_with_an_old_completed_job().await;
    let held = store
        .store
        .begin_prune()
        .await
        .unwrap()
        .expect("the lock is free");
    assert_refused(
        &["prune", "--store", &store.url, "--retain-completed", "1h"],
        1,
        "another retention pass",
    );
    assert_eq!(store.all_jobs().await.len(), 2, "nothing deleted");
    held.end().await.unwrap();
}

#[test]
fn bad_prune_input_exits_2_with_one_line() {
    assert_refused(&["prune", "--no-such-flag"], 2, "--no-such-flag");
    assert_refused(&["prune", "--retain-dead", "soon"], 2, "such as 500ms");
    assert_refused(&["prune", "--retain-completed", "30s"], 2, "at least 1m");
    assert_refused(&["prune", "--retain-workers", "11y"], 2, "at most 10years");
    assert_refused(
        &["prune", "--store", "mysql://db/x"],
        2,
        "unsupported store scheme",
    );
    assert_refused(&["worker", "--retain-shutdowns", "0s"], 2, "or forever");
}

/// A worker's pruner: a pass at its first turn while the worker is `running`, counted in
/// `handover_pruned_total`; it ends when told to stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_pruner_deletes_and_counts_while_running() {
    use handover::lifecycle::{Phase, Status};
    use handover::store::Retention;
    use handover::telemetry::Metrics;
    use handover::worker::health::StoreHealth;
    use handover::worker::pruner::Pruner;
    use std::sync::Arc;

    let store = store_with_an_old_completed_job().await;
    let metrics = Arc::new(Metrics::new(&[]));
    let (_status, status) = tokio::sync::watch::channel(Status {
        phase: Phase::Running,
        ..Status::starting()
    });
    let stop = tokio_util::sync::CancellationToken::new();
    let pruner = tokio::spawn(
        Pruner {
            store: store.store.clone(),
            policy: Retention {
                completed: Some(Duration::from_secs(3600)),
                ..Retention::FOREVER
            },
            first_after: Duration::ZERO,
            every: Duration::from_secs(3600),
            status,
            health: Arc::new(StoreHealth::new(metrics.store_up.clone())),
            metrics: metrics.clone(),
            stop: stop.clone(),
        }
        .run(),
    );
    wait_for(
        "the pruner's first pass",
        Duration::from_secs(10),
        || async {
            let text = metrics.render(|| (Phase::Running, true));
            (metric_value(&text, r#"handover_pruned_total{table="jobs"}"#) == Some(1.0))
                .then_some(())
        },
    )
    .await;
    let text = metrics.render(|| (Phase::Running, true));
    assert_eq!(
        metric_value(&text, r#"handover_pruned_total{table="job_completions"}"#),
        Some(1.0)
    );
    assert_eq!(store.all_jobs().await.len(), 1, "the recent job is kept");
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), pruner)
        .await
        .expect("the pruner ends when told to stop")
        .unwrap();
}
