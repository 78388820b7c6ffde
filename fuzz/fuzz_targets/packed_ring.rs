//! Packed-ring walker, used writer (with IN_ORDER batches), event
//! suppression, TX path and RX mergeable writer on a guest-written ring. Liveness oracle: when the TX ring reports Idle, every
//! chain it took was completed exactly once (the device's next_used equals
//! its next_avail); otherwise the ring reported an error (and would be
//! stopped). The oracle reads the device's counters, not guest memory: a
//! guest may aim RX buffers at its own rings (the first crash this target
//! found was exactly that, in an earlier memory-based oracle).
#![no_main]

#[path = "ring_common.rs"]
mod ring_common;

use libfuzzer_sys::fuzz_target;
use ring_common::{fill_buffers, mem, run, Input, BASE};
use vhostd_net::NetConfig;
use vhostd_virtq::{Queue, QueueConfig};

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
    fill_buffers(g, &mut inp);
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
    let (Ok(tx), Ok(rx)) = (Queue::new(qcfg(rings[0]), g), Queue::new(qcfg(rings[1]), g)) else {
        return;
    };
    run(g, cfg, tx, rx);
});
