//! The worker's long-lived parts: the claim loop, the runner of each attempt, the completion
//! writer, the heartbeat, the rescuer, the pruner, store health, and the relays between the store and the
//! machine. The composition root (`src/app/`) builds them and runs each one under its supervisor.

pub mod claim;
pub mod completer;
pub mod drain_cost;
pub mod health;
pub mod heartbeat;
pub mod prefetch;
pub mod pruner;
pub mod queue_metrics;
pub mod requests;
pub mod rescuer;
pub mod runner;
pub mod store_events;
