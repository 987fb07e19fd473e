//! The command line of SPEC §5. Every flag also reads `HANDOVER_<FLAG>`; durations are parsed here, once.

use crate::model::{JobStatus, Mode};
use crate::store::StoreUrl;
use crate::telemetry::tracing::LogFormat;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_STORE: &str = "sqlite://handover.db";

#[derive(Debug, Parser)]
#[command(
    name = "handover",
    version,
    about = "A job worker whose shutdown is safe, fast and visible.",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log format: human-readable text or one JSON object per line.
    #[arg(
        long,
        global = true,
        env = "HANDOVER_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a worker: claim jobs, run them, drain on SIGTERM/SIGINT/HTTP/remote request.
    Worker(WorkerArgs),
    /// Run a worker on an embedded store with a stream of sample jobs and the admin UI.
    Demo(DemoArgs),
    /// Submit jobs; prints the new job ids, one a line.
    Submit(SubmitArgs),
    /// List jobs.
    Jobs(JobsArgs),
    /// List workers.
    Workers(WorkersArgs),
    /// Ask a worker, through the store, to drain.
    Drain(DrainArgs),
    /// Cancel jobs: pending and failed ones at once; running ones are stopped by their worker.
    Cancel(CancelArgs),
    /// Send dead, failed or cancelled jobs back to pending with their attempts reset.
    Retry(RetryArgs),
    /// Apply schema migrations to the store.
    Migrate(StoreArgs),
    /// Delete finished rows older than their retention, once (what every worker does hourly).
    Prune(PruneArgs),
}

pub use crate::app::config::{
    parse_bounded_duration, parse_duration, parse_retention, DURATION_LIMITS,
};

fn worker_name(text: &str) -> Result<String, String> {
    crate::text::check_name("--name", text)?;
    Ok(text.to_string())
}

fn grace(text: &str) -> Result<Duration, String> {
    parse_bounded_duration("--grace", text)
}
fn drain_delay(text: &str) -> Result<Duration, String> {
    parse_bounded_duration("--drain-delay", text)
}
fn heartbeat_interval(text: &str) -> Result<Duration, String> {
    parse_bounded_duration("--heartbeat-interval", text)
}
fn lease_ttl(text: &str) -> Result<Duration, String> {
    parse_bounded_duration("--lease-ttl", text)
}
fn poll_interval(text: &str) -> Result<Duration, String> {
    parse_bounded_duration("--poll-interval", text)
}
fn cancel_grace(text: &str) -> Result<Duration, String> {
    parse_bounded_duration("--cancel-grace", text)
}
fn queue_metrics_interval(text: &str) -> Result<Duration, String> {
    parse_bounded_duration("--queue-metrics-interval", text)
}
fn final_scrape_wait(text: &str) -> Result<Duration, String> {
    parse_bounded_duration("--final-scrape-wait", text)
}

