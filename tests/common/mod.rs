//! Black-box harness: a temp SQLite store, the real `handover` binary as a child process, real
//! signals, real HTTP. Waits are on observable events with a time limit, never fixed sleeps.

#![allow(dead_code)]

pub mod faulty;
pub mod postgres;

use handover::store::{
    Job, JobId, JobStatus, NewJob, SharedStore, ShutdownRecord, StoreUrl, WorkerRow,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_handover");
pub const TOKEN: &str = "test-admin-token-0123456789";

/// Polls `check` every 10 ms until it returns Some; panics with `what` after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Demo-chain hashes per second on this machine, measured in-process (same sha2 build settings).
pub fn hash_rate() -> f64 {
    static RATE: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *RATE.get_or_init(|| {
        let sample = 200_000;
        let started = Instant::now();
        let _ = handover::jobs::demo::chain_steps(
            handover::jobs::demo::chain_start("rate"),
            sample,
            || false,
        );
        sample as f64 / started.elapsed().as_secs_f64()
    })
}

/// A demo job sized in time: `checkpoint_secs` between checkpoints, `checkpoints` intervals long.
#[derive(Clone, Debug)]
pub struct DemoSpec {
    pub seed: String,
    pub iterations: u64,
    pub checkpoint_every: u64,
    /// Expected wall time between checkpoints.
    pub interval: Duration,
}

impl DemoSpec {
    pub fn timed(seed: &str, checkpoint_secs: f64, intervals: u64) -> DemoSpec {
        let every = ((hash_rate() * checkpoint_secs) as u64).max(1000);
        DemoSpec {
            seed: seed.to_string(),
            iterations: every * intervals,
            checkpoint_every: every,
            interval: Duration::from_secs_f64(checkpoint_secs),
        }
    }

    pub fn payload(&self) -> Value {
        json!({"seed": self.seed, "iterations": self.iterations, "checkpoint_every": self.checkpoint_every})
    }

    pub fn expected_digest(&self) -> String {
        handover::jobs::demo::expected_digest(&self.seed, self.iterations)
    }
}

pub struct TestStore {
    /// Worker logs (and the SQLite file) live here.
    pub dir: tempfile::TempDir,
    pub url: String,
    pub store: SharedStore,
    /// For a PostgreSQL store: the schema, dropped with the store.
    pub schema: Option<postgres::PgSchema>,
}

impl TestStore {
    pub async fn new() -> TestStore {
        Self::sqlite_in(tempfile::tempdir().unwrap()).await
    }

    /// A SQLite store in the given directory (created and migrated).
    pub async fn sqlite_in(dir: tempfile::TempDir) -> TestStore {
        let path = dir.path().join("handover.db");
        let url = format!("sqlite://{}", path.display());
        let store = handover::store::open_migrated(&StoreUrl::Sqlite { path })
            .await
            .unwrap();
        TestStore {
            dir,
            url,
            store,
            schema: None,
        }
    }

    /// A fresh schema on the local PostgreSQL server.
    pub async fn postgres() -> TestStore {
        let schema = postgres::PgSchema::new().await;
        TestStore {
            dir: tempfile::tempdir().unwrap(),
            url: schema.url.clone(),
            store: schema.store(),
            schema: Some(schema),
        }
    }

    pub async fn submit(&self, kind: &str, payload: Value) -> JobId {
        self.store
            .submit(&[NewJob::new(kind, payload)])
            .await
            .unwrap()[0]
    }

    /// Every job in the store.
    pub async fn all_jobs(&self) -> Vec<Job> {
        self.store.list_jobs(&Default::default()).await.unwrap()
    }

    /// The shutdown record a worker left, if any.
    pub async fn shutdown_of(&self, worker_id: &str) -> Option<ShutdownRecord> {
        self.store
            .list_shutdowns(100)
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.worker_id == worker_id)
    }

    pub async fn job(&self, id: JobId) -> Job {
        self.store.get_job(id).await.unwrap().expect("job exists")
    }

    pub async fn worker_row(&self, id: &str) -> WorkerRow {
        self.store
            .list_workers()
            .await
            .unwrap()
            .into_iter()
            .find(|w| w.id == id)
            .expect("worker row exists")
    }

    /// Waits until the job's checkpoint has `i >= at_least`; returns that checkpoint.
    pub async fn wait_for_checkpoint(&self, id: JobId, at_least: u64, limit: Duration) -> Value {
        wait_for("a checkpoint", limit, || async {
            let job = self.job(id).await;
            job.checkpoint
                .filter(|c| c["i"].as_u64().is_some_and(|i| i >= at_least))
        })
        .await
    }

    pub async fn wait_for_status(&self, id: JobId, status: JobStatus, limit: Duration) -> Job {
        wait_for(&format!("job {id} to be {status}"), limit, || async {
            let job = self.job(id).await;
            (job.status == status).then_some(job)
        })
        .await
    }

    pub fn sqlite_path(&self) -> PathBuf {
        self.dir.path().join("handover.db")
    }
}

