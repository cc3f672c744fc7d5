//! Writers: clients that insert numbered rows every few milliseconds and
//! record every insert a server acknowledged, with who acknowledged it and
//! when.
//!
//! Two kinds, as an application sees a failover:
//! - the **main** writer connects like libpq with several hosts and
//!   `target_session_attrs=read-write`, so after an error it reconnects to
//!   whichever node accepts writes;
//! - a **pinned** writer keeps retrying the one server it started on, as a
//!   client with a stale address does: it shows whether an old primary
//!   still accepts writes.
//!
//! Each acknowledged row carries the server's `clock_timestamp()` (all
//! servers share the host's clock here), the server's address and the
//! start time of its postmaster, so the checker can tell when each server
//! accepted writes.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::anyhow;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_postgres::config::TargetSessionAttrs;
use tokio_postgres::{Client, NoTls, Statement};

use crate::cluster::SUPERUSER_PASSWORD;

/// The table the writers insert into (created by [`create_table`]).
pub const TABLE: &str = "pgha_fault_rows";

const INSERT: &str = "INSERT INTO pgha_fault_rows (writer, id) VALUES ($1, $2)
RETURNING (extract(epoch FROM clock_timestamp()) * 1000000)::bigint,
          coalesce(host(inet_server_addr()), 'local') || ':' || coalesce(inet_server_port(), 0)::text,
          (extract(epoch FROM pg_postmaster_start_time()) * 1000000)::bigint";

/// The SQL creating the writers' table (run once on the primary).
pub fn create_table() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {TABLE} (writer text NOT NULL, id bigint NOT NULL, \
         at timestamptz NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (writer, id))"
    )
}

/// One insert a server acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub writer: String,
    pub id: i64,
    /// `address:port` of the server that acknowledged it.
    pub server: String,
    /// The server's postmaster start time (µs since the Unix epoch): one
    /// postmaster run is one tenure as primary at most.
    pub postmaster_start_us: i64,
    /// The server's `clock_timestamp()` when it wrote the row (µs since the
    /// Unix epoch).
    pub server_us: i64,
    /// When the client got the acknowledgement, since the harness epoch.
    pub at: Duration,
}

/// Where and how a writer connects.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// `main`, `pinned`, ...: stored with every row.
    pub name: String,
    /// The servers, tried in order.
    pub hosts: Vec<(IpAddr, u16)>,
    /// `target_session_attrs=read-write` (else any server answers).
    pub read_write: bool,
    /// Pause between inserts.
    pub interval: Duration,
    /// Client times are measured from here.
    pub epoch: Instant,
    /// Bounds: the writer stops by itself after this long or this many
    /// attempts (inserts and connection attempts together).
    pub max_runtime: Duration,
    pub max_attempts: u64,
}

impl WriterConfig {
    pub fn new(name: &str, hosts: Vec<(IpAddr, u16)>, read_write: bool, epoch: Instant) -> Self {
        WriterConfig {
            name: name.to_string(),
            hosts,
            read_write,
            interval: Duration::from_millis(10),
            epoch,
            max_runtime: Duration::from_secs(240),
            max_attempts: 100_000,
        }
    }
}

/// What a writer did.
#[derive(Debug, Clone, Default)]
pub struct WriterLog {
    pub name: String,
    pub acks: Vec<Ack>,
    /// Inserts sent.
    pub inserts: u64,
    /// Failed inserts and failed connection attempts.
    pub errors: u64,
    /// Successful connections.
    pub connections: u64,
    pub last_error: Option<String>,
    /// It stopped on its own bound rather than when asked.
    pub hit_bound: bool,
}

/// A running writer.
#[derive(Debug)]
pub struct Writer {
    name: String,
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    handle: JoinHandle<WriterLog>,
}

