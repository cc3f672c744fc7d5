//! What the leader keeps up to date besides its lock: `status` (its WAL
//! position and slots), `history` after a promotion, the replication
//! slots of the other members, and synchronous replication ([`super::sync`]).

use std::time::Duration;

use pgha_core::clock::Clock;
use pgha_core::dcs::DcsExt;
use pgha_core::ha::divergence::lineage;
use pgha_core::ha::replication;
use pgha_core::ha::slots::{self, SlotChange};
use pgha_core::model::slots::{SlotKind, SlotsConfig};
use pgha_core::model::{Cluster, HistoryEntry, Member, Status};

use super::{HaLoop, parse_lsn};
use crate::postgres::{Observed, PgError, Postgres, files};

impl HaLoop {
    /// What the leader keeps up to date: `status` (its WAL position and
    /// slots), `history` after a promotion, and the members' slots. A
    /// standby cluster's standby leader keeps `status` and the slots its
    /// replicas stream through (physical ones only: a standby cannot have
    /// logical slots on PostgreSQL 15).
    pub(super) async fn leader_duties(&mut self, cluster: &Cluster, o: &Observed) {
        let Some(db) = o.db.as_ref() else {
            return;
        };
        let standby_leader = db.in_recovery && self.dynamic.standby_cluster().is_some();
        if db.in_recovery && !standby_leader {
            return;
        }
        let kept = if self.use_slots() {
            self.ensure_slots(cluster, standby_leader).await
        } else {
            None
        };
        let (retain_slots, positions) = match kept {
            Some(k) => (
                Some(k.retain),
                (!k.positions.is_empty()).then_some(k.positions),
            ),
            None => (None, None),
        };
        let status = Status {
            optime: if standby_leader {
                db.receive_lsn.or(db.replay_lsn)
            } else {
                db.write_lsn
            },
            slots: positions,
            retain_slots,
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
        // The history a standby leader follows too (its source's, after a
        // demote-cluster rewound it): its replicas tell from it whether
        // their own WAL diverged, and rewind from it once a restartpoint
        // put the new timeline in its control file.
        if let Some(timeline) = db.timeline {
            self.sync_history(cluster, timeline).await;
        }
        if standby_leader {
            if super::member::standby_restartpoint_pending(o)
                && let Err(e) = self.pg.checkpoint().await
            {
                tracing::warn!("restartpoint on the standby leader's new timeline: {e}");
            }
            return;
        }
        self.keep_failsafe_key(cluster).await;
        self.keep_sync(cluster, db).await;
    }

    /// Creates a physical slot for every other member, and for every
    /// member seen (in any role, by this agent) within `member_slots_ttl`
    /// whose key is gone: after a failover, the old primary's slot is
    /// ready when it comes back, so it streams as soon as it is rewound
    /// instead of a loop later. Creates the permanent slots (`slots`).
    /// Drops inactive physical slots unwanted for `member_slots_ttl`,
    /// never a permanent one or one `ignore_slots` matches
    /// ([`slots::protects`]). Returns the member slots kept and the
    /// positions published in `status.slots`.
    async fn ensure_slots(&mut self, cluster: &Cluster, standby_leader: bool) -> Option<KeptSlots> {
        let wanted = self.member_slots(cluster);
        let config = SlotsConfig::of(&self.dynamic);
        let local = match self.pg.slots().await {
            Ok(slots) => slots,
            Err(e) => {
                tracing::warn!("cannot list replication slots: {e}");
                return None;
            }
        };
        log_created(self.pg.create_missing_slots(&wanted, &local).await);
        let own = files::slot_name(&self.config.name);
        let mut plan = slots::primary_plan(&config, &local, &wanted, &own);
        if standby_leader {
            plan.changes
                .retain(|c| matches!(c, SlotChange::CreatePhysical { .. }));
        }
        let (problems, _) = self.carry_out(plan).await;
        self.report_slot_problems(problems);
        let mut kept = wanted.clone();
        kept.extend(self.drop_unwanted_slots(&local, &wanted, &config).await);
        kept.sort();
        kept.dedup();
        let positions = slots::published_positions(&config, &local, &kept);
        Some(KeptSlots {
            retain: kept,
            positions,
        })
    }

    /// Drops (outside maintenance mode) the inactive physical slots of
    /// `local` unwanted for `member_slots_ttl`: neither in `wanted`, nor protected
    /// ([`slots::protects`]); a member's slot as soon as it is unwanted and
    /// its member gone for that long. The same rule on every node, so a
    /// slot removed from `slots` does not keep WAL on a replica for ever.
    /// Returns the slots of members gone that it keeps.
    async fn drop_unwanted_slots(
        &mut self,
        local: &[slots::LocalSlot],
        wanted: &[String],
        config: &SlotsConfig,
    ) -> Vec<String> {
        let now = self.clock.now();
        let ttl = Duration::from_secs(self.dynamic.member_slots_ttl());
        let mut kept = Vec::new();
        for slot in local.iter().filter(|l| l.kind == SlotKind::Physical) {
            let name = &slot.name;
            if wanted.contains(name) || slots::protects(config, slot) {
                self.slot_orphaned_since.remove(name);
                continue;
            }
            // A member's slot is unwanted once its member has been gone for
            // member_slots_ttl; another slot once it has been unwanted as long.
            let member = self.member_seen_at.contains_key(name);
            let since = *self.slot_orphaned_since.entry(name.clone()).or_insert(now);
            // Maintenance mode: hands off, as Patroni.
            let paused = self.dynamic.pause();
            if !paused && !slot.active && (member || now.saturating_sub(since) >= ttl) {
                let sql = format!(
                    "SELECT pg_catalog.pg_drop_replication_slot('{}')",
                    name.replace('\'', "''")
                );
                match self.pg.execute(&sql).await {
                    Ok(()) => {
                        tracing::info!(
                            "dropped replication slot {name}: unwanted for {ttl:?} (neither a member's, nor in slots or ignore_slots)"
                        );
                        self.slot_orphaned_since.remove(name);
                    }
                    Err(e) => tracing::warn!("cannot drop replication slot {name}: {e}"),
                }
            } else if member {
                // A member's slot kept after its key vanished (its
                // PostgreSQL may run without an agent); other physical
                // slots are not members' and are not listed.
                kept.push(name.clone());
            }
        }
        kept
    }

    /// On a replica: the copies of the permanent physical slots, moved to
    /// the positions the leader published, so that they exist and hold the
    /// WAL their consumers need if this node is promoted; slots unwanted
    /// for `member_slots_ttl` dropped as on the leader.
    pub(super) async fn replica_slot_duties(&mut self, cluster: &Cluster, o: &Observed) {
        if !self.use_slots() {
            return;
        }
        let config = SlotsConfig::of(&self.dynamic);
        let local = match self.pg.slots().await {
            Ok(slots) => slots,
            Err(e) => {
                tracing::warn!("cannot list replication slots: {e}");
                return;
            }
        };
        // Slots for the members that cascade from this replica.
        let downstream = self.downstream_slots(cluster);
        log_created(self.pg.create_missing_slots(&downstream, &local).await);
        // Copies of the permanent slots, for when this node is promoted (a
        // node that may not be promoted keeps none, as in Patroni).
        if !self.config.tags.nofailover() {
            let nostream = self.config.tags.nostream();
            let published = cluster
                .status
                .as_ref()
                .and_then(|s| s.value.slots.clone())
                .unwrap_or_default();
            let own = files::slot_name(&self.config.name);
            let mut plan = slots::replica_plan(&config, &local, &published, &own, nostream);
            let copies: Vec<String> = plan
                .changes
                .iter()
                .filter_map(|c| match c {
                    SlotChange::CopyLogical { name } => Some(name.clone()),
                    _ => None,
                })
                .collect();
            plan.changes
                .retain(|c| !matches!(c, SlotChange::CopyLogical { .. }));
            let (mut problems, failed) = self.carry_out(plan).await;
            self.drop_unadvanceable_copies(&config, &failed).await;
            if !copies.is_empty() {
                problems.extend(self.copy_logical_slots(cluster, o, &copies).await);
            }
            self.report_slot_problems(problems);
        }
        let mut wanted = self.member_slots(cluster);
        wanted.extend(downstream);
        self.drop_unwanted_slots(&local, &wanted, &config).await;
    }

    /// Carries a slot plan out; returns its conflicts and failures as
    /// problems to report ([`Self::report_slot_problems`]), and the
    /// changes that failed, with why.
    async fn carry_out(
        &mut self,
        plan: slots::SlotPlan,
    ) -> (Vec<String>, Vec<(SlotChange, PgError)>) {
        let mut problems = plan.conflicts;
        let mut failed = Vec::new();
        for change in plan.changes {
            match self.pg.change_slot(&change).await {
                Ok(()) => match change {
                    SlotChange::Advance { .. } => tracing::debug!("{change:?}"),
                    _ => tracing::info!("permanent slot: {change:?}"),
                },
                Err(e) => {
                    problems.push(format!("permanent slot: {change:?} failed: {e}"));
                    failed.push((change, e));
                }
            }
        }
        (problems, failed)
    }

    /// Logs `problems` when they differ from the last ones reported, not
    /// on every cycle they persist.
    pub(super) fn report_slot_problems(&mut self, problems: Vec<String>) {
        if problems != self.slot_problems {
            for p in &problems {
                tracing::warn!("{p}");
            }
            self.slot_problems = problems;
        }
    }

    /// The slots the leader keeps: one for every other member, and for
    /// every member seen (in any role, by this agent) within
    /// `member_slots_ttl` whose key is gone.
    pub(super) fn member_slots(&self, cluster: &Cluster) -> Vec<String> {
        let me = files::slot_name(&self.config.name);
        let now = self.clock.now();
        let ttl = Duration::from_secs(self.dynamic.member_slots_ttl());
        // Not for a member that streams from another one (replicatefrom),
        // or from nowhere (nostream: the archive only): a slot it never
        // uses would keep WAL here for ever. A cascading member's slot is
        // made here as soon as it falls back to the leader.
        let elsewhere: Vec<String> = cluster
            .members
            .iter()
            .filter(|m| m.data.tags.nostream() || self.cascades_elsewhere(cluster, m))
            .map(|m| files::slot_name(&m.name))
            .collect();
        let present = cluster.members.iter().map(|m| files::slot_name(&m.name));
        let retained = self
            .member_seen_at
            .iter()
            .filter(|(_, seen)| now.saturating_sub(**seen) < ttl)
            .map(|(slot, _)| slot.clone());
        let mut wanted: Vec<String> = present
            .chain(retained)
            .filter(|s| *s != me && !elsewhere.contains(s))
            .collect();
        wanted.sort();
        wanted.dedup();
        wanted
    }

    /// Whether `member` streams from a member other than this node (its
    /// `replicatefrom` names a running member; see
    /// [`pgha_core::ha::replication::upstream`]).
    fn cascades_elsewhere(&self, cluster: &Cluster, member: &Member) -> bool {
        member.data.tags.replicatefrom().is_some_and(|_| {
            replication::upstream(cluster, member.data.tags.replicatefrom())
                .is_some_and(|u| u != self.config.name && !cluster.is_leader(u))
        })
    }

    /// The slots of the members that stream from this replica (their
    /// `replicatefrom` names it, and it runs).
    fn downstream_slots(&self, cluster: &Cluster) -> Vec<String> {
        cluster
            .members
            .iter()
            .filter(|m| m.name != self.config.name)
            .filter(|m| {
                m.data.tags.replicatefrom() == Some(self.config.name.as_str())
                    && replication::upstream(cluster, m.data.tags.replicatefrom())
                        == Some(self.config.name.as_str())
            })
            .map(|m| files::slot_name(&m.name))
            .collect()
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
    match pg.slots().await {
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

/// What [`HaLoop::ensure_slots`] leaves for the `status` key.
struct KeptSlots {
    /// Member slots (`retain_slots`).
    retain: Vec<String>,
    /// Member and permanent slot positions (`slots`).
    positions: std::collections::BTreeMap<String, u64>,
}
