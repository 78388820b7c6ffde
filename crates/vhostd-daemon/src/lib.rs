//! vhostd daemon: the vhost-user side of vhostd.
//!
//! Layering (docs/ARCHITECTURE.md): this crate owns threads, sockets and
//! the vhost-user protocol state ([`proto`]); the virtio-net data path is in
//! `vhostd-net`, rings in `vhostd-virtq`, memory in `vhostd-mem`, host
//! back-ends in `vhostd-backend`. Unsafe code: only [`sys`].
#![warn(missing_docs)]
#![deny(unsafe_code)]
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

pub mod control;
pub mod ctrl;
pub mod port;
pub mod proto;
pub mod quirks;
pub mod ratelimit;
pub mod seccomp;
pub mod server;
pub mod sys;
pub mod worker;

use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Parser;
use vhostd_api::{CoalescePolicy, Priority, WorkerMode};
use vhostd_backend::{BackendError, BackendSpec};

use crate::port::Port;
use crate::worker::WorkerHandle;

/// Most queue pairs a port may have.
pub const MAX_QUEUE_PAIRS: usize = 32;

/// Command line (see README "Command line"; other tools rely on these
/// names: extend, never rename).
#[derive(Debug, Parser, Clone)]
#[command(
    name = "vhostd",
    version,
    about = "vhost-user virtio-net back-end daemon"
)]
pub struct Args {
    /// vhost-user socket path (listened on, or connected to with --client).
    #[arg(long, required_unless_present_any = ["fd", "print_capabilities"])]
    pub socket_path: Option<PathBuf>,
    /// Host back-end: tap:IFNAME, loopback, sink (takes TX frames) or
    /// source:LEN (endless LEN-byte RX frames; benchmarks). ceiling:KIND
    /// (KIND one of those three): a benchmark diagnostic that leaves the
    /// frame bytes in guest memory alone (headers and rings only), to
    /// bound what any back-end can reach; never a vhostd figure.
    #[arg(long, default_value = "loopback")]
    pub backend: String,
    /// Port name in stats and vhostctl.
    #[arg(long, default_value = "port0")]
    pub name: String,
    /// Queue pairs (1..=32); one worker thread each.
    #[arg(long, default_value_t = 1)]
    pub queues: usize,
    /// Connect to a listening front-end (and reconnect every second).
    #[arg(long)]
    pub client: bool,
    /// Control socket for vhostctl.
    #[arg(long)]
    pub control_socket: Option<PathBuf>,
    /// Inherited listening socket fd (QEMU back-end program conventions).
    #[arg(long)]
    pub fd: Option<i32>,
    /// Print the back-end capabilities as JSON and exit.
    #[arg(long)]
    pub print_capabilities: bool,
    /// Host-side interrupt coalescing for every queue: `off`, `adaptive`,
    /// or `USECS,FRAMES` (hold a call up to USECS microseconds or FRAMES
    /// completions). Change at run time with `vhostctl coalesce`.
    #[arg(long, default_value = "off")]
    pub coalesce: String,
    /// How workers wait for work: `event` (sleep on kicks), `poll`
    /// (busy-poll, kicks off, a core per queue pair), `adaptive` (poll while
    /// work keeps coming, up to 50 us, then re-arm kicks and sleep).
    #[arg(long, default_value = "adaptive", value_parser = ["event", "poll", "adaptive"])]
    pub mode: String,
    /// Serve the control virtqueue (index 2*N) in vhostd and offer
    /// VIRTIO_NET_F_CTRL_VQ, NOTF_COAL and VQ_NOTF_COAL, for front-ends that
    /// pass the control queue to the back-end (QEMU keeps it: leave off).
    #[arg(long)]
    pub ctrl_vq: bool,
    /// Run as this user (name or uid) once sockets and TAPs are open. Put
    /// the sockets in a directory that user can write, so it can remove
    /// them on exit.
    #[arg(long)]
    pub user: Option<String>,
    /// Run as this group (name or gid) once sockets and TAPs are open
    /// (default: the user's primary group).
    #[arg(long)]
    pub group: Option<String>,
    /// System-call filter once set up: `kill` (default: anything unlisted
    /// kills the daemon), `log` (allowed, logged by the kernel), `off`.
    #[arg(long, default_value = "kill", value_parser = ["kill", "log", "off"])]
    pub seccomp: String,
    /// Virtqueue index with high interrupt priority (repeatable): serviced
    /// first, never coalesced, its worker at a higher scheduling priority.
    #[arg(long = "high-priority-queue")]
    pub high_priority_queues: Vec<u32>,
    /// Virtqueue index with low priority (repeatable): a worker whose
    /// queues are all low runs at nice 19 (a tenant put behind the others).
    #[arg(long = "low-priority-queue")]
    pub low_priority_queues: Vec<u32>,
}

