//! vhostd benchmarks with an interrupt-driven fake guest that behaves like
//! Linux's virtio-net driver: NAPI-style, it sleeps on the call eventfds,
//! drains used entries with interrupts off, re-enables them (used_event /
//! NO_INTERRUPT) and re-checks before sleeping again; it kicks once per TX
//! batch and only when the device asks for kicks (avail_event / NO_NOTIFY).
//!
//! `vhostd-bench exits`: per notification policy — `none` (no EVENT_IDX,
//! the driver kicks after every batch and never masks interrupts),
//! `event_idx`, `fixed` (EVENT_IDX + host coalescing 50 us / 32 frames),
//! `adaptive` — over loopback and sink: Mpps, kicks and calls per 1000
//! packets, request/response (one frame in flight) latency p50/p99.
//!
//! `vhostd-bench priority`: request/response p99 on queue pair 0 idle,
//! then while pair 1 floods, with pair 0 at normal and at high priority.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss
)]

use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use vhostd_api::{CoalescePolicy, Priority, QueueStats, WorkerMode};
use vhostd_backend::BackendSpec;
use vhostd_daemon::port::Port;
use vhostd_testkit::{FakeDriver, FakeGuest, GuestOptions, VIRTIO_RING_F_EVENT_IDX};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

#[derive(Debug, Parser)]
#[command(about = "vhostd benchmarks (figures, not pass/fail)")]
struct Args {
    #[command(subcommand)]
    cmd: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Kicks and calls per packet, throughput and latency per policy.
    Exits {
        /// Seconds per throughput run.
        #[arg(long, default_value_t = 2.0)]
        secs: f64,
        /// Request/response round trips per latency run.
        #[arg(long, default_value_t = 5000)]
        pings: usize,
        /// Frames per TX batch (one kick at most per batch).
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Write the results as JSON here.
        #[arg(long)]
        json: Option<String>,
    },
    /// A port's throughput alone and next to a hostile guest (maximum-length
    /// chains and kick storms on another port of the same daemon process).
    Isolation {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 2.0)]
        secs: f64,
        /// Write the results as JSON here.
        #[arg(long)]
        json: Option<String>,
    },
    /// A high-priority queue's latency under a flood on another queue pair.
    Priority {
        /// Request/response round trips per measurement.
        #[arg(long, default_value_t = 5000)]
        pings: usize,
        /// Write the results as JSON here.
        #[arg(long)]
        json: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Pol {
    None,
    EventIdx,
    Fixed,
    Adaptive,
    /// EVENT_IDX, no coalescing, workers in poll mode (the reference for
    /// throughput: kicks off, a core spinning).
    Poll,
}

impl Pol {
    fn name(self) -> &'static str {
        match self {
            Pol::None => "none",
            Pol::EventIdx => "event_idx",
            Pol::Fixed => "fixed_50us_32f",
            Pol::Adaptive => "adaptive",
            Pol::Poll => "poll_mode",
        }
    }
    fn coalesce(self) -> CoalescePolicy {
        match self {
            Pol::Fixed => CoalescePolicy::Fixed {
                usecs: 50,
                frames: 32,
            },
            Pol::Adaptive => CoalescePolicy::Adaptive,
            _ => CoalescePolicy::Off,
        }
    }
}

fn vring_need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// The driver side of one queue pair, movable to its own thread.
struct Pair {
    rx: FakeDriver,
    tx: FakeDriver,
    call: [EventFd; 2],
    kick: [EventFd; 2],
    epoll: Epoll,
    event_idx: bool,
    frame: Vec<u8>,
}

impl Pair {
    fn kick_if_needed(&self, rx: bool, old: u16) {
        let drv = if rx { &self.rx } else { &self.tx };
        let new = drv.avail_idx();
        if !self.event_idx || vring_need_event(drv.avail_event(), new, old) {
            self.kick[usize::from(!rx)].write(1).unwrap();
        }
    }

    /// Interrupts on again (NAPI complete); true if work raced in. Without
    /// EVENT_IDX the driver never masks, so there is nothing to do.
    fn irq_on(&self) -> bool {
        if !self.event_idx {
            return false;
        }
        let (r, t) = (self.rx.used_idx(), self.tx.used_idx());
        self.rx.set_used_event(r);
        self.tx.set_used_event(t);
        std::sync::atomic::fence(Ordering::SeqCst);
        self.rx.used_idx() != r || self.tx.used_idx() != t
    }

    fn sleep_on_calls(&self, timeout: Duration) {
        let mut ev = [EpollEvent::default(); 2];
        let _ = self.epoll.wait(timeout.as_millis().max(1) as i32, &mut ev);
        let _ = self.call[0].read();
        let _ = self.call[1].read();
    }

