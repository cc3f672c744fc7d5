//! A PostgreSQL HA node as a library.
//!
//! [`Node`] runs one node: every cycle it observes the DCS and PostgreSQL,
//! asks the state machine ([`pgha_core::ha::HaNode`]) what to do, carries
//! it out (long operations as background jobs), and publishes the node's
//! status. The leader lock's lifetime is enforced twice beside the loop:
//! by the in-process [`fence`] and by the fence [`guard`], a process of
//! its own that stops PostgreSQL if this process dies or freezes.
//!
//! The node serves nothing and parses nothing: it takes a [`NodeConfig`]
//! in pgha's own types, a [`Dcs`] the caller built (`pgha-dcs` builds one
//! from a configuration section), and a [`GuardMode`] saying which program
//! runs the guard. What it offers back is a [`NodeHandle`]: the status the
//! loop published last, and requests (restart, reinitialize, reload).
//!
//! ```no_run
//! # async fn example(config: pgha_node::NodeConfig, dcs: std::sync::Arc<dyn pgha_core::dcs::Dcs>) {
//! use pgha_node::{GuardMode, Node};
//! // A program that runs `guard::daemon::run` (see examples/embed_node.rs).
//! let guard = GuardMode::Program {
//!     program: "/usr/libexec/myservice/guard".into(),
//!     args: vec!["--data-dir".into(), "/var/lib/postgresql/15/main".into()],
//! };
//! let (node, handle) = Node::new(config, dcs, guard);
//! let (stop, stopped) = tokio::sync::watch::channel(false);
//! let running = tokio::spawn(node.run(stopped));
//! // ... handle.status().is_primary() ...
//! let _ = stop.send(true); // stops PostgreSQL, gives the lock up
//! let _ = running.await;
//! # }
//! ```

mod callbacks;
pub mod command;
pub mod config;
pub mod failsafe;
mod fence;
pub mod guard;
mod ha_loop;
mod handle;
pub mod peers;
pub mod service_notify;
pub mod status;
pub mod unique_name;

use std::sync::Arc;

use pgha_core::clock::MonotonicClock;
use pgha_core::dcs::Dcs;
use pgha_rest_client::RestClient;
use tokio::sync::{mpsc, watch};

use command::Command;

/// PostgreSQL control; its [`PgSettings`](postgres::PgSettings) and
/// [`HostPort`](postgres::address::HostPort) are part of [`NodeConfig`].
pub use pgha_postgres as postgres;

pub use command::{ReinitializeAnswer, RestartAnswer, RestartRequest};
pub use config::{NodeConfig, NodeConfigError, PostgresqlHa, WatchdogConfig, WatchdogMode};
pub use guard::GuardMode;
pub use handle::{AskError, NodeHandle};
pub use status::NodeStatus;
pub use unique_name::NameTaken;

