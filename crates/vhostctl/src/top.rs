//! `vhostctl top`: live per-queue rates from successive stats snapshots.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use vhostd_api::{Command, PortReport};

use crate::{ask, counter};

fn rate(now: u64, then: u64, secs: f64) -> f64 {
    now.saturating_sub(then) as f64 / secs
}

fn render(prev: &[PortReport], cur: &[PortReport], secs: f64) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<10} {:<6} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>8}\n",
        "port",
        "queue",
        "pkts/s",
        "Mbit/s",
        "kicks/s",
        "calls/s",
        "supp/s",
        "coal/s",
        "bytes/call",
        "pkts/call",
        "drops/s"
    ));
    for p in cur {
        let old = prev.iter().find(|o| o.name == p.name);
        for q in &p.queues {
            let o = old.and_then(|o| o.queues.iter().find(|x| x.index == q.index));
            let d = |name: &str| {
                let now = counter(&q.stats, name);
                let then = o.map_or(now, |o| counter(&o.stats, name));
                now.saturating_sub(then)
            };
            let (pk, by, ca) = (d("packets"), d("bytes"), d("calls"));
            let per_call = |v: u64| {
                v.checked_div(ca)
                    .map_or_else(|| "-".to_string(), |x| x.to_string())
            };
            let r = |name: &str| {
                let now = counter(&q.stats, name);
                rate(now, o.map_or(now, |o| counter(&o.stats, name)), secs)
            };
            out.push_str(&format!(
                "{:<10} {:<6} {:>10.0} {:>9.1} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>10} {:>9} {:>8.0}\n",
                p.name,
                q.name,
                pk as f64 / secs,
                by as f64 * 8.0 / secs / 1e6,
                r("kicks"),
                r("calls"),
                r("calls_suppressed"),
                r("calls_coalesced"),
                per_call(by),
                per_call(pk),
                r("drops"),
            ));
        }
    }
    out
}

/// Refreshes every `interval_ms` until interrupted or `iterations` are done.
pub fn run(
    sock: &Path,
    port: Option<String>,
    interval_ms: u64,
    iterations: Option<u64>,
) -> Result<(), String> {
    let tty = std::io::stdout().is_terminal();
    let interval = Duration::from_millis(interval_ms.max(50));
    let mut prev = ask(sock, Command::Stats { port: port.clone() })?.ports;
    let mut t_prev = Instant::now();
    let mut n = 0u64;
    loop {
        std::thread::sleep(interval);
        let cur = ask(sock, Command::Stats { port: port.clone() })?.ports;
        let now = Instant::now();
        let secs = now.duration_since(t_prev).as_secs_f64().max(1e-6);
        let table = render(&prev, &cur, secs);
        let mut so = std::io::stdout().lock();
        if tty {
            // refresh in place: home + clear
            let _ = write!(so, "\x1b[H\x1b[2J");
        }
        let _ = writeln!(
            so,
            "vhostctl top — every {} ms (Ctrl-C to quit)",
            interval.as_millis()
        );
        let _ = write!(so, "{table}");
        let _ = so.flush();
        prev = cur;
        t_prev = now;
        n += 1;
        if iterations.is_some_and(|i| n >= i) {
            return Ok(());
        }
    }
}
