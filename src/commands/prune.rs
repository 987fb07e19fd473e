//! `handover prune`: one retention pass by hand, under the same lock and in the same small batches
//! as a worker's pruner, then one line per table with the rows deleted (or one JSON object).

use super::open_store;
use crate::cli::PruneArgs;
use crate::store::prune::{prune_pass, PRUNE_BATCH};
use anyhow::anyhow;
use std::process::ExitCode;

pub async fn run(args: PruneArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(&args.store.store).await?;
    let report = prune_pass(&*store, &args.retention.policy(), PRUNE_BATCH, |_| {})
        .await
        .map_err(|e| anyhow!("retention pass on {} failed: {e}", args.store.store))?
        .ok_or_else(|| {
            anyhow!(
                "another retention pass (a worker's pruner, or another prune) is running on {}; try again later",
                args.store.store
            )
        })?;
    if args.json {
        let mut object = serde_json::Map::new();
        for (table, rows) in report.by_table() {
            object.insert(table.as_str().into(), rows.into());
        }
        println!("{}", serde_json::Value::Object(object));
    } else {
        for (table, rows) in report.by_table() {
            println!("{:<16} {rows:>10} deleted", table.as_str());
        }
    }
    Ok(ExitCode::SUCCESS)
}
