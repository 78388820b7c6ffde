#![allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
use std::collections::VecDeque;
use std::os::unix::io::RawFd;

use vhostd_api::QueueStats;
use vhostd_backend::{Backend, BackendError, Loopback, Offloads, Sink, Source};
use vhostd_testkit::{
    Driver, DriverLayout, FakeDriver, PackedDesc, PackedDriver, RawDesc, TestMemory,
};
use vhostd_virtq::{Queue, QueueConfig};

use crate::features::{offered, BASE_FEATURES};
use crate::hdr::{validate_tx, HdrError};
use crate::tune::HeaderWrite;
use crate::{NetConfig, QueuePair, Status, BURST};

const BASE: u64 = 0x10_0000;
const MRG: u64 = 1 << 15;
const V1: u64 = 1 << 32;
const EVENT_IDX: u64 = 1 << 29;
const PACKED: u64 = 1 << 34;
const IN_ORDER: u64 = 1 << 35;

/// A back-end that records what it is sent and replays queued packets.
#[derive(Debug, Default)]
struct FakeBackend {
    sent: Vec<Vec<u8>>,
    inbound: VecDeque<Vec<u8>>,
}

impl Backend for FakeBackend {
    fn configure(&mut self, _: usize, _: Offloads) -> Result<(), BackendError> {
        Ok(())
    }
    fn send(&mut self, pkt: &[u8]) -> Result<(), BackendError> {
        self.sent.push(pkt.to_vec());
        Ok(())
    }
    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, BackendError> {
        Ok(self.inbound.pop_front().map(|p| {
            buf[..p.len()].copy_from_slice(&p);
            p.len()
        }))
    }
    fn rx_fd(&self) -> Option<RawFd> {
        None
    }
    fn rx_pending(&self) -> bool {
        !self.inbound.is_empty()
    }
    fn supports_offloads(&self) -> bool {
        true
    }
}

/// A queue pair over the test kit's drivers (split or packed rings).
struct Rig {
    m: TestMemory,
    rx: Driver,
    tx: Driver,
    qp: QueuePair,
    cfg: NetConfig,
}

fn rig(features: u64, backend: Box<dyn Backend>, size: u16, buf: u32) -> Rig {
    rig_layout(features, backend, size, buf, false)
}

fn prig(features: u64, backend: Box<dyn Backend>, size: u16, buf: u32) -> Rig {
    rig_layout(features, backend, size, buf, true)
}

fn rig_layout(features: u64, backend: Box<dyn Backend>, size: u16, buf: u32, packed: bool) -> Rig {
    let m = TestMemory::new(8 << 20);
    let (lrx, end) = DriverLayout::at(BASE, size, buf);
    let (ltx, _) = DriverLayout::at(end, size, buf);
    let driver = |l: DriverLayout| {
        if packed {
            Driver::Packed(PackedDriver::new(m.mem.clone(), l))
        } else {
            let mut d = FakeDriver::new(m.mem.clone(), l);
            d.set_in_order(features & IN_ORDER != 0);
            Driver::Split(d)
        }
    };
    let (rx, tx) = (driver(lrx), driver(ltx));
    let cfg = NetConfig::from_features(features | if packed { PACKED } else { 0 });
    assert_eq!(cfg.packed, packed);
    let mut qp = QueuePair::new(backend);
    qp.configure(cfg).unwrap();
    let qc = |l: DriverLayout| QueueConfig {
        size,
        desc: l.desc,
        avail: l.avail,
        used: l.used,
        // packed: avail 0 with wrap counter 1
        base: if packed { 0x8000 } else { 0 },
        event_idx: cfg.event_idx,
        indirect: cfg.indirect,
        packed,
        in_order: cfg.in_order,
    };
    qp.set_rx(Some(Queue::new(qc(lrx), &m.mem).unwrap()));
    qp.set_tx(Some(Queue::new(qc(ltx), &m.mem).unwrap()));
    Rig { m, rx, tx, qp, cfg }
}

fn frame(len: usize, seed: u8) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend((0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
    f
}

/// Frames the driver received: `used` entries joined by num_buffers.
fn frames(
    used: Vec<(u16, u32)>,
    mrg: bool,
    mut take: impl FnMut(u16, u32) -> Vec<u8>,
) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut it = used.into_iter();
    while let Some((id, len)) = it.next() {
        let mut d = take(id, len);
        let n = if mrg {
            u16::from_le_bytes([d[10], d[11]])
        } else {
            1
        };
        for _ in 1..n {
            let (id2, len2) = it.next().expect("num_buffers promised more");
            d.extend(take(id2, len2));
        }
        out.push(d);
    }
    out
}

fn rx_frames(r: &mut Rig) -> Vec<Vec<u8>> {
    let used = r.rx.used();
    frames(used, r.cfg.mrg_rxbuf, |id, len| r.rx.take_rx(id, len))
}

