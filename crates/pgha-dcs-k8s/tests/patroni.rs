//! Cross-check from the other side: the real Patroni 4.x (PyPI, in the venv
//! `scripts/install-deps.sh` builds) drives its own Kubernetes DCS
//! (`patroni.dcs.kubernetes.Kubernetes`, with Patroni's own HTTP client)
//! against the emulator, interleaved with pgha's backend on the same
//! objects; each side must read what the other wrote, and they must agree
//! on who holds the lock and when it expires. `patronictl list` must show a
//! cluster pgha wrote. Every step is bounded in time.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use pgha_core::dcs::{Dcs, DcsError, DcsExt, SharedKey};
use pgha_core::model::{
    DynamicConfig, Expect, Failover, History, HistoryEntry, KeyLayout, MemberData, SyncState,
    Timing,
};
use pgha_dcs_k8s::{ApiServer, K8sConfig, K8sDcs};
use pgha_k8s_emulator::{Emulator, Resource};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::Instant;

const NS: &str = "pgha";
const CONTEXT: &str = "pgha-emu";

fn venv() -> PathBuf {
    pgha_testkit::patronictl::venv()
}

struct Fixture {
    emu: Emulator,
    _dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    scope: String,
    use_endpoints: bool,
}

impl Fixture {
    async fn start(scope: &str, use_endpoints: bool) -> Fixture {
        pgha_testkit::init_tracing();
        let emu = Emulator::start_local().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        emu.write_kubeconfig(&kubeconfig, CONTEXT, NS).unwrap();
        let f = Fixture {
            emu,
            _dir: dir,
            kubeconfig,
            scope: scope.to_string(),
            use_endpoints,
        };
        let client =
            kube::Client::try_from(kube::Config::new(f.emu.url().parse().unwrap())).unwrap();
        let pods: Api<DynamicObject> =
            Api::namespaced_with(client, NS, &ApiResource::erase::<Pod>(&()));
        for p in ["p1", "p2", "p3"] {
            let pod: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": p, "labels": {"application": "patroni", "cluster-name": scope}},
                "spec": {"containers": [{"name": "postgres", "image": "postgres:15"}]},
            }))
            .unwrap();
            pods.create(&PostParams::default(), &pod).await.unwrap();
            // The kubelet's part: the Pod's IP (for the leader Endpoints).
            let ip = format!("10.0.0.{}", &p[1..]);
            pods.patch_status(
                p,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"status": {"podIP": ip, "phase": "Running"}})),
            )
            .await
            .unwrap();
        }
        f
    }

    /// The leader Endpoints' addresses (`use_endpoints`).
    fn leader_ips(&self) -> Vec<String> {
        let obj = self
            .emu
            .object(Resource::Endpoints, NS, &self.scope)
            .unwrap();
        obj["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["addresses"].as_array().cloned().unwrap_or_default())
            .map(|a| a["ip"].as_str().unwrap_or("").to_string())
            .collect()
    }

    /// pgha's backend for member `name`, configured from the same Patroni
    /// `kubernetes` section the Patroni side uses.
    fn pgha(&self, name: &str, ttl: u64) -> K8sDcs {
        let mut config = K8sConfig::from_patroni(json!({
            "namespace": NS,
            "labels": {"application": "patroni"},
            "context": CONTEXT,
            "use_endpoints": self.use_endpoints,
        }))
        .unwrap();
        config.api = ApiServer::Kubeconfig {
            path: self.kubeconfig.clone(),
            context: Some(CONTEXT.into()),
        };
        let timing = Timing {
            ttl: Duration::from_secs(ttl),
            loop_wait: Duration::from_secs(1),
            retry_timeout: Duration::from_secs(3),
        };
        K8sDcs::new(
            config,
            KeyLayout::new("/service", &self.scope),
            name,
            timing,
        )
        .unwrap()
    }

    async fn patroni(&self, ttl: u64) -> Patroni {
        let python = venv().join("bin/python");
        assert!(
            python.exists(),
            "{} not found: run scripts/install-deps.sh",
            python.display()
        );
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/patroni_driver.py");
        let mut child = Command::new(python)
            .arg(script)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("PGHA_SCOPE", &self.scope)
            .env("PGHA_NAMESPACE", NS)
            .env("PGHA_CONTEXT", CONTEXT)
            .env("PGHA_TTL", ttl.to_string())
            .env(
                "PGHA_USE_ENDPOINTS",
                if self.use_endpoints { "1" } else { "0" },
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap()).lines();
        Patroni {
            _child: child,
            stdin,
            out,
        }
    }
}

