//! The `noop` kind: completes at once, for measuring the queue itself.

use super::{Handler, JobContext, JobError, JobOutcome};
use async_trait::async_trait;
use serde_json::Value;

/// The `noop` kind: completes at once with a null result.
pub struct NoopHandler;

#[async_trait]
impl Handler for NoopHandler {
    fn kind(&self) -> &str {
        "noop"
    }

    async fn run(&self, _ctx: JobContext) -> Result<JobOutcome, JobError> {
        Ok(JobOutcome::Completed(Value::Null))
    }
}
