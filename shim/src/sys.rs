//! Every foreign declaration and kernel constant the shim needs that `std`
//! does not expose. All of them resolve against glibc (linked statically with
//! `+crt-static`); each names the header it comes from and why it is here.
//!
//! Only x86_64 Linux is supported: struct layouts and syscall numbers below
//! are for that ABI.

#![allow(non_camel_case_types, dead_code)]

use std::io;
use std::os::raw::{c_char, c_int, c_long, c_uint, c_ulong, c_void};

pub type pid_t = i32;

/// `sigset_t` from <signal.h>: glibc reserves 1024 bits.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct sigset_t {
    pub val: [c_ulong; 16],
}

/// `struct rlimit` from <sys/resource.h>.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct rlimit {
    pub rlim_cur: u64,
    pub rlim_max: u64,
}

/// `struct timeval` from <sys/time.h>.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct timeval {
    pub tv_sec: i64,
    pub tv_usec: i64,
}

/// `struct rusage` from <sys/resource.h>.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct rusage {
    pub ru_utime: timeval,
    pub ru_stime: timeval,
    pub ru_maxrss: c_long,
    pub rest: [c_long; 13],
}

/// `struct pollfd` from <poll.h>.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct pollfd {
    pub fd: c_int,
    pub events: i16,
    pub revents: i16,
}

/// `struct sock_filter` from <linux/filter.h>: one classic-BPF instruction.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct sock_filter {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// `struct sock_fprog` from <linux/filter.h>: what PR_SET_SECCOMP takes.
#[repr(C)]
pub struct sock_fprog {
    pub len: u16,
    pub filter: *const sock_filter,
}

/// `struct __user_cap_header_struct` from <linux/capability.h>.
#[repr(C)]
pub struct cap_user_header {
    pub version: u32,
    pub pid: c_int,
}

/// `struct __user_cap_data_struct` from <linux/capability.h> (two of them for v3).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct cap_user_data {
    pub effective: u32,
    pub permitted: u32,
    pub inheritable: u32,
}

