//! Fault switches and the emulator's clock.
//!
//! Every switch is shared with the running server and takes effect on the
//! next request (hang and the watch-stream switches also on requests
//! already in progress).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain data: a panic elsewhere leaves it usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The fault switches of one emulator.
#[derive(Debug)]
pub struct Faults {
    hang: watch::Sender<bool>,
    fail_all: Mutex<Option<u16>>,
    fail_next: Mutex<(u32, u16)>,
    gone_next_watches: AtomicU32,
    drop_watches: watch::Sender<u64>,
    latency: Mutex<Duration>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            hang: watch::channel(false).0,
            fail_all: Mutex::new(None),
            fail_next: Mutex::new((0, 500)),
            gone_next_watches: AtomicU32::new(0),
            drop_watches: watch::channel(0).0,
            latency: Mutex::new(Duration::ZERO),
        }
    }
}

impl Faults {
    /// While on, requests are accepted and read but never answered, and
    /// open watch streams send nothing (a stuck apiserver). Turning it off
    /// lets them all proceed.
    pub fn set_hang(&self, on: bool) {
        self.hang.send_replace(on);
    }

    pub fn hanging(&self) -> bool {
        *self.hang.borrow()
    }

    /// Resolves when the hang switch is (or turns) off.
    pub async fn wait_unhung(&self) {
        let mut rx = self.hang.subscribe();
        // Bounded by the switch: ends as soon as it is off or dropped.
        while *rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Every request is answered with `code` (429, 500, 503, 504 ...; 429
    /// and 503 carry `Retry-After: 1`) until cleared with `None`.
    pub fn set_fail_all(&self, code: Option<u16>) {
        *lock(&self.fail_all) = code;
    }

    /// The next `n` requests are answered with `code`.
    pub fn fail_next(&self, n: u32, code: u16) {
        *lock(&self.fail_next) = (n, code);
    }

    /// The status code the current request must fail with, if any.
    pub(crate) fn take_failure(&self) -> Option<u16> {
        if let Some(code) = *lock(&self.fail_all) {
            return Some(code);
        }
        let mut next = lock(&self.fail_next);
        if next.0 > 0 {
            next.0 -= 1;
            return Some(next.1);
        }
        None
    }

    /// The next `n` watch requests are answered with a `410 Gone` error
    /// event, whatever version they start from.
    pub fn gone_next_watches(&self, n: u32) {
        self.gone_next_watches.store(n, Ordering::SeqCst);
    }

    pub(crate) fn take_gone(&self) -> bool {
        self.gone_next_watches
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Breaks every open watch stream now: the connection is closed in the
    /// middle of the chunked response, as when a proxy or the apiserver
    /// dies.
    pub fn drop_watch_streams(&self) {
        self.drop_watches.send_modify(|g| *g += 1);
    }

    pub(crate) fn watch_drops(&self) -> watch::Receiver<u64> {
        self.drop_watches.subscribe()
    }

    pub(crate) fn hang_switch(&self) -> watch::Receiver<bool> {
        self.hang.subscribe()
    }

    /// Delay before every answer.
    pub fn set_latency(&self, d: Duration) {
        *lock(&self.latency) = d;
    }

    pub fn latency(&self) -> Duration {
        *lock(&self.latency)
    }

    /// Clears every switch.
    pub fn clear(&self) {
        self.set_hang(false);
        self.set_fail_all(None);
        self.fail_next(0, 500);
        self.gone_next_watches(0);
        self.set_latency(Duration::ZERO);
    }
}

/// The emulator's wall clock: the system clock plus a settable offset. It
/// stamps `creationTimestamp` and decides when the change history is
/// compacted (older than the history window), so moving it forward makes
/// old watch positions expire.
#[derive(Debug, Default)]
pub struct Clock {
    offset_ms: Mutex<i64>,
}

impl Clock {
    pub fn now(&self) -> SystemTime {
        let off = *lock(&self.offset_ms);
        let base = SystemTime::now();
        if off >= 0 {
            base + Duration::from_millis(off.unsigned_abs())
        } else {
            base.checked_sub(Duration::from_millis(off.unsigned_abs()))
                .unwrap_or(SystemTime::UNIX_EPOCH)
        }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let mut off = lock(&self.offset_ms);
        *off = off.saturating_add(ms);
    }

    /// Sets the offset from the system clock (may be negative).
    pub fn set_offset_ms(&self, ms: i64) {
        *lock(&self.offset_ms) = ms;
    }
}
