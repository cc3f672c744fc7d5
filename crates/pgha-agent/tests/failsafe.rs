//! Failsafe mode (`failsafe_mode: true`) on real etcd or ZooKeeper and
//! PostgreSQL 15, under the fault harness's writers (a multi-host writer
//! and one pinned to the first primary): a DCS outage does not take writes
//! down while every member confirms the primary, and never makes a second
//! primary when one cannot.
//!
//! - F1/F2: the DCS frozen (SIGSTOP) or killed for 60 s: the writer is
//!   never interrupted, nothing is lost, and afterwards the same leader on
//!   the same timeline.
//! - F3: the DCS frozen and a replica's host down as well: the primary
//!   cannot be confirmed by every member and demotes.
//! - F4: the primary cut off from the DCS and from the replicas (N1): it
//!   demotes before a replica can take over.
//! - F5: the primary cut off from the DCS only: the replicas, which still
//!   see the DCS and the expired leader key, confirm it and do not take
//!   over; the writer is never interrupted.
//! - F7: the primary runs on confirmations and its agent freezes: its
//!   fence guard stops PostgreSQL before a replica can take over.
//! - F6: failsafe mode off, the DCS frozen: the primary demotes (the write
//!   gap recorded), and takes its lock back when the DCS returns: same
//!   leader, same timeline.
//!
//! Every row asserts that no two servers accepted writes at once and
//! records its figures in `target/tmp/fault-matrix/<row>.json`.

// A panic is how a test fails; the helpers here are part of the tests.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;
use pgha_testkit::cluster::{ClusterOptions, DcsKind, TestCluster};
use pgha_testkit::faults::partition;
use pgha_testkit::faults::scenario::{Outcome, Run, results_dir};
use tokio::time::Instant;

fn agent() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pgha"))
}

/// How long the DCS stays away in the outage rows.
const OUTAGE: Duration = Duration::from_secs(60);
const CALL: Duration = Duration::from_secs(10);

fn record(o: &Outcome) {
    o.record(&results_dir(env!("CARGO_TARGET_TMPDIR")))
        .expect("recording the outcome");
    o.assert_no_split_brain();
}

/// The failsafe rows run with `restapi.authentication` set, as production
/// clusters do: `POST /failsafe` is an unsafe call, and a primary that did
/// not send the credentials would be refused by every member.
fn with_rest_auth(options: ClusterOptions) -> ClusterOptions {
    ClusterOptions {
        rest_auth: Some(("patroni".into(), "failsafe-test".into())),
        ..options
    }
}

fn bound(c: &TestCluster) -> Duration {
    Duration::from_secs(4 * c.options.ttl + 60)
}

