//! Cross-check from the other side: the real Patroni 4 (PyPI, in the venv
//! `$PGHA_VENV`, default `/opt/pgha-venv`) drives its own Consul client,
//! `patroni.dcs.consul.Consul`, against the same Consul emulator as pgha's
//! backend, and each must read exactly what the other wrote. Then the real
//! `patronictl list` shows a cluster pgha wrote.
//!
//! Patroni is driven through `tests/patroni/consul_driver.py` (one JSON
//! command per line). Every exchange is bounded in time; the Python
//! processes are killed when the test ends.
#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow, bail, ensure};
use pgha_consul_emulator::{ConsulEmulator, EmulatorConfig};
use pgha_core::dcs::{Dcs, DcsError, DcsExt, WatchOutcome};
use pgha_core::model::{
    DynamicConfig, Expect, Failover, Failsafe, History, HistoryEntry, KeyLayout, MemberData,
    PgState, Role, Status, SyncState, Timing, Version,
};
use pgha_dcs_consul::{ConsulConfig, ConsulDcs};
use pgha_testkit::patronictl::venv;
use pgha_testkit::workdir::WorkDir;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::time::Instant;

const SYSID: &str = "7312345678901234567";

/// One Patroni Consul client, in a Python process.
struct Patroni {
    _child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Patroni's session ID, as it reported it when ready.
    session: Option<String>,
}

