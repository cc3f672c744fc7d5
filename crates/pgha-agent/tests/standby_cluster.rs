//! End-to-end: a standby cluster (`standby_cluster`) replicating from a
//! primary cluster, each with three agents and PostgreSQL 15 on loopback
//! and a DCS of its own (two etcd, or two ZooKeeper, servers: the clusters
//! share nothing but the replication stream, as in two datacenters).
//!
//! The standby cluster is created from the primary one, its lock holder
//! runs as the standby leader replicating through a permanent slot of the
//! primary cluster, the others cascade from it. Rows written on the primary
//! cluster arrive on every standby member; a failover inside the primary
//! cluster (the standby cluster is pointed at the new primary, as an
//! operator without a virtual IP would), one inside the standby cluster and
//! a switchover there lose none; `pghactl promote-cluster` (removing
//! `standby_cluster`) promotes the standby cluster with every acknowledged
//! row.

// A panic is how a test fails; the helpers here are part of the tests.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use pgha_testkit::cluster::{ClusterOptions, DcsKind, TestCluster};
use pgha_testkit::patronictl::{DcsSection, Patronictl};
use tokio::time::Instant;

fn agent() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pgha"))
}

const BOOT: Duration = Duration::from_secs(90);
const WITHIN: Duration = Duration::from_secs(60);

