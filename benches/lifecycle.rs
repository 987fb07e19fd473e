//! Benchmarks of the queue and the shutdown machine on the real release binary (not timed tests):
//! `cargo bench --bench lifecycle` prints one markdown table. Scenarios can be picked by name:
//! `cargo bench --bench lifecycle -- throughput readiness overhead rss`.

use handover::store::{JobStatus, NewJob, SharedStore, StoreUrl};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_handover");
const TOKEN: &str = "bench-admin-token-0123456789";
const NOOP_JOBS: usize = 100_000;

struct Row {
    name: String,
    value: String,
    target: &'static str,
}

struct Bench {
    dir: tempfile::TempDir,
    next: usize,
}

/// A worker process; dropping it without `wait` kills and reaps it.
struct Worker {
    child: Option<Child>,
    addr: String,
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Bench {
    fn store_url(&self, name: &str) -> String {
        format!("sqlite://{}", self.dir.path().join(name).display())
    }

    async fn open(&self, url: &str) -> SharedStore {
        handover::store::open_migrated(&url.parse::<StoreUrl>().unwrap())
            .await
            .unwrap()
    }

    /// Starts a worker and waits for it to be ready.
    async fn worker(&mut self, store: &SharedStore, url: &str, extra: &[&str]) -> Worker {
        self.next += 1;
        let name = format!("bench-{}", self.next);
        let mut args = vec![
            "worker",
            "--store",
            url,
            "--listen",
            "127.0.0.1:0",
            "--name",
            &name,
            "--admin-token",
            TOKEN,
            "--poll-interval",
            "20ms",
        ];
        args.extend_from_slice(extra);
        let child = Command::new(BIN)
            .args(&args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut worker = Worker {
            child: Some(child),
            addr: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let workers = store.list_workers().await.unwrap_or_default();
            if let Some(row) = workers
                .iter()
                .find(|w| w.name == name && w.phase == handover::lifecycle::Phase::Running)
            {
                worker.addr = row.listen_addr.clone().unwrap_or_default();
                return worker;
            }
            assert!(Instant::now() < deadline, "worker {name} did not start");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Worker {
    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid() as i32), signal).unwrap();
    }

    fn wait(mut self) -> std::process::ExitStatus {
        self.child.take().expect("running").wait().unwrap()
    }
}

async fn count(store: &SharedStore, status: JobStatus) -> i64 {
    store
        .count_jobs()
        .await
        .unwrap()
        .into_iter()
        .find(|(s, _)| *s == status)
        .map_or(0, |(_, n)| n)
}

async fn throughput(bench: &mut Bench, processes: usize) -> Row {
    let url = bench.store_url(&format!("throughput-{processes}.db"));
    let store = bench.open(&url).await;
    let jobs: Vec<NewJob> = (0..NOOP_JOBS)
        .map(|_| NewJob::new("noop", json!({})))
        .collect();
    let submit_started = Instant::now();
    for chunk in jobs.chunks(10_000) {
        store.submit(chunk).await.unwrap();
    }
    let submit_rate = NOOP_JOBS as f64 / submit_started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..processes {
        workers.push(bench.worker(&store, &url, &["--concurrency", "256"]).await);
    }
    // Counting is not free on SQLite: look every 100 ms (the figure is exact to that).
    while count(&store, JobStatus::Completed).await < NOOP_JOBS as i64 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rate = NOOP_JOBS as f64 / started.elapsed().as_secs_f64();
    for worker in workers {
        worker.signal(Signal::SIGTERM);
        worker.wait();
    }
    let audit = store.completion_counts().await.unwrap();
    assert_eq!(audit.len(), NOOP_JOBS);
    assert!(audit.iter().all(|(_, n)| *n == 1), "a job completed twice");
    Row {
        name: format!("no-op throughput, {processes} process(es), 100k jobs (submit: {submit_rate:.0} jobs/s)"),
        value: format!("{rate:.0} jobs/s"),
        target: "≥ 20,000 jobs/s",
    }
}

/// Time from SIGTERM to the first 503 from /readyz, polled on a kept-alive connection.
async fn readiness(bench: &mut Bench, runs: usize) -> Row {
    let url = bench.store_url("readiness.db");
    let store = bench.open(&url).await;
    let mut samples = Vec::new();
    for _ in 0..runs {
        let worker = bench.worker(&store, &url, &[]).await;
        let ready_url = format!("http://{}/readyz", worker.addr);
        let client = reqwest::Client::new();
        // Warm the connection.
        assert_eq!(client.get(&ready_url).send().await.unwrap().status(), 200);
        let signalled = Instant::now();
        worker.signal(Signal::SIGTERM);
        loop {
            match client.get(&ready_url).send().await {
                Ok(response) if response.status() == 503 => break,
                Ok(_) => {}
                Err(err) => panic!("worker went away before answering 503: {err}"),
            }
        }
        samples.push(signalled.elapsed());
        worker.wait();
    }
    let (median, max) = summarise(&mut samples);
    Row {
        name: format!("SIGTERM → /readyz 503 (median of {runs}, max)"),
        value: format!("{:.2} ms (max {:.2} ms)", ms(median), ms(max)),
        target: "≤ 5 ms",
    }
}

/// SIGTERM to exit with 4 demo jobs in flight, minus the time the jobs took to reach a checkpoint.
async fn overhead(bench: &mut Bench, runs: usize) -> Row {
    let mut samples = Vec::new();
    let mut totals = Vec::new();
    for run in 0..runs {
        let url = bench.store_url(&format!("overhead-{run}.db"));
        let store = bench.open(&url).await;
        let jobs: Vec<NewJob> = (0..4)
            .map(|n| {
                NewJob::new(
                    "demo",
                    json!({"seed": format!("o{run}-{n}"), "iterations": 500_000_000u64, "checkpoint_every": 200_000}),
                )
            })
            .collect();
        store.submit(&jobs).await.unwrap();
        let worker = bench.worker(&store, &url, &["--concurrency", "4"]).await;
        let id = loop {
            let workers = store.list_workers().await.unwrap();
            let row = &workers[0];
            if row.in_flight == 4 {
                break row.id.clone();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        tokio::time::sleep(Duration::from_millis(300)).await; // let every job reach its stride
        let signalled = Instant::now();
        worker.signal(Signal::SIGTERM);
        assert!(worker.wait().success());
        let total = signalled.elapsed();
        let record = store
            .list_shutdowns(10)
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.worker_id == id)
            .unwrap();
        let checkpointing = record
            .phases
            .iter()
            .find(|p| p.phase == handover::lifecycle::Phase::Checkpointing)
            .and_then(|p| p.duration_ms)
            .unwrap();
        assert_eq!(record.jobs_released, 4);
        totals.push(total);
        samples.push(total.saturating_sub(Duration::from_secs_f64(checkpointing / 1000.0)));
    }
    let (median, max) = summarise(&mut samples);
    let (total_median, _) = summarise(&mut totals);
    Row {
        name: format!(
            "shutdown overhead, 4 jobs in flight (median of {runs}; SIGTERM→exit {:.1} ms)",
            ms(total_median)
        ),
        value: format!("{:.2} ms (max {:.2} ms)", ms(median), ms(max)),
        target: "< 50 ms",
    }
}

async fn idle_rss(bench: &mut Bench) -> Row {
    let url = bench.store_url("rss.db");
    let store = bench.open(&url).await;
    let worker = bench.worker(&store, &url, &[]).await;
    tokio::time::sleep(Duration::from_secs(2)).await; // idle: a few heartbeats and polls
    let status = std::fs::read_to_string(format!("/proc/{}/status", worker.pid())).unwrap();
    let rss_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    worker.signal(Signal::SIGTERM);
    worker.wait();
    Row {
        name: "idle RSS".into(),
        value: format!("{:.1} MB", rss_kb / 1024.0),
        target: "< 20 MB",
    }
}

fn summarise(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    (samples[samples.len() / 2], *samples.last().unwrap())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let selected: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants = |name: &str| selected.is_empty() || selected.iter().any(|s| s == name);
    let mut bench = Bench {
        dir: tempfile::tempdir().unwrap(),
        next: 0,
    };
    let mut rows = Vec::new();
    if wants("throughput") {
        rows.push(throughput(&mut bench, 1).await);
        rows.push(throughput(&mut bench, 4).await);
    }
    if wants("readiness") {
        rows.push(readiness(&mut bench, 15).await);
    }
    if wants("overhead") {
        rows.push(overhead(&mut bench, 5).await);
    }
    if wants("rss") {
        rows.push(idle_rss(&mut bench).await);
    }
    println!("| benchmark (SQLite store) | result | target |");
    println!("|---|---|---|");
    for row in rows {
        println!("| {} | {} | {} |", row.name, row.value, row.target);
    }
}
