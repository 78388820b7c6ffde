#![allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
//! Packed ring against the test kit's independent packed driver.

use vhostd_testkit::{DriverLayout, PackedDesc, PackedDriver, TestMemory};

use super::*;

/// Group size the batch tests use (one packed descriptor line).
const BATCH: usize = 4;

const BASE: u64 = 0x10_0000;

fn cfg(l: &DriverLayout, event_idx: bool, in_order: bool) -> QueueConfig {
    QueueConfig {
        size: l.size,
        desc: l.desc,
        avail: l.avail,
        used: l.used,
        base: 0x8000,
        event_idx,
        indirect: true,
        packed: true,
        in_order,
    }
}

fn setup(size: u16, event_idx: bool, in_order: bool) -> (TestMemory, PackedDriver, PackedQueue) {
    let m = TestMemory::new(4 << 20);
    let (layout, _) = DriverLayout::at(BASE, size, 2048);
    let drv = PackedDriver::new(m.mem.clone(), layout);
    let q = PackedQueue::new(cfg(&layout, event_idx, in_order), &m.mem).unwrap();
    (m, drv, q)
}

#[test]
fn test_packed_pop_tx_chain_and_publish() {
    let (m, mut drv, mut q) = setup(16, false, false);
    let frame: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    let id = drv.send_tx(&frame).unwrap();
    let mut c = Chain::default();
    assert!(q.pop(&m.mem, &mut c).unwrap());
    assert_eq!((c.head(), c.descs(), c.error()), (id, 3, None));
    let mut buf = vec![0u8; 8000];
    assert_eq!(c.read_into(&m.mem, &mut buf), Some(5000));
    assert_eq!(&buf[..5000], &frame[..]);
    assert!(!q.pop(&m.mem, &mut c).unwrap());
    q.add_used(&m.mem, c.head(), c.descs(), 0).unwrap();
    assert!(drv.used().is_empty(), "not visible before publish");
    q.publish_used(&m.mem).unwrap();
    assert_eq!(drv.used(), vec![(id, 0)]);
    assert_eq!(q.base(), 0x8003_8003);
}

#[test]
fn test_packed_wraps_many_times_with_mixed_chains() {
    for in_order in [false, true] {
        let (m, mut drv, mut q) = setup(8, true, in_order);
        let mut c = Chain::default();
        let mut sent = 0usize;
        for round in 0..200usize {
            // 1..=3 descriptors per chain, two chains per burst
            let mut ids = Vec::new();
            for k in 0..2 {
                let len = 1 + ((round * 2 + k) % 3) * 2048 - ((round + k) % 2);
                let frame = vec![(round + k) as u8; len.max(1)];
                if let Some(id) = drv.send_tx(&frame) {
                    ids.push((id, frame));
                }
            }
            for (id, frame) in &ids {
                assert!(q.pop(&m.mem, &mut c).unwrap(), "round {round}");
                assert_eq!(c.head(), *id);
                assert_eq!(c.readable_len() as usize, frame.len());
                q.add_used_read(&m.mem, c.head(), c.descs()).unwrap();
            }
            q.publish_used(&m.mem).unwrap();
            let used = drv.used();
            assert_eq!(
                used.iter().map(|u| u.0).collect::<Vec<_>>(),
                ids.iter().map(|i| i.0).collect::<Vec<_>>(),
                "round {round} in_order {in_order}"
            );
            for (id, _) in used {
                drv.complete_tx(id);
            }
            sent += ids.len();
        }
        assert_eq!(drv.free_descs(), 8);
        assert!(sent >= 300);
        assert_eq!(q.next_avail(), drv.next_avail());
        assert_eq!(q.next_used(), drv.next_used());
    }
}

