//! Waiting for the co-process's ready marker.
//!
//! The co-process places the submission, then renames the marker (containing
//! the submission's hex digest) into place. We watch the marker's directory
//! with inotify so PROGRAM starts within a few milliseconds of the rename; if
//! inotify is unavailable (or the directory does not exist yet) we poll every
//! 10 ms. The marker is re-checked after arming the watch, so an event between
//! check and watch cannot be lost.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::log;
use crate::sys::{self, Fd};

/// How often to look when inotify cannot tell us.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Re-check at least this often even with inotify (belt and braces).
const WATCH_RECHECK: Duration = Duration::from_millis(500);
const IN_IGNORED: u32 = 0x0000_8000;

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Ready,
    TimedOut,
    /// The marker holds a different digest (the trimmed content found).
    Mismatch(String),
    /// The shim was asked to stop (this signal) while waiting.
    Interrupted(i32),
}

enum Check {
    Pending,
    Done(Outcome),
}

/// Block until `path` exists (and matches `expect`), or `timeout` passes, or a
/// stop signal arrives on `signals` (the shim's signalfd, when it has one).
pub fn wait(
    path: &Path,
    timeout: Duration,
    expect: Option<&str>,
    signals: Option<&Fd>,
) -> Result<Outcome, Error> {
    let deadline = Instant::now() + timeout;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let dir_c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| Error::invalid("--ready-file", "contains NUL"))?;
    let inotify = open_inotify();
    let result = watch(
        path,
        dir,
        &dir_c,
        deadline,
        expect,
        signals,
        inotify.as_ref(),
    );
    // Deliberately never closed: closing an inotify fd waits for an SRCU grace
    // period (measured 10-15 ms), right between the marker appearing and
    // PROGRAM starting. It is close-on-exec and goes away with the shim.
    std::mem::forget(inotify);
    result
}

/// The wait loop proper; `inotify` is None when inotify is unavailable.
fn watch(
    path: &Path,
    dir: &Path,
    dir_c: &CString,
    deadline: Instant,
    expect: Option<&str>,
    signals: Option<&Fd>,
    mut inotify: Option<&Fd>,
) -> Result<Outcome, Error> {
    let mut watching = false;
    loop {
        if let (Some(fd), false) = (inotify, watching) {
            // SAFETY: fd is a live inotify fd; dir_c is a NUL-terminated path.
            let wd = unsafe {
                sys::inotify_add_watch(
                    fd.raw(),
                    dir_c.as_ptr(),
                    sys::IN_CREATE
                        | sys::IN_MOVED_TO
                        | sys::IN_CLOSE_WRITE
                        | sys::IN_DELETE_SELF
                        | sys::IN_MOVE_SELF,
                )
            };
            if wd >= 0 {
                watching = true;
            } else {
                let err = io::Error::last_os_error();
                // Tolerated: the directory does not exist yet — poll until it does.
                if !matches!(err.raw_os_error(), Some(sys::ENOENT) | Some(sys::ENOTDIR)) {
                    log::warning(&format!(
                        "inotify_add_watch({}): {}; polling every 10 ms",
                        dir.display(),
                        crate::error::strerror(&err)
                    ));
                    inotify = None;
                }
            }
        }
        if let Check::Done(outcome) = check(path, expect)? {
            return Ok(outcome);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(Outcome::TimedOut);
        }
        let remaining = deadline - now;
        let watch = inotify.filter(|_| watching);
        let nap = if watch.is_some() {
            remaining.min(WATCH_RECHECK)
        } else {
            remaining.min(POLL_INTERVAL)
        };
        match wait_events(watch, signals, nap) {
            Wake::Signal(sig) => return Ok(Outcome::Interrupted(sig)),
            Wake::WatchGone => watching = false, // directory removed or moved: re-arm
            Wake::Recheck => {}
        }
    }
}

enum Wake {
    Recheck,
    WatchGone,
    Signal(i32),
}

fn open_inotify() -> Option<Fd> {
    // SAFETY: plain syscall with flags only.
    match sys::cvt(unsafe { sys::inotify_init1(sys::IN_CLOEXEC | sys::IN_NONBLOCK) }) {
        Ok(fd) => Some(Fd(fd)),
        Err(e) => {
            log::warning(&format!(
                "inotify_init1: {}; polling every 10 ms",
                crate::error::strerror(&e)
            ));
            None
        }
    }
}

