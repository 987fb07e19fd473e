//! The hot statements' plans under the statistics a queue table really has: taken while it
//! was empty, then a burst of submissions. Needs the local PostgreSQL server.
use super::*;
use crate::store::NewJob;
use serde_json::json;
use sqlx::postgres::PgRow;

fn server() -> String {
    std::env::var("HANDOVER_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A store in a fresh schema whose statistics say "empty", holding `jobs` pending jobs.
async fn store_with_stale_statistics(jobs: usize) -> (PostgresStore, String) {
    let schema = format!("plan_{}", uuid::Uuid::new_v4().simple());
    let admin = PgPool::connect(&server())
        .await
        .expect("PostgreSQL is running");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await
        .unwrap();
    let url = format!("{}?options[search_path]={schema}", server());
    let store = PostgresStore::open(&url, &url).await.unwrap();
    store.migrate().await.unwrap();
    sqlx::query("ANALYZE jobs")
        .execute(&store.pool)
        .await
        .unwrap();
    let batch: Vec<NewJob> = (0..jobs).map(|_| NewJob::new("noop", json!({}))).collect();
    store.submit(&batch).await.unwrap();
    (store, schema)
}

async fn drop_schema(schema: &str) {
    let admin = PgPool::connect(&server()).await.unwrap();
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&admin)
        .await
        .unwrap();
}

fn plan_text(rows: Vec<PgRow>) -> String {
    rows.iter()
        .map(|row| row.get::<String, _>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn hot_statements_keep_their_plans_when_statistics_are_stale() {
    let (store, schema) = store_with_stale_statistics(20_000).await;
    let kinds = vec!["noop".to_string()];

    let claim = plan_text(
        sqlx::query(&format!("EXPLAIN {CLAIM_SQL}"))
            .bind("worker-a")
            .bind(30_000_i64)
            .bind(&kinds)
            .bind(256_i64)
            .fetch_all(&store.hot_pool)
            .await
            .unwrap(),
    );
    assert!(
        claim.contains("Index Scan using jobs_runnable") && !claim.contains("Sort"),
        "the claim must walk jobs_runnable in order and stop at the limit:\n{claim}"
    );

    let held = store
        .claim("worker-a", &kinds, 256, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(held.len(), 256);
    let ids: Vec<i64> = held.iter().map(|job| job.lease.job_id).collect();
    let owners: Vec<String> = held.iter().map(|job| job.lease.owner.clone()).collect();
    let epochs: Vec<i64> = held.iter().map(|job| job.lease.epoch).collect();
    let results: Vec<String> = held.iter().map(|_| "{}".to_string()).collect();

    let complete = plan_text(
        sqlx::query(&format!("EXPLAIN {COMPLETE_SQL}"))
            .bind(&ids)
            .bind(&owners)
            .bind(&epochs)
            .bind(&results)
            .fetch_all(&store.hot_pool)
            .await
            .unwrap(),
    );
    let renew = plan_text(
        sqlx::query(&format!("EXPLAIN {RENEW_SQL}"))
            .bind("worker-a")
            .bind(30_000_i64)
            .bind(&ids)
            .bind(&epochs)
            .fetch_all(&store.hot_pool)
            .await
            .unwrap(),
    );
    for (name, plan) in [("completion", complete), ("renewal", renew)] {
        assert!(
            plan.contains("Index Scan using jobs_pkey")
                && !plan.contains("jobs_running_lease")
                && !plan.contains("Seq Scan on jobs"),
            "a batched {name} must probe the primary key once per row:\n{plan}"
        );
    }
    drop_schema(&schema).await;
}
#[tokio::test]
async fn every_completion_is_audited_exactly_once_whichever_version_wrote_it() {
    let (store, schema) = store_with_stale_statistics(2).await;
    let held = store
        .claim(
            "worker-a",
            &["noop".to_string()],
            2,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let (ours, older) = (&held[0].lease, &held[1].lease);
    // This version: the completing statement writes the audit row, the trigger stays out.
    assert_eq!(
        store.complete(&[(ours.clone(), json!({}))]).await.unwrap(),
        vec![true]
    );
    // A worker of the previous version during a rolling upgrade: a plain UPDATE on a
    // connection that did not say it writes the audit row itself. The trigger writes it.
    sqlx::query(
        "UPDATE jobs SET status = 'completed', lease_expires_at = NULL, updated_at = now() \
         WHERE id = $1 AND owner = $2 AND lease_epoch = $3",
    )
    .bind(older.job_id)
    .bind(&older.owner)
    .bind(older.epoch)
    .execute(&store.pool)
    .await
    .unwrap();
    let mut counts = store.completion_counts().await.unwrap();
    counts.sort();
    assert_eq!(counts, vec![(ours.job_id, 1), (older.job_id, 1)]);
    drop_schema(&schema).await;
}
#[tokio::test]
async fn a_connection_without_its_settings_is_refused_with_the_reason() {
    // What a pooler that drops the `options` startup parameter hands over.
    use sqlx::Connection;
    let mut plain = sqlx::PgConnection::connect(&server()).await.unwrap();
    let err = check_hot_settings(&mut plain)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("lost its startup settings"), "{err}");
    assert!(err.contains("PgBouncer"), "{err}");
}

#[test]
fn notify_channels_fit_postgres_identifiers_for_any_schema() {
    assert_eq!(super::notify_channel("public"), "handover_public");
    let long = "s".repeat(60);
    let other = format!("{}t", "s".repeat(59));
    for schema in [long.as_str(), other.as_str(), &"é".repeat(40)] {
        let channel = super::notify_channel(schema);
        assert!(channel.len() <= super::MAX_CHANNEL_BYTES, "{channel}");
    }
    assert_ne!(super::notify_channel(&long), super::notify_channel(&other));
}

/// The insert trigger (migration 0006) computes the channel in SQL; it must be the one workers
/// LISTEN to for every schema name, long and multibyte ones included.
#[tokio::test]
async fn the_insert_triggers_channel_is_the_workers_for_any_schema() {
    let (store, schema) = store_with_stale_statistics(0).await;
    assert_eq!(store.channel, super::notify_channel(&schema));
    let names = [
        "public".to_string(),
        schema.clone(),
        "s".repeat(54),
        "s".repeat(55),
        "s".repeat(60),
        format!("{}t", "s".repeat(59)),
        "é".repeat(40),
        format!("{}é", "a".repeat(36)),
        format!("{}é€", "b".repeat(35)),
    ];
    for name in &names {
        let in_sql: String = sqlx::query_scalar("SELECT handover_notify_channel($1)")
            .bind(name)
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(in_sql, super::notify_channel(name), "schema {name:?}");
    }
    drop_schema(&schema).await;
}
