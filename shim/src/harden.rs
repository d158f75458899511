//! What happens in the forked child between `fork` and `execve`.
//!
//! Everything the child needs is prepared beforehand in a [`Plan`] (C strings,
//! argv/envp arrays, the seccomp program): after `fork` only async-signal-safe
//! syscalls run and nothing allocates — the parent's allocator lock may have
//! been held by another thread at fork time (std's unix process code explains).
//!
//! Failure policy: fail closed. Any step that fails (except the labelled,
//! tolerated cases) reports `(step, errno)` over the close-on-exec error pipe
//! and the child exits 125; the parent turns that into a `spawn_failed`
//! envelope naming the syscall.

use std::ffi::{CString, OsString};
use std::os::raw::{c_char, c_int, c_ulong};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::ptr;

use crate::args::{Options, Seccomp, SAFE_PATH};
use crate::error::Error;
use crate::sys::{self, nr, rlimit, sock_filter};

/// The hardening steps, in order. The discriminant travels over the error pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    Setsid = 1,
    Signals,
    Dup2,
    Rlimit,
    NoNewPrivs,
    Dumpable,
    UnshareNet,
    CapBsetDrop,
    AmbientClear,
    Setgroups,
    Setresgid,
    Setresuid,
    Capset,
    CapVerify,
    CloseFds,
    Chdir,
    Seccomp,
    Execve,
}

const STEPS: [Step; 18] = [
    Step::Setsid,
    Step::Signals,
    Step::Dup2,
    Step::Rlimit,
    Step::NoNewPrivs,
    Step::Dumpable,
    Step::UnshareNet,
    Step::CapBsetDrop,
    Step::AmbientClear,
    Step::Setgroups,
    Step::Setresgid,
    Step::Setresuid,
    Step::Capset,
    Step::CapVerify,
    Step::CloseFds,
    Step::Chdir,
    Step::Seccomp,
    Step::Execve,
];

/// A record on the error pipe: step (high bit set = warning, not fatal) and errno.
pub const REPORT_LEN: usize = 8;
pub const REPORT_WARNING: u32 = 0x8000_0000;

impl Step {
    pub fn from_u32(v: u32) -> Option<Step> {
        STEPS.iter().copied().find(|s| *s as u32 == v)
    }
}

/// Everything the child needs, built before `fork`.
pub struct Plan {
    rlimits: Vec<(c_int, rlimit)>,
    no_network: bool,
    require_no_network: bool,
    /// Started as root: we can (and must) drop groups, ids, the bounding set.
    is_root: bool,
    /// `Some((uid, gid))` to switch to; `None` with --keep-root or when not root.
    ids: Option<(u32, u32)>,
    cap_last: u32,
    workdir: Option<CString>,
    seccomp: Option<Vec<sock_filter>>,
    /// execve candidates: PROGRAM itself, or each PATH entry joined with it.
    candidates: Vec<CString>,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const c_char>,
    /// Capture pipes' write ends, dup'ed onto 1 and 2.
    pub stdout_fd: Option<c_int>,
    pub stderr_fd: Option<c_int>,
}

impl Plan {
    /// Prepare every allocation the child will need.
    pub fn new(
        o: &Options,
        shim_env: impl Iterator<Item = (OsString, OsString)>,
    ) -> Result<Plan, Error> {
        // SAFETY: geteuid has no failure mode.
        let is_root = unsafe { sys::geteuid() } == 0;
        let cstr = |what: &str, b: &[u8]| {
            CString::new(b).map_err(|_| Error::invalid(what.to_string(), "contains a NUL byte"))
        };

        let mut rlimits = vec![(
            sys::RLIMIT_CORE,
            rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            },
        )];
        let same = |n: u64| rlimit {
            rlim_cur: n,
            rlim_max: n,
        };
        if let Some(cpu) = o.cpu {
            // Soft limit sends SIGXCPU, the hard limit one second later SIGKILL.
            rlimits.push((
                sys::RLIMIT_CPU,
                rlimit {
                    rlim_cur: cpu,
                    rlim_max: cpu.saturating_add(1),
                },
            ));
        }
        for (res, v) in [
            (sys::RLIMIT_AS, o.memory),
            (sys::RLIMIT_NPROC, o.nproc),
            (sys::RLIMIT_NOFILE, o.nofile),
            (sys::RLIMIT_FSIZE, o.fsize),
        ] {
            if let Some(n) = v {
                rlimits.push((res, same(n)));
            }
        }

