//! ZooKeeper-specific behaviour beyond the conformance suite: session
//! expiry while cut off, the negotiated session timeout, lazy connection,
//! several hosts, configuration, and the server behaviour the guarded
//! replacement of a hand-written leader znode relies on.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail, ensure};
use common::ZkBackend;
use pgha_core::dcs::{Dcs, DcsError, SharedKey};
use pgha_core::model::{Expect, MemberData, Timing};
use pgha_dcs_zk::{ZkConfig, ZkDcs};
use pgha_testkit::conformance::{layout, unique_scope};
use pgha_testkit::proxy::{FaultProxy, LinkMode};
use tokio::time::Instant;

fn timing(ttl_ms: u64) -> Timing {
    Timing {
        ttl: Duration::from_millis(ttl_ms),
        loop_wait: Duration::from_secs(1),
        retry_timeout: Duration::from_secs(1),
    }
}

/// Retries `op` while it fails with `Unreachable`, for at most `within`.
async fn while_unreachable<T, F, Fut>(within: Duration, mut op: F) -> Result<T, DcsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, DcsError>>,
{
    let deadline = Instant::now() + within;
    loop {
        match op().await {
            Err(e) if e.is_unreachable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

/// Polls `observer` until the leader lock is gone, for at most `within`.
async fn until_leader_gone(observer: &ZkDcs, within: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if let Ok(c) = observer.load().await
            && c.leader.is_none()
        {
            return Ok(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("leader lock still there after {within:?}")
}

async fn session_of(dcs: &ZkDcs) -> anyhow::Result<i64> {
    dcs.session_id().await.context("no session open")
}

/// After the holder's session expired while it was cut off, and the server
/// told it so on reconnection, its next renewal reports the loss; then it
/// works again, on a new session, without getting the lock back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_reported_by_the_server_on_reconnection() -> anyhow::Result<()> {
    pgha_testkit::init_tracing();
    let backend = ZkBackend::start().await?;
    let scope = unique_scope("zk-expiry-server");
    // ttl 6 s: the server expires the session ~6 s after the cut; the
    // client itself would give up only after 7/5 of that (8.4 s), so
    // opening the link in between lets the server report the expiry.
    let (a, link) = backend.zk_node(&scope, "a", timing(6000)).await?;
    let (b, _b_link) = backend.zk_node(&scope, "b", timing(6000)).await?;
    a.touch_member(&MemberData::default()).await?;
    a.acquire_leader().await?;
    let old = session_of(&a).await?;

    link.set(LinkMode::Blackhole);
    let gone = until_leader_gone(&b, Duration::from_secs(8)).await?;
    ensure!(
        gone >= Duration::from_millis(5800),
        "lock gone after {gone:?}"
    );
    link.set(LinkMode::Open);

    let r = while_unreachable(Duration::from_secs(10), || a.renew_leader()).await;
    ensure!(
        matches!(r, Err(DcsError::SessionExpired { .. })),
        "renew after expiry gave {r:?}"
    );
    after_expiry(&a, &b, old).await
}

/// The same when the client gave the session up by itself (no server
/// reachable for 7/5 of the session timeout): while still cut off, calls
/// are `Unreachable`; once back, the renewal reports the loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_detected_by_the_client_while_cut_off() -> anyhow::Result<()> {
    pgha_testkit::init_tracing();
    let backend = ZkBackend::start().await?;
    let scope = unique_scope("zk-expiry-client");
    let (a, link) = backend.zk_node(&scope, "a", timing(3000)).await?;
    let (b, _b_link) = backend.zk_node(&scope, "b", timing(3000)).await?;
    a.touch_member(&MemberData::default()).await?;
    a.acquire_leader().await?;
    let old = session_of(&a).await?;

    link.set(LinkMode::Blackhole);
    until_leader_gone(&b, Duration::from_secs(5)).await?;
    // Past 7/5 × 3 s since the last answer: the client declared it expired.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = a.renew_leader().await;
    ensure!(
        matches!(&r, Err(e) if e.is_unreachable()),
        "renew while cut off gave {r:?}"
    );
    link.set(LinkMode::Open);
    let r = while_unreachable(Duration::from_secs(10), || a.renew_leader()).await;
    ensure!(
        matches!(r, Err(DcsError::SessionExpired { .. })),
        "renew after expiry gave {r:?}"
    );
    after_expiry(&a, &b, old).await
}

/// What must hold once `a` was told its session `old` expired.
async fn after_expiry(a: &ZkDcs, b: &ZkDcs, old: i64) -> anyhow::Result<()> {
    // Reported once: from now on, the plain truth about the lock.
    let r = a.renew_leader().await;
    ensure!(
        matches!(&r, Err(DcsError::NotOwner { holder: None, .. })),
        "second renew gave {r:?}"
    );
    let new = session_of(a).await?;
    ensure!(new != old, "still on the expired session {old:#x}");

    a.touch_member(&MemberData::default()).await?;
    let c = b.load().await?;
    let owner = c.member("a").and_then(|m| m.owner.clone());
    ensure!(
        owner.as_deref() == Some(format!("{new:#x}").as_str()),
        "member key owned by {owner:?}, expected the new session {new:#x}"
    );
    b.acquire_leader().await.context("b takes the free lock")?;
    let r = a.renew_leader().await;
    ensure!(
        matches!(&r, Err(DcsError::NotOwner { holder: Some(h), .. }) if h == "b"),
        "renew after b took over gave {r:?}"
    );
    Ok(())
}

/// A link outage shorter than the session timeout costs nothing: the
/// session, its lock and its member key survive, and renewal goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_outage_keeps_the_session() -> anyhow::Result<()> {
    pgha_testkit::init_tracing();
    let backend = ZkBackend::start().await?;
    let scope = unique_scope("zk-short-outage");
    let (a, link) = backend.zk_node(&scope, "a", timing(6000)).await?;
    a.touch_member(&MemberData::default()).await?;
    a.acquire_leader().await?;
    let before = session_of(&a).await?;
    link.set(LinkMode::Blackhole);
    tokio::time::sleep(Duration::from_secs(2)).await;
    link.set(LinkMode::Open);
    while_unreachable(Duration::from_secs(5), || a.renew_leader())
        .await
        .context("renew after a 2 s outage")?;
    ensure!(session_of(&a).await? == before, "session changed");
    Ok(())
}

/// `LockLease` reports the timeout the server granted, not the requested
/// `ttl`: the test server clamps session timeouts into 1–60 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_is_the_negotiated_session_timeout() -> anyhow::Result<()> {
    pgha_testkit::init_tracing();
    let backend = ZkBackend::start().await?;
    let scope = unique_scope("zk-negotiated");
    for (requested_ms, granted) in [
        (90_000, Duration::from_secs(60)),
        (500, Duration::from_secs(1)),
        (7_000, Duration::from_secs(7)),
    ] {
        let name = format!("n{requested_ms}");
        let (n, _link) = backend.zk_node(&scope, &name, timing(requested_ms)).await?;
        let lease = n.acquire_leader().await?;
        ensure!(
            lease.valid_for == granted,
            "ttl {requested_ms} ms: acquire promised {:?}, server granted {granted:?}",
            lease.valid_for
        );
        let lease = n.renew_leader().await?;
        ensure!(
            lease.valid_for == granted,
            "ttl {requested_ms} ms: renew promised {:?}",
            lease.valid_for
        );
        n.release_leader().await?;
    }
    Ok(())
}

/// A new ttl applies from the next session, never to the current one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_ttl_applies_from_the_next_session() -> anyhow::Result<()> {
    pgha_testkit::init_tracing();
    let backend = ZkBackend::start().await?;
    let scope = unique_scope("zk-set-timing");
    let (a, link) = backend.zk_node(&scope, "a", timing(3000)).await?;
    ensure!(a.acquire_leader().await?.valid_for == Duration::from_secs(3));
    a.set_timing(timing(5000));
    ensure!(
        a.renew_leader().await?.valid_for == Duration::from_secs(3),
        "the running session changed its timeout"
    );
    // End the session (cut off past 7/5 × 3 s), then the next one uses 5 s.
    link.set(LinkMode::Blackhole);
    tokio::time::sleep(Duration::from_millis(4800)).await;
    link.set(LinkMode::Open);
    let lease = while_unreachable(Duration::from_secs(10), || async {
        a.load().await?;
        a.acquire_leader().await
    })
    .await?;
    ensure!(lease.valid_for == Duration::from_secs(5), "{lease:?}");
    Ok(())
}

