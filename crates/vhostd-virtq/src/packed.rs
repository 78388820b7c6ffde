//! Packed virtqueue, device side (virtio 1.2 §2.8).
//!
//! ```text
//!  desc   (align 16): N x { addr: le64, len: le32, id: le16, flags: le16 }
//!  driver (align 4):  { off_wrap: le16, flags: le16 }   read by us: calls
//!  device (align 4):  { off_wrap: le16, flags: le16 }   written by us: kicks
//! ```
//!
//! One ring holds both directions: the driver marks descriptors available
//! (AVAIL == its wrap counter, USED != it), we overwrite the first
//! descriptor of each chain with a used descriptor (AVAIL == USED == our wrap
//! counter). Positions are kept as one number `c` in `[0, 2N)`: slot `c % N`,
//! wrap counter 1 for `c < N` (both counters start at 1).
//!
//! Batching: used descriptors of a burst are kept in a shadow (up to
//! [`SHADOW`] of them) and written together by [`PackedQueue::publish_used`],
//! the first one's flags last with release order; the driver polls only that
//! slot, so it sees the whole burst at once. Written one by one as they were
//! completed, the ring lines went back and forth between the two cores: the
//! driver polls the line the first used descriptor sits on, and each later
//! descriptor written to that line between two frame copies took it back
//! (a line transfer each, 300 ns with far cores). DPDK writes its batches
//! the same way (`vhost_flush_enqueue_batch_packed`). With IN_ORDER, runs of
//! zero-length completions (TX) are written as one used descriptor carrying
//! the last buffer id (§2.8.9).

use std::sync::atomic::{fence, Ordering};

use vhostd_mem::GuestMem;

use crate::chain::{Chain, ChainError, Segment};
use crate::split::{at, elem, QueueConfig};
use crate::{QueueError, MAX_INDIRECT_DESCS, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT};
use crate::{MAX_QUEUE_SIZE, VRING_DESC_F_WRITE};

/// Descriptor flag: available (matches the driver's wrap counter).
pub const VRING_PACKED_DESC_F_AVAIL: u16 = 1 << 7;
/// Descriptor flag: used (matches the device's wrap counter).
pub const VRING_PACKED_DESC_F_USED: u16 = 1 << 15;
/// Event suppression flags: events enabled.
pub const RING_EVENT_FLAGS_ENABLE: u16 = 0;
/// Event suppression flags: events disabled.
pub const RING_EVENT_FLAGS_DISABLE: u16 = 1;
/// Event suppression flags: event at a given descriptor (EVENT_IDX only).
pub const RING_EVENT_FLAGS_DESC: u16 = 2;

const DESC_SIZE: u64 = 16;
const WRAP_BIT: u16 = 1 << 15;

/// Packed ring sizes in bytes for queue size `n`: (desc, driver, device).
pub fn packed_ring_sizes(n: u16) -> (u64, u64, u64) {
    (DESC_SIZE * u64::from(n), 4, 4)
}

/// Used descriptors kept back between publishes (beyond the first): the
/// queue pair publishes every 32, a mergeable burst can complete more.
pub(crate) const SHADOW: usize = 64;

/// A run of in-order zero-length completions not yet written.
#[derive(Debug, Clone, Copy)]
struct Batch {
    start: u32,
    id: u16,
}

/// Device side of one packed virtqueue.
#[derive(Debug)]
pub struct PackedQueue {
    size: u16,
    desc: u64,
    driver: u64,
    device: u64,
    event_idx: bool,
    indirect: bool,
    in_order: bool,
    /// Next descriptor to read.
    avail: u32,
    /// Furthest position found not (yet) available: where we ask the driver
    /// to kick us (the split ring's avail_shadow).
    seen: u32,
    /// Next slot a used descriptor goes to.
    used: u32,
    /// First used descriptor of the burst: (slot, flags), stored at publish.
    first: Option<(u16, u16)>,
    /// The first one's len and id (its flags go last).
    first_len_id: (u32, u16),
    /// The burst's later used descriptors, (slot, len | id << 32 | flags
    /// << 48), written at publish or when the shadow is full.
    shadow: Box<[(u16, u64); SHADOW]>,
    shadow_len: usize,
    batch: Option<Batch>,
    signalled: u32,
    signalled_valid: bool,
    /// The device event structure as we last wrote it (off_wrap, flags):
    /// rewritten only on change (see the split ring's note).
    event_written: Option<(u16, u16)>,
}

