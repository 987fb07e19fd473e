//! Enqueue from SQL (SPEC §10): `handover_add_job` inside a producer's own transaction on
//! PostgreSQL, the jobs table's statement trigger waking idle workers with one NOTIFY per
//! statement, the function's refusals, its schema pinning, and SQLite's plain INSERT. Real
//! PostgreSQL, the real worker binary; waits are on events (a NOTIFY, a job's status), never sleeps.

mod common;

use common::postgres::PgSchema;
use common::{TestStore, WorkerProcess};
use handover::store::{JobStatus, NewJob, StoreEvent, WorkerRegistration};
use serde_json::{json, Value};
use sqlx::postgres::{PgConnection, PgListener};
use sqlx::{Connection, Row};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long a NOTIFY may take to arrive (it is sent at commit; locally it takes milliseconds).
const NOTIFY_LIMIT: Duration = Duration::from_secs(5);
/// The idle worker's poll interval: a pickup faster than this came from the NOTIFY.
const LONG_POLL: &str = "10s";

async fn connect(url: &str) -> PgConnection {
    PgConnection::connect(url).await.expect("connect")
}

/// A LISTEN on `channel`, on its own connection.
async fn listen(url: &str, channel: &str) -> PgListener {
    let mut listener = PgListener::connect(url).await.expect("listener connects");
    listener.listen(channel).await.expect("LISTEN");
    listener
}

/// Sends `marker` on `channel` in a transaction of its own, then collects every payload the
/// listener receives up to and including the marker. NOTIFYs are delivered in commit order, so
/// whatever was committed before the marker is in the list and whatever was not sent is not.
async fn payloads_until_marker(
    conn: &mut PgConnection,
    listener: &mut PgListener,
    channel: &str,
    marker: &str,
) -> Vec<String> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(marker)
        .execute(&mut *conn)
        .await
        .unwrap();
    let mut payloads = Vec::new();
    loop {
        let received = tokio::time::timeout(NOTIFY_LIMIT, listener.recv())
            .await
            .expect("the marker NOTIFY arrives")
            .unwrap();
        if received.payload() == marker {
            return payloads;
        }
        payloads.push(received.payload().to_string());
    }
}

fn channel_of(schema: &PgSchema) -> String {
    format!("handover_{}", schema.schema)
}

async fn job_count(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_rolled_back_add_leaves_nothing_and_a_committed_one_runs_at_once() {
    let store = TestStore::postgres().await;
    let schema = store.schema.as_ref().unwrap();
    let mut worker = WorkerProcess::start(&store, &[("--poll-interval", LONG_POLL)]).await;
    let mut producer = connect(&store.url).await;
    sqlx::query("CREATE TABLE orders (id bigint PRIMARY KEY, job_id bigint NOT NULL)")
        .execute(&mut producer)
        .await
        .unwrap();
    let channel = channel_of(schema);
    let mut listener = listen(&store.url, &channel).await;

    // The application's row and its job, in one transaction that rolls back: neither exists,
    // and no worker was woken for it.
    let mut tx = producer.begin().await.unwrap();
    let id: i64 = sqlx::query_scalar("SELECT handover_add_job('noop', '{\"order\": 1}')")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    sqlx::query("INSERT INTO orders VALUES (1, $1)")
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(
        job_count(&mut producer).await,
        0,
        "the rolled-back job exists"
    );
    let heard =
        payloads_until_marker(&mut producer, &mut listener, &channel, "after-rollback").await;
    assert!(heard.is_empty(), "a rolled-back add notified: {heard:?}");

    // The same, committed: the idle worker (polling every 10 s) runs it at once.
    let mut tx = producer.begin().await.unwrap();
    let payload = json!({"seed": "sql", "iterations": 1000});
    let id: i64 = sqlx::query_scalar("SELECT handover_add_job('demo', $1)")
        .bind(&payload)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    sqlx::query("INSERT INTO orders VALUES (2, $1)")
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
    // The database's clock just before the commit (after it, the worker may already have it).
    let committed_at: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT clock_timestamp()")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    tx.commit().await.unwrap();
    let job = store
        .wait_for_status(id, JobStatus::Completed, Duration::from_secs(5))
        .await;
    let latency = job.claimed_at.unwrap() - committed_at;
    println!(
        "pickup latency (commit to claim): {} ms",
        latency.num_milliseconds()
    );
    assert!(
        latency < chrono::Duration::seconds(2),
        "claimed {latency} after commit: that was the poll, not the NOTIFY"
    );
    assert_eq!(job.kind, "demo");
    assert_eq!(job.payload, payload);
    assert_eq!((job.priority, job.max_attempts, job.attempts), (0, 5, 1));
    assert!(job.result.unwrap()["digest"].is_string());

    // Its journey is a whole one: submitted once (from the row, as for every job), claimed by
    // this worker, completed.
    let body: Value = worker
        .admin_get(&format!("/api/jobs/{id}"))
        .await
        .json()
        .await
        .unwrap();
    let events: Vec<&str> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["submitted", "claimed", "completed"], "{body}");
    assert_eq!(body["events"][1]["worker_id"], json!(worker.id));
    worker.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(worker.wait_exit(Duration::from_secs(20)).await.success());
}

