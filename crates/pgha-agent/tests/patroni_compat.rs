//! Wire compatibility with the real Patroni tools (PyPI `patroni` 4.x,
//! installed by scripts/install-deps.sh): a cluster written through pgha's
//! etcd and ZooKeeper backends is listed by `patronictl`, and values
//! written by `patronictl edit-config` are read by pgha.

// A panic is how a test fails; the helpers here are part of the tests.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use pgha_agent::config::DcsSection;
use pgha_core::dcs::{Dcs, DcsExt};
use pgha_core::model::{
    DynamicConfig, Expect, History, HistoryEntry, KeyLayout, MemberData, PgState, Role, Status,
    Timing,
};
use pgha_testkit::etcd::EtcdServer;
use pgha_testkit::patronictl::{DcsSection as CtlDcs, Patronictl};
use pgha_testkit::zookeeper::ZooKeeperServer;
use serde_json::json;

const SYSID: &str = "7312345678901234567";

fn timing() -> Timing {
    Timing {
        ttl: Duration::from_secs(30),
        loop_wait: Duration::from_secs(10),
        retry_timeout: Duration::from_secs(5),
    }
}

fn node(section: &DcsSection, scope: &str, name: &str) -> Arc<dyn Dcs> {
    pgha_agent::dcs::connect(section, KeyLayout::new("/service/", scope), name, timing()).unwrap()
}

fn member(port: u16, role: Role, wal: u64) -> MemberData {
    MemberData {
        conn_url: Some(format!("postgres://127.0.0.1:{port}/postgres")),
        api_url: Some(format!("http://127.0.0.1:{}/patroni", port + 1000)),
        state: Some(PgState::Running),
        role: Some(role.clone()),
        version: Some(pgha_core::model::PATRONI_COMPAT_VERSION.into()),
        xlog_location: Some(wal),
        timeline: Some(2),
        replication_state: (role == Role::Replica).then(|| "streaming".into()),
        receive_lsn: (role == Role::Replica).then_some(wal),
        replay_lsn: (role == Role::Replica).then_some(wal),
        ..Default::default()
    }
}

