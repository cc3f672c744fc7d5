//! Applying configuration changes to a running PostgreSQL.
//!
//! Every cycle the agent renders the `postgresql.conf` and `pg_hba.conf`
//! the current configuration asks for (the node's YAML and the cluster's
//! dynamic configuration); when they differ from the files on disk, it
//! writes them and reloads PostgreSQL. Parameters that only a restart
//! applies then show up in `pg_settings.pending_restart`, which the member
//! key reports (`pending_restart`). A reload hands the node a whole new
//! [`NodeConfig`] (the `pgha` binary re-reads its file on SIGHUP and
//! `POST /reload`).

use std::sync::Arc;

use pgha_core::model::Cluster;

use super::HaLoop;
use crate::callbacks::Callbacks;
use crate::config::NodeConfig;
use crate::postgres::{ConfRole, Observed, Postgres, files};

impl HaLoop {
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

    /// Adopts a new configuration ([`NodeHandle::reload`](crate::NodeHandle::reload)).
    /// What cannot change while the node runs (its name, where its keys
    /// and data live, how PostgreSQL is reached) is kept, with a warning;
    /// a configuration whose parts contradict each other is refused whole.
    pub(super) fn reload_config(&mut self, mut new: NodeConfig) {
        if let Err(e) = new.check() {
            tracing::error!("reload refused, keeping the running configuration: {e}");
            return;
        }
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
        keep!(layout);
        keep!(api_url);
        keep!(postgresql.member);
        keep!(postgresql.scope);
        keep!(postgresql.data_dir);
        keep!(postgresql.listen);
        keep!(postgresql.connect_address);
        for field in kept {
            tracing::warn!("reload: {field} changed; it takes effect only when the node restarts");
        }
        let new = Arc::new(new);
        self.callbacks = Callbacks {
            scripts: new.ha.callbacks.clone(),
            scope: new.scope().to_string(),
        };
        self.pg = Arc::new(Postgres::new(Arc::new(new.postgresql.clone())));
        self.pg.set_launcher(Arc::new(self.guard.clone()));
        self.config = new;
        tracing::info!("configuration reloaded");
    }
}
