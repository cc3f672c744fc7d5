//! The DCS conformance suite against the Consul emulator (or a real Consul
//! agent named by `CONSUL_HTTP_ADDR`). Each node reaches the server through
//! its own cuttable link.
//!
//! A Consul session's TTL is `ttl/2`, so the backend declares
//! [`LockLifetime::AtLeastHalfTtl`]: `renewing_keeps_the_lock` then checks
//! `ttl/2 <= valid_for <= ttl` instead of `valid_for >= ttl`.
//!
//! Against a real agent (`CONSUL_HTTP_ADDR=127.0.0.1:8500`), the agent needs
//! `session_ttl_min = "1s"` (the suite's ttl is 4 s, so sessions of 2 s),
//! and `restart_server` does nothing: the restart case then only checks
//! that clients keep working.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use async_trait::async_trait;
use pgha_consul_emulator::{ConsulEmulator, EmulatorConfig};
use pgha_core::model::{ClusterKey, Timing};
use pgha_dcs_consul::{ConsulConfig, ConsulDcs};
use pgha_testkit::conformance::{Backend, Capabilities, LockLifetime, TestNode, layout};
use pgha_testkit::proxy::FaultProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug)]
enum Server {
    Emulator(ConsulEmulator),
    /// A real agent: its address.
    Real(SocketAddr),
}

/// One emulator per case (or the real agent); every node gets its own
/// [`FaultProxy`].
#[derive(Debug)]
struct ConsulBackend {
    server: Server,
}

impl ConsulBackend {
    async fn start() -> anyhow::Result<Self> {
        if let Ok(addr) = std::env::var("CONSUL_HTTP_ADDR") {
            let hostport = addr
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string();
            let addr = tokio::net::lookup_host(&hostport)
                .await?
                .next()
                .with_context(|| format!("CONSUL_HTTP_ADDR={hostport} does not resolve"))?;
            return Ok(ConsulBackend {
                server: Server::Real(addr),
            });
        }
        let emulator = ConsulEmulator::start(EmulatorConfig::for_tests()).await?;
        Ok(ConsulBackend {
            server: Server::Emulator(emulator),
        })
    }

    fn addr(&self) -> SocketAddr {
        match &self.server {
            Server::Emulator(e) => e.addr(),
            Server::Real(a) => *a,
        }
    }
}

/// `PUT` of a raw value to a real agent, as a foreign tool would.
async fn http_put(addr: SocketAddr, path: &str, body: &[u8]) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(5), async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let head = format!(
            "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await?;
        s.write_all(body).await?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await?;
        let text = String::from_utf8_lossy(&answer);
        ensure!(text.starts_with("HTTP/1.1 200"), "PUT {path}: {text}");
        Ok(())
    })
    .await
    .context("PUT to Consul timed out")?
}

#[async_trait]
impl Backend for ConsulBackend {
    async fn node(&self, scope: &str, name: &str, timing: Timing) -> anyhow::Result<TestNode> {
        let proxy = Arc::new(FaultProxy::start(self.addr()).await?);
        let config = ConsulConfig::new([format!("http://{}", proxy.addr())])?;
        let dcs = ConsulDcs::new(config, layout(scope), name, timing)?;
        Ok(TestNode {
            dcs: Arc::new(dcs),
            link: proxy,
        })
    }

    async fn write_raw(&self, scope: &str, key: &str, value: &[u8]) -> anyhow::Result<()> {
        let key =
            ClusterKey::parse(key).ok_or_else(|| anyhow::anyhow!("not a cluster key: {key}"))?;
        let path = layout(scope).path(&key);
        let key = path.trim_start_matches('/');
        match &self.server {
            Server::Emulator(e) => {
                e.put_raw(key, value);
                Ok(())
            }
            Server::Real(addr) => http_put(*addr, &format!("/v1/kv/{key}"), value).await,
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            lock_lifetime: LockLifetime::AtLeastHalfTtl,
            ..Capabilities::default()
        }
    }

    async fn restart_server(&self) -> anyhow::Result<()> {
        match &self.server {
            Server::Emulator(e) => Ok(e.restart().await?),
            Server::Real(addr) => {
                tracing::warn!(%addr, "a real Consul agent is not restarted by the suite");
                Ok(())
            }
        }
    }
}

pgha_testkit::dcs_conformance_suite!(ConsulBackend::start());
