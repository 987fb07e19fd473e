//! What a worker tells the outside: Prometheus metrics, logs and OpenTelemetry traces, and the
//! typed events that write all three together.

pub mod events;
pub mod human;
pub mod metrics;
pub mod tracing;

pub use self::metrics::Metrics;