impl Patroni {
    /// Starts the driver as Patroni node `name` of `scope` with `ttl`
    /// (`patronictl: true` skips Patroni's session creation at start).
    async fn start(
        addr: &str,
        scope: &str,
        name: &str,
        ttl: u64,
        ctl: bool,
    ) -> anyhow::Result<Self> {
        let python = venv().join("bin/python");
        ensure!(
            python.exists(),
            "{} not found: run scripts/install-deps.sh (it installs PyPI patroni[consul])",
            python.display()
        );
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/patroni/consul_driver.py"
        );
        let config = json!({
            "host": addr, "scope": scope, "name": name, "namespace": "/service/",
            "ttl": ttl, "retry_timeout": 4, "loop_wait": 1, "patronictl": ctl,
        });
        let mut child = tokio::process::Command::new(python)
            .arg(script)
            .arg(config.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("start the Patroni driver")?;
        let stdin = child.stdin.take().context("driver stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("driver stdout")?).lines();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(err) = child.stderr.take() {
            let sink = stderr.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(err).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    sink.lock().unwrap().push(line);
                }
            });
        }
        let mut p = Patroni {
            _child: child,
            stdin,
            stdout,
            stderr,
            session: None,
        };
        let ready = p.recv().await.context("driver start")?;
        ensure!(ready["ready"] == true, "driver said {ready}");
        p.session = ready["session"].as_str().map(str::to_string);
        Ok(p)
    }

    fn log_tail(&self) -> String {
        let lines = self.stderr.lock().unwrap();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    async fn send(&mut self, cmd: Value) -> anyhow::Result<()> {
        self.stdin.write_all(format!("{cmd}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    async fn recv(&mut self) -> anyhow::Result<Value> {
        let line = tokio::time::timeout(Duration::from_secs(30), self.stdout.next_line())
            .await
            .map_err(|_| anyhow!("Patroni driver silent for 30 s:\n{}", self.log_tail()))??
            .ok_or_else(|| anyhow!("Patroni driver exited:\n{}", self.log_tail()))?;
        Ok(serde_json::from_str(&line)?)
    }

    /// Runs one command; its result.
    async fn call(&mut self, cmd: Value) -> anyhow::Result<Value> {
        let op = cmd["op"].clone();
        self.send(cmd).await?;
        self.result(&op).await
    }

    async fn result(&mut self, op: &Value) -> anyhow::Result<Value> {
        let answer = self.recv().await?;
        if answer["ok"] != true {
            bail!("Patroni {op}: {}\n{}", answer["error"], self.log_tail());
        }
        Ok(answer["result"].clone())
    }

    async fn cluster(&mut self) -> anyhow::Result<Value> {
        self.call(json!({"op": "get_cluster"})).await
    }
}

fn timing(ttl: u64) -> Timing {
    Timing {
        ttl: Duration::from_secs(ttl),
        loop_wait: Duration::from_secs(1),
        retry_timeout: Duration::from_secs(4),
    }
}

fn pgha(addr: &str, scope: &str, name: &str, ttl: u64) -> ConsulDcs {
    let config = ConsulConfig::new([addr]).unwrap();
    ConsulDcs::new(config, KeyLayout::new("/service", scope), name, timing(ttl)).unwrap()
}

fn member_json(name: &str, role: &str, port: u16) -> Value {
    json!({
        "conn_url": format!("postgres://127.0.0.1:{port}/postgres"),
        "api_url": format!("http://127.0.0.1:{}/patroni", port + 3000),
        "state": "running", "role": role, "version": "4.1.5",
        "xlog_location": 50331808, "timeline": 1, "tags": {"dc": name},
    })
}

fn member(name: &str, role: &str, port: u16) -> MemberData {
    serde_json::from_value(member_json(name, role, port)).unwrap()
}

fn number(v: &Value) -> i64 {
    v.as_i64().unwrap_or(-1)
}

async fn emulator() -> ConsulEmulator {
    pgha_testkit::init_tracing();
    ConsulEmulator::start(EmulatorConfig::for_tests())
        .await
        .unwrap()
}

/// Patroni writes a whole cluster; pgha reads every value, version and
/// session exactly as Patroni reads them; then they take turns with the
/// lock, each seeing the other's, and race on compare-and-set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patroni_writes_pgha_reads_and_they_share_the_lock() -> anyhow::Result<()> {
    let e = emulator().await;
    let addr = e.addr().to_string();
    let scope = "crosscheck";
    let mut p1 = Patroni::start(&addr, scope, "p1", 30, false).await?;
    let g1 = pgha(&addr, scope, "g1", 30);

    for cmd in [
        json!({"op": "initialize", "create_new": true, "sysid": ""}),
        json!({"op": "initialize", "create_new": false, "sysid": SYSID}),
        json!({"op": "set_config_value", "value": r#"{"ttl":30,"loop_wait":10,"postgresql":{"use_pg_rewind":true}}"#}),
        json!({"op": "touch_member", "data": member_json("p1", "primary", 5432)}),
        json!({"op": "attempt_to_acquire_leader"}),
    ] {
        ensure!(p1.call(cmd.clone()).await? == true, "Patroni {cmd}");
    }
    p1.cluster().await?;
    for cmd in [
        json!({"op": "update_leader", "last_lsn": 67108960, "slots": {"g1": 67108800}}),
        json!({"op": "manual_failover", "leader": "p1", "candidate": "g1"}),
        json!({"op": "set_history_value", "value": r#"[[1,25165984,"no recovery target specified","2026-11-21T10:00:00+00:00","p1"]]"#}),
        json!({"op": "write_failsafe", "value": {"p1": "http://127.0.0.1:8432/patroni"}}),
    ] {
        ensure!(p1.call(cmd.clone()).await? == true, "Patroni {cmd}");
    }
    let sync_version = p1
        .call(json!({"op": "set_sync_state_value", "value": r#"{"leader":"p1","sync_standby":"g1"}"#}))
        .await?;
    let pc = p1.cluster().await?;

    // pgha reads what Patroni wrote, with Patroni's versions and session.
    let c = g1.load().await?;
    ensure!(c.problems.is_empty(), "problems: {:?}", c.problems);
    ensure!(
        c.initialize.as_ref().map(|v| v.value.as_str()) == Some(SYSID),
        "initialize {:?}",
        c.initialize
    );
    let config = c.config.as_ref().context("config")?;
    ensure!(
        config.version == Version::number(number(&pc["config"]["version"])),
        "config version {:?} vs Patroni {}",
        config.version,
        pc["config"]["version"]
    );
    ensure!(
        serde_json::to_value(&config.value)? == pc["config"]["data"],
        "config {:?} vs Patroni {}",
        config.value,
        pc["config"]["data"]
    );
    let leader = c.leader.as_ref().context("leader")?;
    ensure!(leader.name == "p1", "leader {leader:?}");
    ensure!(
        leader.owner.as_deref() == pc["leader"]["session"].as_str() && leader.owner == p1.session,
        "leader session {:?} vs Patroni {}",
        leader.owner,
        pc["leader"]["session"]
    );
    ensure!(leader.version == Version::number(number(&pc["leader"]["version"])));
    let m = c.member("p1").context("member p1")?;
    ensure!(
        serde_json::to_value(&m.data)? == member_json("p1", "primary", 5432),
        "member {:?}",
        m.data
    );
    ensure!(
        m.owner == p1.session && m.version == Version::number(number(&pc["members"][0]["version"]))
    );
    let f = &c.failover.as_ref().context("failover")?;
    ensure!(f.value.leader.as_deref() == Some("p1") && f.value.member.as_deref() == Some("g1"));
    ensure!(f.version == Version::number(number(&pc["failover"]["version"])));
    let h = &c.history.as_ref().context("history")?.value.0;
    ensure!(
        h.len() == 1
            && h[0].timeline == 1
            && h[0].lsn == 25165984
            && h[0].new_leader.as_deref() == Some("p1"),
        "history {h:?}"
    );
    let st = &c.status.as_ref().context("status")?.value;
    ensure!(
        st.optime == Some(67108960)
            && st.slots.as_ref().and_then(|s| s.get("g1")) == Some(&67108800),
        "status {st:?} vs Patroni {}",
        pc["status"]
    );
    let sync = c.sync.as_ref().context("sync")?;
    ensure!(sync.value.is_standby("g1") && sync.value.leader.as_deref() == Some("p1"));
    ensure!(
        sync.version == Version::number(number(&sync_version)),
        "sync version {:?}, Patroni's read-back gave {sync_version}",
        sync.version
    );
    ensure!(c.failsafe.as_ref().map(|f| f.value.0.len()) == Some(1));

    // Patroni holds the lock: pgha may neither take, renew nor release it.
    match g1.acquire_leader().await {
        Err(DcsError::NotOwner { holder, .. }) => ensure!(holder.as_deref() == Some("p1")),
        other => bail!("pgha acquired Patroni's lock: {other:?}"),
    }
    ensure!(matches!(
        g1.renew_leader().await,
        Err(DcsError::NotOwner { .. })
    ));
    ensure!(matches!(
        g1.release_leader().await,
        Err(DcsError::NotOwner { .. })
    ));

    // pgha's member key, as Patroni reads it.
    let g1_member = member("g1", "replica", 5433);
    g1.touch_member(&g1_member).await?;
    let pc = p1.cluster().await?;
    let g1_seen = pc["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "g1")
        .context("Patroni does not see g1")?;
    ensure!(
        g1_seen["data"] == serde_json::to_value(&g1_member)?,
        "{g1_seen}"
    );
    let g1_session = g1.load().await?.member("g1").unwrap().owner.clone();
    ensure!(g1_seen["session"].as_str() == g1_session.as_deref() && g1_session.is_some());

    // Patroni gives the lock up; pgha's watch wakes; pgha takes it.
    let cursor = g1.load().await?.watch_cursor;
    let g1 = Arc::new(g1);
    let watcher = {
        let g1 = g1.clone();
        tokio::spawn(async move {
            let r = g1.watch_leader(&cursor, Duration::from_secs(10)).await;
            (r, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(
        p1.call(json!({"op": "delete_leader", "last_lsn": 67109000}))
            .await?
            == true
    );
    let released = Instant::now();
    let (r, woke) = watcher.await?;
    ensure!(r == Ok(WatchOutcome::Changed), "pgha watch: {r:?}");
    ensure!(
        woke - released < Duration::from_secs(1),
        "woke {:?} late",
        woke - released
    );
    let lease = g1.acquire_leader().await.context("pgha acquires")?;
    ensure!(
        lease.valid_for == Duration::from_secs(15),
        "valid_for {lease:?}"
    );

    let pc = p1.cluster().await?;
    ensure!(
        pc["leader"]["name"] == "g1" && pc["leader"]["session"].as_str() == g1_session.as_deref(),
        "Patroni sees {}",
        pc["leader"]
    );
    ensure!(pc["status"]["last_lsn"] == 67109000);
    ensure!(p1.call(json!({"op": "attempt_to_acquire_leader"})).await? == false);

    // Patroni's watch wakes when pgha releases.
    let version = pc["leader"]["version"].clone();
    p1.send(json!({"op": "watch", "leader_version": version, "timeout": 10}))
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    g1.release_leader().await?;
    let w = p1.result(&json!("watch")).await?;
    ensure!(
        w["changed"] == true && w["elapsed"].as_f64().unwrap_or(99.0) < 2.0,
        "Patroni's watch: {w}"
    );
    ensure!(p1.call(json!({"op": "attempt_to_acquire_leader"})).await? == true);

    // Compare-and-set, both ways, on the same versions.
    let v1 = g1.load().await?.config.context("config")?.version;
    let mut new = DynamicConfig::parse(r#"{"ttl":30,"loop_wait":5}"#).map_err(|e| anyhow!(e))?;
    let v2 = g1.write_config(&new, Expect::Version(v1.clone())).await?;
    ensure!(
        p1.call(json!({"op": "set_config_value", "value": "{}", "version": number(&json!(v1.as_number()))}))
            .await?
            == false,
        "Patroni's CAS at a stale version succeeded"
    );
    ensure!(
        p1.call(json!({"op": "set_config_value", "value": r#"{"ttl":30,"loop_wait":3}"#, "version": v2.as_number()}))
            .await?
            == true
    );
    let c = g1.load().await?;
    ensure!(
        c.config.as_ref().unwrap().value.get("loop_wait") == Some(&json!(3)),
        "{:?}",
        c.config
    );
    new = DynamicConfig::parse(r#"{"ttl":30}"#).map_err(|e| anyhow!(e))?;
    ensure!(matches!(
        g1.write_config(&new, Expect::Version(v2)).await,
        Err(DcsError::Conflict { .. })
    ));

    // pgha deletes the cluster; Patroni finds nothing; Patroni wins the
    // next initialize race and pgha loses it.
    g1.delete_cluster().await?;
    let pc = p1.cluster().await?;
    ensure!(
        pc["initialize"].is_null() && pc["leader"].is_null() && pc["config"].is_null(),
        "{pc}"
    );
    ensure!(
        p1.call(json!({"op": "initialize", "create_new": true}))
            .await?
            == true
    );
    ensure!(matches!(
        g1.race_initialize().await,
        Err(DcsError::Conflict { .. })
    ));
    Ok(())
}

/// pgha writes a whole cluster; Patroni reads every value as pgha wrote it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgha_writes_patroni_reads() -> anyhow::Result<()> {
    let e = emulator().await;
    let addr = e.addr().to_string();
    let scope = "pgha-wrote";
    let g1 = pgha(&addr, scope, "g1", 30);
    g1.race_initialize().await?;
    g1.set_initialize(SYSID, Expect::Any).await?;
    let config = DynamicConfig::parse(
        r#"{"ttl":30,"loop_wait":10,"retry_timeout":10,"postgresql":{"parameters":{"max_connections":100}},"synchronous_mode":true}"#,
    )
    .map_err(|e| anyhow!(e))?;
    let vc = g1.write_config(&config, Expect::Absent).await?;
    g1.touch_member(&member("g1", "primary", 5432)).await?;
    g1.acquire_leader().await?;
    g1.write_status(&Status {
        optime: Some(67108960),
        slots: Some([("g2".to_string(), 67108800u64)].into_iter().collect()),
        retain_slots: Some(vec!["g2".into()]),
        ..Default::default()
    })
    .await?;
    g1.write_history(&History(vec![HistoryEntry {
        timeline: 1,
        lsn: 25165984,
        reason: "no recovery target specified".into(),
        timestamp: Some("2026-11-21T10:00:00+00:00".into()),
        new_leader: Some("g1".into()),
    }]))
    .await?;
    let vf = g1
        .write_failover(
            &Failover {
                leader: Some("g1".into()),
                member: Some("g2".into()),
                ..Default::default()
            },
            Expect::Any,
        )
        .await?;
    let vs = g1
        .write_sync(
            &SyncState {
                leader: Some("g1".into()),
                quorum: Some(0),
                sync_standby: Some("g2".into()),
                ..Default::default()
            },
            Expect::Absent,
        )
        .await?;
    g1.write_failsafe(&Failsafe(
        [(
            "g1".to_string(),
            "http://127.0.0.1:8432/patroni".to_string(),
        )]
        .into_iter()
        .collect(),
    ))
    .await?;
    let owner = g1.load().await?.leader.context("leader")?.owner;

    let mut p = Patroni::start(&addr, scope, "observer", 30, true).await?;
    let pc = p.cluster().await?;
    ensure!(pc["initialize"] == SYSID, "{pc}");
    ensure!(
        pc["config"]["data"] == serde_json::to_value(&config)?,
        "{}",
        pc["config"]
    );
    ensure!(number(&pc["config"]["version"]) == vc.as_number().unwrap());
    ensure!(pc["leader"]["name"] == "g1" && pc["leader"]["session"].as_str() == owner.as_deref());
    ensure!(pc["members"][0]["name"] == "g1");
    ensure!(pc["members"][0]["data"] == member_json("g1", "primary", 5432));
    ensure!(pc["members"][0]["session"].as_str() == owner.as_deref());
    ensure!(pc["status"]["last_lsn"] == 67108960 && pc["status"]["slots"]["g2"] == 67108800);
    ensure!(
        pc["status"]["retain_slots"] == json!(["g2"]),
        "{}",
        pc["status"]
    );
    ensure!(
        pc["history"]["lines"]
            == json!([[
                1,
                25165984,
                "no recovery target specified",
                "2026-11-21T10:00:00+00:00",
                "g1"
            ]]),
        "{}",
        pc["history"]
    );
    ensure!(pc["failover"]["leader"] == "g1" && pc["failover"]["candidate"] == "g2");
    ensure!(number(&pc["failover"]["version"]) == vf.as_number().unwrap());
    ensure!(pc["sync"]["leader"] == "g1" && pc["sync"]["members"] == json!(["g1", "g2"]));
    ensure!(number(&pc["sync"]["version"]) == vs.as_number().unwrap());
    ensure!(pc["failsafe"] == json!({"g1": "http://127.0.0.1:8432/patroni"}));
    Ok(())
}

/// A Patroni leader whose session expired while pgha took the lock. pgha's
/// lock must stay intact whatever Patroni's `update_leader` does with its
/// stale view; Patroni's answer is reported (it says `True`: see the
/// report in docs/consul.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_patroni_leader_meets_a_pgha_leader() -> anyhow::Result<()> {
    let e = emulator().await;
    let addr = e.addr().to_string();
    let scope = "expiry";
    // ttl 4: Patroni's session TTL is 2 s, invalidated within 4 s.
    let mut p1 = Patroni::start(&addr, scope, "p1", 4, false).await?;
    let g1 = pgha(&addr, scope, "g1", 4);
    ensure!(
        p1.call(json!({"op": "touch_member", "data": member_json("p1", "primary", 5432)}))
            .await?
            == true
    );
    ensure!(p1.call(json!({"op": "attempt_to_acquire_leader"})).await? == true);
    p1.cluster().await?;
    let stopped = Instant::now();
    // Patroni stops renewing: its keys go within 2×TTL.
    let mut gone = None;
    while stopped.elapsed() < Duration::from_secs(8) {
        let c = g1.load().await?;
        if c.leader.is_none() && c.member("p1").is_none() {
            gone = Some(stopped.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone = gone.context("Patroni's leader and member keys did not expire")?;
    ensure!(
        gone >= Duration::from_millis(1900),
        "expired after {gone:?}, before the TTL"
    );
    g1.touch_member(&member("g1", "primary", 5433)).await?;
    g1.acquire_leader().await?;
    let before = g1.load().await?.leader.unwrap();

    // Patroni's HA loop, with the cluster it loaded before its session
    // expired, updates its lock.
    let answer = p1
        .call(json!({"op": "update_leader", "last_lsn": 100}))
        .await?;
    let after = g1.load().await?.leader.context("leader gone")?;
    ensure!(
        after.name == "g1" && after.owner == before.owner && after.version == before.version,
        "pgha's lock was disturbed by Patroni: {before:?} -> {after:?}"
    );
    g1.renew_leader()
        .await
        .context("pgha still holds the lock")?;
    if answer == true {
        eprintln!(
            "Patroni's Consul.update_leader answered True although g1 holds the lock \
             (its session expired; it made a new one and its re-acquire failed silently)"
        );
    }
    // And pgha in Patroni's place: a renewal after the session expired is refused.
    let g2 = pgha(&addr, scope, "g2", 4);
    g2.touch_member(&member("g2", "replica", 5434)).await?;
    g1.release_leader().await?;
    g2.acquire_leader().await?;
    e.clock().advance(Duration::from_secs(10));
    // The advance invalidates g2's session (and g1's).
    tokio::time::sleep(Duration::from_millis(100)).await;
    g1.acquire_leader().await?;
    match g2.renew_leader().await {
        Err(DcsError::SessionExpired { .. }) => {}
        other => bail!("pgha renewed a lock whose session expired: {other:?}"),
    }
    ensure!(matches!(
        g2.renew_leader().await,
        Err(DcsError::NotOwner { .. })
    ));
    Ok(())
}

/// Below Consul's `session_ttl_min`, Patroni's `adjust_ttl` looks for
/// `Config.SessionTTLMin` in `/v1/agent/self`, which modern agents keep in
/// `DebugConfig` only; pgha reads the minimum from Consul's refusal and
/// uses it (with a warning).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_below_the_session_minimum() -> anyhow::Result<()> {
    pgha_testkit::init_tracing();
    // Consul's default session_ttl_min: 10 s. ttl 10 asks for 5 s.
    let e = ConsulEmulator::start(EmulatorConfig::default()).await?;
    let addr = e.addr().to_string();
    let g1 = pgha(&addr, "min-ttl", "g1", 10);
    let lease = g1.acquire_leader().await?;
    ensure!(lease.valid_for == Duration::from_secs(10), "{lease:?}");
    ensure!(e.sessions()[0].ttl == Some(Duration::from_secs(10)));

    let mut p = Patroni::start(&addr, "min-ttl", "p1", 10, true).await?;
    let r = p.call(json!({"op": "refresh_session"})).await?;
    eprintln!("Patroni with ttl 10 against session_ttl_min 10s: {r}");
    if r["ok"] == false {
        ensure!(
            p.log_tail().contains("SessionTTLMin") || p.log_tail().contains("adjust_ttl"),
            "{}",
            p.log_tail()
        );
    }
    Ok(())
}

/// The real `patronictl list` shows a three-member cluster pgha wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patronictl_lists_a_cluster_pgha_wrote() -> anyhow::Result<()> {
    let e = emulator().await;
    let addr = e.addr().to_string();
    let scope = "listed";
    let nodes: Vec<ConsulDcs> = ["g1", "g2", "g3"]
        .iter()
        .map(|n| pgha(&addr, scope, n, 30))
        .collect();
    nodes[0].race_initialize().await?;
    nodes[0].set_initialize(SYSID, Expect::Any).await?;
    nodes[0]
        .write_config(
            &DynamicConfig::parse(r#"{"ttl":30,"loop_wait":10}"#).map_err(|e| anyhow!(e))?,
            Expect::Absent,
        )
        .await?;
    for (i, n) in nodes.iter().enumerate() {
        let role = if i == 0 { "primary" } else { "replica" };
        let mut data = member(n.member_name(), role, 5432 + i as u16);
        data.state = Some(PgState::Running);
        if i > 0 {
            data.role = Some(Role::Replica);
        }
        n.touch_member(&data).await?;
    }
    nodes[0].acquire_leader().await?;

    let dir = WorkDir::new("patronictl-consul")?;
    let config = dir.path().join("patronictl.yml");
    std::fs::write(
        &config,
        format!("scope: {scope}\nnamespace: /service/\nconsul:\n  host: {addr}\n"),
    )?;
    let mut cmd = tokio::process::Command::new(venv().join("bin/patronictl"));
    cmd.arg("-c").arg(&config).args(["list", "-f", "json"]);
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .context("patronictl list did not finish within 60 s")??;
    ensure!(
        out.status.success(),
        "patronictl list failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Vec<Value> = serde_json::from_slice(&out.stdout)
        .with_context(|| String::from_utf8_lossy(&out.stdout).into_owned())?;
    let rows: Vec<(String, String, String)> = list
        .iter()
        .map(|m| {
            (
                m["Member"].as_str().unwrap_or_default().to_string(),
                m["Role"].as_str().unwrap_or_default().to_string(),
                m["State"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    ensure!(
        rows == [
            ("g1".into(), "Leader".into(), "running".into()),
            ("g2".into(), "Replica".into(), "running".into()),
            ("g3".into(), "Replica".into(), "running".into()),
        ],
        "patronictl list: {list:?}"
    );
    ensure!(list.iter().all(|m| m["Cluster"] == scope));
    Ok(())
}
