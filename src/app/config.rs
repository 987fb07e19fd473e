//! What a worker process is configured with (SPEC §5), its defaults, and the combinations that
//! are refused before anything starts.

use crate::model::Retention;
use crate::store::StoreUrl;
use std::time::Duration;

/// A worker configuration that cannot work (the command line's fault: exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Everything a worker process is configured with.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The store the worker claims jobs from (`--store`).
    pub store: StoreUrl,
    /// Where the HTTP server listens (`--listen`); port 0 picks a free one.
    pub listen: String,
    /// The worker's name in the store, the pages and the logs (`--name`).
    pub name: String,
    /// How many jobs run at once (`--concurrency`).
    pub concurrency: usize,
    /// How long a shutdown may take before the forced path ends it (`--grace`).
    pub grace: Duration,
    /// How long `draining` waits, not ready, before jobs are checkpointed (`--drain-delay`).
    pub drain_delay: Duration,
    /// How often the worker row and its leases are renewed (`--heartbeat-interval`).
    pub heartbeat_interval: Duration,
    /// How long a lease lasts without renewal before a rescuer may take the job (`--lease-ttl`).
    pub lease_ttl: Duration,
    /// How often the store is polled for jobs and requests where it pushes nothing (`--poll-interval`).
    pub poll_interval: Duration,
    /// How long a cancelled job's processes get between SIGTERM and SIGKILL (`--cancel-grace`).
    pub cancel_grace: Duration,
    /// How often the queue metrics are read from the store (`--queue-metrics-interval`).
    pub queue_metrics_interval: Duration,
    /// The bearer token of the admin API and pages; None generates one (`--admin-token`).
    pub admin_token: Option<String>,
    /// How long `/metrics` is still served after `deregistering` for a last scrape (`--final-scrape-wait`).
    pub final_scrape_wait: Duration,
    /// How long finished rows are kept (SPEC §10); the worker's pruner deletes older ones.
    pub retention: Retention,
}

impl WorkerConfig {
    /// Defaults of SPEC §5 for the given store.
    pub fn new(store: StoreUrl) -> Self {
        WorkerConfig {
            store,
            listen: "127.0.0.1:8080".into(),
            name: default_worker_name(),
            concurrency: default_concurrency(),
            grace: Duration::from_secs(30),
            drain_delay: Duration::ZERO,
            heartbeat_interval: Duration::from_secs(3),
            lease_ttl: Duration::from_secs(15),
            poll_interval: Duration::from_millis(250),
            cancel_grace: Duration::from_secs(5),
            queue_metrics_interval: Duration::from_secs(5),
            admin_token: None,
            final_scrape_wait: Duration::ZERO,
            retention: Retention::default(),
        }
    }

    /// The heartbeat when only `--lease-ttl` is given: 3 s, or a third of the TTL when shorter, so
    /// that a lease survives a missed beat.
    pub fn default_heartbeat(lease_ttl: Duration) -> Duration {
        (lease_ttl / 3).min(Duration::from_secs(3))
    }

    /// Rejects values and combinations that would lose leases, never run anything, or overflow.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let refuse = |message: String| Err(ConfigError(message));
        if self.concurrency == 0 {
            return refuse("--concurrency must be at least 1".into());
        }
        for (flag, value) in [
            ("--grace", self.grace),
            ("--drain-delay", self.drain_delay),
            ("--heartbeat-interval", self.heartbeat_interval),
            ("--lease-ttl", self.lease_ttl),
            ("--poll-interval", self.poll_interval),
            ("--cancel-grace", self.cancel_grace),
            ("--queue-metrics-interval", self.queue_metrics_interval),
            ("--final-scrape-wait", self.final_scrape_wait),
        ] {
            let text = humantime::format_duration(value).to_string();
            if let Err(why) = parse_bounded_duration(flag, &text) {
                return refuse(format!("{flag} {why}"));
            }
        }
        for (flag, kept) in [
            ("--retain-completed", self.retention.completed),
            ("--retain-dead", self.retention.dead),
            ("--retain-workers", self.retention.workers),
            ("--retain-shutdowns", self.retention.shutdowns),
        ] {
            let Some(value) = kept else { continue };
            let text = humantime::format_duration(value).to_string();
            if let Err(why) = parse_bounded_duration(flag, &text) {
                return refuse(format!("{flag} {why}"));
            }
        }
        if self.heartbeat_interval * 2 > self.lease_ttl {
            return refuse(format!(
                "--heartbeat-interval ({}) must be at most half of --lease-ttl ({}), or leases expire between heartbeats",
                humantime::format_duration(self.heartbeat_interval),
                humantime::format_duration(self.lease_ttl)
            ));
        }
        let reserve = crate::lifecycle::machine::force_reserve(self.grace);
        if self.drain_delay >= self.grace.saturating_sub(reserve) {
            return refuse(format!(
                "--drain-delay ({}) must be shorter than --grace ({}) less the forced path's reserve ({}), or every shutdown is forced",
                humantime::format_duration(self.drain_delay),
                humantime::format_duration(self.grace),
                humantime::format_duration(reserve)
            ));
        }
        if let Some(token) = &self.admin_token {
            if token.chars().count() < 16 {
                return refuse("--admin-token must be at least 16 characters".into());
            }
            if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return refuse(
                    "--admin-token must not contain spaces or control characters (it could never be typed back)"
                        .into(),
                );
            }
        }
        Ok(())
    }
}