impl PackedQueue {
    /// Validates `cfg` (`avail` is the driver area, `used` the device area,
    /// `base` the vhost-user packed encoding) and starts the queue.
    pub fn new(cfg: QueueConfig, mem: &GuestMem) -> Result<Self, QueueError> {
        let size = cfg.size;
        // packed rings need not be a power of two (§2.8.10.1)
        if size == 0 || size > MAX_QUEUE_SIZE {
            return Err(QueueError::InvalidSize(u32::from(size)));
        }
        let (dl, _, _) = packed_ring_sizes(size);
        for (name, addr, align, len) in [
            ("desc", cfg.desc, 16, dl),
            ("driver", cfg.avail, 4, 4),
            ("device", cfg.used, 4, 4),
        ] {
            if !addr.is_multiple_of(align) {
                return Err(QueueError::Misaligned(name, addr));
            }
            mem.check_range(addr, len)
                .map_err(|_| QueueError::RingNotMapped(name, addr))?;
        }
        let decode = |v: u16| -> Result<u32, QueueError> {
            let idx = v & !WRAP_BIT;
            if idx >= size {
                return Err(QueueError::BadBase(u32::from(v)));
            }
            Ok(if v & WRAP_BIT != 0 {
                u32::from(idx)
            } else {
                u32::from(idx).saturating_add(u32::from(size))
            })
        };
        // low half: next avail; high half: next used. DPDK's virtio-user
        // sends only the low half (the queue is empty at start).
        let lo = u16::try_from(cfg.base & 0xffff).unwrap_or(0);
        let hi = u16::try_from(cfg.base >> 16).unwrap_or(0);
        let avail = decode(lo)?;
        let used = if hi == 0 { avail } else { decode(hi)? };
        Ok(PackedQueue {
            size,
            desc: cfg.desc,
            driver: cfg.avail,
            device: cfg.used,
            event_idx: cfg.event_idx,
            indirect: cfg.indirect,
            in_order: cfg.in_order,
            avail,
            seen: avail,
            used,
            first: None,
            first_len_id: (0, 0),
            shadow: Box::new([(0, 0); SHADOW]),
            shadow_len: 0,
            batch: None,
            signalled: used,
            signalled_valid: false,
            event_written: None,
        })
    }

    /// Queue size.
    pub fn size(&self) -> u16 {
        self.size
    }

    fn wrap_len(&self) -> u32 {
        2 * u32::from(self.size)
    }

    fn advance(&self, c: u32, n: u32) -> u32 {
        c.wrapping_add(n).checked_rem(self.wrap_len()).unwrap_or(0)
    }

    /// Steps from `a` forward to `b`.
    fn dist(&self, a: u32, b: u32) -> u32 {
        b.wrapping_add(self.wrap_len())
            .wrapping_sub(a)
            .checked_rem(self.wrap_len())
            .unwrap_or(0)
    }

    fn slot(&self, c: u32) -> u16 {
        u16::try_from(c.checked_rem(u32::from(self.size)).unwrap_or(0)).unwrap_or(0)
    }

    fn wrap(&self, c: u32) -> bool {
        c < u32::from(self.size)
    }

    /// `slot | wrap << 15`: the vhost-user and event-suppression encoding.
    fn encode(&self, c: u32) -> u16 {
        self.slot(c) | if self.wrap(c) { WRAP_BIT } else { 0 }
    }

    /// What `GET_VRING_BASE` reports: next avail in the low half, next used
    /// in the high half, each `idx | wrap << 15` (as QEMU encodes it).
    pub fn base(&self) -> u32 {
        u32::from(self.encode(self.avail)) | (u32::from(self.encode(self.used)) << 16)
    }

    /// Next avail position, encoded (diagnostics).
    pub fn next_avail(&self) -> u16 {
        self.encode(self.avail)
    }

    /// Next used position, encoded (diagnostics).
    pub fn next_used(&self) -> u16 {
        self.encode(self.used)
    }

    fn desc_addr(&self, slot: u16) -> u64 {
        at(self.desc, elem(0, DESC_SIZE, u64::from(slot)))
    }

    /// Whether the descriptor at position `c` is available (acquire: its
    /// contents, written before its flags, are visible after this).
    fn is_avail(&self, mem: &GuestMem, c: u32) -> Result<bool, QueueError> {
        let flags = mem.load_u16(at(self.desc_addr(self.slot(c)), 14), Ordering::Acquire)?;
        Ok(self.avail_flags(flags, c))
    }

