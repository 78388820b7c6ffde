#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
//! Lifecycle soak (THREATS P10, P14): front-end connect / traffic /
//! disconnect cycles. Every cycle must be serviceable within 1 s of
//! connecting; afterwards fd count, mapping count and RSS must be back at
//! the baseline (fd delta 0, RSS delta <= 1 MiB). SOAK_CYCLES sets the count
//! (default 1000). One test in this file: the counts are per process.

mod common;

use std::time::{Duration, Instant};

use common::{count_fds, count_maps, eth_frame, swapped, Daemon};
use vhostd_testkit::GuestOptions;

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn cycle(d: &Daemon, i: u32) -> Duration {
    let t0 = Instant::now();
    let opts = GuestOptions {
        mem_size: 4 << 20,
        queue_size: 128,
        rx_buffers: 64,
        ..Default::default()
    };
    let (mut g, h) = d.guest(opts);
    let f = eth_frame(200, i);
    g.send(0, &f);
    assert_eq!(
        g.recv_n(0, 1, Duration::from_secs(5)),
        vec![swapped(&f)],
        "cycle {i}"
    );
    let service = t0.elapsed();
    for k in 0..16 {
        g.send(0, &eth_frame(64 + k, i));
    }
    let _ = g.recv_n(0, 16, Duration::from_secs(5));
    drop(g);
    h.join().unwrap();
    service
}

#[test]
fn test_soak_reconnect_cycles_return_to_baseline() {
    let n: u32 = std::env::var("SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let d = Daemon::loopback(1);
    for i in 0..20 {
        cycle(&d, i); // warm up allocator and threads
    }
    let (fd0, maps0, rss0) = (count_fds(), count_maps(), rss_kib());
    let t0 = Instant::now();
    let mut worst = Duration::ZERO;
    for i in 0..n {
        worst = worst.max(cycle(&d, i));
    }
    let secs = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(50));
    let (fd1, maps1, rss1) = (count_fds(), count_maps(), rss_kib());
    eprintln!(
        "{n} cycles in {secs:.1} s; worst time to service {worst:?}; fds {fd0}->{fd1}, maps {maps0}->{maps1}, RSS {rss0}->{rss1} KiB"
    );
    assert!(
        worst < Duration::from_secs(1),
        "a cycle took {worst:?} to be serviced"
    );
    assert_eq!(fd1, fd0, "fd leak");
    assert!(maps1 <= maps0 + 2, "mapping leak: {maps0} -> {maps1}");
    assert!(rss1 <= rss0 + 1024, "RSS grew {rss0} -> {rss1} KiB");
    assert_eq!(
        d.port
            .connections
            .load(std::sync::atomic::Ordering::Relaxed),
        u64::from(n) + 20
    );
}
