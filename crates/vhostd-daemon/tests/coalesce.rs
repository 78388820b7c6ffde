#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
//! Host-side interrupt coalescing and priority, end to end in-process.

mod common;

use std::time::Duration;

use common::{eth_frame, swapped, Daemon, T};
use vhostd_api::{CoalescePolicy, Command, Priority, Request};
use vhostd_testkit::{FakeGuest, GuestOptions, VIRTIO_RING_F_EVENT_IDX};

/// A guest that wants a call for every completion (no EVENT_IDX, flags 0).
fn eager(d: &Daemon) -> FakeGuest {
    let opts = GuestOptions {
        features: GuestOptions::default().features & !VIRTIO_RING_F_EVENT_IDX,
        ..Default::default()
    };
    d.guest(opts).0
}

fn control(d: &Daemon, cmd: Command) {
    let line = serde_json::to_string(&Request { v: 1, cmd }).unwrap();
    let r = vhostd_daemon::control::handle(std::slice::from_ref(&d.port), &line);
    assert!(r.ok, "{:?}", r.error);
}

/// Sends one frame and waits until the guest has it back.
fn one(g: &mut FakeGuest, seed: u32) {
    let f = eth_frame(100, seed);
    g.send(0, &f);
    assert!(FakeGuest::wait_for(T, || g.rx[0].split().used_idx() as u32 > seed));
}

#[test]
fn test_coalesce_off_one_call_per_completion() {
    let d = Daemon::loopback(1);
    let mut g = eager(&d);
    g.take_calls(0);
    for i in 0..8 {
        one(&mut g, i);
    }
    assert!(FakeGuest::wait_for(T, || d.stats(0).calls == 8));
    assert_eq!(d.stats(0).calls_coalesced, 0);
}

#[test]
fn test_coalesce_fixed_holds_calls_until_frame_bound() {
    let d = Daemon::loopback(1);
    let mut g = eager(&d);
    control(
        &d,
        Command::Coalesce {
            port: "t".into(),
            queue: Some(0),
            policy: CoalescePolicy::Fixed {
                usecs: 1_000_000,
                frames: 8,
            },
        },
    );
    g.take_calls(0);
    for i in 0..7 {
        one(&mut g, i);
    }
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        g.take_calls(0),
        0,
        "held: 7 completions < 8 and 1 s not over"
    );
    one(&mut g, 7);
    assert!(
        FakeGuest::wait_for(T, || g.take_calls(0) > 0),
        "8th completion fires the call"
    );
    let s = d.stats(0);
    assert_eq!(s.calls, 1);
    assert_eq!(s.calls_coalesced, 7);
    assert_eq!(s.packets, 8);
}

#[test]
fn test_coalesce_timer_sends_held_call() {
    let d = Daemon::loopback(1);
    let mut g = eager(&d);
    control(
        &d,
        Command::Coalesce {
            port: "t".into(),
            queue: None,
            policy: CoalescePolicy::Fixed {
                usecs: 3000,
                frames: 1000,
            },
        },
    );
    g.take_calls(0);
    one(&mut g, 0);
    // the frame is there, the call comes when the 3 ms timer fires
    assert!(
        FakeGuest::wait_for(T, || d.stats(0).calls == 1),
        "timer must send the held call"
    );
    assert!(g.take_calls(0) > 0);
}

#[test]
fn test_priority_high_queue_never_coalesced() {
    let d = Daemon::loopback(1);
    let mut g = eager(&d);
    control(
        &d,
        Command::Coalesce {
            port: "t".into(),
            queue: None,
            policy: CoalescePolicy::Fixed {
                usecs: 1_000_000,
                frames: 64,
            },
        },
    );
    control(
        &d,
        Command::SetPriority {
            port: "t".into(),
            queue: Some(0),
            priority: Priority::High,
        },
    );
    for i in 0..4 {
        one(&mut g, i);
        assert!(
            FakeGuest::wait_for(T, || d.stats(0).calls == u64::from(i) + 1),
            "call {i} immediate"
        );
    }
    assert_eq!(d.port.report().queues[0].settings.priority, Priority::High);
}

