#![allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
use std::sync::Arc;

use vhostd_testkit::{DriverLayout, FakeDriver, RawDesc, TestMemory};

use super::*;

/// Group size the batch tests use (one packed descriptor line).
const BATCH: usize = 4;

const BASE: u64 = 0x10_0000;

fn setup(size: u16, event_idx: bool) -> (TestMemory, FakeDriver, SplitQueue) {
    let m = TestMemory::new(4 << 20);
    let (layout, _) = DriverLayout::at(BASE, size, 2048);
    let drv = FakeDriver::new(m.mem.clone(), layout);
    let q = SplitQueue::new(
        QueueConfig {
            size,
            desc: layout.desc,
            avail: layout.avail,
            used: layout.used,
            base: 0,
            event_idx,
            indirect: true,
            ..Default::default()
        },
        &m.mem,
    )
    .unwrap();
    (m, drv, q)
}

fn mem(m: &TestMemory) -> Arc<vhostd_mem::GuestMem> {
    m.mem.clone()
}

#[test]
fn test_split_pop_tx_chain_reads_frame() {
    let (m, mut drv, mut q) = setup(16, false);
    let frame: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    let head = drv.send_tx(&frame).unwrap();
    let mut c = Chain::with_capacity(16);
    assert!(q.pop(&mem(&m), &mut c).unwrap());
    assert_eq!(c.head(), head);
    assert_eq!(c.error(), None);
    assert_eq!(c.readable_len(), 5000);
    assert_eq!(c.segments().len(), 3);
    let mut buf = vec![0u8; 8000];
    assert_eq!(c.read_into(&m.mem, &mut buf), Some(5000));
    assert_eq!(&buf[..5000], &frame[..]);
    assert!(!q.pop(&mem(&m), &mut c).unwrap());
}

#[test]
fn test_split_in_order_tx_writes_one_used_element_per_run() {
    // IN_ORDER (virtio 1.2 §2.7.9): a run of read-only completions is one
    // used element at the run's first slot with the run's last head; an
    // element with a length (or a publish) ends the run.
    for in_order in [false, true] {
        let m = TestMemory::new(4 << 20);
        let (layout, _) = DriverLayout::at(BASE, 16, 2048);
        let mut drv = FakeDriver::new(m.mem.clone(), layout);
        drv.set_in_order(in_order);
        let cfg = QueueConfig {
            size: 16,
            desc: layout.desc,
            avail: layout.avail,
            used: layout.used,
            in_order,
            ..Default::default()
        };
        let mut q = SplitQueue::new(cfg, &m.mem).unwrap();
        let mut c = Chain::default();
        let mut heads = Vec::new();
        // 12 chains over the ring's end (size 16, two laps of the slots)
        for lap in 0..3 {
            let ids: Vec<u16> = (0..7)
                .map(|i| drv.send_tx(&[i as u8; 60]).unwrap())
                .collect();
            // the 7 used slots poisoned: a slot the device skips keeps it
            let first = u64::from(q.next_used() % 16);
            let raw = |slot: u64| m.mem.read_u64(layout.used + 4 + 8 * (slot % 16)).unwrap();
            for s in 0..7u64 {
                m.mem
                    .write_u64(layout.used + 4 + 8 * ((first + s) % 16), u64::MAX)
                    .unwrap();
            }
            for (k, _) in ids.iter().enumerate() {
                assert!(q.pop(&m.mem, &mut c).unwrap());
                if k == 5 {
                    // a completion with a length ends the run
                    q.add_used(&m.mem, c.head(), 9).unwrap();
                } else {
                    q.add_used_read(&m.mem, c.head()).unwrap();
                }
            }
            q.publish_used(&m.mem).unwrap();
            // in order: [0..5) as one element, 5 with its length, 6 alone
            let want: Vec<u64> = if in_order {
                vec![
                    u64::from(ids[4]),
                    u64::MAX,
                    u64::MAX,
                    u64::MAX,
                    u64::MAX,
                    u64::from(ids[5]) | 9 << 32,
                    u64::from(ids[6]),
                ]
            } else {
                (0..7)
                    .map(|k| u64::from(ids[k]) | if k == 5 { 9 << 32 } else { 0 })
                    .collect()
            };
            let got: Vec<u64> = (0..7).map(|s| raw(first + s)).collect();
            assert_eq!(got, want, "lap {lap} in_order {in_order}");
            let used = drv.used();
            assert_eq!(used.iter().map(|u| u.0).collect::<Vec<_>>(), ids);
            assert_eq!(used[5].1, 9);
            for (id, _) in used {
                drv.complete_tx(id);
            }
            heads.extend(ids);
        }
        assert_eq!(heads.len(), 21);
        assert_eq!(q.next_used(), drv.used_idx());
    }
}

