//! End-to-end, scenario M1: a replica that is not really replicating.
//! Real etcd, three agents, three PostgreSQL 15 servers on loopback.
//!
//! A replica's `primary_conninfo` is pointed at a port nobody listens on
//! with `ALTER SYSTEM` (which wins over pgha's `postgresql.conf`). While it
//! does not stream, `/replica?replication_state=streaming` and `/readiness`
//! answer 503, its member key and `pghactl list` say it is not streaming;
//! past the limit (ttl + loop_wait + retry_timeout = 8 s here) the agent
//! resets the override, rewrites `primary_conninfo` for the leader and
//! reloads, and the replica streams again. Every wait is bounded.

// A panic is how a test fails; the helpers here are part of the tests.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use pgha_testkit::cluster::{ClusterOptions, DcsKind, TestCluster};
use serde_json::Value;
use tokio::time::Instant;

fn agent() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pgha"))
}

const BOOT: Duration = Duration::from_secs(60);

/// Polls `check` every 100 ms until it is true; the time it took, or
/// `None` after `within`.
async fn wait_until<F, Fut>(within: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return Some(start.elapsed());
        }
        if start.elapsed() > within {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn code(c: &TestCluster, i: usize, path: &str) -> u16 {
    c.api(i, path).await.map_or(0, |(code, _)| code)
}

/// Node `i`'s member as the DCS has it (`GET /cluster` on node `via`
/// reads the member keys).
async fn member_state(c: &TestCluster, via: usize, i: usize) -> Option<String> {
    let (_, body) = c.api(via, "/cluster").await.ok()?;
    body["members"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == c.nodes[i].name.as_str())
        .and_then(|m| m["state"].as_str().map(String::from))
}

/// The `State` column of `pghactl list` for node `i`.
async fn list_state(c: &TestCluster, i: usize) -> Option<String> {
    let cfg = c.ctl_config().ok()?;
    let out = common::pghactl(&cfg, &["list", "-f", "json"], "").await;
    let rows: Value = serde_json::from_str(&out.stdout).ok()?;
    rows.as_array()?
        .iter()
        .find(|r| r["Member"] == c.nodes[i].name.as_str())
        .and_then(|r| r["State"].as_str().map(String::from))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_a_replica_following_nowhere_is_reported_and_repaired() {
    pgha_testkit::init_tracing();
    let mut c = TestCluster::new(agent(), DcsKind::Etcd, ClusterOptions::default())
        .await
        .expect("cluster");
    c.start_all().expect("start agents");
    let p = c.wait_converged(&[0, 1, 2], BOOT).await.expect("converged");
    let r = (0..3).find(|&i| i != p).unwrap();
    let o = &c.options;
    let limit = Duration::from_secs(o.ttl + o.loop_wait + o.retry_timeout);
    assert_eq!(
        code(&c, r, "/replica?replication_state=streaming").await,
        200
    );
    // /readiness follows the agent's own view, published once per loop:
    // it may trail the SQL-level convergence check by a cycle.
    pgha_testkit::wait::until(
        "/readiness 200 on a streaming replica",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async { (code(&c, r, "/readiness").await == 200).then_some(()) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", c.log(r)));

    // Break it: nobody listens on this port.
    let nowhere = pgha_testkit::ports::free_port().unwrap();
    c.sql(
        r,
        &format!(
            "ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port={nowhere} user=replicator'"
        ),
    )
    .await
    .unwrap();
    let broken_at = Instant::now();
    c.sql(r, "SELECT pg_reload_conf()").await.unwrap();

    // Reported at once (within a cycle or two), well before the repair.
    let detected = wait_until(limit, || async {
        code(&c, r, "/replica?replication_state=streaming").await == 503
    })
    .await
    .unwrap_or_else(|| panic!("still streaming?\n{}", c.logs_tail(30)));
    eprintln!("M1: /replica?replication_state=streaming is 503 after {detected:?}");
    assert_eq!(code(&c, r, "/readiness").await, 503);
    // /replica without the state filter still answers: it is a running
    // replica, as in Patroni.
    assert_eq!(code(&c, r, "/replica").await, 200);
    let (_, status) = c.api(r, "/patroni").await.unwrap();
    assert_eq!(
        status["replication_state"], "in archive recovery",
        "{status}"
    );
    let shown = wait_until(limit, || async {
        member_state(&c, p, r).await.as_deref() == Some("in archive recovery")
    })
    .await;
    assert!(
        shown.is_some(),
        "member key: {:?}",
        member_state(&c, p, r).await
    );
    assert_eq!(
        list_state(&c, r).await.as_deref(),
        Some("in archive recovery")
    );
    assert!(
        broken_at.elapsed() < limit,
        "the checks while broken took longer than the limit ({:?}); the repair may have come first",
        broken_at.elapsed()
    );

    // Repaired by the agent: streaming from the leader again.
    let bound = limit + Duration::from_secs(o.loop_wait) + Duration::from_secs(15);
    wait_until(bound, || async {
        code(&c, r, "/replica?replication_state=streaming").await == 200
    })
    .await
    .unwrap_or_else(|| panic!("not repaired within {bound:?}\n{}", c.log(r)));
    let repaired = broken_at.elapsed();
    eprintln!("M1: streaming again {repaired:?} after the break (limit {limit:?})");
    assert!(
        repaired > limit,
        "repaired after {repaired:?}, before the limit {limit:?}?"
    );
    assert_eq!(code(&c, r, "/readiness").await, 200);
    let upstream = c
        .sql(
            r,
            "SELECT sender_port::text FROM pg_stat_wal_receiver WHERE status = 'streaming'",
        )
        .await
        .unwrap();
    assert_eq!(upstream, [c.nodes[p].pg_port.to_string()]);
    assert_eq!(
        c.sql(
            r,
            "SELECT count(*)::text FROM pg_file_settings WHERE name = 'primary_conninfo' \
             AND sourcefile LIKE '%postgresql.auto.conf'"
        )
        .await
        .unwrap(),
        ["0"]
    );
    let log = c.log(r);
    assert!(
        log.contains("replication broken: not streaming from"),
        "{log}"
    );
    assert!(
        log.contains("repairing replication: not streaming from leader"),
        "{log}"
    );
    assert!(log.contains("replication repaired"), "{log}");
    wait_until(limit, || async {
        member_state(&c, p, r).await.as_deref() == Some("streaming")
    })
    .await
    .expect("member key says streaming again");
    assert_eq!(list_state(&c, r).await.as_deref(), Some("streaming"));

    // And it replicates.
    c.sql(p, "CREATE TABLE m1(id int); INSERT INTO m1 VALUES (1)")
        .await
        .unwrap();
    c.wait_sql(r, "SELECT count(*) FROM m1", Duration::from_secs(30), |r| {
        r == ["1"]
    })
    .await
    .unwrap();
    c.wait_converged(&[0, 1, 2], Duration::from_secs(30))
        .await
        .expect("converged again");
}
