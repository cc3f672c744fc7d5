//! Synchronous replication, carried out: the leader's steps from
//! [`SyncKeeper`](pgha_core::ha::SyncKeeper) (`synchronous_standby_names`
//! and the `sync` key, in the order that keeps every standby the key names
//! holding every acknowledged commit), and what a node does before it
//! promotes. The choices are `pgha_core::ha::sync`'s; this module only
//! observes and writes.

use std::time::{Duration, Instant};

use pgha_core::dcs::{DcsExt, SharedKey};
use pgha_core::ha::SyncStep;
use pgha_core::ha::sync::{self, SyncView, Walsender};
use pgha_core::model::{Cluster, Versioned};

use super::HaLoop;
use super::execute::Failure;
use crate::postgres::DbState;

/// Steps carried out per cycle at most; what is left waits for the next.
const MAX_STEPS: usize = 8;

/// How long a cycle that has just listed a standby in
/// `synchronous_standby_names` waits for it to catch up, so that the key
/// names it now rather than a `loop_wait` later (at most `loop_wait`
/// either: the lock's renewal waits meanwhile).
const CATCH_UP_WAIT: Duration = Duration::from_secs(2);

fn walsenders(db: &DbState) -> Vec<Walsender> {
    db.replication
        .iter()
        .filter_map(|r| {
            Some(Walsender {
                name: r.application_name.clone()?,
                sync_state: r.sync_state.clone().unwrap_or_default(),
                flush_lsn: r.flush_lsn,
            })
        })
        .collect()
}

impl HaLoop {
    /// The leader's synchronous replication upkeep, on a running primary.
    pub(super) async fn keep_sync(&mut self, cluster: &Cluster, db: &DbState) {
        let settings = self.dynamic.sync_settings();
        let members = sync::members(cluster);
        let mut key = cluster.sync.clone();
        let mut db = db.clone();
        let mut waiting_since: Option<Instant> = None;
        let mut listed = false;
        let catch_up = CATCH_UP_WAIT.min(self.node.timing().loop_wait);
        for _ in 0..MAX_STEPS {
            let senders = walsenders(&db);
            let view = SyncView {
                me: &self.config.name,
                settings,
                members: &members,
                walsenders: &senders,
                running_names: db.synchronous_standby_names.as_deref().unwrap_or_default(),
                managing_names: self.pg.manages_sync_names(),
                key: key.as_ref().map(|k| &k.value),
                primary_lsn: db.write_lsn,
            };
            let (step, why) = self.sync.next(&view);
            let done = match &step {
                SyncStep::Settled => true,
                SyncStep::Waiting => {
                    let since = *waiting_since.get_or_insert_with(Instant::now);
                    !listed || since.elapsed() >= catch_up
                }
                _ => false,
            };
            if why != self.sync_said {
                tracing::info!(target: "pgha::sync", member = %self.config.name, "{why}");
                self.sync_said = why;
            }
            if done {
                return;
            }
            let result = match step {
                SyncStep::WriteKey(state) => {
                    match self
                        .dcs
                        .write_sync(&state, sync::key_expect(cluster, key.as_ref()))
                        .await
                    {
                        Ok(version) => {
                            key = Some(Versioned::new(state, version));
                            Ok(())
                        }
                        Err(e) => Err(format!("cannot write the sync key: {e}")),
                    }
                }
                SyncStep::DeleteKey => {
                    match self
                        .dcs
                        .delete(SharedKey::Sync, sync::key_expect(cluster, key.as_ref()))
                        .await
                    {
                        Ok(()) => {
                            key = None;
                            Ok(())
                        }
                        Err(e) => Err(format!("cannot delete the sync key: {e}")),
                    }
                }
                SyncStep::SetNames(names) => match self.pg.set_sync_names(Some(&names)).await {
                    Ok(()) => {
                        listed = true;
                        self.nudge_wal().await;
                        Ok(())
                    }
                    Err(e) => Err(format!("cannot set synchronous_standby_names: {e}")),
                },
                SyncStep::ReleaseNames => self
                    .pg
                    .set_sync_names(None)
                    .await
                    .map_err(|e| format!("cannot reset synchronous_standby_names: {e}")),
                SyncStep::Waiting => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok(())
                }
                SyncStep::Settled => Ok(()),
            };
            if let Err(e) = result {
                tracing::warn!(target: "pgha::sync", member = %self.config.name, "{e}");
                return;
            }
            match self.pg.state().await {
                Ok(s) if !s.in_recovery => db = s,
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(target: "pgha::sync", "cannot observe PostgreSQL: {e}");
                    return;
                }
            }
        }
    }

    /// Some WAL that waits for nobody, so that standbys report their
    /// positions now (as Patroni does after a change).
    async fn nudge_wal(&self) {
        let sql = "DO $$BEGIN SET LOCAL synchronous_commit = 'off'; \
                   PERFORM pg_catalog.txid_current(); END$$";
        if let Err(e) = self.pg.execute(sql).await {
            tracing::debug!("cannot write WAL to prompt the standbys: {e}");
        }
    }

    /// Before this node runs as primary in synchronous mode (a promotion,
    /// or a start in place): the `sync` key names it, with no standby (so
    /// no standby that need not hold this node's commits may be promoted
    /// after it; the leader names standbys again once they are confirmed),
    /// and PostgreSQL gets the `synchronous_standby_names` a new leader
    /// starts with. Failing, the promotion or start waits for the next
    /// cycle (as Patroni's). Outside synchronous mode, a value pgha set
    /// earlier is removed first, so the new primary never waits for a
    /// former leader's standbys.
    pub(super) async fn sync_before_primary(
        &mut self,
        cluster: Option<&Cluster>,
    ) -> Result<(), Failure> {
        let settings = self.dynamic.sync_settings();
        if !settings.mode.is_on() {
            if self.pg.manages_sync_names() {
                self.pg.set_sync_names(None).await.map_err(|e| {
                    Failure::Other(format!("cannot reset synchronous_standby_names: {e}"))
                })?;
            }
            return Ok(());
        }
        let Some(cluster) = cluster else {
            return Err(Failure::Other(
                "synchronous_mode: the DCS is not readable, so the sync key cannot name me before I promote"
                    .into(),
            ));
        };
        let me = self.config.name.clone();
        let key = sync::key_at_promotion(&me);
        self.dcs
            .write_sync(&key, sync::key_expect(cluster, cluster.sync.as_ref()))
            .await
            .map_err(|e| {
                Failure::Other(format!(
                    "synchronous_mode: cannot write the sync key before promoting: {e}"
                ))
            })?;
        let names = sync::names_at_promotion(settings, &me, &sync::members(cluster)).render();
        self.pg.set_sync_names(Some(&names)).await.map_err(|e| {
            Failure::Other(format!(
                "synchronous_mode: cannot set synchronous_standby_names before promoting: {e}"
            ))
        })?;
        tracing::info!(
            target: "pgha::sync",
            member = %me,
            "synchronous_mode: the sync key names me with no standby; synchronous_standby_names = {names:?} until standbys are chosen"
        );
        Ok(())
    }
}
