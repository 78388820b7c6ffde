//! Source: an endless supply of `LEN`-byte frames (host -> guest benchmarks).

use std::os::unix::io::RawFd;

use crate::{Backend, BackendError, Offloads, MAX_PACKET};

/// Smallest frame a source makes: an Ethernet header.
pub const MIN_SOURCE_LEN: usize = 14;

/// Hands out the same `len`-byte Ethernet frame (broadcast, EtherType
/// 0x88b5 "local experimental", a byte pattern as payload) every time it is
/// asked. The queue pair copies it in full into guest RX buffers, as it
/// would a real back-end's frame.
#[derive(Debug)]
pub struct Source {
    /// virtio-net header then the frame.
    pkt: Vec<u8>,
    hdr_len: usize,
    len: usize,
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
            packets: 0,
        };
        s.build();
        Ok(s)
    }

    fn build(&mut self) {
        let mut p = vec![0u8; self.hdr_len];
        p.extend_from_slice(&[0xff; 6]); // broadcast
        p.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // locally administered
        p.extend_from_slice(&[0x88, 0xb5]);
        p.extend(
            (0..self.len.saturating_sub(14))
                .map(|i| u8::try_from(i.checked_rem(251).unwrap_or(0)).unwrap_or(0)),
        );
        self.pkt = p;
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
        assert!(buf[..12].iter().all(|&b| b == 0));
        assert_eq!(&buf[12..18], &[0xff; 6]);
        assert_eq!(&buf[24..26], &[0x88, 0xb5]);
        assert!(s.rx_pending());
        let mut small = [0u8; 10];
        assert_eq!(s.recv(&mut small).unwrap(), None);
        assert!(Source::new(13).is_err());
        assert!(Source::new(MAX_PACKET).is_err());
    }
}
