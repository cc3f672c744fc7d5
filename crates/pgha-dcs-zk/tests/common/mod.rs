//! The ZooKeeper backend under test: a real ZooKeeper 3.8 on loopback, each
//! node connected through a fault proxy of its own.

// Each test binary uses a part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use pgha_core::model::Timing;
use pgha_dcs_zk::{ZkConfig, ZkDcs};
use pgha_testkit::conformance::{Backend, TestNode, layout};
use pgha_testkit::proxy::FaultProxy;
use pgha_testkit::zookeeper::ZooKeeperServer;
use zookeeper_client::{Acls, Client, CreateMode, Error as ZkError};

#[derive(Debug)]
pub struct ZkBackend {
    server: tokio::sync::Mutex<ZooKeeperServer>,
    addr: SocketAddr,
}

impl ZkBackend {
    pub async fn start() -> anyhow::Result<Self> {
        let server = ZooKeeperServer::start().await?;
        let addr = server.addr();
        warm_up(addr)
            .await
            .context("first write to the fresh ZooKeeper")?;
        Ok(ZkBackend {
            server: tokio::sync::Mutex::new(server),
            addr,
        })
    }

    /// The server's own address (not through a proxy).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A node's client over its own proxy, returning the concrete types.
    pub async fn zk_node(
        &self,
        scope: &str,
        name: &str,
        timing: Timing,
    ) -> anyhow::Result<(Arc<ZkDcs>, Arc<FaultProxy>)> {
        let proxy = Arc::new(FaultProxy::start(self.addr).await?);
        let dcs = ZkDcs::new(
            ZkConfig::new([proxy.addr().to_string()]),
            layout(scope),
            name,
            timing,
        )?;
        Ok((Arc::new(dcs), proxy))
    }

    pub async fn kill_server(&self) {
        self.server.lock().await.kill();
    }

    pub async fn start_server_again(&self) -> anyhow::Result<()> {
        self.server.lock().await.start_again().await
    }
}

/// Opens a session and writes once, so the server has created (and
/// preallocated) its transaction log before the clients under test, whose
/// calls are bounded by a 1 s `retry_timeout`, send their first request.
/// "ruok" answers before that, and on a slow disk the first write can take
/// longer than a second.
async fn warm_up(addr: SocketAddr) -> anyhow::Result<()> {
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        let client = Client::connect(&addr.to_string()).await?;
        let options = CreateMode::Persistent.with_acls(Acls::anyone_all());
        client.mkdir("/service", &options).await?;
        Ok::<_, ZkError>(())
    })
    .await
    .context("timed out")?
    .map_err(Into::into)
}

#[async_trait]
impl Backend for ZkBackend {
    async fn node(&self, scope: &str, name: &str, timing: Timing) -> anyhow::Result<TestNode> {
        let (dcs, link) = self.zk_node(scope, name, timing).await?;
        Ok(TestNode { dcs, link })
    }

    /// Writes a persistent znode directly to the server (creating parents),
    /// as zkCli or another tool would.
    async fn write_raw(&self, scope: &str, key: &str, value: &[u8]) -> anyhow::Result<()> {
        let path = format!("{}{}", layout(scope).prefix(), key.trim_start_matches('/'));
        let parent = path.rsplit_once('/').map_or("/", |(p, _)| p);
        let client = Client::connect(&self.addr.to_string())
            .await
            .context("connect to ZooKeeper")?;
        let options = CreateMode::Persistent.with_acls(Acls::anyone_all());
        client
            .mkdir(parent, &options)
            .await
            .context("create parents")?;
        match client.create(&path, value, &options).await {
            Ok(_) => Ok(()),
            Err(ZkError::NodeExists) => {
                client
                    .set_data(&path, value, None)
                    .await
                    .context("set data")?;
                Ok(())
            }
            Err(e) => Err(e).context("create"),
        }
    }

    async fn restart_server(&self) -> anyhow::Result<()> {
        self.server.lock().await.restart().await
    }
}
