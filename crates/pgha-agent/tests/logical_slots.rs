//! End-to-end: a logical consumer (`pg_recvlogical`, test_decoding) reads
//! a permanent logical slot (`slots`) while a writer inserts rows, across
//! a failover (the primary's host dies) and a switchover. Real etcd, three
//! agents, three PostgreSQL servers on loopback.
//!
//! What a user checks: every row in the table at the end reached the
//! consumer. Replicas keep copies of the slot (copied from the leader,
//! advanced to where the consumer confirmed), so the new primary has the
//! slot at a position the consumer had reached; the consumer resumes from
//! there and may see again what it received after that position, as the
//! protocol allows, but misses nothing.
//!
//! The contrast: the same failover with the slot made by hand on the
//! primary (not in `slots`, so nothing copies it). The new primary has no
//! slot; the consumer must create it again, at the new primary's current
//! position, and misses every row written in between.

// A panic is how a test fails; the helpers here are part of the tests.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgha_testkit::cluster::{ClusterOptions, DcsKind, SUPERUSER_PASSWORD, TestCluster};
use tokio::time::Instant;

fn agent() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pgha"))
}

const BOOT: Duration = Duration::from_secs(60);
const SLOT: &str = "cdc";

/// A libpq connection string reaching whichever node is the primary.
fn any_primary(c: &TestCluster) -> String {
    let hosts: Vec<String> = c.nodes.iter().map(|n| n.host.to_string()).collect();
    let ports: Vec<String> = c.nodes.iter().map(|n| n.pg_port.to_string()).collect();
    format!(
        "host={} port={} user=postgres dbname=postgres target_session_attrs=read-write connect_timeout=3",
        hosts.join(","),
        ports.join(",")
    )
}

/// Inserts ids 1, 2, ... into `t` on whichever node is the primary, one
/// row per transaction, until stopped; keeps the ids acknowledged.
struct Writer {
    acked: Arc<Mutex<Vec<i64>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(c: &TestCluster) -> Writer {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut cfg = tokio_postgres::Config::new();
        for n in &c.nodes {
            cfg.host(n.host.to_string()).port(n.pg_port);
        }
        cfg.user("postgres")
            .password(SUPERUSER_PASSWORD)
            .dbname("postgres")
            .target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadWrite)
            .connect_timeout(Duration::from_secs(2));
        let (a, s) = (acked.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut next = 1i64;
            while !s.load(Ordering::Relaxed) {
                let Ok(Ok((client, conn))) = tokio::time::timeout(
                    Duration::from_secs(5),
                    cfg.connect(tokio_postgres::NoTls),
                )
                .await
                else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                tokio::spawn(conn);
                while !s.load(Ordering::Relaxed) {
                    let sql = format!("INSERT INTO t VALUES ({next})");
                    let insert = client.simple_query(&sql);
                    match tokio::time::timeout(Duration::from_secs(5), insert).await {
                        Ok(Ok(_)) => {
                            a.lock().unwrap().push(next);
                            next += 1;
                        }
                        // Committed although its acknowledgement was lost
                        // (the old primary died after replicating it): in
                        // the table, not acknowledged; go on past it.
                        Ok(Err(e))
                            if e.code()
                                == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) =>
                        {
                            next += 1;
                        }
                        // Not acknowledged: the same id again.
                        _ => break,
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        });
        Writer { acked, stop, task }
    }

