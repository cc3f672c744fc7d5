//! The files in the data directory that pgha owns.
//!
//! pgha writes `postgresql.conf` itself, every time before PostgreSQL
//! starts or changes whom it follows, like Patroni does: the settings the
//! agent must control (listen address, port, whom to replicate from) can
//! then never be lost to a hand edit, and the file is whole again after
//! pg_basebackup or pg_rewind copied the source's. The configuration initdb
//! wrote is kept as `postgresql.base.conf` and included first; people set
//! parameters in the YAML file or the dynamic configuration.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::PgError;
use super::settings::{Credentials, PgSettings};

/// The file initdb's configuration is kept in.
pub const BASE_CONF: &str = "postgresql.base.conf";
const MARKER: &str = "# pgha: following ";

/// Parameters that must be equal on every member (a replica cannot run with
/// fewer than the primary): taken from the dynamic configuration, never
/// from one node's file. With Patroni's defaults.
const CLUSTER_WIDE: &[(&str, &str)] = &[
    ("max_connections", "100"),
    ("max_locks_per_transaction", "64"),
    ("max_worker_processes", "8"),
    ("max_prepared_transactions", "0"),
    ("wal_level", "replica"),
    ("wal_log_hints", "on"),
    ("track_commit_timestamp", "off"),
    ("max_wal_senders", "10"),
    ("max_replication_slots", "10"),
    ("wal_keep_size", "128MB"),
];

/// Parameters pgha sets from the rest of the configuration.
const MANAGED: &[&str] = &[
    "listen_addresses",
    "port",
    "cluster_name",
    "hot_standby",
    "primary_conninfo",
    "primary_slot_name",
    "recovery_target_timeline",
];

/// Whom a replica streams from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The member name.
    pub name: String,
    pub host: String,
    pub port: u16,
    /// The slot to use on it, when `use_slots`.
    pub slot: Option<String>,
    /// Recovery parameters it comes with (a standby cluster's
    /// `restore_command`, `archive_cleanup_command`,
    /// `recovery_min_apply_delay`), written after `primary_conninfo`.
    pub recovery: Vec<(String, String)>,
    /// The `nostream` tag: replay WAL from the archive only
    /// (`postgresql.recovery_conf`'s `restore_command`), with no
    /// `primary_conninfo` and no slot; the member is still followed (its
    /// name is written, so the agent sees the configuration is current).
    pub archive_only: bool,
}

/// The role PostgreSQL is configured for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfRole {
    Primary,
    /// A replica; `None` while there is no leader to follow.
    Replica(Option<Upstream>),
    /// Recovering to a target after a custom bootstrap (a restore):
    /// `recovery.signal` and these recovery settings. PostgreSQL ends the
    /// recovery by itself (`recovery_target_action`).
    Recovery(Vec<(String, String)>),
}

/// The parameters PostgreSQL runs with: pgha's defaults, then the dynamic
/// configuration, then the node's own file (which cannot change the
/// cluster-wide ones, nor the ones pgha manages).
pub fn effective_parameters(
    settings: &PgSettings,
    dynamic: &pgha_core::model::DynamicConfig,
) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = CLUSTER_WIDE
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let empty = Map::new();
    let dynamic_params = dynamic.parameters().unwrap_or(&empty);
    for (k, v) in dynamic_params {
        if let Some(v) = param_text(v) {
            out.insert(k.clone(), v);
        }
    }
    for (k, v) in &settings.parameters {
        if CLUSTER_WIDE.iter().any(|(c, _)| c == k) && dynamic_params.contains_key(k) {
            continue;
        }
        if let Some(v) = param_text(v) {
            out.insert(k.clone(), v);
        }
    }
    for m in MANAGED {
        out.remove(*m);
    }
    out
}

fn param_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Bool(true) => Some("on".into()),
        Value::Bool(false) => Some("off".into()),
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// A value quoted for postgresql.conf.
fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''"))
}

