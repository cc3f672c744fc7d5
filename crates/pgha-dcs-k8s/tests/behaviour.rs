//! Kubernetes-specific behaviour beyond the conformance suite, against the
//! emulator and its fault switches: watch relists after 410, retry policy
//! by status code, member staleness, namesake locks, role labels.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use pgha_core::dcs::{Dcs, DcsError, DcsExt, WatchOutcome};
use pgha_core::model::{DynamicConfig, Expect, KeyLayout, MemberData, Timing};
use pgha_dcs_k8s::{K8sConfig, K8sDcs};
use pgha_k8s_emulator::{Emulator, Resource};
use serde_json::json;
use tokio::time::Instant;

const NS: &str = "pgha";

fn timing(ttl: u64) -> Timing {
    Timing {
        ttl: Duration::from_secs(ttl),
        loop_wait: Duration::from_secs(1),
        retry_timeout: Duration::from_secs(1),
    }
}

async fn setup(scope: &str, names: &[&str]) -> Emulator {
    pgha_testkit::init_tracing();
    let emu = Emulator::start_local().await.unwrap();
    let client = kube::Client::try_from(kube::Config::new(emu.url().parse().unwrap())).unwrap();
    let pods: Api<DynamicObject> =
        Api::namespaced_with(client, NS, &ApiResource::erase::<Pod>(&()));
    for n in names {
        let pod: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": n, "labels": {"cluster-name": scope}},
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    emu
}

fn node(emu: &Emulator, scope: &str, name: &str, ttl: u64) -> K8sDcs {
    let mut c = K8sConfig::with_url(emu.url());
    c.namespace = NS.into();
    K8sDcs::new(c, KeyLayout::new("/service", scope), name, timing(ttl)).unwrap()
}

fn data(role: &str) -> MemberData {
    serde_json::from_value(json!({
        "conn_url": "postgres://127.0.0.1:5432/postgres",
        "api_url": "http://127.0.0.1:8008/patroni",
        "state": "running", "role": role, "version": "4.1.4",
    }))
    .unwrap()
}

/// A watch whose stream is cut, and whose position is compacted meanwhile,
/// relists (kube's watcher on 410 Gone) and still reports the change made
/// while it was disconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_relists_after_410_and_sees_what_happened_meanwhile() {
    let emu = setup("relist", &["a", "b"]).await;
    let a = node(&emu, "relist", "a", 10);
    let b = node(&emu, "relist", "b", 10);
    a.acquire_leader().await.unwrap();
    let cursor = b.load().await.unwrap().watch_cursor;
    let watch = tokio::spawn(async move {
        let r = b.watch_leader(&cursor, Duration::from_secs(8)).await;
        (r, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // cut every stream; the history is compacted, and the lock changes
    // hands while the watcher is away.
    emu.faults().gone_next_watches(1);
    emu.faults().drop_watch_streams();
    emu.compact();
    a.release_leader().await.unwrap();
    let changed = Instant::now();
    let (r, woke) = watch.await.unwrap();
    assert_eq!(r.unwrap(), WatchOutcome::Changed);
    assert!(
        woke - changed < Duration::from_secs(2),
        "woke {:?} late",
        woke - changed
    );
    assert!(
        emu.requests()
            .iter()
            .filter(|r| r.contains("fieldSelector=metadata.name"))
            .count()
            >= 3,
        "expected list, watch, and a relist: {:#?}",
        emu.requests()
    );
}

/// 429 and 5xx are repeated for reads and unconditional writes within
/// `retry_timeout`; a guarded write is repeated only after 429 (refused
/// before processing), and a 503 on it is `Unreachable` (outcome unknown).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_policy_follows_what_the_status_says() {
    let emu = setup("retries", &["a"]).await;
    let a = node(&emu, "retries", "a", 10);
    emu.faults().fail_next(2, 503);
    a.load().await.unwrap();
    emu.faults().fail_next(2, 500);
    a.touch_member(&data("replica")).await.unwrap();
    let v = a
        .write_config(&DynamicConfig::new(), Expect::Absent)
        .await
        .unwrap();
    emu.faults().fail_next(2, 429);
    let v2 = a
        .write_config(
            &DynamicConfig::parse(r#"{"ttl":20}"#).unwrap(),
            Expect::Version(v),
        )
        .await
        .unwrap();
    // GET answers, then the guarded PATCH gets 503: not repeated
    let c = a.load().await.unwrap();
    assert_eq!(c.config.as_ref().unwrap().version, v2);
    emu.faults().fail_next(0, 503);
    emu.faults().set_fail_all(Some(503));
    let start = Instant::now();
    let e = a
        .write_config(&DynamicConfig::new(), Expect::Version(v2.clone()))
        .await
        .unwrap_err();
    assert!(e.is_unreachable(), "{e:?}");
    assert!(start.elapsed() <= Duration::from_millis(1500));
    emu.faults().set_fail_all(None);
    // forbidden is configuration, not the network
    emu.faults().fail_next(1, 403);
    assert!(matches!(a.load().await, Err(DcsError::Rejected { .. })));
    // a hung API server: Unreachable within retry_timeout
    emu.faults().set_hang(true);
    let start = Instant::now();
    assert!(a.renew_leader().await.unwrap_err().is_unreachable());
    assert!(start.elapsed() <= Duration::from_millis(1500));
    emu.faults().set_hang(false);
    a.load().await.unwrap();
}

/// pgha members prove life with a heartbeat and leave `ttl` after it stops;
/// a status written by anything else (Patroni) stays while its Pod exists,
/// also when it replaces a pgha status on the same Pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_stale_only_by_their_own_heartbeat() {
    let emu = setup("stale", &["a", "b", "c"]).await;
    let a = node(&emu, "stale", "a", 2);
    let c = node(&emu, "stale", "c", 2);
    a.touch_member(&data("replica")).await.unwrap();
    c.touch_member(&data("replica")).await.unwrap();
    // b is a Patroni node: status only, no heartbeat
    let client = kube::Client::try_from(kube::Config::new(emu.url().parse().unwrap())).unwrap();
    let pods: Api<DynamicObject> =
        Api::namespaced_with(client, NS, &ApiResource::erase::<Pod>(&()));
    let patroni_status = r#"{"conn_url":"postgres://127.0.0.1:5433/postgres","api_url":"http://127.0.0.1:8009/patroni","state":"running","role":"replica","version":"4.1.5"}"#;
    pods.patch(
        "b",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"status": patroni_status}}})),
    )
    .await
    .unwrap();
    let reader = node(&emu, "stale", "b", 2);
    let names = |c: &pgha_core::model::Cluster| {
        c.members.iter().map(|m| m.name.clone()).collect::<Vec<_>>()
    };
    assert_eq!(names(&reader.load().await.unwrap()), ["a", "b", "c"]);
    // Patroni takes over c's Pod: a status that is not the heartbeat's
    pods.patch(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"status": patroni_status.replace("5433", "5434")}}})),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        a.touch_member(&data("replica")).await.unwrap();
        let cl = reader.load().await.unwrap();
        assert_eq!(
            names(&cl),
            ["a", "b", "c"],
            "a keeps touching, b and c are Patroni's"
        );
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // a stops: gone within ttl (+ polling) of the last heartbeat this reader saw
    let stopped = Instant::now();
    loop {
        let cl = reader.load().await.unwrap();
        if cl.member("a").is_none() {
            break;
        }
        assert!(stopped.elapsed() < Duration::from_secs(4), "a still listed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        stopped.elapsed() >= Duration::from_millis(1500),
        "a left too early"
    );
    assert_eq!(names(&reader.load().await.unwrap()), ["b", "c"]);
    // and comes back with its next touch
    a.touch_member(&data("replica")).await.unwrap();
    assert_eq!(names(&reader.load().await.unwrap()), ["a", "b", "c"]);
}

