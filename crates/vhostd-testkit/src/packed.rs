//! Driver side of a packed virtqueue (virtio 1.2 §2.8), for tests.
//!
//! Independent of vhostd's ring code. Ring slot `i` owns the buffer
//! `[data + i*buf_size, +buf_size)`; a chain takes consecutive slots.
//! Used descriptors are read in order; a used id further on than the oldest
//! outstanding buffer completes every buffer before it (IN_ORDER batches,
//! §2.8.9), with length 0 for the skipped ones.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use vhostd_mem::GuestMem;

use crate::driver::{DriverLayout, F_INDIRECT, F_NEXT, F_WRITE};

pub const F_AVAIL: u16 = 1 << 7;
pub const F_USED: u16 = 1 << 15;

/// A raw packed descriptor, for hostile rings.
#[derive(Debug, Clone, Copy, Default)]
pub struct PackedDesc {
    pub addr: u64,
    pub len: u32,
    pub id: u16,
    /// WRITE / NEXT / INDIRECT; AVAIL and USED are set by the driver.
    pub flags: u16,
}

#[derive(Debug)]
struct Outstanding {
    id: u16,
    slot: u16,
    descs: u16,
}

#[derive(Debug)]
pub struct PackedDriver {
    mem: Arc<GuestMem>,
    pub layout: DriverLayout,
    next: u16,
    wrap: bool,
    used_next: u16,
    used_wrap: bool,
    free_descs: u16,
    free_ids: Vec<u16>,
    inflight: VecDeque<Outstanding>,
    /// Used buffers not yet taken: id -> (first slot, descriptors).
    done: HashMap<u16, (u16, u16)>,
}

impl PackedDriver {
    /// `layout.avail` is the driver event area, `layout.used` the device's.
    pub fn new(mem: Arc<GuestMem>, layout: DriverLayout) -> Self {
        let n = u64::from(layout.size);
        mem.write(layout.desc, &vec![0u8; (16 * n) as usize])
            .unwrap();
        mem.write(layout.avail, &[0u8; 4]).unwrap();
        mem.write(layout.used, &[0u8; 4]).unwrap();
        PackedDriver {
            mem,
            layout,
            next: 0,
            wrap: true,
            used_next: 0,
            used_wrap: true,
            free_descs: layout.size,
            free_ids: (0..layout.size).rev().collect(),
            inflight: VecDeque::new(),
            done: HashMap::new(),
        }
    }

    pub fn mem(&self) -> &Arc<GuestMem> {
        &self.mem
    }

    pub fn free_descs(&self) -> usize {
        usize::from(self.free_descs)
    }

    pub fn buf_addr(&self, slot: u16) -> u64 {
        self.layout.data + u64::from(slot) * u64::from(self.layout.buf_size)
    }

    fn desc_addr(&self, slot: u16) -> u64 {
        self.layout.desc + 16 * u64::from(slot)
    }

    fn avail_flags(&self, wrap: bool) -> u16 {
        if wrap {
            F_AVAIL
        } else {
            F_USED
        }
    }

    /// Writes `descs` into consecutive slots and makes them available, the
    /// head's flags last (release). Returns the head slot. No bookkeeping:
    /// hostile tests use it directly.
    pub fn push_raw(&mut self, descs: &[PackedDesc]) -> u16 {
        let head = self.next;
        let mut head_flags = 0;
        for (k, d) in descs.iter().enumerate() {
            let slot = self.next;
            let flags = d.flags | self.avail_flags(self.wrap);
            let mut raw = [0u8; 16];
            raw[..8].copy_from_slice(&d.addr.to_le_bytes());
            raw[8..12].copy_from_slice(&d.len.to_le_bytes());
            raw[12..14].copy_from_slice(&d.id.to_le_bytes());
            if k == 0 {
                head_flags = flags;
                // flags stay as they were until the whole chain is written
                self.mem.write(self.desc_addr(slot), &raw[..14]).unwrap();
            } else {
                raw[14..].copy_from_slice(&flags.to_le_bytes());
                self.mem.write(self.desc_addr(slot), &raw).unwrap();
            }
            self.next += 1;
            if self.next == self.layout.size {
                self.next = 0;
                self.wrap = !self.wrap;
            }
        }
        self.mem
            .store_u16(self.desc_addr(head) + 14, head_flags, Ordering::Release)
            .unwrap();
        head
    }