/// A value quoted for a libpq connection string.
fn conninfo_value(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A libpq connection string to `host:port` as `credentials`.
pub fn conninfo(
    host: &str,
    port: u16,
    credentials: &Credentials,
    extra: &[(&str, &str)],
) -> String {
    let mut parts = vec![
        format!("host={}", conninfo_value(host)),
        format!("port={port}"),
        format!("user={}", conninfo_value(&credentials.username)),
    ];
    if let Some(p) = &credentials.password {
        parts.push(format!("password={}", conninfo_value(p)));
    }
    for (k, v) in &credentials.ssl {
        parts.push(format!("{k}={}", conninfo_value(v)));
    }
    for (k, v) in extra {
        parts.push(format!("{k}={}", conninfo_value(v)));
    }
    parts.join(" ")
}

/// Writes `postgresql.conf` for `role`, and `standby.signal` for a replica
/// (removing it for a primary). Moves initdb's own `postgresql.conf` aside
/// to `postgresql.base.conf` the first time.
pub fn write_config(
    settings: &PgSettings,
    dynamic: &pgha_core::model::DynamicConfig,
    role: &ConfRole,
) -> Result<(), PgError> {
    let dir = &settings.data_dir;
    let conf = dir.join("postgresql.conf");
    let base = dir.join(BASE_CONF);
    if !base.exists() {
        let current = std::fs::read_to_string(&conf).unwrap_or_default();
        if current.starts_with("# Managed by pgha") {
            // Cloned from a member whose base file was lost: start empty.
            write_file(
                &base,
                "# PostgreSQL base configuration (recreated by pgha)\n",
            )?;
        } else {
            std::fs::rename(&conf, &base).or_else(|_| write_file(&base, &current))?;
        }
    }
    write_file(&conf, &render(settings, dynamic, role))?;
    let standby = dir.join("standby.signal");
    let recovery = dir.join("recovery.signal");
    let remove = |path: &Path| -> Result<(), PgError> {
        if path.exists() {
            std::fs::remove_file(path).map_err(|e| io(path, e))?;
        }
        Ok(())
    };
    match role {
        ConfRole::Primary => {
            remove(&standby)?;
            remove(&recovery)?;
        }
        ConfRole::Replica(_) => {
            remove(&recovery)?;
            write_file(&standby, "")?;
        }
        ConfRole::Recovery(_) => {
            remove(&standby)?;
            write_file(&recovery, "")?;
        }
    }
    write_hba(settings, dynamic)?;
    Ok(())
}

/// The text of pgha's `postgresql.conf`.
pub fn render(
    settings: &PgSettings,
    dynamic: &pgha_core::model::DynamicConfig,
    role: &ConfRole,
) -> String {
    let pg = settings;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Managed by pgha for member {:?} of cluster {:?}. Do not edit:",
        settings.member, settings.scope
    );
    let _ = writeln!(
        s,
        "# pgha rewrites this file. Set parameters in the YAML file"
    );
    let _ = writeln!(
        s,
        "# (postgresql.parameters) or with `pghactl edit-config`."
    );
    let _ = writeln!(s, "include_if_exists '{BASE_CONF}'");
    let _ = writeln!(s);
    let _ = writeln!(s, "listen_addresses = {}", quote(&pg.listen.addresses));
    let _ = writeln!(s, "port = {}", pg.listen.port);
    let _ = writeln!(s, "cluster_name = {}", quote(&settings.scope));
    let _ = writeln!(s, "hot_standby = 'on'");
    for (k, v) in effective_parameters(settings, dynamic) {
        let _ = writeln!(s, "{k} = {}", quote(&v));
    }
    // Last, so that it overrides the parameters above: the
    // synchronous_standby_names the leader manages in synchronous mode
    // (absent otherwise, and the configured value applies).
    let _ = writeln!(s, "include_if_exists '{SYNC_CONF}'");
    if let ConfRole::Recovery(settings) = role {
        let _ = writeln!(s);
        for (k, v) in settings {
            let _ = writeln!(s, "{k} = {}", quote(v));
        }
    }
    if let ConfRole::Replica(upstream) = role {
        let _ = writeln!(s);
        let _ = writeln!(s, "recovery_target_timeline = 'latest'");
        if keeps_logical_copies(dynamic) {
            // The leader must keep the catalog rows this replica's copies
            // of logical slots need to decode (as Patroni does).
            let _ = writeln!(s, "hot_standby_feedback = 'on'");
        }
        match upstream {
            Some(u) => {
                if u.archive_only {
                    // nostream: the archive only (Patroni writes no
                    // primary_conninfo either), no slot.
                    let _ = writeln!(s, "primary_conninfo = ''");
                } else {
                    let info = conninfo(
                        &u.host,
                        u.port,
                        &pg.replication,
                        &[("application_name", &settings.member)],
                    );
                    let _ = writeln!(s, "primary_conninfo = {}", quote(&info));
                    if let Some(slot) = &u.slot {
                        let _ = writeln!(s, "primary_slot_name = {}", quote(slot));
                    }
                }
                for (k, v) in &u.recovery {
                    let _ = writeln!(s, "{k} = {}", quote(v));
                }
                write_recovery_conf(&mut s, pg, &u.recovery);
                let _ = writeln!(s, "{MARKER}{}", u.name);
            }
            None => {
                let _ = writeln!(s, "primary_conninfo = ''");
                // Without a leader to stream from, the archive is all a
                // replica can replay.
                write_recovery_conf(&mut s, pg, &[]);
            }
        }
    }
    s
}

