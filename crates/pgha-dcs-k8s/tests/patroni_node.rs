//! A real Patroni node with PostgreSQL 15 on the emulator: Patroni
//! bootstraps a cluster through its Kubernetes DCS; pgha's backend reads it
//! (initialize, config, lock, member, status, Pod role label), a pgha member
//! joins and Patroni's REST API lists it, and Patroni's shutdown releases
//! the lock as pgha sees it. Patroni runs as `postgres` when the tests run
//! as root (never PostgreSQL as root). Bounded: 120 s.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use pgha_core::dcs::Dcs;
use pgha_core::model::{KeyLayout, MemberData, Timing};
use pgha_dcs_k8s::{ApiServer, K8sConfig, K8sDcs};
use pgha_k8s_emulator::{Emulator, Resource};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

const NS: &str = "pgha";
const CONTEXT: &str = "pgha-emu";
const SCOPE: &str = "realnode";
const BIN: &str = "/usr/lib/postgresql/15/bin";

/// `postgres`'s uid and gid, when the tests run as root.
fn postgres_user() -> Option<(u32, u32)> {
    let me = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid_line = me.lines().find(|l| l.starts_with("Uid:"))?;
    if uid_line.split_whitespace().nth(2)? != "0" {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:"))?;
    let mut f = line.split(':').skip(2);
    Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
}

/// Stops PostgreSQL if Patroni left it behind (a failed test): the data
/// directory's postmaster, by `pg_ctl`, as its owner.
struct PgGuard {
    data: PathBuf,
    user: Option<(u32, u32)>,
}

impl Drop for PgGuard {
    fn drop(&mut self) {
        if !self.data.join("postmaster.pid").exists() {
            return;
        }
        let mut cmd = std::process::Command::new(format!("{BIN}/pg_ctl"));
        cmd.args(["stop", "-m", "immediate", "-t", "10", "-D"])
            .arg(&self.data)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = self.user {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
        }
        let _ = cmd.status();
    }
}

async fn http_get(port: u16, path: &str) -> Option<serde_json::Value> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_string(&mut out))
        .await
        .ok()?
        .ok()?;
    serde_json::from_str(out.split_once("\r\n\r\n")?.1).ok()
}

