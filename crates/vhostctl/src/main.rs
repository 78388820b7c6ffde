//! `vhostctl`: a thin client of the vhostd control socket.
#![forbid(unsafe_code)]

mod top;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use vhostd_api::{
    CoalescePolicy, Command, PortReport, Priority, QueueStats, Request, Response, API_VERSION,
};

#[derive(Debug, Parser)]
#[command(
    name = "vhostctl",
    version,
    about = "Control and inspect a running vhostd"
)]
struct Cli {
    /// The daemon's --control-socket.
    #[arg(long, default_value = "/run/vhostd/control.sock")]
    control_socket: PathBuf,
    #[command(subcommand)]
    cmd: Sub,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Prio {
    High,
    Normal,
    Low,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    Event,
    Poll,
    Adaptive,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// Set how a port's workers wait for work.
    Mode {
        /// Port name.
        port: String,
        /// event: sleep on kicks; poll: busy-poll; adaptive: poll while busy.
        mode: Mode,
    },
    /// Per-port, per-queue counters.
    Stats {
        /// Only this port.
        port: Option<String>,
        /// Print the raw JSON reply.
        #[arg(long)]
        json: bool,
        /// Print the counters under the virtio 1.4 device-statistics names.
        #[arg(long, conflicts_with = "json")]
        device_stats: bool,
    },
    /// Live per-queue rates (packets/s, kicks/s, calls/s, bytes per call),
    /// refreshed in place like top.
    Top {
        /// Only this port.
        port: Option<String>,
        /// Refresh interval in milliseconds.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// Stop after this many refreshes (default: until interrupted).
        #[arg(long)]
        iterations: Option<u64>,
    },
    /// Set host-side interrupt coalescing of a port's queues.
    Coalesce {
        /// Port name.
        port: String,
        /// Only this virtqueue (default: all).
        #[arg(long)]
        queue: Option<u32>,
        /// Hold a call up to this many microseconds...
        #[arg(long, requires = "frames", conflicts_with_all = ["adaptive", "off"])]
        usecs: Option<u32>,
        /// ...or until this many completions.
        #[arg(long, requires = "usecs")]
        frames: Option<u32>,
        /// Choose the bounds from the load.
        #[arg(long, conflicts_with = "off")]
        adaptive: bool,
        /// Send every call at once.
        #[arg(long)]
        off: bool,
    },
    /// Set the interrupt priority class of a port's queues.
    Priority {
        /// Port name.
        port: String,
        /// Only this virtqueue (default: all).
        #[arg(long)]
        queue: Option<u32>,
        /// Class.
        class: Prio,
    },
    /// Daemon version.
    Version,
}

/// Sends one request and reads the answer.
pub fn ask(path: &Path, cmd: Command) -> Result<Response, String> {
    let s = UnixStream::connect(path).map_err(|e| format!("connect {}: {e}", path.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let req = Request {
        v: API_VERSION,
        cmd,
    };
    let mut line = serde_json::to_string(&req).map_err(|e| e.to_string())?;
    line.push('\n');
    w.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
    let mut resp = String::new();
    BufReader::new(s)
        .read_line(&mut resp)
        .map_err(|e| e.to_string())?;
    let r: Response = serde_json::from_str(&resp).map_err(|e| format!("bad reply: {e}"))?;
    if !r.ok {
        return Err(r.error.unwrap_or_else(|| "request failed".into()));
    }
    Ok(r)
}

/// The columns of the stats table (full set in --json).
const COLUMNS: &[&str] = &[
    "packets",
    "bytes",
    "drops",
    "kicks",
    "calls",
    "calls_suppressed",
    "calls_coalesced",
    "bad_chains",
    "ring_errors",
];

/// Value of counter `name`.
pub fn counter(s: &QueueStats, name: &str) -> u64 {
    QueueStats::NAMES
        .iter()
        .position(|n| *n == name)
        .and_then(|i| s.values().get(i).copied())
        .unwrap_or(0)
}

fn print_port(p: &PortReport) {
    println!(
        "port {}  backend {}  state {:?}  mode {:?}  socket {}  features {:#x}  connections {}",
        p.name, p.backend, p.state, p.mode, p.socket, p.features, p.connections
    );
    if let Some(e) = &p.last_error {
        println!("  last error: {e}");
    }
    print!(
        "  {:<6} {:>4} {:>6} {:>10} {:>7}",
        "queue", "run", "size", "coalesce", "prio"
    );
    for c in COLUMNS {
        print!(" {:>14}", c.replace("calls_", "c_"));
    }
    println!();
    for q in &p.queues {
        let prio = match q.settings.priority {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        };
        print!(
            "  {:<6} {:>4} {:>6} {:>10} {:>7}",
            q.name,
            if q.running { "yes" } else { "no" },
            q.size,
            q.settings.coalesce.to_string(),
            prio
        );
        for c in COLUMNS {
            print!(" {:>14}", counter(&q.stats, c));
        }
        println!();
    }
    print!("  {:<6} {:>4} {:>6} {:>10} {:>7}", "total", "", "", "", "");
    for c in COLUMNS {
        print!(" {:>14}", counter(&p.total, c));
    }
    println!();
    let drops: Vec<String> = QueueStats::NAMES
        .iter()
        .zip(p.total.values())
        .filter(|(n, v)| n.starts_with("dropped_") && *v > 0)
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    if !drops.is_empty() {
        println!("  drops by reason: {}", drops.join(" "));
    }
}

fn main() {
    let cli = Cli::parse();
    let sock = cli.control_socket.as_path();
    let res = match cli.cmd {
        Sub::Stats {
            port,
            json,
            device_stats,
        } => ask(sock, Command::Stats { port }).map(|r| {
            if device_stats {
                for p in &r.ports {
                    println!("port {}", p.name);
                    for q in &p.queues {
                        let v = vhostd_api::device_stats(q.index % 2 == 0, &q.stats);
                        let line: Vec<String> = v.iter().map(|(k, n)| format!("{k}={n}")).collect();
                        println!("  {} (vq {}): {}", q.name, q.index, line.join(" "));
                    }
                }
            } else if json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            } else {
                for p in &r.ports {
                    print_port(p);
                }
            }
        }),
        Sub::Top {
            port,
            interval_ms,
            iterations,
        } => top::run(sock, port, interval_ms, iterations),
        Sub::Coalesce {
            port,
            queue,
            usecs,
            frames,
            adaptive,
            off,
        } => {
            let policy = match (usecs, frames, adaptive, off) {
                (Some(usecs), Some(frames), false, false) => {
                    Ok(CoalescePolicy::Fixed { usecs, frames })
                }
                (None, None, true, false) => Ok(CoalescePolicy::Adaptive),
                (None, None, false, true) => Ok(CoalescePolicy::Off),
                _ => Err("give --usecs U --frames F, --adaptive or --off".to_string()),
            };
            policy
                .and_then(|policy| {
                    ask(
                        sock,
                        Command::Coalesce {
                            port,
                            queue,
                            policy,
                        },
                    )
                })
                .map(|r| {
                    for p in &r.ports {
                        print_port(p);
                    }
                })
        }
        Sub::Priority { port, queue, class } => {
            let priority = match class {
                Prio::High => Priority::High,
                Prio::Normal => Priority::Normal,
                Prio::Low => Priority::Low,
            };
            ask(
                sock,
                Command::SetPriority {
                    port,
                    queue,
                    priority,
                },
            )
            .map(|r| {
                for p in &r.ports {
                    print_port(p);
                }
            })
        }
        Sub::Mode { port, mode } => {
            let mode = match mode {
                Mode::Event => vhostd_api::WorkerMode::Event,
                Mode::Poll => vhostd_api::WorkerMode::Poll,
                Mode::Adaptive => vhostd_api::WorkerMode::Adaptive,
            };
            ask(sock, Command::SetMode { port, mode }).map(|r| {
                for p in &r.ports {
                    print_port(p);
                }
            })
        }
        Sub::Version => ask(sock, Command::Version).map(|r| {
            println!("vhostd {}", r.version.unwrap_or_default());
        }),
    };
    if let Err(e) = res {
        eprintln!("vhostctl: {e}");
        std::process::exit(1);
    }
}
