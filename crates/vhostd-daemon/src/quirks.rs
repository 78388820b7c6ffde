//! A thin shim between a front-end and the `vhost` crate's request handler
//! for front-end behaviour the crate cannot take.
//!
//! QEMU (since 8.x, found with 10.0) sends `SET_VRING_ENABLE` with
//! `NEED_REPLY` before `SET_FEATURES` (virtio-net `peer_attach` at device
//! reset). The crate refuses that message (`InactiveFeature`) before it
//! reaches our handler and sends no reply, so QEMU waits forever. The shim
//! answers exactly that case itself: it passes the enable state to the
//! handler and acks. Every other message, and every reply, is forwarded
//! byte for byte with its file descriptors; the shim only reads the 12-byte
//! header framing (request, flags, size) and never interprets payloads
//! except that one message's (index, num) pair.
//!
//! Both threads read what the front-end sends before anything else does, so
//! each stacks a seccomp filter of its own (`seccomp::enter_shim`): socket
//! messages, memory and futexes only; no new fds beyond those the front-end
//! passes, no mmap of them, no files.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use crate::proto::PortHandler;

const HDR_LEN: usize = 12;
/// vhost-user `MAX_MSG_SIZE` (the crate refuses larger payloads too).
const MAX_PAYLOAD: usize = 0x1000;
/// rust-vmm `MAX_ATTACHED_FD_ENTRIES`.
const MAX_FDS: usize = 32;
const REQ_SET_FEATURES: u32 = 2;
const REQ_SET_VRING_ENABLE: u32 = 18;
const FLAG_VERSION_1: u32 = 0x1;
const FLAG_REPLY: u32 = 0x4;
const FLAG_NEED_REPLY: u32 = 0x8;

struct Msg {
    hdr: [u8; HDR_LEN],
    payload: Vec<u8>,
    fds: Vec<OwnedFd>,
}

/// Byte range of the `i`-th little-endian `u32` of a buffer.
fn word(i: usize) -> std::ops::Range<usize> {
    let at = i.saturating_mul(4);
    at..at.saturating_add(4)
}

impl Msg {
    /// Header field `i` (0: request, 1: flags, 2: size).
    fn field(&self, i: usize) -> u32 {
        self.hdr
            .get(word(i))
            .and_then(|b| b.try_into().ok())
            .map_or(0, u32::from_le_bytes)
    }

    fn payload_u32(&self, i: usize) -> Option<u32> {
        self.payload
            .get(word(i))?
            .try_into()
            .ok()
            .map(u32::from_le_bytes)
    }
}

