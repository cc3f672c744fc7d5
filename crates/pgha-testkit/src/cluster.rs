//! A whole pgha cluster on loopback, for integration tests: a real DCS
//! (etcd, ZooKeeper, or the in-repo Consul / Kubernetes emulators) and N agents, each with its own PostgreSQL 15.
//!
//! Agents run as the `postgres` OS user when the tests run as root
//! (PostgreSQL refuses to run as root), as the current user otherwise.
//! Dropping the cluster kills every agent and postmaster it started.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Gid, Pid, Uid, User};
use serde_json::Value;
use tokio::time::Instant;

use crate::etcd::EtcdServer;
use crate::ports::free_port;
use crate::postgres_teardown;
use crate::process::ServerProcess;
use crate::workdir::WorkDir;
use crate::zookeeper::ZooKeeperServer;

/// Which DCS the cluster uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DcsKind {
    Etcd,
    ZooKeeper,
    /// The in-repo Consul emulator (no Consul agent can be installed here).
    ConsulEmulator,
    /// The in-repo kube-apiserver emulator (no Kubernetes can be run here):
    /// one Pod per node, ConfigMaps for the cluster's objects.
    K8sEmulator,
}

#[derive(Debug)]
enum DcsServer {
    Etcd(EtcdServer),
    ZooKeeper(ZooKeeperServer),
    ConsulEmulator(pgha_consul_emulator::ConsulEmulator),
    K8sEmulator(pgha_k8s_emulator::Emulator),
}

/// Timings and sizes of a test cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub nodes: usize,
    pub ttl: u64,
    pub loop_wait: u64,
    pub retry_timeout: u64,
    pub bin_dir: PathBuf,
    /// Where the DCS and the nodes run; default: all on loopback, here.
    pub placement: Placement,
    /// `restapi.authentication` (user, password) on every node; the
    /// cluster's REST calls send it. Default: none.
    pub rest_auth: Option<(String, String)>,
}

/// Where one server of the cluster runs: the address it listens on and
/// publishes, and the network namespace it runs in (`None`: the test's own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub addr: IpAddr,
    /// A name under `/run/netns` (`ip netns add`); the process is started
    /// there with `nsenter --net=/run/netns/<name>`.
    pub netns: Option<String>,
}

impl Default for Host {
    fn default() -> Self {
        Host {
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            netns: None,
        }
    }
}

impl Host {
    /// A `Command` running `program` on this host, as `user` when given.
    /// In a namespace, `nsenter` enters it (as root) and then drops to the
    /// user, so the program's sockets live in the namespace.
    pub fn command(&self, program: &Path, user: Option<(Uid, Gid)>) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut cmd = Command::new("nsenter");
                cmd.arg(format!("--net=/run/netns/{ns}"));
                if let Some((uid, gid)) = user {
                    cmd.arg(format!("--setgid={gid}"))
                        .arg(format!("--setuid={uid}"));
                }
                cmd.arg("--").arg(program);
                cmd
            }
            None => {
                let mut cmd = Command::new(program);
                if let Some((uid, gid)) = user {
                    use std::os::unix::process::CommandExt;
                    cmd.uid(uid.as_raw()).gid(gid.as_raw());
                }
                cmd
            }
        }
    }
}

/// Where the cluster's servers run (see [`Host`]). Only etcd can run in a
/// network namespace.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    pub dcs: Host,
    /// Node `i`'s host; nodes beyond the list run on loopback.
    pub nodes: Vec<Host>,
    /// The network clients and peers connect from, for `pg_hba.conf`
    /// (default `127.0.0.1/32`).
    pub hba_network: Option<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 3,
            ttl: 5,
            loop_wait: 1,
            retry_timeout: 2,
            bin_dir: crate::pg_bin_dir(),
            placement: Placement::default(),
            rest_auth: None,
        }
    }
}

/// One node: its ports, files and agent process.
#[derive(Debug)]
pub struct Node {
    pub name: String,
    /// The address its PostgreSQL and REST API listen on.
    pub host: IpAddr,
    pub pg_port: u16,
    pub api_port: u16,
    pub data_dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    /// Extra environment for its agent (what a service manager would set).
    pub agent_env: Vec<(String, String)>,
    agent: Option<ServerProcess>,
}