#[test]
fn test_qp_loopback_mergeable_roundtrip_large_frame() {
    let mut r = rig(V1 | MRG, Box::new(Loopback::new()), 64, 2048);
    r.rx.post_rx(16, 2048);
    let f = frame(5000, 1);
    r.tx.send_tx(&f).unwrap();
    let mut st = QueueStats::default();
    let o = r.qp.process_tx(&r.m.mem, &mut st).unwrap();
    assert_eq!(o.status, Status::Idle);
    assert!(o.call);
    assert_eq!((st.packets, st.bytes), (1, 5000));
    assert_eq!(r.tx.used().len(), 1);
    let mut srx = QueueStats::default();
    let o = r.qp.process_rx(&r.m.mem, &mut srx).unwrap();
    assert_eq!(o.status, Status::Idle);
    assert_eq!(srx.packets, 1);
    let got = rx_frames(&mut r);
    assert_eq!(got.len(), 1);
    let g = &got[0];
    assert_eq!(g.len(), f.len());
    assert_eq!(
        u16::from_le_bytes([g[10], g[11]]),
        3,
        "5012 bytes need 3 buffers of 2048"
    );
    // MACs swapped by loopback, payload intact
    assert_eq!(&g[12..18], &f[18..24]);
    assert_eq!(&g[24..], &f[24..]);
}

#[test]
fn test_qp_non_mergeable_too_small_buffer_drops_and_keeps_buffer() {
    for packed in [false, true] {
        non_mergeable_too_small(packed);
    }
}

fn non_mergeable_too_small(packed: bool) {
    let mut r = rig_layout(V1, Box::new(Loopback::new()), 64, 2048, packed);
    r.rx.post_rx(1, 1000);
    r.tx.send_tx(&frame(1500, 2)).unwrap();
    let mut st = QueueStats::default();
    r.qp.process_tx(&r.m.mem, &mut st).unwrap();
    let mut srx = QueueStats::default();
    r.qp.process_rx(&r.m.mem, &mut srx).unwrap();
    assert_eq!((srx.dropped_too_big, srx.drops, srx.packets), (1, 1, 0));
    assert!(r.rx.used().is_empty(), "buffer not consumed");
    // the buffer still serves a frame that fits
    r.tx.send_tx(&frame(500, 3)).unwrap();
    r.qp.process_tx(&r.m.mem, &mut st).unwrap();
    r.qp.process_rx(&r.m.mem, &mut srx).unwrap();
    assert_eq!(srx.packets, 1);
    let got = rx_frames(&mut r);
    assert_eq!(got[0].len(), 512);
    assert_eq!(u16::from_le_bytes([got[0][10], got[0][11]]), 1);
}

#[test]
fn test_qp_rx_blocks_without_buffers_then_resumes() {
    let mut r = rig(V1 | MRG | EVENT_IDX, Box::new(Loopback::new()), 64, 2048);
    r.tx.send_tx(&frame(100, 4)).unwrap();
    let mut st = QueueStats::default();
    r.qp.process_tx(&r.m.mem, &mut st).unwrap();
    let o = r.qp.process_rx(&r.m.mem, &mut st).unwrap();
    assert_eq!(o.status, Status::Blocked);
    assert!(r.qp.rx_blocked());
    r.rx.post_rx(1, 2048);
    // avail_event asks for a kick on the next buffer
    assert_eq!(r.rx.split().avail_event(), 0);
    let o = r.qp.process_rx(&r.m.mem, &mut st).unwrap();
    assert_eq!(o.status, Status::Idle);
    assert_eq!(rx_frames(&mut r).len(), 1);
}

#[test]
fn test_qp_rx_partial_buffers_given_back_and_kick_requested_after_them() {
    // 5000-byte frame, only 2 x 2048 posted: nothing consumed, the kick is
    // asked for past the insufficient buffers (no spin, THREATS C3)
    for packed in [false, true] {
        let mut r = rig_layout(
            V1 | MRG | EVENT_IDX,
            Box::new(Loopback::new()),
            64,
            2048,
            packed,
        );
        r.rx.post_rx(2, 2048);
        r.tx.send_tx(&frame(5000, 5)).unwrap();
        let mut st = QueueStats::default();
        r.qp.process_tx(&r.m.mem, &mut st).unwrap();
        let o = r.qp.process_rx(&r.m.mem, &mut st).unwrap();
        assert_eq!(o.status, Status::Blocked);
        assert!(r.rx.used().is_empty());
        match &mut r.rx {
            // avail_event = 2: the next index the driver publishes
            Driver::Split(d) => assert_eq!(d.avail_event(), 2),
            // DESC event at slot 2, wrap 1: the first descriptor not posted
            Driver::Packed(d) => assert_eq!(d.device_event(), (2, 2 | 0x8000)),
        }
        r.rx.post_rx(1, 2048);
        let o = r.qp.process_rx(&r.m.mem, &mut st).unwrap();
        assert_eq!(o.status, Status::Idle);
        let got = rx_frames(&mut r);
        assert_eq!(got.len(), 1, "packed {packed}");
        assert_eq!(got[0].len(), 5012);
        assert_eq!(u16::from_le_bytes([got[0][10], got[0][11]]), 3);
    }
}

