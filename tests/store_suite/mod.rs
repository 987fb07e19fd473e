//! The store rules of SPEC §2-§3 as one behavioural suite, written against the `Store` trait so
//! every backend runs the same tests (`store_tests!` instantiates it for a backend).

#![allow(dead_code)]

pub mod retention;
pub mod rolling;

pub use self::rolling::*;

use handover::lifecycle::{Mode, Outcome, Phase, Trigger};
use handover::store::{
    DrainCost, DrainRequest, FailOutcome, JobFilter, JobStatus, Lease, NewJob, PhaseSpan,
    SharedStore, ShutdownRecord, StoreError, WorkerRegistration,
};
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;

/// Generates one `#[tokio::test]` per rule for a backend; `$fixture` is an async expression
/// returning a value with a `store()` method (kept alive for the test's duration).
#[macro_export]
macro_rules! store_tests {
    ($fixture:expr) => {
        $crate::store_tests!(@each $fixture;
            claim_sets_owner_epoch_and_lease_atomically,
            claims_take_up_to_the_limit_in_priority_order,
            lease_epochs_grow_strictly_across_claims,
            concurrent_claims_never_share_a_job,
            stale_lease_writes_change_nothing_and_say_so,
            a_job_is_completed_at_most_once,
            release_keeps_the_checkpoint_and_does_not_count_an_attempt,
            a_release_can_hold_the_job_back_for_a_while,
            failures_retry_with_backoff,
            exhausted_attempts_make_a_job_dead,
            rescue_returns_expired_leases_keeping_the_checkpoint,
            rescue_needs_no_heartbeat_from_the_owner,
            rescue_leaves_live_leases_alone,
            heartbeat_renews_every_lease_of_the_worker,
            heartbeat_reports_leases_the_worker_lost,
            heartbeat_never_renews_a_lease_the_worker_let_go,
            heartbeat_tells_a_worker_it_was_declared_dead,
            drain_requests_are_delivered_once,
            drain_requests_for_unknown_or_stopped_workers_are_refused,
            shutdown_records_round_trip,
            listing_filters_by_status,
            claims_only_the_kinds_asked_for,
            cancel_stops_waiting_jobs_at_once_and_asks_the_owner_of_running_ones,
            a_completion_racing_a_cancel_has_exactly_one_winner,
            a_cancelled_job_whose_owner_died_is_not_resurrected_by_the_rescuer,
            retry_sends_finished_jobs_back_with_attempts_reset,
            hand_backs_record_their_reason_and_checkpoint,
            workers_announce_the_kinds_they_serve,
            queue_counts_count_jobs_per_kind_and_status,
            rolling_drains_keep_at_most_the_budget_out,
            a_worker_draining_for_any_reason_counts_against_the_budget,
            concurrent_rolling_drains_never_exceed_the_budget,
            heartbeats_report_what_a_drain_would_cost
        );
    };
    (@each $fixture:expr; $($name:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let fixture = $fixture.await;
                store_suite::$name(fixture.store()).await;
            }
        )+
    };
}

const LONG: Duration = Duration::from_secs(60);
const WAIT_LIMIT: Duration = Duration::from_secs(10);

fn demo_job() -> NewJob {
    NewJob::new("demo", json!({"seed": "s", "iterations": 10}))
}

fn kinds() -> Vec<String> {
    vec!["demo".to_string(), "noop".to_string()]
}

fn registration(id: &str, lease_ttl: Duration) -> WorkerRegistration {
    WorkerRegistration {
        id: id.to_string(),
        name: format!("name-{id}"),
        version: "test".into(),
        listen_addr: None,
        concurrency: 4,
        lease_ttl,
        kinds: vec!["demo".into()],
    }
}

/// Waits for `check` to return Some (the harness's `wait_for`, with the suite's limit).
async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    crate::common::wait_for(what, WAIT_LIMIT, check).await
}

async fn claim_one(store: &SharedStore, owner: &str, ttl: Duration) -> handover::store::ClaimedJob {
    let mut claimed = store.claim(owner, &kinds(), 1, ttl).await.unwrap();
    assert_eq!(claimed.len(), 1, "expected one job to claim");
    claimed.remove(0)
}

