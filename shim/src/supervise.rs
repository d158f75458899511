//! Spawning PROGRAM and staying its parent until everything it started is gone.
//!
//! The shim is a child subreaper (PID 1 in containers), so every process
//! PROGRAM forks — even one that `setsid()`s or double-forks — re-parents to
//! us when its parent dies. One `poll` loop watches a signalfd (SIGCHLD and
//! the signals we forward) and the output pipes, with deadlines on
//! CLOCK_MONOTONIC (`Instant`). Once PROGRAM runs, nothing here bails out:
//! errors are logged and the run always ends with everything reaped and an
//! envelope written.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::raw::c_int;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::envelope::{Envelope, Status};
use crate::error::{Context, Error};
use crate::harden::{Plan, Step, REPORT_LEN, REPORT_WARNING};
use crate::log;
use crate::sys::{self, pid_t, Fd};

/// Signals the shim passes on to PROGRAM (SIGTERM/SIGINT also start the kill grace).
const FORWARDED: [c_int; 6] = [
    sys::SIGTERM,
    sys::SIGINT,
    sys::SIGHUP,
    sys::SIGQUIT,
    sys::SIGUSR1,
    sys::SIGUSR2,
];
/// How long to wait for output pipes to reach EOF once every process is gone.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// Read size for output pipes (and the pipe buffer size we ask for).
const CHUNK: usize = 1 << 20;
const F_SETPIPE_SZ_BYTES: c_int = 1 << 20;

/// Where PROGRAM's stdout/stderr go and how much of each to keep.
pub struct CaptureSpec<'a> {
    pub stdout: Option<&'a Path>,
    pub stderr: Option<&'a Path>,
    pub limit: u64,
    pub timeout: Option<Duration>,
    pub kill_grace: Duration,
}

/// Become a child subreaper so orphaned descendants re-parent to the shim.
pub fn become_subreaper() -> Result<(), Error> {
    // SAFETY: prctl with integer arguments only.
    sys::cvt(unsafe { sys::prctl(sys::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) })
        .step(|| "prctl(PR_SET_CHILD_SUBREAPER, 1)".into())?;
    Ok(())
}

/// Block the signals we handle and return a signalfd for them. The child
/// unblocks them again before exec.
pub fn signal_fd() -> Result<Fd, Error> {
    let mut set = sys::empty_sigset();
    for sig in FORWARDED.iter().chain(&[sys::SIGCHLD]) {
        // SAFETY: set is a valid sigset_t; sig is a valid signal number.
        unsafe { sys::sigaddset(&mut set, *sig) };
    }
    // SAFETY: set is initialised; the shim is single-threaded here.
    sys::cvt(unsafe { sys::sigprocmask(sys::SIG_BLOCK, &set, std::ptr::null_mut()) })
        .step(|| "sigprocmask(SIG_BLOCK)".into())?;
    // SAFETY: set is initialised; -1 asks for a new fd.
    let fd = sys::cvt(unsafe { sys::signalfd(-1, &set, sys::SFD_CLOEXEC | sys::SFD_NONBLOCK) })
        .step(|| "signalfd".into())?;
    Ok(Fd(fd))
}

/// One captured stream.
struct Capture {
    fd: Option<Fd>,
    file: Option<File>,
    path: String,
    kept: u64,
    total: u64,
}

impl Capture {
    fn open(path: &Path) -> Result<(Capture, Fd), Error> {
        let file = File::create(path).step(|| format!("open({})", path.display()))?;
        let (r, w) = sys::pipe_cloexec().step(|| "pipe2(O_CLOEXEC)".into())?;
        // A bigger pipe means fewer wakeups for a flood; refusal is harmless.
        // SAFETY: r is a valid pipe fd.
        unsafe { sys::fcntl(r.raw(), sys::F_SETPIPE_SZ, F_SETPIPE_SZ_BYTES) };
        let path = path.display().to_string();
        Ok((
            Capture {
                fd: Some(r),
                file: Some(file),
                path,
                kept: 0,
                total: 0,
            },
            w,
        ))
    }

