//! Embedding handover as a library: a `wordcount` job kind of our own, checkpointing through its
//! `JobContext`, run by a worker built with `App::build`; a SIGTERM hands the job back with its
//! checkpoint, and the next run resumes it from there and completes it.
//!
//! ```sh
//! cargo run --example embed                    # submits a job; press Ctrl-C while it runs
//! cargo run --example embed                    # resumes it from its checkpoint and completes it
//! cargo run --example embed -- --store sqlite://other.db --listen 127.0.0.1:0 --pause-ms 100
//! ```
//!
//! Each run works on the store's unfinished `wordcount` job, submitting one when there is none,
//! and drains by itself once that job is done.

use anyhow::{bail, Context as _};
use async_trait::async_trait;
use handover::app::{App, WorkerConfig};
use handover::jobs::{Handler, JobContext, JobError, JobOutcome, Registry};
use handover::lifecycle::signals::SignalListener;
use handover::lifecycle::{DrainOrder, MachineHandle, Mode, Outcome, Trigger};
use handover::model::{Job, JobId, JobStatus, NewJob};
use handover::store::{JobFilter, SharedStore, StoreUrl};
use handover::telemetry::tracing::LogFormat;
use serde_json::{json, Value};
use std::process::ExitCode;
use std::time::Duration;

/// The kind this program adds to the worker.
const KIND: &str = "wordcount";

/// The text the submitted job counts the words of, one line per step.
const TEXT: &str = "\
It is a truth universally acknowledged, that a single man in possession
of a good fortune, must be in want of a wife.
However little known the feelings or views of such a man may be on his
first entering a neighbourhood, this truth is so well fixed in the minds
of the surrounding families, that he is considered as the rightful
property of some one or other of their daughters.
My dear Mr. Bennet, said his lady to him one day, have you heard that
Netherfield Park is let at last?
Mr. Bennet replied that he had not.
But it is, returned she; for Mrs. Long has just been here, and she told
me all about it.
Mr. Bennet made no answer.
Do you not want to know who has taken it? cried his wife impatiently.
You want to tell me, and I have no objection to hearing it.
This was invitation enough.
Why, my dear, you must know, Mrs. Long says that Netherfield is taken
by a young man of large fortune from the north of England; that he came
down on Monday in a chaise and four to see the place, and was so much
delighted with it, that he agreed with Mr. Morris immediately; that he
is to take possession before Michaelmas, and some of his servants are
to be in the house by the end of next week.
What is his name?
Bingley.
Is he married or single?
Oh! Single, my dear, to be sure! A single man of large fortune; four or
five thousand a year. What a fine thing for our girls!
How so? How can it affect them?
My dear Mr. Bennet, replied his wife, how can you be so tiresome! You
must know that I am thinking of his marrying one of them.
Is that his design in settling here?
Design! Nonsense, how can you talk so! But it is very likely that he
may fall in love with one of them, and therefore you must visit him as
soon as he comes.
I see no occasion for that. You and the girls may go, or you may send
them by themselves, which perhaps will be still better, for as you are
as handsome as any of them, Mr. Bingley may like you the best of the party.
My dear, you flatter me.
I certainly have had my share of beauty, but I do not pretend to be
anything extraordinary now.
When a woman has five grown-up daughters, she ought to give over
thinking of her own beauty.
";

/// Counts the words of `payload.text`, one line per step, pausing `payload.pause_ms` per line
/// (standing in for real work), with a checkpoint `{"line", "words"}` every
/// `payload.checkpoint_every` lines. Result: `{"lines", "words"}`.
struct WordCount;

/// What a `wordcount` job is asked to do.
struct Payload {
    text: String,
    pause: Duration,
    checkpoint_every: usize,
}

impl Payload {
    fn parse(payload: &Value) -> Result<Payload, String> {
        let text = payload["text"]
            .as_str()
            .ok_or("payload.text must be a string")?;
        let pause_ms = payload["pause_ms"].as_u64().unwrap_or(100);
        let checkpoint_every = payload["checkpoint_every"].as_u64().unwrap_or(5);
        if checkpoint_every == 0 {
            return Err("payload.checkpoint_every must be at least 1".into());
        }
        Ok(Payload {
            text: text.to_string(),
            pause: Duration::from_millis(pause_ms),
            checkpoint_every: checkpoint_every as usize,
        })
    }
}

/// Where a job stands: lines done and the words counted in them.
fn position(checkpoint: &Value) -> (usize, u64) {
    let line = checkpoint["line"].as_u64().unwrap_or(0) as usize;
    let words = checkpoint["words"].as_u64().unwrap_or(0);
    (line, words)
}

#[async_trait]
impl Handler for WordCount {
    fn kind(&self) -> &str {
        KIND
    }

    fn validate(&self, payload: &Value) -> Result<(), String> {
        Payload::parse(payload).map(|_| ())
    }

    fn progress(&self, payload: &Value, checkpoint: &Value) -> Option<f64> {
        let lines = payload["text"].as_str()?.lines().count().max(1);
        Some(position(checkpoint).0 as f64 / lines as f64)
    }

