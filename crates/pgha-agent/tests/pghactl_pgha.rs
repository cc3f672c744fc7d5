//! pghactl against a pgha cluster (the test kit's `TestCluster`: etcd,
//! three pgha agents, PostgreSQL 15): the DCS-reading commands and SQL,
//! compared with the real patronictl on the same cluster, and the same
//! REST-driven scenarios the Patroni tests run (`common/scenarios.rs`).

// A panic is how a test fails; the helpers here are part of the tests.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::pgha_cluster::PghaCluster;
use common::scenarios::{self, Operated, SUPERUSER_PASSWORD};
use common::{pghactl, pghactl_env};
use serde_json::Value;

async fn cluster() -> PghaCluster {
    pgha_testkit::init_tracing();
    PghaCluster::start().await.expect("pgha cluster")
}

/// The real patronictl with the same configuration file.
async fn patronictl(config: &Path, args: &[&str]) -> String {
    let bin = pgha_testkit::patronictl::venv().join("bin/patronictl");
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("-c").arg(config).args(args).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "patronictl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// pghactl and patronictl print the same for `args`. A live cluster's WAL
/// positions move, so a difference is retried a few times before it counts.
async fn same_as_patronictl(config: &Path, args: &[&str]) {
    let mut last = (String::new(), String::new());
    for _ in 0..5 {
        let ours = pghactl(config, args, "").await.ok().stdout;
        let theirs = patronictl(config, args).await;
        if ours == theirs {
            return;
        }
        last = (ours, theirs);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!(
        "pghactl {args:?} differs from patronictl:\n--- pghactl ---\n{}\n--- patronictl ---\n{}",
        last.0, last.1
    );
}

/// `pghactl query` as the superuser, password from the environment.
async fn query(cfg: &Path, args: &[&str]) -> common::Output {
    let mut all = vec!["query", "-U", "postgres", "-d", "postgres"];
    all.extend_from_slice(args);
    pghactl_env(cfg, &all, "", &[("PGPASSWORD", SUPERUSER_PASSWORD)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_commands_and_sql_on_pgha() {
    let c = cluster().await;
    let cfg = c.ctl_config();
    let leader = scenarios::wait_healthy(&c, scenarios::HEALTHY)
        .await
        .unwrap();

    for args in [
        &["list"][..],
        &["list", "-e"],
        &["list", "-f", "json"],
        &["list", "-f", "yaml"],
        &["list", "-f", "tsv"],
        &["topology"],
        &["history", "-f", "json"],
        &["show-config"],
        &["dsn"],
        &["dsn", "-r", "replica"],
    ] {
        same_as_patronictl(&cfg, args).await;
    }
    let rows: Value =
        serde_json::from_str(&pghactl(&cfg, &["list", "-f", "json"], "").await.ok().stdout)
            .unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(
        rows.iter()
            .filter(|r| r["Role"] == "Leader")
            .map(|r| r["Member"].clone())
            .collect::<Vec<_>>(),
        [leader.as_str()]
    );
    assert_eq!(
        rows.iter().filter(|r| r["State"] == "streaming").count(),
        2,
        "{rows:?}"
    );
    let dsn = pghactl(&cfg, &["dsn", "-m", &leader], "").await.ok().stdout;
    let port = c.cluster.nodes[c
        .cluster
        .nodes
        .iter()
        .position(|n| n.name == leader)
        .unwrap()]
    .pg_port;
    assert_eq!(dsn, format!("host=127.0.0.1 port={port}\n"));

    // SQL on the leader (default), a replica, and a named member; errors
    // name what went wrong.
    let out = query(
        &cfg,
        &["-c", "SELECT 1 AS a, 'x' AS b, NULL AS c, true AS d"],
    )
    .await
    .ok();
    assert_eq!(out.stdout, "a\tb\tc\td\n1\tx\tNone\tTrue\n");
    let out = query(
        &cfg,
        &[
            "-r",
            "replica",
            "--format",
            "pretty",
            "-c",
            "SELECT pg_is_in_recovery() AS r",
        ],
    )
    .await
    .ok();
    assert_eq!(
        out.stdout,
        "+------+\n| r    |\n+------+\n| True |\n+------+\n"
    );
    // Several statements: the last one's rows count (none here).
    let out = query(
        &cfg,
        &[
            "-r",
            "primary",
            "-c",
            "CREATE TABLE t(i int); INSERT INTO t VALUES (1), (2)",
        ],
    )
    .await
    .ok();
    assert_eq!(out.stdout, "");
    let out = query(
        &cfg,
        &[
            "-r",
            "primary",
            "--format",
            "yaml",
            "-c",
            "SELECT i FROM t ORDER BY i",
        ],
    )
    .await
    .ok();
    assert_eq!(out.stdout, "- i: 1\n- i: 2\n\n");
    let out = query(&cfg, &["-c", "SELECT nonsense"]).await.failed();
    assert!(
        out.stdout
            .contains("\tERROR, SQLSTATE: 42703: column \"nonsense\" does not exist"),
        "{out}"
    );
    let out = query(&cfg, &["-m", "node9", "-c", "SELECT 1"])
        .await
        .failed();
    assert!(
        out.stdout.contains(
            "No connection to member node9 is available: node9 is not a member of cluster"
        ),
        "{out}"
    );
    let out = pghactl_env(
        &cfg,
        &["query", "-U", "postgres", "-c", "SELECT 1"],
        "",
        &[("PGPASSWORD", "wrong")],
    )
    .await
    .failed();
    assert!(
        out.stdout.contains(&format!(
            "ERROR, SQLSTATE: connection to {leader} (127.0.0.1:{port}) failed: 28P01"
        )),
        "{out}"
    );
    let f = c.cluster.dir.path().join("q.sql");
    std::fs::write(&f, "SELECT count(*) AS n FROM t").unwrap();
    let out = query(&cfg, &["-r", "replica", "-f", f.to_str().unwrap()])
        .await
        .ok();
    assert!(
        out.stdout == "n\n2\n" || out.stdout == "n\n0\n",
        "replayed or not yet: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_and_failover_on_pgha() {
    scenarios::switchover_and_failover(&cluster().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_reload_reinit_and_flush_on_pgha() {
    scenarios::restart_reload_reinit_and_flush(&cluster().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_sql_on_pgha() {
    scenarios::pause_resume_credentials_and_sql(&cluster().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synchronous_mode_roles_on_pgha() {
    scenarios::synchronous_mode_roles(&cluster().await).await;
}