#[test]
fn test_split_prefetch_used_changes_nothing_at_any_position() {
    // a hint on the used ring's lines: memory and the queue's next steps
    // are the same with or without it, across index wraps and for counts
    // past the ring
    for size in [1u16, 2, 16] {
        let (m, mut drv, mut q) = setup(size, false);
        let used = drv.layout.used;
        let ring = |m: &TestMemory| {
            let mut b = vec![0u8; 6 + 8 * usize::from(size)];
            m.mem.read(used, &mut b).unwrap();
            b
        };
        let mut c = Chain::default();
        for round in 0..(3 * u32::from(size)) {
            let before = ring(&m);
            for n in [0u16, 1, 8, 16, 300, u16::MAX] {
                q.prefetch_used(&m.mem, n);
            }
            assert_eq!(ring(&m), before, "size {size} round {round}");
            let h = drv.send_tx(&[round as u8; 40]).unwrap();
            assert!(q.pop(&m.mem, &mut c).unwrap());
            q.add_used(&m.mem, c.head(), 0).unwrap();
            q.publish_used(&m.mem).unwrap();
            assert_eq!(drv.used(), vec![(h, 0)]);
            drv.complete_tx(h);
        }
    }
}

#[test]
fn test_split_used_publish_visible_to_driver() {
    let (m, mut drv, mut q) = setup(8, false);
    let mut c = Chain::default();
    for _ in 0..20 {
        let h = drv.send_tx(b"abc").unwrap();
        assert!(q.pop(&m.mem, &mut c).unwrap());
        q.add_used(&m.mem, c.head(), 7).unwrap();
        assert_eq!(drv.used().len(), 0, "not visible before publish");
        q.publish_used(&m.mem).unwrap();
        assert_eq!(drv.used(), vec![(h, 7)]);
        drv.complete_tx(h);
    }
    assert_eq!(q.next_avail(), 20);
    assert_eq!(q.next_used(), 20);
}

#[test]
fn test_split_indirect_chain_walked() {
    let (m, mut drv, mut q) = setup(16, false);
    let frame = vec![7u8; 300];
    drv.send_tx_indirect(&frame, 3).unwrap();
    let mut c = Chain::default();
    assert!(q.pop(&m.mem, &mut c).unwrap());
    assert_eq!(c.error(), None);
    assert_eq!(c.segments().len(), 3);
    assert_eq!(c.readable_len(), 300);
}

#[test]
fn test_split_avail_idx_jump_is_fatal() {
    let (m, mut drv, mut q) = setup(16, false);
    drv.set_avail_idx(17);
    let mut c = Chain::default();
    assert!(matches!(
        q.pop(&m.mem, &mut c),
        Err(QueueError::AvailIdxJump { .. })
    ));
}

#[test]
fn test_split_head_out_of_range_is_fatal() {
    let (m, mut drv, mut q) = setup(16, false);
    drv.push_raw(&[], 16);
    let mut c = Chain::default();
    assert!(matches!(
        q.pop(&m.mem, &mut c),
        Err(QueueError::InvalidHead(16))
    ));
}

