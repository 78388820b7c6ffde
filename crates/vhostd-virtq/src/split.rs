//! Split virtqueue, device side (virtio 1.2 §2.7).
//!
//! ```text
//!  desc  (align 16): N x { addr: le64, len: le32, flags: le16, next: le16 }
//!  avail (align 2):  flags: le16 | idx: le16 | ring[N]: le16 | used_event: le16
//!  used  (align 4):  flags: le16 | idx: le16 | ring[N]: {id: le32, len: le32} | avail_event: le16
//! ```

use std::num::Wrapping;
use std::sync::atomic::{fence, Ordering};

use vhostd_mem::GuestMem;

use crate::chain::{Chain, ChainError, Segment};
use crate::packed::Single;
use crate::{
    QueueError, MAX_INDIRECT_DESCS, MAX_QUEUE_SIZE, VRING_AVAIL_F_NO_INTERRUPT,
    VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VRING_USED_F_NO_NOTIFY,
};

const DESC_SIZE: u64 = 16;

/// `base + off` for ring addresses. Bases were checked to hold the whole
/// ring (`check_range`) and offsets are below the ring size, so this never
/// wraps; wrapping (not `+`) keeps "no panic" explicit, and a wrapped
/// address would fail guest memory's own bounds check anyway.
#[inline]
pub(crate) fn at(base: u64, off: u64) -> u64 {
    base.wrapping_add(off)
}

/// Offset of element `i` of `size`-byte elements after a `head`-byte
/// header (`i` is below the queue size: no wrap).
#[inline]
pub(crate) fn elem(head: u64, size: u64, i: u64) -> u64 {
    size.wrapping_mul(i).wrapping_add(head)
}

/// Where a split ring lives and how it was negotiated.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueConfig {
    /// Number of descriptors (power of two, 1..=32768).
    pub size: u16,
    /// Guest-physical address of the descriptor table.
    pub desc: u64,
    /// Guest-physical address of the avail ring.
    pub avail: u64,
    /// Guest-physical address of the used ring.
    pub used: u64,
    /// `SET_VRING_BASE`: the first avail index (split ring, 16 bits), or
    /// next avail and next used with their wrap counters (packed ring).
    pub base: u32,
    /// VIRTIO_F_RING_EVENT_IDX negotiated.
    pub event_idx: bool,
    /// VIRTIO_F_RING_INDIRECT_DESC negotiated.
    pub indirect: bool,
    /// VIRTIO_F_RING_PACKED negotiated: `avail` is the driver area and
    /// `used` the device area.
    pub packed: bool,
    /// VIRTIO_F_IN_ORDER negotiated.
    pub in_order: bool,
}

/// Ring sizes in bytes for queue size `n`: (desc, avail, used).
pub fn ring_sizes(n: u16) -> (u64, u64, u64) {
    let n = u64::from(n);
    (
        DESC_SIZE.saturating_mul(n),
        n.saturating_mul(2).saturating_add(6),
        n.saturating_mul(8).saturating_add(6),
    )
}

/// Device side of one split virtqueue. All indices are free-running `u16`s.
#[derive(Debug)]
pub struct SplitQueue {
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    event_idx: bool,
    indirect: bool,
    in_order: bool,
    /// IN_ORDER: a run of read-only completions not yet written, as (its
    /// first used slot, the last chain's head). One used element stands for
    /// the run (§2.7.9), written at publish or before the next element.
    batch: Option<(Wrapping<u16>, u16)>,
    /// Next avail ring slot to read.
    next_avail: Wrapping<u16>,
    /// Last avail.idx read from the guest (validated).
    avail_shadow: Wrapping<u16>,
    /// Next used ring slot to write.
    next_used: Wrapping<u16>,
    /// used.idx value at the last notification decision.
    signalled_used: Wrapping<u16>,
    signalled_valid: bool,
    /// What we last wrote to used.flags / avail_event (None: nothing yet).
    /// Writing only on change keeps a polling device off the cache line the
    /// driver reads used.idx from (one store per pass was a contention
    /// point with DPDK's virtio-user, which has no EVENT_IDX).
    notify_written: Option<u16>,
}