fn patroni_yml(dir: &Path, rest: u16, pg: u16) -> String {
    let d = dir.display();
    format!(
        r#"scope: {SCOPE}
name: pn1
restapi:
  listen: 127.0.0.1:{rest}
  connect_address: 127.0.0.1:{rest}
kubernetes:
  namespace: {NS}
  context: {CONTEXT}
  labels:
    application: patroni
bootstrap:
  dcs:
    ttl: 20
    loop_wait: 2
    retry_timeout: 5
  initdb:
  - encoding: UTF8
postgresql:
  listen: 127.0.0.1:{pg}
  connect_address: 127.0.0.1:{pg}
  data_dir: {d}/data
  bin_dir: {BIN}
  pgpass: {d}/pgpass
  authentication:
    superuser: {{username: postgres, password: super-pass}}
    replication: {{username: replicator, password: rep-pass}}
  parameters:
    unix_socket_directories: '{d}'
log:
  level: INFO
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_patroni_node_bootstraps_on_the_emulator() {
    assert!(
        Path::new(BIN).join("postgres").exists(),
        "PostgreSQL 15 not installed: run scripts/install-deps.sh"
    );
    let patroni_bin = pgha_testkit::patronictl::venv().join("bin/patroni");
    assert!(
        patroni_bin.exists(),
        "{} missing: run scripts/install-deps.sh",
        patroni_bin.display()
    );
    pgha_testkit::init_tracing();
    let user = postgres_user();
    let emu = Emulator::start_local().await.unwrap();
    let dir = tempfile::Builder::new()
        .prefix("pgha-k8s-node")
        .tempdir()
        .unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    emu.write_kubeconfig(&kubeconfig, CONTEXT, NS).unwrap();
    let rest = pgha_testkit::ports::free_port().unwrap();
    let pg = pgha_testkit::ports::free_port().unwrap();
    let yml = dir.path().join("patroni.yml");
    std::fs::write(&yml, patroni_yml(dir.path(), rest, pg)).unwrap();
    if let Some((uid, gid)) = user {
        for p in [dir.path(), &kubeconfig, &yml] {
            std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
        }
    }
    let _pg_guard = PgGuard {
        data: dir.path().join("data"),
        user,
    };

    // The Pods, as a StatefulSet would have them (with the kubelet's IP).
    let client = kube::Client::try_from(kube::Config::new(emu.url().parse().unwrap())).unwrap();
    let pods: Api<DynamicObject> =
        Api::namespaced_with(client, NS, &ApiResource::erase::<Pod>(&()));
    for (name, ip) in [("pn1", "127.0.0.1"), ("pgha1", "127.0.0.2")] {
        let pod: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"application": "patroni", "cluster-name": SCOPE}},
            "spec": {"containers": [{"name": "postgres", "image": "postgres:15"}]},
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        pods.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"podIP": ip, "phase": "Running"}})),
        )
        .await
        .unwrap();
    }

    let log = std::fs::File::create(dir.path().join("patroni.log")).unwrap();
    let mut cmd = tokio::process::Command::new(&patroni_bin);
    cmd.arg(&yml)
        .env("KUBECONFIG", &kubeconfig)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true);
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    let mut patroni = cmd.spawn().unwrap();
    let patroni_log =
        || std::fs::read_to_string(dir.path().join("patroni.log")).unwrap_or_default();

    let mut config =
        K8sConfig::from_patroni(json!({"namespace": NS, "labels": {"application": "patroni"}}))
            .unwrap();
    config.api = ApiServer::Kubeconfig {
        path: kubeconfig.clone(),
        context: Some(CONTEXT.into()),
    };
    let timing = Timing {
        ttl: Duration::from_secs(20),
        loop_wait: Duration::from_secs(2),
        retry_timeout: Duration::from_secs(5),
    };
    let pgha = K8sDcs::new(config, KeyLayout::new("/service", SCOPE), "pgha1", timing).unwrap();

    let result = tokio::time::timeout(Duration::from_secs(120), async {
        // Patroni bootstraps and takes the lock; pgha reads all of it.
        let deadline = Instant::now() + Duration::from_secs(90);
        let c = loop {
            let c = pgha.load().await.unwrap();
            let primary = c.member("pn1").is_some_and(|m| {
                m.data.role.as_ref().is_some_and(|r| r.is_primary()) && m.data.is_running()
            });
            if c.leader_name() == Some("pn1")
                && primary
                && c.initialize.as_ref().is_some_and(|i| !i.value.is_empty())
                && c.status.as_ref().is_some_and(|s| s.value.optime.is_some())
            {
                break c;
            }
            assert!(
                Instant::now() < deadline,
                "Patroni did not bootstrap: {c:#?}\n{}",
                patroni_log()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        let sysid = &c.initialize.as_ref().unwrap().value;
        assert!(
            sysid.len() >= 15 && sysid.chars().all(|ch| ch.is_ascii_digit()),
            "{sysid}"
        );
        let (timing, _) = c.dynamic_config().timing();
        assert_eq!(timing.ttl, Duration::from_secs(20));
        let m = c.member("pn1").unwrap();
        assert_eq!(m.data.conn_host_port(), Some(("127.0.0.1".into(), pg)));
        assert_eq!(
            emu.object(Resource::Pods, NS, "pn1").unwrap()["metadata"]["labels"]["role"],
            "primary"
        );
        // pgha's member joins; Patroni lists it.
        let me: MemberData = serde_json::from_value(json!({
            "conn_url": "postgres://127.0.0.2:5432/postgres",
            "api_url": "http://127.0.0.2:8008/patroni",
            "state": "running", "role": "replica", "version": "4.1.4",
        }))
        .unwrap();
        pgha.touch_member(&me).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let listed = http_get(rest, "/cluster").await;
            let names: Vec<String> = listed
                .as_ref()
                .and_then(|v| v["members"].as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|m| m["name"].as_str().map(String::from))
                .collect();
            if names.iter().any(|n| n == "pgha1") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Patroni's /cluster never listed pgha1: {listed:?}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // A pgha node cannot take the live lock.
        assert!(pgha.acquire_leader().await.is_err());

        // Patroni stops (SIGTERM): it stops PostgreSQL and releases the lock.
        if let Some(pid) = patroni.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), patroni.wait()).await;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let c = pgha.load().await.unwrap();
            if c.leader.is_none() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "lock still held after Patroni stopped: {:?}\n{}",
                c.leader,
                patroni_log()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        pgha.acquire_leader().await.unwrap();
    })
    .await;
    let _ = patroni.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(5), patroni.wait()).await;
    result.unwrap_or_else(|_| panic!("did not finish within 120 s\n{}", patroni_log()));
}