    fn post(&mut self, bufs: Vec<(u32, u16)>, data: &[u8]) -> Option<u16> {
        // bufs: (len, flags) per slot
        let n = bufs.len() as u16;
        if self.free_descs < n || self.free_ids.is_empty() {
            return None;
        }
        let id = self.free_ids.pop().unwrap();
        let start = self.next;
        let mut descs = Vec::new();
        let mut off = 0usize;
        for (k, &(len, flags)) in bufs.iter().enumerate() {
            let slot = (start + k as u16) % self.layout.size;
            if flags & F_WRITE == 0 {
                let end = (off + len as usize).min(data.len());
                self.mem
                    .write(self.buf_addr(slot), &data[off..end])
                    .unwrap();
                off = end;
            }
            let last = k + 1 == bufs.len();
            descs.push(PackedDesc {
                addr: self.buf_addr(slot),
                len,
                id,
                flags: flags | if last { 0 } else { F_NEXT },
            });
        }
        self.push_raw(&descs);
        self.free_descs -= n;
        self.inflight.push_back(Outstanding {
            id,
            slot: start,
            descs: n,
        });
        Some(id)
    }

    /// Puts `frame` in readable descriptors and makes it available.
    pub fn send_tx(&mut self, frame: &[u8]) -> Option<u16> {
        let bs = self.layout.buf_size as usize;
        let parts = frame.len().div_ceil(bs).max(1);
        let bufs = (0..parts)
            .map(|k| ((frame.len() - k * bs).min(bs) as u32, 0))
            .collect();
        self.post(bufs, frame)
    }

    /// Sends `frame` through an indirect table: table and data both live
    /// in the head slot's buffer (the chain is one ring descriptor).
    pub fn send_tx_indirect(&mut self, frame: &[u8], pieces: usize) -> Option<u16> {
        let bs = self.layout.buf_size as usize;
        if self.free_descs < 1 || frame.len() + 16 * pieces > bs || self.free_ids.is_empty() {
            return None;
        }
        let id = self.free_ids.pop()?;
        let head = self.next;
        let per = frame.len().div_ceil(pieces);
        let table = self.buf_addr(head);
        let mut data = table + 16 * pieces as u64;
        for k in 0..pieces {
            let chunk = &frame[(k * per).min(frame.len())..((k + 1) * per).min(frame.len())];
            self.mem.write(data, chunk).unwrap();
            let mut raw = [0u8; 16];
            raw[..8].copy_from_slice(&data.to_le_bytes());
            raw[8..12].copy_from_slice(&(chunk.len() as u32).to_le_bytes());
            self.mem.write(table + 16 * k as u64, &raw).unwrap();
            data += chunk.len() as u64;
        }
        self.push_raw(&[PackedDesc {
            addr: table,
            len: (16 * pieces) as u32,
            id,
            flags: F_INDIRECT,
        }]);
        self.free_descs -= 1;
        self.inflight.push_back(Outstanding {
            id,
            slot: head,
            descs: 1,
        });
        Some(id)
    }

    /// Posts `n` writable buffers of `len` bytes each.
    pub fn post_rx(&mut self, n: usize, len: u32) -> usize {
        let bs = self.layout.buf_size;
        let parts = len.div_ceil(bs).max(1);
        let mut posted = 0;
        for _ in 0..n {
            let mut left = len;
            let bufs = (0..parts)
                .map(|_| {
                    let l = left.min(bs);
                    left -= l;
                    (l, F_WRITE)
                })
                .collect();
            if self.post(bufs, &[]).is_none() {
                break;
            }
            posted += 1;
        }
        posted
    }

    /// A request/response chain: `out` readable then `in_len` writable.
    pub fn send_rw(&mut self, out: &[u8], in_len: u32) -> Option<u16> {
        self.post(vec![(out.len() as u32, 0), (in_len, F_WRITE)], out)
    }

    /// Reads new used descriptors: (id, len) per buffer, frees their slots.
    pub fn used(&mut self) -> Vec<(u16, u32)> {
        let mut out = Vec::new();
        loop {
            let at = self.desc_addr(self.used_next);
            let flags = self.mem.load_u16(at + 14, Ordering::Acquire).unwrap();
            let a = flags & F_AVAIL != 0;
            let u = flags & F_USED != 0;
            if !(a == self.used_wrap && u == self.used_wrap) {
                break;
            }
            let mut e = [0u8; 6];
            self.mem.read(at + 8, &mut e).unwrap();
            let len = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
            let id = u16::from_le_bytes([e[4], e[5]]);
            assert!(
                self.inflight.iter().any(|o| o.id == id),
                "device used id {id}, which is not outstanding"
            );
            // in order: everything up to `id` is done
            loop {
                let o = self.inflight.pop_front().unwrap();
                self.done.insert(o.id, (o.slot, o.descs));
                let skip = o.descs;
                self.used_next += skip;
                if self.used_next >= self.layout.size {
                    self.used_next -= self.layout.size;
                    self.used_wrap = !self.used_wrap;
                }
                if o.id == id {
                    out.push((id, len));
                    break;
                }
                out.push((o.id, 0));
            }
        }
        out
    }

