//! Logs and traces: human-readable (see `human`) or JSON log lines (`--log-format`), and
//! OpenTelemetry spans exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `..._TRACES_ENDPOINT`) is set.
//!
//! With no endpoint configured no exporter exists and spans cost only the log layer's bookkeeping.
//! JSON log lines inside a traced span carry its `trace_id` and `span_id`.

use super::human::{HumanFormat, SpanFields};
use super::phase_spans::PhaseSpanTiming;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use std::fmt;
use std::io::IsTerminal as _;
use std::sync::mpsc;
use std::time::Duration;
use tracing_subscriber::fmt::{format::Writer, FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{layer::SubscriberExt as _, util::SubscriberInitExt as _};
use tracing_subscriber::{EnvFilter, Layer as _};

/// How log lines are written to stderr (`--log-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line, with `trace_id` and `span_id` inside a traced span.
    Json,
}

const SERVICE_NAME: &str = "handover";

fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.trim().is_empty())
}

/// Whether the standard OTEL variables ask for trace export.
pub fn export_configured() -> bool {
    let disabled =
        std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
    !disabled
        && (env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") || env_set("OTEL_EXPORTER_OTLP_ENDPOINT"))
}

/// `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES` win; otherwise the service is `handover`.
fn resource() -> Resource {
    let named_by_env = env_set("OTEL_SERVICE_NAME")
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    let mut builder = Resource::builder();
    if !named_by_env {
        builder = builder.with_service_name(SERVICE_NAME);
    }
    builder
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Flushes exported spans; cheap to clone, a no-op when export is off.
#[derive(Clone, Default)]
pub struct TraceFlusher {
    provider: Option<SdkTracerProvider>,
}

impl TraceFlusher {
    /// Exports every finished span, waiting at most `budget`. Blocking work runs on its own
    /// thread so a slow collector can never hold the caller past the budget.
    pub async fn flush(&self, budget: Duration) {
        let Some(provider) = self.provider.clone() else {
            return;
        };
        let (done, finished) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(provider.force_flush());
        });
        let waited = tokio::task::spawn_blocking(move || finished.recv_timeout(budget)).await;
        match waited {
            Ok(Ok(Ok(()))) => tracing::debug!("traces flushed"),
            Ok(Ok(Err(err))) => tracing::warn!(%err, "trace flush failed"),
            _ => tracing::warn!(
                ?budget,
                "trace flush did not finish in time; spans may be lost"
            ),
        }
    }

    /// Flushes and shuts the exporter down at process end.
    pub fn shutdown(self, budget: Duration) {
        let Some(provider) = self.provider else {
            return;
        };
        let (done, finished) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(provider.shutdown_with_timeout(budget));
        });
        let _ = finished.recv_timeout(budget);
    }
}

/// Colour in human log lines only for a person at a terminal: stderr is one, and `NO_COLOR` is
/// unset or empty (<https://no-color.org>). A file, a pipe or journald gets plain text.
fn colour_wanted() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber: log lines to stderr, plus OTLP export when configured.
/// Returns the flusher the phase machine uses in `deregistering`.
pub fn init(format: LogFormat) -> TraceFlusher {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,opentelemetry=warn"));
    let provider = if export_configured() {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
        {
            Ok(exporter) => Some(
                SdkTracerProvider::builder()
                    .with_span_processor(PhaseSpanTiming::new(
                        BatchSpanProcessor::builder(exporter).build(),
                    ))
                    .with_resource(resource())
                    .build(),
            ),
            Err(err) => {
                eprintln!("warning: OpenTelemetry export disabled: {err}");
                None
            }
        }
    } else {
        None
    };
    let otel_layer = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(env!("CARGO_PKG_NAME"))));
    let fmt_layer = match format {
        LogFormat::Text => SpanFields
            .and_then(
                tracing_subscriber::fmt::layer()
                    .with_ansi(colour_wanted())
                    .with_writer(std::io::stderr)
                    .event_format(HumanFormat::default()),
            )
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .map_event_format(WithTraceIds)
            .boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(otel_layer)
        .with(fmt_layer)
        .try_init();
    TraceFlusher { provider }
}

/// Prefixes each JSON line with the `trace_id` and `span_id` of the span it was logged in.
struct WithTraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let context = opentelemetry::Context::current();
        let span = context.span();
        let ids = span.span_context();
        if !ids.is_valid() {
            return self.0.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(
                writer,
                "{{\"trace_id\":\"{}\",\"span_id\":\"{}\",{rest}",
                ids.trace_id(),
                ids.span_id()
            ),
            None => writer.write_str(&line),
        }
    }
}
