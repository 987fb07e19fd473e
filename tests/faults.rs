//! Faults and hostile conditions lose nothing: a full disk, a corrupt or vanished SQLite file, every
//! catchable signal, out-of-range durations, long PostgreSQL schema names. The disk tests run on a
//! real tmpfs (they need root, as CI has).

mod common;

use common::postgres::PgSchema;
use common::{run_cli, wait_for, DemoSpec, TestStore, WorkerProcess};
use handover::store::JobStatus;
use nix::sys::signal::Signal;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A tmpfs of a few MiB mounted on a temporary directory, unmounted when dropped.
struct TinyDisk {
    mount: tempfile::TempDir,
}

impl TinyDisk {
    fn mount(size: &str) -> TinyDisk {
        let mount = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(mount.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs failed ({status}); these tests need root, as CI runs them"
        );
        TinyDisk { mount }
    }

    fn path(&self) -> &Path {
        self.mount.path()
    }

    /// Writes zeros into a file until the disk is full; returns the file.
    fn fill(&self) -> PathBuf {
        let filler = self.path().join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 4096];
        while file.write_all(&block).is_ok() {}
        filler
    }

    /// A store on this disk, created and migrated.
    async fn store(&self) -> TestStore {
        TestStore::sqlite_in(tempfile::tempdir_in(self.path()).unwrap()).await
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.mount.path())
            .status();
    }
}

async fn readyz(worker: &WorkerProcess) -> u16 {
    reqwest::get(worker.url("/readyz"))
        .await
        .map_or(0, |r| r.status().as_u16())
}

