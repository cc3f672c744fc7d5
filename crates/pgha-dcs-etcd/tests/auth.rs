//! Username/password against a real etcd with authentication enabled
//! (set up with `etcdctl` from Debian's `etcd-client`).

use std::time::Duration;

use anyhow::{Context, ensure};
use pgha_core::dcs::{Dcs, DcsError, DcsExt};
use pgha_core::model::{DynamicConfig, Expect, KeyLayout, Timing};
use pgha_dcs_etcd::{EtcdConfig, EtcdDcs};
use pgha_testkit::etcd::EtcdServer;

fn timing() -> Timing {
    Timing {
        ttl: Duration::from_secs(10),
        loop_wait: Duration::from_secs(1),
        retry_timeout: Duration::from_secs(3),
    }
}

/// Runs `etcdctl` (v3 API) against `server`, bounded in time.
async fn etcdctl(server: &EtcdServer, user: Option<&str>, args: &[&str]) -> anyhow::Result<()> {
    let mut cmd = tokio::process::Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", server.endpoint()))
        .arg("--command-timeout=5s");
    if let Some(user) = user {
        cmd.arg(format!("--user={user}"));
    }
    cmd.args(args).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(15), cmd.output())
        .await
        .context("etcdctl hung")?
        .context("run etcdctl (Debian package etcd-client)")?;
    ensure!(
        out.status.success(),
        "etcdctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// An etcd with users `root` (all rights) and `patroni` (read-write on
/// `/service/` only), authentication enabled.
async fn server_with_auth() -> anyhow::Result<EtcdServer> {
    let server = EtcdServer::start().await?;
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["role", "add", "root"],
        &["user", "grant-role", "root", "root"],
        &["user", "add", "patroni:s3cret"],
        &["role", "add", "pgha"],
        &[
            "role",
            "grant-permission",
            "pgha",
            "--prefix=true",
            "readwrite",
            "/service/",
        ],
        &["user", "grant-role", "patroni", "pgha"],
        &["auth", "enable"],
    ] {
        etcdctl(&server, None, args).await?;
    }
    Ok(server)
}

fn client(
    server: &EtcdServer,
    namespace: &str,
    user: Option<(&str, &str)>,
) -> anyhow::Result<EtcdDcs> {
    let mut config = EtcdConfig::new([server.endpoint()])?;
    if let Some((u, p)) = user {
        config = config.with_user(u, p);
    }
    Ok(EtcdDcs::new(
        config,
        KeyLayout::new(namespace, "auth"),
        "a",
        timing(),
    )?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn username_and_password() -> anyhow::Result<()> {
    pgha_testkit::init_tracing();
    let mut server = server_with_auth().await?;

    let a = client(&server, "/service", Some(("patroni", "s3cret")))?;
    a.touch_member(&Default::default()).await?;
    a.acquire_leader().await?;
    a.write_config(&DynamicConfig::new(), Expect::Absent)
        .await?;
    let c = a.load().await?;
    ensure!(c.leader_name() == Some("a") && c.config.is_some(), "{c:?}");
    let cursor = c.watch_cursor.clone();
    a.release_leader().await?;
    ensure!(
        a.watch_leader(&cursor, Duration::from_secs(5)).await
            == Ok(pgha_core::dcs::WatchOutcome::Changed),
        "watch with a token"
    );

    // Wrong password, no credentials, no permission on the prefix: the
    // server refuses, which is configuration, not the network.
    let wrong = client(&server, "/service", Some(("patroni", "nope")))?;
    let r = wrong.load().await;
    ensure!(
        matches!(r, Err(DcsError::Rejected { .. })),
        "wrong password: {r:?}"
    );
    let anonymous = client(&server, "/service", None)?;
    let r = anonymous.load().await;
    ensure!(
        matches!(r, Err(DcsError::Rejected { .. })),
        "no credentials: {r:?}"
    );
    let outside = client(&server, "/elsewhere", Some(("patroni", "s3cret")))?;
    let r = outside.load().await;
    ensure!(
        matches!(r, Err(DcsError::Rejected { .. })),
        "no permission: {r:?}"
    );
    let r = outside.touch_member(&Default::default()).await;
    ensure!(
        matches!(r, Err(DcsError::Rejected { .. })),
        "no permission: {r:?}"
    );
    let r = outside.watch_leader(&cursor, Duration::from_secs(2)).await;
    ensure!(
        matches!(r, Err(DcsError::Rejected { .. })),
        "watch without permission: {r:?}"
    );

    // Simple tokens do not survive a restart: the client authenticates again.
    server.restart().await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match a.load().await {
            Ok(_) => break,
            Err(e) if e.is_unreachable() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => anyhow::bail!("load after restart: {e}"),
        }
    }
    a.touch_member(&Default::default())
        .await
        .context("touch after restart")?;
    Ok(())
}

/// With credentials, connecting authenticates: a dead first endpoint makes
/// that fail, and the client moves on to the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticating_moves_past_a_dead_endpoint() -> anyhow::Result<()> {
    pgha_testkit::init_tracing();
    let server = server_with_auth().await?;
    let dead = format!("http://127.0.0.1:{}", pgha_testkit::ports::free_port()?);
    let config = EtcdConfig::new([dead, server.endpoint()])?.with_user("patroni", "s3cret");
    let a = EtcdDcs::new(config, KeyLayout::new("/service", "auth2"), "a", timing())?;
    for _ in 0..3 {
        a.load().await.context("load past the dead endpoint")?;
    }
    a.touch_member(&Default::default()).await?;
    a.acquire_leader().await?;
    Ok(())
}

/// Credentials for a cluster without authentication: carry on without
/// them, as Patroni does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_without_auth_enabled_are_ignored() -> anyhow::Result<()> {
    pgha_testkit::init_tracing();
    let server = EtcdServer::start().await?;
    let a = client(&server, "/service", Some(("patroni", "s3cret")))?;
    a.touch_member(&Default::default()).await?;
    a.acquire_leader().await?;
    ensure!(a.load().await?.leader_name() == Some("a"));
    Ok(())
}