#[test]
fn test_packed_in_order_tx_writes_one_used_descriptor_per_burst() {
    let (m, mut drv, mut q) = setup(16, false, true);
    let ids: Vec<u16> = (0..5)
        .map(|i| drv.send_tx(&[i as u8; 60]).unwrap())
        .collect();
    let mut c = Chain::default();
    for _ in 0..5 {
        assert!(q.pop(&m.mem, &mut c).unwrap());
        q.add_used_read(&m.mem, c.head(), c.descs()).unwrap();
    }
    q.publish_used(&m.mem).unwrap();
    // slot 0 holds the one used descriptor with the last id; slots 1..5
    // still hold the driver's available descriptors
    let flags = |slot: u64| m.mem.read_u16(BASE + 16 * slot + 14).unwrap();
    assert_eq!(
        flags(0) & (VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED),
        VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED
    );
    assert_eq!(m.mem.read_u16(BASE + 12).unwrap(), ids[4]);
    for s in 1..5 {
        assert_eq!(flags(s) & VRING_PACKED_DESC_F_USED, 0, "slot {s} written");
    }
    let used = drv.used();
    assert_eq!(used.iter().map(|u| u.0).collect::<Vec<_>>(), ids);
}

#[test]
fn test_packed_rx_lengths_and_write_flag() {
    let (m, mut drv, mut q) = setup(16, false, true);
    assert_eq!(drv.post_rx(3, 3000), 3);
    let mut c = Chain::default();
    for k in 0..3u32 {
        assert!(q.pop(&m.mem, &mut c).unwrap());
        assert_eq!((c.writable_len(), c.descs()), (3000, 2));
        let data = vec![k as u8 + 1; 2500];
        assert!(c.write_at(&m.mem, 0, &data));
        q.add_used(&m.mem, c.head(), c.descs(), 2500 - k).unwrap();
    }
    q.publish_used(&m.mem).unwrap();
    let used = drv.used();
    assert_eq!(used.len(), 3);
    for (k, (id, len)) in used.into_iter().enumerate() {
        assert_eq!(len, 2500 - k as u32);
        let d = drv.take_rx(id, len);
        assert!(d.iter().all(|&b| b == k as u8 + 1));
        // a used descriptor with data carries WRITE
    }
    assert_eq!(
        m.mem.read_u16(BASE + 14).unwrap() & VRING_DESC_F_WRITE,
        VRING_DESC_F_WRITE
    );
}

#[test]
fn test_packed_indirect_chain() {
    let (m, mut drv, mut q) = setup(16, false, false);
    let frame: Vec<u8> = (0..900u32).map(|i| (i * 7) as u8).collect();
    let id = drv.send_tx_indirect(&frame, 4).unwrap();
    let mut c = Chain::default();
    assert!(q.pop(&m.mem, &mut c).unwrap());
    assert_eq!(
        (c.head(), c.descs(), c.error(), c.segments().len()),
        (id, 1, None, 4)
    );
    let mut buf = vec![0u8; 2048];
    assert_eq!(c.read_into(&m.mem, &mut buf), Some(900));
    assert_eq!(&buf[..900], &frame[..]);
}

fn pop_one(
    drv: &mut PackedDriver,
    q: &mut PackedQueue,
    m: &TestMemory,
    descs: &[PackedDesc],
) -> Chain {
    drv.push_raw(descs);
    let mut c = Chain::default();
    assert!(q.pop(&m.mem, &mut c).unwrap());
    c
}

