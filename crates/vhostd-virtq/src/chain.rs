//! Descriptor chains: the buffers of one request, validated and flattened.

use vhostd_mem::GuestMem;

/// One guest buffer of a chain (virtio 1.2 §2.7.5, a descriptor after checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Guest-physical address; `[addr, addr+len)` is known to be mapped.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// Device-writable (`VRING_DESC_F_WRITE`).
    pub writable: bool,
}

/// Why a chain's buffers cannot be used. Policy: the chain is completed with
/// used length 0 and counted; the queue keeps running (THREATS C1, C2, C4, C18).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A buffer is not fully inside guest memory.
    #[error("buffer {0:#x}+{1} is not mapped")]
    AddressOutOfRange(u64, u32),
    /// An indirect table inside an indirect table.
    #[error("nested indirect table")]
    NestedIndirect,
    /// INDIRECT and NEXT set together (forbidden by virtio 1.2 §2.7.5.3.1).
    #[error("indirect descriptor with next flag")]
    IndirectWithNext,
    /// Indirect table length 0, not a multiple of 16, or too large.
    #[error("indirect table length {0} invalid")]
    BadIndirectLen(u32),
    /// INDIRECT used without VIRTIO_F_RING_INDIRECT_DESC negotiated.
    #[error("indirect descriptor without the feature")]
    IndirectNotNegotiated,
    /// Inside an indirect table, `next` points past the table.
    #[error("indirect next {0} past the table")]
    IndirectNextOutOfRange(u16),
    /// An indirect table's chain is longer than the table: a loop.
    #[error("indirect chain loops")]
    IndirectLoop,
    /// A device-readable buffer after a device-writable one (virtio 1.2 §2.7.4.2).
    #[error("readable buffer after writable buffer")]
    ReadableAfterWritable,
    /// The sum of lengths passes 2^32 - 1.
    #[error("chain longer than 4 GiB")]
    TooLong,
}

/// A chain popped from a queue. The caller owns one and reuses it: popping
/// refills it without allocating once the segment vector has grown.
#[derive(Debug, Default)]
pub struct Chain {
    pub(crate) head: u16,
    pub(crate) segs: Vec<Segment>,
    pub(crate) readable: u32,
    pub(crate) writable: u32,
    pub(crate) error: Option<ChainError>,
    /// Ring descriptors the chain takes (packed ring; 1 for split).
    pub(crate) descs: u16,
    pub(crate) any_writable: bool,
}

impl Chain {
    /// A chain with room for `cap` segments before it allocates.
    pub fn with_capacity(cap: usize) -> Self {
        Chain {
            segs: Vec::with_capacity(cap),
            ..Default::default()
        }
    }

    pub(crate) fn reset(&mut self, head: u16) {
        self.head = head;
        self.segs.clear();
        self.readable = 0;
        self.writable = 0;
        self.error = None;
        self.descs = 1;
        self.any_writable = false;
    }

    /// Head descriptor index: the id to complete this chain with.
    pub fn head(&self) -> u16 {
        self.head
    }

    /// How many ring descriptors the chain occupies (packed ring: the used
    /// position advances by this; always 1 on the split ring).
    pub fn descs(&self) -> u16 {
        self.descs
    }

    /// Why the chain is unusable, if it is.
    pub fn error(&self) -> Option<ChainError> {
        self.error
    }

    /// The validated buffers (empty when [`Chain::error`] is set).
    pub fn segments(&self) -> &[Segment] {
        &self.segs
    }

    /// Total device-readable bytes.
    pub fn readable_len(&self) -> u32 {
        self.readable
    }

    /// Total device-writable bytes.
    pub fn writable_len(&self) -> u32 {
        self.writable
    }

    /// Copies the readable part of the chain into `buf`. Returns the number of
    /// bytes copied, or `None` if it does not fit in `buf` (nothing useful is
    /// left in `buf` then). One copy, one read of guest memory per byte: the
    /// caller decides on the copy, never on guest memory (THREATS C5).
    pub fn read_into(&self, mem: &GuestMem, buf: &mut [u8]) -> Option<usize> {
        let total = self.readable as usize;
        let dst = buf.get_mut(..total)?;
        let mut off = 0usize;
        for s in self.segs.iter().filter(|s| !s.writable) {
            let end = off.checked_add(s.len as usize)?;
            let part = dst.get_mut(off..end)?;
            mem.read(s.addr, part).ok()?;
            off = end;
        }
        Some(off)
    }

    /// Writes `data` into the writable buffers starting at byte `offset` of
    /// the writable area. Returns false if it does not fit or memory fails.
    pub fn write_at(&self, mem: &GuestMem, offset: usize, data: &[u8]) -> bool {
        let Some(end) = offset.checked_add(data.len()) else {
            return false;
        };
        if end > self.writable as usize {
            return false;
        }
        let mut pos = 0usize; // start of the current segment in the writable area
        let mut src = data;
        let mut at = offset;
        for s in self.segs.iter().filter(|s| s.writable) {
            let seg_end = pos.saturating_add(s.len as usize);
            if at < seg_end && !src.is_empty() {
                let skip = at.saturating_sub(pos);
                let n = (s.len as usize).saturating_sub(skip).min(src.len());
                let (now, rest) = src.split_at(n);
                if mem.write(s.addr.wrapping_add(skip as u64), now).is_err() {
                    return false;
                }
                src = rest;
                at = at.saturating_add(n);
            }
            pos = seg_end;
            if src.is_empty() {
                break;
            }
        }
        src.is_empty()
    }
}
