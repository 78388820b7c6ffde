//! The memory layer's only unsafe code: a cache prefetch hint.
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
