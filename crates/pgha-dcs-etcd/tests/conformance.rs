//! The DCS conformance suite against a real etcd (`etcd` from `PATH`, or
//! `PGHA_ETCD_BIN`). Each node reaches etcd through its own cuttable link.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use pgha_core::model::{ClusterKey, Timing};
use pgha_dcs_etcd::{EtcdConfig, EtcdDcs};
use pgha_testkit::conformance::{Backend, TestNode, layout};
use pgha_testkit::etcd::EtcdServer;
use pgha_testkit::proxy::FaultProxy;

/// One etcd server per case; every node gets its own [`FaultProxy`].
#[derive(Debug)]
struct EtcdBackend {
    server: tokio::sync::Mutex<EtcdServer>,
    addr: SocketAddr,
}

impl EtcdBackend {
    async fn start() -> anyhow::Result<Self> {
        let server = EtcdServer::start().await?;
        let addr = server.addr();
        Ok(EtcdBackend {
            server: tokio::sync::Mutex::new(server),
            addr,
        })
    }
}

#[async_trait]
impl Backend for EtcdBackend {
    async fn node(&self, scope: &str, name: &str, timing: Timing) -> anyhow::Result<TestNode> {
        let proxy = Arc::new(FaultProxy::start(self.addr).await?);
        let config = EtcdConfig::new([format!("http://{}", proxy.addr())])?;
        let dcs = EtcdDcs::new(config, layout(scope), name, timing)?;
        Ok(TestNode {
            dcs: Arc::new(dcs),
            link: proxy,
        })
    }

    async fn write_raw(&self, scope: &str, key: &str, value: &[u8]) -> anyhow::Result<()> {
        let key =
            ClusterKey::parse(key).ok_or_else(|| anyhow::anyhow!("not a cluster key: {key}"))?;
        let mut client =
            etcd_client::Client::connect([format!("http://{}", self.addr)], None).await?;
        client.put(layout(scope).path(&key), value, None).await?;
        Ok(())
    }

    async fn restart_server(&self) -> anyhow::Result<()> {
        self.server.lock().await.restart().await
    }
}

pgha_testkit::dcs_conformance_suite!(EtcdBackend::start());
