//! What the running PostgreSQL says about itself, over one kept connection.

use std::time::Duration;

use pgha_core::ha::{ConfiguredUpstream, Endpoint};
use tokio_postgres::{Client, NoTls};

use super::PgError;

/// A query error with PostgreSQL's own words: tokio-postgres displays a
/// server error as just "db error".
fn query_error(e: tokio_postgres::Error) -> PgError {
    PgError::Query(match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    })
}

/// One row of `pg_stat_replication`, as `GET /patroni` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ReplicationConnection {
    pub usename: Option<String>,
    pub application_name: Option<String>,
    pub client_addr: Option<String>,
    pub state: Option<String>,
    pub sync_state: Option<String>,
    pub sync_priority: Option<i32>,
    /// `flush_lsn`: how far the standby has flushed WAL (not shown in
    /// `GET /patroni`, as in Patroni).
    #[serde(skip)]
    pub flush_lsn: Option<u64>,
}

/// The live state of the local PostgreSQL.
#[derive(Debug, Clone, PartialEq)]
pub struct DbState {
    pub in_recovery: bool,
    /// Primary: the current write position (bytes).
    pub write_lsn: Option<u64>,
    pub receive_lsn: Option<u64>,
    pub replay_lsn: Option<u64>,
    pub replay_paused: bool,
    /// ISO time of the last replayed transaction.
    pub replayed_timestamp: Option<String>,
    pub timeline: Option<u64>,
    /// `pg_stat_wal_receiver.status` (`streaming`, ...), when a receiver runs.
    pub receiver_status: Option<String>,
    /// Where the WAL receiver is connected, `host:port`.
    pub receiver_upstream: Option<String>,
    /// Where the `primary_conninfo` PostgreSQL runs with points (read from
    /// the setting, whichever file set it; the password in it is not kept).
    /// `None` when it could not be read.
    pub configured_upstream: Option<ConfiguredUpstream>,
    pub postmaster_start_time: Option<String>,
    pub server_version: i32,
    pub replication: Vec<ReplicationConnection>,
    pub system_id: Option<String>,
    /// The `synchronous_standby_names` PostgreSQL runs with.
    pub synchronous_standby_names: Option<String>,
    /// Parameters changed in the configuration that only a restart applies
    /// (`pg_settings.pending_restart`), with their running values.
    pub pending_restart: Vec<(String, String)>,
}

impl DbState {
    /// Primary: write position; replica: the furthest of received and replayed.
    pub fn wal_position(&self) -> Option<u64> {
        if self.in_recovery {
            match (self.receive_lsn, self.replay_lsn) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            }
        } else {
            self.write_lsn
        }
    }
}

/// How to reach the local PostgreSQL as the superuser.
#[derive(Debug, Clone)]
pub struct LocalTarget {
    pub config: tokio_postgres::Config,
}

/// A connection to the local PostgreSQL, reopened when it breaks.
#[derive(Debug)]
pub struct LocalDb {
    target: LocalTarget,
    client: Option<Client>,
}

