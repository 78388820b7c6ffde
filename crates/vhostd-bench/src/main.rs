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
        /// Seconds per throughput measurement.
        #[arg(long, default_value_t = 2.0)]
        secs: f64,
        /// Alone / next-to-hostile pairs, alternated (medians are reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Request/response round trips per latency batch (batches repeat
        /// for `secs`).
        #[arg(long, default_value_t = 2000)]
        pings: usize,
        /// Mpps a paced (not CPU-bound) neighbour offers.
        #[arg(long, default_value_t = 1.0)]
        offered: f64,
        /// Worker mode of both ports: event, poll or adaptive.
        #[arg(long, default_value = "adaptive")]
        mode: String,
        /// In the low-priority run, leave the hostile guest's vCPU (its
        /// fake-guest thread) at nice 0: only vhostd's worker is lowered.
        #[arg(long)]
        vcpu_normal: bool,
        /// Tenants on separate cores: port A's worker and guest on CPU 0,
        /// the neighbour's (hostile port, hogs) on CPU 1, so that what is
        /// left is interference beyond CPU sharing.
        #[arg(long)]
        pin: bool,
        /// Write the results as JSON here.
        #[arg(long)]
        json: Option<String>,
    },
    /// Cache-line round trip between two spinning threads (on a 2-CPU
    /// machine: between the two CPUs), in ns: the machine-phase probe
    /// `bench/dpdk-compare.sh` records beside every run.
    LineRtt {
        /// Round trips to time (after 10 % as warm-up).
        #[arg(long, default_value_t = 200_000)]
        iters: u64,
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
        // avail.idx (stored) must be visible before avail_event is loaded, or
        // the device can re-arm and re-check in between and the kick is lost
        // (store->load reordering; virtio_mb() in Linux's kick_prepare)
        std::sync::atomic::fence(Ordering::SeqCst);
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

    /// A tenant that is not CPU-bound: offers `pps` frames per second in
    /// batches of `batch` (sleeping between them), loopback replies read
    /// back. A full TX ring counts as offered and not delivered. Returns
    /// (delivered, offered).
    fn paced(&mut self, batch: usize, pps: f64, stop: &dyn Fn() -> bool) -> (u64, u64) {
        let t0 = Instant::now();
        let (mut offered, mut delivered) = (0u64, 0u64);
        let frame = self.frame.clone();
        while !stop() {
            let due = (t0.elapsed().as_secs_f64() * pps) as u64;
            let mut sent_any = false;
            // catch up after a long sleep, as far as the ring has room (a
            // guest's qdisc backlog goes out at once too)
            while offered + batch as u64 <= due {
                let old = self.tx.avail_idx();
                let mut sent = 0;
                while sent < batch && self.tx.send_tx(&frame).is_some() {
                    sent += 1;
                }
                offered += batch as u64;
                if sent > 0 {
                    self.kick_if_needed(false, old);
                    sent_any = true;
                }
                if sent < batch {
                    // ring full: the rest of what is due is lost
                    offered = offered.max(due);
                    break;
                }
            }
            for (id, _) in self.tx.used() {
                self.tx.complete_tx(id);
            }
            let n = self.reap_rx_and_refill();
            delivered += n as u64;
            if !sent_any && n == 0 {
                std::thread::sleep(Duration::from_micros(20));
            }
        }
        self.settle_counting(&mut delivered);
        (delivered, offered)
    }

    /// `settle`, counting the replies that were still in flight.
    fn settle_counting(&mut self, delivered: &mut u64) {
        let end = Instant::now() + Duration::from_millis(200);
        while Instant::now() < end {
            for (id, _) in self.tx.used() {
                self.tx.complete_tx(id);
            }
            *delivered += self.reap_rx_and_refill() as u64;
            std::thread::sleep(Duration::from_millis(1));
        }
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
                assert!(
                    Instant::now() < deadline,
                    "reply lost: tx avail {} used {} avail_event {} free {}; rx avail {} used {} avail_event {} free {}",
                    self.tx.avail_idx(),
                    self.tx.used_idx(),
                    self.tx.avail_event(),
                    self.tx.free_descs(),
                    self.rx.avail_idx(),
                    self.rx.used_idx(),
                    self.rx.avail_event(),
                    self.rx.free_descs()
                );
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

/// What runs next to port A in an isolation measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Neighbour {
    /// Nothing.
    Alone,
    /// Two threads that only burn CPU: the CPU a hostile tenant's own
    /// threads (its vCPU and the worker serving it) take on a machine
    /// where tenants share cores, without any vhostd work.
    Hogs,
    /// A hostile guest on another port of the same daemon: maximum-length
    /// chains and kick storms (its fake-guest thread plus vhostd's worker).
    Hostile,
    /// The same hostile guest, put behind the others by the operator: its
    /// queues at low priority (vhostd runs its worker at nice 19) and its
    /// vCPU (the fake-guest thread) at nice 19 too, as a VMM would.
    HostileLow,
}

/// One isolation measurement of port A.
#[derive(Debug, Clone, Copy)]
struct Iso {
    mpps: f64,
    p50: f64,
    p99: f64,
    /// Share of the paced offer that came back.
    kept: f64,
    chains: u64,
}

/// Port A (loopback) saturated (batches of 32), at a paced offer that is not
/// CPU-bound, and 1-frame request/response latency: alone, next to two CPU
/// hogs, and next to a hostile port, alternated `rounds` times so that the
/// machine's swings fall on every side. Fresh ports for every run.
///
/// On a 2-core machine tenants share cores, so next to any busy tenant port
/// A gets about half the CPU: "alone" vs "hostile" mixes CPU sharing with
/// what vhostd does. "hogs" vs "hostile" is what the hostile port costs A
/// beyond taking its share of CPU: the isolation vhostd is answerable for.
/// How `isolation` runs (its command-line arguments).
struct IsoArgs {
    secs: f64,
    rounds: usize,
    pings: usize,
    offered: f64,
    mode: String,
    /// Put the hostile guest's vCPU thread at nice 19 too in the low run.
    low_vcpu: bool,
    /// Port A on CPU 0, its neighbour on CPU 1.
    pin: bool,
    json: Option<String>,
}

/// Tids of this process's threads called `comm`.
fn tids_named(comm: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let c = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (c.trim() == comm).then_some(())?;
        e.file_name().to_str()?.parse().ok()
    })
    .collect()
}

