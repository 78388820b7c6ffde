//! Driver side of a split virtqueue (virtio 1.2 §2.7), for tests.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use vhostd_mem::GuestMem;

pub const F_NEXT: u16 = 1;
pub const F_WRITE: u16 = 2;
pub const F_INDIRECT: u16 = 4;

/// Where one queue's rings and buffers live in guest memory.
#[derive(Debug, Clone, Copy)]
pub struct DriverLayout {
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    /// Start of the buffer area: descriptor i owns `[data + i*buf_size, +buf_size)`.
    pub data: u64,
    pub buf_size: u32,
}

impl DriverLayout {
    /// Lays a queue out at `base`: rings then buffers. Returns the layout and
    /// the first byte after it.
    pub fn at(base: u64, size: u16, buf_size: u32) -> (Self, u64) {
        let n = u64::from(size);
        let desc = base;
        let avail = desc + 16 * n;
        let used = (avail + 6 + 2 * n + 4095) & !4095;
        let data = (used + 6 + 8 * n + 4095) & !4095;
        let end = data + n * u64::from(buf_size);
        (
            DriverLayout {
                size,
                desc,
                avail,
                used,
                data,
                buf_size,
            },
            end,
        )
    }
}

/// A raw descriptor, for hostile rings.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawDesc {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

#[derive(Debug)]
pub struct FakeDriver {
    mem: Arc<GuestMem>,
    pub layout: DriverLayout,
    avail_idx: u16,
    last_used: u16,
    free: Vec<u16>,
    inflight: HashMap<u16, Vec<u16>>,
    /// Heads in the order they were made available.
    order: VecDeque<u16>,
    /// VIRTIO_F_IN_ORDER: a used element may stand for every chain up to
    /// its id (§2.7.9); see [`FakeDriver::set_in_order`].
    in_order: bool,
}

impl FakeDriver {
    pub fn new(mem: Arc<GuestMem>, layout: DriverLayout) -> Self {
        let d = FakeDriver {
            mem,
            layout,
            avail_idx: 0,
            last_used: 0,
            free: (0..layout.size).rev().collect(),
            inflight: HashMap::new(),
            order: VecDeque::new(),
            in_order: false,
        };
        // clean rings
        let n = u64::from(layout.size);
        d.mem
            .write(layout.desc, &vec![0u8; (16 * n) as usize])
            .unwrap();
        d.mem
            .write(layout.avail, &vec![0u8; (6 + 2 * n) as usize])
            .unwrap();
        d.mem
            .write(layout.used, &vec![0u8; (6 + 8 * n) as usize])
            .unwrap();
        d
    }

    pub fn mem(&self) -> &Arc<GuestMem> {
        &self.mem
    }

    /// Reads used elements as an IN_ORDER driver does: an element whose id
    /// is not the oldest outstanding chain completes every chain up to it
    /// (each earlier one reported with len 0). Without it, any id further
    /// on than the oldest is taken as an out-of-order completion.
    pub fn set_in_order(&mut self, on: bool) {
        self.in_order = on;
    }

    pub fn free_descs(&self) -> usize {
        self.free.len()
    }

