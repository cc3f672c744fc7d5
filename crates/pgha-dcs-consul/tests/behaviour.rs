//! Behaviour of the Consul backend beyond the shared conformance suite:
//! agents failing over, Consul's error answers, the session's life cycle
//! and honest lifetimes, `ttl` changes, and the watch's index handling.
//! All against the Consul emulator.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use pgha_consul_emulator::{ConsulEmulator, EmulatorConfig, Fault};
use pgha_core::dcs::{Dcs, DcsError, DcsExt, WatchOutcome};
use pgha_core::model::{DynamicConfig, Expect, KeyLayout, MemberData, Role, Timing, Version};
use pgha_dcs_consul::{ConsulConfig, ConsulDcs};
use pgha_testkit::conformance::LinkMode;
use pgha_testkit::proxy::FaultProxy;
use tokio::time::Instant;

fn timing(ttl: u64, retry: u64) -> Timing {
    Timing {
        ttl: Duration::from_secs(ttl),
        loop_wait: Duration::from_secs(1),
        retry_timeout: Duration::from_secs(retry),
    }
}

fn layout(scope: &str) -> KeyLayout {
    KeyLayout::new("/service", scope)
}

fn client(addrs: &[String], scope: &str, name: &str, t: Timing) -> ConsulDcs {
    ConsulDcs::new(ConsulConfig::new(addrs).unwrap(), layout(scope), name, t).unwrap()
}

async fn emulator() -> ConsulEmulator {
    pgha_testkit::init_tracing();
    ConsulEmulator::start(EmulatorConfig::for_tests())
        .await
        .unwrap()
}

fn member() -> MemberData {
    MemberData {
        role: Some(Role::Replica),
        conn_url: Some("postgres://127.0.0.1:5432/postgres".into()),
        ..Default::default()
    }
}

/// The session pgha creates is what Patroni creates: TTL = ttl/2,
/// Behavior delete, a 1 ms lock-delay, no checks, named `<scope>-<name>`;
/// and the lock promises that TTL.
#[tokio::test]
async fn session_is_created_as_patroni_does() {
    let e = emulator().await;
    let a = client(&[e.url()], "demo", "n1", timing(30, 10));
    let lease = a.acquire_leader().await.unwrap();
    assert_eq!(lease.valid_for, Duration::from_secs(15));
    let s = &e.sessions()[0];
    assert_eq!(s.name, "demo-n1");
    assert_eq!(s.ttl_text, "15s");
    assert_eq!(s.behavior.as_str(), "delete");
    assert_eq!(s.lock_delay, Duration::from_millis(1));
    assert!(s.node_checks.is_empty());
    let leader = e.get_raw("service/demo/leader").unwrap();
    assert_eq!(
        leader.value, b"n1",
        "the plain member name, as Patroni stores it"
    );
    assert_eq!(leader.session.as_deref(), Some(s.id.as_str()));
}

/// `valid_for` is honest at the tightest Consul allows (invalidation right
/// at the TTL): nobody can take the lock before `sent + valid_for`.
#[tokio::test]
async fn valid_for_holds_at_the_earliest_invalidation() {
    let mut config = EmulatorConfig::for_tests();
    config.store.ttl_multiplier = 1.0;
    let e = ConsulEmulator::start(config).await.unwrap();
    let a = client(&[e.url()], "honest", "a", timing(4, 1));
    let b = client(&[e.url()], "honest", "b", timing(4, 1));
    a.acquire_leader().await.unwrap();
    let lease = a.renew_leader().await.unwrap();
    assert_eq!(lease.valid_for, Duration::from_secs(2));
    e.clock()
        .advance(lease.valid_for - Duration::from_millis(50));
    assert!(matches!(
        b.acquire_leader().await,
        Err(DcsError::NotOwner { .. })
    ));
    e.clock().advance(Duration::from_millis(100));
    b.acquire_leader().await.unwrap();
}

/// A session Consul forgot is reported once (`SessionExpired`), then the
/// node is simply not the owner; its next touch starts a new session, which
/// does not bring the lock back.
#[tokio::test]
async fn expired_session_is_reported_once() {
    let e = emulator().await;
    let a = client(&[e.url()], "expiry", "a", timing(4, 1));
    a.touch_member(&member()).await.unwrap();
    a.acquire_leader().await.unwrap();
    e.clock().advance(Duration::from_secs(5));
    assert!(matches!(
        a.renew_leader().await,
        Err(DcsError::SessionExpired { .. })
    ));
    assert!(matches!(
        a.renew_leader().await,
        Err(DcsError::NotOwner { holder: None, .. })
    ));
    a.touch_member(&member()).await.unwrap();
    assert!(matches!(
        a.renew_leader().await,
        Err(DcsError::NotOwner { .. })
    ));
    let c = a.load().await.unwrap();
    assert!(c.leader.is_none() && c.member("a").is_some());
}

