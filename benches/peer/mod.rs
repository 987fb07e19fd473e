//! The peer, graphile-worker 0.17.3, run by `benches/peer/graphile.mjs` on the same PostgreSQL:
//! installed into `target/peer` by `benches/peer/install.sh` (never committed).

use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Installs the peer if needed; returns its node_modules directory.
pub fn install() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("bash")
        .arg(root.join("benches/peer/install.sh"))
        .output()
        .expect("run benches/peer/install.sh (needs node and npm)");
    assert!(
        output.status.success(),
        "installing graphile-worker failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .last()
        .expect("install.sh prints the node_modules path")
        .to_string()
}

/// Runs the driver with `args` after the common ones; returns its one JSON line.
pub fn run(modules: &str, connection: &str, args: &[&str]) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("node")
        .arg(root.join("benches/peer/graphile.mjs"))
        .args(["--module-dir", modules, "--connection", connection])
        .args(args)
        .output()
        .expect("run node");
    assert!(
        output.status.success(),
        "graphile-worker run {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|err| panic!("driver printed no JSON ({err}):\n{stdout}"))
}

/// No-op jobs per second at `concurrency`, one process.
pub fn throughput(modules: &str, connection: &str, jobs: usize, concurrency: u32) -> f64 {
    let jobs = jobs.to_string();
    let concurrency = concurrency.to_string();
    let answer = run(
        modules,
        connection,
        &[
            "--mode",
            "throughput",
            "--jobs",
            &jobs,
            "--concurrency",
            &concurrency,
        ],
    );
    answer["jobs_per_sec"].as_f64().expect("jobs_per_sec")
}

/// Submit → start latency: (p50, p99) in milliseconds.
pub fn latency(modules: &str, connection: &str, samples: usize) -> (f64, f64) {
    let samples = samples.to_string();
    let answer = run(
        modules,
        connection,
        &["--mode", "latency", "--samples", &samples],
    );
    (
        answer["p50_ms"].as_f64().expect("p50_ms"),
        answer["p99_ms"].as_f64().expect("p99_ms"),
    )
}
