#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
//! Shared set-up: a daemon port served in-process over a socket pair.
#![allow(dead_code)]

use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use vhostd_api::QueueStats;
use vhostd_backend::BackendSpec;
use vhostd_daemon::port::Port;
use vhostd_daemon::worker::WorkerHandle;
use vhostd_testkit::{FakeGuest, GuestOptions};

pub const T: Duration = Duration::from_secs(5);

pub struct Daemon {
    pub port: Arc<Port>,
    pub workers: Arc<Vec<WorkerHandle>>,
}

impl Daemon {
    pub fn loopback(queues: usize) -> Self {
        Self::with_ctrl(queues, false)
    }

    pub fn with_ctrl(queues: usize, ctrl_vq: bool) -> Self {
        Self::named("t", queues, ctrl_vq)
    }

    /// A port called `name` (its workers' threads are `vhostd-NAME-qI`).
    pub fn named(name: &str, queues: usize, ctrl_vq: bool) -> Self {
        let (port, workers) =
            vhostd_daemon::start_port(name, &BackendSpec::Loopback, "pair", queues, ctrl_vq)
                .unwrap();
        Daemon { port, workers }
    }

    /// Serves one connection on a thread; returns the front-end end.
    pub fn connect(&self) -> (UnixStream, JoinHandle<()>) {
        let (a, b) = UnixStream::pair().unwrap();
        let port = self.port.clone();
        let workers = self.workers.clone();
        let h =
            std::thread::spawn(move || vhostd_daemon::server::serve_connection(&port, &workers, b));
        (a, h)
    }

    pub fn guest(&self, opts: GuestOptions) -> (FakeGuest, JoinHandle<()>) {
        let (s, h) = self.connect();
        (FakeGuest::connect(s, opts), h)
    }

    pub fn stats(&self, vq: usize) -> QueueStats {
        self.port.counters[vq].snapshot()
    }
}

/// An Ethernet frame of `len` bytes with distinct MACs and a payload seed.
pub fn eth_frame(len: usize, seed: u32) -> Vec<u8> {
    let mut f = vec![0u8; len.max(14)];
    f[..6].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 2]);
    f[12] = 0x08;
    for (i, b) in f.iter_mut().enumerate().skip(14) {
        *b = (i as u32).wrapping_mul(2654435761).wrapping_add(seed) as u8;
    }
    f
}

/// What loopback returns for `f`: MACs swapped.
pub fn swapped(f: &[u8]) -> Vec<u8> {
    let mut g = f.to_vec();
    g[..6].copy_from_slice(&f[6..12]);
    g[6..12].copy_from_slice(&f[..6]);
    g
}

use vhost::vhost_user::message::{VhostUserHeaderFlag, VhostUserProtocolFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::VhostBackend;

/// A raw front-end with REPLY_ACK on, so refused requests come back as
/// errors; features negotiated (VERSION_1 + PROTOCOL_FEATURES + MRG_RXBUF).
pub fn raw_frontend(d: &Daemon) -> (Frontend, JoinHandle<()>) {
    let (s, h) = d.connect();
    let mut fe = Frontend::from_stream(s, 64);
    fe.set_owner().unwrap();
    let offered = fe.get_features().unwrap();
    fe.set_features(offered & ((1 << 32) | (1 << 30) | (1 << 15)))
        .unwrap();
    let pf = fe.get_protocol_features().unwrap();
    fe.set_protocol_features(
        pf & (VhostUserProtocolFeatures::REPLY_ACK | VhostUserProtocolFeatures::MQ),
    )
    .unwrap();
    fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
    (fe, h)
}

/// Open fds of this process.
pub fn count_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Mappings of this process.
pub fn count_maps() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

/// Writes one raw vhost-user message with `fds` attached; false if it did
/// not all go out.
pub fn send_raw(
    s: &UnixStream,
    req: u32,
    flags: u32,
    payload: &[u8],
    fds: &[BorrowedFd<'_>],
) -> bool {
    use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let mut hdr = Vec::new();
    hdr.extend_from_slice(&req.to_le_bytes());
    hdr.extend_from_slice(&flags.to_le_bytes());
    hdr.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(40))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return false;
    }
    sendmsg(
        s,
        &[IoSlice::new(&hdr), IoSlice::new(payload)],
        &mut control,
        SendFlags::NOSIGNAL,
    )
    .is_ok_and(|n| n == hdr.len() + payload.len())
}
