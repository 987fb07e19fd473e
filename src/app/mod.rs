//! The one composition root: the only place that knows the store, the HTTP server, the phase
//! machine and the worker's tasks. [`App::build`] connects, migrates, registers and binds;
//! [`App::run_until_stopped`] starts every long-lived task under one [`Supervisor`], runs the
//! machine until `stopped`, and joins every task before it returns.

pub mod config;
// Public for other layers and the tests, not part of the embedding surface.
#[doc(hidden)]
pub mod supervisor;

pub use self::config::{default_concurrency, default_worker_name, ConfigError, WorkerConfig};

use self::supervisor::Supervisor;
use crate::http::{self, HttpState};
use crate::jobs::inflight::InFlight;
use crate::jobs::Registry;
use crate::lifecycle::signals::SignalListener;
use crate::lifecycle::{
    ClaimControl, MachineHandle, MachineSettings, PhaseMachine, ShutdownSummary, WorkerParts,
};
use crate::model::{Task, WorkerRegistration};
use crate::store::{self, SharedStore};
use crate::telemetry::tracing::TraceFlusher;
use crate::telemetry::Metrics;
use crate::worker::claim::ClaimLoop;
use crate::worker::completer::{Completer, CompletionWriter};
use crate::worker::drain_cost::{DrainCostWatch, DrainTimes};
use crate::worker::health::StoreHealth;
use crate::worker::heartbeat::Heartbeat;
use crate::worker::prefetch::{Pace, Slots};
use crate::worker::pruner::{Pruner, FIRST_PASS_AFTER, PASS_EVERY};
use crate::worker::queue_metrics::QueueMetrics;
use crate::worker::requests::RequestWatcher;
use crate::worker::rescuer::Rescuer;
use crate::worker::runner::{backlog_size, Runner};
use crate::worker::store_events::{relay_store_events, report_phases};
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// After `stopped` (and the final scrape), how long tasks get to end once told to.
const TASKS_STOP_BUDGET: Duration = Duration::from_secs(2);
/// How long attempts' tasks get to end after `stopped` (they have all ended or been abandoned).
const ATTEMPTS_STOP_BUDGET: Duration = Duration::from_secs(2);

/// A built worker, bound and registered, not yet running.
pub struct App {
    /// The address the HTTP server is bound to.
    pub addr: SocketAddr,
    /// The worker's id in the store (a new UUID per process).
    pub worker_id: String,
    /// The admin token in force (configured or generated).
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
    supervisor: Supervisor,
    completion_writer: Option<CompletionWriter>,
    signals: Option<SignalListener>,
    /// Every token descends from this one; cancelling it stops every task.
    root: CancellationToken,
    /// Cancelled by the machine in `deregistering`: heartbeat, rescuer, pruner, claim loop, relays.
    background: CancellationToken,
}

impl App {
    /// Builds a worker on the store its configuration names.
    pub async fn build(config: WorkerConfig, handlers: Registry) -> anyhow::Result<App> {
        config.validate()?;
        let store = store::open_migrated(&config.store)
            .await
            .with_context(|| format!("cannot use store {}", config.store))?;
        App::build_on(config, store, handlers).await
    }

