//! `handover cancel` and `handover retry`: one line per job saying what happened to it; exit 1 if
//! any job was refused or not found (the others are still done).

use super::{open_store, EXIT_ERROR};
use crate::cli::{CancelArgs, RetryArgs};
use crate::model::{CancelOutcome, RetryOutcome};
use anyhow::anyhow;
use std::process::ExitCode;

pub async fn cancel(args: CancelArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(&args.store.store).await?;
    let outcomes = store
        .cancel(&args.jobs)
        .await
        .map_err(|e| anyhow!("cancelling in {}: {e}", args.store.store))?;
    let mut refused = false;
    for (id, outcome) in args.jobs.iter().zip(outcomes) {
        match outcome {
            CancelOutcome::Cancelled => println!("job {id}: cancelled"),
            CancelOutcome::Requested { owner } => {
                println!("job {id}: cancel requested; worker {owner} is stopping it")
            }
            CancelOutcome::Finished(status) => {
                refused = true;
                eprintln!("error: job {id} is {status}; there is nothing to cancel");
            }
            CancelOutcome::NotFound => {
                refused = true;
                eprintln!("error: job {id} not found");
            }
        }
    }
    Ok(exit(refused))
}

pub async fn retry(args: RetryArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(&args.store.store).await?;
    let outcomes = store
        .retry(&args.jobs, args.from_scratch)
        .await
        .map_err(|e| anyhow!("retrying in {}: {e}", args.store.store))?;
    let mut refused = false;
    for (id, outcome) in args.jobs.iter().zip(outcomes) {
        match outcome {
            RetryOutcome::Retried if args.from_scratch => {
                println!("job {id}: pending again, from scratch")
            }
            RetryOutcome::Retried => {
                println!("job {id}: pending again, resuming from its checkpoint")
            }
            RetryOutcome::Refused(status) => {
                refused = true;
                eprintln!("error: job {id} is {status}; only dead, failed and cancelled jobs can be retried");
            }
            RetryOutcome::NotFound => {
                refused = true;
                eprintln!("error: job {id} not found");
            }
        }
    }
    Ok(exit(refused))
}

fn exit(refused: bool) -> ExitCode {
    if refused {
        ExitCode::from(EXIT_ERROR)
    } else {
        ExitCode::SUCCESS
    }
}