#[test]
fn test_qp_tx_short_chain_dropped_malformed_and_completed() {
    let mut r = rig(V1, Box::new(FakeBackend::default()), 16, 2048);
    r.tx.send_tx(&[0u8; 6]).unwrap();
    let mut st = QueueStats::default();
    r.qp.process_tx(&r.m.mem, &mut st).unwrap();
    assert_eq!((st.dropped_malformed, st.drops), (1, 1));
    assert_eq!(r.tx.used().len(), 1, "dropped chain still completed");
}

#[test]
fn test_qp_tx_writable_descriptor_dropped_malformed() {
    let mut r = rig(V1, Box::new(FakeBackend::default()), 16, 2048);
    let a = r.tx.split().buf_addr(0);
    r.tx.split().push_raw(
        &[(
            0,
            RawDesc {
                addr: a,
                len: 100,
                flags: 2,
                next: 0,
            },
        )],
        0,
    );
    let mut st = QueueStats::default();
    r.qp.process_tx(&r.m.mem, &mut st).unwrap();
    assert_eq!(st.dropped_malformed, 1);
    assert_eq!(r.tx.used(), vec![(0, 0)]);
}

#[test]
fn test_qp_tx_bad_chain_completed_with_len0_and_counted() {
    let mut r = rig(V1, Box::new(FakeBackend::default()), 16, 2048);
    r.tx.split().push_raw(
        &[(
            5,
            RawDesc {
                addr: 0xdead_0000_0000,
                len: 100,
                flags: 0,
                next: 0,
            },
        )],
        5,
    );
    let mut st = QueueStats::default();
    r.qp.process_tx(&r.m.mem, &mut st).unwrap();
    assert_eq!((st.bad_chains, st.drops), (1, 1));
    assert_eq!(r.tx.used(), vec![(5, 0)]);
}

#[test]
fn test_qp_tx_csum_without_feature_dropped_bad_header() {
    let mut r = rig(V1, Box::new(FakeBackend::default()), 16, 2048);
    let mut f = frame(100, 6);
    f[0] = 1; // NEEDS_CSUM
    r.tx.send_tx(&f).unwrap();
    let mut st = QueueStats::default();
    r.qp.process_tx(&r.m.mem, &mut st).unwrap();
    assert_eq!((st.dropped_bad_header, st.packets), (1, 0));
}

#[test]
fn test_qp_rx_mergeable_num_buffers_set_whatever_the_backend_sent() {
    // num_buffers is the device's to fill: 1 when the frame fits the first
    // buffer (set in the host copy before the single guest write), the
    // count otherwise (written into the guest afterwards)
    let mut be = FakeBackend::default();
    for len in [60usize, 3000] {
        let mut f = frame(len, 9);
        f[10] = 0xff;
        f[11] = 0xff;
        be.inbound.push_back(f);
    }
    let mut r = rig(V1 | MRG, Box::new(be), 16, 2048);
    r.rx.post_rx(8, 2048);
    let mut st = QueueStats::default();
    r.qp.process_rx(&r.m.mem, &mut st).unwrap();
    assert_eq!(st.packets, 2);
    let got = rx_frames(&mut r);
    let nbufs: Vec<u16> = got
        .iter()
        .map(|g| u16::from_le_bytes([g[10], g[11]]))
        .collect();
    assert_eq!(nbufs, [1, 2]);
    assert_eq!((got[0].len(), got[1].len()), (72, 3012));
}

#[test]
fn test_qp_rx_readable_chain_is_bad_and_completed_empty() {
    let mut be = FakeBackend::default();
    be.inbound.push_back(frame(60, 7));
    let mut r = rig(V1 | MRG, Box::new(be), 16, 2048);
    let a = r.rx.split().buf_addr(15);
    r.rx.split().push_raw(
        &[(
            15,
            RawDesc {
                addr: a,
                len: 2048,
                flags: 0,
                next: 0,
            },
        )],
        15,
    );
    r.rx.post_rx(1, 2048);
    let mut st = QueueStats::default();
    r.qp.process_rx(&r.m.mem, &mut st).unwrap();
    assert_eq!((st.bad_chains, st.packets), (1, 1));
    let used = r.rx.used();
    assert_eq!(used[0], (15, 0));
    assert_eq!(used[1].1, 72);
}

