//! Fleet guarantees on PostgreSQL with real processes: rolling restarts and random SIGTERM/SIGKILL
//! lose no job and complete none twice, and a drain requested through the store arrives at once.

mod common;

use common::*;
use handover::lifecycle::{Outcome, Phase, Trigger};
use handover::store::{JobId, JobStatus, NewJob};
use nix::sys::signal::Signal;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Submits `count` short demo jobs and returns them with their specs.
async fn submit_demo_jobs(store: &TestStore, prefix: &str, count: usize) -> Vec<(JobId, DemoSpec)> {
    let specs: Vec<DemoSpec> = (0..count)
        .map(|n| DemoSpec::timed(&format!("{prefix}-{n}"), 0.01, 5))
        .collect();
    let jobs: Vec<NewJob> = specs
        .iter()
        .map(|spec| NewJob::new("demo", spec.payload()))
        .collect();
    let ids = store.store.submit(&jobs).await.unwrap();
    ids.into_iter().zip(specs).collect()
}

/// Every job completed exactly once, with the digest of an uninterrupted run.
async fn assert_all_completed_once(store: &TestStore, jobs: &[(JobId, DemoSpec)], limit: Duration) {
    wait_for("every job to complete", limit, || async {
        let counts = store.store.count_jobs().await.ok()?;
        let completed = counts
            .iter()
            .find(|(status, _)| *status == JobStatus::Completed)
            .map_or(0, |(_, n)| *n);
        (completed == jobs.len() as i64).then_some(())
    })
    .await;
    let completions: HashMap<JobId, i64> = store
        .store
        .completion_counts()
        .await
        .unwrap()
        .into_iter()
        .collect();
    let specs: Vec<(JobId, DemoSpec)> = jobs.to_vec();
    let expected = tokio::task::spawn_blocking(move || {
        specs
            .into_iter()
            .map(|(id, spec)| (id, spec.expected_digest()))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for (id, digest) in expected {
        assert_eq!(
            completions.get(&id),
            Some(&1),
            "job {id} completed exactly once"
        );
        let job = store.job(id).await;
        assert_eq!(job.result.unwrap()["digest"], digest, "job {id} digest");
    }
}

async fn wait_until_busy(store: &TestStore, worker: &WorkerProcess) {
    wait_for(
        "the worker to hold a job",
        Duration::from_secs(20),
        || async {
            let jobs = store
                .store
                .list_jobs(&handover::store::JobFilter {
                    status: Some(JobStatus::Running),
                    limit: None,
                })
                .await
                .ok()?;
            jobs.iter()
                .any(|j| j.owner.as_deref() == Some(worker.id.as_str()))
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_loses_nothing_and_repeats_nothing() {
    let store = TestStore::postgres().await;
    let jobs = submit_demo_jobs(&store, "roll", 200).await;
    let mut workers = Vec::new();
    for _ in 0..4 {
        workers.push(WorkerProcess::start(&store, &[]).await);
    }
    let mut stopped = Vec::new();
    for worker in workers.iter_mut() {
        wait_until_busy(&store, worker).await;
        worker.signal(Signal::SIGTERM);
        let status = worker.wait_exit(Duration::from_secs(20)).await;
        assert_eq!(status.code(), Some(0), "log:\n{}", worker.log());
        stopped.push(worker.id.clone());
        *worker = WorkerProcess::start(&store, &[]).await;
    }
    assert_all_completed_once(&store, &jobs, Duration::from_secs(180)).await;
    let records = store.store.list_shutdowns(100).await.unwrap();
    for id in &stopped {
        let record = records.iter().find(|r| &r.worker_id == id).unwrap();
        assert_eq!(record.outcome, Outcome::Clean);
        assert_eq!(record.trigger, Trigger::Sigterm);
    }
}

/// xorshift64*: enough randomness for chaos, reproducible from the printed seed.
struct Chaos(u64);

impl Chaos {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_sigterm_and_sigkill_lose_no_job_and_complete_none_twice() {
    let store = TestStore::postgres().await;
    let jobs = submit_demo_jobs(&store, "chaos", 150).await;
    let seed = std::env::var("HANDOVER_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("chaos seed {seed} (rerun with HANDOVER_CHAOS_SEED={seed})");
    let mut chaos = Chaos(seed);
    let mut workers = Vec::new();
    for _ in 0..4 {
        workers.push(WorkerProcess::start(&store, &[]).await);
    }
    let (mut terms, mut kills) = (0, 0);
    // At least 8 s and at least 8 faults (a loaded machine makes each round slower), within 60 s.
    let chaos_ends = Instant::now() + Duration::from_secs(8);
    let give_up = Instant::now() + Duration::from_secs(60);
    while (Instant::now() < chaos_ends || terms + kills < 8) && Instant::now() < give_up {
        // Pacing of the fault injection, not synchronisation.
        tokio::time::sleep(Duration::from_millis(200 + chaos.below(400))).await;
        let slot = chaos.below(workers.len() as u64) as usize;
        if chaos.below(2) == 0 {
            workers[slot].signal(Signal::SIGKILL);
            workers[slot].wait_exit(Duration::from_secs(5)).await;
            kills += 1;
        } else {
            workers[slot].signal(Signal::SIGTERM);
            let status = workers[slot].wait_exit(Duration::from_secs(20)).await;
            assert_eq!(status.code(), Some(0), "log:\n{}", workers[slot].log());
            terms += 1;
        }
        workers[slot] = WorkerProcess::start(&store, &[]).await;
    }
    println!("chaos: {terms} SIGTERM, {kills} SIGKILL");
    assert!(terms + kills >= 8, "enough faults were injected");
    assert_all_completed_once(&store, &jobs, Duration::from_secs(180)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_drains_another_through_the_store_at_once() {
    let store = TestStore::postgres().await;
    let spec = DemoSpec::timed("remote", 0.2, 200);
    let job = store.submit("demo", spec.payload()).await;
    // The target heartbeats only every 5 s: a fast reaction can only come from NOTIFY.
    let mut target = WorkerProcess::start(
        &store,
        &[
            ("--heartbeat-interval", "5s"),
            ("--lease-ttl", "15s"),
            ("--concurrency", "1"),
        ],
    )
    .await;
    store
        .wait_for_checkpoint(job, 1, Duration::from_secs(20))
        .await;
    let asker = WorkerProcess::start(&store, &[("--concurrency", "1")]).await;

    let requested = Instant::now();
    let answer = asker
        .admin_post(
            &format!("/fleet/{}/drain", target.id),
            serde_json::json!({"mode": "handoff", "reason": "rebalancing"}),
        )
        .await;
    assert_eq!(answer.status(), 202);
    let ready_url = target.url("/readyz");
    // A worker with nothing to wait for may drain, stop and close its listener between two
    // probes: a refused connection (it answered before the POST) means it has left running too.
    wait_for(
        "the target to leave running",
        Duration::from_secs(10),
        || async {
            match reqwest::get(&ready_url).await {
                Ok(answer) => (answer.status() == 503).then_some(()),
                Err(_) => Some(()),
            }
        },
    )
    .await;
    let latency = requested.elapsed();
    println!("remote drain latency (request to target not ready): {latency:?}");
    assert!(
        latency < Duration::from_secs(2),
        "pushed, not polled: {latency:?}"
    );

    assert_eq!(
        target.wait_exit(Duration::from_secs(20)).await.code(),
        Some(0)
    );
    let record = store
        .store
        .list_shutdowns(10)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.worker_id == target.id)
        .unwrap();
    assert_eq!(record.trigger, Trigger::Remote);
    assert_eq!(record.reason.as_deref(), Some("rebalancing"));
    assert!(record.requested_by.unwrap().contains(&asker.name));
    assert_eq!(store.worker_row(&target.id).await.phase, Phase::Stopped);

    // Unknown and stopped workers are clear errors, and nothing is written.
    let unknown = asker
        .admin_post("/fleet/nobody/drain", serde_json::json!({}))
        .await;
    assert_eq!(unknown.status(), 404);
    let stopped = asker
        .admin_post(
            &format!("/fleet/{}/drain", target.id),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(stopped.status(), 409);
    let bad = asker
        .admin_post(
            &format!("/fleet/{}/drain", asker.id),
            serde_json::json!({"mode": "now"}),
        )
        .await;
    assert_eq!(bad.status(), 400);
    assert_eq!(asker.status().await["phase"], "running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_postgres_hands_the_job_back_and_another_worker_finishes_it() {
    let store = TestStore::postgres().await;
    let spec = DemoSpec::timed("pg-sigterm", 0.2, 15);
    let job_id = store.submit("demo", spec.payload()).await;
    let mut first = WorkerProcess::start(&store, &[("--concurrency", "1")]).await;
    store
        .wait_for_checkpoint(job_id, spec.checkpoint_every, Duration::from_secs(20))
        .await;
    first.signal(Signal::SIGTERM);
    assert_eq!(
        first.wait_exit(Duration::from_secs(20)).await.code(),
        Some(0)
    );
    let job = store.job(job_id).await;
    assert_eq!(job.status, JobStatus::Pending);
    assert!(job.checkpoint.is_some());
    assert_eq!(job.attempts, 0);
    let _second = WorkerProcess::start(&store, &[]).await;
    let done = store
        .wait_for_status(job_id, JobStatus::Completed, Duration::from_secs(30))
        .await;
    assert_eq!(done.result.unwrap()["digest"], spec.expected_digest());
}
