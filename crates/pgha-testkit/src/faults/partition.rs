//! Partition scenarios: a 3-node cluster laid out in network namespaces
//! ([`crate::netns`]), and running a scenario's body inside them.

use std::future::Future;
use std::sync::Arc;

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
