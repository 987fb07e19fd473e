//! A PostgreSQL outage with jobs running: the real server is stopped and started again.
//!
//! This binary stops the shared server, so `scripts/test` runs it alone, after every other test.
//! The server is always started again, even when an assertion fails.

mod common;

use common::*;
use handover::lifecycle::Outcome;
use handover::store::JobStatus;
use nix::sys::signal::Signal;
use std::process::Command;
use std::time::{Duration, Instant};

fn cluster(action: &str) {
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("a Debian PostgreSQL cluster")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .expect("a cluster version");
    let status = Command::new("pg_ctlcluster")
        .args([
            "--skip-systemctl-redirect",
            &version,
            "main",
            action,
            "-m",
            "fast",
        ])
        .status()
        .expect("pg_ctlcluster");
    assert!(status.success(), "pg_ctlcluster {action} failed");
}

/// Starts the server again when dropped, so a failed assertion never leaves it down.
struct ServerDown;

impl ServerDown {
    fn stop() -> ServerDown {
        cluster("stop");
        ServerDown
    }
}

impl Drop for ServerDown {
    fn drop(&mut self) {
        let version = std::fs::read_dir("/etc/postgresql")
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", &version, "main", "start"])
            .status();
    }
}

async fn readiness(worker: &WorkerProcess) -> Option<u16> {
    Some(
        reqwest::get(worker.url("/readyz"))
            .await
            .ok()?
            .status()
            .as_u16(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_costs_readiness_not_jobs_and_does_not_trigger_a_mass_rescue() {
    let store = TestStore::postgres().await;
    let specs: Vec<DemoSpec> = (0..4)
        .map(|n| DemoSpec::timed(&format!("outage-{n}"), 0.25, 40))
        .collect();
    let mut ids = Vec::new();
    for spec in &specs {
        ids.push(store.submit("demo", spec.payload()).await);
    }
    let timings = [
        ("--heartbeat-interval", "200ms"),
        ("--lease-ttl", "2s"),
        ("--grace", "4s"),
    ];
    let a = WorkerProcess::start(&store, &timings).await;
    let mut b = WorkerProcess::start(&store, &timings).await;
    for id in &ids {
        store
            .wait_for_checkpoint(*id, 1, Duration::from_secs(30))
            .await;
    }

    // 1. The store goes away for longer than the lease TTL; workers keep their jobs running.
    let outage = ServerDown::stop();
    for worker in [&a, &b] {
        wait_for("readiness to drop", Duration::from_secs(10), || {
            readiness(worker)
        })
        .await;
        wait_for(
            "/readyz 503 and store_up 0",
            Duration::from_secs(10),
            || async {
                let ready = readiness(worker).await?;
                let metrics = reqwest::get(worker.url("/metrics"))
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
                (ready == 503 && metric_value(&metrics, "handover_store_up") == Some(0.0))
                    .then_some(())
            },
        )
        .await;
        let status = worker.status().await;
        assert_eq!(status["phase"], "running", "an outage is not a shutdown");
        assert_eq!(
            status["in_flight"].as_array().unwrap().len(),
            2,
            "jobs keep running"
        );
    }
    // Hold the outage past the lease TTL (leases expire in the database's clock meanwhile).
    let held = Instant::now();
    wait_for(
        "the outage to outlast the lease TTL",
        Duration::from_secs(10),
        || async { (held.elapsed() > Duration::from_millis(2500)).then_some(()) },
    )
    .await;
    drop(outage);

    // 2. Back: ready again, and the rescuers' grace rule means nobody rescues live owners' jobs.
    for worker in [&a, &b] {
        wait_for("/readyz 200 again", Duration::from_secs(20), || async {
            (readiness(worker).await? == 200).then_some(())
        })
        .await;
    }

    // 3. A shutdown during an outage still ends inside --grace; its leases expire and are rescued.
    wait_for("b to hold a job", Duration::from_secs(20), || async {
        let status = b.status().await;
        (!status["in_flight"].as_array()?.is_empty()).then_some(())
    })
    .await;
    let second_outage = ServerDown::stop();
    wait_for(
        "b to notice the outage",
        Duration::from_secs(10),
        || async { (readiness(&b).await? == 503).then_some(()) },
    )
    .await;
    let signalled = Instant::now();
    b.signal(Signal::SIGTERM);
    let status = b.wait_exit(Duration::from_secs(15)).await;
    let took = signalled.elapsed();
    assert!(
        took < Duration::from_millis(4000 + 1000),
        "ended inside --grace: {took:?}"
    );
    assert!(
        status.code() == Some(3) || status.code() == Some(0),
        "log:\n{}",
        b.log()
    );
    drop(second_outage);

    // Everything completes exactly once, with the right digests.
    for (id, spec) in ids.iter().zip(&specs) {
        let job = store
            .wait_for_status(*id, JobStatus::Completed, Duration::from_secs(120))
            .await;
        assert_eq!(
            job.result.unwrap()["digest"],
            spec.expected_digest(),
            "job {id}"
        );
    }
    let completions = store.store.completion_counts().await.unwrap();
    assert_eq!(completions.len(), ids.len());
    assert!(completions.iter().all(|(_, n)| *n == 1), "{completions:?}");
    // After the first outage no live owner's job was rescued: the only rescues are of b's jobs.
    let metrics = reqwest::get(a.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let rescued_by_a = metric_value(&metrics, "handover_jobs_rescued_total").unwrap();
    let b_record = store
        .store
        .list_shutdowns(10)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.worker_id == b.id);
    if let Some(record) = &b_record {
        assert!(matches!(record.outcome, Outcome::Forced | Outcome::Clean));
    }
    assert!(
        rescued_by_a <= 2.0,
        "a rescued only what b left behind, got {rescued_by_a}"
    );
    assert!(
        metric_value(&metrics, "handover_heartbeat_failures_total").unwrap() >= 1.0,
        "heartbeat failures were counted"
    );
}