    fn count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits (bounded) until `rows` rows are acknowledged.
    async fn wait_for(&self, rows: usize, c: &TestCluster) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.count() < rows {
            assert!(
                Instant::now() < deadline,
                "the writer acknowledged {} rows, not {rows}\n{}",
                self.count(),
                c.logs_tail(60)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(self) -> Vec<i64> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = tokio::time::timeout(Duration::from_secs(15), self.task).await;
        self.acked.lock().unwrap().clone()
    }
}

/// `pg_recvlogical` on the slot, through whichever node is the primary; it
/// reconnects by itself (every 5 s) after an error, resuming from the
/// slot's confirmed position, and appends to its file.
struct Consumer {
    out: PathBuf,
    _child: tokio::process::Child,
}

impl Consumer {
    fn start(c: &TestCluster, dir: &Path) -> Consumer {
        let out = dir.join("consumer.txt");
        let child = tokio::process::Command::new(pgha_testkit::pg_bin_dir().join("pg_recvlogical"))
            .arg(format!("--dbname={}", any_primary(c)))
            .args(["--slot", SLOT, "--start", "--fsync-interval=1"])
            .args(["--status-interval=1", "-o", "skip-empty-xacts=1"])
            .arg(format!("--file={}", out.display()))
            .env("PGPASSWORD", SUPERUSER_PASSWORD)
            .arg("--verbose")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("consumer.log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("pg_recvlogical");
        Consumer { out, _child: child }
    }

    /// Every id received, with how many times each came.
    fn received(&self) -> Vec<i64> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with("table public.t: INSERT:"))
            .filter_map(|l| l.rsplit_once("id[bigint]:"))
            .filter_map(|(_, id)| id.trim().parse().ok())
            .collect()
    }

