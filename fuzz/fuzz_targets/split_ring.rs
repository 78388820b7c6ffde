//! Split-ring walker, used writer, TX path and RX mergeable writer on a
//! guest-written ring. Liveness oracle: when the TX ring reports Idle, every
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
    fill_buffers(g, &mut inp);
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
    let (Ok(tx), Ok(rx)) = (Queue::new(qcfg(rings[0]), g), Queue::new(qcfg(rings[1]), g)) else {
        return;
    };
    run(g, cfg, tx, rx);
});