    /// Whether descriptor flags mark position `c` available.
    fn avail_flags(&self, flags: u16, c: u32) -> bool {
        let avail = flags & VRING_PACKED_DESC_F_AVAIL != 0;
        let used = flags & VRING_PACKED_DESC_F_USED != 0;
        let w = self.wrap(c);
        avail == w && used != w
    }

    /// Whether a chain is waiting at the next avail position.
    pub fn has_avail(&self, mem: &GuestMem) -> Result<bool, QueueError> {
        self.is_avail(mem, self.avail)
    }

    /// Pops the next available chain into `chain` ([`Chain::head`] is its
    /// buffer id). Returns `Ok(false)` when none is available. A chain whose
    /// buffers are bad comes back with [`Chain::error`] set and its ring
    /// extent known: complete it with length 0.
    pub fn pop(&mut self, mem: &GuestMem, chain: &mut Chain) -> Result<bool, QueueError> {
        // The head's len/id/flags in one acquire load: its availability and
        // its contents come from the same snapshot (no separate flags read).
        let head = self.desc_addr(self.slot(self.avail));
        let head_hi = mem.load_u64(at(head, 8), Ordering::Acquire)?;
        if !self.avail_flags((head_hi >> 48) as u16, self.avail) {
            self.seen = self.avail;
            return Ok(false);
        }
        chain.reset(0);
        let mut c = self.avail;
        let mut descs = 0u16;
        let mut bad = None;
        loop {
            // A chain longer than the ring runs into itself (THREATS C1).
            if descs >= self.size {
                return Err(QueueError::ChainLoop(self.slot(self.avail)));
            }
            let (addr, len, id, flags) = if descs == 0 {
                split_desc(mem.read_u64(head)?, head_hi)
            } else {
                read_desc(mem, self.desc_addr(self.slot(c)))?
            };
            descs = descs.saturating_add(1);
            // Buffer ID is in the last descriptor of the chain (§2.8.6).
            chain.head = id;
            if bad.is_none() {
                if let Err(e) = self.take(mem, chain, addr, len, flags) {
                    bad = Some(e);
                }
            }
            c = self.advance(c, 1);
            if flags & VRING_DESC_F_NEXT == 0 {
                break;
            }
        }
        let before = self.dist(self.avail, self.seen);
        self.avail = c;
        if u32::from(descs) >= before {
            self.seen = c;
        }
        chain.descs = descs;
        if let Some(e) = bad {
            chain.segs.clear();
            chain.readable = 0;
            chain.writable = 0;
            chain.error = Some(e);
        }
        Ok(true)
    }

    /// Takes the next `N` chains at once when they are all plain single
    /// descriptors of one direction (`writable`: device-writable, for RX) in
    /// one `N`-aligned group of ring slots that does not wrap (four
    /// descriptors per 64-byte line, as DPDK's batched packed path). Each
    /// buffer is checked to lie in guest memory. Returns false, taking
    /// nothing, when the group does not qualify (not available yet, a chain,
    /// indirect, the other direction, a buffer outside memory, or the next
    /// avail position is not at a group start): the caller then uses
    /// [`PackedQueue::pop`], which handles every case.
    ///
    /// Fields come from one snapshot per descriptor (THREATS C5): the
    /// len/id/flags half in one acquire load (availability and contents from
    /// the same read), then the address half.
    pub fn pop_batch<const N: usize>(
        &mut self,
        mem: &GuestMem,
        writable: bool,
        out: &mut [Single; N],
    ) -> Result<bool, QueueError> {
        let slot = self.slot(self.avail);
        let n = u16::try_from(N).unwrap_or(0);
        if n == 0 || !slot.is_multiple_of(n) || self.size.saturating_sub(slot) < n {
            return Ok(false);
        }
        let want_write = if writable { VRING_DESC_F_WRITE } else { 0 };
        let base = self.desc_addr(slot);
        let mut hi = [0u64; N];
        let mut d = base;
        for h in hi.iter_mut() {
            *h = mem.load_u64(at(d, 8), Ordering::Acquire)?;
            let flags = (*h >> 48) as u16;
            // same wrap counter for the group: it does not cross the end
            if !self.avail_flags(flags, self.avail)
                || flags & (VRING_DESC_F_NEXT | VRING_DESC_F_INDIRECT | VRING_DESC_F_WRITE)
                    != want_write
            {
                return Ok(false);
            }
            d = at(d, DESC_SIZE);
        }
        let mut d = base;
        for (o, &h) in out.iter_mut().zip(hi.iter()) {
            let (addr, len, id, _) = split_desc(mem.read_u64(d)?, h);
            if mem.check_range(addr, u64::from(len)).is_err() {
                return Ok(false);
            }
            *o = Single { addr, len, id };
            d = at(d, DESC_SIZE);
        }
        let before = self.dist(self.avail, self.seen);
        self.avail = self.advance(self.avail, u32::from(n));
        if u32::from(n) >= before {
            self.seen = self.avail;
        }
        Ok(true)
    }

