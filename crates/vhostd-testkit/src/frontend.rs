//! A vhost-user front-end and a fake virtio-net guest on top of it.

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vhostd_mem::{GuestMem, RegionSpec};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::driver::{DriverLayout, FakeDriver};
use crate::packed::{Driver, PackedDriver};

/// The front-end's "virtual address" of guest-physical 0 in tests: ring
/// addresses are sent as `gpa + VA_OFFSET`, as QEMU sends its own VAs.
pub const VA_OFFSET: u64 = 0x7f00_0000_0000;
/// Guest-physical base of test memory (non-zero on purpose).
pub const GPA_BASE: u64 = 0x10_0000;

pub const VIRTIO_F_RING_PACKED: u64 = 1 << 34;
pub const VIRTIO_F_IN_ORDER: u64 = 1 << 35;
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
pub const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << 28;
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;
pub const VHOST_USER_F_PROTOCOL_FEATURES: u64 = 1 << 30;
pub const VIRTIO_NET_F_MRG_RXBUF: u64 = 1 << 15;
pub const VIRTIO_NET_F_MQ: u64 = 1 << 22;

/// Guest RAM in a memfd.
#[derive(Debug)]
pub struct TestMemory {
    pub file: Arc<File>,
    pub mem: Arc<GuestMem>,
    pub size: u64,
}

impl TestMemory {
    pub fn new(size: u64) -> Self {
        let f = memfd::MemfdOptions::default()
            .create("vhostd-test-guest")
            .unwrap()
            .into_file();
        f.set_len(size).unwrap();
        let file = Arc::new(f);
        let mem = GuestMem::from_specs(vec![RegionSpec {
            guest_phys_addr: GPA_BASE,
            memory_size: size,
            user_addr: GPA_BASE + VA_OFFSET,
            mmap_offset: 0,
            file: file.clone(),
        }])
        .unwrap();
        TestMemory {
            file,
            mem: Arc::new(mem),
            size,
        }
    }

    pub fn region_info(&self) -> VhostUserMemoryRegionInfo {
        VhostUserMemoryRegionInfo {
            guest_phys_addr: GPA_BASE,
            memory_size: self.size,
            userspace_addr: GPA_BASE + VA_OFFSET,
            mmap_offset: 0,
            mmap_handle: self.file.as_raw_fd(),
        }
    }
}

/// The vhost-user front-end half (what QEMU does).
pub struct FakeFrontend {
    pub fe: Frontend,
}

impl std::fmt::Debug for FakeFrontend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FakeFrontend")
    }
}

