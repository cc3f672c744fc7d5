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

/// A replica that received WAL the new leader never had (it was ahead of
/// the node that won) cannot follow it: PostgreSQL refuses a timeline that
/// forked off before its own position, and retries for ever. Made here on
/// purpose: replica B's walsender on the primary is frozen, so only
/// replica A receives the last rows; the primary's host dies; A may not
/// fail over (nofailover), so B wins, on a timeline forked where B stopped.
/// A must see the divergence (its timeline, its position, the `history`
/// key), rewind from B and stream again, with B's data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_a_replica_whose_wal_diverged_from_the_new_leader_is_rewound_and_streams_again() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    pgha_testkit::init_tracing();
    let mut c = TestCluster::new(agent(), DcsKind::Etcd, ClusterOptions::default())
        .await
        .unwrap();
    c.start_all().unwrap();
    let p = c.wait_converged(&[0, 1, 2], BOOT).await.unwrap();
    let replicas: Vec<usize> = (0..3).filter(|&i| i != p).collect();
    let (a, b) = (replicas[0], replicas[1]);

    // A may not become the leader.
    c.edit_config(a, |y| y + "tags:\n  nofailover: true\n")
        .unwrap();
    c.signal_agent(a, Signal::SIGHUP).unwrap();
    wait_until(Duration::from_secs(20), || async {
        matches!(c.api(a, "/patroni").await, Ok((_, s)) if s["tags"]["nofailover"] == true)
    })
    .await
    .expect("A is tagged nofailover");

    // B's walsender on the primary stops sending: B receives nothing more.
    let sql = format!(
        "SELECT pid FROM pg_stat_replication WHERE application_name = '{}'",
        c.nodes[b].name
    );
    let walsender: i32 = c.sql(p, &sql).await.unwrap()[0].parse().unwrap();
    kill(Pid::from_raw(walsender), Signal::SIGSTOP).unwrap();
    c.sql(
        p,
        "CREATE TABLE only_a_has_it(i int); INSERT INTO only_a_has_it SELECT generate_series(1, 1000)",
    )
    .await
    .unwrap();
    c.wait_sql(
        a,
        "SELECT count(*) FROM only_a_has_it",
        Duration::from_secs(20),
        |r| r == ["1000"],
    )
    .await
    .expect("A replayed the rows");

    // The primary's host dies (the frozen walsender with it).
    c.kill_node(p);
    let _ = kill(Pid::from_raw(walsender), Signal::SIGKILL);
    let leader = c.wait_for_primary(BOOT).await.unwrap();
    assert_eq!(
        leader,
        b,
        "B, the only candidate, leads:\n{}",
        c.logs_tail(20)
    );

    // A diverged: rewound from B, it streams from B again.
    c.wait_converged(&[a, b], Duration::from_secs(90))
        .await
        .unwrap_or_else(|e| panic!("A never streamed from B again: {e}"));
    let log = c.log(a);
    assert!(log.contains("my WAL diverged from its history"), "{log}");
    assert!(
        log.contains(&format!("rewound from {}", c.nodes[b].name)),
        "{log}"
    );
    assert_eq!(
        c.sql(
            a,
            "SELECT count(*) FROM pg_class WHERE relname = 'only_a_has_it'"
        )
        .await
        .unwrap(),
        ["0"],
        "A holds B's history now, without the rows only it had"
    );
    c.sql(b, "CREATE TABLE after_failover(i int)")
        .await
        .unwrap();
    c.wait_sql(
        a,
        "SELECT count(*) FROM pg_class WHERE relname = 'after_failover'",
        Duration::from_secs(20),
        |r| r == ["1"],
    )
    .await
    .expect("A replicates B's new writes");
}

/// `postgresql.recovery_conf` as Patroni: a replica that was down while
/// the primary recycled the WAL it needs catches up from the archive
/// (`restore_command`), then streams again. Without slots and with
/// `wal_keep_size: 0`, streaming alone cannot get that WAL back: without
/// the setting the replica stays behind (checked by hand).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_a_replica_catches_up_from_the_archive_with_recovery_conf() {
    pgha_testkit::init_tracing();
    let mut c = TestCluster::new(agent(), DcsKind::Etcd, ClusterOptions::default())
        .await
        .unwrap();
    let archive = c.dir.path().join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    if let Some((uid, gid)) = pgha_testkit::cluster::run_as_user().unwrap() {
        nix::unistd::chown(&archive, Some(uid), Some(gid)).unwrap();
    }
    let a = archive.display().to_string();
    for i in 0..c.nodes.len() {
        c.edit_config(i, |yaml| {
            yaml.replace("use_slots: true", "use_slots: false")
                .replace(
                    "wal_keep_size: 64MB\n",
                    &format!(
                        "wal_keep_size: 0\n        archive_mode: 'on'\n        \
                         archive_command: 'test ! -f {a}/%f && cp %p {a}/%f'\n"
                    ),
                )
                .replacen(
                    "\npostgresql:\n",
                    &format!(
                        "\npostgresql:\n  recovery_conf:\n    restore_command: cp {a}/%f %p\n"
                    ),
                    1,
                )
        })
        .unwrap();
    }
    c.start_all().unwrap();
    let p = c.wait_converged(&[0, 1, 2], BOOT).await.unwrap();
    let r = (p + 1) % 3;
    let shown = c.sql(r, "SHOW restore_command").await.unwrap();
    assert_eq!(shown, [format!("cp {a}/%f %p")]);

    c.sql(p, "CREATE TABLE t(id int)").await.unwrap();
    c.wait_sql(r, "SELECT count(*) FROM t", BOOT, |rows| rows == ["0"])
        .await
        .unwrap();
    // The segment the replica is in when it goes down.
    let needed = c
        .sql(p, "SELECT pg_walfile_name(pg_current_wal_lsn())")
        .await
        .unwrap()
        .remove(0);
    c.kill_node(r);
    // Several segments of WAL, archived, then recycled on the primary.
    for batch in 0..6 {
        c.sql(
            p,
            &format!(
                "INSERT INTO t SELECT generate_series({}, {}); SELECT pg_switch_wal()",
                batch * 1000 + 1,
                batch * 1000 + 1000
            ),
        )
        .await
        .unwrap();
    }
    let deadline = Instant::now() + BOOT;
    loop {
        c.sql(p, "CHECKPOINT").await.unwrap();
        let gone = c
            .sql(
                p,
                &format!("SELECT count(*) FROM pg_ls_waldir() WHERE name = '{needed}'"),
            )
            .await
            .unwrap();
        if gone == ["0"] && archive.join(&needed).exists() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{needed} still in the primary's pg_wal, or not archived"
        );
        c.sql(p, "SELECT pg_switch_wal()").await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    c.start_agent(r).unwrap();
    c.wait_sql(
        r,
        "SELECT count(*) FROM t",
        Duration::from_secs(60),
        |rows| rows == ["6000"],
    )
    .await
    .unwrap_or_else(|e| panic!("the replica did not catch up: {e}\n{}", c.log(r)));
    c.wait_converged(&[0, 1, 2], Duration::from_secs(60))
        .await
        .unwrap();
}

