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
/// `socket`, `socketpair`, `mmap`, `mprotect`, `openat`, `prctl` and
/// `ioctl` only in the forms [`DAEMON_ARGS`] lists.
const DAEMON: &[i64] = &[
    libc::SYS_fcntl,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_connect,
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
    libc::SYS_tgkill,
    libc::SYS_rt_sigaction,
    libc::SYS_seccomp,
    libc::SYS_sched_setaffinity,
];

/// What the connection thread (the one that reads and answers the
/// front-end's requests, maps its memory tables, dups its eventfds and
/// starts the shims) may not do of [`DAEMON`] once it serves: files
/// (`unlink*`; `openat` is left out of its argument rules), pipes, signals
/// to other threads, affinity (and the TAP ioctls, by its rules).
const NOT_ON_CONNECTION: &[i64] = &[
    libc::SYS_pipe2,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_tgkill,
    libc::SYS_sched_setaffinity,
];

/// [`DAEMON`] without [`NOT_ON_CONNECTION`].
fn connection_calls() -> Vec<i64> {
    DAEMON
        .iter()
        .copied()
        .filter(|c| !NOT_ON_CONNECTION.contains(c))
        .collect()
}

/// What the control socket's threads add to [`COMMON`]: accepting clients,
/// a thread and a cloned stream per client.
const CONTROL: &[i64] = &[
    libc::SYS_fcntl,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_shutdown,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_clone,
    libc::SYS_clone3,
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

/// One allowed form of a call: `(argument & mask) == value`.
#[derive(Debug, Clone, Copy)]
struct When {
    arg: u8,
    mask: u64,
    value: u64,
}

/// Argument `arg` equals `value`.
const fn eq(arg: u8, value: u64) -> When {
    When {
        arg,
        mask: u64::MAX,
        value,
    }
}

/// Argument `arg` has none of `bits` set.
const fn none_of(arg: u8, bits: u64) -> When {
    When {
        arg,
        mask: bits,
        value: 0,
    }
}

/// A call allowed only in the forms listed (any one of them).
type ArgRule = (i64, &'static [When]);

/// The two TAP ioctls a worker makes when features change (the TAP back-end
/// applies the guest's header size and offloads on its worker thread).
const WORKER_IOCTLS: &[When] = &[
    eq(1, 0x4004_54d0), /* TUNSETOFFLOAD */
    eq(1, 0x4004_54d8), /* TUNSETVNETHDRSZ */
];

/// The ioctls the standard library makes on fds (non-blocking,
/// close-on-exec); with [`WORKER_IOCTLS`], all the daemon makes once its
/// filter is on.
const STD_IOCTLS: &[When] = &[
    eq(1, libc::FIONBIO),
    eq(1, libc::FIOCLEX),
    eq(1, libc::FIONCLEX),
];

/// `fcntl` commands the per-thread filters allow: flags only. No
/// `F_DUPFD`/`F_DUPFD_CLOEXEC`, which is how `File::try_clone` makes a new
/// fd (the daemon-wide filter allows every `fcntl`).
const FCNTL_FLAGS: &[When] = &[
    eq(1, libc::F_GETFD as u64),
    eq(1, libc::F_SETFD as u64),
    eq(1, libc::F_GETFL as u64),
    eq(1, libc::F_SETFL as u64),
];

/// No executable memory: guest memory, ring mappings, stacks and heap are
/// data. (An exploit that wants to run code it wrote must map it so.)
const NO_EXEC: &[When] = &[none_of(2, libc::PROT_EXEC as u64)];

/// Sockets: unix only (front-ends in client mode, socket pairs of the
/// shims). No network socket is ever made after start-up.
const UNIX_ONLY: &[When] = &[eq(0, libc::AF_UNIX as u64)];

/// Files opened after start-up: read-only, never created or truncated.
const OPEN_READ_ONLY: &[When] = &[none_of(
    2,
    (libc::O_WRONLY | libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC | libc::O_APPEND) as u64,
)];

/// `prctl`: thread names and the no-new-privileges bit seccomp wants.
const PRCTL: &[When] = &[
    eq(0, libc::PR_SET_NAME as u64),
    eq(0, libc::PR_GET_NAME as u64),
    eq(0, libc::PR_SET_NO_NEW_PRIVS as u64),
    eq(0, libc::PR_GET_NO_NEW_PRIVS as u64),
];

/// `clone`: threads only (`CLONE_THREAD` set), no new processes. glibc
/// tries `clone3` first, whose flags sit in memory a filter cannot read:
/// [`no_clone3`] makes it fail with ENOSYS, and glibc falls back to
/// `clone`, which this rule can read.
const THREADS_ONLY: &[When] = &[When {
    arg: 0,
    mask: libc::CLONE_THREAD as u64,
    value: libc::CLONE_THREAD as u64,
}];

/// Argument rules every thread's filter carries.
const COMMON_ARGS: &[ArgRule] = &[(libc::SYS_mmap, NO_EXEC), (libc::SYS_mprotect, NO_EXEC)];

/// Argument rules of every thread that starts threads (daemon-wide,
/// connection, control): thread creation, naming, the std fd ioctls.
const SPAWNER_ARGS: &[ArgRule] = &[
    (libc::SYS_clone, THREADS_ONLY),
    (libc::SYS_prctl, PRCTL),
    (libc::SYS_ioctl, STD_IOCTLS),
];

/// Argument rules of threads that make sockets (daemon-wide, connection).
const SOCKET_ARGS: &[ArgRule] = &[
    (libc::SYS_socket, UNIX_ONLY),
    (libc::SYS_socketpair, UNIX_ONLY),
];

/// Argument rules only the daemon-wide filter has: opening files, the
/// TAP ioctls (which the workers' own filter narrows further).
const DAEMON_ONLY_ARGS: &[ArgRule] = &[
    (libc::SYS_openat, OPEN_READ_ONLY),
    (libc::SYS_ioctl, WORKER_IOCTLS),
];

/// Argument rules of the daemon-wide filter.
const DAEMON_ARGS: &[&[ArgRule]] = &[COMMON_ARGS, SPAWNER_ARGS, SOCKET_ARGS, DAEMON_ONLY_ARGS];

/// Argument rules of the connection thread's filter.
const CONNECTION_ARGS: &[&[ArgRule]] = &[COMMON_ARGS, SPAWNER_ARGS, SOCKET_ARGS];

/// Argument rules of the control threads' filter.
const CONTROL_ARGS: &[&[ArgRule]] = &[COMMON_ARGS, SPAWNER_ARGS];

/// A filter allowing `calls`, and each call of `args` only in the forms its
/// entries list (a call in both: the forms win; a call in several entries:
/// any of their forms).
fn program(calls: &[&[i64]], args: &[&[ArgRule]], mode: Mode) -> Result<BpfProgram, String> {
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
    for &(call, forms) in args.iter().flat_map(|l| l.iter()) {
        // (an empty rule list would allow the call with any argument)
        if forms.is_empty() {
            continue;
        }
        let mut rs = Vec::new();
        for w in forms {
            // the arguments these rules look at are ints or flags: 32 bits
            let op = if w.mask == u64::MAX {
                SeccompCmpOp::Eq
            } else {
                SeccompCmpOp::MaskedEq(w.mask)
            };
            let c = SeccompCondition::new(w.arg, SeccompCmpArgLen::Dword, op, w.value)
                .map_err(|e| format!("seccomp condition: {e}"))?;
            rs.push(SeccompRule::new(vec![c]).map_err(|e| format!("seccomp rule: {e}"))?);
        }
        rules.entry(call).or_default().extend(rs);
    }
    let filter = SeccompFilter::new(rules, mismatch, SeccompAction::Allow, TargetArch::x86_64)
        .map_err(|e| format!("seccomp filter: {e}"))?;
    BpfProgram::try_from(filter).map_err(|e| format!("seccomp program: {e}"))
}

/// A filter that fails `clone3` with ENOSYS and allows everything else
/// (stacked: the other filters still decide the rest, and an error wins
/// over their allow).
fn no_clone3() -> Result<BpfProgram, String> {
    let rules = BTreeMap::from([(libc::SYS_clone3, Vec::new())]);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        TargetArch::x86_64,
    )
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
    let prog = program(&[COMMON, DAEMON], DAEMON_ARGS, mode)?;
    seccompiler::apply_filter_all_threads(&prog).map_err(|e| format!("seccomp: {e}"))?;
    seccompiler::apply_filter_all_threads(&no_clone3()?)
        .map_err(|e| format!("seccomp (clone3): {e}"))?;
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
            COMMON_ARGS,
            &[
                (libc::SYS_ioctl, WORKER_IOCTLS),
                (libc::SYS_fcntl, FCNTL_FLAGS),
            ],
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
    let prog = program(
        &[COMMON, SHIM],
        &[COMMON_ARGS, &[(libc::SYS_fcntl, FCNTL_FLAGS)]],
        mode,
    )?;
    seccompiler::apply_filter(&prog).map_err(|e| format!("seccomp (shim): {e}"))
}

/// Called by the thread that serves front-end connections, before the
/// first: stacks the connection filter on it (and so on the shims it
/// starts) if [`install`] armed it. No files, no pipes, no TAP ioctls.
pub fn enter_connection() -> Result<(), String> {
    let Some(&mode) = THREAD_MODE.get() else {
        return Ok(());
    };
    let prog = program(&[COMMON, &connection_calls()], CONNECTION_ARGS, mode)?;
    seccompiler::apply_filter(&prog).map_err(|e| format!("seccomp (connection): {e}"))
}

/// Called by the control socket's thread before it accepts: stacks the
/// control filter on it (and so on the client threads it starts) if
/// [`install`] armed it. Returns whether a filter is on.
pub fn enter_control() -> Result<bool, String> {
    let Some(&mode) = THREAD_MODE.get() else {
        return Ok(false);
    };
    let prog = program(&[COMMON, CONTROL], CONTROL_ARGS, mode)?;
    seccompiler::apply_filter(&prog).map_err(|e| format!("seccomp (control): {e}"))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;

    use super::*;

    const CASE: &str = "VHOSTD_SECCOMP_CASE";

    /// Child side: installs one filter on this thread, makes one call and
    /// returns (so the child exits 0 unless the filter killed it).
    #[allow(unsafe_code)]
    fn child(case: &str) {
        let (filter, call) = case.split_once(':').expect("filter:call");
        let prog = match filter {
            "daemon" => program(&[COMMON, DAEMON], DAEMON_ARGS, Mode::Kill),
            "control" => program(&[COMMON, CONTROL], CONTROL_ARGS, Mode::Kill),
            "connection" => program(&[COMMON, &connection_calls()], CONNECTION_ARGS, Mode::Kill),
            _ => panic!("filter {filter}"),
        }
        .expect("program");
        // as in the daemon: clone3 fails first, then the filter under test
        seccompiler::apply_filter(&no_clone3().expect("clone3 program")).expect("apply clone3");
        seccompiler::apply_filter(&prog).expect("apply");
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let path = c"/proc/self/stat";
        let rc: i64 = match call {
            // SAFETY (all): raw calls with valid constant arguments; the
            // result is only compared, any fd or mapping is left to exit.
            "mmap_rw" | "mmap_exec" => {
                let p = if call == "mmap_rw" {
                    prot
                } else {
                    prot | libc::PROT_EXEC
                };
                // SAFETY: see above
                let m = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        4096,
                        p,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    )
                };
                if m == libc::MAP_FAILED {
                    -1
                } else {
                    0
                }
            }
            "mprotect_exec" => {
                // SAFETY: see above
                let m = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        4096,
                        prot,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    )
                };
                // SAFETY: see above
                i64::from(unsafe { libc::mprotect(m, 4096, libc::PROT_READ | libc::PROT_EXEC) })
            }
            "socket_unix" => {
                // SAFETY: see above
                i64::from(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) })
            }
            // SAFETY: see above
            "socket_inet" => i64::from(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) }),
            "socketpair_inet" => {
                let mut fds = [0i32; 2];
                // SAFETY: see above; `fds` has room for the two fds
                i64::from(unsafe {
                    libc::socketpair(libc::AF_INET, libc::SOCK_STREAM, 0, fds.as_mut_ptr())
                })
            }
            // a thread: glibc's clone3 fails with ENOSYS, it falls back to clone
            "thread" => std::thread::spawn(|| 7i64).join().unwrap_or(-1),
            // a new process: clone without CLONE_THREAD
            // SAFETY: see above; the child exits at once
            "fork" => match unsafe { libc::fork() } {
                // SAFETY: in the child only async-signal-safe _exit
                0 => unsafe { libc::_exit(0) },
                pid => i64::from(pid),
            },
            "pipe" => {
                let mut fds = [0i32; 2];
                // SAFETY: see above; `fds` has room for the two fds
                i64::from(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })
            }
            // SAFETY: see above
            "open_read" => i64::from(unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) }),
            // SAFETY: see above (the file exists and cannot be created)
            "open_write" => i64::from(unsafe { libc::open(path.as_ptr(), libc::O_WRONLY) }),
            // SAFETY: see above
            "ioctl_fionbio" => i64::from(unsafe { libc::ioctl(0, libc::FIONBIO, &0i32) }),
            // SAFETY: see above (TUNSETOFFLOAD on a non-TAP fd fails)
            "ioctl_tap" => i64::from(unsafe { libc::ioctl(0, 0x4004_54d0, 0u64) }),
            // SAFETY: see above (TIOCSTI would push a byte into a terminal)
            "ioctl_tiocsti" => i64::from(unsafe { libc::ioctl(0, libc::TIOCSTI, c"x".as_ptr()) }),
            // SAFETY: see above
            "prctl_name" => i64::from(unsafe { libc::prctl(libc::PR_SET_NAME, c"t".as_ptr()) }),
            // SAFETY: see above
            "prctl_dumpable" => i64::from(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1) }),
            _ => panic!("call {call}"),
        };
        println!("{case}: returned {rc}");
    }

    #[test]
    fn test_seccomp_argument_rules_kill_the_forms_not_listed() {
        if let Ok(case) = std::env::var(CASE) {
            return child(&case);
        }
        let exe = std::env::current_exe().unwrap();
        let cases = [
            ("daemon:mmap_rw", false),
            ("daemon:mmap_exec", true),
            ("daemon:mprotect_exec", true),
            ("daemon:socket_unix", false),
            ("daemon:socket_inet", true),
            ("daemon:socketpair_inet", true),
            ("daemon:open_read", false),
            ("daemon:open_write", true),
            ("daemon:ioctl_fionbio", false),
            ("daemon:ioctl_tiocsti", true),
            ("daemon:ioctl_tap", false),
            ("connection:ioctl_tap", true),
            ("daemon:prctl_name", false),
            ("daemon:prctl_dumpable", true),
            ("connection:socket_unix", false),
            ("connection:socket_inet", true),
            ("connection:mmap_exec", true),
            ("connection:open_read", true),
            ("connection:ioctl_fionbio", false),
            ("daemon:pipe", false),
            ("daemon:thread", false),
            ("daemon:fork", true),
            ("connection:thread", false),
            ("connection:fork", true),
            ("control:thread", false),
            ("control:fork", true),
            ("connection:pipe", true),
            ("control:mmap_rw", false),
            ("control:socket_unix", true),
            ("control:open_read", true),
            ("control:prctl_name", false),
        ];
        for (case, killed) in cases {
            let out = Command::new(&exe)
                .args([
                    "--exact",
                    "seccomp::tests::test_seccomp_argument_rules_kill_the_forms_not_listed",
                    "--test-threads=1",
                    "--nocapture",
                ])
                .env(CASE, case)
                .output()
                .unwrap();
            let st = out.status;
            if killed {
                assert_eq!(
                    st.signal(),
                    Some(libc::SIGSYS),
                    "{case}: {st:?}, want SIGSYS"
                );
            } else {
                let so = String::from_utf8_lossy(&out.stdout);
                assert!(st.success(), "{case}: {st:?}\n{so}");
                assert!(so.contains(&format!("{case}: returned")), "{case}: {so}");
            }
        }
    }
}