async fn wait_ready(worker: &WorkerProcess, want: u16, what: &str) {
    wait_for(what, Duration::from_secs(20), || async {
        (readyz(worker).await == want).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_full_disk_acknowledges_nothing_and_the_worker_recovers_when_space_returns() {
    let disk = TinyDisk::mount("3m");
    let store = disk.store().await;
    let spec = DemoSpec::timed("full", 0.2, 10_000);
    let mut jobs = Vec::new();
    for _ in 0..2 {
        jobs.push(store.submit("demo", spec.payload()).await);
    }
    let mut worker = WorkerProcess::start(
        &store,
        &[("--heartbeat-interval", "500ms"), ("--lease-ttl", "30s")],
    )
    .await;
    for &id in &jobs {
        store
            .wait_for_checkpoint(id, 1, Duration::from_secs(20))
            .await;
    }

    let filler = disk.fill();
    wait_ready(&worker, 503, "/readyz 503 on a full disk").await;
    assert_eq!(worker.metric("handover_store_up").await, 0.0);
    let refused = worker
        .admin_post("/api/jobs", json!({"kind": "noop", "count": 3}))
        .await;
    assert_eq!(
        refused.status(),
        503,
        "a submit that cannot commit is refused"
    );

    std::fs::remove_file(&filler).unwrap();
    wait_ready(&worker, 200, "/readyz 200 once the disk has room again").await;
    assert_eq!(worker.metric("handover_store_up").await, 1.0);
    let accepted = worker
        .admin_post("/api/jobs", json!({"kind": "noop", "count": 3}))
        .await;
    assert_eq!(accepted.status(), 201);
    let ids: Vec<i64> = accepted.json::<serde_json::Value>().await.unwrap()["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_i64().unwrap())
        .collect();
    // Acknowledged means committed: another connection sees them, and another process can write.
    for &id in &ids {
        assert!(
            store.store.get_job(id).await.unwrap().is_some(),
            "job {id} committed"
        );
    }
    let (code, _, stderr) = run_cli(&["submit", "--store", &store.url, "--kind", "noop"]);
    assert_eq!(code, 0, "another process can write the file: {stderr}");
    assert_eq!(
        store.all_jobs().await.len(),
        2 + 3 + 1,
        "the refused submit left no job"
    );

    worker.signal(Signal::SIGTERM);
    let status = worker.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0), "log:\n{}", worker.log());
    for &id in &jobs {
        let job = store.job(id).await;
        assert_eq!(job.status, JobStatus::Pending, "job {id} handed back");
        assert!(job.checkpoint.is_some(), "job {id} kept its checkpoint");
    }
    assert_eq!(
        store.worker_row(&worker.id).await.phase,
        handover::lifecycle::Phase::Stopped
    );
    assert!(
        store.shutdown_of(&worker.id).await.is_some(),
        "the shutdown record was written"
    );
}

#[tokio::test]
async fn a_deleted_store_file_is_noticed_and_nothing_is_acknowledged_into_it() {
    let disk = TinyDisk::mount("8m");
    let store = disk.store().await;
    let spec = DemoSpec::timed("deleted", 0.2, 10_000);
    let id = store.submit("demo", spec.payload()).await;
    let mut worker = WorkerProcess::start(&store, &[]).await;
    store
        .wait_for_checkpoint(id, 1, Duration::from_secs(20))
        .await;

    std::fs::remove_file(store.sqlite_path()).unwrap();
    wait_ready(&worker, 503, "/readyz 503 once the file is gone").await;
    assert_eq!(worker.metric("handover_store_up").await, 0.0);
    let refused = worker
        .admin_post("/api/jobs", json!({"kind": "noop"}))
        .await;
    assert_eq!(
        refused.status(),
        503,
        "nothing is acknowledged into a deleted file"
    );

    worker.signal(Signal::SIGTERM);
    let status = worker.wait_exit(Duration::from_secs(30)).await;
    assert_ne!(
        status.code(),
        Some(0),
        "a shutdown whose writes were lost does not exit 0; log:\n{}",
        worker.log()
    );
    assert!(
        worker.log().contains("was deleted"),
        "log:\n{}",
        worker.log()
    );
}

#[tokio::test]
async fn a_corrupt_store_file_makes_the_worker_not_ready() {
    let disk = TinyDisk::mount("8m");
    let store = disk.store().await;
    for _ in 0..20 {
        store.submit("noop", json!({})).await;
    }
    // Move every page into the main file, then overwrite the runnable-jobs index with garbage.
    let path = store.sqlite_path();
    let (root, page_size) = {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&pool)
            .await
            .unwrap();
        let root: i64 =
            sqlx::query_scalar("SELECT rootpage FROM sqlite_master WHERE name = 'jobs_runnable'")
                .fetch_one(&pool)
                .await
                .unwrap();
        let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        (root, page_size)
    };
    {
        use std::io::{Seek, SeekFrom};
        let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.seek(SeekFrom::Start(((root - 1) * page_size) as u64))
            .unwrap();
        file.write_all(&vec![0xA5u8; page_size as usize]).unwrap();
    }

    let mut worker = WorkerProcess::start(&store, &[]).await;
    wait_ready(&worker, 503, "/readyz 503 on a corrupt file").await;
    assert_eq!(worker.metric("handover_store_up").await, 0.0);
    // Heartbeats still succeed (the workers table is intact): readiness must not come back.
    let beats_after = store.worker_row(&worker.id).await.heartbeat_at;
    wait_for("three more heartbeats", Duration::from_secs(10), || async {
        let row = store.worker_row(&worker.id).await;
        (row.heartbeat_at - beats_after >= chrono::Duration::milliseconds(600)).then_some(())
    })
    .await;
    assert_eq!(
        readyz(&worker).await,
        503,
        "a corrupt store stays not ready"
    );
    assert!(worker.log().contains("malformed"), "log:\n{}", worker.log());

    worker.signal(Signal::SIGTERM);
    let status = worker.wait_exit(Duration::from_secs(20)).await;
    let recorded = store.shutdown_of(&worker.id).await.is_some();
    assert!(
        recorded || status.code() != Some(0),
        "exit 0 only with the shutdown record written; log:\n{}",
        worker.log()
    );
}

#[tokio::test]
async fn sighup_drains_like_sigterm_and_is_recorded_as_such() {
    let store = TestStore::new().await;
    let spec = DemoSpec::timed("hup", 0.1, 10_000);
    let id = store.submit("demo", spec.payload()).await;
    let mut worker = WorkerProcess::start(&store, &[]).await;
    store
        .wait_for_checkpoint(id, 1, Duration::from_secs(20))
        .await;
    assert_eq!(
        worker
            .metric(r#"handover_shutdowns_total{mode="handoff",outcome="clean",trigger="sighup"}"#)
            .await,
        0.0,
        "the label value exists from the first scrape"
    );
    worker.signal(Signal::SIGHUP);
    let status = worker.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0), "log:\n{}", worker.log());
    let job = store.job(id).await;
    assert_eq!(job.status, JobStatus::Pending);
    assert!(job.checkpoint.is_some());
    let record = store
        .shutdown_of(&worker.id)
        .await
        .expect("shutdown record");
    assert_eq!(record.trigger.as_str(), "sighup");
}

