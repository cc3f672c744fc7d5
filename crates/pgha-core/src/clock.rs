//! Time as pgha's logic sees it.
//!
//! Every deadline in pgha (lease expiry, the leader's renewal deadline) is
//! measured on a monotonic clock, never on wall-clock time, which can jump.
//! The [`Clock`] trait lets tests and simulations drive that clock by hand.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// A monotonic clock: `now()` never goes backwards.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Time since the clock's origin.
    fn now(&self) -> Duration;

    /// For clocks that only move when told to: a receiver that sees every
    /// move, so sleepers can re-check. `None` for clocks that move by themselves.
    fn subscribe(&self) -> Option<watch::Receiver<Duration>> {
        None
    }
}

/// The real monotonic clock (tokio's, so paused-time tests also drive it).
#[derive(Debug, Clone)]
pub struct MonotonicClock {
    origin: tokio::time::Instant,
}

impl MonotonicClock {
    pub fn new() -> Self {
        MonotonicClock {
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that moves only when [`ManualClock::advance`] is called.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<watch::Sender<Duration>>,
}

impl ManualClock {
    pub fn new() -> Self {
        ManualClock {
            now: Arc::new(watch::Sender::new(Duration::ZERO)),
        }
    }

    /// Moves the clock forward and wakes everything waiting on it.
    pub fn advance(&self, by: Duration) {
        self.now.send_modify(|t| *t += by);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        *self.now.borrow()
    }

    fn subscribe(&self) -> Option<watch::Receiver<Duration>> {
        Some(self.now.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new();
        assert_eq!(c.now(), Duration::ZERO);
        let mut rx = c.subscribe().unwrap();
        c.advance(Duration::from_secs(3));
        assert_eq!(c.now(), Duration::from_secs(3));
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), Duration::from_secs(3));
    }
}