/// Whether replicas keep copies of logical slots: `slots` names one.
fn keeps_logical_copies(dynamic: &pgha_core::model::DynamicConfig) -> bool {
    pgha_core::model::slots::SlotsConfig::of(dynamic)
        .permanent
        .iter()
        .any(|s| matches!(s.kind, pgha_core::model::slots::SlotKind::Logical { .. }))
}

/// `postgresql.recovery_conf`, but for what `upstream` sets itself (a
/// standby cluster's `restore_command` wins).
fn write_recovery_conf(s: &mut String, pg: &PgSettings, upstream: &[(String, String)]) {
    for (k, v) in &pg.recovery_conf {
        if !upstream.iter().any(|(u, _)| u == k) {
            let _ = writeln!(s, "{k} = {}", quote(v));
        }
    }
}

/// The file in the data directory holding the `synchronous_standby_names`
/// pgha manages in synchronous mode, included last by `postgresql.conf`.
/// It is kept in the data directory so that a primary restarted in place
/// runs with it from its first commit (strict mode never goes
/// asynchronous, not even across a restart).
pub const SYNC_CONF: &str = "pgha.sync.conf";

/// Makes the next promotion of a standby on `current` take timeline
/// `at_least` or later: PostgreSQL picks one past the newest of the
/// consecutive timeline history files it finds after its own, so a
/// placeholder `pg_wal/<T>.history` is written for every `T` from
/// `current + 1` to `at_least - 1` that has none. PostgreSQL never reads a
/// placeholder: the new timeline's history file is built from the current
/// timeline's, and no other timeline descends from a placeholder.
pub fn reserve_timelines(data_dir: &Path, current: u64, at_least: u64) -> Result<(), PgError> {
    for t in current.saturating_add(1)..at_least {
        let path = data_dir.join("pg_wal").join(format!("{t:08X}.history"));
        if path.exists() {
            continue;
        }
        let text = format!(
            "# pgha: timeline {t} is used by another member of the cluster; this placeholder \
             makes a promotion here take a later one\n"
        );
        write_file(&path, &text)?;
    }
    Ok(())
}

/// Writes (`Some`) or removes (`None`) pgha's `synchronous_standby_names`.
pub fn write_sync_names(data_dir: &Path, names: Option<&str>) -> Result<(), PgError> {
    let path = data_dir.join(SYNC_CONF);
    match names {
        Some(v) => write_file(
            &path,
            &format!(
                "# Managed by pgha (synchronous_mode). Do not edit.\nsynchronous_standby_names = {}\n",
                quote(v)
            ),
        ),
        None => match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path, e)),
            _ => Ok(()),
        },
    }
}

/// The member the written `postgresql.conf` streams from, if any.
pub fn following(data_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(data_dir.join("postgresql.conf")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(MARKER))
        .map(|s| s.trim().to_string())
}

/// Writes `pg_hba.conf` (and `pg_ident.conf`) when the configuration gives
/// lines: the node's own, else the dynamic configuration's, else bootstrap's.
pub fn write_hba(
    settings: &PgSettings,
    dynamic: &pgha_core::model::DynamicConfig,
) -> Result<(), PgError> {
    let from_dynamic = |key: &str| -> Option<Vec<String>> {
        dynamic
            .postgresql()
            .and_then(|p| p.get(key))
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
    };
    let dir = &settings.data_dir;
    if let Some(text) = render_hba(settings, dynamic) {
        write_file(&dir.join("pg_hba.conf"), &text)?;
    }
    if let Some(lines) = settings
        .pg_ident
        .clone()
        .or_else(|| from_dynamic("pg_ident"))
    {
        write_file(
            &dir.join("pg_ident.conf"),
            &format!("# Managed by pgha.\n{}\n", lines.join("\n")),
        )?;
    }
    Ok(())
}

