//! Sink: takes every packet and keeps nothing (benchmarks, TX-only tests).

use std::os::unix::io::RawFd;

use crate::{Backend, BackendError, Offloads};

/// Discards what it is sent; never has anything to receive.
#[derive(Debug, Default)]
pub struct Sink {
    /// Packets taken.
    pub packets: u64,
}

impl Backend for Sink {
    fn configure(&mut self, _hdr_len: usize, _offloads: Offloads) -> Result<(), BackendError> {
        Ok(())
    }

    fn send(&mut self, _pkt: &[u8]) -> Result<(), BackendError> {
        self.packets = self.packets.wrapping_add(1);
        Ok(())
    }

    fn recv(&mut self, _buf: &mut [u8]) -> Result<Option<usize>, BackendError> {
        Ok(None)
    }

    fn rx_fd(&self) -> Option<RawFd> {
        None
    }

    fn rx_pending(&self) -> bool {
        false
    }

    fn supports_offloads(&self) -> bool {
        false
    }
}
