//! Split-ring walker, used writer, TX path and RX mergeable writer on a
//! guest-written ring. Liveness oracle: when the TX ring reports Idle, every
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
    let m = mem();
    let g = &m.mem;
    let mut inp = Input(data);
    let head = inp.take(4);
    if head.len() < 4 {
        return;
    }
    let size = 1u16 << (head[0] % 6); // 1..32
    let features = (u64::from(head[1]) << 28) | (1 << 32) | (u64::from(head[2] & 1) << 15);
    let cfg = NetConfig::from_features(features);
    let n = u64::from(size);
    // layout: TX ring at BASE, RX ring at BASE + 64 KiB, buffers after
    let rings = [BASE, BASE + 0x10000];
    g.write(BASE, &vec![0u8; 0x20000]).unwrap();
    for &r in &rings {
        let (desc, avail) = (r, r + 16 * n);
        let d = inp.take((16 * n) as usize).to_vec();
        g.write(desc, &d).unwrap();
        let a = inp.take((6 + 2 * n) as usize).to_vec();
        g.write(avail, &a).unwrap();
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
        used: (r + 16 * n + 6 + 2 * n + 3) & !3,
        base: 0,
        event_idx: cfg.event_idx,
        indirect: cfg.indirect,
        ..Default::default()
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