#[test]
fn test_qp_rx_runt_from_backend_dropped() {
    let mut be = FakeBackend::default();
    be.inbound.push_back(vec![0u8; 5]);
    let mut r = rig(V1 | MRG, Box::new(be), 16, 2048);
    r.rx.post_rx(2, 2048);
    let mut st = QueueStats::default();
    r.qp.process_rx(&r.m.mem, &mut st).unwrap();
    assert_eq!((st.dropped_runt, st.packets), (1, 0));
}

#[test]
fn test_qp_tx_burst_budget_returns_more() {
    let mut r = rig(V1, Box::new(FakeBackend::default()), 512, 256);
    for i in 0..300 {
        r.tx.send_tx(&frame(60, i as u8)).unwrap();
    }
    let mut st = QueueStats::default();
    let o = r.qp.process_tx(&r.m.mem, &mut st).unwrap();
    assert_eq!(o.status, Status::More);
    assert_eq!(st.packets, BURST as u64);
    let o = r.qp.process_tx(&r.m.mem, &mut st).unwrap();
    assert_eq!(o.status, Status::Idle);
    assert_eq!(st.packets, 300);
    assert_eq!(st.bursts, 2);
}

#[test]
fn test_qp_tx_event_idx_suppresses_calls() {
    let mut r = rig(V1 | EVENT_IDX, Box::new(FakeBackend::default()), 16, 2048);
    r.tx.split().set_used_event(100);
    let mut st = QueueStats::default();
    r.tx.send_tx(&frame(60, 1)).unwrap();
    assert!(
        r.qp.process_tx(&r.m.mem, &mut st).unwrap().call,
        "first decision notifies"
    );
    for (id, _) in r.tx.used() {
        r.tx.complete_tx(id);
    }
    r.tx.send_tx(&frame(60, 2)).unwrap();
    assert!(!r.qp.process_tx(&r.m.mem, &mut st).unwrap().call);
}

#[test]
fn test_hdr_rules() {
    let all = NetConfig::from_features(offered(true) | V1);
    let none = NetConfig::from_features(BASE_FEATURES);
    let mut p = frame(100, 0);
    assert_eq!(validate_tx(&p, &none), Ok(()));
    p[0] = 1;
    p[6] = 90;
    p[8] = 10;
    assert_eq!(validate_tx(&p, &none), Err(HdrError::CsumNotNegotiated));
    assert_eq!(
        validate_tx(&p, &all),
        Err(HdrError::CsumOutOfFrame(90, 10, 100))
    );
    p[8] = 8;
    assert_eq!(validate_tx(&p, &all), Ok(()));
    p[1] = 1; // TCPv4
    assert_eq!(validate_tx(&p, &all), Err(HdrError::GsoSizeZero));
    p[4] = 0xb4;
    p[5] = 5;
    assert_eq!(validate_tx(&p, &all), Ok(()));
    assert!(crate::hdr::is_gso(&p));
    assert_eq!(
        validate_tx(
            &p,
            &NetConfig {
                host_tso4: false,
                ..all
            }
        ),
        Err(HdrError::GsoNotNegotiated(1))
    );
    p[1] = 2;
    assert_eq!(validate_tx(&p, &all), Err(HdrError::UnknownGso(2)));
    p[1] = 0x81;
    assert_eq!(
        validate_tx(
            &p,
            &NetConfig {
                host_ecn: false,
                ..all
            }
        ),
        Err(HdrError::GsoNotNegotiated(0x81))
    );
    p[1] = 1;
    p[2] = 200;
    assert_eq!(
        validate_tx(&p, &all),
        Err(HdrError::HdrLenOutOfFrame(200, 100))
    );
}

#[test]
fn test_features_hdr_len_follows_acked_set() {
    assert_eq!(NetConfig::from_features(0).hdr_len, 10);
    assert_eq!(NetConfig::from_features(MRG).hdr_len, 12);
    assert_eq!(NetConfig::from_features(V1).hdr_len, 12);
    assert_eq!(
        offered(false) & (1 << 0),
        0,
        "no csum offered without offload back-end"
    );
    assert_ne!(offered(true) & (1 << 0), 0);
}

// ---- packed ring: the same data path over the test kit's packed driver ----

