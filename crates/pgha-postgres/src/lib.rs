//! The local PostgreSQL of one node: observing it and acting on it,
//! configured by [`PgSettings`] (nothing here knows Patroni's YAML).
//!
//! Everything here runs as the agent's OS user (never root: PostgreSQL
//! refuses to run as root) and calls PostgreSQL's own programs (initdb,
//! pg_ctl, pg_basebackup, pg_rewind, pg_controldata) with bounded time.

pub mod address;
mod command;
pub mod controldata;
pub mod ctl;
pub mod files;
pub mod launch;
pub mod query;
pub mod settings;
pub mod slot_copy;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pgha_core::ha::DataDir;
use pgha_core::ha::slots::{LocalSlot, SlotChange};
use pgha_core::model::DynamicConfig;
use pgha_core::model::slots::SlotKind;
use tokio::sync::Mutex;

pub use controldata::ControlData;
pub use ctl::{PgCtl, ShutdownMode};
pub use files::{ConfRole, Upstream};
pub use launch::{LaunchError, LaunchFuture, LaunchSpec, PostmasterLauncher};
pub use query::{DbState, LocalDb, LocalTarget};
pub use settings::{Credentials, CustomBootstrap, NewCluster, PgSettings, ReplicaMethod};

/// What went wrong with PostgreSQL or one of its programs.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PgError {
    #[error("cannot run {program}: {reason}")]
    Spawn { program: String, reason: String },
    #[error("{program} failed ({status}): {output}")]
    Failed {
        program: String,
        status: String,
        output: String,
    },
    #[error("{what} did not finish within {after:?}")]
    Timeout { what: String, after: Duration },
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
    #[error("PostgreSQL: {0}")]
    Query(String),
    #[error("{0}")]
    Unexpected(String),
}

/// What was found this cycle.
#[derive(Debug, Clone)]
pub struct Observed {
    pub data_dir: DataDir,
    /// The postmaster's pid, when one is alive.
    pub postmaster: Option<i32>,
    /// The live state, when PostgreSQL answered.
    pub db: Option<DbState>,
    pub controldata: Option<ControlData>,
    /// The member the written configuration streams from.
    pub following: Option<String>,
}

/// The local PostgreSQL of this node.
#[derive(Debug)]
pub struct Postgres {
    pub settings: Arc<PgSettings>,
    pub ctl: PgCtl,
    db: Mutex<LocalDb>,
    /// Who starts the postmaster ([`launch`]); `pg_ctl` until set.
    launcher: std::sync::OnceLock<Arc<dyn PostmasterLauncher>>,
}

/// How long a rewind waits for a killed postmaster to be gone for good.
const POSTMASTER_EXIT_WAIT: Duration = Duration::from_secs(10);

/// How long a reload may take to put a new `synchronous_standby_names` in
/// force (it usually takes a millisecond).
const SYNC_NAMES_APPLY: Duration = Duration::from_secs(3);

/// A bound for quick queries against the local PostgreSQL.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

impl Postgres {
    pub fn new(settings: Arc<PgSettings>) -> Self {
        let pg = &*settings;
        let ctl = PgCtl {
            pg_ctl: settings.binary("pg_ctl"),
            data_dir: pg.data_dir.clone(),
            log_file: pg.data_dir.join("log").join("pgha-postmaster.log"),
        };
        let db = Mutex::new(LocalDb::new(local_target(&settings)));
        Postgres {
            settings,
            ctl,
            db,
            launcher: std::sync::OnceLock::new(),
        }
    }

    /// From now on the postmaster is started by `launcher` (the fence
    /// guard), as its child, so that it dies with it ([`launch`]). Set
    /// once; a second call changes nothing.
    pub fn set_launcher(&self, launcher: Arc<dyn PostmasterLauncher>) {
        let _ = self.launcher.set(launcher);
    }

    pub fn data_dir(&self) -> &Path {
        &self.settings.data_dir
    }

