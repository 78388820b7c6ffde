//! Host-side interrupt coalescing, per queue.
//!
//! Semantics follow the virtio 1.3 notification coalescing parameters
//! (§5.1.6.5.6, `max_packets` / `max_usecs`): once a completed buffer makes
//! the driver want a call, the call is held until `max_packets` buffers have
//! completed or `max_usecs` have passed since the first of them, whichever
//! comes first. A timer (the caller's) enforces the time bound, so no call
//! waits longer than `max_usecs`.
//!
//! `Adaptive` picks (max_usecs, max_packets) from the measured load, one
//! step at a time per window, like Linux net_dim: it moves up only when the
//! completion rate is high *and* bursts are already large (there is a batch
//! to build), and down when either falls. A request/response flow publishes
//! one completion per burst, so it stays immediate whatever its rate.
//!
//! Time is a parameter (`now`): the state machine never reads a clock, so
//! tests drive it with a manual clock.

use std::time::{Duration, Instant};

/// A coalescing policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Every wanted call is sent at once.
    #[default]
    Off,
    /// Hold calls for up to `max_usecs` or `max_packets` completions.
    Fixed {
        /// Time bound in microseconds (0: no time bound beyond packets).
        max_usecs: u32,
        /// Completion bound (0 or 1: immediate).
        max_packets: u32,
    },
    /// Choose the bounds from the load.
    Adaptive,
}

/// What to do after a completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send the call now.
    Fire,
    /// Hold it; the caller must arm a timer for this instant.
    Defer(Instant),
    /// The driver does not want a call and none is owed.
    Nothing,
}

/// Adaptive levels: (min rate in completions/s to enter, max_usecs, max_packets).
const LEVELS: [(u64, u32, u32); 4] = [
    (0, 0, 0),
    (40_000, 16, 16),
    (150_000, 40, 64),
    (600_000, 100, 128),
];
/// Adaptive measurement window.
const WINDOW: Duration = Duration::from_millis(4);
/// Adaptive: average completions per burst needed to move up a level, and
/// below which it moves down.
const BATCH_UP: u64 = 4;
const BATCH_DOWN: u64 = 2;

/// Per-queue coalescing state.
#[derive(Debug, Clone)]
pub struct Coalescer {
    policy: Policy,
    /// A call is owed since this instant.
    pending_since: Option<Instant>,
    /// Completions since the owed call became owed.
    pending_packets: u32,
    /// Bursts whose call was folded into a later one (for counters).
    folded: u64,
    level: usize,
    window_start: Option<Instant>,
    window_packets: u64,
    window_bursts: u64,
}

impl Default for Coalescer {
    fn default() -> Self {
        Self::new(Policy::Off)
    }
}

impl Coalescer {
    /// A coalescer with `policy`.
    pub fn new(policy: Policy) -> Self {
        Coalescer {
            policy,
            pending_since: None,
            pending_packets: 0,
            folded: 0,
            level: 0,
            window_start: None,
            window_packets: 0,
            window_bursts: 0,
        }
    }

