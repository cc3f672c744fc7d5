//! `pghactl`: the cluster as people see it, read from the DCS.
//!
//! Takes patronictl's configuration: a node's YAML file works, or one with
//! just `scope`, `namespace` and the DCS section.

pub mod list;

use std::path::Path;

use serde_json::Value;

use crate::config::{DcsSection, env, schema::scalar_text};

/// What pghactl needs to find a cluster.
#[derive(Debug, Clone)]
pub struct CtlConfig {
    pub scope: String,
    pub namespace: String,
    pub dcs: DcsSection,
}

impl CtlConfig {
    /// Reads a configuration file (environment overrides applied).
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        Self::from_yaml(&text, std::env::vars()).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn from_yaml(
        text: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, String> {
        let mut doc: Value =
            serde_saphyr::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
        env::apply(&mut doc, vars);
        let scope = doc
            .get("scope")
            .and_then(scalar_text)
            .ok_or("scope: missing")?;
        let namespace = doc
            .get("namespace")
            .and_then(scalar_text)
            .unwrap_or_else(|| "/service/".into());
        let dcs = match (doc.get("etcd3"), doc.get("zookeeper")) {
            (Some(e), None) => DcsSection::Etcd3(e.clone()),
            (None, Some(z)) => DcsSection::ZooKeeper(z.clone()),
            (Some(_), Some(_)) => {
                return Err("etcd3, zookeeper: configure one DCS, not both".into());
            }
            (None, None) => return Err("no DCS section (etcd3 or zookeeper)".into()),
        };
        Ok(CtlConfig {
            scope,
            namespace,
            dcs,
        })
    }
}
