//! Ring micro-benchmarks: device-side cost of taking and completing a burst
//! of 32 chains of 1, 4 and 16 descriptors, split and packed, and of a full
//! TX burst through the data path into a sink.
//!
//! Only the device side is timed (`iter_custom`): the driver side (making
//! the chains available again) runs between timed sections. Run with
//! `cargo bench -p vhostd-bench --bench ring`.

use std::hint::black_box;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vhostd_api::QueueStats;
use vhostd_backend::Sink;
use vhostd_mem::GuestMem;
use vhostd_net::{NetConfig, QueuePair};
use vhostd_testkit::TestMemory;
use vhostd_virtq::{Chain, Queue, QueueConfig};

const BATCH: u16 = 32;
const SIZE: u16 = 1024;
const DESC: u64 = 0x10_0000;
const AVAIL: u64 = 0x20_0000;
const USED: u64 = 0x30_0000;
const DATA: u64 = 0x40_0000;
const BUF: u64 = 128;

/// A driver that keeps one fixed set of chains and only re-publishes them.
struct Driver {
    packed: bool,
    descs: u16,
    /// chains published so far
    n: u64,
}

impl Driver {
    #[allow(clippy::too_many_arguments)]
    fn desc(
        m: &GuestMem,
        slot: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next_or_id: u16,
        packed: bool,
    ) {
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        if packed {
            raw[12..14].copy_from_slice(&next_or_id.to_le_bytes());
            raw[14..].copy_from_slice(&flags.to_le_bytes());
        } else {
            raw[12..14].copy_from_slice(&flags.to_le_bytes());
            raw[14..].copy_from_slice(&next_or_id.to_le_bytes());
        }
        m.write(DESC + 16 * u64::from(slot), &raw).unwrap();
    }

    /// Split: the descriptor table holds SIZE/descs fixed chains; the avail
    /// ring cycles through their heads.
    fn setup_split(m: &GuestMem, descs: u16) {
        for slot in 0..SIZE {
            let last = (slot + 1) % descs == 0;
            let flags = if last { 0 } else { 1 };
            Self::desc(
                m,
                slot,
                DATA + BUF * u64::from(slot),
                64,
                flags,
                slot + 1,
                false,
            );
        }
        let chains = SIZE / descs;
        for i in 0..SIZE {
            m.write_u16(AVAIL + 4 + 2 * u64::from(i), (i % chains) * descs)
                .unwrap();
        }
    }

    /// Makes the next BATCH chains available.
    fn publish(&mut self, m: &GuestMem) {
        if self.packed {
            for _ in 0..BATCH {
                let first = (self.n * u64::from(self.descs)) % u64::from(SIZE);
                let lap = (self.n * u64::from(self.descs)) / u64::from(SIZE);
                let wrap = lap.is_multiple_of(2);
                let avail = if wrap { 1 << 7 } else { 1 << 15 };
                // rest of the chain first, head last
                for k in (0..self.descs).rev() {
                    let slot = u16::try_from(first).unwrap() + k;
                    let last = k + 1 == self.descs;
                    let flags = avail | if last { 0 } else { 1 };
                    Self::desc(m, slot, DATA + BUF * u64::from(slot), 64, flags, 7, true);
                }
                self.n += 1;
            }
        } else {
            self.n += u64::from(BATCH);
            m.store_u16(AVAIL + 2, (self.n % 65536) as u16, Ordering::Release)
                .unwrap();
        }
    }
}

fn queue(m: &GuestMem, packed: bool, in_order: bool) -> Queue {
    Queue::new(
        QueueConfig {
            size: SIZE,
            desc: DESC,
            avail: AVAIL,
            used: USED,
            base: if packed { 0x8000 } else { 0 },
            event_idx: true,
            indirect: true,
            packed,
            in_order,
        },
        m,
    )
    .unwrap()
}

fn bench_pop_complete(c: &mut Criterion) {
    let tm = TestMemory::new(16 << 20);
    let m = &tm.mem;
    let mut g = c.benchmark_group("pop_complete_32");
    g.throughput(Throughput::Elements(u64::from(BATCH)));
    for packed in [false, true] {
        for descs in [1u16, 4, 16] {
            let name = if packed { "packed" } else { "split" };
            g.bench_with_input(BenchmarkId::new(name, descs), &descs, |b, &descs| {
                m.write(DESC, &vec![0u8; 16 * SIZE as usize]).unwrap();
                m.write(USED, &[0u8; 4096]).unwrap();
                m.write(AVAIL, &[0u8; 4096]).unwrap();
                if !packed {
                    Driver::setup_split(m, descs);
                }
                let mut d = Driver {
                    packed,
                    descs,
                    n: 0,
                };
                let mut q = queue(m, packed, false);
                let mut chain = Chain::with_capacity(32);
                b.iter_custom(|iters| {
                    let mut t = Duration::ZERO;
                    for _ in 0..iters {
                        d.publish(m);
                        let t0 = Instant::now();
                        for _ in 0..BATCH {
                            assert!(q.pop(m, &mut chain).unwrap());
                            black_box(chain.readable_len());
                            q.add_used(m, chain.used_ref(), 0).unwrap();
                        }
                        q.publish_used(m).unwrap();
                        black_box(q.needs_notification(m).unwrap());
                        t += t0.elapsed();
                    }
                    t
                });
            });
        }
    }
    g.finish();
}

fn bench_tx_burst(c: &mut Criterion) {
    let tm = TestMemory::new(16 << 20);
    let m = &tm.mem;
    let mut g = c.benchmark_group("tx_burst_32_to_sink_64B");
    g.throughput(Throughput::Elements(u64::from(BATCH)));
    for (name, packed, in_order) in [
        ("split", false, false),
        ("packed", true, false),
        ("packed_in_order", true, true),
    ] {
        g.bench_function(name, |b| {
            m.write(DESC, &vec![0u8; 16 * SIZE as usize]).unwrap();
            m.write(USED, &[0u8; 4096]).unwrap();
            m.write(AVAIL, &[0u8; 4096]).unwrap();
            if !packed {
                Driver::setup_split(m, 1);
            }
            let mut d = Driver {
                packed,
                descs: 1,
                n: 0,
            };
            let mut qp = QueuePair::new(Box::new(Sink::default()));
            // VERSION_1 | EVENT_IDX | INDIRECT (+ PACKED, IN_ORDER)
            let f = (1u64 << 32)
                | (1 << 29)
                | (1 << 28)
                | (u64::from(packed) << 34)
                | (u64::from(in_order) << 35);
            qp.configure(NetConfig::from_features(f)).unwrap();
            qp.set_tx(Some(queue(m, packed, in_order)));
            let mut st = QueueStats::default();
            b.iter_custom(|iters| {
                let mut t = Duration::ZERO;
                for _ in 0..iters {
                    d.publish(m);
                    let t0 = Instant::now();
                    let o = qp.process_tx(m, &mut st).unwrap();
                    t += t0.elapsed();
                    assert_eq!(o.completed, u32::from(BATCH));
                }
                t
            });
        });
    }
    g.finish();
}

criterion_group!(benches, bench_pop_complete, bench_tx_burst);
criterion_main!(benches);
