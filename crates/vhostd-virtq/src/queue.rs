//! One queue, either layout: what the data path programs against.

use vhostd_mem::GuestMem;

use crate::chain::Chain;
use crate::packed::{PackedQueue, Single};
use crate::split::{QueueConfig, SplitQueue};
use crate::QueueError;

/// A running virtqueue, split or packed. Every method is the same operation
/// on either layout; see [`SplitQueue`] and [`PackedQueue`] for details.
#[derive(Debug)]
pub enum Queue {
    /// Split ring (virtio 1.2 §2.7).
    Split(SplitQueue),
    /// Packed ring (virtio 1.2 §2.8).
    Packed(PackedQueue),
}

macro_rules! each {
    ($self:expr, $q:ident => $e:expr) => {
        match $self {
            Queue::Split($q) => $e,
            Queue::Packed($q) => $e,
        }
    };
}

impl Queue {
    /// Validates `cfg` against `mem` and starts the queue in the layout
    /// `cfg.packed` names.
    pub fn new(cfg: QueueConfig, mem: &GuestMem) -> Result<Self, QueueError> {
        Ok(if cfg.packed {
            Queue::Packed(PackedQueue::new(cfg, mem)?)
        } else {
            Queue::Split(SplitQueue::new(cfg, mem)?)
        })
    }

    /// Queue size.
    pub fn size(&self) -> u16 {
        each!(self, q => q.size())
    }

    /// What `GET_VRING_BASE` reports (split: next avail index; packed: next
    /// avail and next used with wrap counters).
    pub fn base(&self) -> u32 {
        match self {
            Queue::Split(q) => u32::from(q.next_avail()),
            Queue::Packed(q) => q.base(),
        }
    }

    /// Next avail position (diagnostics; packed: `idx | wrap << 15`).
    pub fn next_avail(&self) -> u16 {
        each!(self, q => q.next_avail())
    }

    /// Next used position (diagnostics; packed: `idx | wrap << 15`).
    pub fn next_used(&self) -> u16 {
        each!(self, q => q.next_used())
    }

    /// Whether a chain waits to be popped.
    pub fn has_avail(&mut self, mem: &GuestMem) -> Result<bool, QueueError> {
        each!(self, q => q.has_avail(mem))
    }

    /// Pops the next available chain (see [`SplitQueue::pop`]).
    #[inline]
    pub fn pop(&mut self, mem: &GuestMem, chain: &mut Chain) -> Result<bool, QueueError> {
        each!(self, q => q.pop(mem, chain))
    }

    /// Takes `N` single-descriptor chains at once where they qualify
    /// (see [`SplitQueue::pop_batch`], [`PackedQueue::pop_batch`]); false,
    /// with nothing taken, otherwise.
    #[inline]
    pub fn pop_batch<const N: usize>(
        &mut self,
        mem: &GuestMem,
        writable: bool,
        out: &mut [Single; N],
    ) -> Result<bool, QueueError> {
        each!(self, q => q.pop_batch(mem, writable, out))
    }

    /// Takes the lines the next `n` completions are written to for writing
    /// (a hint: see [`SplitQueue::prefetch_used`],
    /// [`PackedQueue::prefetch_used`]).
    #[inline]
    pub fn prefetch_used(&self, mem: &GuestMem, n: u16) {
        each!(self, q => q.prefetch_used(mem, n))
    }

    /// Gives back the last `back` chains of the last [`Queue::pop_batch`].
    pub fn unpop_batch(&mut self, back: usize) {
        each!(self, q => q.unpop_batch(back))
    }

    /// A position to come back to with [`Queue::rewind`].
    pub fn mark(&self) -> u32 {
        each!(self, q => q.mark())
    }

    /// Gives back every chain popped since `mark` and not completed.
    pub fn rewind(&mut self, mark: u32) {
        each!(self, q => q.rewind(mark))
    }

    /// Completes `chain` with `len` bytes written (published later).
    #[inline]
    pub fn add_used(&mut self, mem: &GuestMem, chain: UsedRef, len: u32) -> Result<(), QueueError> {
        match self {
            Queue::Split(q) => q.add_used(mem, chain.id, len),
            Queue::Packed(q) => q.add_used(mem, chain.id, chain.descs, len),
        }
    }

    /// Completes `singles` (one-descriptor chains from `pop_batch`, in the
    /// order taken) with `lens` bytes written each (published later): as
    /// many [`Queue::add_used`] calls, the queue's own state stored once.
    #[inline]
    pub fn add_used_singles(
        &mut self,
        mem: &GuestMem,
        singles: &[Single],
        lens: &[u32],
    ) -> Result<(), QueueError> {
        each!(self, q => q.add_used_singles(mem, singles, lens))
    }

    /// Completes a chain the device only read (TX). With IN_ORDER, runs
    /// of these are written as one used element (split) or descriptor
    /// (packed).
    #[inline(always)]
    pub fn add_used_read(&mut self, mem: &GuestMem, chain: UsedRef) -> Result<(), QueueError> {
        match self {
            Queue::Split(q) => q.add_used_read(mem, chain.id),
            Queue::Packed(q) => q.add_used_read(mem, chain.id, chain.descs),
        }
    }

    /// Makes the completions written so far visible to the driver.
    pub fn publish_used(&mut self, mem: &GuestMem) -> Result<(), QueueError> {
        each!(self, q => q.publish_used(mem))
    }

    /// Whether the driver wants a call for what was published since the
    /// last decision. Call once per burst.
    pub fn needs_notification(&mut self, mem: &GuestMem) -> Result<bool, QueueError> {
        each!(self, q => q.needs_notification(mem))
    }

    /// Asks for kicks again; true if work arrived meanwhile.
    pub fn enable_notification(&mut self, mem: &GuestMem) -> Result<bool, QueueError> {
        each!(self, q => q.enable_notification(mem))
    }

    /// Tells the driver kicks are not needed.
    pub fn disable_notification(&mut self, mem: &GuestMem) -> Result<(), QueueError> {
        each!(self, q => q.disable_notification(mem))
    }
}

/// What completing a chain needs to know of it, once the [`Chain`] buffer
/// is reused: its id and how many ring descriptors it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsedRef {
    /// Head index (split) or buffer id (packed).
    pub id: u16,
    /// Ring descriptors taken (packed ring).
    pub descs: u16,
}

impl Chain {
    /// The completion handle of this chain.
    pub fn used_ref(&self) -> UsedRef {
        UsedRef {
            id: self.head(),
            descs: self.descs(),
        }
    }
}
