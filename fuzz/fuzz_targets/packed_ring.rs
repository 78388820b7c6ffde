//! Packed-ring walker, used writer (with IN_ORDER batches), event
//! suppression, TX path and RX mergeable writer on a guest-written ring. Liveness oracle: when the TX ring reports Idle, every
//! chain it took was completed exactly once (the device's next_used equals
//! its next_avail); otherwise the ring reported an error (and would be
//! stopped). The oracle reads the device's counters, not guest memory: a
//! guest may aim RX buffers at its own rings (the first crash this target
//! found was exactly that, in an earlier memory-based oracle).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vhostd_api::QueueStats;
use vhostd_backend::Loopback;
use vhostd_net::{NetConfig, QueuePair, Status};
use vhostd_testkit::TestMemory;
use vhostd_virtq::{Queue, QueueConfig};

const BASE: u64 = 0x10_0000;
const MEM: u64 = 1 << 20;

fn mem() -> &'static TestMemory {
    static M: OnceLock<TestMemory> = OnceLock::new();
    M.get_or_init(|| TestMemory::new(MEM))
}

struct Input<'a>(&'a [u8]);
impl Input<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

fuzz_target!(|data: &[u8]| {
    // state per input only: the memory is rewritten below
    let m = mem();
    let g = &m.mem;
    let mut inp = Input(data);
    let head = inp.take(4);
    if head.len() < 4 {
        return;
    }
    // packed rings need not be a power of two
    let size = u16::from(head[0] % 32) + 1; // 1..=32
    let features = (u64::from(head[1]) << 28)
        | (1 << 32)
        | (1 << 34)
        | (u64::from(head[2] & 1) << 15)
        | (u64::from((head[2] >> 1) & 1) << 35);
    let cfg = NetConfig::from_features(features);
    let n = u64::from(size);
    // layout: TX ring at BASE, RX ring at BASE + 64 KiB, buffers after
    let rings = [BASE, BASE + 0x10000];
    g.write(BASE, &vec![0u8; 0x20000]).unwrap();
    for &r in &rings {
        // descriptors (with the guest's AVAIL/USED bits) and driver event
        let d = inp.take((16 * n) as usize).to_vec();
        g.write(r, &d).unwrap();
        let a = inp.take(4).to_vec();
        g.write(r + 16 * n, &a).unwrap();
    }
    // the rest: buffer contents the descriptors may point at
    // every input starts from the same memory: no state from earlier inputs
    g.write(BASE + 0x20000, &[0u8; 4096]).unwrap();
    let rest = inp.take(4096).to_vec();
    g.write(BASE + 0x20000, &rest).unwrap();
    let qcfg = |r: u64| QueueConfig {
        size,
        desc: r,
        avail: r + 16 * n,
        used: r + 16 * n + 4,
        // avail 0, wrap 1; used the same (DPDK's encoding)
        base: 0x8000,
        event_idx: cfg.event_idx,
        indirect: cfg.indirect,
        packed: true,
        in_order: cfg.in_order,
    };
    let mut qp = QueuePair::new(Box::new(Loopback::new()));
    qp.configure(cfg).unwrap();
    let (Ok(tx), Ok(rx)) = (Queue::new(qcfg(rings[0]), g), Queue::new(qcfg(rings[1]), g)) else {
        return;
    };
    qp.set_tx(Some(tx));
    qp.set_rx(Some(rx));
    let mut st = QueueStats::default();
    for _ in 0..4 {
        match qp.process_tx(g, &mut st) {
            Ok(out) if out.status == Status::Idle => {
                // The device's own counters, not guest memory: the guest may
                // point RX buffers at its own rings and overwrite used.idx.
                let q = qp.tx().unwrap();
                assert_eq!(q.next_used(), q.next_avail(), "a TX chain taken but not completed exactly once");
            }
            Ok(_) => {}
            Err(_) => break,
        }
        if qp.process_rx(g, &mut st).is_err() {
            break;
        }
    }
});
