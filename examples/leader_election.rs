//! Leader election for any Rust service, on pgha-core's `Dcs` trait.
//!
//! Three instances of a service compete for one lock. Whoever holds it does
//! the singleton work, and only until its lease runs out: the deadline
//! counts from when the lock call was *sent*, on the monotonic clock, so a
//! stalled holder stops working before anyone else can start (no two
//! leaders, even across a pause). Then the leader "crashes" (stops renewing)
//! and another instance takes over.
//!
//! ```text
//! cargo run -p pgha-examples --example leader_election              # in memory
//! cargo run -p pgha-examples --example leader_election -- 127.0.0.1:2379   # real etcd
//! ```

use std::sync::Arc;
use std::time::Duration;

use pgha_core::dcs::Dcs;
use pgha_core::dcs::memory::MemoryStore;
use pgha_core::model::{KeyLayout, Timing};
use tokio::time::Instant;

fn client(
    store: &Option<MemoryStore>,
    etcd: &Option<String>,
    name: &str,
    timing: Timing,
) -> anyhow::Result<Arc<dyn Dcs>> {
    let layout = KeyLayout::new("/examples", "leader-election");
    Ok(match (store, etcd) {
        (_, Some(addr)) => {
            let config = pgha_dcs_etcd::EtcdConfig::new([addr.as_str()])?;
            Arc::new(pgha_dcs_etcd::EtcdDcs::new(config, layout, name, timing)?)
        }
        (Some(store), None) => Arc::new(store.client(layout, name, timing)),
        (None, None) => anyhow::bail!("no DCS"),
    })
}

/// One instance: campaign, and work only while the lease is certainly ours.
async fn instance(dcs: Arc<dyn Dcs>, crash_after: Option<Duration>, run_for: Duration) {
    let name = dcs.member_name().to_string();
    let start = Instant::now();
    let mut deadline: Option<Instant> = None;
    while start.elapsed() < run_for {
        if let Some(after) = crash_after
            && start.elapsed() > after
        {
            println!(
                "{:>5.1}s {name}: crashes (stops renewing)",
                start.elapsed().as_secs_f32()
            );
            return;
        }
        let sent = Instant::now();
        let attempt = if deadline.is_some() {
            dcs.renew_leader().await
        } else {
            dcs.acquire_leader().await
        };
        match attempt {
            Ok(lease) => {
                if deadline.is_none() {
                    println!(
                        "{:>5.1}s {name}: became the leader",
                        start.elapsed().as_secs_f32()
                    );
                }
                deadline = Some(sent + lease.valid_for);
            }
            Err(e) if e.is_unreachable() => {} // keep the old deadline; it is still true
            Err(_) => deadline = None,
        }
        // The singleton work, guarded by the deadline (minus a margin for the work itself).
        if deadline.is_some_and(|d| Instant::now() + Duration::from_millis(500) < d) {
            println!(
                "{:>5.1}s {name}: working as leader",
                start.elapsed().as_secs_f32()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if deadline.is_some() {
        let _ = dcs.release_leader().await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let etcd = std::env::args().nth(1);
    let store = etcd.is_none().then(MemoryStore::new);
    let timing = Timing {
        ttl: Duration::from_secs(4),
        loop_wait: Duration::from_secs(1),
        retry_timeout: Duration::from_secs(1),
    };
    let run_for = Duration::from_secs(12);
    let mut tasks = Vec::new();
    for (i, name) in ["alpha", "beta", "gamma"].into_iter().enumerate() {
        let dcs = client(&store, &etcd, name, timing)?;
        // Whoever wins first crashes after 4 s; the others run to the end.
        let crash = (i == 0).then_some(Duration::from_secs(4));
        tasks.push(tokio::spawn(instance(dcs, crash, run_for)));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for t in tasks {
        t.await?;
    }
    Ok(())
}