extern "C" {
    /// <errno.h>: where glibc keeps this thread's errno (read in the forked child without allocating).
    pub fn __errno_location() -> *mut c_int;
    /// <unistd.h>: std has no fork; the shim must control exactly what runs between fork and exec.
    pub fn fork() -> pid_t;
    /// <unistd.h>: std's Command cannot interleave our hardening steps before exec.
    pub fn execve(
        path: *const c_char,
        argv: *const *const c_char,
        envp: *const *const c_char,
    ) -> c_int;
    /// <unistd.h>: leave the forked child without running atexit handlers or flushing std buffers.
    pub fn _exit(status: c_int) -> !;
    /// <unistd.h>: PROGRAM gets its own session so a whole process group can be signalled.
    pub fn setsid() -> pid_t;
    /// <unistd.h>: our own pid, the root of the descendant tree we police.
    pub fn getpid() -> pid_t;
    /// <unistd.h>: decide whether privileges can (and must) be dropped.
    pub fn geteuid() -> c_uint;
    /// <unistd.h>: raw fd I/O in the child and on pipes/signalfd without std wrappers.
    pub fn read(fd: c_int, buf: *mut c_void, count: usize) -> isize;
    /// <unistd.h>: raw fd I/O (errno report from the child).
    pub fn write(fd: c_int, buf: *const c_void, count: usize) -> isize;
    /// <unistd.h>: close fds we own as raw integers.
    pub fn close(fd: c_int) -> c_int;
    /// <unistd.h>: point the child's stdout/stderr at the capture pipes.
    pub fn dup2(old: c_int, new: c_int) -> c_int;
    /// <unistd.h>: chdir in the child after the uid switch, without allocating.
    pub fn chdir(path: *const c_char) -> c_int;
    /// <unistd.h> (_GNU_SOURCE): pipes created close-on-exec in one step.
    pub fn pipe2(fds: *mut c_int, flags: c_int) -> c_int;
    /// <unistd.h> (glibc >= 2.34): mark every inherited fd > 2 close-on-exec.
    pub fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int;
    /// <fcntl.h>: fallback CLOEXEC marking and pipe sizing.
    pub fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
    /// <grp.h>: drop supplementary groups before changing gid.
    pub fn setgroups(size: usize, list: *const c_uint) -> c_int;
    /// <unistd.h>: set real, effective and saved gid together.
    pub fn setresgid(r: c_uint, e: c_uint, s: c_uint) -> c_int;
    /// <unistd.h>: set real, effective and saved uid together.
    pub fn setresuid(r: c_uint, e: c_uint, s: c_uint) -> c_int;
    /// <sys/prctl.h>: no_new_privs, dumpable, subreaper, bounding set, ambient caps, seccomp.
    pub fn prctl(
        option: c_int,
        arg2: c_ulong,
        arg3: c_ulong,
        arg4: c_ulong,
        arg5: c_ulong,
    ) -> c_int;
    /// <sched.h>: a fresh network namespace for --no-network.
    pub fn unshare(flags: c_int) -> c_int;
    /// <sys/capability.h> (exported by glibc): zero every capability set.
    pub fn capset(hdr: *mut cap_user_header, data: *const cap_user_data) -> c_int;
    /// <sys/capability.h> (exported by glibc): verify nothing is left after capset.
    pub fn capget(hdr: *mut cap_user_header, data: *mut cap_user_data) -> c_int;
    /// <sys/resource.h>: PROGRAM's rlimits, set in the child.
    pub fn setrlimit(resource: c_int, rlim: *const rlimit) -> c_int;
    /// <sys/resource.h>: CPU and RSS of PROGRAM plus every reaped descendant.
    pub fn getrusage(who: c_int, usage: *mut rusage) -> c_int;
    /// <sys/wait.h>: reap any child; rusage of the one reaped.
    pub fn wait4(pid: pid_t, status: *mut c_int, options: c_int, usage: *mut rusage) -> pid_t;
    /// <signal.h>: signal PROGRAM's group and stray descendants.
    pub fn kill(pid: pid_t, sig: c_int) -> c_int;
    /// <signal.h>: reset dispositions in the child (SIG_DFL) — Rust ignores SIGPIPE.
    pub fn signal(sig: c_int, handler: usize) -> usize;
    /// <signal.h>: block signals in the shim so only the signalfd sees them.
    pub fn sigprocmask(how: c_int, set: *const sigset_t, old: *mut sigset_t) -> c_int;
    /// <signal.h>: build signal sets.
    pub fn sigemptyset(set: *mut sigset_t) -> c_int;
    /// <signal.h>: build signal sets.
    pub fn sigaddset(set: *mut sigset_t, sig: c_int) -> c_int;
    /// <sys/signalfd.h>: signals as readable events in the poll loop.
    pub fn signalfd(fd: c_int, mask: *const sigset_t, flags: c_int) -> c_int;
    /// <poll.h>: the supervisor's single wait point (signals, output pipes, deadlines).
    pub fn poll(fds: *mut pollfd, nfds: c_ulong, timeout: c_int) -> c_int;
    /// <sys/inotify.h>: wake as soon as the ready marker appears.
    pub fn inotify_init1(flags: c_int) -> c_int;
    /// <sys/inotify.h>: watch the marker's directory for create/rename.
    pub fn inotify_add_watch(fd: c_int, path: *const c_char, mask: u32) -> c_int;
}

// <fcntl.h> / <unistd.h>
pub const O_CLOEXEC: c_int = 0o2000000;
pub const O_NONBLOCK: c_int = 0o4000;
pub const F_SETFD: c_int = 2;
pub const FD_CLOEXEC: c_int = 1;
pub const F_SETPIPE_SZ: c_int = 1031;
pub const CLOSE_RANGE_CLOEXEC: c_int = 1 << 2;

// <errno.h>
pub const EPERM: c_int = 1;
pub const ENOENT: c_int = 2;
pub const EINTR: c_int = 4;
pub const EAGAIN: c_int = 11;
pub const EACCES: c_int = 13;
pub const ENOTDIR: c_int = 20;
pub const EINVAL: c_int = 22;
pub const ENOEXEC: c_int = 8;
pub const ECHILD: c_int = 10;
pub const ENOSYS: c_int = 38;
pub const ESTALE: c_int = 116;

