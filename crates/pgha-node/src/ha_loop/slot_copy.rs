//! A replica's copies of the permanent logical slots: copied from the
//! leader with a restart ([`pgha_postgres::slot_copy`]), and replaced when
//! the WAL a copy starts from is gone here. What to copy and how far to
//! advance is decided by [`pgha_core::ha::slots::replica_plan`].

use pgha_core::ha::Job;
use pgha_core::ha::slots::SlotChange;
use pgha_core::model::Cluster;
use pgha_core::model::slots::{SlotKind, SlotsConfig};

use super::HaLoop;
use crate::postgres::{Observed, PgError, ShutdownMode};

/// How PostgreSQL says an advance needs WAL this node no longer has.
const WAL_GONE: &str = "has already been removed";

impl HaLoop {
    /// Copies the logical slots `names` from the leader and restarts
    /// PostgreSQL to load them, as a background job. Copies only into a
    /// replica running with `wal_level = logical` (a logical slot makes
    /// PostgreSQL refuse to start otherwise), and only the slots whose WAL
    /// from their `restart_lsn` on is still here. Returns what stops a
    /// copy now, to report.
    pub(super) async fn copy_logical_slots(
        &mut self,
        cluster: &Cluster,
        o: &Observed,
        names: &[String],
    ) -> Vec<String> {
        if self.job.is_some() {
            return Vec::new();
        }
        let Some(leader) = cluster.leader_name().filter(|l| *l != self.config.name) else {
            return Vec::new();
        };
        let wal_level_pending =
            o.db.as_ref()
                .is_some_and(|d| d.pending_restart.iter().any(|(k, _)| k == "wal_level"));
        let running = self
            .pg
            .query_texts("SELECT current_setting('wal_level')")
            .await;
        if wal_level_pending || running.as_deref().ok() != Some(&["logical".to_string()][..]) {
            return vec![format!(
                "logical slots {names:?} are not copied to this replica: it does not run with wal_level = logical"
            )];
        }
        let Ok(source) = self.upstream(Some(cluster), leader) else {
            return vec![format!(
                "logical slots {names:?} not copied: the leader {leader} publishes no usable address"
            )];
        };
        let oldest = match self.pg.oldest_wal().await {
            Ok(lsn) => lsn,
            Err(e) => return vec![format!("logical slots {names:?} not copied: {e}")],
        };
        let mut problems = Vec::new();
        let mut states = Vec::new();
        for name in names {
            match self.pg.read_slot_state(&source, name).await {
                Ok(state) if state.fits(oldest) => states.push(state),
                Ok(state) => problems.push(format!(
                    "logical slot {name} not copied from {leader} yet: it starts at {}, before this replica's oldest WAL ({}); copied once its consumer has moved past it",
                    lsn_text(state.restart_lsn()),
                    lsn_text(Some(oldest)),
                )),
                Err(e) => problems.push(format!(
                    "cannot read logical slot {name} from {leader}: {e}"
                )),
            }
        }
        if states.is_empty() {
            return problems;
        }
        let copied: Vec<&str> = states.iter().map(|s| s.name.as_str()).collect();
        tracing::info!(
            slots = ?copied,
            leader,
            "copying logical slots from the leader; restarting PostgreSQL to load them"
        );
        let role = self.running_role(Some(cluster), o);
        let (pg, dynamic) = (self.pg.clone(), self.dynamic.clone());
        let timeout = self.config.postgresql.pg_ctl_timeout;
        self.spawn_job(Job::Restart, async move {
            pg.stop(ShutdownMode::Fast, timeout).await?;
            let installed: Result<(), PgError> =
                states.iter().try_for_each(|s| pg.install_slot_state(s));
            // Started again even if a copy could not be written: the node
            // stays a replica either way.
            let started = pg.start(&role, &dynamic).await;
            installed.and(started)
        });
        problems
    }

    /// Drops this replica's copy of a logical slot that could not be
    /// advanced because the WAL it starts from is gone here: it could
    /// never be advanced again, and a consumer resuming from it on this
    /// node after a failover would fail. The next cycles copy it again
    /// from the leader. The leader's slot is never touched.
    pub(super) async fn drop_unadvanceable_copies(
        &mut self,
        config: &SlotsConfig,
        failed: &[(SlotChange, PgError)],
    ) {
        for (change, e) in failed {
            let SlotChange::Advance { name, .. } = change else {
                continue;
            };
            let logical = config
                .permanent(name)
                .is_some_and(|s| matches!(s.kind, SlotKind::Logical { .. }));
            if !logical || !e.to_string().contains(WAL_GONE) {
                continue;
            }
            let sql = format!(
                "SELECT pg_catalog.pg_drop_replication_slot('{}')",
                name.replace('\'', "''")
            );
            match self.pg.execute(&sql).await {
                Ok(()) => tracing::warn!(
                    slot = name.as_str(),
                    "dropped this replica's copy of a logical slot: the WAL it starts from is gone here ({e}); it is copied again from the leader"
                ),
                Err(e) => tracing::warn!(slot = name.as_str(), "cannot drop the copy: {e}"),
            }
        }
    }
}

fn lsn_text(lsn: Option<u64>) -> String {
    match lsn {
        Some(l) => format!("{:X}/{:X}", l >> 32, l & 0xffff_ffff),
        None => "an unreadable position".into(),
    }
}