    /// Frees a used buffer and returns the first `len` bytes of its
    /// writable descriptors.
    pub fn take_rx(&mut self, id: u16, len: u32) -> Vec<u8> {
        let (slot, descs) = self.done.remove(&id).expect("take_rx of a buffer not used");
        let mut out = Vec::new();
        let mut left = len as usize;
        for k in 0..descs {
            let s = (slot + k) % self.layout.size;
            let l = left.min(self.layout.buf_size as usize);
            let mut b = vec![0u8; l];
            self.mem.read(self.buf_addr(s), &mut b).unwrap();
            out.extend_from_slice(&b);
            left -= l;
        }
        self.free_descs += descs;
        self.free_ids.push(id);
        out
    }

    /// Frees a completed TX buffer.
    pub fn complete_tx(&mut self, id: u16) {
        if let Some((_, descs)) = self.done.remove(&id) {
            self.free_descs += descs;
            self.free_ids.push(id);
        }
    }

    /// Driver event suppression (read by the device): flags and off_wrap.
    pub fn set_driver_event(&self, flags: u16, off_wrap: u16) {
        let mut e = [0u8; 4];
        e[..2].copy_from_slice(&off_wrap.to_le_bytes());
        e[2..].copy_from_slice(&flags.to_le_bytes());
        self.mem.write(self.layout.avail, &e).unwrap();
    }

    /// Device event suppression (written by the device): (flags, off_wrap).
    pub fn device_event(&self) -> (u16, u16) {
        let mut e = [0u8; 4];
        self.mem.read(self.layout.used, &mut e).unwrap();
        (
            u16::from_le_bytes([e[2], e[3]]),
            u16::from_le_bytes([e[0], e[1]]),
        )
    }

    /// Next slot the driver writes, with its wrap counter in bit 15.
    pub fn next_avail(&self) -> u16 {
        self.next | if self.wrap { 1 << 15 } else { 0 }
    }

    /// Next slot the driver reads a used descriptor from (bit 15: wrap).
    pub fn next_used(&self) -> u16 {
        self.used_next | if self.used_wrap { 1 << 15 } else { 0 }
    }
}

/// A queue's driver, either layout (what [`crate::FakeGuest`] holds).
#[derive(Debug)]
pub enum Driver {
    Split(crate::FakeDriver),
    Packed(PackedDriver),
}

macro_rules! each {
    ($self:expr, $d:ident => $e:expr) => {
        match $self {
            Driver::Split($d) => $e,
            Driver::Packed($d) => $e,
        }
    };
}

impl Driver {
    pub fn post_rx(&mut self, n: usize, len: u32) -> usize {
        each!(self, d => d.post_rx(n, len))
    }
    pub fn send_tx(&mut self, frame: &[u8]) -> Option<u16> {
        each!(self, d => d.send_tx(frame))
    }
    pub fn used(&mut self) -> Vec<(u16, u32)> {
        each!(self, d => d.used())
    }
    pub fn take_rx(&mut self, id: u16, len: u32) -> Vec<u8> {
        each!(self, d => d.take_rx(id, len))
    }
    pub fn complete_tx(&mut self, id: u16) {
        each!(self, d => d.complete_tx(id))
    }
    pub fn free_descs(&self) -> usize {
        each!(self, d => d.free_descs())
    }
    /// The split driver (hostile tests that write split rings by hand).
    pub fn split(&mut self) -> &mut crate::FakeDriver {
        match self {
            Driver::Split(d) => d,
            Driver::Packed(_) => panic!("a split-ring test on a packed guest"),
        }
    }
    /// The split driver, by value.
    pub fn into_split(self) -> crate::FakeDriver {
        match self {
            Driver::Split(d) => d,
            Driver::Packed(_) => panic!("a split-ring test on a packed guest"),
        }
    }
    /// The packed driver.
    pub fn packed(&mut self) -> &mut PackedDriver {
        match self {
            Driver::Packed(d) => d,
            Driver::Split(_) => panic!("a packed-ring test on a split guest"),
        }
    }
}
