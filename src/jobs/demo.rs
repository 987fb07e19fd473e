//! The `demo` kind (SPEC §6): a resumable SHA-256 hash chain whose digest proves that interrupted,
//! resumed runs compute exactly what one uninterrupted run does.

use super::{CheckpointError, Handler, JobContext, JobError, JobOutcome};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Checkpoint interval when the payload does not give one.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 100_000;
/// How many hashes the blocking loop computes between looks at the abandon flag.
const ABANDON_POLL_EVERY: u64 = 4096;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DemoPayload {
    seed: String,
    iterations: u64,
    #[serde(default = "default_checkpoint_every")]
    checkpoint_every: u64,
}

fn default_checkpoint_every() -> u64 {
    DEFAULT_CHECKPOINT_EVERY
}

#[derive(Debug, Deserialize)]
struct DemoCheckpoint {
    i: u64,
    digest: String,
}

fn parse_payload(payload: &Value) -> Result<DemoPayload, String> {
    let parsed: DemoPayload = serde_json::from_value(payload.clone()).map_err(|e| {
        format!(
            "invalid demo payload: {e}; expected {{\"seed\": STRING, \"iterations\": N, \"checkpoint_every\": K}}"
        )
    })?;
    if parsed.checkpoint_every == 0 {
        return Err("invalid demo payload: checkpoint_every must be at least 1".into());
    }
    Ok(parsed)
}

fn parse_checkpoint(checkpoint: &Value, iterations: u64) -> Result<(u64, [u8; 32]), String> {
    let parsed: DemoCheckpoint = serde_json::from_value(checkpoint.clone())
        .map_err(|e| format!("invalid demo checkpoint {checkpoint}: {e}"))?;
    let mut digest = [0u8; 32];
    hex::decode_to_slice(&parsed.digest, &mut digest)
        .map_err(|e| format!("invalid demo checkpoint digest: {e}"))?;
    if parsed.i > iterations {
        return Err(format!(
            "demo checkpoint i={} is past iterations={iterations}",
            parsed.i
        ));
    }
    Ok((parsed.i, digest))
}

/// `d0 = SHA-256(seed)`.
pub fn chain_start(seed: &str) -> [u8; 32] {
    Sha256::digest(seed.as_bytes()).into()
}

/// Applies `steps` rounds of `d = SHA-256(d)`; stops early (returning None) when `abandoned()` turns true.
pub fn chain_steps(
    mut digest: [u8; 32],
    steps: u64,
    abandoned: impl Fn() -> bool,
) -> Option<[u8; 32]> {
    for step in 0..steps {
        if step % ABANDON_POLL_EVERY == 0 && abandoned() {
            return None;
        }
        digest = Sha256::digest(digest).into();
    }
    Some(digest)
}

/// The digest of an uninterrupted run, for checking results.
pub fn expected_digest(seed: &str, iterations: u64) -> String {
    hex::encode(chain_steps(chain_start(seed), iterations, || false).expect("never abandoned"))
}

/// The `demo` kind: a resumable SHA-256 hash chain.
pub struct DemoHandler;

#[async_trait]
impl Handler for DemoHandler {
    fn kind(&self) -> &str {
        "demo"
    }

    fn validate(&self, payload: &Value) -> Result<(), String> {
        parse_payload(payload).map(|_| ())
    }

    fn progress(&self, payload: &Value, checkpoint: &Value) -> Option<f64> {
        let iterations = payload.get("iterations")?.as_u64()?;
        let done = checkpoint.get("i")?.as_u64()?;
        (iterations > 0).then(|| (done as f64 / iterations as f64).min(1.0))
    }

    async fn run(&self, ctx: JobContext) -> Result<JobOutcome, JobError> {
        let payload = parse_payload(ctx.payload()).map_err(JobError::Failed)?;
        let (mut i, mut digest) = match ctx.resume_checkpoint() {
            Some(checkpoint) => {
                parse_checkpoint(checkpoint, payload.iterations).map_err(JobError::Failed)?
            }
            None => (0, chain_start(&payload.seed)),
        };
        while i < payload.iterations {
            if ctx.stop_requested() {
                // The last saved checkpoint (or the start) is exactly where we are.
                return Ok(JobOutcome::Interrupted);
            }
            let boundary = (i / payload.checkpoint_every + 1) * payload.checkpoint_every;
            let until = boundary.min(payload.iterations);
            let steps = until - i;
            let worker_ctx = ctx.clone();
            digest = tokio::task::spawn_blocking(move || {
                chain_steps(digest, steps, || worker_ctx.abandoned())
            })
            .await
            .map_err(|e| JobError::Failed(format!("hash task failed: {e}")))?
            .ok_or(JobError::LeaseLost)?;
            i = until;
            if i < payload.iterations {
                let checkpoint = json!({ "i": i, "digest": hex::encode(digest) });
                match ctx.save_checkpoint(checkpoint).await {
                    Ok(()) => {
                        if ctx.stop_requested() {
                            return Ok(JobOutcome::Interrupted);
                        }
                    }
                    Err(CheckpointError::LeaseLost) => return Err(JobError::LeaseLost),
                    Err(CheckpointError::Unavailable(err)) => {
                        // Keep hashing: an older checkpoint only costs recomputation, never correctness.
                        tracing::warn!(job_id = ctx.job_id(), %err, "checkpoint not saved; continuing");
                    }
                }
            }
        }
        Ok(JobOutcome::Completed(
            json!({ "digest": hex::encode(digest) }),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_matches_sha256_definition() {
        let d0 = chain_start("abc");
        assert_eq!(
            hex::encode(d0),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let d1: [u8; 32] = Sha256::digest(d0).into();
        assert_eq!(chain_steps(d0, 1, || false).unwrap(), d1);
        assert_eq!(expected_digest("abc", 0), hex::encode(d0));
    }

    #[test]
    fn resuming_from_any_split_gives_the_same_digest() {
        let whole = expected_digest("seed", 1000);
        for split in [1, 499, 999] {
            let mid = chain_steps(chain_start("seed"), split, || false).unwrap();
            let end = chain_steps(mid, 1000 - split, || false).unwrap();
            assert_eq!(hex::encode(end), whole);
        }
    }

    #[test]
    fn abandoning_stops_the_loop() {
        assert!(chain_steps(chain_start("x"), 1_000_000, || true).is_none());
    }

    #[test]
    fn payload_validation_names_the_problem() {
        assert!(parse_payload(&json!({"seed": "a", "iterations": 10})).is_ok());
        for bad in [
            json!({"iterations": 10}),
            json!({"seed": 5, "iterations": 10}),
            json!({"seed": "a", "iterations": -1}),
            json!({"seed": "a", "iterations": 10, "checkpoint_every": 0}),
            json!({"seed": "a", "iterations": 10, "extra": true}),
            json!("text"),
        ] {
            let err = parse_payload(&bad).unwrap_err();
            assert!(err.starts_with("invalid demo payload"), "{bad}: {err}");
        }
    }

    #[test]
    fn checkpoints_past_the_end_or_malformed_are_rejected() {
        assert!(parse_checkpoint(&json!({"i": 11, "digest": "00".repeat(32)}), 10).is_err());
        assert!(parse_checkpoint(&json!({"i": 1, "digest": "zz"}), 10).is_err());
        assert_eq!(
            parse_checkpoint(&json!({"i": 5, "digest": "00".repeat(32)}), 10)
                .unwrap()
                .0,
            5
        );
    }
}