const STATE_SQL: &str = "
SELECT pg_is_in_recovery(),
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE (pg_current_wal_lsn() - '0/0')::bigint END,
       (pg_last_wal_receive_lsn() - '0/0')::bigint,
       (pg_last_wal_replay_lsn() - '0/0')::bigint,
       CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END,
       to_char(pg_last_xact_replay_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US\"+00:00\"'),
       CASE WHEN pg_is_in_recovery()
            THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver),
                          (SELECT timeline_id FROM pg_control_checkpoint()))
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END::bigint,
       (SELECT status FROM pg_stat_wal_receiver),
       (SELECT sender_host || ':' || sender_port FROM pg_stat_wal_receiver),
       to_char(pg_postmaster_start_time() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US\"+00:00\"'),
       current_setting('server_version_num')::int,
       (SELECT system_identifier::text FROM pg_control_system()),
       (SELECT string_agg(name || '=' || setting, E'\\n') FROM pg_settings WHERE pending_restart),
       current_setting('primary_conninfo', true),
       current_setting('synchronous_standby_names')";

const REPLICATION_SQL: &str = "
SELECT usename::text, application_name, host(client_addr), state, sync_state, sync_priority,
       (flush_lsn - '0/0')::bigint
  FROM pg_stat_replication ORDER BY application_name";

impl LocalDb {
    pub fn new(target: LocalTarget) -> Self {
        LocalDb {
            target,
            client: None,
        }
    }

    /// The open connection, opening one if needed (bounded by `timeout`).
    pub async fn client(&mut self, timeout: Duration) -> Result<&Client, PgError> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
        }
        if self.client.is_none() {
            let mut cfg = self.target.config.clone();
            cfg.connect_timeout(timeout);
            let (client, connection) = tokio::time::timeout(timeout, cfg.connect(NoTls))
                .await
                .map_err(|_| PgError::Timeout {
                    what: "connecting to PostgreSQL".into(),
                    after: timeout,
                })?
                .map_err(query_error)?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!("local PostgreSQL connection ended: {e}");
                }
            });
            self.client = Some(client);
        }
        self.client
            .as_ref()
            .ok_or_else(|| PgError::Query("no connection".into()))
    }

    /// Runs one statement in `database` over a connection of its own
    /// (creating a logical slot must happen in its database), closed after.
    pub async fn execute_in(
        &self,
        database: &str,
        sql: &str,
        timeout: Duration,
    ) -> Result<(), PgError> {
        let mut cfg = self.target.config.clone();
        cfg.dbname(database).connect_timeout(timeout);
        tokio::time::timeout(timeout, async {
            let (client, connection) = cfg.connect(NoTls).await.map_err(query_error)?;
            let connection = tokio::spawn(connection);
            let r = client.batch_execute(sql).await.map_err(query_error);
            drop(client);
            let _ = connection.await;
            r
        })
        .await
        .map_err(|_| PgError::Timeout {
            what: format!("running {sql:?} in database {database}"),
            after: timeout,
        })?
    }

    /// Drops the connection (PostgreSQL is being stopped or restarted).
    pub fn reset(&mut self) {
        self.client = None;
    }

    /// Reads the live state; `Err` when PostgreSQL does not answer in time.
    pub async fn state(&mut self, timeout: Duration) -> Result<DbState, PgError> {
        let result = tokio::time::timeout(timeout, async {
            let client = self.client(timeout).await?;
            let row = client
                .query_one(STATE_SQL, &[])
                .await
                .map_err(query_error)?;
            let rows = client
                .query(REPLICATION_SQL, &[])
                .await
                .map_err(query_error)?;
            let lsn = |i: usize| {
                row.get::<_, Option<i64>>(i)
                    .and_then(|v| u64::try_from(v).ok())
            };
            Ok(DbState {
                in_recovery: row.get(0),
                write_lsn: lsn(1),
                receive_lsn: lsn(2),
                replay_lsn: lsn(3),
                replay_paused: row.get::<_, Option<bool>>(4).unwrap_or(false),
                replayed_timestamp: row.get(5),
                timeline: lsn(6),
                receiver_status: row.get(7),
                receiver_upstream: row.get(8),
                postmaster_start_time: row.get(9),
                server_version: row.get(10),
                system_id: row.get(11),
                pending_restart: row
                    .get::<_, Option<String>>(12)
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| {
                        l.split_once('=')
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                    })
                    .collect(),
                configured_upstream: row.get::<_, Option<String>>(13).map(|c| {
                    Endpoint::from_conninfo(&c)
                        .map_or(ConfiguredUpstream::Nowhere, ConfiguredUpstream::At)
                }),
                synchronous_standby_names: row.get(14),
                replication: rows
                    .iter()
                    .map(|r| ReplicationConnection {
                        usename: r.get(0),
                        application_name: r.get(1),
                        client_addr: r.get(2),
                        state: r.get(3),
                        sync_state: r.get(4),
                        sync_priority: r.get(5),
                        flush_lsn: r
                            .get::<_, Option<i64>>(6)
                            .and_then(|v| u64::try_from(v).ok()),
                    })
                    .collect(),
            })
        })
        .await;
        match result {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => {
                self.reset();
                Err(e)
            }
            Err(_) => {
                self.reset();
                Err(PgError::Timeout {
                    what: "querying PostgreSQL".into(),
                    after: timeout,
                })
            }
        }
    }

    /// Runs one statement (bounded by `timeout`).
    pub async fn execute(&mut self, sql: &str, timeout: Duration) -> Result<(), PgError> {
        let r = tokio::time::timeout(timeout, async {
            let client = self.client(timeout).await?;
            client.batch_execute(sql).await.map_err(query_error)
        })
        .await
        .map_err(|_| PgError::Timeout {
            what: format!("running {sql:?}"),
            after: timeout,
        })?;
        if r.is_err() {
            self.reset();
        }
        r
    }

    /// Runs a query returning text rows (first column).
    pub async fn query_texts(
        &mut self,
        sql: &str,
        timeout: Duration,
    ) -> Result<Vec<String>, PgError> {
        let r = tokio::time::timeout(timeout, async {
            let client = self.client(timeout).await?;
            let rows = client.query(sql, &[]).await.map_err(query_error)?;
            Ok(rows
                .iter()
                .filter_map(|r| r.get::<_, Option<String>>(0))
                .collect())
        })
        .await
        .map_err(|_| PgError::Timeout {
            what: format!("running {sql:?}"),
            after: timeout,
        })?;
        if r.is_err() {
            self.reset();
        }
        r
    }
}