    /// Looks at the data directory and, if it runs, asks PostgreSQL.
    pub async fn observe(&self) -> Observed {
        let data_dir = self.data_dir().to_path_buf();
        let postmaster = self.ctl.postmaster_pid();
        let db = if postmaster.is_some() {
            self.db.lock().await.state(QUERY_TIMEOUT).await.ok()
        } else {
            None
        };
        if postmaster.is_none() {
            self.db.lock().await.reset();
        }
        let (data, controldata) = match classify(&data_dir) {
            Classified::Empty => (DataDir::Empty, None),
            Classified::Unusable(why) => (DataDir::Unusable(why), None),
            Classified::Initialized => {
                match ControlData::read(&self.settings.binary("pg_controldata"), &data_dir).await {
                    Ok(cd) => {
                        let restored = data_dir.join("backup_label").exists();
                        (
                            DataDir::Initialized {
                                system_id: cd.system_id.clone(),
                                was_primary: cd.ran_as_primary() && !restored,
                                timeline: cd.timeline,
                            },
                            Some(cd),
                        )
                    }
                    Err(e) => (DataDir::Unusable(format!("pg_controldata: {e}")), None),
                }
            }
        };
        Observed {
            data_dir: data,
            postmaster,
            db,
            controldata,
            following: files::following(&data_dir),
        }
    }