    async fn run(&self, ctx: JobContext) -> Result<JobOutcome, JobError> {
        let job = Payload::parse(ctx.payload()).map_err(JobError::Failed)?;
        let lines: Vec<&str> = job.text.lines().collect();
        let id = ctx.job_id();
        let (mut line, mut words) = match ctx.resume_checkpoint() {
            Some(checkpoint) => {
                let (line, words) = position(checkpoint);
                println!(
                    "job {id}: resuming from checkpoint at line {line} of {} ({words} words so far)",
                    lines.len()
                );
                (line, words)
            }
            None => {
                println!("job {id}: starting at line 0 of {}", lines.len());
                (0, 0)
            }
        };
        while line < lines.len() {
            if ctx.abandoned() {
                // The lease is gone (or the shutdown was forced): write nothing more.
                return Err(JobError::LeaseLost);
            }
            if ctx.stop_requested() {
                // A boundary: everything up to `line` is counted, so this checkpoint is exact.
                ctx.save_checkpoint(json!({"line": line, "words": words}))
                    .await?;
                println!("job {id}: stopping at line {line} ({words} words); handing it back");
                return Ok(JobOutcome::Interrupted);
            }
            // The "work" for one line; a stop request cuts it short and the line is redone later.
            tokio::select! {
                _ = tokio::time::sleep(job.pause) => {}
                _ = ctx.stopping() => continue,
            }
            words += lines[line].split_whitespace().count() as u64;
            line += 1;
            if line % job.checkpoint_every == 0 && line < lines.len() {
                ctx.save_checkpoint(json!({"line": line, "words": words}))
                    .await?;
                println!("job {id}: checkpoint at line {line} ({words} words)");
            }
        }
        println!("job {id}: done, {words} words in {line} lines");
        Ok(JobOutcome::Completed(
            json!({"lines": lines.len(), "words": words}),
        ))
    }
}

/// Command-line options: `--store URL`, `--listen ADDR`, `--pause-ms N`.
struct Options {
    store: StoreUrl,
    listen: String,
    pause_ms: u64,
}

impl Options {
    fn from_args() -> anyhow::Result<Options> {
        let mut options = Options {
            store: "sqlite://embed.db".parse().map_err(anyhow::Error::msg)?,
            listen: "127.0.0.1:0".into(),
            pause_ms: 100,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let value = args
                .next()
                .with_context(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--store" => options.store = value.parse().map_err(anyhow::Error::msg)?,
                "--listen" => options.listen = value,
                "--pause-ms" => options.pause_ms = value.parse().context("--pause-ms")?,
                other => bail!("unknown option {other}; use --store, --listen or --pause-ms"),
            }
        }
        Ok(options)
    }
}

/// The store's unfinished `wordcount` job, or a new one.
async fn job_to_run(store: &SharedStore, pause_ms: u64) -> anyhow::Result<JobId> {
    let jobs = store.list_jobs(&JobFilter::default()).await?;
    let unfinished = jobs.iter().find(|job: &&Job| {
        job.kind == KIND
            && matches!(
                job.status,
                JobStatus::Pending | JobStatus::Running | JobStatus::Failed
            )
    });
    if let Some(job) = unfinished {
        let checkpoint = job
            .checkpoint
            .as_ref()
            .map_or("none".to_string(), Value::to_string);
        println!(
            "job {}: found {} in the store (checkpoint {checkpoint})",
            job.id, job.status
        );
        return Ok(job.id);
    }
    let payload = json!({"text": TEXT, "pause_ms": pause_ms, "checkpoint_every": 5});
    WordCount.validate(&payload).map_err(anyhow::Error::msg)?;
    let ids = store.submit(&[NewJob::new(KIND, payload)]).await?;
    println!("job {}: submitted", ids[0]);
    Ok(ids[0])
}

/// Drains the worker once `job` is finished; returns early if the worker starts stopping for
/// another reason (a signal).
async fn drain_when_done(store: SharedStore, job: JobId, machine: MachineHandle) {
    let mut status = machine.subscribe();
    loop {
        if status.borrow().phase.is_shutting_down() {
            return;
        }
        if let Ok(Some(row)) = store.get_job(job).await {
            if matches!(
                row.status,
                JobStatus::Completed | JobStatus::Dead | JobStatus::Cancelled
            ) {
                break;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = status.changed() => {}
        }
    }
    // The embedding program asks for the drain itself, as an operator would over HTTP.
    machine
        .drain(DrainOrder {
            trigger: Trigger::Http,
            mode: Mode::Handoff,
            requested_by: Some("examples/embed".into()),
            reason: Some(format!("job {job} is done")),
        })
        .await;
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let options = Options::from_args()?;
    // Log lines to stderr (and OTLP trace export when OTEL_EXPORTER_OTLP_ENDPOINT is set).
    let traces = handover::telemetry::tracing::init(LogFormat::Text);
    // Installed first, so a SIGTERM from here on drains the worker instead of killing the process.
    let signals = SignalListener::install()?;

    let store = handover::store::open_migrated(&options.store)
        .await
        .with_context(|| format!("cannot open {}", options.store))?;
    let job = job_to_run(&store, options.pause_ms).await?;

    let mut config = WorkerConfig::new(options.store.clone());
    config.listen = options.listen;
    config.name = "embed-example".into();
    config.concurrency = 1;
    config.grace = Duration::from_secs(10);
    let mut app = App::build(config, Registry::new().with(WordCount)).await?;
    app.set_trace_flusher(traces.clone());
    app.forward_signals(signals);
    println!(
        "worker {} running on http://{} (admin token {}); send SIGTERM or press Ctrl-C to hand the job back",
        app.worker_id, app.addr, app.admin_token
    );

    let machine = app.handle();
    let (summary, ()) = tokio::join!(
        app.run_until_stopped(),
        drain_when_done(store.clone(), job, machine)
    );
    traces.shutdown(Duration::from_millis(500));

    let row = store.get_job(job).await?.context("the job disappeared")?;
    println!(
        "stopped ({}, trigger {}); job {job} is {}, checkpoint {}, result {}",
        summary.outcome(),
        summary.record.trigger,
        row.status,
        row.checkpoint.unwrap_or(Value::Null),
        row.result.unwrap_or(Value::Null),
    );
    let clean = summary.outcome() == Outcome::Clean
        && summary.unwritten.is_empty()
        && summary.failed_tasks.is_empty();
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