    /// Builds a worker on a store opened (and migrated) by the caller: an embedding application's
    /// own, or one wrapped to observe or inject faults.
    pub async fn build_on(
        config: WorkerConfig,
        store: SharedStore,
        handlers: Registry,
    ) -> anyhow::Result<App> {
        config.validate()?;
        let listener = TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        let worker_id = uuid::Uuid::new_v4().to_string();
        let kinds = handlers.kinds();
        let metrics = Arc::new(Metrics::new(&kinds));
        let health = Arc::new(StoreHealth::new(metrics.store_up.clone()));
        let jobs = Arc::new(InFlight::new(
            metrics.jobs_in_flight.clone(),
            metrics.jobs_held.clone(),
        ));
        let pace = Arc::new(Pace::new(config.concurrency));
        let claims = Arc::new(ClaimControl::default());
        let root = CancellationToken::new();
        let background = root.child_token();
        let checkpoint_request = root.child_token();
        let forced = root.child_token();

        store
            .register_worker(&WorkerRegistration {
                id: worker_id.clone(),
                name: config.name.clone(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                listen_addr: Some(addr.to_string()),
                concurrency: u32::try_from(config.concurrency).unwrap_or(u32::MAX),
                lease_ttl: config.lease_ttl,
                kinds: kinds.clone(),
            })
            .await
            .context("cannot register the worker")?;

        let (completer, completion_writer) = Completer::new(store.clone());
        let runner = Arc::new(Runner {
            store: store.clone(),
            metrics: metrics.clone(),
            jobs: jobs.clone(),
            handlers,
            completer,
            health: health.clone(),
            checkpoint_request: checkpoint_request.clone(),
            forced: forced.clone(),
            backlog: Arc::new(tokio::sync::Semaphore::new(backlog_size(
                config.concurrency,
            ))),
            pace: pace.clone(),
            cancel_grace: config.cancel_grace,
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
            drain_times: DrainTimes {
                drain_delay: config.drain_delay,
                grace: config.grace,
            },
        });
        // The server answers probes from now on (`starting` is not ready), and is stopped last.
        let mut supervisor = Supervisor::new(metrics.clone(), handle.clone());
        supervisor.spawn(
            Task::HttpServer,
            &root,
            http::serve(listener, state, root.clone()),
        );

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
            supervisor,
            completion_writer: Some(completion_writer),
            signals: None,
            root,
            background,
        })
    }

    /// Lets `deregistering` flush exported spans (export is configured by the binary's caller).
    pub fn set_trace_flusher(&mut self, traces: TraceFlusher) {
        self.machine.set_trace_flusher(traces);
    }

    /// Signals (installed early, so none is lost) go to the machine once the worker runs.
    pub fn forward_signals(&mut self, signals: SignalListener) {
        self.signals = Some(signals);
    }

    /// The handle for sending triggers to this worker's machine.
    pub fn handle(&self) -> MachineHandle {
        self.handle.clone()
    }

    /// Runs until the machine reaches `stopped`, serves a last scrape, then stops and joins every
    /// task. The summary names the essential tasks that failed (the process then exits 4).
    pub async fn run_until_stopped(mut self) -> ShutdownSummary {
        self.start_tasks().await;
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
        let machine = self.machine.run();
        tokio::pin!(machine);
        let mut summary = tokio::select! {
            summary = &mut machine => summary,
            _ = self.supervisor.watch() => unreachable!("the supervisor watches until cancelled"),
        };
        if !self.config.final_scrape_wait.is_zero() {
            // Any signal but the one that started the drain ends the wait, including one that
            // arrived while `deregistering` was still finishing.
            let started_by_signal = u64::from(summary.record.trigger.is_signal());
            tokio::select! {
                _ = self.metrics.wait_for_final_scrape() => tracing::info!("final scrape answered"),
                _ = tokio::time::sleep(self.config.final_scrape_wait) => {
                    tracing::info!("no final scrape arrived within --final-scrape-wait")
                }
                _ = signals.wait_for(|count| *count > started_by_signal) => {
                    tracing::info!("signal received; not waiting for a final scrape")
                }
            }
        }
        if tokio::time::timeout(ATTEMPTS_STOP_BUDGET, self.jobs.wait_until_attempts_end())
            .await
            .is_err()
        {
            tracing::error!("job attempts still running after the shutdown; abandoning them");
        }
        summary.failed_tasks = self
            .supervisor
            .shut_down(&self.root, TASKS_STOP_BUDGET)
            .await;
        summary
    }

    /// Starts every long-lived task under the supervisor.
    async fn start_tasks(&mut self) {
        let (root, background) = (self.root.clone(), self.background.clone());
        let drain_times = DrainTimes {
            drain_delay: self.config.drain_delay,
            grace: self.config.grace,
        };
        let tasks = &mut self.supervisor;
        if let Some(signals) = self.signals.take() {
            tasks.spawn(
                Task::Signals,
                &root,
                signals.forward_to(self.handle.clone(), root.clone()),
            );
        }
        if let Some(reaper) = crate::process::orphan_reaper(root.clone()) {
            tasks.spawn(Task::OrphanReaper, &root, reaper);
        }
        if let Some(writer) = self.completion_writer.take() {
            tasks.spawn(Task::CompletionWriter, &root, writer.run(root.clone()));
        }
        let claim_wake = Arc::new(Notify::new());
        let beat_now = Arc::new(Notify::new());
        let cancel_wake = Arc::new(Notify::new());
        // Where the store pushes drain requests and cancels, the watcher only looks for cancels,
        // as a backstop, once a heartbeat; else it looks for both every poll.
        let mut request_interval = self.config.poll_interval;
        let mut drain_poll = Some(beat_now.clone());
        match self.store.subscribe(background.clone()).await {
            Ok(Some(subscription)) => {
                request_interval = self
                    .config
                    .heartbeat_interval
                    .max(self.config.poll_interval);
                drain_poll = None;
                tasks.spawn(Task::StoreListener, &background, subscription.listener);
                tasks.spawn(
                    Task::StoreEvents,
                    &background,
                    relay_store_events(
                        subscription.events,
                        self.worker_id.clone(),
                        claim_wake.clone(),
                        beat_now.clone(),
                        cancel_wake.clone(),
                        background.clone(),
                    ),
                );
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(%err, "no push notifications from the store; polling only"),
        }
        tasks.spawn(
            Task::RequestWatcher,
            &background,
            RequestWatcher {
                store: self.store.clone(),
                worker_id: self.worker_id.clone(),
                jobs: self.runner.jobs.clone(),
                interval: request_interval,
                wake: cancel_wake,
                drain_poll,
                health: self.health.clone(),
                metrics: self.metrics.clone(),
                stop: background.clone(),
            }
            .run(),
        );
        tasks.spawn(
            Task::PhaseReporter,
            &background,
            report_phases(
                self.store.clone(),
                self.worker_id.clone(),
                self.handle.clone(),
                background.clone(),
            ),
        );
        tasks.spawn(
            Task::Heartbeat,
            &background,
            Heartbeat {
                store: self.store.clone(),
                worker_id: self.worker_id.clone(),
                interval: self.config.heartbeat_interval,
                lease_ttl: self.config.lease_ttl,
                jobs: self.jobs.clone(),
                machine: self.handle.clone(),
                health: self.health.clone(),
                metrics: self.metrics.clone(),
                drain_times,
                beat_now,
                stop: background.clone(),
            }
            .run(),
        );
        tasks.spawn(
            Task::DrainCost,
            &background,
            DrainCostWatch {
                jobs: self.jobs.clone(),
                times: drain_times,
                metrics: self.metrics.clone(),
                stop: background.clone(),
            }
            .run(),
        );
        tasks.spawn(
            Task::Rescuer,
            &background,
            Rescuer {
                store: self.store.clone(),
                interval: self.config.heartbeat_interval,
                lease_ttl: self.config.lease_ttl,
                health: self.health.clone(),
                metrics: self.metrics.clone(),
                stop: background.clone(),
            }
            .run(),
        );
        tasks.spawn(
            Task::QueueMetrics,
            &background,
            QueueMetrics {
                store: self.store.clone(),
                interval: self.config.queue_metrics_interval,
                health: self.health.clone(),
                metrics: self.metrics.clone(),
                stop: background.clone(),
            }
            .run(),
        );
        tasks.spawn(
            Task::Pruner,
            &background,
            Pruner {
                store: self.store.clone(),
                policy: self.config.retention,
                first_after: FIRST_PASS_AFTER,
                every: PASS_EVERY,
                status: self.handle.subscribe(),
                health: self.health.clone(),
                metrics: self.metrics.clone(),
                stop: background.clone(),
            }
            .run(),
        );
        tasks.spawn(
            Task::ClaimLoop,
            &background,
            ClaimLoop {
                store: self.store.clone(),
                worker_id: self.worker_id.clone(),
                kinds: self.kinds.clone(),
                slots: Arc::new(Slots::new(self.config.concurrency)),
                pace: self.runner.pace.clone(),
                lease_ttl: self.config.lease_ttl,
                poll_interval: self.config.poll_interval,
                control: self.claims.clone(),
                runner: self.runner.clone(),
                health: self.health.clone(),
                metrics: self.metrics.clone(),
                wake: claim_wake,
                stop: background.clone(),
            }
            .run(),
        );
    }
}
