//! What this node publishes as its member key, field for field as Patroni 4.

use pgha_core::ha::{DataDir, Job};
use pgha_core::model::member::{PGHA_VERSION_FIELD, ScheduledRestart};
use pgha_core::model::{Cluster, MemberData, PATRONI_COMPAT_VERSION, PGHA_VERSION, PgState, Role};
use serde_json::{Map, Value, json};

use super::{HaLoop, replication};
use crate::postgres::{Observed, files};

impl HaLoop {
    /// The member key for what was observed (`cluster`: to tell whether a
    /// replica streams from the current leader).
    pub(super) fn member_data(&self, o: &Observed, cluster: Option<&Cluster>) -> MemberData {
        let db = o.db.as_ref();
        let mut data = MemberData {
            conn_url: Some(self.config.conn_url()),
            api_url: Some(self.config.api_url.clone()),
            state: Some(self.pg_state(o)),
            role: Some(self.role(o)),
            version: Some(PATRONI_COMPAT_VERSION.to_string()),
            tags: self.config.tags.published(),
            ..Default::default()
        };
        if db.is_none() {
            // Stopped: where its WAL ends, so that a node with less WAL does
            // not win the leader race while this one is away.
            if let Some(cd) = &o.controldata {
                data.xlog_location = cd.checkpoint_lsn;
                data.timeline = Some(cd.timeline);
            }
        }
        if let Some(d) = db {
            data.xlog_location = d.wal_position();
            data.timeline = d.timeline;
            if d.in_recovery {
                data.replay_lsn = d.replay_lsn;
                data.receive_lsn = d.receive_lsn;
                data.replication_state = replication::state(d, cluster, self.replicate_from());
            }
            if !d.pending_restart.is_empty() {
                data.pending_restart = Some(true);
                data.pending_restart_reason = Some(self.pending_restart_reason(&d.pending_restart));
            }
        }
        if (self.node.memory().checkpoint_pending || standby_restartpoint_pending(o))
            && self.holds_lock()
        {
            data.checkpoint_after_promote = Some(false);
        }
        if self.dynamic.pause() {
            data.pause = Some(true);
        }
        if self.node.takes_lock_back(&self.settings()) {
            data.extra.insert(
                pgha_core::ha::failsafe::TAKEBACK_FIELD.into(),
                Value::Bool(true),
            );
        }
        if let Some(leader) = self.failsafe.witness().and_then(|w| w.leader) {
            data.extra.insert(
                pgha_core::ha::failsafe::LEADER_FIELD.into(),
                Value::String(leader),
            );
        }
        if let Some(r) = &self.scheduled_restart {
            data.scheduled_restart = Some(ScheduledRestart {
                schedule: r
                    .schedule_text
                    .clone()
                    .or_else(|| r.schedule.map(|t| t.to_string())),
                postgres_version: r.postgres_version.clone(),
                extra: Map::new(),
            });
        }
        self.publish_streaming(&mut data);
        data.extra
            .insert(PGHA_VERSION_FIELD.into(), PGHA_VERSION.into());
        data
    }

    /// `{"max_connections": {"old_value": "100", "new_value": "200"}}`, as Patroni reports it.
    fn pending_restart_reason(&self, pending: &[(String, String)]) -> Value {
        let wanted = files::effective_parameters(&self.config.postgresql, &self.dynamic);
        let mut out = Map::new();
        for (name, running) in pending {
            out.insert(
                name.clone(),
                json!({"old_value": running, "new_value": wanted.get(name).cloned().unwrap_or_default()}),
            );
        }
        Value::Object(out)
    }

    pub(super) fn pg_state(&self, o: &Observed) -> PgState {
        match &self.node.memory().job {
            Some(Job::Bootstrap) => return PgState::InitializingNewCluster,
            Some(Job::Clone { .. } | Job::Reinitialize { .. }) => return PgState::CreatingReplica,
            Some(Job::Start { .. }) if o.db.is_none() => return PgState::Starting,
            Some(Job::Restart) if o.db.is_none() => return PgState::Restarting,
            Some(Job::Stop) => return PgState::Stopping,
            _ => {}
        }
        if o.db.is_some() {
            PgState::Running
        } else if o.postmaster.is_some() {
            PgState::Starting
        } else if self.node.memory().start_failed.is_some() {
            PgState::StartFailed
        } else if self.node.memory().expect_running {
            PgState::Crashed
        } else {
            PgState::Stopped
        }
    }

    pub(super) fn role(&self, o: &Observed) -> Role {
        match (&o.db, &o.data_dir) {
            (Some(d), _) => {
                if d.in_recovery && self.holds_lock() && self.dynamic.standby_cluster().is_some() {
                    Role::StandbyLeader
                } else if d.in_recovery {
                    Role::Replica
                } else {
                    Role::Primary
                }
            }
            (None, DataDir::Empty) => Role::Uninitialized,
            (None, _) if self.node.memory().demoted => Role::Demoted,
            (
                None,
                DataDir::Initialized {
                    was_primary: true, ..
                },
            ) => Role::Primary,
            (None, _) => Role::Replica,
        }
    }
}

/// A standby leader replaying a timeline its control file does not name
/// yet (it followed its source onto a new timeline, or was rewound onto
/// it): pg_rewind against it would read the old timeline and find nothing
/// to rewind. Its replicas wait (`checkpoint_after_promote: false`, the
/// rule a new primary's replicas follow) until a restartpoint
/// ([`HaLoop::leader_duties`] asks for one) records the new timeline.
pub(super) fn standby_restartpoint_pending(o: &Observed) -> bool {
    let (Some(db), Some(cd)) = (&o.db, &o.controldata) else {
        return false;
    };
    db.in_recovery
        && db
            .timeline
            .is_some_and(|tl| cd.timeline.max(cd.min_recovery_timeline) < tl)
}