/// Inserts 10,000 jobs in one statement; returns how long it took.
async fn insert_ten_thousand(conn: &mut PgConnection) -> Duration {
    let started = Instant::now();
    let done = sqlx::query(
        "INSERT INTO jobs (kind, payload) \
         SELECT 'noop', jsonb_build_object('n', g) FROM generate_series(1, 10000) AS g",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    assert_eq!(done.rows_affected(), 10_000);
    started.elapsed()
}

/// The same insert in a transaction that is rolled back, with the notify trigger enabled or
/// disabled: the two differ only in the trigger (neither pays a commit).
async fn insert_ten_thousand_rolled_back(conn: &mut PgConnection, trigger: bool) -> Duration {
    let mut tx = conn.begin().await.unwrap();
    if !trigger {
        sqlx::query("ALTER TABLE jobs DISABLE TRIGGER jobs_notify_inserted")
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    let took = insert_ten_thousand(&mut tx).await;
    tx.rollback().await.unwrap();
    took
}

#[tokio::test]
async fn a_bulk_insert_sends_one_notification_and_costs_no_more_than_without_it() {
    let schema = PgSchema::new().await;
    let channel = channel_of(&schema);
    let mut conn = connect(&schema.url).await;
    let mut listener = listen(&schema.url, &channel).await;

    insert_ten_thousand(&mut conn).await;
    let heard = payloads_until_marker(&mut conn, &mut listener, &channel, "after-bulk").await;
    assert_eq!(heard, ["jobs"], "one INSERT of 10,000 rows");
    assert_eq!(job_count(&mut conn).await, 10_000);

    // handover's own submit has no NOTIFY of its own: the trigger's, one per transaction, even
    // though 10,001 jobs take two statements.
    let jobs: Vec<NewJob> = (0..10_001)
        .map(|_| NewJob::new("noop", json!({})))
        .collect();
    schema.store.submit(&jobs).await.unwrap();
    let heard = payloads_until_marker(&mut conn, &mut listener, &channel, "after-submit").await;
    assert_eq!(heard, ["jobs"], "handover submit of 10,001 jobs");

    // What the trigger costs: the best of five runs with it and without it, alternately.
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        without.push(insert_ten_thousand_rolled_back(&mut conn, false).await);
        with.push(insert_ten_thousand_rolled_back(&mut conn, true).await);
    }
    let (with, without) = (*with.iter().min().unwrap(), *without.iter().min().unwrap());
    println!("10,000-row INSERT ... SELECT: {with:?} with the trigger, {without:?} without");
    assert!(
        with < without * 2 + Duration::from_millis(100),
        "the statement trigger slowed a bulk insert: {with:?} with, {without:?} without"
    );
    assert!(with < Duration::from_secs(10), "10,000 rows took {with:?}");
}

/// The SQLSTATE and message of a refused call.
async fn refusal(conn: &mut PgConnection, call: &str) -> (String, String) {
    let err = sqlx::query(&format!("SELECT {call}"))
        .execute(&mut *conn)
        .await
        .expect_err(call);
    let db = err.as_database_error().expect("a database error");
    (db.code().unwrap().into_owned(), db.message().to_string())
}

#[tokio::test]
async fn bad_arguments_are_refused_with_a_clear_error_and_add_nothing() {
    let schema = PgSchema::new().await;
    let mut conn = connect(&schema.url).await;
    let cases = [
        (
            "handover_add_job(NULL, '{}')",
            "22004",
            "kind must not be null",
        ),
        (
            "handover_add_job('noop', NULL)",
            "22004",
            "payload must not be null",
        ),
        (
            "handover_add_job('noop', '{}', NULL)",
            "22004",
            "priority must not be null",
        ),
        (
            "handover_add_job('noop', '{}', max_attempts => NULL)",
            "22004",
            "max_attempts must not be null",
        ),
        (
            "handover_add_job('noop', '{}', run_after => NULL)",
            "22004",
            "run_after must not be null",
        ),
        ("handover_add_job('', '{}')", "22023", "invalid job kind ''"),
        (
            "handover_add_job('no such/kind', '{}')",
            "22023",
            "invalid job kind 'no such/kind'",
        ),
        (
            "handover_add_job('noop', '{}', max_attempts => 0)",
            "22023",
            "max_attempts must be between 1 and 1000, not 0",
        ),
        (
            "handover_add_job('noop', '{}', max_attempts => -1)",
            "22023",
            "max_attempts must be between 1 and 1000, not -1",
        ),
        (
            "handover_add_job('noop', '{}', max_attempts => 1001)",
            "22023",
            "max_attempts must be between 1 and 1000, not 1001",
        ),
        (
            "handover_add_job('noop', jsonb_build_object('a', E'bell\\x07'))",
            "22023",
            "contains a control character",
        ),
        (
            "handover_add_job('noop', jsonb_build_object(E'k\\x1b', 1))",
            "22023",
            "contains a control character",
        ),
        (
            "handover_add_job('thumbnail', '{}')",
            "22023",
            "no worker of this store serves 'thumbnail' jobs (known kinds: demo, exec, noop)",
        ),
    ];
    for (call, code, message) in cases {
        let (got_code, got_message) = refusal(&mut conn, call).await;
        assert_eq!(got_code, code, "{call}: {got_message}");
        assert!(got_message.contains(message), "{call}: {got_message}");
    }
    assert_eq!(job_count(&mut conn).await, 0);

    // Accepted: every argument in range, tab/newline and an escaped backslash in strings, a kind
    // some worker serves, an unknown kind when asked for.
    let fine = [
        "handover_add_job('noop', jsonb_build_object('text', E'a\\tb\\nc \\\\b'), 7, 1000, now() + interval '1 hour')",
        "handover_add_job('thumbnail', '{}', allow_unknown_kind => true)",
    ];
    for call in fine {
        sqlx::query(&format!("SELECT {call}"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{call}: {e}"));
    }
    schema
        .store
        .register_worker(&WorkerRegistration {
            id: "resizer-1".into(),
            name: "resizer".into(),
            version: "test".into(),
            listen_addr: None,
            concurrency: 1,
            lease_ttl: Duration::from_secs(10),
            kinds: vec!["resize".into()],
        })
        .await
        .unwrap();
    sqlx::query("SELECT handover_add_job('resize', '{}')")
        .execute(&mut conn)
        .await
        .unwrap();
    let (_, message) = refusal(&mut conn, "handover_add_job('crop', '{}')").await;
    assert!(
        message.contains("(known kinds: demo, exec, noop, resize)"),
        "{message}"
    );

    let row = sqlx::query(
        "SELECT status, priority, max_attempts, run_after > now() AS later FROM jobs WHERE priority = 7",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>("status"), "pending");
    assert_eq!(row.get::<i32, _>("max_attempts"), 1000);
    assert!(row.get::<bool, _>("later"));
    assert_eq!(job_count(&mut conn).await, 3);
}

#[tokio::test]
async fn the_function_and_trigger_belong_to_the_schema_they_were_migrated_in() {
    let a = PgSchema::new().await;
    let b = PgSchema::new().await;
    // A session of schema b calls a's function by its qualified name: the job is a's, and a's
    // workers are woken, not b's.
    let mut in_b = connect(&b.url).await;
    let mut hears_a = listen(&a.url, &channel_of(&a)).await;
    let mut hears_b = listen(&b.url, &channel_of(&b)).await;
    let id: i64 = sqlx::query_scalar(&format!(
        "SELECT {}.handover_add_job('noop', '{{}}')",
        a.schema
    ))
    .fetch_one(&mut in_b)
    .await
    .unwrap();
    assert!(a.store.get_job(id).await.unwrap().is_some());
    assert_eq!(job_count(&mut in_b).await, 0, "b has no jobs");
    // A plain INSERT into a's table from b's session wakes a too.
    sqlx::query(&format!(
        "INSERT INTO {}.jobs (kind, payload) VALUES ('noop', '{{}}')",
        a.schema
    ))
    .execute(&mut in_b)
    .await
    .unwrap();
    let heard_a = payloads_until_marker(&mut in_b, &mut hears_a, &channel_of(&a), "end").await;
    assert_eq!(heard_a, ["jobs", "jobs"]);
    let heard_b = payloads_until_marker(&mut in_b, &mut hears_b, &channel_of(&b), "end").await;
    assert!(heard_b.is_empty(), "b was woken: {heard_b:?}");
}

#[tokio::test]
async fn a_worker_hears_inserts_into_a_schema_whose_name_is_too_long_for_a_channel() {
    // 60 characters: `handover_` + the name passes PostgreSQL's 63-byte limit, so the channel is
    // shortened with a hash, computed by the migration's SQL and by the worker alike.
    let name = format!("t_{}_{}", uuid::Uuid::new_v4().simple(), "x".repeat(25));
    assert_eq!(name.len(), 60);
    let schema = PgSchema::named(name).await;
    let stop = CancellationToken::new();
    let subscription = schema.store.subscribe(stop.clone()).await.unwrap().unwrap();
    let listening = tokio::spawn(subscription.listener);
    let mut events = subscription.events;
    let mut conn = connect(&schema.url).await;
    sqlx::query("SELECT handover_add_job('noop', '{}')")
        .execute(&mut conn)
        .await
        .unwrap();
    let event = tokio::time::timeout(NOTIFY_LIMIT, events.recv())
        .await
        .expect("the worker's subscription hears the insert");
    assert!(
        matches!(event, Some(StoreEvent::JobsAvailable)),
        "{event:?}"
    );
    stop.cancel();
    listening.await.unwrap();
}

/// The README's SQLite INSERT: every NOT NULL column without a default, times in Unix ms.
const SQLITE_INSERT: &str = "INSERT INTO jobs (kind, payload, run_after, created_at, updated_at) \
    VALUES ('demo', '{\"seed\": \"from-sqlite\", \"iterations\": 1000}', \
            CAST(unixepoch('subsec') * 1000 AS INTEGER), \
            CAST(unixepoch('subsec') * 1000 AS INTEGER), \
            CAST(unixepoch('subsec') * 1000 AS INTEGER)) \
    RETURNING id";

#[tokio::test]
async fn on_sqlite_a_plain_insert_is_run_at_the_next_poll() {
    let store = TestStore::new().await;
    let mut worker = WorkerProcess::start(&store, &[]).await;
    let mut conn = sqlx::SqliteConnection::connect(&store.url).await.unwrap();
    let id: i64 = sqlx::query_scalar(SQLITE_INSERT)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let job = store
        .wait_for_status(id, JobStatus::Completed, Duration::from_secs(10))
        .await;
    assert_eq!(job.payload["seed"], "from-sqlite");
    assert_eq!((job.priority, job.max_attempts), (0, 5));
    worker.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(worker.wait_exit(Duration::from_secs(20)).await.success());
}
