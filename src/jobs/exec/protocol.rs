//! The child's output and its fd-3 checkpoint lines: bounded tails of stdout and stderr, lines
//! split without buffering an over-long one, each line read as a checkpoint or ignored with a
//! note, and the newest checkpoint saved whenever the store is free.

use crate::jobs::{CheckpointError, JobContext, JobError};
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

/// Bytes of stdout and of stderr kept per attempt (the last ones).
pub const OUTPUT_TAIL: usize = 64 * 1024;
/// Longest checkpoint line accepted on fd 3 (without its newline).
pub const MAX_CHECKPOINT_LINE: usize = 64 * 1024;
const READ_CHUNK: usize = 16 * 1024;
/// Ignored checkpoint lines logged per attempt (all are counted).
const LOGGED_NOTES: u64 = 10;

/// The last `cap` bytes of a stream, in bounded memory however much is written.
#[derive(Debug)]
pub(super) struct Tail {
    buf: Vec<u8>,
    cap: usize,
    /// Bytes the child wrote (notes excluded).
    pub(super) total: u64,
}

impl Tail {
    pub(super) fn new(cap: usize) -> Tail {
        Tail {
            buf: Vec::new(),
            cap,
            total: 0,
        }
    }

    pub(super) fn push(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        self.keep(data);
    }

    /// Adds a line of our own (not counted as the child's output), on a line of its own.
    fn note(&mut self, line: &str) {
        if self.buf.last().is_some_and(|b| *b != b'\n') {
            self.keep(b"\n");
        }
        self.keep(line.as_bytes());
        self.keep(b"\n");
    }

    fn keep(&mut self, data: &[u8]) {
        if data.len() >= self.cap {
            self.buf.clear();
            self.buf.extend_from_slice(&data[data.len() - self.cap..]);
            return;
        }
        self.buf.extend_from_slice(data);
        // Trim only past twice the cap, so trimming costs O(1) per byte written.
        if self.buf.len() > 2 * self.cap {
            self.buf.drain(..self.buf.len() - self.cap);
        }
    }

    /// The last `limit` bytes (at most the cap) as text, starting on a character boundary.
    pub(super) fn text(&self, limit: usize) -> String {
        let limit = limit.min(self.cap);
        let bytes = &self.buf[self.buf.len().saturating_sub(limit)..];
        let cut = bytes.len() < self.buf.len() || (self.total as usize) > bytes.len();
        let skip = if cut {
            bytes
                .iter()
                .take(3)
                .take_while(|b| (**b & 0xC0) == 0x80)
                .count()
        } else {
            0
        };
        String::from_utf8_lossy(&bytes[skip..]).into_owned()
    }
}

/// What [`LineSplitter`] found.
#[derive(Debug, PartialEq)]
enum Line {
    Complete(Vec<u8>),
    /// A line longer than the limit (its full length); its bytes were not kept.
    TooLong(usize),
}

/// Splits a byte stream into lines of at most `max` bytes without ever holding more than that.
struct LineSplitter {
    buf: Vec<u8>,
    max: usize,
    /// Bytes of an over-long line seen so far, while skipping to its end.
    skipping: Option<usize>,
}

impl LineSplitter {
    fn new(max: usize) -> LineSplitter {
        LineSplitter {
            buf: Vec::new(),
            max,
            skipping: None,
        }
    }

    fn feed(&mut self, mut data: &[u8], lines: &mut Vec<Line>) {
        while !data.is_empty() {
            let (part, rest, ends) = match data.iter().position(|b| *b == b'\n') {
                Some(at) => (&data[..at], &data[at + 1..], true),
                None => (data, &data[data.len()..], false),
            };
            data = rest;
            if let Some(seen) = self.skipping.as_mut() {
                *seen += part.len();
            } else if self.buf.len() + part.len() > self.max {
                self.skipping = Some(self.buf.len() + part.len());
                self.buf = Vec::new();
            } else {
                self.buf.extend_from_slice(part);
            }
            if ends {
                lines.push(self.take());
            }
        }
    }

