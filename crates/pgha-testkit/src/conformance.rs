//! The DCS conformance suite: what every [`Dcs`] implementation must do,
//! checked the same way against the in-memory store, etcd, ZooKeeper, and
//! (later) Consul and Kubernetes.
//!
//! A backend crate runs it with one line in a test file:
//!
//! ```ignore
//! pgha_testkit::dcs_conformance_suite!(my_backend::start_for_tests());
//! ```
//!
//! where the expression is a future giving `anyhow::Result<impl Backend>`.
//! Each case becomes its own `#[tokio::test]`, starts its own backend (its
//! own server, for real engines), and uses its own cluster scope.
//!
//! Time bounds asserted here are the contract the HA loop relies on (a
//! watch wakes within 0.5 s, a dead link fails within `retry_timeout`, an
//! abandoned lock goes within `ttl` + 1 s and never before its promised
//! lifetime), not performance targets.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, bail, ensure};
use async_trait::async_trait;
use futures::future::join_all;
use pgha_core::dcs::{Dcs, DcsError, DcsExt, SharedKey, WatchOutcome};
use pgha_core::model::{
    Cluster, DynamicConfig, Expect, Failover, Failsafe, History, HistoryEntry, KeyLayout,
    LeaderLock, MemberData, PgState, Role, Status, SyncState, Timing,
};
use tokio::time::Instant;

pub use crate::proxy::LinkMode;

/// A backend under test: makes node clients for a cluster and can play the
/// foreign writer and the server operator.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// A client for node `name` in the cluster `scope` (namespace
    /// `/service`), connected over a link of its own that the test can cut.
    async fn node(&self, scope: &str, name: &str, timing: Timing) -> anyhow::Result<TestNode>;

    /// Writes `value` at `key` (relative to the cluster's base path, e.g.
    /// `members/intruder`), bypassing pgha, as another tool or a person might.
    async fn write_raw(&self, scope: &str, key: &str, value: &[u8]) -> anyhow::Result<()>;

    /// Stops the server abruptly and starts it again at the same address
    /// with the same data, while clients stay connected.
    async fn restart_server(&self) -> anyhow::Result<()>;

    /// What this backend's engine guarantees where engines legitimately
    /// differ. The default is what etcd, ZooKeeper, Consul and the
    /// in-memory store give, so only a backend that differs overrides it.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
}

/// Guarantees that differ between engines. Each case that depends on one
/// asserts, for a backend without it, what that backend guarantees instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Every successful compare-and-set write gives a new version, even one
    /// that stores the value already there (Consul keeps the index of a
    /// write that changes nothing; pgha's Consul backend makes every
    /// compare-and-set change the entry's `Flags`, so it has this
    /// capability). Kubernetes does not: kube-apiserver skips an
    /// update that changes nothing and keeps `resourceVersion`, so a write
    /// of the stored value at the current version succeeds and keeps the
    /// version (and a racing writer at that version can succeed after it).
    pub every_write_changes_version: bool,
    /// Each key has a version of its own. Kubernetes with Patroni's layout
    /// does not: keys stored as annotations of one object (`initialize`,
    /// `config`, `history`; `status`, `failsafe` and the leader record)
    /// share the object's `resourceVersion`, so writing one changes the
    /// version the others read with (a compare-and-set on one then fails,
    /// never succeeds wrongly).
    pub per_key_versions: bool,
    /// What a renewal's [`LockLease::valid_for`](pgha_core::dcs::LockLease)
    /// promises.
    pub lock_lifetime: LockLifetime,
}

/// How long a backend can promise that a lock it just renewed is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockLifetime {
    /// The full `ttl` (etcd leases, ZooKeeper sessions, Kubernetes leader
    /// records).
    Ttl,
    /// At least `ttl/2` and at most `ttl`: a Consul session's TTL is
    /// `ttl/2` (Patroni's choice, so a lock is released within `ttl` even
    /// though Consul may keep a session up to twice its TTL); the server
    /// only promises that TTL, so the backend says so and the agent renews
    /// more often.
    AtLeastHalfTtl,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            every_write_changes_version: true,
            per_key_versions: true,
            lock_lifetime: LockLifetime::Ttl,
        }
    }
}

/// A switch on one node's link to the server.
pub trait Link: Send + Sync + fmt::Debug {
    fn set(&self, mode: LinkMode);
}

impl Link for crate::proxy::FaultProxy {
    fn set(&self, mode: LinkMode) {
        crate::proxy::FaultProxy::set(self, mode)
    }
}

/// One node's client and its link.
#[derive(Debug, Clone)]
pub struct TestNode {
    pub dcs: Arc<dyn Dcs>,
    pub link: Arc<dyn Link>,
}

impl std::ops::Deref for TestNode {
    type Target = dyn Dcs;
    fn deref(&self) -> &Self::Target {
        &*self.dcs
    }
}

/// The timings most cases use: short enough to keep the suite quick, and
/// above every engine's minimum lease or session (etcd grants at least
/// 2 s; the test ZooKeeper allows 1 s).
pub fn suite_timing() -> Timing {
    Timing {
        ttl: Duration::from_secs(4),
        loop_wait: Duration::from_secs(1),
        retry_timeout: Duration::from_secs(1),
    }
}

/// Slack for "within X": scheduling, polling and loopback round trips.
const SLACK: Duration = Duration::from_millis(1000);
/// How soon a watch must wake after the leader key changed.
const WATCH_WAKE: Duration = Duration::from_millis(500);

/// A scope no other case or earlier run uses.
pub fn unique_scope(case: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{}-{}-{}-{}",
        case.replace('_', "-"),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos % 100_000
    )
}

async fn nodes<B: Backend>(
    b: &B,
    scope: &str,
    names: &[&str],
    timing: Timing,
) -> anyhow::Result<Vec<TestNode>> {
    let mut out = Vec::new();
    for name in names {
        out.push(
            b.node(scope, name, timing)
                .await
                .with_context(|| format!("client for {name}"))?,
        );
    }
    Ok(out)
}

fn member(name: &str, role: Role) -> MemberData {
    MemberData {
        conn_url: Some(format!("postgres://127.0.0.1:5432/postgres?{name}")),
        api_url: Some("http://127.0.0.1:8008/patroni".into()),
        state: Some(PgState::Running),
        role: Some(role),
        version: Some(pgha_core::model::PATRONI_COMPAT_VERSION.into()),
        ..Default::default()
    }
}

async fn load(n: &TestNode) -> anyhow::Result<Cluster> {
    n.load()
        .await
        .map_err(|e| anyhow!("load by {}: {e}", n.member_name()))
}

fn expect_not_owner(
    r: Result<impl fmt::Debug, DcsError>,
    holder: Option<&str>,
    what: &str,
) -> anyhow::Result<()> {
    match r {
        Err(DcsError::NotOwner { holder: h, .. }) => {
            if let (Some(h), Some(expected)) = (h.as_deref(), holder) {
                ensure!(
                    h == expected,
                    "{what}: NotOwner names holder {h:?}, expected {expected:?}"
                );
            }
            if holder.is_none() {
                ensure!(
                    h.is_none(),
                    "{what}: NotOwner names holder {h:?}, but nobody holds the lock"
                );
            }
            Ok(())
        }
        other => bail!("{what}: expected NotOwner, got {other:?}"),
    }
}

