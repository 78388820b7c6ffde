//! The virtio-net control virtqueue, device side (virtio 1.3 §5.1.6.5).
//!
//! Each request is a chain: device-readable `{class: u8, command: u8,
//! data...}`, then device-writable `{reply data..., ack: u8}`. This module
//! parses and bounds the request (on a private copy: THREATS C5, C17), hands
//! `(class, command, data)` to the caller's handler, and writes the reply
//! and the ack (`VIRTIO_NET_OK` / `VIRTIO_NET_ERR`) as the last writable
//! byte. Bad chains are completed with length 0 (THREATS C1, C17).

use vhostd_api::{Count, QueueStats};
use vhostd_mem::GuestMem;
use vhostd_virtq::{Chain, Queue, QueueError};
use virtio_bindings::bindings::virtio_net as vn;

use crate::queue_pair::publish_burst;
use crate::{Outcome, Status, BURST};

/// Largest command accepted (header + data); NOTF_COAL and MQ need < 16.
pub const MAX_CTRL_REQUEST: usize = 256;
/// Largest reply data a handler may produce.
pub const MAX_CTRL_REPLY: usize = 16;
/// `VIRTIO_NET_OK`.
#[allow(clippy::cast_possible_truncation)]
pub const ACK_OK: u8 = vn::VIRTIO_NET_OK as u8;
/// `VIRTIO_NET_ERR`.
#[allow(clippy::cast_possible_truncation)]
pub const ACK_ERR: u8 = vn::VIRTIO_NET_ERR as u8;

/// What a handler answers: the ack and `len` bytes of reply data.
#[derive(Debug, Clone, Copy)]
pub struct CtrlReply {
    /// `ACK_OK` or `ACK_ERR`.
    pub ack: u8,
    /// Reply data (only the first `len` bytes are written).
    pub data: [u8; MAX_CTRL_REPLY],
    /// Bytes of `data` to write before the ack.
    pub len: usize,
}

impl CtrlReply {
    /// An ack with no data.
    pub fn ack(ok: bool) -> Self {
        CtrlReply {
            ack: if ok { ACK_OK } else { ACK_ERR },
            data: [0; MAX_CTRL_REPLY],
            len: 0,
        }
    }
}

/// Processes up to [`BURST`] control requests. `handle(class, command,
/// data)` decides each one.
pub fn process_ctrl(
    q: &mut Queue,
    mem: &GuestMem,
    chain: &mut Chain,
    stats: &mut QueueStats,
    handle: &mut dyn FnMut(u8, u8, &[u8]) -> CtrlReply,
) -> Result<Outcome, QueueError> {
    q.disable_notification(mem)?;
    let mut req = [0u8; MAX_CTRL_REQUEST];
    let mut done = 0usize;
    let status = loop {
        while done < BURST {
            if !q.pop(mem, chain)? {
                break;
            }
            done = done.saturating_add(1);
            let wlen = chain.writable_len() as usize;
            let rlen = chain.readable_len() as usize;
            if chain.error().is_some() || wlen == 0 || !(2..=MAX_CTRL_REQUEST).contains(&rlen) {
                // no room for an ack, or no command: nothing sensible to say
                stats.bad_chains.inc();
                stats.drops.inc();
                q.add_used(mem, chain.used_ref(), 0)?;
                continue;
            }
            let n = chain.read_into(mem, &mut req).unwrap_or(0);
            let reply = match (req.first(), req.get(1), req.get(2..n)) {
                (Some(&class), Some(&cmd), Some(data)) => handle(class, cmd, data),
                _ => CtrlReply::ack(false),
            };
            // reply data first, the ack in the last writable byte
            let rl = reply.len.min(MAX_CTRL_REPLY).min(wlen.saturating_sub(1));
            let ok = reply
                .data
                .get(..rl)
                .is_some_and(|d| chain.write_at(mem, 0, d))
                && chain.write_at(mem, wlen.saturating_sub(1), &[reply.ack]);
            if ok {
                stats.packets.inc();
            } else {
                stats.bad_chains.inc();
            }
            q.add_used(
                mem,
                chain.used_ref(),
                if ok {
                    u32::try_from(wlen).unwrap_or(0)
                } else {
                    0
                },
            )?;
        }
        if done >= BURST {
            break Status::More;
        }
        if q.enable_notification(mem)? {
            q.disable_notification(mem)?;
            continue;
        }
        break Status::Idle;
    };
    publish_burst(q, mem, done, status, stats)
}