impl Writer {
    /// Starts writing at once (a task on the current runtime).
    pub fn start(config: WriterConfig) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let name = config.name.clone();
        let handle = tokio::spawn(run(config, stop.clone(), paused.clone(), acked.clone()));
        Writer {
            name,
            stop,
            paused,
            acked,
            handle,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many inserts were acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Stops sending inserts (the connection is kept) until [`Writer::resume`].
    pub fn pause(&self) {
        self.paused.store(true, Ordering::Relaxed);
    }

    pub fn resume(&self) {
        self.paused.store(false, Ordering::Relaxed);
    }

    /// Waits until `n` more inserts than now were acknowledged (bounded).
    pub async fn wait_for_acks(&self, n: u64, within: Duration) -> anyhow::Result<()> {
        let target = self.acked() + n;
        crate::wait::until(
            &format!("{} acknowledged writes by the {} writer", n, self.name),
            within,
            Duration::from_millis(20),
            || async { (self.acked() >= target).then_some(()) },
        )
        .await
    }

    /// Stops the writer and returns what it recorded.
    pub async fn stop(self) -> anyhow::Result<WriterLog> {
        self.stop.store(true, Ordering::Relaxed);
        // An insert in flight ends within its own timeout.
        tokio::time::timeout(Duration::from_secs(15), self.handle)
            .await
            .map_err(|_| anyhow!("the {} writer did not stop within 15 s", self.name))?
            .map_err(|e| anyhow!("the {} writer failed: {e}", self.name))
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const INSERT_TIMEOUT: Duration = Duration::from_secs(2);

async fn connect(config: &WriterConfig) -> anyhow::Result<(Client, Statement)> {
    let mut cfg = tokio_postgres::Config::new();
    for (host, port) in &config.hosts {
        cfg.host(host.to_string()).port(*port);
    }
    cfg.user("postgres")
        .password(SUPERUSER_PASSWORD)
        .dbname("postgres")
        .application_name(format!("pgha-fault-writer-{}", config.name))
        .connect_timeout(CONNECT_TIMEOUT)
        .target_session_attrs(if config.read_write {
            TargetSessionAttrs::ReadWrite
        } else {
            TargetSessionAttrs::Any
        });
    let overall = CONNECT_TIMEOUT * (config.hosts.len() as u32 + 1) + Duration::from_secs(1);
    let (client, conn) = tokio::time::timeout(overall, cfg.connect(NoTls))
        .await
        .map_err(|_| anyhow!("connecting timed out after {overall:?}"))??;
    tokio::spawn(conn);
    let stmt = tokio::time::timeout(INSERT_TIMEOUT, client.prepare(INSERT))
        .await
        .map_err(|_| anyhow!("preparing the insert timed out"))??;
    Ok((client, stmt))
}

async fn run(
    config: WriterConfig,
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> WriterLog {
    let mut log = WriterLog {
        name: config.name.clone(),
        ..Default::default()
    };
    let deadline = Instant::now() + config.max_runtime;
    let mut conn: Option<(Client, Statement)> = None;
    let mut next_id: i64 = 1;
    let mut attempts = 0u64;
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if attempts >= config.max_attempts || Instant::now() >= deadline {
            log.hit_bound = true;
            break;
        }
        if paused.load(Ordering::Relaxed) {
            tokio::time::sleep(config.interval).await;
            continue;
        }
        attempts += 1;
        if conn.as_ref().is_none_or(|(c, _)| c.is_closed()) {
            match connect(&config).await {
                Ok(c) => {
                    log.connections += 1;
                    conn = Some(c);
                }
                Err(e) => {
                    log.errors += 1;
                    log.last_error = Some(format!("connect: {e}"));
                    conn = None;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let Some((client, stmt)) = conn.as_ref() else {
            continue;
        };
        let id = next_id;
        next_id += 1;
        log.inserts += 1;
        let result =
            tokio::time::timeout(INSERT_TIMEOUT, client.query_one(stmt, &[&config.name, &id]))
                .await;
        match result {
            Ok(Ok(row)) => {
                let fields = (
                    row.try_get::<_, i64>(0),
                    row.try_get::<_, String>(1),
                    row.try_get::<_, i64>(2),
                );
                match fields {
                    (Ok(server_us), Ok(server), Ok(postmaster_start_us)) => {
                        log.acks.push(Ack {
                            writer: config.name.clone(),
                            id,
                            server,
                            postmaster_start_us,
                            server_us,
                            at: config.epoch.elapsed(),
                        });
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    (a, b, c) => {
                        log.errors += 1;
                        log.last_error = Some(format!("unexpected answer: {a:?} {b:?} {c:?}"));
                    }
                }
            }
            Ok(Err(e)) => {
                // Read-only (a demoted or not yet promoted server), shutting
                // down, connection lost: reconnect.
                log.errors += 1;
                log.last_error = Some(format!("insert: {e}"));
                conn = None;
            }
            Err(_) => {
                log.errors += 1;
                log.last_error = Some(format!("insert: no answer within {INSERT_TIMEOUT:?}"));
                conn = None;
            }
        }
        tokio::time::sleep(config.interval).await;
    }
    log
}
