//! Open-loop rate pacing: the n-th send of a client is due at
//! `start + (phase + n) * interval`, whatever happened to earlier sends, so a
//! slow server does not quietly lower the offered load. When a client falls
//! more than `max_lag` behind (the generator itself cannot keep up), the
//! missed slots are skipped and counted rather than sent in a burst.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    start: Instant,
    interval: Duration,
    phase: f64,
    next: u64,
    max_lag: Duration,
    skipped: u64,
}

impl Pacer {
    /// `rate` sends per second (> 0); `phase` in [0, 1) spreads clients over
    /// one interval.
    pub(crate) fn new(start: Instant, rate: f64, phase: f64, max_lag: Duration) -> Pacer {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            1e-9
        };
        Pacer {
            start,
            interval: Duration::from_secs_f64((1.0 / rate).min(1e9)),
            phase: phase.clamp(0.0, 0.999_999),
            next: 0,
            max_lag,
            skipped: 0,
        }
    }

    fn slot(&self, n: u64) -> Instant {
        self.start + self.interval.mul_f64(self.phase + n as f64)
    }

    /// When the next send is due.
    pub(crate) fn due(&self) -> Instant {
        self.slot(self.next)
    }

    /// Records that the due send happened at `now`, skipping (and counting)
    /// slots that are more than `max_lag` overdue.
    pub(crate) fn sent(&mut self, now: Instant) {
        self.next += 1;
        let due = self.due();
        if now > due + self.max_lag && !self.interval.is_zero() {
            let behind = now.duration_since(due).as_secs_f64();
            let skip = (behind / self.interval.as_secs_f64()).floor() as u64;
            self.next += skip;
            self.skipped += skip;
        }
    }

    /// Slots skipped so far because the client was too far behind.
    pub(crate) fn skipped(&self) -> u64 {
        self.skipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evenly_spaced_slots() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0, 10.0, 0.0, Duration::from_secs(1));
        assert_eq!(p.due(), t0);
        p.sent(t0);
        assert_eq!(p.due(), t0 + Duration::from_millis(100));
        p.sent(t0 + Duration::from_millis(100));
        assert_eq!(p.due(), t0 + Duration::from_millis(200));
        assert_eq!(p.skipped(), 0);
    }

    #[test]
    fn phase_offsets_the_schedule() {
        let t0 = Instant::now();
        let p = Pacer::new(t0, 4.0, 0.5, Duration::from_secs(1));
        assert_eq!(p.due(), t0 + Duration::from_millis(125));
    }

    #[test]
    fn small_lag_is_caught_up_without_skipping() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0, 100.0, 0.0, Duration::from_millis(50));
        // Sent 30 ms late: the next slot (10 ms) is already due, no skip.
        p.sent(t0 + Duration::from_millis(30));
        assert_eq!(p.due(), t0 + Duration::from_millis(10));
        assert_eq!(p.skipped(), 0);
    }

    #[test]
    fn large_lag_skips_and_counts() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0, 100.0, 0.0, Duration::from_millis(50));
        // One second late: about 99 slots are skipped, the next is close to now.
        let now = t0 + Duration::from_secs(1);
        p.sent(now);
        assert!(p.skipped() >= 98 && p.skipped() <= 100, "{}", p.skipped());
        assert!(p.due() <= now && now.duration_since(p.due()) < Duration::from_millis(10));
    }

    #[test]
    fn nonsense_rates_do_not_panic() {
        let t0 = Instant::now();
        for r in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let mut p = Pacer::new(t0, r, 0.0, Duration::from_secs(1));
            p.sent(t0 + Duration::from_secs(5));
            let _ = p.due();
        }
    }
}
