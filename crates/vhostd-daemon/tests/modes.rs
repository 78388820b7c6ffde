#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
//! Worker modes: event, poll, adaptive (one test file: it reads the CPU
//! time of the worker thread, which needs no other test in the process).

mod common;

use std::time::Duration;

use common::{eth_frame, swapped, Daemon, T};
use vhostd_api::WorkerMode;
use vhostd_testkit::{FakeGuest, GuestOptions, VIRTIO_RING_F_EVENT_IDX};

/// utime + stime (clock ticks) of this process's thread named `name`.
fn thread_ticks(name: &str) -> u64 {
    for e in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap();
            let after = &stat[stat.rfind(')').unwrap() + 2..];
            let f: Vec<&str> = after.split_whitespace().collect();
            return f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        }
    }
    panic!("no thread {name}");
}

fn guest(d: &Daemon) -> FakeGuest {
    // flags-based suppression, so used.flags shows whether kicks are wanted
    let opts = GuestOptions {
        features: GuestOptions::default().features & !VIRTIO_RING_F_EVENT_IDX,
        ..Default::default()
    };
    d.guest(opts).0
}

fn roundtrip(g: &mut FakeGuest, seed: u32) {
    let f = eth_frame(100, seed);
    g.send(0, &f);
    assert_eq!(g.recv_n(0, 1, T), vec![swapped(&f)]);
}

#[test]
fn test_worker_modes_kicks_and_idle_cpu() {
    let d = Daemon::loopback(1);
    let mut g = guest(&d);

    // adaptive (default): traffic flows; once idle, kicks are re-armed and
    // the worker sleeps
    assert_eq!(d.port.mode(), WorkerMode::Adaptive);
    roundtrip(&mut g, 1);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        g.tx[0].split().used_flags(),
        0,
        "adaptive re-arms kicks when idle"
    );
    let t0 = thread_ticks("vhostd-t-q0");
    std::thread::sleep(Duration::from_secs(1));
    let idle = thread_ticks("vhostd-t-q0") - t0;
    assert!(idle <= 2, "idle adaptive worker used {idle} ticks in 1 s");

    // poll: kicks stay off, the worker spins
    d.port.set_mode(WorkerMode::Poll);
    roundtrip(&mut g, 2);
    assert!(
        FakeGuest::wait_for(T, || g.tx[0].split().used_flags() == 1),
        "poll mode turns kicks off"
    );
    let t0 = thread_ticks("vhostd-t-q0");
    let (e0, b0) = (d.stats(1).empty_polls, d.stats(1).bursts);
    std::thread::sleep(Duration::from_millis(500));
    let busy = thread_ticks("vhostd-t-q0") - t0;
    assert!(
        busy >= 10,
        "a polling worker burns CPU ({busy} ticks in 0.5 s)"
    );
    // ... and every one of those passes found TX empty
    let (e1, b1) = (d.stats(1).empty_polls, d.stats(1).bursts);
    assert_eq!(b1, b0, "no TX burst while the guest sends nothing");
    assert!(
        e1 - e0 >= 1000,
        "{} empty polls in 0.5 s of polling",
        e1 - e0
    );
    // a frame sent without any kick still gets through
    let f = eth_frame(80, 3);
    assert!(g.tx[0]
        .send_tx(&[vec![0u8; 12], f.clone()].concat())
        .is_some());
    assert_eq!(g.recv_n(0, 1, T), vec![swapped(&f)]);

    // event: kicks back on, no CPU when idle
    d.port.set_mode(WorkerMode::Event);
    roundtrip(&mut g, 4);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(g.tx[0].split().used_flags(), 0);
    let t0 = thread_ticks("vhostd-t-q0");
    let e0 = d.stats(1).empty_polls;
    std::thread::sleep(Duration::from_millis(500));
    assert!(thread_ticks("vhostd-t-q0") - t0 <= 1);
    // asleep: no passes, so (almost) no empty ones
    let e = d.stats(1).empty_polls - e0;
    assert!(e <= 5, "{e} empty polls in 0.5 s of sleeping");
}