/// Nice value of this process's thread called `comm` (None: no such thread).
fn thread_nice(comm: &str) -> Option<i32> {
    std::fs::read_dir("/proc/self/task").ok()?.find_map(|e| {
        let dir = e.ok()?.path();
        let c = std::fs::read_to_string(dir.join("comm")).ok()?;
        if c.trim() != comm {
            return None;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        // fields after "(comm)": state is field 3, nice field 19
        let rest = &stat[stat.rfind(')')? + 1..];
        rest.split_whitespace().nth(16)?.parse().ok()
    })
}

#[test]
fn test_priority_sets_the_worker_thread_nice_low_only_when_all_its_queues_are_low() {
    let d = Daemon::named("prio", 1, false);
    let (mut g, _h) = d.guest(GuestOptions::default());
    // a worker applies settings when it next wakes: traffic after each
    let mut seed = 0;
    let mut set = |q: u32, priority: Priority| {
        control(
            &d,
            Command::SetPriority {
                port: "prio".into(),
                queue: Some(q),
                priority,
            },
        );
        one(&mut g, seed);
        seed += 1;
    };
    let nice = || thread_nice("vhostd-prio-q0");
    assert_eq!(nice(), Some(0), "worker starts at nice 0");
    set(0, Priority::Low);
    // one queue low, the other normal: the worker still serves a normal one
    assert_eq!(nice(), Some(0), "rx low, tx normal");
    set(1, Priority::Low);
    assert!(
        FakeGuest::wait_for(T, || nice() == Some(19)),
        "both low: {:?}",
        nice()
    );
    // raising it again needs CAP_SYS_NICE (tests run as root)
    if rustix::process::geteuid().is_root() {
        set(1, Priority::High);
        assert!(
            FakeGuest::wait_for(T, || nice() == Some(-10)),
            "high wins: {:?}",
            nice()
        );
        set(1, Priority::Normal);
        assert!(
            FakeGuest::wait_for(T, || nice() == Some(0)),
            "normal: {:?}",
            nice()
        );
    }
    assert_eq!(d.port.report().queues[0].settings.priority, Priority::Low);
}

#[test]
fn test_coalesce_adaptive_stays_immediate_for_request_response() {
    let d = Daemon::loopback(1);
    let mut g = eager(&d);
    control(
        &d,
        Command::Coalesce {
            port: "t".into(),
            queue: None,
            policy: CoalescePolicy::Adaptive,
        },
    );
    for i in 0..20 {
        let f = eth_frame(64, i);
        g.send(0, &f);
        // ping-pong: the reply's call must come without waiting for a timer
        assert_eq!(g.recv_n(0, 1, T), vec![swapped(&f)]);
    }
    assert_eq!(d.stats(0).calls_coalesced, 0);
}

#[test]
fn test_coalesce_bad_bounds_refused_and_unknown_queue_refused() {
    let d = Daemon::loopback(1);
    let line = r#"{"v":1,"cmd":"coalesce","port":"t","policy":{"mode":"fixed","usecs":5000000,"frames":1}}"#;
    assert!(!vhostd_daemon::control::handle(std::slice::from_ref(&d.port), line).ok);
    let line = r#"{"v":1,"cmd":"coalesce","port":"t","queue":9,"policy":{"mode":"off"}}"#;
    assert!(!vhostd_daemon::control::handle(std::slice::from_ref(&d.port), line).ok);
    let line = r#"{"v":1,"cmd":"set_priority","port":"nope","priority":"high"}"#;
    assert!(!vhostd_daemon::control::handle(std::slice::from_ref(&d.port), line).ok);
}

fn ctrl_guest(d: &Daemon) -> FakeGuest {
    d.guest(GuestOptions {
        ctrl_vq: true,
        ..Default::default()
    })
    .0
}

const NOTF_COAL: u8 = 6;

#[test]
fn test_ctrl_vq_features_offered_only_with_flag() {
    let plain = Daemon::loopback(1);
    let g = plain
        .guest(GuestOptions {
            features: u64::MAX,
            ..Default::default()
        })
        .0;
    assert_eq!(g.features & ((1 << 17) | (1 << 52) | (1 << 53)), 0);
    let d = Daemon::with_ctrl(1, true);
    let g = d
        .guest(GuestOptions {
            features: !(1 << 63),
            ctrl_vq: true,
            ..Default::default()
        })
        .0;
    assert_eq!(
        g.features & ((1 << 17) | (1 << 52) | (1 << 53)),
        (1 << 17) | (1 << 52) | (1 << 53)
    );
}

#[test]
fn test_ctrl_vq_notf_coal_rx_set_applies_to_rx_queues() {
    let d = Daemon::with_ctrl(2, true);
    let mut g = d
        .guest(GuestOptions {
            ctrl_vq: true,
            queue_pairs: 2,
            ..Default::default()
        })
        .0;
    let mut data = Vec::new();
    data.extend_from_slice(&32u32.to_le_bytes()); // max_packets
    data.extend_from_slice(&50u32.to_le_bytes()); // max_usecs
    let (ack, _) = g.ctrl_cmd(NOTF_COAL, 1, &data, 0); // RX_SET
    assert_eq!(ack, 0);
    let q = d.port.report().queues;
    assert_eq!(
        q[0].settings.coalesce,
        CoalescePolicy::Fixed {
            usecs: 50,
            frames: 32
        }
    );
    assert_eq!(
        q[2].settings.coalesce,
        CoalescePolicy::Fixed {
            usecs: 50,
            frames: 32
        }
    );
    assert_eq!(q[1].settings.coalesce, CoalescePolicy::Off, "TX untouched");
    assert_eq!(q[4].name, "ctrl");
}

#[test]
fn test_ctrl_vq_notf_coal_vq_set_get_roundtrip_and_bounds() {
    let d = Daemon::with_ctrl(1, true);
    let mut g = ctrl_guest(&d);
    let mut data = Vec::new();
    data.extend_from_slice(&1u16.to_le_bytes()); // vq 1 (tx0)
    data.extend_from_slice(&0u16.to_le_bytes());
    data.extend_from_slice(&16u32.to_le_bytes());
    data.extend_from_slice(&100u32.to_le_bytes());
    assert_eq!(g.ctrl_cmd(NOTF_COAL, 2, &data, 0).0, 0); // VQ_SET
    let (ack, reply) = g.ctrl_cmd(NOTF_COAL, 3, &[1, 0, 0, 0], 8); // VQ_GET
    assert_eq!(ack, 0);
    assert_eq!(reply, [16u32.to_le_bytes(), 100u32.to_le_bytes()].concat());
    // the control queue itself and past the end are refused
    assert_eq!(g.ctrl_cmd(NOTF_COAL, 3, &[2, 0, 0, 0], 8).0, 1);
    assert_eq!(
        g.ctrl_cmd(NOTF_COAL, 2, &[9, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0], 0)
            .0,
        1
    );
    // short data, unknown class
    assert_eq!(g.ctrl_cmd(NOTF_COAL, 0, &[1, 2], 0).0, 1);
    assert_eq!(g.ctrl_cmd(77, 0, &[], 0).0, 1);
    // MQ pairs: 1 ok, 2 refused on a 1-pair port
    assert_eq!(g.ctrl_cmd(4, 0, &1u16.to_le_bytes(), 0).0, 0);
    assert_eq!(g.ctrl_cmd(4, 0, &2u16.to_le_bytes(), 0).0, 1);
    // the coalescing the guest asked for is in force: traffic still flows
    let f = eth_frame(100, 1);
    g.send(0, &f);
    assert_eq!(g.recv_n(0, 1, T), vec![swapped(&f)]);
}

#[test]
fn test_ctrl_vq_bad_chain_completed_empty() {
    let d = Daemon::with_ctrl(1, true);
    let mut g = ctrl_guest(&d);
    let drv = g.ctrl.as_mut().unwrap();
    // a request with no writable ack byte
    let head = drv.send_tx(&[NOTF_COAL, 0]).unwrap();
    g.kicks[2].write(1).unwrap();
    let drv = g.ctrl.as_mut().unwrap();
    assert!(FakeGuest::wait_for(T, || drv.used_idx() == 1));
    assert_eq!(drv.used(), vec![(head, 0)]);
    assert!(FakeGuest::wait_for(T, || d.stats(2).bad_chains == 1));
}
