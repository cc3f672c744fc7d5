//! The fault matrix (`scenarios.md`): each row on a fresh 3-node cluster
//! (real etcd, three agents, PostgreSQL 15 on loopback) while a writer
//! inserts a row every 10 ms through a multi-host connection
//! (`target_session_attrs=read-write`) and a second writer stays pinned to
//! the original primary.
//!
//! Each test asserts what must hold (never two servers accepting writes at
//! once, convergence within 2 × ttl after the fault settles, no lost rows
//! where no failover happens, an uninterrupted writer for replica faults)
//! and records the figures in `target/tmp/fault-matrix/<row>.json`;
//! `scripts/fault-matrix.sh` renders them into docs/fault-matrix.md. The
//! figures are measurements, not asserted: speed belongs to benchmarks.
//!
//! Rows N1 and N2 run in network namespaces (`pgha_testkit::netns`): every
//! server in its own, the test's clients in another, partitions made with
//! nftables inside the cut-off node's namespace. They skip, saying why,
//! when the machine cannot make namespaces (not root). S4 checks the
//! agent's side and `list` showing the node unmanaged.

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

async fn start() -> Run {
    pgha_testkit::init_tracing();
    Run::start(agent(), ClusterOptions::default())
        .await
        .expect("a converged cluster with both writers")
}

/// 2 × ttl after the fault, plus what the fault itself takes to play out
/// (a reboot, a restart), plus slack for a loaded CI machine.
fn convergence_bound(c: &TestCluster, settle: Duration) -> Duration {
    Duration::from_secs(2 * c.options.ttl) + settle + Duration::from_secs(20)
}

fn record(o: &Outcome) {
    o.record(&results_dir(env!("CARGO_TARGET_TMPDIR")))
        .expect("recording the outcome");
    o.assert_no_split_brain();
}

/// Waits (bounded) until node `i` runs PostgreSQL again and streams.
async fn wait_streaming(c: &TestCluster, i: usize, within: Duration) {
    c.wait_sql(i, "SELECT status FROM pg_stat_wal_receiver", within, |r| {
        r == ["streaming"]
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{} does not stream again: {e}\n{}",
            c.nodes[i].name,
            c.log(i)
        )
    });
}

/// What happens to one node's PostgreSQL (S1–S3, P1–P2).
enum PgFault {
    KillPostmaster,
    PgCtlStop,
    /// Every process of the node dies; its agent is started again.
    Reboot,
}

impl PgFault {
    async fn inject(self, run: &mut Run, node: usize) {
        match self {
            PgFault::KillPostmaster => run.cluster.kill_postmaster(node).unwrap(),
            // Without waiting: the agent may start PostgreSQL again before
            // pg_ctl saw it gone, and `-w` would then wait for that one.
            PgFault::PgCtlStop => run
                .cluster
                .pg_ctl(node, &["stop", "-m", "fast", "-W"])
                .unwrap(),
            PgFault::Reboot => {
                run.cluster.reboot_node(node).await.unwrap();
                run.cluster.start_agent(node).unwrap();
            }
        }
    }
}

