//! The crash-loop rule: automatic restarts counted within a sliding window.
//!
//! The health task feeds one sample per pass: the snapshot's `restarts.auto` counter (automatic
//! restarts the warden has observed, which never goes down while it runs). The number of
//! restarts within the window is the counter now minus its value when the window began.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Samples of one tunnel's automatic-restart counter, oldest first.
#[derive(Debug, Clone, Default)]
pub struct RestartHistory {
    samples: VecDeque<(Instant, u64)>,
}

/// What the window holds right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashVerdict {
    /// Automatic restarts within the window (or within the history, while it is shorter).
    pub restarts: u64,
    pub looping: bool,
}

impl RestartHistory {
    /// Records `auto` (the counter's value) at `now`, forgets what the window no longer needs
    /// and judges: crash-looping when the restarts within `window` reach `threshold`.
    ///
    /// The baseline is the newest sample taken at or before `now - window`, so restarts that
    /// happened just before the window's start may count too (by at most one pass); while the
    /// history is younger than the window, the oldest sample is the baseline.
    pub fn record(
        &mut self,
        now: Instant,
        auto: u64,
        window: Duration,
        threshold: usize,
    ) -> CrashVerdict {
        if self.samples.back().is_some_and(|&(_, last)| auto < last) {
            // The counter only grows while the warden runs; a smaller value is a new count.
            self.samples.clear();
        }
        self.samples.push_back((now, auto));
        let start = now.checked_sub(window);
        // Keep exactly one sample at or before the window's start: the baseline.
        while let (Some(start), Some(&(second, _))) = (start, self.samples.get(1)) {
            if second > start {
                break;
            }
            self.samples.pop_front();
        }
        let baseline = self.samples.front().map_or(auto, |&(_, value)| value);
        let restarts = auto - baseline;
        CrashVerdict {
            restarts,
            looping: restarts >= threshold as u64,
        }
    }

    /// Samples held (for tests of the pruning).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.samples.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(60);

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn restarts_within_the_window_trip_the_threshold() {
        let t0 = Instant::now();
        let mut h = RestartHistory::default();
        assert_eq!(
            h.record(t0, 0, WINDOW, 3),
            CrashVerdict {
                restarts: 0,
                looping: false
            }
        );
        assert!(!h.record(at(t0, 10), 2, WINDOW, 3).looping);
        let v = h.record(at(t0, 20), 3, WINDOW, 3);
        assert_eq!(v.restarts, 3);
        assert!(v.looping);
    }

    #[test]
    fn old_restarts_leave_the_window() {
        let t0 = Instant::now();
        let mut h = RestartHistory::default();
        h.record(t0, 0, WINDOW, 3);
        h.record(at(t0, 10), 5, WINDOW, 3);
        // At 70 s the baseline is the sample of 10 s: the five restarts are out of the window.
        let v = h.record(at(t0, 70), 5, WINDOW, 3);
        assert_eq!(v.restarts, 0);
        assert!(!v.looping);
        // One more restart within the window is one.
        assert_eq!(h.record(at(t0, 80), 6, WINDOW, 3).restarts, 1);
    }

    #[test]
    fn keeps_one_baseline_and_prunes_the_rest() {
        let t0 = Instant::now();
        let mut h = RestartHistory::default();
        for s in 0..100 {
            h.record(at(t0, s), s, WINDOW, 1000);
        }
        // Samples 39..=99: one at or before 99 - 60 = 39, and the 60 after it.
        assert_eq!(h.len(), 61);
        assert_eq!(h.record(at(t0, 100), 100, WINDOW, 1000).restarts, 60);
    }

    #[test]
    fn a_counter_that_goes_down_starts_over() {
        let t0 = Instant::now();
        let mut h = RestartHistory::default();
        h.record(t0, 10, WINDOW, 2);
        let v = h.record(at(t0, 1), 1, WINDOW, 2);
        assert_eq!(v.restarts, 0);
        assert_eq!(h.record(at(t0, 2), 3, WINDOW, 2).restarts, 2);
    }

    #[test]
    fn a_single_sample_is_no_loop() {
        let mut h = RestartHistory::default();
        // The counter already stood at 40 when first seen: those restarts are not in any window.
        assert!(!h.record(Instant::now(), 40, WINDOW, 1).looping);
    }
}
