//! A client whose ZooKeeper is gone must wait, not spin. Its own test
//! binary, so the process CPU time measured here is this client's alone.

mod common;

use std::time::Duration;

use anyhow::{Context, ensure};
use common::ZkBackend;
use pgha_core::dcs::Dcs;
use pgha_core::model::{MemberData, Timing};
use pgha_dcs_zk::{ZkConfig, ZkDcs};
use pgha_testkit::conformance::{layout, unique_scope};
use tokio::time::Instant;

/// User + system CPU time of this process so far (all threads), from
/// `/proc/self/stat` (in USER_HZ = 100 ticks per second).
fn process_cpu() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after_name = stat
        .rsplit_once(") ")
        .context("malformed /proc/self/stat")?
        .1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields.get(11).context("no utime")?.parse::<u64>()?
        + fields.get(12).context("no stime")?.parse::<u64>()?;
    Ok(Duration::from_millis(ticks * 10))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_busy_loop_while_the_server_is_down() -> anyhow::Result<()> {
    pgha_testkit::init_tracing();
    let backend = ZkBackend::start().await?;
    let timing = Timing {
        ttl: Duration::from_secs(4),
        loop_wait: Duration::from_secs(1),
        retry_timeout: Duration::from_secs(1),
    };
    let a = ZkDcs::new(
        ZkConfig::new([backend.addr().to_string()]),
        layout(&unique_scope("zk-idle")),
        "a",
        timing,
    )?;
    a.touch_member(&MemberData::default()).await?;
    a.acquire_leader().await?;
    backend.kill_server().await;

    // Left alone: the library reconnects with backoff, then gives the
    // session up (after 7/5 × ttl) and stops.
    let (cpu, wall) = (process_cpu()?, Instant::now());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle = (process_cpu()? - cpu, wall.elapsed());

    // Driven like an HA loop: a renewal and a load, over and over. Each
    // call retries the connection until retry_timeout (1 s) and fails.
    let (cpu, wall) = (process_cpu()?, Instant::now());
    for _ in 0..5 {
        let tick = Instant::now();
        ensure!(a.renew_leader().await.is_err(), "renewed without a server");
        ensure!(a.load().await.is_err(), "loaded without a server");
        tokio::time::sleep_until(tick + Duration::from_secs(1)).await;
    }
    let busy = (process_cpu()? - cpu, wall.elapsed());

    println!(
        "CPU with the server down: idle {:?} over {:?}; calling without pause {:?} over {:?}",
        idle.0, idle.1, busy.0, busy.1
    );
    for (what, (used, over)) in [("idle", idle), ("calling", busy)] {
        ensure!(
            used < over / 20,
            "{what}: {used:?} of CPU in {over:?} while the server is down"
        );
    }
    Ok(())
}
