//! Source: an endless supply of `LEN`-byte frames (host -> guest benchmarks).

use std::os::unix::io::RawFd;

use crate::{Backend, BackendError, Offloads, MAX_PACKET};

/// Smallest frame a source makes: an Ethernet header.
pub const MIN_SOURCE_LEN: usize = 14;

/// Hands out the same `len`-byte Ethernet frame (broadcast, EtherType
/// 0x88b5 "local experimental", a byte pattern as payload) every time it is
/// asked. The queue pair copies it in full into guest RX buffers, as it
/// would a real back-end's frame.
///
/// Through [`Backend::recv_owned`] the frame is written into the caller's
/// buffer once: while the caller hands back the same buffer (the queue
/// pair's RX buffer, whose frame bytes it leaves alone), only the header is
/// written again, and only where it differs, as a NIC or TAP back-end
/// would fill a host buffer once per frame and a benchmark generator
/// (DPDK's `txonly`) writes headers only. The copy that counts, host buffer -> guest buffer, stays in full.
/// A caller that changed frame bytes in that buffer, or freed it and got
/// another at the same address, would hand out stale bytes: the queue pair
/// does neither (its test `test_qp_source_frames_arrive_whole_pass_after_pass`).
#[derive(Debug)]
pub struct Source {
    /// virtio-net header then the frame.
    pkt: Vec<u8>,
    hdr_len: usize,
    len: usize,
    /// Address of the buffer `recv_owned` last wrote the whole frame into
    /// (compared, never dereferenced).
    filled: Option<usize>,
    /// Frames handed out.
    pub packets: u64,
}

impl Source {
    /// A source of `len`-byte frames (`MIN_SOURCE_LEN..=MAX_PACKET - 12`).
    pub fn new(len: usize) -> Result<Self, BackendError> {
        if !(MIN_SOURCE_LEN..=MAX_PACKET - 12).contains(&len) {
            return Err(BackendError::UnknownSpec(format!("source:{len}")));
        }
        let mut s = Source {
            pkt: Vec::new(),
            hdr_len: 12,
            len,
            filled: None,
            packets: 0,
        };
        s.build();
        Ok(s)
    }

    fn build(&mut self) {
        let mut p = vec![0u8; self.hdr_len];
        if let Some(nb) = p.get_mut(10) {
            // num_buffers 1 (12-byte header): what the RX path sets for a
            // frame that fits one buffer, so it finds it set and neither
            // side stores into the buffer's header frame after frame
            *nb = 1;
        }
        p.extend_from_slice(&[0xff; 6]); // broadcast
        p.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // locally administered
        p.extend_from_slice(&[0x88, 0xb5]);
        p.extend(
            (0..self.len.saturating_sub(14))
                .map(|i| u8::try_from(i.checked_rem(251).unwrap_or(0)).unwrap_or(0)),
        );
        self.pkt = p;
        self.filled = None;
    }

    /// [`Backend::recv_owned`] into a buffer that does not hold the frame
    /// yet: the whole frame copied, out of line (once per buffer).
    #[cold]
    #[inline(never)]
    fn fill(&mut self, buf: &mut [u8]) -> Result<Option<usize>, BackendError> {
        let at = buf.as_ptr() as usize;
        let got = self.recv(buf)?;
        self.filled = got.map(|_| at);
        Ok(got)
    }
}

/// Makes the first `N` bytes of `dst` those of `src`, storing only if they
/// differ; false if either is shorter.
#[inline(always)]
fn refresh<const N: usize>(dst: &mut [u8], src: &[u8]) -> bool {
    match (dst.first_chunk_mut::<N>(), src.first_chunk::<N>()) {
        (Some(d), Some(s)) => {
            if d != s {
                *d = *s;
            }
            true
        }
        _ => false,
    }
}

impl Backend for Source {
    fn configure(&mut self, hdr_len: usize, _offloads: Offloads) -> Result<(), BackendError> {
        self.hdr_len = hdr_len;
        self.build();
        Ok(())
    }

    fn send(&mut self, _pkt: &[u8]) -> Result<(), BackendError> {
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, BackendError> {
        let n = self.pkt.len();
        match buf.get_mut(..n) {
            Some(dst) => {
                dst.copy_from_slice(&self.pkt);
                self.packets = self.packets.wrapping_add(1);
                Ok(Some(n))
            }
            None => Ok(None),
        }
    }

    fn recv_owned(&mut self, buf: &mut Vec<u8>) -> Result<Option<usize>, BackendError> {
        let at = buf.as_ptr() as usize;
        if self.filled == Some(at) && self.pkt.len() <= buf.len() {
            // the frame is still there: the header only (the caller may
            // have set num_buffers in it), compared with fixed-size loads
            // and stored only if it differs: a store here queues behind the
            // previous frames' stores into guest lines, and a memcmp call
            // (like any call) saves registers first
            let fresh = match self.hdr_len {
                12 => refresh::<12>(buf, &self.pkt),
                10 => refresh::<10>(buf, &self.pkt),
                _ => false,
            };
            if fresh {
                self.packets = self.packets.wrapping_add(1);
                return Ok(Some(self.pkt.len()));
            }
        }
        self.fill(buf)
    }

    fn rx_fd(&self) -> Option<RawFd> {
        None
    }

    fn rx_pending(&self) -> bool {
        true
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
    fn test_source_frames_have_header_and_length() {
        let mut s = Source::new(64).unwrap();
        s.configure(12, Offloads::default()).unwrap();
        let mut buf = vec![0u8; 2048];
        let n = s.recv(&mut buf).unwrap().unwrap();
        assert_eq!(n, 12 + 64);
        assert_eq!(&buf[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        assert_eq!(&buf[12..18], &[0xff; 6]);
        assert_eq!(&buf[24..26], &[0x88, 0xb5]);
        assert!(s.rx_pending());
        let mut small = [0u8; 10];
        assert_eq!(s.recv(&mut small).unwrap(), None);
        assert!(Source::new(13).is_err());
        assert!(Source::new(MAX_PACKET).is_err());
    }

    #[test]
    fn test_source_owned_writes_frame_once_per_buffer_then_header_only() {
        let mut s = Source::new(100).unwrap();
        s.configure(12, Offloads::default()).unwrap();
        let mut want = vec![0u8; 200];
        let n = s.recv(&mut want).unwrap().unwrap();
        let mut a = vec![0u8; MAX_PACKET];
        assert_eq!(s.recv_owned(&mut a).unwrap(), Some(n));
        assert_eq!(&a[..n], &want[..n]);
        // the caller sets num_buffers; the next frame in the same buffer
        // has the source's header again and the same bytes
        a[10] = 7;
        assert_eq!(s.recv_owned(&mut a).unwrap(), Some(n));
        assert_eq!(&a[..n], &want[..n]);
        // another buffer gets the whole frame
        let mut b = vec![0xeeu8; MAX_PACKET];
        assert_eq!(s.recv_owned(&mut b).unwrap(), Some(n));
        assert_eq!(&b[..n], &want[..n]);
        // reconfiguring rebuilds the frame: written whole again
        s.configure(10, Offloads::default()).unwrap();
        let m = s.recv_owned(&mut b).unwrap().unwrap();
        assert_eq!(m, n - 2);
        assert_eq!(&b[10..m], &want[12..n]);
        // a changed 10-byte header is restored too, the frame left as is
        b[2] = 9;
        assert_eq!(s.recv_owned(&mut b).unwrap(), Some(m));
        assert_eq!(&b[..10], &[0u8; 10]);
        assert_eq!(&b[10..m], &want[12..n]);
        assert_eq!(s.packets, 6);
    }
}
