//! gradeflow-shim: the grader container's entrypoint.
//!
//! Waits for the co-process's ready marker, runs PROGRAM hardened (rlimits,
//! no_new_privs, no capabilities, dropped uid/gid, seccomp, scrubbed
//! environment, optionally no network), stays its parent as a subreaper until
//! every descendant is gone, and writes one JSON envelope describing the run.
//!
//! # Exit codes
//!
//! | code    | meaning                                                          |
//! |---------|------------------------------------------------------------------|
//! | 0..=123 | PROGRAM's own exit code, passed through                          |
//! | 124     | `--timeout` expired; PROGRAM and its descendants were killed     |
//! | 125     | the shim itself failed: bad flags, ready timeout or digest       |
//! |         | mismatch, a hardening step refused (nothing of PROGRAM ran)      |
//! | 126     | PROGRAM found but not executable (EACCES, ENOEXEC, ...)          |
//! | 127     | PROGRAM not found (ENOENT)                                       |
//! | 128+N   | PROGRAM was killed by signal N                                   |
//!
//! PROGRAM exiting with 124..=127 itself is passed through too; the envelope's
//! `status` tells the cases apart.

mod args;
mod envelope;
mod error;
mod harden;
mod log;
mod ready;
mod supervise;
mod sys;

use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use args::{Command, Options};
use envelope::{Envelope, Status};
use error::{Context, Error};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Reserved exit codes (see the table above).
const EXIT_TIMEOUT: i32 = 124;
const EXIT_SHIM_FAILED: i32 = 125;

