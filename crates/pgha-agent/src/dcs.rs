//! Builds the DCS client the configuration names, from the backends this
//! binary was built with (cargo features `etcd`, `zookeeper`).

use std::sync::Arc;

use pgha_core::dcs::Dcs;
use pgha_core::model::{KeyLayout, Timing};

use crate::config::DcsSection;

/// A client of the configured DCS for member `name`. Does not contact the
/// DCS: the first call does, so this works while the DCS is down.
pub fn connect(
    section: &DcsSection,
    layout: KeyLayout,
    name: &str,
    timing: Timing,
) -> Result<Arc<dyn Dcs>, String> {
    match section {
        #[cfg(feature = "etcd")]
        DcsSection::Etcd3(value) => {
            let patroni: pgha_dcs_etcd::PatroniEtcd3 =
                serde_json::from_value(value.clone()).map_err(|e| format!("etcd3: {e}"))?;
            let config = pgha_dcs_etcd::EtcdConfig::from_patroni(&patroni)
                .map_err(|e| format!("etcd3: {e}"))?;
            let dcs = pgha_dcs_etcd::EtcdDcs::new(config, layout, name, timing)
                .map_err(|e| format!("etcd3: {e}"))?;
            Ok(Arc::new(dcs))
        }
        #[cfg(feature = "zookeeper")]
        DcsSection::ZooKeeper(value) => {
            let config = pgha_dcs_zk::ZkConfig::from_value(value.clone())
                .map_err(|e| format!("zookeeper: {e}"))?;
            let dcs = pgha_dcs_zk::ZkDcs::new(config, layout, name, timing)
                .map_err(|e| format!("zookeeper: {e}"))?;
            Ok(Arc::new(dcs))
        }
        #[cfg(feature = "consul")]
        DcsSection::Consul(value) => {
            let config = pgha_dcs_consul::ConsulConfig::from_patroni(value)
                .map_err(|e| format!("consul: {e}"))?;
            for w in &config.warnings {
                tracing::warn!("consul: {w}");
            }
            let dcs = pgha_dcs_consul::ConsulDcs::new(config, layout, name, timing)
                .map_err(|e| format!("consul: {e}"))?;
            Ok(Arc::new(dcs))
        }
        #[cfg(feature = "kubernetes")]
        DcsSection::Kubernetes(value) => {
            let config = pgha_dcs_k8s::K8sConfig::from_patroni(value.clone())
                .map_err(|e| format!("kubernetes: {e}"))?;
            for w in config.warnings() {
                tracing::warn!("kubernetes: {w}");
            }
            let dcs = pgha_dcs_k8s::K8sDcs::new(config, layout, name, timing)
                .map_err(|e| format!("kubernetes: {e}"))?;
            Ok(Arc::new(dcs))
        }
        #[allow(unreachable_patterns)]
        other => Err(format!(
            "{}: this pgha binary was built without that DCS backend (cargo feature)",
            match other {
                DcsSection::Etcd3(_) => "etcd3",
                DcsSection::ZooKeeper(_) => "zookeeper",
                DcsSection::Consul(_) => "consul",
                DcsSection::Kubernetes(_) => "kubernetes",
            }
        )),
    }
}