pub async fn claim_sets_owner_epoch_and_lease_atomically(store: SharedStore) {
    let ids = store.submit(&[demo_job(), demo_job()]).await.unwrap();
    let before = chrono::Utc::now();
    let claimed = claim_one(&store, "w1", LONG).await;
    assert_eq!(claimed.lease.job_id, ids[0]);
    assert_eq!(claimed.lease.owner, "w1");
    assert_eq!(claimed.lease.epoch, 1);
    assert_eq!(claimed.attempt, 1);
    let job = store.get_job(ids[0]).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Running);
    assert_eq!(job.owner.as_deref(), Some("w1"));
    assert_eq!(job.lease_epoch, 1);
    let expires = job
        .lease_expires_at
        .expect("a running job has a lease expiry");
    assert!(
        expires > before + chrono::Duration::seconds(50),
        "{expires} vs {before}"
    );
    let other = store.get_job(ids[1]).await.unwrap().unwrap();
    assert_eq!(other.status, JobStatus::Pending);
    assert_eq!(other.owner, None);
}

pub async fn claims_take_up_to_the_limit_in_priority_order(store: SharedStore) {
    let mut urgent = demo_job();
    urgent.priority = 5;
    let ids = store
        .submit(&[demo_job(), demo_job(), urgent, demo_job()])
        .await
        .unwrap();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids in submission order"
    );
    let first = store.claim("w1", &kinds(), 2, LONG).await.unwrap();
    let first_ids: Vec<_> = first.iter().map(|j| j.lease.job_id).collect();
    assert_eq!(first.len(), 2);
    assert!(
        first_ids.contains(&ids[2]),
        "the high-priority job is claimed first"
    );
    let rest = store.claim("w1", &kinds(), 10, LONG).await.unwrap();
    assert_eq!(rest.len(), 2);
    assert!(store
        .claim("w1", &kinds(), 10, LONG)
        .await
        .unwrap()
        .is_empty());
}

pub async fn lease_epochs_grow_strictly_across_claims(store: SharedStore) {
    let ids = store.submit(&[demo_job()]).await.unwrap();
    let mut last = 0;
    for owner in ["w1", "w2", "w3"] {
        let claimed = claim_one(&store, owner, LONG).await;
        assert!(
            claimed.lease.epoch > last,
            "epoch {} after {last}",
            claimed.lease.epoch
        );
        last = claimed.lease.epoch;
        assert_eq!(
            store
                .release(
                    &[claimed.lease],
                    std::time::Duration::ZERO,
                    handover::store::ReleaseReason::Shutdown
                )
                .await
                .unwrap(),
            vec![true]
        );
    }
    let job = store.get_job(ids[0]).await.unwrap().unwrap();
    assert_eq!(job.lease_epoch, last);
}

pub async fn concurrent_claims_never_share_a_job(store: SharedStore) {
    let jobs: Vec<NewJob> = (0..300).map(|_| demo_job()).collect();
    store.submit(&jobs).await.unwrap();
    let mut tasks = Vec::new();
    for worker in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let owner = format!("w{worker}");
            let mut mine = Vec::new();
            loop {
                let claimed = store.claim(&owner, &kinds(), 7, LONG).await.unwrap();
                if claimed.is_empty() {
                    return mine;
                }
                mine.extend(claimed.into_iter().map(|j| j.lease.job_id));
            }
        }));
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    for task in tasks {
        for id in task.await.unwrap() {
            total += 1;
            assert!(seen.insert(id), "job {id} was claimed twice");
        }
    }
    assert_eq!(total, 300);
}

pub async fn stale_lease_writes_change_nothing_and_say_so(store: SharedStore) {
    store.submit(&[demo_job()]).await.unwrap();
    let stale = claim_one(&store, "w1", LONG).await.lease;
    store.checkpoint(&stale, &json!({"i": 1})).await.unwrap();
    store
        .release(
            std::slice::from_ref(&stale),
            std::time::Duration::ZERO,
            handover::store::ReleaseReason::Shutdown,
        )
        .await
        .unwrap();
    let current = claim_one(&store, "w2", LONG).await.lease;
    store.checkpoint(&current, &json!({"i": 2})).await.unwrap();

    let lost = |r: Result<(), StoreError>| matches!(r, Err(StoreError::LeaseLost { .. }));
    assert!(lost(store.checkpoint(&stale, &json!({"i": 1})).await));
    assert!(matches!(
        store.fail(&stale, "stale", Duration::ZERO).await,
        Err(StoreError::LeaseLost { .. })
    ));
    assert_eq!(
        store
            .release(
                std::slice::from_ref(&stale),
                std::time::Duration::ZERO,
                handover::store::ReleaseReason::Shutdown
            )
            .await
            .unwrap(),
        vec![false]
    );
    assert_eq!(
        store
            .complete(&[(stale.clone(), json!("stale"))])
            .await
            .unwrap(),
        vec![false]
    );
    // Same owner, wrong epoch, is just as stale.
    let wrong_epoch = Lease {
        epoch: current.epoch - 1,
        ..current.clone()
    };
    assert!(lost(store.checkpoint(&wrong_epoch, &json!({"i": 0})).await));

    let job = store.get_job(current.job_id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Running);
    assert_eq!(job.owner.as_deref(), Some("w2"));
    assert_eq!(
        job.checkpoint,
        Some(json!({"i": 2})),
        "the checkpoint did not go back"
    );
    assert_eq!(job.result, None);
}