fn expect_conflict(r: Result<impl fmt::Debug, DcsError>, what: &str) -> anyhow::Result<()> {
    match r {
        Err(DcsError::Conflict { .. }) => Ok(()),
        other => bail!("{what}: expected Conflict, got {other:?}"),
    }
}

/// Polls `load` on `observer` until `done` holds for the snapshot.
async fn until_cluster(
    observer: &TestNode,
    what: &str,
    within: Duration,
    done: impl Fn(&Cluster) -> bool,
) -> anyhow::Result<Cluster> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(c) = observer.load().await
            && done(&c)
        {
            return Ok(c);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {within:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// N nodes race for the lock, several rounds: exactly one wins each round,
/// the losers are told who won, and everyone sees the winner.
pub async fn exactly_one_leader_among_contenders<B: Backend>(b: &B) -> anyhow::Result<()> {
    let scope = unique_scope("contenders");
    let names = ["n0", "n1", "n2", "n3", "n4"];
    let ns = nodes(b, &scope, &names, suite_timing()).await?;
    for round in 0..3 {
        let results = join_all(ns.iter().map(|n| n.acquire_leader())).await;
        let winners: Vec<&str> = results
            .iter()
            .zip(&names)
            .filter(|(r, _)| r.is_ok())
            .map(|(_, n)| *n)
            .collect();
        ensure!(
            winners.len() == 1,
            "round {round}: {} winners {winners:?}; results {results:?}",
            winners.len()
        );
        let winner = winners[0];
        for (r, name) in results.iter().zip(&names) {
            if *name != winner {
                expect_not_owner(
                    r.clone(),
                    Some(winner),
                    &format!("round {round}: loser {name}"),
                )?;
            }
        }
        for n in &ns {
            let c = load(n).await?;
            ensure!(
                c.leader_name() == Some(winner),
                "round {round}: {} sees leader {:?}, winner was {winner}",
                n.member_name(),
                c.leader_name()
            );
        }
        let w = &ns[names.iter().position(|n| *n == winner).unwrap_or_default()];
        w.release_leader().await.context("winner releases")?;
        ensure!(
            load(&ns[0]).await?.leader.is_none(),
            "round {round}: lock still held after release"
        );
    }
    Ok(())
}

/// Renewing or releasing a lock held by someone else fails and changes nothing.
pub async fn non_owner_cannot_renew_or_release<B: Backend>(b: &B) -> anyhow::Result<()> {
    let scope = unique_scope("non-owner");
    let ns = nodes(b, &scope, &["a", "b"], suite_timing()).await?;
    let (a, bb) = (&ns[0], &ns[1]);
    a.touch_member(&member("a", Role::Primary)).await?;
    a.acquire_leader().await.context("a acquires")?;
    let before = load(bb).await?.leader.context("leader after acquire")?;

    expect_not_owner(bb.renew_leader().await, Some("a"), "b renews a's lock")?;
    expect_not_owner(bb.release_leader().await, Some("a"), "b releases a's lock")?;
    let after = load(bb)
        .await?
        .leader
        .context("leader after b's attempts")?;
    ensure!(
        after.name == "a" && after.version == before.version,
        "b's attempts changed the lock: {before:?} -> {after:?}"
    );

    a.renew_leader().await.context("owner renews")?;
    a.release_leader().await.context("owner releases")?;
    expect_not_owner(a.renew_leader().await, None, "renew after release")?;
    expect_not_owner(bb.release_leader().await, None, "release of a free lock")?;
    ensure!(load(a).await?.leader.is_none(), "lock held after release");
    Ok(())
}

/// A holder that keeps renewing keeps the lock well past ttl.
pub async fn renewing_keeps_the_lock<B: Backend>(b: &B) -> anyhow::Result<()> {
    let scope = unique_scope("renew-keeps");
    let timing = suite_timing();
    let least = least_lifetime(b, timing);
    let ns = nodes(b, &scope, &["a", "b"], timing).await?;
    let (a, bb) = (&ns[0], &ns[1]);
    a.touch_member(&member("a", Role::Primary)).await?;
    a.acquire_leader().await?;
    let until = Instant::now() + timing.ttl * 2;
    while Instant::now() < until {
        tokio::time::sleep(timing.loop_wait).await;
        let lease = a.renew_leader().await.context("renew")?;
        ensure!(
            lease.valid_for >= least && lease.valid_for <= timing.ttl,
            "renew promised {:?}; expected between {least:?} and ttl {:?}",
            lease.valid_for,
            timing.ttl
        );
        a.touch_member(&member("a", Role::Primary)).await?;
        expect_not_owner(
            bb.acquire_leader().await,
            Some("a"),
            "b tries while a renews",
        )?;
    }
    let c = load(bb).await?;
    ensure!(
        c.leader_name() == Some("a") && c.member("a").is_some(),
        "a lost lock or member key while renewing: {c:?}"
    );
    Ok(())
}

/// When the holder stops refreshing (its link goes dark), its lock and
/// member key stay for the promised lifetime, are gone within ttl + 1 s,
/// another node can take the lock, and the old holder, back online, is
/// told it lost it.
pub async fn abandoned_lock_and_member_expire<B: Backend>(b: &B) -> anyhow::Result<()> {
    let scope = unique_scope("expire");
    let timing = suite_timing();
    let ns = nodes(b, &scope, &["a", "b"], timing).await?;
    let (a, bb) = (&ns[0], &ns[1]);
    a.touch_member(&member("a", Role::Primary)).await?;
    bb.touch_member(&member("b", Role::Replica)).await?;
    a.acquire_leader().await?;

    let sent = Instant::now();
    let lease = a.renew_leader().await.context("last renewal")?;
    let refreshed = Instant::now();
    a.link.set(LinkMode::Blackhole);

    let promised = sent + lease.valid_for;
    let deadline = refreshed + timing.ttl + SLACK;
    let mut gone_at = None;
    while Instant::now() < deadline + Duration::from_millis(200) {
        let probe = Instant::now();
        if let Ok(c) = bb.load().await {
            let held = c.leader_name() == Some("a");
            if !held {
                ensure!(
                    probe + Duration::from_millis(200) >= promised,
                    "lock vanished {:?} after the renewal was sent, but it promised {:?}",
                    probe - sent,
                    lease.valid_for
                );
                if c.member("a").is_none() {
                    gone_at = Some(probe);
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone_at = gone_at.ok_or_else(|| {
        anyhow!(
            "lock and member key of a still there {:?} after its last refresh (ttl {:?})",
            deadline - refreshed,
            timing.ttl
        )
    })?;
    ensure!(
        gone_at <= deadline,
        "expired {:?} after refresh, later than ttl + 1 s",
        gone_at - refreshed
    );

    bb.acquire_leader()
        .await
        .context("b takes the expired lock")?;

    a.link.set(LinkMode::Open);
    let r = retry_while_unreachable(Duration::from_secs(20), || a.renew_leader()).await;
    ensure!(
        matches!(&r, Err(e) if e.is_lost_race()),
        "a, back online after its lock expired, must learn it lost it; renew gave {r:?}"
    );
    retry_while_unreachable(Duration::from_secs(20), || async {
        a.touch_member(&member("a", Role::Replica)).await
    })
    .await
    .context("a publishes its member key again")?;
    let c = until_cluster(bb, "a's member key is back", Duration::from_secs(5), |c| {
        c.member("a").is_some()
    })
    .await?;
    ensure!(
        c.leader_name() == Some("b"),
        "a's return disturbed b's lock: {:?}",
        c.leader
    );
    expect_not_owner(
        a.renew_leader().await,
        Some("b"),
        "a renews after b took over",
    )?;
    Ok(())
}

async fn retry_while_unreachable<T, F, Fut>(within: Duration, mut op: F) -> Result<T, DcsError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, DcsError>>,
{
    let deadline = Instant::now() + within;
    loop {
        match op().await {
            Err(e) if e.is_unreachable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => return other,
        }
    }
}

/// Compare-and-set on `config`, `failover` and `sync`: absent-only creates,
/// stale versions, deletes, and two racing writers.
pub async fn compare_and_set_conflicts<B: Backend>(b: &B) -> anyhow::Result<()> {
    let scope = unique_scope("cas");
    let ns = nodes(b, &scope, &["a", "b"], suite_timing()).await?;
    let (a, bb) = (&ns[0], &ns[1]);
    let values = [
        (
            SharedKey::Config,
            r#"{"ttl":30,"loop_wait":10}"#,
            r#"{"ttl":20,"loop_wait":5}"#,
        ),
        (
            SharedKey::Failover,
            r#"{"leader":"a","member":"b"}"#,
            r#"{"member":"b"}"#,
        ),
        (
            SharedKey::Sync,
            r#"{"leader":"a","quorum":0,"sync_standby":null}"#,
            r#"{"leader":"a","quorum":0,"sync_standby":"b"}"#,
        ),
    ];
    for (key, first, second) in values {
        let v1 = a
            .write(key, first, Expect::Absent)
            .await
            .with_context(|| format!("{key}: create"))?;
        expect_conflict(
            bb.write(key, second, Expect::Absent).await,
            &format!("{key}: create over existing"),
        )?;
        let v2 = bb
            .write(key, second, Expect::Version(v1.clone()))
            .await
            .with_context(|| format!("{key}: CAS at current version"))?;
        ensure!(v2 != v1, "{key}: version did not change on write");
        expect_conflict(
            a.write(key, first, Expect::Version(v1.clone())).await,
            &format!("{key}: CAS at stale version"),
        )?;
        expect_conflict(
            a.delete(key, Expect::Version(v1.clone())).await,
            &format!("{key}: delete at stale version"),
        )?;
        expect_conflict(
            a.delete(key, Expect::Absent).await,
            &format!("{key}: delete expecting absent"),
        )?;
        let c = load(a).await?;
        let (stored, version) =
            stored_text(&c, key).with_context(|| format!("{key} missing after writes"))?;
        ensure!(
            version == v2,
            "{key}: load shows version {version}, write returned {v2}"
        );
        ensure!(
            same_json(&stored, second),
            "{key}: stored {stored}, expected {second}"
        );

        // Two writers race on the same version: exactly one wins.
        let caps = b.capabilities();
        let racer = if caps.every_write_changes_version {
            second
        } else {
            // Where a write that changes nothing keeps the version, it
            // succeeds at that version; for a race, both writers change
            // the value.
            let same = bb
                .write(key, second, Expect::Version(v2.clone()))
                .await
                .with_context(|| format!("{key}: rewrite of the stored value at its version"))?;
            ensure!(
                same == v2,
                "{key}: a write that changed nothing moved the version {v2} -> {same}"
            );
            third_value(key)
        };
        let (r1, r2) = tokio::join!(
            a.write(key, first, Expect::Version(v2.clone())),
            bb.write(key, racer, Expect::Version(v2.clone()))
        );
        ensure!(
            r1.is_ok() != r2.is_ok(),
            "{key}: racing CAS writes: {r1:?} / {r2:?}"
        );
        let loser = if r1.is_ok() { r2 } else { r1 };
        expect_conflict(loser, &format!("{key}: racing loser"))?;

        let current = stored_text(&load(a).await?, key).context("after race")?.1;
        a.delete(key, Expect::Version(current.clone()))
            .await
            .with_context(|| format!("{key}: delete at current version"))?;
        ensure!(
            stored_text(&load(a).await?, key).is_none(),
            "{key}: still there after delete"
        );
        expect_conflict(
            a.write(key, first, Expect::Version(current)).await,
            &format!("{key}: CAS on a deleted key"),
        )?;
        a.delete(key, Expect::Any)
            .await
            .with_context(|| format!("{key}: delete of an absent key with Any"))?;
        a.delete(key, Expect::Absent)
            .await
            .with_context(|| format!("{key}: delete expecting absent, when absent"))?;
    }
    Ok(())
}

/// A value for `key` that differs from both values the CAS case writes.
fn third_value(key: SharedKey) -> &'static str {
    match key {
        SharedKey::Failover => r#"{"leader":"b","member":"a"}"#,
        SharedKey::Sync => r#"{"leader":"b","quorum":0,"sync_standby":"a"}"#,
        _ => r#"{"ttl":25,"loop_wait":5}"#,
    }
}

fn stored_text(c: &Cluster, key: SharedKey) -> Option<(String, pgha_core::model::Version)> {
    let json = |v: &dyn erased::Json| v.json();
    match key {
        SharedKey::Config => c
            .config
            .as_ref()
            .map(|v| (json(&v.value), v.version.clone())),
        SharedKey::Failover => c
            .failover
            .as_ref()
            .map(|v| (json(&v.value), v.version.clone())),
        SharedKey::Sync => c.sync.as_ref().map(|v| (json(&v.value), v.version.clone())),
        SharedKey::History => c
            .history
            .as_ref()
            .map(|v| (json(&v.value), v.version.clone())),
        SharedKey::Status => c
            .status
            .as_ref()
            .map(|v| (json(&v.value), v.version.clone())),
        SharedKey::Failsafe => c
            .failsafe
            .as_ref()
            .map(|v| (json(&v.value), v.version.clone())),
        SharedKey::Initialize => c
            .initialize
            .as_ref()
            .map(|v| (v.value.clone(), v.version.clone())),
    }
}

mod erased {
    /// Serialises any model value, for comparing what was stored.
    pub trait Json {
        fn json(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> String {
            serde_json::to_string(self).unwrap_or_default()
        }
    }
}

fn same_json(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<serde_json::Value>(a),
        serde_json::from_str::<serde_json::Value>(b),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

async fn timed_watch(
    n: &TestNode,
    cursor: &pgha_core::model::Version,
    timeout: Duration,
) -> (Result<WatchOutcome, DcsError>, Instant) {
    let r = n.watch_leader(cursor, timeout).await;
    (r, Instant::now())
}

/// A watch wakes within 0.5 s when the lock is taken, released, or expires,
/// and at once when it changed between the load and the watch.
pub async fn watch_wakes_on_leader_change<B: Backend>(b: &B) -> anyhow::Result<()> {
    let scope = unique_scope("watch-wakes");
    let timing = suite_timing();
    let ns = nodes(b, &scope, &["a", "b"], timing).await?;
    let (a, bb) = (ns[0].clone(), ns[1].clone());

    // taken
    let cursor = load(&bb).await?.watch_cursor;
    let watcher = {
        let bb = bb.clone();
        tokio::spawn(async move { timed_watch(&bb, &cursor, Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    ensure!(
        !watcher.is_finished(),
        "watch returned before anything changed"
    );
    a.acquire_leader().await?;
    let changed = Instant::now();
    let (r, woke) = watcher.await?;
    ensure!(r == Ok(WatchOutcome::Changed), "watch after acquire: {r:?}");
    ensure!(
        woke.saturating_duration_since(changed) <= WATCH_WAKE,
        "watch woke {:?} after the lock was taken",
        woke - changed
    );

    // released
    let cursor = load(&bb).await?.watch_cursor;
    let watcher = {
        let bb = bb.clone();
        tokio::spawn(async move { timed_watch(&bb, &cursor, Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.release_leader().await?;
    let changed = Instant::now();
    let (r, woke) = watcher.await?;
    ensure!(r == Ok(WatchOutcome::Changed), "watch after release: {r:?}");
    ensure!(
        woke.saturating_duration_since(changed) <= WATCH_WAKE,
        "watch woke {:?} after the lock was released",
        woke - changed
    );

    // changed between load and watch
    let cursor = load(&bb).await?.watch_cursor;
    a.acquire_leader().await?;
    let start = Instant::now();
    let (r, woke) = timed_watch(&bb, &cursor, Duration::from_secs(10)).await;
    ensure!(
        r == Ok(WatchOutcome::Changed),
        "watch with a cursor older than the change: {r:?}"
    );
    ensure!(
        woke - start <= WATCH_WAKE,
        "a change before the watch started took {:?} to report",
        woke - start
    );

    // expired
    a.touch_member(&member("a", Role::Primary)).await?;
    a.renew_leader().await?;
    let refreshed = Instant::now();
    let cursor = load(&bb).await?.watch_cursor;
    a.link.set(LinkMode::Blackhole);
    let (r, woke) = timed_watch(&bb, &cursor, timing.ttl * 3).await;
    ensure!(
        r == Ok(WatchOutcome::Changed),
        "watch while the lock expires: {r:?}"
    );
    ensure!(
        woke - refreshed <= timing.ttl + SLACK + WATCH_WAKE,
        "watch woke {:?} after the holder's last refresh; the lock expires within ttl + 1 s",
        woke - refreshed
    );
    a.link.set(LinkMode::Open);
    Ok(())
}

/// With no change, a watch returns at its timeout: not early, not late.
pub async fn watch_returns_at_timeout<B: Backend>(b: &B) -> anyhow::Result<()> {
    let scope = unique_scope("watch-timeout");
    let ns = nodes(b, &scope, &["a", "b"], suite_timing()).await?;
    let (a, bb) = (&ns[0], &ns[1]);
    let timeout = Duration::from_secs(2);
    for phase in ["no leader", "idle leader"] {
        if phase == "idle leader" {
            a.acquire_leader().await?;
        }
        let cursor = load(bb).await?.watch_cursor;
        let start = Instant::now();
        let r = bb.watch_leader(&cursor, timeout).await;
        let took = start.elapsed();
        ensure!(r == Ok(WatchOutcome::TimedOut), "{phase}: watch gave {r:?}");
        ensure!(
            took + Duration::from_millis(100) >= timeout,
            "{phase}: watch returned after {took:?}, before its {timeout:?} timeout"
        );
        ensure!(
            took <= timeout + SLACK,
            "{phase}: watch returned {took:?} after a {timeout:?} timeout"
        );
    }
    Ok(())
}

/// Unreadable values written by someone else do not stop the cluster from
/// loading; each is reported by key.
pub async fn unreadable_values_are_reported_by_key<B: Backend>(b: &B) -> anyhow::Result<()> {
    let scope = unique_scope("garbage");
    let ns = nodes(b, &scope, &["a", "b"], suite_timing()).await?;
    let (a, bb) = (&ns[0], &ns[1]);
    a.touch_member(&member("a", Role::Primary)).await?;
    bb.touch_member(&member("b", Role::Replica)).await?;
    a.acquire_leader().await?;
    let garbage: [(&str, &[u8]); 8] = [
        ("members/intruder", b"{not json"),
        ("members/listy", b"[1,2,3]"),
        ("config", b"not json at all"),
        ("failover", b"[]"),
        ("sync", b"7"),
        ("history", b"{}"),
        ("status", b"???"),
        ("failsafe", b"["),
    ];
    for (key, value) in garbage {
        b.write_raw(&scope, key, value)
            .await
            .with_context(|| format!("plant garbage in {key}"))?;
    }
    let c = load(bb).await?;
    let names: Vec<&str> = c.members.iter().map(|m| m.name.as_str()).collect();
    ensure!(names == ["a", "b"], "members loaded: {names:?}");
    ensure!(
        c.leader_name() == Some("a"),
        "leader lost among garbage: {:?}",
        c.leader
    );
    let mut reported: Vec<&str> = c.problems.iter().map(|p| p.key.as_str()).collect();
    reported.sort_unstable();
    let mut expected: Vec<&str> = garbage.iter().map(|(k, _)| *k).collect();
    expected.sort_unstable();
    ensure!(
        reported == expected,
        "problems reported for {reported:?}, expected {expected:?}"
    );
    ensure!(
        c.config.is_none() && c.failover.is_none(),
        "garbage read as a value: {:?} {:?}",
        c.config,
        c.failover
    );
    ensure!(
        c.problems.iter().all(|p| p.version.is_some()),
        "problems must carry the version to overwrite by CAS: {:?}",
        c.problems
    );
    Ok(())
}

/// With the server out of reach, every call fails with `Unreachable`
/// within `retry_timeout` (+1 s): no hang, no other error. Back in reach,
/// the client works again by itself.
pub async fn unreachable_server_is_a_typed_error_within_retry_timeout<B: Backend>(
    b: &B,
) -> anyhow::Result<()> {
    let scope = unique_scope("unreachable");
    let timing = suite_timing();
    let ns = nodes(b, &scope, &["a"], timing).await?;
    let a = &ns[0];
    a.touch_member(&member("a", Role::Primary)).await?;
    a.acquire_leader().await?;
    let held = load(a).await?.leader.context("a's lock")?;
    let bound = timing.retry_timeout + SLACK;
    for mode in [LinkMode::Blackhole, LinkMode::Refuse] {
        a.link.set(mode);
        macro_rules! check {
            ($what:expr, $op:expr) => {{
                let start = Instant::now();
                let r = tokio::time::timeout(bound * 4, $op).await;
                let took = start.elapsed();
                match r {
                    Err(_) => bail!("{:?}: {} still hanging after {:?}", mode, $what, bound * 4),
                    Ok(Err(e)) if e.is_unreachable() => {}
                    Ok(other) => bail!(
                        "{:?}: {} gave {:?}, expected Unreachable",
                        mode,
                        $what,
                        other
                    ),
                }
                ensure!(
                    took <= bound,
                    "{:?}: {} took {:?} to fail, more than retry_timeout + 1 s",
                    mode,
                    $what,
                    took
                );
            }};
        }
        check!("load", a.load());
        check!("acquire_leader", a.acquire_leader());
        check!("renew_leader", a.renew_leader());
        check!("release_leader", a.release_leader());
        check!("take_leader_from", a.take_leader_from(&held));
        check!("remove_leader_at", a.remove_leader_at(&held));
        check!("touch_member", a.touch_member(&member("a", Role::Primary)));
        check!(
            "write config",
            a.write_config(&DynamicConfig::new(), Expect::Any)
        );
        check!(
            "delete failover",
            a.delete(SharedKey::Failover, Expect::Any)
        );
        // A watch may fail early or run to its timeout, but must not hang or report a change.
        let start = Instant::now();
        let watch_timeout = Duration::from_secs(2);
        let r = tokio::time::timeout(
            watch_timeout + bound * 4,
            a.watch_leader(&pgha_core::model::Version::number(0), watch_timeout),
        )
        .await;
        let took = start.elapsed();
        match r {
            Ok(Err(e)) if e.is_unreachable() => {}
            Ok(Ok(WatchOutcome::TimedOut)) => {}
            other => bail!("{mode:?}: watch gave {other:?}"),
        }
        ensure!(
            took <= watch_timeout.max(timing.retry_timeout) + SLACK,
            "{mode:?}: watch took {took:?}"
        );

        a.link.set(LinkMode::Open);
        retry_while_unreachable(Duration::from_secs(20), || a.load())
            .await
            .with_context(|| format!("{mode:?}: load after the link came back"))?;
        retry_while_unreachable(Duration::from_secs(20), || async {
            a.touch_member(&member("a", Role::Primary)).await
        })
        .await
        .with_context(|| format!("{mode:?}: touch after the link came back"))?;
    }
    Ok(())
}

/// The server crashes and comes back under live clients: they recover by
/// themselves, the lock held across a restart shorter than ttl is still
/// held, and watches work again.
pub async fn server_restart_is_survived<B: Backend>(b: &B) -> anyhow::Result<()> {
    let scope = unique_scope("restart");
    let timing = Timing {
        ttl: Duration::from_secs(10),
        loop_wait: Duration::from_secs(1),
        retry_timeout: Duration::from_secs(2),
    };
    let ns = nodes(b, &scope, &["a", "b"], timing).await?;
    let (a, bb) = (ns[0].clone(), ns[1].clone());
    a.touch_member(&member("a", Role::Primary)).await?;
    bb.touch_member(&member("b", Role::Replica)).await?;
    a.acquire_leader().await?;

    b.restart_server().await.context("restart the server")?;

    retry_while_unreachable(Duration::from_secs(30), || a.load())
        .await
        .context("a loads after restart")?;
    retry_while_unreachable(Duration::from_secs(30), || a.renew_leader())
        .await
        .context("a renews its lock after a restart shorter than ttl")?;
    retry_while_unreachable(Duration::from_secs(30), || async {
        bb.touch_member(&member("b", Role::Replica)).await
    })
    .await
    .context("b touches after restart")?;
    let c = load(&bb).await?;
    ensure!(
        c.leader_name() == Some("a") && c.member("a").is_some() && c.member("b").is_some(),
        "state after restart: {c:?}"
    );

    let cursor = c.watch_cursor;
    let watcher = {
        let bb = bb.clone();
        tokio::spawn(async move { timed_watch(&bb, &cursor, Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.release_leader()
        .await
        .context("a releases after restart")?;
    let released = Instant::now();
    let (r, woke) = watcher.await?;
    ensure!(r == Ok(WatchOutcome::Changed), "watch after restart: {r:?}");
    ensure!(
        woke.saturating_duration_since(released) <= WATCH_WAKE,
        "watch after restart woke {:?} late",
        woke - released
    );
    bb.acquire_leader()
        .await
        .context("b acquires after restart")?;
    Ok(())
}

/// Nodes race to initialize: one wins, fills in the system identifier;
/// cancelling lets the race run again.
pub async fn initialize_race_has_one_winner<B: Backend>(b: &B) -> anyhow::Result<()> {
    let scope = unique_scope("initialize");
    let names = ["n0", "n1", "n2", "n3", "n4"];
    let ns = nodes(b, &scope, &names, suite_timing()).await?;
    for round in 0..2 {
        let results = join_all(ns.iter().map(|n| n.race_initialize())).await;
        let winners: Vec<usize> = results
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_ok())
            .map(|(i, _)| i)
            .collect();
        ensure!(
            winners.len() == 1,
            "round {round}: initialize winners {winners:?}: {results:?}"
        );
        for (i, r) in results.iter().enumerate() {
            if i != winners[0] {
                expect_conflict(r.clone(), &format!("round {round}: initialize loser {i}"))?;
            }
        }
        let c = load(&ns[0]).await?;
        ensure!(
            c.initialize.as_ref().map(|v| v.value.as_str()) == Some(""),
            "round {round}: initialize while running initdb: {:?}",
            c.initialize
        );
        let winner = &ns[winners[0]];
        winner
            .set_initialize("7312345678901234567", Expect::Any)
            .await?;
        let c = load(&ns[1]).await?;
        ensure!(
            c.initialize.as_ref().map(|v| v.value.as_str()) == Some("7312345678901234567"),
            "round {round}: {:?}",
            c.initialize
        );
        winner.cancel_initialize().await?;
        ensure!(
            load(&ns[2]).await?.initialize.is_none(),
            "round {round}: initialize still there after cancel"
        );
    }
    Ok(())
}

/// Writes `value` into the leader key the way a person or a foreign tool
/// would (`etcdctl put` without a lease, zkCli's persistent `create`, a plain
/// Consul `PUT`, an annotation patch), and returns the key as `observer`
/// loads it. The key must be free or unowned before: over a held lock, the
/// tools of some engines keep the holder's session (Consul's plain `PUT`,
/// ZooKeeper's `setData` on an ephemeral znode), so only a key planted where
/// none is held is unowned on every engine.
async fn plant_leader<B: Backend>(
    b: &B,
    scope: &str,
    observer: &TestNode,
    value: &str,
) -> anyhow::Result<LeaderLock> {
    b.write_raw(scope, "leader", value.as_bytes())
        .await
        .with_context(|| format!("write {value:?} into the leader key by hand"))?;
    let lock = load(observer)
        .await?
        .leader
        .with_context(|| format!("no leader key after writing {value:?} by hand"))?;
    ensure!(
        lock.name == value,
        "the hand-written leader key reads as {lock:?}, expected {value:?}"
    );
    if observer.locks_have_owners() {
        ensure!(
            lock.owner.is_none(),
            "a leader key written by hand (no lease or session) reads as owned: {lock:?}"
        );
    }
    Ok(lock)
}

/// What a lock call may promise on this backend: `ttl`, or at least half
/// of it ([`LockLifetime`]).
fn least_lifetime<B: Backend>(b: &B, timing: Timing) -> Duration {
    match b.capabilities().lock_lifetime {
        LockLifetime::Ttl => timing.ttl,
        LockLifetime::AtLeastHalfTtl => timing.ttl / 2,
    }
}

/// [`Dcs::take_leader_from`] replaces a leader key written by hand (no lease
/// or session) with a lock of the caller, which then behaves like one
/// `acquire_leader` took: renewals work, others are refused, the key read
/// before can no longer be replaced or removed by its old version, and the
/// lock expires with the caller's lease or session when it stops. A
/// renewal never adopts the hand-written key by itself. (Whether
/// `acquire_leader` may take a key no session holds differs: Consul's
/// `?acquire=` does, the other engines refuse; `ha::decide` never races for
/// the lock while such a key is there.)
pub async fn take_leader_from_replaces_a_hand_written_key<B: Backend>(b: &B) -> anyhow::Result<()> {
    let scope = unique_scope("take-from");
    let timing = suite_timing();
    let ns = nodes(b, &scope, &["a", "b"], timing).await?;
    let (a, bb) = (&ns[0], &ns[1]);
    a.touch_member(&member("a", Role::Primary)).await?;
    bb.touch_member(&member("b", Role::Replica)).await?;

    let planted = plant_leader(b, &scope, a, "garbage").await?;
    expect_not_owner(
        a.renew_leader().await,
        Some("garbage"),
        "a renews while a hand-written key is in place",
    )?;

    let lease = a
        .take_leader_from(&planted)
        .await
        .context("a takes the hand-written key over")?;
    let least = least_lifetime(b, timing);
    ensure!(
        lease.valid_for >= least && lease.valid_for <= timing.ttl,
        "take_leader_from promised {:?}; expected between {least:?} and ttl {:?}",
        lease.valid_for,
        timing.ttl
    );
    let taken = load(bb)
        .await?
        .leader
        .context("leader after the takeover")?;
    ensure!(
        taken.name == "a" && taken.version != planted.version,
        "after the takeover the leader key reads {taken:?} (planted: {planted:?})"
    );
    if bb.locks_have_owners() {
        ensure!(
            taken.owner.is_some(),
            "the lock taken over is attached to no lease or session: {taken:?}"
        );
    }
    a.renew_leader()
        .await
        .context("a renews the lock it took over")?;
    expect_not_owner(
        bb.acquire_leader().await,
        Some("a"),
        "b acquires a lock taken over",
    )?;
    expect_not_owner(bb.renew_leader().await, Some("a"), "b renews a's lock")?;
    expect_conflict(
        bb.take_leader_from(&planted).await,
        "b takes over the hand-written key a already replaced",
    )?;
    expect_conflict(
        bb.remove_leader_at(&planted).await,
        "b removes the hand-written key a already replaced",
    )?;
    ensure!(
        load(bb).await?.leader_name() == Some("a"),
        "stale take_leader_from / remove_leader_at touched a's lock"
    );

    // a stops: the lock goes with its lease or session, not before it
    // promised, within ttl + 1 s.
    let sent_last = Instant::now();
    let last = a.renew_leader().await.context("a's last renewal")?;
    let refreshed = Instant::now();
    a.link.set(LinkMode::Blackhole);
    let promised = sent_last + last.valid_for;
    let deadline = refreshed + timing.ttl + SLACK;
    loop {
        let probe = Instant::now();
        if let Ok(c) = bb.load().await
            && c.leader_name() != Some("a")
        {
            ensure!(
                probe + Duration::from_millis(200) >= promised,
                "the lock taken over vanished {:?} after the last renewal was sent, \
                 but it promised {:?}",
                probe - sent_last,
                last.valid_for
            );
            ensure!(c.leader.is_none(), "leader after expiry: {:?}", c.leader);
            break;
        }
        ensure!(
            probe <= deadline,
            "the lock taken over is still there {:?} after a's last renewal (ttl {:?})",
            probe - refreshed,
            timing.ttl
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bb.acquire_leader()
        .await
        .context("b acquires once a's lock expired")?;
    a.link.set(LinkMode::Open);
    Ok(())
}

/// [`Dcs::take_leader_from`] is a compare-and-set on the version read: a
/// key rewritten, removed and acquired, re-acquired, or gone since the read
/// is never replaced (`Conflict`), and whatever holds it now keeps it.
pub async fn take_leader_from_refuses_a_changed_key<B: Backend>(b: &B) -> anyhow::Result<()> {
    let scope = unique_scope("take-from-cas");
    let ns = nodes(b, &scope, &["a", "b"], suite_timing()).await?;
    let (a, bb) = (&ns[0], &ns[1]);
    a.touch_member(&member("a", Role::Primary)).await?;
    bb.touch_member(&member("b", Role::Replica)).await?;

    // Rewritten by hand since the read.
    let first = plant_leader(b, &scope, a, "garbage").await?;
    let second = plant_leader(b, &scope, a, "garbage2").await?;
    ensure!(
        second.version != first.version,
        "rewriting the leader key kept its version: {first:?} / {second:?}"
    );
    expect_conflict(
        a.take_leader_from(&first).await,
        "a takes over a hand-written key rewritten since it was read",
    )?;
    let c = load(bb).await?;
    ensure!(
        c.leader.as_ref() == Some(&second),
        "a refused takeover changed the leader key: {:?}, expected {second:?}",
        c.leader
    );

    // Removed and acquired by another node since the read.
    bb.remove_leader_at(&second)
        .await
        .context("b removes the hand-written key")?;
    bb.acquire_leader()
        .await
        .context("b acquires after the removal")?;
    expect_conflict(
        a.take_leader_from(&second).await,
        "a takes over a key b acquired since it was read",
    )?;
    let held = load(a).await?.leader.context("b's lock")?;
    ensure!(held.name == "b", "b's lock was replaced: {held:?}");
    bb.renew_leader()
        .await
        .context("b still renews after a's refused takeover")?;

    // Re-acquired since the read: another lock of the same holder.
    bb.release_leader().await.context("b releases")?;
    bb.acquire_leader().await.context("b acquires again")?;
    expect_conflict(
        a.take_leader_from(&held).await,
        "a takes over b's earlier lock",
    )?;
    ensure!(
        load(a).await?.leader_name() == Some("b"),
        "b's later lock was replaced"
    );
    bb.renew_leader().await.context("b renews its later lock")?;

    // Gone since the read.
    let last = load(a).await?.leader.context("b's later lock")?;
    bb.release_leader().await.context("b releases again")?;
    expect_conflict(
        a.take_leader_from(&last).await,
        "a takes over a key gone since it was read",
    )?;
    ensure!(
        load(a).await?.leader.is_none(),
        "a refused takeover of a vanished key created one"
    );
    Ok(())
}

/// [`Dcs::remove_leader_at`] deletes exactly the version read, whatever it
/// names: `Conflict` (and no change) for any other version, `Ok` when the
/// key is already gone; after a removal anyone can acquire the lock.
pub async fn remove_leader_at_removes_only_the_version_read<B: Backend>(
    b: &B,
) -> anyhow::Result<()> {
    let scope = unique_scope("remove-at");
    let ns = nodes(b, &scope, &["a", "b"], suite_timing()).await?;
    let (a, bb) = (&ns[0], &ns[1]);
    a.touch_member(&member("a", Role::Primary)).await?;
    bb.touch_member(&member("b", Role::Replica)).await?;

    let first = plant_leader(b, &scope, a, "garbage").await?;
    let second = plant_leader(b, &scope, a, "garbage2").await?;
    expect_conflict(
        a.remove_leader_at(&first).await,
        "a removes a hand-written key rewritten since it was read",
    )?;
    let c = load(bb).await?;
    ensure!(
        c.leader.as_ref() == Some(&second),
        "a refused removal changed the leader key: {:?}, expected {second:?}",
        c.leader
    );
    a.remove_leader_at(&second)
        .await
        .context("a removes the hand-written key as read")?;
    ensure!(
        load(bb).await?.leader.is_none(),
        "the hand-written key is still there after its removal"
    );
    a.remove_leader_at(&second)
        .await
        .context("a removes a key already gone")?;

    // A new key in its place is not the one read.
    bb.acquire_leader()
        .await
        .context("b acquires after the removal")?;
    expect_conflict(
        a.remove_leader_at(&second).await,
        "a removes, by an old version, the lock b acquired since",
    )?;
    bb.renew_leader()
        .await
        .context("b still renews after a's refused removal")?;

    // Whatever the key names: a lock as read is removed too.
    let theirs = load(a).await?.leader.context("b's lock")?;
    a.remove_leader_at(&theirs)
        .await
        .context("a removes b's lock as read")?;
    ensure!(
        load(a).await?.leader.is_none(),
        "b's lock is still there after its removal"
    );
    let r = bb.renew_leader().await;
    ensure!(
        matches!(&r, Err(e) if e.is_lost_race()),
        "b renewed a lock that was removed: {r:?}"
    );
    a.acquire_leader()
        .await
        .context("a acquires after removing b's lock")?;
    Ok(())
}

/// On engines whose locks always live in a lease or session
/// ([`Dcs::locks_have_owners`]), `load` tells a key written by hand
/// (`owner: None`) from a lock taken by `acquire_leader` or
/// `take_leader_from` (`owner: Some`, this client's current lease or
/// session: the same for both).
pub async fn owner_tells_hand_written_keys_from_locks<B: Backend>(b: &B) -> anyhow::Result<()> {
    let scope = unique_scope("owner");
    let ns = nodes(b, &scope, &["a", "b"], suite_timing()).await?;
    let (a, bb) = (&ns[0], &ns[1]);
    if !a.locks_have_owners() {
        // Kubernetes: locks are judged by their age; nothing to tell apart.
        return Ok(());
    }
    a.touch_member(&member("a", Role::Primary)).await?;

    let planted = plant_leader(b, &scope, bb, "by-hand").await?;
    a.remove_leader_at(&planted)
        .await
        .context("remove the hand-written key")?;
    a.acquire_leader().await.context("a acquires")?;
    let acquired = load(bb).await?.leader.context("a's lock")?;
    ensure!(
        acquired.name == "a" && acquired.owner.is_some(),
        "a lock taken by acquire_leader reads as {acquired:?}"
    );
    a.take_leader_from(&acquired)
        .await
        .context("a takes its own lock over by compare-and-set")?;
    let taken = load(bb)
        .await?
        .leader
        .context("a's lock after take_leader_from")?;
    ensure!(
        taken.name == "a" && taken.version != acquired.version && taken.owner == acquired.owner,
        "a lock taken by take_leader_from reads as {taken:?}, expected a new version on \
         a's lease or session {:?}",
        acquired.owner
    );
    let member_owner = load(bb).await?.member("a").and_then(|m| m.owner.clone());
    ensure!(
        member_owner == taken.owner,
        "a's lock ({:?}) and member key ({member_owner:?}) are on different leases or sessions",
        taken.owner
    );
    a.renew_leader().await.context("a renews")?;
    Ok(())
}

/// The fence guard's release ([`Dcs::release_leader_at`]): a second client
/// of the lock's member deletes exactly the lock it read, whichever lease or
/// session holds it; never another node's lock, nor a later lock of the
/// same member.
pub async fn another_client_of_the_holder_releases_exactly_the_lock_it_read<B: Backend>(
    b: &B,
) -> anyhow::Result<()> {
    let scope = unique_scope("release-at");
    let ns = nodes(b, &scope, &["a", "b"], suite_timing()).await?;
    let (a, bb) = (&ns[0], &ns[1]);
    let guard = b
        .node(&scope, "a", suite_timing())
        .await
        .context("a second client of member a")?;

    a.acquire_leader().await.context("a acquires")?;
    let first = load(&guard).await?.leader.context("leader after acquire")?;
    ensure!(first.name == "a", "lock names {:?}", first.name);
    expect_not_owner(
        bb.release_leader_at(&first).await,
        Some("a"),
        "b releases a's lock as read",
    )?;

    // Another node's lock is never released by a's guard.
    a.release_leader().await.context("a releases")?;
    bb.acquire_leader().await.context("b acquires")?;
    let theirs = load(&guard).await?.leader.context("b's lock")?;
    expect_not_owner(
        guard.release_leader_at(&theirs).await,
        Some("b"),
        "a's guard releases b's lock",
    )?;
    expect_not_owner(
        guard.release_leader_at(&first).await,
        Some("b"),
        "a's guard releases a's old lock while b holds one",
    )?;
    ensure!(
        load(a).await?.leader_name() == Some("b"),
        "b's lock was touched"
    );
    bb.release_leader().await.context("b releases")?;

    // A later lock of a is not the one read before.
    a.acquire_leader().await.context("a acquires again")?;
    expect_conflict(
        guard.release_leader_at(&first).await,
        "a's guard releases a's earlier lock",
    )?;
    let second = load(&guard).await?.leader.context("a's second lock")?;
    ensure!(
        second.name == "a" && second.version != first.version,
        "a's second lock reads like its first: {first:?} / {second:?}"
    );
    a.renew_leader()
        .await
        .context("the holder still renews after the guard's refused release")?;

    // The lock as read, from the other client: released.
    let current = load(&guard).await?.leader.context("a's lock")?;
    guard
        .release_leader_at(&current)
        .await
        .context("a's guard releases a's current lock")?;
    ensure!(
        load(bb).await?.leader.is_none(),
        "lock still held after the guard released it"
    );
    ensure!(
        a.renew_leader().await.is_err(),
        "the old holder renewed a lock its guard released"
    );
    bb.acquire_leader()
        .await
        .context("another node takes the released lock at once")?;
    Ok(())
}

/// A member's status reads back exactly as written, unknown fields included.
pub async fn member_status_round_trips<B: Backend>(b: &B) -> anyhow::Result<()> {
    let scope = unique_scope("member");
    let ns = nodes(b, &scope, &["a"], suite_timing()).await?;
    let a = &ns[0];
    let mut data: MemberData = serde_json::from_str(
        r#"{"conn_url":"postgres://127.0.0.1:5433/postgres","api_url":"http://127.0.0.1:8009/patroni","state":"running","role":"replica","version":"4.1.4","tags":{"nofailover":true,"dc":"eu-1"},"xlog_location":50331808,"replication_state":"streaming","timeline":3,"from_the_future":{"x":[1,"y"]}}"#,
    )?;
    a.touch_member(&data).await?;
    let c = load(a).await?;
    let m = c.member("a").context("member a")?;
    ensure!(
        m.data == data,
        "member read back differs:\n wrote {data:?}\n read  {:?}",
        m.data
    );
    let v1 = m.version.clone();
    data.xlog_location = Some(50331900);
    a.touch_member(&data).await?;
    let c = load(a).await?;
    let m = c.member("a").context("member a after update")?;
    ensure!(
        m.data == data && m.version != v1,
        "update not visible: {:?}",
        m
    );
    Ok(())
}

/// `history`, `status`, `failsafe` and `config` read back as written, and
/// `delete_cluster` removes every key.
pub async fn shared_values_round_trip_and_cluster_deletes<B: Backend>(b: &B) -> anyhow::Result<()> {
    let scope = unique_scope("values");
    let ns = nodes(b, &scope, &["a"], suite_timing()).await?;
    let a = &ns[0];
    let config = DynamicConfig::parse(r#"{"ttl":30,"loop_wait":10,"postgresql":{"use_pg_rewind":true,"parameters":{"max_connections":100}},"custom":{"k":[1,2]}}"#).map_err(|e| anyhow!(e))?;
    let history = History(vec![HistoryEntry {
        timeline: 1,
        lsn: 25165984,
        reason: "no recovery target specified".into(),
        timestamp: Some("2026-11-21T10:00:00+00:00".into()),
        new_leader: Some("a".into()),
    }]);
    let status = Status {
        optime: Some(67108960),
        slots: Some([("b".to_string(), 67108800u64)].into_iter().collect()),
        retain_slots: Some(vec!["b".into()]),
        ..Default::default()
    };
    let failsafe = Failsafe(
        [("a".to_string(), "http://127.0.0.1:8008/patroni".to_string())]
            .into_iter()
            .collect(),
    );
    let failover = Failover {
        leader: Some("a".into()),
        member: Some("b".into()),
        ..Default::default()
    };
    let sync = SyncState {
        leader: Some("a".into()),
        quorum: Some(0),
        sync_standby: Some("b".into()),
        ..Default::default()
    };

    let vc = a.write_config(&config, Expect::Absent).await?;
    a.write_history(&history).await?;
    a.write_status(&status).await?;
    a.write_failsafe(&failsafe).await?;
    a.write_failover(&failover, Expect::Any).await?;
    a.write_sync(&sync, Expect::Any).await?;
    a.race_initialize().await?;
    a.touch_member(&member("a", Role::Primary)).await?;
    a.acquire_leader().await?;

    let c = load(a).await?;
    ensure!(c.problems.is_empty(), "problems: {:?}", c.problems);
    if b.capabilities().per_key_versions {
        ensure!(
            c.config.as_ref().map(|v| (&v.value, &v.version)) == Some((&config, &vc)),
            "config: {:?}",
            c.config
        );
    } else {
        // Later writes of keys sharing its object moved the version; the
        // version read back is the one a compare-and-set succeeds at.
        let read = c.config.as_ref().context("config missing")?;
        ensure!(read.value == config, "config: {:?}", c.config);
        a.write_config(&config, Expect::Version(read.version.clone()))
            .await
            .context("config: compare-and-set at the version read back")?;
    }
    ensure!(
        c.history.as_ref().map(|v| &v.value) == Some(&history),
        "history: {:?}",
        c.history
    );
    ensure!(
        c.status.as_ref().map(|v| &v.value) == Some(&status),
        "status: {:?}",
        c.status
    );
    ensure!(
        c.failsafe.as_ref().map(|v| &v.value) == Some(&failsafe),
        "failsafe: {:?}",
        c.failsafe
    );
    ensure!(
        c.failover.as_ref().map(|v| &v.value) == Some(&failover),
        "failover: {:?}",
        c.failover
    );
    ensure!(
        c.sync.as_ref().map(|v| &v.value) == Some(&sync),
        "sync: {:?}",
        c.sync
    );

    a.delete_cluster().await?;
    let c = load(a).await?;
    ensure!(
        c.initialize.is_none()
            && c.config.is_none()
            && c.leader.is_none()
            && c.members.is_empty()
            && c.failover.is_none()
            && c.sync.is_none()
            && c.history.is_none()
            && c.status.is_none()
            && c.failsafe.is_none()
            && c.problems.is_empty(),
        "keys left after delete_cluster: {c:?}"
    );
    Ok(())
}

/// The layout of the cluster a [`Backend`] is asked about.
pub fn layout(scope: &str) -> KeyLayout {
    KeyLayout::new(pgha_core::model::keys::DEFAULT_NAMESPACE, scope)
}

/// Runs one case with an overall bound, so a broken backend fails the test
/// instead of hanging CI.
pub async fn run_case<B, F, Fut>(
    name: &str,
    start: F,
    case: impl FnOnce(Arc<B>) -> Fut,
) -> anyhow::Result<()>
where
    B: Backend,
    F: std::future::Future<Output = anyhow::Result<B>>,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    crate::init_tracing();
    let backend = Arc::new(start.await.context("start the backend under test")?);
    tokio::time::timeout(Duration::from_secs(180), case(backend))
        .await
        .map_err(|_| anyhow!("{name}: did not finish within 180 s"))?
        .with_context(|| format!("conformance case {name}"))
}

/// Expands to one `#[tokio::test]` per conformance case. The argument is an
/// expression giving a future of `anyhow::Result<impl Backend>`; it is
/// evaluated once per case, so each case gets a fresh backend.
#[macro_export]
macro_rules! dcs_conformance_suite {
    ($start:expr) => {
        $crate::dcs_conformance_suite!(@cases $start;
            exactly_one_leader_among_contenders,
            non_owner_cannot_renew_or_release,
            renewing_keeps_the_lock,
            abandoned_lock_and_member_expire,
            compare_and_set_conflicts,
            watch_wakes_on_leader_change,
            watch_returns_at_timeout,
            unreadable_values_are_reported_by_key,
            unreachable_server_is_a_typed_error_within_retry_timeout,
            server_restart_is_survived,
            initialize_race_has_one_winner,
            take_leader_from_replaces_a_hand_written_key,
            take_leader_from_refuses_a_changed_key,
            remove_leader_at_removes_only_the_version_read,
            owner_tells_hand_written_keys_from_locks,
            another_client_of_the_holder_releases_exactly_the_lock_it_read,
            member_status_round_trips,
            shared_values_round_trip_and_cluster_deletes,
        );
    };
    (@cases $start:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let result = $crate::conformance::run_case(
                    stringify!($case),
                    $start,
                    |b| async move { $crate::conformance::$case(&*b).await },
                )
                .await;
                if let Err(e) = result {
                    panic!("{e:?}");
                }
            }
        )+
    };
}