/// Patroni's Kubernetes DCS in a Python process, one command at a time.
struct Patroni {
    _child: Child,
    stdin: ChildStdin,
    out: Lines<BufReader<ChildStdout>>,
}

impl Patroni {
    /// Runs one command; its result, or a panic with Patroni's error.
    async fn call(&mut self, cmd: Value) -> Value {
        let line = format!("{cmd}\n");
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(30), self.out.next_line())
            .await
            .unwrap_or_else(|_| panic!("Patroni did not answer {cmd} within 30 s"))
            .unwrap()
            .unwrap_or_else(|| panic!("Patroni exited during {cmd}"));
        let v: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(v["ok"], true, "Patroni failed {cmd}: {}", v["error"]);
        v["result"].clone()
    }

    /// Patroni's view, polled until `done` holds (its caches follow the API
    /// server through a watch, so a change shows up shortly after).
    async fn cluster_until(
        &mut self,
        node: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let c = self.call(json!({"op": "get_cluster", "node": node})).await;
            if done(&c) {
                return c;
            }
            assert!(Instant::now() < deadline, "Patroni never saw {what}: {c:#}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn member(role: &str, port: u16) -> Value {
    json!({
        "conn_url": format!("postgres://127.0.0.1:{port}/postgres"),
        "api_url": format!("http://127.0.0.1:{}/patroni", port + 3000),
        "state": "running",
        "role": role,
        "version": "4.1.5",
        "xlog_location": 67108960,
        "timeline": 2,
        "tags": {"dc": "eu-1"},
    })
}

fn member_data(v: Value) -> MemberData {
    serde_json::from_value(v).unwrap()
}

/// Polls pgha's `load` until `done` holds.
async fn pgha_until(
    d: &K8sDcs,
    what: &str,
    done: impl Fn(&pgha_core::model::Cluster) -> bool,
) -> pgha_core::model::Cluster {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = d.load().await.unwrap();
        if done(&c) {
            return c;
        }
        assert!(Instant::now() < deadline, "pgha never saw {what}: {c:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn both_ways(use_endpoints: bool) {
    let f = Fixture::start("crosscheck", use_endpoints).await;
    let mut patroni = f.patroni(30).await;
    let p3 = f.pgha("p3", 30);

    // initialize: Patroni wins the race, pgha sees it taken, then the sysid.
    assert_eq!(patroni.call(json!({"op": "initialize"})).await, true);
    let c = p3.load().await.unwrap();
    assert_eq!(c.initialize.as_ref().map(|v| v.value.as_str()), Some(""));
    assert!(matches!(
        p3.race_initialize().await,
        Err(DcsError::Conflict { .. })
    ));
    assert_eq!(
        patroni
            .call(json!({"op": "initialize", "create_new": false, "sysid": "7312345678901234567"}))
            .await,
        true
    );
    let c = p3.load().await.unwrap();
    assert_eq!(c.initialize.as_ref().unwrap().value, "7312345678901234567");

    // config, members, leader, status, failsafe, history, failover, sync by Patroni
    let config = json!({"ttl": 30, "loop_wait": 10, "postgresql": {"use_pg_rewind": true, "parameters": {"max_connections": 100}}});
    assert_eq!(
        patroni
            .call(json!({"op": "set_config", "value": config}))
            .await,
        true
    );
    assert_eq!(
        patroni
            .call(json!({"op": "touch_member", "data": member("primary", 5432)}))
            .await,
        true
    );
    assert_eq!(
        patroni
            .call(json!({"op": "touch_member", "node": "p2", "data": member("replica", 5433)}))
            .await,
        true
    );
    assert_eq!(patroni.call(json!({"op": "acquire"})).await, true);
    assert_eq!(
        patroni
            .call(json!({"op": "update_leader", "last_lsn": 67109000, "slots": {"p2": 67108000}, "failsafe": {"p1": "http://127.0.0.1:8432/patroni"}}))
            .await,
        true
    );
    assert_eq!(
        patroni
            .call(json!({"op": "history", "value": [[1, 25165984, "no recovery target specified", "2026-11-21T10:00:00+00:00", "p1"]]}))
            .await,
        true
    );
    assert_eq!(
        patroni
            .call(json!({"op": "failover", "leader": "p1", "member": "p2"}))
            .await,
        true
    );
    assert_eq!(
        patroni
            .call(json!({"op": "sync", "leader": "p1", "sync_standby": ["p2"], "quorum": 0}))
            .await,
        true
    );

    let c = p3.load().await.unwrap();
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    assert_eq!(c.dynamic_config().as_map(), config.as_object().unwrap());
    assert_eq!(c.leader_name(), Some("p1"));
    let names: Vec<&str> = c.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["p1", "p2"]);
    assert_eq!(
        c.member("p1").unwrap().data,
        member_data(member("primary", 5432))
    );
    assert_eq!(
        c.member("p2").unwrap().data,
        member_data(member("replica", 5433))
    );
    let status = &c.status.as_ref().unwrap().value;
    assert_eq!(status.optime, Some(67109000));
    assert_eq!(status.slots.as_ref().unwrap().get("p2"), Some(&67108000));
    assert_eq!(
        c.failsafe
            .as_ref()
            .unwrap()
            .value
            .0
            .get("p1")
            .map(String::as_str),
        Some("http://127.0.0.1:8432/patroni")
    );
    let h = &c.history.as_ref().unwrap().value.0;
    assert_eq!(
        (h[0].timeline, h[0].lsn, h[0].new_leader.as_deref()),
        (1, 25165984, Some("p1"))
    );
    let fo = &c.failover.as_ref().unwrap().value;
    assert_eq!(
        (fo.leader.as_deref(), fo.member.as_deref()),
        (Some("p1"), Some("p2"))
    );
    let sync = &c.sync.as_ref().unwrap().value;
    assert_eq!(sync.leader.as_deref(), Some("p1"));
    assert!(sync.is_standby("p2"));
    // Patroni labelled the Pods: p2 as a running replica
    let p2 = f.emu.object(Resource::Pods, NS, "p2").unwrap();
    assert_eq!(p2["metadata"]["labels"]["role"], "replica");
    if f.use_endpoints {
        assert_eq!(f.leader_ips(), ["10.0.0.1"], "Patroni's leader Endpoints");
    }
    // pgha cannot take Patroni's valid lock
    match p3.acquire_leader().await {
        Err(DcsError::NotOwner { holder, .. }) => assert_eq!(holder.as_deref(), Some("p1")),
        other => panic!("pgha took Patroni's valid lock: {other:?}"),
    }

    // pgha writes; Patroni reads.
    p3.touch_member(&member_data(member("replica", 5434)))
        .await
        .unwrap();
    let c = p3.load().await.unwrap();
    let mut new_config = c.dynamic_config();
    let mut map = new_config.clone().into_map();
    map.insert("maximum_lag_on_failover".into(), json!(2048));
    new_config = DynamicConfig::from_map(map);
    p3.write_config(
        &new_config,
        Expect::Version(c.config.as_ref().unwrap().version.clone()),
    )
    .await
    .unwrap();
    p3.write_failover(
        &Failover {
            leader: Some("p1".into()),
            member: Some("p3".into()),
            ..Default::default()
        },
        Expect::Any,
    )
    .await
    .unwrap();
    p3.write_sync(
        &SyncState {
            leader: Some("p1".into()),
            quorum: Some(1),
            sync_standby: Some("p2,p3".into()),
            ..Default::default()
        },
        Expect::Any,
    )
    .await
    .unwrap();
    p3.write_history(&History(vec![
        HistoryEntry {
            timeline: 1,
            lsn: 25165984,
            reason: "no recovery target specified".into(),
            timestamp: Some("2026-11-21T10:00:00+00:00".into()),
            new_leader: Some("p1".into()),
        },
        HistoryEntry {
            timeline: 2,
            lsn: 50331808,
            reason: "no recovery target specified".into(),
            timestamp: Some("2026-11-22T10:00:00+00:00".into()),
            new_leader: Some("p1".into()),
        },
    ]))
    .await
    .unwrap();
    let v = patroni
        .cluster_until("p2", "pgha's writes", |c| {
            c["members"].as_array().is_some_and(|m| m.len() == 3)
                && c["config"]["data"]["maximum_lag_on_failover"] == 2048
                && c["failover"]["member"] == "p3"
                && c["sync"]["quorum"] == 1
                && c["history"].as_array().is_some_and(|h| h.len() == 2)
        })
        .await;
    let p3_seen = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "p3")
        .unwrap();
    assert_eq!(p3_seen["data"], member("replica", 5434));
    assert_eq!(p3_seen["labels"]["role"], "replica");
    assert_eq!(v["sync"]["sync_standby"], json!(["p1", "p2", "p3"]));
    assert_eq!(v["config"]["data"]["postgresql"]["use_pg_rewind"], true);
    assert_eq!(v["leader"]["name"], "p1");

    // The lock changes hands both ways.
    // Patroni's delete_leader answers with the patched object (truthy).
    let released = patroni.call(json!({"op": "delete_leader"})).await;
    assert!(
        !matches!(released, Value::Bool(false) | Value::Null),
        "{released}"
    );
    pgha_until(&p3, "the lock released by Patroni", |c| c.leader.is_none()).await;
    p3.acquire_leader().await.unwrap();
    let w = patroni
        .call(json!({"op": "wait_leader", "node": "p2", "want": "p3", "within": 10}))
        .await;
    assert_eq!(w["view"]["leader"]["name"], "p3");
    assert_eq!(
        patroni.call(json!({"op": "acquire", "node": "p2"})).await,
        false
    );
    p3.renew_leader().await.unwrap();
    if f.use_endpoints {
        assert_eq!(f.leader_ips(), ["10.0.0.3"], "pgha's leader Endpoints");
        let ep = f.emu.object(Resource::Endpoints, NS, &f.scope).unwrap();
        assert_eq!(ep["subsets"][0]["addresses"][0]["targetRef"]["name"], "p3");
        assert!(
            f.emu
                .object(Resource::Services, NS, &format!("{}-config", f.scope))
                .is_some()
        );
    }
    // the leader's Pod is labelled primary after its next touch
    p3.touch_member(&member_data(member("primary", 5434)))
        .await
        .unwrap();
    assert_eq!(
        f.emu.object(Resource::Pods, NS, "p3").unwrap()["metadata"]["labels"]["role"],
        "primary"
    );
    p3.release_leader().await.unwrap();
    patroni
        .call(json!({"op": "wait_leader", "node": "p2", "want": null, "within": 10}))
        .await;
    if f.use_endpoints {
        assert!(f.leader_ips().is_empty(), "released: no address");
    }
    assert_eq!(
        patroni.call(json!({"op": "acquire", "node": "p2"})).await,
        true
    );
    pgha_until(&p3, "Patroni's p2 as leader", |c| {
        c.leader_name() == Some("p2")
    })
    .await;
    match p3.renew_leader().await {
        Err(DcsError::NotOwner { holder, .. }) => assert_eq!(holder.as_deref(), Some("p2")),
        other => panic!("renew after losing the lock: {other:?}"),
    }

    // Patroni reads pgha's cleared failover and sync.
    p3.delete(SharedKey::Failover, Expect::Any).await.unwrap();
    patroni
        .cluster_until("p1", "no failover", |c| c["failover"].is_null())
        .await;

    // Patroni removes the cluster's objects; pgha reads what is left: the
    // Pods' member records, which Patroni does not touch.
    let removed = patroni.call(json!({"op": "delete_cluster"})).await;
    assert!(
        !matches!(removed, Value::Bool(false) | Value::Null),
        "{removed}"
    );
    let c = pgha_until(&p3, "the cluster removed by Patroni", |c| {
        c.config.is_none()
    })
    .await;
    assert!(
        c.initialize.is_none()
            && c.leader.is_none()
            && c.sync.is_none()
            && c.history.is_none()
            && c.status.is_none(),
        "{c:#?}"
    );
    assert_eq!(c.members.len(), 3);
    // pgha's delete_cluster also clears the member records; Patroni lists a
    // labelled Pod without status as a member with no data.
    p3.delete_cluster().await.unwrap();
    assert!(p3.load().await.unwrap().members.is_empty());
    let v = patroni
        .cluster_until("p1", "members without status", |c| {
            c["members"]
                .as_array()
                .is_some_and(|m| m.iter().all(|m| m["data"] == json!({})))
        })
        .await;
    assert!(
        v["config"].is_null() || v["config"]["data"] == json!({}),
        "{v:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patroni_and_pgha_read_each_others_writes() {
    tokio::time::timeout(Duration::from_secs(120), both_ways(false))
        .await
        .expect("cross-check did not finish within 120 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patroni_and_pgha_read_each_others_writes_with_endpoints() {
    tokio::time::timeout(Duration::from_secs(120), both_ways(true))
        .await
        .expect("cross-check did not finish within 120 s");
}

/// Both sides judge an abandoned lock the same way: valid for `ttl` after
/// they first saw its last record, then free, and each takes over the
/// other's expired lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_expiry_is_judged_alike() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let ttl = 3;
        let f = Fixture::start("expiry", false).await;
        let mut patroni = f.patroni(ttl).await;
        let p3 = f.pgha("p3", ttl);
        assert_eq!(patroni.call(json!({"op": "touch_member", "data": member("primary", 5432)})).await, true);
        assert_eq!(patroni.call(json!({"op": "acquire"})).await, true);
        let acquired = Instant::now();
        // pgha watches Patroni's record expire (Patroni's p1 stops renewing)
        pgha_until(&p3, "Patroni's lock", |c| c.leader_name() == Some("p1")).await;
        let c = pgha_until(&p3, "Patroni's lock expiring", |c| c.leader.is_none()).await;
        let after = acquired.elapsed();
        assert!(
            after >= Duration::from_secs(ttl) - Duration::from_millis(300),
            "pgha judged Patroni's lock expired after {after:?}, ttl {ttl} s"
        );
        assert!(after <= Duration::from_secs(ttl + 2), "took {after:?}");
        assert!(c.problems.is_empty());
        p3.acquire_leader().await.unwrap();
        let sent = Instant::now();
        p3.renew_leader().await.unwrap();
        // Patroni's p2 sees pgha's lock, then (pgha stops renewing) its expiry
        let w = patroni
            .call(json!({"op": "wait_leader", "node": "p2", "want": "p3", "within": 5}))
            .await;
        assert_eq!(w["view"]["leader"]["name"], "p3");
        let w = patroni
            .call(json!({"op": "wait_leader", "node": "p2", "want": null, "within": 10}))
            .await;
        let gone = sent.elapsed();
        assert!(
            gone >= Duration::from_secs(ttl),
            "Patroni judged pgha's lock expired {gone:?} after the renewal was sent; pgha promised {ttl} s"
        );
        assert!(w["after"].as_f64().unwrap() <= (ttl + 2) as f64, "{w}");
        assert_eq!(patroni.call(json!({"op": "acquire", "node": "p2"})).await, true);
        match p3.renew_leader().await {
            Err(e) if e.is_lost_race() => {}
            other => panic!("pgha renewed a lock Patroni took over: {other:?}"),
        }
        pgha_until(&p3, "Patroni's p2 as leader", |c| c.leader_name() == Some("p2")).await;
    })
    .await
    .expect("expiry cross-check did not finish within 120 s");
}

