//! Partition scenarios: a 3-node cluster laid out in network namespaces
//! ([`crate::netns`]), and running a scenario's body inside them.

use std::future::Future;
use std::sync::Arc;

use std::time::Duration;

use super::scenario::Run;
use crate::cluster::{ClusterOptions, Placement};
use crate::netns::Network;

/// A 3-node cluster laid out in `net`: etcd in `dcs`, node i in `n<i+1>`.
pub fn in_namespaces(net: &Network) -> ClusterOptions {
    ClusterOptions {
        placement: Placement {
            dcs: net
                .host("dcs")
                .expect("the namespace network has a dcs host"),
            nodes: (1..=3)
                .map(|i| {
                    net.host(&format!("n{i}"))
                        .expect("the namespace network has three nodes")
                })
                .collect(),
            hba_network: Some(net.cidr()),
        },
        ..ClusterOptions::default()
    }
}

/// N1: cuts the run's primary off from etcd and the other nodes (clients
/// still reach it), waits (bounded) until another node is primary, stays
/// cut off one ttl longer (the old primary must not come back as a writer
/// on its own), and heals.
pub async fn cut_off_primary(run: &Run, net: &Network) -> anyhow::Result<()> {
    let p = run.primary;
    let me = format!("n{}", p + 1);
    let mut peers: Vec<String> = run
        .replicas()
        .iter()
        .map(|r| format!("n{}", r + 1))
        .collect();
    peers.push("dcs".into());
    let peers: Vec<&str> = peers.iter().map(String::as_str).collect();
    net.cut(&me, &peers)?;
    let ttl = run.cluster.options.ttl;
    let cluster = &run.cluster;
    crate::wait::until(
        "a primary other than the cut-off one",
        Duration::from_secs(ttl * 3 + 20),
        Duration::from_millis(100),
        || async { cluster.primary().await.filter(|&n| n != p) },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(ttl)).await;
    net.heal(&me)?;
    Ok(())
}

/// Runs a partition scenario's `body` with the test's clients inside the
/// namespace network, or says why it cannot run here (not root) and
/// returns.
pub fn run<F, Fut>(id: &str, body: F)
where
    F: FnOnce(Arc<Network>) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>>,
{
    if let Some(why) = Network::unavailable() {
        eprintln!("SKIPPED {id}: {why}");
        return;
    }
    let net = Arc::new(Network::create(3).expect("the namespace network"));
    let inside = net.clone();
    net.run_in_client(move || body(inside))
        .unwrap_or_else(|e| panic!("{id}: {e:#}"));
}
