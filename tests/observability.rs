//! Observability on the real binary: metrics scraped before, during and after a drain (checked by
//! promtool), the final scrape after `deregistering`, OTLP trace export, and JSON logs with trace ids.

mod common;

use common::*;
use nix::sys::signal::Signal;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

async fn scrape(worker: &WorkerProcess) -> String {
    reqwest::get(worker.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn value(text: &str, sample: &str) -> f64 {
    metric_value(text, sample).unwrap_or_else(|| panic!("no sample {sample} in scrape"))
}

/// `promtool check metrics` must accept the exposition (it exits non-zero on errors or lint problems).
fn promtool_accepts(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (Debian package prometheus; .ci/run installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_through_a_drain_and_the_last_scrape_is_served() {
    let store = TestStore::new().await;
    let spec = DemoSpec::timed("metrics", 0.2, 200);
    for n in 0..2 {
        let mut spec = spec.clone();
        spec.seed = format!("metrics-{n}");
        store.submit("demo", spec.payload()).await;
    }
    let mut worker = WorkerProcess::start(
        &store,
        &[
            ("--concurrency", "2"),
            ("--drain-delay", "2s"),
            ("--final-scrape-wait", "30s"),
        ],
    )
    .await;
    wait_for(
        "both jobs to checkpoint",
        Duration::from_secs(20),
        || async {
            let jobs = store.store.list_jobs(&Default::default()).await.unwrap();
            jobs.iter().all(|j| j.checkpoint.is_some()).then_some(())
        },
    )
    .await;

    let before = scrape(&worker).await;
    promtool_accepts(&before);
    assert_eq!(value(&before, "handover_ready"), 1.0);
    assert_eq!(value(&before, r#"handover_phase{phase="running"}"#), 1.0);
    assert_eq!(value(&before, "handover_jobs_in_flight"), 2.0);
    assert_eq!(
        value(&before, r#"handover_jobs_claimed_total{kind="demo"}"#),
        2.0
    );
    assert_eq!(
        value(
            &before,
            r#"handover_jobs_released_total{kind="demo",reason="shutdown"}"#
        ),
        0.0
    );
    assert_eq!(value(&before, "handover_store_up"), 1.0);
    assert_eq!(
        value(&before, r#"handover_build_info{version="0.1.0"}"#),
        1.0
    );

    worker.signal(Signal::SIGTERM);
    let during = wait_for("a scrape in draining", Duration::from_secs(5), || async {
        let text = scrape(&worker).await;
        (metric_value(&text, r#"handover_phase{phase="draining"}"#) == Some(1.0)).then_some(text)
    })
    .await;
    promtool_accepts(&during);
    assert_eq!(value(&during, "handover_ready"), 0.0);
    assert_eq!(value(&during, r#"handover_phase{phase="running"}"#), 0.0);
    assert_eq!(
        value(
            &during,
            r#"handover_shutdown_phase_duration_seconds_count{phase="draining",trigger="sigterm"}"#
        ),
        0.0,
        "a phase is observed when it ends"
    );

    // After deregistering the worker keeps serving until one more scrape.
    let ready_url = worker.url("/readyz");
    wait_for(
        "the worker to reach stopped",
        Duration::from_secs(15),
        || async {
            let body: serde_json::Value = reqwest::get(&ready_url).await.ok()?.json().await.ok()?;
            (body["phase"] == "stopped").then_some(())
        },
    )
    .await;
    let after = scrape(&worker).await;
    let scraped = Instant::now();
    promtool_accepts(&after);
    assert_eq!(
        value(
            &after,
            r#"handover_jobs_released_total{kind="demo",reason="shutdown"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &after,
            r#"handover_jobs_released_total{kind="demo",reason="forced"}"#
        ),
        0.0
    );
    assert_eq!(
        value(
            &after,
            r#"handover_shutdowns_total{mode="handoff",outcome="clean",trigger="sigterm"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            r#"handover_shutdowns_total{mode="handoff",outcome="forced",trigger="sigterm"}"#
        ),
        0.0
    );
    for phase in ["draining", "checkpointing", "releasing", "deregistering"] {
        let sample = format!(
            r#"handover_shutdown_phase_duration_seconds_count{{phase="{phase}",trigger="sigterm"}}"#
        );
        assert_eq!(value(&after, &sample), 1.0, "{phase} observed once");
    }
    let drained = value(
        &after,
        r#"handover_shutdown_phase_duration_seconds_sum{phase="draining",trigger="sigterm"}"#,
    );
    assert!(
        (2.0..3.0).contains(&drained),
        "draining lasted the 2s drain delay, got {drained}"
    );
    assert_eq!(
        value(
            &after,
            r#"handover_shutdown_duration_seconds_count{outcome="clean",trigger="sigterm"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            r#"handover_job_duration_seconds_count{kind="demo",outcome="interrupted"}"#
        ),
        2.0
    );
    assert!(value(&after, r#"handover_checkpoints_total{kind="demo"}"#) >= 2.0);
    assert_eq!(value(&after, "handover_jobs_in_flight"), 0.0);
    assert_eq!(value(&after, r#"handover_phase{phase="stopped"}"#), 1.0);

    let status = worker.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(0));
    assert!(
        scraped.elapsed() < Duration::from_secs(5),
        "exits once the final scrape is answered, not after the 30s wait"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_final_scrape_the_wait_is_bounded() {
    let store = TestStore::new().await;
    let mut worker = WorkerProcess::start(&store, &[("--final-scrape-wait", "1s")]).await;
    let signalled = Instant::now();
    worker.signal(Signal::SIGTERM);
    assert_eq!(
        worker.wait_exit(Duration::from_secs(10)).await.code(),
        Some(0)
    );
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "waited for a final scrape ({took:?})"
    );
    assert!(took < Duration::from_millis(2500), "then exited ({took:?})");
}

/// What the fake collector received: (path, body) per request.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A minimal OTLP/HTTP collector: answers 200 to every POST and keeps (path, body).
fn fake_collector() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let sink = sink.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = request_line
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or("")
                        .to_string();
                    let mut length = 0;
                    loop {
                        let mut header = String::new();
                        reader.read_line(&mut header).unwrap();
                        if header.trim().is_empty() {
                            break;
                        }
                        if let Some((name, value)) = header.split_once(':') {
                            if name.eq_ignore_ascii_case("content-length") {
                                length = value.trim().parse().unwrap();
                            }
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    sink.lock().unwrap().push((path, body));
                    stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n")
                        .unwrap();
                }
            });
        }
    });
    (endpoint, received)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_is_exported_as_one_trace_before_exit_and_json_logs_carry_its_ids() {
    let store = TestStore::new().await;
    let (endpoint, received) = fake_collector();
    let spec = DemoSpec::timed("traced", 0.1, 200);
    let job_id = store.submit("demo", spec.payload()).await;
    let mut worker = WorkerProcess::start_with(
        &store,
        &[],
        &["--log-format", "json"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_SERVICE_NAME", "handover-test"),
        ],
    )
    .await;
    store
        .wait_for_checkpoint(job_id, 1, Duration::from_secs(20))
        .await;
    worker.signal(Signal::SIGTERM);
    assert_eq!(
        worker.wait_exit(Duration::from_secs(20)).await.code(),
        Some(0)
    );

    // Everything was flushed inside the shutdown: it is at the collector by the time the process is gone.
    let batches = received.lock().unwrap().clone();
    assert!(!batches.is_empty(), "no OTLP export arrived");
    assert!(batches.iter().all(|(path, _)| path == "/v1/traces"));
    let all: Vec<u8> = batches.into_iter().flat_map(|(_, body)| body).collect();
    for name in [
        "handover-test",
        "shutdown",
        "shutdown.draining",
        "shutdown.checkpointing",
        "shutdown.releasing",
        "shutdown.deregistering",
        "job.attempt",
        "sigterm",
    ] {
        assert!(contains(&all, name), "the export has {name:?}");
    }

    // JSON log lines: each one parses, and the shutdown's lines share one trace id.
    let log = worker.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let phase_lines: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["message"] == "phase finished")
        .collect();
    assert_eq!(phase_lines.len(), 4, "{log}");
    let trace_id = phase_lines[0]["trace_id"]
        .as_str()
        .expect("trace_id on phase lines");
    assert_eq!(trace_id.len(), 32);
    assert!(trace_id.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(phase_lines.iter().all(|l| l["trace_id"] == trace_id));
    // ...and it is the trace that was exported (protobuf carries the 16 raw bytes).
    let raw = hex::decode(trace_id).unwrap();
    assert!(
        all.windows(16).any(|w| w == raw.as_slice()),
        "log trace id {trace_id} not exported"
    );
}
