//! `vhostd-bench exits`: how many exits (kicks) and interrupts (calls) the
//! daemon costs per packet, for each notification policy, with a fake guest
//! that behaves like Linux's virtio-net driver: NAPI-style, it sleeps on the
//! call eventfd, drains used entries with interrupts off, re-enables them
//! (used_event / NO_INTERRUPT) and re-checks before sleeping again; it kicks
//! once per TX batch and only when the device asks for kicks (avail_event /
//! NO_NOTIFY).
//!
//! Policies: `none` (no EVENT_IDX, the driver kicks after every batch and
//! never masks interrupts), `event_idx`, `fixed` (EVENT_IDX + host
//! coalescing 50 us / 32 frames), `adaptive` (EVENT_IDX + adaptive
//! coalescing). Back-ends: loopback (guest -> vhostd -> guest) and sink.
//! Figures: Mpps, kicks and calls per 1000 packets, and request/response
//! (one frame in flight, loopback) latency p50/p99.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss
)]

use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use clap::Parser;
use vhostd_api::{CoalescePolicy, QueueStats};
use vhostd_backend::BackendSpec;
use vhostd_testkit::{FakeDriver, FakeGuest, GuestOptions, VIRTIO_RING_F_EVENT_IDX};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

#[derive(Debug, Parser)]
#[command(about = "vhostd exit/interrupt ratio benchmark")]
struct Args {
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
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Pol {
    None,
    EventIdx,
    Fixed,
    Adaptive,
}

impl Pol {
    fn name(self) -> &'static str {
        match self {
            Pol::None => "none",
            Pol::EventIdx => "event_idx",
            Pol::Fixed => "fixed_50us_32f",
            Pol::Adaptive => "adaptive",
        }
    }
    fn event_idx(self) -> bool {
        self != Pol::None
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

struct Run {
    g: FakeGuest,
    epoll: Epoll,
    port: std::sync::Arc<vhostd_daemon::port::Port>,
    pol: Pol,
    frame: Vec<u8>,
}

fn vring_need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

impl Run {
    fn new(backend: &BackendSpec, pol: Pol) -> Self {
        let (port, workers) =
            vhostd_daemon::start_port("bench", backend, "pair", 1, false).unwrap();
        port.update_settings(None, |s| s.coalesce = pol.coalesce());
        let (a, b) = UnixStream::pair().unwrap();
        let (p2, w2) = (port.clone(), workers.clone());
        std::thread::spawn(move || vhostd_daemon::server::serve_connection(&p2, &w2, b));
        let mut features = GuestOptions::default().features;
        if !pol.event_idx() {
            features &= !VIRTIO_RING_F_EVENT_IDX;
        }
        let opts = GuestOptions {
            features,
            queue_size: 256,
            buf_size: 2048,
            rx_buffers: 256,
            ..Default::default()
        };
        let g = FakeGuest::connect(a, opts);
        let mut frame = vec![0u8; 12 + 64];
        frame[12..18].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 1]);
        frame[18..24].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 2]);
        frame[24] = 8;
        let epoll = Epoll::new().unwrap();
        for (i, c) in g.calls.iter().enumerate().take(2) {
            epoll
                .ctl(
                    ControlOperation::Add,
                    c.as_raw_fd(),
                    EpollEvent::new(EventSet::IN, i as u64),
                )
                .unwrap();
        }
        Run {
            g,
            epoll,
            port,
            pol,
            frame,
        }
    }

    fn stats(&self) -> QueueStats {
        let mut t = QueueStats::default();
        for c in &self.port.counters {
            t.accumulate(&c.snapshot());
        }
        t
    }

    /// Kicks `q` if the device asks for it (or always, policy `none`).
    fn kick_if_needed(&mut self, q: usize, old: u16) {
        let drv: &FakeDriver = if q.is_multiple_of(2) {
            &self.g.rx[q / 2]
        } else {
            &self.g.tx[q / 2]
        };
        let new = drv.avail_idx();
        let kick = match self.pol {
            Pol::None => true,
            _ => vring_need_event(drv.avail_event(), new, old),
        };
        if kick {
            self.g.kicks[q].write(1).unwrap();
        }
    }

    /// Interrupts off while the driver polls (NAPI). Policy `none` never
    /// masks; with EVENT_IDX a stale used_event already means "off".
    fn irq_off(&mut self) {}

    /// Interrupts on again; returns true if work raced in.
    fn irq_on(&mut self) -> bool {
        if self.pol.event_idx() {
            let (r, t) = (self.g.rx[0].used_idx(), self.g.tx[0].used_idx());
            self.g.rx[0].set_used_event(r);
            self.g.tx[0].set_used_event(t);
            std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
            self.g.rx[0].used_idx() != r || self.g.tx[0].used_idx() != t
        } else {
            false
        }
    }

    fn sleep_on_calls(&self, timeout: Duration) {
        let mut ev = [EpollEvent::default(); 2];
        let _ = self.epoll.wait(timeout.as_millis().max(1) as i32, &mut ev);
        let _ = self.g.calls[0].read();
        let _ = self.g.calls[1].read();
    }

    /// Throughput: keeps the TX ring full in batches; counts delivered
    /// packets (RX for loopback, TX completions for sink).
    fn throughput(&mut self, secs: f64, batch: usize, rx_side: bool) -> (u64, f64) {
        let s0 = self.stats();
        let t0 = Instant::now();
        let end = t0 + Duration::from_secs_f64(secs);
        let mut delivered = 0u64;
        let frame = self.frame.clone();
        while Instant::now() < end {
            self.irq_off();
            // TX: one batch, one kick at most
            let old = self.g.tx[0].avail_idx();
            let mut sent = 0;
            while sent < batch && self.g.tx[0].send_tx(&frame).is_some() {
                sent += 1;
            }
            if sent > 0 {
                self.kick_if_needed(1, old);
            }
            // TX completions
            let done = self.g.tx[0].used();
            for (id, _) in &done {
                self.g.tx[0].complete_tx(*id);
            }
            if !rx_side {
                delivered += done.len() as u64;
            }
            // RX: drain, repost, kick if the device wants
            let used = self.g.rx[0].used();
            let n = used.len();
            for (id, len) in used {
                let _ = self.g.rx[0].take_rx(id, len);
            }
            if n > 0 {
                delivered += n as u64;
                let old = self.g.rx[0].avail_idx();
                self.g.rx[0].post_rx(n, 2048);
                self.kick_if_needed(0, old);
            }
            let idle = sent == 0 && done.is_empty() && n == 0;
            if idle && !self.irq_on() {
                self.sleep_on_calls(Duration::from_millis(5));
            }
        }
        let dt = t0.elapsed().as_secs_f64();
        let _ = s0;
        (delivered, dt)
    }

    /// Request/response latency: one frame in flight, wait for the call.
    fn pingpong(&mut self, n: usize) -> Vec<f64> {
        let frame = self.frame.clone();
        let mut lat = Vec::with_capacity(n);
        // let the throughput run's tail drain (frames still looping), then
        // reap everything
        loop {
            std::thread::sleep(Duration::from_millis(20));
            for (id, _) in self.g.tx[0].used() {
                self.g.tx[0].complete_tx(id);
            }
            let used = self.g.rx[0].used();
            let quiet = used.is_empty();
            for (id, len) in used {
                let _ = self.g.rx[0].take_rx(id, len);
            }
            let free = self.g.rx[0].free_descs();
            let old = self.g.rx[0].avail_idx();
            self.g.rx[0].post_rx(free, 2048);
            self.kick_if_needed(0, old);
            if quiet {
                break;
            }
        }
        for _ in 0..n {
            self.irq_on();
            let start = self.g.rx[0].used_idx();
            let t = Instant::now();
            let old = self.g.tx[0].avail_idx();
            self.g.tx[0].send_tx(&frame).expect("a free TX descriptor");
            self.kick_if_needed(1, old);
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                assert!(Instant::now() < deadline, "{}: reply lost", self.pol.name());
                if self.g.rx[0].used_idx() != start {
                    break;
                }
                self.sleep_on_calls(Duration::from_millis(100));
            }
            lat.push(t.elapsed().as_secs_f64() * 1e6);
            for (id, len) in self.g.rx[0].used() {
                let _ = self.g.rx[0].take_rx(id, len);
            }
            let old = self.g.rx[0].avail_idx();
            self.g.rx[0].post_rx(1, 2048);
            self.kick_if_needed(0, old);
            for (id, _) in self.g.tx[0].used() {
                self.g.tx[0].complete_tx(id);
            }
        }
        lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
        lat
    }
}

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args = Args::parse();
    let mut results = Vec::new();
    println!(
        "{:<9} {:<15} {:>8} {:>14} {:>14} {:>10} {:>10}",
        "backend", "policy", "Mpps", "kicks/1000pkt", "calls/1000pkt", "p50 us", "p99 us"
    );
    for (bname, spec) in [
        ("loopback", BackendSpec::Loopback),
        ("sink", BackendSpec::Sink),
    ] {
        for pol in [Pol::None, Pol::EventIdx, Pol::Fixed, Pol::Adaptive] {
            let mut run = Run::new(&spec, pol);
            let s0 = run.stats();
            let (pkts, dt) = run.throughput(args.secs, args.batch, bname == "loopback");
            std::thread::sleep(Duration::from_millis(20));
            let s1 = run.stats();
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
                Run::new(&spec, pol).pingpong(args.pings)
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
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&results).unwrap()).unwrap();
        println!("wrote {path}");
    }
}