#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Store URL: sqlite://PATH (embedded) or postgres://USER@HOST/DB.
    #[arg(long, env = "HANDOVER_STORE", default_value = DEFAULT_STORE, value_name = "URL")]
    pub store: StoreUrl,
}

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub store: StoreArgs,

    /// Address for probes, metrics, the admin pages and API.
    #[arg(
        long,
        env = "HANDOVER_LISTEN",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR"
    )]
    pub listen: String,

    /// Worker name shown in the fleet view [default: HOSTNAME-PID].
    #[arg(long, env = "HANDOVER_NAME", value_parser = worker_name)]
    pub name: Option<String>,

    /// Jobs run at once [default: number of CPUs].
    #[arg(long, env = "HANDOVER_CONCURRENCY", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: Option<u32>,

    /// Bound on the whole shutdown; past it the forced path runs and the exit code is 3.
    #[arg(long, env = "HANDOVER_GRACE", default_value = "30s", value_parser = grace, value_name = "DURATION")]
    pub grace: Duration,

    /// Time in `draining` before jobs are checkpointed, for load balancers to notice readiness.
    #[arg(long, env = "HANDOVER_DRAIN_DELAY", default_value = "0s", value_parser = drain_delay, value_name = "DURATION")]
    pub drain_delay: Duration,

    /// How often the worker row and all its leases are renewed [default: 3s, or a third of
    /// --lease-ttl when that is shorter than 9s].
    #[arg(long, env = "HANDOVER_HEARTBEAT_INTERVAL", value_parser = heartbeat_interval, value_name = "DURATION")]
    pub heartbeat_interval: Option<Duration>,

    /// How long a lease lasts without renewal before a rescuer may hand the job to another worker.
    #[arg(long, env = "HANDOVER_LEASE_TTL", default_value = "15s", value_parser = lease_ttl, value_name = "DURATION")]
    pub lease_ttl: Duration,

    /// How often an idle worker looks for new jobs.
    #[arg(long, env = "HANDOVER_POLL_INTERVAL", default_value = "250ms", value_parser = poll_interval, value_name = "DURATION")]
    pub poll_interval: Duration,

    /// A cancelled exec job's process group gets SIGTERM, then SIGKILL after this long.
    #[arg(long, env = "HANDOVER_CANCEL_GRACE", default_value = "5s", value_parser = cancel_grace, value_name = "DURATION")]
    pub cancel_grace: Duration,

    /// How often the queue metrics (jobs per kind and status, the oldest pending job's wait) are
    /// read from the store, in the background.
    #[arg(long, env = "HANDOVER_QUEUE_METRICS_INTERVAL", default_value = "5s", value_parser = queue_metrics_interval, value_name = "DURATION")]
    pub queue_metrics_interval: Duration,

    /// Token for the admin API and pages [default: generated and logged at start].
    #[arg(
        long,
        env = "HANDOVER_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub admin_token: Option<String>,

    /// After deregistering, keep serving /metrics until one more scrape or this long.
    #[arg(long, env = "HANDOVER_FINAL_SCRAPE_WAIT", default_value = "0s", value_parser = final_scrape_wait, value_name = "DURATION")]
    pub final_scrape_wait: Duration,

    #[command(flatten)]
    pub retention: RetentionArgs,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Address for the admin UI.
    #[arg(
        long,
        env = "HANDOVER_LISTEN",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR"
    )]
    pub listen: String,

    /// The demo's store [default: sqlite://handover-demo.db].
    #[arg(
        long,
        env = "HANDOVER_STORE",
        default_value = "sqlite://handover-demo.db",
        value_name = "URL"
    )]
    pub store: StoreUrl,
}

#[derive(Debug, Clone, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub store: StoreArgs,

    /// Job kind: demo, noop, exec, or a kind your own workers register.
    #[arg(long, env = "HANDOVER_KIND")]
    pub kind: String,

    /// Job payload as JSON.
    #[arg(
        long,
        env = "HANDOVER_PAYLOAD",
        value_name = "JSON",
        conflicts_with = "from_file"
    )]
    pub payload: Option<String>,

    /// Attempts before a failing job becomes dead.
    #[arg(long, env = "HANDOVER_MAX_ATTEMPTS", default_value_t = crate::store::DEFAULT_MAX_ATTEMPTS, value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub max_attempts: i32,

    /// Higher runs first.
    #[arg(
        long,
        env = "HANDOVER_PRIORITY",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub priority: i32,

    /// Submit N copies of the job.
    #[arg(long, env = "HANDOVER_COUNT", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub count: u64,

    /// One job per line, each line a JSON payload ('-' for standard input).
    #[arg(long, env = "HANDOVER_FROM_FILE", value_name = "FILE|-")]
    pub from_file: Option<PathBuf>,

    /// Submit a kind that no worker of this store serves yet (a producer deployed before its
    /// workers).
    #[arg(long, env = "HANDOVER_ALLOW_UNKNOWN_KIND")]
    pub allow_unknown_kind: bool,

    /// For exec jobs: the program and its arguments.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct JobsArgs {
    #[command(flatten)]
    pub store: StoreArgs,

    /// Only jobs with this status.
    #[arg(long, env = "HANDOVER_STATUS")]
    pub status: Option<JobStatus>,

    /// At most this many jobs (oldest first).
    #[arg(long, env = "HANDOVER_LIMIT", value_parser = clap::value_parser!(i64).range(1..))]
    pub limit: Option<i64>,

    /// Print one JSON array.
    #[arg(long, env = "HANDOVER_JSON")]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct WorkersArgs {
    #[command(flatten)]
    pub store: StoreArgs,

    /// Print one JSON array.
    #[arg(long, env = "HANDOVER_JSON")]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("targets").required(true).args(["workers", "all"])))]
