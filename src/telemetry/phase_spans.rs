//! Exported shutdown-phase spans last exactly as long as the phase machine measured the phase.
//!
//! The tracing layer stamps a span's start and end with its own clock readings, a few
//! microseconds away from the machine's. A thread preempted between the two readings (a busy
//! node, a drain waking every task at once) stretched a span by milliseconds past the
//! `handover_shutdown_phase_duration_seconds` observation of the same phase. This processor
//! closes that gap by construction: a phase span's end is its start plus the `duration_ms` the
//! machine recorded on it, the same figure the metric, the log line and the shutdown record carry.

use opentelemetry::{Context, Value};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};
use opentelemetry_sdk::Resource;
use std::time::Duration;

/// The name every exported shutdown-phase span starts with (`shutdown.draining`, ...).
pub const PHASE_SPAN_PREFIX: &str = "shutdown.";
/// The attribute on which the phase machine records a phase's measured length.
pub const DURATION_ATTRIBUTE: &str = "duration_ms";

/// Wraps the exporting processor; passes every span on, phase spans with their end set from
/// their recorded duration.
#[derive(Debug)]
pub struct PhaseSpanTiming<P> {
    next: P,
}

impl<P> PhaseSpanTiming<P> {
    pub fn new(next: P) -> Self {
        PhaseSpanTiming { next }
    }
}

/// Sets a phase span's end to its start plus its recorded duration; leaves any other span alone.
pub fn end_at_measured_duration(span: &mut SpanData) {
    if !span.name.starts_with(PHASE_SPAN_PREFIX) {
        return;
    }
    let recorded = span
        .attributes
        .iter()
        .find(|kv| kv.key.as_str() == DURATION_ATTRIBUTE)
        .and_then(|kv| match kv.value {
            Value::F64(millis) => Duration::try_from_secs_f64(millis / 1000.0).ok(),
            _ => None,
        });
    if let Some(lived) = recorded {
        span.end_time = span.start_time + lived;
    }
}

impl<P: SpanProcessor> SpanProcessor for PhaseSpanTiming<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.next.on_start(span, cx);
    }

    fn on_end(&self, mut span: SpanData) {
        end_at_measured_duration(&mut span);
        self.next.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.next.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.next.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.next.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status};
    use opentelemetry::{InstrumentationScope, KeyValue};
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use std::time::SystemTime;

    fn span(name: &'static str, attributes: Vec<KeyValue>) -> SpanData {
        let start_time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        SpanData {
            span_context: SpanContext::empty_context(),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: name.into(),
            start_time,
            // Closed 3 ms after the phase ended (a preempted thread).
            end_time: start_time + Duration::from_micros(7_250),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: InstrumentationScope::builder("handover").build(),
        }
    }

    #[test]
    fn a_phase_span_lasts_its_recorded_duration_and_other_spans_are_untouched() {
        let mut phase = span(
            "shutdown.draining",
            vec![KeyValue::new(DURATION_ATTRIBUTE, 4.2505)],
        );
        end_at_measured_duration(&mut phase);
        let lasted = phase.end_time.duration_since(phase.start_time).unwrap();
        assert_eq!(lasted, Duration::from_nanos(4_250_500));

        for mut other in [
            span("shutdown.releasing", vec![]),
            span(
                "shutdown.releasing",
                vec![KeyValue::new(DURATION_ATTRIBUTE, "4.2")],
            ),
            span("job.attempt", vec![KeyValue::new(DURATION_ATTRIBUTE, 4.2)]),
            span(
                "shutdown.checkpointing",
                vec![KeyValue::new(DURATION_ATTRIBUTE, -1.0)],
            ),
        ] {
            let before = other.end_time;
            end_at_measured_duration(&mut other);
            assert_eq!(other.end_time, before, "{}", other.name);
        }
    }
}