#[test]
fn test_qp_packed_loopback_many_frames_across_wraps() {
    for features in [
        V1 | MRG | EVENT_IDX,
        V1 | MRG | IN_ORDER,
        V1,
        V1 | IN_ORDER | EVENT_IDX,
    ] {
        let mut r = prig(features, Box::new(Loopback::new()), 32, 2048);
        let mut st = QueueStats::default();
        let mut srx = QueueStats::default();
        let mut got = 0usize;
        for round in 0..50usize {
            // unused buffers stay posted; top up to at most the ring
            r.rx.post_rx(8, 2048);
            let mut sent = Vec::new();
            for k in 0..4 {
                // some frames need two buffers with MRG_RXBUF
                let len = if features & MRG != 0 && k == 3 {
                    3000
                } else {
                    60 + round + k
                };
                let f = frame(len, (round * 4 + k) as u8);
                if r.tx.send_tx(&f).is_some() {
                    sent.push(f);
                }
            }
            r.qp.process_tx(&r.m.mem, &mut st).unwrap();
            for (id, _) in r.tx.used() {
                r.tx.complete_tx(id);
            }
            r.qp.process_rx(&r.m.mem, &mut srx).unwrap();
            let frames = rx_frames(&mut r);
            // everything that fit was delivered whole and in order
            for (g, f) in frames.iter().zip(&sent) {
                assert_eq!(g.len(), f.len(), "features {features:#x} round {round}");
                assert_eq!(&g[24..], &f[24..]);
            }
            got += frames.len();
            if r.qp.rx_blocked() {
                r.rx.post_rx(8, 2048);
                r.qp.process_rx(&r.m.mem, &mut srx).unwrap();
                got += rx_frames(&mut r).len();
            }
        }
        assert_eq!(st.packets, srx.packets, "features {features:#x}");
        assert_eq!(got as u64, srx.packets);
        assert_eq!((st.drops, srx.drops, srx.bad_chains), (0, 0, 0));
        assert!(got >= 150, "features {features:#x}: {got}");
    }
}

#[test]
fn test_qp_packed_tx_burst_and_bad_chain() {
    let mut r = prig(V1 | IN_ORDER, Box::new(Sink::default()), 512, 2048);
    for i in 0..300 {
        r.tx.send_tx(&frame(60, i as u8)).unwrap();
    }
    let mut st = QueueStats::default();
    let o = r.qp.process_tx(&r.m.mem, &mut st).unwrap();
    assert_eq!((o.status, o.completed), (Status::More, BURST as u32));
    let o = r.qp.process_tx(&r.m.mem, &mut st).unwrap();
    assert_eq!((o.status, o.completed), (Status::Idle, 300 - BURST as u32));
    assert_eq!(r.tx.used().len(), 300);
    // a chain pointing outside memory is completed, counted, and the ring goes on
    r.tx.packed().push_raw(&[PackedDesc {
        addr: 1 << 40,
        len: 100,
        id: 7,
        flags: 0,
    }]);
    r.tx.send_tx(&frame(60, 1)).unwrap();
    let o = r.qp.process_tx(&r.m.mem, &mut st).unwrap();
    assert_eq!(o.completed, 2);
    assert_eq!((st.bad_chains, st.packets), (1, 301));
}

#[test]
fn test_qp_rx_batches_deliver_every_frame_whole_on_both_layouts() {
    // Both rings take RX buffers four at a time where they can
    // (`pop_batch`) and hand over to the general path for frames larger
    // than a buffer, runts, a dry back-end mid-batch and (packed)
    // misaligned positions. The guest must get every frame that fits,
    // whole, in order, with the right num_buffers, and both layouts the
    // same.
    // 0: a 5-byte runt; 3000 and 2040 (+ 12) need two buffers; the rest fit
    let pattern: [usize; 26] = [
        60, 61, 62, 63, 3000, 64, 65, 66, 67, 0, 68, 69, 70, 1500, 71, 72, 73, 74, 75, 76, 77, 78,
        79, 2040, 2036, 80,
    ];
    let lens: Vec<usize> = (0..3)
        .flat_map(|r| {
            pattern
                .iter()
                .map(move |&l| if l == 0 || r == 0 { l } else { l + r })
        })
        .collect();
    for features in [V1 | MRG, V1, V1 | MRG | IN_ORDER, V1 | MRG | EVENT_IDX] {
        let mut results = Vec::new();
        for packed in [false, true] {
            let mut be = FakeBackend::default();
            for (k, &len) in lens.iter().enumerate() {
                if len == 0 {
                    be.inbound.push_back(vec![0u8; 5]); // a runt
                } else {
                    let mut f = frame(len, k as u8);
                    f[10] = 0xee; // num_buffers is the device's to set
                    be.inbound.push_back(f);
                }
            }
            let mut r = rig_layout(features, Box::new(be), 64, 2048, packed);
            let mut st = QueueStats::default();
            let mut got = Vec::new();
            // buffers arrive in uneven steps, so groups start at many
            // alignments and the back-end runs dry in the middle of some
            for step in [20usize, 3, 17, 1, 16, 6, 18, 4, 16, 30, 5] {
                r.rx.post_rx(step, 2048);
                r.qp.process_rx(&r.m.mem, &mut st).unwrap();
                got.extend(rx_frames(&mut r));
            }
            results.push((got, st.packets, st.drops, st.dropped_runt, st.bytes));
        }
        let (split, packed) = (&results[0], &results[1]);
        assert_eq!(split, packed, "features {features:#x}");
        let (got, packets, drops, runts, _) = split;
        let mrg = features & MRG != 0;
        // everything but the runt, and without MRG_RXBUF the 3000 B frame
        let want: Vec<usize> = lens
            .iter()
            .copied()
            .filter(|&l| l != 0 && (mrg || l + 12 <= 2048))
            .collect();
        assert_eq!(
            got.iter().map(|g| g.len() - 12).collect::<Vec<_>>(),
            want,
            "features {features:#x}"
        );
        assert_eq!(*packets as usize, want.len());
        let too_big = lens.iter().filter(|&&l| l + 12 > 2048).count() as u64;
        assert_eq!((*runts, *drops), (3, if mrg { 3 } else { 3 + too_big }));
        let sent = lens
            .iter()
            .enumerate()
            .filter(|&(_, &l)| l != 0 && (mrg || l + 12 <= 2048))
            .map(|(k, &l)| frame(l, k as u8));
        for (g, f) in got.iter().zip(sent) {
            let nb = u16::from_le_bytes([g[10], g[11]]);
            let want_nb = if g.len() > 2048 { 2 } else { 1 };
            assert_eq!(nb, want_nb, "num_buffers of a {} B frame", g.len());
            assert_eq!(
                (&g[..10], &g[12..]),
                (&f[..10], &f[12..]),
                "features {features:#x}"
            );
        }
    }
}