pub async fn a_job_is_completed_at_most_once(store: SharedStore) {
    let ids = store.submit(&[demo_job(), demo_job()]).await.unwrap();
    let leases: Vec<Lease> = store
        .claim("w1", &kinds(), 2, LONG)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.lease)
        .collect();
    let items: Vec<_> = leases
        .iter()
        .map(|l| (l.clone(), json!({"digest": l.job_id})))
        .collect();
    assert_eq!(store.complete(&items).await.unwrap(), vec![true, true]);
    assert_eq!(store.complete(&items).await.unwrap(), vec![false, false]);
    assert_eq!(
        store
            .release(
                &leases,
                std::time::Duration::ZERO,
                handover::store::ReleaseReason::Shutdown
            )
            .await
            .unwrap(),
        vec![false, false]
    );
    let counts = store.completion_counts().await.unwrap();
    assert_eq!(counts, vec![(ids[0], 1), (ids[1], 1)]);
    let job = store.get_job(ids[0]).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(job.result, Some(json!({"digest": ids[0]})));
    assert_eq!(job.lease_expires_at, None);
}

pub async fn release_keeps_the_checkpoint_and_does_not_count_an_attempt(store: SharedStore) {
    let ids = store.submit(&[demo_job()]).await.unwrap();
    let claimed = claim_one(&store, "w1", LONG).await;
    store
        .checkpoint(&claimed.lease, &json!({"i": 5}))
        .await
        .unwrap();
    assert_eq!(
        store
            .release(
                &[claimed.lease],
                std::time::Duration::ZERO,
                handover::store::ReleaseReason::Shutdown
            )
            .await
            .unwrap(),
        vec![true]
    );
    let job = store.get_job(ids[0]).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Pending);
    assert_eq!(job.owner, None);
    assert_eq!(job.lease_expires_at, None);
    assert_eq!(job.checkpoint, Some(json!({"i": 5})));
    assert_eq!(job.attempts, 0, "a hand-back is not a failed attempt");
    let again = claim_one(&store, "w2", LONG).await;
    assert_eq!(again.attempt, 1);
    assert_eq!(again.checkpoint, Some(json!({"i": 5})));
}

pub async fn a_release_can_hold_the_job_back_for_a_while(store: SharedStore) {
    let ids = store.submit(&[demo_job()]).await.unwrap();
    let claimed = claim_one(&store, "w1", LONG).await;
    let held_back = store
        .release(
            std::slice::from_ref(&claimed.lease),
            Duration::from_secs(3600),
            handover::store::ReleaseReason::Shutdown,
        )
        .await
        .unwrap();
    assert_eq!(held_back, vec![true]);
    let job = store.get_job(ids[0]).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Pending);
    assert!(job.run_after > chrono::Utc::now() + chrono::Duration::minutes(50));
    assert!(
        store
            .claim("w2", &kinds(), 5, LONG)
            .await
            .unwrap()
            .is_empty(),
        "not claimable before resume_after"
    );
}

pub async fn failures_retry_with_backoff(store: SharedStore) {
    let ids = store.submit(&[demo_job()]).await.unwrap();
    let claimed = claim_one(&store, "w1", LONG).await;
    let outcome = store
        .fail(&claimed.lease, "boom", Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(outcome, FailOutcome::Retry);
    let job = store.get_job(ids[0]).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.error.as_deref(), Some("boom"));
    assert_eq!(job.owner, None);
    assert_eq!(job.attempts, 1);
    assert!(job.run_after > chrono::Utc::now() + chrono::Duration::minutes(50));
    assert!(
        store
            .claim("w1", &kinds(), 5, LONG)
            .await
            .unwrap()
            .is_empty(),
        "not claimable before its backoff ends"
    );
}

pub async fn exhausted_attempts_make_a_job_dead(store: SharedStore) {
    let mut job = demo_job();
    job.max_attempts = 2;
    let ids = store.submit(&[job]).await.unwrap();
    let first = claim_one(&store, "w1", LONG).await;
    assert_eq!(
        store
            .fail(&first.lease, "one", Duration::ZERO)
            .await
            .unwrap(),
        FailOutcome::Retry
    );
    let second = claim_one(&store, "w1", LONG).await;
    assert_eq!(second.attempt, 2);
    assert_eq!(
        store
            .fail(&second.lease, "two", Duration::ZERO)
            .await
            .unwrap(),
        FailOutcome::Dead
    );
    let job = store.get_job(ids[0]).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Dead);
    assert_eq!(job.attempts, 2);
    assert_eq!(job.error.as_deref(), Some("two"));
    assert!(store
        .claim("w1", &kinds(), 5, LONG)
        .await
        .unwrap()
        .is_empty());
}

