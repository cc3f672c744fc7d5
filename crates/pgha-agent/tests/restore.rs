//! End-to-end: a new cluster restored from a base backup and a WAL archive
//! of another one, to a point in time, with Patroni's custom bootstrap
//! (`bootstrap.method` and its `recovery_conf`). Real etcd and PostgreSQL 15
//! on loopback.

// A panic is how a test fails; the helpers here are part of the tests.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::backup::{
    archiving, backup_dirs, base_backup, owned_dir, restore_script, switch_and_archive,
};
use pgha_testkit::cluster::{ClusterOptions, DcsKind, TestCluster};

fn agent() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pgha"))
}

const BOOT: Duration = Duration::from_secs(90);
const WITHIN: Duration = Duration::from_secs(60);

async fn one_value(c: &TestCluster, i: usize, sql: &str) -> String {
    c.sql(i, sql).await.unwrap().remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_a_cluster_is_restored_to_a_point_in_time_by_a_custom_bootstrap() {
    pgha_testkit::init_tracing();
    // The source cluster archives its WAL.
    let mut a = TestCluster::new(
        agent(),
        DcsKind::Etcd,
        ClusterOptions {
            nodes: 1,
            ..ClusterOptions::default()
        },
    )
    .await
    .unwrap();
    let dirs = backup_dirs();
    let (work, archive, backup) = (&dirs.work, &dirs.archive, &dirs.backup);
    a.edit_config(0, |y| archiving(&y, archive, false)).unwrap();
    a.start_all().unwrap();
    let p = a.wait_for_primary(BOOT).await.unwrap();
    a.sql(p, "CREATE TABLE t(id int primary key)")
        .await
        .unwrap();
    a.sql(p, "INSERT INTO t SELECT generate_series(1, 100)")
        .await
        .unwrap();

    // A base backup, then rows before and after the target time.
    base_backup(&a, p, backup);
    a.sql(p, "INSERT INTO t SELECT generate_series(101, 200)")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let target = one_value(&a, p, "SELECT now()::text").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    a.sql(p, "INSERT INTO t SELECT generate_series(201, 300)")
        .await
        .unwrap();
    switch_and_archive(&a, p, archive).await;

    // The new cluster: restored by a custom bootstrap method.
    let mut b = TestCluster::new(
        agent(),
        DcsKind::Etcd,
        ClusterOptions {
            nodes: 2,
            ..ClusterOptions::default()
        },
    )
    .await
    .unwrap();
    let script = restore_script(work.path(), backup);
    let method = format!(
        "  method: from_backup\n  from_backup:\n    command: {}\n    recovery_conf:\n      restore_command: cp {}/%f %p\n      recovery_target_time: '{target}'\n      recovery_target_action: promote\n",
        script.display(),
        archive.display()
    );
    for i in 0..2 {
        b.edit_config(i, |y| {
            let anchor = "  initdb:\n";
            assert!(y.contains(anchor));
            y.replacen(anchor, &format!("{method}{anchor}"), 1)
        })
        .unwrap();
    }
    b.start_all().unwrap();
    let bp = b
        .wait_converged(&[0, 1], BOOT)
        .await
        .expect("restored cluster");
    assert!(
        b.log(bp)
            .contains("running custom bootstrap method from_backup"),
        "{}",
        b.log(bp)
    );
    // Every row committed before the target, none after.
    assert_eq!(one_value(&b, bp, "SELECT count(*) FROM t").await, "200");
    assert_eq!(
        one_value(&b, bp, "SELECT max(id)::text FROM t").await,
        "200"
    );
    // A primary without recovery settings left behind, taking writes; its
    // replica streams them.
    assert_eq!(
        one_value(&b, bp, "SELECT current_setting('recovery_target_time')").await,
        ""
    );
    b.sql(bp, "INSERT INTO t VALUES (1000)").await.unwrap();
    let r = 1 - bp;
    b.wait_sql(r, "SELECT count(*) FROM t", WITHIN, |rows| rows == ["201"])
        .await
        .unwrap();
}

/// `create_replica_methods` with `no_leader`, as Patroni: every node of a
/// cluster is lost with its data. A node whose first method restores a
/// base backup and is marked `no_leader` creates its replica while no
/// leader runs, replays the WAL archive (`recovery_conf`), takes the lock
/// and promotes; the other node clones from it. The same node without
/// `no_leader` waits for a leader for ever (checked first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_a_lost_cluster_comes_back_from_a_backup_through_a_no_leader_method() {
    pgha_testkit::init_tracing();
    let mut c = TestCluster::new(
        agent(),
        DcsKind::Etcd,
        ClusterOptions {
            nodes: 2,
            ..ClusterOptions::default()
        },
    )
    .await
    .unwrap();
    let dirs = backup_dirs();
    let (work, archive, backup) = (&dirs.work, &dirs.archive, &dirs.backup);
    for i in 0..2 {
        c.edit_config(i, |y| archiving(&y, archive, true)).unwrap();
    }
    c.start_all().unwrap();
    let p = c.wait_converged(&[0, 1], BOOT).await.unwrap();
    c.sql(p, "CREATE TABLE t(id int primary key)")
        .await
        .unwrap();
    c.sql(p, "INSERT INTO t SELECT generate_series(1, 100)")
        .await
        .unwrap();
    base_backup(&c, p, backup);
    // Rows after the backup, in the archive only.
    c.sql(p, "INSERT INTO t SELECT generate_series(101, 200)")
        .await
        .unwrap();
    switch_and_archive(&c, p, archive).await;

    // Both hosts lost, with their data.
    for i in 0..2 {
        c.kill_node(i);
    }
    for i in 0..2 {
        let dir = c.data_dir(i).to_path_buf();
        if let Some(pid) = pgha_testkit::postgres_teardown::running_postmaster(&dir) {
            pgha_testkit::postgres_teardown::stop_postmasters(&[pid], Duration::from_secs(10));
        }
        std::fs::remove_dir_all(&dir).unwrap();
        owned_dir(&dir);
    }
    let script = restore_script(work.path(), backup);
    let methods = |no_leader: bool| {
        format!(
            "\npostgresql:\n  create_replica_methods: [from_backup, basebackup]\n  from_backup:\n    command: {}\n{}",
            script.display(),
            if no_leader {
                "    no_leader: true\n"
            } else {
                ""
            }
        )
    };
    let r = p;
    let plain = methods(false);
    c.edit_config(r, |y| y.replacen("\npostgresql:\n", &plain, 1))
        .unwrap();
    c.start_agent(r).unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        c.log(r).contains("waiting for a leader to clone from"),
        "{}",
        c.log(r)
    );
    assert!(!c.data_dir(r).join("PG_VERSION").exists());
    c.stop_agent(r).await.unwrap();

    c.edit_config(r, |y| y.replacen(&plain, &methods(true), 1))
        .unwrap();
    c.start_agent(r).unwrap();
    let back = c
        .wait_for_primary(BOOT)
        .await
        .unwrap_or_else(|e| panic!("no primary restored: {e}\n{}", c.log(r)));
    assert_eq!(back, r);
    assert!(
        c.log(r)
            .contains("no leader to clone from: creating a replica with a no_leader method"),
        "{}",
        c.log(r)
    );
    c.wait_sql(r, "SELECT count(*) FROM t", WITHIN, |rows| rows == ["200"])
        .await
        .unwrap();
    // The other node clones from it as usual.
    let other = 1 - r;
    c.start_agent(other).unwrap();
    c.wait_sql(other, "SELECT count(*) FROM t", BOOT, |rows| {
        rows == ["200"]
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", c.log(other)));
}
