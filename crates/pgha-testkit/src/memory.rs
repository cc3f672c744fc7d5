//! The in-memory store as a conformance [`Backend`].

use std::sync::Arc;

use async_trait::async_trait;
use pgha_core::dcs::memory::{Faults, LinkFault, MemoryStore};
use pgha_core::model::{ClusterKey, Timing};

use crate::conformance::{Backend, Link, LinkMode, TestNode, layout};

/// [`MemoryStore`] on the real monotonic clock, so it meets the same time
/// bounds as a real engine.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    store: MemoryStore,
}

impl MemoryBackend {
    pub async fn start() -> anyhow::Result<Self> {
        Ok(MemoryBackend {
            store: MemoryStore::new(),
        })
    }
}

#[derive(Debug)]
struct MemoryLink(Arc<Faults>);

impl Link for MemoryLink {
    fn set(&self, mode: LinkMode) {
        self.0.set_link(match mode {
            LinkMode::Open => LinkFault::None,
            LinkMode::Blackhole => LinkFault::Blackhole,
            LinkMode::Refuse => LinkFault::Unreachable,
        });
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    async fn node(&self, scope: &str, name: &str, timing: Timing) -> anyhow::Result<TestNode> {
        let client = self.store.client(layout(scope), name, timing);
        let link = Arc::new(MemoryLink(client.faults()));
        Ok(TestNode {
            dcs: Arc::new(client),
            link,
        })
    }

    async fn write_raw(&self, scope: &str, key: &str, value: &[u8]) -> anyhow::Result<()> {
        let key =
            ClusterKey::parse(key).ok_or_else(|| anyhow::anyhow!("not a cluster key: {key}"))?;
        self.store.write_raw(&layout(scope).path(&key), value);
        Ok(())
    }

    /// The in-memory store has no server process: its data and leases
    /// simply persist, as a restarted etcd's do. The case still checks
    /// that clients keep working and watches still wake.
    async fn restart_server(&self) -> anyhow::Result<()> {
        Ok(())
    }
}
