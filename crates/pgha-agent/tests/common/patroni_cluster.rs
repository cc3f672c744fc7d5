//! A real Patroni cluster on loopback: etcd and three Patroni 4 nodes (the
//! PyPI release in `$PGHA_VENV`, default `/opt/pgha-venv`), each with its
//! own PostgreSQL 15, all on free ports. The REST-driven pghactl commands
//! are tested against it: it is the reference pghactl must work with.
//!
//! Patroni runs as the `postgres` OS user when the tests run as root
//! (PostgreSQL refuses root). Dropping the cluster kills every Patroni and
//! postmaster it started, then etcd.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use nix::unistd::{Gid, Uid, User};
use pgha_agent::config::DcsSection;
use pgha_core::dcs::Dcs;
use pgha_core::model::{KeyLayout, Timing};
use pgha_testkit::etcd::EtcdServer;
use pgha_testkit::ports::free_port;
use pgha_testkit::postgres_teardown;
use pgha_testkit::process::ServerProcess;
use pgha_testkit::workdir::WorkDir;
use serde_json::json;

use super::scenarios::Operated;

/// The REST API's basic-auth credentials (every node requires them for
/// unsafe methods, so pghactl's `ctl.authentication` is exercised).
pub const API_USER: &str = "admin";
pub const API_PASSWORD: &str = "admin-pass";
/// The PostgreSQL superuser's password.
pub const SUPERUSER_PASSWORD: &str = "su-pass";

/// Patroni's smallest ttl; loop_wait and retry_timeout kept short so the
/// cluster reacts within seconds.
const TTL: u64 = 20;
const LOOP_WAIT: u64 = 2;
const RETRY_TIMEOUT: u64 = 5;

/// One Patroni node.
#[derive(Debug)]
pub struct PatroniNode {
    pub name: String,
    pub pg_port: u16,
    pub api_port: u16,
    pub data_dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    process: Option<ServerProcess>,
}

/// A running Patroni cluster.
#[derive(Debug)]
pub struct PatroniCluster {
    pub scope: String,
    pub nodes: Vec<PatroniNode>,
    dcs: Arc<dyn Dcs>,
    etcd: EtcdServer,
    user: Option<(Uid, Gid)>,
    pub dir: WorkDir,
}

fn patroni_binary() -> PathBuf {
    pgha_testkit::patronictl::venv().join("bin/patroni")
}

/// The OS user Patroni runs as: `postgres` when the tests run as root.
fn run_as() -> anyhow::Result<Option<(Uid, Gid)>> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let user = User::from_name("postgres")?
        .ok_or_else(|| anyhow!("tests run as root but there is no postgres user"))?;
    Ok(Some((user.uid, user.gid)))
}

impl PatroniCluster {
    /// Starts etcd and `nodes` Patroni nodes, and waits (bounded) until one
    /// leads and every other one streams from it.
    pub async fn start(nodes: usize) -> anyhow::Result<Self> {
        let binary = patroni_binary();
        anyhow::ensure!(
            binary.exists(),
            "{} not found: run scripts/install-deps.sh",
            binary.display()
        );
        let dir = WorkDir::new("patroni")?;
        let user = run_as()?;
        if let Some((uid, gid)) = user {
            nix::unistd::chown(dir.path(), Some(uid), Some(gid)).context("chown to postgres")?;
        }
        let etcd = EtcdServer::start().await?;
        let scope = format!("patroni-{}-{}", std::process::id(), free_port()?);
        let section = DcsSection::Etcd3(json!({"hosts": etcd.addr().to_string()}));
        let timing = Timing {
            retry_timeout: Duration::from_secs(3),
            ..Timing::default()
        };
        let dcs = pgha_agent::dcs::connect(
            &section,
            KeyLayout::new("/service/", &scope),
            "test",
            timing,
        )
        .map_err(|e| anyhow!(e))?;
        let mut cluster = PatroniCluster {
            scope,
            nodes: Vec::new(),
            dcs,
            etcd,
            user,
            dir,
        };
        for i in 1..=nodes {
            cluster.add_node(&format!("node{i}"))?;
        }
        for i in 0..nodes {
            cluster.start_node(i)?;
        }
        super::scenarios::wait_healthy(&cluster, Duration::from_secs(50)).await?;
        Ok(cluster)
    }