        let env = build_env(o, shim_env);
        let path_var = env
            .iter()
            .find(|(k, _)| k == b"PATH")
            .map(|(_, v)| v.clone());
        let envp: Vec<CString> = env
            .into_iter()
            .map(|(mut k, v)| {
                k.push(b'=');
                k.extend_from_slice(&v);
                cstr("environment", &k)
            })
            .collect::<Result<_, _>>()?;
        let argv: Vec<CString> = o
            .program
            .iter()
            .map(|a| cstr("PROGRAM argument", a.as_bytes()))
            .collect::<Result<_, _>>()?;
        let candidates =
            exec_candidates(o.program[0].as_bytes(), path_var.as_deref().unwrap_or(b""))
                .into_iter()
                .map(|c| cstr("PROGRAM", &c))
                .collect::<Result<_, _>>()?;

        let mut argv_ptrs: Vec<*const c_char> = argv.iter().map(|c| c.as_ptr()).collect();
        argv_ptrs.push(ptr::null());
        let mut envp_ptrs: Vec<*const c_char> = envp.iter().map(|c| c.as_ptr()).collect();
        envp_ptrs.push(ptr::null());

        Ok(Plan {
            rlimits,
            no_network: o.no_network,
            require_no_network: o.require_no_network,
            is_root,
            ids: (is_root && !o.keep_root).then_some((o.uid, o.gid)),
            cap_last: cap_last_cap(),
            workdir: o
                .workdir
                .as_ref()
                .map(|w| cstr("--workdir", w.as_os_str().as_bytes()))
                .transpose()?,
            seccomp: (o.seccomp == Seccomp::Default).then(seccomp_filter),
            candidates,
            _argv: argv,
            argv_ptrs,
            _envp: envp,
            envp_ptrs,
            stdout_fd: None,
            stderr_fd: None,
        })
    }

    /// Whether this run can drop the bounding set (only with CAP_SETPCAP, i.e. as root).
    pub fn is_root(&self) -> bool {
        self.is_root
    }

    /// The syscall a failed step stands for, with its arguments, for the envelope.
    pub fn describe(&self, step: Step) -> String {
        match step {
            Step::Setsid => "setsid()".into(),
            Step::Signals => "sigprocmask(SIG_SETMASK, {})".into(),
            Step::Dup2 => "dup2(capture pipe, 1|2)".into(),
            Step::Rlimit => "setrlimit(PROGRAM limits)".into(),
            Step::NoNewPrivs => "prctl(PR_SET_NO_NEW_PRIVS, 1)".into(),
            Step::Dumpable => "prctl(PR_SET_DUMPABLE, 0)".into(),
            Step::UnshareNet => "unshare(CLONE_NEWNET)".into(),
            Step::CapBsetDrop => "prctl(PR_CAPBSET_DROP)".into(),
            Step::AmbientClear => "prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)".into(),
            Step::Setgroups => "setgroups(0, NULL)".into(),
            Step::Setresgid => {
                let g = self.ids.map_or(0, |(_, g)| g);
                format!("setresgid({g}, {g}, {g})")
            }
            Step::Setresuid => {
                let u = self.ids.map_or(0, |(u, _)| u);
                format!("setresuid({u}, {u}, {u})")
            }
            Step::Capset => "capset(all zero)".into(),
            Step::CapVerify => "capget: capabilities left after capset".into(),
            Step::CloseFds => "close_range(3, ~0, CLOSE_RANGE_CLOEXEC)".into(),
            Step::Chdir => format!(
                "chdir({})",
                self.workdir
                    .as_ref()
                    .map(|w| w.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
            Step::Seccomp => "prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER)".into(),
            Step::Execve => format!("execve({})", self._argv[0].to_string_lossy()),
        }
    }

    /// Run in the child after `fork`: harden, then exec. Returns only on failure.
    ///
    /// Async-signal-safe: no allocation, no locks, raw syscalls only.
    pub fn exec_child(&self, report_fd: c_int) -> ! {
        let (step, errno) = match self.harden(report_fd) {
            Ok(()) => (Step::Execve, self.execve()),
            Err(failure) => failure,
        };
        report(report_fd, step as u32, errno);
        // SAFETY: _exit is async-signal-safe and never returns.
        unsafe { sys::_exit(125) }
    }

    /// The fixed hardening order; each comment says why the step sits where it does.
    fn harden(&self, report_fd: c_int) -> Result<(), (Step, c_int)> {
        let fail = |step: Step| Err((step, sys::errno()));
        // SAFETY: each call is a plain syscall wrapper given
        // pointers to data owned by `self`, which outlives the call; none allocates.
        unsafe {
            // 1. A new session and process group: the shim signals PROGRAM's whole
            //    group, and PROGRAM loses the controlling terminal of the shim.
            if sys::setsid() < 0 {
                return fail(Step::Setsid);
            }
            // 2. Signal dispositions back to default (Rust's runtime ignores SIGPIPE,
            //    and SIG_IGN survives exec), then unblock what the shim blocked for its
            //    signalfd. Dispositions first, so a pending signal meets SIG_DFL.
            for sig in 1..sys::NSIG {
                if sig != sys::SIGKILL && sig != sys::SIGSTOP {
                    sys::signal(sig, sys::SIG_DFL); // EINVAL for glibc-reserved 32/33: tolerated
                }
            }
            let empty = sys::empty_sigset();
            if sys::sigprocmask(sys::SIG_SETMASK, &empty, ptr::null_mut()) < 0 {
                return fail(Step::Signals);
            }
            // 3. Output capture: stdout/stderr become the shim's pipes.
            for (src, dst) in [(self.stdout_fd, 1), (self.stderr_fd, 2)] {
                if let Some(fd) = src {
                    if sys::dup2(fd, dst) < 0 {
                        return fail(Step::Dup2);
                    }
                }
            }
            // 4. rlimits while still privileged (raising a hard limit needs
            //    CAP_SYS_RESOURCE); RLIMIT_CORE is always 0.
            for (res, lim) in &self.rlimits {
                if sys::setrlimit(*res, lim) < 0 {
                    return fail(Step::Rlimit);
                }
            }
            // 5. no_new_privs: execve can never grant privileges again (setuid bits,
            //    file caps). Required by seccomp, and makes the bounding set moot for
            //    a non-root shim that cannot drop it.
            if sys::prctl(sys::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
                return fail(Step::NoNewPrivs);
            }
            // 6. Not dumpable: no core dumps, /proc/PID files owned by root, no
            //    ptrace attach by same-uid processes. The kernel resets this at
            //    execve (to 1 for an ordinary binary, unless the credentials
            //    changed: a uid-switched exec stays non-dumpable), so it mainly
            //    guards the window until exec; kept anyway, it costs nothing.
            if sys::prctl(sys::PR_SET_DUMPABLE, 0, 0, 0, 0) < 0 {
                return fail(Step::Dumpable);
            }
            // 7. Network namespace: needs CAP_SYS_ADMIN, so before any drop.
            if self.no_network && sys::unshare(sys::CLONE_NEWNET as c_int) < 0 {
                if self.require_no_network {
                    return fail(Step::UnshareNet);
                }
                // Tolerated: the kernel or container refuses; the parent logs a warning.
                report(
                    report_fd,
                    Step::UnshareNet as u32 | REPORT_WARNING,
                    sys::errno(),
                );
            }
            // 8. Empty the bounding set while CAP_SETPCAP is still held, so no later
            //    execve (even of a root-owned binary as uid 0) can regain a capability.
            for cap in 0..=self.cap_last {
                if sys::prctl(sys::PR_CAPBSET_DROP, cap as c_ulong, 0, 0, 0) < 0 {
                    match sys::errno() {
                        // Tolerated: cap above the kernel's last cap (fallback bound).
                        sys::EINVAL => break,
                        // Tolerated: not root, so no CAP_SETPCAP; no_new_privs (step 5)
                        // already stops execve from granting anything.
                        sys::EPERM if !self.is_root => break,
                        _ => return fail(Step::CapBsetDrop),
                    }
                }
            }
            // 9. Ambient capabilities would survive execve: clear them.
            //    EINVAL (kernel < 4.3 has no ambient set) is tolerated.
            if sys::prctl(sys::PR_CAP_AMBIENT, sys::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0
                && sys::errno() != sys::EINVAL
            {
                return fail(Step::AmbientClear);
            }
            // 10-12. Supplementary groups, then gid, then uid: each needs the
            //    privilege the next one gives up.
            if self.is_root && sys::setgroups(0, ptr::null()) < 0 {
                return fail(Step::Setgroups);
            }
            if let Some((uid, gid)) = self.ids {
                if sys::setresgid(gid, gid, gid) < 0 {
                    return fail(Step::Setresgid);
                }
                if sys::setresuid(uid, uid, uid) < 0 {
                    return fail(Step::Setresuid);
                }
            }
            // 13. Zero effective/permitted/inheritable (--keep-root keeps uid 0 but
            //     with nothing), then verify with capget that nothing is left.
            let mut hdr = sys::cap_user_header {
                version: sys::LINUX_CAPABILITY_VERSION_3,
                pid: 0,
            };
            let zero = [sys::cap_user_data::default(); 2];
            if sys::capset(&mut hdr, zero.as_ptr()) < 0 {
                return fail(Step::Capset);
            }
            let mut now = [sys::cap_user_data {
                effective: !0,
                permitted: !0,
                inheritable: !0,
            }; 2];
            if sys::capget(&mut hdr, now.as_mut_ptr()) < 0 {
                return fail(Step::CapVerify);
            }
            if now != zero {
                return Err((Step::CapVerify, sys::EPERM));
            }
            // 14. No inherited descriptors beyond 0-2: mark everything else
            //     close-on-exec (our error pipe must stay open until exec itself).
            if sys::close_range(3, !0, sys::CLOSE_RANGE_CLOEXEC) < 0 {
                let e = sys::errno();
                if e != sys::ENOSYS && e != sys::EINVAL {
                    return fail(Step::CloseFds);
                }
                // Tolerated: kernel < 5.11; mark each possible fd by hand.
                for fd in 3..65536 {
                    sys::fcntl(fd, sys::F_SETFD, sys::FD_CLOEXEC);
                }
            }
            // 15. chdir after the uid switch, so the grader user must be able to reach it.
            if let Some(dir) = &self.workdir {
                if sys::chdir(dir.as_ptr()) < 0 {
                    return fail(Step::Chdir);
                }
            }
            // 16. seccomp last: the filter denies unshare/setns, which we used above,
            //     and needs no_new_privs (step 5) to be installed unprivileged.
            if let Some(filter) = &self.seccomp {
                let prog = sys::sock_fprog {
                    len: filter.len() as u16,
                    filter: filter.as_ptr(),
                };
                if sys::prctl(
                    sys::PR_SET_SECCOMP,
                    sys::SECCOMP_MODE_FILTER,
                    &prog as *const _ as c_ulong,
                    0,
                    0,
                ) < 0
                {
                    return fail(Step::Seccomp);
                }
            }
        }
        Ok(())
    }

    /// Try each candidate like execvp; returns the errno to report.
    fn execve(&self) -> c_int {
        let mut result = sys::ENOENT;
        let mut saw_eacces = false;
        for path in &self.candidates {
            // SAFETY: path, argv and envp are NUL-terminated / NULL-terminated arrays owned by self.
            unsafe {
                sys::execve(
                    path.as_ptr(),
                    self.argv_ptrs.as_ptr(),
                    self.envp_ptrs.as_ptr(),
                )
            };
            result = sys::errno();
            match result {
                sys::EACCES => saw_eacces = true,
                sys::ENOENT | sys::ENOTDIR | sys::ESTALE => {}
                _ => return result,
            }
        }
        if saw_eacces {
            sys::EACCES
        } else {
            result
        }
    }
}

/// Write one (step, errno) record; async-signal-safe.
fn report(fd: c_int, step: u32, errno: c_int) {
    let mut rec = [0u8; REPORT_LEN];
    rec[..4].copy_from_slice(&step.to_ne_bytes());
    rec[4..].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: rec is a valid buffer of REPORT_LEN bytes; a short pipe write of 8 bytes cannot happen (< PIPE_BUF).
    unsafe { sys::write(fd, rec.as_ptr().cast(), REPORT_LEN) };
}

/// PROGRAM's environment: --pass-env values, then --env (which wins), then a
/// safe PATH unless one was given. Nothing else from the shim's environment.
pub fn build_env(
    o: &Options,
    shim_env: impl Iterator<Item = (OsString, OsString)>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let shim_env: Vec<(OsString, OsString)> = shim_env.collect();
    let mut env: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let put = |k: Vec<u8>, v: Vec<u8>, env: &mut Vec<(Vec<u8>, Vec<u8>)>| {
        env.retain(|(key, _)| *key != k);
        env.push((k, v));
    };
    for key in &o.pass_env {
        if let Some((_, v)) = shim_env
            .iter()
            .find(|(k, _)| k.as_bytes() == key.as_bytes())
        {
            put(key.as_bytes().to_vec(), v.clone().into_vec(), &mut env);
        }
    }
    for (k, v) in &o.env {
        put(k.as_bytes().to_vec(), v.as_bytes().to_vec(), &mut env);
    }
    if !env.iter().any(|(k, _)| k == b"PATH") {
        env.push((b"PATH".to_vec(), SAFE_PATH.as_bytes().to_vec()));
    }
    env
}

/// execvp's search: a name with a slash is used as is; otherwise each PATH entry.
pub fn exec_candidates(program: &[u8], path: &[u8]) -> Vec<Vec<u8>> {
    if program.contains(&b'/') {
        return vec![program.to_vec()];
    }
    path.split(|&b| b == b':')
        .map(|dir| {
            let dir: &[u8] = if dir.is_empty() { b"." } else { dir };
            let mut p = dir.to_vec();
            p.push(b'/');
            p.extend_from_slice(program);
            p
        })
        .collect()
}

/// The kernel's highest capability number, or a safe upper bound (the drop
/// loop stops at the first EINVAL anyway).
fn cap_last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(sys::CAP_LAST_CAP_FALLBACK)
}

/// Syscalls the default filter answers with EPERM.
pub const DENIED: &[u32] = &[
    nr::PTRACE,
    nr::MOUNT,
    nr::UMOUNT2,
    nr::UNSHARE,
    nr::SETNS,
    nr::KEXEC_LOAD,
    nr::KEXEC_FILE_LOAD,
    nr::INIT_MODULE,
    nr::FINIT_MODULE,
    nr::DELETE_MODULE,
    nr::BPF,
    nr::PERF_EVENT_OPEN,
    nr::KEYCTL,
    nr::ADD_KEY,
    nr::REQUEST_KEY,
    nr::USERFAULTFD,
    nr::PROCESS_VM_READV,
    nr::PROCESS_VM_WRITEV,
    nr::REBOOT,
    nr::SWAPON,
    nr::SWAPOFF,
    nr::PIVOT_ROOT,
    nr::OPEN_BY_HANDLE_AT,
    nr::IO_URING_SETUP,
    nr::IO_URING_ENTER,
    nr::IO_URING_REGISTER,
    // The new mount API is mount(2) by other names.
    nr::OPEN_TREE,
    nr::MOVE_MOUNT,
    nr::FSOPEN,
    nr::FSCONFIG,
    nr::FSMOUNT,
    nr::FSPICK,
    nr::MOUNT_SETATTR,
];

/// clone(2) flags that create namespaces (unshare by another name).
const CLONE_NS_FLAGS: u32 = sys::CLONE_NEWNS
    | sys::CLONE_NEWCGROUP
    | sys::CLONE_NEWUTS
    | sys::CLONE_NEWIPC
    | sys::CLONE_NEWUSER
    | sys::CLONE_NEWPID
    | sys::CLONE_NEWNET;

/// The default deny-list as classic BPF.
///
/// ```text
///       ld  arch ; jeq AUDIT_ARCH_X86_64 ? next : KILL_PROCESS
///       ld  nr   ; jge 0x40000000 (x32) -> EPERM
///       jeq <each denied nr> -> EPERM
///       jeq clone3 -> ENOSYS   (its flags live in memory the filter can't read;
///                               libc falls back to clone, checked below)
///       jeq clone ? next : ALLOW ; ld args[0] ; jset CLONE_NEW* -> EPERM
///       ret ALLOW ; ret EPERM ; ret ENOSYS
/// ```
pub fn seccomp_filter() -> Vec<sock_filter> {
    let stmt = |code, k| sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code, k, jt: usize, jf: usize| sock_filter {
        code,
        jt: jt as u8,
        jf: jf as u8,
        k,
    };
    let n = DENIED.len();
    let allow = 9 + n;
    let deny = 10 + n;
    let enosys = 11 + n;
    let mut f = vec![
        stmt(sys::BPF_LD_W_ABS, sys::SECCOMP_DATA_ARCH),
        jump(sys::BPF_JMP_JEQ_K, sys::AUDIT_ARCH_X86_64, 1, 0),
        stmt(sys::BPF_RET_K, sys::SECCOMP_RET_KILL_PROCESS),
        stmt(sys::BPF_LD_W_ABS, sys::SECCOMP_DATA_NR),
    ];
    // Offsets are relative to the next instruction.
    let at = |f: &Vec<sock_filter>, target: usize| target - (f.len() + 1);
    let x = jump(sys::BPF_JMP_JGE_K, sys::X32_SYSCALL_BIT, at(&f, deny), 0);
    f.push(x);
    for &nr in DENIED {
        let x = jump(sys::BPF_JMP_JEQ_K, nr, at(&f, deny), 0);
        f.push(x);
    }
    let x = jump(sys::BPF_JMP_JEQ_K, nr::CLONE3, at(&f, enosys), 0);
    f.push(x);
    let x = jump(sys::BPF_JMP_JEQ_K, nr::CLONE, 0, at(&f, allow));
    f.push(x);
    f.push(stmt(sys::BPF_LD_W_ABS, sys::SECCOMP_DATA_ARG0_LO));
    let x = jump(
        sys::BPF_JMP_JSET_K,
        CLONE_NS_FLAGS,
        at(&f, deny),
        at(&f, allow),
    );
    f.push(x);
    debug_assert_eq!(f.len(), allow);
    f.push(stmt(sys::BPF_RET_K, sys::SECCOMP_RET_ALLOW));
    f.push(stmt(
        sys::BPF_RET_K,
        sys::SECCOMP_RET_ERRNO | sys::EPERM as u32,
    ));
    f.push(stmt(
        sys::BPF_RET_K,
        sys::SECCOMP_RET_ERRNO | sys::ENOSYS as u32,
    ));
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny classic-BPF interpreter for the instructions we emit.
    fn run(f: &[sock_filter], arch: u32, nr: u32, arg0: u32) -> u32 {
        let mut acc = 0u32;
        let mut pc = 0usize;
        loop {
            let i = f[pc];
            pc += 1;
            match i.code {
                sys::BPF_LD_W_ABS => {
                    acc = match i.k {
                        sys::SECCOMP_DATA_ARCH => arch,
                        sys::SECCOMP_DATA_NR => nr,
                        sys::SECCOMP_DATA_ARG0_LO => arg0,
                        k => panic!("load of {k}"),
                    }
                }
                sys::BPF_JMP_JEQ_K => pc += if acc == i.k { i.jt } else { i.jf } as usize,
                sys::BPF_JMP_JGE_K => pc += if acc >= i.k { i.jt } else { i.jf } as usize,
                sys::BPF_JMP_JSET_K => pc += if acc & i.k != 0 { i.jt } else { i.jf } as usize,
                sys::BPF_RET_K => return i.k,
                c => panic!("opcode {c}"),
            }
        }
    }

    const EPERM_RET: u32 = sys::SECCOMP_RET_ERRNO | 1;

    #[test]
    fn filter_decisions() {
        let f = seccomp_filter();
        let x86 = sys::AUDIT_ARCH_X86_64;
        assert_eq!(
            run(&f, 0x4000_0003, 0, 0),
            sys::SECCOMP_RET_KILL_PROCESS,
            "i386 arch is killed"
        );
        for &nr in DENIED {
            assert_eq!(run(&f, x86, nr, 0), EPERM_RET, "nr {nr}");
        }
        assert_eq!(run(&f, x86, 0x4000_0000 | 101, 0), EPERM_RET, "x32 ptrace");
        assert_eq!(run(&f, x86, 0x4000_0000, 0), EPERM_RET, "x32 read");
        for ok in [0u32, 1, 2, 57, 59, 60, 231] {
            assert_eq!(run(&f, x86, ok, 0), sys::SECCOMP_RET_ALLOW, "nr {ok}");
        }
        assert_eq!(
            run(&f, x86, nr::CLONE, 0x01200011),
            sys::SECCOMP_RET_ALLOW,
            "fork-like clone"
        );
        assert_eq!(run(&f, x86, nr::CLONE, sys::CLONE_NEWUSER | 17), EPERM_RET);
        assert_eq!(run(&f, x86, nr::CLONE3, 0), sys::SECCOMP_RET_ERRNO | 38);
        assert!(f.len() < 256);
    }

    #[test]
    fn candidates() {
        assert_eq!(exec_candidates(b"./a", b"/bin"), vec![b"./a".to_vec()]);
        assert_eq!(
            exec_candidates(b"sh", b"/usr/bin::/bin"),
            vec![
                b"/usr/bin/sh".to_vec(),
                b"./sh".to_vec(),
                b"/bin/sh".to_vec()
            ]
        );
    }

    #[test]
    fn env_is_exactly_what_was_allowed() {
        let o = Options {
            env: vec![
                ("A".into(), "1".into()),
                ("HOME".into(), "/override".into()),
            ],
            pass_env: vec!["HOME".into(), "MISSING".into(), "LANG".into()],
            ..Options::default()
        };
        let shim = vec![("HOME", "/root"), ("LANG", "C.UTF-8"), ("SECRET", "x")]
            .into_iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let env = build_env(&o, shim);
        let got: Vec<(String, String)> = env
            .into_iter()
            .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
            .collect();
        let want: Vec<(String, String)> = [
            ("LANG", "C.UTF-8"),
            ("A", "1"),
            ("HOME", "/override"),
            ("PATH", SAFE_PATH),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn explicit_path_wins() {
        let o = Options {
            env: vec![("PATH".into(), "/opt/bin".into())],
            ..Options::default()
        };
        let env = build_env(&o, std::iter::empty());
        assert_eq!(env, vec![(b"PATH".to_vec(), b"/opt/bin".to_vec())]);
    }

    #[test]
    fn steps_round_trip() {
        for s in STEPS {
            assert_eq!(Step::from_u32(s as u32), Some(s));
        }
        assert_eq!(Step::from_u32(0), None);
    }
}
