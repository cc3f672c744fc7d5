//! A real Patroni node (PyPI Patroni 4 from `$PGHA_VENV`) with PostgreSQL 15
//! (`/usr/lib/postgresql/15/bin`, or `PGHA_PG_BIN`) bootstraps a cluster on
//! the Consul emulator; pgha's backend reads it, joins it as a member that
//! Patroni's REST API lists, watches Patroni give the lock up on shutdown,
//! and takes it. Run as root, Patroni and PostgreSQL run as `postgres`.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, Uid, User};
use pgha_consul_emulator::{ConsulEmulator, EmulatorConfig};
use pgha_core::dcs::{Dcs, DcsError, WatchOutcome};
use pgha_core::model::{KeyLayout, MemberData, PgState, Role, Timing};
use pgha_dcs_consul::{ConsulConfig, ConsulDcs};
use pgha_testkit::patronictl::venv;
use pgha_testkit::ports::free_port;
use pgha_testkit::process::ServerProcess;
use pgha_testkit::workdir::WorkDir;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// Stops a PostgreSQL left running by a failed test (SIGQUIT: immediate
/// shutdown), so no postmaster outlives the test.
struct PostmasterGuard(PathBuf);

impl Drop for PostmasterGuard {
    fn drop(&mut self) {
        let pid = std::fs::read_to_string(self.0.join("postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()));
        if let Some(pid) = pid {
            let _ = kill(Pid::from_raw(pid), Signal::SIGQUIT);
        }
    }
}

async fn http_get(addr: &str, path: &str) -> anyhow::Result<Value> {
    tokio::time::timeout(Duration::from_secs(5), async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        Ok(serde_json::from_str(body)?)
    })
    .await
    .context("Patroni REST API timed out")?
}

fn pg_bin() -> PathBuf {
    std::env::var_os("PGHA_PG_BIN").map_or_else(
        || PathBuf::from("/usr/lib/postgresql/15/bin"),
        PathBuf::from,
    )
}

fn patroni_config(dir: &Path, consul: &str, rest: u16, pg: u16) -> String {
    let d = dir.display();
    format!(
        "scope: patroni-node\nnamespace: /service/\nname: p1\n\
         restapi:\n  listen: 127.0.0.1:{rest}\n  connect_address: 127.0.0.1:{rest}\n\
         consul:\n  host: {consul}\n\
         bootstrap:\n  dcs:\n    ttl: 20\n    loop_wait: 1\n    retry_timeout: 5\n  initdb:\n    - encoding: UTF8\n\
         postgresql:\n  listen: 127.0.0.1:{pg}\n  connect_address: 127.0.0.1:{pg}\n  \
         data_dir: {d}/data\n  bin_dir: {bin}\n  pgpass: {d}/pgpass\n  \
         authentication:\n    superuser: {{username: postgres, password: su-pass}}\n    \
         replication: {{username: replicator, password: rep-pass}}\n  \
         parameters:\n    unix_socket_directories: '{d}'\n",
        bin = pg_bin().display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patroni_and_postgres_on_the_emulator() -> anyhow::Result<()> {
    pgha_testkit::init_tracing();
    let patroni = venv().join("bin/patroni");
    ensure!(
        patroni.exists(),
        "{} not found: run scripts/install-deps.sh",
        patroni.display()
    );
    ensure!(
        pg_bin().join("initdb").exists(),
        "PostgreSQL 15 binaries not found in {} (set PGHA_PG_BIN)",
        pg_bin().display()
    );
    // Consul's default session_ttl_min (10 s): Patroni's ttl 20 asks for 10 s.
    let e = ConsulEmulator::start(EmulatorConfig::default()).await?;
    let consul = e.addr().to_string();
    let dir = WorkDir::new("consul-patroni-node")?;
    let user = if Uid::effective().is_root() {
        let u = User::from_name("postgres")?.context("no postgres user")?;
        nix::unistd::chown(dir.path(), Some(u.uid), Some(u.gid))?;
        Some(u)
    } else {
        None
    };
    let (rest, pg) = (free_port()?, free_port()?);
    let config = dir.path().join("patroni.yml");
    std::fs::write(&config, patroni_config(dir.path(), &consul, rest, pg))?;
    let _guard = PostmasterGuard(dir.path().join("data"));
    let mut cmd = Command::new(&patroni);
    cmd.arg(&config);
    if let Some(u) = &user {
        use std::os::unix::process::CommandExt;
        cmd.uid(u.uid.as_raw())
            .gid(u.gid.as_raw())
            .env("HOME", dir.path());
    }
    let mut node = ServerProcess::spawn("patroni", cmd, &dir.path().join("patroni.log"))?;

    let g1 = Arc::new(ConsulDcs::new(
        ConsulConfig::new([consul.as_str()])?,
        KeyLayout::new("/service", "patroni-node"),
        "g1",
        Timing {
            ttl: Duration::from_secs(20),
            loop_wait: Duration::from_secs(1),
            retry_timeout: Duration::from_secs(5),
        },
    )?);

    // Patroni bootstraps and takes the lock.
    let deadline = Instant::now() + Duration::from_secs(90);
    let cluster = loop {
        let c = g1.load().await?;
        let ready = c.leader_name() == Some("p1")
            && c.member("p1").is_some_and(|m| {
                m.data.role == Some(Role::Primary) && m.data.state == Some(PgState::Running)
            })
            && c.initialize.as_ref().is_some_and(|i| !i.value.is_empty());
        if ready {
            break c;
        }
        if Instant::now() > deadline || !node.is_running() {
            bail!(
                "Patroni did not bootstrap on the emulator\n{}",
                node.log_tail(40)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    ensure!(cluster.problems.is_empty(), "{:?}", cluster.problems);
    ensure!(
        cluster
            .initialize
            .as_ref()
            .unwrap()
            .value
            .parse::<u64>()
            .is_ok()
    );
    ensure!(cluster.dynamic_config().get("ttl") == Some(&serde_json::json!(20)));
    let leader = cluster.leader.as_ref().unwrap();
    ensure!(leader.owner.is_some() && leader.owner == cluster.member("p1").unwrap().owner);
    match g1.acquire_leader().await {
        Err(DcsError::NotOwner { holder, .. }) => ensure!(holder.as_deref() == Some("p1")),
        other => bail!("pgha took a live Patroni's lock: {other:?}"),
    }

    // pgha joins as a member; Patroni's own REST API lists it.
    let me = MemberData {
        conn_url: Some("postgres://127.0.0.1:1/postgres".into()),
        api_url: Some("http://127.0.0.1:1/patroni".into()),
        state: Some(PgState::Stopped),
        role: Some(Role::Replica),
        version: Some(pgha_core::model::PATRONI_COMPAT_VERSION.into()),
        ..Default::default()
    };
    g1.touch_member(&me).await?;
    let rest_addr = format!("127.0.0.1:{rest}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let c = http_get(&rest_addr, "/cluster").await.unwrap_or_default();
        let names: Vec<&str> = c["members"]
            .as_array()
            .map(|m| m.iter().filter_map(|m| m["name"].as_str()).collect())
            .unwrap_or_default();
        if names.contains(&"g1") && names.contains(&"p1") {
            break;
        }
        ensure!(Instant::now() < deadline, "Patroni's /cluster: {c}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A few more of Patroni's loops (session renewals) change nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    ensure!(g1.load().await?.leader_name() == Some("p1"));

    // Patroni stops cleanly: it deletes its leader key; pgha's watch wakes
    // and pgha takes the lock.
    let cursor = g1.load().await?.watch_cursor;
    let watcher = {
        let g1 = g1.clone();
        tokio::spawn(async move { g1.watch_leader(&cursor, Duration::from_secs(30)).await })
    };
    node.signal(Signal::SIGTERM)?;
    let r = watcher.await?;
    ensure!(
        r == Ok(WatchOutcome::Changed),
        "watch during Patroni's shutdown: {r:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while node.is_running() {
        ensure!(
            Instant::now() < deadline,
            "Patroni did not stop\n{}",
            node.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    g1.touch_member(&me).await?;
    g1.acquire_leader()
        .await
        .with_context(|| format!("pgha takes the lock Patroni gave up\n{}", node.log_tail(20)))?;
    let log = std::fs::read_to_string(dir.path().join("patroni.log"))?;
    ensure!(
        !log.contains("Traceback"),
        "Patroni logged a traceback:\n{log}"
    );
    Ok(())
}