/// Construction does not need the server; calls fail fast and typed while
/// it is away, and work once it is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_connection() -> anyhow::Result<()> {
    pgha_testkit::init_tracing();
    let backend = ZkBackend::start().await?;
    let proxy = FaultProxy::start(backend.addr()).await?;
    proxy.set(LinkMode::Refuse);
    let a = ZkDcs::new(
        ZkConfig::new([proxy.addr().to_string()]),
        layout(&unique_scope("zk-lazy")),
        "a",
        timing(4000),
    )?;
    ensure!(a.session_id().await.is_none(), "connected at construction");
    for _ in 0..3 {
        let start = Instant::now();
        let r = a.load().await;
        ensure!(matches!(&r, Err(e) if e.is_unreachable()), "{r:?}");
        ensure!(
            start.elapsed() <= Duration::from_millis(1500),
            "{:?}",
            start.elapsed()
        );
    }
    proxy.set(LinkMode::Open);
    while_unreachable(Duration::from_secs(10), || a.load()).await?;
    a.touch_member(&MemberData::default()).await?;
    Ok(())
}

/// With several hosts, losing the link to one moves the session to
/// another: no expiry, the lock stays ours. An unreachable host in the
/// list does not stop the client either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_hosts() -> anyhow::Result<()> {
    pgha_testkit::init_tracing();
    let backend = ZkBackend::start().await?;
    let p1 = Arc::new(FaultProxy::start(backend.addr()).await?);
    let p2 = Arc::new(FaultProxy::start(backend.addr()).await?);
    let dead = FaultProxy::start(backend.addr()).await?;
    dead.set(LinkMode::Refuse);
    let hosts = format!("{},{},{}", dead.addr(), p1.addr(), p2.addr());
    let config =
        ZkConfig::from_value(serde_json::json!({ "hosts": hosts })).map_err(|e| anyhow!(e))?;
    let a = ZkDcs::new(config, layout(&unique_scope("zk-hosts")), "a", timing(6000))?;
    let data = MemberData::default();
    while_unreachable(Duration::from_secs(5), || a.touch_member(&data)).await?;
    a.acquire_leader().await?;
    let session = session_of(&a).await?;
    for (cut, other) in [(&p1, &p2), (&p2, &p1)] {
        other.set(LinkMode::Open);
        cut.set(LinkMode::Blackhole);
        let r = while_unreachable(Duration::from_secs(5), || a.renew_leader()).await;
        ensure!(r.is_ok(), "renew with one host cut: {r:?}");
        ensure!(session_of(&a).await? == session, "session changed");
    }
    Ok(())
}