    /// Hints the CPU to take the lines of the next `n` used descriptors
    /// (the ring slots from the next used position on) for writing: a
    /// group just taken is completed in place, and its lines were last
    /// written by the driver. A hint only (PREFETCHW; no read, no fault).
    pub fn prefetch_used(&self, mem: &GuestMem, n: u16) {
        // more than the ring would only go round its lines again
        let n = u32::from(n.min(self.size));
        if n == 0 {
            return;
        }
        let mut k = 0u32;
        while k < n {
            mem.prefetch_write(self.desc_addr(self.slot(self.used.wrapping_add(k))));
            k = k.saturating_add(4);
        }
        // the last slot's line too when the ring is not line-aligned
        mem.prefetch_write(self.desc_addr(self.slot(self.used.wrapping_add(n.saturating_sub(1)))));
    }

    /// Gives back the last `back` chains of the last
    /// [`PackedQueue::pop_batch`] (not completed; they will be popped again).
    pub fn unpop_batch(&mut self, back: usize) {
        let back = u32::try_from(back).unwrap_or(0).min(self.wrap_len());
        self.avail = self.advance(self.avail, self.wrap_len().saturating_sub(back));
    }

    /// Adds one ring descriptor (direct or indirect) to `chain`.
    fn take(
        &self,
        mem: &GuestMem,
        chain: &mut Chain,
        addr: u64,
        len: u32,
        flags: u16,
    ) -> Result<(), ChainError> {
        if flags & VRING_DESC_F_INDIRECT == 0 {
            return push_seg(mem, chain, addr, len, flags & VRING_DESC_F_WRITE != 0);
        }
        if !self.indirect {
            return Err(ChainError::IndirectNotNegotiated);
        }
        // §2.8.7: the driver must not set NEXT on an indirect descriptor.
        if flags & VRING_DESC_F_NEXT != 0 {
            return Err(ChainError::IndirectWithNext);
        }
        let n = len / 16;
        if len == 0 || !len.is_multiple_of(16) || n > MAX_INDIRECT_DESCS {
            return Err(ChainError::BadIndirectLen(len));
        }
        mem.check_range(addr, u64::from(len))
            .map_err(|_| ChainError::AddressOutOfRange(addr, len))?;
        // The table is read whole, in order; only WRITE counts in it (§2.8.7).
        for i in 0..u64::from(n) {
            let (a, l, _, f) = read_desc(mem, at(addr, elem(0, DESC_SIZE, i)))
                .map_err(|_| ChainError::AddressOutOfRange(addr, len))?;
            if f & VRING_DESC_F_INDIRECT != 0 {
                return Err(ChainError::NestedIndirect);
            }
            push_seg(mem, chain, a, l, f & VRING_DESC_F_WRITE != 0)?;
        }
        Ok(())
    }

    /// A position to come back to with [`PackedQueue::rewind`].
    pub fn mark(&self) -> u32 {
        self.avail
    }

    /// Gives back every chain popped since `mark` (they will be popped
    /// again). Only chains not completed may be given back.
    pub fn rewind(&mut self, mark: u32) {
        if mark < self.wrap_len() {
            self.avail = mark;
        }
    }

    #[inline(always)]
    fn write_used(&mut self, mem: &GuestMem, c: u32, id: u16, len: u32) -> Result<(), QueueError> {
        let slot = self.slot(c);
        let mut flags = if self.wrap(c) {
            VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED
        } else {
            0
        };
        if len > 0 {
            flags |= VRING_DESC_F_WRITE;
        }
        if self.first.is_none() {
            // all three at publish, the flags last (they make the burst visible)
            self.first = Some((slot, flags));
            self.first_len_id = (len, id);
            return Ok(());
        }
        if self.shadow_len >= SHADOW {
            self.write_shadow(mem)?;
        }
        // len, id and flags in one store at publish; visible with the first's flags
        let hi = u64::from(len) | (u64::from(id) << 32) | (u64::from(flags) << 48);
        if let Some(e) = self.shadow.get_mut(self.shadow_len) {
            *e = (slot, hi);
            self.shadow_len = self.shadow_len.saturating_add(1);
        }
        Ok(())
    }

