//! Control socket: versioned JSON lines (docs/CONTROL-API.md).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::time::Duration;

use vhostd_api::{CoalescePolicy, Command, QueueSettings, Request, Response, API_VERSION};

use crate::port::Port;

/// Longest request line accepted.
const MAX_LINE: usize = 4096;

/// Answers one request.
pub fn handle(ports: &[Arc<Port>], line: &str) -> Response {
    let req: Request = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(e) => return Response::error(format!("bad request: {e}")),
    };
    if req.v != API_VERSION {
        return Response::error(format!(
            "unsupported api version {} (this daemon speaks {API_VERSION})",
            req.v
        ));
    }
    match req.cmd {
        Command::Stats { port } => {
            let sel: Vec<_> = ports
                .iter()
                .filter(|p| port.as_deref().is_none_or(|n| n == p.name))
                .map(|p| p.report())
                .collect();
            if sel.is_empty() {
                return Response::error(format!("no port {}", port.unwrap_or_default()));
            }
            Response {
                v: API_VERSION,
                ok: true,
                error: None,
                ports: sel,
                version: None,
            }
        }
        Command::Coalesce {
            port,
            queue,
            policy,
        } => {
            if let CoalescePolicy::Fixed { usecs, frames } = policy {
                if usecs > 1_000_000 || frames > 65536 {
                    return Response::error("coalescing bounds: usecs <= 1000000, frames <= 65536");
                }
            }
            set(ports, &port, queue, |s| s.coalesce = policy)
        }
        Command::SetMode { port, mode } => match ports.iter().find(|p| p.name == port) {
            Some(p) => {
                p.set_mode(mode);
                log::info!("port {port}: worker mode {mode:?}");
                ok_with(p)
            }
            None => Response::error(format!("no port {port}")),
        },
        Command::SetPriority {
            port,
            queue,
            priority,
        } => set(ports, &port, queue, |s| s.priority = priority),
        Command::Version => Response {
            v: API_VERSION,
            ok: true,
            error: None,
            ports: Vec::new(),
            version: Some(env!("CARGO_PKG_VERSION").to_string()),
        },
    }
}

/// A success answer carrying the port's report.
fn ok_with(p: &Port) -> Response {
    Response {
        v: API_VERSION,
        ok: true,
        error: None,
        ports: vec![p.report()],
        version: None,
    }
}

fn set(
    ports: &[Arc<Port>],
    name: &str,
    queue: Option<u32>,
    f: impl Fn(&mut QueueSettings),
) -> Response {
    let Some(p) = ports.iter().find(|p| p.name == name) else {
        return Response::error(format!("no port {name}"));
    };
    if !p.update_settings(queue, f) {
        return Response::error(format!(
            "port {name} has no queue {}",
            queue.unwrap_or_default()
        ));
    }
    log::info!(
        "port {name}: settings changed for {}",
        queue.map_or("all queues".into(), |q| format!("queue {q}"))
    );
    ok_with(p)
}

fn serve_client(ports: &[Arc<Port>], stream: UnixStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(300)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        // Bounded read: a client cannot make us buffer more than a line.
        let n = (&mut r)
            .take((MAX_LINE as u64).saturating_add(1))
            .read_line(&mut line)?;
        if n == 0 {
            return Ok(());
        }
        let resp = if n > MAX_LINE {
            let mut out =
                serde_json::to_string(&Response::error("request too long")).unwrap_or_default();
            out.push('\n');
            w.write_all(out.as_bytes())?;
            return Ok(());
        } else {
            handle(ports, line.trim())
        };
        let mut out =
            serde_json::to_string(&resp).unwrap_or_else(|_| "{\"v\":1,\"ok\":false}".into());
        out.push('\n');
        w.write_all(out.as_bytes())?;
    }
}

/// Serves the control socket forever (one thread per client).
pub fn serve(listener: UnixListener, ports: Vec<Arc<Port>>) {
    let ports = Arc::new(ports);
    if let Err(e) = crate::seccomp::enter_control() {
        // no client is served without the filter it should have
        log::error!("control socket closed: {e}");
        return;
    }
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let ports = ports.clone();
        let _ = std::thread::Builder::new()
            .name("vhostd-ctl".into())
            .spawn(move || {
                if let Err(e) = serve_client(&ports, stream) {
                    log::debug!("control client: {e}");
                }
            });
    }
}
