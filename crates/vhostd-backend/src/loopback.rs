//! Loopback: every packet the guest sends comes back to it, MACs swapped.

use std::collections::VecDeque;
use std::os::unix::io::RawFd;

use crate::{Backend, BackendError, Offloads, MAX_PACKET};

/// Packets held between TX and RX; more are dropped (counted by the caller
/// as `dropped_backend`).
pub const LOOPBACK_SLOTS: usize = 256;

/// In-memory loopback. Slot buffers are allocated on first use and reused,
/// so steady state allocates nothing. Through [`Backend::send_owned`] and
/// [`Backend::recv_owned`] packets change hands by swapping buffers: the
/// loop path copies once from guest TX buffers and once into guest RX
/// buffers, nothing in between.
#[derive(Debug)]
pub struct Loopback {
    hdr_len: usize,
    /// (buffer, packet length)
    full: VecDeque<(Vec<u8>, usize)>,
    free: Vec<Vec<u8>>,
}

impl Loopback {
    /// An empty loopback.
    pub fn new() -> Self {
        Loopback {
            hdr_len: 12,
            full: VecDeque::with_capacity(LOOPBACK_SLOTS),
            free: Vec::new(),
        }
    }
}

impl Loopback {
    /// Swaps destination and source MAC so the frame looks like a reply.
    fn swap_macs(&self, slot: &mut [u8]) {
        let h = self.hdr_len;
        if let Some(macs) = slot.get_mut(h..h.saturating_add(12)) {
            let (dst, src) = macs.split_at_mut(6);
            dst.swap_with_slice(src);
        }
    }
}

impl Default for Loopback {
    fn default() -> Self {
        Self::new()
    }
}

impl Backend for Loopback {
    fn configure(&mut self, hdr_len: usize, _offloads: Offloads) -> Result<(), BackendError> {
        self.hdr_len = hdr_len;
        Ok(())
    }