    /// Writes the shadowed used descriptors (not the first) to the ring.
    fn write_shadow(&mut self, mem: &GuestMem) -> Result<(), QueueError> {
        let n = std::mem::take(&mut self.shadow_len);
        for &(slot, hi) in self.shadow.iter().take(n) {
            mem.write_u64(at(self.desc_addr(slot), 8), hi)?;
        }
        Ok(())
    }

    #[inline(always)]
    fn flush_batch(&mut self, mem: &GuestMem) -> Result<(), QueueError> {
        if let Some(b) = self.batch.take() {
            self.write_used(mem, b.start, b.id, 0)?;
        }
        Ok(())
    }

    /// Writes the used descriptor for a chain of `descs` ring descriptors
    /// with buffer id `id` and `len` bytes written (not yet visible: see
    /// [`PackedQueue::publish_used`]). Chains must be completed in the order
    /// they were popped (vhostd always does: it is what IN_ORDER promises).
    #[inline(always)]
    pub fn add_used(
        &mut self,
        mem: &GuestMem,
        id: u16,
        descs: u16,
        len: u32,
    ) -> Result<(), QueueError> {
        let pos = self.used;
        self.used = self.advance(pos, u32::from(descs.max(1)));
        self.flush_batch(mem)?;
        self.write_used(mem, pos, id, len)
    }

    /// Completes one-descriptor chains in the order taken, `lens[i]` bytes
    /// written to `singles[i]` (the shorter of the two sets the count): as
    /// [`PackedQueue::add_used`] each with `descs` 1.
    pub fn add_used_singles(
        &mut self,
        mem: &GuestMem,
        singles: &[Single],
        lens: &[u32],
    ) -> Result<(), QueueError> {
        self.flush_batch(mem)?;
        for (s, &len) in singles.iter().zip(lens.iter()) {
            let pos = self.used;
            self.used = self.advance(pos, 1);
            self.write_used(mem, pos, s.id, len)?;
        }
        Ok(())
    }

    /// Completes a chain the device only read (TX: nothing written). With
    /// IN_ORDER, a run of these becomes one used descriptor carrying the
    /// last buffer id (§2.8.9); the driver skips the rest.
    #[inline(always)]
    pub fn add_used_read(&mut self, mem: &GuestMem, id: u16, descs: u16) -> Result<(), QueueError> {
        if !self.in_order {
            return self.add_used(mem, id, descs, 0);
        }
        let pos = self.used;
        self.used = self.advance(pos, u32::from(descs.max(1)));
        match self.batch.as_mut() {
            Some(b) => b.id = id,
            None => self.batch = Some(Batch { start: pos, id }),
        }
        Ok(())
    }

    /// Makes the burst's used descriptors visible: the first one's flags
    /// are stored last, with release order.
    pub fn publish_used(&mut self, mem: &GuestMem) -> Result<(), QueueError> {
        self.flush_batch(mem)?;
        if let Some((slot, flags)) = self.first.take() {
            let (len, id) = self.first_len_id;
            let mut e = [0u8; 6];
            e[..4].copy_from_slice(&len.to_le_bytes());
            e[4..].copy_from_slice(&id.to_le_bytes());
            mem.write(at(self.desc_addr(slot), 8), &e)?;
            self.write_shadow(mem)?;
            mem.store_u16(at(self.desc_addr(slot), 14), flags, Ordering::Release)?;
        }
        Ok(())
    }

    /// Whether the driver wants a call for what was published since the
    /// last decision (§2.8.14: driver event suppression).
    pub fn needs_notification(&mut self, mem: &GuestMem) -> Result<bool, QueueError> {
        // used flags before the driver's event structure (cf. split ring)
        fence(Ordering::SeqCst);
        let old = self.signalled;
        let new = self.used;
        let valid = self.signalled_valid;
        self.signalled = new;
        self.signalled_valid = true;
        let mut ev = [0u8; 4];
        mem.read(self.driver, &mut ev)?;
        let off_wrap = u16::from_le_bytes([ev[0], ev[1]]);
        let flags = u16::from_le_bytes([ev[2], ev[3]]) & 3;
        match flags {
            RING_EVENT_FLAGS_DISABLE => Ok(false),
            RING_EVENT_FLAGS_DESC if self.event_idx && valid => {
                let off = off_wrap & !WRAP_BIT;
                if off >= self.size {
                    return Ok(true);
                }
                let event = if off_wrap & WRAP_BIT != 0 {
                    u32::from(off)
                } else {
                    u32::from(off).saturating_add(u32::from(self.size))
                };
                // notify if the event slot was written in [old, new)
                Ok(self.dist(old, event) < self.dist(old, new))
            }
            // ENABLE, the reserved value, DESC without EVENT_IDX, first call
            _ => Ok(true),
        }
    }

