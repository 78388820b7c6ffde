//! Control-queue commands as vhostd answers them (`--ctrl-vq`).
//!
//! Notification coalescing (VIRTIO_NET_CTRL_NOTF_COAL) sets the same
//! per-queue policy `vhostctl coalesce` does; multiqueue pair changes are
//! checked against the port; receive-mode, MAC, VLAN and announce commands
//! are acked (vhostd does not filter); anything else gets VIRTIO_NET_ERR.
//! Every field is bounds-checked before use (THREATS C12, C17).

use vhostd_api::CoalescePolicy;
use vhostd_net::ctrl::CtrlReply;
use virtio_bindings::bindings::virtio_net as vn;

use crate::port::Port;

fn le16(d: &[u8], at: usize) -> Option<u16> {
    d.get(at..at.checked_add(2)?)?
        .try_into()
        .ok()
        .map(u16::from_le_bytes)
}

fn le32(d: &[u8], at: usize) -> Option<u32> {
    d.get(at..at.checked_add(4)?)?
        .try_into()
        .ok()
        .map(u32::from_le_bytes)
}

fn policy(max_packets: u32, max_usecs: u32) -> Option<CoalescePolicy> {
    if max_usecs > 1_000_000 || max_packets > 65536 {
        return None;
    }
    Some(if max_packets == 0 && max_usecs == 0 {
        CoalescePolicy::Off
    } else {
        CoalescePolicy::Fixed {
            usecs: max_usecs,
            frames: max_packets,
        }
    })
}

/// Answers one control command.
pub fn command(port: &Port, class: u8, cmd: u8, data: &[u8]) -> CtrlReply {
    let (class, cmd) = (u32::from(class), u32::from(cmd));
    let data_queues = port.data_queues();
    match class {
        vn::VIRTIO_NET_CTRL_RX
        | vn::VIRTIO_NET_CTRL_MAC
        | vn::VIRTIO_NET_CTRL_VLAN
        | vn::VIRTIO_NET_CTRL_ANNOUNCE => CtrlReply::ack(true),
        vn::VIRTIO_NET_CTRL_MQ if cmd == vn::VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET => {
            let ok = le16(data, 0).is_some_and(|n| n >= 1 && usize::from(n) <= port.queue_pairs);
            CtrlReply::ack(ok)
        }
        vn::VIRTIO_NET_CTRL_NOTF_COAL => match cmd {
            vn::VIRTIO_NET_CTRL_NOTF_COAL_TX_SET | vn::VIRTIO_NET_CTRL_NOTF_COAL_RX_SET => {
                let want_rx = cmd == vn::VIRTIO_NET_CTRL_NOTF_COAL_RX_SET;
                match (le32(data, 0), le32(data, 4)) {
                    (Some(p), Some(u)) => match policy(p, u) {
                        Some(pol) => {
                            port.update_settings_where(
                                |i| i.is_multiple_of(2) == want_rx,
                                |s| s.coalesce = pol,
                            );
                            CtrlReply::ack(true)
                        }
                        None => CtrlReply::ack(false),
                    },
                    _ => CtrlReply::ack(false),
                }
            }
            vn::VIRTIO_NET_CTRL_NOTF_COAL_VQ_SET => {
                match (le16(data, 0), le32(data, 4), le32(data, 8)) {
                    (Some(vq), Some(p), Some(u)) if usize::from(vq) < data_queues => {
                        match policy(p, u) {
                            Some(pol) => {
                                port.update_settings(Some(u32::from(vq)), |s| s.coalesce = pol);
                                CtrlReply::ack(true)
                            }
                            None => CtrlReply::ack(false),
                        }
                    }
                    _ => CtrlReply::ack(false),
                }
            }
            vn::VIRTIO_NET_CTRL_NOTF_COAL_VQ_GET => match le16(data, 0) {
                Some(vq) if usize::from(vq) < data_queues => {
                    let s = port.settings_snapshot();
                    let (p, u) = match s.get(usize::from(vq)).map(|s| s.coalesce) {
                        Some(CoalescePolicy::Fixed { usecs, frames }) => (frames, usecs),
                        _ => (0, 0),
                    };
                    let mut r = CtrlReply::ack(true);
                    let (a, b) = r.data.split_at_mut(4);
                    a.copy_from_slice(&p.to_le_bytes());
                    if let Some(b) = b.get_mut(..4) {
                        b.copy_from_slice(&u.to_le_bytes());
                        r.len = 8;
                    }
                    r
                }
                _ => CtrlReply::ack(false),
            },
            _ => CtrlReply::ack(false),
        },
        _ => CtrlReply::ack(false),
    }
}