impl SplitQueue {
    /// Validates `cfg` against `mem` and starts the queue. The used index is
    /// loaded from the used ring, as libvhost-user does: the guest or a
    /// previous back-end may have moved it.
    pub fn new(cfg: QueueConfig, mem: &GuestMem) -> Result<Self, QueueError> {
        let size = cfg.size;
        if size == 0 || size > MAX_QUEUE_SIZE || !size.is_power_of_two() {
            return Err(QueueError::InvalidSize(u32::from(size)));
        }
        // virtio 1.2 §2.7: alignment 16 / 2 / 4 (THREATS C11).
        for (name, addr, align) in [
            ("desc", cfg.desc, 16),
            ("avail", cfg.avail, 2),
            ("used", cfg.used, 4),
        ] {
            if !addr.is_multiple_of(align) {
                return Err(QueueError::Misaligned(name, addr));
            }
        }
        let (dl, al, ul) = ring_sizes(size);
        for (name, addr, len) in [
            ("desc", cfg.desc, dl),
            ("avail", cfg.avail, al),
            ("used", cfg.used, ul),
        ] {
            mem.check_range(addr, len)
                .map_err(|_| QueueError::RingNotMapped(name, addr))?;
        }
        let base = u16::try_from(cfg.base).map_err(|_| QueueError::BadBase(cfg.base))?;
        let used_idx = mem.load_u16(at(cfg.used, 2), Ordering::Acquire)?;
        Ok(SplitQueue {
            size,
            desc: cfg.desc,
            avail: cfg.avail,
            used: cfg.used,
            event_idx: cfg.event_idx,
            indirect: cfg.indirect,
            in_order: cfg.in_order,
            batch: None,
            next_avail: Wrapping(base),
            avail_shadow: Wrapping(base),
            next_used: Wrapping(used_idx),
            signalled_used: Wrapping(used_idx),
            signalled_valid: false,
            notify_written: None,
        })
    }

    /// Queue size.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Next avail index: what `GET_VRING_BASE` reports.
    pub fn next_avail(&self) -> u16 {
        self.next_avail.0
    }

    /// Next used index (not yet published entries included).
    pub fn next_used(&self) -> u16 {
        self.next_used.0
    }

    /// Reads avail.idx (acquire: ring entries and descriptors written before
    /// it are visible after it) and checks it (THREATS C3).
    fn refresh_avail(&mut self, mem: &GuestMem) -> Result<Wrapping<u16>, QueueError> {
        let idx = Wrapping(mem.load_u16(at(self.avail, 2), Ordering::Acquire)?);
        if (idx - self.next_avail).0 > self.size {
            return Err(QueueError::AvailIdxJump {
                avail: idx.0,
                next: self.next_avail.0,
                size: self.size,
            });
        }
        self.avail_shadow = idx;
        Ok(idx)
    }

    /// Number of chains the driver has made available and we have not popped.
    pub fn pending(&mut self, mem: &GuestMem) -> Result<u16, QueueError> {
        let idx = self.refresh_avail(mem)?;
        Ok((idx - self.next_avail).0)
    }

    /// Pops the next available chain into `chain`. Returns `Ok(false)` when
    /// the ring is empty. A chain whose buffers are bad comes back with
    /// [`Chain::error`] set: complete it with length 0.
    pub fn pop(&mut self, mem: &GuestMem, chain: &mut Chain) -> Result<bool, QueueError> {
        if self.next_avail == self.avail_shadow && self.refresh_avail(mem)? == self.next_avail {
            return Ok(false);
        }
        let slot = u64::from(self.next_avail.0.checked_rem(self.size).unwrap_or(0));
        let head = mem.read_u16(at(self.avail, elem(4, 2, slot)))?;
        if head >= self.size {
            return Err(QueueError::InvalidHead(head));
        }
        self.next_avail += Wrapping(1);
        chain.reset(head);
        if let Err(e) = self.walk(mem, chain) {
            match e {
                Walk::Fatal(q) => return Err(q),
                Walk::Bad(c) => {
                    chain.segs.clear();
                    chain.readable = 0;
                    chain.writable = 0;
                    chain.error = Some(c);
                }
            }
        }
        Ok(true)
    }