/// Reads one message (header with its fds, then the payload). `Ok(None)` at
/// end of stream.
fn read_msg(sock: &UnixStream) -> io::Result<Option<Msg>> {
    let mut hdr = [0u8; HDR_LEN];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = recvmsg(
        sock,
        &mut [IoSliceMut::new(&mut hdr)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(it) = m {
            fds.extend(it);
        }
    }
    if got.bytes == 0 {
        return Ok(None);
    }
    let rest = hdr.get_mut(got.bytes..).ok_or(io::ErrorKind::InvalidData)?;
    (&*sock).read_exact(rest)?;
    let mut m = Msg {
        hdr,
        payload: Vec::new(),
        fds,
    };
    let size = usize::try_from(m.field(2)).map_err(|_| io::ErrorKind::InvalidData)?;
    if size > MAX_PAYLOAD {
        return Err(io::ErrorKind::InvalidData.into());
    }
    m.payload.resize(size, 0);
    (&*sock).read_exact(&mut m.payload)?;
    Ok(Some(m))
}

fn write_msg(sock: &UnixStream, hdr: &[u8], payload: &[u8], fds: &[OwnedFd]) -> io::Result<()> {
    let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !borrowed.is_empty() && !control.push(SendAncillaryMessage::ScmRights(&borrowed)) {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    let total = hdr.len().saturating_add(payload.len());
    let sent = sendmsg(
        sock,
        &[IoSlice::new(hdr), IoSlice::new(payload)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    if sent < total {
        // the fds went with the first bytes; the rest is plain data
        let mut all = Vec::with_capacity(total);
        all.extend_from_slice(hdr);
        all.extend_from_slice(payload);
        (&*sock).write_all(all.get(sent..).unwrap_or_default())?;
    }
    Ok(())
}

/// Stacks the shim's seccomp filter on this thread (when the daemon's is
/// installed). False if that failed: the thread must not go on.
fn enter_sandbox(dir: &str) -> bool {
    match crate::seccomp::enter_shim() {
        Ok(()) => true,
        Err(e) => {
            log::error!("shim ({dir}): {e}; closing the connection");
            false
        }
    }
}

/// The two forwarding threads of one connection.
#[derive(Debug)]
pub struct Shim {
    threads: Vec<JoinHandle<()>>,
}

impl Shim {
    /// Puts the shim between `front` (the front-end's connection) and
    /// `inner` (the socket the crate's handler reads).
    pub fn spawn(
        front: UnixStream,
        inner: UnixStream,
        handler: Arc<Mutex<PortHandler>>,
    ) -> io::Result<Self> {
        let front_w = Arc::new(Mutex::new(front.try_clone()?));
        let inner_r = inner.try_clone()?;
        let features_seen = Arc::new(AtomicBool::new(false));
        let fw = front_w.clone();
        let to_backend = std::thread::Builder::new()
            .name("vhostd-shim-in".into())
            .spawn(move || {
                if !enter_sandbox("in") {
                    let _ = front.shutdown(Shutdown::Both);
                    let _ = inner.shutdown(Shutdown::Both);
                    return;
                }
                while let Ok(Some(m)) = read_msg(&front) {
                    let req = m.field(0);
                    if req == REQ_SET_FEATURES {
                        features_seen.store(true, Ordering::Relaxed);
                    }
                    if req == REQ_SET_VRING_ENABLE
                        && !features_seen.load(Ordering::Relaxed)
                        && m.payload.len() == 8
                    {
                        let index = m.payload_u32(0).unwrap_or(u32::MAX);
                        let num = m.payload_u32(1).unwrap_or(u32::MAX);
                        let ok = num <= 1
                            && handler.lock().is_ok_and(|mut h| {
                                h.set_vring_enable_early(index, num == 1).is_ok()
                            });
                        if m.field(1) & FLAG_NEED_REPLY != 0 {
                            let mut hdr = [0u8; HDR_LEN];
                            hdr[..4].copy_from_slice(&REQ_SET_VRING_ENABLE.to_le_bytes());
                            hdr[4..8].copy_from_slice(&(FLAG_VERSION_1 | FLAG_REPLY).to_le_bytes());
                            hdr[8..].copy_from_slice(&8u32.to_le_bytes());
                            let val = if ok { 0u64 } else { 1u64 };
                            let sent = fw
                                .lock()
                                .map(|s| write_msg(&s, &hdr, &val.to_le_bytes(), &[]));
                            if !matches!(sent, Ok(Ok(()))) {
                                break;
                            }
                        }
                        continue;
                    }
                    if write_msg(&inner, &m.hdr, &m.payload, &m.fds).is_err() {
                        break;
                    }
                }
                let _ = inner.shutdown(Shutdown::Both);
            })?;
        let to_front = std::thread::Builder::new()
            .name("vhostd-shim-out".into())
            .spawn(move || {
                if !enter_sandbox("out") {
                    let _ = inner_r.shutdown(Shutdown::Both);
                    return;
                }
                while let Ok(Some(m)) = read_msg(&inner_r) {
                    let sent = front_w
                        .lock()
                        .map(|s| write_msg(&s, &m.hdr, &m.payload, &m.fds));
                    if !matches!(sent, Ok(Ok(()))) {
                        break;
                    }
                }
                if let Ok(s) = front_w.lock() {
                    let _ = s.shutdown(Shutdown::Both);
                }
            })?;
        Ok(Shim {
            threads: vec![to_backend, to_front],
        })
    }

    /// Waits for both directions to end.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}