pub async fn rescue_returns_expired_leases_keeping_the_checkpoint(store: SharedStore) {
    store
        .register_worker(&registration("w1", Duration::from_millis(300)))
        .await
        .unwrap();
    let ids = store.submit(&[demo_job()]).await.unwrap();
    let claimed = claim_one(&store, "w1", Duration::from_millis(300)).await;
    store
        .checkpoint(&claimed.lease, &json!({"i": 7}))
        .await
        .unwrap();
    let rescued = eventually("the lease to expire and be rescued", || {
        let store = store.clone();
        async move {
            let rescued = store.rescue_expired().await.unwrap();
            (!rescued.is_empty()).then_some(rescued)
        }
    })
    .await;
    assert_eq!(rescued, ids);
    let job = store.get_job(ids[0]).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Pending);
    assert_eq!(job.owner, None);
    assert_eq!(job.checkpoint, Some(json!({"i": 7})));
    assert!(job.error.unwrap().contains("lease expired"));
    // The old holder is fenced out, and the next holder resumes from the checkpoint.
    assert!(store
        .checkpoint(&claimed.lease, &json!({"i": 8}))
        .await
        .is_err());
    let next = claim_one(&store, "w2", LONG).await;
    assert_eq!(next.checkpoint, Some(json!({"i": 7})));
    assert!(next.lease.epoch > claimed.lease.epoch);
}

pub async fn rescue_needs_no_heartbeat_from_the_owner(store: SharedStore) {
    // The owner never registered a worker row nor heartbeated: only the lease matters.
    let ids = store.submit(&[demo_job()]).await.unwrap();
    claim_one(&store, "ghost", Duration::from_millis(200)).await;
    let rescued = eventually("a rescue of the ghost's job", || {
        let store = store.clone();
        async move {
            let rescued = store.rescue_expired().await.unwrap();
            (!rescued.is_empty()).then_some(rescued)
        }
    })
    .await;
    assert_eq!(rescued, ids);
}

pub async fn rescue_leaves_live_leases_alone(store: SharedStore) {
    let ids = store.submit(&[demo_job()]).await.unwrap();
    claim_one(&store, "w1", LONG).await;
    assert!(store.rescue_expired().await.unwrap().is_empty());
    let job = store.get_job(ids[0]).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Running);
}

pub async fn heartbeat_renews_every_lease_of_the_worker(store: SharedStore) {
    store
        .register_worker(&registration("w1", LONG))
        .await
        .unwrap();
    store.submit(&[demo_job(), demo_job()]).await.unwrap();
    let leases: Vec<Lease> = store
        .claim("w1", &kinds(), 2, Duration::from_millis(500))
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.lease)
        .collect();
    let report = store
        .heartbeat("w1", &leases, LONG, DrainCost::default())
        .await
        .unwrap();
    assert!(report.worker_known);
    let mut renewed = report.renewed.clone();
    renewed.sort_by_key(|l| l.job_id);
    assert_eq!(renewed, leases);
    for lease in &leases {
        let job = store.get_job(lease.job_id).await.unwrap().unwrap();
        assert!(
            job.lease_expires_at.unwrap() > chrono::Utc::now() + chrono::Duration::seconds(50),
            "lease renewed for the new TTL"
        );
    }
    let worker = store.list_workers().await.unwrap().remove(0);
    assert_eq!(worker.in_flight, 2);
}

pub async fn heartbeat_reports_leases_the_worker_lost(store: SharedStore) {
    store
        .register_worker(&registration("w1", LONG))
        .await
        .unwrap();
    store.submit(&[demo_job(), demo_job()]).await.unwrap();
    let leases: Vec<Lease> = store
        .claim("w1", &kinds(), 2, LONG)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.lease)
        .collect();
    // Someone else ends up holding the first job.
    store
        .release(
            &leases[..1],
            std::time::Duration::ZERO,
            handover::store::ReleaseReason::Shutdown,
        )
        .await
        .unwrap();
    claim_one(&store, "w2", LONG).await;
    let report = store
        .heartbeat("w1", &leases, LONG, DrainCost::default())
        .await
        .unwrap();
    assert_eq!(report.renewed, leases[1..].to_vec());
}

