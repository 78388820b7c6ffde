//! Choosing, while running, how the RX path writes a frame's virtio-net
//! header into the guest: a measured choice, not a hint.
//!
//! A frame's header (10 or 12 bytes) sits on its own cache line in front of
//! the frame when the driver puts it 12 bytes before a line (DPDK's
//! virtio-user does). Two ways to deliver it:
//!
//! - **Write** (the default): header and frame in one copy.
//! - **Compare**: read the header bytes the buffer holds and write them only
//!   if they differ (DPDK's vhost does this field by field,
//!   `ASSIGN_UNLESS_EQUAL`); the frame is written after them.
//!
//! Which is faster depends on the driver and on where the two cores are.
//! A DPDK guest forwarding frames clears the header of every frame it
//! transmits in place, in the same buffer it later posts for receiving, so
//! the bytes are already right and Compare spares the line's transfer from
//! the driver's core and back: loop 64 B split +62-67 %, loop 1518 B +35 %
//! split and +49 % packed with far cores. A guest that only receives leaves
//! the line with us, and the read in front of every copy holds the copies
//! back: h2g 64 B -13 to -36 %, and -44 % for the read alone (same-run A/B,
//! docs/PERFORMANCE.md). No rule known here tells the two apart, so the
//! queue pair measures: [`HeaderTuner`] runs both in alternate epochs while
//! frames flow, keeps Compare only when it moved clearly more frames in
//! nearly every pair of epochs, and asks again after a while. The worker
//! owns the tuner and feeds it the RX entries its passes completed.

use std::time::{Duration, Instant};

/// One epoch of a probe: each way runs this long in turn.
pub const EPOCH: Duration = Duration::from_millis(25);
/// Epochs of one probe (half each way).
pub const PROBE_EPOCHS: u32 = 16;
/// How long a decision holds before the next probe (a probe costs at most
/// half its 400 ms at the worse way: under 2 % of this). A probe without
/// enough traffic to decide is repeated after [`RETRY`].
pub const SETTLE: Duration = Duration::from_secs(10);
/// How soon a probe that saw too little traffic to decide is run again.
pub const RETRY: Duration = Duration::from_secs(1);
/// Settled epochs in a row whose rate left the probe's by a quarter (up
/// or down) before a new probe: the vCPUs moved (this machine's line round
/// trip goes from ~65 to ~320 ns and back; Compare's gain with it) or the
/// traffic changed.
pub const MOVED_EPOCHS: u32 = 8;
/// Frames an epoch must carry to count: a busy queue (~80 kpps); at lower
/// rates the way the header is written does not set the rate.
pub const MIN_EPOCH_FRAMES: u64 = 2000;
/// Compare is kept only if it moved at least this much more (per mille)...
pub const MIN_GAIN_PERMILLE: u64 = 1080;
/// ...in at least this many of the probe's epoch pairs where both counted.
pub const MIN_PAIR_WINS: u32 = 6;

/// How the RX path writes a frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeaderWrite {
    /// Header and frame in one copy.
    #[default]
    Write,
    /// Header bytes read first and written only if they differ.
    Compare,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Alternating: epoch `epoch` (even: Write, odd: Compare) ends at `end`.
    Probe { epoch: u32, end: Instant },
    /// Decided until `until`; watched in epochs (the current one ends at
    /// `end`) for a rate that left the probe's by a quarter `strikes`
    /// epochs running.
    Settled {
        until: Instant,
        end: Instant,
        strikes: u32,
    },
}

/// Alternates [`HeaderWrite`] ways in epochs and keeps the one that moves
/// more frames. Fed the queue's running count of delivered frames.
#[derive(Debug, Clone, Default)]
pub struct HeaderTuner {
    state: Option<State>,
    way: HeaderWrite,
    /// Delivered-frame count at the start of the current epoch.
    mark: u64,
    /// Frames of the Write epoch of the current pair (None: not counted).
    write_frames: Option<u64>,
    /// Pairs where both epochs counted, and those Compare won clearly.
    pairs: u32,
    wins: u32,
    /// Frames and busy epochs of each way in the probe: the chosen way's
    /// mean is the rate a settled queue is held against.
    write_sum: u64,
    write_epochs: u64,
    compare_sum: u64,
    compare_epochs: u64,
    /// Frames per epoch expected while settled (0: none, idle probe).
    reference: u64,
    /// Decisions for Compare so far (observability).
    chosen_compare: u64,
    probes: u64,
}

