//! Rolling drains (SPEC §10) as part of the store suite, on both backends: the budget counts every
//! worker out (draining for any reason, or asked to), requests beyond it wait queued, a stopping
//! worker hands its place on, concurrent callers never exceed it, and queued requests can be
//! withdrawn. Also the drain cost each heartbeat reports.

use handover::lifecycle::{Mode, Phase};
use handover::store::{
    DrainCost, DrainQueued, DrainRequest, SharedStore, WorkerRegistration, WorkerRow,
};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

fn request() -> DrainRequest {
    DrainRequest {
        mode: Mode::Handoff,
        reason: Some("rolling".into()),
        requested_by: Some("test".into()),
        requested_at: None,
    }
}

async fn running_workers(store: &SharedStore, ids: &[&str]) -> Vec<String> {
    for id in ids {
        store
            .register_worker(&WorkerRegistration {
                id: id.to_string(),
                name: format!("name-{id}"),
                version: "test".into(),
                listen_addr: None,
                concurrency: 1,
                lease_ttl: LONG,
                kinds: vec!["demo".into()],
            })
            .await
            .unwrap();
        store.set_worker_phase(id, Phase::Running).await.unwrap();
    }
    ids.iter().map(|id| id.to_string()).collect()
}

async fn rows(store: &SharedStore) -> Vec<WorkerRow> {
    store.list_workers().await.unwrap()
}

async fn out(store: &SharedStore) -> Vec<String> {
    let mut out: Vec<String> = rows(store)
        .await
        .into_iter()
        .filter(WorkerRow::is_out)
        .map(|w| w.id)
        .collect();
    out.sort();
    out
}

async fn queued(store: &SharedStore) -> Vec<String> {
    store
        .queued_drains()
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.worker_id)
        .collect()
}

pub async fn rolling_drains_keep_at_most_the_budget_out(store: SharedStore) {
    let ids = running_workers(&store, &["w1", "w2", "w3"]).await;
    let answers = store.queue_drains(&ids, &request(), 1).await.unwrap();
    assert_eq!(
        answers,
        vec![
            ("w1".into(), DrainQueued::Started),
            ("w2".into(), DrainQueued::Queued),
            ("w3".into(), DrainQueued::Queued),
        ]
    );
    assert_eq!(out(&store).await, ["w1"]);
    assert_eq!(queued(&store).await, ["w2", "w3"]);
    let waiting = store.queued_drains().await.unwrap();
    assert_eq!(waiting[0].max_draining, 1);
    assert_eq!(waiting[0].reason.as_deref(), Some("rolling"));
    // Nothing moves while w1 is out: asked, then draining once its heartbeat takes the request.
    assert!(store.promote_drains().await.unwrap().is_empty());
    let report = store
        .heartbeat("w1", &[], LONG, DrainCost::default())
        .await
        .unwrap();
    assert!(report.drain_request.is_some());
    let w1 = rows(&store)
        .await
        .into_iter()
        .find(|w| w.id == "w1")
        .unwrap();
    assert_eq!(
        w1.phase,
        Phase::Draining,
        "taking the request marks the row"
    );
    assert!(store.promote_drains().await.unwrap().is_empty());
    assert_eq!(out(&store).await, ["w1"]);
    // w1 stops: it hands its place to the oldest queued request itself.
    store.deregister_worker("w1").await.unwrap();
    assert_eq!(out(&store).await, ["w2"]);
    assert_eq!(queued(&store).await, ["w3"]);
    // Asking again for workers already out or queued changes nothing.
    let again = store.queue_drains(&ids, &request(), 1).await.unwrap();
    assert_eq!(
        again,
        vec![
            ("w1".into(), DrainQueued::AlreadyOut),
            ("w2".into(), DrainQueued::AlreadyOut),
            ("w3".into(), DrainQueued::Queued),
        ]
    );
    // A queued request can be withdrawn; a started one is not in the queue.
    assert_eq!(
        store
            .cancel_queued_drains(&["w3".into(), "w2".into()])
            .await
            .unwrap(),
        ["w3"]
    );
    assert!(queued(&store).await.is_empty());
    store.deregister_worker("w2").await.unwrap();
    assert!(
        out(&store).await.is_empty(),
        "w3 was withdrawn, not started"
    );
}

pub async fn a_worker_draining_for_any_reason_counts_against_the_budget(store: SharedStore) {
    let ids = running_workers(&store, &["w1", "w2"]).await;
    // w1 drains on its own (SIGTERM from a deploy): the machine reports the phase.
    store.set_worker_phase("w1", Phase::Draining).await.unwrap();
    let answers = store.queue_drains(&ids, &request(), 1).await.unwrap();
    assert_eq!(
        answers,
        vec![
            ("w1".into(), DrainQueued::AlreadyOut),
            ("w2".into(), DrainQueued::Queued),
        ]
    );
    // A budget of 2 leaves room beside w1.
    let wider = store.queue_drains(&ids[1..], &request(), 2).await.unwrap();
    assert_eq!(
        wider,
        vec![("w2".into(), DrainQueued::Queued)],
        "already queued with 1"
    );
    store.cancel_queued_drains(&ids[1..]).await.unwrap();
    let wider = store.queue_drains(&ids[1..], &request(), 2).await.unwrap();
    assert_eq!(wider, vec![("w2".into(), DrainQueued::Started)]);
}

pub async fn concurrent_rolling_drains_never_exceed_the_budget(store: SharedStore) {
    let ids = running_workers(&store, &["w1", "w2", "w3", "w4", "w5", "w6"]).await;
    // Two callers at once (an operator and a deploy script), each with a budget of 2.
    let callers: Vec<_> = (0..2)
        .map(|_| {
            let (store, ids) = (store.clone(), ids.clone());
            tokio::spawn(async move { store.queue_drains(&ids, &request(), 2).await })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap().unwrap();
    }
    let mut stopped = 0;
    while stopped < ids.len() {
        let now_out = out(&store).await;
        assert!(now_out.len() <= 2, "more than the budget out: {now_out:?}");
        let Some(first) = now_out.first() else {
            panic!("nothing out with {} workers left", ids.len() - stopped);
        };
        // Two workers stop at once: each hands its place on in its own transaction.
        let (a, b) = (store.clone(), store.clone());
        let second = now_out.get(1).cloned();
        let first = first.clone();
        let one = tokio::spawn(async move { a.deregister_worker(&first).await });
        let two = tokio::spawn(async move {
            match second {
                Some(id) => b.deregister_worker(&id).await,
                None => Ok(()),
            }
        });
        one.await.unwrap().unwrap();
        two.await.unwrap().unwrap();
        stopped += now_out.len();
    }
    assert!(queued(&store).await.is_empty());
}

pub async fn heartbeats_report_what_a_drain_would_cost(store: SharedStore) {
    running_workers(&store, &["w1"]).await;
    let before = rows(&store).await.remove(0);
    assert_eq!(before.drain_eta_seconds, None, "nothing reported yet");
    let cost = DrainCost {
        drain_eta_seconds: 1.25,
        work_at_risk_seconds: 14.5,
    };
    store.heartbeat("w1", &[], LONG, cost).await.unwrap();
    let after = rows(&store).await.remove(0);
    assert_eq!(after.drain_eta_seconds, Some(1.25));
    assert_eq!(after.work_at_risk_seconds, Some(14.5));
}