pub async fn heartbeat_never_renews_a_lease_the_worker_let_go(store: SharedStore) {
    // The worker abandoned the first job (it believed the lease lost, or gave up a write) but the
    // row still names it: it must expire and be rescued, not be kept alive by the heartbeat.
    store
        .register_worker(&registration("w1", LONG))
        .await
        .unwrap();
    let ids = store.submit(&[demo_job(), demo_job()]).await.unwrap();
    let leases: Vec<Lease> = store
        .claim("w1", &kinds(), 2, Duration::from_millis(300))
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.lease)
        .collect();
    let still_held = &leases[1..];
    let rescued = eventually("the let-go lease to expire and be rescued", || {
        let store = store.clone();
        let still_held = still_held.to_vec();
        async move {
            let report = store
                .heartbeat(
                    "w1",
                    &still_held,
                    Duration::from_millis(300),
                    DrainCost::default(),
                )
                .await
                .unwrap();
            assert_eq!(report.renewed, still_held);
            let rescued = store.rescue_expired().await.unwrap();
            (!rescued.is_empty()).then_some(rescued)
        }
    })
    .await;
    assert_eq!(rescued, vec![ids[0]]);
    assert_eq!(
        store.get_job(ids[1]).await.unwrap().unwrap().status,
        JobStatus::Running,
        "the held lease was renewed all along"
    );
}

pub async fn heartbeat_tells_a_worker_it_was_declared_dead(store: SharedStore) {
    store
        .register_worker(&registration("w1", Duration::from_millis(200)))
        .await
        .unwrap();
    eventually("the worker to be declared dead", || {
        let store = store.clone();
        async move {
            store.rescue_expired().await.unwrap();
            let worker = store.list_workers().await.unwrap().remove(0);
            worker.declared_dead_at.map(|_| ())
        }
    })
    .await;
    assert!(
        !store
            .heartbeat("w1", &[], LONG, DrainCost::default())
            .await
            .unwrap()
            .worker_known
    );
    store.revive_worker("w1").await.unwrap();
    assert!(
        store
            .heartbeat("w1", &[], LONG, DrainCost::default())
            .await
            .unwrap()
            .worker_known
    );
}

pub async fn drain_requests_are_delivered_once(store: SharedStore) {
    store
        .register_worker(&registration("w1", LONG))
        .await
        .unwrap();
    let request = DrainRequest {
        mode: Mode::Finish,
        reason: Some("deploy 42".into()),
        requested_by: Some("alice".into()),
        requested_at: None,
    };
    let row = store.request_drain("name-w1", &request).await.unwrap();
    assert_eq!(row.id, "w1");
    assert_eq!(row.drain_request.as_ref().unwrap().mode, Mode::Finish);
    let delivered = store
        .heartbeat("w1", &[], LONG, DrainCost::default())
        .await
        .unwrap()
        .drain_request;
    let delivered = delivered.expect("the heartbeat delivers the request");
    assert_eq!(delivered.reason.as_deref(), Some("deploy 42"));
    assert_eq!(delivered.requested_by.as_deref(), Some("alice"));
    assert!(delivered.requested_at.is_some());
    assert!(store
        .heartbeat("w1", &[], LONG, DrainCost::default())
        .await
        .unwrap()
        .drain_request
        .is_none());
}

pub async fn drain_requests_for_unknown_or_stopped_workers_are_refused(store: SharedStore) {
    let request = DrainRequest {
        mode: Mode::Handoff,
        reason: None,
        requested_by: None,
        requested_at: None,
    };
    assert!(matches!(
        store.request_drain("nobody", &request).await,
        Err(StoreError::NotFound(_))
    ));
    store
        .register_worker(&registration("w1", LONG))
        .await
        .unwrap();
    store.deregister_worker("w1").await.unwrap();
    assert!(matches!(
        store.request_drain("w1", &request).await,
        Err(StoreError::Conflict(_))
    ));
    let worker = store.list_workers().await.unwrap().remove(0);
    assert_eq!(worker.phase, Phase::Stopped);
    assert!(worker.stopped_at.is_some());
}

pub async fn shutdown_records_round_trip(store: SharedStore) {
    let record = ShutdownRecord {
        worker_id: "w1".into(),
        worker_name: "one".into(),
        trigger: Trigger::Remote,
        mode: Mode::Handoff,
        outcome: Outcome::Forced,
        requested_by: Some("bob".into()),
        reason: Some("node drain".into()),
        started_at: chrono::DateTime::from_timestamp_millis(1_700_000_000_123).unwrap(),
        duration_ms: 1234.5,
        phases: vec![PhaseSpan {
            phase: Phase::Draining,
            entered_at: chrono::DateTime::from_timestamp_millis(1_700_000_000_123).unwrap(),
            duration_ms: Some(0.25),
        }],
        jobs_released: 3,
        forced_jobs: vec![7, 9],
    };
    store.record_shutdown(&record).await.unwrap();
    assert_eq!(store.list_shutdowns(10).await.unwrap(), vec![record]);
}