/// The standby cluster's member whose `GET /patroni` says `standby_leader`,
/// answering `/standby-leader` 200 and `/primary` 503, once every member
/// runs; the others must be replicas streaming from it.
async fn wait_standby_leader(b: &TestCluster, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let mut leader = None;
        let mut streaming = 0;
        for i in 0..b.nodes.len() {
            let Ok((_, s)) = b.api(i, "/patroni").await else {
                continue;
            };
            match s["role"].as_str() {
                Some("standby_leader") => leader = Some(i),
                Some("replica") if s["replication_state"] == "streaming" => streaming += 1,
                _ => {}
            }
        }
        if let Some(l) = leader
            && streaming == b.nodes.len() - 1
        {
            let code = |path: &'static str| async move { b.api(l, path).await.map(|(c, _)| c) };
            assert_eq!(code("/standby-leader").await.unwrap(), 200);
            assert_eq!(code("/leader").await.unwrap(), 200);
            assert_eq!(code("/primary").await.unwrap(), 503);
            assert_eq!(code("/replica").await.unwrap(), 503);
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "no standby leader with every other member streaming:\n{}",
            b.logs_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Inserts `from..=to` into `t` on node `i` of `c`, one row per statement:
/// each acknowledged row is one the standby cluster must end up with.
async fn write_rows(c: &TestCluster, i: usize, from: u32, to: u32) {
    for id in from..=to {
        c.sql(i, &format!("INSERT INTO t VALUES ({id})"))
            .await
            .unwrap();
    }
}

async fn wait_rows(c: &TestCluster, nodes: &[usize], count: u32) {
    for &i in nodes {
        c.wait_sql(i, "SELECT count(*) FROM t", WITHIN, |r| {
            r == [count.to_string()]
        })
        .await
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", c.nodes[i].name, c.log(i)));
    }
}

/// `standby_cluster` for the primary cluster's node `p`, through its slot.
fn source(a: &TestCluster, p: usize) -> String {
    format!(
        r#"{{"standby_cluster": {{"host": "127.0.0.1", "port": {}, "primary_slot_name": "standby_b"}}}}"#,
        a.nodes[p].pg_port
    )
}

async fn patch_config(c: &TestCluster, i: usize, body: &str) {
    let (code, text) = c
        .api_call(i, "PATCH", "/config", Some(body), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(code, 200, "PATCH /config {body}: {text}");
}

async fn standby_cluster_follows_fails_over_and_is_promoted(kind: DcsKind) {
    pgha_testkit::init_tracing();
    // The primary cluster, with a permanent slot for the standby cluster.
    let mut a = TestCluster::new(agent(), kind, ClusterOptions::default())
        .await
        .expect("primary cluster");
    a.start_all().unwrap();
    let p = a.wait_converged(&[0, 1, 2], BOOT).await.expect("converged");
    patch_config(&a, p, r#"{"slots": {"standby_b": {"type": "physical"}}}"#).await;
    a.sql(p, "CREATE TABLE t(id int primary key)")
        .await
        .unwrap();
    write_rows(&a, p, 1, 100).await;

    // The standby cluster, created from it.
    let mut b = TestCluster::new(agent(), kind, ClusterOptions::default())
        .await
        .expect("standby cluster");
    let bootstrap = format!(
        "    standby_cluster: {{host: 127.0.0.1, port: {}, primary_slot_name: standby_b}}\n",
        a.nodes[p].pg_port
    );
    for i in 0..3 {
        b.edit_config(i, |y| {
            let anchor = "    maximum_lag_on_failover: 1048576\n";
            assert!(y.contains(anchor), "{y}");
            y.replace(anchor, &format!("{anchor}{bootstrap}"))
        })
        .unwrap();
    }
    b.start_all().unwrap();
    let sl = wait_standby_leader(&b, BOOT).await;
    wait_rows(&b, &[0, 1, 2], 100).await;
    let slot_active = "SELECT active FROM pg_replication_slots WHERE slot_name = 'standby_b'";
    a.wait_sql(p, slot_active, WITHIN, |r| r == ["t"])
        .await
        .expect("the standby leader streams through standby_b");
    assert!(
        b.sql(sl, "CREATE TABLE nope(i int)").await.is_err(),
        "the standby leader is read-only"
    );
    if kind == DcsKind::Etcd {
        // The real patronictl sees a standby cluster.
        let text = std::fs::read_to_string(b.ctl_config().unwrap()).unwrap();
        let hosts = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("hosts: "))
            .unwrap()
            .to_string();
        let ctl = Patronictl::new("/service/", &b.scope, &DcsSection::Etcd3 { hosts }).unwrap();
        let rows = ctl.list_json().await.unwrap();
        let roles: Vec<&str> = rows.iter().filter_map(|r| r["Role"].as_str()).collect();
        assert_eq!(
            roles.iter().filter(|r| **r == "Standby Leader").count(),
            1,
            "{rows:#?}"
        );
        assert_eq!(
            roles.iter().filter(|r| **r == "Replica").count(),
            2,
            "{rows:#?}"
        );
    }

    // Failover inside the primary cluster; the standby cluster is pointed
    // at the new primary and the permanent slot there.
    write_rows(&a, p, 101, 200).await;
    let a_replicas: Vec<usize> = (0..3).filter(|&i| i != p).collect();
    wait_rows(&a, &a_replicas, 200).await;
    a.kill_node(p);
    let p2 = a.wait_for_primary(WITHIN).await.expect("failover in A");
    let a_up: Vec<usize> = (0..3).filter(|&i| i != p).collect();
    a.wait_converged(&a_up, WITHIN).await.expect("A converged");
    patch_config(&b, sl, &source(&a, p2)).await;
    write_rows(&a, p2, 201, 300).await;
    wait_rows(&b, &[0, 1, 2], 300).await;

    // Failover inside the standby cluster.
    b.kill_node(sl);
    let b_up: Vec<usize> = (0..3).filter(|&i| i != sl).collect();
    let deadline = Instant::now() + WITHIN;
    let sl2 = loop {
        let mut found = None;
        for &i in &b_up {
            if let Ok((_, s)) = b.api(i, "/patroni").await
                && s["role"] == "standby_leader"
            {
                found = Some(i);
            }
        }
        if let Some(i) = found {
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "no new standby leader:\n{}",
            b.logs_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    write_rows(&a, p2, 301, 400).await;
    wait_rows(&b, &b_up, 400).await;

    // A switchover inside the standby cluster (the killed member stays down).
    let ctl = b.ctl_config().unwrap();
    let cand = b_up.iter().copied().find(|&i| i != sl2).unwrap();
    let out = common::pghactl(
        &ctl,
        &["switchover", "--candidate", &b.nodes[cand].name, "--force"],
        "",
    )
    .await
    .ok();
    assert!(out.stdout.contains("Successfully switched over"), "{out}");
    let deadline = Instant::now() + WITHIN;
    loop {
        let b = &b;
        let role = |i: usize| async move { b.api(i, "/patroni").await.map(|(_, s)| s) };
        let (c, o) = (role(cand).await, role(sl2).await);
        if c.is_ok_and(|s| s["role"] == "standby_leader")
            && o.is_ok_and(|s| s["role"] == "replica" && s["replication_state"] == "streaming")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "switchover:\n{}",
            b.logs_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let sl2 = cand;
    write_rows(&a, p2, 401, 450).await;
    wait_rows(&b, &b_up, 450).await;

    // Promote the standby cluster (patronictl 4.1's promote-cluster):
    // every acknowledged row is there, and it takes writes.
    let out = common::pghactl(&ctl, &["promote-cluster", "--force"], "")
        .await
        .ok();
    assert!(
        out.stdout.contains("cluster is successfully promoted"),
        "{out}"
    );
    assert!(matches!(b.api(sl2, "/primary").await, Ok((200, _))));
    let rows = b.sql(sl2, "SELECT count(*) FROM t").await.unwrap();
    assert_eq!(rows, ["450"], "every acknowledged row");
    b.sql(sl2, "INSERT INTO t VALUES (451)").await.unwrap();
    let other = b_up.iter().copied().find(|&i| i != sl2).unwrap();
    wait_rows(&b, &[other], 451).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_standby_cluster_follows_fails_over_and_is_promoted() {
    standby_cluster_follows_fails_over_and_is_promoted(DcsKind::Etcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_standby_cluster_follows_fails_over_and_is_promoted() {
    standby_cluster_follows_fails_over_and_is_promoted(DcsKind::ZooKeeper).await;
}

/// A standby cluster fed from the primary cluster's WAL archive only
/// (`standby_cluster` with a `restore_command` and no `host`, as Patroni):
/// its standby leader is created by the replica method
/// `standby_cluster.create_replica_methods` names (a restore of a base
/// backup: there is no server to run pg_basebackup against), replays the
/// archive, and its replica cascades from it. Every archived row arrives;
/// removing `standby_cluster` promotes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_a_standby_cluster_replays_the_archive_only() {
    use common::backup::{archiving, backup_dirs, base_backup, restore_script, switch_and_archive};
    pgha_testkit::init_tracing();
    let mut a = TestCluster::new(
        agent(),
        DcsKind::Etcd,
        ClusterOptions {
            nodes: 1,
            ..ClusterOptions::default()
        },
    )
    .await
    .expect("primary cluster");
    let dirs = backup_dirs();
    let (work, archive, backup) = (&dirs.work, &dirs.archive, &dirs.backup);
    a.edit_config(0, |y| archiving(&y, archive, false)).unwrap();
    a.start_all().unwrap();
    let p = a.wait_for_primary(BOOT).await.unwrap();
    a.sql(p, "CREATE TABLE t(id int primary key)")
        .await
        .unwrap();
    write_rows(&a, p, 1, 100).await;
    base_backup(&a, p, backup);
    write_rows(&a, p, 101, 200).await;
    switch_and_archive(&a, p, archive).await;

    // The standby cluster: no host, the archive and a restore method.
    let mut b = TestCluster::new(
        agent(),
        DcsKind::Etcd,
        ClusterOptions {
            nodes: 2,
            ..ClusterOptions::default()
        },
    )
    .await
    .expect("standby cluster");
    let script = restore_script(work.path(), backup);
    let bootstrap = format!(
        "    standby_cluster: {{restore_command: 'cp {}/%f %p', create_replica_methods: [from_backup]}}\n",
        archive.display()
    );
    for i in 0..2 {
        b.edit_config(i, |y| {
            let anchor = "    maximum_lag_on_failover: 1048576\n";
            assert!(y.contains(anchor), "{y}");
            y.replace(anchor, &format!("{anchor}{bootstrap}")).replacen(
                "\npostgresql:\n",
                &format!(
                    "\npostgresql:\n  from_backup:\n    command: {}\n",
                    script.display()
                ),
                1,
            )
        })
        .unwrap();
    }
    b.start_all().unwrap();
    let sl = wait_standby_leader(&b, BOOT).await;
    assert!(
        b.log(sl).contains("replicating from archive"),
        "{}",
        b.log(sl)
    );
    wait_rows(&b, &[0, 1], 200).await;
    assert_eq!(
        b.sql(sl, "SELECT count(*) FROM pg_stat_wal_receiver")
            .await
            .unwrap(),
        ["0"],
        "the standby leader streams from nowhere"
    );
    write_rows(&a, p, 201, 300).await;
    switch_and_archive(&a, p, archive).await;
    wait_rows(&b, &[0, 1], 300).await;

    // Promoted: writable, its replica follows.
    patch_config(&b, sl, r#"{"standby_cluster": null}"#).await;
    let bp = b.wait_for_primary(WITHIN).await.unwrap();
    b.sql(bp, "INSERT INTO t VALUES (1000)").await.unwrap();
    wait_rows(&b, &[0, 1], 301).await;
}

/// `pghactl demote-cluster` of a primary cluster that wrote past its new
/// source: the switch back after a disaster-recovery promotion. The
/// standby cluster B was promoted while the primary cluster A went on
/// writing; demoted with B as its source, A's leader is rewound against B
/// (pg_rewind from the remote server, as Patroni) and follows it as the
/// standby leader, A's replica is rewound against its standby leader (the
/// history key tells it its WAL diverged), and both end up with B's rows
/// and none of A's after the fork.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_demote_cluster_rewinds_a_primary_that_wrote_past_its_new_source() {
    pgha_testkit::init_tracing();
    let mut a = TestCluster::new(
        agent(),
        DcsKind::Etcd,
        ClusterOptions {
            nodes: 2,
            ..ClusterOptions::default()
        },
    )
    .await
    .expect("primary cluster");
    a.start_all().unwrap();
    let p = a.wait_converged(&[0, 1], BOOT).await.expect("converged");
    patch_config(&a, p, r#"{"slots": {"standby_b": {"type": "physical"}}}"#).await;
    a.sql(p, "CREATE TABLE t(id int primary key)")
        .await
        .unwrap();
    write_rows(&a, p, 1, 100).await;

    let mut b = TestCluster::new(
        agent(),
        DcsKind::Etcd,
        ClusterOptions {
            nodes: 1,
            ..ClusterOptions::default()
        },
    )
    .await
    .expect("standby cluster");
    let bootstrap = format!(
        "    standby_cluster: {{host: 127.0.0.1, port: {}, primary_slot_name: standby_b}}\n",
        a.nodes[p].pg_port
    );
    b.edit_config(0, |y| {
        let anchor = "    maximum_lag_on_failover: 1048576\n";
        y.replace(anchor, &format!("{anchor}{bootstrap}"))
    })
    .unwrap();
    b.start_all().unwrap();
    wait_standby_leader(&b, BOOT).await;
    wait_rows(&b, &[0], 100).await;

    // Disaster recovery: B is promoted and takes writes; A (not really
    // gone) goes on writing too.
    patch_config(&b, 0, r#"{"standby_cluster": null}"#).await;
    b.wait_for_primary(WITHIN).await.expect("B promoted");
    write_rows(&b, 0, 101, 150).await;
    write_rows(&a, p, 1001, 1010).await;
    wait_rows(&a, &[1 - p], 110).await;

    // The switch back: A becomes a standby cluster of B.
    let out = common::pghactl(
        &a.ctl_config().unwrap(),
        &[
            "demote-cluster",
            "--host",
            "127.0.0.1",
            "--port",
            &b.nodes[0].pg_port.to_string(),
            "--force",
        ],
        "",
    )
    .await
    .ok();
    assert!(out.stdout.contains("demoted"), "{out}");
    let sl = wait_standby_leader(&a, BOOT).await;
    assert!(
        a.log(sl)
            .contains("rewound from the standby cluster's source"),
        "{}",
        a.log(sl)
    );
    write_rows(&b, 0, 151, 160).await;
    wait_rows(&a, &[0, 1], 160).await;
    for i in 0..2 {
        assert_eq!(
            a.sql(i, "SELECT count(*) FROM t WHERE id > 1000")
                .await
                .unwrap(),
            ["0"],
            "{}: A's writes after the fork are gone",
            a.nodes[i].name
        );
    }
}