#[test]
fn test_packed_bad_chains_keep_their_extent() {
    let (m, mut drv, mut q) = setup(16, false, false);
    let good = PackedDesc {
        addr: BASE + 0x10000,
        len: 64,
        id: 0,
        flags: 0,
    };
    let cases: Vec<(Vec<PackedDesc>, ChainError)> = vec![
        (
            vec![
                PackedDesc {
                    addr: 1 << 40,
                    len: 64,
                    ..good
                },
                PackedDesc { id: 5, ..good },
            ],
            ChainError::AddressOutOfRange(1 << 40, 64),
        ),
        (
            vec![
                PackedDesc {
                    flags: VRING_DESC_F_WRITE | VRING_DESC_F_NEXT,
                    ..good
                },
                PackedDesc { id: 6, ..good },
            ],
            ChainError::ReadableAfterWritable,
        ),
        (
            vec![
                PackedDesc {
                    flags: VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT,
                    ..good
                },
                PackedDesc { id: 7, ..good },
            ],
            ChainError::IndirectWithNext,
        ),
        (
            vec![PackedDesc {
                id: 8,
                len: 24,
                flags: VRING_DESC_F_INDIRECT,
                ..good
            }],
            ChainError::BadIndirectLen(24),
        ),
        (
            vec![
                PackedDesc {
                    len: u32::MAX,
                    addr: 0,
                    flags: VRING_DESC_F_NEXT,
                    ..good
                },
                PackedDesc { id: 9, ..good },
            ],
            ChainError::AddressOutOfRange(0, u32::MAX),
        ),
    ];
    for (descs, want) in cases {
        let n = descs.len() as u16;
        let mut d = descs.clone();
        if d.len() > 1 {
            d[0].flags |= VRING_DESC_F_NEXT;
        }
        let c = pop_one(&mut drv, &mut q, &m, &d);
        assert_eq!(c.error(), Some(want));
        assert_eq!(c.descs(), n, "{want:?}");
        assert_eq!(c.head(), d.last().unwrap().id);
        assert!(c.segments().is_empty());
        // the next chain is found where the bad one ended
        let c2 = pop_one(&mut drv, &mut q, &m, &[PackedDesc { id: 1, ..good }]);
        assert_eq!((c2.error(), c2.head()), (None, 1));
    }
}

#[test]
fn test_packed_nested_indirect_is_bad_chain() {
    let (m, mut drv, mut q) = setup(16, false, false);
    let table = BASE + 0x20000;
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&(BASE + 0x30000).to_le_bytes());
    raw[8..12].copy_from_slice(&16u32.to_le_bytes());
    raw[14..].copy_from_slice(&VRING_DESC_F_INDIRECT.to_le_bytes());
    m.mem.write(table, &raw).unwrap();
    let c = pop_one(
        &mut drv,
        &mut q,
        &m,
        &[PackedDesc {
            addr: table,
            len: 16,
            id: 3,
            flags: VRING_DESC_F_INDIRECT,
        }],
    );
    assert_eq!(c.error(), Some(ChainError::NestedIndirect));
}

#[test]
fn test_packed_chain_longer_than_ring_is_fatal() {
    let (m, mut drv, mut q) = setup(8, false, false);
    // the whole ring available, every descriptor saying NEXT
    let d = PackedDesc {
        addr: BASE + 0x10000,
        len: 8,
        id: 0,
        flags: VRING_DESC_F_NEXT,
    };
    drv.push_raw(&[d; 8]);
    let mut c = Chain::default();
    assert!(matches!(
        q.pop(&m.mem, &mut c),
        Err(QueueError::ChainLoop(0))
    ));
}

#[test]
fn test_packed_rewind_pops_same_chains_again() {
    let (m, mut drv, mut q) = setup(16, false, false);
    drv.post_rx(3, 3000);
    let mut c = Chain::default();
    let mark = q.mark();
    let mut first = Vec::new();
    for _ in 0..3 {
        assert!(q.pop(&m.mem, &mut c).unwrap());
        first.push(c.used_ref());
    }
    assert!(!q.pop(&m.mem, &mut c).unwrap());
    q.rewind(mark);
    for want in first {
        assert!(q.pop(&m.mem, &mut c).unwrap());
        assert_eq!(c.used_ref(), want);
    }
}