#[test]
fn test_split_next_out_of_range_is_fatal() {
    let (m, mut drv, mut q) = setup(16, false);
    let a = drv.buf_addr(0);
    drv.push_raw(
        &[(
            0,
            RawDesc {
                addr: a,
                len: 10,
                flags: 1,
                next: 99,
            },
        )],
        0,
    );
    let mut c = Chain::default();
    assert!(matches!(
        q.pop(&m.mem, &mut c),
        Err(QueueError::NextOutOfRange(0, 99))
    ));
}

#[test]
fn test_split_descriptor_loop_detected() {
    let (m, mut drv, mut q) = setup(16, false);
    let a = drv.buf_addr(0);
    drv.push_raw(
        &[
            (
                0,
                RawDesc {
                    addr: a,
                    len: 0,
                    flags: 1,
                    next: 1,
                },
            ),
            (
                1,
                RawDesc {
                    addr: a,
                    len: 0,
                    flags: 1,
                    next: 0,
                },
            ),
        ],
        0,
    );
    let mut c = Chain::default();
    assert!(matches!(
        q.pop(&m.mem, &mut c),
        Err(QueueError::ChainLoop(0))
    ));
}

#[test]
fn test_split_self_loop_len0_detected() {
    let (m, mut drv, mut q) = setup(16, false);
    drv.push_raw(
        &[(
            3,
            RawDesc {
                addr: 0,
                len: 0,
                flags: 1,
                next: 3,
            },
        )],
        3,
    );
    let mut c = Chain::default();
    assert!(matches!(
        q.pop(&m.mem, &mut c),
        Err(QueueError::ChainLoop(3))
    ));
}

fn pop_bad(descs: &[(u16, RawDesc)], head: u16) -> ChainError {
    let (m, mut drv, mut q) = setup(16, false);
    drv.push_raw(descs, head);
    let mut c = Chain::default();
    assert!(q.pop(&m.mem, &mut c).unwrap());
    assert_eq!(c.head(), head);
    assert_eq!(c.readable_len() + c.writable_len(), 0);
    c.error().expect("chain must be marked bad")
}

#[test]
fn test_split_buffer_out_of_memory_is_bad_chain() {
    let e = pop_bad(
        &[(
            0,
            RawDesc {
                addr: 0x4000_0000,
                len: 64,
                flags: 0,
                next: 0,
            },
        )],
        0,
    );
    assert!(matches!(e, ChainError::AddressOutOfRange(..)));
}

#[test]
fn test_split_buffer_crossing_end_of_memory_is_bad_chain() {
    let end = BASE + (4 << 20);
    let e = pop_bad(
        &[(
            0,
            RawDesc {
                addr: end - 10,
                len: 64,
                flags: 0,
                next: 0,
            },
        )],
        0,
    );
    assert!(matches!(e, ChainError::AddressOutOfRange(..)));
}

#[test]
fn test_split_address_overflow_is_bad_chain() {
    let e = pop_bad(
        &[(
            0,
            RawDesc {
                addr: u64::MAX - 4,
                len: 64,
                flags: 0,
                next: 0,
            },
        )],
        0,
    );
    assert!(matches!(e, ChainError::AddressOutOfRange(..)));
}

#[test]
fn test_split_readable_after_writable_is_bad_chain() {
    let a = BASE + 0x8000;
    let e = pop_bad(
        &[
            (
                0,
                RawDesc {
                    addr: a,
                    len: 64,
                    flags: VRING_DESC_F_WRITE | VRING_DESC_F_NEXT,
                    next: 1,
                },
            ),
            (
                1,
                RawDesc {
                    addr: a,
                    len: 64,
                    flags: 0,
                    next: 0,
                },
            ),
        ],
        0,
    );
    assert_eq!(e, ChainError::ReadableAfterWritable);
}