    /// Asks the driver for kicks again; with EVENT_IDX, for the first
    /// descriptor we have not found available (a blocked RX queue is then
    /// kicked by a new buffer, not by the ones it found too small). Returns
    /// true if that descriptor became available meanwhile.
    pub fn enable_notification(&mut self, mem: &GuestMem) -> Result<bool, QueueError> {
        if self.event_idx {
            let want = (self.encode(self.seen), RING_EVENT_FLAGS_DESC);
            if self.event_written != Some(want) {
                let mut ev = [0u8; 4];
                ev[..2].copy_from_slice(&want.0.to_le_bytes());
                ev[2..].copy_from_slice(&want.1.to_le_bytes());
                mem.write(self.device, &ev)?;
                self.event_written = Some(want);
            }
        } else {
            self.set_event_flags(mem, RING_EVENT_FLAGS_ENABLE)?;
        }
        fence(Ordering::SeqCst);
        self.is_avail(mem, self.seen)
    }

    /// Tells the driver kicks are not needed. With EVENT_IDX nothing is
    /// written: the event offset stays behind, the driver kicks at most once.
    pub fn disable_notification(&mut self, mem: &GuestMem) -> Result<(), QueueError> {
        if !self.event_idx {
            self.set_event_flags(mem, RING_EVENT_FLAGS_DISABLE)?;
        }
        Ok(())
    }

    /// Writes the device event structure's flags (without EVENT_IDX), only
    /// when they change.
    fn set_event_flags(&mut self, mem: &GuestMem, flags: u16) -> Result<(), QueueError> {
        if self.event_written.map(|e| e.1) != Some(flags) {
            mem.store_u16(at(self.device, 2), flags, Ordering::Relaxed)?;
            self.event_written = Some((0, flags));
        }
        Ok(())
    }
}

/// A chain taken by [`PackedQueue::pop_batch`]: one descriptor, its buffer
/// checked to lie in guest memory. Complete it with `descs` 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Single {
    /// Guest-physical address of the buffer.
    pub addr: u64,
    /// Its length.
    pub len: u32,
    /// Buffer id to complete it with.
    pub id: u16,
}

impl Single {
    /// The completion handle of this chain.
    pub fn used_ref(&self) -> crate::UsedRef {
        crate::UsedRef {
            id: self.id,
            descs: 1,
        }
    }
}

/// One snapshot per descriptor, two 8-byte loads (THREATS C5: no double
/// fetch; fields are only taken from the snapshot).
fn read_desc(mem: &GuestMem, d: u64) -> Result<(u64, u32, u16, u16), QueueError> {
    let addr = mem.read_u64(d)?;
    let rest = mem.read_u64(at(d, 8))?;
    Ok(split_desc(addr, rest))
}

/// (addr, len, id, flags) of a descriptor from its two little-endian halves.
fn split_desc(addr: u64, rest: u64) -> (u64, u32, u16, u16) {
    let len = (rest & 0xffff_ffff) as u32;
    let id = ((rest >> 32) & 0xffff) as u16;
    let flags = (rest >> 48) as u16;
    (addr, len, id, flags)
}

/// Validates one buffer and appends it (shared rules with the split ring).
fn push_seg(
    mem: &GuestMem,
    chain: &mut Chain,
    addr: u64,
    len: u32,
    writable: bool,
) -> Result<(), ChainError> {
    mem.check_range(addr, u64::from(len))
        .map_err(|_| ChainError::AddressOutOfRange(addr, len))?;
    if writable {
        chain.any_writable = true;
        chain.writable = chain.writable.checked_add(len).ok_or(ChainError::TooLong)?;
    } else {
        if chain.any_writable {
            return Err(ChainError::ReadableAfterWritable);
        }
        chain.readable = chain.readable.checked_add(len).ok_or(ChainError::TooLong)?;
    }
    if chain.readable.checked_add(chain.writable).is_none() {
        return Err(ChainError::TooLong);
    }
    if len > 0 {
        chain.segs.push(Segment {
            addr,
            len,
            writable,
        });
    }
    Ok(())
}