/// Parses `--coalesce`.
pub fn parse_coalesce(s: &str) -> Result<CoalescePolicy, DaemonError> {
    match s {
        "off" => Ok(CoalescePolicy::Off),
        "adaptive" => Ok(CoalescePolicy::Adaptive),
        _ => {
            let bad =
                || DaemonError::Arg(format!("--coalesce {s}: use off, adaptive or USECS,FRAMES"));
            let (u, f) = s.split_once(',').ok_or_else(bad)?;
            let usecs: u32 = u.trim().parse().map_err(|_| bad())?;
            let frames: u32 = f.trim().parse().map_err(|_| bad())?;
            if usecs > 1_000_000 || frames > 65536 {
                return Err(bad());
            }
            Ok(CoalescePolicy::Fixed { usecs, frames })
        }
    }
}

/// Daemon start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Bad command line value.
    #[error("invalid argument: {0}")]
    Arg(String),
    /// Back-end could not be opened.
    #[error("back-end")]
    Backend(#[from] BackendError),
    /// A socket could not be made.
    #[error("socket {0}")]
    Socket(String, #[source] std::io::Error),
    /// A thread could not be spawned.
    #[error("spawn worker")]
    Spawn(#[source] std::io::Error),
}

/// The `--print-capabilities` answer (vhost-user.rst, "Backend program
/// conventions").
pub const CAPABILITIES: &str = "{\n  \"type\": \"net\"\n}";

/// Binds a unix socket at `path`, replacing a stale socket file (never any
/// other kind of file).
pub fn bind_socket(path: &Path) -> Result<UnixListener, DaemonError> {
    let err = |e| DaemonError::Socket(path.display().to_string(), e);
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(path).map_err(err)?;
        } else {
            return Err(err(std::io::Error::from(std::io::ErrorKind::AlreadyExists)));
        }
    }
    // Bind and listen under a temporary name, then rename into place: the
    // path appears only once connections are accepted (a front-end that
    // connects as soon as it sees the file would otherwise race bind and
    // listen and get ECONNREFUSED).
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let l = match UnixListener::bind(&tmp) {
        Ok(l) => l,
        // e.g. the longer name passes sun_path's 108 bytes: bind in place
        Err(_) => return UnixListener::bind(path).map_err(err),
    };
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(l)
}

/// Opens the back-ends and spawns one worker per queue pair.
pub fn start_port(
    name: &str,
    spec: &BackendSpec,
    socket: &str,
    queues: usize,
    ctrl_vq: bool,
) -> Result<(Arc<Port>, Arc<Vec<WorkerHandle>>), DaemonError> {
    if queues == 0 || queues > MAX_QUEUE_PAIRS {
        return Err(DaemonError::Arg(format!(
            "--queues must be 1..={MAX_QUEUE_PAIRS}"
        )));
    }
    // a front-end that shrinks a guest-memory file must not end the daemon
    vhostd_mem::install_fault_handler();
    let port = Arc::new(Port::new(
        name.to_string(),
        spec.clone(),
        socket.to_string(),
        queues,
        ctrl_vq,
    ));
    let mut workers = Vec::with_capacity(queues);
    for i in 0..queues {
        let be = spec.open(i, queues)?;
        workers.push(WorkerHandle::spawn(port.clone(), i, be).map_err(DaemonError::Spawn)?);
    }
    Ok((port, Arc::new(workers)))
}

fn install_signal_handler(cleanup: Vec<PathBuf>) -> Result<(), DaemonError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| DaemonError::Socket("signals".into(), e))?;
    std::thread::Builder::new()
        .name("vhostd-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                log::info!("signal {sig}: exiting");
                for p in &cleanup {
                    let _ = std::fs::remove_file(p);
                }
                std::process::exit(0);
            }
        })
        .map_err(DaemonError::Spawn)?;
    Ok(())
}

/// Looks `name` (or a number) up in an /etc/passwd- or /etc/group-style
/// file: returns (id, primary gid) — the second field is only meaningful
/// for passwd.
fn lookup_id(file: &str, name: &str) -> Result<(u32, u32), DaemonError> {
    let bad = || DaemonError::Arg(format!("unknown user or group {name:?} in {file}"));
    let text = std::fs::read_to_string(file).map_err(|_| bad())?;
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if let (Some(&n), Some(id), g) = (
            f.first(),
            f.get(2).and_then(|v| v.parse::<u32>().ok()),
            f.get(3),
        ) {
            if n == name || name.parse::<u32>().ok() == Some(id) {
                return Ok((id, g.and_then(|v| v.parse().ok()).unwrap_or(id)));
            }
        }
    }
    match name.parse::<u32>() {
        Ok(id) => Ok((id, id)),
        Err(_) => Err(bad()),
    }
}

/// Resolves `--user` / `--group` to (uid, gid).
pub fn resolve_ids(
    user: Option<&str>,
    group: Option<&str>,
) -> Result<Option<(u32, u32)>, DaemonError> {
    let Some(user) = user else {
        return match group {
            Some(_) => Err(DaemonError::Arg("--group needs --user".into())),
            None => Ok(None),
        };
    };
    let (uid, primary) = lookup_id("/etc/passwd", user)?;
    let gid = match group {
        Some(g) => lookup_id("/etc/group", g)?.0,
        None => primary,
    };
    Ok(Some((uid, gid)))
}

