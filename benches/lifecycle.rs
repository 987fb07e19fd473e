//! Every benchmark of the project on the real release binary, on both stores, printed as one
//! markdown table (these are measurements, not timed tests). Run `scripts/bench`, or
//! `cargo bench --bench lifecycle -- [sqlite|postgres] [SCENARIO...]` with scenarios
//! throughput, throughput-low (every setting at its default, and concurrency 16), latency (submit
//! → start), peer (graphile-worker 0.17.3 side by side, PostgreSQL only; needs node and npm),
//! claim, drain-poll, queue-metrics (asked by name only: it submits 1M jobs), readiness, overhead, remote-drain, rescue, rss, scrape, prune (one-job claim latency
//! while a retention pass deletes 1M completed jobs; not in the default set: it takes minutes).
//! PostgreSQL: the local server (HANDOVER_TEST_POSTGRES, default postgres://postgres@127.0.0.1:5432/test),
//! one fresh schema per scenario.

mod peer;

use handover::store::{DrainRequest, JobId, JobStatus, NewJob, SharedStore, StoreUrl};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// The binary under test: this build's, or `HANDOVER_BENCH_BIN` (to measure another version side
/// by side with the same harness).
fn bin() -> String {
    std::env::var("HANDOVER_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_handover").into())
}
const TOKEN: &str = "bench-admin-token-0123456789";
const NOOP_JOBS: usize = 100_000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

struct Row {
    store: &'static str,
    name: String,
    value: String,
    target: &'static str,
}

struct Bench {
    backend: Backend,
    dir: tempfile::TempDir,
    next: usize,
    schemas: Vec<String>,
}

/// What a bench worker logs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Logs {
    Quiet,
    /// JSON lines on a pipe, with each attempt's start (for submit → start).
    AttemptStarts,
}