#[test]
fn test_split_nested_indirect_is_bad_chain() {
    let (m, mut drv, mut q) = setup(16, false);
    let table = drv.buf_addr(5);
    // indirect table with one entry that is itself indirect
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&table.to_le_bytes());
    raw[8..12].copy_from_slice(&16u32.to_le_bytes());
    raw[12..14].copy_from_slice(&VRING_DESC_F_INDIRECT.to_le_bytes());
    m.mem.write(table, &raw).unwrap();
    drv.push_raw(
        &[(
            0,
            RawDesc {
                addr: table,
                len: 16,
                flags: VRING_DESC_F_INDIRECT,
                next: 0,
            },
        )],
        0,
    );
    let mut c = Chain::default();
    assert!(q.pop(&m.mem, &mut c).unwrap());
    assert_eq!(c.error(), Some(ChainError::NestedIndirect));
}

#[test]
fn test_split_indirect_bad_len_is_bad_chain() {
    let a = BASE + 0x8000;
    for len in [0u32, 15, 17, 16 * (MAX_INDIRECT_DESCS + 1)] {
        let e = pop_bad(
            &[(
                0,
                RawDesc {
                    addr: a,
                    len,
                    flags: VRING_DESC_F_INDIRECT,
                    next: 0,
                },
            )],
            0,
        );
        assert_eq!(e, ChainError::BadIndirectLen(len));
    }
}

#[test]
fn test_split_indirect_with_next_is_bad_chain() {
    let a = BASE + 0x8000;
    let e = pop_bad(
        &[(
            0,
            RawDesc {
                addr: a,
                len: 32,
                flags: VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT,
                next: 1,
            },
        )],
        0,
    );
    assert_eq!(e, ChainError::IndirectWithNext);
}

#[test]
fn test_split_indirect_loop_is_bad_chain() {
    let (m, mut drv, mut q) = setup(16, false);
    let table = drv.buf_addr(5);
    let data = drv.buf_addr(6);
    for k in 0..2u16 {
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&data.to_le_bytes());
        raw[8..12].copy_from_slice(&8u32.to_le_bytes());
        raw[12..14].copy_from_slice(&VRING_DESC_F_NEXT.to_le_bytes());
        raw[14..].copy_from_slice(&(1 - k).to_le_bytes());
        m.mem.write(table + 16 * u64::from(k), &raw).unwrap();
    }
    drv.push_raw(
        &[(
            0,
            RawDesc {
                addr: table,
                len: 32,
                flags: VRING_DESC_F_INDIRECT,
                next: 0,
            },
        )],
        0,
    );
    let mut c = Chain::default();
    assert!(q.pop(&m.mem, &mut c).unwrap());
    assert_eq!(c.error(), Some(ChainError::IndirectLoop));
}

#[test]
fn test_split_chain_length_overflow_is_bad_chain() {
    // Two descriptors of 3 GiB each, both inside no memory: caught by range
    // check first; with a tiny memory that is the first failure either way.
    let a = BASE + 0x8000;
    let e = pop_bad(
        &[
            (
                0,
                RawDesc {
                    addr: a,
                    len: u32::MAX,
                    flags: VRING_DESC_F_NEXT,
                    next: 1,
                },
            ),
            (
                1,
                RawDesc {
                    addr: a,
                    len: u32::MAX,
                    flags: 0,
                    next: 0,
                },
            ),
        ],
        0,
    );
    assert!(matches!(
        e,
        ChainError::AddressOutOfRange(..) | ChainError::TooLong
    ));
}