    fn reap_rx_and_refill(&mut self) -> usize {
        let used = self.rx.used();
        let n = used.len();
        for (id, len) in used {
            let _ = self.rx.take_rx(id, len);
        }
        if n > 0 {
            let old = self.rx.avail_idx();
            self.rx.post_rx(n, 2048);
            self.kick_if_needed(true, old);
        }
        n
    }

    /// Keeps the TX ring full in batches until `stop`; returns packets
    /// delivered (RX if `rx_side`, else TX completions) and seconds.
    fn throughput(&mut self, batch: usize, rx_side: bool, stop: &dyn Fn() -> bool) -> (u64, f64) {
        let t0 = Instant::now();
        let mut delivered = 0u64;
        let frame = self.frame.clone();
        while !stop() {
            let old = self.tx.avail_idx();
            let mut sent = 0;
            while sent < batch && self.tx.send_tx(&frame).is_some() {
                sent += 1;
            }
            if sent > 0 {
                self.kick_if_needed(false, old);
            }
            let done = self.tx.used();
            for (id, _) in &done {
                self.tx.complete_tx(*id);
            }
            if !rx_side {
                delivered += done.len() as u64;
            }
            let n = self.reap_rx_and_refill();
            delivered += n as u64;
            if sent == 0 && done.is_empty() && n == 0 && !self.irq_on() {
                self.sleep_on_calls(Duration::from_millis(5));
            }
        }
        (delivered, t0.elapsed().as_secs_f64())
    }

    /// Waits until nothing is in flight any more and every buffer is back.
    fn settle(&mut self) {
        loop {
            std::thread::sleep(Duration::from_millis(20));
            for (id, _) in self.tx.used() {
                self.tx.complete_tx(id);
            }
            let quiet = self.reap_rx_and_refill() == 0;
            let free = self.rx.free_descs();
            let old = self.rx.avail_idx();
            self.rx.post_rx(free, 2048);
            self.kick_if_needed(true, old);
            if quiet {
                return;
            }
        }
    }

    /// Request/response latency (loopback): one frame in flight, wait for
    /// the call. Sorted microseconds.
    fn pingpong(&mut self, n: usize) -> Vec<f64> {
        self.settle();
        let frame = self.frame.clone();
        let mut lat = Vec::with_capacity(n);
        for _ in 0..n {
            self.irq_on();
            let start = self.rx.used_idx();
            let t = Instant::now();
            let old = self.tx.avail_idx();
            self.tx.send_tx(&frame).expect("a free TX descriptor");
            self.kick_if_needed(false, old);
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.rx.used_idx() == start {
                assert!(Instant::now() < deadline, "reply lost");
                self.sleep_on_calls(Duration::from_millis(100));
            }
            lat.push(t.elapsed().as_secs_f64() * 1e6);
            self.reap_rx_and_refill();
            for (id, _) in self.tx.used() {
                self.tx.complete_tx(id);
            }
        }
        lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
        lat
    }
}

/// An in-process daemon and a fake guest split into queue pairs.
struct Rig {
    _g: FakeGuest,
    pairs: Vec<Pair>,
    port: Arc<Port>,
}

impl Rig {
    fn new(backend: &BackendSpec, pairs: usize, event_idx: bool, coalesce: CoalescePolicy) -> Self {
        Self::with_mode(backend, pairs, event_idx, coalesce, WorkerMode::Adaptive)
    }

