//! The HA decision is a pure function: give it a cluster snapshot and the
//! local PostgreSQL's state, and it says what to do, by which rule, and
//! why. This example builds observations by hand, as a simulation or a
//! what-if tool would, and asks a fresh node's state machine (`HaNode`).
//!
//! ```text
//! cargo run -p pgha-examples --example decide
//! ```

use std::time::Duration;

use pgha_core::ha::{
    DataDir, HaNode, Inputs, LocalPostgres, NodeSettings, PeerSource, PeerStatus, PgRole, SyncMode,
};
use pgha_core::model::{Cluster, ClusterKey, RawEntry, Tags, Timing, Version};

fn cluster(entries: &[(&str, &str)]) -> Cluster {
    let raw = entries.iter().map(|(k, v)| RawEntry {
        key: ClusterKey::parse(k).expect("a cluster key"),
        value: v.as_bytes().to_vec(),
        version: Version::number(1),
        owner: None,
    });
    Cluster::from_entries(raw, Version::number(1))
}

fn main() {
    let settings = NodeSettings {
        name: "node2".into(),
        tags: Tags::default(),
        can_bootstrap: true,
        can_clone_without_leader: false,
        new_cluster_refused: None,
        use_pg_rewind: true,
        remove_data_directory_on_rewind_failure: false,
        remove_data_directory_on_diverged_timelines: false,
        maximum_lag_on_failover: 1 << 20,
        sync_mode: SyncMode::Off,
        primary_start_timeout: Duration::from_secs(300),
        paused: false,
        failsafe_mode: false,
        not_streaming_limit: Duration::from_secs(50),
        upstream_silence_limit: Duration::from_secs(20),
        standby_cluster: None,
        ttl: Duration::from_secs(30),
    };
    let local = LocalPostgres {
        data_dir: DataDir::Initialized {
            system_id: "7312345678901234567".into(),
            was_primary: false,
            timeline: 1,
        },
        running: true,
        crashed: false,
        role: Some(PgRole::Replica),
        timeline: Some(1),
        wal_position: Some(5000),
        following: Some("node1".into()),
        replication_state: Some("streaming".into()),
        receiver_sender: None,
        configured_upstream: None,
        starting: None,
        replicate_from: None,
        archive_only: false,
    };
    let member = r#"{"conn_url":"postgres://10.0.0.1:5432/postgres","state":"running","role":"primary","xlog_location":5000}"#;

    let scenarios: Vec<(&str, Cluster, Vec<PeerStatus>)> = vec![
        (
            "a healthy cluster led by node1",
            cluster(&[
                ("initialize", "7312345678901234567"),
                ("leader", "node1"),
                ("members/node1", member),
            ]),
            vec![],
        ),
        (
            "node1's lock expired; node3 is further ahead",
            cluster(&[("initialize", "7312345678901234567")]),
            vec![peer("node3", 6000)],
        ),
        (
            "node1's lock expired; node2 is the furthest ahead",
            cluster(&[("initialize", "7312345678901234567")]),
            vec![peer("node3", 4000)],
        ),
        (
            "someone else's cluster",
            cluster(&[("initialize", "6000000000000000000"), ("leader", "node1")]),
            vec![],
        ),
    ];
    for (what, c, peers) in scenarios {
        let mut node = HaNode::new(Timing::default());
        let d = node.decide(
            Duration::from_secs(100),
            Inputs {
                settings: &settings,
                cluster: Some(&c),
                local: &local,
                peers: &peers,
                renew_failed: None,
                wall_now: jiff::Timestamp::now(),
                // An embedding service that runs its own fencing says so
                // here; `Some(why)` keeps the node from being primary.
                unfenced: None,
                leader_unowned: false,
                failsafe_round: None,
                failsafe_witness: None,
            },
        );
        let actions: Vec<String> = d.actions.iter().map(ToString::to_string).collect();
        println!(
            "{what}:\n  -> [{}] {}\n     [{}]\n",
            d.rule,
            d.reason,
            actions.join(", ")
        );
    }
}

fn peer(name: &str, wal: u64) -> PeerStatus {
    PeerStatus {
        name: name.into(),
        source: PeerSource::Rest,
        is_primary: false,
        running: true,
        starting: false,
        wal_position: Some(wal),
        timeline: Some(1),
        nofailover: false,
        failover_priority: 1,
        replication_broken: false,
        takes_lock_back: false,
    }
}