/// A new `ttl` takes effect with a new session; the lock and the member key
/// move over to it without ever being free.
#[tokio::test]
async fn ttl_change_moves_the_keys_to_a_new_session() {
    let e = emulator().await;
    let a = client(&[e.url()], "ttl-change", "a", timing(4, 1));
    a.touch_member(&member()).await.unwrap();
    a.acquire_leader().await.unwrap();
    let old = a.load().await.unwrap().leader.unwrap().owner;
    a.set_timing(timing(6, 1));
    a.touch_member(&member()).await.unwrap();
    let lease = a.renew_leader().await.unwrap();
    assert_eq!(lease.valid_for, Duration::from_secs(3));
    let c = a.load().await.unwrap();
    let now = c.leader.as_ref().unwrap().owner.clone();
    assert_ne!(now, old);
    assert_eq!(c.member("a").unwrap().owner, now);
    assert_eq!(c.leader_name(), Some("a"));
    // The old session is left to expire and takes nothing with it.
    e.clock().advance(Duration::from_secs(5));
    a.renew_leader().await.unwrap();
    let c = a.load().await.unwrap();
    assert_eq!(c.leader_name(), Some("a"));
    assert!(c.member("a").is_some());
}

/// With several agents, a dead or silent one is left for the next within
/// `retry_timeout`, and the client stays on the one that answers.
#[tokio::test]
async fn fails_over_between_agents() {
    let e = emulator().await;
    let dead = format!(
        "http://127.0.0.1:{}",
        pgha_testkit::ports::free_port().unwrap()
    );
    let silent = FaultProxy::start(e.addr()).await.unwrap();
    silent.set(LinkMode::Blackhole);
    let t = timing(10, 2);
    let a = client(
        &[dead, format!("http://{}", silent.addr()), e.url()],
        "hosts",
        "a",
        t,
    );
    let start = Instant::now();
    a.acquire_leader().await.unwrap();
    assert!(start.elapsed() <= t.retry_timeout + Duration::from_millis(500));
    let start = Instant::now();
    a.renew_leader().await.unwrap();
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "stays on the live agent"
    );
}

/// Consul's 429 and 5xx answers are `Unreachable` (retried within the
/// bound first); a hung server is `Unreachable` at `retry_timeout`; 403 is
/// `Rejected`.
#[tokio::test]
async fn error_answers_are_classified() {
    let e = emulator().await;
    let t = timing(10, 1);
    let a = client(&[e.url()], "errors", "a", t);
    e.faults().fail_next(1, 500, "No cluster leader");
    a.load().await.unwrap();
    e.faults().set(Fault::Status {
        status: 429,
        body: "rate limit exceeded".into(),
    });
    let r = a.load().await;
    assert!(
        matches!(&r, Err(DcsError::Unreachable { detail, .. }) if detail.contains("429")),
        "{r:?}"
    );
    // A compare-and-set refused with 429 was not applied: it is tried again.
    e.faults().fail_next(1, 429, "rate limit exceeded");
    a.write_config(&DynamicConfig::new(), Expect::Absent)
        .await
        .unwrap();
    e.faults().set(Fault::Hang);
    let start = Instant::now();
    assert!(a.load().await.unwrap_err().is_unreachable());
    assert!(start.elapsed() <= t.retry_timeout + Duration::from_millis(300));
    e.faults().clear();

    let mut config = EmulatorConfig::for_tests();
    config.acl_token = Some("s3cret".into());
    let locked = ConsulEmulator::start(config).await.unwrap();
    let b = client(&[locked.url()], "errors", "b", t);
    assert!(matches!(b.load().await, Err(DcsError::Rejected { .. })));
    let mut with_token = ConsulConfig::new([locked.url()]).unwrap();
    with_token.token = Some("s3cret".into());
    with_token.dc = Some("dc1".into());
    let c = ConsulDcs::new(with_token, layout("errors"), "c", t).unwrap();
    c.load().await.unwrap();
}

/// `delete_cluster` is recursive on the cluster's prefix with its trailing
/// slash: a cluster whose name extends this one's is untouched. Deleting a
/// single shared key is never recursive.
#[tokio::test]
async fn deletes_never_reach_neighbours() {
    let e = emulator().await;
    let t = timing(10, 1);
    let demo = client(&[e.url()], "demo", "a", t);
    let demo2 = client(&[e.url()], "demo2", "a", t);
    for c in [&demo, &demo2] {
        c.write_config(&DynamicConfig::new(), Expect::Any)
            .await
            .unwrap();
        c.touch_member(&member()).await.unwrap();
    }
    e.put_raw("service/demo/configuration", b"not ours");
    demo.delete(pgha_core::dcs::SharedKey::Config, Expect::Any)
        .await
        .unwrap();
    assert!(e.get_raw("service/demo/configuration").is_some());
    demo.delete_cluster().await.unwrap();
    assert!(demo.load().await.unwrap().members.is_empty());
    let other = demo2.load().await.unwrap();
    assert!(other.config.is_some() && other.member("a").is_some());
}

