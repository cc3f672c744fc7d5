//! The DCS facade: builds the client a configuration section names, from
//! the backends compiled in (cargo features `etcd`, `zookeeper`, `consul`,
//! `kubernetes`, and `etcd-tls`, `consul-tls`). Every backend is built the
//! same way: its section (Patroni's keys, which the backend reads), the key
//! layout, the member name, the timings.

use std::sync::Arc;

use pgha_core::dcs::Dcs;
use pgha_core::model::{KeyLayout, Timing};
use serde_json::Value;

/// Which DCS a node uses, with its section as written (`etcd3`,
/// `zookeeper`, `consul`, `kubernetes`).
#[derive(Debug, Clone, PartialEq)]
pub enum DcsSection {
    Etcd3(Value),
    ZooKeeper(Value),
    Consul(Value),
    Kubernetes(Value),
}

impl DcsSection {
    /// The section's name in the configuration.
    pub fn name(&self) -> &'static str {
        match self {
            DcsSection::Etcd3(_) => "etcd3",
            DcsSection::ZooKeeper(_) => "zookeeper",
            DcsSection::Consul(_) => "consul",
            DcsSection::Kubernetes(_) => "kubernetes",
        }
    }
}

/// Why no client could be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The section cannot be used (a bad address, an unreadable TLS file).
    #[error("{section}: {reason}")]
    Invalid {
        section: &'static str,
        reason: String,
    },
    /// This program was built without that backend.
    #[error("{0}: this pgha binary was built without that DCS backend (cargo feature)")]
    NotBuilt(&'static str),
}

/// A client of the configured DCS for member `name`. Does not contact the
/// DCS: the first call does, so this works while the DCS is down.
#[cfg_attr(
    not(any(
        feature = "etcd",
        feature = "zookeeper",
        feature = "consul",
        feature = "kubernetes"
    )),
    allow(unused_variables)
)]
pub fn connect(
    section: &DcsSection,
    layout: KeyLayout,
    name: &str,
    timing: Timing,
) -> Result<Arc<dyn Dcs>, ConnectError> {
    #[allow(unused_variables)]
    let invalid = |reason: String| ConnectError::Invalid {
        section: section.name(),
        reason,
    };
    match section {
        #[cfg(feature = "etcd")]
        DcsSection::Etcd3(value) => {
            let patroni: pgha_dcs_etcd::PatroniEtcd3 =
                serde_json::from_value(value.clone()).map_err(|e| invalid(e.to_string()))?;
            let config = pgha_dcs_etcd::EtcdConfig::from_patroni(&patroni)
                .map_err(|e| invalid(e.to_string()))?;
            let dcs = pgha_dcs_etcd::EtcdDcs::new(config, layout, name, timing)
                .map_err(|e| invalid(e.to_string()))?;
            Ok(Arc::new(dcs))
        }
        #[cfg(feature = "zookeeper")]
        DcsSection::ZooKeeper(value) => {
            let config = pgha_dcs_zk::ZkConfig::from_value(value.clone())
                .map_err(|e| invalid(e.to_string()))?;
            let dcs = pgha_dcs_zk::ZkDcs::new(config, layout, name, timing)
                .map_err(|e| invalid(e.to_string()))?;
            Ok(Arc::new(dcs))
        }
        #[cfg(feature = "consul")]
        DcsSection::Consul(value) => {
            let config = pgha_dcs_consul::ConsulConfig::from_patroni(value)
                .map_err(|e| invalid(e.to_string()))?;
            for w in &config.warnings {
                tracing::warn!("consul: {w}");
            }
            let dcs = pgha_dcs_consul::ConsulDcs::new(config, layout, name, timing)
                .map_err(|e| invalid(e.to_string()))?;
            Ok(Arc::new(dcs))
        }
        #[cfg(feature = "kubernetes")]
        DcsSection::Kubernetes(value) => {
            let config = pgha_dcs_k8s::K8sConfig::from_patroni(value.clone())
                .map_err(|e| invalid(e.to_string()))?;
            for w in config.warnings() {
                tracing::warn!("kubernetes: {w}");
            }
            let dcs = pgha_dcs_k8s::K8sDcs::new(config, layout, name, timing)
                .map_err(|e| invalid(e.to_string()))?;
            Ok(Arc::new(dcs))
        }
        #[allow(unreachable_patterns)]
        other => Err(ConnectError::NotBuilt(other.name())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn try_connect(section: DcsSection) -> Option<ConnectError> {
        connect(
            &section,
            KeyLayout::new("/service/", "demo"),
            "node1",
            Timing::default(),
        )
        .err()
    }

    #[test]
    fn a_section_names_itself() {
        assert_eq!(DcsSection::Etcd3(json!({})).name(), "etcd3");
        assert_eq!(DcsSection::Kubernetes(json!({})).name(), "kubernetes");
    }

    #[cfg(not(feature = "zookeeper"))]
    #[test]
    fn a_backend_not_built_in_is_named() {
        assert_eq!(
            try_connect(DcsSection::ZooKeeper(json!({"hosts": ["127.0.0.1:2181"]}))),
            Some(ConnectError::NotBuilt("zookeeper"))
        );
    }

    #[cfg(feature = "etcd")]
    #[test]
    fn a_section_that_cannot_be_used_is_named_with_the_reason() {
        match try_connect(DcsSection::Etcd3(json!({"hosts": 5}))) {
            Some(ConnectError::Invalid { section, reason }) => {
                assert_eq!(section, "etcd3");
                assert!(!reason.is_empty());
            }
            other => panic!("expected an invalid etcd3 section, got {other:?}"),
        }
        // A usable section builds a client without contacting etcd.
        assert_eq!(
            try_connect(DcsSection::Etcd3(json!({"hosts": "127.0.0.1:1"}))),
            None
        );
    }
}