    fn send(&mut self, pkt: &[u8]) -> Result<(), BackendError> {
        if self.full.len() >= LOOPBACK_SLOTS {
            return Err(BackendError::Busy);
        }
        let mut slot = self.free.pop().unwrap_or_else(|| vec![0u8; MAX_PACKET]);
        let n = pkt.len().min(slot.len());
        if let (Some(dst), Some(src)) = (slot.get_mut(..n), pkt.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.swap_macs(&mut slot);
        self.full.push_back((slot, n));
        Ok(())
    }

    fn send_owned(&mut self, buf: &mut Vec<u8>, len: usize) -> Result<(), BackendError> {
        if self.full.len() >= LOOPBACK_SLOTS || len > buf.len() {
            return Err(BackendError::Busy);
        }
        let spare = self.free.pop().unwrap_or_else(|| vec![0u8; MAX_PACKET]);
        let mut slot = std::mem::replace(buf, spare);
        self.swap_macs(&mut slot);
        self.full.push_back((slot, len));
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, BackendError> {
        let Some((slot, len)) = self.full.pop_front() else {
            return Ok(None);
        };
        let n = len.min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), slot.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.free.push(slot);
        Ok(Some(n))
    }

    fn recv_owned(&mut self, buf: &mut Vec<u8>) -> Result<Option<usize>, BackendError> {
        let Some((slot, len)) = self.full.pop_front() else {
            return Ok(None);
        };
        let old = std::mem::replace(buf, slot);
        self.free.push(old);
        Ok(Some(len))
    }

    fn rx_fd(&self) -> Option<RawFd> {
        None
    }

    fn rx_pending(&self) -> bool {
        !self.full.is_empty()
    }

    fn supports_offloads(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
    use super::*;

    #[test]
    fn test_loopback_swaps_macs_and_returns_frame() {
        let mut l = Loopback::new();
        l.configure(12, Offloads::default()).unwrap();
        let mut pkt = vec![0u8; 12];
        pkt.extend_from_slice(&[1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 8, 0, 0xaa]);
        l.send(&pkt).unwrap();
        assert!(l.rx_pending());
        let mut buf = vec![0u8; 100];
        let n = l.recv(&mut buf).unwrap().unwrap();
        assert_eq!(n, pkt.len());
        assert_eq!(&buf[12..24], &[2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1]);
        assert_eq!(buf[26], 0xaa);
        assert!(l.recv(&mut buf).unwrap().is_none());
    }

    #[test]
    fn test_loopback_owned_buffers_change_hands_without_copy() {
        let mut l = Loopback::new();
        l.configure(12, Offloads::default()).unwrap();
        let mut tx = vec![0u8; MAX_PACKET];
        tx[12..26].copy_from_slice(&[1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 8, 0]);
        tx[26] = 0xbb;
        let sent_ptr = tx.as_ptr();
        l.send_owned(&mut tx, 27).unwrap();
        assert_ne!(tx.as_ptr(), sent_ptr, "the loopback kept the buffer");
        assert_eq!(tx.len(), MAX_PACKET);
        let mut rx = vec![0u8; MAX_PACKET];
        assert_eq!(l.recv_owned(&mut rx).unwrap(), Some(27));
        assert_eq!(rx.as_ptr(), sent_ptr, "the same buffer came back");
        assert_eq!(&rx[12..24], &[2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1]);
        assert_eq!(rx[26], 0xbb);
        assert_eq!(rx.len(), MAX_PACKET);
        assert_eq!(l.recv_owned(&mut rx).unwrap(), None);
        assert!(l.send_owned(&mut tx, MAX_PACKET + 1).is_err());
    }

    #[test]
    fn test_loopback_full_reports_busy() {
        let mut l = Loopback::new();
        for _ in 0..LOOPBACK_SLOTS {
            l.send(&[0u8; 30]).unwrap();
        }
        assert!(matches!(l.send(&[0u8; 30]), Err(BackendError::Busy)));
    }

    #[test]
    fn test_loopback_ring_laps_keep_order_bytes_and_buffers() {
        // frames in and out over several laps of the ring, owned and copied
        // calls mixed: every frame comes back once, in order, MACs swapped;
        // buffers in circulation stay at most one per slot plus the caller's two
        let mut l = Loopback::new();
        l.configure(12, Offloads::default()).unwrap();
        let (mut tx, mut rx) = (vec![0u8; MAX_PACKET], vec![0u8; MAX_PACKET]);
        let mut seen = std::collections::HashSet::new();
        let (mut sent, mut got) = (0usize, 0usize);
        for round in 0..40usize {
            // a varying number in flight: up to a full ring, then Busy
            let burst = (round * 37) % 300;
            for _ in 0..burst {
                let k = u32::try_from(sent).unwrap().to_le_bytes();
                let mut f = vec![0u8; 12];
                f.extend_from_slice(&[1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 8, 0]);
                f.extend_from_slice(&k);
                let r = if sent % 3 == 0 {
                    l.send(&f)
                } else {
                    tx[..f.len()].copy_from_slice(&f);
                    l.send_owned(&mut tx, f.len())
                };
                match r {
                    Ok(()) => sent += 1,
                    Err(BackendError::Busy) => {
                        assert_eq!(sent - got, LOOPBACK_SLOTS);
                        break;
                    }
                    Err(e) => panic!("{e:?}"),
                }
                assert_eq!(tx.len(), MAX_PACKET);
                seen.insert(tx.as_ptr() as usize);
            }
            while l.rx_pending() {
                let n = if got % 2 == 0 {
                    l.recv_owned(&mut rx).unwrap().unwrap()
                } else {
                    l.recv(&mut rx).unwrap().unwrap()
                };
                assert_eq!(n, 30);
                assert_eq!(&rx[12..24], &[2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1]);
                assert_eq!(&rx[26..30], &u32::try_from(got).unwrap().to_le_bytes());
                got += 1;
                seen.insert(rx.as_ptr() as usize);
            }
            assert_eq!(l.recv_owned(&mut rx).unwrap(), None);
        }
        assert_eq!(sent, got);
        assert!(sent > 3 * LOOPBACK_SLOTS, "{sent}");
        assert!(seen.len() <= LOOPBACK_SLOTS + 2, "{} buffers", seen.len());
    }
}
