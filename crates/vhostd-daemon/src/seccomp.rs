//! Seccomp filters (issue #5, THREATS P-sandbox): once sockets and TAPs are
//! open and privileges dropped, the daemon may only make the system calls
//! its threads were seen to need; a worker (the thread that reads guest
//! memory) stacks a tighter filter of its own when it starts its first ring.
//!
//! `--seccomp kill` (default): anything else kills the process (a bug or an
//! exploit, either way it must stop); `log`: allowed but logged by the kernel
//! (audit `type=1326`, find missing calls with `dmesg | grep vhostd`); `off`.
//!
//! The lists come from `strace -f -c` over every real-client test (QEMU
//! guests with TAP, testpmd split and packed, reconnects, vhostctl) plus what
//! the standard library and glibc need for threads, allocation and exit.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// What a filter does with a call it does not list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Kill the process.
    Kill,
    /// Allow, and let the kernel log it.
    Log,
    /// No filter.
    Off,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "kill" => Ok(Mode::Kill),
            "log" => Ok(Mode::Log),
            "off" => Ok(Mode::Off),
            _ => Err(format!("--seccomp {s}: use kill, log or off")),
        }
    }
}

/// Calls every thread needs: memory, threads, time, exit, signals.
const COMMON: &[i64] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_close,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_mprotect,
    libc::SYS_brk,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_getrandom,
    libc::SYS_rseq,
    libc::SYS_set_robust_list,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_ctl,
    libc::SYS_timerfd_settime,
    libc::SYS_timerfd_gettime,
    libc::SYS_setpriority,
    libc::SYS_getpriority,
    libc::SYS_statx,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_lseek,
];

/// The rest of the daemon: connections, fds over the socket, memory tables,
/// new threads per connection, the control socket, the signal thread.
const DAEMON: &[i64] = &[
    libc::SYS_fcntl,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_socket,
    libc::SYS_socketpair,
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_shutdown,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_getsockname,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_pipe2,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_eventfd2,
    libc::SYS_epoll_create1,
    libc::SYS_timerfd_create,
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_openat,
    libc::SYS_ioctl,
    libc::SYS_tgkill,
    libc::SYS_rt_sigaction,
    libc::SYS_prctl,
    libc::SYS_seccomp,
    libc::SYS_sched_setaffinity,
];

/// What the shim threads (quirks.rs) add to [`COMMON`]: passing the
/// front-end's messages and fds along, and closing the connection.
const SHIM: &[i64] = &[
    libc::SYS_recvmsg,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_sendto,
    libc::SYS_shutdown,
];

/// The mode of the per-thread filters, set once [`install`] ran.
static THREAD_MODE: OnceLock<Mode> = OnceLock::new();

/// The two TAP ioctls a worker makes when features change (the TAP back-end
/// applies the guest's header size and offloads on its worker thread).
const WORKER_IOCTLS: &[u64] = &[
    0x4004_54d0, /* TUNSETOFFLOAD */
    0x4004_54d8, /* TUNSETVNETHDRSZ */
];

/// `fcntl` commands the per-thread filters allow: flags only. No
/// `F_DUPFD`/`F_DUPFD_CLOEXEC`, which is how `File::try_clone` makes a new
/// fd (the daemon-wide filter allows every `fcntl`).
const FCNTL_FLAGS: &[u64] = &[
    libc::F_GETFD as u64,
    libc::F_SETFD as u64,
    libc::F_GETFL as u64,
    libc::F_SETFL as u64,
];

/// A filter allowing `calls`, and each `(call, values)` of `by_arg1` only
/// when its argument 1 (ioctl request, fcntl command) is one of `values`.
fn program(calls: &[&[i64]], by_arg1: &[(i64, &[u64])], mode: Mode) -> Result<BpfProgram, String> {
    let mismatch = match mode {
        Mode::Kill => SeccompAction::KillProcess,
        Mode::Log => SeccompAction::Log,
        Mode::Off => return Err("no filter in mode off".into()),
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = calls
        .iter()
        .flat_map(|l| l.iter())
        .map(|&n| (n, Vec::new()))
        .collect();
    for &(call, values) in by_arg1 {
        // (an empty rule list would allow the call with any argument)
        if values.is_empty() {
            continue;
        }
        let mut rs = Vec::new();
        for &v in values {
            let c = SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, v)
                .map_err(|e| format!("seccomp condition: {e}"))?;
            rs.push(SeccompRule::new(vec![c]).map_err(|e| format!("seccomp rule: {e}"))?);
        }
        rules.insert(call, rs);
    }
    let filter = SeccompFilter::new(rules, mismatch, SeccompAction::Allow, TargetArch::x86_64)
        .map_err(|e| format!("seccomp filter: {e}"))?;
    BpfProgram::try_from(filter).map_err(|e| format!("seccomp program: {e}"))
}

/// Installs the daemon-wide filter on every thread (TSYNC) and arms the
/// per-worker filter. Call once privileges are dropped and every socket and
/// TAP is open. Never called by the library's in-process tests.
pub fn install(mode: Mode) -> Result<(), String> {
    if mode == Mode::Off {
        return Ok(());
    }
    let prog = program(&[COMMON, DAEMON], &[], mode)?;
    seccompiler::apply_filter_all_threads(&prog).map_err(|e| format!("seccomp: {e}"))?;
    let _ = THREAD_MODE.set(mode);
    log::info!("seccomp filter installed ({mode:?})");
    Ok(())
}

/// Called by a worker before it first touches a ring: stacks the worker
/// filter on this thread if [`install`] armed it. Workers need no sockets,
/// no new fds, no threads, and only two TAP ioctls.
pub fn enter_worker() -> Result<(), String> {
    let Some(&mode) = THREAD_MODE.get() else {
        return Ok(());
    };
    let prog = program(
        &[COMMON],
        &[
            (libc::SYS_ioctl, WORKER_IOCTLS),
            (libc::SYS_fcntl, FCNTL_FLAGS),
        ],
        mode,
    )?;
    seccompiler::apply_filter(&prog).map_err(|e| format!("seccomp (worker): {e}"))
}

/// Called by each shim thread (quirks.rs) before it reads the front-end:
/// stacks the shim filter on this thread if [`install`] armed it. A shim
/// thread only moves messages and their fds between two sockets (early
/// `SET_VRING_ENABLE` only records state or stops a ring: see
/// `PortHandler::set_vring_enable_early`).
pub fn enter_shim() -> Result<(), String> {
    let Some(&mode) = THREAD_MODE.get() else {
        return Ok(());
    };
    let prog = program(&[COMMON, SHIM], &[(libc::SYS_fcntl, FCNTL_FLAGS)], mode)?;
    seccompiler::apply_filter(&prog).map_err(|e| format!("seccomp (shim): {e}"))
}
