//! A worker as a value: [`App::build`] connects, migrates, registers and binds; [`App::run_until_stopped`]
//! runs the claim loop, heartbeat, rescuer and HTTP server under the phase machine until `stopped`.

pub mod claim;
pub mod completer;
pub mod health;
pub mod heartbeat;
pub mod inflight;
pub mod rescuer;
pub mod runner;

use self::claim::{ClaimControl, ClaimLoop};
use self::completer::Completer;
use self::health::StoreHealth;
use self::heartbeat::Heartbeat;
use self::inflight::InFlight;
use self::rescuer::Rescuer;
use self::runner::Runner;
use crate::http::{self, HttpState};
use crate::jobs::Registry;
use crate::lifecycle::{
    MachineHandle, MachineSettings, Phase, PhaseMachine, ShutdownSummary, WorkerParts,
};
use crate::store::{self, SharedStore, StoreEvent, StoreUrl, WorkerRegistration};
use crate::telemetry::Metrics;
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A worker configuration that cannot work (the command line's fault: exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Everything a worker process is configured with.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub store: StoreUrl,
    pub listen: String,
    pub name: String,
    pub concurrency: usize,
    pub grace: Duration,
    pub drain_delay: Duration,
    pub heartbeat_interval: Duration,
    pub lease_ttl: Duration,
    pub poll_interval: Duration,
    pub admin_token: Option<String>,
    pub final_scrape_wait: Duration,
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
            admin_token: None,
            final_scrape_wait: Duration::ZERO,
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
            ("--final-scrape-wait", self.final_scrape_wait),
        ] {
            let text = humantime::format_duration(value).to_string();
            if let Err(why) = crate::cli::parse_bounded_duration(flag, &text) {
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

pub fn default_concurrency() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// A built worker, bound and registered, not yet running.
pub struct App {
    pub addr: SocketAddr,
    pub worker_id: String,
    pub admin_token: String,
    /// True when no token was configured and one was generated.
    pub token_generated: bool,
    machine: PhaseMachine,
    handle: MachineHandle,
    config: WorkerConfig,
    store: SharedStore,
    metrics: Arc<Metrics>,
    health: Arc<StoreHealth>,
    jobs: Arc<InFlight>,
    runner: Arc<Runner>,
    claims: Arc<ClaimControl>,
    kinds: Vec<String>,
    background: CancellationToken,
    server_stop: CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

impl App {
    pub async fn build(config: WorkerConfig, handlers: Registry) -> anyhow::Result<App> {
        config.validate()?;
        let store = store::open_migrated(&config.store)
            .await
            .with_context(|| format!("cannot use store {}", config.store))?;
        let listener = TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        let worker_id = uuid::Uuid::new_v4().to_string();
        let kinds = handlers.kinds();
        let metrics = Arc::new(Metrics::new(&kinds));
        let health = Arc::new(StoreHealth::new(metrics.store_up.clone()));
        let jobs = Arc::new(InFlight::new(metrics.jobs_in_flight.clone()));
        let claims = Arc::new(ClaimControl::default());
        let checkpoint_request = CancellationToken::new();
        let forced = CancellationToken::new();
        let background = CancellationToken::new();

        store
            .register_worker(&WorkerRegistration {
                id: worker_id.clone(),
                name: config.name.clone(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                listen_addr: Some(addr.to_string()),
                concurrency: u32::try_from(config.concurrency).unwrap_or(u32::MAX),
                lease_ttl: config.lease_ttl,
            })
            .await
            .context("cannot register the worker")?;

        let runner = Arc::new(Runner {
            store: store.clone(),
            metrics: metrics.clone(),
            jobs: jobs.clone(),
            handlers,
            completer: Completer::spawn(store.clone()),
            health: health.clone(),
            checkpoint_request: checkpoint_request.clone(),
            forced: forced.clone(),
        });
        let (machine, handle) = PhaseMachine::new(
            WorkerParts {
                worker_id: worker_id.clone(),
                worker_name: config.name.clone(),
                store: store.clone(),
                metrics: metrics.clone(),
                claims: claims.clone(),
                jobs: jobs.clone(),
                checkpoint_request,
                forced,
                background: background.clone(),
            },
            MachineSettings {
                grace: config.grace,
                drain_delay: config.drain_delay,
            },
        );

        let (admin_token, token_generated) = match &config.admin_token {
            Some(token) => (token.clone(), false),
            None => (uuid::Uuid::new_v4().simple().to_string(), true),
        };
        let state = Arc::new(HttpState {
            machine: handle.clone(),
            health: health.clone(),
            metrics: metrics.clone(),
            jobs: jobs.clone(),
            admin_token: admin_token.clone(),
            worker_id: worker_id.clone(),
            worker_name: config.name.clone(),
            store: store.clone(),
            handlers: runner.handlers.clone(),
            sessions: Default::default(),
        });
        let server_stop = CancellationToken::new();
        let server = tokio::spawn(http::serve(listener, state, server_stop.clone()));

        Ok(App {
            addr,
            worker_id,
            admin_token,
            token_generated,
            machine,
            handle,
            config,
            store,
            metrics,
            health,
            jobs,
            runner,
            claims,
            kinds,
            background,
            server_stop,
            server,
        })
    }

    /// Lets `deregistering` flush exported spans (export is configured by the binary's caller).
    pub fn set_trace_flusher(&mut self, traces: crate::telemetry::tracing::TraceFlusher) {
        self.machine.set_trace_flusher(traces);
    }

    /// The handle for sending triggers to this worker's machine.
    pub fn handle(&self) -> MachineHandle {
        self.handle.clone()
    }

    /// Runs until the machine reaches `stopped`, then serves a last scrape and stops the server.
    pub async fn run_until_stopped(self) -> ShutdownSummary {
        let tracker = TaskTracker::new();
        let reaper_stop = CancellationToken::new();
        if let Some(reaper) = crate::process::orphan_reaper(reaper_stop.clone()) {
            tokio::spawn(reaper);
        }
        let claim_wake = Arc::new(Notify::new());
        let beat_now = Arc::new(Notify::new());
        match self.store.subscribe().await {
            Ok(Some(events)) => {
                tokio::spawn(relay_store_events(
                    events,
                    self.worker_id.clone(),
                    claim_wake.clone(),
                    beat_now.clone(),
                    self.background.clone(),
                ));
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(%err, "no push notifications from the store; polling only"),
        }
        tokio::spawn(report_phases(
            self.store.clone(),
            self.worker_id.clone(),
            self.handle.clone(),
        ));
        tokio::spawn(
            Heartbeat {
                store: self.store.clone(),
                worker_id: self.worker_id.clone(),
                interval: self.config.heartbeat_interval,
                lease_ttl: self.config.lease_ttl,
                jobs: self.jobs.clone(),
                machine: self.handle.clone(),
                health: self.health.clone(),
                metrics: self.metrics.clone(),
                beat_now,
                stop: self.background.clone(),
            }
            .run(),
        );
        tokio::spawn(
            Rescuer {
                store: self.store.clone(),
                interval: self.config.heartbeat_interval,
                lease_ttl: self.config.lease_ttl,
                health: self.health.clone(),
                metrics: self.metrics.clone(),
                stop: self.background.clone(),
            }
            .run(),
        );
        tokio::spawn(
            ClaimLoop {
                store: self.store.clone(),
                worker_id: self.worker_id.clone(),
                kinds: self.kinds.clone(),
                concurrency: self.config.concurrency,
                lease_ttl: self.config.lease_ttl,
                poll_interval: self.config.poll_interval,
                control: self.claims.clone(),
                runner: self.runner.clone(),
                tracker: tracker.clone(),
                health: self.health.clone(),
                metrics: self.metrics.clone(),
                wake: claim_wake,
                stop: self.background.clone(),
            }
            .run(),
        );
        tracing::info!(
            worker_id = %self.worker_id,
            name = %self.config.name,
            addr = %self.addr,
            store = %self.config.store,
            concurrency = self.config.concurrency,
            kinds = ?self.kinds,
            "worker running"
        );
        let mut signals = self.handle.signals();
        let summary = self.machine.run().await;
        if !self.config.final_scrape_wait.is_zero() {
            let seen = self.metrics.scrapes_answered();
            // Any signal but the one that started the drain ends the wait, including one that
            // arrived while `deregistering` was still finishing.
            let started_by_signal = u64::from(summary.record.trigger.is_signal());
            tokio::select! {
                _ = self.metrics.wait_for_scrape_after(seen) => tracing::info!("final scrape answered"),
                _ = tokio::time::sleep(self.config.final_scrape_wait) => {
                    tracing::info!("no final scrape arrived within --final-scrape-wait")
                }
                _ = signals.wait_for(|count| *count > started_by_signal) => {
                    tracing::info!("signal received; not waiting for a final scrape")
                }
            }
        }
        self.server_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), self.server).await;
        reaper_stop.cancel();
        summary
    }
}

/// Turns store pushes into wake-ups: new jobs wake the claim loop, a drain request for this worker
/// makes the heartbeat (which takes the request) run at once.
async fn relay_store_events(
    mut events: tokio::sync::mpsc::UnboundedReceiver<StoreEvent>,
    worker_id: String,
    claim_wake: Arc<Notify>,
    beat_now: Arc<Notify>,
    stop: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = stop.cancelled() => return,
        };
        match event {
            Some(StoreEvent::JobsAvailable) => claim_wake.notify_one(),
            Some(StoreEvent::DrainRequested { worker_id: target }) if target == worker_id => {
                beat_now.notify_one()
            }
            Some(StoreEvent::DrainRequested { .. }) => {}
            Some(StoreEvent::Reconnected) => {
                claim_wake.notify_one();
                beat_now.notify_one();
            }
            None => return,
        }
    }
}

/// Mirrors the machine's phase into the worker row (the fleet view), coalescing quick changes.
async fn report_phases(store: SharedStore, worker_id: String, machine: MachineHandle) {
    let mut status = machine.subscribe();
    let mut written = Phase::Starting;
    loop {
        let phase = status.borrow_and_update().phase;
        if matches!(phase, Phase::Deregistering | Phase::Stopped) {
            return; // deregistering writes `stopped` itself
        }
        if phase != written {
            match store.set_worker_phase(&worker_id, phase).await {
                Ok(()) => written = phase,
                Err(err) => tracing::debug!(%err, "could not record the phase; will retry"),
            }
        }
        if status.changed().await.is_err() {
            return;
        }
    }
}
