//! Retention (SPEC §10) as part of the store suite, on both backends: what a pass deletes and what
//! it must keep, batches, and the lock that lets one pass run at a time. Rows are made old by
//! moving their timestamps back with SQL (`Aging`), never by waiting.

use handover::lifecycle::{Mode, Outcome, Phase, Trigger};
use handover::store::prune::{prune_pass, PRUNE_BATCH};
use handover::store::{
    JobId, JobStatus, NewJob, PhaseSpan, PruneReport, Retention, SharedStore, ShutdownRecord,
};
use serde_json::json;
use std::time::Duration;

/// Generates one test per retention rule for a backend; `$fixture` is an async expression
/// returning a value with `store()` and `aging()`.
#[macro_export]
macro_rules! retention_tests {
    ($fixture:expr) => {
        $crate::retention_tests!(@each $fixture;
            retention_deletes_old_finished_rows_and_keeps_the_rest,
            retention_deletes_in_batches,
            one_retention_pass_at_a_time
        );
    };
    (@each $fixture:expr; $($name:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let fixture = $fixture.await;
                store_suite::retention::$name(fixture.store(), fixture.aging()).await;
            }
        )+
    };
}

/// Direct SQL on a fixture's database, to make rows old.
pub enum Aging {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl Aging {
    /// Runs `sql` (the same text on both backends).
    pub async fn execute(&self, sql: &str) {
        use sqlx::Connection;
        match self {
            Aging::Sqlite(path) => {
                let mut conn =
                    sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                        .await
                        .unwrap();
                sqlx::query(sql).execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
            }
            Aging::Postgres(url) => {
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::query(sql).execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
            }
        }
    }

    /// Moves `columns` of the rows of `table` matching `filter` back by `by`.
    pub async fn backdate(&self, table: &str, columns: &[&str], filter: &str, by: Duration) {
        let ms = by.as_millis();
        let set: Vec<String> = columns
            .iter()
            .map(|c| match self {
                Aging::Sqlite(_) => format!("{c} = {c} - {ms}"),
                Aging::Postgres(_) => format!("{c} = {c} - interval '{ms} milliseconds'"),
            })
            .collect();
        self.execute(&format!(
            "UPDATE {table} SET {} WHERE {filter}",
            set.join(", ")
        ))
        .await;
    }
}

const HOUR: Duration = Duration::from_secs(3600);
const LONG: Duration = Duration::from_secs(60);

/// Keeps every kind of row for an hour.
fn an_hour() -> Retention {
    Retention {
        completed: Some(HOUR),
        dead: Some(HOUR),
        workers: Some(HOUR),
        shutdowns: Some(HOUR),
    }
}

fn noop(max_attempts: i32) -> NewJob {
    let mut job = NewJob::new("noop", json!({}));
    job.max_attempts = max_attempts;
    job
}

fn kinds() -> Vec<String> {
    vec!["noop".to_string()]
}

async fn register(store: &SharedStore, id: &str) {
    store
        .register_worker(&handover::store::WorkerRegistration {
            id: id.into(),
            name: format!("name-{id}"),
            version: "test".into(),
            listen_addr: None,
            concurrency: 1,
            lease_ttl: LONG,
            kinds: Vec::new(),
        })
        .await
        .unwrap();
}

/// Submits one job and claims it as `owner`.
async fn claimed(store: &SharedStore, owner: &str, max_attempts: i32) -> handover::store::Lease {
    let id = store.submit(&[noop(max_attempts)]).await.unwrap()[0];
    let mut got = store.claim(owner, &kinds(), 1, LONG).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].lease.job_id, id);
    got.remove(0).lease
}

async fn completed(store: &SharedStore, owner: &str) -> JobId {
    let lease = claimed(store, owner, 5).await;
    assert_eq!(
        store.complete(&[(lease.clone(), json!({}))]).await.unwrap(),
        vec![true]
    );
    lease.job_id
}

async fn dead(store: &SharedStore, owner: &str) -> JobId {
    let lease = claimed(store, owner, 1).await;
    store.fail(&lease, "boom", Duration::ZERO).await.unwrap();
    lease.job_id
}