/// `hostname-pid`.
pub fn default_worker_name() -> String {
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "worker".into());
    format!("{host}-{}", std::process::id())
}

/// The default `--concurrency`: the number of CPUs the process may use (2 if unknown).
pub fn default_concurrency() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Parses `500ms`, `5s`, `2m`, `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{e}; use a duration such as 500ms, 5s or 2m"))
}

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);
/// Ten years as `humantime` counts them (`10y`, years of 365.25 days).
const TEN_YEARS: Duration = Duration::from_secs(10 * 31_557_600);

/// The range each duration flag accepts: `(flag, least, most)`. Every sum and product the worker
/// makes of these (deadlines, lease expiry, twice the heartbeat) stays far inside what `Instant`,
/// `chrono` and SQL timestamps hold.
pub const DURATION_LIMITS: &[(&str, Duration, Duration)] = &[
    ("--grace", Duration::from_millis(1), DAY),
    ("--drain-delay", Duration::ZERO, HOUR),
    ("--heartbeat-interval", Duration::from_millis(1), HOUR),
    ("--lease-ttl", Duration::from_millis(2), DAY),
    ("--poll-interval", Duration::from_millis(1), HOUR),
    ("--cancel-grace", Duration::ZERO, HOUR),
    ("--queue-metrics-interval", Duration::from_millis(100), HOUR),
    ("--final-scrape-wait", Duration::ZERO, HOUR),
    ("--retain-completed", MINUTE, TEN_YEARS),
    ("--retain-dead", MINUTE, TEN_YEARS),
    ("--retain-workers", MINUTE, TEN_YEARS),
    ("--retain-shutdowns", MINUTE, TEN_YEARS),
];

/// Parses a duration for `flag` and checks it against [`DURATION_LIMITS`].
pub fn parse_bounded_duration(flag: &str, text: &str) -> Result<Duration, String> {
    let (_, least, most) = DURATION_LIMITS
        .iter()
        .find(|(name, _, _)| *name == flag)
        .copied()
        .unwrap_or((flag, Duration::ZERO, DAY));
    let value = parse_duration(text)?;
    if value < least {
        return Err(if least == Duration::from_millis(1) {
            "must be longer than 0s".to_string()
        } else {
            format!("must be at least {}", humantime::format_duration(least))
        });
    }
    if value > most {
        return Err(format!(
            "must be at most {}",
            humantime::format_duration(most)
        ));
    }
    Ok(value)
}

/// The word a `--retain-*` flag takes to keep that table's rows forever.
pub const KEEP_FOREVER: &str = "forever";

/// Parses a `--retain-*` value: a duration within [`DURATION_LIMITS`], or `forever` (`None`: never
/// delete these rows).
pub fn parse_retention(flag: &str, text: &str) -> Result<Option<Duration>, String> {
    if text.trim() == KEEP_FOREVER {
        return Ok(None);
    }
    parse_bounded_duration(flag, text)
        .map(Some)
        .map_err(|why| format!("{why} (or {KEEP_FOREVER} to keep every row)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_takes_a_bounded_duration_or_forever() {
        let flag = "--retain-dead";
        assert_eq!(parse_retention(flag, "forever"), Ok(None));
        assert_eq!(
            parse_retention(flag, "7d"),
            Ok(Some(Duration::from_secs(7 * 24 * 3600)))
        );
        assert_eq!(parse_retention(flag, "10y"), Ok(Some(TEN_YEARS)));
        assert!(parse_retention(flag, "0s")
            .unwrap_err()
            .contains("at least 1m"));
        assert!(parse_retention(flag, "11y")
            .unwrap_err()
            .contains("at most"));
        assert!(parse_retention(flag, "never")
            .unwrap_err()
            .contains("forever"));
    }

    #[test]
    fn the_default_retention_validates() {
        let mut config = WorkerConfig::new("sqlite://x.db".parse().unwrap());
        assert!(config.validate().is_ok());
        config.retention = Retention::FOREVER;
        assert!(config.validate().is_ok());
        config.retention.completed = Some(Duration::from_secs(1));
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("--retain-completed must be at least 1m"),
            "{err}"
        );
    }
}
