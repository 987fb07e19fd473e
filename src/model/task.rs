//! The long-lived tasks of a worker process, by the name logs and `handover_task_failures_total`
//! give them.

use super::wire_enum;

wire_enum!(
    /// A task the worker needs while it runs: one that panics or ends early starts an `internal`
    /// drain (SPEC §10).
    Task {
        /// Renews the worker row and its leases.
        Heartbeat => "heartbeat",
        /// Returns expired leases to `pending`.
        Rescuer => "rescuer",
        /// Claims jobs and starts them.
        ClaimLoop => "claim_loop",
        /// Writes the attempts' final results in batches.
        CompletionWriter => "completion_writer",
        /// Listens for pushed store events (PostgreSQL).
        StoreListener => "store_listener",
        /// Relays pushed store events to the tasks.
        StoreEvents => "store_events",
        /// Writes the worker's phase into its row.
        PhaseReporter => "phase_reporter",
        /// Serves probes, metrics, the API and the pages.
        HttpServer => "http_server",
        /// Forwards signals to the phase machine.
        Signals => "signals",
        /// Reaps orphaned processes when the worker is PID 1.
        OrphanReaper => "orphan_reaper",
        /// Looks for drain requests and cancels.
        RequestWatcher => "request_watcher",
        /// Deletes old finished rows (retention).
        Pruner => "pruner",
        /// Reads the queue metrics from the store.
        QueueMetrics => "queue_metrics",
        /// Keeps the drain ETA and work-at-risk gauges current.
        DrainCost => "drain_cost",
    }
);