#[test]
fn test_split_bad_config_rejected() {
    let m = TestMemory::new(1 << 20);
    let ok = QueueConfig {
        size: 16,
        desc: BASE,
        avail: BASE + 0x1000,
        used: BASE + 0x2000,
        ..Default::default()
    };
    assert!(SplitQueue::new(ok, &m.mem).is_ok());
    for size in [0u16, 3, 100] {
        assert!(matches!(
            SplitQueue::new(QueueConfig { size, ..ok }, &m.mem),
            Err(QueueError::InvalidSize(_))
        ));
    }
    assert!(matches!(
        SplitQueue::new(
            QueueConfig {
                desc: BASE + 8,
                ..ok
            },
            &m.mem
        ),
        Err(QueueError::Misaligned(..))
    ));
    assert!(matches!(
        SplitQueue::new(
            QueueConfig {
                used: BASE + 0x2002,
                ..ok
            },
            &m.mem
        ),
        Err(QueueError::Misaligned(..))
    ));
    assert!(matches!(
        SplitQueue::new(
            QueueConfig {
                used: BASE + (1 << 20) - 16,
                ..ok
            },
            &m.mem
        ),
        Err(QueueError::RingNotMapped(..))
    ));
}

#[test]
fn test_split_event_idx_notification_decisions() {
    let (m, mut drv, mut q) = setup(16, true);
    let mut c = Chain::default();
    let mut complete = |drv: &mut FakeDriver, q: &mut SplitQueue| {
        drv.send_tx(b"x").unwrap();
        assert!(q.pop(&m.mem, &mut c).unwrap());
        q.add_used(&m.mem, c.head(), 0).unwrap();
        q.publish_used(&m.mem).unwrap();
        for (id, _) in drv.used() {
            drv.complete_tx(id);
        }
        q.needs_notification(&m.mem).unwrap()
    };
    // first decision always notifies
    drv.set_used_event(0);
    assert!(complete(&mut drv, &mut q));
    // driver asks for a call only after used index passes 3
    drv.set_used_event(3);
    assert!(!complete(&mut drv, &mut q)); // used 2
    assert!(!complete(&mut drv, &mut q)); // used 3
    assert!(complete(&mut drv, &mut q)); // used 4 crosses event 3
    assert!(!complete(&mut drv, &mut q));
}

#[test]
fn test_split_flags_no_interrupt_suppresses_calls() {
    let (m, mut drv, mut q) = setup(16, false);
    let mut c = Chain::default();
    drv.set_avail_flags(VRING_AVAIL_F_NO_INTERRUPT);
    drv.send_tx(b"x").unwrap();
    q.pop(&m.mem, &mut c).unwrap();
    q.add_used(&m.mem, c.head(), 0).unwrap();
    q.publish_used(&m.mem).unwrap();
    assert!(!q.needs_notification(&m.mem).unwrap());
    drv.set_avail_flags(0);
    assert!(q.needs_notification(&m.mem).unwrap());
}

#[test]
fn test_split_enable_notification_writes_avail_event_and_reports_race() {
    let (m, mut drv, mut q) = setup(16, true);
    let mut c = Chain::default();
    drv.send_tx(b"x").unwrap();
    q.pop(&m.mem, &mut c).unwrap();
    assert!(!q.enable_notification(&m.mem).unwrap());
    assert_eq!(drv.avail_event(), 1);
    drv.send_tx(b"y").unwrap();
    assert!(
        q.enable_notification(&m.mem).unwrap(),
        "new work seen after enabling"
    );
}

#[test]
fn test_split_disable_notification_sets_no_notify_flag() {
    let (m, _drv, mut q) = setup(16, false);
    q.disable_notification(&m.mem).unwrap();
    assert_eq!(_drv.used_flags(), VRING_USED_F_NO_NOTIFY);
    q.enable_notification(&m.mem).unwrap();
    assert_eq!(_drv.used_flags(), 0);
}

#[test]
fn test_split_rewind_repops_same_chain() {
    let (m, mut drv, mut q) = setup(16, false);
    let mut c = Chain::default();
    drv.post_rx(2, 100);
    let mark = q.mark();
    q.pop(&m.mem, &mut c).unwrap();
    let first = c.head();
    q.pop(&m.mem, &mut c).unwrap();
    q.rewind(mark);
    q.pop(&m.mem, &mut c).unwrap();
    assert_eq!(c.head(), first);
    assert_eq!(c.writable_len(), 100);
}

