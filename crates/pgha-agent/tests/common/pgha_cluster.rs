//! A pgha cluster (the test kit's `TestCluster`: etcd, three pgha agents,
//! PostgreSQL 15) seen through the same [`Operated`] interface as the
//! Patroni cluster, so the same pghactl scenarios run against both.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pgha_core::dcs::Dcs;
use pgha_core::model::{KeyLayout, Timing};
use pgha_testkit::cluster::{ClusterOptions, DcsKind, TestCluster};

use super::scenarios::Operated;

pub struct PghaCluster {
    pub cluster: TestCluster,
    config: PathBuf,
    dcs: Arc<dyn Dcs>,
}

impl std::fmt::Debug for PghaCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PghaCluster")
            .field("scope", &self.cluster.scope)
            .finish()
    }
}

fn agent() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pgha"))
}

impl PghaCluster {
    /// Three agents on etcd, converged (one primary, two streaming replicas).
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(|_, yaml| yaml).await
    }

    /// Like [`PghaCluster::start`], with each node's YAML changed by `edit`
    /// (given the cluster's directory) before the agents start.
    pub async fn start_with(edit: impl Fn(&Path, String) -> String) -> anyhow::Result<Self> {
        let mut cluster =
            TestCluster::new(agent(), DcsKind::Etcd, ClusterOptions::default()).await?;
        let dir = cluster.dir.path().to_path_buf();
        for i in 0..cluster.nodes.len() {
            cluster.edit_config(i, |yaml| edit(&dir, yaml))?;
        }
        cluster.start_all()?;
        let config = cluster.ctl_config()?;
        let dcs = dcs_client(&config, &cluster.scope)?;
        let me = PghaCluster {
            cluster,
            config,
            dcs,
        };
        // Judged from the DCS (the REST API may be HTTPS only).
        super::scenarios::wait_healthy(&me, Duration::from_secs(60)).await?;
        Ok(me)
    }
}

/// A DCS client of the test's own, from the file pghactl reads (as member
/// `test`: it writes what a person or another tool would).
pub fn dcs_client(config: &Path, scope: &str) -> anyhow::Result<Arc<dyn Dcs>> {
    let ctl = pgha_agent::ctl::CtlConfig::load(Some(config), None).map_err(anyhow::Error::msg)?;
    let section = ctl
        .dcs
        .ok_or_else(|| anyhow::anyhow!("no DCS section in {}", config.display()))?;
    let timing = Timing {
        retry_timeout: Duration::from_secs(3),
        ..Timing::default()
    };
    pgha_agent::dcs::connect(&section, KeyLayout::new("/service/", scope), "test", timing)
        .map_err(anyhow::Error::msg)
}

impl Operated for PghaCluster {
    fn scope(&self) -> &str {
        &self.cluster.scope
    }

    fn names(&self) -> Vec<String> {
        self.cluster.nodes.iter().map(|n| n.name.clone()).collect()
    }

    fn ctl_config(&self) -> PathBuf {
        self.config.clone()
    }

    fn ctl_config_without_credentials(&self) -> Option<PathBuf> {
        None
    }

    fn dcs(&self) -> &Arc<dyn Dcs> {
        &self.dcs
    }

    fn logs(&self) -> String {
        self.cluster.logs_tail(20)
    }
}
