//! Loopback: every packet the guest sends comes back to it, MACs swapped.

use std::os::unix::io::RawFd;

use crate::{Backend, BackendError, Offloads, MAX_PACKET};

/// Packets held between TX and RX; more are dropped (counted by the caller
/// as `dropped_backend`).
pub const LOOPBACK_SLOTS: usize = 256;

/// In-memory loopback: a ring of [`LOOPBACK_SLOTS`] slots, each owning one
/// buffer (allocated on first use, reused after), the frames held in
/// `[head, head + len)`. Through [`Backend::send_owned`] and
/// [`Backend::recv_owned`] packets change hands by swapping the caller's
/// buffer with a slot's: the loop path copies once from guest TX buffers
/// and once into guest RX buffers, nothing in between.
///
/// Both calls are made once per frame through `dyn Backend`, so their
/// common path is kept free of calls (the allocation is out of line): a
/// function that calls saves registers first, and every such store waits
/// in order behind the frame copies' stores into guest memory
/// (docs/PERFORMANCE.md, stores per frame). With a `VecDeque` of frames
/// and a `Vec` of free buffers each call saved six registers.
#[derive(Debug)]
pub struct Loopback {
    hdr_len: usize,
    /// (buffer, packet length); the buffer is empty until first used
    slots: Box<[(Vec<u8>, usize)]>,
    head: usize,
    len: usize,
}

const SLOT_MASK: usize = LOOPBACK_SLOTS - 1;
const _: () = assert!(LOOPBACK_SLOTS.is_power_of_two());

impl Loopback {
    /// An empty loopback.
    pub fn new() -> Self {
        Loopback {
            hdr_len: 12,
            slots: (0..LOOPBACK_SLOTS).map(|_| (Vec::new(), 0)).collect(),
            head: 0,
            len: 0,
        }
    }

    /// The slot the next frame goes into, its buffer allocated; None if
    /// every slot holds a frame.
    #[inline(always)]
    fn tail_slot(&mut self) -> Option<&mut (Vec<u8>, usize)> {
        if self.len >= LOOPBACK_SLOTS {
            return None;
        }
        let i = self.tail();
        let slot = self.slots.get_mut(i)?;
        if slot.0.len() < MAX_PACKET {
            allocate(&mut slot.0);
        }
        Some(slot)
    }

    /// The index of the slot the next frame goes into (free if `len` is
    /// under [`LOOPBACK_SLOTS`]).
    #[inline(always)]
    fn tail(&self) -> usize {
        self.head.wrapping_add(self.len) & SLOT_MASK
    }

    /// [`Backend::send_owned`] into a slot whose buffer is not allocated
    /// yet: the rare case, out of line (see the type's note on calls).
    #[cold]
    #[inline(never)]
    fn send_owned_first(&mut self, buf: &mut Vec<u8>, len: usize) -> Result<(), BackendError> {
        let hl = self.hdr_len;
        let Some(slot) = self.tail_slot() else {
            return Err(BackendError::Busy);
        };
        swap_in(slot, buf, len, hl);
        self.push();
        Ok(())
    }

    /// Counts the frame just put into the tail slot.
    #[inline(always)]
    fn push(&mut self) {
        self.len = self.len.wrapping_add(1);
    }

    /// The oldest frame's slot, taken out of the ring (its buffer stays
    /// there until overwritten or swapped); None if empty.
    #[inline(always)]
    fn pop(&mut self) -> Option<&mut (Vec<u8>, usize)> {
        if self.len == 0 {
            return None;
        }
        let i = self.head;
        self.head = i.wrapping_add(1) & SLOT_MASK;
        self.len = self.len.wrapping_sub(1);
        self.slots.get_mut(i)
    }
}

/// A slot's buffer on first use (or after a caller handed in a short
/// one): out of line, so the per-frame calls stay free of calls.
#[cold]
#[inline(never)]
fn allocate(buf: &mut Vec<u8>) {
    *buf = vec![0u8; MAX_PACKET];
}

