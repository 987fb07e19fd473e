//! The command line with good and bad input: one clear line and a non-zero exit for every mistake,
//! never a panic, and nothing written when input is rejected.

mod common;

use common::*;
use handover::store::JobStatus;

/// Asserts a failed run: the exit code, one stderr line containing `needle`, no panic.
fn assert_refused(args: &[&str], code: i32, needle: &str) {
    let (got, stdout, stderr) = run_cli(args);
    assert_eq!(got, code, "{args:?}: stdout {stdout:?} stderr {stderr:?}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{args:?}: one line of error, got {stderr:?}"
    );
    assert!(lines[0].starts_with("error: "), "{args:?}: {stderr:?}");
    assert!(
        lines[0].contains(needle),
        "{args:?}: expected {needle:?} in {stderr:?}"
    );
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"));
}

#[test]
fn bad_flags_and_values_exit_2_with_one_line() {
    assert_refused(&["frobnicate"], 2, "unrecognized subcommand");
    assert_refused(&["worker", "--no-such-flag"], 2, "--no-such-flag");
    assert_refused(&["worker", "--grace", "soon"], 2, "such as 500ms");
    assert_refused(&["worker", "--grace", "5"], 2, "such as 500ms");
    assert_refused(&["worker", "--concurrency", "0"], 2, "--concurrency");
    assert_refused(
        &["worker", "--store", "mysql://db/x"],
        2,
        "unsupported store scheme",
    );
    assert_refused(&["worker", "--store", "handover.db"], 2, "not a store URL");
    assert_refused(&["jobs", "--status", "sleeping"], 2, "unknown jobstatus");
    assert_refused(&["drain", "w1", "--mode", "gently"], 2, "handoff, finish");
    assert_refused(&["submit"], 2, "--kind");
}