/// Why a node stopped other than by its shutdown signal. Each is for a
/// person to fix; restarting the node unchanged would stop it again.
#[derive(Debug, thiserror::Error)]
pub enum NodeExit {
    /// The configuration contradicts itself.
    #[error(transparent)]
    Config(#[from] NodeConfigError),
    /// The process runs as root; PostgreSQL refuses to.
    #[error("the node must not run as root: PostgreSQL refuses to run as root")]
    Root,
    /// Another live node uses this node's name.
    #[error(transparent)]
    NameTaken(#[from] NameTaken),
    /// A condition the node must not run under (its data directory belongs
    /// to another cluster, ...): why.
    #[error("refusing to go on: {0}")]
    Refused(String),
}

/// One node, not yet running. See the crate documentation.
#[derive(Debug)]
pub struct Node {
    config: NodeConfig,
    dcs: Arc<dyn Dcs>,
    guard: GuardMode,
    clock: Arc<MonotonicClock>,
    status: watch::Sender<Arc<NodeStatus>>,
    commands: mpsc::Receiver<Command>,
    /// [`Node::check_name`] passed.
    name_checked: bool,
    /// Failsafe mode's promises, shared with the handle.
    failsafe: failsafe::FailsafeGate,
}

impl Node {
    /// A node and its handle. Nothing runs, and nothing is touched, until
    /// [`Node::run`].
    pub fn new(config: NodeConfig, dcs: Arc<dyn Dcs>, guard: GuardMode) -> (Node, NodeHandle) {
        let clock = Arc::new(MonotonicClock::new());
        let (status_tx, status_rx) =
            watch::channel(Arc::new(NodeStatus::initial(&config.name, config.scope())));
        let (commands_tx, commands_rx) = mpsc::channel(16);
        // A connection of its own for the REST API's live reads: never
        // queued behind the loop's queries.
        let live = Arc::new(postgres::Postgres::new(Arc::new(config.postgresql.clone())));
        // Failsafe mode as last known here: a restarted agent keeps the
        // promise it may have given before.
        let dynamic = postgres::files::read_dynamic_cache(&config.postgresql.data_dir)
            .or_else(|| config.bootstrap.clone())
            .unwrap_or_default();
        let failsafe = failsafe::FailsafeGate::new(
            clock.clone(),
            dynamic.failsafe_mode(),
            dynamic.timing().0.ttl,
        );
        let handle = NodeHandle::new(status_rx, commands_tx, clock.clone())
            .with_postgres(live)
            .with_failsafe(failsafe.clone());
        let node = Node {
            config,
            dcs,
            guard,
            clock,
            status: status_tx,
            commands: commands_rx,
            name_checked: false,
            failsafe,
        };
        (node, handle)
    }

    /// Fails if another live node uses this node's name (this waits for
    /// the DCS to answer). [`Node::run`] checks it unless this was called
    /// first: a program that serves this node's REST API should call it
    /// before it binds the API's address, or a member key that differs
    /// from this node's only in its PostgreSQL address would be taken for
    /// a live other node (its API, at this node's address, answers).
    pub async fn check_name(&mut self) -> Result<(), NodeExit> {
        let peers = RestClient::new(
            "pgha",
            self.config.client_auth.clone(),
            &self.config.client_tls,
        );
        unique_name::ensure_unique_name(
            &self.config,
            self.dcs.as_ref(),
            &peers,
            self.config.initial_timing(),
        )
        .await?;
        self.name_checked = true;
        Ok(())
    }

    /// Runs the node until `shutdown` turns true (then PostgreSQL is
    /// stopped and the leader lock given up, unless the cluster is paused)
    /// or until it must refuse to go on.
    ///
    /// Before anything is started: the configuration is checked, the
    /// process must not be root, and the member name must not be in use
    /// by another live node ([`Node::check_name`]). Then the fence and the
    /// guard start, and the loop.
    pub async fn run(mut self, shutdown: watch::Receiver<bool>) -> Result<(), NodeExit> {
        self.config.check()?;
        if nix::unistd::geteuid().is_root() {
            return Err(NodeExit::Root);
        }
        if !self.name_checked {
            self.check_name().await?;
        }
        ha_loop::HaLoop::new(
            Arc::new(self.config),
            self.dcs,
            self.guard,
            self.clock,
            self.status,
            self.failsafe,
        )
        .run(shutdown, self.commands)
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An embedder runs the node with `tokio::spawn`: its future must be Send.
    #[test]
    fn the_node_can_be_spawned() {
        fn spawnable<F: std::future::Future + Send + 'static>(_: &F) {}
        let store = pgha_core::dcs::memory::MemoryStore::new();
        let pg = postgres::PgSettings::new(
            "n1",
            "demo",
            "/nonexistent/data".into(),
            postgres::address::HostPort {
                host: "127.0.0.1".into(),
                port: 5432,
            },
        );
        let config = NodeConfig::new(
            "n1",
            "demo",
            pg,
            "http://127.0.0.1:8008/patroni",
            pgha_core::model::DynamicConfig::new(),
        );
        assert_eq!(config.check(), Ok(()));
        let dcs = Arc::new(store.client(config.layout.clone(), "n1", config.initial_timing()));
        let (node, _handle) = Node::new(config, dcs, GuardMode::CurrentExe { args: Vec::new() });
        let (_stop, stopped) = watch::channel(false);
        spawnable(&node.run(stopped));
    }
}