    /// The policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Changes the policy; an owed call stays owed (the caller fires it at
    /// the next decision or timer).
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
        self.level = 0;
    }

    /// The bounds in force: (max_usecs, max_packets).
    pub fn bounds(&self) -> (u32, u32) {
        match self.policy {
            Policy::Off => (0, 0),
            Policy::Fixed {
                max_usecs,
                max_packets,
            } => (max_usecs, max_packets),
            Policy::Adaptive => {
                let (_, u, p) = LEVELS.get(self.level).copied().unwrap_or((0, 0, 0));
                (u, p)
            }
        }
    }

    fn adapt(&mut self, now: Instant, packets: u32) {
        let start = *self.window_start.get_or_insert(now);
        self.window_packets = self.window_packets.saturating_add(u64::from(packets));
        self.window_bursts = self.window_bursts.saturating_add(1);
        let span = now.saturating_duration_since(start);
        if span < WINDOW {
            return;
        }
        let nanos = u64::try_from(span.as_nanos()).unwrap_or(u64::MAX).max(1);
        let rate = self
            .window_packets
            .saturating_mul(1_000_000_000)
            .checked_div(nanos)
            .unwrap_or(0);
        let per_burst = self
            .window_packets
            .checked_div(self.window_bursts)
            .unwrap_or(0);
        // one level per window, up or down (hysteresis: leave a level only
        // when the rate is below half its entry rate)
        let up = per_burst >= BATCH_UP
            && LEVELS
                .get(self.level.saturating_add(1))
                .is_some_and(|l| rate >= l.0);
        let down = self.level > 0 && LEVELS.get(self.level).is_some_and(|l| rate < l.0 / 2);
        if per_burst < BATCH_DOWN {
            // single completions: latency-bound traffic, stop holding calls now
            self.level = 0;
        } else if up {
            self.level = self.level.saturating_add(1);
        } else if down {
            self.level = self.level.saturating_sub(1);
        }
        self.window_start = Some(now);
        self.window_packets = 0;
        self.window_bursts = 0;
    }

    /// A burst of `packets` completions was published; `wants_call` is the
    /// driver's own suppression decision (EVENT_IDX / NO_INTERRUPT).
    pub fn on_completion(&mut self, now: Instant, packets: u32, wants_call: bool) -> Decision {
        if matches!(self.policy, Policy::Adaptive) {
            self.adapt(now, packets);
        }
        let (usecs, max_packets) = self.bounds();
        let owed = self.pending_since.is_some();
        if !owed && !wants_call {
            return Decision::Nothing;
        }
        if usecs == 0 && max_packets <= 1 {
            return self.fire();
        }
        if owed {
            self.pending_packets = self.pending_packets.saturating_add(packets);
            if wants_call {
                self.folded = self.folded.saturating_add(1);
            }
        } else {
            self.pending_since = Some(now);
            self.pending_packets = packets;
        }
        let since = self.pending_since.unwrap_or(now);
        let deadline = at(since, Duration::from_micros(u64::from(usecs)));
        if (max_packets > 0 && self.pending_packets >= max_packets)
            || (usecs > 0 && now >= deadline)
        {
            return self.fire();
        }
        if usecs == 0 {
            // packet bound only: hold without a timer would risk an unbounded
            // wait, so a 1 ms safety bound applies
            return Decision::Defer(at(since, Duration::from_millis(1)));
        }
        Decision::Defer(deadline)
    }

    fn fire(&mut self) -> Decision {
        self.pending_since = None;
        self.pending_packets = 0;
        Decision::Fire
    }

    /// The instant an owed call must go out, if one is owed.
    pub fn deadline(&self) -> Option<Instant> {
        let since = self.pending_since?;
        let (usecs, _) = self.bounds();
        Some(at(
            since,
            if usecs == 0 {
                Duration::from_millis(1)
            } else {
                Duration::from_micros(u64::from(usecs))
            },
        ))
    }

    /// Timer check: true if the owed call must be sent now (it is then no
    /// longer owed).
    pub fn poll(&mut self, now: Instant) -> bool {
        match self.deadline() {
            Some(d) if now >= d => {
                self.pending_since = None;
                self.pending_packets = 0;
                true
            }
            _ => false,
        }
    }

    /// Drops an owed call (the caller is sending a call anyway).
    pub fn flush(&mut self) {
        self.pending_since = None;
        self.pending_packets = 0;
    }

    /// Whether a call is owed.
    pub fn pending(&self) -> bool {
        self.pending_since.is_some()
    }

    /// Takes the count of bursts whose call was folded into another call.
    pub fn take_folded(&mut self) -> u64 {
        std::mem::take(&mut self.folded)
    }
}