#[test]
fn test_packed_driver_event_suppression() {
    let (m, mut drv, mut q) = setup(8, true, false);
    let mut c = Chain::default();
    let mut complete = |q: &mut PackedQueue, drv: &mut PackedDriver| {
        let id = drv.send_tx(b"x").unwrap();
        assert!(q.pop(&m.mem, &mut c).unwrap());
        q.add_used(&m.mem, c.head(), c.descs(), 0).unwrap();
        q.publish_used(&m.mem).unwrap();
        for (i, _) in drv.used() {
            drv.complete_tx(i);
        }
        let _ = id;
        q.needs_notification(&m.mem).unwrap()
    };
    drv.set_driver_event(RING_EVENT_FLAGS_ENABLE, 0);
    assert!(complete(&mut q, &mut drv));
    assert!(complete(&mut q, &mut drv));
    drv.set_driver_event(RING_EVENT_FLAGS_DISABLE, 0);
    assert!(!complete(&mut q, &mut drv));
    // DESC: notify when slot 4 (wrap 1) is used; slots 2 and 3 come first
    drv.set_driver_event(RING_EVENT_FLAGS_DESC, 4 | 0x8000);
    assert!(!complete(&mut q, &mut drv)); // slot 3
    assert!(complete(&mut q, &mut drv)); // slot 4
    assert!(!complete(&mut q, &mut drv)); // slot 5
                                          // an event for slot 1 of the next lap (wrap 0)
    drv.set_driver_event(RING_EVENT_FLAGS_DESC, 1);
    assert!(!complete(&mut q, &mut drv)); // 6
    assert!(!complete(&mut q, &mut drv)); // 7
    assert!(!complete(&mut q, &mut drv)); // 0, lap 2
    assert!(complete(&mut q, &mut drv)); // 1, lap 2
                                         // out-of-range offset: notify rather than lose a wake-up
    drv.set_driver_event(RING_EVENT_FLAGS_DESC, 100);
    assert!(complete(&mut q, &mut drv));
}

#[test]
fn test_packed_enable_notification_event_at_first_unseen_descriptor() {
    let (m, mut drv, mut q) = setup(8, true, false);
    let mut c = Chain::default();
    drv.send_tx(b"a").unwrap();
    drv.send_tx(b"b").unwrap();
    assert!(q.pop(&m.mem, &mut c).unwrap());
    assert!(q.pop(&m.mem, &mut c).unwrap());
    assert!(!q.pop(&m.mem, &mut c).unwrap());
    assert!(!q.enable_notification(&m.mem).unwrap());
    assert_eq!(drv.device_event(), (RING_EVENT_FLAGS_DESC, 2 | 0x8000));
    // the driver adds one after our check: the re-check sees it
    drv.send_tx(b"c").unwrap();
    assert!(q.enable_notification(&m.mem).unwrap());
    // blocked RX style: rewind, the event stays past what was seen
    let mark = q.mark();
    assert!(q.pop(&m.mem, &mut c).unwrap());
    assert!(!q.pop(&m.mem, &mut c).unwrap());
    q.rewind(mark);
    assert!(!q.enable_notification(&m.mem).unwrap());
    assert_eq!(drv.device_event(), (RING_EVENT_FLAGS_DESC, 3 | 0x8000));
    // without EVENT_IDX: flags only
    let (m2, _d2, mut q2) = setup(8, false, false);
    q2.disable_notification(&m2.mem).unwrap();
    assert_eq!(
        m2.mem.read_u16(BASE + 0x1000 + 2).unwrap_or(9),
        m2.mem.read_u16(BASE + 0x1000 + 2).unwrap_or(9)
    );
    let _ = q2.enable_notification(&m2.mem).unwrap();
}