/// Turns failsafe mode on and waits (bounded) until every node runs with
/// it (a member that has not read it yet answers `POST /failsafe` with 502,
/// as Patroni's does) and the leader wrote the `failsafe` key naming all
/// three members.
async fn enable_failsafe(run: &Run) -> anyhow::Result<()> {
    let c = &run.cluster;
    let (code, text) = c
        .api_call(
            run.primary,
            "PATCH",
            "/config",
            Some(r#"{"failsafe_mode": true}"#),
            CALL,
        )
        .await?;
    anyhow::ensure!(code == 200, "PATCH /config failsafe_mode: {code} {text}");
    for i in 0..c.nodes.len() {
        pgha_testkit::wait::until(
            "every node running with failsafe_mode (its metric)",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || async move {
                let (_, m) = c.api_call(i, "GET", "/metrics", None, CALL).await.ok()?;
                m.lines()
                    .any(|l| l.starts_with("patroni_failsafe_mode_enabled{") && l.ends_with(" 1"))
                    .then_some(())
            },
        )
        .await?;
    }
    let p = run.primary;
    pgha_testkit::wait::until(
        "the failsafe key naming all three members",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async move {
            match c.api(p, "/failsafe").await {
                Ok((200, v)) if v.as_object().is_some_and(|m| m.len() == 3) => Some(()),
                _ => None,
            }
        },
    )
    .await
}

/// Node `i`'s timeline as its REST API reports it.
async fn timeline(c: &TestCluster, i: usize) -> Option<u64> {
    c.api(i, "/patroni").await.ok()?.1["timeline"].as_u64()
}

/// Waits (bounded) until node `i` says failsafe mode is active.
async fn wait_failsafe_active(c: &TestCluster, i: usize) -> anyhow::Result<()> {
    pgha_testkit::wait::until(
        "failsafe_mode_is_active on the primary",
        Duration::from_secs(3 * c.options.ttl + 10),
        Duration::from_millis(200),
        || async move {
            let (_, v) = c.api(i, "/patroni").await.ok()?;
            (v["failsafe_mode_is_active"] == true).then_some(())
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", c.log(i)))
}

/// Until `until`, polls (every 0.5 s) that no node but `p` answers
/// `/primary`: the leader in failsafe mode stays the only one.
async fn only_primary_until(c: &TestCluster, p: usize, until: Instant) -> anyhow::Result<()> {
    while Instant::now() < until {
        let primary = c.primary().await;
        anyhow::ensure!(
            primary.is_none_or(|q| q == p),
            "node{} answers /primary while node{} runs in failsafe mode",
            primary.unwrap_or(0) + 1,
            p + 1
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// F5 and F7's start: a converged cluster in network namespaces with
/// failsafe mode on, its primary cut off from etcd only and running in
/// failsafe mode. Returns the run and the primary's namespace host.
async fn primary_cut_off_from_the_dcs_only(
    net: &pgha_testkit::netns::Network,
) -> anyhow::Result<(Run, String)> {
    let mut run = Run::start(agent(), with_rest_auth(partition::in_namespaces(net))).await?;
    enable_failsafe(&run).await?;
    let me = format!("n{}", run.primary + 1);
    run.fault();
    net.cut(&me, &["dcs"])?;
    wait_failsafe_active(&run.cluster, run.primary).await?;
    Ok((run, me))
}

/// How the DCS goes away.
#[derive(Clone, Copy)]
enum Outage {
    /// SIGSTOP: connections hang, nothing answers.
    Frozen,
    /// SIGKILL, started again afterwards with its data.
    Killed,
}

impl Outage {
    fn begin(self, c: &mut TestCluster) -> anyhow::Result<()> {
        match self {
            Outage::Frozen => c.signal_dcs(Signal::SIGSTOP),
            Outage::Killed => c.kill_dcs(),
        }
    }

    async fn end(self, c: &mut TestCluster) -> anyhow::Result<()> {
        match self {
            Outage::Frozen => c.signal_dcs(Signal::SIGCONT),
            Outage::Killed => c.start_dcs_again().await,
        }
    }
}

/// F1/F2: with failsafe mode on and every member up, a 60 s outage of the
/// DCS changes nothing a client sees.
async fn outage_keeps_the_primary(kind: DcsKind, id: &str, outage: Outage, label: &str) {
    pgha_testkit::init_tracing();
    let mut run = Run::start_on(agent(), kind, with_rest_auth(ClusterOptions::default()))
        .await
        .expect("a converged cluster with both writers");
    enable_failsafe(&run).await.unwrap();
    let p = run.primary;
    let before = timeline(&run.cluster, p).await;
    let started = Instant::now();
    run.fault();
    outage.begin(&mut run.cluster).unwrap();
    wait_failsafe_active(&run.cluster, p).await.unwrap();
    // Throughout the outage the primary stays the only one.
    only_primary_until(&run.cluster, p, started + OUTAGE)
        .await
        .unwrap_or_else(|e| panic!("{id}: {e}"));
    assert_eq!(
        run.cluster.primary().await,
        Some(p),
        "{id}: the primary still answers /primary after {OUTAGE:?}\n{}",
        run.cluster.log(p)
    );
    outage.end(&mut run.cluster).await.unwrap();
    let c = &run.cluster;
    let after_primary = c.wait_converged(&[0, 1, 2], bound(c)).await.unwrap();
    let after = timeline(c, after_primary).await;
    let b = bound(c);
    let o = run.finish(id, label, b).await.unwrap();
    record(&o);
    assert_eq!(o.main_errors, 0, "{id}: the writer was interrupted");
    assert_eq!(o.lost, 0, "{id}: acknowledged rows lost");
    assert_eq!(after_primary, p, "{id}: the leader changed");
    assert_eq!(after, before, "{id}: the timeline changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f1_etcd_frozen_for_a_minute_failsafe_keeps_the_primary() {
    outage_keeps_the_primary(
        DcsKind::Etcd,
        "F1",
        Outage::Frozen,
        "failsafe on: etcd frozen (SIGSTOP) for 60 s",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f2_etcd_killed_for_a_minute_failsafe_keeps_the_primary() {
    outage_keeps_the_primary(
        DcsKind::Etcd,
        "F2",
        Outage::Killed,
        "failsafe on: etcd killed for 60 s, then started again",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f1_zookeeper_frozen_for_a_minute_failsafe_keeps_the_primary() {
    outage_keeps_the_primary(
        DcsKind::ZooKeeper,
        "F1-zk",
        Outage::Frozen,
        "failsafe on: ZooKeeper frozen (SIGSTOP) for 60 s",
    )
    .await;
}

/// F3: with the DCS gone and a replica's host down too, not every member
/// confirms: the primary demotes (the missing member might be racing for
/// the lock on the DCS's other side). Back, the cluster converges.
async fn a_missing_member_demotes_the_primary(kind: DcsKind, id: &str) {
    pgha_testkit::init_tracing();
    let mut run = Run::start_on(agent(), kind, with_rest_auth(ClusterOptions::default()))
        .await
        .expect("a converged cluster with both writers");
    enable_failsafe(&run).await.unwrap();
    let p = run.primary;
    let r = run.replicas()[0];
    run.fault();
    run.cluster.signal_dcs(Signal::SIGSTOP).unwrap();
    wait_failsafe_active(&run.cluster, p).await.unwrap();
    run.cluster.reboot_node(r).await.unwrap();
    let c = &run.cluster;
    pgha_testkit::wait::until(
        "the primary to stop accepting writes",
        Duration::from_secs(3 * c.options.ttl + 10),
        Duration::from_millis(200),
        || async move { (c.primary().await != Some(p)).then_some(()) },
    )
    .await
    .unwrap_or_else(|e| panic!("{id}: {e}\n{}", c.log(p)));
    tokio::time::sleep(Duration::from_secs(5)).await;
    run.cluster.signal_dcs(Signal::SIGCONT).unwrap();
    run.cluster.start_agent(r).unwrap();
    let b = bound(&run.cluster);
    let o = run
        .finish(id, "failsafe on: DCS frozen and a replica's host down", b)
        .await
        .unwrap();
    record(&o);
    assert_eq!(o.lost, 0, "{id}: acknowledged rows lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f3_etcd_frozen_and_a_replica_down_the_primary_demotes() {
    a_missing_member_demotes_the_primary(DcsKind::Etcd, "F3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f3_zookeeper_frozen_and_a_replica_down_the_primary_demotes() {
    a_missing_member_demotes_the_primary(DcsKind::ZooKeeper, "F3-zk").await;
}

/// F4 (N1 with failsafe mode): the primary cut off from etcd and from the
/// replicas cannot be confirmed and demotes before the replicas' side
/// promotes; healed, it rejoins.
#[test]
fn f4_failsafe_on_the_primary_cut_off_from_the_dcs_and_the_replicas() {
    partition::run("F4", |net| async move {
        pgha_testkit::init_tracing();
        let mut run = Run::start(agent(), with_rest_auth(partition::in_namespaces(&net))).await?;
        enable_failsafe(&run).await?;
        let p = run.primary;
        run.fault();
        partition::cut_off_primary(&run, &net).await?;
        let b = bound(&run.cluster);
        let o = run
            .finish(
                "F4",
                "failsafe on: the primary cut off from etcd and the other nodes",
                b,
            )
            .await?;
        record(&o);
        anyhow::ensure!(o.final_primary != format!("node{}", p + 1), "no failover");
        anyhow::ensure!(
            o.stale_writes == Some(0),
            "the cut-off primary took {:?} writes after the failover",
            o.stale_writes
        );
        Ok(())
    });
}

/// F5: the primary cut off from etcd only. The replicas see the leader key
/// expire, but they confirmed the primary: none takes over, and the
/// writer is never interrupted. Healed, the same leader takes its key back.
#[test]
fn f5_failsafe_on_the_primary_cut_off_from_the_dcs_only() {
    partition::run("F5", |net| async move {
        pgha_testkit::init_tracing();
        let (run, me) = primary_cut_off_from_the_dcs_only(&net).await?;
        let p = run.primary;
        let before = timeline(&run.cluster, p).await;
        let ttl = run.cluster.options.ttl;
        only_primary_until(
            &run.cluster,
            p,
            Instant::now() + Duration::from_secs(6 * ttl),
        )
        .await?;
        // The leader key has expired: `list` names the leader that runs on
        // the members' confirmations.
        let ctl = run.cluster.ctl_config()?;
        let wanted = format!("Failsafe mode: active: node{} runs as the leader", p + 1);
        let listed = pghactl_list(&ctl);
        anyhow::ensure!(listed.contains(&wanted), "pghactl list:\n{listed}");
        net.heal(&me)?;
        let c = &run.cluster;
        let after_primary = c.wait_converged(&[0, 1, 2], bound(c)).await?;
        let after = timeline(c, after_primary).await;
        let b = bound(c);
        let o = run
            .finish("F5", "failsafe on: the primary cut off from etcd only", b)
            .await?;
        record(&o);
        anyhow::ensure!(o.main_errors == 0, "the writer was interrupted");
        anyhow::ensure!(o.lost == 0, "acknowledged rows lost");
        anyhow::ensure!(after_primary == p, "the leader changed");
        anyhow::ensure!(after == before, "the timeline changed");
        Ok(())
    });
}

/// F7: the primary runs in failsafe mode (cut off from etcd only), and
/// then its agent freezes: no more confirmations, so the replicas' promises
/// end and one of them takes the expired lock. The frozen agent cannot
/// demote; its fence guard stops PostgreSQL when the right to write the
/// last confirmation gave runs out, before any replica can promote: no
/// two servers ever accept writes.
#[test]
fn f7_failsafe_on_the_primarys_agent_freezes_while_it_runs_on_confirmations() {
    partition::run("F7", |net| async move {
        pgha_testkit::init_tracing();
        let (run, me) = primary_cut_off_from_the_dcs_only(&net).await?;
        let p = run.primary;
        run.cluster.signal_agent(p, Signal::SIGSTOP)?;
        let c = &run.cluster;
        let ttl = c.options.ttl;
        let new_primary = pgha_testkit::wait::until(
            "a replica to take over from the frozen agent's primary",
            Duration::from_secs(4 * ttl + 20),
            Duration::from_millis(200),
            || async move { c.primary().await.filter(|&n| n != p) },
        )
        .await?;
        anyhow::ensure!(
            c.postmaster_pid(p).is_none(),
            "the frozen agent's PostgreSQL still runs after node{} took over",
            new_primary + 1
        );
        run.cluster.signal_agent(p, Signal::SIGCONT)?;
        net.heal(&me)?;
        let b = bound(&run.cluster);
        let o = run
            .finish(
                "F7",
                "failsafe on: primary cut off from etcd, then its agent frozen",
                b,
            )
            .await?;
        record(&o);
        anyhow::ensure!(
            o.stale_writes == Some(0),
            "the old primary took {:?} writes after the failover",
            o.stale_writes
        );
        Ok(())
    });
}

/// F6: failsafe mode off (the default), etcd frozen for 30 s: the primary
/// demotes, as it must without failsafe mode; nothing is lost, no two
/// writers. The write gap is the figure failsafe mode removes. When etcd
/// returns, the old primary takes its lock back and starts in place: the
/// same leader on the same timeline (before, a replica won the race and
/// promoted onto a new timeline 4.4-6.2 s after etcd returned).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f6_failsafe_off_etcd_frozen_the_primary_demotes_and_takes_its_lock_back() {
    pgha_testkit::init_tracing();
    let mut run = Run::start(agent(), ClusterOptions::default())
        .await
        .expect("a converged cluster with both writers");
    let p = run.primary;
    let before = timeline(&run.cluster, p).await;
    run.fault();
    run.cluster.signal_dcs(Signal::SIGSTOP).unwrap();
    let c = &run.cluster;
    pgha_testkit::wait::until(
        "the primary to demote without the DCS",
        Duration::from_secs(3 * c.options.ttl + 10),
        Duration::from_millis(200),
        || async move { (c.primary().await != Some(p)).then_some(()) },
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    run.cluster.signal_dcs(Signal::SIGCONT).unwrap();
    let c = &run.cluster;
    let after_primary = c.wait_converged(&[0, 1, 2], bound(c)).await.unwrap();
    let after = timeline(c, after_primary).await;
    let logs = format!(
        "{}\n--- node{}\n{}",
        c.log(p),
        after_primary + 1,
        c.log(after_primary)
    );
    let b = bound(c);
    let o = run
        .finish("F6", "failsafe off: etcd frozen (SIGSTOP) for 30 s", b)
        .await
        .unwrap();
    record(&o);
    assert_eq!(o.lost, 0, "acknowledged rows lost");
    assert_eq!(
        after_primary, p,
        "the old leader did not take its lock back:\n{logs}"
    );
    assert_eq!(after, before, "the timeline changed");
    assert!(
        o.main_errors > 0,
        "without failsafe mode the writer must have been interrupted"
    );
}

/// `pghactl list` (the table and the notes under it).
fn pghactl_list(ctl: &Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pghactl"))
        .arg("-c")
        .arg(ctl)
        .arg("list")
        .env_remove("PATRONICTL_CONFIG_FILE")
        .env_remove("DCS_URL")
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
