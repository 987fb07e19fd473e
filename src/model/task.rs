//! The long-lived tasks of a worker process, by the name logs and `handover_task_failures_total`
//! give them.

use super::wire_enum;

wire_enum!(
    /// A task the worker needs while it runs: one that panics or ends early starts an `internal`
    /// drain (SPEC §10).
    Task {
        Heartbeat => "heartbeat",
        Rescuer => "rescuer",
        ClaimLoop => "claim_loop",
        CompletionWriter => "completion_writer",
        StoreListener => "store_listener",
        StoreEvents => "store_events",
        PhaseReporter => "phase_reporter",
        HttpServer => "http_server",
        Signals => "signals",
        OrphanReaper => "orphan_reaper",
        RequestWatcher => "request_watcher",
        Pruner => "pruner",
        QueueMetrics => "queue_metrics",
        DrainCost => "drain_cost",
    }
);
