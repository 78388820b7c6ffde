//! `vhostctl`: a thin client of the vhostd control socket.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use vhostd_api::{Command, PortReport, QueueStats, Request, Response, API_VERSION};

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

#[derive(Debug, Subcommand)]
enum Sub {
    /// Per-port, per-queue counters.
    Stats {
        /// Only this port.
        port: Option<String>,
        /// Print the raw JSON reply.
        #[arg(long)]
        json: bool,
    },
    /// Daemon version.
    Version,
}

fn ask(path: &PathBuf, cmd: Command) -> Result<Response, String> {
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
    "bad_chains",
    "ring_errors",
];

fn pick(s: &QueueStats) -> Vec<u64> {
    let all = s.values();
    COLUMNS
        .iter()
        .map(|c| {
            QueueStats::NAMES
                .iter()
                .position(|n| n == c)
                .and_then(|i| all.get(i).copied())
                .unwrap_or(0)
        })
        .collect()
}

fn print_port(p: &PortReport) {
    println!(
        "port {}  backend {}  state {:?}  socket {}  features {:#x}  connections {}",
        p.name, p.backend, p.state, p.socket, p.features, p.connections
    );
    if let Some(e) = &p.last_error {
        println!("  last error: {e}");
    }
    print!("  {:<6} {:>4} {:>6}", "queue", "run", "size");
    for c in COLUMNS {
        print!(" {:>16}", c);
    }
    println!();
    for q in &p.queues {
        print!(
            "  {:<6} {:>4} {:>6}",
            q.name,
            if q.running { "yes" } else { "no" },
            q.size
        );
        for v in pick(&q.stats) {
            print!(" {:>16}", v);
        }
        println!();
    }
    print!("  {:<6} {:>4} {:>6}", "total", "", "");
    for v in pick(&p.total) {
        print!(" {:>16}", v);
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
    let res = match cli.cmd {
        Sub::Stats { port, json } => ask(&cli.control_socket, Command::Stats { port }).map(|r| {
            if json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            } else {
                for p in &r.ports {
                    print_port(p);
                }
            }
        }),
        Sub::Version => ask(&cli.control_socket, Command::Version).map(|r| {
            println!("vhostd {}", r.version.unwrap_or_default());
        }),
    };
    if let Err(e) = res {
        eprintln!("vhostctl: {e}");
        std::process::exit(1);
    }
}