#[test]
fn environment_variables_are_read_and_checked_like_flags() {
    let (code, _, stderr) = {
        let output = handover_command()
            .args(["worker"])
            .env("HANDOVER_GRACE", "later")
            .output()
            .unwrap();
        (
            output.status.code().unwrap(),
            String::new(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    assert_eq!(code, 2);
    assert!(stderr.contains("such as 500ms"), "{stderr}");
}

#[test]
fn an_unwritable_store_path_is_one_clear_line() {
    assert_refused(
        &[
            "worker",
            "--store",
            "sqlite:///proc/no-such-dir/h.db",
            "--listen",
            "127.0.0.1:0",
        ],
        1,
        "cannot open SQLite store /proc/no-such-dir/h.db",
    );
    assert_refused(
        &["jobs", "--store", "sqlite:///proc/no-such-dir/h.db"],
        1,
        "cannot open SQLite store",
    );
}

#[tokio::test]
async fn unsafe_worker_timings_are_refused() {
    let store = TestStore::new().await;
    assert_refused(
        &[
            "worker",
            "--store",
            &store.url,
            "--heartbeat-interval",
            "10s",
            "--lease-ttl",
            "5s",
        ],
        2,
        "must be at most half of --lease-ttl",
    );
    assert_refused(
        &[
            "worker",
            "--store",
            &store.url,
            "--grace",
            "5s",
            "--drain-delay",
            "5s",
        ],
        2,
        "--drain-delay (5s) must be shorter than --grace (5s) less the forced path's reserve (500ms)",
    );
    assert_refused(
        &["worker", "--store", &store.url, "--admin-token", "short"],
        2,
        "at least 16 characters",
    );
    assert_refused(
        &[
            "worker",
            "--store",
            &store.url,
            "--listen",
            "not-an-address",
        ],
        1,
        "cannot listen on not-an-address",
    );
}

#[tokio::test]
async fn submit_validates_every_payload_before_writing_anything() {
    let store = TestStore::new().await;
    let file = store.dir.path().join("jobs.jsonl");
    let file_arg = file.to_str().unwrap();
    // (what follows `submit --store URL --kind`, the jobs file's content if any, the error)
    let refusals: [(&[&str], Option<&str>, &str); 8] = [
        (
            &["demo", "--payload", "{seed"],
            None,
            "--payload is not valid JSON",
        ),
        (
            &["demo", "--payload", r#"{"seed": 1, "iterations": 5}"#],
            None,
            "invalid demo payload",
        ),
        (&["demo"], None, "missing field `seed`"),
        (&["bad kind!"], None, "invalid job kind"),
        (&["noop", "--", "ls"], None, "only for --kind exec"),
        (
            &["demo", "--from-file", file_arg],
            Some("{\"seed\":\"a\",\"iterations\":5}\n\n{\"seed\":\"b\",\"iterations\":\"many\"}\n"),
            "job 2 of 2: invalid demo payload",
        ),
        (
            &["demo", "--from-file", file_arg],
            Some("{\"seed\":\"a\",\"iterations\":5}\nnot json\n"),
            "line 2 of",
        ),
        (
            &["demo", "--from-file", "/no/such/file"],
            None,
            "cannot read /no/such/file",
        ),
    ];
    for (rest, file_content, message) in refusals {
        if let Some(content) = file_content {
            std::fs::write(&file, content).unwrap();
        }
        let mut args = vec!["submit", "--store", store.url.as_str(), "--kind"];
        args.extend_from_slice(rest);
        assert_refused(&args, 1, message);
    }
    assert!(
        store.store.count_jobs().await.unwrap().is_empty(),
        "a rejected submission writes nothing"
    );
}

#[tokio::test]
async fn submit_count_and_from_file_print_one_id_per_job() {
    let store = TestStore::new().await;
    let (code, stdout, stderr) = run_cli(&[
        "submit", "--store", &store.url, "--kind", "noop", "--count", "25000",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let ids: Vec<i64> = stdout.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(ids.len(), 25_000);
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1));

    let file = store.dir.path().join("jobs.jsonl");
    std::fs::write(
        &file,
        "{\"seed\":\"a\",\"iterations\":5}\n{\"seed\":\"b\",\"iterations\":6,\"checkpoint_every\":2}\n",
    )
    .unwrap();
    let (code, stdout, _) = run_cli(&[
        "submit",
        "--store",
        &store.url,
        "--kind",
        "demo",
        "--from-file",
        file.to_str().unwrap(),
        "--max-attempts",
        "3",
    ]);
    assert_eq!(code, 0);
    let ids: Vec<i64> = stdout.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(ids.len(), 2);
    let job = store.job(ids[1]).await;
    assert_eq!(job.payload["checkpoint_every"], 2);
    assert_eq!(job.max_attempts, 3);
    assert_eq!(job.status, JobStatus::Pending);
}

#[tokio::test]
async fn jobs_and_workers_list_as_tables_and_json() {
    let store = TestStore::new().await;
    store.submit("noop", serde_json::json!({})).await;
    let (code, stdout, _) = run_cli(&["jobs", "--store", &store.url]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("ID"), "{stdout}");
    assert!(stdout.contains("noop") && stdout.contains("pending"));

    let (code, stdout, _) = run_cli(&[
        "jobs", "--store", &store.url, "--json", "--status", "pending",
    ]);
    assert_eq!(code, 0);
    let jobs: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let fields: Vec<&str> = jobs[0]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    for field in [
        "id",
        "kind",
        "payload",
        "status",
        "priority",
        "attempts",
        "max_attempts",
        "run_after",
        "owner",
        "lease_epoch",
        "lease_expires_at",
        "checkpoint",
        "result",
        "error",
        "created_at",
        "updated_at",
    ] {
        assert!(fields.contains(&field), "--json has the SPEC field {field}");
    }
    let (code, stdout, _) = run_cli(&["jobs", "--store", &store.url, "--json", "--status", "dead"]);
    assert_eq!((code, stdout.trim()), (0, "[]"));

    let worker = WorkerProcess::start(&store, &[]).await;
    let (code, stdout, _) = run_cli(&["workers", "--store", &store.url, "--json"]);
    assert_eq!(code, 0);
    let workers: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(workers[0]["name"], worker.name.as_str());
    assert_eq!(workers[0]["phase"], "running");
    let (code, stdout, _) = run_cli(&["workers", "--store", &store.url]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains(&worker.name) && stdout.contains("running"),
        "{stdout}"
    );
}

#[tokio::test]
async fn migrate_and_drain_report_problems_clearly() {
    let store = TestStore::new().await;
    let (code, stdout, _) = run_cli(&["migrate", "--store", &store.url]);
    assert_eq!(code, 0);
    assert!(stdout.contains("migrated"));
    assert_refused(
        &["drain", "--store", &store.url, "nobody"],
        1,
        "no worker with id or name \"nobody\"",
    );
}

#[tokio::test]
async fn drain_reasons_and_names_obey_the_http_limits() {
    let store = TestStore::new().await;
    let mut worker = WorkerProcess::start(&store, &[]).await;
    let long_reason = "r".repeat(501);
    let long_name = "n".repeat(201);
    let name = worker.name.clone();
    let name = name.as_str();
    for (worker_arg, reason, needle) in [
        (
            name,
            long_reason.as_str(),
            "reason is longer than 500 bytes",
        ),
        (
            name,
            "two\nlines",
            "reason contains a control character (U+000A)",
        ),
        (
            name,
            "\u{1b}[2Jcleared",
            "reason contains a control character (U+001B)",
        ),
        (
            "w\u{1}",
            "fine",
            "worker contains a control character (U+0001)",
        ),
        (
            long_name.as_str(),
            "fine",
            "worker is longer than 200 bytes",
        ),
    ] {
        assert_refused(
            &[
                "drain", "--store", &store.url, worker_arg, "--reason", reason,
            ],
            2,
            needle,
        );
    }
    let row = store.worker_row(&worker.id).await;
    assert!(row.drain_request.is_none(), "nothing was written: {row:?}");

    // The longest reason HTTP takes is taken here too.
    let longest = "é".repeat(250);
    let (code, _, stderr) = run_cli(&["drain", "--store", &store.url, name, "--reason", &longest]);
    assert_eq!(code, 0, "{stderr}");
    // The idle worker takes it, drains and exits at once; its shutdown record keeps the reason.
    let exit = worker.wait_exit(std::time::Duration::from_secs(10)).await;
    assert_eq!(exit.code(), Some(0), "{}", worker.log());
    let record = store
        .shutdown_of(&worker.id)
        .await
        .expect("the drain is recorded");
    assert_eq!(record.reason.as_deref(), Some(longest.as_str()), "intact");
}

#[tokio::test]
async fn submit_refuses_control_characters_in_every_input() {
    let store = TestStore::new().await;
    let file = store.dir.path().join("jobs.jsonl");
    let file_arg = file.to_str().unwrap();
    // (what follows `submit --store URL --kind`, the jobs file's content if any, the error)
    let refusals: [(&[&str], Option<&str>, &str); 5] = [
        (
            &["exec", "--", "printf", "\u{1b}[31mred"],
            None,
            "payload.cmd[1] contains a control character (U+001B)",
        ),
        (
            &["noop", "--payload", r#"{"note": "a\u0000b"}"#],
            None,
            "payload.note contains a control character (U+0000)",
        ),
        (
            &[
                "exec",
                "--payload",
                r#"{"env": {"K\u0001": "v"}}"#,
                "--",
                "true",
            ],
            None,
            "a key in payload.env contains a control character (U+0001)",
        ),
        (
            &["demo", "--from-file", file_arg],
            Some("{\"seed\":\"a\",\"iterations\":5}\n{\"seed\":\"b\\u0007\",\"iterations\":5}\n"),
            "job 2 of 2: payload.seed contains a control character (U+0007)",
        ),
        (&["no\u{1}op"], None, "invalid job kind"),
    ];
    for (rest, file_content, message) in refusals {
        if let Some(content) = file_content {
            std::fs::write(&file, content).unwrap();
        }
        let mut args = vec!["submit", "--store", store.url.as_str(), "--kind"];
        args.extend_from_slice(rest);
        let code = if message == "invalid job kind" { 1 } else { 2 };
        assert_refused(&args, code, message);
    }
    assert!(
        store.store.count_jobs().await.unwrap().is_empty(),
        "a rejected submission writes nothing"
    );
    // Tabs and newlines are fine inside a payload.
    let (code, stdout, stderr) = run_cli(&[
        "submit",
        "--store",
        &store.url,
        "--kind",
        "exec",
        "--",
        "sh",
        "-c",
        "echo a\n\techo b",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let job = store.job(stdout.trim().parse().unwrap()).await;
    assert_eq!(job.payload["cmd"][2], "echo a\n\techo b");
}

#[tokio::test]
async fn listings_escape_control_characters_from_the_store() {
    use handover::store::WorkerRegistration;
    use std::time::Duration;
    let store = TestStore::new().await;
    let hostile = "boom\u{1b}[2J\u{1b}]0;pwned\u{7}\nsecond line\r\u{9b}";
    let id = store
        .submit("exec", serde_json::json!({"cmd": ["x"]}))
        .await;
    let claimed = store
        .store
        .claim("owner-1", &["exec".to_string()], 1, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(claimed[0].lease.job_id, id);
    store
        .store
        .fail(&claimed[0].lease, hostile, Duration::ZERO)
        .await
        .unwrap();
    store
        .store
        .register_worker(&WorkerRegistration {
            id: "worker-id-1".into(),
            name: "evil\u{1b}[31mname\nx".into(),
            version: "0.0.0".into(),
            listen_addr: Some("127.0.0.1:1\u{7}".into()),
            concurrency: 1,
            lease_ttl: Duration::from_secs(60),
            kinds: Vec::new(),
        })
        .await
        .unwrap();

    for command in ["jobs", "workers"] {
        let (code, stdout, stderr) = run_cli(&[command, "--store", &store.url]);
        assert_eq!(code, 0, "{stderr}");
        assert!(
            !stdout.chars().any(|c| c.is_control() && c != '\n'),
            "{command}: no control character reaches the terminal: {stdout:?}"
        );
        assert_eq!(
            stdout.lines().count(),
            2,
            "{command}: a header and one line per row: {stdout:?}"
        );
    }
    let (_, jobs, _) = run_cli(&["jobs", "--store", &store.url]);
    assert!(
        jobs.contains("boom\\e[2J\\e]0;pwned\\x07\\nsecond"),
        "{jobs}"
    );
    let (_, workers, _) = run_cli(&["workers", "--store", &store.url]);
    assert!(workers.contains("evil\\e[31mname\\nx"), "{workers}");
    assert!(workers.contains("127.0.0.1:1\\x07"), "{workers}");

    // --json stays valid JSON and keeps the text exactly.
    let (_, json, _) = run_cli(&["jobs", "--store", &store.url, "--json"]);
    let jobs: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(jobs[0]["error"], hostile);
    let (_, json, _) = run_cli(&["workers", "--store", &store.url, "--json"]);
    let workers: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(workers[0]["name"], "evil\u{1b}[31mname\nx");
}