    /// One read; keeps up to `limit` bytes, counts and drops the rest.
    fn pump(&mut self, buf: &mut [u8], limit: u64) {
        let Some(fd) = &self.fd else { return };
        // SAFETY: buf is writable for its length; fd is open.
        let n = unsafe { sys::read(fd.raw(), buf.as_mut_ptr().cast(), buf.len()) };
        if n == 0 {
            self.fd = None; // EOF: every writer is gone
            return;
        }
        if n < 0 {
            let e = io::Error::last_os_error();
            if !matches!(e.raw_os_error(), Some(sys::EINTR) | Some(sys::EAGAIN)) {
                log::warning(&format!(
                    "read(capture {}): {}",
                    self.path,
                    crate::error::strerror(&e)
                ));
                self.fd = None;
            }
            return;
        }
        let n = n as u64;
        self.total += n;
        let keep = n.min(limit.saturating_sub(self.kept));
        if keep > 0 {
            if let Some(f) = &mut self.file {
                if let Err(e) = f.write_all(&buf[..keep as usize]) {
                    log::warning(&format!(
                        "write({}): {}; discarding the rest",
                        self.path,
                        crate::error::strerror(&e)
                    ));
                    self.file = None;
                }
            }
            self.kept += keep;
        }
    }
}

/// What the supervisor learned about PROGRAM.
struct State {
    child: pid_t,
    status: Option<c_int>,
}

impl State {
    /// Reap every exited child without blocking. Returns false when we have no
    /// children left at all (ECHILD) — then no descendant can exist either.
    fn reap_all(&mut self) -> bool {
        loop {
            let mut status = 0;
            // SAFETY: status is a valid out-pointer; rusage may be NULL.
            let pid = unsafe { sys::wait4(-1, &mut status, sys::WNOHANG, std::ptr::null_mut()) };
            if pid > 0 {
                if pid == self.child {
                    self.status = Some(status);
                }
                continue;
            }
            if pid < 0 && sys::errno() == sys::EINTR {
                continue;
            }
            return !(pid < 0 && sys::errno() == sys::ECHILD);
        }
    }
}

/// Fork, harden and exec PROGRAM, then supervise it to the end.
pub fn run(plan: &mut Plan, cap: &CaptureSpec<'_>, sigfd: &Fd) -> Envelope {
    match spawn_and_supervise(plan, cap, sigfd) {
        Ok(env) => env,
        Err((err, code)) => {
            log::error(&err.to_string());
            Envelope::failed(Status::SpawnFailed, code, err.to_string())
        }
    }
}