#[test]
fn test_packed_config_checks() {
    let m = TestMemory::new(4 << 20);
    let (l, _) = DriverLayout::at(BASE, 8, 2048);
    let ok = cfg(&l, false, false);
    assert!(PackedQueue::new(ok, &m.mem).is_ok());
    // not a power of two: fine for packed
    assert!(PackedQueue::new(QueueConfig { size: 6, ..ok }, &m.mem).is_ok());
    for size in [0u16, 32769] {
        assert!(matches!(
            PackedQueue::new(QueueConfig { size, ..ok }, &m.mem),
            Err(QueueError::InvalidSize(_))
        ));
    }
    assert!(matches!(
        PackedQueue::new(
            QueueConfig {
                desc: l.desc + 8,
                ..ok
            },
            &m.mem
        ),
        Err(QueueError::Misaligned("desc", _))
    ));
    assert!(matches!(
        PackedQueue::new(
            QueueConfig {
                avail: l.avail + 2,
                ..ok
            },
            &m.mem
        ),
        Err(QueueError::Misaligned("driver", _))
    ));
    assert!(matches!(
        PackedQueue::new(
            QueueConfig {
                used: 1 << 40,
                ..ok
            },
            &m.mem
        ),
        Err(QueueError::RingNotMapped("device", _))
    ));
    // base: index past the size, in either half
    assert!(matches!(
        PackedQueue::new(QueueConfig { base: 0x8008, ..ok }, &m.mem),
        Err(QueueError::BadBase(_))
    ));
    assert!(matches!(
        PackedQueue::new(
            QueueConfig {
                base: 0x8009_8000,
                ..ok
            },
            &m.mem
        ),
        Err(QueueError::BadBase(_))
    ));
    // QEMU's encoding round-trips; DPDK's low-half-only means used == avail
    let q = PackedQueue::new(
        QueueConfig {
            base: 0x0003_8005,
            ..ok
        },
        &m.mem,
    )
    .unwrap();
    assert_eq!(q.base(), 0x0003_8005);
    let q = PackedQueue::new(QueueConfig { base: 0x0005, ..ok }, &m.mem).unwrap();
    assert_eq!(q.base(), 0x0005_0005);
    // the split ring refuses a base wider than 16 bits
    assert!(matches!(
        Queue::new(
            QueueConfig {
                packed: false,
                base: 0x1_0000,
                size: 8,
                ..ok
            },
            &m.mem
        ),
        Err(QueueError::BadBase(_))
    ));
}

fn pop_singles(q: &mut PackedQueue, m: &TestMemory, n: usize) -> Vec<Single> {
    crate::tests::singles_of(|c| q.pop(&m.mem, c).unwrap(), n)
}

#[test]
fn test_packed_pop_batch_takes_what_pop_takes_over_many_wraps() {
    // same ring contents through pop_batch and through pop, lap after lap
    // (the wrap counter flips every 2 groups)
    let (m, mut drv, mut q) = setup(8, true, false);
    let (m2, mut drv2, mut q2) = setup(8, true, false);
    let mut batch = [Single::default(); BATCH];
    for round in 0..50u32 {
        let len = 100 + round;
        assert_eq!(drv.post_rx(4, len), 4);
        assert_eq!(drv2.post_rx(4, len), 4);
        assert!(
            q.pop_batch(&m.mem, true, &mut batch).unwrap(),
            "round {round}"
        );
        assert_eq!(
            batch.to_vec(),
            pop_singles(&mut q2, &m2, 4),
            "round {round}"
        );
        // nothing more: a second batch finds nothing available
        assert!(!q.pop_batch(&m.mem, true, &mut batch).unwrap());
        // completed as a group (add_used_singles, odd rounds; lengths
        // 8..=11) or one by one: the driver sees the same either way
        let lens: Vec<u32> = (8..8 + BATCH as u32).collect();
        for (k, s) in batch.iter().enumerate() {
            m.mem
                .write(s.addr, &[k as u8; 12][..lens[k] as usize])
                .unwrap();
            if round % 2 == 0 {
                q.add_used(&m.mem, s.id, 1, lens[k]).unwrap();
            }
        }
        if round % 2 == 1 {
            q.add_used_singles(&m.mem, &batch, &lens).unwrap();
        }
        q.publish_used(&m.mem).unwrap();
        let used = drv.used();
        assert_eq!(
            used,
            batch
                .iter()
                .map(|s| s.id)
                .zip(lens.iter().copied())
                .collect::<Vec<_>>(),
            "round {round}"
        );
        for (k, (id, l)) in used.into_iter().enumerate() {
            assert_eq!(drv.take_rx(id, l), vec![k as u8; lens[k] as usize]);
        }
        for s in &batch {
            q2.add_used(&m2.mem, s.id, 1, 0).unwrap();
        }
        q2.publish_used(&m2.mem).unwrap();
        for (id, l) in drv2.used() {
            drv2.take_rx(id, l);
        }
    }
    assert_eq!(q.next_avail(), drv.next_avail());
    assert_eq!(q.next_used(), drv.next_used());
}

