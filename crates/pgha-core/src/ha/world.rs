//! A test world: a cluster snapshot, the local PostgreSQL, the peers and
//! the memory, seen from one node, built by small steps; shared by the
//! tests of `decide` and of the state machine.

use std::time::Duration;

use serde_json::json;

use crate::ha::action::Decision;
use crate::ha::decide::decide;
use crate::ha::observation::*;
use crate::ha::replication::{ConfiguredUpstream, Endpoint};
use crate::model::{Cluster, ClusterKey, RawEntry, Tags, Version};

pub(crate) const SYSID: &str = "7312345678901234567";

/// A world seen from node `me`: by default a healthy 3-node cluster led by
/// `n1`, with `me` running as a replica following it.
pub(crate) struct World {
    pub(crate) settings: NodeSettings,
    pub(crate) entries: Vec<(String, String)>,
    pub(crate) dcs_down: bool,
    pub(crate) local: LocalPostgres,
    pub(crate) memory: HaMemory,
    pub(crate) peers: Vec<PeerStatus>,
    pub(crate) now: Duration,
    pub(crate) renew_failed: Option<String>,
    pub(crate) wall_now: jiff::Timestamp,
    pub(crate) unfenced: Option<String>,
    /// The leader key has no lease or session behind it.
    pub(crate) leader_unowned: bool,
    /// This cycle's failsafe confirmation round, if one ran.
    pub(crate) failsafe_round: Option<crate::ha::failsafe::Round>,
    /// A leader this node confirmed in failsafe mode.
    pub(crate) failsafe_witness: Option<crate::ha::failsafe::Witness>,
}

pub(crate) fn member_json(role: &str, state: &str, wal: u64) -> String {
    json!({"conn_url": "postgres://127.0.0.1:5432/postgres", "api_url": "http://127.0.0.1:8008/patroni",
           "state": state, "role": role, "version": "4.1.4", "xlog_location": wal, "timeline": 1})
    .to_string()
}

impl World {
    pub(crate) fn new(me: &str) -> Self {
        let mut w = World {
            settings: NodeSettings {
                name: me.into(),
                tags: Tags::default(),
                can_bootstrap: true,
                can_clone_without_leader: false,
                new_cluster_refused: None,
                use_pg_rewind: true,
                remove_data_directory_on_rewind_failure: false,
                remove_data_directory_on_diverged_timelines: false,
                maximum_lag_on_failover: 1_048_576,
                sync_mode: crate::ha::sync::SyncMode::Off,
                primary_start_timeout: Duration::from_secs(300),
                paused: false,
                failsafe_mode: false,
                not_streaming_limit: Duration::from_secs(50),
                upstream_silence_limit: Duration::from_secs(20),
                standby_cluster: None,
                ttl: Duration::from_secs(30),
            },
            entries: Vec::new(),
            dcs_down: false,
            local: LocalPostgres {
                data_dir: DataDir::Initialized {
                    system_id: SYSID.into(),
                    was_primary: false,
                    timeline: 1,
                },
                running: true,
                crashed: false,
                role: Some(PgRole::Replica),
                timeline: Some(1),
                wal_position: Some(1000),
                following: Some("n1".into()),
                replication_state: Some("streaming".into()),
                receiver_sender: Some(Endpoint::new("127.0.0.1", 5432)),
                configured_upstream: Some(ConfiguredUpstream::At(Endpoint::new("127.0.0.1", 5432))),
                starting: None,
                replicate_from: None,
                archive_only: false,
            },
            memory: HaMemory::default(),
            peers: Vec::new(),
            now: Duration::from_secs(100),
            renew_failed: None,
            wall_now: "2026-11-21T12:00:00Z".parse().unwrap(),
            unfenced: None,
            leader_unowned: false,
            failsafe_round: None,
            failsafe_witness: None,
        };
        w.set("initialize", SYSID);
        w.set("config", r#"{"ttl":30,"loop_wait":10,"retry_timeout":10}"#);
        w.set("leader", "n1");
        for n in ["n1", "n2", "n3"] {
            let role = if n == "n1" { "primary" } else { "replica" };
            w.set(&format!("members/{n}"), &member_json(role, "running", 1000));
        }
        w
    }

    pub(crate) fn set(&mut self, key: &str, value: &str) -> &mut Self {
        self.entries.retain(|(k, _)| k != key);
        self.entries.push((key.into(), value.into()));
        self
    }

    pub(crate) fn unset(&mut self, key: &str) -> &mut Self {
        self.entries.retain(|(k, _)| k != key);
        self
    }

    pub(crate) fn leader(&mut self, name: &str) -> &mut Self {
        self.set("leader", name)
    }

    pub(crate) fn no_leader(&mut self) -> &mut Self {
        self.unset("leader")
    }

    pub(crate) fn primary(&mut self) -> &mut Self {
        self.local.role = Some(PgRole::Primary);
        self.local.following = None;
        self.local.replication_state = None;
        self
    }

    pub(crate) fn stopped(&mut self) -> &mut Self {
        self.local.running = false;
        self.local.role = None;
        self.local.wal_position = None;
        self
    }

    pub(crate) fn was_primary(&mut self) -> &mut Self {
        if let DataDir::Initialized { was_primary, .. } = &mut self.local.data_dir {
            *was_primary = true;
        }
        self
    }

    pub(crate) fn peer(&mut self, name: &str, wal: u64, priority: i64) -> &mut Self {
        self.peers.push(PeerStatus {
            name: name.into(),
            source: PeerSource::Rest,
            is_primary: false,
            running: true,
            starting: false,
            wal_position: Some(wal),
            nofailover: priority <= 0,
            failover_priority: priority,
            replication_broken: false,
            takes_lock_back: false,
            timeline: None,
        });
        self
    }

    pub(crate) fn tags(&mut self, v: serde_json::Value) -> &mut Self {
        self.settings.tags = Tags(v.as_object().unwrap().clone());
        self
    }

    pub(crate) fn cluster(&self) -> Cluster {
        self.cluster_rewritten(0)
    }

    /// [`World::cluster`] after every key was written `round` more times
    /// (each write gives a key a new version, as live agents rewrite
    /// their member keys every cycle).
    pub(crate) fn cluster_rewritten(&self, round: i64) -> Cluster {
        Cluster::from_entries(
            self.entries.iter().enumerate().map(|(i, (k, v))| RawEntry {
                key: ClusterKey::parse(k).unwrap(),
                value: v.as_bytes().to_vec(),
                version: Version::number(i as i64 + 1 + round * 1000),
                owner: None,
            }),
            Version::number(100),
        )
    }

    /// What the shell would hand the state machine in this world, given
    /// the world's `cluster()`.
    pub(crate) fn inputs<'a>(&'a self, cluster: &'a Cluster) -> Inputs<'a> {
        Inputs {
            settings: &self.settings,
            cluster: (!self.dcs_down).then_some(cluster),
            local: &self.local,
            peers: &self.peers,
            renew_failed: self.renew_failed.clone(),
            wall_now: self.wall_now,
            unfenced: self.unfenced.clone(),
            leader_unowned: self.leader_unowned,
            failsafe_round: self.failsafe_round.as_ref(),
            failsafe_witness: self.failsafe_witness.clone(),
        }
    }

    /// `decide` on this world, with its memory.
    pub(crate) fn decide(&self) -> Decision {
        let cluster = self.cluster();
        let o = Observation {
            now: self.now,
            memory: &self.memory,
            inputs: self.inputs(&cluster),
        };
        let d = decide(&o);
        assert!(!d.reason.is_empty(), "every decision says why");
        d
    }
}