impl HeaderTuner {
    /// The way to use now.
    pub fn way(&self) -> HeaderWrite {
        self.way
    }

    /// Probes finished, and how many of them chose Compare.
    pub fn decisions(&self) -> (u64, u64) {
        (self.probes, self.chosen_compare)
    }

    /// Advances the tuner; `frames` is the queue's delivered-frame count
    /// (any running total: only differences are used). Cheap when nothing
    /// is due: one comparison of instants.
    pub fn tick(&mut self, now: Instant, frames: u64) {
        match self.state {
            None => self.start_probe(now, frames),
            Some(State::Settled {
                until,
                end,
                strikes,
            }) => {
                if now >= until {
                    self.start_probe(now, frames);
                } else if now >= end {
                    // the machine or the traffic changed under the decision
                    // (the vCPUs moved, a guest started forwarding): ask again
                    let n = frames.wrapping_sub(self.mark);
                    self.mark = frames;
                    let r = self.reference;
                    let off = if r == 0 {
                        n >= MIN_EPOCH_FRAMES
                    } else {
                        n.saturating_mul(4) < r.saturating_mul(3)
                            || n.saturating_mul(3) > r.saturating_mul(4)
                    };
                    let strikes = if off { strikes.saturating_add(1) } else { 0 };
                    if strikes >= MOVED_EPOCHS {
                        self.start_probe(now, frames);
                    } else {
                        self.state = Some(State::Settled {
                            until,
                            end: now.checked_add(EPOCH).unwrap_or(now),
                            strikes,
                        });
                    }
                }
            }
            Some(State::Probe { epoch, end }) => {
                if now < end {
                    return;
                }
                let n = frames.wrapping_sub(self.mark);
                let busy = n >= MIN_EPOCH_FRAMES;
                if busy && epoch % 2 == 0 {
                    self.write_sum = self.write_sum.saturating_add(n);
                    self.write_epochs = self.write_epochs.saturating_add(1);
                } else if busy {
                    self.compare_sum = self.compare_sum.saturating_add(n);
                    self.compare_epochs = self.compare_epochs.saturating_add(1);
                }
                if epoch % 2 == 0 {
                    self.write_frames = busy.then_some(n);
                } else if let Some(w) = self.write_frames.take().filter(|_| busy) {
                    self.pairs = self.pairs.saturating_add(1);
                    if n.saturating_mul(1000) >= w.saturating_mul(MIN_GAIN_PERMILLE) {
                        self.wins = self.wins.saturating_add(1);
                    }
                }
                let next = epoch.saturating_add(1);
                self.mark = frames;
                if next >= PROBE_EPOCHS {
                    self.probes = self.probes.saturating_add(1);
                    self.way = if self.wins >= MIN_PAIR_WINS {
                        self.chosen_compare = self.chosen_compare.saturating_add(1);
                        HeaderWrite::Compare
                    } else {
                        HeaderWrite::Write
                    };
                    let (sum, epochs) = match self.way {
                        HeaderWrite::Write => (self.write_sum, self.write_epochs),
                        HeaderWrite::Compare => (self.compare_sum, self.compare_epochs),
                    };
                    self.reference = sum.checked_div(epochs).unwrap_or(0);
                    // too few busy pairs to judge: ask again soon
                    let hold = if self.pairs >= MIN_PAIR_WINS {
                        SETTLE
                    } else {
                        RETRY
                    };
                    self.state = Some(State::Settled {
                        until: now.checked_add(hold).unwrap_or(now),
                        end: now.checked_add(EPOCH).unwrap_or(now),
                        strikes: 0,
                    });
                } else {
                    self.way = if next % 2 == 0 {
                        HeaderWrite::Write
                    } else {
                        HeaderWrite::Compare
                    };
                    self.state = Some(State::Probe {
                        epoch: next,
                        end: now.checked_add(EPOCH).unwrap_or(now),
                    });
                }
            }
        }
    }

