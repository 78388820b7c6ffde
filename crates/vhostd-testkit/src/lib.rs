//! Test kit: a fake guest for vhostd's tests and benchmarks.
//!
//! - [`TestMemory`]: guest RAM in a memfd, shared with the daemon by fd.
//! - [`FakeDriver`]: the driver side of one split virtqueue (posts RX buffers,
//!   sends TX frames, reads used entries) plus hostile builders (raw
//!   descriptors, avail-index jumps) for the catalog tests.
//! - [`PackedDriver`]: the same for one packed virtqueue.
//! - [`FakeFrontend`]: a real vhost-user front-end (rust-vmm `vhost` crate)
//!   driving a daemon over a unix socket.
//! - [`FakeGuest`]: front-end plus one RX/TX driver pair per queue pair.
//!
//! This crate is an independent implementation of the driver side: it does
//! not use vhostd's ring code, so it can catch its mistakes.
#![allow(missing_docs, clippy::unwrap_used)]

mod driver;
mod frontend;
mod packed;

pub use driver::{DriverLayout, FakeDriver, RawDesc};
pub use frontend::*;
pub use packed::{Driver, PackedDesc, PackedDriver};
