//! virtio-net device layer of vhostd.
//!
//! Owns what makes a virtqueue pair a network device: the feature set
//! ([`features`]), the virtio-net header rules ([`hdr`]), and moving packets
//! between a queue pair and a [`vhostd_backend::Backend`] ([`QueuePair`]).
//! It knows nothing of vhost-user, sockets or threads: the daemon feeds it
//! rings and memory and turns its outcomes into eventfd writes.
//!
//! Hot-path rules: no allocation, no lock and no syscall per packet here
//! (the back-end's own I/O aside); counters are added locally and published
//! once per burst by the caller.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

pub mod coalesce;
pub mod ctrl;
pub mod features;
pub mod hdr;
mod queue_pair;
pub mod tune;

pub use features::NetConfig;
pub use queue_pair::{Outcome, QueuePair, Status, BURST};

#[cfg(test)]
mod tests;