#[test]
fn test_split_index_wraps_past_u16() {
    let (m, mut drv, _) = setup(4, false);
    // start both sides near the u16 wrap
    let l = drv.layout;
    drv.set_avail_idx(65534);
    m.mem.write_u16(l.used + 2, 65534).unwrap();
    let _ = drv.used();
    let mut q = SplitQueue::new(
        QueueConfig {
            size: 4,
            desc: l.desc,
            avail: l.avail,
            used: l.used,
            base: 65534,
            event_idx: false,
            indirect: false,
            ..Default::default()
        },
        &m.mem,
    )
    .unwrap();
    let mut c = Chain::default();
    for _ in 0..6 {
        let h = drv.send_tx(b"wrap").unwrap();
        assert!(q.pop(&m.mem, &mut c).unwrap());
        assert_eq!(c.head(), h);
        q.add_used(&m.mem, h, 0).unwrap();
        q.publish_used(&m.mem).unwrap();
        for (id, _) in drv.used() {
            drv.complete_tx(id);
        }
    }
    assert_eq!(q.next_avail(), 4);
}

#[test]
fn test_chain_write_at_spans_segments() {
    let (m, mut drv, mut q) = setup(16, false);
    drv.post_rx(1, 5000); // 3 descriptors of 2048
    let mut c = Chain::default();
    q.pop(&m.mem, &mut c).unwrap();
    let data: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
    assert!(c.write_at(&m.mem, 1000, &data));
    assert!(!c.write_at(&m.mem, 4000, &data), "past the end");
    q.add_used(&m.mem, c.head(), 4000).unwrap();
    q.publish_used(&m.mem).unwrap();
    let (id, len) = drv.used()[0];
    let got = drv.take_rx(id, len);
    assert_eq!(&got[1000..4000], &data[..]);
}

/// What `pop` takes, `n` times, as the `Single`s `pop_batch` would have
/// taken: each must be a good one-buffer chain (either layout).
pub(crate) fn singles_of(mut pop: impl FnMut(&mut Chain) -> bool, n: usize) -> Vec<Single> {
    let mut c = Chain::default();
    (0..n)
        .map(|_| {
            assert!(pop(&mut c));
            assert_eq!((c.descs(), c.error(), c.segments().len()), (1, None, 1));
            let s = c.segments()[0];
            Single {
                addr: s.addr,
                len: s.len,
                id: c.head(),
            }
        })
        .collect()
}

fn split_singles(q: &mut SplitQueue, m: &TestMemory, n: usize) -> Vec<Single> {
    singles_of(|c| q.pop(&m.mem, c).unwrap(), n)
}

