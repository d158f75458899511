//! The result envelope and a minimal JSON object writer (no serde).
//!
//! The envelope is one JSON object, written atomically (temp file in the same
//! directory, fsync, rename, fsync the directory) so a reader that sees the
//! file always sees all of it.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::Path;

/// Builds one flat JSON object, field by field, in order.
pub struct Json {
    buf: String,
}

impl Default for Json {
    fn default() -> Self {
        Self::new()
    }
}

impl Json {
    pub fn new() -> Self {
        Json {
            buf: String::from("{"),
        }
    }

    fn key(&mut self, key: &str) {
        if self.buf.len() > 1 {
            self.buf.push(',');
        }
        escape_into(&mut self.buf, key);
        self.buf.push(':');
    }

    pub fn str(mut self, key: &str, value: &str) -> Self {
        self.key(key);
        escape_into(&mut self.buf, value);
        self
    }

    pub fn opt_str(self, key: &str, value: Option<&str>) -> Self {
        match value {
            Some(v) => self.str(key, v),
            None => self.null(key),
        }
    }

    pub fn int(mut self, key: &str, value: i64) -> Self {
        self.key(key);
        let _ = write!(self.buf, "{value}");
        self
    }

    pub fn opt_int(self, key: &str, value: Option<i64>) -> Self {
        match value {
            Some(v) => self.int(key, v),
            None => self.null(key),
        }
    }

    pub fn bool(mut self, key: &str, value: bool) -> Self {
        self.key(key);
        self.buf.push_str(if value { "true" } else { "false" });
        self
    }

    pub fn opt_bool(self, key: &str, value: Option<bool>) -> Self {
        match value {
            Some(v) => self.bool(key, v),
            None => self.null(key),
        }
    }

    pub fn null(mut self, key: &str) -> Self {
        self.key(key);
        self.buf.push_str("null");
        self
    }

    pub fn finish(mut self) -> String {
        self.buf.push('}');
        self.buf
    }
}

/// Append `s` as a JSON string literal (RFC 8259 escaping; non-ASCII kept as UTF-8).
pub fn escape_into(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            // Other control characters, plus U+2028/2029 so the output is also valid JavaScript.
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The outcome, as the flow's `parse_results` reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Exited,
    Signaled,
    TimedOut,
    ReadyTimeout,
    ReadyMismatch,
    SpawnFailed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Exited => "exited",
            Status::Signaled => "signaled",
            Status::TimedOut => "timed_out",
            Status::ReadyTimeout => "ready_timeout",
            Status::ReadyMismatch => "ready_mismatch",
            Status::SpawnFailed => "spawn_failed",
        }
    }
}

/// Every field of the envelope. `None` serialises as `null` ("not known").
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub status: Status,
    /// PROGRAM's exit status when it exited normally.
    pub exit_code: Option<i32>,
    /// The signal that killed PROGRAM.
    pub signal: Option<i32>,
    /// What the shim itself exits with (see the table in main.rs).
    pub shim_exit_code: i32,
    pub wall_ms: u64,
    pub cpu_user_ms: u64,
    pub cpu_sys_ms: u64,
    pub max_rss_kb: u64,
    pub ready_wait_ms: Option<u64>,
    /// Bytes PROGRAM wrote, including discarded ones; `None` when not captured.
    pub stdout_bytes: Option<u64>,
    pub stderr_bytes: Option<u64>,
    pub output_truncated: bool,
    pub oom_killed: Option<bool>,
    pub orphans_killed: u64,
    pub error: Option<String>,
}

impl Envelope {
    /// An envelope for a run that ended before PROGRAM ran.
    pub fn failed(status: Status, shim_exit_code: i32, error: String) -> Self {
        Envelope {
            status,
            exit_code: None,
            signal: None,
            shim_exit_code,
            wall_ms: 0,
            cpu_user_ms: 0,
            cpu_sys_ms: 0,
            max_rss_kb: 0,
            ready_wait_ms: None,
            stdout_bytes: None,
            stderr_bytes: None,
            output_truncated: false,
            oom_killed: None,
            orphans_killed: 0,
            error: Some(error),
        }
    }

