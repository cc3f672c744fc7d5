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

use common::pgha_cluster::dcs_client;
use common::pghactl;

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

/// `etcdctl del --prefix /service/<scope>/` (or ZooKeeper's `deleteall`)
/// under a running cluster with a writer.
async fn the_cluster_comes_back_after_its_keys_are_deleted(kind: DcsKind) {
    let c = cluster(kind, 3).await;
    let p = c.wait_converged(&[0, 1, 2], BOOT).await.unwrap();
    let ctl = c.ctl_config().unwrap();
    let dcs = dcs_client(&ctl, &c.scope).unwrap();
    // A change made since bootstrap: it must come back, not bootstrap.dcs.
    pghactl(&ctl, &["edit-config", "-p", "work_mem=7MB", "--force"], "")
        .await
        .ok();
    let before = dcs.load().await.unwrap();
    let config = before.config.clone().unwrap().value;
    assert_eq!(
        config.parameters().and_then(|p| p.get("work_mem")),
        Some(&serde_json::json!("7MB"))
    );
    let sysid = before.initialize.clone().unwrap().value;
    let leader = c.nodes[p].name.clone();
    c.sql(p, "CREATE TABLE kept(i int)").await.unwrap();
    // The agents have adopted the edited configuration.
    tokio::time::sleep(Duration::from_secs(2)).await;

    dcs.delete_cluster().await.unwrap();
    let wiped = Instant::now();
    let mut rows = 0;
    let back = loop {
        // A writer keeps writing to the primary, and never finds two.
        let primaries = {
            let mut n = 0;
            for i in 0..3 {
                n += usize::from(matches!(c.api(i, "/primary").await, Ok((200, _))));
            }
            n
        };
        assert!(primaries <= 1, "two primaries:\n{}", c.logs_tail(30));
        if c.sql(p, "INSERT INTO kept VALUES (1)").await.is_ok() {
            rows += 1;
        }
        let now = dcs.load().await.unwrap();
        if now.members.len() == 3
            && now.leader_name() == Some(leader.as_str())
            && now.initialize.as_ref().map(|v| v.value.as_str()) == Some(sysid.as_str())
            && now.config.as_ref().map(|v| &v.value) == Some(&config)
        {
            break wiped.elapsed();
        }
        assert!(
            wiped.elapsed() < Duration::from_secs(30),
            "not back after 30 s: {now:?}\n{}",
            c.logs_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("every key back {back:?} after the delete ({kind:?}); {rows} rows written meanwhile");
    for i in 0..3 {
        assert!(
            c.agent_pid(i).is_some() && c.log(i).contains("pgha"),
            "{}",
            c.log(i)
        );
    }
    let mut c = c;
    for i in 0..3 {
        assert!(
            c.agent_exit(i).is_none(),
            "node{} exited:\n{}",
            i + 1,
            c.log(i)
        );
    }
    assert!(rows > 0, "the primary took no write after the delete");
    c.wait_converged(&[0, 1, 2], Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(c.primary().await, Some(p), "no failover was needed");
    let list = pghactl(&ctl, &["list"], "").await.ok().stdout;
    for n in &c.nodes {
        assert!(list.contains(&format!("| {} ", n.name)), "{list}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_the_cluster_comes_back_after_its_keys_are_deleted() {
    the_cluster_comes_back_after_its_keys_are_deleted(DcsKind::Etcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_the_cluster_comes_back_after_its_keys_are_deleted() {
    the_cluster_comes_back_after_its_keys_are_deleted(DcsKind::ZooKeeper).await;
}

/// How many nodes answer 200 on `/primary` and, separately, accept a
/// write: never more than one of either.
async fn writable_nodes(c: &TestCluster) -> usize {
    let mut n = 0;
    for i in 0..c.nodes.len() {
        if c.sql(i, "INSERT INTO probe VALUES (1)").await.is_ok() {
            n += 1;
        }
    }
    n
}

/// Waits until the leader key names `holder` and is attached to a lease
/// again, checking all along that at most one server accepts writes.
/// Returns how long it took.
async fn wait_for_lock_of(c: &TestCluster, holder: &str, within: Duration) -> Duration {
    let start = Instant::now();
    let key = c.key_path("leader");
    loop {
        assert!(
            writable_nodes(c).await <= 1,
            "two servers accept writes:\n{}",
            c.logs_tail(30)
        );
        // `get -w json` shows the lease a key is attached to (0: none).
        let json = c.etcdctl(&["get", &key, "-w", "json"]).await.unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let kv = &v["kvs"][0];
        let value = c
            .etcdctl(&["get", &key, "--print-value-only"])
            .await
            .unwrap();
        let value = value.trim_end();
        if value == holder && kv["lease"].as_i64().unwrap_or(0) != 0 {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "the leader key is not {holder}'s lock after {within:?}: {kv}\n{}",
            c.logs_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `etcdctl put /service/<scope>/leader <value>` under a running primary:
/// a key attached to no lease, naming another member or nobody. Patroni's
/// primary demotes and the cluster stays without one until someone
/// deletes the key. pgha's primary, still within its own lock's lifetime,
/// takes the key back: no failover, no second primary, no gap longer than
/// a loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_a_leader_key_overwritten_by_hand_is_taken_back_by_the_primary() {
    let c = cluster(DcsKind::Etcd, 3).await;
    let p = c.wait_converged(&[0, 1, 2], BOOT).await.unwrap();
    let primary = c.nodes[p].name.clone();
    c.sql(p, "CREATE TABLE probe(i int)").await.unwrap();
    let other = c.nodes[(p + 1) % 3].name.clone();
    // Another member's name, a name nobody has, bytes that are no name.
    use std::os::unix::ffi::OsStrExt;
    let unreadable = std::ffi::OsStr::from_bytes(b"\xff\xfe not UTF-8");
    let values: [&std::ffi::OsStr; 3] = [other.as_ref(), "nobody's name".as_ref(), unreadable];
    for value in values {
        let key = c.key_path("leader");
        c.etcdctl(&["put".as_ref(), key.as_ref(), value])
            .await
            .unwrap();
        let took = wait_for_lock_of(&c, &primary, Duration::from_secs(20)).await;
        eprintln!("leader key {value:?} without a lease: {primary} took it back in {took:?}");
        // The REST API shows it at the cycle after the one that took it.
        let now = c.wait_for_primary(Duration::from_secs(5)).await.unwrap();
        assert_eq!(now, p, "no failover");
        assert!(
            c.log(p)
                .contains("no lease or session backs it: it overwrote my lock"),
            "{}",
            c.log(p)
        );
    }
    c.wait_converged(&[0, 1, 2], Duration::from_secs(20))
        .await
        .unwrap();
}

/// A leader key attached to no lease, naming a primary whose host died:
/// nobody holds it and it never expires. The others remove it once any
/// lock it overwrote has surely expired (ttl after they first saw it) and
/// elect a leader (Patroni: no primary until someone deletes the key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_an_unowned_leader_key_naming_a_dead_primary_is_removed_and_a_leader_elected() {
    let mut c = cluster(DcsKind::Etcd, 3).await;
    let p = c.wait_converged(&[0, 1, 2], BOOT).await.unwrap();
    let old = c.nodes[p].name.clone();
    c.sql(p, "CREATE TABLE probe(i int)").await.unwrap();
    // The host dies first (its lock, on its lease, would expire by itself),
    // then the key is overwritten without a lease.
    c.kill_node(p);
    c.etcdctl(&["put", &c.key_path("leader"), &old])
        .await
        .unwrap();
    let start = Instant::now();
    let new = loop {
        assert!(writable_nodes(&c).await <= 1, "{}", c.logs_tail(30));
        if let Some(n) = c.primary().await {
            break n;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no leader 30 s after the stale key was written:\n{}",
            c.logs_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "the unowned key naming {old} was removed and {} elected in {:?}",
        c.nodes[new].name,
        start.elapsed()
    );
    assert_ne!(new, p);
    wait_for_lock_of(&c, &c.nodes[new].name.clone(), Duration::from_secs(10)).await;
    assert!(
        c.logs_tail(200)
            .contains("removed a leader key that no lease or session backed"),
        "{}",
        c.logs_tail(40)
    );
    c.start_agent(p).unwrap();
    c.wait_converged(&[0, 1, 2], BOOT).await.unwrap();
}

/// `pgha` copied somewhere without its fence guard beside it: it refuses
/// to start (and `--validate-config` says so), naming where it looked,
/// instead of running a node that could never fence itself.
#[test]
fn pgha_without_its_fence_guard_beside_it_names_the_missing_program() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("pgha");
    std::fs::copy(agent(), &copy).unwrap();
    let config = dir.path().join("node.yml");
    std::fs::write(
        &config,
        format!(
            "scope: s\nname: n1\nrestapi: {{listen: 127.0.0.1:1, connect_address: 127.0.0.1:1}}\n\
             etcd3: {{hosts: 127.0.0.1:1}}\n\
             postgresql: {{listen: 127.0.0.1:1, connect_address: 127.0.0.1:1, data_dir: {}, \
             bin_dir: {}}}\n",
            dir.path().join("data").display(),
            ClusterOptions::default().bin_dir.display()
        ),
    )
    .unwrap();
    let guard = dir.path().join("pg-fence-guard");
    let run = |flag: Option<&str>| {
        let mut cmd = std::process::Command::new(&copy);
        cmd.args(flag).arg(&config);
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let want = format!("pg-fence-guard not found at {}", guard.display());
    let (code, stderr) = run(Some("--validate-config"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&want), "{stderr}");
    let (code, stderr) = run(None);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&want), "{stderr}");
    // With it beside pgha, the same file is valid.
    std::fs::copy(agent().with_file_name("pg-fence-guard"), &guard).unwrap();
    let (code, stderr) = run(Some("--validate-config"));
    assert_eq!(code, Some(0), "{stderr}");
}