pub async fn listing_filters_by_status(store: SharedStore) {
    store
        .submit(&[demo_job(), demo_job(), demo_job()])
        .await
        .unwrap();
    claim_one(&store, "w1", LONG).await;
    let running = store
        .list_jobs(&JobFilter {
            status: Some(JobStatus::Running),
            limit: None,
        })
        .await
        .unwrap();
    assert_eq!(running.len(), 1);
    let limited = store
        .list_jobs(&JobFilter {
            status: None,
            limit: Some(2),
        })
        .await
        .unwrap();
    assert_eq!(limited.len(), 2);
    let counts = store.count_jobs().await.unwrap();
    assert!(counts.contains(&(JobStatus::Pending, 2)));
    assert!(counts.contains(&(JobStatus::Running, 1)));
}

pub async fn claims_only_the_kinds_asked_for(store: SharedStore) {
    store
        .submit(&[NewJob::new("other", json!({})), demo_job()])
        .await
        .unwrap();
    let claimed = store.claim("w1", &kinds(), 10, LONG).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].kind, "demo");
}

fn events_of(journey: &[handover::store::JobEvent]) -> Vec<String> {
    journey.iter().map(|e| e.event.to_string()).collect()
}

async fn journey_of(store: &SharedStore, id: i64) -> Vec<handover::store::JobEvent> {
    let job = store.get_job(id).await.unwrap().unwrap();
    let (written, completions) = store.job_history(id).await.unwrap();
    let shutdowns = store.list_shutdowns(100).await.unwrap();
    handover::store::journey(&job, written, completions, &shutdowns)
}

pub async fn cancel_stops_waiting_jobs_at_once_and_asks_the_owner_of_running_ones(
    store: SharedStore,
) {
    use handover::store::CancelOutcome;
    let ids = store
        .submit(&[demo_job(), demo_job(), demo_job()])
        .await
        .unwrap();
    let running = claim_one(&store, "w1", LONG).await;
    assert_eq!(running.lease.job_id, ids[0]);
    let finished = claim_one(&store, "w1", LONG).await;
    assert_eq!(
        store
            .complete(&[(finished.lease.clone(), json!({}))])
            .await
            .unwrap(),
        vec![true]
    );
    let outcomes = store
        .cancel(&[ids[0], ids[1], ids[2], 999_999])
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        vec![
            CancelOutcome::Requested { owner: "w1".into() },
            CancelOutcome::Finished(JobStatus::Completed),
            CancelOutcome::Cancelled,
            CancelOutcome::NotFound,
        ]
    );
    assert_eq!(
        store.get_job(ids[2]).await.unwrap().unwrap().status,
        JobStatus::Cancelled
    );
    // The running job is still running: only its owner ends it, by a fenced write.
    let job = store.get_job(ids[0]).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Running);
    assert!(job.cancel_requested);
    assert_eq!(
        store.cancels_requested("w1").await.unwrap(),
        vec![running.lease.clone()]
    );
    assert!(store.cancels_requested("w2").await.unwrap().is_empty());
    let stale = Lease {
        epoch: running.lease.epoch + 1,
        ..running.lease.clone()
    };
    assert!(!store.finish_cancelled(&stale).await.unwrap(), "fenced");
    assert!(store.finish_cancelled(&running.lease).await.unwrap());
    let job = store.get_job(ids[0]).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Cancelled);
    assert!(store.cancels_requested("w1").await.unwrap().is_empty());
    // A cancelled job is not claimed again, and cancelling it again is refused.
    assert!(store
        .claim("w2", &kinds(), 10, LONG)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.cancel(&[ids[0]]).await.unwrap(),
        vec![CancelOutcome::Finished(JobStatus::Cancelled)]
    );
    assert_eq!(
        events_of(&journey_of(&store, ids[0]).await),
        ["submitted", "claimed", "cancel_requested", "cancelled"]
    );
    let journey = journey_of(&store, ids[0]).await;
    assert_eq!(journey[1].worker_id.as_deref(), Some("w1"));
    assert_eq!(journey[3].lease_epoch, Some(running.lease.epoch));
    assert_eq!(
        events_of(&journey_of(&store, ids[2]).await),
        ["submitted", "cancelled"]
    );
}

