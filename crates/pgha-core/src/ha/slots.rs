//! What to do with permanent slots (`slots`) on this node: pure, from the
//! configuration, the slots PostgreSQL lists and the leader's `status`.
//!
//! What holds:
//! - a permanent slot or one matched by `ignore_slots` is never dropped:
//!   [`protects`] is asked before any drop (the leader drops only slots of
//!   members gone for `member_slots_ttl`, and only unprotected ones);
//! - the primary creates every permanent slot (a physical one reserving
//!   WAL from its creation); replicas keep a copy of every permanent slot,
//!   moved forward to the position the leader last published, so after a
//!   failover the new primary already holds the WAL (physical) or the
//!   decoding position (logical) that the slot's consumer has not
//!   confirmed (Patroni does the same);
//! - a copy is only ever moved forward, and never past what the leader
//!   published: the consumer confirmed at least that much, so a consumer
//!   that resumes from the new primary's slot misses nothing (it may see
//!   again what it received after the last published position);
//! - an existing slot whose kind, database or plugin differs from its
//!   `slots` entry is left as it is and reported: dropping it to recreate
//!   it would throw away what its consumer has not read.
//!
//! A logical slot cannot be created on a PostgreSQL 15 standby, and one
//! created on a later standby would start at its own position, not its
//! consumer's. So a replica copies the slot's state file from the leader
//! ([`SlotChange::CopyLogical`]: read with `pg_read_binary_file`, written
//! into `pg_replslot` while PostgreSQL is stopped, loaded when it starts
//! again), then advances it like a physical copy. This is what Patroni
//! does; `hot_standby_feedback` is on for replicas while logical slots are
//! configured, so the leader keeps the catalog rows the copies need.

use std::collections::BTreeMap;

use crate::model::slots::{SlotIdentity, SlotKind, SlotsConfig};

/// A slot as the local PostgreSQL lists it (`pg_replication_slots`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSlot {
    pub name: String,
    pub kind: SlotKind,
    /// A walsender (or decoding session) uses it now.
    pub active: bool,
    pub restart_lsn: Option<u64>,
    /// Logical slots: what the consumer confirmed.
    pub confirmed_flush_lsn: Option<u64>,
}

impl LocalSlot {
    /// The position the leader publishes for it in `status.slots`: how far
    /// its consumer has got.
    pub fn position(&self) -> Option<u64> {
        match self.kind {
            SlotKind::Physical => self.restart_lsn,
            SlotKind::Logical { .. } => self.confirmed_flush_lsn,
        }
    }
}

/// One change to the local slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotChange {
    /// `pg_create_physical_replication_slot(name, true)`.
    CreatePhysical { name: String },
    /// `pg_create_logical_replication_slot(name, plugin)` in `database`.
    CreateLogical {
        name: String,
        database: String,
        plugin: String,
    },
    /// `pg_replication_slot_advance(name, to)` (PostgreSQL stops it at
    /// what the standby has replayed).
    Advance { name: String, to: u64 },
    /// On a replica: copy the logical slot's state file from the leader
    /// and restart PostgreSQL, which loads slots only when it starts.
    CopyLogical { name: String },
}

/// What this node does with its permanent slots this cycle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotPlan {
    pub changes: Vec<SlotChange>,
    /// Permanent slots that cannot be kept as configured, with why (logged
    /// once per change by the caller).
    pub conflicts: Vec<String>,
}

/// Whether a slot may never be dropped by pgha: it is permanent, or
/// `ignore_slots` matches it.
pub fn protects(config: &SlotsConfig, slot: &LocalSlot) -> bool {
    config.permanent(&slot.name).is_some()
        || config.is_ignored(&SlotIdentity {
            name: &slot.name,
            kind: &slot.kind,
        })
}

/// On the primary: create the permanent slots that are missing. `members`
/// are the member slots the leader keeps (a member's name wins over a
/// permanent slot of the same name, as in Patroni), `own` this node's own
/// member slot name (never created here).
pub fn primary_plan(
    config: &SlotsConfig,
    local: &[LocalSlot],
    members: &[String],
    own: &str,
) -> SlotPlan {
    let mut plan = SlotPlan::default();
    for slot in &config.permanent {
        if slot.name == own {
            continue;
        }
        if members.contains(&slot.name) {
            plan.conflicts.push(format!(
                "permanent slot {} has the name of a member's slot; kept as the member's",
                slot.name
            ));
            continue;
        }
        match local.iter().find(|l| l.name == slot.name) {
            Some(existing) => note_mismatch(&mut plan, &slot.kind, existing),
            None => plan.changes.push(create(&slot.name, &slot.kind)),
        }
    }
    plan
}