    /// The last line, if the stream ended without a newline.
    fn finish(&mut self) -> Option<Line> {
        (self.skipping.is_some() || !self.buf.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> Line {
        match self.skipping.take() {
            Some(len) => Line::TooLong(len),
            None => Line::Complete(std::mem::take(&mut self.buf)),
        }
    }
}

/// A checkpoint line: `Ok(None)` for a blank line (ignored silently), `Err(why)` for a bad one.
fn parse_checkpoint_line(line: &[u8]) -> Result<Option<Value>, String> {
    let text = line.trim_ascii();
    if text.is_empty() {
        return Ok(None);
    }
    match serde_json::from_slice::<Value>(text) {
        Ok(Value::Null) => Err("null is not a checkpoint".into()),
        Ok(value) => Ok(Some(value)),
        Err(err) => Err(format!("not JSON ({err})")),
    }
}

/// What an attempt's child wrote, shared by the tasks that read it.
pub(super) struct Output {
    stdout: Mutex<Tail>,
    stderr: Mutex<Tail>,
    ignored_lines: AtomicU64,
}

#[derive(Clone, Copy)]
pub(super) enum Stream {
    Stdout,
    Stderr,
}

impl Output {
    pub(super) fn new() -> Output {
        Output {
            stdout: Mutex::new(Tail::new(OUTPUT_TAIL)),
            stderr: Mutex::new(Tail::new(OUTPUT_TAIL)),
            ignored_lines: AtomicU64::new(0),
        }
    }

    pub(super) fn tail(&self, stream: Stream) -> MutexGuard<'_, Tail> {
        let tail = match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        };
        tail.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checkpoint lines ignored so far.
    pub(super) fn ignored_lines(&self) -> u64 {
        self.ignored_lines.load(Ordering::Relaxed)
    }

    fn ignored_line(&self, number: u64, why: &str) {
        let count = self.ignored_lines.fetch_add(1, Ordering::Relaxed) + 1;
        if count <= LOGGED_NOTES {
            tracing::warn!(line = number, reason = %why, "ignored a checkpoint line on fd 3");
        }
        self.tail(Stream::Stderr).note(&format!(
            "handover: ignored checkpoint line {number}: {why}"
        ));
    }
}

/// Copies a stream into its tail until EOF.
pub(super) async fn capture(mut pipe: impl AsyncRead + Unpin, output: Arc<Output>, stream: Stream) {
    let mut chunk = vec![0u8; READ_CHUNK];
    while let Ok(n @ 1..) = pipe.read(&mut chunk).await {
        output.tail(stream).push(&chunk[..n]);
    }
}

/// Reads checkpoint lines from fd 3 until EOF, publishing each valid one as the newest.
pub(super) async fn read_checkpoints(
    mut pipe: impl AsyncRead + Unpin,
    newest: watch::Sender<Option<Value>>,
    output: Arc<Output>,
) {
    let mut splitter = LineSplitter::new(MAX_CHECKPOINT_LINE);
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut lines = Vec::new();
    let mut number = 0u64;
    loop {
        let ended = match pipe.read(&mut chunk).await {
            Ok(n @ 1..) => {
                splitter.feed(&chunk[..n], &mut lines);
                false
            }
            _ => {
                lines.extend(splitter.finish());
                true
            }
        };
        for line in lines.drain(..) {
            number += 1;
            let parsed = match line {
                Line::Complete(bytes) => parse_checkpoint_line(&bytes),
                Line::TooLong(len) => Err(format!(
                    "{len} bytes, over the {MAX_CHECKPOINT_LINE}-byte limit"
                )),
            };
            match parsed {
                Ok(Some(checkpoint)) => {
                    newest.send_replace(Some(checkpoint));
                }
                Ok(None) => {}
                Err(why) => output.ignored_line(number, &why),
            }
        }
        if ended {
            return;
        }
    }
}

/// Saves the newest checkpoint whenever there is one, until the reader is done.
pub(super) async fn save_checkpoints(
    ctx: JobContext,
    mut newest: watch::Receiver<Option<Value>>,
) -> Result<(), JobError> {
    while newest.changed().await.is_ok() {
        let Some(checkpoint) = newest.borrow_and_update().clone() else {
            continue;
        };
        match ctx.save_checkpoint(checkpoint).await {
            Ok(()) => {}
            Err(CheckpointError::LeaseLost) => return Err(JobError::LeaseLost),
            Err(CheckpointError::Unavailable(err)) => {
                // The next checkpoint will be tried; an older one only costs recomputation.
                tracing::warn!(%err, "checkpoint not saved; the child keeps running");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_tail_keeps_the_last_bytes_in_bounded_memory() {
        let mut tail = Tail::new(10);
        for _ in 0..1000 {
            tail.push(b"0123456");
            assert!(tail.buf.len() <= 20);
        }
        tail.push(b"end");
        assert_eq!(tail.text(100), "0123456end");
        assert_eq!(tail.text(3), "end");
        assert_eq!(tail.total, 7003);
        tail.push(&[b'x'; 50]);
        assert_eq!(tail.text(100), "x".repeat(10));
        let mut small = Tail::new(100);
        small.push(b"ab");
        assert_eq!(small.text(100), "ab");
    }

    #[test]
    fn a_tail_starts_on_a_character_boundary_and_keeps_notes_on_their_own_line() {
        let mut tail = Tail::new(4);
        tail.push("aé€".as_bytes()); // 1 + 2 + 3 bytes: the cut falls inside 'é'
        assert_eq!(tail.text(4), "€");
        let mut notes = Tail::new(100);
        notes.push(b"partial");
        notes.note("handover: note");
        assert_eq!(notes.text(100), "partial\nhandover: note\n");
        assert_eq!(notes.total, 7, "notes are not the child's bytes");
    }

    #[test]
    fn lines_are_split_and_over_long_ones_skipped_without_buffering_them() {
        let mut splitter = LineSplitter::new(8);
        let mut lines = Vec::new();
        splitter.feed(b"{\"i\":1}\n{\"i\"", &mut lines);
        splitter.feed(b":2}\n0123456789", &mut lines);
        assert!(splitter.buf.is_empty(), "an over-long line is not kept");
        splitter.feed(b"abc\n\nlast", &mut lines);
        lines.extend(splitter.finish());
        assert_eq!(
            lines,
            vec![
                Line::Complete(b"{\"i\":1}".to_vec()),
                Line::Complete(b"{\"i\":2}".to_vec()),
                Line::TooLong(13),
                Line::Complete(Vec::new()),
                Line::Complete(b"last".to_vec()),
            ]
        );
        assert_eq!(splitter.finish(), None);
    }

    #[test]
    fn checkpoint_lines_must_be_json_values() {
        assert_eq!(
            parse_checkpoint_line(b" {\"i\": 3}\r").unwrap(),
            Some(json!({"i": 3}))
        );
        assert_eq!(parse_checkpoint_line(b"42").unwrap(), Some(json!(42)));
        assert_eq!(parse_checkpoint_line(b"  ").unwrap(), None);
        assert!(parse_checkpoint_line(b"null").is_err());
        assert!(parse_checkpoint_line(b"{\"i\":")
            .unwrap_err()
            .starts_with("not JSON"));
    }
}