    /// Takes the next `N` chains at once when they are all plain
    /// single descriptors of one direction (`writable`: device-writable,
    /// for RX), each buffer checked to lie in guest memory. Returns false,
    /// taking nothing, otherwise (fewer available, a chain, indirect, the
    /// other direction, a bad head or buffer): [`SplitQueue::pop`] then
    /// handles every case, errors included. Each descriptor is one
    /// snapshot (THREATS C5).
    pub fn pop_batch<const N: usize>(
        &mut self,
        mem: &GuestMem,
        writable: bool,
        out: &mut [Single; N],
    ) -> Result<bool, QueueError> {
        let n = u16::try_from(N).unwrap_or(u16::MAX);
        if n == 0 || n > self.size {
            return Ok(false);
        }
        if (self.avail_shadow - self.next_avail).0 < n
            && (self.refresh_avail(mem)? - self.next_avail).0 < n
        {
            return Ok(false);
        }
        let want = if writable { VRING_DESC_F_WRITE } else { 0 };
        let mut pos = self.next_avail;
        for o in out.iter_mut() {
            let slot = u64::from(pos.0.checked_rem(self.size).unwrap_or(0));
            let head = mem.read_u16(at(self.avail, elem(4, 2, slot)))?;
            if head >= self.size {
                return Ok(false);
            }
            let (addr, len, flags, _) = Self::read_desc(mem, self.desc, head)?;
            if flags & (VRING_DESC_F_NEXT | VRING_DESC_F_INDIRECT | VRING_DESC_F_WRITE) != want
                || mem.check_range(addr, u64::from(len)).is_err()
            {
                return Ok(false);
            }
            *o = Single {
                addr,
                len,
                id: head,
            };
            pos += Wrapping(1);
        }
        self.next_avail = pos;
        Ok(true)
    }

    /// Gives back the last `back` chains of the last
    /// [`SplitQueue::pop_batch`] (not completed; they will be popped again).
    pub fn unpop_batch(&mut self, back: usize) {
        let back = u16::try_from(back).unwrap_or(0).min(self.size);
        self.next_avail -= Wrapping(back);
    }

    /// A position to come back to with [`SplitQueue::rewind`].
    pub fn mark(&self) -> u32 {
        u32::from(self.next_avail.0)
    }

    /// Gives back every chain popped since `mark`.
    pub fn rewind(&mut self, mark: u32) {
        self.next_avail = Wrapping(u16::try_from(mark).unwrap_or(self.next_avail.0));
    }

    /// Whether the driver has made chains available we have not popped.
    pub fn has_avail(&mut self, mem: &GuestMem) -> Result<bool, QueueError> {
        Ok(self.pending(mem)? > 0)
    }

    fn read_desc(mem: &GuestMem, table: u64, idx: u16) -> Result<(u64, u32, u16, u16), QueueError> {
        // One snapshot per descriptor, two 8-byte loads (the table is
        // 16-aligned; an indirect table may not be, then it is a copy);
        // fields are only taken from it (THREATS C5: no double fetch).
        let d = at(table, elem(0, DESC_SIZE, u64::from(idx)));
        let addr = mem.read_u64(d)?;
        let rest = mem.read_u64(at(d, 8))?;
        let len = (rest & 0xffff_ffff) as u32;
        let flags = ((rest >> 32) & 0xffff) as u16;
        let next = (rest >> 48) as u16;
        Ok((addr, len, flags, next))
    }

