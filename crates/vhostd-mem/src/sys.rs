//! The memory layer's only unsafe code: a cache prefetch hint, the frame
//! copy, and the SIGBUS handler that keeps a shrunk guest-memory file from
//! ending the daemon.
#![allow(unsafe_code)]

use vm_memory::VolatileSlice;

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

/// Copies below this many bytes go to the platform's `memcpy` (two
/// overlapping vector moves at these sizes); from here on [`copy`] uses its
/// own loop where the CPU has AVX.
const COPY_LOOP_MIN: usize = 256;

/// Copies `n` bytes from `src` to `dst`: the frame copies between guest
/// memory and host buffers. From [`COPY_LOOP_MIN`] bytes, where the CPU has
/// AVX, [`copy_avx`]: 32-byte moves. glibc picks its AVX-512 `memmove` on
/// CPUs that have AVX-512 (this machine's AMD EPYC, Zen 4), whose 64-byte
/// loads each span two cache lines when the guest's buffer is not 64-byte
/// aligned (virtio-user's frames start 12 bytes before a line). Same-run
/// A/B, loop 1518 B (docs/PERFORMANCE.md): glibc's AVX2 variant (forced
/// with GLIBC_TUNABLES) 6-9 % faster than its AVX-512 one in both machine
/// phases; a 16-byte SSE2 loop of our own 0-4 %; `rep movsb` level.
///
/// # Safety
/// `src..src+n` must be readable and `dst..dst+n` writable, and the two
/// must not overlap. Bytes may change under `src` while it is read (guest
/// memory): the copy then holds some mix of old and new bytes, as with
/// `memcpy`.
#[inline]
unsafe fn copy(dst: *mut u8, src: *const u8, n: usize) {
    #[cfg(target_arch = "x86_64")]
    if n >= COPY_LOOP_MIN && std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the caller's promise; AVX is present (checked above).
        unsafe { copy_avx(dst, src, n) };
        return;
    }
    // SAFETY: the caller's promise, as above.
    unsafe { std::ptr::copy_nonoverlapping(src, dst, n) };
}

/// [`copy`] for `n >= COPY_LOOP_MIN` on a CPU with AVX, much as glibc's AVX
/// `memmove` does it at these sizes: the first 32 and the last 128 bytes
/// are loaded first (their misses overlap the loop's), then 128-byte steps
/// (four 32-byte loads, four stores) from the first 32-byte boundary of
/// `dst`, so no store in the loop crosses a cache line.
///
/// # Safety
/// As [`copy`], with `n >= COPY_LOOP_MIN` and AVX present.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn copy_avx(dst: *mut u8, src: *const u8, n: usize) {
    use std::arch::x86_64::__m256i;
    // 128 bytes: four 32-byte registers (AVX is enabled here, so a move of
    // this type is four unaligned 32-byte loads or stores)
    type Block = [__m256i; 4];
    // Every access below lies in [0, n) of both ranges, which the caller
    // promises readable (src) and writable (dst): the tail block is
    // [n - 128, n) with n >= COPY_LOOP_MIN > 128, a step at `off < tail`
    // ends before n, and the first step starts 1..=32 bytes in.
    let tail = n.wrapping_sub(128);
    // SAFETY: [0, 32) of src, as above; read_unaligned needs no alignment.
    let head = unsafe { src.cast::<__m256i>().read_unaligned() };
    // SAFETY: [tail, n) of src, as above.
    let last = unsafe { src.wrapping_add(tail).cast::<Block>().read_unaligned() };
    // SAFETY: [tail, n) of dst. (The loop's last step may cover some of
    // these bytes again, with the same values: the ranges do not overlap.)
    unsafe { dst.wrapping_add(tail).cast::<Block>().write_unaligned(last) };
    let mut off = 32usize.wrapping_sub(dst as usize & 31);
    while off < tail {
        // SAFETY: [off, off + 128) of src, off < tail, as above.
        let v = unsafe { src.wrapping_add(off).cast::<Block>().read_unaligned() };
        // SAFETY: the same range of dst.
        unsafe { dst.wrapping_add(off).cast::<Block>().write_unaligned(v) };
        off = off.wrapping_add(128);
    }
    // SAFETY: [0, 32) of dst.
    unsafe { dst.cast::<__m256i>().write_unaligned(head) };
}

/// Copies the guest bytes under `s` into `buf`; false (nothing copied) if
/// the lengths differ. The slice type has no dirty bitmap (`()`): a bitmap
/// would need its pages marked, as `VolatileSlice::copy_from` does.
#[inline]
pub(crate) fn read_guest(s: &VolatileSlice<'_, ()>, buf: &mut [u8]) -> bool {
    if s.len() != buf.len() {
        return false;
    }
    let g = s.ptr_guard();
    // SAFETY: a VolatileSlice covers s.len() mapped bytes while it lives;
    // `buf` is a Rust slice of the same length, which cannot point into the
    // mapping (guest memory is reached only through volatile accessors).
    unsafe { copy(buf.as_mut_ptr(), g.as_ptr(), buf.len()) };
    true
}

/// Copies `buf` into the guest bytes under `s`; false (nothing copied) if
/// the lengths differ.
#[inline]
pub(crate) fn write_guest(s: &VolatileSlice<'_, ()>, buf: &[u8]) -> bool {
    if s.len() != buf.len() {
        return false;
    }
    let g = s.ptr_guard_mut();
    // SAFETY: as in read_guest, the other way round.
    unsafe { copy(g.as_ptr(), buf.as_ptr(), buf.len()) };
    true
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