impl Node {
    pub fn api(&self, path: &str) -> String {
        format!("http://{}:{}{path}", self.host, self.api_port)
    }
}

/// A running test cluster.
#[derive(Debug)]
pub struct TestCluster {
    pub dir: WorkDir,
    pub scope: String,
    pub nodes: Vec<Node>,
    pub options: ClusterOptions,
    binary: PathBuf,
    dcs: DcsServer,
    user: Option<(Uid, Gid)>,
    http: reqwest_lite::Client,
}

/// The superuser password every test node uses.
pub const SUPERUSER_PASSWORD: &str = "su-pass";

impl TestCluster {
    /// Starts the DCS and writes each node's configuration; agents are not
    /// started yet (see [`TestCluster::start_all`]).
    pub async fn new(
        agent_binary: &Path,
        kind: DcsKind,
        options: ClusterOptions,
    ) -> anyhow::Result<Self> {
        // Earlier runs' killed servers may hold most of the machine's
        // System V segments; without this a new postmaster can fail to start.
        postgres_teardown::release_orphaned_shared_memory();
        let dir = WorkDir::new("cluster")?;
        let user = run_as_user()?;
        if let Some((uid, gid)) = user {
            nix::unistd::chown(dir.path(), Some(uid), Some(gid))
                .context("chown the cluster directory to postgres")?;
        }
        if options.placement.dcs.netns.is_some() && kind != DcsKind::Etcd {
            bail!("only etcd can run in a network namespace, not {kind:?}");
        }
        let dcs = match kind {
            DcsKind::Etcd => DcsServer::Etcd(
                EtcdServer::start_on(
                    options.placement.dcs.addr,
                    options.placement.dcs.netns.as_deref(),
                )
                .await?,
            ),
            DcsKind::ZooKeeper => DcsServer::ZooKeeper(ZooKeeperServer::start().await?),
            DcsKind::ConsulEmulator => DcsServer::ConsulEmulator(
                pgha_consul_emulator::ConsulEmulator::start(
                    pgha_consul_emulator::EmulatorConfig::for_tests(),
                )
                .await?,
            ),
            DcsKind::K8sEmulator => {
                DcsServer::K8sEmulator(pgha_k8s_emulator::Emulator::start_local().await?)
            }
        };
        // Unique per cluster, not only per process: `cargo test` runs a
        // file's tests as threads of one process, and the scope is every
        // server's cluster_name, which teardown matches backends by
        // (`postgres_teardown::kill_backends_of`): with the pid alone, one
        // test's teardown SIGKILLed the PostgreSQL children of another.
        static CLUSTERS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = CLUSTERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let scope = format!("test-{}-{n}", std::process::id());
        let mut cluster = TestCluster {
            dir,
            scope,
            nodes: Vec::new(),
            options: options.clone(),
            binary: agent_binary.to_path_buf(),
            dcs,
            user,
            http: reqwest_lite::Client {
                auth: options.rest_auth.as_ref().map(|(u, p)| {
                    pgha_rest_client::BasicAuth {
                        username: u.clone(),
                        password: p.clone(),
                    }
                    .header()
                }),
            },
        };
        if let DcsServer::K8sEmulator(k) = &cluster.dcs {
            k.write_kubeconfig(&cluster.kubeconfig(), "pgha-test", "default")?;
        }
        for i in 1..=options.nodes {
            cluster.add_node(&format!("node{i}")).await?;
        }
        Ok(cluster)
    }

    fn dcs_section(&self) -> String {
        match &self.dcs {
            DcsServer::Etcd(e) => format!("etcd3:\n  hosts: {}\n", e.addr()),
            DcsServer::ZooKeeper(z) => format!("zookeeper:\n  hosts: ['{}']\n", z.connect_string()),
            DcsServer::ConsulEmulator(c) => format!("consul:\n  host: {}\n", c.addr()),
            DcsServer::K8sEmulator(_) => "kubernetes:\n  namespace: default\n".to_string(),
        }
    }

