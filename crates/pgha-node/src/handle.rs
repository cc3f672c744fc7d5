//! [`NodeHandle`]: how the rest of a program talks to a running node.
//!
//! The handle is cheap to clone and never blocks the loop: status is the
//! snapshot the loop published after its last cycle, and requests are
//! queued for the loop, which answers when it has acted. Every wait is
//! bounded by the caller's `wait`.

use std::sync::Arc;
use std::time::Duration;

use pgha_core::clock::Clock;
use tokio::sync::{mpsc, oneshot, watch};

use crate::command::{Command, ReinitializeAnswer, RestartAnswer, RestartRequest};
use crate::config::NodeConfig;
use crate::status::NodeStatus;

/// Why a request got no answer from the loop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AskError {
    /// The node is not running (it stopped, or never started): nothing
    /// was asked.
    #[error("the HA loop is not running")]
    NotRunning,
    /// The loop stopped before it answered.
    #[error("the HA loop dropped the request")]
    Dropped,
    /// No answer within the wait; the operation may still be in progress.
    #[error("no result within {0:?}; the operation may still be in progress")]
    NoAnswer(Duration),
}

/// A running node's status and requests. See the module documentation.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    status: watch::Receiver<Arc<NodeStatus>>,
    commands: mpsc::Sender<Command>,
    clock: Arc<dyn Clock>,
    /// The node's PostgreSQL, for [`NodeHandle::live_status`].
    postgres: Option<Arc<crate::postgres::Postgres>>,
    /// Failsafe mode's promises (`POST /failsafe`).
    failsafe: Option<crate::failsafe::FailsafeGate>,
}

impl NodeHandle {
    /// A handle over these channels. [`Node::new`](crate::Node::new) makes
    /// the real one; a test of a REST server makes one whose commands it
    /// answers itself.
    pub fn new(
        status: watch::Receiver<Arc<NodeStatus>>,
        commands: mpsc::Sender<Command>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        NodeHandle {
            status,
            commands,
            clock,
            postgres: None,
            failsafe: None,
        }
    }

    /// The same handle, able to read the node's PostgreSQL live.
    pub(crate) fn with_postgres(mut self, postgres: Arc<crate::postgres::Postgres>) -> Self {
        self.postgres = Some(postgres);
        self
    }

    /// The same handle, answering `POST /failsafe` through `gate`.
    pub fn with_failsafe(mut self, gate: crate::failsafe::FailsafeGate) -> Self {
        self.failsafe = Some(gate);
        self
    }

    /// `POST /failsafe`: a primary in failsafe mode asks this member to
    /// confirm it; a confirmation is a promise not to take the leader
    /// lock for the sender's window. A handle without a gate (a test's)
    /// confirms nothing.
    pub fn confirm_failsafe(
        &self,
        ping: &pgha_core::ha::failsafe::FailsafePing,
    ) -> Result<(), crate::failsafe::PingRefused> {
        match &self.failsafe {
            Some(gate) => gate.confirm(ping),
            None => Err(crate::failsafe::PingRefused::Disabled),
        }
    }

    /// The last cycle's status with PostgreSQL's state read now (within
    /// `wait`; the snapshot when it does not answer in time). Peers racing
    /// for the lock compare WAL positions: a snapshot up to `loop_wait`
    /// old can hide WAL a standby received since — in quorum mode, commits
    /// it acknowledged — and let a node behind it win (Patroni reads
    /// PostgreSQL on every `GET /patroni` too).
    pub async fn live_status(&self, wait: Duration) -> Arc<NodeStatus> {
        let status = self.status();
        let Some(pg) = &self.postgres else {
            return status;
        };
        if status
            .observed
            .as_ref()
            .and_then(|o| o.db.as_ref())
            .is_none()
        {
            return status;
        }
        match tokio::time::timeout(wait, pg.state()).await {
            Ok(Ok(db)) => {
                let mut fresh = (*status).clone();
                if let Some(o) = fresh.observed.as_mut() {
                    o.db = Some(db);
                }
                Arc::new(fresh)
            }
            _ => status,
        }
    }

