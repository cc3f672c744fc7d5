//! The in-process fence: stops PostgreSQL when the leader lock's lifetime
//! runs out without a renewal, whatever the HA loop is doing.
//!
//! The loop already demotes when renewing fails; the fence is the second
//! line for a loop that is stuck (a hung syscall, a slow job, a bug): it is
//! its own task, armed with the deadline of the last successful lock call
//! (send time + promised lifetime, on the monotonic clock), and at
//! `deadline - FENCE_MARGIN` it stops PostgreSQL immediately (SIGQUIT,
//! then SIGKILL: the guard's [`stop_now`]), a standby too, since with the
//! lock held it may be in the middle of a promotion. A renewal re-arms it;
//! releasing the lock disarms it.
//!
//! The same deadlines go to the fence guard process ([`crate::guard`]),
//! which covers what this task cannot: the agent's process dying or freezing.

use std::sync::Arc;
use std::time::Duration;

use pgha_core::clock::Clock;
use pgha_core::ha::FENCE_MARGIN;
use tokio::sync::watch;

use crate::guard::stop::{Stopped, Target, stop_now};
use crate::guard::{GuardInput, WatchdogWant};
use crate::postgres::PgCtl;

/// The fence's handle: where the loop reports each new lock deadline.
#[derive(Debug, Clone)]
pub struct Fence {
    deadline: Arc<watch::Sender<Option<Duration>>>,
    /// What the fence guard process is told (deadline and maintenance mode).
    guard: Arc<watch::Sender<GuardInput>>,
}

impl Fence {
    /// Starts the fence task for the PostgreSQL in `ctl.data_dir`.
    pub fn start(ctl: PgCtl, clock: Arc<dyn Clock>) -> Self {
        let (tx, rx) = watch::channel(None);
        tokio::spawn(run(rx, ctl, clock));
        Fence {
            deadline: Arc::new(tx),
            guard: Arc::new(watch::channel(GuardInput::default()).0),
        }
    }

    /// The lock is ours until `deadline` (monotonic).
    pub fn arm(&self, deadline: Duration) {
        self.deadline.send_replace(Some(deadline));
        self.guard
            .send_if_modified(|g| g.deadline.replace(deadline) != Some(deadline));
    }

    /// We no longer hold the lock (released, or PostgreSQL is not primary).
    pub fn disarm(&self) {
        self.deadline.send_replace(None);
        self.guard.send_if_modified(|g| g.deadline.take().is_some());
    }

    /// Maintenance mode on or off, as just read from the cluster: the guard
    /// touches nothing while paused, nor before it was told.
    pub fn set_paused(&self, paused: bool) {
        self.guard.send_if_modified(|g| {
            let changed = g.paused != paused || !g.known;
            g.paused = paused;
            g.known = true;
            changed
        });
    }

    /// The watchdog the guard holds while the lock is held (`None`: none).
    pub fn set_watchdog(&self, want: Option<WatchdogWant>) {
        self.guard.send_if_modified(|g| {
            let changed = g.watchdog != want;
            g.watchdog = want;
            changed
        });
    }

    /// What the fence guard process must enforce, as it changes.
    pub fn guard_input(&self) -> watch::Receiver<GuardInput> {
        self.guard.subscribe()
    }
}

async fn run(mut rx: watch::Receiver<Option<Duration>>, ctl: PgCtl, clock: Arc<dyn Clock>) {
    loop {
        let deadline = *rx.borrow_and_update();
        let Some(deadline) = deadline else {
            if rx.changed().await.is_err() {
                return;
            }
            continue;
        };
        let fire_at = deadline.saturating_sub(FENCE_MARGIN);
        let wait = fire_at.saturating_sub(clock.now());
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
            _ = tokio::time::sleep(wait) => {}
        }
        if *rx.borrow() != Some(deadline) {
            continue;
        }
        // The same stop as the guard's: SIGQUIT, then SIGKILL to the
        // postmaster and its children. Any postmaster, standby or not: the
        // lock is held, so a standby may be in the middle of a promotion.
        let left = deadline.saturating_sub(clock.now());
        match stop_now(&ctl.data_dir, Target::Any).await {
            Stopped::Stopped { pid, killed } => tracing::error!(
                "FENCE: the leader lock may expire in {left:?} and was not renewed; stopped PostgreSQL (postmaster {pid}{})",
                if killed { ", killed" } else { "" }
            ),
            Stopped::StillRunning(pid) => tracing::error!(
                "FENCE: the leader lock may expire in {left:?}; postmaster {pid} survived SIGQUIT and SIGKILL"
            ),
            Stopped::NotRunning | Stopped::Replica(_) => {}
        }
        // Fired for this deadline; wait for the next one.
        rx.mark_unchanged();
        if rx.changed().await.is_err() {
            return;
        }
    }
}
