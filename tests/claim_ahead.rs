//! Claiming ahead on the real binary: held jobs (claimed, leased, not started) go back free on a
//! drain, go back to an idle worker when they wait too long behind long jobs, and a SIGKILL with
//! held jobs and uncommitted completions loses none of them.

mod common;

use common::{wait_for, DemoSpec, TestStore, WorkerProcess};
use handover::store::{JobId, JobStatus, NewJob};
use nix::sys::signal::Signal;
use serde_json::json;
use std::time::Duration;

const SHORT_JOBS: usize = 20;

/// Teaches a fresh worker that its jobs are short (one no-op), then submits one long demo job
/// ahead of `SHORT_JOBS` no-ops: the long one takes the worker's only slot, the short ones are
/// claimed in the same call and held behind it. Returns (long job, short jobs).
async fn hold_short_jobs_behind_a_long_one(
    store: &TestStore,
    worker: &WorkerProcess,
) -> (JobId, Vec<JobId>) {
    let warm_up = store.submit("noop", json!({})).await;
    store
        .wait_for_status(warm_up, JobStatus::Completed, Duration::from_secs(10))
        .await;
    let long = DemoSpec::timed("held-behind", 0.2, 300);
    let mut batch = vec![NewJob {
        priority: 10,
        ..NewJob::new("demo", long.payload())
    }];
    batch.extend((0..SHORT_JOBS).map(|_| NewJob::new("noop", json!({}))));
    let ids = store.store.submit(&batch).await.unwrap();
    wait_for(
        "the short jobs to be held",
        Duration::from_secs(10),
        || async {
            let status = worker.status().await;
            (status["held"] == json!(SHORT_JOBS)).then_some(())
        },
    )
    .await;
    (ids[0], ids[1..].to_vec())
}

#[tokio::test]
async fn held_jobs_are_handed_back_on_sigterm_with_no_attempt_counted() {
    let store = TestStore::new().await;
    let mut worker = WorkerProcess::start(&store, &[("--concurrency", "1")]).await;
    let (long, short) = hold_short_jobs_behind_a_long_one(&store, &worker).await;
    let status = worker.status().await;
    assert_eq!(status["in_flight"].as_array().unwrap().len(), 1, "{status}");
    assert_eq!(status["in_flight"][0]["job_id"], json!(long));
    for id in &short {
        let job = store.job(*id).await;
        assert_eq!(job.status, JobStatus::Running, "held jobs are leased");
        assert_eq!(job.owner.as_deref(), Some(worker.id.as_str()));
    }

    worker.signal(Signal::SIGTERM);
    let exit = worker.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(exit.code(), Some(0), "log:\n{}", worker.log());
    for id in &short {
        let job = store.job(*id).await;
        assert_eq!(job.status, JobStatus::Pending, "job {id}");
        assert_eq!(job.attempts, 0, "a held job's hand-back counts no attempt");
        assert_eq!(job.owner, None);
    }
    let long = store.job(long).await;
    assert_eq!(long.status, JobStatus::Pending);
    assert_eq!(long.attempts, 0);
    let record = store
        .shutdown_of(&worker.id)
        .await
        .expect("shutdown record");
    assert_eq!(record.jobs_released, SHORT_JOBS as i64 + 1);
    // First thing in `draining`, before the phase ends (and the running job is checkpointed).
    let log = worker.log();
    let handed_back = log.find("held jobs handed back").expect("hand-back logged");
    let draining_ended = log
        .find("phase finished phase=draining")
        .expect("draining logged");
    assert!(handed_back < draining_ended, "{log}");
}

