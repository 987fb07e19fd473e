//! Observability on the real binary: metrics scraped before, during and after a drain (checked by
//! promtool), the final scrape after `deregistering`, OTLP trace export (decoded: the
//! shutdown's span tree and its timings against the metrics), and JSON logs with trace ids.

mod common;

use common::*;
use nix::sys::signal::Signal;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
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

/// Two demo jobs (checkpointing every `every` seconds) running on a two-slot worker with this
/// drain delay and a final-scrape wait; returns once both have saved a checkpoint.
async fn two_checkpointing_jobs(
    store: &TestStore,
    name: &str,
    every: f64,
    drain_delay: &str,
) -> WorkerProcess {
    let spec = DemoSpec::timed(name, every, 200);
    for n in 0..2 {
        let mut spec = spec.clone();
        spec.seed = format!("{name}-{n}");
        store.submit("demo", spec.payload()).await;
    }
    let worker = WorkerProcess::start(
        store,
        &[
            ("--concurrency", "2"),
            ("--drain-delay", drain_delay),
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
    worker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_through_a_drain_and_the_last_scrape_is_served() {
    let store = TestStore::new().await;
    let mut worker = two_checkpointing_jobs(&store, "metrics", 0.2, "2s").await;

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

/// The shutdown phases in the order the machine runs them.
const SHUTDOWN_PHASES: [&str; 4] = ["draining", "checkpointing", "releasing", "deregistering"];

/// What one scrape must show whenever it is taken: one phase, readiness by that phase, and the
/// timings of exactly the shutdown phases before it (`deregistering`'s own may already be there:
/// it ends before the trace flush, `stopped` is published after it).
fn assert_one_instant(text: &str) {
    let phases: Vec<&str> = ["starting", "running"]
        .into_iter()
        .chain(SHUTDOWN_PHASES)
        .chain(["stopped"])
        .filter(|phase| value(text, &format!(r#"handover_phase{{phase="{phase}"}}"#)) == 1.0)
        .collect();
    let [phase] = phases[..] else {
        panic!("one phase at 1, got {phases:?}:\n{text}")
    };
    assert_eq!(
        value(text, "handover_ready") == 1.0,
        phase == "running",
        "readiness agrees with phase {phase}:\n{text}"
    );
    let reached = match phase {
        "starting" | "running" => 0,
        "stopped" => SHUTDOWN_PHASES.len(),
        current => SHUTDOWN_PHASES.iter().position(|p| *p == current).unwrap(),
    };
    for (index, ended) in SHUTDOWN_PHASES.iter().enumerate() {
        let count = value(
            text,
            &format!(
                r#"handover_shutdown_phase_duration_seconds_count{{phase="{ended}",trigger="sigterm"}}"#
            ),
        );
        let expected = if index < reached { 1.0 } else { 0.0 };
        let flushing = *ended == "deregistering" && phase == "deregistering";
        assert!(
            count == expected || flushing,
            "in phase {phase}, {ended} observed {count} times:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scrape_during_a_drain_shows_one_instant() {
    let store = TestStore::new().await;
    // The drain delay keeps `draining` long enough for the scrapers to see it.
    let mut worker = two_checkpointing_jobs(&store, "instant", 0.05, "300ms").await;
    // Two scrapers in a tight loop through the whole drain, each until it renders `stopped` or
    // the worker has closed its port after another's final scrape.
    worker.signal(Signal::SIGTERM);
    let url = worker.url("/metrics");
    let scrapers: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut seen = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(20);
                while Instant::now() < deadline {
                    let Ok(response) = client.get(&url).send().await else {
                        break;
                    };
                    let Ok(text) = response.text().await else {
                        break;
                    };
                    let stopped =
                        metric_value(&text, r#"handover_phase{phase="stopped"}"#) == Some(1.0);
                    seen.push(text);
                    if stopped {
                        break;
                    }
                }
                seen
            })
        })
        .collect();
    let mut scrapes = Vec::new();
    for scraper in scrapers {
        scrapes.extend(scraper.await.unwrap());
    }
    assert_eq!(
        worker.wait_exit(Duration::from_secs(10)).await.code(),
        Some(0)
    );
    for text in &scrapes {
        assert_one_instant(text);
    }
    let shown: std::collections::BTreeSet<&str> = scrapes
        .iter()
        .flat_map(|text| {
            SHUTDOWN_PHASES.into_iter().chain(["stopped"]).filter(|p| {
                metric_value(text, &format!(r#"handover_phase{{phase="{p}"}}"#)) == Some(1.0)
            })
        })
        .collect();
    assert!(
        shown.contains("draining") && shown.contains("stopped"),
        "the scrapes covered the drain ({} scrapes, phases {shown:?})",
        scrapes.len()
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

/// Every span the collector received, decoded from the OTLP/HTTP protobuf bodies, with the
/// `service.name` of the resource each came with.
fn decode_spans(batches: &[(String, Vec<u8>)]) -> Vec<(String, Span)> {
    let mut spans = Vec::new();
    for (path, body) in batches {
        assert_eq!(path, "/v1/traces", "a trace export");
        let request = ExportTraceServiceRequest::decode(body.as_slice())
            .unwrap_or_else(|e| panic!("not an OTLP trace export ({e})"));
        for resource_spans in request.resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|r| string_attribute(&r.attributes, "service.name"))
                .unwrap_or_default();
            for scope_spans in resource_spans.scope_spans {
                for span in scope_spans.spans {
                    spans.push((service.clone(), span));
                }
            }
        }
    }
    spans
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    match attribute(attributes, key)? {
        any_value::Value::StringValue(text) => Some(text.clone()),
        _ => None,
    }
}

fn int_attribute(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match attribute(attributes, key)? {
        any_value::Value::IntValue(n) => Some(*n),
        _ => None,
    }
}

fn seconds(span: &Span) -> f64 {
    assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
    (span.end_time_unix_nano - span.start_time_unix_nano) as f64 / 1e9
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_is_exported_as_one_trace_before_exit_and_json_logs_carry_its_ids() {
    let store = TestStore::new().await;
    let (endpoint, received) = fake_collector();
    let spec = DemoSpec::timed("traced", 0.1, 200);
    let mut job_ids = Vec::new();
    for n in 0..2 {
        let mut spec = spec.clone();
        spec.seed = format!("traced-{n}");
        job_ids.push(store.submit("demo", spec.payload()).await);
    }
    let mut worker = WorkerProcess::start_with(
        &store,
        &[("--concurrency", "2"), ("--final-scrape-wait", "30s")],
        &["--log-format", "json"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_SERVICE_NAME", "handover-test"),
        ],
    )
    .await;
    for &id in &job_ids {
        store
            .wait_for_checkpoint(id, 1, Duration::from_secs(20))
            .await;
    }
    worker.signal(Signal::SIGTERM);
    // The phase metrics, from the scrape the worker waits for after `deregistering`.
    let ready_url = worker.url("/readyz");
    wait_for(
        "the worker to reach stopped",
        Duration::from_secs(20),
        || async {
            let body: serde_json::Value = reqwest::get(&ready_url).await.ok()?.json().await.ok()?;
            (body["phase"] == "stopped").then_some(())
        },
    )
    .await;
    let metrics = scrape(&worker).await;
    assert_eq!(
        worker.wait_exit(Duration::from_secs(10)).await.code(),
        Some(0)
    );

    // Everything was flushed inside the shutdown: it is at the collector by the time the process
    // is gone. Decoded, it is one tree: a root `shutdown` span, a child per phase.
    let batches = received.lock().unwrap().clone();
    assert!(!batches.is_empty(), "no OTLP export arrived");
    let spans = decode_spans(&batches);
    assert!(
        spans.iter().all(|(service, _)| service == "handover-test"),
        "OTEL_SERVICE_NAME names the resource"
    );
    let named = |name: &str| -> Vec<&Span> {
        spans
            .iter()
            .map(|(_, span)| span)
            .filter(|span| span.name == name)
            .collect()
    };
    let shutdowns = named("shutdown");
    assert_eq!(shutdowns.len(), 1, "exactly one shutdown span");
    let shutdown = shutdowns[0];
    assert!(shutdown.parent_span_id.is_empty(), "the shutdown is a root");
    assert_eq!(
        string_attribute(&shutdown.attributes, "trigger").as_deref(),
        Some("sigterm")
    );
    assert_eq!(
        string_attribute(&shutdown.attributes, "outcome").as_deref(),
        Some("clean")
    );
    assert_eq!(
        int_attribute(&shutdown.attributes, "jobs_released"),
        Some(2)
    );
    let phase_spans: Vec<&Span> = spans
        .iter()
        .map(|(_, span)| span)
        .filter(|span| span.name.starts_with("shutdown."))
        .collect();
    assert_eq!(phase_spans.len(), 4, "one span per shutdown phase");
    for phase in ["draining", "checkpointing", "releasing", "deregistering"] {
        let spans = named(&format!("shutdown.{phase}"));
        assert_eq!(spans.len(), 1, "one {phase} span");
        let span = spans[0];
        assert_eq!(span.trace_id, shutdown.trace_id, "{phase} is in the trace");
        assert_eq!(
            span.parent_span_id, shutdown.span_id,
            "{phase} is a child of shutdown"
        );
        assert!(
            span.start_time_unix_nano >= shutdown.start_time_unix_nano
                && span.end_time_unix_nano <= shutdown.end_time_unix_nano,
            "{phase} lies within the shutdown"
        );
        // The span and the metric time the same interval.
        let count = value(
            &metrics,
            &format!(
                r#"handover_shutdown_phase_duration_seconds_count{{phase="{phase}",trigger="sigterm"}}"#
            ),
        );
        assert_eq!(count, 1.0, "{phase} observed once");
        let observed = value(
            &metrics,
            &format!(
                r#"handover_shutdown_phase_duration_seconds_sum{{phase="{phase}",trigger="sigterm"}}"#
            ),
        );
        let spanned = seconds(span);
        assert!(
            (spanned - observed).abs() <= 0.001,
            "{phase}: span {spanned:.6}s, metric {observed:.6}s"
        );
    }

    // One span per job attempt: each job ran once, interrupted by the drain.
    let attempts = named("job.attempt");
    assert_eq!(
        attempts.len() as f64,
        value(
            &metrics,
            r#"handover_job_duration_seconds_count{kind="demo",outcome="interrupted"}"#
        ),
        "a span for every attempt the worker ran"
    );
    let mut attempted: Vec<i64> = attempts
        .iter()
        .map(|span| int_attribute(&span.attributes, "job_id").expect("job_id on job.attempt"))
        .collect();
    attempted.sort();
    assert_eq!(attempted, job_ids, "one attempt span per job");
    for span in &attempts {
        assert_eq!(int_attribute(&span.attributes, "attempt"), Some(1));
        assert_eq!(
            string_attribute(&span.attributes, "kind").as_deref(),
            Some("demo")
        );
        assert!(
            string_attribute(&span.attributes, "outcome").is_some(),
            "outcome recorded on job.attempt"
        );
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
    assert!(phase_lines.iter().all(|l| l["trace_id"] == trace_id));
    // ...and it is the exported shutdown's trace; each line carries its own phase's span id.
    assert_eq!(hex::decode(trace_id).unwrap(), shutdown.trace_id);
    for line in phase_lines {
        let phase = line["phase"].as_str().expect("phase on the line");
        let span = named(&format!("shutdown.{phase}"))[0];
        assert_eq!(
            line["span_id"].as_str().map(|id| hex::decode(id).unwrap()),
            Some(span.span_id.clone()),
            "the {phase} line is logged in its span"
        );
    }
}