static NEXT_NAME: AtomicUsize = AtomicUsize::new(0);

/// A running `handover worker` process.
pub struct WorkerProcess {
    pub child: Child,
    pub name: String,
    pub id: String,
    pub addr: SocketAddr,
    pub log_path: PathBuf,
    pub exit: Option<ExitStatus>,
}

/// Flags a test worker starts with; `overrides` replace or add to them.
fn worker_args(store_url: &str, name: &str, overrides: &[(&str, &str)]) -> Vec<String> {
    let mut options: Vec<(String, String)> = [
        ("--store", store_url),
        ("--listen", "127.0.0.1:0"),
        ("--name", name),
        ("--admin-token", TOKEN),
        ("--concurrency", "2"),
        ("--heartbeat-interval", "200ms"),
        ("--lease-ttl", "1s"),
        ("--poll-interval", "50ms"),
        ("--grace", "20s"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (key, value) in overrides {
        match options.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.to_string(),
            None => options.push((key.to_string(), value.to_string())),
        }
    }
    let mut args = vec!["worker".to_string()];
    for (key, value) in options {
        args.push(key);
        args.push(value);
    }
    args
}

/// A `Command` for the binary with no HANDOVER_*/OTEL_* variables inherited from the test's environment.
pub fn handover_command() -> Command {
    let mut command = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("HANDOVER_") || key.starts_with("OTEL_") {
            command.env_remove(key);
        }
    }
    command.env("RUST_LOG", "info");
    command
}

impl WorkerProcess {
    /// Starts a worker and waits until its row says `running`.
    pub async fn start(store: &TestStore, overrides: &[(&str, &str)]) -> WorkerProcess {
        Self::start_with(store, overrides, &[], &[]).await
    }

    /// Starts `handover worker` configured only by environment variables (as a container would be);
    /// HANDOVER_STORE and HANDOVER_NAME are set by the harness.
    pub async fn start_env_only(store: &TestStore, env: &[(&str, &str)]) -> WorkerProcess {
        let name = format!(
            "w{}-{}",
            std::process::id(),
            NEXT_NAME.fetch_add(1, Ordering::SeqCst)
        );
        let mut env: Vec<(&str, &str)> = env.to_vec();
        env.push(("HANDOVER_STORE", &store.url));
        env.push(("HANDOVER_NAME", &name));
        Self::spawn_and_wait(store, name.clone(), vec!["worker".to_string()], &env).await
    }