    fn start_probe(&mut self, now: Instant, frames: u64) {
        self.mark = frames;
        self.write_frames = None;
        self.pairs = 0;
        self.wins = 0;
        self.write_sum = 0;
        self.write_epochs = 0;
        self.compare_sum = 0;
        self.compare_epochs = 0;
        self.way = HeaderWrite::Write;
        self.state = Some(State::Probe {
            epoch: 0,
            end: now.checked_add(EPOCH).unwrap_or(now),
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::unwrap_used
    )]
    use super::*;

    /// Runs one probe from `t` with `rate(way)` frames per epoch; returns
    /// the time after it and the way chosen.
    fn probe(
        t: &mut Instant,
        frames: &mut u64,
        tu: &mut HeaderTuner,
        rate: impl Fn(HeaderWrite, u32) -> u64,
    ) -> HeaderWrite {
        tu.tick(*t, *frames);
        for e in 0..PROBE_EPOCHS {
            let way = tu.way();
            assert_eq!(way == HeaderWrite::Compare, e % 2 == 1, "epoch {e}");
            *frames += rate(way, e);
            *t += EPOCH;
            tu.tick(*t, *frames);
        }
        tu.way()
    }

    #[test]
    fn test_tuner_keeps_compare_only_when_it_clearly_moves_more() {
        let mut t = Instant::now();
        let mut f = 0u64;
        let mut tu = HeaderTuner::default();
        assert_eq!(tu.way(), HeaderWrite::Write);
        // +30 %: Compare
        let w = probe(&mut t, &mut f, &mut tu, |w, _| match w {
            HeaderWrite::Write => 100_000,
            HeaderWrite::Compare => 130_000,
        });
        assert_eq!(w, HeaderWrite::Compare);
        assert_eq!(tu.decisions(), (1, 1));
        // settled: stays while the rate holds (within a quarter; a short
        // dip of fewer than MOVED_EPOCHS epochs is not a move)
        let epochs = u32::try_from(SETTLE.as_millis() / EPOCH.as_millis()).unwrap() - 2;
        for e in 0..epochs {
            t += EPOCH;
            f += if e % 50 < MOVED_EPOCHS - 1 {
                60_000
            } else {
                125_000
            };
            tu.tick(t, f);
            assert_eq!(tu.way(), HeaderWrite::Compare, "settled epoch {e}");
        }
        // after SETTLE a new probe; this time Compare is slower: Write
        t += SETTLE;
        let w = probe(&mut t, &mut f, &mut tu, |w, _| match w {
            HeaderWrite::Write => 100_000,
            HeaderWrite::Compare => 64_000,
        });
        assert_eq!(w, HeaderWrite::Write);
        assert_eq!(tu.decisions(), (2, 1));
        // the rate halves and stays there (the vCPUs moved): a new probe
        // long before SETTLE is out, which finds Compare ahead now
        for _ in 0..MOVED_EPOCHS {
            assert_eq!(tu.way(), HeaderWrite::Write);
            t += EPOCH;
            f += 50_000;
            tu.tick(t, f);
        }
        let w = probe(&mut t, &mut f, &mut tu, |w, _| match w {
            HeaderWrite::Write => 50_000,
            HeaderWrite::Compare => 90_000,
        });
        assert_eq!(w, HeaderWrite::Compare);
        assert_eq!(tu.decisions(), (3, 2));
    }

    #[test]
    fn test_tuner_stays_with_write_on_noise_idle_or_a_few_lucky_epochs() {
        for (name, rate) in [
            // +5 %: under the bar
            ("small gain", [100_000u64, 105_000]),
            // too few frames to count
            ("idle", [500, 1500]),
        ] {
            let mut t = Instant::now();
            let mut f = 0u64;
            let mut tu = HeaderTuner::default();
            let w = probe(&mut t, &mut f, &mut tu, |w, _| {
                rate[(w == HeaderWrite::Compare) as usize]
            });
            assert_eq!(w, HeaderWrite::Write, "{name}");
            // an idle probe is repeated after RETRY, a decided one after SETTLE
            t += RETRY;
            tu.tick(t, f);
            t += EPOCH;
            f += 1;
            tu.tick(t, f);
            let probing = tu.way() == HeaderWrite::Compare;
            assert_eq!(probing, name == "idle", "{name}");
        }
        // Compare far ahead in only 5 of 8 pairs (a burst of traffic
        // during its epochs): not enough
        let mut t = Instant::now();
        let mut f = 0u64;
        let mut tu = HeaderTuner::default();
        let w = probe(&mut t, &mut f, &mut tu, |w, e| match (w, e / 2 < 5) {
            (HeaderWrite::Write, _) => 100_000,
            (HeaderWrite::Compare, true) => 200_000,
            (HeaderWrite::Compare, false) => 90_000,
        });
        assert_eq!(w, HeaderWrite::Write);
    }
}