/// A worker process; dropping it without `wait` kills and reaps it.
struct Worker {
    child: Option<Child>,
    addr: String,
    id: String,
    /// The log pipe of a worker started with [`Logs::AttemptStarts`].
    stderr: Option<std::process::ChildStderr>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn postgres_server() -> String {
    std::env::var("HANDOVER_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

impl Bench {
    /// A fresh store for one scenario; returns (URL, opened store).
    async fn fresh_store(&mut self, name: &str) -> (String, SharedStore) {
        let url = match self.backend {
            Backend::Sqlite => format!(
                "sqlite://{}",
                self.dir.path().join(format!("{name}.db")).display()
            ),
            Backend::Postgres => {
                let schema = format!(
                    "bench_{}_{}",
                    name.replace('-', "_"),
                    uuid::Uuid::new_v4().simple()
                );
                let admin = sqlx::PgPool::connect(&postgres_server())
                    .await
                    .expect("PostgreSQL is running");
                sqlx::query(&format!("CREATE SCHEMA {schema}"))
                    .execute(&admin)
                    .await
                    .unwrap();
                admin.close().await;
                self.schemas.push(schema.clone());
                format!("{}?options[search_path]={schema}", postgres_server())
            }
        };
        let store = handover::store::open_migrated(&url.parse::<StoreUrl>().unwrap())
            .await
            .unwrap();
        (url, store)
    }

    async fn drop_schemas(&self) {
        if self.schemas.is_empty() {
            return;
        }
        let admin = sqlx::PgPool::connect(&postgres_server()).await.unwrap();
        for schema in &self.schemas {
            let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                .execute(&admin)
                .await;
        }
    }

    /// Starts a worker polling every 20 ms (so no figure waits on a poll) and waits for it to be
    /// running.
    async fn worker(&mut self, store: &SharedStore, url: &str, extra: &[&str]) -> Worker {
        let mut args = vec!["--poll-interval", "20ms"];
        args.extend_from_slice(extra);
        self.worker_as(store, url, &args, Logs::Quiet).await
    }

    /// Starts a worker with exactly `extra` beyond the store, address, name and token.
    async fn worker_as(
        &mut self,
        store: &SharedStore,
        url: &str,
        extra: &[&str],
        logs: Logs,
    ) -> Worker {
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
        ];
        args.extend_from_slice(extra);
        let mut command = Command::new(bin());
        match logs {
            Logs::Quiet => command.env("RUST_LOG", "warn").stderr(Stdio::null()),
            Logs::AttemptStarts => command
                .arg("--log-format")
                .arg("json")
                .env("RUST_LOG", "warn,handover::worker::runner=debug")
                .stderr(Stdio::piped()),
        };
        let mut child = command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut worker = Worker {
            stderr: child.stderr.take(),
            child: Some(child),
            addr: String::new(),
            id: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let workers = store.list_workers().await.unwrap_or_default();
            if let Some(row) = workers
                .iter()
                .find(|w| w.name == name && w.phase == handover::lifecycle::Phase::Running)
            {
                worker.addr = row.listen_addr.clone().unwrap_or_default();
                worker.id = row.id.clone();
                return worker;
            }
            assert!(Instant::now() < deadline, "worker {name} did not start");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn row(&self, name: String, value: String, target: &'static str) -> Row {
        Row {
            store: self.backend.name(),
            name,
            value,
            target,
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

/// Jobs the workers have completed, from their `handover_jobs_completed_total` counters.
async fn completed_by(client: &reqwest::Client, workers: &[Worker]) -> f64 {
    let mut total = 0.0;
    for worker in workers {
        let text = client
            .get(format!("http://{}/metrics", worker.addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        total += text
            .lines()
            .filter(|line| line.starts_with("handover_jobs_completed_total{"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    total
}

/// `concurrency`: the `--concurrency` of each process, or None for a worker with every setting at
/// its default (one slot per core, 250 ms poll).
async fn throughput(bench: &mut Bench, processes: usize, concurrency: Option<u32>) -> Row {
    let rate = run_throughput(bench, processes, concurrency, NOOP_JOBS).await;
    let target = if bench.backend == Backend::Sqlite {
        "≥ 20,000 jobs/s"
    } else {
        "≥ 15,000 jobs/s"
    };
    bench.row(
        format!(
            "no-op throughput, {processes} process(es), {}, 100k jobs",
            concurrency.map_or("every setting at its default".to_string(), |n| format!(
                "concurrency {n}"
            ))
        ),
        format!("{rate:.0} jobs/s"),
        target,
    )
}

/// Runs `total` no-op jobs through `processes` workers; returns jobs per second.
async fn run_throughput(
    bench: &mut Bench,
    processes: usize,
    concurrency: Option<u32>,
    total: usize,
) -> f64 {
    let slots = concurrency.map(|n| n.to_string());
    let name = format!(
        "throughput-{processes}-{}",
        slots.as_deref().unwrap_or("default")
    );
    let (url, store) = bench.fresh_store(&name).await;
    let jobs: Vec<NewJob> = (0..total).map(|_| NewJob::new("noop", json!({}))).collect();
    for chunk in jobs.chunks(10_000) {
        store.submit(chunk).await.unwrap();
    }
    if bench.backend == Backend::Postgres {
        // Start every run from the same state: no checkpoint owed to the submission's WAL
        // lands inside the measurement (the run's own checkpoints still count).
        let admin = sqlx::PgPool::connect(&postgres_server()).await.unwrap();
        sqlx::query("CHECKPOINT").execute(&admin).await.unwrap();
        admin.close().await;
    }
    let started = Instant::now();
    let mut workers = Vec::new();
    let flags: Vec<&str> = match &slots {
        Some(n) => vec!["--concurrency", n.as_str()],
        None => vec![],
    };
    for _ in 0..processes {
        workers.push(match concurrency {
            Some(_) => bench.worker(&store, &url, &flags).await,
            None => bench.worker_as(&store, &url, &[], Logs::Quiet).await,
        });
    }
    // The workers count a completion once the store has confirmed it; asking them is cheap,
    // whereas counting 100k rows in the store every 100 ms would steal the database's CPU.
    // Looked at every 20 ms (the figure is exact to that); the store is checked afterwards.
    let client = reqwest::Client::new();
    while completed_by(&client, &workers).await < total as f64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    assert_eq!(count(&store, JobStatus::Completed).await, total as i64);
    for worker in workers {
        worker.signal(Signal::SIGTERM);
        worker.wait();
    }
    let audit = store.completion_counts().await.unwrap();
    assert_eq!(audit.len(), total);
    assert!(audit.iter().all(|(_, n)| *n == 1), "a job completed twice");
    rate
}

/// Submit → start on an idle worker with every setting at its default: from just before the
/// submit call to the moment the handler starts (the worker's `attempt started` line, timestamped
/// by the same clock), one job at a time.
async fn submit_to_start(bench: &mut Bench, samples: usize) -> Row {
    let (url, store) = bench.fresh_store("latency").await;
    let mut worker = bench
        .worker_as(&store, &url, &[], Logs::AttemptStarts)
        .await;
    let stderr = worker.stderr.take().expect("piped");
    let (starts_tx, starts) = std::sync::mpsc::channel::<(JobId, SystemTime)>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if event["message"] != "attempt started" {
                continue;
            }
            let job_id = event["span"]["job_id"]
                .as_i64()
                .expect("job_id in the span");
            let at = chrono::DateTime::parse_from_rfc3339(event["timestamp"].as_str().unwrap())
                .expect("RFC 3339 timestamp");
            if starts_tx.send((job_id, at.into())).is_err() {
                return;
            }
        }
    });
    let mut waits = Vec::new();
    for sample in 0..samples {
        let submitted = SystemTime::now();
        let id = store
            .submit(&[NewJob::new("noop", json!({}))])
            .await
            .unwrap()[0];
        let started = loop {
            let (job_id, at) = starts
                .recv_timeout(Duration::from_secs(5))
                .expect("the job started within 5 s");
            if job_id == id {
                break at;
            }
        };
        waits.push(started.duration_since(submitted).unwrap_or_default());
        // A poll restarts its timer after each claim: on SQLite, submits spread over the poll
        // interval measure the wait a producer actually sees, not always the worst case.
        let pause = match bench.backend {
            Backend::Sqlite => 5 + (sample as u64 * 37) % 250,
            Backend::Postgres => 5,
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    worker.signal(Signal::SIGTERM);
    worker.wait();
    let (p50, p99) = percentiles(&mut waits);
    let target = match bench.backend {
        Backend::Postgres => "p50 ≤ 2 ms (NOTIFY)",
        Backend::Sqlite => "≤ one poll interval (250 ms)",
    };
    bench.row(
        format!("submit → start, idle worker, default settings ({samples} jobs one by one)"),
        format!("p50 {:.2} ms, p99 {:.2} ms", ms(p50), ms(p99)),
        target,
    )
}

/// graphile-worker 0.17.3 and handover one after the other on the same PostgreSQL, one process
/// each, 100k no-op jobs at concurrency 1, 16 and 256; then submit → start for both.
async fn peer(bench: &mut Bench) -> Vec<Row> {
    let modules = peer::install();
    let mut rows = Vec::new();
    for concurrency in [1, 16, 256] {
        let theirs = peer::throughput(&modules, &postgres_server(), NOOP_JOBS, concurrency);
        let ours = run_throughput(bench, 1, Some(concurrency), NOOP_JOBS).await;
        rows.push(bench.row(
            format!(
                "no-op throughput, 1 process, concurrency {concurrency}, 100k jobs: handover / graphile-worker 0.17.3"
            ),
            format!(
                "{ours:.0} / {theirs:.0} jobs/s = **{:.2}×**",
                ours / theirs
            ),
            if concurrency == 16 { "≥ 1.5×" } else { "> 1×" },
        ));
    }
    let (p50, p99) = peer::latency(&modules, &postgres_server(), 200);
    rows.push(bench.row(
        "graphile-worker 0.17.3: submit → start, idle worker (200 jobs one by one)".into(),
        format!("p50 {p50:.2} ms, p99 {p99:.2} ms"),
        "(published: 4.16 ms mean)",
    ));
    rows
}

/// What one refresh of the queue metrics costs the store with 1M jobs waiting.
async fn queue_metrics(bench: &mut Bench) -> Row {
    let (_, store) = bench.fresh_store("queue-metrics").await;
    let jobs: Vec<NewJob> = (0..10_000)
        .map(|n| NewJob::new(["noop", "demo", "exec"][n % 3], json!({})))
        .collect();
    for _ in 0..100 {
        store.submit(&jobs).await.unwrap();
    }
    let mut samples = Vec::new();
    for _ in 0..10 {
        let started = Instant::now();
        let counts = store.queue_counts().await.unwrap();
        samples.push(started.elapsed());
        assert_eq!(counts.iter().map(|c| c.jobs).sum::<i64>(), 1_000_000);
    }
    let (median, max) = median_max(&mut samples);
    bench.row(
        "queue metrics refresh, 1M jobs pending (median of 10, max; once every 5 s per worker)"
            .into(),
        format!("{:.1} ms (max {:.1} ms)", ms(median), ms(max)),
        "—",
    )
}

/// The read a SQLite worker makes every poll to notice a drain request: its cost, and what it
/// adds up to at the default poll (4 a second).
async fn drain_poll(bench: &mut Bench) -> Row {
    let (_, store) = bench.fresh_store("drain-poll").await;
    store
        .register_worker(&handover::store::WorkerRegistration {
            id: "bench-worker".into(),
            name: "bench".into(),
            version: "bench".into(),
            listen_addr: None,
            concurrency: 1,
            lease_ttl: Duration::from_secs(60),
            kinds: vec!["noop".into()],
        })
        .await
        .unwrap();
    let mut samples = Vec::new();
    for _ in 0..2000 {
        let started = Instant::now();
        assert!(!store.drain_requested("bench-worker").await.unwrap());
        samples.push(started.elapsed());
    }
    let (median, p99) = percentiles(&mut samples);
    bench.row(
        "drain-request poll, one read (median, p99; 4 a second at the default poll)".into(),
        format!(
            "{:.3} ms (p99 {:.3} ms): {:.2} ms a second",
            ms(median),
            ms(p99),
            4.0 * ms(median)
        ),
        "—",
    )
}

/// One-job claims from this process's store client: the store's own round trip.
async fn claim_latency(bench: &mut Bench) -> Row {
    let (_, store) = bench.fresh_store("claim").await;
    let jobs: Vec<NewJob> = (0..1000).map(|_| NewJob::new("noop", json!({}))).collect();
    store.submit(&jobs).await.unwrap();
    let kinds = vec!["noop".to_string()];
    let mut samples = Vec::new();
    for _ in 0..1000 {
        let started = Instant::now();
        let claimed = store
            .claim("bench", &kinds, 1, Duration::from_secs(60))
            .await
            .unwrap();
        samples.push(started.elapsed());
        assert_eq!(claimed.len(), 1);
    }
    let (median, p99) = percentiles(&mut samples);
    bench.row(
        "claim latency, 1 job (median, p99)".into(),
        format!("{:.3} ms (p99 {:.3} ms)", ms(median), ms(p99)),
        "—",
    )
}

/// Completed jobs a `prune` scenario deletes.
const PRUNE_JOBS: usize = 1_000_000;

/// Makes every job of the store completed two days ago (the completion audit trigger writes one
/// `job_completions` row each, as completions do).
async fn age_all_jobs_completed(bench: &Bench, url: &str) {
    use sqlx::Connection;
    match bench.backend {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query(
                "UPDATE jobs SET status = 'completed', updated_at = updated_at - 172800000",
            )
            .execute(&mut conn)
            .await
            .unwrap();
            conn.close().await.unwrap();
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query(
                "UPDATE jobs SET status = 'completed', updated_at = updated_at - interval '2 days'",
            )
            .execute(&mut conn)
            .await
            .unwrap();
            sqlx::query("VACUUM ANALYZE jobs")
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
        }
    }
}

/// One-job claims, one every 5 ms, until `done` is set or `limit` samples.
async fn paced_claims(
    store: &SharedStore,
    done: &std::sync::atomic::AtomicBool,
    limit: usize,
) -> Vec<Duration> {
    let kinds = vec!["noop".to_string()];
    let mut samples = Vec::new();
    while samples.len() < limit && !done.load(std::sync::atomic::Ordering::SeqCst) {
        let started = Instant::now();
        let claimed = store
            .claim("bench", &kinds, 1, Duration::from_secs(600))
            .await
            .unwrap();
        samples.push(started.elapsed());
        assert_eq!(claimed.len(), 1, "enough pending jobs for the whole prune");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    samples
}

/// Claim latency (one job at a time, every 5 ms) without and during a retention pass that deletes
/// 1M completed jobs and their 1M audit rows, on one store client (a worker's pruner beside its
/// claim loop); and the pass's own pace.
async fn prune(bench: &mut Bench) -> Vec<Row> {
    use handover::store::prune::{prune_pass, PRUNE_BATCH};
    use std::sync::atomic::{AtomicBool, Ordering};
    let (url, store) = bench.fresh_store("prune").await;
    let batch: Vec<NewJob> = (0..10_000)
        .map(|_| NewJob::new("noop", json!({})))
        .collect();
    for _ in 0..PRUNE_JOBS / batch.len() {
        store.submit(&batch).await.unwrap();
    }
    age_all_jobs_completed(bench, &url).await;
    // Pending jobs to claim, more than the samples can take.
    for _ in 0..8 {
        store.submit(&batch).await.unwrap();
    }
    let idle = AtomicBool::new(false);
    let mut without = paced_claims(&store, &idle, 2000).await;
    let done = AtomicBool::new(false);
    let policy = handover::store::Retention {
        completed: Some(Duration::from_secs(24 * 3600)),
        ..handover::store::Retention::FOREVER
    };
    let started = Instant::now();
    let pass = async {
        let report = prune_pass(&*store, &policy, PRUNE_BATCH, |_| {})
            .await
            .unwrap()
            .expect("no other pass");
        let took = started.elapsed();
        done.store(true, Ordering::SeqCst);
        (report, took)
    };
    let ((report, took), mut during) = tokio::join!(pass, paced_claims(&store, &done, 80_000));
    assert_eq!(report.completed_jobs, PRUNE_JOBS as u64);
    let (p50, p99) = percentiles(&mut without);
    let (d50, d99) = percentiles(&mut during);
    let max = *during.last().unwrap();
    let rows = report.completed_jobs + report.job_completions;
    vec![
        bench.row(
            "claim latency, 1 job every 5 ms, no prune (p50, p99)".into(),
            format!("{:.3} ms (p99 {:.3} ms)", ms(p50), ms(p99)),
            "—",
        ),
        bench.row(
            format!(
                "claim latency during a prune of 1M completed jobs (p50, p99, max; {} claims)",
                during.len()
            ),
            format!(
                "{:.3} ms (p99 {:.3} ms, max {:.1} ms)",
                ms(d50),
                ms(d99),
                ms(max)
            ),
            "claims never stall behind a prune",
        ),
        bench.row(
            "prune of 1M completed jobs + 1M audit rows, batches of 1,000".into(),
            format!(
                "{:.1} s ({:.0} jobs/s, {:.0} rows/s)",
                took.as_secs_f64(),
                report.completed_jobs as f64 / took.as_secs_f64(),
                rows as f64 / took.as_secs_f64()
            ),
            "—",
        ),
    ]
}

/// Time from SIGTERM to the first 503 from /readyz, polled on a kept-alive connection.
async fn readiness(bench: &mut Bench, runs: usize) -> Row {
    let (url, store) = bench.fresh_store("readiness").await;
    let mut samples = Vec::new();
    for _ in 0..runs {
        let worker = bench.worker(&store, &url, &[]).await;
        let ready_url = format!("http://{}/readyz", worker.addr);
        let client = reqwest::Client::new();
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
    let (median, max) = median_max(&mut samples);
    bench.row(
        format!("SIGTERM → /readyz 503 (median of {runs}, max)"),
        format!("{:.2} ms (max {:.2} ms)", ms(median), ms(max)),
        "≤ 5 ms",
    )
}

/// SIGTERM to exit with 4 demo jobs in flight and no-op jobs held behind them, less the time the
/// jobs took to reach a checkpoint.
async fn overhead(bench: &mut Bench, runs: usize) -> Row {
    let mut samples = Vec::new();
    let mut totals = Vec::new();
    let mut held = Vec::new();
    let client = reqwest::Client::new();
    for run in 0..runs {
        let (url, store) = bench.fresh_store(&format!("overhead-{run}")).await;
        let worker = bench.worker(&store, &url, &["--concurrency", "4"]).await;
        // One no-op first teaches the worker that its jobs are short, so it claims ahead.
        store
            .submit(&[NewJob::new("noop", json!({}))])
            .await
            .unwrap();
        while count(&store, JobStatus::Completed).await < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut jobs: Vec<NewJob> = (0..4)
            .map(|n| NewJob {
                priority: 10,
                ..NewJob::new(
                    "demo",
                    json!({"seed": format!("o{run}-{n}"), "iterations": 500_000_000u64, "checkpoint_every": 200_000}),
                )
            })
            .collect();
        jobs.extend((0..100).map(|_| NewJob::new("noop", json!({}))));
        store.submit(&jobs).await.unwrap();
        let held_now = loop {
            let status: serde_json::Value = client
                .get(format!("http://{}/api/status", worker.addr))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let running = status["in_flight"].as_array().map_or(0, Vec::len);
            let held = status["held"].as_i64().unwrap_or(0);
            let checkpointed = store
                .list_jobs(&Default::default())
                .await
                .unwrap()
                .iter()
                .filter(|j| j.checkpoint.is_some())
                .count();
            if running == 4 && checkpointed == 4 && held > 0 {
                break held;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        held.push(held_now);
        let id = worker.id.clone();
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
        assert!(record.jobs_released >= 4, "{record:?}");
        totals.push(total);
        samples.push(total.saturating_sub(Duration::from_secs_f64(checkpointing / 1000.0)));
    }
    let (median, max) = median_max(&mut samples);
    let (total_median, _) = median_max(&mut totals);
    bench.row(
        format!(
            "shutdown overhead, 4 jobs in flight and {} held (median of {runs}; SIGTERM→exit {:.1} ms)",
            held.iter().min().unwrap_or(&0),
            ms(total_median)
        ),
        format!("{:.2} ms (max {:.2} ms)", ms(median), ms(max)),
        "< 50 ms",
    )
}

/// A drain request written to the store → the target's /readyz says 503.
async fn remote_drain(bench: &mut Bench, runs: usize) -> Row {
    let (url, store) = bench.fresh_store("remote-drain").await;
    let mut samples = Vec::new();
    // With every setting at its default: PostgreSQL pushes the request; a SQLite worker looks
    // for one every poll (250 ms).
    for _ in 0..runs {
        let worker = bench.worker_as(&store, &url, &[], Logs::Quiet).await;
        let ready_url = format!("http://{}/readyz", worker.addr);
        let client = reqwest::Client::new();
        let request = DrainRequest {
            mode: handover::lifecycle::Mode::Handoff,
            reason: Some("bench".into()),
            requested_by: Some("bench".into()),
            requested_at: None,
        };
        let asked = Instant::now();
        store.request_drain(&worker.id, &request).await.unwrap();
        while client.get(&ready_url).send().await.unwrap().status() != 503 {}
        samples.push(asked.elapsed());
        worker.wait();
    }
    let (median, max) = median_max(&mut samples);
    let target = if bench.backend == Backend::Postgres {
        "< 100 ms"
    } else {
        "≤ one poll interval (250 ms)"
    };
    bench.row(
        format!("remote drain: request → target not ready (median of {runs}, max)"),
        format!("{:.1} ms (max {:.1} ms)", ms(median), ms(max)),
        target,
    )
}

/// SIGKILL of a job's owner → another worker has rescued it (lease TTL 2 s, heartbeat 500 ms).
async fn rescue(bench: &mut Bench, runs: usize) -> Row {
    let timings = [
        "--lease-ttl",
        "2s",
        "--heartbeat-interval",
        "500ms",
        "--concurrency",
        "1",
    ];
    let mut samples = Vec::new();
    for run in 0..runs {
        let (url, store) = bench.fresh_store(&format!("rescue-{run}")).await;
        // The rescuer is connected for a full TTL before the kill, as in a running fleet.
        let rescuer = bench.worker(&store, &url, &timings).await;
        let blocker = json!({"seed": "block", "iterations": 50_000_000_000u64, "checkpoint_every": 10_000_000});
        store.submit(&[NewJob::new("demo", blocker)]).await.unwrap(); // keeps the rescuer busy
        tokio::time::sleep(Duration::from_millis(300)).await;
        let victim = bench.worker(&store, &url, &timings).await;
        let job = store
            .submit(&[NewJob::new(
                "demo",
                json!({"seed": "victim", "iterations": 50_000_000_000u64}),
            )])
            .await
            .unwrap()[0];
        while store.get_job(job).await.unwrap().unwrap().owner.as_deref()
            != Some(victim.id.as_str())
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(2500)).await; // the rescuer's own TTL of connectivity
        let killed = Instant::now();
        victim.signal(Signal::SIGKILL);
        victim.wait();
        loop {
            let row = store.get_job(job).await.unwrap().unwrap();
            if row.status == JobStatus::Pending && row.owner.is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        samples.push(killed.elapsed());
        drop(rescuer);
    }
    let (median, max) = median_max(&mut samples);
    bench.row(
        format!("rescue after SIGKILL, lease TTL 2 s + heartbeat 0.5 s (median of {runs}, max)"),
        format!("{:.0} ms (max {:.0} ms)", ms(median), ms(max)),
        "≤ TTL + 1 heartbeat (2.5 s)",
    )
}

async fn idle_rss(bench: &mut Bench) -> Row {
    let (url, store) = bench.fresh_store("rss").await;
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
    bench.row(
        "idle RSS".into(),
        format!("{:.1} MB", rss_kb / 1024.0),
        "< 20 MB",
    )
}

async fn scrape(bench: &mut Bench) -> Row {
    let (url, store) = bench.fresh_store("scrape").await;
    let worker = bench.worker(&store, &url, &[]).await;
    let client = reqwest::Client::new();
    let metrics_url = format!("http://{}/metrics", worker.addr);
    let mut samples = Vec::new();
    let mut bytes = 0;
    for _ in 0..500 {
        let started = Instant::now();
        bytes = client
            .get(&metrics_url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .len();
        samples.push(started.elapsed());
    }
    worker.signal(Signal::SIGTERM);
    worker.wait();
    let (median, p99) = percentiles(&mut samples);
    bench.row(
        format!("/metrics scrape ({} KiB; median, p99 of 500)", bytes / 1024),
        format!("{:.2} ms (p99 {:.2} ms)", ms(median), ms(p99)),
        "—",
    )
}

fn median_max(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    (samples[samples.len() / 2], *samples.last().unwrap())
}

fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let p99 = samples[(samples.len() * 99 / 100).min(samples.len() - 1)];
    (samples[samples.len() / 2], p99)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let mut backends: Vec<Backend> = args
        .iter()
        .filter_map(|a| match a.as_str() {
            "sqlite" => Some(Backend::Sqlite),
            "postgres" => Some(Backend::Postgres),
            _ => None,
        })
        .collect();
    if backends.is_empty() {
        backends = vec![Backend::Sqlite, Backend::Postgres];
    }
    let scenarios: Vec<&String> = args
        .iter()
        .filter(|a| *a != "sqlite" && *a != "postgres")
        .collect();
    let wants = |name: &str| scenarios.is_empty() || scenarios.iter().any(|s| *s == name);
    let mut rows = Vec::new();
    for backend in backends {
        let mut bench = Bench {
            backend,
            dir: tempfile::tempdir().unwrap(),
            next: 0,
            schemas: Vec::new(),
        };
        if wants("throughput") {
            rows.push(throughput(&mut bench, 1, Some(256)).await);
            rows.push(throughput(&mut bench, 4, Some(256)).await);
        }
        if wants("throughput-low") {
            rows.push(throughput(&mut bench, 1, None).await);
            rows.push(throughput(&mut bench, 1, Some(16)).await);
        }
        if wants("latency") {
            rows.push(submit_to_start(&mut bench, 200).await);
        }
        if wants("peer") && backend == Backend::Postgres {
            rows.extend(peer(&mut bench).await);
        }
        if scenarios.iter().any(|s| *s == "queue-metrics") {
            rows.push(queue_metrics(&mut bench).await);
        }
        if wants("drain-poll") {
            rows.push(drain_poll(&mut bench).await);
        }
        if wants("claim") {
            rows.push(claim_latency(&mut bench).await);
        }
        if wants("readiness") {
            rows.push(readiness(&mut bench, 15).await);
        }
        if wants("overhead") {
            rows.push(overhead(&mut bench, 5).await);
        }
        if wants("remote-drain") {
            rows.push(remote_drain(&mut bench, 5).await);
        }
        if wants("rescue") {
            rows.push(rescue(&mut bench, 3).await);
        }
        if wants("rss") {
            rows.push(idle_rss(&mut bench).await);
        }
        if wants("scrape") {
            rows.push(scrape(&mut bench).await);
        }
        // Minutes long: only when asked for by name.
        if scenarios.iter().any(|s| *s == "prune") {
            rows.extend(prune(&mut bench).await);
        }
        bench.drop_schemas().await;
    }
    println!("| store | benchmark | result | target |");
    println!("|---|---|---|---|");
    for row in rows {
        println!(
            "| {} | {} | {} | {} |",
            row.store, row.name, row.value, row.target
        );
    }
}
