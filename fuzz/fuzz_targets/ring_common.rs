//! Shared by the split_ring and packed_ring targets: the guest memory, the
//! input reader and the run with its liveness oracle.

use std::sync::OnceLock;

use vhostd_api::QueueStats;
use vhostd_backend::Loopback;
use vhostd_mem::GuestMem;
use vhostd_net::{NetConfig, QueuePair, Status};
use vhostd_testkit::TestMemory;
use vhostd_virtq::Queue;

pub const BASE: u64 = 0x10_0000;
const MEM: u64 = 1 << 20;

pub fn mem() -> &'static TestMemory {
    static M: OnceLock<TestMemory> = OnceLock::new();
    M.get_or_init(|| TestMemory::new(MEM))
}

pub struct Input<'a>(pub &'a [u8]);
impl Input<'_> {
    pub fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

/// The rest of the input becomes the buffer contents the descriptors may
/// point at; every input starts from the same memory (no state from earlier
/// inputs).
pub fn fill_buffers(g: &GuestMem, inp: &mut Input) {
    g.write(BASE + 0x20000, &[0u8; 4096]).unwrap();
    let rest = inp.take(4096).to_vec();
    g.write(BASE + 0x20000, &rest).unwrap();
}

/// Runs TX and RX a few times over loopback. Liveness oracle: when TX
/// reports Idle, every chain it took was completed exactly once (the
/// device's own next_used equals its next_avail; not guest memory, which
/// the guest's RX buffers may overwrite); otherwise the ring reported an
/// error (and would be stopped).
pub fn run(g: &GuestMem, cfg: NetConfig, tx: Queue, rx: Queue) {
    let mut qp = QueuePair::new(Box::new(Loopback::new()));
    qp.configure(cfg).unwrap();
    qp.set_tx(Some(tx));
    qp.set_rx(Some(rx));
    let mut st = QueueStats::default();
    for _ in 0..4 {
        match qp.process_tx(g, &mut st) {
            Ok(out) if out.status == Status::Idle => {
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
}
