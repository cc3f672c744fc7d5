//! The DCS conformance suite against the Consul emulator (or a real Consul
//! agent named by `CONSUL_HTTP_ADDR`). Each node reaches the server through
//! its own cuttable link.
//!
//! One case of the shared suite is replaced: `renewing_keeps_the_lock`
//! demands `valid_for >= ttl`, which a Consul session cannot honestly
//! promise (its TTL is `ttl/2`; see the crate docs). The local
//! `renewing_keeps_the_lock_for_the_session_ttl` runs the same scenario and
//! checks `ttl/2 <= valid_for <= ttl` instead.
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
use pgha_core::model::{ClusterKey, MemberData, PgState, Role, Timing};
use pgha_dcs_consul::{ConsulConfig, ConsulDcs};
use pgha_testkit::conformance::{Backend, TestNode, layout, suite_timing, unique_scope};
use pgha_testkit::proxy::FaultProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

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

pgha_testkit::dcs_conformance_suite!(@cases ConsulBackend::start();
    exactly_one_leader_among_contenders,
    non_owner_cannot_renew_or_release,
    abandoned_lock_and_member_expire,
    compare_and_set_conflicts,
    watch_wakes_on_leader_change,
    watch_returns_at_timeout,
    unreadable_values_are_reported_by_key,
    unreachable_server_is_a_typed_error_within_retry_timeout,
    server_restart_is_survived,
    initialize_race_has_one_winner,
    take_leader_overrides_the_holder,
    member_status_round_trips,
    shared_values_round_trip_and_cluster_deletes,
);

fn member() -> MemberData {
    MemberData {
        conn_url: Some("postgres://127.0.0.1:5432/postgres".into()),
        api_url: Some("http://127.0.0.1:8008/patroni".into()),
        state: Some(PgState::Running),
        role: Some(Role::Primary),
        version: Some(pgha_core::model::PATRONI_COMPAT_VERSION.into()),
        ..Default::default()
    }
}

/// The suite's `renewing_keeps_the_lock` with the lifetime check Consul can
/// honour: a holder that keeps renewing keeps the lock well past ttl, and
/// each renewal promises the session TTL (`ttl/2`), never more than `ttl`.
async fn renewing_keeps_the_lock_for_the_session_ttl(b: &ConsulBackend) -> anyhow::Result<()> {
    let scope = unique_scope("renew-keeps");
    let timing = suite_timing();
    let a = b.node(&scope, "a", timing).await?;
    let bb = b.node(&scope, "b", timing).await?;
    a.touch_member(&member()).await?;
    a.acquire_leader().await?;
    let until = Instant::now() + timing.ttl * 2;
    while Instant::now() < until {
        tokio::time::sleep(timing.loop_wait).await;
        let lease = a.renew_leader().await.context("renew")?;
        ensure!(
            lease.valid_for >= timing.ttl / 2 && lease.valid_for <= timing.ttl,
            "renew promised {:?}; the session TTL is ttl/2 = {:?}",
            lease.valid_for,
            timing.ttl / 2
        );
        a.touch_member(&member()).await?;
        match bb.acquire_leader().await {
            Err(pgha_core::dcs::DcsError::NotOwner { holder, .. }) => {
                ensure!(holder.as_deref() == Some("a"), "holder {holder:?}")
            }
            other => anyhow::bail!("b acquired while a renews: {other:?}"),
        }
    }
    let c = bb.load().await?;
    ensure!(
        c.leader_name() == Some("a") && c.member("a").is_some(),
        "a lost lock or member key while renewing: {c:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewing_keeps_the_lock() {
    let result = pgha_testkit::conformance::run_case(
        "renewing_keeps_the_lock (Consul: valid_for = ttl/2)",
        ConsulBackend::start(),
        |b| async move { renewing_keeps_the_lock_for_the_session_ttl(&b).await },
    )
    .await;
    if let Err(e) = result {
        panic!("{e:?}");
    }
}