/// `patronictl list` shows the cluster pgha wrote: three members, roles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patronictl_lists_a_cluster_pgha_wrote() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let f = Fixture::start("listed", false).await;
        let nodes: Vec<K8sDcs> = ["p1", "p2", "p3"].iter().map(|n| f.pgha(n, 30)).collect();
        nodes[0].race_initialize().await.unwrap();
        nodes[0].set_initialize("7312345678901234567", Expect::Any).await.unwrap();
        nodes[0]
            .write_config(&DynamicConfig::parse(r#"{"ttl":30,"loop_wait":10}"#).unwrap(), Expect::Absent)
            .await
            .unwrap();
        nodes[0].acquire_leader().await.unwrap();
        for (i, n) in nodes.iter().enumerate() {
            let role = if i == 0 { "primary" } else { "replica" };
            let port = 5432 + u16::try_from(i).unwrap();
            n.touch_member(&member_data(member(role, port))).await.unwrap();
        }
        let yml = f._dir.path().join("patronictl.yml");
        std::fs::write(
            &yml,
            format!(
                "scope: listed\nkubernetes:\n  namespace: {NS}\n  context: {CONTEXT}\n  labels:\n    application: patroni\n"
            ),
        )
        .unwrap();
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            Command::new(venv().join("bin/patronictl"))
                .arg("-c")
                .arg(&yml)
                .args(["list", "-f", "json"])
                .env("KUBECONFIG", &f.kubeconfig)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("patronictl list did not finish within 60 s")
        .unwrap();
        assert!(out.status.success(), "patronictl: {}", String::from_utf8_lossy(&out.stderr));
        let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        let seen: Vec<(String, String, String)> = rows
            .iter()
            .map(|r| {
                (
                    r["Member"].as_str().unwrap().to_string(),
                    r["Role"].as_str().unwrap().to_string(),
                    r["Host"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("p1".to_string(), "Leader".to_string(), "127.0.0.1:5432".to_string()),
                ("p2".to_string(), "Replica".to_string(), "127.0.0.1:5433".to_string()),
                ("p3".to_string(), "Replica".to_string(), "127.0.0.1:5434".to_string()),
            ],
            "{rows:#?}"
        );
        assert!(rows.iter().all(|r| r["State"] == "running" && r["Cluster"] == "listed"), "{rows:#?}");
    })
    .await
    .expect("patronictl check did not finish within 90 s");
}
