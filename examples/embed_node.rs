//! A Rust service with a PostgreSQL HA node inside: it runs a `pgha_node`
//! node in its own tokio runtime, against etcd, and serves its own HTTP
//! endpoint (`GET /role`: `primary`, `replica` or `unknown`) from the
//! node's status. No Patroni YAML, no pgha binary: the service builds the
//! node's configuration from its own arguments.
//!
//! The fence guard, which stops this node's PostgreSQL if the service dies
//! or freezes while it leads, must be a process of its own; here it is
//! this same program, started with `--guard` first
//! ([`GuardMode::CurrentExe`]).
//!
//! ```text
//! embed_node --name n1 --scope demo --etcd 127.0.0.1:2379 \
//!     --data-dir /tmp/n1/data --pg-port 5441 --http-port 8081 \
//!     [--bin-dir /usr/lib/postgresql/15/bin] [--ttl 10]
//! ```
//!
//! Run three with different names, directories and ports (as a user that
//! may run PostgreSQL, not root); one becomes primary; kill it and another
//! takes over. `tests/embed_node.rs` does exactly that.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use pgha_core::dcs::Dcs;
use pgha_core::model::{DynamicConfig, KeyLayout, Timing};
use pgha_dcs_etcd::{EtcdConfig, EtcdDcs};
use pgha_node::guard::Handover;
use pgha_node::guard::daemon::{self, GuardTarget};
use pgha_node::postgres::PgSettings;
use pgha_node::postgres::address::HostPort;
use pgha_node::{GuardMode, Node, NodeConfig, NodeHandle, WatchdogMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The service's own settings, from `--key value` arguments.
struct Settings {
    name: String,
    scope: String,
    etcd: String,
    data_dir: PathBuf,
    pg_port: u16,
    http_port: u16,
    bin_dir: Option<PathBuf>,
    ttl: u64,
}

impl Settings {
    fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut map = BTreeMap::new();
        let mut it = args.iter();
        while let Some(key) = it.next() {
            let key = key
                .strip_prefix("--")
                .with_context(|| format!("{key:?}: expected --name value pairs"))?;
            let value = it
                .next()
                .with_context(|| format!("--{key} needs a value"))?;
            map.insert(key.to_string(), value.clone());
        }
        let mut take = |key: &str| map.remove(key);
        let required =
            |v: Option<String>, key: &str| v.with_context(|| format!("--{key} is required"));
        let settings = Settings {
            name: required(take("name"), "name")?,
            scope: required(take("scope"), "scope")?,
            etcd: required(take("etcd"), "etcd")?,
            data_dir: required(take("data-dir"), "data-dir")?.into(),
            pg_port: required(take("pg-port"), "pg-port")?
                .parse()
                .context("--pg-port")?,
            http_port: required(take("http-port"), "http-port")?
                .parse()
                .context("--http-port")?,
            bin_dir: take("bin-dir").map(PathBuf::from),
            ttl: take("ttl").map_or(Ok(10), |t| t.parse()).context("--ttl")?,
        };
        if let Some(unknown) = map.keys().next() {
            bail!("unknown argument --{unknown}");
        }
        Ok(settings)
    }

    /// The node's configuration, in pgha's types.
    fn node_config(&self) -> anyhow::Result<NodeConfig> {
        let address = HostPort {
            host: "127.0.0.1".into(),
            port: self.pg_port,
        };
        let mut pg = PgSettings::new(&self.name, &self.scope, self.data_dir.clone(), address);
        pg.bin_dir.clone_from(&self.bin_dir);
        // The socket beside the data directory: any user can run this.
        let socket_dir = self.data_dir.parent().unwrap_or(&self.data_dir);
        pg.parameters.insert(
            "unix_socket_directories".into(),
            socket_dir.display().to_string().into(),
        );
        // Loopback only, so trust: a real service sets passwords and md5/scram.
        pg.pg_hba = Some(vec![
            "local all all trust".into(),
            "host all all 127.0.0.1/32 trust".into(),
            "host replication all 127.0.0.1/32 trust".into(),
        ]);
        let bootstrap = DynamicConfig::parse(&format!(
            r#"{{"ttl": {ttl}, "loop_wait": 1, "retry_timeout": 2,
                 "postgresql": {{"use_pg_rewind": true, "use_slots": true,
                   "parameters": {{"max_connections": 20, "shared_buffers": "16MB"}}}}}}"#,
            ttl = self.ttl
        ))?;
        let api_url = format!("http://127.0.0.1:{}/patroni", self.http_port);
        let mut config = NodeConfig::new(&self.name, &self.scope, pg, &api_url, bootstrap);
        // An unprivileged service has no /dev/watchdog; the fence guard
        // still covers this process dying or freezing.
        config.watchdog.mode = WatchdogMode::Off;
        config.check()?;
        Ok(config)
    }

    /// A DCS connection of this process's own.
    fn dcs(&self, timing: Timing) -> anyhow::Result<Arc<dyn Dcs>> {
        let layout = KeyLayout::new("/service/", &self.scope);
        let etcd = EtcdConfig::new([self.etcd.as_str()])?;
        Ok(Arc::new(EtcdDcs::new(etcd, layout, &self.name, timing)?))
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let level = std::env::var("PGHA_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(tracing_subscriber::filter::LevelFilter::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    match args.split_first() {
        // The guard on one thread (see `daemon::run`).
        Some((first, rest)) if first == "--guard" => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(guard(rest)),
        _ => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
            .block_on(service(&args)),
    }
}

/// This program as the node's fence guard.
async fn guard(args: &[String]) -> anyhow::Result<()> {
    let settings = Settings::parse(args)?;
    let config = settings.node_config()?;
    let target = GuardTarget {
        member: config.name.clone(),
        data_dir: config.postgresql.data_dir.clone(),
    };
    // Its own DCS connection hands a dead service's lock over at once.
    let handover = Handover::Dcs(settings.dcs(config.initial_timing())?);
    daemon::run(target, handover).await?;
    Ok(())
}

/// The service: the node, and an HTTP endpoint of its own.
async fn service(args: &[String]) -> anyhow::Result<()> {
    let settings = Settings::parse(args)?;
    let config = settings.node_config()?;
    let dcs = settings.dcs(config.initial_timing())?;
    let mut guard_args = vec!["--guard".into()];
    guard_args.extend(args.iter().map(Into::into));
    let (node, handle) = Node::new(config, dcs, GuardMode::CurrentExe { args: guard_args });

    let listener = TcpListener::bind(("127.0.0.1", settings.http_port)).await?;
    tokio::spawn(serve_role(listener, handle));

    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop.send(true);
    });
    // The node's future is Send: it can run on any worker of the runtime.
    tokio::spawn(node.run(stopped)).await??;
    Ok(())
}

/// `GET /role`: what this node's PostgreSQL is, as the node saw it last.
/// Anything else is 404 (the node's peers then read each other's member
/// keys instead of a Patroni REST API).
async fn serve_role(listener: TcpListener, node: NodeHandle) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n = match tokio::time::timeout(Duration::from_secs(2), conn.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let request = String::from_utf8_lossy(&buf[..n]);
            let (code, body) = if request.starts_with("GET /role ") {
                let status = node.status();
                let role = if status.is_primary() && status.holds_lock {
                    "primary"
                } else if status.is_replica() {
                    "replica"
                } else {
                    "unknown"
                };
                ("200 OK", role)
            } else {
                ("404 Not Found", "not found")
            };
            let response = format!(
                "HTTP/1.1 {code}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(response.as_bytes()).await;
        });
    }
}