#[test]
fn test_split_pop_batch_takes_what_pop_takes_across_index_wraps() {
    let (m, mut drv, mut q) = setup(8, true);
    let (m2, mut drv2, mut q2) = setup(8, true);
    let mut batch = [Single::default(); BATCH];
    // 5 chains a round on a ring of 8: batches start at every slot and
    // cross the end of the avail ring
    for round in 0..40u32 {
        let len = 100 + round;
        // 5 posted: one batch, then 1 left (no second batch)
        assert_eq!(drv.post_rx(5, len), 5);
        assert_eq!(drv2.post_rx(5, len), 5);
        assert!(
            q.pop_batch(&m.mem, true, &mut batch).unwrap(),
            "round {round}"
        );
        assert_eq!(
            batch.to_vec(),
            split_singles(&mut q2, &m2, 4),
            "round {round}"
        );
        assert!(!q.pop_batch(&m.mem, true, &mut batch).unwrap());
        let last = split_singles(&mut q, &m, 1);
        assert_eq!(last, split_singles(&mut q2, &m2, 1));
        // q completes the batch as a group (add_used_singles), q2 one by
        // one; lengths differ per chain: the drivers see the same entries
        let lens: Vec<u32> = (0..BATCH as u32).map(|k| 8 + k + round).collect();
        q.add_used_singles(&m.mem, &batch, &lens).unwrap();
        for (s, &l) in batch.iter().zip(&lens) {
            q2.add_used(&m2.mem, s.id, l).unwrap();
        }
        for s in &last {
            q.add_used(&m.mem, s.id, 8).unwrap();
            q2.add_used(&m2.mem, s.id, 8).unwrap();
        }
        q.publish_used(&m.mem).unwrap();
        q2.publish_used(&m2.mem).unwrap();
        let (used, used2) = (drv.used(), drv2.used());
        assert_eq!(used.len(), 5, "round {round}");
        assert_eq!(used, used2, "round {round}");
        assert_eq!(
            used[..BATCH].iter().map(|u| u.1).collect::<Vec<_>>(),
            lens,
            "round {round}"
        );
        for (d, used) in [(&mut drv, used), (&mut drv2, used2)] {
            for (id, l) in used {
                d.take_rx(id, l);
            }
        }
    }
    assert_eq!(q.next_avail(), q2.next_avail());
}

#[test]
fn test_split_pop_batch_declines_and_takes_nothing() {
    let mut batch = [Single::default(); BATCH];
    let w = VRING_DESC_F_WRITE;
    // (flags, addr, len) of four one-descriptor chains at heads 0..4
    let cases: Vec<(Vec<(u16, u64)>, &str)> = vec![
        (vec![(w, 0); 3], "only 3 available"),
        (vec![(w, 0), (0, 0), (w, 0), (w, 0)], "one device-readable"),
        (
            vec![(w, 0), (w, 0), (w | VRING_DESC_F_INDIRECT, 0), (w, 0)],
            "indirect",
        ),
        (
            vec![(w, 0), (w | VRING_DESC_F_NEXT, 0), (w, 0), (w, 0)],
            "a chain",
        ),
        (vec![(w, 0), (w, 1 << 40), (w, 0), (w, 0)], "outside memory"),
    ];
    for (descs, why) in cases {
        let (m, mut drv, mut q) = setup(16, false);
        for (i, &(flags, addr)) in descs.iter().enumerate() {
            let i = i as u16;
            let d = RawDesc {
                addr: if addr == 0 { drv.buf_addr(i) } else { addr },
                len: 64,
                flags,
                next: 8, // a valid index, for the chain case
            };
            drv.push_raw(&[(i, d)], i);
        }
        assert!(!q.pop_batch(&m.mem, true, &mut batch).unwrap(), "{why}");
        let mut c = Chain::default();
        assert!(q.pop(&m.mem, &mut c).unwrap(), "{why}: took something");
        assert_eq!(c.head(), 0, "{why}");
    }
    // a head out of range: declined, and pop reports it
    let (m, mut drv, mut q) = setup(16, false);
    drv.post_rx(3, 64);
    drv.push_raw(&[], 16);
    assert!(!q.pop_batch(&m.mem, true, &mut batch).unwrap());
    assert_eq!(split_singles(&mut q, &m, 3).len(), 3);
    let mut c = Chain::default();
    assert!(matches!(
        q.pop(&m.mem, &mut c),
        Err(QueueError::InvalidHead(16))
    ));
    // the right buffers asked for the other direction; then unpop
    let (m, mut drv, mut q) = setup(16, false);
    drv.post_rx(4, 64);
    assert!(!q.pop_batch(&m.mem, false, &mut batch).unwrap());
    assert!(q.pop_batch(&m.mem, true, &mut batch).unwrap());
    let all = batch;
    q.unpop_batch(2);
    assert_eq!(split_singles(&mut q, &m, 2), all[2..].to_vec());
    assert!(!q.pop(&m.mem, &mut c).unwrap());
}