pub struct DrainArgs {
    #[command(flatten)]
    pub store: StoreArgs,

    /// Worker ids or names.
    #[arg(value_name = "WORKER")]
    pub workers: Vec<String>,

    /// Every live worker of the store that is not already draining.
    #[arg(long, env = "HANDOVER_ALL", conflicts_with = "workers")]
    pub all: bool,

    /// At most this many workers out (draining, or asked to) at once, counted in the store across
    /// every caller and trigger; the others wait as `queued`. Default 1 with --all or several
    /// workers; a single worker without it is asked at once.
    #[arg(long, env = "HANDOVER_MAX_DRAINING", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_draining: Option<u32>,

    /// handoff: checkpoint and hand back now; finish: let jobs complete within the budget.
    #[arg(long, env = "HANDOVER_MODE", default_value = "handoff")]
    pub mode: Mode,

    /// Why, recorded in the shutdown record.
    #[arg(long, env = "HANDOVER_REASON")]
    pub reason: Option<String>,

    /// Follow the workers until every one has stopped, showing each phase and how many are left;
    /// exit 3 if a shutdown was forced, 1 if a worker died before it finished.
    #[arg(long, env = "HANDOVER_WAIT")]
    pub wait: bool,

    /// Withdraw the queued (not yet started) drain requests of these workers instead.
    #[arg(long, env = "HANDOVER_CANCEL", conflicts_with_all = ["max_draining", "wait", "reason"])]
    pub cancel: bool,
}

#[derive(Debug, Clone, Args)]
pub struct CancelArgs {
    #[command(flatten)]
    pub store: StoreArgs,

    /// Job ids.
    #[arg(required = true, value_name = "JOB", value_parser = clap::value_parser!(i64).range(1..))]
    pub jobs: Vec<i64>,
}

#[derive(Debug, Clone, Args)]
pub struct RetryArgs {
    #[command(flatten)]
    pub store: StoreArgs,

    /// Job ids.
    #[arg(required = true, value_name = "JOB", value_parser = clap::value_parser!(i64).range(1..))]
    pub jobs: Vec<i64>,

    /// Drop the checkpoint: start over instead of resuming.
    #[arg(long, env = "HANDOVER_FROM_SCRATCH")]
    pub from_scratch: bool,
}

/// A `--retain-*` value: how long rows are kept, `None` for ever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetainFor(pub Option<Duration>);

fn retain_completed(text: &str) -> Result<RetainFor, String> {
    parse_retention("--retain-completed", text).map(RetainFor)
}
fn retain_dead(text: &str) -> Result<RetainFor, String> {
    parse_retention("--retain-dead", text).map(RetainFor)
}
fn retain_workers(text: &str) -> Result<RetainFor, String> {
    parse_retention("--retain-workers", text).map(RetainFor)
}
fn retain_shutdowns(text: &str) -> Result<RetainFor, String> {
    parse_retention("--retain-shutdowns", text).map(RetainFor)
}

/// How long finished rows are kept (SPEC §10): for `worker` (its hourly pruner) and `prune`.
#[derive(Debug, Clone, Args)]
pub struct RetentionArgs {
    /// Keep completed jobs (and their completion audit rows) this long after they completed, or
    /// `forever`.
    #[arg(long, env = "HANDOVER_RETAIN_COMPLETED", default_value = "24h", value_parser = retain_completed, value_name = "DURATION")]
    pub retain_completed: RetainFor,

    /// Keep dead and cancelled jobs this long after they ended, or `forever`.
    #[arg(long, env = "HANDOVER_RETAIN_DEAD", default_value = "7d", value_parser = retain_dead, value_name = "DURATION")]
    pub retain_dead: RetainFor,

