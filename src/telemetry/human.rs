//! Human log lines (`--log-format text`): `TIME LEVEL span{fields}:...: message fields`, one short
//! line per event for people, files and journald. Never used for JSON lines.
//!
//! Like tracing-subscriber's full format, with three rules that keep lines short:
//! - a span's field is not repeated on a line whose event carries a field of the same name
//!   (`drain started trigger=...` does not also print the shutdown span's `trigger`);
//! - the spans a worker has one of at a time, whose fields identify them — the shutdown and its
//!   phase ([`ANNOUNCED_ONCE`]) — print their fields once, on the first line logged inside them;
//!   later lines name them only (`shutdown:shutdown_phase: ...`). Other spans (a job attempt:
//!   short fields, and many run at once, so each line needs its job id) print them on every line;
//! - fields that say nothing to a reader are left out: empty strings, and `otel.*` / `log.*`
//!   (trace-export and log-bridge plumbing).
//!
//! [`SpanFields`] keeps each span's fields by name for these rules. Colour only when the writer
//! has ANSI escapes enabled (the caller decides: a terminal, and no `NO_COLOR`).

use std::fmt;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// Spans whose fields are printed on the first line logged inside them only.
pub const ANNOUNCED_ONCE: &[&str] = &["shutdown", "shutdown_phase"];

/// Fields by name with their rendered values, in the order recorded (a re-recorded field keeps
/// its place and takes the new value).
#[derive(Default)]
struct Fields {
    items: Vec<(&'static str, String)>,
    /// For a span of [`ANNOUNCED_ONCE`]: its fields have been printed.
    announced: bool,
}

impl Fields {
    fn value(&self, name: &str) -> Option<&str> {
        self.items
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    fn set(&mut self, field: &Field, value: String) {
        let name = field.name();
        if name.starts_with("otel.") || name.starts_with("log.") {
            return;
        }
        match self.items.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.items.push((name, value)),
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        let rendered = if field.name() == "message" {
            value.to_string()
        } else {
            format!("{value:?}")
        };
        self.set(field, rendered);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.set(field, format!("{value:?}"));
    }
}

/// Keeps each span's fields (by name) in its extensions for [`HumanFormat`].
pub struct SpanFields;

impl<S> Layer<S> for SpanFields
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(fields) = span.extensions_mut().get_mut::<Fields>() {
                values.record(fields);
            }
        }
    }
}

const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

fn level_colour(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "\x1b[35m",
        Level::DEBUG => "\x1b[34m",
        Level::INFO => "\x1b[32m",
        Level::WARN => "\x1b[33m",
        Level::ERROR => "\x1b[31m",
    }
}

/// Writes `text` in `style` when colour is on.
fn styled(writer: &mut Writer<'_>, style: &str, text: &dyn fmt::Display) -> fmt::Result {
    if writer.has_ansi_escapes() {
        write!(writer, "{style}{text}{RESET}")
    } else {
        write!(writer, "{text}")
    }
}

/// `name=value` for each field worth printing but the message, space-separated, leaving out the
/// names `skip` has.
fn rendered(fields: &Fields, skip: Option<&Fields>) -> Result<String, fmt::Error> {
    use fmt::Write as _;
    let mut line = String::new();
    for (name, value) in &fields.items {
        if *name == "message" || value == "\"\"" || skip.is_some_and(|s| s.value(name).is_some()) {
            continue;
        }
        if !line.is_empty() {
            line.push(' ');
        }
        write!(line, "{}={value}", name.trim_start_matches("r#"))?;
    }
    Ok(line)
}

/// The human event format; see the module docs.
#[derive(Default)]
pub struct HumanFormat {
    timer: SystemTime,
}

impl<S, N> FormatEvent<S, N> for HumanFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let ansi = writer.has_ansi_escapes();
        if ansi {
            writer.write_str(DIM)?;
        }
        self.timer.format_time(&mut writer)?;
        if ansi {
            writer.write_str(RESET)?;
        }
        let level = event.metadata().level();
        writer.write_char(' ')?;
        styled(
            &mut writer,
            level_colour(level),
            &format_args!("{level:>5}"),
        )?;
        writer.write_char(' ')?;
        let mut own = Fields::default();
        event.record(&mut own);
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let name = span.metadata().name();
                styled(&mut writer, BOLD, &name)?;
                let mut extensions = span.extensions_mut();
                if let Some(fields) = extensions.get_mut::<Fields>() {
                    let once = ANNOUNCED_ONCE.contains(&name);
                    if !(once && fields.announced) {
                        fields.announced = once;
                        let shown = rendered(fields, Some(&own))?;
                        if !shown.is_empty() {
                            styled(&mut writer, BOLD, &"{")?;
                            writer.write_str(&shown)?;
                            styled(&mut writer, BOLD, &"}")?;
                        }
                    }
                }
                drop(extensions);
                styled(&mut writer, DIM, &":")?;
            }
            writer.write_char(' ')?;
        }
        let message = own.value("message").unwrap_or_default();
        let rest = rendered(&own, None)?;
        let gap = if message.is_empty() || rest.is_empty() {
            ""
        } else {
            " "
        };
        writeln!(writer, "{message}{gap}{rest}")
    }
}