    /// Starts a worker with extra leading arguments (global flags) and environment variables.
    pub async fn start_with(
        store: &TestStore,
        overrides: &[(&str, &str)],
        global_args: &[&str],
        env: &[(&str, &str)],
    ) -> WorkerProcess {
        let name = format!(
            "w{}-{}",
            std::process::id(),
            NEXT_NAME.fetch_add(1, Ordering::SeqCst)
        );
        let mut args: Vec<String> = global_args.iter().map(|a| a.to_string()).collect();
        args.extend(worker_args(&store.url, &name, overrides));
        Self::spawn_and_wait(store, name, args, env).await
    }

    async fn spawn_and_wait(
        store: &TestStore,
        name: String,
        args: Vec<String>,
        env: &[(&str, &str)],
    ) -> WorkerProcess {
        let log_path = store.dir.path().join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = handover_command()
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn handover");
        let mut process = WorkerProcess {
            child,
            name: name.clone(),
            id: String::new(),
            addr: "127.0.0.1:0".parse().unwrap(),
            log_path,
            exit: None,
        };
        let started = Instant::now();
        let row = loop {
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!("worker exited early with {status}:\n{}", process.log());
            }
            let workers = store.store.list_workers().await.unwrap_or_default();
            if let Some(row) = workers
                .into_iter()
                .find(|w| w.name == name && w.phase == handover::lifecycle::Phase::Running)
            {
                break row;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "worker did not reach running:\n{}",
                process.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        process.id = row.id;
        process.addr = row.listen_addr.unwrap().parse().unwrap();
        process
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).expect("signal the worker");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits for the process to exit (reaping it) within `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        let status = wait_for("the worker to exit", limit, || {
            let status = self.child.try_wait().unwrap();
            async move { status }
        })
        .await;
        self.exit = Some(status);
        status
    }

    /// GET with the admin token.
    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        reqwest::Client::new()
            .get(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
    }

    pub async fn status(&self) -> Value {
        self.admin_get("/api/status").await.json().await.unwrap()
    }

    /// POST a JSON body with the admin token.
    pub async fn admin_post(&self, path: &str, body: Value) -> reqwest::Response {
        reqwest::Client::new()
            .post(self.url(path))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// SIGTERMs a worker whose jobs cannot stop in time and asserts the forced exit (code 3)
    /// arrived between `earliest` and `latest` after the signal.
    pub async fn sigterm_expecting_forced_exit(&mut self, earliest: Duration, latest: Duration) {
        let signalled = Instant::now();
        self.signal(Signal::SIGTERM);
        let status = self.wait_exit(latest + Duration::from_secs(10)).await;
        let took = signalled.elapsed();
        assert_eq!(
            status.code(),
            Some(3),
            "forced exit code; log:\n{}",
            self.log()
        );
        assert!(
            took >= earliest,
            "forced only after {earliest:?} ({took:?})"
        );
        assert!(took < latest, "exited within {latest:?} ({took:?})");
    }

    /// Asserts that each (method, path) is answered 405, even with the admin token.
    pub async fn assert_methods_not_allowed(&self, routes: &[(&str, &str)]) {
        let client = reqwest::Client::new();
        for (method, path) in routes {
            let response = client
                .request(method.parse().unwrap(), self.url(path))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 405, "{method} {path}");
        }
    }

    /// Scrapes /metrics and returns the value of one sample line (exact name with labels).
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metric_value(&text, sample).unwrap_or_else(|| panic!("no sample {sample} in:\n{text}"))
    }

    /// Waits until `sample` reads `expected`: a counter moves just after the store write the
    /// test saw, not with it.
    pub async fn wait_for_metric(&self, sample: &str, expected: f64) {
        let what = format!("{sample} to reach {expected}");
        wait_for(&what, Duration::from_secs(5), || async {
            (self.metric(sample).await == expected).then_some(())
        })
        .await
    }
}

/// The value of `sample` (e.g. `handover_jobs_rescued_total` or `x{a="b"}`) in a text exposition.
pub fn metric_value(text: &str, sample: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(sample)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if self.exit.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs the binary to completion with the given arguments; returns (exit code, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    let output = handover_command()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run handover");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
