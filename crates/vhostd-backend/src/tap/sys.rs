//! TAP ioctls. The only unsafe code of the back-end crate.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;

pub const IFNAMSIZ: usize = 16;
pub const IFF_TAP: u16 = 0x0002;
pub const IFF_NO_PI: u16 = 0x1000;
pub const IFF_VNET_HDR: u16 = 0x4000;
pub const IFF_MULTI_QUEUE: u16 = 0x0100;
pub const TUN_F_CSUM: u32 = 0x01;
pub const TUN_F_TSO4: u32 = 0x02;
pub const TUN_F_TSO6: u32 = 0x04;
pub const TUN_F_TSO_ECN: u32 = 0x08;
pub const TUN_F_UFO: u32 = 0x10;

// <linux/if_tun.h>: _IOW('T', 202, int) etc.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;

/// `struct ifreq` as TUNSETIFF reads it: name, then flags (short), padded
/// to the kernel's 40 bytes.
#[repr(C)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    flags: u16,
    _pad: [u8; 22],
}

/// TUNSETIFF: attach `file` to interface `name` with `flags`.
pub fn set_iff(file: &File, name: &str, flags: u16) -> io::Result<()> {
    let mut req = IfReq {
        name: [0; IFNAMSIZ],
        flags,
        _pad: [0; 22],
    };
    let bytes = name.as_bytes();
    // check_name() bounds the name below IFNAMSIZ, leaving a NUL at the end.
    let dst = req
        .name
        .get_mut(..bytes.len())
        .ok_or(io::ErrorKind::InvalidInput)?;
    dst.copy_from_slice(bytes);
    // SAFETY: `file` is an open /dev/net/tun fd owned by the caller for the
    // whole call; TUNSETIFF reads (and may write back) one `struct ifreq`,
    // and `req` is a live, writable, 40-byte `#[repr(C)]` value with that
    // layout (name[16], short flags, padding) for the duration of the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// TUNSETVNETHDRSZ.
pub fn set_vnet_hdr_size(file: &File, size: i32) -> io::Result<()> {
    // SAFETY: TUNSETVNETHDRSZ reads one `int` through the pointer; `size` is
    // a live local `i32` for the duration of the call, and the fd is open.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETVNETHDRSZ, &size as *const i32) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// TUNSETOFFLOAD: the argument is the flag word itself, not a pointer.
pub fn set_offload(file: &File, flags: u32) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes an unsigned long by value and touches no
    // user memory; the fd is open for the duration of the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETOFFLOAD, libc::c_ulong::from(flags)) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