#[tokio::test]
async fn sigusr1_sigusr2_and_sigalrm_are_logged_and_ignored() {
    let store = TestStore::new().await;
    let spec = DemoSpec::timed("usr", 0.1, 10_000);
    let id = store.submit("demo", spec.payload()).await;
    let mut worker = WorkerProcess::start(&store, &[]).await;
    store
        .wait_for_checkpoint(id, 1, Duration::from_secs(20))
        .await;
    for signal in [Signal::SIGUSR1, Signal::SIGUSR2, Signal::SIGALRM] {
        worker.signal(signal);
        let name = signal.as_str();
        wait_for(
            &format!("{name} logged"),
            Duration::from_secs(10),
            || async {
                worker
                    .log()
                    .lines()
                    .any(|l| l.contains("ignored") && l.contains(name))
                    .then_some(())
            },
        )
        .await;
    }
    assert!(worker.child.try_wait().unwrap().is_none(), "still running");
    assert_eq!(readyz(&worker).await, 200, "still ready");
    worker.signal(Signal::SIGTERM);
    assert_eq!(
        worker.wait_exit(Duration::from_secs(20)).await.code(),
        Some(0)
    );
    assert_eq!(store.job(id).await.status, JobStatus::Pending);
}

#[tokio::test]
async fn a_second_signal_ends_the_final_scrape_wait_at_once() {
    let store = TestStore::new().await;
    let mut worker = WorkerProcess::start(&store, &[("--final-scrape-wait", "10m")]).await;
    worker.signal(Signal::SIGTERM);
    wait_for(
        "the worker row stopped",
        Duration::from_secs(20),
        || async {
            (store.worker_row(&worker.id).await.phase == handover::lifecycle::Phase::Stopped)
                .then_some(())
        },
    )
    .await;
    let signalled = Instant::now();
    worker.signal(Signal::SIGTERM);
    let status = worker.wait_exit(Duration::from_secs(10)).await;
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "exited {:?} after the second signal",
        signalled.elapsed()
    );
    assert_eq!(status.code(), Some(0), "log:\n{}", worker.log());
}

#[test]
fn duration_flags_above_their_ceiling_or_at_zero_are_bad_command_lines() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("d.db").display());
    for (flags, says) in [
        (vec!["--grace", "300000y"], "--grace"),
        (vec!["--grace", "0s"], "longer than 0s"),
        (
            vec![
                "--heartbeat-interval",
                "500000000000y",
                "--lease-ttl",
                "500000000000y",
            ],
            "heartbeat",
        ),
        (vec!["--lease-ttl", "25h"], "at most"),
        (vec!["--final-scrape-wait", "2h"], "at most"),
        (
            vec!["--heartbeat-interval", "5s", "--lease-ttl", "6s"],
            "at most half",
        ),
        (vec!["--admin-token", "                "], "spaces"),
        (vec!["--name", "evil\u{1b}]0;name"], "--name"),
    ] {
        let mut args = vec!["worker", "--store", &url, "--listen", "127.0.0.1:0"];
        args.extend(flags.iter().copied());
        let (code, _, stderr) = run_cli(&args);
        assert_eq!(code, 2, "{flags:?} exits 2: {stderr}");
        assert!(stderr.contains(says), "{flags:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[tokio::test]
async fn a_lease_ttl_alone_picks_a_heartbeat_that_fits_it() {
    let store = TestStore::new().await;
    let mut worker = common::WorkerProcess::start_env_only(
        &store,
        &[
            ("HANDOVER_LISTEN", "127.0.0.1:0"),
            ("HANDOVER_ADMIN_TOKEN", common::TOKEN),
            ("HANDOVER_LEASE_TTL", "2s"),
        ],
    )
    .await;
    worker.signal(Signal::SIGTERM);
    assert_eq!(
        worker.wait_exit(Duration::from_secs(20)).await.code(),
        Some(0)
    );
}

#[tokio::test]
async fn a_long_postgres_schema_name_still_gets_wake_ups() {
    let schema = format!("t_{}", "x".repeat(54)); // handover_ + 56 bytes: past PostgreSQL's 63
    let pg = PgSchema::named(format!(
        "{schema}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..4]
    ))
    .await;
    let store = TestStore {
        dir: tempfile::tempdir().unwrap(),
        url: pg.url.clone(),
        store: pg.store(),
        schema: Some(pg),
    };
    // A long poll interval: a job picked up quickly was woken by NOTIFY, not found by a poll.
    let mut worker = WorkerProcess::start(&store, &[("--poll-interval", "30s")]).await;
    let (code, stdout, stderr) = run_cli(&["submit", "--store", &store.url, "--kind", "noop"]);
    assert_eq!(code, 0, "submit on a long schema name: {stderr}");
    let id: i64 = stdout.trim().parse().unwrap();
    store
        .wait_for_status(id, JobStatus::Completed, Duration::from_secs(10))
        .await;
    worker.signal(Signal::SIGTERM);
    assert_eq!(
        worker.wait_exit(Duration::from_secs(20)).await.code(),
        Some(0)
    );
}