    /// The status the loop published after its last cycle.
    pub fn status(&self) -> Arc<NodeStatus> {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status the loop publishes.
    pub fn watch_status(&self) -> watch::Receiver<Arc<NodeStatus>> {
        self.status.clone()
    }

    /// The node's monotonic "now", the clock [`NodeStatus::last_cycle`] is on.
    pub fn now(&self) -> Duration {
        self.clock.now()
    }

    /// Restarts PostgreSQL now (answered when done) or at `request.schedule`.
    pub async fn restart(
        &self,
        request: RestartRequest,
        wait: Duration,
    ) -> Result<RestartAnswer, AskError> {
        self.ask(|reply| Command::Restart { request, reply }, wait)
            .await
    }

    /// Drops a scheduled restart; answers whether there was one.
    pub async fn cancel_restart(&self, wait: Duration) -> Result<bool, AskError> {
        self.ask(|reply| Command::CancelRestart { reply }, wait)
            .await
    }

    /// Wipes this replica's data directory and clones it again (from the
    /// leader when `from_leader`, else from the best source); `force` stops
    /// a running job first.
    pub async fn reinitialize(
        &self,
        force: bool,
        from_leader: bool,
        wait: Duration,
    ) -> Result<ReinitializeAnswer, AskError> {
        self.ask(
            |reply| Command::Reinitialize {
                force,
                from_leader,
                reply,
            },
            wait,
        )
        .await
    }

    /// Hands the node a new configuration, adopted at the start of its next
    /// cycle. Parts that cannot change while it runs are kept (and logged);
    /// a configuration that fails [`NodeConfig::check`] is refused whole.
    pub async fn reload(&self, config: NodeConfig) -> Result<(), AskError> {
        self.commands
            .send(Command::Reload(Box::new(config)))
            .await
            .map_err(|_| AskError::NotRunning)
    }

    /// Runs a cycle now (the DCS changed under the node: a switchover, a
    /// configuration edit). Never waits; a full queue already means a cycle
    /// is coming.
    pub fn wake_up(&self) {
        let _ = self.commands.try_send(Command::Wakeup);
    }

    async fn ask<A>(
        &self,
        command: impl FnOnce(oneshot::Sender<A>) -> Command,
        wait: Duration,
    ) -> Result<A, AskError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(command(tx))
            .await
            .map_err(|_| AskError::NotRunning)?;
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(AskError::Dropped),
            Err(_) => Err(AskError::NoAnswer(wait)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgha_core::clock::ManualClock;

    fn handle() -> (NodeHandle, mpsc::Receiver<Command>) {
        let (_status_tx, status) = watch::channel(Arc::new(NodeStatus::initial("n1", "demo")));
        let (tx, rx) = mpsc::channel(4);
        (
            NodeHandle::new(status, tx, Arc::new(ManualClock::new())),
            rx,
        )
    }

    #[tokio::test]
    async fn every_way_a_request_goes_unanswered_is_told_apart() {
        let (node, mut loop_side) = handle();
        // The loop answers.
        let answering = tokio::spawn(async move {
            match loop_side.recv().await {
                Some(Command::CancelRestart { reply }) => {
                    let _ = reply.send(true);
                }
                other => panic!("unexpected {other:?}"),
            }
            // Takes the next request and drops it unanswered.
            let dropped = loop_side.recv().await;
            drop(dropped);
            // Holds the next one past the caller's wait.
            let held = loop_side.recv().await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(held);
            loop_side
        });
        let wait = Duration::from_millis(100);
        assert_eq!(node.cancel_restart(wait).await, Ok(true));
        assert_eq!(node.cancel_restart(wait).await, Err(AskError::Dropped));
        assert_eq!(
            node.reinitialize(false, false, wait).await,
            Err(AskError::NoAnswer(wait))
        );
        // The loop is gone: nothing is asked.
        drop(answering.await.unwrap());
        assert_eq!(
            node.restart(RestartRequest::default(), wait).await,
            Err(AskError::NotRunning)
        );
        assert_eq!(node.status().last_reason, "starting");
    }
}