/// Pins thread `tid` (None: the calling thread) to `cpu`.
fn pin_thread(tid: Option<i32>, cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    let pid = match tid {
        None => None,
        Some(t) => match rustix::process::Pid::from_raw(t) {
            Some(p) => Some(p),
            None => return,
        },
    };
    if let Err(e) = rustix::thread::sched_setaffinity(pid, &set) {
        eprintln!("cannot pin thread {tid:?} to CPU {cpu}: {e}");
    }
}

/// The worker of the newest `Rig` (its threads are all `vhostd-bench-q0`):
/// the one not in `before`.
fn new_worker(before: &[i32]) -> Option<i32> {
    tids_named("vhostd-bench-q0")
        .into_iter()
        .find(|t| !before.contains(t))
}

fn isolation(args: IsoArgs) {
    let IsoArgs {
        secs,
        rounds,
        pings,
        offered,
        mode,
        low_vcpu,
        pin,
        json,
    } = args;
    if pin {
        // this thread drives port A
        pin_thread(None, 0);
    }
    let mode = match mode.as_str() {
        "event" => WorkerMode::Event,
        "poll" => WorkerMode::Poll,
        _ => WorkerMode::Adaptive,
    };
    let run = |kind: Neighbour| {
        let before = tids_named("vhostd-bench-q0");
        let mut a = Rig::with_mode(&BackendSpec::Loopback, 1, true, CoalescePolicy::Off, mode);
        let a_worker = new_worker(&before);
        if pin {
            match a_worker {
                Some(t) => pin_thread(Some(t), 0),
                None => eprintln!("port A's worker not found: not pinned"),
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        match kind {
            Neighbour::Alone => {}
            Neighbour::Hogs => {
                for _ in 0..2 {
                    let st = stop.clone();
                    threads.push(std::thread::spawn(move || {
                        if pin {
                            pin_thread(None, 1);
                        }
                        let mut x = 0u64;
                        while !st.load(Ordering::Relaxed) {
                            for _ in 0..1000 {
                                x = std::hint::black_box(
                                    x.wrapping_mul(6364136223846793005).wrapping_add(1),
                                );
                            }
                        }
                        0
                    }));
                }
            }
            Neighbour::Hostile | Neighbour::HostileLow => {
                let low = kind == Neighbour::HostileLow;
                let before = tids_named("vhostd-bench-q0");
                let mut b = Rig::with_mode(&BackendSpec::Sink, 1, true, CoalescePolicy::Off, mode);
                if pin {
                    match new_worker(&before) {
                        Some(t) => pin_thread(Some(t), 1),
                        None => eprintln!("the neighbour's worker not found: not pinned"),
                    }
                }
                if low {
                    b.port.update_settings(None, |s| s.priority = Priority::Low);
                }
                let p = b.pairs.pop().unwrap();
                let st = stop.clone();
                threads.push(std::thread::spawn(move || {
                    if pin {
                        pin_thread(None, 1);
                    }
                    if low && low_vcpu {
                        let me = rustix::thread::gettid();
                        let _ = rustix::process::setpriority_process(Some(me), 19);
                    }
                    let n = hostile(p, &st);
                    drop(b);
                    n
                }));
            }
        }
        let end = Instant::now() + Duration::from_secs_f64(secs);
        let (n, dt) = a.pairs[0].throughput(32, true, &|| Instant::now() >= end);
        // latency over `secs` too, so that scheduling (slices of ms) shows
        let end = Instant::now() + Duration::from_secs_f64(secs);
        let mut lat = Vec::new();
        while Instant::now() < end {
            lat.extend(a.pairs[0].pingpong(pings));
        }
        lat.sort_by(|x, y| x.partial_cmp(y).unwrap());
        let end = Instant::now() + Duration::from_secs_f64(secs);
        let (got, want) = a.pairs[0].paced(32, offered * 1e6, &|| Instant::now() >= end);
        stop.store(true, Ordering::Relaxed);
        let chains = threads.into_iter().map(|h| h.join().unwrap()).sum();
        Iso {
            mpps: n as f64 / dt / 1e6,
            p50: pct(&lat, 0.5),
            p99: pct(&lat, 0.99),
            kept: got as f64 / want.max(1) as f64,
            chains,
        }
    };
    println!(
        "port A: saturated Mpps; paced: share of {offered} Mpps offered that came back; \
         1-frame request/response p99 us"
    );
    println!(
        "{:<5} {:>7} {:>7} {:>7} {:>7} | {:>6} {:>6} {:>6} {:>6} | {:>7} {:>7} {:>7} | {:>6} {:>6}",
        "round",
        "alone",
        "hogs",
        "hostile",
        "h.low",
        "paced",
        "hogs",
        "host.",
        "h.low",
        "p99",
        "hogs",
        "host.",
        "h/hogs",
        "paced"
    );
    let kinds = [
        Neighbour::Alone,
        Neighbour::Hogs,
        Neighbour::Hostile,
        Neighbour::HostileLow,
    ];
    let mut rows = Vec::new();
    for r in 0..rounds.max(1) {
        // rotate the order so that no kind always runs first
        let mut res = [None; 4];
        for k in 0..4 {
            let i = (k + r) % 4;
            res[i] = Some(run(kinds[i]));
        }
        let [al, hg, hs, lo] = res.map(Option::unwrap);
        let sat = hs.mpps / hg.mpps;
        let paced = hs.kept / hg.kept;
        println!(
            "{r:<5} {:>7.3} {:>7.3} {:>7.3} {:>7.3} | {:>6.3} {:>6.3} {:>6.3} {:>6.3} | {:>7.1} {:>7.1} {:>7.1} | {sat:>6.2} {paced:>6.2}",
            al.mpps, hg.mpps, hs.mpps, lo.mpps, al.kept, hg.kept, hs.kept, lo.kept, al.p99, hg.p99, hs.p99
        );
        rows.push(serde_json::json!({
            "alone": {"mpps": al.mpps, "paced_kept": al.kept, "p50_us": al.p50, "p99_us": al.p99},
            "hogs": {"mpps": hg.mpps, "paced_kept": hg.kept, "p50_us": hg.p50, "p99_us": hg.p99},
            "hostile": {"mpps": hs.mpps, "paced_kept": hs.kept, "p50_us": hs.p50, "p99_us": hs.p99,
                "chains": hs.chains},
            "hostile_low": {"mpps": lo.mpps, "paced_kept": lo.kept, "p50_us": lo.p50,
                "p99_us": lo.p99, "chains": lo.chains},
            "saturated_hostile_vs_hogs": sat, "paced_hostile_vs_hogs": paced,
            "saturated_hostile_vs_alone": hs.mpps / al.mpps,
            "paced_hostile_vs_alone": hs.kept / al.kept,
            "p99_hostile_vs_hogs": hs.p99 / hg.p99,
            "p99_hostile_vs_alone": hs.p99 / al.p99,
            "saturated_low_vs_alone": lo.mpps / al.mpps,
            "paced_low_vs_alone": lo.kept / al.kept,
            "p99_low_vs_alone": lo.p99 / al.p99,
        }));
    }
    let med = |k: &str| {
        let mut v: Vec<f64> = rows.iter().map(|r| r[k].as_f64().unwrap()).collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        pct(&v, 0.5)
    };
    println!(
        "median, hostile port vs CPU hogs: saturated {:.2}, paced {:.2} (target >= 0.80), p99 x{:.2} (target <= 2)",
        med("saturated_hostile_vs_hogs"),
        med("paced_hostile_vs_hogs"),
        med("p99_hostile_vs_hogs")
    );
    println!(
        "median, hostile port vs alone ({}): saturated {:.2}, paced {:.2}, p99 x{:.2}",
        if pin {
            "tenants on separate cores"
        } else {
            "CPU sharing included"
        },
        med("saturated_hostile_vs_alone"),
        med("paced_hostile_vs_alone"),
        med("p99_hostile_vs_alone")
    );
    println!(
        "median, hostile port at low priority vs alone: saturated {:.2}, paced {:.2} \
         (target >= 0.80), p99 x{:.2} (target <= 2)",
        med("saturated_low_vs_alone"),
        med("paced_low_vs_alone"),
        med("p99_low_vs_alone")
    );
    if let Some(path) = json {
        let v = serde_json::json!({"rounds": rows, "offered_mpps": offered,
            "median_saturated_hostile_vs_hogs": med("saturated_hostile_vs_hogs"),
            "median_paced_hostile_vs_hogs": med("paced_hostile_vs_hogs"),
            "median_p99_hostile_vs_hogs": med("p99_hostile_vs_hogs"),
            "median_saturated_hostile_vs_alone": med("saturated_hostile_vs_alone"),
            "median_paced_hostile_vs_alone": med("paced_hostile_vs_alone"),
            "median_p99_hostile_vs_alone": med("p99_hostile_vs_alone"),
            "pinned": pin,
            "median_saturated_low_vs_alone": med("saturated_low_vs_alone"),
            "median_paced_low_vs_alone": med("paced_low_vs_alone"),
            "median_p99_low_vs_alone": med("p99_low_vs_alone")});
        std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    }
}

/// One cache line, alone on its line.
#[repr(align(128))]
struct Line(std::sync::atomic::AtomicU64);

/// Two threads hand a counter back and forth through one cache line;
/// returns ns per round trip (two line transfers).
fn line_rtt(iters: u64) -> f64 {
    let line = Arc::new(Line(std::sync::atomic::AtomicU64::new(0)));
    let warm = iters / 10;
    let total = warm + iters;
    let l2 = line.clone();
    // the echo side: odd values are its own
    let h = std::thread::spawn(move || {
        for i in 0..total {
            while l2.0.load(Ordering::Acquire) != 2 * i + 1 {
                std::hint::spin_loop();
            }
            l2.0.store(2 * i + 2, Ordering::Release);
        }
    });
    let mut t0 = Instant::now();
    for i in 0..total {
        if i == warm {
            t0 = Instant::now();
        }
        line.0.store(2 * i + 1, Ordering::Release);
        while line.0.load(Ordering::Acquire) != 2 * i + 2 {
            std::hint::spin_loop();
        }
    }
    let dt = t0.elapsed();
    h.join().unwrap();
    dt.as_nanos() as f64 / iters.max(1) as f64
}

fn main() {
    match Args::parse().cmd {
        Bench::Isolation {
            secs,
            rounds,
            pings,
            offered,
            mode,
            vcpu_normal,
            pin,
            json,
        } => isolation(IsoArgs {
            secs,
            rounds,
            pings,
            offered,
            mode,
            low_vcpu: !vcpu_normal,
            pin,
            json,
        }),
        Bench::Exits {
            secs,
            pings,
            batch,
            json,
        } => exits(secs, pings, batch, json),
        Bench::Priority { pings, json } => priority(pings, json),
        Bench::LineRtt { iters } => println!("{:.1}", line_rtt(iters)),
    }
}