/// A lock naming us that this client did not write (a previous run, a
/// namesake) is never adopted by renew; it can be re-acquired once it
/// expired for us.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namesakes_lock_is_not_ours_until_it_expires() {
    let emu = setup("namesake", &["a"]).await;
    let old = node(&emu, "namesake", "a", 2);
    old.acquire_leader().await.unwrap();
    let new = node(&emu, "namesake", "a", 2);
    match new.renew_leader().await {
        Err(DcsError::NotOwner { holder, .. }) => assert_eq!(holder.as_deref(), Some("a")),
        other => panic!("renewed a namesake's lock: {other:?}"),
    }
    assert!(
        new.acquire_leader().await.is_err(),
        "valid for us for ttl after we first saw it"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    new.acquire_leader().await.unwrap();
    new.renew_leader().await.unwrap();
    // the old client's lock lapsed: it learns it lost it
    assert!(old.renew_leader().await.unwrap_err().is_lost_race());
    let obj = emu
        .object(Resource::ConfigMaps, NS, "namesake-leader")
        .unwrap();
    assert_eq!(
        obj["metadata"]["annotations"]["transitions"], "0",
        "same holder: no transition"
    );
}

/// The role label follows the lock and the role, as Patroni sets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_labels_follow_the_lock() {
    let emu = setup("labels", &["a", "b"]).await;
    let a = node(&emu, "labels", "a", 10);
    let b = node(&emu, "labels", "b", 10);
    let role =
        |n: &str| emu.object(Resource::Pods, NS, n).unwrap()["metadata"]["labels"]["role"].clone();
    a.touch_member(&data("primary")).await.unwrap();
    assert!(role("a").is_null(), "not the leader yet: no role label");
    a.acquire_leader().await.unwrap();
    a.touch_member(&data("primary")).await.unwrap();
    b.touch_member(&data("replica")).await.unwrap();
    assert_eq!(role("a"), "primary");
    assert_eq!(role("b"), "replica");
    a.release_leader().await.unwrap();
    a.touch_member(&data("demoted")).await.unwrap();
    assert_eq!(role("a"), "demoted");
    let pod = emu.object(Resource::Pods, NS, "a").unwrap();
    assert!(pod["metadata"]["annotations"]["pgha/heartbeat"].is_string());
    assert_eq!(
        pod["metadata"]["labels"]["cluster-name"], "labels",
        "other labels kept"
    );
}

/// `new` neither connects nor needs the server; bad names are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn construction_is_lazy_and_checks_names() {
    let port = pgha_testkit::ports::free_port().unwrap();
    let mut c = K8sConfig::with_url(format!("http://127.0.0.1:{port}"));
    c.namespace = NS.into();
    let d = K8sDcs::new(
        c.clone(),
        KeyLayout::new("/service", "lazy"),
        "a",
        timing(10),
    )
    .unwrap();
    assert!(d.load().await.unwrap_err().is_unreachable());
    assert!(
        K8sDcs::new(
            c.clone(),
            KeyLayout::new("/service", "lazy"),
            "Not_A_Pod",
            timing(10)
        )
        .is_err()
    );
    assert!(K8sDcs::new(c, KeyLayout::new("/service", "UPPER"), "a", timing(10)).is_err());
    let mut missing = K8sConfig::default();
    missing.api = pgha_dcs_k8s::ApiServer::kubeconfig("/nonexistent/kubeconfig");
    let d = K8sDcs::new(missing, KeyLayout::new("/service", "lazy"), "a", timing(10)).unwrap();
    assert!(matches!(d.load().await, Err(DcsError::Rejected { .. })));
}
