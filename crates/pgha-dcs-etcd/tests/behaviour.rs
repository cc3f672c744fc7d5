//! etcd-specific behaviour beyond the conformance suite, against a real
//! etcd: lazy connection, several endpoints, ttl changes, leases this
//! client never held, compaction, and the exact stored bytes.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use pgha_core::dcs::{Dcs, DcsError, DcsExt, WatchOutcome};
use pgha_core::model::{ClusterKey, Expect, KeyLayout, MemberData, Role, Timing};
use pgha_dcs_etcd::{EtcdConfig, EtcdDcs};
use pgha_testkit::etcd::EtcdServer;
use pgha_testkit::proxy::{FaultProxy, LinkMode};
use tokio::time::Instant;

fn timing(ttl: u64, retry_timeout: u64) -> Timing {
    Timing {
        ttl: Duration::from_secs(ttl),
        loop_wait: Duration::from_secs(1),
        retry_timeout: Duration::from_secs(retry_timeout),
    }
}

fn layout(scope: &str) -> KeyLayout {
    KeyLayout::new("/service", scope)
}

fn node(endpoints: &[String], scope: &str, name: &str, t: Timing) -> anyhow::Result<EtcdDcs> {
    Ok(EtcdDcs::new(
        EtcdConfig::new(endpoints)?,
        layout(scope),
        name,
        t,
    )?)
}

async fn raw(server: &EtcdServer) -> anyhow::Result<etcd_client::Client> {
    Ok(etcd_client::Client::connect([server.endpoint()], None).await?)
}

fn member(role: Role) -> MemberData {
    MemberData {
        conn_url: Some("postgres://127.0.0.1:5432/postgres".into()),
        api_url: Some("http://127.0.0.1:8008/patroni".into()),
        role: Some(role),
        ..Default::default()
    }
}

