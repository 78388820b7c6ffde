//! The memory layer's only unsafe code: a cache prefetch hint, and the
//! SIGBUS handler that keeps a shrunk guest-memory file from ending the
//! daemon.
#![allow(unsafe_code)]

/// Asks the CPU to start loading the cache line at `p` (host address of
/// mapped guest memory). A hint only: it reads nothing into the program,
/// writes nothing, and never faults, whatever `p` is.
#[inline(always)]
pub(crate) fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: PREFETCHT0 has no architectural effect besides the cache
        // (it does not fault on any address, valid or not), and SSE is part
        // of the x86_64 baseline.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>())
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Asks the CPU to bring the cache line at `p` in for writing (PREFETCHW):
/// a hint like [`prefetch`], taking ownership at once.
#[inline(always)]
pub(crate) fn prefetch_write(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHW is a hint: no architectural effect, no fault on any
    // address; CPUs without it execute it as a NOP.
    unsafe {
        std::arch::asm!("prefetchw [{}]", in(reg) p, options(nostack, preserves_flags, readonly))
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

// ---------------------------------------------------------------------------
// Guest memory that disappears under a mapping (SIGBUS).
//
// A front-end can shrink the file behind a region after SET_MEM_TABLE (the
// size was checked against fstat when it was mapped). The next access to a
// page past the new end raises SIGBUS, whose default action ends the whole
// daemon. The handler below looks the faulting address up in a registry of
// guest mappings; if it is one, it maps a private zero page over the
// faulting page (the access is retried and succeeds on the zero page; the
// file is untouched) and counts the fault, so that the owning port can stop
// its rings. A fault anywhere else restores the default action and returns:
// the access faults again and the process dies as it would have.
// ---------------------------------------------------------------------------

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Once;

/// Guest mappings watched at once (a table has at most 32 regions).
const SLOTS: usize = 256;

struct Slot {
    start: AtomicUsize,
    len: AtomicUsize,
    faults: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    faults: AtomicU64::new(0),
};

static REGISTRY: [Slot; SLOTS] = [EMPTY; SLOTS];
/// Faults handled so far, process-wide (workers compare it once per pass).
static FAULTS: AtomicU64 = AtomicU64::new(0);
static PAGE: AtomicUsize = AtomicUsize::new(4096);
static INSTALL: Once = Once::new();

/// Registers `[start, start+len)` as guest memory; `None` when every slot is
/// taken (the mapping is then unprotected, as before this existed).
pub(crate) fn register(start: usize, len: usize) -> Option<usize> {
    if start == 0 || len == 0 {
        return None;
    }
    for (i, s) in REGISTRY.iter().enumerate() {
        if s.start
            .compare_exchange(0, start, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            s.faults.store(0, Ordering::Relaxed);
            s.len.store(len, Ordering::Release);
            return Some(i);
        }
    }
    None
}

/// Forgets slot `i` (the mapping is going away).
pub(crate) fn unregister(i: usize) {
    if let Some(s) = REGISTRY.get(i) {
        s.len.store(0, Ordering::Release);
        s.start.store(0, Ordering::Release);
    }
}

/// Faults handled in slot `i`.
pub(crate) fn faults(i: usize) -> u64 {
    REGISTRY
        .get(i)
        .map_or(0, |s| s.faults.load(Ordering::Acquire))
}

/// Faults handled process-wide.
pub(crate) fn total_faults() -> u64 {
    FAULTS.load(Ordering::Acquire)
}

/// Installs the SIGBUS handler once per process.
pub(crate) fn install() {
    INSTALL.call_once(|| {
        // SAFETY: sysconf has no memory arguments.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if let Ok(p) = usize::try_from(page) {
            if p.is_power_of_two() {
                PAGE.store(p, Ordering::Relaxed);
            }
        }
        // SAFETY: a zeroed sigaction is a valid starting value (no handler,
        // empty mask); every field used is set below.
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = on_sigbus as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        // SAFETY: `sa` is a valid, initialised sigaction for the duration of
        // the call; the old action is not asked for.
        let rc = unsafe { libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut()) };
        if rc != 0 {
            // nothing else to do: SIGBUS keeps its default action
        }
    });
}

/// The handler. Only async-signal-safe work: atomics, mmap, sigaction.
extern "C" fn on_sigbus(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid, aligned siginfo_t for an
    // SA_SIGINFO handler, alive for the handler's duration.
    let info = unsafe { &*info };
    // SAFETY: for SIGBUS the kernel fills the si_addr member of the union.
    let addr = unsafe { info.si_addr() } as usize;
    let page = PAGE.load(Ordering::Relaxed);
    let hit = REGISTRY.iter().find(|s| {
        let start = s.start.load(Ordering::Acquire);
        let len = s.len.load(Ordering::Acquire);
        start != 0 && addr >= start && addr.wrapping_sub(start) < len
    });
    if let Some(s) = hit {
        let start = s.start.load(Ordering::Acquire);
        let end = start.saturating_add(s.len.load(Ordering::Acquire));
        // The base page first; a hugetlbfs mapping can only be replaced in
        // whole huge pages (the kernel refuses to split it elsewhere), so
        // then 2 MiB and 1 GiB blocks, each only if it lies inside the
        // mapping (hugetlbfs mappings are aligned to their page size).
        for size in [page, 2 << 20, 1 << 30] {
            let at = addr & !(size.wrapping_sub(1));
            if at < start || at.saturating_add(size) > end {
                continue;
            }
            // SAFETY: `[at, at+size)` is aligned and inside a guest mapping
            // this crate made (registered above); replacing it with private
            // anonymous memory changes only what later guest-memory copies
            // read and write there. No Rust reference into guest memory
            // exists (the crate only copies through volatile accessors), so
            // nothing is invalidated.
            let p = unsafe {
                libc::mmap(
                    at as *mut libc::c_void,
                    size,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if p != libc::MAP_FAILED {
                s.faults.fetch_add(1, Ordering::AcqRel);
                FAULTS.fetch_add(1, Ordering::AcqRel);
                return;
            }
        }
    }
    // Not guest memory (or the page could not be replaced): default action,
    // and the retried access ends the process as SIGBUS always did.
    // SAFETY: a zeroed sigaction with SIG_DFL (0) is valid.
    let mut dfl: libc::sigaction = unsafe { std::mem::zeroed() };
    dfl.sa_sigaction = libc::SIG_DFL;
    // SAFETY: valid sigaction, no old action requested.
    unsafe { libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut()) };
}
