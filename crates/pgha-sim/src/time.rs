//! Simulated time.
//!
//! One true time drives everything (the event queue, the DCS server's
//! lease expiry). Each node reads its own monotonic clock, which runs at a
//! rate off by up to [`MAX_SKEW_PPM`] from true time: the HA state machine
//! and the fences only ever see their node's clock, as in production.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pgha_core::clock::Clock;

/// The largest clock-rate error of a node, in parts per million, that the
/// simulation draws (±0.5 %: far beyond what NTP-less server clocks drift,
/// and within what the lock's `FENCE_MARGIN` absorbs at every ttl pgha
/// accepts).
pub const MAX_SKEW_PPM: i64 = 5_000;

/// True time as the DCS server sees it: shared with the in-memory store,
/// moved only by the simulation.
#[derive(Clone, Debug, Default)]
pub struct TrueClock(Arc<AtomicU64>);

impl TrueClock {
    pub fn set(&self, t: Duration) {
        self.0.store(
            u64::try_from(t.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

impl Clock for TrueClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }
}

/// A node's monotonic clock: true time scaled by `1 + ppm / 1e6`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeClock {
    pub ppm: i64,
}

impl NodeClock {
    /// The node's reading at true time `t`.
    pub fn local(self, t: Duration) -> Duration {
        let ns = i128::try_from(t.as_nanos()).unwrap_or(i128::MAX);
        let scaled = ns + (ns * i128::from(self.ppm)).div_euclid(1_000_000);
        Duration::from_nanos(u64::try_from(scaled.max(0)).unwrap_or(u64::MAX))
    }

    /// The first true time at which the node's clock reads `local`.
    pub fn global(self, local: Duration) -> Duration {
        let ns = i128::try_from(local.as_nanos()).unwrap_or(i128::MAX);
        let rate = 1_000_000 + i128::from(self.ppm);
        let t = (ns * 1_000_000 + rate - 1) / rate;
        Duration::from_nanos(u64::try_from(t.max(0)).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_is_the_first_true_time_the_node_clock_reaches_a_reading() {
        for ppm in [-MAX_SKEW_PPM, -1, 0, 1, MAX_SKEW_PPM] {
            let c = NodeClock { ppm };
            for s in [0u64, 1, 30, 3600] {
                let x = Duration::from_secs(s) + Duration::from_nanos(123);
                let t = c.global(x);
                assert!(c.local(t) >= x, "{ppm} {s}");
                assert!(
                    t.is_zero() || c.local(t - Duration::from_nanos(1)) < x,
                    "{ppm} {s}"
                );
            }
        }
        let fast = NodeClock { ppm: 5_000 };
        assert_eq!(
            fast.local(Duration::from_secs(100)),
            Duration::from_millis(100_500)
        );
    }
}
