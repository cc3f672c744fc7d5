//! What the leader keeps up to date besides its lock (the HA loop's
//! `leader_duties`): `status`, `history` as its lineage, synchronous
//! replication through pgha-core's `SyncKeeper`, and what a node does
//! before it runs as primary in a synchronous mode.

use pgha_core::dcs::{Dcs, DcsExt, SharedKey};
use pgha_core::ha::SyncStep;
use pgha_core::ha::failsafe;
use pgha_core::ha::sync::{self, SyncView, Walsender};
use pgha_core::model::{Cluster, Failsafe, HistoryEntry, Status, Versioned};

use super::{Agent, Failure, MAX_SYNC_STEPS};
use crate::postgres::{DataDir, sync_states};
use crate::world::World;

impl World {
    // --- the leader's duties (the HA loop's `leader_duties`)

    pub(super) fn leader_duties(&mut self, i: usize, a: &mut Agent, cluster: &Cluster) {
        if !self.nodes[i].pg.is_primary() {
            return;
        }
        let lsn = self.nodes[i].pg.lsn();
        let status = Status {
            optime: Some(lsn),
            paused_leader: a.dynamic.pause().then(|| self.nodes[i].name.clone()),
            timeline: self.nodes[i].pg.data.as_ref().map(DataDir::timeline),
            ..Default::default()
        };
        if (a.last_status.as_ref() != Some(&status) || cluster.status.is_none())
            && self
                .call(i, &a.dcs, "write_status", |d| d.write_status(&status))
                .is_ok()
        {
            a.last_status = Some(status);
        }
        self.sync_history(i, a, cluster);
        self.keep_failsafe_key(i, a, cluster);
        self.keep_sync(i, a, cluster);
    }

    /// The `failsafe` key (the HA loop's `keep_failsafe_key`).
    fn keep_failsafe_key(&mut self, i: usize, a: &mut Agent, cluster: &Cluster) {
        if !a.dynamic.failsafe_mode() || a.node.memory().failsafe_since.is_some() {
            return;
        }
        let me = self.nodes[i].name.clone();
        let wanted = failsafe::topology(cluster, &me, &format!("http://{me}:8008/patroni"));
        if cluster.failsafe.as_ref().map(|f| &f.value) == Some(&wanted) {
            return;
        }
        match self.call(i, &a.dcs, "write_failsafe", |d| d.write_failsafe(&wanted)) {
            Ok(_) => a.failsafe_key = Some(wanted),
            Err(_) => {
                let mut both = a.failsafe_key.take().map(|f| f.0).unwrap_or_default();
                both.extend(wanted.0);
                a.failsafe_key = Some(Failsafe(both));
            }
        }
    }

    /// After a promotion, the `history` key becomes the leader's lineage
    /// (pgha_core::ha::divergence::lineage).
    pub(super) fn sync_history(&mut self, i: usize, a: &Agent, cluster: &Cluster) {
        let Some(d) = self.nodes[i].pg.data.as_ref() else {
            return;
        };
        if d.history.is_empty() {
            return;
        }
        let me = self.nodes[i].name.clone();
        let own: Vec<HistoryEntry> = d
            .history
            .iter()
            .map(|(tl, lsn)| HistoryEntry {
                timeline: *tl,
                lsn: *lsn,
                reason: "no recovery target specified".into(),
                timestamp: None,
                new_leader: None,
            })
            .collect();
        let known = cluster.history.as_ref().map(|h| &h.value);
        let Some(history) = pgha_core::ha::divergence::lineage(known, own, &me) else {
            return;
        };
        let entries: Vec<String> = history
            .0
            .iter()
            .map(|e| format!("{}@{}", e.timeline, e.lsn))
            .collect();
        self.trace(format!("{me}: history key: {}", entries.join(" ")));
        let _ = self.call(i, &a.dcs, "write_history", |d| d.write_history(&history));
    }