pub async fn a_completion_racing_a_cancel_has_exactly_one_winner(store: SharedStore) {
    let ids = store.submit(&[demo_job(), demo_job()]).await.unwrap();
    let first = claim_one(&store, "w1", LONG).await;
    let second = claim_one(&store, "w1", LONG).await;
    store.cancel(&ids).await.unwrap();
    // The completion lands first for one job, the cancel for the other; the loser is told.
    assert_eq!(
        store
            .complete(&[(first.lease.clone(), json!({"done": true}))])
            .await
            .unwrap(),
        vec![true]
    );
    assert!(!store.finish_cancelled(&first.lease).await.unwrap());
    assert!(store.finish_cancelled(&second.lease).await.unwrap());
    assert_eq!(
        store
            .complete(&[(second.lease.clone(), json!({}))])
            .await
            .unwrap(),
        vec![false]
    );
    assert_eq!(
        store.get_job(ids[0]).await.unwrap().unwrap().status,
        JobStatus::Completed
    );
    assert_eq!(
        store.get_job(ids[1]).await.unwrap().unwrap().status,
        JobStatus::Cancelled
    );
    assert_eq!(
        events_of(&journey_of(&store, ids[0]).await),
        ["submitted", "claimed", "cancel_requested", "completed"]
    );
    assert_eq!(
        events_of(&journey_of(&store, ids[1]).await),
        ["submitted", "claimed", "cancel_requested", "cancelled"]
    );
    let audit = store.completion_counts().await.unwrap();
    assert_eq!(audit, vec![(ids[0], 1)]);
}

pub async fn a_cancelled_job_whose_owner_died_is_not_resurrected_by_the_rescuer(
    store: SharedStore,
) {
    let ids = store.submit(&[demo_job(), demo_job()]).await.unwrap();
    let cancelled = claim_one(&store, "w1", Duration::from_millis(200)).await;
    let _other = claim_one(&store, "w1", Duration::from_millis(200)).await;
    store.cancel(&[cancelled.lease.job_id]).await.unwrap();
    let rescued = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    eventually("both leases to expire and be rescued", || {
        let (store, rescued) = (store.clone(), rescued.clone());
        async move {
            let now = store.rescue_expired().await.unwrap();
            let mut all = rescued.lock().unwrap();
            all.extend(now);
            all.sort_unstable();
            (all.len() == 2).then_some(())
        }
    })
    .await;
    assert_eq!(*rescued.lock().unwrap(), ids);
    assert_eq!(
        store.get_job(ids[0]).await.unwrap().unwrap().status,
        JobStatus::Cancelled
    );
    assert_eq!(
        store.get_job(ids[1]).await.unwrap().unwrap().status,
        JobStatus::Pending
    );
    let claimed = store.claim("w2", &kinds(), 10, LONG).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].lease.job_id, ids[1]);
    let journey = journey_of(&store, ids[0]).await;
    assert_eq!(
        events_of(&journey),
        ["submitted", "claimed", "cancel_requested", "rescued"]
    );
    assert_eq!(journey[3].worker_id.as_deref(), Some("w1"));
    assert_eq!(journey[3].detail.as_ref().unwrap()["outcome"], "cancelled");
}

pub async fn retry_sends_finished_jobs_back_with_attempts_reset(store: SharedStore) {
    use handover::store::RetryOutcome;
    let ids = store
        .submit(&[
            NewJob {
                max_attempts: 1,
                ..demo_job()
            },
            demo_job(),
            demo_job(),
        ])
        .await
        .unwrap();
    let dead = claim_one(&store, "w1", LONG).await;
    store
        .checkpoint(&dead.lease, &json!({"i": 3}))
        .await
        .unwrap();
    assert_eq!(
        store.fail(&dead.lease, "boom", LONG).await.unwrap(),
        FailOutcome::Dead
    );
    store.cancel(&[ids[1]]).await.unwrap();
    let outcomes = store
        .retry(&[ids[0], ids[1], ids[2], 999_999], false)
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        vec![
            RetryOutcome::Retried,
            RetryOutcome::Retried,
            RetryOutcome::Refused(JobStatus::Pending),
            RetryOutcome::NotFound,
        ]
    );
    let job = store.get_job(ids[0]).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Pending);
    assert_eq!(job.attempts, 0);
    assert_eq!(job.owner, None);
    assert_eq!(job.error, None);
    assert_eq!(job.checkpoint, Some(json!({"i": 3})), "kept");
    let again = store
        .claim("w2", &kinds(), 10, LONG)
        .await
        .unwrap()
        .into_iter()
        .find(|job| job.lease.job_id == ids[0])
        .expect("the retried job is claimable again");
    assert_eq!(again.attempt, 1);
    assert_eq!(again.checkpoint, Some(json!({"i": 3})));
    store.fail(&again.lease, "boom again", LONG).await.unwrap();
    assert_eq!(
        store.retry(&[ids[0]], true).await.unwrap(),
        vec![RetryOutcome::Retried]
    );
    assert_eq!(
        store.get_job(ids[0]).await.unwrap().unwrap().checkpoint,
        None
    );
    let journey = journey_of(&store, ids[0]).await;
    assert_eq!(
        events_of(&journey),
        [
            "submitted",
            "claimed",
            "failed",
            "retried",
            "claimed",
            "failed",
            "retried"
        ]
    );
    assert_eq!(journey[1].worker_id.as_deref(), Some("w1"));
    assert_eq!(journey[4].worker_id.as_deref(), Some("w2"));
    assert_eq!(journey[6].detail.as_ref().unwrap()["from_scratch"], true);
}

