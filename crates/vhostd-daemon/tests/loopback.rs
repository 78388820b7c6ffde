#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
//! The whole daemon in-process: fake guest <-> vhost-user <-> loopback.

mod common;

use std::time::Duration;

use common::{eth_frame, swapped, Daemon, T};
use vhost::VhostBackend;
use vhostd_testkit::{
    FakeGuest, GuestOptions, VIRTIO_F_IN_ORDER, VIRTIO_F_RING_PACKED, VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_RING_F_EVENT_IDX,
};

#[test]
fn test_loopback_frames_return_in_order_with_counters() {
    let d = Daemon::loopback(1);
    let (mut g, _h) = d.guest(GuestOptions::default());
    let frames: Vec<Vec<u8>> = (0..50).map(|i| eth_frame(60 + i * 29, i as u32)).collect();
    for f in &frames {
        assert!(g.send(0, f));
    }
    let got = g.recv_n(0, frames.len(), T);
    assert_eq!(got.len(), frames.len());
    for (f, r) in frames.iter().zip(&got) {
        assert_eq!(r, &swapped(f));
    }
    assert!(FakeGuest::wait_for(T, || g.reap_tx(0) > 0 || d.stats(1).packets == 50));
    let (rx, tx) = (d.stats(0), d.stats(1));
    assert_eq!(tx.packets, 50);
    assert_eq!(rx.packets, 50);
    let bytes: u64 = frames.iter().map(|f| f.len() as u64).sum();
    assert_eq!((rx.bytes, tx.bytes), (bytes, bytes));
    assert!(tx.kicks >= 1);
    assert!(rx.calls >= 1);
}

#[test]
fn test_loopback_large_frames_mergeable() {
    let d = Daemon::loopback(1);
    let (mut g, _h) = d.guest(GuestOptions {
        buf_size: 1024,
        ..Default::default()
    });
    let f = eth_frame(9000, 7);
    assert!(g.send(0, &f));
    let got = g.recv_n(0, 1, T);
    assert_eq!(got, vec![swapped(&f)]);
}

#[test]
fn test_loopback_without_mergeable_or_event_idx() {
    let d = Daemon::loopback(1);
    let opts = GuestOptions {
        features: GuestOptions::default().features
            & !(VIRTIO_NET_F_MRG_RXBUF | VIRTIO_RING_F_EVENT_IDX),
        ..Default::default()
    };
    let (mut g, _h) = d.guest(opts);
    for i in 0..10 {
        let f = eth_frame(1514, i);
        assert!(g.send(0, &f));
        assert_eq!(g.recv_n(0, 1, T), vec![swapped(&f)]);
    }
}

#[test]
fn test_loopback_two_queue_pairs_independent() {
    let d = Daemon::loopback(2);
    let (mut g, _h) = d.guest(GuestOptions {
        queue_pairs: 2,
        ..Default::default()
    });
    let a = eth_frame(100, 1);
    let b = eth_frame(200, 2);
    g.send(0, &a);
    g.send(1, &b);
    assert_eq!(g.recv_n(1, 1, T), vec![swapped(&b)]);
    assert_eq!(g.recv_n(0, 1, T), vec![swapped(&a)]);
    assert_eq!(d.stats(2).packets, 1);
    assert_eq!(d.stats(3).packets, 1);
}

