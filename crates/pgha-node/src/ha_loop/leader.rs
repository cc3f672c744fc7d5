//! What the leader keeps up to date besides its lock: `status` (its WAL
//! position and slots), `history` after a promotion, the replication
//! slots of the other members, and synchronous replication ([`super::sync`]).

use std::time::Duration;

use pgha_core::clock::Clock;
use pgha_core::dcs::DcsExt;
use pgha_core::ha::divergence::lineage;
use pgha_core::model::{Cluster, HistoryEntry, Status};

use super::{HaLoop, parse_lsn};
use crate::postgres::{Observed, PgError, Postgres, files};

impl HaLoop {
    /// What the leader keeps up to date: `status` (its WAL position and
    /// slots), `history` after a promotion, and the members' slots.
    pub(super) async fn leader_duties(&mut self, cluster: &Cluster, o: &Observed) {
        let Some(db) = o.db.as_ref().filter(|d| !d.in_recovery) else {
            return;
        };
        let slots = if self.use_slots() {
            self.ensure_slots(cluster).await
        } else {
            None
        };
        let status = Status {
            optime: db.write_lsn,
            retain_slots: slots,
            paused_leader: self.dynamic.pause().then(|| self.config.name.clone()),
            timeline: db.timeline,
            ..Default::default()
        };
        if self.last_status.as_ref() != Some(&status) || cluster.status.is_none() {
            match self.dcs.write_status(&status).await {
                Ok(_) => self.last_status = Some(status),
                Err(e) => tracing::warn!("cannot write the status key: {e}"),
            }
        }
        if let Some(timeline) = db.timeline {
            self.sync_history(cluster, timeline).await;
        }
        self.keep_failsafe_key(cluster).await;
        self.keep_sync(cluster, db).await;
    }

    /// Creates a physical slot for every other member, and for every
    /// member seen (in any role, by this agent) within `member_slots_ttl`
    /// whose key is gone: after a failover, the old primary's slot is
    /// ready when it comes back, so it streams as soon as it is rewound
    /// instead of a loop later. Drops the slots of members gone for longer
    /// (inactive ones only). Returns the member slots kept.
    async fn ensure_slots(&mut self, cluster: &Cluster) -> Option<Vec<String>> {
        let now = self.clock.now();
        let ttl = Duration::from_secs(self.dynamic.member_slots_ttl());
        let wanted = self.member_slots(cluster);
        let existing = match self.pg.physical_slots().await {
            Ok(slots) => slots,
            Err(e) => {
                tracing::warn!("cannot list replication slots: {e}");
                return None;
            }
        };
        log_created(self.pg.create_missing_slots(&wanted, &existing).await);
        let mut kept = wanted.clone();
        for (slot, active) in &existing {
            if wanted.contains(slot) {
                self.slot_orphaned_since.remove(slot);
                continue;
            }
            // A member's slot is unwanted once its member has been gone for
            // member_slots_ttl; another slot once it has been unwanted as long.
            let member = self.member_seen_at.contains_key(slot);
            let since = *self.slot_orphaned_since.entry(slot.clone()).or_insert(now);
            if !active && (member || now.saturating_sub(since) >= ttl) {
                let sql = format!(
                    "SELECT pg_catalog.pg_drop_replication_slot('{}')",
                    slot.replace('\'', "''")
                );
                match self.pg.execute(&sql).await {
                    Ok(()) => {
                        tracing::info!(
                            "dropped replication slot {slot}: its member has been gone for {ttl:?}"
                        );
                        self.slot_orphaned_since.remove(slot);
                    }
                    Err(e) => tracing::warn!("cannot drop replication slot {slot}: {e}"),
                }
            } else if member {
                // A member's slot kept after its key vanished (its
                // PostgreSQL may run without an agent); other physical
                // slots are not members' and are not listed.
                kept.push(slot.clone());
            }
        }
        kept.sort();
        kept.dedup();
        Some(kept)
    }

    /// The slots the leader keeps: one for every other member, and for
    /// every member seen (in any role, by this agent) within
    /// `member_slots_ttl` whose key is gone.
    pub(super) fn member_slots(&self, cluster: &Cluster) -> Vec<String> {
        let me = files::slot_name(&self.config.name);
        let now = self.clock.now();
        let ttl = Duration::from_secs(self.dynamic.member_slots_ttl());
        let present = cluster.members.iter().map(|m| files::slot_name(&m.name));
        let retained = self
            .member_seen_at
            .iter()
            .filter(|(_, seen)| now.saturating_sub(**seen) < ttl)
            .map(|(slot, _)| slot.clone());
        let mut wanted: Vec<String> = present.chain(retained).filter(|s| *s != me).collect();
        wanted.sort();
        wanted.dedup();
        wanted
    }

    /// After a promotion, makes `history` the leader's lineage, read from
    /// PostgreSQL's timeline history file (see
    /// [`pgha_core::ha::divergence::lineage`]: replicas tell from it
    /// whether their timeline is one the leader descends from).
    async fn sync_history(&mut self, cluster: &Cluster, timeline: u64) {
        if timeline <= 1 {
            return;
        }
        let path = self
            .pg
            .data_dir()
            .join("pg_wal")
            .join(format!("{timeline:08X}.history"));
        let Ok(text) = std::fs::read_to_string(&path) else {
            return;
        };
        let mut own = Vec::new();
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let mut parts = line.splitn(3, '\t');
            let (Some(tl), Some(lsn)) = (parts.next(), parts.next()) else {
                continue;
            };
            let (Ok(tl), Some(lsn)) = (tl.trim().parse::<u64>(), parse_lsn(lsn.trim())) else {
                continue;
            };
            own.push(HistoryEntry {
                timeline: tl,
                lsn,
                reason: parts.next().unwrap_or_default().trim().to_string(),
                timestamp: Some(jiff::Timestamp::now().to_string()),
                new_leader: None,
            });
        }
        let known = cluster.history.as_ref().map(|h| &h.value);
        let Some(history) = lineage(known, own, &self.config.name) else {
            return;
        };
        if let Err(e) = self.dcs.write_history(&history).await {
            tracing::warn!("cannot write the history key: {e}");
        }
    }
}

/// Creates the missing slots of `names`, logging each created or failed.
pub(super) async fn create_slots(pg: &Postgres, names: &[String]) {
    match pg.physical_slots().await {
        Ok(existing) => log_created(pg.create_missing_slots(names, &existing).await),
        Err(e) => tracing::warn!("cannot list replication slots: {e}"),
    }
}

fn log_created((created, failed): (Vec<String>, Vec<(String, PgError)>)) {
    for slot in created {
        tracing::info!("created replication slot {slot}");
    }
    for (slot, e) in failed {
        tracing::warn!("cannot create replication slot {slot}: {e}");
    }
}