/// A back-end that hands every frame it is sent to the test.
#[derive(Debug, Default)]
struct Recorder(std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

impl Backend for Recorder {
    fn configure(&mut self, _: usize, _: Offloads) -> Result<(), BackendError> {
        Ok(())
    }
    fn send(&mut self, pkt: &[u8]) -> Result<(), BackendError> {
        self.0.lock().unwrap().push(pkt.to_vec());
        Ok(())
    }
    fn recv(&mut self, _: &mut [u8]) -> Result<Option<usize>, BackendError> {
        Ok(None)
    }
    fn rx_fd(&self) -> Option<RawFd> {
        None
    }
    fn rx_pending(&self) -> bool {
        false
    }
    fn supports_offloads(&self) -> bool {
        true
    }
}

#[test]
fn test_qp_tx_groups_send_every_frame_whole_on_both_layouts() {
    // TX takes plain single-buffer chains in groups (`pop_batch`) and the
    // rest one by one (`pop`): frames over a buffer (several descriptors),
    // runts and bad headers in between must not change what the back-end
    // gets: every good frame, whole, in order, num_buffers set to 1 (what
    // a guest receiving it needs; the RX path then leaves the frame alone).
    for packed in [false, true] {
        let sent = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut r = rig_layout(V1 | MRG, Box::new(Recorder(sent.clone())), 64, 2048, packed);
        let mut want = Vec::new();
        let mut st = QueueStats::default();
        for round in 0..6usize {
            for k in 0..20usize {
                let i = round * 20 + k;
                let f = match i % 13 {
                    5 => frame(3000, i as u8), // two descriptors
                    9 => vec![0u8; 6],         // shorter than the header
                    11 => {
                        let mut f = frame(80, i as u8);
                        f[1] = 0x42; // unknown GSO type
                        f
                    }
                    _ => frame(60 + i % 7, i as u8),
                };
                if i % 13 != 9 && i % 13 != 11 {
                    let mut w = f.clone();
                    w[10..12].copy_from_slice(&1u16.to_le_bytes());
                    want.push(w);
                }
                r.tx.send_tx(&f).unwrap();
            }
            r.qp.process_tx(&r.m.mem, &mut st).unwrap();
            for (id, _) in r.tx.used() {
                r.tx.complete_tx(id);
            }
        }
        let got = sent.lock().unwrap().clone();
        assert_eq!(got.len(), want.len(), "packed {packed}");
        assert!(got == want, "packed {packed}: frames differ");
        assert_eq!(
            (
                st.packets as usize,
                st.dropped_malformed,
                st.dropped_bad_header
            ),
            (want.len(), 9, 9),
            "packed {packed}"
        );
    }
}

/// A back-end that notes, at every frame it gives or takes, how many used
/// entries the driver can already see (split ring: used.idx in guest
/// memory), and gives `frames` frames on RX.
/// The driver's memory and used ring (set once the rig exists), and what
/// the driver saw at each frame.
type Seen = std::sync::Arc<
    std::sync::Mutex<(
        Option<(std::sync::Arc<vhostd_mem::GuestMem>, u64)>,
        Vec<u16>,
    )>,
>;

struct Peek {
    at: Seen,
    frames: usize,
}

impl std::fmt::Debug for Peek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Peek")
    }
}

impl Peek {
    fn note(&self) {
        let mut g = self.at.lock().unwrap();
        let seen = g.0.as_ref().map(|(m, used)| m.read_u16(used + 2).unwrap());
        g.1.push(seen.unwrap_or(0));
    }
}

