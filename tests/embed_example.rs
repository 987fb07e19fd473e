//! The embedding example (`examples/embed.rs`) built and run as a user would: on a real SQLite file,
//! a SIGTERM while its `wordcount` job runs hands the job back with a checkpoint and exits 0; a
//! second run resumes from that checkpoint and completes the job with the right count.

mod common;

use common::{wait_for, TestStore};
use handover::model::{JobEventKind, JobStatus};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// Builds the example with the profile and target directory this test was built with, and returns
/// its path (`<target>/<profile>/examples/embed`, next to this test's `deps/` directory).
fn example_binary() -> PathBuf {
    let test_exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = test_exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in <target>/<profile>/deps");
    let target_dir = profile_dir.parent().expect("a target directory");
    let profile = profile_dir
        .file_name()
        .and_then(|name| name.to_str())
        .expect("a profile directory name");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
    let mut build = Command::new(cargo);
    // Not what cargo set for this test process: build scripts (ring's) watch some of these, and
    // inheriting them would make this build and the next `cargo test` rebuild each other's deps.
    for (key, _) in std::env::vars() {
        let set_for_tests = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_BIN_EXE_",
            "CARGO_FEATURE_",
        ]
        .iter()
        .any(|prefix| key.starts_with(prefix))
            || [
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
                "OUT_DIR",
            ]
            .contains(&key.as_str());
        if set_for_tests {
            build.env_remove(key);
        }
    }
    build
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--quiet", "--example", "embed", "--target-dir"])
        .arg(target_dir);
    match profile {
        "debug" => {}
        "release" => {
            build.arg("--release");
        }
        other => {
            build.args(["--profile", other]);
        }
    }
    let status = build.status().expect("run cargo build --example embed");
    assert!(status.success(), "cargo build --example embed: {status}");
    let binary = profile_dir.join("examples").join("embed");
    assert!(
        binary.is_file(),
        "no example binary at {}",
        binary.display()
    );
    binary
}

/// One run of the example, its stdout and stderr in files of the store's directory.
struct Run {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Run {
    fn start(binary: &Path, store: &TestStore, name: &str) -> Run {
        let stdout = store.dir.path().join(format!("{name}.out"));
        let stderr = store.dir.path().join(format!("{name}.err"));
        let mut command = Command::new(binary);
        for (key, _) in std::env::vars() {
            if key.starts_with("OTEL_") {
                command.env_remove(key);
            }
        }
        let child = command
            .args(["--store", &store.url, "--listen", "127.0.0.1:0"])
            // 41 lines at 150 ms: about 6 s of work, a checkpoint every 5 lines (0.75 s).
            .args(["--pause-ms", "150"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start the example");
        Run {
            child,
            stdout,
            stderr,
        }
    }

    fn output(&self) -> String {
        format!(
            "--- stdout\n{}\n--- stderr\n{}",
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("the example exited early with {status}:\n{}", self.output());
        }
    }

    async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let child = &mut self.child;
        let output = (self.stdout.clone(), self.stderr.clone());
        let status = wait_for(
            &format!("the example to exit (output in {output:?})"),
            limit,
            || {
                let status = child.try_wait().unwrap();
                async move { status }
            },
        )
        .await;
        status
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Words in the first `lines` lines of `text`, counted as the handler counts them.
fn words_in(text: &str, lines: usize) -> u64 {
    text.lines()
        .take(lines)
        .map(|line| line.split_whitespace().count() as u64)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embed_example_hands_its_job_back_on_sigterm_and_resumes_it_to_completion() {
    let binary = example_binary();
    let store = TestStore::new().await;

    // First run: it submits its job; once a checkpoint is in the store, SIGTERM.
    let mut first = Run::start(&binary, &store, "first");
    let job = wait_for(
        "the example's job to save a checkpoint",
        Duration::from_secs(30),
        || {
            first.assert_running();
            let store = &store;
            async move {
                let jobs = store.all_jobs().await;
                jobs.into_iter().find(|job| {
                    job.kind == "wordcount"
                        && job.status == JobStatus::Running
                        && job.checkpoint.is_some()
                })
            }
        },
    )
    .await;
    kill(Pid::from_raw(first.child.id() as i32), Signal::SIGTERM).unwrap();
    let status = first.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{}", first.output());

    // Handed back: pending, no owner, with a checkpoint part-way that is exact for its line.
    let released = store.job(job.id).await;
    let text = released.payload["text"].as_str().unwrap().to_string();
    let total_lines = text.lines().count();
    assert_eq!(released.status, JobStatus::Pending, "{}", first.output());
    assert_eq!(released.owner, None);
    assert_eq!(released.result, None);
    let checkpoint = released.checkpoint.clone().expect("a checkpoint");
    let line = checkpoint["line"].as_u64().expect("checkpoint.line") as usize;
    assert!(
        0 < line && line < total_lines,
        "stopped part-way, at line {line} of {total_lines}"
    );
    assert_eq!(
        checkpoint,
        json!({"line": line, "words": words_in(&text, line)})
    );
    assert!(
        first
            .stdout()
            .contains(&format!("stopping at line {line} ")),
        "{}",
        first.output()
    );
    let (events, _) = store.store.job_history(job.id).await.unwrap();
    let release = events
        .iter()
        .find(|e| e.event == JobEventKind::Released)
        .expect("a released event");
    assert_eq!(
        release.detail.as_ref().map(|d| d["reason"].clone()),
        Some(Value::from("shutdown"))
    );

    // Second run: it finds the job, resumes at the checkpoint, completes it, and drains itself.
    let mut second = Run::start(&binary, &store, "second");
    let status = second.wait_exit(Duration::from_secs(60)).await;
    assert_eq!(status.code(), Some(0), "{}", second.output());
    let out = second.stdout();
    assert!(
        out.contains(&format!(
            "job {}: resuming from checkpoint at line {line} of {total_lines}",
            job.id
        )),
        "{}",
        second.output()
    );
    assert!(
        !out.contains("submitted"),
        "no second job: {}",
        second.output()
    );
    let done = store.job(job.id).await;
    assert_eq!(done.status, JobStatus::Completed);
    assert_eq!(
        done.result,
        Some(json!({"lines": total_lines, "words": words_in(&text, total_lines)}))
    );
    assert_eq!(store.all_jobs().await.len(), 1, "one job in all");
    let completions = store.store.completion_counts().await.unwrap();
    assert_eq!(completions, vec![(job.id, 1)], "completed exactly once");
}
