//! The view's frame times (how long each redraw of the live timeline took), for the
//! benchmark of `drive --tui` (BENCHMARKS.md): with [`ENV`] set, the view prints
//! [`FrameTimes::summary`] on stderr once the terminal is restored.
//!
//! A fixed histogram (160 KB), so a view open for hours holds no more than one open for a
//! second.

use std::time::Duration;

/// Set (to anything) in the environment, the view prints its frame-time summary on exit.
pub const ENV: &str = "MIGSCOPE_TUI_FRAMES";

/// Fine buckets: 10 µs each up to 100 ms.
const FINE_US: u64 = 10;
const FINE: usize = 10_000;
/// Coarse buckets past 100 ms (a starved view: the lab's TCG guest): 10 ms each up to 100 s;
/// the last one holds everything slower.
const COARSE_US: u64 = 10_000;
const BUCKETS: usize = 2 * FINE;
const FINE_END_US: u64 = FINE_US * FINE as u64;

fn bucket(us: u64) -> usize {
    let i = if us < FINE_END_US {
        us / FINE_US
    } else {
        FINE as u64 + (us - FINE_END_US) / COARSE_US
    };
    usize::try_from(i).map_or(BUCKETS - 1, |i| i.min(BUCKETS - 1))
}

/// The upper edge of bucket `i`, in µs.
fn edge(i: usize) -> u64 {
    let i = i as u64;
    if i < FINE as u64 {
        (i + 1) * FINE_US
    } else {
        FINE_END_US + (i - FINE as u64 + 1) * COARSE_US
    }
}

/// Redraw durations in 10 µs buckets (10 ms past 100 ms).
#[derive(Debug)]
pub struct FrameTimes {
    counts: Box<[u64]>,
    frames: u64,
    max_us: u64,
    total_us: u64,
}

impl Default for FrameTimes {
    fn default() -> Self {
        FrameTimes {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            frames: 0,
            max_us: 0,
            total_us: 0,
        }
    }
}

impl FrameTimes {
    /// A histogram when [`ENV`] asks for one.
    pub fn from_env() -> Option<FrameTimes> {
        std::env::var_os(ENV).map(|_| FrameTimes::default())
    }

    pub fn add(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket(us)] += 1;
        self.frames += 1;
        self.max_us = self.max_us.max(us);
        self.total_us = self.total_us.saturating_add(us);
    }

    /// The duration at or below which a fraction `q` of the frames took, in µs: the upper edge
    /// of its bucket (rounded up to 10 µs, 10 ms past 100 ms), never above the slowest frame.
    /// `None` before the first frame.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        if self.frames == 0 {
            return None;
        }
        // The smallest rank r with r >= q * frames (1-based), at least the first frame.
        let rank = ((q * self.frames as f64).ceil() as u64).clamp(1, self.frames);
        let mut seen = 0;
        for (i, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(if i == BUCKETS - 1 {
                    self.max_us
                } else {
                    edge(i).min(self.max_us)
                });
            }
        }
        Some(self.max_us)
    }

    /// One line: frames, p50, p99, max and mean draw time in ms.
    pub fn summary(&self) -> String {
        let ms =
            |us: Option<u64>| us.map_or("-".to_owned(), |us| format!("{:.2}", us as f64 / 1e3));
        let mean = (self.frames > 0).then(|| self.total_us / self.frames);
        format!(
            "migscope: tui frames {}: draw p50 {} ms, p99 {} ms, max {} ms, mean {} ms",
            self.frames,
            ms(self.quantile_us(0.50)),
            ms(self.quantile_us(0.99)),
            ms((self.frames > 0).then_some(self.max_us)),
            ms(mean),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_bucket_the_rank_falls_in() {
        let mut f = FrameTimes::default();
        assert_eq!(f.quantile_us(0.99), None);
        assert!(f.summary().contains("frames 0: draw p50 - ms"));
        // 98 fast frames, one of 5 ms and one of 250 ms (past the last bucket's start).
        for _ in 0..98 {
            f.add(Duration::from_micros(1_234));
        }
        f.add(Duration::from_millis(5));
        f.add(Duration::from_millis(250));
        // p50: rank 50, a fast frame, its bucket's upper edge (1.24 ms).
        assert_eq!(f.quantile_us(0.50), Some(1_240));
        // p99: rank 99, the 5 ms frame (bucket 500: up to 5.01 ms).
        assert_eq!(f.quantile_us(0.99), Some(5_010));
        // p100: the slowest frame itself, not a bucket edge.
        assert_eq!(f.quantile_us(1.0), Some(250_000));
        assert_eq!(
            f.summary(),
            "migscope: tui frames 100: draw p50 1.24 ms, p99 5.01 ms, max 250.00 ms, mean 3.76 ms"
        );
    }

    #[test]
    fn slow_frames_keep_their_size_past_100_ms() {
        // As in the lab's TCG guest: a view starved of CPU takes hundreds of ms per frame.
        let mut f = FrameTimes::default();
        for _ in 0..5 {
            f.add(Duration::from_millis(300));
        }
        for _ in 0..5 {
            f.add(Duration::from_millis(1_500));
        }
        // p50: rank 5, a 300 ms frame (its 10 ms bucket ends at 310 ms), not the slowest one.
        assert_eq!(f.quantile_us(0.50), Some(310_000));
        assert_eq!(f.quantile_us(0.99), Some(1_500_000));
        // Past the last bucket: the slowest frame itself.
        f.add(Duration::from_secs(500));
        assert_eq!(f.quantile_us(1.0), Some(500_000_000));
    }

    #[test]
    fn a_single_frame_is_every_quantile() {
        let mut f = FrameTimes::default();
        f.add(Duration::from_micros(3));
        // The bucket's edge (10 µs) is above the only frame: the frame's own time.
        assert_eq!(f.quantile_us(0.5), Some(3));
        assert_eq!(f.quantile_us(0.99), Some(3));
    }
}