impl FakeFrontend {
    pub fn new(stream: UnixStream, max_queues: u64) -> Self {
        FakeFrontend {
            fe: Frontend::from_stream(stream, max_queues),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct GuestOptions {
    pub queue_pairs: usize,
    pub queue_size: u16,
    pub buf_size: u32,
    /// Virtio features the driver is willing to ack (masked with the offer).
    pub features: u64,
    pub mem_size: u64,
    pub rx_buffers: usize,
    /// Set up a control virtqueue (index 2 * queue_pairs) too.
    pub ctrl_vq: bool,
    /// Ask for packed virtqueues (VIRTIO_F_RING_PACKED); the data queues
    /// then use [`PackedDriver`]s (the control queue stays split-only).
    pub packed: bool,
}

impl Default for GuestOptions {
    fn default() -> Self {
        GuestOptions {
            queue_pairs: 1,
            queue_size: 256,
            buf_size: 2048,
            features: VIRTIO_F_VERSION_1
                | VIRTIO_RING_F_INDIRECT_DESC
                | VIRTIO_RING_F_EVENT_IDX
                | VHOST_USER_F_PROTOCOL_FEATURES
                | VIRTIO_NET_F_MRG_RXBUF
                | VIRTIO_NET_F_MQ,
            mem_size: 16 << 20,
            rx_buffers: 128,
            ctrl_vq: false,
            packed: false,
        }
    }
}

/// A virtio-net guest: front-end plus one RX and one TX driver per pair.
#[derive(Debug)]
pub struct FakeGuest {
    pub frontend: FakeFrontend,
    pub memory: TestMemory,
    pub rx: Vec<Driver>,
    pub tx: Vec<Driver>,
    /// calls[2*qp] = RX call, calls[2*qp+1] = TX call.
    pub calls: Vec<EventFd>,
    pub kicks: Vec<EventFd>,
    pub features: u64,
    pub opts: GuestOptions,
    /// The control queue's driver (with `ctrl_vq`).
    pub ctrl: Option<FakeDriver>,
}

impl FakeGuest {
    /// Drives the whole vhost-user set-up over `stream`, then posts RX buffers.
    pub fn connect(stream: UnixStream, opts: GuestOptions) -> Self {
        let nq = 2 * opts.queue_pairs + usize::from(opts.ctrl_vq);
        let mut frontend = FakeFrontend::new(stream, nq as u64);
        let fe = &mut frontend.fe;
        fe.set_owner().unwrap();
        let offered = fe.get_features().unwrap();
        let want = opts.features | if opts.packed { VIRTIO_F_RING_PACKED } else { 0 };
        let features = offered & want;
        assert!(
            !opts.packed || features & VIRTIO_F_RING_PACKED != 0,
            "packed ring not offered"
        );
        assert!(
            !(opts.packed && opts.ctrl_vq),
            "the test kit's control queue is split only"
        );
        fe.set_features(features).unwrap();
        let proto = features & VHOST_USER_F_PROTOCOL_FEATURES != 0;
        if proto {
            let pf = fe.get_protocol_features().unwrap();
            let want = VhostUserProtocolFeatures::MQ
                | VhostUserProtocolFeatures::REPLY_ACK
                | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS;
            fe.set_protocol_features(pf & want).unwrap();
            if pf.contains(VhostUserProtocolFeatures::REPLY_ACK) {
                // every request waits for the daemon's answer: tests see
                // the effect of a message as soon as the call returns
                fe.set_hdr_flags(vhost::vhost_user::message::VhostUserHeaderFlag::NEED_REPLY);
            }
            if pf.contains(VhostUserProtocolFeatures::MQ) {
                assert!(fe.get_queue_num().unwrap() >= nq as u64);
            }
        }
        let memory = TestMemory::new(opts.mem_size);
        fe.set_mem_table(&[memory.region_info()]).unwrap();
        let mut drivers = Vec::new();
        let mut calls = Vec::new();
        let mut kicks = Vec::new();
        let mut next = GPA_BASE;
        for q in 0..nq {
            let (layout, end) = DriverLayout::at(next, opts.queue_size, opts.buf_size);
            next = end;
            assert!(end <= GPA_BASE + opts.mem_size, "test memory too small");
            let drv = if opts.packed {
                Driver::Packed(PackedDriver::new(memory.mem.clone(), layout))
            } else {
                let mut d = FakeDriver::new(memory.mem.clone(), layout);
                d.set_in_order(features & VIRTIO_F_IN_ORDER != 0);
                Driver::Split(d)
            };
            fe.set_vring_num(q, opts.queue_size).unwrap();
            fe.set_vring_addr(
                q,
                &VringConfigData {
                    queue_max_size: opts.queue_size,
                    queue_size: opts.queue_size,
                    flags: 0,
                    desc_table_addr: layout.desc + VA_OFFSET,
                    used_ring_addr: layout.used + VA_OFFSET,
                    avail_ring_addr: layout.avail + VA_OFFSET,
                    log_addr: None,
                },
            )
            .unwrap();
            // packed: avail index 0 with wrap counter 1 (DPDK's encoding)
            fe.set_vring_base(q, if opts.packed { 0x8000 } else { 0 })
                .unwrap();
            let call = EventFd::new(EFD_NONBLOCK).unwrap();
            let kick = EventFd::new(EFD_NONBLOCK).unwrap();
            fe.set_vring_call(q, &call).unwrap();
            fe.set_vring_kick(q, &kick).unwrap();
            if proto {
                fe.set_vring_enable(q, true).unwrap();
            }
            drivers.push(drv);
            calls.push(call);
            kicks.push(kick);
        }
        let mut rx = Vec::new();
        let mut tx = Vec::new();
        let ctrl = if opts.ctrl_vq {
            drivers.pop().map(|d| match d {
                Driver::Split(d) => d,
                Driver::Packed(_) => unreachable!(),
            })
        } else {
            None
        };
        for (i, d) in drivers.into_iter().enumerate() {
            if i % 2 == 0 {
                rx.push(d);
            } else {
                tx.push(d);
            }
        }
        let mut g = FakeGuest {
            frontend,
            memory,
            rx,
            tx,
            calls,
            kicks,
            features,
            opts,
            ctrl,
        };
        for qp in 0..opts.queue_pairs {
            g.refill_rx(qp, opts.rx_buffers);
        }
        g
    }

    /// Virtio-net header length for the negotiated features.
    pub fn hdr_len(&self) -> usize {
        if self.features & (VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MRG_RXBUF) != 0 {
            12
        } else {
            10
        }
    }

    pub fn refill_rx(&mut self, qp: usize, n: usize) -> usize {
        let len = if self.features & VIRTIO_NET_F_MRG_RXBUF != 0 {
            self.opts.buf_size
        } else {
            (65550u32).min(self.opts.buf_size * 40)
        };
        let posted = self.rx[qp].post_rx(n, len);
        self.kicks[2 * qp].write(1).unwrap();
        posted
    }

    /// Sends one frame (a zeroed virtio-net header is prepended) and kicks.
    pub fn send(&mut self, qp: usize, frame: &[u8]) -> bool {
        let mut pkt = vec![0u8; self.hdr_len()];
        pkt.extend_from_slice(frame);
        self.send_raw(qp, &pkt)
    }

    /// Sends header + frame exactly as given and kicks.
    pub fn send_raw(&mut self, qp: usize, pkt: &[u8]) -> bool {
        let ok = self.tx[qp].send_tx(pkt).is_some();
        self.kicks[2 * qp + 1].write(1).unwrap();
        ok
    }

    /// Frees completed TX chains; returns how many.
    pub fn reap_tx(&mut self, qp: usize) -> usize {
        let used = self.tx[qp].used();
        for (id, _) in &used {
            self.tx[qp].complete_tx(*id);
        }
        used.len()
    }

    /// Collects received frames (headers stripped) and reposts buffers.
    pub fn recv(&mut self, qp: usize) -> Vec<Vec<u8>> {
        let hl = self.hdr_len();
        let mrg = self.features & VIRTIO_NET_F_MRG_RXBUF != 0;
        let used = self.rx[qp].used();
        let mut frames = Vec::new();
        let mut it = used.into_iter();
        while let Some((id, len)) = it.next() {
            let mut data = self.rx[qp].take_rx(id, len);
            if data.len() < hl {
                frames.push(Vec::new());
                continue;
            }
            let nbuf = if mrg {
                u16::from_le_bytes([data[10], data[11]]).max(1)
            } else {
                1
            };
            for _ in 1..nbuf {
                if let Some((id2, len2)) = it.next() {
                    let more = self.rx[qp].take_rx(id2, len2);
                    data.extend_from_slice(&more);
                }
            }
            frames.push(data[hl..].to_vec());
        }
        let n = frames.len().max(1);
        if !frames.is_empty() {
            self.refill_rx(qp, n * 2);
        }
        frames
    }

    /// Waits up to `timeout` for `n` frames on `qp`.
    pub fn recv_n(&mut self, qp: usize, n: usize, timeout: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < n && Instant::now() < deadline {
            let got = self.recv(qp);
            if got.is_empty() {
                std::thread::sleep(Duration::from_millis(1));
            }
            out.extend(got);
        }
        out
    }

    /// Waits until `pred` holds or `timeout` passes.
    pub fn wait_for(timeout: Duration, mut pred: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if pred() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        pred()
    }

    /// Sends a control command and waits for its answer: (ack, reply data).
    pub fn ctrl_cmd(&mut self, class: u8, cmd: u8, data: &[u8], reply_len: usize) -> (u8, Vec<u8>) {
        let q = 2 * self.opts.queue_pairs;
        let drv = self.ctrl.as_mut().expect("guest made without ctrl_vq");
        let mut out = vec![class, cmd];
        out.extend_from_slice(data);
        let before = drv.used_idx();
        let (_, wdesc) = drv.send_rw(&out, reply_len as u32 + 1).unwrap();
        self.kicks[q].write(1).unwrap();
        let drv = self.ctrl.as_mut().unwrap();
        assert!(
            Self::wait_for(Duration::from_secs(5), || drv.used_idx() != before),
            "no answer on the control queue"
        );
        let used = drv.used();
        let (id, len) = used[0];
        assert_eq!(
            len as usize,
            reply_len + 1,
            "used length covers reply and ack"
        );
        let buf = drv.read_buf(wdesc, reply_len + 1);
        drv.complete_tx(id);
        (buf[reply_len], buf[..reply_len].to_vec())
    }

    /// Number of calls received on queue `q` since the last look (drains).
    pub fn take_calls(&self, q: usize) -> u64 {
        self.calls[q].read().unwrap_or(0)
    }
}