/// `since + d`; an instant past what `Instant` can hold (never, for the
/// microsecond bounds used here) becomes `since`, which fires at once.
fn at(since: Instant, d: Duration) -> Instant {
    since.checked_add(d).unwrap_or(since)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::arithmetic_side_effects)]
    use super::*;

    fn us(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_micros(n)
    }

    #[test]
    fn test_coalesce_off_fires_every_wanted_call() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(Policy::Off);
        assert_eq!(c.on_completion(t0, 1, true), Decision::Fire);
        assert_eq!(c.on_completion(t0, 1, false), Decision::Nothing);
        assert!(!c.pending());
    }

    #[test]
    fn test_coalesce_fixed_fires_at_packet_bound() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(Policy::Fixed {
            max_usecs: 100,
            max_packets: 8,
        });
        assert_eq!(c.on_completion(t0, 3, true), Decision::Defer(us(t0, 100)));
        assert_eq!(
            c.on_completion(us(t0, 10), 3, true),
            Decision::Defer(us(t0, 100))
        );
        // suppressed by the guest or not, owed completions count
        assert_eq!(c.on_completion(us(t0, 20), 2, false), Decision::Fire);
        assert!(!c.pending());
        assert_eq!(c.take_folded(), 1);
    }

    #[test]
    fn test_coalesce_fixed_timer_bounds_wait() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(Policy::Fixed {
            max_usecs: 50,
            max_packets: 64,
        });
        assert_eq!(c.on_completion(t0, 1, true), Decision::Defer(us(t0, 50)));
        assert!(!c.poll(us(t0, 49)));
        assert_eq!(c.deadline(), Some(us(t0, 50)));
        assert!(c.poll(us(t0, 50)));
        assert!(!c.pending());
        assert!(!c.poll(us(t0, 1000)));
    }

    #[test]
    fn test_coalesce_fixed_late_completion_past_deadline_fires() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(Policy::Fixed {
            max_usecs: 50,
            max_packets: 64,
        });
        c.on_completion(t0, 1, true);
        assert_eq!(c.on_completion(us(t0, 60), 1, false), Decision::Fire);
    }

    #[test]
    fn test_coalesce_packets_only_has_safety_bound() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(Policy::Fixed {
            max_usecs: 0,
            max_packets: 32,
        });
        assert_eq!(
            c.on_completion(t0, 1, true),
            Decision::Defer(t0 + Duration::from_millis(1))
        );
        assert!(c.poll(t0 + Duration::from_millis(1)));
    }

    #[test]
    fn test_coalesce_max_packets_one_is_immediate() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(Policy::Fixed {
            max_usecs: 0,
            max_packets: 1,
        });
        assert_eq!(c.on_completion(t0, 1, true), Decision::Fire);
    }

    #[test]
    fn test_coalesce_adaptive_immediate_at_low_rate() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(Policy::Adaptive);
        // one completion every 100 us = 10k/s: stays immediate
        for i in 0..1000 {
            assert_eq!(
                c.on_completion(us(t0, i * 100), 1, true),
                Decision::Fire,
                "at {i}"
            );
        }
        assert_eq!(c.bounds(), (0, 0));
    }

    #[test]
    fn test_coalesce_adaptive_fast_request_response_stays_immediate() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(Policy::Adaptive);
        // one completion per burst every 5 us = 200k/s, but nothing to batch
        for i in 0..20_000 {
            assert_eq!(
                c.on_completion(us(t0, i * 5), 1, true),
                Decision::Fire,
                "at {i}"
            );
        }
        assert_eq!(c.bounds(), (0, 0));
    }

    #[test]
    fn test_coalesce_adaptive_batches_under_load_and_recovers() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(Policy::Adaptive);
        // 32 completions every 20 us = 1.6 M/s for 100 ms
        let mut t = 0;
        while t < 100_000 {
            if let Decision::Defer(_) = c.on_completion(us(t0, t), 32, true) {
                c.poll(us(t0, t + 200));
            }
            t += 20;
        }
        assert_eq!(c.bounds(), (100, 128), "top level under load");
        // then a trickle: one per ms for 100 ms steps back down
        let mut fired = 0;
        for k in 0..100 {
            let now = us(t0, t + k * 1000);
            match c.on_completion(now, 1, true) {
                Decision::Fire => fired += 1,
                Decision::Defer(d) => {
                    assert!(c.poll(d));
                }
                Decision::Nothing => {}
            }
        }
        assert_eq!(c.bounds(), (0, 0), "back to immediate");
        assert!(fired > 50);
    }
}