/// The `nostream` tag as Patroni: a replica fed from the WAL archive only.
/// It has no `primary_conninfo` and no slot on the leader, publishes `in
/// archive recovery` (as do `GET /patroni` and `pghactl list`), replays
/// what the primary archives, and is never "repaired" into streaming nor
/// counted as broken, however long it goes without streaming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_a_nostream_replica_replays_the_archive_only() {
    pgha_testkit::init_tracing();
    let mut c = TestCluster::new(agent(), DcsKind::Etcd, ClusterOptions::default())
        .await
        .unwrap();
    let archive = c.dir.path().join("archive");
    common::backup::owned_dir(&archive);
    for i in 0..c.nodes.len() {
        c.edit_config(i, |yaml| {
            let yaml = common::backup::archiving(&yaml, &archive, true);
            if i == 2 {
                format!("{yaml}tags:\n  nostream: true\n")
            } else {
                yaml
            }
        })
        .unwrap();
    }
    let started = Instant::now();
    c.start_all().unwrap();
    let p = c.wait_for_primary(BOOT).await.unwrap();
    assert_ne!(
        p, 2,
        "node3 bootstrapped the cluster; the test wants it a replica"
    );
    let d = 2;
    let name = c.nodes[d].name.clone();
    c.wait_sql(d, "SELECT pg_is_in_recovery()::text", BOOT, |r| {
        r == ["true"]
    })
    .await
    .unwrap_or_else(|e| panic!("{name} never ran as a replica: {e}\n{}", c.log(d)));

    // Rows reach it through the archive only.
    // pg_switch_wal in a transaction of its own: the commit must be in
    // the segment it closes, for the archive to have it.
    c.sql(
        p,
        "CREATE TABLE t(id int); INSERT INTO t SELECT generate_series(1, 500)",
    )
    .await
    .unwrap();
    c.sql(p, "SELECT pg_switch_wal()").await.unwrap();
    c.wait_sql(d, "SELECT count(*) FROM t", BOOT, |r| r == ["500"])
        .await
        .unwrap_or_else(|e| panic!("{name} did not replay the archive: {e}\n{}", c.log(d)));
    assert_eq!(
        c.sql(d, "SELECT count(*) FROM pg_stat_wal_receiver")
            .await
            .unwrap(),
        ["0"],
        "no WAL receiver"
    );
    assert_eq!(c.sql(d, "SHOW primary_conninfo").await.unwrap(), [""]);
    let (_, status) = c.api(d, "/patroni").await.unwrap();
    assert_eq!(
        status["replication_state"], "in archive recovery",
        "{status}"
    );

    // The leader keeps a slot for the streaming replica, none for it.
    let slots = "SELECT slot_name FROM pg_replication_slots ORDER BY 1";
    let other = (0..3).find(|&i| i != p && i != d).unwrap();
    c.wait_sql(p, slots, Duration::from_secs(20), |r| {
        r == [c.nodes[other].name.as_str()]
    })
    .await
    .unwrap();

    // Well past the not-streaming limit (ttl + loop_wait + retry_timeout
    // = 8 s here): never repaired, never counted as broken.
    let limit = Duration::from_secs(8);
    if let Some(rest) = (3 * limit).checked_sub(started.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    c.sql(p, "INSERT INTO t SELECT generate_series(501, 1000)")
        .await
        .unwrap();
    c.sql(p, "SELECT pg_switch_wal()").await.unwrap();
    c.wait_sql(d, "SELECT count(*) FROM t", BOOT, |r| r == ["1000"])
        .await
        .unwrap();
    let log = c.log(d);
    for never in ["repairing replication", "not streaming from leader"] {
        assert!(!log.contains(never), "{never:?} in {name}'s log:\n{log}");
    }
    let (_, status) = c.api(d, "/patroni").await.unwrap();
    assert!(
        status.get("replication_broken").is_none_or(|b| b != true),
        "{status}"
    );
    let list = common::pghactl(&c.ctl_config().unwrap(), &["list"], "")
        .await
        .ok();
    let row = list
        .stdout
        .lines()
        .find(|l| l.contains(&name))
        .unwrap_or_default()
        .to_string();
    assert!(row.contains("in archive recovery"), "{}", list.stdout);
}