// <signal.h>
pub const SIGHUP: c_int = 1;
pub const SIGINT: c_int = 2;
pub const SIGQUIT: c_int = 3;
pub const SIGKILL: c_int = 9;
pub const SIGUSR1: c_int = 10;
pub const SIGUSR2: c_int = 12;
pub const SIGTERM: c_int = 15;
pub const SIGCHLD: c_int = 17;
pub const SIGCONT: c_int = 18;
pub const SIGSTOP: c_int = 19;
pub const NSIG: c_int = 65;
pub const SIG_DFL: usize = 0;
pub const SIG_SETMASK: c_int = 2;
pub const SIG_BLOCK: c_int = 0;

// <sys/signalfd.h>
pub const SFD_CLOEXEC: c_int = O_CLOEXEC;
pub const SFD_NONBLOCK: c_int = O_NONBLOCK;
pub const SIGNALFD_SIGINFO_SIZE: usize = 128;

// <poll.h>
pub const POLLIN: i16 = 0x1;
pub const POLLERR: i16 = 0x8;
pub const POLLHUP: i16 = 0x10;

// <sys/wait.h>
pub const WNOHANG: c_int = 1;

// <sys/resource.h>
pub const RUSAGE_CHILDREN: c_int = -1;
pub const RLIMIT_CPU: c_int = 0;
pub const RLIMIT_FSIZE: c_int = 1;
pub const RLIMIT_CORE: c_int = 4;
pub const RLIMIT_NPROC: c_int = 6;
pub const RLIMIT_NOFILE: c_int = 7;
pub const RLIMIT_AS: c_int = 9;

// <linux/prctl.h>
pub const PR_SET_DUMPABLE: c_int = 4;
pub const PR_SET_SECCOMP: c_int = 22;
pub const PR_CAPBSET_DROP: c_int = 24;
pub const PR_SET_CHILD_SUBREAPER: c_int = 36;
pub const PR_SET_NO_NEW_PRIVS: c_int = 38;
pub const PR_CAP_AMBIENT: c_int = 47;
pub const PR_CAP_AMBIENT_CLEAR_ALL: c_ulong = 4;

// <linux/capability.h>
pub const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
/// Upper bound for the bounding-set loop when /proc/sys/kernel/cap_last_cap is unreadable.
pub const CAP_LAST_CAP_FALLBACK: u32 = 63;

// <sched.h>
pub const CLONE_NEWNS: u32 = 0x0002_0000;
pub const CLONE_NEWCGROUP: u32 = 0x0200_0000;
pub const CLONE_NEWUTS: u32 = 0x0400_0000;
pub const CLONE_NEWIPC: u32 = 0x0800_0000;
pub const CLONE_NEWUSER: u32 = 0x1000_0000;
pub const CLONE_NEWPID: u32 = 0x2000_0000;
pub const CLONE_NEWNET: u32 = 0x4000_0000;

// <sys/inotify.h>
pub const IN_CLOEXEC: c_int = O_CLOEXEC;
pub const IN_NONBLOCK: c_int = O_NONBLOCK;
pub const IN_CLOSE_WRITE: u32 = 0x0000_0008;
pub const IN_MOVED_TO: u32 = 0x0000_0080;
pub const IN_CREATE: u32 = 0x0000_0100;
pub const IN_DELETE_SELF: u32 = 0x0000_0400;
pub const IN_MOVE_SELF: u32 = 0x0000_0800;