    fn walk(&self, mem: &GuestMem, chain: &mut Chain) -> Result<(), Walk> {
        let mut table = self.desc;
        let mut table_len = u32::from(self.size);
        let mut idx = chain.head;
        let mut in_indirect = false;
        // Each table may be visited at most table_len times: more is a loop
        // (THREATS C1). Bounded work: <= size + MAX_INDIRECT_DESCS steps.
        let mut budget = table_len;
        let mut seen_writable = false;
        loop {
            if budget == 0 {
                return Err(if in_indirect {
                    Walk::Bad(ChainError::IndirectLoop)
                } else {
                    Walk::Fatal(QueueError::ChainLoop(chain.head))
                });
            }
            budget = budget.saturating_sub(1);
            let (addr, len, flags, next) = Self::read_desc(mem, table, idx).map_err(Walk::Fatal)?;
            if flags & VRING_DESC_F_INDIRECT != 0 {
                if in_indirect {
                    return Err(Walk::Bad(ChainError::NestedIndirect));
                }
                if !self.indirect {
                    return Err(Walk::Bad(ChainError::IndirectNotNegotiated));
                }
                if flags & VRING_DESC_F_NEXT != 0 {
                    return Err(Walk::Bad(ChainError::IndirectWithNext));
                }
                let n = len / 16;
                if len == 0 || len % 16 != 0 || n > MAX_INDIRECT_DESCS {
                    return Err(Walk::Bad(ChainError::BadIndirectLen(len)));
                }
                mem.check_range(addr, u64::from(len))
                    .map_err(|_| Walk::Bad(ChainError::AddressOutOfRange(addr, len)))?;
                table = addr;
                table_len = n;
                budget = n;
                idx = 0;
                in_indirect = true;
                continue;
            }
            mem.check_range(addr, u64::from(len))
                .map_err(|_| Walk::Bad(ChainError::AddressOutOfRange(addr, len)))?;
            let writable = flags & VRING_DESC_F_WRITE != 0;
            if writable {
                seen_writable = true;
                chain.writable = chain
                    .writable
                    .checked_add(len)
                    .ok_or(Walk::Bad(ChainError::TooLong))?;
            } else {
                if seen_writable {
                    return Err(Walk::Bad(ChainError::ReadableAfterWritable));
                }
                chain.readable = chain
                    .readable
                    .checked_add(len)
                    .ok_or(Walk::Bad(ChainError::TooLong))?;
            }
            if chain.readable.checked_add(chain.writable).is_none() {
                return Err(Walk::Bad(ChainError::TooLong));
            }
            if len > 0 {
                chain.segs.push(Segment {
                    addr,
                    len,
                    writable,
                });
            }
            if flags & VRING_DESC_F_NEXT == 0 {
                return Ok(());
            }
            if u32::from(next) >= table_len {
                return Err(if in_indirect {
                    Walk::Bad(ChainError::IndirectNextOutOfRange(next))
                } else {
                    Walk::Fatal(QueueError::NextOutOfRange(idx, next))
                });
            }
            idx = next;
        }
    }

    /// Hints the CPU to take the used ring lines of the next `n` used
    /// elements for writing (the driver read them last, a lap ago). A hint
    /// only (PREFETCHW; no read, no fault).
    pub fn prefetch_used(&self, mem: &GuestMem, n: u16) {
        let elem_at = |k: u16| {
            let slot = self
                .next_used
                .0
                .wrapping_add(k)
                .checked_rem(self.size)
                .unwrap_or(0);
            at(self.used, elem(4, 8, u64::from(slot)))
        };
        // more than the ring would only go round its lines again
        let n = n.min(self.size);
        if n == 0 {
            return;
        }
        let mut k = 0u16;
        while k < n {
            mem.prefetch_write(elem_at(k));
            k = k.saturating_add(8);
        }
        // elements straddle lines (the ring starts 4 bytes into its own)
        mem.prefetch_write(elem_at(n.saturating_sub(1)));
    }

    /// Writes one used entry (not yet visible to the driver: see
    /// [`SplitQueue::publish_used`]).
    #[inline(always)]
    pub fn add_used(&mut self, mem: &GuestMem, head: u16, len: u32) -> Result<(), QueueError> {
        self.flush_batch(mem)?;
        self.write_elem(mem, self.next_used, head, len)?;
        self.next_used += Wrapping(1);
        Ok(())
    }

    /// Completes one-descriptor chains in the order taken, `lens[i]` bytes
    /// written to `singles[i]` (the shorter of the two sets the count):
    /// [`SplitQueue::add_used`] each, `next_used` stored once.
    pub fn add_used_singles(
        &mut self,
        mem: &GuestMem,
        singles: &[Single],
        lens: &[u32],
    ) -> Result<(), QueueError> {
        self.flush_batch(mem)?;
        let mut idx = self.next_used;
        let out = singles.iter().zip(lens.iter()).try_for_each(|(s, &len)| {
            self.write_elem(mem, idx, s.id, len)?;
            idx += Wrapping(1);
            Ok(())
        });
        self.next_used = idx;
        out
    }

    /// Completes a chain the device only read (TX: nothing written). With
    /// IN_ORDER, a run of these becomes one used element at the run's first
    /// slot carrying the last chain's head (virtio 1.2 §2.7.9); the driver
    /// takes the chains before it as used too. DPDK's in-order TX cleanup
    /// reads only used.idx.
    #[inline(always)]
    pub fn add_used_read(&mut self, mem: &GuestMem, head: u16) -> Result<(), QueueError> {
        if !self.in_order {
            return self.add_used(mem, head, 0);
        }
        match self.batch.as_mut() {
            Some((_, id)) => *id = head,
            None => self.batch = Some((self.next_used, head)),
        }
        self.next_used += Wrapping(1);
        Ok(())
    }

