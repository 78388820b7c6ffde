//! `ceiling:KIND`: a benchmark diagnostic, never a vhostd figure. It wraps
//! one of the benchmark back-ends (sink, source, loopback) and tells the
//! queue pair that the frame bytes need not cross guest memory
//! ([`Backend::needs_frame_bytes`] is false): TX reads only the virtio-net
//! header of a single-buffer frame, RX writes only the header. What is left
//! is the work every back-end must do per frame (ring reads and writes, the
//! header), so the front-end's rate against it bounds what any back-end that
//! also copies the frames could reach in the same harness
//! (`CEILING=1 bench/dpdk-compare.sh`). It breaks the benchmark fairness
//! rule on purpose: the daemon says so in its log when it opens one.

use std::os::unix::io::RawFd;

use crate::{Backend, BackendError, Offloads};

/// A benchmark back-end whose frames are not copied (see the module doc).
#[derive(Debug)]
pub struct Ceiling(pub Box<dyn Backend>);

impl Backend for Ceiling {
    fn configure(&mut self, hdr_len: usize, offloads: Offloads) -> Result<(), BackendError> {
        self.0.configure(hdr_len, offloads)
    }

    fn send(&mut self, pkt: &[u8]) -> Result<(), BackendError> {
        self.0.send(pkt)
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, BackendError> {
        self.0.recv(buf)
    }

    fn send_owned(&mut self, buf: &mut Vec<u8>, len: usize) -> Result<(), BackendError> {
        self.0.send_owned(buf, len)
    }

    fn recv_owned(&mut self, buf: &mut Vec<u8>) -> Result<Option<usize>, BackendError> {
        self.0.recv_owned(buf)
    }

    fn rx_fd(&self) -> Option<RawFd> {
        self.0.rx_fd()
    }

    fn rx_pending(&self) -> bool {
        self.0.rx_pending()
    }

    fn supports_offloads(&self) -> bool {
        self.0.supports_offloads()
    }

    fn needs_frame_bytes(&self) -> bool {
        false
    }
}