#[tokio::test]
async fn a_busy_worker_does_not_starve_an_idle_one_of_short_jobs() {
    let store = TestStore::new().await;
    let mut busy = WorkerProcess::start(&store, &[("--concurrency", "1")]).await;
    let (long, short) = hold_short_jobs_behind_a_long_one(&store, &busy).await;
    let mut idle = WorkerProcess::start(&store, &[("--concurrency", "2")]).await;

    // The long job runs for a minute; the short ones must not wait for it.
    wait_for(
        "the idle worker to run the short jobs",
        Duration::from_secs(15),
        || async {
            let mut done = 0;
            for id in &short {
                done += usize::from(store.job(*id).await.status == JobStatus::Completed);
            }
            (done == SHORT_JOBS).then_some(())
        },
    )
    .await;
    let long = store.job(long).await;
    assert_eq!(long.status, JobStatus::Running);
    assert_eq!(long.owner.as_deref(), Some(busy.id.as_str()));
    for id in &short {
        assert_eq!(
            store.job(*id).await.attempts,
            1,
            "job {id}: one attempt, the idle worker's"
        );
    }
    idle.wait_for_metric(
        r#"handover_jobs_completed_total{kind="noop"}"#,
        SHORT_JOBS as f64,
    )
    .await;
    assert_eq!(
        busy.metric(r#"handover_jobs_completed_total{kind="noop"}"#)
            .await,
        1.0,
        "the busy worker ran only its warm-up job"
    );
    assert_eq!(
        busy.metric(r#"handover_jobs_released_total{kind="noop",reason="prefetch"}"#)
            .await,
        SHORT_JOBS as f64
    );
    // Having handed them back, it does not claim ahead again while its slot stays busy.
    assert_eq!(busy.status().await["held"], json!(0));
    assert_eq!(busy.metric("handover_jobs_held").await, 0.0);

    for worker in [&mut busy, &mut idle] {
        worker.signal(Signal::SIGTERM);
        let exit = worker.wait_exit(Duration::from_secs(20)).await;
        assert_eq!(exit.code(), Some(0), "log:\n{}", worker.log());
    }
}

/// SIGKILL while completions are queued behind their commit and jobs are held: every job is
/// still done exactly once, by the next worker, once the dead one's leases expire.
async fn a_sigkill_with_uncommitted_completions_loses_no_job(store: TestStore) {
    const JOBS: usize = 20_000;
    let jobs: Vec<NewJob> = (0..JOBS).map(|_| NewJob::new("noop", json!({}))).collect();
    store.store.submit(&jobs).await.unwrap();
    let mut first = WorkerProcess::start(&store, &[("--concurrency", "16")]).await;
    wait_for("jobs to be completing", Duration::from_secs(20), || async {
        let completed = first
            .metric(r#"handover_jobs_completed_total{kind="noop"}"#)
            .await;
        (completed >= 500.0).then_some(())
    })
    .await;
    first.signal(Signal::SIGKILL);
    first.wait_exit(Duration::from_secs(10)).await;

    let orphaned = store
        .all_jobs()
        .await
        .into_iter()
        .filter(|job| job.status == JobStatus::Running)
        .count();
    assert!(
        orphaned > 0,
        "the kill left no job leased: nothing was held or uncommitted"
    );
    let mut second = WorkerProcess::start(&store, &[("--concurrency", "16")]).await;
    wait_for(
        "every job to be completed",
        Duration::from_secs(120),
        || async {
            let counts = store.store.count_jobs().await.unwrap();
            let completed = counts
                .iter()
                .find(|(status, _)| *status == JobStatus::Completed)
                .map_or(0, |(_, n)| *n);
            (completed == JOBS as i64).then_some(())
        },
    )
    .await;
    let audit = store.store.completion_counts().await.unwrap();
    assert_eq!(audit.len(), JOBS);
    assert!(audit.iter().all(|(_, n)| *n == 1), "a job completed twice");
    second.signal(Signal::SIGTERM);
    let exit = second.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(exit.code(), Some(0), "log:\n{}", second.log());
}

#[tokio::test]
async fn a_sigkill_with_uncommitted_completions_loses_no_job_on_sqlite() {
    a_sigkill_with_uncommitted_completions_loses_no_job(TestStore::new().await).await;
}

#[tokio::test]
async fn a_sigkill_with_uncommitted_completions_loses_no_job_on_postgres() {
    a_sigkill_with_uncommitted_completions_loses_no_job(TestStore::postgres().await).await;
}