fn main() -> ExitCode {
    let code = run();
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn run() -> i32 {
    let opts = match args::parse(std::env::args_os().skip(1)) {
        Ok(Command::Run(opts)) => opts,
        Ok(Command::Version) => return print_stdout(&format!("gradeflow-shim {VERSION}\n")),
        Ok(Command::Help) => return print_stdout(args::USAGE),
        Ok(Command::Install(dest)) => return install(&dest),
        Err(e) => {
            log::error(&e.to_string());
            let _ = std::io::stderr().write_all(args::USAGE.as_bytes());
            return EXIT_SHIM_FAILED;
        }
    };
    let envelope = supervise_run(&opts);
    finish(&opts, envelope)
}

/// The run proper, as a list of steps; every path ends in an envelope.
fn supervise_run(opts: &Options) -> Envelope {
    // 1. Prepare every allocation the forked child will need (bad input fails
    //    here, before any waiting).
    let mut plan = match harden::Plan::new(opts, std::env::vars_os()) {
        Ok(plan) => plan,
        Err(e) => return setup_failed(e, None),
    };
    if !plan.is_root() {
        log::warning("not started as root: uid/gid unchanged and the bounding set kept (no_new_privs still blocks gaining privileges)");
    }
    // 2. Stay the parent of everything PROGRAM starts; receive signals on an fd
    //    (from here on SIGTERM is handled, also while waiting for the marker).
    if let Err(e) = supervise::become_subreaper() {
        return setup_failed(e, None);
    }
    let sigfd = match supervise::signal_fd() {
        Ok(fd) => fd,
        Err(e) => return setup_failed(e, None),
    };
    // 3. Wait for the submission to be in place.
    let ready_wait_ms = match wait_ready(opts, &sigfd) {
        Ok(ms) => ms,
        Err(envelope) => return *envelope,
    };
    // 4. Fork, harden, exec; supervise until every descendant is gone.
    let capture = supervise::CaptureSpec {
        stdout: opts.stdout.as_deref(),
        stderr: opts.stderr.as_deref(),
        limit: opts.output_limit,
        timeout: opts.timeout,
        kill_grace: opts.kill_grace,
    };
    let mut envelope = supervise::run(&mut plan, &capture, &sigfd);
    envelope.ready_wait_ms = ready_wait_ms;
    envelope
}

/// Step 3: the ready marker. `Ok(None)` when no marker was asked for.
fn wait_ready(opts: &Options, sigfd: &sys::Fd) -> Result<Option<u64>, Box<Envelope>> {
    let Some(path) = &opts.ready_file else {
        return Ok(None);
    };
    let start = Instant::now();
    let outcome = ready::wait(
        path,
        opts.ready_timeout,
        opts.expect_digest.as_deref(),
        Some(sigfd),
    );
    let waited = start.elapsed().as_millis() as u64;
    let fail = |status: Status, message: String| {
        log::error(&message);
        let mut e = Envelope::failed(status, EXIT_SHIM_FAILED, message);
        e.ready_wait_ms = Some(waited);
        Box::new(e)
    };
    match outcome {
        Ok(ready::Outcome::Ready) => {
            log::emit(
                log::event("ready")
                    .str("path", &path.display().to_string())
                    .int("wait_ms", waited as i64),
            );
            Ok(Some(waited))
        }
        Ok(ready::Outcome::TimedOut) => Err(fail(
            Status::ReadyTimeout,
            format!(
                "ready file {}: not present after {:.3}s",
                path.display(),
                opts.ready_timeout.as_secs_f64()
            ),
        )),
        Ok(ready::Outcome::Interrupted(sig)) => Err(fail(
            Status::ReadyTimeout,
            format!(
                "ready file {}: stopped by signal {sig} while waiting",
                path.display()
            ),
        )),
        Ok(ready::Outcome::Mismatch(found)) => Err(fail(
            Status::ReadyMismatch,
            format!(
                "ready file {}: digest {found:?} does not match --expect-digest {:?}",
                path.display(),
                opts.expect_digest.as_deref().unwrap_or_default()
            ),
        )),
        Err(e) => Err(fail(Status::ReadyMismatch, e.to_string())),
    }
}

/// A failure before PROGRAM ran: exit 125 with a spawn_failed envelope.
fn setup_failed(e: Error, ready_wait_ms: Option<u64>) -> Envelope {
    log::error(&e.to_string());
    let mut envelope = Envelope::failed(Status::SpawnFailed, EXIT_SHIM_FAILED, e.to_string());
    envelope.ready_wait_ms = ready_wait_ms;
    envelope
}

/// Log the outcome, write the envelope, and pick the shim's exit code.
fn finish(opts: &Options, envelope: Envelope) -> i32 {
    debug_assert!(envelope.status != Status::TimedOut || envelope.shim_exit_code == EXIT_TIMEOUT);
    log::emit(
        log::event("exited")
            .str("status", envelope.status.as_str())
            .opt_int("exit_code", envelope.exit_code.map(i64::from))
            .opt_int("signal", envelope.signal.map(i64::from))
            .int("wall_ms", envelope.wall_ms as i64)
            .int("shim_exit_code", i64::from(envelope.shim_exit_code)),
    );
    if let Some(path) = &opts.result {
        if let Err(e) = envelope::write_atomic(path, &envelope.to_json()) {
            // Never mask PROGRAM's outcome; the missing file is the flow's signal.
            log::error(&format!(
                "write envelope {}: {}",
                path.display(),
                error::strerror(&e)
            ));
        }
    }
    envelope.shim_exit_code
}

/// `install DEST`: copy /proc/self/exe to DEST with mode 0555 (for a shim-init
/// container that has no `cp`). Written beside DEST and renamed into place.
fn install(dest: &Path) -> i32 {
    let result = (|| -> Result<(), Error> {
        let dir = dest
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::create_dir_all(dir).step(|| format!("mkdir({})", dir.display()))?;
        let mut tmp = OsString::from(dest.as_os_str());
        tmp.push(format!(".tmp.{}", std::process::id()));
        let tmp = Path::new(&tmp);
        fs::copy("/proc/self/exe", tmp)
            .step(|| format!("copy(/proc/self/exe, {})", tmp.display()))?;
        fs::set_permissions(tmp, fs::Permissions::from_mode(0o555))
            .step(|| format!("chmod({}, 0555)", tmp.display()))?;
        fs::File::open(tmp)
            .and_then(|f| f.sync_all())
            .step(|| format!("fsync({})", tmp.display()))?;
        fs::rename(tmp, dest).step(|| format!("rename({}, {})", tmp.display(), dest.display()))?;
        Ok(())
    })();
    match result {
        Ok(()) => {
            log::emit(log::event("installed").str("path", &dest.display().to_string()));
            0
        }
        Err(e) => {
            log::error(&e.to_string());
            EXIT_SHIM_FAILED
        }
    }
}

fn print_stdout(text: &str) -> i32 {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(_) => EXIT_SHIM_FAILED,
    }
}