/// Wait up to `timeout` for inotify events (or a stop signal) and drain them.
/// A poll on a negative fd is ignored, so either may be absent.
fn wait_events(inotify: Option<&Fd>, signals: Option<&Fd>, timeout: Duration) -> Wake {
    let mut pfds = [
        sys::pollfd {
            fd: signals.map_or(-1, Fd::raw),
            events: sys::POLLIN,
            revents: 0,
        },
        sys::pollfd {
            fd: inotify.map_or(-1, Fd::raw),
            events: sys::POLLIN,
            revents: 0,
        },
    ];
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
    // SAFETY: two valid pollfd entries.
    let n = unsafe { sys::poll(pfds.as_mut_ptr(), 2, ms) };
    if n <= 0 {
        return Wake::Recheck;
    }
    if let (Some(sfd), true) = (signals, pfds[0].revents != 0) {
        let mut info = [0u8; sys::SIGNALFD_SIGINFO_SIZE];
        // SAFETY: info is writable for one signalfd_siginfo.
        while unsafe { sys::read(sfd.raw(), info.as_mut_ptr().cast(), info.len()) }
            == info.len() as isize
        {
            let sig = u32::from_ne_bytes([info[0], info[1], info[2], info[3]]) as i32;
            if sig != sys::SIGCHLD {
                return Wake::Signal(sig);
            }
        }
    }
    match inotify {
        Some(fd) if pfds[1].revents != 0 => {
            if drain(fd) {
                Wake::Recheck
            } else {
                Wake::WatchGone
            }
        }
        _ => Wake::Recheck,
    }
}

/// Read all pending inotify events; false when the watch is gone (IN_IGNORED).
fn drain(fd: &Fd) -> bool {
    let mut alive = true;
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: buf is writable for its full length.
        let got = unsafe { sys::read(fd.raw(), buf.as_mut_ptr().cast(), buf.len()) };
        if got <= 0 {
            break;
        }
        let got = got as usize;
        let mut off = 0;
        // struct inotify_event { int wd; uint32_t mask, cookie, len; char name[]; }
        while off + 16 <= got {
            let mask = u32::from_ne_bytes(buf[off + 4..off + 8].try_into().unwrap_or_default());
            let len =
                u32::from_ne_bytes(buf[off + 12..off + 16].try_into().unwrap_or_default()) as usize;
            if mask & IN_IGNORED != 0 {
                alive = false;
            }
            off += 16 + len;
        }
    }
    alive
}

fn check(path: &Path, expect: Option<&str>) -> Result<Check, Error> {
    let content = match fs::read(path) {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Check::Pending),
        Err(e) if e.raw_os_error() == Some(sys::ENOTDIR) => return Ok(Check::Pending),
        Err(e) => return Err(Error::os(format!("read({})", path.display()), e)),
    };
    let Some(expect) = expect else {
        return Ok(Check::Done(Outcome::Ready));
    };
    let found = String::from_utf8_lossy(&content).trim().to_string();
    if found.is_empty() {
        // Created but not yet written (a writer that did not rename): keep waiting.
        return Ok(Check::Pending);
    }
    if found.eq_ignore_ascii_case(expect) {
        Ok(Check::Done(Outcome::Ready))
    } else {
        Ok(Check::Done(Outcome::Mismatch(found)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("shim-ready-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn existing_marker_is_ready_at_once() {
        let d = tmpdir("exists");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("ready"), "ABC\n").unwrap();
        assert_eq!(
            wait(&d.join("ready"), Duration::ZERO, Some("abc"), None).unwrap(),
            Outcome::Ready
        );
        assert_eq!(
            wait(&d.join("ready"), Duration::ZERO, Some("abd"), None).unwrap(),
            Outcome::Mismatch("ABC".into())
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn times_out_when_directory_missing() {
        let d = tmpdir("missing");
        let t = Instant::now();
        assert_eq!(
            wait(&d.join("ready"), Duration::from_millis(50), None, None).unwrap(),
            Outcome::TimedOut
        );
        assert!(t.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn marker_created_later_in_new_directory() {
        let d = tmpdir("later");
        let marker = d.join("ready");
        let (d2, m2) = (d.clone(), marker.clone());
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            fs::create_dir_all(&d2).unwrap();
            std::thread::sleep(Duration::from_millis(30));
            fs::write(d2.join("tmp"), "beef").unwrap();
            fs::rename(d2.join("tmp"), &m2).unwrap();
        });
        assert_eq!(
            wait(&marker, Duration::from_secs(5), Some("BEEF"), None).unwrap(),
            Outcome::Ready
        );
        writer.join().unwrap();
        fs::remove_dir_all(&d).unwrap();
    }
}