impl Backend for Peek {
    fn configure(&mut self, _: usize, _: Offloads) -> Result<(), BackendError> {
        Ok(())
    }
    fn send(&mut self, _: &[u8]) -> Result<(), BackendError> {
        self.note();
        Ok(())
    }
    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, BackendError> {
        if self.frames == 0 {
            return Ok(None);
        }
        self.frames -= 1;
        self.note();
        let f = frame(60, self.frames as u8);
        buf[..f.len()].copy_from_slice(&f);
        Ok(Some(f.len()))
    }
    fn rx_fd(&self) -> Option<RawFd> {
        None
    }
    fn rx_pending(&self) -> bool {
        self.frames > 0
    }
    fn supports_offloads(&self) -> bool {
        true
    }
}

#[test]
fn test_qp_used_entries_are_published_within_a_burst_not_only_at_its_end() {
    // The driver starts on completions while the rest of a burst is done
    // (PUBLISH_EVERY): by the time the device works on frame k of a burst,
    // the driver sees at least the multiple of 32 below k - 32 as used.
    // Both directions, one burst of 200 frames each.
    const N: usize = 200;
    for tx in [false, true] {
        let at = std::sync::Arc::new(std::sync::Mutex::new((None, Vec::new())));
        let be = Peek {
            at: at.clone(),
            frames: if tx { 0 } else { N },
        };
        let mut r = rig_layout(V1 | MRG, Box::new(be), 256, 2048, false);
        let (lrx, end) = DriverLayout::at(BASE, 256, 2048);
        let used = if tx {
            DriverLayout::at(end, 256, 2048).0.used
        } else {
            lrx.used
        };
        at.lock().unwrap().0 = Some((r.m.mem.clone(), used));
        let mut st = QueueStats::default();
        if tx {
            for i in 0..N {
                r.tx.send_tx(&frame(60, i as u8)).unwrap();
            }
            r.qp.process_tx(&r.m.mem, &mut st).unwrap();
        } else {
            r.rx.post_rx(N, 2048);
            r.qp.process_rx(&r.m.mem, &mut st).unwrap();
        }
        assert_eq!(st.packets as usize, N, "tx {tx}");
        let seen = at.lock().unwrap().1.clone();
        assert_eq!(seen.len(), N, "tx {tx}");
        for (k, &s) in seen.iter().enumerate() {
            let want = (k.saturating_sub(32) / 32 * 32) as u16;
            assert!(
                s >= want,
                "tx {tx}: at frame {k} the driver saw {s} used, want >= {want}"
            );
        }
        let (used_now, want_end) = if tx {
            (r.tx.used().len(), N)
        } else {
            (r.rx.used().len(), N)
        };
        assert_eq!(used_now, want_end, "tx {tx}: all published at the end");
    }
}

#[test]
fn test_qp_ceiling_moves_headers_and_lengths_but_no_frame_bytes() {
    // `ceiling:loopback` (a benchmark diagnostic): single-buffer frames go
    // round with their lengths and virtio-net headers, while their bytes
    // stay where they were (TX reads the header only, RX writes the header
    // only, and compares it first as vhostd does under HeaderWrite::Compare:
    // no more guest-line writes than vhostd makes). The plain loopback,
    // same rig, carries the frames whole.
    for (packed, way) in [false, true]
        .into_iter()
        .flat_map(|p| [(p, HeaderWrite::Write), (p, HeaderWrite::Compare)])
    {
        for ceiling in [false, true] {
            let be: Box<dyn Backend> = match ceiling {
                true => Box::new(vhostd_backend::Ceiling(Box::new(Loopback::new()))),
                false => Box::new(Loopback::new()),
            };
            let mut r = rig_layout(V1 | MRG, be, 128, 2048, packed);
            let mut st = QueueStats::default();
            let sent: Vec<Vec<u8>> = (0..40usize)
                .map(|i| {
                    let mut f = frame(60 + i % 9, i as u8);
                    f[2] = 14 + i as u8; // hdr_len: guest-chosen, kept as sent
                    f
                })
                .collect();
            for f in &sent {
                r.tx.send_tx(f).unwrap();
            }
            r.qp.process_tx(&r.m.mem, &mut st).unwrap();
            assert_eq!(r.tx.used().len(), sent.len(), "packed {packed}");
            r.rx.post_rx(64, 2048);
            let mut rs = QueueStats::default();
            r.qp.set_rx_header(way);
            r.qp.process_rx(&r.m.mem, &mut rs).unwrap();
            let got = rx_frames(&mut r);
            assert_eq!(got.len(), sent.len(), "packed {packed} ceiling {ceiling}");
            assert_eq!((st.packets, rs.packets), (40, 40));
            let compared = if way == HeaderWrite::Compare { 40 } else { 0 };
            assert_eq!(rs.header_compared, compared, "{way:?} ceiling {ceiling}");
            for (g, f) in got.iter().zip(&sent) {
                assert_eq!(g.len(), f.len(), "lengths go round either way");
                assert_eq!(&g[..10], &f[..10], "the header goes round either way");
                assert_eq!(u16::from_le_bytes([g[10], g[11]]), 1);
                let mut want = f[12..].to_vec();
                want[..12].rotate_left(6); // the loopback swaps the MACs
                if ceiling {
                    // RX buffers start zeroed and nothing but the header
                    // was written to them
                    assert!(g[12..].iter().all(|&b| b == 0), "packed {packed}");
                } else {
                    assert_eq!(&g[12..], &want[..], "packed {packed}");
                }
            }
        }
    }
}