fn shutdown(worker_id: &str, started_at: chrono::DateTime<chrono::Utc>) -> ShutdownRecord {
    ShutdownRecord {
        worker_id: worker_id.into(),
        worker_name: "one".into(),
        trigger: Trigger::Sigterm,
        mode: Mode::Handoff,
        outcome: Outcome::Clean,
        requested_by: None,
        reason: None,
        started_at,
        duration_ms: 12.5,
        phases: vec![PhaseSpan {
            phase: Phase::Draining,
            entered_at: started_at,
            duration_ms: Some(1.0),
        }],
        jobs_released: 0,
        forced_jobs: vec![],
    }
}

async fn exists(store: &SharedStore, id: JobId) -> bool {
    store.get_job(id).await.unwrap().is_some()
}

async fn worker_ids(store: &SharedStore) -> Vec<String> {
    let mut ids: Vec<String> = store
        .list_workers()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.id)
        .collect();
    ids.sort();
    ids
}

fn ids_in(ids: &[JobId]) -> String {
    let list: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    format!("id IN ({})", list.join(", "))
}

pub async fn retention_deletes_old_finished_rows_and_keeps_the_rest(
    store: SharedStore,
    aging: Aging,
) {
    for worker in [
        "w-live",
        "w-stopped-old",
        "w-stopped-new",
        "w-declared-dead",
        "w-named",
    ] {
        register(&store, worker).await;
    }
    // To be deleted (once two hours old): one completed (with its audit row), one dead, one
    // cancelled job.
    let completed_old = completed(&store, "w-live").await;
    let dead_old = dead(&store, "w-live").await;
    let cancelled_old = store.submit(&[noop(5)]).await.unwrap()[0];
    aging
        .execute(&format!(
            "UPDATE jobs SET status = 'cancelled' WHERE id = {cancelled_old}"
        ))
        .await;
    // Kept however old: pending, running and failed jobs.
    let running_old = claimed(&store, "w-live", 5).await.job_id;
    let failed_old = {
        let lease = claimed(&store, "w-live", 5).await;
        store.fail(&lease, "retry me", LONG).await.unwrap();
        lease.job_id
    };
    // Of a kind no claim here asks for, so that it stays pending.
    let pending_old = store
        .submit(&[NewJob::new("unclaimed", json!({}))])
        .await
        .unwrap()[0];
    let old = [
        completed_old,
        dead_old,
        cancelled_old,
        running_old,
        failed_old,
        pending_old,
    ];
    aging
        .backdate(
            "jobs",
            &["updated_at", "created_at"],
            &ids_in(&old),
            2 * HOUR,
        )
        .await;
    // Kept: finished, but recent. The dead one names w-named as its owner.
    let completed_new = completed(&store, "w-live").await;
    let dead_new = dead(&store, "w-named").await;

    // Workers: stopped two hours ago, declared dead two hours ago: deleted. Stopped just now,
    // alive (however old its heartbeat), or named by a job: kept.
    for stopped in ["w-stopped-old", "w-stopped-new", "w-named"] {
        store.deregister_worker(stopped).await.unwrap();
    }
    aging
        .backdate(
            "workers",
            &["started_at", "heartbeat_at", "stopped_at"],
            "id IN ('w-stopped-old', 'w-named')",
            2 * HOUR,
        )
        .await;
    aging
        .backdate(
            "workers",
            &["started_at", "heartbeat_at"],
            "id IN ('w-declared-dead', 'w-live')",
            2 * HOUR,
        )
        .await;
    aging
        .execute("UPDATE workers SET declared_dead_at = heartbeat_at WHERE id = 'w-declared-dead'")
        .await;

    let now = chrono::Utc::now();
    store
        .record_shutdown(&shutdown("w-stopped-old", now - chrono::Duration::hours(2)))
        .await
        .unwrap();
    store
        .record_shutdown(&shutdown("w-stopped-new", now))
        .await
        .unwrap();

    // Keeping everything forever deletes nothing.
    let kept = prune_pass(&*store, &Retention::FOREVER, PRUNE_BATCH, |_| {})
        .await
        .unwrap()
        .expect("no other pass holds the lock");
    assert_eq!(kept, PruneReport::default());

    let report = prune_pass(&*store, &an_hour(), PRUNE_BATCH, |_| {})
        .await
        .unwrap()
        .expect("no other pass holds the lock");
    assert_eq!(
        report,
        PruneReport {
            completed_jobs: 1,
            dead_jobs: 1,
            cancelled_jobs: 1,
            job_completions: 1,
            // The dead job's `failed` event goes with it.
            job_events: 1,
            workers: 2,
            shutdowns: 1,
        }
    );
    for gone in [completed_old, dead_old, cancelled_old] {
        assert!(!exists(&store, gone).await, "job {gone} should be deleted");
    }
    for (kept, status) in [
        (running_old, JobStatus::Running),
        (failed_old, JobStatus::Failed),
        (pending_old, JobStatus::Pending),
        (completed_new, JobStatus::Completed),
        (dead_new, JobStatus::Dead),
    ] {
        let job = store.get_job(kept).await.unwrap();
        assert_eq!(job.map(|j| j.status), Some(status), "job {kept} is kept");
    }
    let audited: Vec<JobId> = store
        .completion_counts()
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        audited,
        vec![completed_new],
        "only the kept job's audit row"
    );
    assert_eq!(
        worker_ids(&store).await,
        vec!["w-live", "w-named", "w-stopped-new"]
    );
    let shutdowns = store.list_shutdowns(10).await.unwrap();
    assert_eq!(shutdowns.len(), 1);
    assert_eq!(shutdowns[0].worker_id, "w-stopped-new");

    // A second pass finds nothing more.
    let again = prune_pass(&*store, &an_hour(), PRUNE_BATCH, |_| {})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again, PruneReport::default());
}

