//! The watchdog as the agent sees it: what to ask the guard to hold, and
//! whether `watchdog.mode: required` lets this node be primary.
//!
//! The guard holds the device (see `crate::guard::watchdog`): it tries when
//! a beat first carries a lock and reports back. Under `required`, a
//! promotion (or a start as primary) waits briefly for that report and does
//! not happen unless the watchdog runs with a timeout the driver confirmed;
//! a failed activation keeps the node out of the race (`unfenced`) until
//! the guard restarts, as Patroni retries only when its configuration
//! changes.

use std::time::Duration;

use pgha_core::clock::Clock;

use super::HaLoop;
use crate::config::WatchdogMode;
use crate::guard::{WatchdogReport, WatchdogWant};

/// A watchdog request `required` mode could not get, and why.
pub(super) type Refused = (WatchdogWant, String);

/// Why a node whose `watchdog.mode` is `required` does not become primary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum WatchdogNotReady {
    #[error("not becoming primary: watchdog.mode is required, but {0}")]
    Timings(crate::config::WatchdogTimeoutError),
    #[error(
        "not becoming primary: watchdog.mode is required and the guard did not report the \
         watchdog active within {0:?}"
    )]
    NoReport(Duration),
    /// The guard's word on the device.
    #[error("not becoming primary: watchdog.mode is required, but the watchdog is not usable: {0}")]
    Unusable(String),
}

/// How long a promotion waits for the guard's watchdog report.
const SETTLE: Duration = Duration::from_secs(3);

impl HaLoop {
    /// The device and timeout for the current timings; `None` when the
    /// mode is off or the timeout cannot fit them (then said why in the log).
    pub(super) fn watchdog_want(&mut self) -> Option<WatchdogWant> {
        let config = &self.config.watchdog;
        if config.mode == WatchdogMode::Off {
            return None;
        }
        match config.timeout(
            self.node.timing().ttl,
            self.node.timing().loop_wait,
            self.node.timing().retry_timeout,
        ) {
            Ok(timeout_s) => {
                self.watchdog_problem = None;
                let want = WatchdogWant {
                    device: config.device.clone(),
                    timeout_s,
                };
                if self
                    .watchdog_refused
                    .as_ref()
                    .is_some_and(|(w, _)| *w != want)
                {
                    // New settings: worth another try.
                    self.watchdog_refused = None;
                }
                Some(want)
            }
            Err(why) => {
                if self.watchdog_problem.as_ref() != Some(&why) {
                    tracing::warn!("watchdog not used: {why}");
                }
                self.watchdog_problem = Some(why);
                None
            }
        }
    }

    /// Why this node could not be fenced now if its agent failed: its guard
    /// is down, or `required` and the watchdog cannot be had.
    pub(super) fn unfenced(&self) -> Option<String> {
        if let Some(why) = self.guard.unfenced(self.clock.now()) {
            return Some(why);
        }
        if self.config.watchdog.mode != WatchdogMode::Required {
            return None;
        }
        if let Some(why) = &self.watchdog_problem {
            return Some(format!("watchdog.mode is required, but {why}"));
        }
        if let Some((_, why)) = &self.watchdog_refused {
            return Some(why.clone());
        }
        match self.guard.watchdog() {
            WatchdogReport::Failed { why } | WatchdogReport::Unverified { why } => Some(format!(
                "watchdog.mode is required, but the watchdog is not usable: {why}"
            )),
            WatchdogReport::Off | WatchdogReport::Active { .. } => None,
        }
    }

    /// Under `required`, waits for the guard to report the watchdog running
    /// with a confirmed timeout; `Err` says why this node must not become
    /// primary now.
    pub(super) async fn watchdog_ready(&mut self) -> Result<(), WatchdogNotReady> {
        if self.config.watchdog.mode != WatchdogMode::Required {
            return Ok(());
        }
        if let Some(why) = &self.watchdog_problem {
            return Err(WatchdogNotReady::Timings(why.clone()));
        }
        let why = match self.guard.settled_watchdog(SETTLE).await {
            WatchdogReport::Active { .. } => return Ok(()),
            // No answer (the guard restarting, say): not this time, but
            // not a verdict on the device either.
            WatchdogReport::Off => return Err(WatchdogNotReady::NoReport(SETTLE)),
            WatchdogReport::Failed { why } | WatchdogReport::Unverified { why } => why,
        };
        // Not retried until the watchdog settings change (as Patroni).
        if let Some(want) = self.watchdog_want() {
            self.watchdog_refused = Some((
                want,
                format!("watchdog.mode is required, but the watchdog is not usable: {why}"),
            ));
        }
        Err(WatchdogNotReady::Unusable(why))
    }
}
