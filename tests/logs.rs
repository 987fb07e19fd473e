//! Log lines fit files and journald: the real binary, stderr to a file, drained by a real SIGTERM.
//! Human lines carry no ANSI escapes (colour only at a terminal, and never with `NO_COLOR`), stay
//! short (the shutdown's identifying fields are printed once, at its start), and JSON lines keep
//! their fields.

mod common;

use common::{DemoSpec, TestStore, WorkerProcess, BIN};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The longest human line allowed. The longest lines are the worker's start line (its id, name,
/// address, store URL — here a temp-dir SQLite path — and kinds: about 220 characters) and the
/// shutdown's first line (its ids and the drain's fields: about 190). Before human lines were
/// shortened, every line of a shutdown repeated the shutdown span's fields (and the phase span's)
/// and measured 270-370 characters without colour, 500-670 with it; nothing in the format grows
/// with span nesting any more, so a line past this bound means fields are being repeated again.
const MAX_HUMAN_LINE: usize = 240;

/// Runs a worker with a demo job to its first checkpoint, drains it with SIGTERM, and returns
/// the worker (exited 0) with its log.
async fn drained_worker(store: &TestStore, global_args: &[&str]) -> (WorkerProcess, Vec<u8>) {
    let spec = DemoSpec::timed("logs", 0.1, 200);
    let job = store.submit("demo", spec.payload()).await;
    let mut worker = WorkerProcess::start_with(store, &[], global_args, &[]).await;
    store
        .wait_for_checkpoint(job, 1, Duration::from_secs(20))
        .await;
    worker.signal(Signal::SIGTERM);
    let status = worker.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0), "{}", worker.log());
    let log = std::fs::read(&worker.log_path).unwrap();
    (worker, log)
}

#[tokio::test]
async fn human_lines_in_a_file_are_plain_short_and_name_the_shutdown_once() {
    let store = TestStore::new().await;
    let (worker, log) = drained_worker(&store, &[]).await;
    let text = String::from_utf8(log).expect("UTF-8 log");
    assert!(
        !text.contains('\x1b'),
        "ANSI escapes in a log file:\n{text}"
    );
    for line in text.lines() {
        assert!(
            line.chars().count() <= MAX_HUMAN_LINE,
            "a {}-character line:\n{line}",
            line.chars().count()
        );
    }

    // The shutdown's ids, once, on its first line; every phase after it on a short line.
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.contains("drain started"))
        .unwrap_or_else(|| panic!("no drain start:\n{text}"));
    let first = lines[start];
    assert!(
        first.contains(&format!("worker.id={}", worker.id)),
        "{first}"
    );
    assert!(
        first.contains(&format!("worker.name={}", worker.name)),
        "{first}"
    );
    assert!(first.contains("trigger=sigterm"), "{first}");
    let after = &lines[start + 1..];
    assert!(
        after.iter().all(|l| !l.contains("worker.id=")),
        "the shutdown's ids repeated:\n{text}"
    );
    for phase in ["draining", "checkpointing", "releasing", "deregistering"] {
        let finished = format!("phase finished phase={phase} ");
        assert!(
            after.iter().any(|l| l.contains(&finished)),
            "no line for {phase}:\n{text}"
        );
    }
}

/// The keys of the first JSON line whose message is `message`, and of its `span`.
fn keys_of(lines: &[Value], message: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let line = lines
        .iter()
        .find(|l| l["message"] == message)
        .unwrap_or_else(|| panic!("no {message:?} line"));
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect();
    (keys(line), line.get("span").map(keys).unwrap_or_default())
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

#[tokio::test]
async fn json_lines_are_unchanged() {
    let store = TestStore::new().await;
    let (_worker, log) = drained_worker(&store, &["--log-format", "json"]).await;
    assert!(!log.contains(&0x1b), "ANSI escapes in JSON lines");
    let text = String::from_utf8(log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    // The fields each line had before human lines were shortened: the span's in full on each.
    let shutdown_span = set(&[
        "name",
        "worker.id",
        "worker.name",
        "trigger",
        "mode",
        "reason",
        "requested_by",
    ]);
    assert_eq!(
        keys_of(&lines, "drain started"),
        (
            set(&[
                "timestamp",
                "level",
                "message",
                "target",
                "span",
                "trigger",
                "mode",
                "reason",
                "requested_by",
                "grace",
            ]),
            shutdown_span
        )
    );
    assert_eq!(
        keys_of(&lines, "phase finished"),
        (
            set(&[
                "timestamp",
                "level",
                "message",
                "target",
                "span",
                "phase",
                "duration_ms",
            ]),
            set(&["name", "otel.name", "phase", "trigger", "duration_ms"])
        )
    );
    let phases = lines
        .iter()
        .filter(|l| l["message"] == "phase finished")
        .count();
    assert_eq!(phases, 4, "{text}");
}

/// Runs `handover submit` of a kind with no built-in handler (it logs one warning) with stderr on
/// a pseudo-terminal (util-linux `script`); returns what the terminal showed.
fn at_a_terminal(no_color: Option<&str>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("h.db").display());
    let command =
        format!("{BIN} submit --store {store} --kind custom --allow-unknown-kind --payload '{{}}'");
    let mut script = Command::new("script");
    script
        .args(["-qec", &command, "/dev/null"])
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null());
    if let Some(value) = no_color {
        script.env("NO_COLOR", value);
    }
    let output = script.output().expect("util-linux script runs");
    assert!(output.status.success(), "{output:?}");
    let shown = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(shown.contains("no built-in handler"), "{shown}");
    shown
}

#[test]
fn colour_only_at_a_terminal_and_never_with_no_color() {
    assert!(
        at_a_terminal(None).contains('\x1b'),
        "no colour at a terminal"
    );
    // no-color.org: an empty NO_COLOR is as if unset.
    assert!(at_a_terminal(Some("")).contains('\x1b'));
    assert!(!at_a_terminal(Some("1")).contains('\x1b'));
}
