//! vhost-user message streams from a hostile front-end into a live port,
//! with file descriptors: any codes, flags, sizes, payloads, torn messages,
//! and missing, extra or wrong-type fds on any of them (THREATS C9, C11,
//! C12, C13).
//!
//! The input is a list of records, each sent with one `sendmsg`:
//!
//! ```text
//! record = spec:u8 len:u16le bytes[len]      (len capped at what is left)
//! spec & 7   number of fds attached to the record's first byte (0..=7)
//! spec >> 3  fd kinds: fd i is KINDS[((spec >> 3) + i) % KINDS.len()]
//! ```
//!
//! Records need not line up with messages, so fds can also arrive in the
//! middle of a payload. `fuzz/seeds/vhost_user/make_seeds.py` writes seeds
//! in this form from whole sessions (memory table with a memfd, rings with
//! kick/call eventfds, enable), so the fuzzer starts from running rings.
//!
//! Oracles: the connection thread ends without panicking, and once it has,
//! the process holds no more fds and no more mappings than before the
//! case: whatever the front-end sent, vhostd kept nothing of it.
#![no_main]

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use vhostd_backend::BackendSpec;
use vhostd_daemon::port::Port;
use vhostd_daemon::worker::WorkerHandle;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

fn port() -> &'static (Arc<Port>, Arc<Vec<WorkerHandle>>) {
    static P: OnceLock<(Arc<Port>, Arc<Vec<WorkerHandle>>)> = OnceLock::new();
    P.get_or_init(|| {
        let (p, w) = vhostd_daemon::start_port("fuzz", &BackendSpec::Loopback, "pair", 2, true).unwrap();
        // one connection first, so that lazily made state is not counted as a leak
        let (a, b) = UnixStream::pair().unwrap();
        drop(a);
        vhostd_daemon::server::serve_connection(&p, &w, b);
        (p, w)
    })
}

/// Size of the memfds offered as guest memory: the seeds' tables use one
/// 2 MiB region at offset 0.
const MEM: u64 = 2 << 20;

#[derive(Clone, Copy)]
enum Kind {
    EventFd,
    Memfd,
    TinyMemfd,
    DevNull,
    Socket,
    PipeReadEnd,
    Directory,
}

const KINDS: [Kind; 7] = [
    Kind::EventFd,
    Kind::Memfd,
    Kind::TinyMemfd,
    Kind::DevNull,
    Kind::Socket,
    Kind::PipeReadEnd,
    Kind::Directory,
];

fn make(kind: Kind) -> OwnedFd {
    let memfd = |len| {
        let f = memfd::MemfdOptions::default().create("fuzz-mem").unwrap().into_file();
        f.set_len(len).unwrap();
        OwnedFd::from(f)
    };
    match kind {
        Kind::EventFd => {
            // SAFETY: eventfd has no memory arguments; a non-negative result is a new fd we own.
            let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
            assert!(fd >= 0, "eventfd");
            // SAFETY: `fd` was just created and nothing else owns it.
            unsafe { OwnedFd::from_raw_fd(fd) }
        }
        Kind::Memfd => memfd(MEM),
        Kind::TinyMemfd => memfd(4096),
        Kind::DevNull => OwnedFd::from(File::open("/dev/null").unwrap()),
        Kind::Socket => OwnedFd::from(UnixStream::pair().unwrap().0),
        Kind::PipeReadEnd => {
            let (r, _w) = std::io::pipe().unwrap();
            OwnedFd::from(r)
        }
        Kind::Directory => OwnedFd::from(File::open("/").unwrap()),
    }
}

fn count_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Mappings of this target's memfds (guest memory the daemon mapped). Other
/// mappings come and go with glibc's thread-stack cache.
fn count_maps() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .map_or(0, |m| m.lines().filter(|l| l.contains("memfd:fuzz-mem")).count())
}

fuzz_target!(|data: &[u8]| {
    let (p, w) = port();
    let fds0 = count_fds();
    let maps0 = count_maps();
    let (a, b) = UnixStream::pair().unwrap();
    let (p2, w2) = (p.clone(), w.clone());
    let h = std::thread::spawn(move || vhostd_daemon::server::serve_connection(&p2, &w2, b));
    a.set_write_timeout(Some(Duration::from_millis(100))).unwrap();
    a.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut rest = data;
    while let [spec, lo, hi, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let (bytes, next) = tail.split_at(len);
        rest = next;
        let n = usize::from(spec & 7);
        let first = usize::from(spec >> 3);
        let fds: Vec<OwnedFd> = (0..n).map(|i| make(KINDS[(first + i) % KINDS.len()])).collect();
        let raw: Vec<_> = fds.iter().map(|f| f.as_raw_fd()).collect();
        // an fd needs at least one byte to travel with
        let payload: &[u8] = if bytes.is_empty() && !raw.is_empty() { &[0] } else { bytes };
        if payload.is_empty() {
            continue;
        }
        if a.send_with_fds(&[payload], &raw).is_err() {
            break;
        }
        // our copies go now; the daemon holds its own (in flight or received)
        drop(fds);
        // replies are read as we go so the daemon never blocks on a full socket
        let mut sink = [0u8; 4096];
        let _ = a.set_nonblocking(true);
        while matches!((&a).read(&mut sink), Ok(n) if n > 0) {}
        let _ = a.set_nonblocking(false);
    }
    let _ = a.shutdown(std::net::Shutdown::Write);
    let mut sink = [0u8; 4096];
    while matches!((&a).read(&mut sink), Ok(n) if n > 0) {}
    drop(a);
    h.join().expect("connection thread panicked");
    let (fds1, maps1) = (count_fds(), count_maps());
    assert!(fds1 <= fds0, "fd leak: {fds0} -> {fds1}");
    assert!(maps1 <= maps0, "mapping leak: {maps0} -> {maps1}");
});