    fn with_mode(
        backend: &BackendSpec,
        pairs: usize,
        event_idx: bool,
        coalesce: CoalescePolicy,
        mode: WorkerMode,
    ) -> Self {
        let (port, workers) =
            vhostd_daemon::start_port("bench", backend, "pair", pairs, false).unwrap();
        port.update_settings(None, |s| s.coalesce = coalesce);
        port.set_mode(mode);
        let (a, b) = UnixStream::pair().unwrap();
        let (p2, w2) = (port.clone(), workers.clone());
        std::thread::spawn(move || vhostd_daemon::server::serve_connection(&p2, &w2, b));
        let mut features = GuestOptions::default().features;
        if !event_idx {
            features &= !VIRTIO_RING_F_EVENT_IDX;
        }
        let opts = GuestOptions {
            features,
            queue_pairs: pairs,
            queue_size: 256,
            buf_size: 2048,
            rx_buffers: 256,
            mem_size: 32 << 20,
            ..Default::default()
        };
        let mut g = FakeGuest::connect(a, opts);
        let mut frame = vec![0u8; 12 + 64];
        frame[12..18].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 1]);
        frame[18..24].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 2]);
        frame[24] = 8;
        let mut out = Vec::new();
        let (rxs, txs) = (std::mem::take(&mut g.rx), std::mem::take(&mut g.tx));
        for (i, (rx, tx)) in rxs.into_iter().zip(txs).enumerate() {
            let call = [
                g.calls[2 * i].try_clone().unwrap(),
                g.calls[2 * i + 1].try_clone().unwrap(),
            ];
            let kick = [
                g.kicks[2 * i].try_clone().unwrap(),
                g.kicks[2 * i + 1].try_clone().unwrap(),
            ];
            let epoll = Epoll::new().unwrap();
            for (k, c) in call.iter().enumerate() {
                epoll
                    .ctl(
                        ControlOperation::Add,
                        c.as_raw_fd(),
                        EpollEvent::new(EventSet::IN, k as u64),
                    )
                    .unwrap();
            }
            out.push(Pair {
                rx: rx.into_split(),
                tx: tx.into_split(),
                call,
                kick,
                epoll,
                event_idx,
                frame: frame.clone(),
            });
        }
        Rig {
            _g: g,
            pairs: out,
            port,
        }
    }

    fn stats(&self) -> QueueStats {
        let mut t = QueueStats::default();
        for c in &self.port.counters {
            t.accumulate(&c.snapshot());
        }
        t
    }
}

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn exits(secs: f64, pings: usize, batch: usize, json: Option<String>) {
    let mut results = Vec::new();
    println!(
        "{:<9} {:<15} {:>8} {:>14} {:>14} {:>10} {:>10}",
        "backend", "policy", "Mpps", "kicks/1000pkt", "calls/1000pkt", "p50 us", "p99 us"
    );
    for (bname, spec) in [
        ("loopback", BackendSpec::Loopback),
        ("sink", BackendSpec::Sink),
    ] {
        for pol in [
            Pol::None,
            Pol::EventIdx,
            Pol::Fixed,
            Pol::Adaptive,
            Pol::Poll,
        ] {
            let mode = if pol == Pol::Poll {
                WorkerMode::Poll
            } else {
                WorkerMode::Adaptive
            };
            let mut rig = Rig::with_mode(&spec, 1, pol != Pol::None, pol.coalesce(), mode);
            let s0 = rig.stats();
            let end = Instant::now() + Duration::from_secs_f64(secs);
            let (pkts, dt) =
                rig.pairs[0].throughput(batch, bname == "loopback", &|| Instant::now() >= end);
            std::thread::sleep(Duration::from_millis(20));
            let s1 = rig.stats();
            let kicks = s1.kicks - s0.kicks;
            let calls = s1.calls - s0.calls;
            let per_k = |x: u64| {
                if pkts == 0 {
                    0.0
                } else {
                    x as f64 * 1000.0 / pkts as f64
                }
            };
            // latency on a fresh daemon: steady-state request/response
            let lat = if bname == "loopback" {
                Rig::with_mode(&spec, 1, pol != Pol::None, pol.coalesce(), mode).pairs[0]
                    .pingpong(pings)
            } else {
                Vec::new()
            };
            let (p50, p99) = (pct(&lat, 0.50), pct(&lat, 0.99));
            println!(
                "{:<9} {:<15} {:>8.3} {:>14.1} {:>14.1} {:>10.1} {:>10.1}",
                bname,
                pol.name(),
                pkts as f64 / dt / 1e6,
                per_k(kicks),
                per_k(calls),
                p50,
                p99
            );
            results.push(serde_json::json!({
                "backend": bname, "policy": pol.name(), "mpps": pkts as f64 / dt / 1e6,
                "packets": pkts, "kicks": kicks, "calls": calls,
                "kicks_per_1000": per_k(kicks), "calls_per_1000": per_k(calls),
                "exits_per_1000": per_k(kicks + calls),
                "pingpong_p50_us": p50, "pingpong_p99_us": p99,
            }));
        }
    }
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&results).unwrap()).unwrap();
        println!("wrote {path}");
    }
}

