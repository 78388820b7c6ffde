//! The daemon's only unsafe code: adopting an inherited listening socket
//! (`--fd`, vhost-user.rst "Backend program conventions").
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;

/// Takes ownership of `fd` as a listening unix socket after checking that it
/// is an open socket of type SOCK_STREAM and family AF_UNIX.
pub fn adopt_listener(fd: RawFd) -> io::Result<UnixListener> {
    if fd < 0 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: fcntl(F_GETFD) only queries the descriptor table; an invalid
    // fd yields EBADF and no side effect.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the fd was just checked to be open, and per the program
    // conventions it was handed to us by our parent: nothing else in this
    // process uses it. It stays open for the lifetime of the borrow.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let owned: OwnedFd = borrowed.try_clone_to_owned()?;
    let listener = UnixListener::from(owned);
    // A dup'ed socket that is not a listening unix socket fails here.
    listener.local_addr()?;
    // SAFETY: we own a duplicate now; the original inherited fd is closed
    // exactly once, here, and never used again.
    unsafe { drop(OwnedFd::from_raw_fd(fd)) };
    Ok(listener)
}

/// Drops the process to `uid`/`gid` (supplementary groups: only `gid`).
/// glibc applies set*id to every thread of the process. Fails if any step
/// fails or if root could be regained afterwards.
pub fn drop_privileges(uid: u32, gid: u32) -> io::Result<()> {
    let groups = [gid];
    // SAFETY: setgroups reads `groups.len()` gid_t values from a live local
    // array for the duration of the call; it writes no user memory.
    if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: setgid takes its argument by value and touches no user memory.
    if unsafe { libc::setgid(gid) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: setuid takes its argument by value and touches no user memory.
    if unsafe { libc::setuid(uid) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let (now_uid, now_gid) = (
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    );
    // SAFETY: setuid by value, as above; it must fail now (unless uid is 0).
    let regained = uid != 0 && unsafe { libc::setuid(0) } == 0;
    if now_uid != uid || now_gid != gid || regained {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "privileges not fully dropped",
        ));
    }
    Ok(())
}
