//! virtio-net feature negotiation (virtio 1.2 §5.1.3).

use vhostd_backend::Offloads;
use virtio_bindings::bindings::virtio_net as vn;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

const fn bit(b: u32) -> u64 {
    1u64 << b
}

/// vhost-user: the back-end speaks protocol features (bit 30).
pub const VHOST_USER_F_PROTOCOL_FEATURES: u64 = bit(30);

/// VIRTIO_F_RING_PACKED (virtio 1.2 §6).
pub const VIRTIO_F_RING_PACKED: u32 = 34;
/// VIRTIO_F_IN_ORDER: buffers are used in the order they were made available.
pub const VIRTIO_F_IN_ORDER: u32 = 35;

/// Features every back-end offers. IN_ORDER is true of vhostd's data path:
/// every chain is completed in the order it was taken, on both layouts.
pub const BASE_FEATURES: u64 = bit(VIRTIO_F_VERSION_1)
    | bit(VIRTIO_F_RING_PACKED)
    | bit(VIRTIO_F_IN_ORDER)
    | bit(VIRTIO_RING_F_INDIRECT_DESC)
    | bit(VIRTIO_RING_F_EVENT_IDX)
    | bit(vn::VIRTIO_NET_F_MRG_RXBUF)
    | bit(vn::VIRTIO_NET_F_MQ)
    | VHOST_USER_F_PROTOCOL_FEATURES;

/// Checksum and segmentation offloads, offered only by back-ends that carry
/// them (TAP): a loopback would hand GSO frames to a guest that never asked
/// for them.
pub const OFFLOAD_FEATURES: u64 = bit(vn::VIRTIO_NET_F_CSUM)
    | bit(vn::VIRTIO_NET_F_GUEST_CSUM)
    | bit(vn::VIRTIO_NET_F_HOST_TSO4)
    | bit(vn::VIRTIO_NET_F_HOST_TSO6)
    | bit(vn::VIRTIO_NET_F_HOST_ECN)
    | bit(vn::VIRTIO_NET_F_HOST_UFO)
    | bit(vn::VIRTIO_NET_F_GUEST_TSO4)
    | bit(vn::VIRTIO_NET_F_GUEST_TSO6)
    | bit(vn::VIRTIO_NET_F_GUEST_ECN)
    | bit(vn::VIRTIO_NET_F_GUEST_UFO);

/// The control virtqueue and the notification-coalescing commands on it,
/// offered only with `--ctrl-vq`: for a front-end that hands the control
/// queue to the back-end. QEMU keeps the control queue for itself (and masks
/// these bits), so by default they are not offered.
pub const CTRL_FEATURES: u64 = bit(vn::VIRTIO_NET_F_CTRL_VQ)
    | bit(vn::VIRTIO_NET_F_NOTF_COAL)
    | bit(vn::VIRTIO_NET_F_VQ_NOTF_COAL);

/// The feature set offered for a back-end.
pub fn offered(offloads: bool) -> u64 {
    if offloads {
        BASE_FEATURES | OFFLOAD_FEATURES
    } else {
        BASE_FEATURES
    }
}

/// What the data path needs to know of the acked features. Built once per
/// negotiation; the header length is always derived from the acked set
/// (THREATS C15, CVE-2023-6693).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetConfig {
    /// Virtio-net header length: 12 with VERSION_1 or MRG_RXBUF, else 10.
    pub hdr_len: usize,
    /// VIRTIO_NET_F_MRG_RXBUF.
    pub mrg_rxbuf: bool,
    /// VIRTIO_RING_F_EVENT_IDX.
    pub event_idx: bool,
    /// VIRTIO_RING_F_INDIRECT_DESC.
    pub indirect: bool,
    /// VIRTIO_F_RING_PACKED.
    pub packed: bool,
    /// VIRTIO_F_IN_ORDER.
    pub in_order: bool,
    /// VIRTIO_NET_F_CSUM: the driver may send partial checksums.
    pub host_csum: bool,
    /// HOST_TSO4.
    pub host_tso4: bool,
    /// HOST_TSO6.
    pub host_tso6: bool,
    /// HOST_ECN.
    pub host_ecn: bool,
    /// HOST_UFO.
    pub host_ufo: bool,
    /// What the guest accepts on receive.
    pub guest: Offloads,
}

impl NetConfig {
    /// Derives the data-path view of `acked`.
    pub fn from_features(acked: u64) -> Self {
        let has = |b: u32| acked & bit(b) != 0;
        let version_1 = has(VIRTIO_F_VERSION_1);
        let mrg = has(vn::VIRTIO_NET_F_MRG_RXBUF);
        NetConfig {
            hdr_len: if version_1 || mrg { 12 } else { 10 },
            mrg_rxbuf: mrg,
            event_idx: has(VIRTIO_RING_F_EVENT_IDX),
            indirect: has(VIRTIO_RING_F_INDIRECT_DESC),
            packed: has(VIRTIO_F_RING_PACKED),
            in_order: has(VIRTIO_F_IN_ORDER),
            host_csum: has(vn::VIRTIO_NET_F_CSUM),
            host_tso4: has(vn::VIRTIO_NET_F_HOST_TSO4),
            host_tso6: has(vn::VIRTIO_NET_F_HOST_TSO6),
            host_ecn: has(vn::VIRTIO_NET_F_HOST_ECN),
            host_ufo: has(vn::VIRTIO_NET_F_HOST_UFO),
            guest: Offloads {
                csum: has(vn::VIRTIO_NET_F_GUEST_CSUM),
                tso4: has(vn::VIRTIO_NET_F_GUEST_TSO4),
                tso6: has(vn::VIRTIO_NET_F_GUEST_TSO6),
                ecn: has(vn::VIRTIO_NET_F_GUEST_ECN),
                ufo: has(vn::VIRTIO_NET_F_GUEST_UFO),
            },
        }
    }
}