/// A version that is not a positive number matches nothing: never sent as
/// `cas=0` (which would mean "create").
#[tokio::test]
async fn version_zero_is_a_conflict_not_a_create() {
    let e = emulator().await;
    let a = client(&[e.url()], "cas", "a", timing(10, 1));
    let r = a
        .write_config(&DynamicConfig::new(), Expect::Version(Version::number(0)))
        .await;
    assert!(matches!(r, Err(DcsError::Conflict { .. })));
    assert!(a.load().await.unwrap().config.is_none());
    let v = a
        .write_config(&DynamicConfig::new(), Expect::Absent)
        .await
        .unwrap();
    // Deleting at a version when the key is gone is a conflict.
    a.delete(
        pgha_core::dcs::SharedKey::Config,
        Expect::Version(v.clone()),
    )
    .await
    .unwrap();
    assert!(matches!(
        a.delete(pgha_core::dcs::SharedKey::Config, Expect::Version(v))
            .await,
        Err(DcsError::Conflict { .. })
    ));
}

/// Consul keeps the `ModifyIndex` of a write that changes nothing; a
/// compare-and-set write must still make a new version, or two writers at
/// one version would both win (one rewriting the stored value).
#[tokio::test]
async fn racing_writers_at_one_version_have_one_winner_even_with_the_same_value() {
    let e = emulator().await;
    let t = timing(10, 1);
    let a = client(&[e.url()], "same-value", "a", t);
    let b = client(&[e.url()], "same-value", "b", t);
    let x = DynamicConfig::parse(r#"{"ttl":30}"#).unwrap();
    let y = DynamicConfig::parse(r#"{"ttl":20}"#).unwrap();
    let v1 = a.write_config(&x, Expect::Absent).await.unwrap();
    let v2 = a
        .write_config(&x, Expect::Version(v1.clone()))
        .await
        .unwrap();
    assert_ne!(
        v1, v2,
        "a CAS write of the stored value makes a new version"
    );
    assert!(matches!(
        b.write_config(&y, Expect::Version(v1)).await,
        Err(DcsError::Conflict { .. })
    ));
    let v3 = b
        .write_config(&y, Expect::Version(v2.clone()))
        .await
        .unwrap();
    assert!(matches!(
        a.write_config(&x, Expect::Version(v2)).await,
        Err(DcsError::Conflict { .. })
    ));
    let c = a.load().await.unwrap();
    assert_eq!(c.config.unwrap().version, v3);
}

/// With no leader at the load, writes elsewhere in the KV store (which
/// move the index a missing key reports) do not wake the watch: it keeps
/// the index of each 404 and waits on.
#[tokio::test]
async fn watch_ignores_other_writes_while_no_leader() {
    let e = emulator().await;
    let t = timing(10, 1);
    let a = Arc::new(client(&[e.url()], "quiet", "a", t));
    let b = client(&[e.url()], "quiet", "b", t);
    let cursor = a.load().await.unwrap().watch_cursor;
    let watcher = {
        let a = a.clone();
        tokio::spawn(async move { a.watch_leader(&cursor, Duration::from_secs(2)).await })
    };
    for i in 0..5u64 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut m = member();
        m.xlog_location = Some(i);
        b.touch_member(&m).await.unwrap();
    }
    assert_eq!(watcher.await.unwrap(), Ok(WatchOutcome::TimedOut));
}

/// blocking.mdx: "Reset the index if it goes backwards" — after a
/// snapshot restore the leader key's index is below the cursor: the watch
/// ends as `Changed` at once, so the caller loads afresh.
#[tokio::test]
async fn watch_restarts_when_the_index_goes_backwards() {
    let e = emulator().await;
    let t = timing(10, 1);
    let a = Arc::new(client(&[e.url()], "backwards", "a", t));
    a.acquire_leader().await.unwrap();
    let snapshot = e.snapshot();
    for _ in 0..5 {
        a.write_status(&Default::default()).await.unwrap();
        a.release_leader().await.unwrap();
        a.acquire_leader().await.unwrap();
    }
    let cursor = a.load().await.unwrap().watch_cursor;
    let watcher = {
        let a = a.clone();
        tokio::spawn(async move {
            let r = a.watch_leader(&cursor, Duration::from_secs(5)).await;
            (r, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    e.restore(&snapshot);
    let restored = Instant::now();
    let (r, woke) = watcher.await.unwrap();
    assert_eq!(r, Ok(WatchOutcome::Changed));
    assert!(woke - restored < Duration::from_millis(500));
}

/// Initialize races across two nodes end with one winner even when the
/// winner's answer is lost: the loser is told `Conflict`.
#[tokio::test]
async fn initialize_is_create_only() {
    let e = emulator().await;
    let t = timing(10, 1);
    let a = client(&[e.url()], "init", "a", t);
    let b = client(&[e.url()], "init", "b", t);
    let v = a.race_initialize().await.unwrap();
    assert!(v.as_number().unwrap() > 0);
    assert!(matches!(
        b.race_initialize().await,
        Err(DcsError::Conflict { .. })
    ));
    let c = b.load().await.unwrap();
    assert_eq!(c.initialize.unwrap().version, v);
}
