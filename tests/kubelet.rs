//! What the kubelet does to a pod, against the real Deployment manifest: start the worker with the
//! env the manifest sets, probe readiness at the manifest's period, scrape at the PodMonitor's
//! interval, then delete the pod (SIGTERM, wait terminationGracePeriodSeconds, SIGKILL) while jobs
//! run. Changing the manifest's numbers so they no longer fit the worker fails this test.

mod common;

use common::*;
use handover::store::JobStatus;
use nix::sys::signal::Signal;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DEPLOYMENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/kubernetes/deployment.yaml"
);
const PODMONITOR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/kubernetes/podmonitor.yaml"
);

fn yaml(path: &str) -> Value {
    serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn seconds(duration: &str) -> Duration {
    handover::cli::parse_duration(duration).unwrap()
}

/// How long the worker may take to handle SIGTERM before its readiness must have failed.
const SIGNAL_HANDLING_ALLOWANCE: Duration = Duration::from_millis(100);

/// What a prober or scraper saw, and when.
type Log<T> = Arc<Mutex<Vec<(Instant, T)>>>;

struct Manifest {
    termination_grace: Duration,
    /// Plain `value:` env entries of the worker container.
    env: Vec<(String, String)>,
    readiness_period: Duration,
    readiness_timeout: Duration,
    scrape_interval: Duration,
}

fn manifest() -> Manifest {
    let deployment = yaml(DEPLOYMENT);
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let env = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_string(),
                e["value"].as_str()?.to_string(),
            ))
        })
        .collect();
    let probe = &container["readinessProbe"];
    assert_eq!(probe["httpGet"]["path"], "/readyz");
    assert_eq!(
        probe["failureThreshold"], 1,
        "readiness must fail on the first failed probe"
    );
    let monitor = yaml(PODMONITOR);
    Manifest {
        termination_grace: Duration::from_secs(
            pod["terminationGracePeriodSeconds"].as_u64().unwrap(),
        ),
        env,
        readiness_period: Duration::from_secs(probe["periodSeconds"].as_u64().unwrap()),
        readiness_timeout: Duration::from_secs(probe["timeoutSeconds"].as_u64().unwrap_or(1)),
        scrape_interval: seconds(
            monitor["spec"]["podMetricsEndpoints"][0]["interval"]
                .as_str()
                .unwrap(),
        ),
    }
}

impl Manifest {
    fn env(&self, name: &str) -> Duration {
        let value = self
            .env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str());
        value.map_or(Duration::ZERO, seconds)
    }
}

