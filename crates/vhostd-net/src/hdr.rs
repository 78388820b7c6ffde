//! The virtio-net header (virtio 1.2 §5.1.6) and the rules a TX header must
//! meet before it leaves the guest (THREATS C4, C6, C7).
//!
//! ```text
//!  0 flags u8 | 1 gso_type u8 | 2 hdr_len le16 | 4 gso_size le16
//!  6 csum_start le16 | 8 csum_offset le16 | 10 num_buffers le16 (12-byte form)
//! ```
//! Rules are checked on a private copy of the packet, never on guest memory
//! (THREATS C5). They are kept close to what Linux tun accepts: validation
//! stricter than the kernel's is an outage too (THREATS C7, CVE-2024-43817).

use virtio_bindings::bindings::virtio_net as vn;

use crate::NetConfig;

#[allow(clippy::cast_possible_truncation)]
const NEEDS_CSUM: u8 = vn::VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
#[allow(clippy::cast_possible_truncation)]
const GSO_ECN: u8 = vn::VIRTIO_NET_HDR_GSO_ECN as u8;
#[allow(clippy::cast_possible_truncation)]
const GSO_NONE: u8 = vn::VIRTIO_NET_HDR_GSO_NONE as u8;
#[allow(clippy::cast_possible_truncation)]
const GSO_TCPV4: u8 = vn::VIRTIO_NET_HDR_GSO_TCPV4 as u8;
#[allow(clippy::cast_possible_truncation)]
const GSO_TCPV6: u8 = vn::VIRTIO_NET_HDR_GSO_TCPV6 as u8;
#[allow(clippy::cast_possible_truncation)]
const GSO_UDP: u8 = vn::VIRTIO_NET_HDR_GSO_UDP as u8;

/// Offset of `num_buffers` in the 12-byte header.
pub const NUM_BUFFERS_OFFSET: usize = 10;
/// End of `num_buffers` (a `le16`).
pub const NUM_BUFFERS_END: usize = 12;

/// Why a TX header is refused. Policy: the frame is dropped and counted in
/// `dropped_bad_header`; the chain is completed; the queue keeps running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HdrError {
    /// NEEDS_CSUM without VIRTIO_NET_F_CSUM acked.
    #[error("partial checksum without the csum feature")]
    CsumNotNegotiated,
    /// csum_start + csum_offset + 2 past the frame (CVE-2024-11614).
    #[error("checksum offsets {0}+{1} past frame of {2}")]
    CsumOutOfFrame(u16, u16, usize),
    /// gso_type not one the spec defines.
    #[error("unknown gso type {0:#x}")]
    UnknownGso(u8),
    /// A GSO type whose HOST_* feature was not acked.
    #[error("gso type {0:#x} not negotiated")]
    GsoNotNegotiated(u8),
    /// GSO with gso_size 0.
    #[error("gso with size 0")]
    GsoSizeZero,
    /// hdr_len past the frame (Linux tun rejects this too).
    #[error("hdr_len {0} past frame of {1}")]
    HdrLenOutOfFrame(u16, usize),
}

/// Whether the header at the start of `pkt` announces a GSO frame.
pub fn is_gso(pkt: &[u8]) -> bool {
    pkt.get(1).is_some_and(|t| t & !GSO_ECN != GSO_NONE)
}

fn le16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at.saturating_add(2)) {
        Some(&[lo, hi]) => u16::from_le_bytes([lo, hi]),
        _ => 0,
    }
}

/// Checks the header at the start of `pkt` (header + frame) against the acked
/// features. `pkt` is host memory, already copied out of the guest.
///
/// The usual header (no checksum to finish, no GSO) is accepted inline;
/// the rest goes to [`validate_tx_offloads`], out of line: a call per
/// frame saved registers and returned its `Result` through the stack,
/// stores waiting behind the frame copies' (docs/PERFORMANCE.md).
#[inline(always)]
pub fn validate_tx(pkt: &[u8], cfg: &NetConfig) -> Result<(), HdrError> {
    match pkt {
        // what validate_tx_offloads accepts for any `cfg`, without NEEDS_CSUM and GSO
        [flags, 0, ..] if flags & NEEDS_CSUM == 0 => Ok(()),
        _ => validate_tx_offloads(pkt, cfg),
    }
}

/// [`validate_tx`] for headers that ask for offloads (or are too short):
/// every field checked against the acked features.
#[inline(never)]
fn validate_tx_offloads(pkt: &[u8], cfg: &NetConfig) -> Result<(), HdrError> {
    let frame_len = pkt.len().saturating_sub(cfg.hdr_len);
    let flags = pkt.first().copied().unwrap_or(0);
    let gso_type = pkt.get(1).copied().unwrap_or(0);
    let hdr_len = le16(pkt, 2);
    let gso_size = le16(pkt, 4);
    let csum_start = le16(pkt, 6);
    let csum_offset = le16(pkt, 8);
    if flags & NEEDS_CSUM != 0 {
        if !cfg.host_csum {
            return Err(HdrError::CsumNotNegotiated);
        }
        // two u16s and 2 in a usize: no overflow, saturating says so
        let end = usize::from(csum_start)
            .saturating_add(usize::from(csum_offset))
            .saturating_add(2);
        if end > frame_len {
            return Err(HdrError::CsumOutOfFrame(csum_start, csum_offset, frame_len));
        }
    }
    let base = gso_type & !GSO_ECN;
    let allowed = match base {
        GSO_NONE => gso_type & GSO_ECN == 0,
        GSO_TCPV4 => cfg.host_tso4,
        GSO_TCPV6 => cfg.host_tso6,
        GSO_UDP => cfg.host_ufo,
        _ => return Err(HdrError::UnknownGso(gso_type)),
    };
    if !allowed || (gso_type & GSO_ECN != 0 && !cfg.host_ecn) {
        return Err(HdrError::GsoNotNegotiated(gso_type));
    }
    if base != GSO_NONE {
        if gso_size == 0 {
            return Err(HdrError::GsoSizeZero);
        }
        if usize::from(hdr_len) > frame_len {
            return Err(HdrError::HdrLenOutOfFrame(hdr_len, frame_len));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)]
    use super::*;
    use crate::features::{offered, BASE_FEATURES};

    #[test]
    fn test_validate_tx_fast_path_agrees_with_full_check() {
        // every (flags, gso_type) pair, with and without offloads acked,
        // 12- and 10-byte headers, a frame and headers cut short: the
        // inline acceptance never differs from the full check
        let legacy = (1u64 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1)
            | (1u64 << virtio_bindings::bindings::virtio_net::VIRTIO_NET_F_MRG_RXBUF);
        let cfgs = [
            NetConfig::from_features(BASE_FEATURES),
            NetConfig::from_features(offered(true)),
            NetConfig::from_features(offered(true) & !legacy),
        ];
        assert_eq!(cfgs[2].hdr_len, 10);
        let mut accepted = 0u32;
        for cfg in cfgs {
            for len in [cfg.hdr_len + 60, 2, 1, 0] {
                let mut p = vec![0u8; len];
                for flags in 0..=255u8 {
                    for gso in 0..=255u8 {
                        if let Some(h) = p.get_mut(..2) {
                            h.copy_from_slice(&[flags, gso]);
                        }
                        let fast = validate_tx(&p, &cfg);
                        accepted += u32::from(fast.is_ok());
                        assert_eq!(
                            fast,
                            validate_tx_offloads(&p, &cfg),
                            "flags {flags:#x} gso {gso:#x} len {len}"
                        );
                    }
                }
            }
        }
        assert!(accepted > 0);
    }
}