#[test]
fn test_packed_pop_batch_declines_and_takes_nothing() {
    let mut batch = [Single::default(); BATCH];
    let good = PackedDesc {
        addr: BASE + 0x10000,
        len: 64,
        id: 0,
        flags: VRING_DESC_F_WRITE,
    };
    // (descriptors pushed as 4 separate chains unless noted, why)
    let cases: Vec<(Vec<Vec<PackedDesc>>, &str)> = vec![
        (vec![vec![good]; 3], "only 3 available"),
        (
            vec![
                vec![good],
                vec![good],
                vec![PackedDesc { flags: 0, ..good }],
                vec![good],
            ],
            "one device-readable",
        ),
        (
            vec![
                vec![good],
                vec![good, PackedDesc { id: 7, ..good }],
                vec![good],
            ],
            "a 2-descriptor chain",
        ),
        (
            vec![
                vec![good],
                vec![good],
                vec![good],
                vec![PackedDesc {
                    flags: VRING_DESC_F_WRITE | VRING_DESC_F_INDIRECT,
                    ..good
                }],
            ],
            "indirect",
        ),
        (
            vec![
                vec![good],
                vec![PackedDesc {
                    addr: 1 << 40,
                    ..good
                }],
                vec![good],
                vec![good],
            ],
            "a buffer outside memory",
        ),
        (
            vec![
                vec![good],
                vec![PackedDesc {
                    addr: u64::MAX - 8,
                    ..good
                }],
                vec![good],
                vec![good],
            ],
            "a buffer wrapping the address space",
        ),
    ];
    for (chains, why) in cases {
        let (m, mut drv, mut q) = setup(16, false, false);
        for (k, c) in chains.iter().enumerate() {
            let c: Vec<_> = c
                .iter()
                .enumerate()
                .map(|(j, d)| PackedDesc {
                    id: (k * 4 + j) as u16,
                    flags: d.flags
                        | if j + 1 < c.len() {
                            VRING_DESC_F_NEXT
                        } else {
                            0
                        },
                    ..*d
                })
                .collect();
            drv.push_raw(&c);
        }
        let before = (q.next_avail(), q.mark());
        assert!(!q.pop_batch(&m.mem, true, &mut batch).unwrap(), "{why}");
        assert_eq!((q.next_avail(), q.mark()), before, "{why}: took something");
        // pop still takes the first chain as it is
        let mut c = Chain::default();
        assert!(q.pop(&m.mem, &mut c).unwrap(), "{why}");
        assert_eq!(c.head(), 0, "{why}");
    }
    // the right descriptors, asked for the other direction
    let (m, mut drv, mut q) = setup(16, false, false);
    assert_eq!(drv.post_rx(4, 64), 4);
    assert!(!q.pop_batch(&m.mem, false, &mut batch).unwrap());
    assert!(q.pop_batch(&m.mem, true, &mut batch).unwrap());
    // not at a group start: after one pop, the next group is not aligned
    let (m, mut drv, mut q) = setup(16, false, false);
    assert_eq!(drv.post_rx(8, 64), 8);
    let mut c = Chain::default();
    assert!(q.pop(&m.mem, &mut c).unwrap());
    assert!(!q.pop_batch(&m.mem, true, &mut batch).unwrap(), "slot 1");
    // a size that is not a multiple of 4: the last group would wrap
    let (m, mut drv, mut q) = setup(6, false, false);
    assert_eq!(drv.post_rx(6, 64), 6);
    assert!(q.pop_batch(&m.mem, true, &mut batch).unwrap(), "slots 0-3");
    assert!(
        !q.pop_batch(&m.mem, true, &mut batch).unwrap(),
        "slots 4, 5, 0, 1"
    );
    assert_eq!(pop_singles(&mut q, &m, 2).len(), 2);
}

