//! What a worker tells the outside: Prometheus metrics, logs and OpenTelemetry traces.

pub mod metrics;
pub mod tracing;

pub use self::metrics::Metrics;