    pub fn write_desc(&self, i: u16, d: RawDesc) {
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&d.addr.to_le_bytes());
        raw[8..12].copy_from_slice(&d.len.to_le_bytes());
        raw[12..14].copy_from_slice(&d.flags.to_le_bytes());
        raw[14..].copy_from_slice(&d.next.to_le_bytes());
        self.mem
            .write(self.layout.desc + 16 * u64::from(i), &raw)
            .unwrap();
    }

    pub fn buf_addr(&self, i: u16) -> u64 {
        self.layout.data + u64::from(i) * u64::from(self.layout.buf_size)
    }

    /// Publishes `head` in the avail ring and bumps avail.idx (release).
    pub fn publish(&mut self, head: u16) {
        let slot = u64::from(self.avail_idx % self.layout.size);
        self.mem
            .write_u16(self.layout.avail + 4 + 2 * slot, head)
            .unwrap();
        self.order.push_back(head);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem
            .store_u16(self.layout.avail + 2, self.avail_idx, Ordering::Release)
            .unwrap();
    }

    /// Sets avail.idx to any value (hostile: index jumps).
    pub fn set_avail_idx(&mut self, v: u16) {
        self.avail_idx = v;
        self.mem
            .store_u16(self.layout.avail + 2, v, Ordering::Release)
            .unwrap();
    }

    pub fn avail_idx(&self) -> u16 {
        self.avail_idx
    }

    /// Puts `frame` in one or more readable descriptors and makes it available.
    pub fn send_tx(&mut self, frame: &[u8]) -> Option<u16> {
        let bs = self.layout.buf_size as usize;
        let parts = frame.len().div_ceil(bs).max(1);
        if self.free.len() < parts {
            return None;
        }
        let ids: Vec<u16> = (0..parts).map(|_| self.free.pop().unwrap()).collect();
        for (k, &i) in ids.iter().enumerate() {
            let chunk = &frame[(k * bs).min(frame.len())..((k + 1) * bs).min(frame.len())];
            self.mem.write(self.buf_addr(i), chunk).unwrap();
            let last = k + 1 == parts;
            self.write_desc(
                i,
                RawDesc {
                    addr: self.buf_addr(i),
                    len: chunk.len() as u32,
                    flags: if last { 0 } else { F_NEXT },
                    next: if last { 0 } else { ids[k + 1] },
                },
            );
        }
        self.inflight.insert(ids[0], ids.clone());
        self.publish(ids[0]);
        Some(ids[0])
    }

    /// Sends `frame` through an indirect table placed in the head's buffer.
    pub fn send_tx_indirect(&mut self, frame: &[u8], pieces: usize) -> Option<u16> {
        let bs = self.layout.buf_size as usize;
        if self.free.len() < pieces + 1 || frame.len() > bs * pieces || pieces * 16 > bs {
            return None;
        }
        let head = self.free.pop().unwrap();
        let data: Vec<u16> = (0..pieces).map(|_| self.free.pop().unwrap()).collect();
        let table = self.buf_addr(head);
        let per = frame.len().div_ceil(pieces);
        for (k, &i) in data.iter().enumerate() {
            let chunk = &frame[(k * per).min(frame.len())..((k + 1) * per).min(frame.len())];
            self.mem.write(self.buf_addr(i), chunk).unwrap();
            let last = k + 1 == pieces;
            let d = RawDesc {
                addr: self.buf_addr(i),
                len: chunk.len() as u32,
                flags: if last { 0 } else { F_NEXT },
                next: if last { 0 } else { (k + 1) as u16 },
            };
            let mut raw = [0u8; 16];
            raw[..8].copy_from_slice(&d.addr.to_le_bytes());
            raw[8..12].copy_from_slice(&d.len.to_le_bytes());
            raw[12..14].copy_from_slice(&d.flags.to_le_bytes());
            raw[14..].copy_from_slice(&d.next.to_le_bytes());
            self.mem.write(table + 16 * k as u64, &raw).unwrap();
        }
        self.write_desc(
            head,
            RawDesc {
                addr: table,
                len: (16 * pieces) as u32,
                flags: F_INDIRECT,
                next: 0,
            },
        );
        let mut all = vec![head];
        all.extend(data);
        self.inflight.insert(head, all);
        self.publish(head);
        Some(head)
    }

    /// Posts `n` writable buffers of `len` bytes each (one descriptor each,
    /// or `len` split over descriptors of at most buf_size).
    pub fn post_rx(&mut self, n: usize, len: u32) -> usize {
        let bs = self.layout.buf_size;
        let parts = len.div_ceil(bs).max(1) as usize;
        let mut posted = 0;
        for _ in 0..n {
            if self.free.len() < parts {
                break;
            }
            let ids: Vec<u16> = (0..parts).map(|_| self.free.pop().unwrap()).collect();
            let mut left = len;
            for (k, &i) in ids.iter().enumerate() {
                let l = left.min(bs);
                left -= l;
                let last = k + 1 == parts;
                self.write_desc(
                    i,
                    RawDesc {
                        addr: self.buf_addr(i),
                        len: l,
                        flags: F_WRITE | if last { 0 } else { F_NEXT },
                        next: if last { 0 } else { ids[k + 1] },
                    },
                );
            }
            let head = ids[0];
            self.inflight.insert(head, ids);
            self.publish(head);
            posted += 1;
        }
        posted
    }

    /// A request/response chain: `out` in one readable descriptor, then one
    /// writable descriptor of `in_len` bytes. Returns (head, writable desc).
    pub fn send_rw(&mut self, out: &[u8], in_len: u32) -> Option<(u16, u16)> {
        if self.free.len() < 2
            || out.len() > self.layout.buf_size as usize
            || in_len > self.layout.buf_size
        {
            return None;
        }
        let a = self.free.pop().unwrap();
        let b = self.free.pop().unwrap();
        self.mem.write(self.buf_addr(a), out).unwrap();
        self.mem
            .write(self.buf_addr(b), &vec![0xeeu8; in_len as usize])
            .unwrap();
        self.write_desc(
            a,
            RawDesc {
                addr: self.buf_addr(a),
                len: out.len() as u32,
                flags: F_NEXT,
                next: b,
            },
        );
        self.write_desc(
            b,
            RawDesc {
                addr: self.buf_addr(b),
                len: in_len,
                flags: F_WRITE,
                next: 0,
            },
        );
        self.inflight.insert(a, vec![a, b]);
        self.publish(a);
        Some((a, b))
    }

    /// Reads `len` bytes of descriptor `i`'s buffer.
    pub fn read_buf(&self, i: u16, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        self.mem.read(self.buf_addr(i), &mut b).unwrap();
        b
    }

    /// Makes `head` available with descriptors written by hand (hostile).
    pub fn push_raw(&mut self, descs: &[(u16, RawDesc)], head: u16) {
        for &(i, d) in descs {
            self.write_desc(i, d);
        }
        self.publish(head);
    }

    pub fn used_idx(&self) -> u16 {
        self.mem
            .load_u16(self.layout.used + 2, Ordering::Acquire)
            .unwrap()
    }

    /// Reads new used entries: (id, len), and frees their descriptors.
    pub fn used(&mut self) -> Vec<(u16, u32)> {
        let idx = self.used_idx();
        let mut out = Vec::new();
        while self.last_used != idx {
            let slot = u64::from(self.last_used % self.layout.size);
            let mut e = [0u8; 8];
            self.mem
                .read(self.layout.used + 4 + 8 * slot, &mut e)
                .unwrap();
            let id = u32::from_le_bytes([e[0], e[1], e[2], e[3]]) as u16;
            let len = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            match self.order.iter().position(|&h| h == id) {
                Some(at) if self.in_order => {
                    // the element at the batch's first slot names its last
                    // chain; the ones before it are used too
                    let left = usize::from(idx.wrapping_sub(self.last_used));
                    assert!(at < left, "in-order batch of {} past used.idx", at + 1);
                    for h in self.order.drain(..at).collect::<Vec<_>>() {
                        out.push((h, 0));
                        self.last_used = self.last_used.wrapping_add(1);
                    }
                    self.order.pop_front();
                }
                Some(at) => {
                    self.order.remove(at);
                }
                None => {}
            }
            out.push((id, len));
            self.last_used = self.last_used.wrapping_add(1);
        }
        out
    }

    /// Frees a used chain's descriptors and returns its data (first `len` bytes
    /// of its writable buffers).
    pub fn take_rx(&mut self, id: u16, len: u32) -> Vec<u8> {
        let ids = self.inflight.remove(&id).unwrap_or_default();
        let mut out = Vec::new();
        let mut left = len as usize;
        for i in &ids {
            let l = left.min(self.layout.buf_size as usize);
            let mut b = vec![0u8; l];
            self.mem.read(self.buf_addr(*i), &mut b).unwrap();
            out.extend_from_slice(&b);
            left -= l;
        }
        self.free.extend(ids);
        out
    }

    /// Frees a completed TX chain.
    pub fn complete_tx(&mut self, id: u16) {
        if let Some(ids) = self.inflight.remove(&id) {
            self.free.extend(ids);
        }
    }

    pub fn set_used_event(&self, v: u16) {
        let n = u64::from(self.layout.size);
        self.mem
            .write_u16(self.layout.avail + 4 + 2 * n, v)
            .unwrap();
    }

    pub fn set_avail_flags(&self, v: u16) {
        self.mem.write_u16(self.layout.avail, v).unwrap();
    }

    pub fn avail_event(&self) -> u16 {
        let n = u64::from(self.layout.size);
        self.mem.read_u16(self.layout.used + 4 + 8 * n).unwrap()
    }

    pub fn used_flags(&self) -> u16 {
        self.mem.read_u16(self.layout.used).unwrap()
    }
}
