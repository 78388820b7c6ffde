//! TX virtio-net header rules on arbitrary headers and feature sets: no
//! panic, and a header accepted never names a checksum range past the frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vhostd_net::hdr::{is_gso, validate_tx};
use vhostd_net::NetConfig;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let features = u64::from_le_bytes(data[..8].try_into().unwrap());
    let cfg = NetConfig::from_features(features);
    let pkt = &data[8..];
    if validate_tx(pkt, &cfg).is_ok() && pkt.len() >= 10 && pkt[0] & 1 != 0 {
        let start = usize::from(u16::from_le_bytes([pkt[6], pkt[7]]));
        let off = usize::from(u16::from_le_bytes([pkt[8], pkt[9]]));
        assert!(start + off + 2 <= pkt.len().saturating_sub(cfg.hdr_len), "accepted csum past the frame");
    }
    let _ = is_gso(pkt);
});
