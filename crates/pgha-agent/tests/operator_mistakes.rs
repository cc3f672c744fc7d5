//! Mistakes an operator makes, on a real DCS and PostgreSQL 15: a second
//! agent started with an existing member's name, the cluster's keys
//! deleted from the DCS under a running cluster. Nothing may be lost, no
//! second primary may appear, and the cluster must come back by itself.

// A panic is how a test fails; the helpers here are part of the tests.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use pgha_testkit::cluster::{ClusterOptions, DcsKind, TestCluster};
use tokio::time::Instant;

fn agent() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pgha"))
}

const BOOT: Duration = Duration::from_secs(60);

async fn cluster(kind: DcsKind, nodes: usize) -> TestCluster {
    pgha_testkit::init_tracing();
    let mut c = TestCluster::new(
        agent(),
        kind,
        ClusterOptions {
            nodes,
            ..ClusterOptions::default()
        },
    )
    .await
    .unwrap();
    c.start_all().unwrap();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_with_an_existing_members_name_is_refused_before_touching_postgres() {
    let mut c = cluster(DcsKind::Etcd, 2).await;
    let p = c.wait_converged(&[0, 1], BOOT).await.unwrap();
    let r = 1 - p;
    let name = c.nodes[r].name.clone();

    // A copy of the replica's file with new ports and a new data directory,
    // the name left as it was.
    let dup = c.add_node_as(&name, &format!("{name}-copy")).await.unwrap();
    c.start_agent(dup).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = c.agent_exit(dup) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the duplicate still runs:\n{}",
            c.log(dup)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.code(), Some(1), "{}", c.log(dup));
    let log = c.log(dup);
    assert!(
        log.contains(&format!(
            "Can't start; there is already a node named '{name}' running"
        )),
        "{log}"
    );
    assert!(
        log.contains(&c.nodes[r].api("/patroni")),
        "names the other server: {log}"
    );
    let data = &c.nodes[dup].data_dir;
    assert!(
        !data.join("PG_VERSION").exists(),
        "the duplicate touched PostgreSQL in {}",
        data.display()
    );
    // The real member is untouched: still a streaming replica.
    c.wait_converged(&[0, 1], Duration::from_secs(10))
        .await
        .unwrap();

    // Its own restart is not a duplicate: the replica's agent killed and
    // started again at once finds its member key, with its own addresses.
    c.kill_agent(r);
    c.start_agent(r).unwrap();
    c.wait_converged(&[0, 1], BOOT).await.unwrap();
    assert!(c.agent_exit(r).is_none(), "{}", c.log(r));
}
