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
    assert!(FakeGuest::wait_for(T, || g.rx[0].used_idx() as u32 > seed));
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