/// Writes a three-member cluster through pgha, as the agents would.
async fn write_cluster(section: &DcsSection, scope: &str) -> Vec<Arc<dyn Dcs>> {
    let nodes: Vec<Arc<dyn Dcs>> = ["node1", "node2", "node3"]
        .iter()
        .map(|n| node(section, scope, n))
        .collect();
    let leader = &nodes[0];
    leader.race_initialize().await.unwrap();
    leader.set_initialize(SYSID, Expect::Any).await.unwrap();
    let config = DynamicConfig::parse(r#"{"ttl":30,"loop_wait":10,"retry_timeout":10,"maximum_lag_on_failover":1048576,"postgresql":{"use_pg_rewind":true,"parameters":{"max_connections":100}}}"#).unwrap();
    leader.write_config(&config, Expect::Absent).await.unwrap();
    leader
        .touch_member(&member(5432, Role::Primary, 50331808))
        .await
        .unwrap();
    leader.acquire_leader().await.unwrap();
    leader
        .write_status(&Status {
            optime: Some(50331808),
            ..Default::default()
        })
        .await
        .unwrap();
    leader
        .write_history(&History(vec![HistoryEntry {
            timeline: 1,
            lsn: 25165984,
            reason: "no recovery target specified".into(),
            timestamp: Some("2026-11-21T10:00:00.000000+00:00".into()),
            new_leader: Some("node1".into()),
        }]))
        .await
        .unwrap();
    nodes[1]
        .touch_member(&member(5433, Role::Replica, 50331808))
        .await
        .unwrap();
    nodes[2]
        .touch_member(&member(5434, Role::Replica, 49283072))
        .await
        .unwrap();
    nodes
}

async fn patronictl_lists_what_pgha_wrote(section: DcsSection, ctl: CtlDcs) {
    let scope = format!("compat-{}", std::process::id());
    let _nodes = write_cluster(&section, &scope).await;
    let patronictl = Patronictl::new("/service/", &scope, &ctl).unwrap();

    let rows = patronictl.list_json().await.unwrap();
    assert_eq!(rows.len(), 3, "{rows:#?}");
    let row = |name: &str| rows.iter().find(|r| r["Member"] == name).unwrap().clone();
    assert_eq!(row("node1")["Role"], "Leader");
    assert_eq!(row("node1")["State"], "running");
    assert_eq!(row("node1")["Host"], "127.0.0.1:5432");
    assert_eq!(row("node1")["TL"], 2);
    assert_eq!(row("node2")["Role"], "Replica");
    assert_eq!(row("node2")["State"], "streaming");
    assert_eq!(row("node2")["Host"], "127.0.0.1:5433");
    assert_eq!(row("node3")["Role"], "Replica");
    assert_eq!(
        row("node3")["Receive Lag"],
        1,
        "1 MB behind the leader's optime, in MB: {rows:#?}"
    );

    let table = patronictl.run(&["list"]).await.unwrap();
    assert!(
        table.contains(&format!("Cluster: {scope} ({SYSID})")),
        "{table}"
    );

    let config = patronictl.run(&["show-config"]).await.unwrap();
    assert!(
        config.contains("ttl: 30") && config.contains("use_pg_rewind: true"),
        "{config}"
    );

    let history = patronictl.run(&["history", "-f", "json"]).await.unwrap();
    let history: serde_json::Value = serde_json::from_str(&history).unwrap();
    assert_eq!(history[0]["TL"], 1, "{history}");
    assert_eq!(history[0]["New Leader"], "node1", "{history}");
}

async fn pgha_reads_what_patronictl_wrote(section: DcsSection, ctl: CtlDcs) {
    let scope = format!("compat-edit-{}", std::process::id());
    let nodes = write_cluster(&section, &scope).await;
    let patronictl = Patronictl::new("/service/", &scope, &ctl).unwrap();
    patronictl
        .run(&[
            "edit-config",
            "--force",
            "-s",
            "ttl=20",
            "-s",
            "loop_wait=5",
            "-s",
            "retry_timeout=5",
            "-s",
            "postgresql.use_slots=false",
            "-p",
            "max_connections=200",
            "-p",
            "work_mem='8MB'",
            "-s",
            "failsafe_mode=true",
        ])
        .await
        .unwrap();
    let c = nodes[1].load().await.unwrap();
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let cfg = c.config.expect("config").value;
    assert_eq!(cfg.timing().0.ttl, Duration::from_secs(20));
    assert_eq!(cfg.timing().0.loop_wait, Duration::from_secs(5));
    assert!(!cfg.use_slots());
    assert!(
        cfg.use_pg_rewind(),
        "keys patronictl did not touch are kept"
    );
    assert!(cfg.failsafe_mode());
    let params = cfg.parameters().unwrap();
    assert_eq!(params.get("max_connections"), Some(&json!(200)));
    assert_eq!(params.get("work_mem"), Some(&json!("8MB")));
    assert!(cfg.review().errors.is_empty(), "{:?}", cfg.review());

    // And pgha's own compare-and-set on the version patronictl left works.
    let version = nodes[0].load().await.unwrap().config.unwrap().version;
    let mut next = cfg.clone();
    next.set_path("ttl", Some(json!(25)));
    nodes[0]
        .write_config(&next, Expect::Version(version))
        .await
        .unwrap();
    let shown = patronictl.run(&["show-config"]).await.unwrap();
    assert!(shown.contains("ttl: 25"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_patronictl_lists_a_cluster_pgha_wrote() {
    let etcd = EtcdServer::start().await.unwrap();
    let section = DcsSection::Etcd3(json!({"hosts": etcd.addr().to_string()}));
    patronictl_lists_what_pgha_wrote(
        section,
        CtlDcs::Etcd3 {
            hosts: etcd.addr().to_string(),
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_patronictl_lists_a_cluster_pgha_wrote() {
    let zk = ZooKeeperServer::start().await.unwrap();
    let section = DcsSection::ZooKeeper(json!({"hosts": [zk.connect_string()]}));
    patronictl_lists_what_pgha_wrote(
        section,
        CtlDcs::ZooKeeper {
            hosts: zk.connect_string(),
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_pgha_reads_values_patronictl_edit_config_wrote() {
    let etcd = EtcdServer::start().await.unwrap();
    let section = DcsSection::Etcd3(json!({"hosts": etcd.addr().to_string()}));
    pgha_reads_what_patronictl_wrote(
        section,
        CtlDcs::Etcd3 {
            hosts: etcd.addr().to_string(),
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_pgha_reads_values_patronictl_edit_config_wrote() {
    let zk = ZooKeeperServer::start().await.unwrap();
    let section = DcsSection::ZooKeeper(json!({"hosts": [zk.connect_string()]}));
    pgha_reads_what_patronictl_wrote(
        section,
        CtlDcs::ZooKeeper {
            hosts: zk.connect_string(),
        },
    )
    .await;
}