/// `auth_data` authenticates every session and `set_acls` guards every
/// znode the node creates: a client without the credentials is refused,
/// one with them reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_data_and_acls() -> anyhow::Result<()> {
    pgha_testkit::init_tracing();
    let backend = ZkBackend::start().await?;
    let scope = unique_scope("zk-acl");
    let client = |auth: serde_json::Value| -> anyhow::Result<ZkDcs> {
        let config = ZkConfig::from_value(serde_json::json!({
            "hosts": [backend.addr().to_string()],
            "auth_data": auth,
            "set_acls": {"auth:": ["ALL"]},
        }))
        .map_err(|e| anyhow!(e))?;
        Ok(ZkDcs::new(config, layout(&scope), "a", timing(4000))?)
    };
    let owner = client(serde_json::json!({"digest": "pgha:secret"}))?;
    let same = client(serde_json::json!({"digest": "pgha:secret"}))?;
    let stranger = client(serde_json::json!({}))?;
    owner
        .write(SharedKey::Config, r#"{"ttl":30}"#, Expect::Absent)
        .await?;
    let r = stranger.load().await;
    ensure!(
        matches!(&r, Err(DcsError::Rejected { .. })),
        "load without credentials gave {r:?}"
    );
    let c = same.load().await?;
    ensure!(
        c.config.is_some(),
        "config not readable with the credentials"
    );
    Ok(())
}

