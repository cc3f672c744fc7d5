//! The dynamic configuration's keys that pgha refuses (standby_cluster),
//! at every entry point, on a real
//! etcd and PostgreSQL 15: a node's `bootstrap.dcs`, `PATCH`/`PUT /config`,
//! `pghactl edit-config`, and a `config` key written by someone else (as
//! Patroni would) that the running cluster reads each cycle.

// A panic is how a test fails; the helpers here are part of the tests.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use pgha_core::dcs::DcsExt;
use pgha_core::model::{DynamicConfig, Expect};
use pgha_testkit::cluster::{ClusterOptions, DcsKind, TestCluster};
use tokio::time::Instant;

use common::pgha_cluster::dcs_client;
use common::pghactl;

fn agent() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pgha"))
}

const BOOT: Duration = Duration::from_secs(60);
const CALL: Duration = Duration::from_secs(10);

async fn one_node() -> TestCluster {
    pgha_testkit::init_tracing();
    TestCluster::new(
        agent(),
        DcsKind::Etcd,
        ClusterOptions {
            nodes: 1,
            ..ClusterOptions::default()
        },
    )
    .await
    .unwrap()
}

/// Waits until `check` holds, or fails with what the node logged.
async fn wait_until(c: &TestCluster, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "gave up waiting for {what}:\n{}",
            c.logs_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_bootstrap_dcs_sets_standby_cluster_never_runs_initdb() {
    let mut c = one_node().await;
    // Neither host nor restore_command: a standby cluster with nothing to
    // replicate from, which pgha refuses.
    let standby = "    standby_cluster: {port: 5999}\n";
    c.edit_config(0, |y| {
        y.replace(
            "    maximum_lag_on_failover: 1048576\n",
            &format!("    maximum_lag_on_failover: 1048576\n{standby}"),
        )
    })
    .unwrap();
    c.start_agent(0).unwrap();
    let dcs = dcs_client(&c.ctl_config().unwrap(), &c.scope).unwrap();
    wait_until(&c, "three refusals in the log", async || {
        c.log(0)
            .matches("will not create it: bootstrap.dcs.standby_cluster")
            .count()
            >= 3
    })
    .await;
    let data = &c.nodes[0].data_dir;
    assert!(
        !data.join("PG_VERSION").exists(),
        "initdb ran in {}:\n{}",
        data.display(),
        c.log(0)
    );
    let cluster = dcs.load().await.unwrap();
    assert!(cluster.initialize.is_none() && cluster.leader.is_none());
    assert!(c.agent_pid(0).is_some(), "the agent keeps running");

    // The key, and nothing else, kept it from bootstrapping.
    c.stop_agent(0).await.unwrap();
    c.edit_config(0, |y| y.replace(standby, "")).unwrap();
    c.start_agent(0).unwrap();
    c.wait_for_primary(BOOT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_keys_are_refused_by_every_writer_and_reported_when_already_stored() {
    let mut c = one_node().await;
    c.start_agent(0).unwrap();
    let p = c.wait_for_primary(BOOT).await.unwrap();
    let ctl = c.ctl_config().unwrap();
    let dcs = dcs_client(&ctl, &c.scope).unwrap();
    let stored = async || dcs.load().await.unwrap().config.unwrap();
    let before = stored().await;

    // REST: 400 naming the key, nothing written.
    for (method, body, key) in [
        (
            "PATCH",
            r#"{"standby_cluster": {"port": 5999}}"#,
            "standby_cluster",
        ),
        (
            "PUT",
            r#"{"ttl": 5, "standby_cluster": {"port": 5998, "host": ""}}"#,
            "standby_cluster",
        ),
    ] {
        let (code, text) = c
            .api_call(p, method, "/config", Some(body), CALL)
            .await
            .unwrap();
        assert_eq!(code, 400, "{method} {body}: {text}");
        assert!(text.contains(&format!("refused: {key}: ")), "{text}");
        assert_eq!(
            stored().await.version,
            before.version,
            "{method} {body} wrote"
        );
    }

    // pghactl edit-config: exit 1 naming the key, nothing written.
    for set in ["standby_cluster.port=5999"] {
        let out = pghactl(&ctl, &["edit-config", "-s", set, "--force"], "")
            .await
            .failed();
        assert_eq!(out.code, 1, "{out}");
        let key = set.split(['=', '.']).next().unwrap();
        assert!(out.stderr.contains(&format!("refused: {key}: ")), "{out}");
        assert_eq!(
            stored().await.version,
            before.version,
            "edit-config -s {set} wrote"
        );
    }
    // What pgha only warns about is written, with the warning.
    let out = pghactl(
        &ctl,
        &["edit-config", "-s", "check_timeline=true", "--force"],
        "",
    )
    .await
    .ok();
    assert!(
        out.stderr
            .contains("Warning: check_timeline: not supported by pgha yet; ignored"),
        "{out}"
    );

    // Written by someone else (Patroni, by hand): the cluster runs on and
    // says so in the log on every cycle, in GET /patroni, /metrics and
    // pghactl list.
    let current = stored().await;
    let mut patronis = current.value.clone();
    patronis.set_path("standby_cluster.port", Some(serde_json::json!(5999)));
    dcs.write_config(&patronis, Expect::Version(current.version.clone()))
        .await
        .unwrap();
    wait_until(&c, "GET /patroni to name the key", async || {
        let (_, s) = c.api(p, "/patroni").await.unwrap();
        s["unsupported_config"].as_array().map(Vec::len) == Some(1)
    })
    .await;
    let (_, s) = c.api(p, "/patroni").await.unwrap();
    assert_eq!(s["unsupported_config"][0]["key"], "standby_cluster");
    let (_, metrics) = c.api_call(p, "GET", "/metrics", None, CALL).await.unwrap();
    assert!(
        metrics.contains(&format!(
            "pgha_unsupported_config{{scope=\"{}\",name=\"node1\"}} 1",
            c.scope
        )),
        "{metrics}"
    );
    let cycles = |log: &str| {
        log.matches(
            "asks for what pgha does not do, and the cluster runs without it: standby_cluster",
        )
        .count()
    };
    let seen = cycles(&c.log(p));
    wait_until(&c, "the report on later cycles too", async || {
        cycles(&c.log(p)) >= seen + 2
    })
    .await;
    let list = pghactl(&ctl, &["list"], "").await.ok();
    assert!(
        list.stdout.contains(" WARNING: standby_cluster: "),
        "{list}"
    );
    // The primary runs on, and takes writes.
    c.sql(p, "CREATE TABLE still_writable(i int)")
        .await
        .unwrap();

    // Keys already stored may stay while other keys change; removing them
    // ends the report.
    pghactl(&ctl, &["edit-config", "-s", "loop_wait=2", "--force"], "")
        .await
        .ok();
    pghactl(
        &ctl,
        &["edit-config", "-s", "standby_cluster=null", "--force"],
        "",
    )
    .await
    .ok();
    wait_until(&c, "the report to end", async || {
        let (_, s) = c.api(p, "/patroni").await.unwrap();
        s.get("unsupported_config").is_none()
    })
    .await;
    let after: DynamicConfig = stored().await.value;
    assert_eq!(after.get("loop_wait"), Some(&serde_json::json!(2)));
    assert!(after.get("standby_cluster").is_none());
    assert!(
        !pghactl(&ctl, &["list"], "")
            .await
            .ok()
            .stdout
            .contains("WARNING")
    );
}