/// The text of `pg_hba.conf` when the configuration gives its lines: the
/// node's own, else the dynamic configuration's, else bootstrap's.
pub fn render_hba(
    settings: &PgSettings,
    dynamic: &pgha_core::model::DynamicConfig,
) -> Option<String> {
    let lines = settings.pg_hba.clone().or_else(|| {
        dynamic
            .postgresql()
            .and_then(|p| p.get("pg_hba"))
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
    });
    let lines = lines.or_else(|| settings.new_cluster.as_ref().and_then(|b| b.pg_hba.clone()))?;
    Some(format!("# Managed by pgha.\n{}\n", lines.join("\n")))
}

/// Writes a file whole (via a temporary file and a rename), mode 0600.
/// Where the last dynamic configuration read from the DCS is kept: the
/// file Patroni uses (`patroni.dynamic.json` in the data directory), so a
/// node moved from Patroni brings its cluster's configuration along.
pub const DYNAMIC_CACHE: &str = "patroni.dynamic.json";

/// The cached dynamic configuration, if the file is there and readable.
pub fn read_dynamic_cache(data_dir: &Path) -> Option<pgha_core::model::DynamicConfig> {
    let text = std::fs::read_to_string(data_dir.join(DYNAMIC_CACHE)).ok()?;
    pgha_core::model::DynamicConfig::parse(&text).ok()
}

/// Keeps `config` in the data directory, once it holds a cluster (initdb
/// and pg_basebackup need it empty before): `false` when it does not yet.
pub fn write_dynamic_cache(
    data_dir: &Path,
    config: &pgha_core::model::DynamicConfig,
) -> Result<bool, PgError> {
    if !data_dir.join("PG_VERSION").exists() {
        return Ok(false);
    }
    let text = serde_json::to_string(config)
        .map_err(|e| PgError::Unexpected(format!("dynamic configuration: {e}")))?;
    write_file(&data_dir.join(DYNAMIC_CACHE), &text).map(|()| true)
}

pub fn write_file(path: &Path, text: &str) -> Result<(), PgError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp: PathBuf = path.with_extension("pgha-tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io(&tmp, e))?;
    f.write_all(text.as_bytes()).map_err(|e| io(&tmp, e))?;
    f.sync_all().map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
}

