//! Per-call-site rate limiting for log lines a guest or front-end can trigger.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Whether a call site whose last emission time is in `last` may log now:
/// at most one line per second per site.
pub fn allow(last: &AtomicU64) -> bool {
    let now_ms = u64::try_from(epoch().elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(1000);
    let prev = last.load(Ordering::Relaxed);
    if now_ms.saturating_sub(prev) < 1000 {
        return false;
    }
    last.compare_exchange(prev, now_ms, Ordering::Relaxed, Ordering::Relaxed)
        .is_ok()
}

/// `log::warn!` limited to one line per second at this call site.
#[macro_export]
macro_rules! warn_rl {
    ($($arg:tt)*) => {{
        static LAST: ::std::sync::atomic::AtomicU64 = ::std::sync::atomic::AtomicU64::new(0);
        if $crate::ratelimit::allow(&LAST) {
            ::log::warn!($($arg)*);
        }
    }};
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
    use super::*;

    #[test]
    fn test_ratelimit_allows_first_then_blocks() {
        let last = AtomicU64::new(0);
        assert!(allow(&last));
        assert!(!allow(&last));
    }
}