    #[inline(always)]
    fn flush_batch(&mut self, mem: &GuestMem) -> Result<(), QueueError> {
        match self.batch.take() {
            Some((slot, head)) => self.write_elem(mem, slot, head, 0),
            None => Ok(()),
        }
    }

    #[inline(always)]
    fn write_elem(
        &self,
        mem: &GuestMem,
        idx: Wrapping<u16>,
        head: u16,
        len: u32,
    ) -> Result<(), QueueError> {
        let slot = u64::from(idx.0.checked_rem(self.size).unwrap_or(0));
        // {id: le32, len: le32}: one 8-byte store when the ring allows it
        mem.write_u64(
            at(self.used, elem(4, 8, slot)),
            u64::from(head) | (u64::from(len) << 32),
        )?;
        Ok(())
    }

    /// Makes all used entries written so far visible: one release store of
    /// used.idx per burst (entries are ordered before the index).
    pub fn publish_used(&mut self, mem: &GuestMem) -> Result<(), QueueError> {
        self.flush_batch(mem)?;
        mem.store_u16(at(self.used, 2), self.next_used.0, Ordering::Release)?;
        Ok(())
    }

    /// Whether the driver wants a call for the entries published since the
    /// last decision (virtio 1.2 §2.7.7.2). Call once per burst.
    pub fn needs_notification(&mut self, mem: &GuestMem) -> Result<bool, QueueError> {
        // The used.idx store must be visible before we read used_event/flags,
        // or we race with a driver that re-enables calls (full barrier, as
        // Linux vhost_notify's smp_mb()).
        fence(Ordering::SeqCst);
        let new = self.next_used;
        let old = self.signalled_used;
        let valid = self.signalled_valid;
        self.signalled_used = new;
        self.signalled_valid = true;
        if self.event_idx {
            let used_event =
                Wrapping(mem.read_u16(at(self.avail, elem(4, 2, u64::from(self.size))))?);
            // vring_need_event(): notify if used_event is in (old, new].
            Ok(!valid || (new - used_event - Wrapping(1)) < (new - old))
        } else {
            let flags = mem.read_u16(self.avail)?;
            Ok(flags & VRING_AVAIL_F_NO_INTERRUPT == 0)
        }
    }

    /// Asks the driver for kicks again. Returns true if the driver made new
    /// chains available since we last looked (the caller must process them:
    /// no kick will come for them).
    ///
    /// With EVENT_IDX, avail_event is set to the last avail index we saw, not
    /// to `next_avail`: a caller blocked on too few RX buffers (which gave
    /// them back with [`SplitQueue::rewind`]) is then kicked by the next
    /// buffer the driver adds, and does not spin on the ones it already
    /// found insufficient (THREATS C3, CVE-2026-74356).
    pub fn enable_notification(&mut self, mem: &GuestMem) -> Result<bool, QueueError> {
        let seen = self.avail_shadow;
        let want = if self.event_idx { seen.0 } else { 0 };
        if self.notify_written != Some(want) {
            let at = if self.event_idx {
                at(self.used, elem(4, 8, u64::from(self.size)))
            } else {
                self.used
            };
            mem.store_u16(at, want, Ordering::Relaxed)?;
            self.notify_written = Some(want);
        }
        // The store above must be visible before we re-read avail.idx.
        fence(Ordering::SeqCst);
        Ok(self.refresh_avail(mem)? != seen)
    }

    /// Tells the driver kicks are not needed (we are polling this ring now).
    /// With EVENT_IDX nothing is written: avail_event stays behind, so the
    /// driver kicks at most once more.
    pub fn disable_notification(&mut self, mem: &GuestMem) -> Result<(), QueueError> {
        if !self.event_idx && self.notify_written != Some(VRING_USED_F_NO_NOTIFY) {
            mem.store_u16(self.used, VRING_USED_F_NO_NOTIFY, Ordering::Relaxed)?;
            self.notify_written = Some(VRING_USED_F_NO_NOTIFY);
        }
        Ok(())
    }
}

enum Walk {
    Fatal(QueueError),
    Bad(ChainError),
}
