//! A sidecar that follows a pgha (or Patroni) cluster's leader, the way a
//! connection pooler or service registry would: load the cluster, print
//! who leads, block until the leader key changes, repeat.
//!
//! ```text
//! cargo run -p pgha-examples --example watch_cluster -- 127.0.0.1:2379 demo
//! ```

use std::time::Duration;

use pgha_core::dcs::Dcs;
use pgha_core::model::{KeyLayout, Timing};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(etcd), Some(scope)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: watch_cluster <etcd host:port> <scope> [iterations]");
    };
    let iterations: usize = args.next().map_or(Ok(usize::MAX), |n| n.parse())?;
    let config = pgha_dcs_etcd::EtcdConfig::new([etcd.as_str()])?;
    let timing = Timing {
        retry_timeout: Duration::from_secs(3),
        ..Timing::default()
    };
    // The member name is only used for writes; a watcher never writes.
    let dcs = pgha_dcs_etcd::EtcdDcs::new(
        config,
        KeyLayout::new("/service/", &scope),
        "watcher",
        timing,
    )?;
    for _ in 0..iterations {
        let cluster = dcs.load().await?;
        match cluster
            .leader_member()
            .and_then(|m| m.data.conn_url.clone())
        {
            Some(url) => println!(
                "leader: {} at {url}",
                cluster.leader_name().unwrap_or_default()
            ),
            None => println!("no leader (cluster unlocked)"),
        }
        for p in &cluster.problems {
            println!("  ! {p}");
        }
        dcs.watch_leader(&cluster.watch_cursor, Duration::from_secs(30))
            .await?;
    }
    Ok(())
}