    /// Writes the configuration for `role` and starts PostgreSQL. Returns
    /// once it accepts connections, or once `pg_ctl_timeout` passed with
    /// the postmaster still coming up (the loop keeps watching it).
    pub async fn start(&self, role: &ConfRole, dynamic: &DynamicConfig) -> Result<(), PgError> {
        files::write_config(&self.settings, dynamic, role)?;
        self.db.lock().await.reset();
        let launcher = self.launcher.get().map(|l| &**l);
        match self.ctl.start(self.settings.pg_ctl_timeout, launcher).await {
            Ok(()) => Ok(()),
            Err(e) if self.ctl.postmaster_pid().is_some() => {
                tracing::warn!("PostgreSQL is still starting: {e}");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Stops PostgreSQL (`mode`, falling back to immediate after `timeout`).
    pub async fn stop(&self, mode: ShutdownMode, timeout: Duration) -> Result<(), PgError> {
        self.db.lock().await.reset();
        self.ctl.stop(mode, timeout).await
    }

    /// Points a running replica at `upstream` (PostgreSQL 13+ reloads
    /// `primary_conninfo` without a restart). A `primary_conninfo` or
    /// `primary_slot_name` set with `ALTER SYSTEM` would win over pgha's
    /// file (`postgresql.auto.conf` is read last), so it is reset first.
    pub async fn follow(
        &self,
        upstream: Option<&Upstream>,
        dynamic: &DynamicConfig,
    ) -> Result<(), PgError> {
        files::write_config(
            &self.settings,
            dynamic,
            &ConfRole::Replica(upstream.cloned()),
        )?;
        let mut db = self.db.lock().await;
        let overrides = db
            .query_texts(
                "SELECT DISTINCT name FROM pg_file_settings \
                  WHERE name IN ('primary_conninfo', 'primary_slot_name') \
                    AND sourcefile LIKE '%postgresql.auto.conf'",
                QUERY_TIMEOUT,
            )
            .await?;
        for name in overrides {
            tracing::warn!(
                "{name} was set with ALTER SYSTEM (postgresql.auto.conf), overriding whom pgha \
                 replicates from: resetting it"
            );
            db.execute(&format!("ALTER SYSTEM RESET {name}"), QUERY_TIMEOUT)
                .await?;
        }
        db.execute("SELECT pg_reload_conf()", QUERY_TIMEOUT).await
    }

    /// Promotes the running replica, then checkpoints so a former primary
    /// can rewind from us (pg_rewind reads the new timeline from the control
    /// file, which only a checkpoint updates).
    /// Promotes the running standby to a timeline of at least
    /// `at_least` (0: PostgreSQL's choice, one past the newest it sees).
    /// PostgreSQL takes one past the newest timeline history file in
    /// `pg_wal`, so placeholders for the timelines in between make it skip
    /// the numbers other members used ([`files::reserve_timelines`]).
    pub async fn promote(&self, dynamic: &DynamicConfig, at_least: u64) -> Result<(), PgError> {
        if at_least > 0
            && let Some(current) = self.state().await?.timeline
        {
            files::reserve_timelines(self.data_dir(), current, at_least)?;
        }
        // PostgreSQL removes standby.signal itself while promoting (and
        // fails the promotion if it is already gone), so the configuration
        // is rewritten for the primary role only afterwards.
        self.ctl.promote(self.settings.pg_ctl_timeout).await?;
        files::write_config(&self.settings, dynamic, &ConfRole::Primary)?;
        self.db.lock().await.reset();
        Ok(())
    }

    /// `CHECKPOINT` (after a promotion).
    pub async fn checkpoint(&self) -> Result<(), PgError> {
        self.db
            .lock()
            .await
            .execute("CHECKPOINT", Duration::from_secs(600))
            .await
    }

    /// Runs SQL on the local PostgreSQL.
    /// The live state only (no pg_controldata, no files): for steps that
    /// must see what a change just did.
    pub async fn state(&self) -> Result<DbState, PgError> {
        self.db.lock().await.state(QUERY_TIMEOUT).await
    }

    /// Whether pgha's `synchronous_standby_names` is in force
    /// ([`files::SYNC_CONF`] exists).
    pub fn manages_sync_names(&self) -> bool {
        self.data_dir().join(files::SYNC_CONF).exists()
    }

    /// Makes PostgreSQL run with `names` as `synchronous_standby_names`
    /// (`None`: the configured value again): writes pgha's file, reloads,
    /// and waits (bounded) until the running value is the new one, so the
    /// caller's next observation sees it in force.
    pub async fn set_sync_names(&self, names: Option<&str>) -> Result<(), PgError> {
        files::write_sync_names(self.data_dir(), names)?;
        self.execute("SELECT pg_catalog.pg_reload_conf()").await?;
        let started = std::time::Instant::now();
        loop {
            let running = self
                .query_texts("SELECT pg_catalog.current_setting('synchronous_standby_names')")
                .await?;
            let applied = match names {
                Some(v) => running.first().map(String::as_str) == Some(v),
                None => true,
            };
            if applied {
                return Ok(());
            }
            if started.elapsed() > SYNC_NAMES_APPLY {
                return Err(PgError::Timeout {
                    what: format!("PostgreSQL to apply synchronous_standby_names = {names:?}"),
                    after: SYNC_NAMES_APPLY,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn execute(&self, sql: &str) -> Result<(), PgError> {
        self.db.lock().await.execute(sql, QUERY_TIMEOUT).await
    }

    pub async fn query_texts(&self, sql: &str) -> Result<Vec<String>, PgError> {
        self.db.lock().await.query_texts(sql, QUERY_TIMEOUT).await
    }

    /// Every replication slot, physical and logical, with its positions.
    pub async fn slots(&self) -> Result<Vec<LocalSlot>, PgError> {
        let rows = self
            .query_texts(
                "SELECT json_build_object('name', slot_name, 'type', slot_type, \
                 'database', database, 'plugin', plugin, 'active', active, \
                 'restart', (restart_lsn - '0/0')::bigint, \
                 'confirmed', (confirmed_flush_lsn - '0/0')::bigint)::text \
                 FROM pg_catalog.pg_replication_slots",
            )
            .await?;
        rows.iter().map(|r| slot_from_row(r)).collect()
    }

    /// Carries one change of a [`pgha_core::ha::slots::SlotPlan`] out.
    pub async fn change_slot(&self, change: &SlotChange) -> Result<(), PgError> {
        let quote = |s: &str| s.replace('\'', "''");
        match change {
            SlotChange::CreatePhysical { name } => {
                self.execute(&format!(
                    "SELECT pg_catalog.pg_create_physical_replication_slot('{}', true)",
                    quote(name)
                ))
                .await
            }
            SlotChange::CreateLogical {
                name,
                database,
                plugin,
            } => {
                let sql = format!(
                    "SELECT pg_catalog.pg_create_logical_replication_slot('{}', '{}')",
                    quote(name),
                    quote(plugin)
                );
                let db = self.db.lock().await;
                db.execute_in(database, &sql, QUERY_TIMEOUT).await
            }
            SlotChange::CopyLogical { name } => Err(PgError::Unexpected(format!(
                "slot {name}: a logical slot is copied from the leader with a restart, not changed in place"
            ))),
            SlotChange::Advance { name, to } => {
                self.execute(&format!(
                    "SELECT pg_catalog.pg_replication_slot_advance('{}', '{:X}/{:X}'::pg_lsn)",
                    quote(name),
                    to >> 32,
                    to & 0xffff_ffff
                ))
                .await
            }
        }
    }

    /// Creates each physical slot of `names` that is not in `existing` (as
    /// [`Postgres::slots`] listed them), reserving WAL from now.
    /// Works on a primary and on a standby (so a replica about to be
    /// promoted can have its replicas' slots ready before they connect).
    /// Returns the slots created, and the failures by slot.
    pub async fn create_missing_slots(
        &self,
        names: &[String],
        existing: &[LocalSlot],
    ) -> (Vec<String>, Vec<(String, PgError)>) {
        let mut created = Vec::new();
        let mut failed = Vec::new();
        for name in names {
            if existing
                .iter()
                .any(|s| s.kind == SlotKind::Physical && s.name == *name)
            {
                continue;
            }
            let create = SlotChange::CreatePhysical { name: name.clone() };
            match self.change_slot(&create).await {
                Ok(()) => created.push(name.clone()),
                Err(e) => failed.push((name.clone(), e)),
            }
        }
        (created, failed)
    }

    /// Creates a new cluster: initdb (or the custom bootstrap method), the
    /// agent's configuration, start as primary, the roles from the
    /// configuration, the post-bootstrap script.
    pub async fn bootstrap(&self, dynamic: &DynamicConfig) -> Result<(), PgError> {
        let cfg = &*self.settings;
        let pg = cfg;
        let bootstrap = cfg.new_cluster.as_ref();
        ensure_empty_dir(&pg.data_dir)?;
        self.write_pgpass()?;
        if let Some(custom) = bootstrap.and_then(|b| b.custom.as_ref()) {
            self.restore(custom, dynamic).await?;
            return self.after_bootstrap(bootstrap, true, dynamic).await;
        }
        let pwfile = pg.data_dir.with_extension("pgha-pwfile");
        let mut cmd = tokio::process::Command::new(cfg.binary("initdb"));
        cmd.arg("-D")
            .arg(&pg.data_dir)
            .arg(format!("--username={}", pg.superuser.username));
        if let Some(pw) = &pg.superuser.password {
            files::write_file(&pwfile, pw)?;
            cmd.arg(format!("--pwfile={}", pwfile.display()));
        }
        cmd.args(bootstrap.map(|b| b.initdb.clone()).unwrap_or_default());
        let result = command::run(&mut cmd, Duration::from_secs(600)).await;
        let _ = std::fs::remove_file(&pwfile);
        result?;

        self.start(&ConfRole::Primary, dynamic).await?;
        self.after_bootstrap(bootstrap, false, dynamic).await
    }

    /// A custom bootstrap up to a running primary: the method's command,
    /// then PostgreSQL recovering with its `recovery_conf` until it ends
    /// the recovery itself (`recovery_target_action: promote`).
    async fn restore(
        &self,
        custom: &CustomBootstrap,
        dynamic: &DynamicConfig,
    ) -> Result<(), PgError> {
        let cfg = &*self.settings;
        let mut parts = custom.command.split_whitespace();
        let program = parts.next().ok_or_else(|| {
            PgError::Unexpected(format!("bootstrap.{}.command is empty", custom.name))
        })?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(parts);
        if !custom.no_params {
            cmd.arg(format!("--scope={}", cfg.scope))
                .arg(format!("--datadir={}", cfg.data_dir.display()));
        }
        for (k, v) in &custom.params {
            cmd.arg(format!("--{k}={v}"));
        }
        cmd.env("PGPASSFILE", &cfg.pgpass);
        tracing::info!(
            "running custom bootstrap method {}: {}",
            custom.name,
            custom.command
        );
        command::run(&mut cmd, Duration::from_secs(24 * 3600))
            .await
            .map_err(|e| PgError::Unexpected(format!("custom bootstrap {}: {e}", custom.name)))?;
        if !cfg.data_dir.join("PG_VERSION").exists() {
            return Err(PgError::Unexpected(format!(
                "custom bootstrap {}: the command left no data directory in {}",
                custom.name,
                cfg.data_dir.display()
            )));
        }
        let dir = &cfg.data_dir;
        let signalled = dir.join("recovery.signal").exists() || dir.join("standby.signal").exists();
        let role = match &custom.recovery_conf {
            Some(settings) => ConfRole::Recovery(settings.clone()),
            None if custom.keep_existing_recovery_conf && signalled => {
                ConfRole::Recovery(Vec::new())
            }
            None => ConfRole::Primary,
        };
        self.start(&role, dynamic).await?;
        // Recovery to the target can take as long as the WAL to replay.
        let mut paused_said = false;
        loop {
            match self.db.lock().await.state(QUERY_TIMEOUT).await {
                Ok(s) if !s.in_recovery => return Ok(()),
                Ok(s) if s.replay_paused && !paused_said => {
                    tracing::warn!(
                        "custom bootstrap {}: recovery is paused (recovery_target_action pause?); \
                         the cluster is created when it ends: set recovery_target_action: promote, \
                         or run SELECT pg_wal_replay_resume()",
                        custom.name
                    );
                    paused_said = true;
                }
                Ok(_) => {}
                Err(_) if self.ctl.postmaster_pid().is_none() => {
                    return Err(PgError::Unexpected(format!(
                        "custom bootstrap {}: PostgreSQL stopped during the recovery (see its log)",
                        custom.name
                    )));
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// The rest of a bootstrap, on a running primary: roles, the
    /// post-bootstrap script; after a restore, the configuration written
    /// for a primary (no recovery settings) and a restart to drop them.
    async fn after_bootstrap(
        &self,
        bootstrap: Option<&NewCluster>,
        restored: bool,
        dynamic: &DynamicConfig,
    ) -> Result<(), PgError> {
        let cfg = &*self.settings;
        let pg = cfg;
        self.wait_ready(pg.pg_ctl_timeout).await?;
        for sql in role_statements(cfg) {
            self.execute(&sql)
                .await
                .map_err(|e| PgError::Unexpected(format!("creating roles: {e}")))?;
        }
        if let Some(script) = bootstrap.and_then(|b| b.post_bootstrap.as_ref()) {
            let url = format!(
                "postgres://{}@{}/postgres",
                pg.superuser.username,
                local_host_port(cfg)
            );
            let mut cmd = tokio::process::Command::new(script);
            cmd.arg(url).env("PGPASSFILE", &pg.pgpass);
            command::run(&mut cmd, Duration::from_secs(600))
                .await
                .map_err(|e| PgError::Unexpected(format!("post_bootstrap script: {e}")))?;
        }
        if restored {
            self.stop(ShutdownMode::Fast, pg.pg_ctl_timeout).await?;
            self.start(&ConfRole::Primary, dynamic).await?;
            self.wait_ready(pg.pg_ctl_timeout).await?;
        }
        Ok(())
    }

    /// Waits until PostgreSQL answers a query (bounded).
    pub async fn wait_ready(&self, within: Duration) -> Result<DbState, PgError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match self.db.lock().await.state(QUERY_TIMEOUT).await {
                Ok(s) => return Ok(s),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Creates this replica from `source` with the configured methods, in
    /// order; the first that succeeds wins. A failed attempt leaves an
    /// empty data directory behind for the next. Without a source (no
    /// leader runs), only the methods marked `no_leader` are tried, with an
    /// empty `--connstring` (as Patroni calls them).
    pub async fn create_replica(&self, source: Option<&Upstream>) -> Result<String, PgError> {
        let methods: Vec<ReplicaMethod> = self
            .settings
            .create_replica_methods
            .iter()
            .filter(|m| source.is_some() || m.works_without_leader())
            .cloned()
            .collect();
        self.run_replica_methods(source, &methods).await
    }

    /// Creates a standby cluster's standby leader from its source with the
    /// methods `standby_cluster.create_replica_methods` names (`None`: the
    /// node's own), each defined in the node's file (`postgresql.<name>`)
    /// or `basebackup`. A source without a host (archive only) cannot be
    /// reached by pg_basebackup: only the other methods run, with an empty
    /// `--connstring`.
    pub async fn create_standby_leader(
        &self,
        source: &Upstream,
        names: Option<&[String]>,
    ) -> Result<String, PgError> {
        let configured = &self.settings.create_replica_methods;
        let named = |name: &String| {
            configured
                .iter()
                .chain(&self.settings.other_replica_methods)
                .find(|m| match m {
                    ReplicaMethod::Basebackup { .. } => name == "basebackup",
                    ReplicaMethod::Custom { name: n, .. } => n == name,
                })
                .cloned()
                .or_else(|| {
                    (name == "basebackup").then(|| ReplicaMethod::Basebackup {
                        options: Vec::new(),
                    })
                })
                .ok_or_else(|| {
                    PgError::Unexpected(format!(
                        "standby_cluster.create_replica_methods names {name:?}, which this node's postgresql section does not define"
                    ))
                })
        };
        let mut methods = match names {
            Some(names) => names.iter().map(named).collect::<Result<Vec<_>, _>>()?,
            None => configured.clone(),
        };
        let source = (!source.archive_only).then_some(source);
        if source.is_none() {
            methods.retain(|m| !matches!(m, ReplicaMethod::Basebackup { .. }));
        }
        self.run_replica_methods(source, &methods).await
    }

    /// Tries `methods` in order until one leaves a data directory.
    async fn run_replica_methods(
        &self,
        source: Option<&Upstream>,
        methods: &[ReplicaMethod],
    ) -> Result<String, PgError> {
        let cfg = &*self.settings;
        let pg = cfg;
        self.write_pgpass()?;
        let mut failures = Vec::new();
        if methods.is_empty() {
            failures.push("no method to try".to_string());
        }
        for method in methods {
            let (name, keep_data) = match method {
                ReplicaMethod::Basebackup { .. } => ("basebackup".to_string(), false),
                ReplicaMethod::Custom {
                    name, keep_data, ..
                } => (name.clone(), *keep_data),
            };
            if !keep_data {
                ensure_empty_dir(&pg.data_dir)?;
            }
            let conninfo = source
                .map(|s| {
                    files::conninfo(&s.host, s.port, &pg.replication, &[("dbname", "postgres")])
                })
                .unwrap_or_default();
            let mut cmd = match method {
                ReplicaMethod::Basebackup { options } => {
                    let mut cmd = tokio::process::Command::new(cfg.binary("pg_basebackup"));
                    cmd.arg("-D")
                        .arg(&pg.data_dir)
                        .args(["-X", "stream", "-c", "fast", "--no-password"])
                        .arg(format!("--dbname={conninfo}"))
                        .args(options);
                    cmd
                }
                ReplicaMethod::Custom {
                    command,
                    no_params,
                    params,
                    ..
                } => {
                    let mut parts = command.split_whitespace();
                    let program = parts.next().unwrap_or_default();
                    let mut cmd = tokio::process::Command::new(program);
                    cmd.args(parts);
                    if !no_params {
                        cmd.arg(format!("--scope={}", cfg.scope))
                            .arg("--role=replica")
                            .arg(format!("--datadir={}", pg.data_dir.display()))
                            .arg(format!("--connstring={conninfo}"));
                        for (k, v) in params {
                            if let Some(v) = pgha_core::model::lenient::text(v) {
                                cmd.arg(format!("--{k}={v}"));
                            }
                        }
                    }
                    cmd
                }
            };
            cmd.env("PGPASSFILE", &pg.pgpass);
            match command::run(&mut cmd, Duration::from_secs(24 * 3600)).await {
                Ok(_) if pg.data_dir.join("PG_VERSION").exists() => return Ok(name),
                Ok(_) => failures.push(format!("{name}: finished but left no data directory")),
                Err(e) => failures.push(format!("{name}: {e}")),
            }
            wipe_dir(&pg.data_dir)?;
        }
        Err(PgError::Unexpected(format!(
            "every replica creation method failed: {}",
            failures.join("; ")
        )))
    }

    /// Rewinds this (stopped) former primary to `source`'s history. The
    /// node's own configuration files are put back afterwards, since
    /// pg_rewind copies the source's.
    pub async fn rewind(&self, source: &Upstream) -> Result<(), PgError> {
        let cfg = &*self.settings;
        let pg = cfg;
        // A postmaster killed a moment ago may not be reaped yet: pg_rewind's
        // crash recovery (single-user mode) would find its lock file still
        // held and fail, and a failed rewind is not retried.
        ctl::wait_postmaster_exit(&pg.data_dir, POSTMASTER_EXIT_WAIT).await;
        ctl::wait_shared_memory_released(&pg.data_dir, POSTMASTER_EXIT_WAIT).await;
        self.write_pgpass()?;
        let keep = [
            "postgresql.conf",
            files::BASE_CONF,
            "pg_hba.conf",
            "pg_ident.conf",
        ];
        let saved: Vec<(PathBuf, Vec<u8>)> = keep
            .iter()
            .map(|f| pg.data_dir.join(f))
            .filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
            .collect();
        let conninfo = self.rewind_conninfo(source);
        let mut cmd = tokio::process::Command::new(cfg.binary("pg_rewind"));
        cmd.arg("-D")
            .arg(&pg.data_dir)
            .arg(format!("--source-server={conninfo}"))
            .env("PGPASSFILE", &pg.pgpass)
            .env("LC_ALL", "C");
        let result = command::run(&mut cmd, Duration::from_secs(24 * 3600)).await;
        for (path, bytes) in saved {
            if let Err(e) = std::fs::write(&path, bytes) {
                tracing::warn!("could not restore {} after pg_rewind: {e}", path.display());
            }
        }
        result.map(drop)
    }

    /// A connection string to `source` with the rewind credentials (granted
    /// what pg_rewind and a slot copy read), else the superuser's.
    fn rewind_conninfo(&self, source: &Upstream) -> String {
        let pg = &*self.settings;
        let user = pg.rewind.as_ref().unwrap_or(&pg.superuser);
        files::conninfo(&source.host, source.port, user, &[("dbname", "postgres")])
    }

    /// Empties the data directory (reinitialize).
    pub fn wipe(&self) -> Result<(), PgError> {
        wipe_dir(self.data_dir())
    }

    /// Writes the pgpass file pgha's child programs use: wildcard entries
    /// for the configured roles, mode 0600.
    pub fn write_pgpass(&self) -> Result<(), PgError> {
        let pg = &*self.settings;
        let esc = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
        let mut text = String::new();
        for c in [
            Some(&pg.replication),
            Some(&pg.superuser),
            pg.rewind.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            if let Some(pw) = &c.password {
                text.push_str(&format!("*:*:*:{}:{}\n", esc(&c.username), esc(pw)));
            }
        }
        files::write_file(&pg.pgpass, &text)
    }
}

enum Classified {
    Empty,
    Initialized,
    Unusable(String),
}

fn classify(dir: &Path) -> Classified {
    match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Classified::Empty,
        Err(e) => Classified::Unusable(format!("cannot read {}: {e}", dir.display())),
        Ok(mut entries) => {
            if entries.next().is_none() {
                Classified::Empty
            } else if dir.join("PG_VERSION").exists() && dir.join("global/pg_control").exists() {
                Classified::Initialized
            } else {
                Classified::Unusable(format!(
                    "{} is not empty but holds no PostgreSQL cluster (no PG_VERSION or global/pg_control)",
                    dir.display()
                ))
            }
        }
    }
}

/// Creates `dir` (mode 0700) if missing; fails if it holds anything.
fn ensure_empty_dir(dir: &Path) -> Result<(), PgError> {
    use std::os::unix::fs::DirBuilderExt;
    let io = |e: std::io::Error| PgError::Io {
        path: dir.display().to_string(),
        reason: e.to_string(),
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
    }
    if std::fs::read_dir(dir).map_err(io)?.next().is_some() {
        return Err(PgError::Io {
            path: dir.display().to_string(),
            reason: "not empty".into(),
        });
    }
    Ok(())
}

/// Removes everything inside `dir`, keeping `dir` itself.
fn wipe_dir(dir: &Path) -> Result<(), PgError> {
    let io = |p: &Path, e: std::io::Error| PgError::Io {
        path: p.display().to_string(),
        reason: e.to_string(),
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(dir, e)),
    };
    for entry in entries {
        let path = entry.map_err(|e| io(dir, e))?.path();
        let r = if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        r.map_err(|e| io(&path, e))?;
    }
    Ok(())
}

/// One row of [`Postgres::slots`].
fn slot_from_row(row: &str) -> Result<LocalSlot, PgError> {
    #[derive(serde::Deserialize)]
    struct Row {
        name: String,
        #[serde(rename = "type")]
        kind: String,
        database: Option<String>,
        plugin: Option<String>,
        active: bool,
        restart: Option<i64>,
        confirmed: Option<i64>,
    }
    let r: Row = serde_json::from_str(row)
        .map_err(|e| PgError::Unexpected(format!("pg_replication_slots row {row}: {e}")))?;
    let kind = match (r.kind.as_str(), r.database, r.plugin) {
        ("logical", Some(database), Some(plugin)) => SlotKind::Logical { database, plugin },
        _ => SlotKind::Physical,
    };
    Ok(LocalSlot {
        name: r.name,
        kind,
        active: r.active,
        restart_lsn: r.restart.and_then(|v| u64::try_from(v).ok()),
        confirmed_flush_lsn: r.confirmed.and_then(|v| u64::try_from(v).ok()),
    })
}

/// How the agent connects to its own PostgreSQL: the Unix socket when
/// `use_unix_socket` and `unix_socket_directories` say so, else TCP to the
/// listen address.
fn local_target(config: &PgSettings) -> LocalTarget {
    let pg = config;
    let mut c = tokio_postgres::Config::new();
    c.user(&pg.superuser.username)
        .dbname("postgres")
        .application_name("pgha")
        .port(pg.listen.port);
    if let Some(pw) = &pg.superuser.password {
        c.password(pw);
    }
    let socket_dir = pg
        .parameters
        .get("unix_socket_directories")
        .and_then(pgha_core::model::lenient::text)
        .and_then(|s| {
            s.split(',')
                .map(str::trim)
                .find(|d| !d.is_empty())
                .map(String::from)
        });
    match socket_dir {
        Some(dir) if pg.use_unix_socket => {
            c.host_path(dir);
        }
        _ => {
            c.host(local_host(config));
        }
    }
    LocalTarget { config: c }
}

/// A host to reach the local PostgreSQL by TCP: the first listen address
/// (loopback when it listens everywhere).
fn local_host(config: &PgSettings) -> String {
    let first = config
        .listen
        .addresses
        .split(',')
        .next()
        .unwrap_or("*")
        .trim()
        .to_string();
    match first.as_str() {
        "*" | "0.0.0.0" | "" => "127.0.0.1".into(),
        "::" => "::1".into(),
        _ => first,
    }
}

fn local_host_port(config: &PgSettings) -> String {
    format!("{}:{}", local_host(config), config.listen.port)
}

fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The SQL that creates the configured roles after initdb.
fn role_statements(config: &PgSettings) -> Vec<String> {
    let pg = config;
    let mut out = Vec::new();
    let create = |c: &Credentials, options: &str| {
        let password = c
            .password
            .as_deref()
            .map(|p| format!(" PASSWORD {}", literal(p)))
            .unwrap_or_default();
        format!(
            "DO $$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {name_lit}) THEN CREATE ROLE {name} WITH {options}{password}; ELSE ALTER ROLE {name} WITH {options}{password}; END IF; END$$",
            name_lit = literal(&c.username),
            name = ident(&c.username),
        )
    };
    if pg.replication.username != pg.superuser.username {
        out.push(create(&pg.replication, "LOGIN REPLICATION"));
    }
    if let Some(rewind) = pg
        .rewind
        .as_ref()
        .filter(|r| r.username != pg.superuser.username)
    {
        out.push(create(rewind, "LOGIN"));
        for f in [
            "pg_catalog.pg_ls_dir(text, boolean, boolean)",
            "pg_catalog.pg_stat_file(text, boolean)",
            "pg_catalog.pg_read_binary_file(text)",
            "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
        ] {
            out.push(format!(
                "GRANT EXECUTE ON FUNCTION {f} TO {}",
                ident(&rewind.username)
            ));
        }
    }
    for user in config.new_cluster.iter().flat_map(|b| &b.users) {
        let mut options = vec!["LOGIN".to_string()];
        options.extend(user.options.iter().map(|o| {
            o.to_ascii_uppercase()
                .replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', "")
        }));
        let c = Credentials {
            username: user.name.clone(),
            password: user.password.clone(),
            ssl: Default::default(),
        };
        out.push(create(&c, &options.join(" ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_sql_quotes_names_and_passwords() {
        let mut c = settings::example();
        c.replication.password = Some("it's".into());
        let sql = role_statements(&c);
        assert!(
            sql[0].contains("CREATE ROLE \"replicator\" WITH LOGIN REPLICATION PASSWORD 'it''s'"),
            "{}",
            sql[0]
        );
        assert!(sql.iter().any(|s| s.contains("GRANT EXECUTE ON FUNCTION pg_catalog.pg_ls_dir(text, boolean, boolean) TO \"rewind_user\"")));
    }

    #[test]
    fn data_directories_are_classified() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(
            classify(&d.path().join("missing")),
            Classified::Empty
        ));
        assert!(matches!(classify(d.path()), Classified::Empty));
        std::fs::write(d.path().join("stray"), "x").unwrap();
        assert!(matches!(classify(d.path()), Classified::Unusable(_)));
        wipe_dir(d.path()).unwrap();
        assert!(matches!(classify(d.path()), Classified::Empty));
    }
}