pub async fn retention_deletes_in_batches(store: SharedStore, aging: Aging) {
    let jobs: Vec<NewJob> = (0..25).map(|_| noop(5)).collect();
    let ids = store.submit(&jobs).await.unwrap();
    let claimed = store.claim("w1", &kinds(), 25, LONG).await.unwrap();
    let items: Vec<_> = claimed
        .iter()
        .map(|c| (c.lease.clone(), json!({})))
        .collect();
    assert!(store.complete(&items).await.unwrap().iter().all(|ok| *ok));
    // Every other job old: a batch must go past the recent ones to find the next old ones.
    let old: Vec<JobId> = ids.iter().copied().step_by(2).collect();
    aging
        .backdate("jobs", &["updated_at"], &ids_in(&old), 2 * HOUR)
        .await;
    let mut batches = Vec::new();
    let report = prune_pass(&*store, &an_hour(), 5, |batch| batches.push(*batch))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.completed_jobs, old.len() as u64);
    assert_eq!(report.job_completions, old.len() as u64);
    let job_batches: Vec<u64> = batches
        .iter()
        .map(|b| b.completed_jobs)
        .filter(|n| *n > 0)
        .collect();
    assert_eq!(
        job_batches,
        vec![5, 5, 3],
        "13 old jobs in batches of at most 5"
    );
    for id in ids {
        assert_eq!(exists(&store, id).await, !old.contains(&id), "job {id}");
    }
}

pub async fn one_retention_pass_at_a_time(store: SharedStore, aging: Aging) {
    let id = completed(&store, "w1").await;
    aging
        .backdate("jobs", &["updated_at"], &format!("id = {id}"), 2 * HOUR)
        .await;
    let first = store
        .begin_prune()
        .await
        .unwrap()
        .expect("the first pass takes the lock");
    assert!(
        store.begin_prune().await.unwrap().is_none(),
        "a second pass must not start while the first holds the lock"
    );
    let skipped = prune_pass(&*store, &an_hour(), PRUNE_BATCH, |_| {})
        .await
        .unwrap();
    assert_eq!(
        skipped, None,
        "a pass that finds the lock held does nothing"
    );
    assert!(exists(&store, id).await);
    first.end().await.unwrap();
    let report = prune_pass(&*store, &an_hour(), PRUNE_BATCH, |_| {})
        .await
        .unwrap()
        .expect("the lock is free again once the first pass ended");
    assert_eq!(report.completed_jobs, 1);
    assert!(!exists(&store, id).await);
}