/// On a replica: keep a copy of each permanent slot, moved to the
/// position the leader published (`status_slots`). A copy is only moved
/// while nothing uses it here, and only forward. A logical slot is copied
/// from the leader only once the leader publishes it (it exists there),
/// and not at all on a replica that does not stream (`archive_only`, the
/// `nostream` tag: as Patroni, nothing would keep such a copy useful).
pub fn replica_plan(
    config: &SlotsConfig,
    local: &[LocalSlot],
    status_slots: &BTreeMap<String, u64>,
    own: &str,
    archive_only: bool,
) -> SlotPlan {
    let mut plan = SlotPlan::default();
    let kept = |kind: &SlotKind| !archive_only || *kind == SlotKind::Physical;
    for slot in config
        .permanent
        .iter()
        .filter(|s| s.name != own && kept(&s.kind))
    {
        let published = status_slots.get(&slot.name);
        let Some(existing) = local.iter().find(|l| l.name == slot.name) else {
            match slot.kind {
                SlotKind::Physical => plan.changes.push(create(&slot.name, &slot.kind)),
                SlotKind::Logical { .. } if published.is_some() => {
                    plan.changes.push(SlotChange::CopyLogical {
                        name: slot.name.clone(),
                    })
                }
                SlotKind::Logical { .. } => {}
            }
            continue;
        };
        if existing.kind != slot.kind {
            note_mismatch(&mut plan, &slot.kind, existing);
            continue;
        }
        let (Some(to), Some(at)) = (published, existing.position()) else {
            continue;
        };
        if !existing.active && *to > at {
            plan.changes.push(SlotChange::Advance {
                name: slot.name.clone(),
                to: *to,
            });
        }
    }
    plan
}

/// The positions the leader publishes in `status.slots`: every slot it
/// keeps for a member or as permanent, by name.
pub fn published_positions(
    config: &SlotsConfig,
    local: &[LocalSlot],
    members: &[String],
) -> BTreeMap<String, u64> {
    local
        .iter()
        .filter(|l| members.contains(&l.name) || config.permanent(&l.name).is_some())
        .filter_map(|l| Some((l.name.clone(), l.position()?)))
        .collect()
}

fn create(name: &str, kind: &SlotKind) -> SlotChange {
    match kind {
        SlotKind::Physical => SlotChange::CreatePhysical {
            name: name.to_string(),
        },
        SlotKind::Logical { database, plugin } => SlotChange::CreateLogical {
            name: name.to_string(),
            database: database.clone(),
            plugin: plugin.clone(),
        },
    }
}