#[test]
fn test_packed_unpop_batch_gives_back_the_rest() {
    let (m, mut drv, mut q) = setup(16, false, false);
    assert_eq!(drv.post_rx(4, 64), 4);
    let mut batch = [Single::default(); BATCH];
    assert!(q.pop_batch(&m.mem, true, &mut batch).unwrap());
    let all = batch;
    q.unpop_batch(3);
    assert_eq!(pop_singles(&mut q, &m, 3), all[1..].to_vec());
    let mut c = Chain::default();
    assert!(!q.pop(&m.mem, &mut c).unwrap());
}

#[test]
fn test_packed_prefetch_used_changes_nothing_at_any_position() {
    // a hint on the used lines: ring memory and the queue's next steps are
    // the same with or without it, for odd sizes, counts past the ring and
    // positions across the wrap
    for size in [1u16, 3, 16] {
        let (m, mut drv, mut q) = setup(size, false, false);
        let ring = |m: &TestMemory| {
            let mut b = vec![0u8; 16 * usize::from(size)];
            m.mem.read(BASE, &mut b).unwrap();
            b
        };
        let mut c = Chain::default();
        for round in 0..(3 * u32::from(size)) {
            let before = ring(&m);
            for n in [0u16, 1, 4, 16, 300, u16::MAX] {
                q.prefetch_used(&m.mem, n);
            }
            assert_eq!(ring(&m), before, "size {size} round {round}");
            let id = drv.send_tx(&[round as u8; 40]).unwrap();
            assert!(q.pop(&m.mem, &mut c).unwrap());
            q.add_used_read(&m.mem, c.head(), c.descs()).unwrap();
            q.publish_used(&m.mem).unwrap();
            assert_eq!(drv.used().iter().map(|u| u.0).collect::<Vec<_>>(), vec![id]);
            drv.complete_tx(id);
        }
    }
}

#[test]
fn test_packed_long_burst_is_written_whole_at_publish() {
    // Used descriptors wait in a shadow until publish (more than it holds
    // in one burst here: the overflow is written early, still hidden behind
    // the first's flags). Over several laps: nothing visible before
    // publish, the ring untouched past the first SHADOW + 1 completions,
    // then every entry with its id and length.
    let (m, mut drv, mut q) = setup(256, false, false);
    let desc = BASE; // DriverLayout::at puts the descriptors first
    for lap in 0..5u32 {
        let n = [3usize, 65, 66, 200, 130][lap as usize];
        assert_eq!(drv.post_rx(n, 1500), n);
        let mut c = Chain::default();
        let mut ids = Vec::new();
        let start = q.next_used();
        for k in 0..n {
            assert!(q.pop(&m.mem, &mut c).unwrap());
            ids.push(c.head());
            q.add_used(&m.mem, c.head(), c.descs(), 100 + k as u32 + lap)
                .unwrap();
        }
        assert!(drv.used().is_empty(), "lap {lap}: visible before publish");
        if n <= crate::packed::SHADOW + 1 {
            // still the driver's available descriptors, every one
            for k in 0..n {
                let slot = (u32::from(start & 0x7fff) + k as u32) % 256;
                let mut d = [0u8; 16];
                m.mem.read(desc + u64::from(slot) * 16, &mut d).unwrap();
                assert_eq!(
                    u32::from_le_bytes(d[8..12].try_into().unwrap()),
                    1500,
                    "lap {lap} slot {slot}"
                );
            }
        }
        q.publish_used(&m.mem).unwrap();
        let used = drv.used();
        let want: Vec<(u16, u32)> = ids
            .iter()
            .enumerate()
            .map(|(k, &id)| (id, 100 + k as u32 + lap))
            .collect();
        assert_eq!(used, want, "lap {lap}");
        for (id, l) in used {
            drv.take_rx(id, l);
        }
    }
    assert_eq!(q.next_used(), drv.next_used());
}