    /// Synchronous replication upkeep, through pgha-core's `SyncKeeper`
    /// (the HA loop's `keep_sync`).
    pub(super) fn keep_sync(&mut self, i: usize, a: &mut Agent, cluster: &Cluster) {
        let settings = a.dynamic.sync_settings();
        let members = sync::members(cluster);
        let me = self.nodes[i].name.clone();
        let mut key = cluster.sync.clone();
        for _ in 0..MAX_SYNC_STEPS {
            if !self.nodes[i].pg.is_primary() {
                return;
            }
            let senders = self.senders(i);
            let names = self.nodes[i].pg.sync_names().to_string();
            let states = sync_states(&names, &senders);
            let walsenders: Vec<Walsender> = senders
                .iter()
                .zip(states)
                .map(|(s, state)| Walsender {
                    name: s.name.clone(),
                    sync_state: state.to_string(),
                    flush_lsn: Some(s.flush),
                })
                .collect();
            let managing = self.nodes[i]
                .pg
                .data
                .as_ref()
                .is_some_and(|d| d.sync_conf.is_some());
            let view = SyncView {
                me: &me,
                settings,
                members: &members,
                walsenders: &walsenders,
                running_names: &names,
                managing_names: managing,
                key: key.as_ref().map(|k| &k.value),
                primary_lsn: Some(self.nodes[i].pg.lsn()),
            };
            let (step, why) = a.sync.next(&view);
            match step {
                SyncStep::Settled | SyncStep::Waiting => return,
                SyncStep::WriteKey(state) => {
                    let expect = sync::key_expect(cluster, key.as_ref());
                    match self.call(i, &a.dcs, "write", |d| d.write_sync(&state, expect)) {
                        Ok(version) => {
                            self.trace(format!("{me}: sync: {why}"));
                            key = Some(Versioned::new(state, version));
                        }
                        Err(_) => return,
                    }
                }
                SyncStep::DeleteKey => {
                    let expect = sync::key_expect(cluster, key.as_ref());
                    if self
                        .call(i, &a.dcs, "delete", |d| d.delete(SharedKey::Sync, expect))
                        .is_err()
                    {
                        return;
                    }
                    self.trace(format!("{me}: sync: {why}"));
                    key = None;
                }
                SyncStep::SetNames(names) => {
                    self.trace(format!("{me}: sync: {why}"));
                    self.set_sync_names(i, Some(names));
                }
                SyncStep::ReleaseNames => {
                    self.trace(format!("{me}: sync: {why}"));
                    self.set_sync_names(i, None);
                }
            }
        }
    }

    pub(super) fn set_sync_names(&mut self, i: usize, names: Option<String>) {
        if let Some(d) = self.nodes[i].pg.data.as_mut() {
            d.sync_conf = names;
        }
        if self.nodes[i].pg.is_primary() {
            self.acknowledge(i);
        }
    }

    /// Before this node runs as primary in synchronous mode: the `sync`
    /// key names it with no standby, and PostgreSQL gets the names a new
    /// leader starts with (the HA loop's `sync_before_primary`).
    pub(super) fn sync_before_primary(
        &mut self,
        i: usize,
        a: &mut Agent,
        cluster: Option<&Cluster>,
    ) -> Result<(), Failure> {
        let settings = a.dynamic.sync_settings();
        if !settings.mode.is_on() {
            let managing = self.nodes[i]
                .pg
                .data
                .as_ref()
                .is_some_and(|d| d.sync_conf.is_some());
            if managing {
                self.set_sync_names(i, None);
            }
            return Ok(());
        }
        let Some(cluster) = cluster else {
            return Err(Failure::Other);
        };
        let me = self.nodes[i].name.clone();
        let key = sync::key_at_promotion(&me);
        let expect = sync::key_expect(cluster, cluster.sync.as_ref());
        self.call(i, &a.dcs, "write", |d| d.write_sync(&key, expect))
            .map_err(|_| Failure::Other)?;
        let names = sync::names_at_promotion(settings, &me, &sync::members(cluster)).render();
        self.set_sync_names(i, Some(names));
        Ok(())
    }
}