/// Pair 0 ping-pong p99 with pair 1 flooding (or idle).
fn probe(pings: usize, flood: bool, high: bool) -> (f64, f64, f64) {
    // coalescing on everywhere: a high-priority queue must bypass it
    let mut rig = Rig::new(&BackendSpec::Loopback, 2, true, CoalescePolicy::Adaptive);
    if high {
        rig.port
            .update_settings(Some(0), |s| s.priority = Priority::High);
        rig.port
            .update_settings(Some(1), |s| s.priority = Priority::High);
    }
    let mut flooder = rig.pairs.pop().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let h = flood.then(|| {
        std::thread::spawn(move || flooder.throughput(32, true, &|| st.load(Ordering::Relaxed)))
    });
    if flood {
        std::thread::sleep(Duration::from_millis(200));
    }
    let lat = rig.pairs[0].pingpong(pings);
    stop.store(true, Ordering::Relaxed);
    let flood_mpps = h.map(|h| {
        let (n, dt) = h.join().unwrap();
        n as f64 / dt / 1e6
    });
    (pct(&lat, 0.5), pct(&lat, 0.99), flood_mpps.unwrap_or(0.0))
}

fn priority(pings: usize, json: Option<String>) {
    println!(
        "{:<34} {:>10} {:>10} {:>12}",
        "pair 0 request/response", "p50 us", "p99 us", "flood Mpps"
    );
    let mut results = Vec::new();
    let mut idle_p99 = 0.0;
    for (name, flood, high) in [
        ("idle, normal priority", false, false),
        ("pair 1 flooding, normal priority", true, false),
        ("pair 1 flooding, pair 0 high", true, true),
    ] {
        let (p50, p99, mpps) = probe(pings, flood, high);
        if !flood {
            idle_p99 = p99;
        }
        println!("{name:<34} {p50:>10.1} {p99:>10.1} {mpps:>12.3}");
        results.push(
            serde_json::json!({"case": name, "p50_us": p50, "p99_us": p99, "flood_mpps": mpps,
            "p99_vs_idle": if idle_p99 > 0.0 { p99 / idle_p99 } else { 0.0 }}),
        );
    }
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&results).unwrap()).unwrap();
        println!("wrote {path}");
    }
}

/// The hostile neighbour: TX chains as long as the ring (every descriptor a
/// 1-byte buffer after a header-sized first one), each followed by a storm
/// of 64 kicks, until `stop`. Returns chains completed.
fn hostile(mut p: Pair, stop: &AtomicBool) -> u64 {
    let size = p.tx.layout.size;
    let descs: Vec<(u16, vhostd_testkit::RawDesc)> = (0..size)
        .map(|i| {
            let last = i + 1 == size;
            (
                i,
                vhostd_testkit::RawDesc {
                    addr: p.tx.buf_addr(i),
                    len: if i == 0 { 12 } else { 1 },
                    flags: if last { 0 } else { 1 },
                    next: if last { 0 } else { i + 1 },
                },
            )
        })
        .collect();
    let mut done = 0u64;
    p.tx.push_raw(&descs, 0);
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..64 {
            let _ = p.kick[1].write(1);
        }
        if !p.tx.used().is_empty() {
            done += 1;
            p.tx.publish(0);
        }
    }
    done
}

fn isolation(secs: f64, json: Option<String>) {
    let run = |neighbour: bool| {
        let mut a = Rig::new(&BackendSpec::Loopback, 1, true, CoalescePolicy::Off);
        let stop = Arc::new(AtomicBool::new(false));
        let h = neighbour.then(|| {
            let mut b = Rig::new(&BackendSpec::Sink, 1, true, CoalescePolicy::Off);
            let p = b.pairs.pop().unwrap();
            let st = stop.clone();
            std::thread::spawn(move || {
                let n = hostile(p, &st);
                drop(b);
                n
            })
        });
        let end = Instant::now() + Duration::from_secs_f64(secs);
        let (n, dt) = a.pairs[0].throughput(32, true, &|| Instant::now() >= end);
        stop.store(true, Ordering::Relaxed);
        let chains = h.map_or(0, |h| h.join().unwrap());
        (n as f64 / dt / 1e6, chains)
    };
    let (alone, _) = run(false);
    let (shared, chains) = run(true);
    println!("{:<44} {:>8}", "port A loopback", "Mpps");
    println!("{:<44} {alone:>8.3}", "alone");
    println!(
        "{:<44} {shared:>8.3}",
        format!("next to a hostile port ({chains} max-length chains)")
    );
    println!("ratio {:.2} (target >= 0.80)", shared / alone);
    if let Some(path) = json {
        let v = serde_json::json!({"alone_mpps": alone, "with_hostile_mpps": shared, "ratio": shared / alone,
            "hostile_chains": chains});
        std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    }
}

fn main() {
    match Args::parse().cmd {
        Bench::Isolation { secs, json } => isolation(secs, json),
        Bench::Exits {
            secs,
            pings,
            batch,
            json,
        } => exits(secs, pings, batch, json),
        Bench::Priority { pings, json } => priority(pings, json),
    }
}
