//! The node's status as the loop last saw it: what the REST API serves.
//!
//! The loop publishes a fresh [`NodeStatus`] after every cycle; requests
//! read the latest one and never query PostgreSQL or the DCS themselves,
//! so a health check costs nothing and cannot stall the loop.

use std::sync::Arc;
use std::time::Duration;

use pgha_core::model::{Cluster, DynamicConfig, MemberData, Timing, Unsupported};

use crate::postgres::Observed;

#[derive(Debug, Clone)]
pub struct NodeStatus {
    pub name: String,
    pub scope: String,
    /// The last cluster snapshot read from the DCS.
    pub cluster: Option<Arc<Cluster>>,
    /// Unix time of the last successful DCS read.
    pub dcs_last_seen: Option<i64>,
    pub observed: Option<Observed>,
    /// What this node published as its member key.
    pub member: MemberData,
    /// This node holds the leader lock (per the last snapshot) and its
    /// lifetime has not run out.
    pub holds_lock: bool,
    pub paused: bool,
    pub dynamic: DynamicConfig,
    /// Keys of the cluster's dynamic configuration that pgha refuses (see
    /// `pgha_core::model::dynamic_config::keys`): the cluster runs without
    /// what they ask for, and says so everywhere (`GET /patroni`,
    /// `/metrics`, the log).
    pub unsupported: Vec<Unsupported>,
    pub timing: Timing,
    /// Monotonic time the last cycle ended.
    pub last_cycle: Option<Duration>,
    /// The last decision's reason.
    pub last_reason: String,
    /// Failsafe mode is active here: this primary runs on members'
    /// confirmations instead of the DCS, or this member promised a
    /// primary in failsafe mode not to take the lock
    /// (`failsafe_mode_is_active` in `GET /patroni`).
    pub failsafe_active: bool,
    /// The fence guard runs (a node whose guard stays down cannot be
    /// primary).
    pub fence_guard_up: bool,
    /// While this node holds the leader lock: how long it had left at the
    /// end of the last cycle (before another node could take it).
    pub lock_left: Option<Duration>,
    /// How long this node's last promotion took, from taking the lock to
    /// the end of the promotion job (`pg_ctl promote` and the checkpoint
    /// after it); `None` if it never promoted since it started.
    pub last_promotion: Option<Duration>,
}

impl NodeStatus {
    pub fn initial(name: &str, scope: &str) -> Self {
        NodeStatus {
            name: name.into(),
            scope: scope.into(),
            cluster: None,
            dcs_last_seen: None,
            observed: None,
            member: MemberData::default(),
            holds_lock: false,
            paused: false,
            dynamic: DynamicConfig::new(),
            unsupported: Vec::new(),
            timing: Timing::default(),
            last_cycle: None,
            last_reason: "starting".into(),
            failsafe_active: false,
            fence_guard_up: false,
            lock_left: None,
            last_promotion: None,
        }
    }

    /// PostgreSQL answers queries.
    pub fn pg_running(&self) -> bool {
        self.observed.as_ref().is_some_and(|o| o.db.is_some())
    }

    pub fn is_primary(&self) -> bool {
        self.observed
            .as_ref()
            .and_then(|o| o.db.as_ref())
            .is_some_and(|d| !d.in_recovery)
    }

    /// A replica the `sync` key names while synchronous mode is on: it
    /// holds every acknowledged commit (`/sync` health check,
    /// `sync_standby` in `GET /patroni`).
    pub fn is_sync_standby(&self) -> bool {
        matches!(
            self.dynamic.sync_settings().mode,
            pgha_core::ha::SyncMode::On { .. }
        ) && self.named_in_sync_key()
    }

    /// A replica the `sync` key names as a voter in quorum commit mode
    /// (`/quorum` health check, `quorum_standby` in `GET /patroni`).
    pub fn is_quorum_standby(&self) -> bool {
        matches!(
            self.dynamic.sync_settings().mode,
            pgha_core::ha::SyncMode::Quorum { .. }
        ) && self.named_in_sync_key()
    }

    fn named_in_sync_key(&self) -> bool {
        self.is_replica()
            && self
                .cluster
                .as_ref()
                .and_then(|c| c.sync.as_ref())
                .is_some_and(|k| k.value.is_standby(&self.name))
    }

    /// The lock holder of a standby cluster, replicating from its source
    /// (`/standby-leader`, role `standby_leader`).
    pub fn is_standby_leader(&self) -> bool {
        self.holds_lock && self.is_replica() && self.dynamic.standby_cluster().is_some()
    }

    pub fn is_replica(&self) -> bool {
        self.observed
            .as_ref()
            .and_then(|o| o.db.as_ref())
            .is_some_and(|d| d.in_recovery)
    }
}