pub(crate) fn io(path: &Path, e: std::io::Error) -> PgError {
    PgError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// The replication slot name for a member: PostgreSQL allows lower-case
/// letters, digits and `_`, as Patroni derives it.
pub fn slot_name(member: &str) -> String {
    member
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgha_core::model::DynamicConfig;

    fn settings() -> PgSettings {
        crate::settings::example()
    }

    #[test]
    fn parameters_merge_with_cluster_wide_ones_from_the_dcs() {
        let mut c = settings();
        c.parameters
            .insert("max_connections".into(), Value::from(500));
        c.parameters.insert("work_mem".into(), Value::from("8MB"));
        c.parameters.insert("port".into(), Value::from(1));
        let dynamic = DynamicConfig::parse(r#"{"postgresql":{"parameters":{"max_connections":200,"work_mem":"4MB","hot_standby":true}}}"#).unwrap();
        let p = effective_parameters(&c, &dynamic);
        assert_eq!(
            p["max_connections"], "200",
            "cluster-wide values come from the DCS"
        );
        assert_eq!(p["work_mem"], "8MB", "the node's own file wins otherwise");
        assert_eq!(p["wal_level"], "replica");
        assert!(!p.contains_key("port") && !p.contains_key("hot_standby"));
        // without a DCS value, the node's own cluster-wide value applies
        let p = effective_parameters(&c, &DynamicConfig::new());
        assert_eq!(p["max_connections"], "500");
    }

    #[test]
    fn replica_config_names_its_upstream() {
        let c = settings();
        let up = Upstream {
            name: "node2".into(),
            host: "127.0.0.1".into(),
            port: 5433,
            slot: Some("node1".into()),
            recovery: vec![("recovery_min_apply_delay".into(), "5min".into())],
            archive_only: false,
        };
        let text = render(&c, &DynamicConfig::new(), &ConfRole::Replica(Some(up)));
        assert!(text.contains("primary_conninfo = 'host=''127.0.0.1'' port=5433 user=''replicator'' password=''rep-pass'' application_name=''node1'''"), "{text}");
        assert!(text.contains("primary_slot_name = 'node1'"));
        assert!(text.contains("recovery_min_apply_delay = '5min'"), "{text}");
        assert!(text.contains("port = 5432"));
        assert!(text.contains("# pgha: following node2"));
        assert!(
            !render(&c, &DynamicConfig::new(), &ConfRole::Primary).contains("primary_conninfo")
        );
    }

    /// `postgresql.recovery_conf` is in every replica's configuration,
    /// with or without a leader to stream from, never in a primary's; a
    /// standby cluster's own `restore_command` wins.
    #[test]
    fn replicas_run_with_recovery_conf() {
        let mut c = settings();
        c.recovery_conf = vec![
            ("restore_command".into(), "cp /archive/%f %p".into()),
            ("recovery_min_apply_delay".into(), "1min".into()),
        ];
        let up = |recovery: Vec<(String, String)>| Upstream {
            name: "node2".into(),
            host: "h".into(),
            port: 1,
            slot: None,
            recovery,
            archive_only: false,
        };
        let d = DynamicConfig::new();
        let text = render(&c, &d, &ConfRole::Replica(Some(up(Vec::new()))));
        assert!(
            text.contains("restore_command = 'cp /archive/%f %p'"),
            "{text}"
        );
        assert!(text.contains("recovery_min_apply_delay = '1min'"), "{text}");
        let text = render(&c, &d, &ConfRole::Replica(None));
        assert!(
            text.contains("restore_command = 'cp /archive/%f %p'"),
            "{text}"
        );
        assert!(!render(&c, &d, &ConfRole::Primary).contains("restore_command"));
        let source = vec![("restore_command".into(), "cp /remote/%f %p".into())];
        let text = render(&c, &d, &ConfRole::Replica(Some(up(source))));
        assert_eq!(text.matches("restore_command").count(), 1, "{text}");
        assert!(
            text.contains("restore_command = 'cp /remote/%f %p'"),
            "{text}"
        );
        assert!(text.contains("recovery_min_apply_delay = '1min'"), "{text}");
    }

    /// `nostream`: no primary_conninfo, no slot; the archive's
    /// restore_command and the followed member's name are still written.
    #[test]
    fn an_archive_only_replica_streams_from_nowhere() {
        let mut c = settings();
        c.recovery_conf = vec![("restore_command".into(), "cp /archive/%f %p".into())];
        let up = Upstream {
            name: "node2".into(),
            host: "h".into(),
            port: 1,
            slot: Some("node1".into()),
            recovery: Vec::new(),
            archive_only: true,
        };
        let text = render(
            &c,
            &DynamicConfig::new(),
            &ConfRole::Replica(Some(up.clone())),
        );
        assert!(text.contains("primary_conninfo = ''"), "{text}");
        assert!(!text.contains("primary_slot_name"), "{text}");
        assert!(
            text.contains("restore_command = 'cp /archive/%f %p'"),
            "{text}"
        );
        assert!(text.contains(&format!("{MARKER}node2")), "{text}");
        // An archive-only standby cluster's own restore_command wins.
        let standby = Upstream {
            name: "archive".into(),
            recovery: vec![("restore_command".into(), "cp /remote/%f %p".into())],
            ..up
        };
        let text = render(&c, &DynamicConfig::new(), &ConfRole::Replica(Some(standby)));
        assert_eq!(text.matches("restore_command").count(), 1, "{text}");
        assert!(
            text.contains("restore_command = 'cp /remote/%f %p'"),
            "{text}"
        );
    }

    #[test]
    fn writes_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = settings();
        c.data_dir = dir.path().to_path_buf();
        std::fs::write(
            dir.path().join("postgresql.conf"),
            "shared_buffers = 128MB\n",
        )
        .unwrap();
        let up = Upstream {
            name: "node2".into(),
            host: "h".into(),
            port: 1,
            slot: None,
            recovery: Vec::new(),
            archive_only: false,
        };
        write_config(&c, &DynamicConfig::new(), &ConfRole::Replica(Some(up))).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(BASE_CONF)).unwrap(),
            "shared_buffers = 128MB\n"
        );
        assert!(dir.path().join("standby.signal").exists());
        assert_eq!(following(dir.path()).as_deref(), Some("node2"));
        assert!(
            std::fs::read_to_string(dir.path().join("pg_hba.conf"))
                .unwrap()
                .contains("host replication replicator 127.0.0.1/32 md5")
        );
        write_config(&c, &DynamicConfig::new(), &ConfRole::Primary).unwrap();
        assert!(!dir.path().join("standby.signal").exists());
        assert_eq!(following(dir.path()), None);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(BASE_CONF)).unwrap(),
            "shared_buffers = 128MB\n"
        );
    }

    #[test]
    fn slot_names_are_sanitised() {
        assert_eq!(slot_name("Node-1.eu"), "node_1_eu");
    }
}