    pub fn to_json(&self) -> String {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Json::new()
            .str("shim_version", crate::VERSION)
            .str("status", self.status.as_str())
            .opt_int("exit_code", self.exit_code.map(i64::from))
            .opt_int("signal", self.signal.map(i64::from))
            .int("shim_exit_code", i64::from(self.shim_exit_code))
            .int("wall_ms", n(self.wall_ms))
            .int("cpu_user_ms", n(self.cpu_user_ms))
            .int("cpu_sys_ms", n(self.cpu_sys_ms))
            .int("max_rss_kb", n(self.max_rss_kb))
            .opt_int("ready_wait_ms", self.ready_wait_ms.map(n))
            .opt_int("stdout_bytes", self.stdout_bytes.map(n))
            .opt_int("stderr_bytes", self.stderr_bytes.map(n))
            .bool("output_truncated", self.output_truncated)
            .opt_bool("oom_killed", self.oom_killed)
            .int("orphans_killed", n(self.orphans_killed))
            .opt_str("error", self.error.as_deref())
            .finish()
    }
}

/// Write `contents` to `path` atomically: temp file beside it, fsync, rename.
pub fn write_atomic(path: &Path, contents: &str) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::from_raw_os_error(crate::sys::EINVAL))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(contents.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        // Make the rename itself durable; a failure here does not undo it.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(s: &str) -> String {
        let mut out = String::new();
        escape_into(&mut out, s);
        out
    }

    #[test]
    fn escaping() {
        assert_eq!(esc("plain"), "\"plain\"");
        assert_eq!(esc("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(esc("l1\nl2\r\t"), "\"l1\\nl2\\r\\t\"");
        assert_eq!(
            esc("\u{0}\u{1f}\u{08}\u{0c}\u{7f}"),
            "\"\\u0000\\u001f\\b\\f\\u007f\""
        );
        assert_eq!(esc("é ✓ \u{2028}"), "\"é ✓ \\u2028\"");
        assert_eq!(esc(""), "\"\"");
    }

    #[test]
    fn object_writer() {
        let s = Json::new()
            .str("a", "x")
            .int("n", -3)
            .bool("t", true)
            .null("z")
            .opt_int("o", Some(7))
            .finish();
        assert_eq!(s, r#"{"a":"x","n":-3,"t":true,"z":null,"o":7}"#);
        assert_eq!(Json::new().finish(), "{}");
    }

    #[test]
    fn failed_envelope_has_nulls() {
        let e = Envelope::failed(
            Status::SpawnFailed,
            127,
            "execve(\"/nope\"): No such file or directory".into(),
        );
        let json = e.to_json();
        assert!(json.starts_with(&format!(
            "{{\"shim_version\":\"{}\",\"status\":\"spawn_failed\"",
            crate::VERSION
        )));
        for field in [
            "exit_code",
            "signal",
            "ready_wait_ms",
            "stdout_bytes",
            "stderr_bytes",
            "oom_killed",
        ] {
            assert!(
                json.contains(&format!("\"{field}\":null")),
                "{field} in {json}"
            );
        }
        assert!(json.contains(r#""shim_exit_code":127"#));
        assert!(json.contains(r#""output_truncated":false"#));
        assert!(json.contains(r#""orphans_killed":0"#));
        assert!(json.contains(r#""error":"execve(\"/nope\"): No such file or directory""#));
    }

    #[test]
    fn full_envelope() {
        let e = Envelope {
            status: Status::Signaled,
            exit_code: None,
            signal: Some(11),
            shim_exit_code: 139,
            wall_ms: 12,
            cpu_user_ms: 3,
            cpu_sys_ms: 4,
            max_rss_kb: 2048,
            ready_wait_ms: Some(0),
            stdout_bytes: Some(5),
            stderr_bytes: Some(0),
            output_truncated: true,
            oom_killed: Some(false),
            orphans_killed: 2,
            error: None,
        };
        let json = e.to_json();
        for part in [
            r#""status":"signaled""#,
            r#""exit_code":null"#,
            r#""signal":11"#,
            r#""wall_ms":12"#,
            r#""cpu_user_ms":3"#,
            r#""cpu_sys_ms":4"#,
            r#""max_rss_kb":2048"#,
            r#""ready_wait_ms":0"#,
            r#""stdout_bytes":5"#,
            r#""output_truncated":true"#,
            r#""oom_killed":false"#,
            r#""orphans_killed":2"#,
            r#""error":null}"#,
        ] {
            assert!(json.contains(part), "{part} in {json}");
        }
    }

    #[test]
    fn atomic_write_replaces_file() {
        let dir = std::env::temp_dir().join(format!("shim-envelope-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("result.json");
        fs::write(&path, "old").unwrap();
        write_atomic(&path, "{}").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "{}\n");
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            1,
            "no temp file left behind"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