fn spawn_and_supervise(
    plan: &mut Plan,
    cap: &CaptureSpec<'_>,
    sigfd: &Fd,
) -> Result<Envelope, (Error, i32)> {
    let setup = |e: Error| (e, 125);
    // Output files and pipes first: failing here is still "before exec".
    let mut captures: Vec<Capture> = Vec::new();
    let mut write_ends: Vec<Fd> = Vec::new();
    for (i, path) in [cap.stdout, cap.stderr].into_iter().enumerate() {
        let Some(path) = path else { continue };
        let (c, w) = Capture::open(path).map_err(setup)?;
        if i == 0 {
            plan.stdout_fd = Some(w.raw());
        } else {
            plan.stderr_fd = Some(w.raw());
        }
        captures.push(c);
        write_ends.push(w);
    }
    let stdout_idx = cap.stdout.map(|_| 0);
    let stderr_idx = cap.stderr.map(|_| usize::from(cap.stdout.is_some()));
    let (report_r, report_w) = sys::pipe_cloexec()
        .step(|| "pipe2(O_CLOEXEC)".into())
        .map_err(setup)?;
    let oom_before = oom_kills();
    let mut buf = vec![0u8; CHUNK];

    let start = Instant::now();
    // SAFETY: the shim is single-threaded; the child only runs Plan::exec_child,
    // which is async-signal-safe and never returns.
    let child = unsafe { sys::fork() };
    if child < 0 {
        return Err((Error::os("fork", io::Error::last_os_error()), 125));
    }
    if child == 0 {
        plan.exec_child(report_w.raw());
    }
    drop(report_w);
    drop(write_ends);

    // Phase 1 (fail closed): the child reports hardening failures, or EOF at exec.
    let mut state = State {
        child,
        status: None,
    };
    if let Some((step, errno)) = read_reports(&report_r, plan) {
        // Reap the failed child; its exit status is ours to decide.
        let mut status = 0;
        // SAFETY: child is our child; status is a valid out-pointer.
        let _ = sys::cvt_r(|| unsafe { sys::wait4(child, &mut status, 0, std::ptr::null_mut()) });
        let code = match (step, errno) {
            (Step::Execve, sys::ENOENT | sys::ENOTDIR) => 127,
            (Step::Execve, _) => 126,
            _ => 125,
        };
        return Err((Error::errno(plan.describe(step), errno), code));
    }
    drop(report_r);
    log::emit(log::event("started").int("pid", i64::from(child)));

    // Phase 2 (never bail): supervise until PROGRAM and every descendant are gone.
    let deadline = cap.timeout.map(|t| start + t);
    let mut timed_out = false;
    let mut kill_at: Option<Instant> = None;
    let mut drain_until: Option<Instant> = None;
    let mut orphans = 0u64;
    loop {
        let now = Instant::now();
        if state.status.is_none() {
            if let (Some(d), false) = (deadline, timed_out) {
                if now >= d {
                    timed_out = true;
                    log::emit(log::event("timeout").int("pid", i64::from(child)));
                    signal_tree(child, sys::SIGTERM, true);
                    kill_at = Some(now + cap.kill_grace);
                }
            }
            if kill_at.is_some_and(|k| now >= k) {
                kill_at = None;
                orphans += kill_all(&mut state);
            }
        }
        if state.status.is_some() && drain_until.is_none() {
            // PROGRAM is gone: nothing it left behind may outlive the shim.
            if state.reap_all() {
                orphans += kill_all(&mut state);
            }
            drain_until = Some(Instant::now() + DRAIN_LIMIT);
        }
        let open = captures.iter().any(|c| c.fd.is_some());
        if let Some(until) = drain_until {
            if !open || Instant::now() >= until {
                break;
            }
        }

        // Sleep until an event or the nearest deadline.
        let next = [
            deadline.filter(|_| !timed_out && state.status.is_none()),
            kill_at,
            drain_until,
        ]
        .into_iter()
        .flatten()
        .min();
        let timeout_ms = match next {
            Some(t) => {
                t.saturating_duration_since(Instant::now())
                    .as_millis()
                    .min(60_000) as c_int
                    + 1
            }
            None => -1,
        };
        let mut pfds = vec![sys::pollfd {
            fd: sigfd.raw(),
            events: sys::POLLIN,
            revents: 0,
        }];
        for c in &captures {
            pfds.push(sys::pollfd {
                fd: c.fd.as_ref().map_or(-1, Fd::raw),
                events: sys::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: pfds is a valid array of pollfd of the given length.
        let n = unsafe { sys::poll(pfds.as_mut_ptr(), pfds.len() as _, timeout_ms) };
        if n < 0 {
            if sys::errno() != sys::EINTR {
                log::warning(&format!("poll: {}", io::Error::last_os_error()));
                std::thread::sleep(Duration::from_millis(10));
            }
            continue;
        }
        if pfds[0].revents != 0 {
            for sig in read_signals(sigfd) {
                if sig == sys::SIGCHLD {
                    state.reap_all();
                } else if state.status.is_none() {
                    log::emit(
                        log::event("signal")
                            .int("signal", i64::from(sig))
                            .int("pid", i64::from(child)),
                    );
                    signal_tree(child, sig, false);
                    if (sig == sys::SIGTERM || sig == sys::SIGINT) && kill_at.is_none() {
                        kill_at = Some(Instant::now() + cap.kill_grace);
                    }
                }
            }
        }
        for (c, p) in captures.iter_mut().zip(&pfds[1..]) {
            if p.revents & (sys::POLLIN | sys::POLLHUP | sys::POLLERR) != 0 {
                c.pump(&mut buf, cap.limit);
            }
        }
        // A SIGCHLD can coalesce with others; reap opportunistically too.
        if state.status.is_none() && n == 0 {
            state.reap_all();
        }
    }
    let wall = start.elapsed();

    let mut usage = sys::rusage::default();
    // SAFETY: usage is a valid out-pointer.
    unsafe { sys::getrusage(sys::RUSAGE_CHILDREN, &mut usage) };
    let ms =
        |tv: sys::timeval| (tv.tv_sec.max(0) as u64) * 1000 + (tv.tv_usec.max(0) as u64) / 1000;
    let status = state.status.unwrap_or(0);
    let (exit_code, signal) = decode(status);
    let (env_status, shim_code) = if timed_out {
        (Status::TimedOut, 124)
    } else if let Some(sig) = signal {
        (Status::Signaled, 128 + sig)
    } else {
        (Status::Exited, exit_code.unwrap_or(0))
    };
    let oom_killed = match (oom_before, oom_kills()) {
        (Some(b), Some(a)) => Some(a > b),
        _ => None,
    };
    let cap_bytes = |idx: Option<usize>| idx.map(|i| captures[i].total);
    Ok(Envelope {
        status: env_status,
        exit_code,
        signal,
        shim_exit_code: shim_code,
        wall_ms: wall.as_millis() as u64,
        cpu_user_ms: ms(usage.ru_utime),
        cpu_sys_ms: ms(usage.ru_stime),
        max_rss_kb: usage.ru_maxrss.max(0) as u64,
        ready_wait_ms: None,
        stdout_bytes: cap_bytes(stdout_idx),
        stderr_bytes: cap_bytes(stderr_idx),
        output_truncated: captures.iter().any(|c| c.total > c.kept),
        oom_killed,
        orphans_killed: orphans,
        error: None,
    })
}

/// Read the child's (step, errno) records until EOF. Warnings are logged;
/// the first fatal record is returned.
fn read_reports(fd: &Fd, plan: &Plan) -> Option<(Step, c_int)> {
    let mut rec = [0u8; REPORT_LEN];
    loop {
        // SAFETY: rec is writable for REPORT_LEN bytes; fd is our pipe's read end.
        let n = unsafe { sys::read(fd.raw(), rec.as_mut_ptr().cast(), REPORT_LEN) };
        if n < 0 && sys::errno() == sys::EINTR {
            continue;
        }
        if n != REPORT_LEN as isize {
            return None; // EOF: execve succeeded (the pipe was close-on-exec)
        }
        let raw = u32::from_ne_bytes([rec[0], rec[1], rec[2], rec[3]]);
        let errno = i32::from_ne_bytes([rec[4], rec[5], rec[6], rec[7]]);
        let Some(step) = Step::from_u32(raw & !REPORT_WARNING) else {
            continue;
        };
        if raw & REPORT_WARNING != 0 {
            log::warning(&format!(
                "{}; continuing with the network",
                Error::errno(plan.describe(step), errno)
            ));
        } else {
            return Some((step, errno));
        }
    }
}

/// Drain the signalfd; returns the signal numbers received.
fn read_signals(fd: &Fd) -> Vec<c_int> {
    let mut out = Vec::new();
    let mut info = [0u8; sys::SIGNALFD_SIGINFO_SIZE];
    loop {
        // SAFETY: info is writable for one signalfd_siginfo.
        let n = unsafe { sys::read(fd.raw(), info.as_mut_ptr().cast(), info.len()) };
        if n != info.len() as isize {
            return out;
        }
        // ssi_signo is the first u32 of struct signalfd_siginfo.
        out.push(u32::from_ne_bytes([info[0], info[1], info[2], info[3]]) as c_int);
    }
}

/// (exit code, signal) from a wait status.
fn decode(status: c_int) -> (Option<i32>, Option<i32>) {
    let sig = status & 0x7f;
    if sig == 0 {
        (Some((status >> 8) & 0xff), None)
    } else {
        (None, Some(sig))
    }
}

/// Send `sig` to PROGRAM's process group and to every descendant outside it
/// (those that called setsid/setpgid). `all` sends to every descendant.
fn signal_tree(child: pid_t, sig: c_int, all: bool) {
    // SAFETY: kill with a negative pid signals the process group; harmless if gone.
    unsafe { sys::kill(-child, sig) };
    for p in descendants() {
        if all || p.pgrp != child {
            // SAFETY: plain kill; a pid that vanished just yields ESRCH.
            unsafe { sys::kill(p.pid, sig) };
        }
    }
}

/// SIGSTOP then SIGKILL every descendant until none is left. Stopping first
/// freezes a fork bomb so it cannot outrun the scan. Returns how many
/// processes other than PROGRAM itself were killed.
fn kill_all(state: &mut State) -> u64 {
    let mut killed: HashSet<pid_t> = HashSet::new();
    for round in 0..10_000u32 {
        let live: Vec<Proc> = descendants()
            .into_iter()
            .filter(|p| p.state != 'Z')
            .collect();
        if live.is_empty() {
            state.reap_all();
            break;
        }
        for p in &live {
            // SAFETY: plain kill on a pid we just saw as our descendant.
            unsafe { sys::kill(p.pid, sys::SIGSTOP) };
        }
        for p in &live {
            // SAFETY: as above.
            unsafe { sys::kill(p.pid, sys::SIGKILL) };
            killed.insert(p.pid);
        }
        state.reap_all();
        if round > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    killed.remove(&state.child);
    if !killed.is_empty() {
        log::emit(log::event("orphans_killed").int("count", killed.len() as i64));
    }
    killed.len() as u64
}

/// A process in the shim's tree.
#[derive(Debug)]
struct Proc {
    pid: pid_t,
    state: char,
    pgrp: pid_t,
}

/// Every descendant of the shim. Walks /proc/PID/task/TID/children from our
/// own pid; falls back to scanning all of /proc/*/stat for ppid chains.
fn descendants() -> Vec<Proc> {
    // SAFETY: getpid cannot fail.
    let me = unsafe { sys::getpid() };
    if Path::new(&format!("/proc/{me}/task/{me}/children")).exists() {
        let mut out = Vec::new();
        let mut queue = vec![me];
        let mut seen = HashSet::new();
        while let Some(pid) = queue.pop() {
            let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
                continue;
            };
            for task in tasks.flatten() {
                let Ok(kids) = fs::read_to_string(task.path().join("children")) else {
                    continue;
                };
                for kid in kids
                    .split_whitespace()
                    .filter_map(|k| k.parse::<pid_t>().ok())
                {
                    if seen.insert(kid) {
                        if let Some(p) = stat(kid) {
                            out.push(p);
                        }
                        queue.push(kid);
                    }
                }
            }
        }
        return out;
    }
    // Fallback: full scan, then follow ppid links down from us.
    let mut all: Vec<(Proc, pid_t)> = Vec::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<pid_t>().ok()) {
                if let Some((p, ppid)) = stat_with_ppid(pid) {
                    all.push((p, ppid));
                }
            }
        }
    }
    let mut tree: HashSet<pid_t> = HashSet::from([me]);
    let mut out = Vec::new();
    loop {
        let before = tree.len();
        for (p, ppid) in &all {
            if tree.contains(ppid) && !tree.contains(&p.pid) {
                tree.insert(p.pid);
            }
        }
        if tree.len() == before {
            break;
        }
    }
    for (p, _) in all {
        if p.pid != me && tree.contains(&p.pid) {
            out.push(p);
        }
    }
    out
}

