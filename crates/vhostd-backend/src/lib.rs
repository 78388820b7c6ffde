//! Back-end layer of vhostd: where guest frames go and come from.
//!
//! A [`Backend`] is one queue pair's view of a host back-end. It moves whole
//! packets, each a virtio-net header (of the length set by
//! [`Backend::configure`]) followed by an Ethernet frame: the same layout a
//! TAP with `IFF_VNET_HDR` reads and writes, so the TAP path needs no header
//! translation, as in Linux vhost-net.
//!
//! This crate knows nothing of virtqueues or vhost-user. Unsafe code lives
//! only in `tap/sys.rs` (ioctls).
#![warn(missing_docs)]
#![deny(unsafe_code)]
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

mod ceiling;
mod loopback;
mod sink;
mod source;
pub mod tap;

use std::os::unix::io::RawFd;

pub use ceiling::Ceiling;
pub use loopback::Loopback;
pub use sink::Sink;
pub use source::{Source, MIN_SOURCE_LEN};
pub use tap::Tap;

/// Largest packet a back-end moves: 64 KiB frame (TSO/GSO) plus a 12-byte
/// header plus an Ethernet header with VLAN tag.
pub const MAX_PACKET: usize = 65536 + 12 + 18;

/// Errors of the back-end layer.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Opening /dev/net/tun failed.
    #[error("open /dev/net/tun failed")]
    OpenTun(#[source] std::io::Error),
    /// TUNSETIFF failed.
    #[error("attach to tap {name} failed")]
    SetIff {
        /// Interface name.
        name: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// TUNSETVNETHDRSZ failed.
    #[error("set vnet header size {0} failed")]
    SetVnetHdrSize(usize, #[source] std::io::Error),
    /// TUNSETOFFLOAD failed.
    #[error("set tap offloads {0:#x} failed")]
    SetOffload(u32, #[source] std::io::Error),
    /// The interface name is empty, too long or has a NUL.
    #[error("invalid interface name {0:?}")]
    BadName(String),
    /// The back-end cannot take a packet now (queue full, link down).
    #[error("back-end busy")]
    Busy,
    /// An I/O error on the back-end.
    #[error("back-end i/o failed")]
    Io(#[source] std::io::Error),
    /// Unknown back-end specification.
    #[error("unknown back-end {0:?} (use tap:IFNAME, loopback, sink or source:LEN)")]
    UnknownSpec(String),
}

/// Offloads the guest accepts on receive: what the TAP may hand us
/// (`TUNSETOFFLOAD`), mirroring the guest's GUEST_* feature bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offloads {
    /// Partial checksums (VIRTIO_NET_F_GUEST_CSUM).
    pub csum: bool,
    /// TCPv4 segmentation (GUEST_TSO4).
    pub tso4: bool,
    /// TCPv6 segmentation (GUEST_TSO6).
    pub tso6: bool,
    /// TSO with ECN (GUEST_ECN).
    pub ecn: bool,
    /// UDP fragmentation offload (GUEST_UFO).
    pub ufo: bool,
}

/// One queue pair's back-end.
pub trait Backend: Send + std::fmt::Debug {
    /// Sets the virtio-net header length (10 or 12) and the receive offloads.
    /// Called whenever the features are (re)negotiated.
    fn configure(&mut self, hdr_len: usize, offloads: Offloads) -> Result<(), BackendError>;
    /// Hands one packet (header + frame) to the back-end.
    fn send(&mut self, pkt: &[u8]) -> Result<(), BackendError>;
    /// Reads one packet into `buf` (at least [`MAX_PACKET`] long). `Ok(None)`
    /// when none is ready.
    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, BackendError>;
    /// Hands `buf[..len]` to the back-end, which may keep `buf` itself and
    /// leave another buffer of [`MAX_PACKET`] bytes in its place (no copy:
    /// the loopback does this). The default copies through [`Backend::send`].
    fn send_owned(&mut self, buf: &mut Vec<u8>, len: usize) -> Result<(), BackendError> {
        match buf.get(..len) {
            Some(pkt) => self.send(pkt),
            None => Err(BackendError::Busy),
        }
    }
    /// Receives one packet into `buf` ([`MAX_PACKET`] bytes long), possibly by
    /// swapping in a buffer of the back-end's own of the same length. The
    /// default reads through [`Backend::recv`].
    fn recv_owned(&mut self, buf: &mut Vec<u8>) -> Result<Option<usize>, BackendError> {
        self.recv(buf)
    }
    /// An fd that is readable when [`Backend::recv`] has a packet, if any.
    fn rx_fd(&self) -> Option<RawFd>;
    /// Whether [`Backend::recv`] has a packet without looking at an fd
    /// (back-ends with no fd, like loopback).
    fn rx_pending(&self) -> bool;
    /// Whether the back-end can carry checksum and segmentation offloads
    /// (decides which virtio-net features are offered).
    fn supports_offloads(&self) -> bool;
    /// Whether the frame bytes must cross guest memory (true for every real
    /// back-end). Only the `ceiling:` benchmark diagnostic says no: then the
    /// queue pair moves the virtio-net header and ring entries only.
    fn needs_frame_bytes(&self) -> bool {
        true
    }
}

/// What `--backend` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendSpec {
    /// `tap:IFNAME`.
    Tap(String),
    /// `loopback`.
    Loopback,
    /// `sink`: every TX frame is taken (already copied in full out of guest
    /// memory by the queue pair) and discarded; nothing is received.
    Sink,
    /// `source:LEN`: endless LEN-byte frames, copied in full into guest RX
    /// buffers; nothing is sent anywhere.
    Source(usize),
    /// `ceiling:KIND` (KIND: sink, source:LEN or loopback): a benchmark
    /// diagnostic, KIND with the frame bytes left in place (only headers
    /// and rings are touched): what the front-end reaches against it bounds
    /// any back-end's rate in the same harness. Not a vhostd figure.
    Ceiling(Box<BackendSpec>),
}

impl std::str::FromStr for BackendSpec {
    type Err = BackendError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(kind) = s.strip_prefix("ceiling:") {
            // benchmark back-ends only: a TAP needs the frames; a nested
            // ceiling is refused before it is parsed (one level of
            // recursion, however long the argument)
            if kind.starts_with("ceiling:") {
                return Err(BackendError::UnknownSpec(s.to_string()));
            }
            return match kind.parse::<BackendSpec>()? {
                k @ (BackendSpec::Loopback | BackendSpec::Sink | BackendSpec::Source(_)) => {
                    Ok(BackendSpec::Ceiling(Box::new(k)))
                }
                _ => Err(BackendError::UnknownSpec(s.to_string())),
            };
        }
        if s == "loopback" {
            return Ok(BackendSpec::Loopback);
        }
        if s == "sink" {
            return Ok(BackendSpec::Sink);
        }
        if let Some(len) = s.strip_prefix("source:") {
            return match len.parse::<usize>() {
                Ok(n) if (MIN_SOURCE_LEN..=MAX_PACKET - 12).contains(&n) => {
                    Ok(BackendSpec::Source(n))
                }
                _ => Err(BackendError::UnknownSpec(s.to_string())),
            };
        }
        if let Some(name) = s.strip_prefix("tap:") {
            tap::check_name(name)?;
            return Ok(BackendSpec::Tap(name.to_string()));
        }
        Err(BackendError::UnknownSpec(s.to_string()))
    }
}

impl std::fmt::Display for BackendSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendSpec::Tap(n) => write!(f, "tap:{n}"),
            BackendSpec::Loopback => f.write_str("loopback"),
            BackendSpec::Sink => f.write_str("sink"),
            BackendSpec::Source(n) => write!(f, "source:{n}"),
            BackendSpec::Ceiling(k) => write!(f, "ceiling:{k}"),
        }
    }
}