#[test]
fn test_qp_source_frames_arrive_whole_pass_after_pass() {
    // `source:LEN` writes its frame into the queue pair's RX buffer once and
    // afterwards only the header: this holds only while the queue pair
    // leaves the frame bytes of that buffer alone. Every frame of several
    // passes, through the one-buffer group path (2048-byte buffers) and the
    // general path (mergeable over 512-byte buffers), must be the source's
    // frame byte for byte, with num_buffers set for each.
    for packed in [false, true] {
        for buf in [2048u32, 512] {
            let mut r = rig_layout(
                V1 | MRG,
                Box::new(Source::new(1518).unwrap()),
                256,
                buf,
                packed,
            );
            let mut want = vec![0u8; 2048];
            let mut fresh = Source::new(1518).unwrap();
            fresh.configure(12, Offloads::default()).unwrap();
            let n = fresh.recv(&mut want).unwrap().unwrap();
            want.truncate(n);
            let per = (n as u32).div_ceil(buf) as u16;
            let mut total = 0usize;
            for pass in 0..4 {
                r.rx.post_rx(24, buf);
                let mut st = QueueStats::default();
                r.qp.process_rx(&r.m.mem, &mut st).unwrap();
                let got = rx_frames(&mut r);
                assert_eq!(
                    got.len(),
                    24 / per as usize,
                    "packed {packed} buf {buf} pass {pass}"
                );
                for g in &got {
                    assert_eq!(g.len(), n);
                    assert_eq!(u16::from_le_bytes([g[10], g[11]]), per);
                    assert_eq!(&g[..10], &want[..10]);
                    assert_eq!(
                        &g[12..],
                        &want[12..],
                        "packed {packed} buf {buf} pass {pass}"
                    );
                }
                total += got.len();
            }
            assert!(total >= 8, "packed {packed} buf {buf}: {total} frames");
        }
    }
}

#[test]
fn test_qp_rx_header_compare_delivers_what_write_delivers() {
    // HeaderWrite::Compare writes a header only where the buffer does not
    // hold those bytes already. Buffers are reused lap after lap here, so
    // frames meet a buffer holding the same header (not written), another
    // one (gso_size bytes vary every third frame: written), or, first
    // time round, zeros. The guest must read the same bytes either way,
    // with the 12-byte header (VERSION_1) and the legacy 10-byte one.
    for (features, hl) in [(V1 | MRG, 12usize), (0, 10)] {
        for packed in [false, true] {
            let mut compared = Vec::new();
            for way in [HeaderWrite::Write, HeaderWrite::Compare] {
                let mut be = FakeBackend::default();
                let mut sent = Vec::new();
                for k in 0..200usize {
                    let mut f = frame(60 + k % 5, k as u8);
                    f.drain(hl..12);
                    f[4] = if k % 3 == 0 { (k / 3) as u8 | 1 } else { 0 };
                    sent.push(f.clone());
                    be.inbound.push_back(f);
                }
                let mut r = rig_layout(features, Box::new(be), 64, 2048, packed);
                r.qp.set_rx_header(way);
                let mut st = QueueStats::default();
                let mut got = Vec::new();
                for _ in 0..20 {
                    r.rx.post_rx(16, 2048);
                    r.qp.process_rx(&r.m.mem, &mut st).unwrap();
                    got.extend(rx_frames(&mut r));
                }
                let at = format!("hl {hl} packed {packed} {way:?}");
                assert_eq!(got.len(), sent.len(), "{at}");
                for (k, (g, f)) in got.iter().zip(&sent).enumerate() {
                    if hl == 12 {
                        // num_buffers is the device's: 1
                        assert_eq!(
                            (&g[..10], &g[10..12], &g[12..]),
                            (&f[..10], &[1u8, 0][..], &f[12..]),
                            "{at} frame {k}"
                        );
                    } else {
                        assert_eq!(g, f, "{at} frame {k}");
                    }
                }
                compared.push(st.header_compared);
            }
            assert_eq!(compared, vec![0, 200], "hl {hl} packed {packed}");
        }
    }
}
