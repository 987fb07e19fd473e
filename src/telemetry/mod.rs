//! What a worker tells the outside: Prometheus metrics and logs.

pub mod logging;
pub mod metrics;

pub use self::metrics::Metrics;