    fn add_node(&mut self, name: &str) -> anyhow::Result<()> {
        let pg_port = free_port()?;
        let api_port = free_port()?;
        let dir = self.dir.path();
        let data_dir = dir.join(format!("{name}-data"));
        let config = dir.join(format!("{name}.yml"));
        let yaml = format!(
            "scope: {scope}\nnamespace: /service/\nname: {name}\n\
             log: {{level: INFO}}\n\
             restapi:\n  listen: 127.0.0.1:{api_port}\n  connect_address: 127.0.0.1:{api_port}\n  \
             authentication: {{username: {API_USER}, password: {API_PASSWORD}}}\n\
             etcd3:\n  hosts: {etcd}\n\
             bootstrap:\n  dcs:\n    ttl: {TTL}\n    loop_wait: {LOOP_WAIT}\n    retry_timeout: {RETRY_TIMEOUT}\n    \
             maximum_lag_on_failover: 1048576\n    postgresql:\n      use_pg_rewind: true\n      use_slots: true\n      \
             parameters:\n        wal_keep_size: 64MB\n        max_connections: 50\n  \
             initdb:\n  - encoding: UTF8\n  - data-checksums\n\
             postgresql:\n  listen: 127.0.0.1:{pg_port}\n  connect_address: 127.0.0.1:{pg_port}\n  \
             data_dir: {data}\n  bin_dir: {bin}\n  pgpass: {pgpass}\n  \
             authentication:\n    replication: {{username: replicator, password: rep-pass}}\n    \
             superuser: {{username: postgres, password: {SUPERUSER_PASSWORD}}}\n    \
             rewind: {{username: rewind_user, password: rewind-pass}}\n  \
             parameters:\n    unix_socket_directories: {sock}\n    shared_buffers: 16MB\n  \
             pg_hba:\n  - local all all trust\n  - host all all 127.0.0.1/32 md5\n  \
             - host replication replicator 127.0.0.1/32 md5\n",
            scope = self.scope,
            bin = pgha_testkit::pg_bin_dir().display(),
            etcd = self.etcd.addr(),
            data = data_dir.display(),
            pgpass = dir.join(format!("{name}.pgpass")).display(),
            sock = dir.display(),
        );
        std::fs::write(&config, yaml)?;
        if let Some((uid, gid)) = self.user {
            nix::unistd::chown(&config, Some(uid), Some(gid))?;
        }
        self.nodes.push(PatroniNode {
            name: name.to_string(),
            pg_port,
            api_port,
            data_dir,
            log: dir.join(format!("{name}.log")),
            config,
            process: None,
        });
        Ok(())
    }

    fn start_node(&mut self, i: usize) -> anyhow::Result<()> {
        let home = self.dir.path().to_path_buf();
        let node = &mut self.nodes[i];
        let mut cmd = Command::new(patroni_binary());
        cmd.arg(&node.config).env("HOME", &home);
        if let Some((uid, gid)) = self.user {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid.as_raw()).gid(gid.as_raw());
        }
        node.process = Some(ServerProcess::spawn(&node.name, cmd, &node.log)?);
        Ok(())
    }

    /// A pghactl/patronictl configuration for this cluster; `with_auth`
    /// adds the REST credentials (`ctl.authentication`).
    pub fn ctl_config(&self, with_auth: bool) -> anyhow::Result<PathBuf> {
        let name = if with_auth {
            "ctl.yml"
        } else {
            "ctl-noauth.yml"
        };
        let path = self.dir.path().join(name);
        let auth = if with_auth {
            format!("ctl:\n  authentication: {{username: {API_USER}, password: {API_PASSWORD}}}\n")
        } else {
            String::new()
        };
        std::fs::write(
            &path,
            format!(
                "scope: {}\nnamespace: /service/\netcd3:\n  hosts: {}\n{auth}",
                self.scope,
                self.etcd.addr()
            ),
        )?;
        Ok(path)
    }

    /// The index of the node called `name`.
    pub fn index(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// The last lines of every Patroni log, for failure messages.
    pub fn logs_tail(&self, lines: usize) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let text = std::fs::read_to_string(&n.log).unwrap_or_default();
                let all: Vec<&str> = text.lines().collect();
                format!(
                    "--- {} ---\n{}",
                    n.name,
                    all[all.len().saturating_sub(lines)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Operated for PatroniCluster {
    fn scope(&self) -> &str {
        &self.scope
    }

    fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    fn ctl_config(&self) -> PathBuf {
        self.ctl_config(true).expect("write ctl.yml")
    }

    fn ctl_config_without_credentials(&self) -> Option<PathBuf> {
        Some(self.ctl_config(false).expect("write ctl-noauth.yml"))
    }

    fn dcs(&self) -> &Arc<dyn Dcs> {
        &self.dcs
    }

    fn logs(&self) -> String {
        self.logs_tail(20)
    }
}

impl Drop for PatroniCluster {
    fn drop(&mut self) {
        // Patroni first, so nothing restarts PostgreSQL behind our back.
        for node in &mut self.nodes {
            if let Some(mut p) = node.process.take() {
                p.kill();
            }
        }
        let postmasters: Vec<i32> = self
            .nodes
            .iter()
            .filter_map(|node| postgres_teardown::running_postmaster(&node.data_dir))
            .collect();
        postgres_teardown::stop_postmasters(&postmasters, Duration::from_secs(5));
        postgres_teardown::release_orphaned_shared_memory();
    }
}