/// What `take_leader_from` / `remove_leader_at` rely on for a persistent
/// (hand-written) leader znode: a `multi` that first creates and deletes a
/// child of it fails as a whole when an ephemeral znode (a lock) took its
/// place, even at the same data version, which alone would not tell them
/// apart; and it succeeds on a persistent znode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_probe_tells_a_lock_from_a_hand_written_znode() -> anyhow::Result<()> {
    use zookeeper_client::{Acls, Client, CreateMode, Error as ZkError, MultiWriteError};
    pgha_testkit::init_tracing();
    let backend = ZkBackend::start().await?;
    let scope = unique_scope("zk-probe");
    let base = layout(&scope).base().to_string();
    let leader = format!("{base}/leader");
    let probe = format!("{leader}/pgha-cas-probe");
    let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
    let ephemeral = CreateMode::Ephemeral.with_acls(Acls::anyone_all());
    let person = Client::connect(&backend.addr().to_string()).await?;
    let holder = Client::connect(&backend.addr().to_string()).await?;
    let taker = Client::connect(&backend.addr().to_string()).await?;
    person.mkdir(&base, &persistent).await?;

    // Read a hand-written znode, which is then replaced by a lock.
    let (stat, _) = person.create(&leader, b"by-hand", &persistent).await?;
    ensure!(stat.version == 0 && stat.ephemeral_owner == 0, "{stat:?}");
    person.delete(&leader, None).await?;
    let (lock, _) = holder.create(&leader, b"b", &ephemeral).await?;
    ensure!(lock.version == stat.version, "{lock:?}");

    let guarded = |with_probe: bool| {
        let mut txn = taker.new_multi_writer();
        if with_probe {
            txn.add_create(&probe, &[], &persistent)?;
            txn.add_delete(&probe, None)?;
        }
        txn.add_delete(&leader, Some(stat.version))?;
        txn.add_create(&leader, b"a", &ephemeral)?;
        Ok::<_, ZkError>(txn.commit())
    };
    let r = guarded(true)?.await;
    ensure!(
        matches!(
            r,
            Err(MultiWriteError::OperationFailed {
                index: 0,
                source: ZkError::NoChildrenForEphemerals
            })
        ),
        "the probe under a lock gave {r:?}"
    );
    let (data, now) = person.get_data(&leader).await?;
    ensure!(
        data == b"b" && now.ephemeral_owner == holder.session_id().0,
        "the lock was touched by a refused multi"
    );

    // A persistent znode at that version: the same multi replaces it.
    holder.delete(&leader, None).await?;
    person.create(&leader, b"by-hand", &persistent).await?;
    guarded(true)?
        .await
        .context("the probe multi on a hand-written znode")?;
    let (data, now) = person.get_data(&leader).await?;
    ensure!(
        data == b"a" && now.ephemeral_owner == taker.session_id().0,
        "not replaced: {data:?} {now:?}"
    );
    ensure!(
        person.list_children(&leader).await?.is_empty(),
        "the probe was left behind"
    );
    Ok(())
}

/// Unsupported or malformed settings are refused when the client is made.
#[test]
fn bad_configuration_is_refused() {
    let l = layout("demo");
    let t = timing(4000);
    let tls =
        ZkConfig::from_value(serde_json::json!({"hosts": "h:2181", "use_ssl": true})).unwrap();
    assert!(matches!(
        ZkDcs::new(tls, l.clone(), "a", t),
        Err(DcsError::Rejected { .. })
    ));
    assert!(matches!(
        ZkDcs::new(ZkConfig::new(Vec::<String>::new()), l.clone(), "a", t),
        Err(DcsError::Rejected { .. })
    ));
    assert!(matches!(
        ZkDcs::new(ZkConfig::new(["h"]), l.clone(), "a/b", t),
        Err(DcsError::Rejected { .. })
    ));
    let warned = ZkConfig::from_value(serde_json::json!({
        "hosts": ["h1:2181", "h2:2181"], "cacert": "/ca.pem", "auth_data": {"digest": "u:p"}
    }))
    .unwrap();
    let dcs = ZkDcs::new(warned, l, "a", t).unwrap();
    assert_eq!(dcs.config_warnings().len(), 1);
    assert!(
        !format!("{dcs:?}").contains("u:p"),
        "credentials in Debug output"
    );
}