    /// Keep the rows of stopped (or declared-dead) workers this long, or `forever`; a worker row
    /// named as the owner of a job is kept.
    #[arg(long, env = "HANDOVER_RETAIN_WORKERS", default_value = "7d", value_parser = retain_workers, value_name = "DURATION")]
    pub retain_workers: RetainFor,

    /// Keep shutdown records this long, or `forever`.
    #[arg(long, env = "HANDOVER_RETAIN_SHUTDOWNS", default_value = "30d", value_parser = retain_shutdowns, value_name = "DURATION")]
    pub retain_shutdowns: RetainFor,
}

impl RetentionArgs {
    pub fn policy(&self) -> crate::model::Retention {
        crate::model::Retention {
            completed: self.retain_completed.0,
            dead: self.retain_dead.0,
            workers: self.retain_workers.0,
            shutdowns: self.retain_shutdowns.0,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub store: StoreArgs,

    #[command(flatten)]
    pub retention: RetentionArgs,

    /// Print one JSON object: rows deleted per table.
    #[arg(long, env = "HANDOVER_JSON")]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn retention_flags_default_to_the_spec_and_take_forever() {
        let cli = Cli::try_parse_from(["handover", "prune", "--retain-dead", "forever"]).unwrap();
        let Command::Prune(args) = cli.command else {
            panic!("prune")
        };
        let policy = args.retention.policy();
        assert_eq!(policy.completed, Some(Duration::from_secs(24 * 3600)));
        assert_eq!(policy.dead, None);
        assert_eq!(policy.workers, Some(Duration::from_secs(7 * 24 * 3600)));
        assert_eq!(policy.shutdowns, Some(Duration::from_secs(30 * 24 * 3600)));
        assert_eq!(
            crate::model::Retention {
                dead: Some(Duration::from_secs(7 * 24 * 3600)),
                ..policy
            },
            crate::model::Retention::default()
        );
    }

    #[test]
    fn durations_accept_the_documented_forms() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("5").unwrap_err().contains("such as 500ms"));
        assert!(parse_duration("soon").is_err());
    }

    proptest::proptest! {
        /// Any text given to any duration flag is either refused with a message or lands inside the
        /// flag's range, and every deadline the worker computes from an accepted value fits.
        #[test]
        fn duration_flags_refuse_or_stay_in_range(
            flag in proptest::sample::select(DURATION_LIMITS.iter().map(|l| l.0).collect::<Vec<_>>()),
            number in proptest::prop_oneof![0u64..100, 0u64..100_000, proptest::num::u64::ANY],
            unit in proptest::sample::select(vec!["ns", "us", "ms", "s", "m", "h", "d", "w", "M", "y", ""]),
            junk in "\\PC{0,3}",
        ) {
            for text in [format!("{number}{unit}"), format!("{number}{unit}{junk}"), junk.clone()] {
                match parse_bounded_duration(flag, &text) {
                    Err(message) => proptest::prop_assert!(!message.is_empty()),
                    Ok(value) => {
                        let (_, least, most) =
                            *DURATION_LIMITS.iter().find(|l| l.0 == flag).unwrap();
                        proptest::prop_assert!(least <= value && value <= most, "{text}: {value:?}");
                        let now = std::time::Instant::now();
                        proptest::prop_assert!(now.checked_add(value * 2).is_some());
                        proptest::prop_assert!(chrono::Duration::from_std(value * 2).is_ok());
                        proptest::prop_assert!(chrono::Utc::now()
                            .checked_add_signed(chrono::Duration::from_std(value * 2).unwrap())
                            .is_some());
                    }
                }
            }
        }
    }

    #[test]
    fn every_flag_has_a_handover_env_var() {
        let cli = Cli::command();
        for sub in cli.get_subcommands() {
            for arg in sub.get_arguments() {
                if arg.is_positional() || arg.get_id() == "help" || arg.get_id() == "version" {
                    continue;
                }
                let long = arg.get_long().expect("flags are long");
                let expected = format!("HANDOVER_{}", long.replace('-', "_").to_uppercase());
                assert_eq!(
                    arg.get_env().and_then(|e| e.to_str()),
                    Some(expected.as_str()),
                    "{} --{long}",
                    sub.get_name()
                );
            }
        }
    }
}
