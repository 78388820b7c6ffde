//! TAP back-end: `/dev/net/tun` with `IFF_VNET_HDR`, one fd per queue pair
//! (`IFF_MULTI_QUEUE`), offloads set from the guest's features as Linux
//! vhost-net does (`TUNSETVNETHDRSZ`, `TUNSETOFFLOAD`).

mod sys;

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::{AsRawFd, RawFd};

use crate::{Backend, BackendError, Offloads};

/// Checks an interface name (1..=15 bytes, no NUL, no '/').
pub fn check_name(name: &str) -> Result<(), BackendError> {
    if name.is_empty() || name.len() >= sys::IFNAMSIZ || name.contains('\0') || name.contains('/') {
        return Err(BackendError::BadName(name.to_string()));
    }
    Ok(())
}

/// One queue of a TAP interface.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Attaches to TAP `name`, creating it if it does not exist (a created
    /// TAP goes away when vhostd closes it). `multi_queue` asks for
    /// `IFF_MULTI_QUEUE`; when it is not asked for and the existing TAP was
    /// made multi-queue, the attach is retried with it.
    pub fn open(name: &str, multi_queue: bool) -> Result<Self, BackendError> {
        check_name(name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(BackendError::OpenTun)?;
        let base = sys::IFF_TAP | sys::IFF_NO_PI | sys::IFF_VNET_HDR;
        let first = if multi_queue {
            base | sys::IFF_MULTI_QUEUE
        } else {
            base
        };
        let res = sys::set_iff(&file, name, first);
        match res {
            Ok(()) => {}
            Err(e) if !multi_queue && e.raw_os_error() == Some(libc::EINVAL) => {
                sys::set_iff(&file, name, base | sys::IFF_MULTI_QUEUE).map_err(|source| {
                    BackendError::SetIff {
                        name: name.to_string(),
                        source,
                    }
                })?;
            }
            Err(source) => {
                return Err(BackendError::SetIff {
                    name: name.to_string(),
                    source,
                })
            }
        }
        Ok(Tap {
            file,
            name: name.to_string(),
        })
    }

    /// Interface name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Backend for Tap {
    fn configure(&mut self, hdr_len: usize, o: Offloads) -> Result<(), BackendError> {
        let sz = i32::try_from(hdr_len).map_err(|_| {
            BackendError::SetVnetHdrSize(hdr_len, std::io::Error::from(ErrorKind::InvalidInput))
        })?;
        sys::set_vnet_hdr_size(&self.file, sz)
            .map_err(|e| BackendError::SetVnetHdrSize(hdr_len, e))?;
        let mut flags = 0u32;
        if o.csum {
            flags |= sys::TUN_F_CSUM;
            if o.tso4 {
                flags |= sys::TUN_F_TSO4;
            }
            if o.tso6 {
                flags |= sys::TUN_F_TSO6;
            }
            if o.ecn && (o.tso4 || o.tso6) {
                flags |= sys::TUN_F_TSO_ECN;
            }
            if o.ufo {
                flags |= sys::TUN_F_UFO;
            }
        }
        sys::set_offload(&self.file, flags).map_err(|e| BackendError::SetOffload(flags, e))
    }

    fn send(&mut self, pkt: &[u8]) -> Result<(), BackendError> {
        match self.file.write(pkt) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Err(BackendError::Busy),
            // EIO: link down. Counted as a back-end drop, like a full queue.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => Err(BackendError::Busy),
            Err(e) => Err(BackendError::Io(e)),
        }
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, BackendError> {
        match self.file.read(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(None),
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(None),
            Err(e) => Err(BackendError::Io(e)),
        }
    }

    fn rx_fd(&self) -> Option<RawFd> {
        Some(self.file.as_raw_fd())
    }

    fn rx_pending(&self) -> bool {
        false
    }

    fn supports_offloads(&self) -> bool {
        true
    }
}