#[test]
fn test_disconnect_resets_and_next_connection_works() {
    let d = Daemon::loopback(1);
    for round in 0..3 {
        let (mut g, h) = d.guest(GuestOptions::default());
        let f = eth_frame(300, round);
        g.send(0, &f);
        assert_eq!(g.recv_n(0, 1, T), vec![swapped(&f)]);
        drop(g);
        h.join().unwrap();
        assert!(!d.port.running[0].load(std::sync::atomic::Ordering::Relaxed));
    }
    assert_eq!(
        d.port
            .connections
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
}

#[test]
fn test_rx_without_buffers_waits_then_delivers() {
    let d = Daemon::loopback(1);
    let (mut g, _h) = d.guest(GuestOptions {
        rx_buffers: 0,
        ..Default::default()
    });
    let f = eth_frame(500, 3);
    g.send(0, &f);
    std::thread::sleep(Duration::from_millis(50));
    assert!(g.recv(0).is_empty());
    g.refill_rx(0, 4);
    assert_eq!(g.recv_n(0, 1, T), vec![swapped(&f)]);
}

// ---- packed virtqueues through the whole daemon ----

fn packed_opts(extra: u64) -> GuestOptions {
    GuestOptions {
        packed: true,
        features: GuestOptions::default().features | extra,
        ..Default::default()
    }
}

#[test]
fn test_loopback_frames_over_ring_wraps_both_layouts_in_order_or_not() {
    // with IN_ORDER the TX completions of a run are one used element
    // (split) or descriptor (packed); the driver must still get every
    // chain back
    for (packed, extra) in [
        (true, 0),
        (true, VIRTIO_F_IN_ORDER),
        (false, VIRTIO_F_IN_ORDER),
    ] {
        let d = Daemon::loopback(1);
        let (mut g, _h) = d.guest(GuestOptions {
            packed,
            ..packed_opts(extra)
        });
        assert_eq!(g.features & VIRTIO_F_RING_PACKED != 0, packed);
        assert_eq!(g.features & VIRTIO_F_IN_ORDER, extra);
        // more frames than the ring holds: the rings wrap several times
        let frames: Vec<Vec<u8>> = (0..600)
            .map(|i| eth_frame(60 + (i % 40) * 37, i as u32))
            .collect();
        let mut got = Vec::new();
        for chunk in frames.chunks(50) {
            for f in chunk {
                assert!(g.send(0, f));
            }
            got.extend(g.recv_n(0, chunk.len(), T));
            assert!(FakeGuest::wait_for(T, || {
                g.reap_tx(0);
                g.tx[0].free_descs() == 256
            }));
        }
        assert_eq!(
            got.len(),
            frames.len(),
            "packed {packed} in_order {extra:#x}"
        );
        for (f, r) in frames.iter().zip(&got) {
            assert_eq!(r, &swapped(f));
        }
        let (rx, tx) = (d.stats(0), d.stats(1));
        assert_eq!((rx.packets, tx.packets), (600, 600));
        assert_eq!(
            (rx.bad_chains, tx.bad_chains, rx.ring_errors, tx.ring_errors),
            (0, 0, 0, 0)
        );
    }
}

#[test]
fn test_loopback_packed_large_frames_mergeable_and_two_pairs() {
    let d = Daemon::loopback(2);
    let (mut g, _h) = d.guest(GuestOptions {
        queue_pairs: 2,
        buf_size: 1024,
        ..packed_opts(0)
    });
    let a = eth_frame(9000, 1);
    let b = eth_frame(3000, 2);
    assert!(g.send(0, &a));
    assert!(g.send(1, &b));
    assert_eq!(g.recv_n(1, 1, T), vec![swapped(&b)]);
    assert_eq!(g.recv_n(0, 1, T), vec![swapped(&a)]);
}

#[test]
fn test_loopback_packed_get_vring_base_reports_wrap_counters() {
    let d = Daemon::loopback(1);
    let (mut g, _h) = d.guest(packed_opts(0));
    // 300 one-descriptor TX chains on a 256-slot ring: one lap and 44 more
    for i in 0..300u32 {
        assert!(g.send(0, &eth_frame(60, i)));
        assert!(FakeGuest::wait_for(T, || d.stats(1).packets == u64::from(i) + 1));
        g.reap_tx(0);
        g.recv(0);
    }
    let base = g.frontend.fe.get_vring_base(1).unwrap();
    // avail 44, wrap counter flipped to 0; used the same
    assert_eq!(base, 44 | (44 << 16));
}
