//! The shim's own log: one JSON object per line on stderr, one per transition
//! (`ready`, `started`, `exited`) plus `warning` and `error` events.
//!
//! PROGRAM's stderr may be the same stream (when not captured); each line is
//! written with a single `write` so the two never interleave within a line.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::envelope::Json;

/// Start a log line for `event`; add fields, then pass it to [`emit`].
/// `ts_us` is wall-clock microseconds since the Unix epoch.
pub fn event(event: &str) -> Json {
    let ts_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    Json::new()
        .str("shim", "gradeflow-shim")
        .str("event", event)
        .int("ts_us", ts_us)
}

/// Write the line; logging never fails the shim.
pub fn emit(line: Json) {
    let mut text = line.finish();
    text.push('\n');
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

pub fn warning(message: &str) {
    emit(event("warning").str("message", message));
}

pub fn error(message: &str) {
    emit(event("error").str("message", message));
}