/// Retries `op` while it reports Unreachable, for up to `within`.
async fn until_reachable<T, F, Fut>(within: Duration, mut op: F) -> Result<T, DcsError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, DcsError>>,
{
    let deadline = Instant::now() + within;
    loop {
        match op().await {
            Err(e) if e.is_unreachable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => return other,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constructing_needs_no_server_and_the_client_recovers_by_itself() -> anyhow::Result<()> {
    pgha_testkit::init_tracing();
    let server = EtcdServer::start().await?;
    let proxy = FaultProxy::start(server.addr()).await?;
    proxy.set(LinkMode::Refuse);
    let t = timing(4, 1);
    let a = node(&[format!("http://{}", proxy.addr())], "lazy", "a", t)?;
    for _ in 0..3 {
        let start = Instant::now();
        let r = a.load().await;
        ensure!(matches!(r, Err(DcsError::Unreachable { .. })), "{r:?}");
        ensure!(start.elapsed() <= t.retry_timeout + Duration::from_millis(500));
    }
    proxy.set(LinkMode::Open);
    until_reachable(Duration::from_secs(10), || a.load()).await?;
    a.touch_member(&member(Role::Replica)).await?;
    a.acquire_leader().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_endpoints_fail_over() -> anyhow::Result<()> {
    pgha_testkit::init_tracing();
    let server = EtcdServer::start().await?;
    let dead = format!("http://127.0.0.1:{}", pgha_testkit::ports::free_port()?);
    let p1 = FaultProxy::start(server.addr()).await?;
    let p2 = FaultProxy::start(server.addr()).await?;
    let (e1, e2) = (
        format!("http://{}", p1.addr()),
        format!("http://{}", p2.addr()),
    );

    // A refused endpoint first: every call goes through, on the next one.
    let a = node(&[dead.clone(), e1.clone()], "multi", "a", timing(4, 1))?;
    a.touch_member(&member(Role::Primary)).await?;
    a.acquire_leader().await?;
    a.write_config(&Default::default(), Expect::Absent).await?;
    a.renew_leader().await?;

    // A black-holed endpoint first: a read moves on within retry_timeout.
    let t = timing(10, 2);
    let b = node(&[e1.clone(), e2.clone()], "multi", "b", t)?;
    b.load().await?;
    p1.set(LinkMode::Blackhole);
    let start = Instant::now();
    let c = b
        .load()
        .await
        .context("load with the first endpoint black-holed")?;
    ensure!(start.elapsed() <= t.retry_timeout + Duration::from_millis(500));
    ensure!(c.leader_name() == Some("a"));
    b.touch_member(&member(Role::Replica)).await?;

    // Now the second dies and the first comes back.
    p1.set(LinkMode::Open);
    p2.set(LinkMode::Refuse);
    b.load().await.context("load back on the first endpoint")?;
    let v = b.load().await?.config.context("config")?.version;
    b.write_config(&Default::default(), Expect::Version(v))
        .await
        .context("CAS on the first endpoint")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ttl_change_moves_the_keys_to_a_new_lease() -> anyhow::Result<()> {
    pgha_testkit::init_tracing();
    let server = EtcdServer::start().await?;
    let ep = [server.endpoint()];
    let a = node(&ep, "ttl", "a", timing(4, 1))?;
    a.touch_member(&member(Role::Primary)).await?;
    let lease = a.acquire_leader().await?;
    ensure!(lease.valid_for == Duration::from_secs(4), "{lease:?}");
    let c = a.load().await?;
    let old = c.leader.context("leader")?.owner.context("owner")?;

    a.set_timing(timing(6, 1));
    let lease = a
        .renew_leader()
        .await
        .context("renew after the ttl change")?;
    ensure!(lease.valid_for == Duration::from_secs(6), "{lease:?}");
    let c = a.load().await?;
    let new = c.leader.clone().context("leader")?.owner.context("owner")?;
    ensure!(new != old, "leader key still on the old lease {old}");
    ensure!(c.member("a").and_then(|m| m.owner.clone()) == Some(old.clone()));
    a.touch_member(&member(Role::Primary)).await?;
    let c = a.load().await?;
    ensure!(c.member("a").and_then(|m| m.owner.clone()) == Some(new.clone()));

    // The old lease is no longer refreshed: it expires, the keys stay.
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        a.renew_leader().await?;
        a.touch_member(&member(Role::Primary)).await?;
    }
    let mut raw = raw(&server).await?;
    let old_id: i64 = old.parse()?;
    let ttl = raw.lease_time_to_live(old_id, None).await?.ttl();
    ensure!(ttl == -1, "old lease {old_id} still alive: ttl {ttl}");
    let c = a.load().await?;
    ensure!(
        c.leader_name() == Some("a") && c.member("a").is_some(),
        "{c:?}"
    );

    // A ttl below etcd's minimum: the lock promises what etcd granted.
    a.set_timing(timing(1, 1));
    let lease = a.renew_leader().await?;
    let granted = raw
        .lease_time_to_live(
            a.load()
                .await?
                .leader
                .context("leader")?
                .owner
                .context("owner")?
                .parse()?,
            None,
        )
        .await?
        .granted_ttl();
    ensure!(
        lease.valid_for == Duration::from_secs(granted as u64) && granted >= 1,
        "promised {lease:?}, granted {granted}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_key_on_a_lease_we_never_held_is_not_ours() -> anyhow::Result<()> {
    pgha_testkit::init_tracing();
    let server = EtcdServer::start().await?;
    let mut raw = raw(&server).await?;
    let foreign = raw.lease_grant(30, None).await?.id();
    raw.put(
        layout("foreign").path(&ClusterKey::Leader),
        "a",
        Some(etcd_client::PutOptions::new().with_lease(foreign)),
    )
    .await?;
    let a = node(&[server.endpoint()], "foreign", "a", timing(4, 1))?;
    a.touch_member(&member(Role::Primary)).await?;
    for what in ["renew", "acquire"] {
        let r = if what == "renew" {
            a.renew_leader().await
        } else {
            a.acquire_leader().await
        };
        match r {
            Err(DcsError::NotOwner { holder, .. }) if holder.as_deref() == Some("a") => {}
            other => bail!("{what}: expected NotOwner naming a, got {other:?}"),
        }
    }
    let c = a.load().await?;
    ensure!(c.leader.context("leader")?.owner == Some(foreign.to_string()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_refreshes_the_lease_in_the_background() -> anyhow::Result<()> {
    pgha_testkit::init_tracing();
    let server = EtcdServer::start().await?;
    let ep = [server.endpoint()];
    let t = timing(3, 1);
    let a = node(&ep, "idle", "a", t)?;
    let b = node(&ep, "idle", "b", t)?;
    a.touch_member(&member(Role::Primary)).await?;
    a.acquire_leader().await?;
    let refreshed = Instant::now();
    // a stays connected and idle: its keys must go within ttl (+ etcd's
    // 0.5 s expiry tick and slack).
    loop {
        let c = b.load().await?;
        if c.leader.is_none() && c.member("a").is_none() {
            break;
        }
        ensure!(
            refreshed.elapsed() < t.ttl + Duration::from_millis(1500),
            "a's keys still there {:?} after its last call",
            refreshed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(refreshed.elapsed() + Duration::from_millis(200) >= t.ttl);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_cursor_reads_as_changed() -> anyhow::Result<()> {
    pgha_testkit::init_tracing();
    let server = EtcdServer::start().await?;
    let ep = [server.endpoint()];
    let a = Arc::new(node(&ep, "compact", "a", timing(4, 1))?);
    let cursor = a.load().await?.watch_cursor;
    for _ in 0..3 {
        a.write_status(&Default::default()).await?;
    }
    let rev = a
        .load()
        .await?
        .watch_cursor
        .as_number()
        .context("numeric cursor")?;
    raw(&server)
        .await?
        .compact(
            rev,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await?;
    let start = Instant::now();
    let r = a.watch_leader(&cursor, Duration::from_secs(5)).await;
    ensure!(r == Ok(WatchOutcome::Changed), "{r:?}");
    ensure!(
        start.elapsed() < Duration::from_secs(1),
        "took {:?}",
        start.elapsed()
    );
    // A fresh cursor watches normally.
    let cursor = a.load().await?.watch_cursor;
    let r = a.watch_leader(&cursor, Duration::from_millis(500)).await;
    ensure!(r == Ok(WatchOutcome::TimedOut), "{r:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_are_stored_as_patroni_stores_them() -> anyhow::Result<()> {
    pgha_testkit::init_tracing();
    let server = EtcdServer::start().await?;
    let a = node(&[server.endpoint()], "bytes", "node1", timing(4, 1))?;
    let data = member(Role::Primary);
    a.touch_member(&data).await?;
    a.acquire_leader().await?;
    a.race_initialize().await?;
    let mut raw = raw(&server).await?;
    let get = |key: ClusterKey| layout("bytes").path(&key);
    let leader = raw.get(get(ClusterKey::Leader), None).await?;
    let leader = leader.kvs().first().context("leader key")?;
    ensure!(leader.value() == b"node1", "{:?}", leader.value_str());
    let m = raw
        .get(get(ClusterKey::Member("node1".into())), None)
        .await?;
    let m = m.kvs().first().context("member key")?;
    ensure!(m.value() == serde_json::to_string(&data)?.as_bytes());
    ensure!(!m.value().contains(&b' '), "JSON is compact");
    ensure!(
        m.lease() == leader.lease() && m.lease() != 0,
        "both on the node's lease"
    );
    let init = raw.get(get(ClusterKey::Initialize), None).await?;
    let init = init.kvs().first().context("initialize key")?;
    ensure!(init.value().is_empty() && init.lease() == 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_lease_is_reported_then_replaced() -> anyhow::Result<()> {
    pgha_testkit::init_tracing();
    let server = EtcdServer::start().await?;
    let a = node(&[server.endpoint()], "revoked", "a", timing(10, 1))?;
    a.touch_member(&member(Role::Primary)).await?;
    a.acquire_leader().await?;
    let lease: i64 = a
        .load()
        .await?
        .leader
        .context("leader")?
        .owner
        .context("owner")?
        .parse()?;
    raw(&server).await?.lease_revoke(lease).await?;

    let r = a.renew_leader().await;
    ensure!(
        matches!(r, Err(DcsError::SessionExpired { .. })),
        "renew on a revoked lease: {r:?}"
    );
    // Nothing is papered over: no lease, no lock.
    let r = a.renew_leader().await;
    ensure!(
        matches!(r, Err(DcsError::NotOwner { holder: None, .. })),
        "{r:?}"
    );
    a.touch_member(&member(Role::Replica)).await?;
    let c = a.load().await?;
    ensure!(c.leader.is_none(), "{:?}", c.leader);
    let owner = c.member("a").and_then(|m| m.owner.clone());
    ensure!(
        owner.is_some() && owner != Some(lease.to_string()),
        "member key on {owner:?}"
    );
    a.acquire_leader().await?;
    Ok(())
}
