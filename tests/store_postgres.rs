//! The shared store suite on PostgreSQL (each test in its own schema), plus what only the fleet
//! store does: LISTEN/NOTIFY wake-ups.

mod common;
mod store_suite;

use common::postgres as pg;

use handover::lifecycle::Mode;
use handover::store::{DrainRequest, NewJob, StoreEvent, WorkerRegistration};
use std::time::Duration;

store_tests!(pg::PgSchema::new());
retention_tests!(pg::PgSchema::new());

trait Aged {
    fn aging(&self) -> store_suite::retention::Aging;
}

impl Aged for pg::PgSchema {
    fn aging(&self) -> store_suite::retention::Aging {
        store_suite::retention::Aging::Postgres(self.url.clone())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_jobs_and_drain_requests_are_pushed_at_once() {
    let fixture = pg::PgSchema::new().await;
    let store = fixture.store();
    let stop = tokio_util::sync::CancellationToken::new();
    let subscription = store
        .subscribe(stop.clone())
        .await
        .unwrap()
        .expect("PostgreSQL pushes events");
    let mut events = subscription.events;
    let listener = tokio::spawn(subscription.listener);
    store
        .submit(&[NewJob::new("noop", serde_json::json!({}))])
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap();
    assert_eq!(event, Some(StoreEvent::JobsAvailable));

    store
        .register_worker(&WorkerRegistration {
            id: "w1".into(),
            name: "one".into(),
            version: "test".into(),
            listen_addr: None,
            concurrency: 1,
            lease_ttl: Duration::from_secs(10),
            kinds: Vec::new(),
        })
        .await
        .unwrap();
    store
        .request_drain(
            "one",
            &DrainRequest {
                mode: Mode::Handoff,
                reason: None,
                requested_by: None,
                requested_at: None,
            },
        )
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap();
    assert_eq!(
        event,
        Some(StoreEvent::DrainRequested {
            worker_id: "w1".into()
        })
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), listener)
        .await
        .expect("the listener ends when told to stop")
        .unwrap();
}

#[tokio::test]
async fn an_unreachable_server_is_one_clear_error() {
    let url: handover::store::StoreUrl = "postgres://postgres@127.0.0.1:1/none".parse().unwrap();
    let err = handover::store::open(&url).await.err().expect("must fail");
    let text = err.to_string();
    assert!(
        text.contains("cannot connect to PostgreSQL store"),
        "{text}"
    );
    assert!(!text.contains('\n'));
}