    /// The kubeconfig pointing at the Kubernetes emulator (written only for
    /// [`DcsKind::K8sEmulator`]); agents and `pghactl` get it as `KUBECONFIG`.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// On Kubernetes a member is its Pod: creates the Pod of member `name`,
    /// labelled with the cluster's scope, as a StatefulSet would.
    async fn create_pod(&self, name: &str) -> anyhow::Result<()> {
        let DcsServer::K8sEmulator(k) = &self.dcs else {
            return Ok(());
        };
        let pod = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"cluster-name": self.scope}},
            "spec": {"containers": [{"name": "postgres", "image": "postgres:15"}]},
            "status": {"podIP": "127.0.0.1"},
        });
        let (code, body) = self
            .http
            .call(
                "POST",
                &format!("{}/api/v1/namespaces/default/pods", k.url()),
                Some(&pod.to_string()),
                Duration::from_secs(5),
            )
            .await?;
        if code != 201 {
            bail!("creating Pod {name} in the Kubernetes emulator: HTTP {code}: {body}");
        }
        Ok(())
    }

    /// A `pghactl`/`patronictl` configuration for this cluster.
    pub fn ctl_config(&self) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join("ctl.yml");
        std::fs::write(
            &path,
            format!(
                "scope: {}\nnamespace: /service/\n{}",
                self.scope,
                self.dcs_section()
            ),
        )?;
        Ok(path)
    }

    async fn add_node(&mut self, name: &str) -> anyhow::Result<()> {
        self.add_node_as(name, name).await.map(drop)
    }

    /// Adds a node called `name` whose files (data directory, YAML, log)
    /// are named after `files`, with ports of its own; its agent is not
    /// started. A `name` already in use makes the duplicate an operator
    /// can create by copying a YAML file. Returns its index.
    pub async fn add_node_as(&mut self, name: &str, files: &str) -> anyhow::Result<usize> {
        self.create_pod(name).await?;
        let host = self.node_host(self.nodes.len()).addr;
        let net = self
            .options
            .placement
            .hba_network
            .clone()
            .unwrap_or_else(|| "127.0.0.1/32".to_string());
        let pg_port = free_port()?;
        let api_port = free_port()?;
        let data_dir = self.dir.path().join(format!("{files}-data"));
        let config = self.dir.path().join(format!("{files}.yml"));
        let o = &self.options;
        let yaml = format!(
            "scope: {scope}\nnamespace: /service/\nname: {name}\n\
             restapi:\n  listen: {host}:{api_port}\n  connect_address: {host}:{api_port}\n{rest_auth}\
             {dcs}\
             bootstrap:\n  dcs:\n    ttl: {ttl}\n    loop_wait: {loop_wait}\n    retry_timeout: {retry}\n    maximum_lag_on_failover: 1048576\n    \
             postgresql:\n      use_pg_rewind: true\n      use_slots: true\n      parameters:\n        wal_keep_size: 64MB\n        max_connections: 50\n        shared_buffers: 16MB\n  \
             initdb:\n  - encoding: UTF8\n  - data-checksums\n\
             postgresql:\n  listen: {host}:{pg_port}\n  connect_address: {host}:{pg_port}\n  data_dir: {data}\n  bin_dir: {bin}\n  pgpass: {pgpass}\n  \
             authentication:\n    replication: {{username: replicator, password: rep-pass}}\n    superuser: {{username: postgres, password: {SUPERUSER_PASSWORD}}}\n    rewind: {{username: rewind_user, password: rewind-pass}}\n  \
             parameters:\n    unix_socket_directories: {sock}\n  \
             pg_hba:\n  - local all all trust\n  - host all all {net} md5\n  - host replication replicator {net} md5\n",
            scope = self.scope,
            rest_auth = o.rest_auth.as_ref().map_or(String::new(), |(u, p)| {
                format!("  authentication: {{username: {u}, password: {p}}}\n")
            }),
            dcs = self.dcs_section(),
            ttl = o.ttl,
            loop_wait = o.loop_wait,
            retry = o.retry_timeout,
            data = data_dir.display(),
            bin = o.bin_dir.display(),
            pgpass = self.dir.path().join(format!("{files}.pgpass")).display(),
            sock = self.dir.path().display(),
        );
        std::fs::write(&config, yaml)?;
        let log = self.dir.path().join(format!("{files}.log"));
        self.nodes.push(Node {
            name: name.to_string(),
            host,
            pg_port,
            api_port,
            data_dir,
            config,
            log,
            agent_env: Vec::new(),
            agent: None,
        });
        Ok(self.nodes.len() - 1)
    }

    /// Where node `i` runs.
    pub fn node_host(&self, i: usize) -> Host {
        self.options
            .placement
            .nodes
            .get(i)
            .cloned()
            .unwrap_or_default()
    }

    /// The OS user agents and PostgreSQL run as (`postgres` when the tests
    /// run as root; `None`: the current user).
    pub fn run_as(&self) -> Option<(Uid, Gid)> {
        self.user
    }

    /// The pid of node `i`'s agent, if it was started and not killed.
    pub fn agent_pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].agent.as_ref().and_then(ServerProcess::pid)
    }

    /// How node `i`'s agent ended; `None` while it runs or if it was never
    /// started.
    pub fn agent_exit(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        self.nodes[i]
            .agent
            .as_mut()
            .and_then(ServerProcess::exit_status)
    }

    /// Starts node `i`'s agent (as a service manager would).
    pub fn start_agent(&mut self, i: usize) -> anyhow::Result<()> {
        let mut cmd = self.node_host(i).command(&self.binary, self.user);
        let node = &mut self.nodes[i];
        cmd.arg(&node.config).env("PGHA_LOG", "info");
        if matches!(self.dcs, DcsServer::K8sEmulator(_)) {
            cmd.env("KUBECONFIG", self.dir.path().join("kubeconfig"));
        }
        if self.user.is_some() {
            cmd.env("HOME", self.dir.path());
        }
        cmd.envs(node.agent_env.iter().map(|(k, v)| (k, v)));
        node.agent = Some(ServerProcess::spawn(&node.name, cmd, &node.log)?);
        Ok(())
    }

    pub fn start_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.nodes.len() {
            self.start_agent(i)?;
        }
        Ok(())
    }

    /// kill -9 of node `i`'s agent: PostgreSQL keeps running.
    pub fn kill_agent(&mut self, i: usize) {
        if let Some(mut a) = self.nodes[i].agent.take() {
            a.kill();
        }
    }

    /// kill -9 of node `i`'s agent and fence guard together, as a kill of
    /// the agent's process tree (or `pkill -9 -f pgha`) does; both frozen
    /// first, so neither can react to the other's death. Only what they
    /// take along dies with them.
    pub fn kill_agent_and_guard(&mut self, i: usize) {
        let pids: Vec<Pid> = self
            .guard_pids(i)
            .into_iter()
            .chain(self.agent_pid(i).map(|p| p as i32))
            .map(Pid::from_raw)
            .collect();
        for &p in &pids {
            let _ = kill(p, Signal::SIGSTOP);
        }
        for &p in &pids {
            let _ = kill(p, Signal::SIGKILL);
        }
        self.kill_agent(i);
    }

    /// SIGSTOP (`Signal::SIGSTOP`) or SIGCONT of node `i`'s agent and fence
    /// guards together, as a cgroup freeze (or thaw) does.
    pub fn signal_agent_and_guard(&self, i: usize, signal: Signal) {
        for p in self
            .guard_pids(i)
            .into_iter()
            .chain(self.agent_pid(i).map(|p| p as i32))
        {
            let _ = kill(Pid::from_raw(p), signal);
        }
    }

    /// kill -9 of node `i`'s fence guard alone.
    pub fn kill_guard(&self, i: usize) {
        for g in self.guard_pids(i) {
            let _ = kill(Pid::from_raw(g), Signal::SIGKILL);
        }
    }

    /// The pids of node `i`'s fence guards (`pg-fence-guard ... -- pgha
    /// <its config> --hand-over-lock`, in their own process group, so not
    /// children the test holds).
    pub fn guard_pids(&self, i: usize) -> Vec<i32> {
        let config = self.nodes[i].config.to_string_lossy();
        crate::faults::procs::table()
            .into_iter()
            .filter(|p| {
                let mut args = p.cmdline.split(' ');
                args.next().is_some_and(|a| a.ends_with("/pg-fence-guard"))
                    && args.any(|a| a == config)
            })
            .map(|p| p.pid)
            .collect()
    }

    /// Node `i`'s host "reboots": its guard, agent and postmaster all die at
    /// once. They are frozen first (SIGSTOP), so none of them can react to
    /// another's death, then killed.
    pub fn kill_node(&mut self, i: usize) {
        let guards = self.guard_pids(i);
        let agent = self.nodes[i].agent.as_ref().and_then(|a| a.pid());
        let postmaster = self.postmaster_pid(i);
        let all: Vec<Pid> = guards
            .iter()
            .copied()
            .chain(agent.map(|p| p as i32))
            .chain(postmaster)
            .map(Pid::from_raw)
            .collect();
        for &p in &all {
            let _ = kill(p, Signal::SIGSTOP);
        }
        for &p in &all {
            let _ = kill(p, Signal::SIGKILL);
        }
        self.kill_agent(i);
    }

    /// Node `i`'s host reboots: every process of the node dies at once —
    /// guard, agent and what it runs (pg_ctl, pg_rewind, ...), the
    /// postmaster and all its backends — frozen first so none reacts to
    /// another's death. Start the agent again with [`TestCluster::start_agent`].
    pub async fn reboot_node(&mut self, i: usize) -> anyhow::Result<()> {
        use crate::faults::procs;
        let guards = self.guard_pids(i);
        let agent = self.agent_pid(i);
        let postmaster = self.postmaster_pid(i);
        // Everything of the node, found while the postmaster lives: its
        // backends (each in a session of its own) are found as its
        // children only, and it dies with its guard (parent-death signal),
        // leaving them to init. Frozen first, then killed.
        let roots: Vec<i32> = guards
            .iter()
            .copied()
            .chain(agent.map(|a| a as i32))
            .chain(postmaster)
            .collect();
        let sessions: Vec<i32> = postmaster.into_iter().collect();
        let node = procs::node_pids(&procs::table(), &roots, &sessions, &self.nodes[i].data_dir);
        for &p in &node {
            let _ = kill(Pid::from_raw(p), Signal::SIGSTOP);
        }
        for &p in &node {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        procs::kill_node(agent, postmaster, &self.nodes[i].data_dir).await?;
        self.kill_agent(i);
        Ok(())
    }

    /// Runs `pg_ctl <args> -D <node i's data directory>` as the agents' OS user.
    pub fn pg_ctl(&self, i: usize, args: &[&str]) -> anyhow::Result<()> {
        let mut cmd = Command::new(self.options.bin_dir.join("pg_ctl"));
        cmd.args(args).arg("-D").arg(&self.nodes[i].data_dir);
        if let Some((uid, gid)) = self.user {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid.as_raw()).gid(gid.as_raw());
        }
        let out = cmd.output().context("running pg_ctl")?;
        if !out.status.success() {
            bail!(
                "pg_ctl {args:?} on {}: {}{}",
                self.nodes[i].name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// SIGTERM to node `i`'s agent, then wait for it to exit (bounded).
    pub async fn stop_agent(&mut self, i: usize) -> anyhow::Result<()> {
        let Some(mut agent) = self.nodes[i].agent.take() else {
            return Ok(());
        };
        agent.signal(Signal::SIGTERM)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while agent.is_running() {
            if Instant::now() > deadline {
                agent.kill();
                bail!(
                    "{}'s agent did not stop within 60 s after SIGTERM",
                    self.nodes[i].name
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// The pid of node `i`'s postmaster, if running.
    pub fn postmaster_pid(&self, i: usize) -> Option<i32> {
        postgres_teardown::running_postmaster(&self.nodes[i].data_dir)
    }

    /// kill -9 of node `i`'s postmaster.
    pub fn kill_postmaster(&self, i: usize) -> anyhow::Result<()> {
        let pid = self
            .postmaster_pid(i)
            .ok_or_else(|| anyhow!("{}: no postmaster running", self.nodes[i].name))?;
        kill(Pid::from_raw(pid), Signal::SIGKILL)?;
        Ok(())
    }

    /// `GET` a node's REST path: (status code, JSON body or Null).
    pub async fn api(&self, i: usize, path: &str) -> anyhow::Result<(u16, Value)> {
        self.http.get(&self.nodes[i].api(path)).await
    }

    /// Any method on a node's REST path, with an optional body: (status
    /// code, body text). Bounded by `within`.
    pub async fn api_call(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: Option<&str>,
        within: Duration,
    ) -> anyhow::Result<(u16, String)> {
        self.http
            .call(method, &self.nodes[i].api(path), body, within)
            .await
    }

    /// Node `i`'s PostgreSQL data directory.
    pub fn data_dir(&self, i: usize) -> &Path {
        &self.nodes[i].data_dir
    }

    /// Creates an empty file `name` in the cluster's directory that the
    /// agents' OS user can write (a stand-in device, say).
    pub fn agent_file(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, "")?;
        if let Some((uid, gid)) = self.user {
            nix::unistd::chown(&path, Some(uid), Some(gid))
                .with_context(|| format!("chown {}", path.display()))?;
        }
        Ok(path)
    }

    /// Rewrites node `i`'s YAML file (before starting it, or before a reload).
    pub fn edit_config(&self, i: usize, edit: impl FnOnce(String) -> String) -> anyhow::Result<()> {
        let path = &self.nodes[i].config;
        let text = std::fs::read_to_string(path)?;
        std::fs::write(path, edit(text))?;
        Ok(())
    }

    /// Sends `signal` to node `i`'s agent.
    pub fn signal_agent(&self, i: usize, signal: Signal) -> anyhow::Result<()> {
        match &self.nodes[i].agent {
            Some(a) => a.signal(signal),
            None => bail!("{}'s agent is not running", self.nodes[i].name),
        }
    }

    /// The index of the node answering 200 on `/primary`, if exactly one does.
    pub async fn primary(&self) -> Option<usize> {
        let mut found = Vec::new();
        for i in 0..self.nodes.len() {
            if matches!(self.api(i, "/primary").await, Ok((200, _))) {
                found.push(i);
            }
        }
        (found.len() == 1).then(|| found[0])
    }

    /// Waits until exactly one node is primary.
    pub async fn wait_for_primary(&self, within: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(p) = self.primary().await {
                return Ok(p);
            }
            if Instant::now() > deadline {
                bail!(
                    "no single primary within {within:?}\n{}",
                    self.logs_tail(25)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the cluster has converged: one primary holding the lock,
    /// and every node in `members` streaming from it.
    pub async fn wait_converged(
        &self,
        members: &[usize],
        within: Duration,
    ) -> anyhow::Result<usize> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(p) = self.primary().await {
                let mut ok = true;
                for &i in members.iter().filter(|&&i| i != p) {
                    let streaming = matches!(
                        self.api(i, "/replica?replication_state=streaming").await,
                        Ok((200, _))
                    );
                    let upstream = self.sql(i, "SELECT sender_port::text FROM pg_stat_wal_receiver WHERE status = 'streaming'").await;
                    let from_leader = matches!(&upstream, Ok(rows) if rows.first().map(String::as_str) == Some(&*self.nodes[p].pg_port.to_string()));
                    ok &= streaming && from_leader;
                }
                if ok {
                    return Ok(p);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "cluster did not converge within {within:?}\n{}",
                    self.logs_tail(25)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs SQL on node `i` as the superuser; returns the first column of each row as text.
    pub async fn sql(&self, i: usize, query: &str) -> anyhow::Result<Vec<String>> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(self.nodes[i].host.to_string())
            .port(self.nodes[i].pg_port)
            .user("postgres")
            .password(SUPERUSER_PASSWORD)
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(3));
        let (client, conn) =
            tokio::time::timeout(Duration::from_secs(5), cfg.connect(tokio_postgres::NoTls))
                .await
                .map_err(|_| anyhow!("{}: connect timed out", self.nodes[i].name))??;
        tokio::spawn(conn);
        let rows = tokio::time::timeout(Duration::from_secs(30), client.simple_query(query))
            .await
            .map_err(|_| anyhow!("{}: query timed out", self.nodes[i].name))??;
        Ok(rows
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    Some(r.get(0).unwrap_or_default().to_string())
                }
                _ => None,
            })
            .collect())
    }

    /// Polls SQL on node `i` until `check` accepts the rows (bounded).
    pub async fn wait_sql(
        &self,
        i: usize,
        query: &str,
        within: Duration,
        check: impl Fn(&[String]) -> bool,
    ) -> anyhow::Result<Vec<String>> {
        let deadline = Instant::now() + within;
        loop {
            let r = self.sql(i, query).await;
            if let Ok(rows) = &r
                && check(rows)
            {
                return Ok(rows.clone());
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: {query:?} gave {r:?} after {within:?}",
                    self.nodes[i].name
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Node `i`'s agent log.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }

    /// The last lines of every agent log, for failure messages.
    pub fn logs_tail(&self, lines: usize) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let text = self.log(i);
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

    /// Runs etcd's own `etcdctl` (API v3) against the cluster's etcd, as
    /// an operator would: keys it writes carry no lease unless told to.
    /// Only for [`DcsKind::Etcd`]. Returns what it printed.
    pub async fn etcdctl<A: AsRef<std::ffi::OsStr> + std::fmt::Debug>(
        &self,
        args: &[A],
    ) -> anyhow::Result<String> {
        let DcsServer::Etcd(e) = &self.dcs else {
            bail!("etcdctl needs an etcd cluster");
        };
        let out = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::process::Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={}", e.endpoint()))
                .args(args)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .context("etcdctl did not finish within 20 s")?
        .context("running etcdctl (Debian's etcd-client; .ci/run installs it)")?;
        if !out.status.success() {
            bail!("etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The path of one of the cluster's keys (`leader`, `members/node1`).
    pub fn key_path(&self, key: &str) -> String {
        format!("/service/{}/{key}", self.scope)
    }

    /// Freezes (SIGSTOP) or resumes (SIGCONT) the DCS server: etcd or
    /// ZooKeeper (the emulators run in the test's process).
    pub fn signal_dcs(&self, signal: Signal) -> anyhow::Result<()> {
        match &self.dcs {
            DcsServer::Etcd(e) => e.signal(signal),
            DcsServer::ZooKeeper(z) => z.signal(signal),
            _ => bail!("only etcd and ZooKeeper run as processes of their own"),
        }
    }

    /// Kills the DCS server (etcd or ZooKeeper); its data stays for
    /// [`TestCluster::start_dcs_again`].
    pub fn kill_dcs(&mut self) -> anyhow::Result<()> {
        match &mut self.dcs {
            DcsServer::Etcd(e) => e.kill(),
            DcsServer::ZooKeeper(z) => z.kill(),
            _ => bail!("only etcd and ZooKeeper run as processes of their own"),
        }
        Ok(())
    }

    /// Starts the DCS server killed by [`TestCluster::kill_dcs`] again.
    pub async fn start_dcs_again(&mut self) -> anyhow::Result<()> {
        match &mut self.dcs {
            DcsServer::Etcd(e) => e.start_again().await,
            DcsServer::ZooKeeper(z) => z.start_again().await,
            _ => bail!("only etcd and ZooKeeper run as processes of their own"),
        }
    }

    /// Stops the DCS server (kill) and starts it again with its data.
    pub async fn restart_dcs(&mut self) -> anyhow::Result<()> {
        match &mut self.dcs {
            DcsServer::Etcd(e) => e.restart().await,
            DcsServer::ZooKeeper(z) => z.restart().await,
            DcsServer::ConsulEmulator(c) => Ok(c.restart().await?),
            DcsServer::K8sEmulator(k) => Ok(k.restart().await?),
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            for g in self.guard_pids(i) {
                let _ = kill(Pid::from_raw(g), Signal::SIGKILL);
            }
            self.kill_agent(i);
        }
        let postmasters: Vec<i32> = (0..self.nodes.len())
            .filter_map(|i| self.postmaster_pid(i))
            .collect();
        postgres_teardown::stop_postmasters(&postmasters, Duration::from_secs(5));
        // The postmasters died with their guards above (parent-death
        // signal), leaving their backends to init: frozen ones too.
        postgres_teardown::kill_backends_of(&self.scope);
        postgres_teardown::release_orphaned_shared_memory();
    }
}

/// The OS user agents run as: `postgres` when the tests run as root.
pub fn run_as_user() -> anyhow::Result<Option<(Uid, Gid)>> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let user = User::from_name("postgres")?.ok_or_else(|| {
        anyhow!("tests run as root but there is no postgres user (install postgresql-15)")
    })?;
    Ok(Some((user.uid, user.gid)))
}

/// A minimal HTTP GET client for the REST API (hyper is not a dependency
/// of the test kit; the requests are tiny).
mod reqwest_lite {
    use std::time::Duration;

    use anyhow::anyhow;
    use serde_json::Value;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[derive(Debug, Default, Clone)]
    pub struct Client {
        /// The `Authorization` header's value, sent with every call.
        pub auth: Option<String>,
    }

    impl Client {
        pub async fn call(
            &self,
            method: &str,
            url: &str,
            body: Option<&str>,
            within: Duration,
        ) -> anyhow::Result<(u16, String)> {
            let rest = url
                .strip_prefix("http://")
                .ok_or_else(|| anyhow!("not an http URL: {url}"))?;
            let (host, path) = rest
                .split_once('/')
                .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
            let body = body.unwrap_or("");
            let fut = async {
                let mut s = tokio::net::TcpStream::connect(host).await?;
                let auth = self
                    .auth
                    .as_ref()
                    .map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
                let head = format!(
                    "{method} {path} HTTP/1.0\r\nHost: {host}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n",
                    body.len()
                );
                s.write_all(head.as_bytes()).await?;
                s.write_all(body.as_bytes()).await?;
                let mut out = Vec::new();
                s.read_to_end(&mut out).await?;
                let text = String::from_utf8_lossy(&out).into_owned();
                let code: u16 = text
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .ok_or_else(|| anyhow!("bad HTTP answer"))?;
                let body = text
                    .split_once("\r\n\r\n")
                    .map(|(_, b)| b)
                    .unwrap_or_default()
                    .to_string();
                Ok::<_, anyhow::Error>((code, body))
            };
            tokio::time::timeout(within, fut)
                .await
                .map_err(|_| anyhow!("{method} {url}: no answer within {within:?}"))?
        }

        pub async fn get(&self, url: &str) -> anyhow::Result<(u16, Value)> {
            let rest = url
                .strip_prefix("http://")
                .ok_or_else(|| anyhow!("not an http URL: {url}"))?;
            let (host, path) = rest
                .split_once('/')
                .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
            let fut = async {
                let mut s = tokio::net::TcpStream::connect(host).await?;
                s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
                    .await?;
                let mut out = Vec::new();
                s.read_to_end(&mut out).await?;
                let text = String::from_utf8_lossy(&out).into_owned();
                let code: u16 = text
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .ok_or_else(|| anyhow!("bad HTTP answer"))?;
                let body = text
                    .split_once("\r\n\r\n")
                    .map(|(_, b)| b)
                    .unwrap_or_default();
                Ok::<_, anyhow::Error>((code, serde_json::from_str(body).unwrap_or(Value::Null)))
            };
            tokio::time::timeout(Duration::from_secs(3), fut)
                .await
                .map_err(|_| anyhow!("GET {url}: timed out"))?
        }
    }
}
