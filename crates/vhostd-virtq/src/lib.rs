//! Virtqueue layer of vhostd (device side).
//!
//! Owns the ring engine: reading the avail ring, walking descriptor chains
//! (direct and indirect), writing used entries, and deciding when the driver
//! must be notified (EVENT_IDX or flags). It knows nothing of virtio-net or
//! vhost-user; it sees guest memory only through [`vhostd_mem::GuestMem`].
//!
//! Two ring layouts: split ([`SplitQueue`], virtio 1.2 §2.7) and packed
//! ([`PackedQueue`], §2.8), behind one [`Queue`] the data path uses.
//!
//! Work is batched: the caller pops a burst of chains ([`Queue::pop`]),
//! writes used entries ([`Queue::add_used`]), then publishes them once
//! ([`Queue::publish_used`]) and asks once whether to notify
//! ([`Queue::needs_notification`]). No allocation happens per chain: the
//! caller owns one [`Chain`] whose segment vector is reused.
//!
//! Every index, length and address the guest wrote is checked here (THREATS
//! C1, C2, C3, C5, C11): a chain whose buffers are bad is returned to the
//! caller marked bad (it must be completed with length 0); a ring whose
//! indices are impossible yields a [`QueueError`] and must be stopped.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

mod chain;
mod packed;
mod queue;
mod split;

pub use chain::{Chain, ChainError, Segment};
pub use packed::{
    packed_ring_sizes, PackedQueue, Single, RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_DISABLE,
    RING_EVENT_FLAGS_ENABLE, VRING_PACKED_DESC_F_AVAIL, VRING_PACKED_DESC_F_USED,
};
pub use queue::{Queue, UsedRef};
pub use split::{ring_sizes, QueueConfig, SplitQueue};

use vhostd_mem::MemError;

/// Largest queue size the split ring allows (virtio 1.2 §2.7: 32768).
pub const MAX_QUEUE_SIZE: u16 = 32768;
/// Largest indirect table we walk, in descriptors. Linux drivers use at most
/// `MAX_SKB_FRAGS + 2`; the cap bounds work per chain (THREATS C1, P5).
pub const MAX_INDIRECT_DESCS: u32 = 1024;

/// Descriptor flag: the chain continues at `next` (virtio 1.2 §2.7.5).
pub const VRING_DESC_F_NEXT: u16 = 1;
/// Descriptor flag: buffer is device-writable.
pub const VRING_DESC_F_WRITE: u16 = 2;
/// Descriptor flag: buffer holds an indirect descriptor table.
pub const VRING_DESC_F_INDIRECT: u16 = 4;
/// used.flags: the device does not want kicks (no EVENT_IDX).
pub const VRING_USED_F_NO_NOTIFY: u16 = 1;
/// avail.flags: the driver does not want calls (no EVENT_IDX).
pub const VRING_AVAIL_F_NO_INTERRUPT: u16 = 1;

/// A ring-level failure. Policy: the queue (and the port's view of it) is
/// stopped and marked broken until the front-end resets it; other queues and
/// ports keep running. All variants but `Memory`/`Config` are guest faults.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Queue size is 0, above 32768 or not a power of two.
    #[error("invalid queue size {0}")]
    InvalidSize(u32),
    /// A ring address is not aligned as the spec requires.
    #[error("{0} ring address {1:#x} is misaligned")]
    Misaligned(&'static str, u64),
    /// A ring does not lie fully inside guest memory.
    #[error("{0} ring at {1:#x} is not mapped")]
    RingNotMapped(&'static str, u64),
    /// The driver published more heads than the ring holds (THREATS C3).
    #[error("avail index jumped to {avail} with next {next} and size {size}")]
    AvailIdxJump {
        /// avail.idx read from the guest.
        avail: u16,
        /// Our next avail index.
        next: u16,
        /// Queue size.
        size: u16,
    },
    /// An avail ring entry names a head at or past the queue size.
    #[error("avail entry names head {0} past the queue size")]
    InvalidHead(u16),
    /// A `next` field points at or past the queue size (THREATS C1).
    #[error("descriptor {0} has next {1} past the queue size")]
    NextOutOfRange(u16, u16),
    /// A chain in the descriptor table is longer than the table: a loop.
    #[error("descriptor chain at head {0} loops")]
    ChainLoop(u16),
    /// A ring access failed even though the ring was validated at start
    /// (the memory table changed under us without a restart).
    #[error("ring memory access failed")]
    Memory(#[source] MemError),
    /// The ring base from `SET_VRING_BASE` is out of range.
    #[error("ring base {0:#x} out of range")]
    BadBase(u32),
    /// A write into a chain that was validated at pop time failed.
    #[error("write into a validated buffer failed")]
    BufferWrite,
}

impl QueueError {
    /// Whether the guest (as opposed to the front-end) caused this error.
    pub fn is_guest_fault(&self) -> bool {
        match self {
            QueueError::AvailIdxJump { .. }
            | QueueError::InvalidHead(_)
            | QueueError::NextOutOfRange(..)
            | QueueError::ChainLoop(_) => true,
            QueueError::InvalidSize(_)
            | QueueError::Misaligned(..)
            | QueueError::RingNotMapped(..)
            | QueueError::Memory(_)
            | QueueError::BadBase(_)
            | QueueError::BufferWrite => false,
        }
    }
}

impl From<MemError> for QueueError {
    fn from(e: MemError) -> Self {
        QueueError::Memory(e)
    }
}

#[cfg(test)]
mod packed_tests;
#[cfg(test)]
mod tests;