impl BackendSpec {
    /// Whether this kind of back-end carries offloads (without opening it).
    pub fn supports_offloads(&self) -> bool {
        match self {
            BackendSpec::Tap(_) => true,
            BackendSpec::Loopback
            | BackendSpec::Sink
            | BackendSpec::Source(_)
            | BackendSpec::Ceiling(_) => false,
        }
    }

    /// Opens the back-end for queue pair `index` of `pairs`.
    pub fn open(&self, index: usize, pairs: usize) -> Result<Box<dyn Backend>, BackendError> {
        match self {
            BackendSpec::Tap(name) => Ok(Box::new(Tap::open(name, pairs > 1 || index > 0)?)),
            BackendSpec::Loopback => Ok(Box::new(Loopback::new())),
            BackendSpec::Sink => Ok(Box::new(Sink::default())),
            BackendSpec::Source(n) => Ok(Box::new(Source::new(*n)?)),
            BackendSpec::Ceiling(k) => Ok(Box::new(Ceiling(k.open(index, pairs)?))),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
    use super::*;

    #[test]
    fn test_backend_spec_parse() {
        assert_eq!(
            "loopback".parse::<BackendSpec>().unwrap(),
            BackendSpec::Loopback
        );
        assert_eq!(
            "tap:vm0".parse::<BackendSpec>().unwrap(),
            BackendSpec::Tap("vm0".into())
        );
        assert!("tap:".parse::<BackendSpec>().is_err());
        assert!("tap:0123456789abcdef".parse::<BackendSpec>().is_err());
        assert_eq!("sink".parse::<BackendSpec>().unwrap(), BackendSpec::Sink);
        assert!("source".parse::<BackendSpec>().is_err());
        assert_eq!(
            "source:64".parse::<BackendSpec>().unwrap(),
            BackendSpec::Source(64)
        );
        assert_eq!(BackendSpec::Source(1518).to_string(), "source:1518");
        assert!("source:0".parse::<BackendSpec>().is_err());
        assert!("source:x".parse::<BackendSpec>().is_err());
        for k in ["sink", "loopback", "source:64"] {
            let spec = format!("ceiling:{k}").parse::<BackendSpec>().unwrap();
            assert_eq!(spec, BackendSpec::Ceiling(Box::new(k.parse().unwrap())));
            assert_eq!(spec.to_string(), format!("ceiling:{k}"));
            assert!(!spec.open(0, 1).unwrap().needs_frame_bytes());
            assert!(k
                .parse::<BackendSpec>()
                .unwrap()
                .open(0, 1)
                .unwrap()
                .needs_frame_bytes());
        }
        for bad in [
            "ceiling:tap:vm0",
            "ceiling:ceiling:sink",
            "ceiling:",
            "ceiling:source:1",
        ] {
            assert!(bad.parse::<BackendSpec>().is_err(), "{bad}");
        }
        // a long nest is refused at the first level (no deep recursion)
        let deep = format!("{}sink", "ceiling:".repeat(100_000));
        assert!(deep.parse::<BackendSpec>().is_err());
    }
}
