//! `handover submit`: validate payloads up front (nothing is written if one is bad), then insert in
//! batches, printing the new ids one a line.

use super::open_store;
use crate::cli::SubmitArgs;
use crate::jobs::{validate_kind, Registry};
use crate::store::NewJob;
use crate::text;
use anyhow::{anyhow, bail, Context};
use serde_json::{Map, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::ExitCode;

/// Jobs per transaction.
const BATCH: usize = 10_000;

pub async fn run(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    validate_kind(&args.kind).map_err(|e| anyhow!(e))?;
    let payloads = collect_payloads(&args)?;
    // The same rules as `POST /api/jobs`: no control characters but tab and newlines in any string.
    for (index, payload) in payloads.iter().enumerate() {
        if let Err(message) = text::check_payload(payload) {
            return Ok(text::refuse_cli(&if payloads.len() == 1 {
                message
            } else {
                format!("job {} of {}: {message}", index + 1, payloads.len())
            }));
        }
    }
    let registry = Registry::builtin();
    match registry.get(&args.kind) {
        Some(handler) => {
            for (index, payload) in payloads.iter().enumerate() {
                handler.validate(payload).map_err(|e| {
                    if payloads.len() == 1 {
                        anyhow!(e)
                    } else {
                        anyhow!("job {} of {}: {e}", index + 1, payloads.len())
                    }
                })?;
            }
        }
        None if args.kind == "exec" => {}
        None => tracing::warn!(
            kind = %args.kind,
            "no built-in handler for this kind; only workers that register it will run these jobs"
        ),
    }
    let store = open_store(&args.store.store).await?;
    if !args.allow_unknown_kind {
        let unknown = crate::jobs::unknown_kind(&store, &args.kind)
            .await
            .map_err(|e| {
                anyhow!(
                    "reading the kinds workers serve from {}: {e}",
                    args.store.store
                )
            })?;
        if let Some(message) = unknown {
            return Ok(text::refuse_cli(&format!(
                "{message}; --allow-unknown-kind submits it anyway"
            )));
        }
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for chunk in payloads.chunks(BATCH) {
        let jobs: Vec<NewJob> = chunk
            .iter()
            .map(|payload| NewJob {
                kind: args.kind.clone(),
                payload: payload.clone(),
                priority: args.priority,
                max_attempts: args.max_attempts,
            })
            .collect();
        let ids = store
            .submit(&jobs)
            .await
            .map_err(|e| anyhow!("submitting to {}: {e}", args.store.store))?;
        for id in ids {
            writeln!(out, "{id}")?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn collect_payloads(args: &SubmitArgs) -> anyhow::Result<Vec<Value>> {
    if let Some(path) = &args.from_file {
        if args.count != 1 {
            bail!("--count and --from-file cannot be combined; the file gives one job per line");
        }
        if !args.command.is_empty() {
            bail!("a COMMAND after -- cannot be combined with --from-file");
        }
        return read_payload_lines(path);
    }
    let mut payload = match &args.payload {
        Some(text) => serde_json::from_str::<Value>(text)
            .map_err(|e| anyhow!("--payload is not valid JSON: {e}"))?,
        None => Value::Object(Map::new()),
    };
    if !args.command.is_empty() {
        if args.kind != "exec" {
            bail!(
                "a COMMAND after -- is only for --kind exec (got --kind {})",
                args.kind
            );
        }
        let Value::Object(fields) = &mut payload else {
            bail!("--payload must be a JSON object when a COMMAND is given");
        };
        if fields.contains_key("cmd") {
            bail!("give the command either after -- or as \"cmd\" in --payload, not both");
        }
        fields.insert("cmd".into(), Value::from(args.command.clone()));
    }
    let count = usize::try_from(args.count).context("--count is too large")?;
    Ok(vec![payload; count])
}

fn read_payload_lines(path: &std::path::Path) -> anyhow::Result<Vec<Value>> {
    let reader: Box<dyn Read> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?,
        )
    };
    let mut payloads = Vec::new();
    for (index, line) in BufReader::new(reader).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let payload = serde_json::from_str(&line).map_err(|e| {
            anyhow!(
                "line {} of {}: not a JSON payload: {e}; nothing was submitted",
                index + 1,
                path.display()
            )
        })?;
        payloads.push(payload);
    }
    if payloads.is_empty() {
        bail!("{} has no jobs (one JSON payload per line)", path.display());
    }
    Ok(payloads)
}