/// Runs the daemon until a signal ends it.
pub fn run(args: Args) -> Result<(), DaemonError> {
    if args.print_capabilities {
        println!("{CAPABILITIES}");
        return Ok(());
    }
    let spec: BackendSpec = args.backend.parse()?;
    if matches!(spec, BackendSpec::Ceiling(_)) {
        log::warn!(
            "back-end {spec}: benchmark diagnostic, frame bytes are NOT copied \
             (headers and rings only); its rates bound a back-end, they are not vhostd's"
        );
    }
    let coalesce = parse_coalesce(&args.coalesce)?;
    let seccomp_mode: seccomp::Mode = args.seccomp.parse().map_err(DaemonError::Arg)?;
    let ids = resolve_ids(args.user.as_deref(), args.group.as_deref())?;
    let sock_display = args
        .socket_path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| format!("fd:{}", args.fd.unwrap_or(-1)));
    let (port, workers) = start_port(&args.name, &spec, &sock_display, args.queues, args.ctrl_vq)?;
    port.update_settings(None, |s| s.coalesce = coalesce);
    port.set_mode(match args.mode.as_str() {
        "event" => WorkerMode::Event,
        "poll" => WorkerMode::Poll,
        _ => WorkerMode::Adaptive,
    });
    let classes = [
        (&args.high_priority_queues, Priority::High, "high"),
        (&args.low_priority_queues, Priority::Low, "low"),
    ];
    for (queues, class, name) in classes {
        for &q in queues {
            if !port.update_settings(Some(q), |s| s.priority = class) {
                return Err(DaemonError::Arg(format!(
                    "--{name}-priority-queue {q}: no such queue"
                )));
            }
        }
    }
    let mut cleanup = Vec::new();
    let mut control = None;
    if let Some(ctl) = args.control_socket.as_ref() {
        control = Some(bind_socket(ctl)?);
        cleanup.push(ctl.clone());
    }
    // The control thread starts once the filters are armed, so that it
    // stacks its own before its first client.
    let ports = vec![port.clone()];
    let start_control = move || -> Result<(), DaemonError> {
        if let Some(l) = control {
            std::thread::Builder::new()
                .name("vhostd-control".into())
                .spawn(move || control::serve(l, ports))
                .map_err(DaemonError::Spawn)?;
        }
        Ok(())
    };
    // Sockets are handed to the new user first, so it can still remove them
    // on exit (a sticky /tmp lets only the owner unlink).
    let drop_privs = move |owned: &[PathBuf]| -> Result<(), DaemonError> {
        if let Some((uid, gid)) = ids {
            for p in owned {
                std::os::unix::fs::chown(p, Some(uid), Some(gid))
                    .map_err(|e| DaemonError::Socket(p.display().to_string(), e))?;
            }
            sys::drop_privileges(uid, gid)
                .map_err(|e| DaemonError::Socket("privilege drop".into(), e))?;
            log::info!("running as uid {uid} gid {gid}");
        }
        seccomp::install(seccomp_mode).map_err(DaemonError::Arg)?;
        start_control()?;
        // this thread goes on to serve the front-end's connections
        seccomp::enter_connection().map_err(DaemonError::Arg)?;
        Ok(())
    };
    log::info!(
        "port {}: back-end {spec}, {} queue pair(s), socket {sock_display}{}",
        args.name,
        args.queues,
        if args.client { " (client)" } else { "" }
    );
    if let Some(fd) = args.fd {
        install_signal_handler(cleanup.clone())?;
        let l = sys::adopt_listener(fd).map_err(|e| DaemonError::Socket(format!("fd {fd}"), e))?;
        drop_privs(&cleanup)?;
        server::serve_listener(port, workers, l);
    } else if let Some(path) = args.socket_path.as_ref() {
        if args.client {
            install_signal_handler(cleanup.clone())?;
            drop_privs(&cleanup)?;
            server::serve_client(port, workers, &path.display().to_string());
        } else {
            let l = bind_socket(path)?;
            cleanup.push(path.clone());
            install_signal_handler(cleanup.clone())?;
            drop_privs(&cleanup)?;
            server::serve_listener(port, workers, l);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)]
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn test_bind_socket_listens_before_the_path_appears_and_takes_long_paths() {
        let dir = std::env::temp_dir().join(format!("vhostd-bind-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let short = dir.join("s.sock");
        let l = bind_socket(&short).unwrap();
        // connectable at once, no temporary name left behind
        let _c = UnixStream::connect(&short).unwrap();
        assert!(l.accept().is_ok());
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        // a path that fits sun_path (107 bytes) but not with the temporary
        // suffix is bound in place
        let base = dir.as_os_str().len() + 1;
        let long = dir.join("x".repeat(107 - base));
        assert_eq!(long.as_os_str().len(), 107);
        let l2 = bind_socket(&long).unwrap();
        let _c2 = UnixStream::connect(&long).unwrap();
        assert!(l2.accept().is_ok());
        // rebinding over a stale socket works; a regular file is refused
        drop(l);
        assert!(bind_socket(&short).is_ok());
        let file = dir.join("f");
        std::fs::write(&file, b"x").unwrap();
        assert!(bind_socket(&file).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