/// Puts the caller's `len`-byte frame in `buf` into `slot`, the slot's
/// buffer going to the caller, MACs swapped.
#[inline(always)]
fn swap_in(slot: &mut (Vec<u8>, usize), buf: &mut Vec<u8>, len: usize, hdr_len: usize) {
    std::mem::swap(&mut slot.0, buf);
    swap_macs(&mut slot.0, hdr_len);
    slot.1 = len;
}

/// Swaps destination and source MAC of the frame after `hdr_len` bytes of
/// header, so the frame looks like a reply.
#[inline(always)]
fn swap_macs(slot: &mut [u8], hdr_len: usize) {
    if let Some(m) = slot
        .get_mut(hdr_len..)
        .and_then(|s| s.first_chunk_mut::<12>())
    {
        let v = *m;
        *m = [
            v[6], v[7], v[8], v[9], v[10], v[11], v[0], v[1], v[2], v[3], v[4], v[5],
        ];
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
        let hl = self.hdr_len;
        // (not `ok_or`: that builds the error, and drops it, on every call)
        let Some(slot) = self.tail_slot() else {
            return Err(BackendError::Busy);
        };
        let n = pkt.len().min(slot.0.len());
        if let (Some(dst), Some(src)) = (slot.0.get_mut(..n), pkt.get(..n)) {
            dst.copy_from_slice(src);
        }
        swap_macs(&mut slot.0, hl);
        slot.1 = n;
        self.push();
        Ok(())
    }

    fn send_owned(&mut self, buf: &mut Vec<u8>, len: usize) -> Result<(), BackendError> {
        if len > buf.len() || self.len >= LOOPBACK_SLOTS {
            return Err(BackendError::Busy);
        }
        let (hl, i) = (self.hdr_len, self.tail());
        match self.slots.get_mut(i) {
            Some(slot) if slot.0.len() >= MAX_PACKET => {
                swap_in(slot, buf, len, hl);
                self.push();
                Ok(())
            }
            // the slot's first use: its buffer allocated out of line
            _ => self.send_owned_first(buf, len),
        }
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, BackendError> {
        let Some(slot) = self.pop() else {
            return Ok(None);
        };
        let n = slot.1.min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), slot.0.get(..n)) {
            dst.copy_from_slice(src);
        }
        Ok(Some(n))
    }

    fn recv_owned(&mut self, buf: &mut Vec<u8>) -> Result<Option<usize>, BackendError> {
        let Some(slot) = self.pop() else {
            return Ok(None);
        };
        std::mem::swap(&mut slot.0, buf);
        Ok(Some(slot.1))
    }

    fn rx_fd(&self) -> Option<RawFd> {
        None
    }

    fn rx_pending(&self) -> bool {
        self.len > 0
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
    fn test_loopback_short_buffers_from_callers_are_replaced() {
        // a caller handing in a short buffer on RX leaves it in a slot;
        // the next frame through that slot gets a full-size buffer again,
        // and every caller keeps getting MAX_PACKET buffers back
        let mut l = Loopback::new();
        l.configure(12, Offloads::default()).unwrap();
        for round in 0..3 * LOOPBACK_SLOTS {
            let mut tx = vec![0u8; MAX_PACKET];
            tx[26] = u8::try_from(round % 251).unwrap();
            l.send_owned(&mut tx, 27).unwrap();
            assert_eq!(tx.len(), MAX_PACKET, "round {round}");
            let mut short = vec![0u8; 32];
            assert_eq!(l.recv_owned(&mut short).unwrap(), Some(27));
            assert_eq!(short.len(), MAX_PACKET);
            assert_eq!(short[26], u8::try_from(round % 251).unwrap());
        }
        // an empty buffer handed in with a frame too long for it is refused
        let mut empty = Vec::new();
        assert!(matches!(
            l.send_owned(&mut empty, 1),
            Err(BackendError::Busy)
        ));
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
