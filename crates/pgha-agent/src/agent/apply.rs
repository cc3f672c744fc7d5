//! Applying configuration changes to a running PostgreSQL.
//!
//! Every cycle the agent renders the `postgresql.conf` and `pg_hba.conf`
//! the current configuration asks for (the node's YAML and the cluster's
//! dynamic configuration); when they differ from the files on disk, it
//! writes them and reloads PostgreSQL. Parameters that only a restart
//! applies then show up in `pg_settings.pending_restart`, which the member
//! key reports (`pending_restart`). A reload (SIGHUP, `POST /reload`) first
//! re-reads the YAML file.

use std::sync::Arc;

use pgha_core::model::Cluster;

use super::{Agent, Callbacks};
use crate::config::Config;
use crate::postgres::{ConfRole, Observed, Postgres, files};

impl Agent {
    /// Writes changed configuration files and reloads PostgreSQL. Returns
    /// whether it did.
    pub(super) async fn apply_configuration(
        &mut self,
        cluster: Option<&Cluster>,
        o: &Observed,
    ) -> bool {
        let Some(db) = o.db.as_ref() else {
            return false;
        };
        let role = if !db.in_recovery {
            ConfRole::Primary
        } else {
            match o.following.as_deref() {
                None => ConfRole::Replica(None),
                // Changing whom we follow is the HA loop's business, not a reload's.
                Some(l) => match self.upstream(cluster, l) {
                    Ok(u) => ConfRole::Replica(Some(u)),
                    Err(_) => return false,
                },
            }
        };
        let dir = self.pg.data_dir();
        let conf = files::render(&self.config.postgresql, &self.dynamic, &role);
        let hba = files::render_hba(&self.config.postgresql, &self.dynamic);
        let current_conf = std::fs::read_to_string(dir.join("postgresql.conf")).unwrap_or_default();
        let current_hba = std::fs::read_to_string(dir.join("pg_hba.conf")).unwrap_or_default();
        if conf == current_conf && hba.as_ref().is_none_or(|h| *h == current_hba) {
            return false;
        }
        if let Err(e) = files::write_config(&self.config.postgresql, &self.dynamic, &role) {
            tracing::error!("cannot write the changed configuration: {e}");
            return false;
        }
        match self.pg.execute("SELECT pg_catalog.pg_reload_conf()").await {
            Ok(()) => {
                tracing::info!(
                    "configuration changed: rewrote postgresql.conf/pg_hba.conf and reloaded PostgreSQL"
                );
                let role = if db.in_recovery { "replica" } else { "primary" };
                self.callbacks.fire("on_reload", role);
                true
            }
            Err(e) => {
                tracing::error!("reloading PostgreSQL failed: {e}");
                false
            }
        }
    }

    /// Re-reads the configuration file (SIGHUP, `POST /reload`). A file
    /// with problems is refused and the running configuration kept; fields
    /// that cannot change while running are kept too, with a warning.
    pub(super) async fn reload_config(&mut self) {
        let Some(path) = self.config_path.clone() else {
            tracing::info!(
                "reload: no configuration file to re-read; the dynamic configuration is applied each cycle"
            );
            return;
        };
        let mut new = match Config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("reload refused, keeping the running configuration: {e}");
                return;
            }
        };
        let old = &self.config;
        let mut kept = Vec::new();
        macro_rules! keep {
            ($($field:ident).+) => {
                if new.$($field).+ != old.$($field).+ {
                    kept.push(stringify!($($field).+));
                    new.$($field).+ = old.$($field).+.clone();
                }
            };
        }
        keep!(name);
        keep!(scope);
        keep!(namespace);
        keep!(dcs);
        keep!(restapi_listen);
        keep!(restapi_connect_address);
        // The REST API's access rules are built (host names resolved) when it starts.
        keep!(restapi_access);
        keep!(postgresql.data_dir);
        keep!(postgresql.listen);
        keep!(postgresql.connect_address);
        for field in kept {
            tracing::warn!("reload: {field} changed; it takes effect only when pgha restarts");
        }
        for w in &new.warnings {
            tracing::warn!("configuration: {w}");
        }
        let new = Arc::new(new);
        self.callbacks = Callbacks {
            scripts: new.postgresql_ha.callbacks.clone(),
            scope: new.scope.clone(),
        };
        self.pg = Arc::new(Postgres::new(Arc::new(new.postgresql.clone())));
        self.config = new;
        tracing::info!("configuration reloaded from {}", path.display());
    }
}