#[test]
fn the_manifest_leaves_room_for_the_worst_case_shutdown() {
    let m = manifest();
    // The worst case: the whole --grace (drain delay inside it), then the final-scrape wait.
    let worst = m.env("HANDOVER_GRACE") + m.env("HANDOVER_FINAL_SCRAPE_WAIT");
    assert!(
        m.termination_grace >= worst + Duration::from_secs(2),
        "terminationGracePeriodSeconds {:?} < HANDOVER_GRACE + HANDOVER_FINAL_SCRAPE_WAIT ({worst:?}) + 2s",
        m.termination_grace
    );
    assert!(m.env("HANDOVER_DRAIN_DELAY") < m.env("HANDOVER_GRACE"));
    assert!(
        m.scrape_interval < m.env("HANDOVER_FINAL_SCRAPE_WAIT"),
        "a scrape arrives within the wait"
    );
    assert!(
        m.env("HANDOVER_DRAIN_DELAY") >= m.readiness_period,
        "the drain delay covers one probe period"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_pod_drains_cleanly_before_the_kubelet_would_kill_it() {
    let m = manifest();
    let store = TestStore::postgres().await;
    let specs: Vec<DemoSpec> = (0..4)
        .map(|n| DemoSpec::timed(&format!("pod-{n}"), 0.3, 400))
        .collect();
    for spec in &specs {
        store.submit("demo", spec.payload()).await;
    }
    // The manifest's env, with what a pod gets from its Secret and downward API; the listen address
    // is the one thing changed (a test cannot take port 8080).
    let mut env: Vec<(&str, &str)> = m
        .env
        .iter()
        .filter(|(k, _)| k != "HANDOVER_LISTEN")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    env.extend([
        ("HANDOVER_ADMIN_TOKEN", TOKEN),
        ("HANDOVER_LISTEN", "127.0.0.1:0"),
    ]);
    let mut pod = WorkerProcess::start_env_only(&store, &env).await;
    wait_for(
        "every job to checkpoint",
        Duration::from_secs(60),
        || async {
            let jobs = store.store.list_jobs(&Default::default()).await.ok()?;
            jobs.iter()
                .all(|j| j.checkpoint.is_some() && j.status == JobStatus::Running)
                .then_some(())
        },
    )
    .await;

    // The kubelet's readiness probe and Prometheus' scrape, at the manifest's periods.
    let probes: Log<Option<u16>> = Arc::default();
    let scrapes: Log<String> = Arc::default();
    let (ready_url, metrics_url) = (pod.url("/readyz"), pod.url("/metrics"));
    let (probe_log, scrape_log) = (probes.clone(), scrapes.clone());
    let (period, timeout, interval) = (m.readiness_period, m.readiness_timeout, m.scrape_interval);
    let prober = tokio::spawn(async move {
        let client = reqwest::Client::builder().timeout(timeout).build().unwrap();
        let mut ticks = tokio::time::interval(period);
        loop {
            ticks.tick().await;
            // A probe counts from when it was sent, as the kubelet's does.
            let sent = Instant::now();
            let status = client
                .get(&ready_url)
                .send()
                .await
                .ok()
                .map(|r| r.status().as_u16());
            probe_log.lock().unwrap().push((sent, status));
        }
    });
    // Stopped by a flag, not aborted: the final scrape the worker waited for must be logged
    // even if its body is still being read when the process exits.
    let scraping = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let keep_scraping = scraping.clone();
    let scraper = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        while keep_scraping.load(std::sync::atomic::Ordering::SeqCst) {
            ticks.tick().await;
            if let Ok(response) = reqwest::get(&metrics_url).await {
                let text = response.text().await.unwrap_or_default();
                scrape_log.lock().unwrap().push((Instant::now(), text));
            }
        }
    });

    // Pod deletion: SIGTERM, then SIGKILL if it outlives terminationGracePeriodSeconds.
    let deleted = Instant::now();
    pod.signal(Signal::SIGTERM);
    let exited_in_time = wait_exit_within(&mut pod, m.termination_grace).await;
    if !exited_in_time {
        pod.signal(Signal::SIGKILL);
        pod.wait_exit(Duration::from_secs(5)).await;
    }
    let took = deleted.elapsed();
    prober.abort();
    scraping.store(false, std::sync::atomic::Ordering::SeqCst);
    tokio::time::timeout(interval + Duration::from_secs(5), scraper)
        .await
        .expect("the scraper stops within one interval")
        .unwrap();
    assert!(
        exited_in_time,
        "the kubelet had to SIGKILL the worker after {took:?}:\n{}",
        pod.log()
    );
    assert_eq!(
        pod.exit.unwrap().code(),
        Some(0),
        "a clean exit; log:\n{}",
        pod.log()
    );

    let probes = probes.lock().unwrap().clone();
    // A probe that reaches the worker while it is still handling the signal may pass; the flip
    // itself takes well under a millisecond on an idle machine (benches: "SIGTERM → /readyz 503"),
    // and tens of milliseconds at worst on this loaded 2-core CI box. Every probe sent later fails.
    let settled = deleted + SIGNAL_HANDLING_ALLOWANCE;
    let after: Vec<Option<u16>> = probes
        .iter()
        .filter(|(at, _)| *at > settled)
        .map(|(_, status)| *status)
        .collect();
    assert!(!after.is_empty(), "a probe after SIGTERM");
    assert_eq!(
        after[0],
        Some(503),
        "readiness failed on the first probe after SIGTERM"
    );
    assert!(
        after.iter().all(|status| *status != Some(200)),
        "no probe after SIGTERM passed: {after:?}"
    );
    let scrapes = scrapes.lock().unwrap().clone();
    let last = &scrapes.last().expect("scrapes").1;
    assert_eq!(
        metric_value(last, r#"handover_phase{phase="stopped"}"#),
        Some(1.0),
        "the last scrape saw the finished shutdown"
    );
    assert_eq!(
        metric_value(
            last,
            r#"handover_shutdowns_total{mode="handoff",outcome="clean",trigger="sigterm"}"#
        ),
        Some(1.0)
    );

    // No job lost: every one handed back with its checkpoint.
    for job in store.store.list_jobs(&Default::default()).await.unwrap() {
        assert_eq!(job.status, JobStatus::Pending, "job {}", job.id);
        assert!(
            job.checkpoint.is_some() && job.owner.is_none(),
            "job {}",
            job.id
        );
    }
    println!(
        "pod deletion: exited cleanly {took:?} after SIGTERM (terminationGracePeriodSeconds {:?})",
        m.termination_grace
    );
}

/// Waits for the process to exit within `limit`; false if it is still running then.
async fn wait_exit_within(pod: &mut WorkerProcess, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if let Some(status) = pod.child.try_wait().unwrap() {
            pod.exit = Some(status);
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}