fn note_mismatch(plan: &mut SlotPlan, want: &SlotKind, existing: &LocalSlot) {
    if *want != existing.kind {
        plan.conflicts.push(format!(
            "slot {} exists as {:?} but slots says {:?}; left as it is (dropping it would lose what its consumer has not read)",
            existing.name, existing.kind, want
        ));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::DynamicConfig;

    fn config() -> SlotsConfig {
        let c: DynamicConfig = serde_json::from_value(json!({
            "slots": {
                "barman": {"type": "physical"},
                "cdc": {"type": "logical", "database": "app", "plugin": "pgoutput"},
                "node2": null,
                "node1": null,
            },
            "ignore_slots": [{"name": "external"}],
        }))
        .unwrap();
        SlotsConfig::of(&c)
    }

    fn physical(name: &str, restart: u64, active: bool) -> LocalSlot {
        LocalSlot {
            name: name.into(),
            kind: SlotKind::Physical,
            active,
            restart_lsn: Some(restart),
            confirmed_flush_lsn: None,
        }
    }

    fn logical(name: &str, plugin: &str, confirmed: u64) -> LocalSlot {
        LocalSlot {
            name: name.into(),
            kind: SlotKind::Logical {
                database: "app".into(),
                plugin: plugin.into(),
            },
            active: false,
            restart_lsn: Some(confirmed - 8),
            confirmed_flush_lsn: Some(confirmed),
        }
    }

    #[test]
    fn the_primary_creates_what_is_missing_but_never_its_own_or_a_members_slot() {
        let members = ["node2".to_string()];
        let plan = primary_plan(&config(), &[], &members, "node1");
        assert_eq!(
            plan.changes,
            [
                SlotChange::CreatePhysical {
                    name: "barman".into()
                },
                SlotChange::CreateLogical {
                    name: "cdc".into(),
                    database: "app".into(),
                    plugin: "pgoutput".into()
                },
            ]
        );
        assert_eq!(plan.conflicts.len(), 1, "{plan:?}");
        assert!(plan.conflicts[0].starts_with("permanent slot node2 has the name of a member"));
    }

    #[test]
    fn a_slot_of_another_kind_is_reported_not_recreated() {
        let local = [
            physical("barman", 100, false),
            logical("cdc", "wal2json", 200),
        ];
        let plan = primary_plan(&config(), &local, &[], "node1");
        assert!(
            plan.changes
                .iter()
                .all(|c| !matches!(c, SlotChange::CreateLogical { .. }))
        );
        assert_eq!(plan.conflicts.len(), 1, "{plan:?}");
        assert!(
            plan.conflicts[0].starts_with("slot cdc exists as"),
            "{plan:?}"
        );
    }

    #[test]
    fn a_replica_copies_permanent_slots_and_moves_idle_copies_forward_only() {
        let status = BTreeMap::from([("barman".to_string(), 500), ("cdc".to_string(), 900)]);
        let plan = replica_plan(&config(), &[], &status, "node2", false);
        assert_eq!(
            plan.changes,
            [
                SlotChange::CreatePhysical {
                    name: "barman".into()
                },
                SlotChange::CopyLogical { name: "cdc".into() },
                SlotChange::CreatePhysical {
                    name: "node1".into()
                },
            ],
            "the logical slot copied from the leader, never its own name"
        );
        let behind = [
            physical("barman", 400, false),
            physical("node1", 10, false),
            logical("cdc", "pgoutput", 700),
        ];
        let plan = replica_plan(&config(), &behind, &status, "node2", false);
        assert_eq!(
            plan.changes,
            [
                SlotChange::Advance {
                    name: "barman".into(),
                    to: 500
                },
                SlotChange::Advance {
                    name: "cdc".into(),
                    to: 900
                },
            ],
            "a logical copy moves to where its consumer confirmed"
        );
        let ahead = [
            physical("barman", 600, false),
            physical("node1", 10, false),
            logical("cdc", "pgoutput", 900),
        ];
        assert!(
            replica_plan(&config(), &ahead, &status, "node2", false)
                .changes
                .is_empty()
        );
        let in_use = [
            physical("barman", 400, true),
            physical("node1", 10, false),
            logical("cdc", "pgoutput", 900),
        ];
        assert!(
            replica_plan(&config(), &in_use, &status, "node2", false)
                .changes
                .is_empty()
        );
    }

    #[test]
    fn a_logical_slot_is_copied_only_once_the_leader_has_it() {
        let status = BTreeMap::from([("barman".to_string(), 500)]);
        let plan = replica_plan(
            &config(),
            &[physical("barman", 500, false)],
            &status,
            "n",
            false,
        );
        assert!(
            !plan
                .changes
                .iter()
                .any(|c| matches!(c, SlotChange::CopyLogical { .. })),
            "nothing to copy yet: {plan:?}"
        );
        let other_plugin = [logical("cdc", "wal2json", 100)];
        let status = BTreeMap::from([("cdc".to_string(), 900)]);
        let plan = replica_plan(&config(), &other_plugin, &status, "n", false);
        assert!(
            !plan.changes.iter().any(|c| matches!(
                c,
                SlotChange::Advance { name, .. } | SlotChange::CopyLogical { name } if name == "cdc"
            )),
            "{plan:?}"
        );
        assert!(
            plan.conflicts
                .iter()
                .any(|c| c.starts_with("slot cdc exists as"))
        );
        // A replica fed from the archive only keeps physical copies only.
        let status = BTreeMap::from([("barman".to_string(), 500), ("cdc".to_string(), 900)]);
        let behind = [
            physical("barman", 400, false),
            logical("cdc", "pgoutput", 700),
        ];
        let plan = replica_plan(&config(), &behind, &status, "node2", true);
        assert_eq!(
            plan.changes,
            [
                SlotChange::Advance {
                    name: "barman".into(),
                    to: 500
                },
                SlotChange::CreatePhysical {
                    name: "node1".into()
                },
            ]
        );
        assert!(
            replica_plan(&config(), &[], &status, "node2", true)
                .changes
                .iter()
                .all(|c| !matches!(c, SlotChange::CopyLogical { .. }))
        );
    }

    #[test]
    fn permanent_and_ignored_slots_are_protected_others_are_not() {
        let c = config();
        assert!(protects(&c, &physical("barman", 1, false)));
        assert!(protects(&c, &logical("cdc", "pgoutput", 16)));
        assert!(protects(&c, &physical("external", 1, false)));
        assert!(!protects(&c, &physical("stray", 1, false)));
    }

    #[test]
    fn the_leader_publishes_member_and_permanent_positions() {
        let local = [
            physical("node2", 300, true),
            physical("barman", 100, false),
            logical("cdc", "pgoutput", 200),
            physical("stray", 50, false),
        ];
        let published = published_positions(&config(), &local, &["node2".to_string()]);
        assert_eq!(
            published,
            BTreeMap::from([
                ("barman".to_string(), 100),
                ("cdc".to_string(), 200),
                ("node2".to_string(), 300),
            ])
        );
    }
}