    async fn wait_for(&self, ids: &BTreeSet<i64>, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            let got: BTreeSet<i64> = self.received().into_iter().collect();
            let missing: Vec<i64> = ids.difference(&got).copied().collect();
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = self.out.with_file_name("consumer.log");
                return Err(format!(
                    "{} rows never reached the consumer, the first {:?}; pg_recvlogical said:\n{}",
                    missing.len(),
                    &missing[..missing.len().min(10)],
                    std::fs::read_to_string(log).unwrap_or_default()
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

async fn table_ids(c: &TestCluster, p: usize) -> BTreeSet<i64> {
    c.sql(p, "SELECT id FROM t ORDER BY id")
        .await
        .unwrap()
        .iter()
        .map(|r| r.parse().unwrap())
        .collect()
}

/// Waits (bounded) until node `i` has the slot; returns its
/// confirmed_flush_lsn in bytes.
async fn wait_slot(c: &TestCluster, i: usize, within: Duration) -> u64 {
    let q = format!(
        "SELECT (confirmed_flush_lsn - '0/0')::bigint FROM pg_replication_slots WHERE slot_name = '{SLOT}'"
    );
    let rows = c
        .wait_sql(i, &q, within, |r| r.len() == 1)
        .await
        .unwrap_or_else(|e| panic!("{} never had {SLOT}: {e}\n{}", c.nodes[i].name, c.log(i)));
    rows[0].parse().unwrap()
}

/// A three-node cluster with wal_level logical and table `t`; returns it
/// and its primary.
async fn cluster() -> (TestCluster, usize) {
    pgha_testkit::init_tracing();
    let mut c = TestCluster::new(agent(), DcsKind::Etcd, ClusterOptions::default())
        .await
        .expect("cluster");
    for i in 0..3 {
        c.edit_config(i, |t| {
            t.replace(
                "wal_keep_size: 64MB\n",
                "wal_keep_size: 64MB\n        wal_level: logical\n",
            )
        })
        .unwrap();
    }
    c.start_all().unwrap();
    let p = c.wait_converged(&[0, 1, 2], BOOT).await.expect("converged");
    c.sql(p, "CREATE TABLE t(id bigint PRIMARY KEY)")
        .await
        .unwrap();
    (c, p)
}

async fn patch(c: &TestCluster, i: usize, body: &str) {
    let (code, text) = c
        .api_call(i, "PATCH", "/config", Some(body), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(code, 200, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_a_logical_consumer_loses_nothing_across_failover_and_switchover() {
    let (mut c, p) = cluster().await;
    patch(
        &c,
        p,
        r#"{"synchronous_mode": true,
            "slots": {"cdc": {"type": "logical", "database": "postgres", "plugin": "test_decoding"}}}"#,
    )
    .await;
    wait_slot(&c, p, Duration::from_secs(30)).await;
    let dir = tempfile::tempdir().unwrap();
    let consumer = Consumer::start(&c, dir.path());
    let writer = Writer::start(&c);
    writer.wait_for(200, &c).await;

    // Every replica copies the slot from the leader (restarting to load
    // it) and moves its copy to where the consumer confirmed.
    let replicas: Vec<usize> = (0..3).filter(|&i| i != p).collect();
    let leader_confirmed = wait_slot(&c, p, Duration::from_secs(5)).await;
    for &r in &replicas {
        let deadline = Instant::now() + Duration::from_secs(60);
        while wait_slot(&c, r, Duration::from_secs(60)).await < leader_confirmed {
            assert!(
                Instant::now() < deadline,
                "{}'s copy of {SLOT} is not advanced\n{}",
                c.nodes[r].name,
                c.log(r)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            c.log(r).contains("copying logical slots from the leader"),
            "{}",
            c.log(r)
        );
        assert_eq!(
            c.sql(r, "SHOW hot_standby_feedback").await.unwrap(),
            ["on"],
            "the leader must keep the catalog rows the copy needs"
        );
    }

    // Failover: the primary's host dies under the writer and the consumer.
    let before = writer.count();
    c.kill_node(p);
    let new = c
        .wait_for_primary(Duration::from_secs(60))
        .await
        .expect("failover");
    writer.wait_for(before + 200, &c).await;
    let ids = table_ids(&c, new).await;
    consumer
        .wait_for(&ids, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("after the failover: {e}\n{}", c.log(new)));

    // Switchover to the other survivor, which kept its copy advanced from
    // the new leader's positions.
    let cand = replicas.into_iter().find(|&r| r != new).unwrap();
    wait_slot(&c, cand, Duration::from_secs(30)).await;
    // synchronous_mode: only the synchronous standby may take over.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(c.api(cand, "/sync").await, Ok((200, _))) {
        assert!(
            Instant::now() < deadline,
            "{} never became the synchronous standby",
            c.nodes[cand].name
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let body = format!(
        r#"{{"leader": "{}", "candidate": "{}"}}"#,
        c.nodes[new].name, c.nodes[cand].name
    );
    let (code, text) = c
        .api_call(
            new,
            "POST",
            "/switchover",
            Some(&body),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{text}");
    let before = writer.count();
    writer.wait_for(before + 200, &c).await;
    let acked = writer.stop().await;
    let last = c
        .wait_for_primary(Duration::from_secs(30))
        .await
        .expect("primary");
    assert_eq!(last, cand, "the switchover went to {}", c.nodes[cand].name);
    let ids = table_ids(&c, last).await;
    consumer
        .wait_for(&ids, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("after the switchover: {e}\n{}", c.log(last)));

    let received = consumer.received();
    let distinct: BTreeSet<i64> = received.iter().copied().collect();
    let extra: Vec<&i64> = distinct.difference(&ids).collect();
    eprintln!(
        "rows in the table {}, acknowledged {}, received {} ({} again after a reconnect), received but not in the table {}",
        ids.len(),
        acked.len(),
        received.len(),
        received.len() - distinct.len(),
        extra.len(),
    );
}

/// The contrast: a slot nothing copies is gone after the failover; the
/// consumer that creates it again on the new primary misses the rows
/// written in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_without_a_permanent_slot_a_logical_consumer_misses_rows_after_failover() {
    let (mut c, p) = cluster().await;
    patch(&c, p, r#"{"synchronous_mode": true}"#).await;
    let create =
        format!("SELECT 1 FROM pg_create_logical_replication_slot('{SLOT}', 'test_decoding')");
    c.sql(p, &create).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let consumer = Consumer::start(&c, dir.path());
    let writer = Writer::start(&c);
    writer.wait_for(200, &c).await;

    let before = writer.count();
    c.kill_node(p);
    let new = c
        .wait_for_primary(Duration::from_secs(60))
        .await
        .expect("failover");
    writer.wait_for(before + 200, &c).await;
    let slots = c
        .sql(
            new,
            "SELECT slot_name FROM pg_replication_slots WHERE slot_type = 'logical'",
        )
        .await
        .unwrap();
    assert!(slots.is_empty(), "nothing copied it, yet {slots:?}");
    // What the consumer can do: create the slot again and go on.
    c.sql(new, &create).await.unwrap();
    let before = writer.count();
    writer.wait_for(before + 100, &c).await;
    writer.stop().await;
    let ids = table_ids(&c, new).await;
    let missing = consumer.wait_for(&ids, Duration::from_secs(15)).await;
    assert!(
        missing.is_err(),
        "the consumer received every row although its slot was lost"
    );
    eprintln!("without copies: {}", missing.unwrap_err());
}