pub async fn hand_backs_record_their_reason_and_checkpoint(store: SharedStore) {
    use handover::store::ReleaseReason;
    let ids = store.submit(&[demo_job()]).await.unwrap();
    let first = claim_one(&store, "w1", LONG).await;
    store
        .checkpoint(&first.lease, &json!({"i": 5}))
        .await
        .unwrap();
    store
        .release(
            std::slice::from_ref(&first.lease),
            Duration::ZERO,
            ReleaseReason::Shutdown,
        )
        .await
        .unwrap();
    let second = claim_one(&store, "w2", LONG).await;
    store
        .complete(&[(second.lease.clone(), json!({"ok": 1}))])
        .await
        .unwrap();
    let journey = journey_of(&store, ids[0]).await;
    assert_eq!(
        events_of(&journey),
        ["submitted", "claimed", "released", "claimed", "completed"]
    );
    let released = &journey[2];
    assert_eq!(released.worker_id.as_deref(), Some("w1"));
    assert_eq!(released.lease_epoch, Some(first.lease.epoch));
    let detail = released.detail.as_ref().unwrap();
    assert_eq!(detail["reason"], "shutdown");
    assert_eq!(detail["checkpoint"], json!({"i": 5}));
    assert_eq!(journey[3].worker_id.as_deref(), Some("w2"));
    assert_eq!(journey[4].worker_id.as_deref(), Some("w2"));
    assert_eq!(journey[4].lease_epoch, Some(second.lease.epoch));
    assert!(
        journey.windows(2).all(|w| w[0].at <= w[1].at),
        "oldest first"
    );
}

pub async fn workers_announce_the_kinds_they_serve(store: SharedStore) {
    assert!(store.served_kinds().await.unwrap().is_empty());
    store
        .register_worker(&WorkerRegistration {
            kinds: vec!["resize".into(), "demo".into()],
            ..registration("w1", LONG)
        })
        .await
        .unwrap();
    store
        .register_worker(&WorkerRegistration {
            kinds: vec!["email".into()],
            ..registration("w2", LONG)
        })
        .await
        .unwrap();
    assert_eq!(
        store.served_kinds().await.unwrap(),
        ["demo", "email", "resize"]
    );
}

pub async fn queue_counts_count_jobs_per_kind_and_status(store: SharedStore) {
    let count = |counts: &[handover::model::QueueCount], kind: &str, status: JobStatus| {
        counts
            .iter()
            .find(|c| c.kind == kind && c.status == status)
            .map_or(0, |c| c.jobs)
    };
    assert!(store.queue_counts().await.unwrap().is_empty());
    store
        .submit(&[demo_job(), demo_job(), demo_job()])
        .await
        .unwrap();
    store
        .submit(&[NewJob {
            max_attempts: 1,
            ..NewJob::new("other", json!({}))
        }])
        .await
        .unwrap();
    let running = claim_one(&store, "w1", LONG).await;
    let dead = store
        .claim("w1", &["other".to_string()], 1, LONG)
        .await
        .unwrap()
        .remove(0);
    store.fail(&dead.lease, "boom", LONG).await.unwrap();
    let done = claim_one(&store, "w1", LONG).await;
    store
        .complete(&[(done.lease.clone(), json!({}))])
        .await
        .unwrap();
    let counts = store.queue_counts().await.unwrap();
    assert_eq!(count(&counts, "demo", JobStatus::Pending), 1);
    assert_eq!(count(&counts, "demo", JobStatus::Running), 1);
    assert_eq!(count(&counts, "other", JobStatus::Dead), 1);
    assert_eq!(
        count(&counts, "demo", JobStatus::Completed),
        0,
        "completed jobs are not the queue"
    );
    let pending = counts
        .iter()
        .find(|c| c.kind == "demo" && c.status == JobStatus::Pending)
        .unwrap();
    let waited = pending
        .oldest_wait
        .expect("a runnable pending job has a wait");
    assert!(waited < Duration::from_secs(60), "{waited:?}");
    assert!(counts
        .iter()
        .filter(|c| c.status != JobStatus::Pending)
        .all(|c| c.oldest_wait.is_none()));
    drop(running);
}
