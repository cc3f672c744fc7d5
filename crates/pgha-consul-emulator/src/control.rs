//! Test switches: the emulator's settable clock and its fault injection.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

/// The clock sessions and lock-delays are judged by: real monotonic time
/// plus an offset a test can move forward, so a test can expire sessions
/// without waiting. Blocking queries still wait in real time (the client
/// on the other side of the socket lives in real time).
#[derive(Debug)]
pub struct EmulatorClock {
    start: Instant,
    offset: Mutex<Duration>,
    /// Woken when the offset moves, so the session reaper re-checks.
    pub(crate) moved: Notify,
}

impl EmulatorClock {
    pub(crate) fn new() -> Self {
        EmulatorClock {
            start: Instant::now(),
            offset: Mutex::new(Duration::ZERO),
            moved: Notify::new(),
        }
    }

    /// Time since the emulator started, offset included.
    pub fn now(&self) -> Duration {
        self.start.elapsed() + *lock(&self.offset)
    }

    /// Moves the clock forward by `d`: sessions whose TTL has run out by
    /// then are invalidated at once.
    pub fn advance(&self, d: Duration) {
        *lock(&self.offset) += d;
        self.moved.notify_one();
    }
}

/// What the emulator does with requests, besides answering them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Fault {
    /// Requests are answered normally.
    #[default]
    None,
    /// Requests are accepted and never answered while this lasts (a hung
    /// server); once cleared, waiting requests are answered.
    Hang,
    /// Every request is answered with this status and body without being
    /// applied (`429` rate limiting, `500 No cluster leader`, `503`).
    Status { status: u16, body: String },
}

/// The fault switches of one emulator.
#[derive(Debug)]
pub struct Faults {
    mode: watch::Sender<Fault>,
    /// How many more requests the current `Status` fault applies to
    /// (`None`: until cleared).
    remaining: Mutex<Option<u64>>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            mode: watch::channel(Fault::None).0,
            remaining: Mutex::new(None),
        }
    }
}

impl Faults {
    /// Applies `fault` to every request until changed.
    pub fn set(&self, fault: Fault) {
        *lock(&self.remaining) = None;
        self.mode.send_replace(fault);
    }

    /// Answers the next `n` requests with `status` and `body`, then goes back
    /// to normal.
    pub fn fail_next(&self, n: u64, status: u16, body: &str) {
        *lock(&self.remaining) = Some(n);
        self.mode.send_replace(if n == 0 {
            Fault::None
        } else {
            Fault::Status {
                status,
                body: body.to_string(),
            }
        });
    }

    pub fn clear(&self) {
        self.set(Fault::None);
    }

    pub fn current(&self) -> Fault {
        self.mode.borrow().clone()
    }

    /// What to do with one incoming request: `Some((status, body))` to
    /// answer with instead of applying it. Waits while the server hangs.
    pub(crate) async fn gate(&self) -> Option<(u16, String)> {
        let mut rx = self.mode.subscribe();
        // Bounded only by the fault being cleared or the connection being
        // dropped (the task is then cancelled): that is what a hang is.
        let fault = match rx.wait_for(|f| *f != Fault::Hang).await {
            Ok(f) => f.clone(),
            Err(_) => return None,
        };
        match fault {
            Fault::None | Fault::Hang => None,
            Fault::Status { status, body } => {
                let mut remaining = lock(&self.remaining);
                match remaining.as_mut() {
                    None => Some((status, body)),
                    Some(0) => None,
                    Some(n) => {
                        *n -= 1;
                        if *n == 0 {
                            *remaining = None;
                            self.mode.send_replace(Fault::None);
                        }
                        Some((status, body))
                    }
                }
            }
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain data: a panic elsewhere leaves it usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
