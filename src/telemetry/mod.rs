//! What a worker tells the outside: Prometheus metrics, logs and OpenTelemetry traces, and the
//! typed events that write all three together.

// Public for other layers and the tests, not part of the embedding surface.
#[doc(hidden)]
pub mod events;
// Public for other layers and the tests, not part of the embedding surface.
#[doc(hidden)]
pub mod human;
// Public for other layers and the tests, not part of the embedding surface.
#[doc(hidden)]
pub mod metrics;
// Public for the tests, not part of the embedding surface.
#[doc(hidden)]
pub mod phase_spans;
pub mod tracing;

// Public for other layers and the tests, not part of the embedding surface.
#[doc(hidden)]
pub use self::metrics::Metrics;