fn stat(pid: pid_t) -> Option<Proc> {
    stat_with_ppid(pid).map(|(p, _)| p)
}

/// Parse /proc/PID/stat: "pid (comm) state ppid pgrp ..." — comm may contain
/// spaces and parentheses, so split after the last ')'.
fn stat_with_ppid(pid: pid_t) -> Option<(Proc, pid_t)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &text)
}

fn parse_stat(pid: pid_t, text: &str) -> Option<(Proc, pid_t)> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((Proc { pid, state, pgrp }, ppid))
}

/// The cgroup v2 `oom_kill` counter, when readable.
fn oom_kills() -> Option<u64> {
    let text = fs::read_to_string("/sys/fs/cgroup/memory.events").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_status_decoding() {
        assert_eq!(decode(0), (Some(0), None));
        assert_eq!(decode(42 << 8), (Some(42), None));
        assert_eq!(decode(11), (None, Some(11)));
        assert_eq!(decode(9 | 0x80), (None, Some(9)), "core-dump bit ignored");
    }

    #[test]
    fn stat_parsing_survives_odd_names() {
        let (p, ppid) = parse_stat(7, "7 (a) b (c)) S 1 7 7 0 -1").unwrap();
        assert_eq!((p.pid, p.state, p.pgrp, ppid), (7, 'S', 7, 1));
        assert!(parse_stat(7, "garbage").is_none());
    }
}