// <linux/seccomp.h> and <linux/filter.h>
pub const SECCOMP_MODE_FILTER: c_ulong = 2;
pub const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
pub const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
pub const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
pub const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD (0) | BPF_W (0) | BPF_ABS (0x20)
pub const BPF_JMP_JEQ_K: u16 = 0x05 | 0x10; // BPF_JMP | BPF_JEQ | BPF_K
pub const BPF_JMP_JGE_K: u16 = 0x05 | 0x30; // BPF_JMP | BPF_JGE | BPF_K
pub const BPF_JMP_JSET_K: u16 = 0x05 | 0x40; // BPF_JMP | BPF_JSET | BPF_K
pub const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K
/// offsetof(struct seccomp_data, nr / arch / args[0]).
pub const SECCOMP_DATA_NR: u32 = 0;
pub const SECCOMP_DATA_ARCH: u32 = 4;
pub const SECCOMP_DATA_ARG0_LO: u32 = 16;
/// x32 ABI syscalls on x86_64 carry this bit.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// x86_64 syscall numbers (<asm/unistd_64.h>) used by the seccomp filter.
pub mod nr {
    pub const CLONE: u32 = 56;
    pub const PTRACE: u32 = 101;
    pub const PIVOT_ROOT: u32 = 155;
    pub const MOUNT: u32 = 165;
    pub const UMOUNT2: u32 = 166;
    pub const SWAPON: u32 = 167;
    pub const SWAPOFF: u32 = 168;
    pub const REBOOT: u32 = 169;
    pub const INIT_MODULE: u32 = 175;
    pub const DELETE_MODULE: u32 = 176;
    pub const KEXEC_LOAD: u32 = 246;
    pub const ADD_KEY: u32 = 248;
    pub const REQUEST_KEY: u32 = 249;
    pub const KEYCTL: u32 = 250;
    pub const UNSHARE: u32 = 272;
    pub const PERF_EVENT_OPEN: u32 = 298;
    pub const OPEN_BY_HANDLE_AT: u32 = 304;
    pub const SETNS: u32 = 308;
    pub const PROCESS_VM_READV: u32 = 310;
    pub const PROCESS_VM_WRITEV: u32 = 311;
    pub const FINIT_MODULE: u32 = 313;
    pub const KEXEC_FILE_LOAD: u32 = 320;
    pub const BPF: u32 = 321;
    pub const USERFAULTFD: u32 = 323;
    pub const IO_URING_SETUP: u32 = 425;
    pub const IO_URING_ENTER: u32 = 426;
    pub const IO_URING_REGISTER: u32 = 427;
    pub const OPEN_TREE: u32 = 428;
    pub const MOVE_MOUNT: u32 = 429;
    pub const FSOPEN: u32 = 430;
    pub const FSCONFIG: u32 = 431;
    pub const FSMOUNT: u32 = 432;
    pub const FSPICK: u32 = 433;
    pub const CLONE3: u32 = 435;
    pub const MOUNT_SETATTR: u32 = 442;
}

/// This thread's errno (async-signal-safe; usable between fork and exec).
pub fn errno() -> c_int {
    // SAFETY: __errno_location always returns a valid pointer to this thread's errno.
    unsafe { *__errno_location() }
}

/// Turn a `-1` return into the `io::Error` for errno (std's `cvt`).
pub fn cvt<T: Into<i64> + Copy>(ret: T) -> io::Result<T> {
    if ret.into() == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Like [`cvt`], retrying while the call fails with EINTR (std's `cvt_r`).
pub fn cvt_r<T: Into<i64> + Copy>(mut f: impl FnMut() -> T) -> io::Result<T> {
    loop {
        match cvt(f()) {
            Err(e) if e.raw_os_error() == Some(EINTR) => continue,
            other => return other,
        }
    }
}

/// An empty signal set.
pub fn empty_sigset() -> sigset_t {
    let mut set = sigset_t { val: [0; 16] };
    // SAFETY: `set` is a valid, writable sigset_t.
    unsafe { sigemptyset(&mut set) };
    set
}

/// An owned raw fd, closed on drop.
#[derive(Debug)]
pub struct Fd(pub c_int);

impl Fd {
    pub fn raw(&self) -> c_int {
        self.0
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        if self.0 >= 0 {
            // SAFETY: we own this fd; closing it at most once (set to -1 after).
            unsafe { close(self.0) };
            self.0 = -1;
        }
    }
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe_cloexec() -> io::Result<(Fd, Fd)> {
    let mut fds = [-1 as c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    cvt(unsafe { pipe2(fds.as_mut_ptr(), O_CLOEXEC) })?;
    Ok((Fd(fds[0]), Fd(fds[1])))
}