/// A replica fault must not interrupt the writer nor lose a row; the
/// replica streams again by itself (after a reboot, once its agent is
/// started again as a service manager would).
async fn replica_fault(id: &str, label: &str, fault: PgFault) {
    let mut run = start().await;
    let r = run.replicas()[0];
    run.fault();
    fault.inject(&mut run, r).await;
    wait_streaming(&run.cluster, r, Duration::from_secs(60)).await;
    let bound = convergence_bound(&run.cluster, Duration::ZERO);
    let o = run.finish(id, label, bound).await.unwrap();
    record(&o);
    assert_eq!(o.main_errors, 0, "a replica fault interrupted the writer");
    assert_eq!(o.lost, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1_kill_9_of_a_replicas_postmaster() {
    replica_fault(
        "S1",
        "kill -9 of a replica's postmaster",
        PgFault::KillPostmaster,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_pg_ctl_stop_on_a_replica() {
    replica_fault("S2", "pg_ctl stop on a replica", PgFault::PgCtlStop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_reboot_of_a_replicas_host() {
    replica_fault("S3", "reboot of a replica's host", PgFault::Reboot).await;
}

/// P1, P2: the agent restarts its primary's PostgreSQL in place and keeps
/// the lock: no election, and (a crash or a clean stop with fsync on) no
/// committed row lost.
async fn primary_restarts_in_place(id: &str, label: &str, fault: PgFault) {
    let mut run = start().await;
    let p = run.primary;
    run.fault();
    fault.inject(&mut run, p).await;
    let bound = convergence_bound(&run.cluster, Duration::ZERO);
    let o = run.finish(id, label, bound).await.unwrap();
    record(&o);
    assert_eq!(o.final_primary, run_name(p), "an election happened");
    assert_eq!(o.lost, 0, "the restarted primary lost committed rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p1_kill_9_of_the_primarys_postmaster() {
    primary_restarts_in_place(
        "P1",
        "kill -9 of the primary's postmaster",
        PgFault::KillPostmaster,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2_postgres_stopped_on_the_primary() {
    primary_restarts_in_place("P2", "pg_ctl stop on the primary", PgFault::PgCtlStop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p3_reboot_of_the_primarys_host() {
    let mut run = start().await;
    let p = run.primary;
    run.fault();
    let rebooted = Instant::now();
    run.cluster.reboot_node(p).await.unwrap();
    // The host is "down" until another node took over, then boots again.
    run.cluster
        .wait_for_primary(Duration::from_secs(run.cluster.options.ttl * 3 + 20))
        .await
        .unwrap();
    let down_for = rebooted.elapsed();
    run.cluster.start_agent(p).unwrap();
    let bound = convergence_bound(&run.cluster, down_for + Duration::from_secs(30));
    let o = run
        .finish("P3", "reboot of the primary's host", bound)
        .await
        .unwrap();
    record(&o);
    assert_ne!(o.final_primary, run_name(p), "no failover");
    assert_eq!(
        o.stale_writes,
        Some(0),
        "the old primary took writes after the failover"
    );
}

/// Waits (bounded) until a node other than `old` accepts writes.
async fn wait_for_new_primary(c: &TestCluster, old: usize, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        for i in (0..c.nodes.len()).filter(|&i| i != old) {
            if c.sql(i, "SELECT pg_is_in_recovery()").await.ok() == Some(vec!["f".into()]) {
                return i;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no new primary within {within:?}\n{}",
            c.logs_tail(25)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (bounded) until node `i`'s postmaster is no longer `pid`.
async fn wait_postmaster_gone(c: &TestCluster, i: usize, pid: Option<i32>, within: Duration) {
    let deadline = Instant::now() + within;
    while pid.is_some() && c.postmaster_pid(i) == pid {
        assert!(
            Instant::now() < deadline,
            "postmaster {pid:?} of {} still runs after {within:?}",
            c.nodes[i].name
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sets or clears maintenance mode and waits (bounded) until node `i`'s
/// agent runs by it.
async fn set_pause(c: &TestCluster, i: usize, on: bool) {
    let body = if on {
        r#"{"pause": true}"#
    } else {
        r#"{"pause": null}"#
    };
    let (status, text) = c
        .api_call(i, "PATCH", "/config", Some(body), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(status, 200, "{text}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let paused = c
            .api_call(i, "GET", "/patroni", None, Duration::from_secs(5))
            .await
            .ok()
            .and_then(|(_, t)| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|v| v["pause"] == true);
        if paused == on {
            return;
        }
        assert!(Instant::now() < deadline, "pause {on} not taken up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Once another node accepts writes (it is written to), whether the
/// writer pinned to the original primary gets `rows` more acknowledged
/// within `within`: two primaries at once.
async fn old_primary_acknowledges_after_failover(run: &Run, rows: u64, within: Duration) -> bool {
    let ttl = run.cluster.options.ttl;
    let new =
        wait_for_new_primary(&run.cluster, run.primary, Duration::from_secs(ttl * 3 + 20)).await;
    run.cluster
        .sql(new, "CREATE TABLE written_on_the_new_primary(x int)")
        .await
        .unwrap();
    run.wait_for_pinned_acks(rows, within).await.is_ok()
}

/// The old primary's agent started again (as a service manager would),
/// the cluster converged: the outcome.
async fn finish_after_failover(mut run: Run, id: &str, label: &str) -> Outcome {
    run.cluster.start_agent(run.primary).unwrap();
    let bound = convergence_bound(&run.cluster, Duration::from_secs(30));
    run.finish(id, label, bound).await.unwrap()
}

/// A failover with nothing acknowledged by the old primary after it.
fn assert_clean_failover(o: &Outcome, old: usize) {
    record(o);
    assert_ne!(o.final_primary, run_name(old), "no failover");
    assert_eq!(
        o.stale_writes,
        Some(0),
        "the old primary took writes after the failover"
    );
}

/// P4a: kill -9 of the agent alone; its fence guard stops PostgreSQL and
/// hands the lock over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p4a_kill_9_of_the_primarys_agent() {
    let mut run = start().await;
    let p = run.primary;
    run.fault();
    run.cluster.kill_agent(p);
    assert!(
        !old_primary_acknowledges_after_failover(&run, 1, Duration::from_secs(3)).await,
        "the old primary acknowledged a row after the new one took writes"
    );
    let o = finish_after_failover(run, "P4a", "kill -9 of the primary's agent").await;
    assert_clean_failover(&o, p);
}

/// P4b: kill -9 of the agent and its fence guard together (the agent's
/// process tree, `pkill -9 -f pgha`). Nothing is left to fence, and the
/// lock expires after ttl; the postmaster, the guard's child with a
/// parent-death signal, is killed by the kernel with the guard, so the old
/// primary acknowledges nothing after the new one's first write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p4b_kill_9_of_the_primarys_agent_and_guard_together() {
    let mut run = start().await;
    let p = run.primary;
    let postmaster = run.cluster.postmaster_pid(p);
    run.fault();
    run.cluster.kill_agent_and_guard(p);
    wait_postmaster_gone(&run.cluster, p, postmaster, Duration::from_secs(5)).await;
    assert!(
        !old_primary_acknowledges_after_failover(&run, 1, Duration::from_secs(3)).await,
        "the old primary acknowledged a row after the new one took writes"
    );
    let o = finish_after_failover(
        run,
        "P4b",
        "kill -9 of the primary's agent and fence guard together",
    )
    .await;
    assert_clean_failover(&o, p);
}

/// P4b without the protection: the same kill, with the primary's
/// postmaster started by `pg_ctl` (detached, as pgha started it before
/// the guard did; here by hand during maintenance mode). It outlives
/// agent and guard and goes on acknowledging writes after a replica took
/// over: the split brain P4b no longer shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p4b_contrast_a_postmaster_that_outlives_its_guard_splits_the_brain() {
    let mut run = start().await;
    let p = run.primary;
    set_pause(&run.cluster, p, true).await;
    // With -l: the postmaster must not hold the test's pipes open.
    let log = run.cluster.data_dir(p).join("log/pgha-postmaster.log");
    run.cluster
        .pg_ctl(
            p,
            &["restart", "-m", "fast", "-w", "-l", &log.to_string_lossy()],
        )
        .unwrap();
    set_pause(&run.cluster, p, false).await;
    run.wait_for_pinned_acks(20, Duration::from_secs(30))
        .await
        .unwrap();
    run.fault();
    run.cluster.kill_agent_and_guard(p);
    // The main writer stays connected to the old primary (it still takes
    // writes); the client pinned to it gets rows acknowledged now that
    // another server took writes: the split brain.
    assert!(
        old_primary_acknowledges_after_failover(&run, 20, Duration::from_secs(5)).await,
        "no contrast: the detached postmaster acknowledged no rows after the failover"
    );
    assert!(
        run.cluster.postmaster_pid(p).is_some(),
        "the detached postmaster died"
    );
    eprintln!("P4b without the protection: the old primary acknowledged rows after the failover");
    let o = finish_after_failover(
        run,
        "P4b-detached",
        "kill -9 of agent and guard, postmaster detached (protection off)",
    )
    .await;
    assert!(
        o.lost > 0,
        "no contrast: nothing the old primary acknowledged was lost to its rewind"
    );
}

/// P4c: kill -9 of the primary's fence guard alone. Its postmaster dies
/// with it (a primary must not run unguarded); the agent starts a new
/// guard and PostgreSQL again, or the cluster fails over: either way no
/// two primaries, and nothing acknowledged by a stale one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p4c_kill_9_of_the_primarys_fence_guard() {
    let mut run = start().await;
    let p = run.primary;
    let postmaster = run.cluster.postmaster_pid(p);
    run.fault();
    run.cluster.kill_guard(p);
    wait_postmaster_gone(&run.cluster, p, postmaster, Duration::from_secs(5)).await;
    let bound = convergence_bound(&run.cluster, Duration::from_secs(30));
    let o = run
        .finish("P4c", "kill -9 of the primary's fence guard", bound)
        .await
        .unwrap();
    record(&o);
    assert_eq!(o.stale_writes.unwrap_or(0), 0);
    assert_eq!(o.lost, 0);
}

/// The service-watchdog period P4d configures: within ttl - loop_wait -
/// retry_timeout - 1 s of the cluster it runs with (ttl 10).
const SERVICE_WATCHDOG: Duration = Duration::from_secs(3);

fn p4d_options() -> ClusterOptions {
    ClusterOptions {
        ttl: 10,
        ..ClusterOptions::default()
    }
}

/// P4d: the agent and its fence guard frozen together (SIGSTOP of both, as
/// a cgroup freeze does): nothing inside them can act, so a timer outside
/// must. With systemd's service watchdog configured — here a stand-in that
/// does what systemd does (`pgha_testkit::service_watchdog`) — the guard's
/// pings stop, the stand-in kills the node's processes, PostgreSQL's
/// included, before the lock can pass; the old primary acknowledges
/// nothing after the new one's first write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p4d_agent_and_guard_frozen_together_with_the_service_watchdog() {
    use pgha_testkit::service_watchdog::{ServiceWatchdogStandIn, Unit};
    pgha_testkit::init_tracing();
    let mut stand_ins = Vec::new();
    let mut run = Run::start_prepared(agent(), DcsKind::Etcd, p4d_options(), |c| {
        for n in &mut c.nodes {
            let dir = n.data_dir.parent().expect("a node directory").to_path_buf();
            let w = ServiceWatchdogStandIn::start(
                &dir.join(format!("{}.notify", n.name)),
                SERVICE_WATCHDOG,
                Unit {
                    config: n.config.clone(),
                    data_dir: n.data_dir.clone(),
                },
            )?;
            n.agent_env = w.env();
            stand_ins.push(w);
        }
        Ok(())
    })
    .await
    .expect("a converged cluster with both writers");
    let p = run.primary;
    assert!(
        run.cluster.log(p).contains("systemd's service watchdog"),
        "the agent did not see the service watchdog\n{}",
        run.cluster.log(p)
    );
    // Healthy guards ping: nobody was killed while the cluster formed.
    assert!(stand_ins.iter().all(|w| !w.fired()));
    let postmaster = run.cluster.postmaster_pid(p);
    run.fault();
    run.cluster.signal_agent_and_guard(p, Signal::SIGSTOP);
    wait_postmaster_gone(&run.cluster, p, postmaster, SERVICE_WATCHDOG * 3).await;
    assert!(
        stand_ins[p].fired(),
        "PostgreSQL stopped, but not by the watchdog"
    );
    assert!(
        !old_primary_acknowledges_after_failover(&run, 1, Duration::from_secs(3)).await,
        "the old primary acknowledged a row after the new one took writes"
    );
    // The service manager starts the unit again.
    run.cluster.nodes[p].agent_env.clear();
    run.cluster.kill_agent(p);
    let o = finish_after_failover(
        run,
        "P4d",
        "agent and fence guard frozen together, systemd's watchdog (stand-in) configured",
    )
    .await;
    assert_clean_failover(&o, p);
}

/// P4d without an external timer: the same freeze leaves the old primary
/// accepting writes beside the new one until agent and guard are thawed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p4d_contrast_without_an_external_timer_a_frozen_node_splits_the_brain() {
    pgha_testkit::init_tracing();
    let mut run = Run::start(agent(), p4d_options())
        .await
        .expect("a converged cluster with both writers");
    let p = run.primary;
    assert!(
        run.cluster
            .log(p)
            .contains("no timer outside pgha can stop this node"),
        "no warning at startup\n{}",
        run.cluster.log(p)
    );
    run.fault();
    run.cluster.signal_agent_and_guard(p, Signal::SIGSTOP);
    let stale = old_primary_acknowledges_after_failover(&run, 20, Duration::from_secs(5)).await;
    run.cluster.signal_agent_and_guard(p, Signal::SIGCONT);
    assert!(
        stale,
        "no contrast: the frozen node's primary acknowledged no rows after the failover"
    );
    let bound = convergence_bound(&run.cluster, Duration::from_secs(30));
    let o = run
        .finish(
            "P4d-no-timer",
            "agent and fence guard frozen together, no external timer (protection off)",
            bound,
        )
        .await
        .unwrap();
    assert!(
        o.lost > 0,
        "no contrast: nothing the frozen primary acknowledged was lost"
    );
}

/// S4 as a service manager's `kill` does it: the replica's agent dies,
/// its PostgreSQL goes on streaming (the guard leaves a replica alone), the
/// writer is not interrupted; the agent started again takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_the_agent_on_a_replica_stops() {
    let mut run = start().await;
    let r = run.replicas()[0];
    run.fault();
    run.cluster.kill_agent(r);
    tokio::time::sleep(Duration::from_secs(2 * run.cluster.options.ttl)).await;
    assert!(
        run.cluster.postmaster_pid(r).is_some(),
        "the replica's PostgreSQL stopped with its agent"
    );
    wait_streaming(&run.cluster, r, Duration::from_secs(10)).await;
    // Its member key expired, but the leader keeps its slot: `list` shows
    // it as unmanaged rather than not at all.
    let ctl = run.cluster.ctl_config().unwrap();
    let name = run.cluster.nodes[r].name.clone();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pghactl"))
        .arg("-c")
        .arg(&ctl)
        .args(["list", "-f", "json"])
        .env_remove("PATRONICTL_CONFIG_FILE")
        .env_remove("DCS_URL")
        .output()
        .unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "pghactl list: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let row = rows
        .as_array()
        .and_then(|rows| rows.iter().find(|row| row["Member"] == name.as_str()))
        .unwrap_or_else(|| panic!("{name} is not listed: {rows}"));
    assert_eq!(row["State"], "unmanaged", "{rows}");
    run.cluster.start_agent(r).unwrap();
    let bound = convergence_bound(
        &run.cluster,
        Duration::from_secs(2 * run.cluster.options.ttl),
    );
    let o = run
        .finish(
            "S4",
            "kill -9 of a replica's agent (started again after 2 x ttl)",
            bound,
        )
        .await
        .unwrap();
    record(&o);
    assert_eq!(o.main_errors, 0, "a replica fault interrupted the writer");
    assert_eq!(o.lost, 0);
}

/// M1: a replica whose `primary_conninfo` is overridden (`ALTER SYSTEM`) to
/// follow a server that does not exist. The agent reports it as not
/// streaming, then rewrites its upstream; the writer is not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m1_a_replica_following_a_node_that_does_not_exist() {
    let mut run = start().await;
    let r = run.replicas()[0];
    let nowhere = pgha_testkit::ports::free_port().unwrap();
    run.fault();
    run.cluster
        .sql(
            r,
            &format!(
                "ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port={nowhere} user=replicator'"
            ),
        )
        .await
        .unwrap();
    run.cluster.sql(r, "SELECT pg_reload_conf()").await.unwrap();
    // Reported as not streaming (bounded), then repaired.
    let reported = pgha_testkit::wait::until(
        "the broken replica to fail /replica?replication_state=streaming",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            matches!(
                run.cluster
                    .api(r, "/replica?replication_state=streaming")
                    .await,
                Ok((503, _))
            )
            .then_some(())
        },
    )
    .await;
    reported.unwrap_or_else(|e| panic!("{e}\n{}", run.cluster.log(r)));
    wait_streaming(&run.cluster, r, Duration::from_secs(60)).await;
    let bound = convergence_bound(&run.cluster, Duration::from_secs(30));
    let o = run
        .finish(
            "M1",
            "a replica made to follow a node that does not exist",
            bound,
        )
        .await
        .unwrap();
    record(&o);
    assert_eq!(o.main_errors, 0, "a replica fault interrupted the writer");
    assert_eq!(o.lost, 0);
}

/// N1: the primary is cut off from etcd and from the other nodes (the
/// clients still reach it). It must stop accepting writes before the
/// majority side promotes a new leader; healed, it rejoins.
#[test]
fn n1_the_primary_is_cut_off_from_the_dcs_and_the_other_nodes() {
    partition::run("N1", |net| async move {
        pgha_testkit::init_tracing();
        let mut run = Run::start(agent(), partition::in_namespaces(&net)).await?;
        let p = run.primary;
        run.fault();
        partition::cut_off_primary(&run, &net).await?;
        let ttl = run.cluster.options.ttl;
        let bound = convergence_bound(&run.cluster, Duration::from_secs(ttl * 4 + 30));
        let o = run
            .finish(
                "N1",
                "the primary cut off from etcd and the other nodes",
                bound,
            )
            .await?;
        record(&o);
        anyhow::ensure!(o.final_primary != run_name(p), "no failover");
        anyhow::ensure!(
            o.stale_writes == Some(0),
            "the cut-off primary took {:?} writes after the failover",
            o.stale_writes
        );
        Ok(())
    });
}

/// N2: a replica is cut off from everything but the clients: it keeps
/// running, the writer is not interrupted, and it catches up once healed.
#[test]
fn n2_a_replica_is_cut_off() {
    partition::run("N2", |net| async move {
        pgha_testkit::init_tracing();
        let mut run = Run::start(agent(), partition::in_namespaces(&net)).await?;
        let r = run.replicas()[0];
        let me = format!("n{}", r + 1);
        let mut peers: Vec<String> = (0..3)
            .filter(|&i| i != r)
            .map(|i| format!("n{}", i + 1))
            .collect();
        peers.push("dcs".into());
        let peers: Vec<&str> = peers.iter().map(String::as_str).collect();
        run.fault();
        net.cut(&me, &peers)?;
        let ttl = run.cluster.options.ttl;
        tokio::time::sleep(Duration::from_secs(2 * ttl)).await;
        anyhow::ensure!(
            run.cluster.postmaster_pid(r).is_some(),
            "the cut-off replica's PostgreSQL stopped"
        );
        anyhow::ensure!(
            run.cluster.primary().await == Some(run.primary),
            "the primary changed because a replica was cut off"
        );
        net.heal(&me)?;
        let bound = convergence_bound(&run.cluster, Duration::from_secs(2 * ttl + 30));
        let o = run
            .finish("N2", "a replica cut off from everything", bound)
            .await?;
        record(&o);
        anyhow::ensure!(o.main_errors == 0, "a replica fault interrupted the writer");
        anyhow::ensure!(o.lost == 0, "rows lost");
        Ok(())
    });
}

fn run_name(i: usize) -> String {
    format!("node{}", i + 1)
}
