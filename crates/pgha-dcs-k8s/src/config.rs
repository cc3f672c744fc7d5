//! The `kubernetes` section of a Patroni configuration file, and where the
//! API server is.
//!
//! Patroni's keys are accepted as Patroni spells them (and as leniently:
//! `"true"` is a boolean, a port may be a string). What this backend
//! supports is applied; what would make it behave differently from what the
//! file asks is refused with a [`ConfigError`]; what Patroni itself treats
//! as an optimisation or that has no effect here is accepted and named in
//! [`K8sConfig::warnings`] (and logged by [`crate::K8sDcs::new`]). Nothing
//! is dropped silently.

use std::collections::BTreeMap;
use std::path::PathBuf;

use pgha_core::model::lenient;
use serde_json::Value;
use thiserror::Error;

/// Patroni's defaults.
pub const DEFAULT_NAMESPACE: &str = "default";
pub const DEFAULT_SCOPE_LABEL: &str = "cluster-name";
pub const DEFAULT_ROLE_LABEL: &str = "role";
pub const DEFAULT_LEADER_LABEL_VALUE: &str = "primary";
pub const DEFAULT_FOLLOWER_LABEL_VALUE: &str = "replica";
/// The kubeconfig context Patroni uses when none is configured (outside a
/// cluster): `kind-kind`. pgha uses it too when the kubeconfig has it, and
/// the kubeconfig's current context otherwise.
pub const PATRONI_DEFAULT_CONTEXT: &str = "kind-kind";

/// Why a `kubernetes` section cannot be used.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A setting whose value cannot be read or would be refused by the API
    /// server on every write.
    #[error("kubernetes.{key}: {reason}")]
    Invalid { key: String, reason: String },
    /// A setting pgha cannot honour; running without it would not do what
    /// the configuration asks.
    #[error("kubernetes.{key}: {reason}")]
    Unsupported { key: &'static str, reason: String },
    /// The section is not a mapping.
    #[error("the kubernetes section must be a mapping, found {0}")]
    Malformed(String),
}

/// Where the API server is and how to log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiServer {
    /// As Patroni finds it: the in-cluster service account when
    /// `KUBERNETES_SERVICE_HOST`/`_PORT` are set, else the kubeconfig
    /// (`KUBECONFIG`, or `~/.kube/config`) with `context` (default: Patroni's
    /// `kind-kind` when present, else the current context).
    Infer { context: Option<String> },
    /// This kubeconfig file and context (default as above).
    Kubeconfig {
        path: PathBuf,
        context: Option<String>,
    },
    /// A plain URL without authentication (`kubectl proxy`, tests).
    Url(String),
}

impl ApiServer {
    /// A kubeconfig file, with its current context.
    pub fn kubeconfig(path: impl Into<PathBuf>) -> Self {
        ApiServer::Kubeconfig {
            path: path.into(),
            context: None,
        }
    }
}

/// One port of the leader Endpoints' subset (`use_endpoints`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointPort {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Option<String>,
}

/// The backend's configuration: Patroni's `kubernetes` section, checked.
///
/// Invariants (after [`K8sConfig::from_patroni`]): `namespace`, label keys
/// and values are valid for the API server; `ports` is not empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K8sConfig {
    pub api: ApiServer,
    /// Connect to this URL instead of the server the kubeconfig names (a
    /// tunnel or a local proxy); TLS still checks the certificate against
    /// the kubeconfig's server name.
    pub connect_via: Option<String>,
    /// The namespace of every object of the cluster (Patroni: `default`).
    pub namespace: String,
    /// Labels every object of the cluster carries, and selects by, besides
    /// `scope_label: <scope>`.
    pub labels: BTreeMap<String, String>,
    pub scope_label: String,
    pub role_label: String,
    pub leader_label_value: String,
    pub follower_label_value: String,
    pub standby_leader_label_value: String,
    /// A second role label, set to the PostgreSQL role itself.
    pub tmp_role_label: Option<String>,
    /// Labels set on the Pod while it bootstraps or clones, removed after.
    pub bootstrap_labels: BTreeMap<String, String>,
    /// Endpoints instead of ConfigMaps; the leader Endpoints' subset then
    /// carries the leader's IP and `ports`, so a Service without selector
    /// routes to the primary.
    pub use_endpoints: bool,
    /// The leader's IP for the Endpoints' subset; default: the Pod's IP.
    pub pod_ip: Option<String>,
    pub ports: Vec<EndpointPort>,
    /// A CA file for the in-cluster API server (Patroni's `cacert`,
    /// `PATRONI_KUBERNETES_CACERT`).
    pub cacert: Option<PathBuf>,
    /// HTTP codes besides 429, 500, 502, 503, 504 after which a request
    /// that is safe to repeat is repeated.
    pub retriable_http_codes: Vec<u16>,
    warnings: Vec<String>,
}

impl Default for K8sConfig {
    fn default() -> Self {
        K8sConfig {
            api: ApiServer::Infer { context: None },
            connect_via: None,
            namespace: DEFAULT_NAMESPACE.into(),
            labels: BTreeMap::new(),
            scope_label: DEFAULT_SCOPE_LABEL.into(),
            role_label: DEFAULT_ROLE_LABEL.into(),
            leader_label_value: DEFAULT_LEADER_LABEL_VALUE.into(),
            follower_label_value: DEFAULT_FOLLOWER_LABEL_VALUE.into(),
            standby_leader_label_value: DEFAULT_LEADER_LABEL_VALUE.into(),
            tmp_role_label: None,
            bootstrap_labels: BTreeMap::new(),
            use_endpoints: false,
            pod_ip: None,
            ports: vec![EndpointPort {
                name: None,
                port: 5432,
                protocol: None,
            }],
            cacert: None,
            retriable_http_codes: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

/// Keys of the section and what becomes of them.
const KNOWN: &[&str] = &[
    "namespace",
    "labels",
    "scope_label",
    "role_label",
    "leader_label_value",
    "follower_label_value",
    "standby_leader_label_value",
    "tmp_role_label",
    "bootstrap_labels",
    "use_endpoints",
    "pod_ip",
    "ports",
    "cacert",
    "retriable_http_codes",
    "context",
    "bypass_api_service",
];

fn string(
    section: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<Option<String>, ConfigError> {
    match section.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(other) => Err(ConfigError::Invalid {
            key: key.into(),
            reason: format!("expected a string, found {other}"),
        }),
    }
}

fn flag(section: &serde_json::Map<String, Value>, key: &str) -> Result<bool, ConfigError> {
    match section.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(v) => lenient::bool(v).ok_or_else(|| ConfigError::Invalid {
            key: key.into(),
            reason: format!("expected a boolean, found {v}"),
        }),
    }
}

fn string_map(
    section: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let v = match section.get(key) {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::String(s)) => {
            // From an environment variable: a JSON mapping in a string.
            serde_json::from_str::<Value>(s).map_err(|e| ConfigError::Invalid {
                key: key.into(),
                reason: format!("expected a mapping: {e}"),
            })?
        }
        Some(v) => v.clone(),
    };
    let Value::Object(map) = v else {
        return Err(ConfigError::Invalid {
            key: key.into(),
            reason: format!("expected a mapping, found {v}"),
        });
    };
    map.into_iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => if b { "True" } else { "False" }.to_string(),
                other => {
                    return Err(ConfigError::Invalid {
                        key: format!("{key}.{k}"),
                        reason: format!("expected a string, found {other}"),
                    });
                }
            };
            Ok((k, v))
        })
        .collect()
}

/// A label key: optional DNS-subdomain prefix and `/`, then a name of at
/// most 63 alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric.
fn valid_label_key(k: &str) -> bool {
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && s.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
            && s.as_bytes().last().is_some_and(u8::is_ascii_alphanumeric)
    };
    match k.split_once('/') {
        Some((prefix, name)) => {
            !prefix.is_empty()
                && prefix.len() <= 253
                && prefix.split('.').all(|l| {
                    !l.is_empty()
                        && l.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                })
                && name_ok(name)
        }
        None => name_ok(k),
    }
}

/// A label value: empty, or like the name part of a key.
pub fn valid_label_value(v: &str) -> bool {
    v.is_empty() || valid_label_key(v) && !v.contains('/')
}

/// A namespace or object name: a DNS-1123 label/subdomain.
pub fn valid_object_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

impl K8sConfig {
    /// A configuration for the API server at `url` (no authentication),
    /// with Patroni's defaults otherwise. For tests and `kubectl proxy`.
    pub fn with_url(url: impl Into<String>) -> Self {
        K8sConfig {
            api: ApiServer::Url(url.into()),
            ..Default::default()
        }
    }

    /// Translates Patroni's `kubernetes` section (as JSON). Unknown keys and
    /// keys that have no effect here are accepted and listed in
    /// [`K8sConfig::warnings`].
    pub fn from_patroni(section: Value) -> Result<Self, ConfigError> {
        let section = match section {
            Value::Object(m) => m,
            Value::Null => serde_json::Map::new(),
            other => return Err(ConfigError::Malformed(other.to_string())),
        };
        let mut c = K8sConfig::default();
        if let Some(ns) = string(&section, "namespace")?.filter(|s| !s.is_empty()) {
            c.namespace = ns;
        }
        c.labels = string_map(&section, "labels")?;
        for (key, slot) in [
            ("scope_label", &mut c.scope_label),
            ("role_label", &mut c.role_label),
            ("leader_label_value", &mut c.leader_label_value),
            ("follower_label_value", &mut c.follower_label_value),
            (
                "standby_leader_label_value",
                &mut c.standby_leader_label_value,
            ),
        ] {
            if let Some(v) = string(&section, key)? {
                *slot = v;
            }
        }
        // Patroni's default for the standby leader follows leader_label_value
        // only when given explicitly; keep Patroni's literal default.
        c.tmp_role_label = string(&section, "tmp_role_label")?.filter(|s| !s.is_empty());
        c.bootstrap_labels = string_map(&section, "bootstrap_labels")?;
        c.use_endpoints = flag(&section, "use_endpoints")?;
        c.pod_ip = string(&section, "pod_ip")?.filter(|s| !s.is_empty());
        if let Some(ports) = section.get("ports").filter(|v| !v.is_null()) {
            c.ports = parse_ports(ports)?;
        }
        c.cacert = std::env::var_os("PATRONI_KUBERNETES_CACERT")
            .map(PathBuf::from)
            .or_else(|| {
                string(&section, "cacert")
                    .ok()
                    .flatten()
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
            });
        c.retriable_http_codes = parse_codes(section.get("retriable_http_codes"))?;
        let context = string(&section, "context")?.filter(|s| !s.is_empty());
        c.api = ApiServer::Infer { context };

        if flag(&section, "bypass_api_service")? {
            c.warnings.push(
                "kubernetes.bypass_api_service is accepted without effect: pgha talks to the API \
                 server through the address the kubeconfig or service account gives"
                    .into(),
            );
        }
        if !c.use_endpoints && c.pod_ip.is_some() {
            c.warnings.push(
                "kubernetes.pod_ip has no effect without use_endpoints (only the leader Endpoints carry an IP)".into(),
            );
        }
        if !c.use_endpoints && section.get("ports").is_some_and(|v| !v.is_null()) {
            c.warnings.push(
                "kubernetes.ports has no effect without use_endpoints (only the leader Endpoints carry ports)".into(),
            );
        }
        for key in section.keys() {
            if !KNOWN.contains(&key.as_str()) {
                c.warnings.push(format!(
                    "kubernetes.{key} is not known to pgha and is ignored"
                ));
            }
        }
        c.validate()?;
        Ok(c)
    }

    /// What was accepted without effect, by name.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Checks what the API server would refuse on every write.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            key: key.into(),
            reason,
        };
        if !valid_object_name(&self.namespace) || self.namespace.contains('.') {
            return Err(invalid(
                "namespace",
                format!("{:?} is not a valid namespace name", self.namespace),
            ));
        }
        for (key, label) in [
            ("scope_label", &self.scope_label),
            ("role_label", &self.role_label),
        ] {
            if !valid_label_key(label) {
                return Err(invalid(key, format!("{label:?} is not a valid label key")));
            }
        }
        if let Some(l) = &self.tmp_role_label
            && !valid_label_key(l)
        {
            return Err(invalid(
                "tmp_role_label",
                format!("{l:?} is not a valid label key"),
            ));
        }
        for (key, value) in [
            ("leader_label_value", &self.leader_label_value),
            ("follower_label_value", &self.follower_label_value),
            (
                "standby_leader_label_value",
                &self.standby_leader_label_value,
            ),
        ] {
            if !valid_label_value(value) {
                return Err(invalid(
                    key,
                    format!("{value:?} is not a valid label value"),
                ));
            }
        }
        for (section, map) in [
            ("labels", &self.labels),
            ("bootstrap_labels", &self.bootstrap_labels),
        ] {
            for (k, v) in map {
                if !valid_label_key(k) || !valid_label_value(v) {
                    return Err(invalid(section, format!("{k}={v:?} is not a valid label")));
                }
            }
        }
        if self.ports.is_empty() {
            return Err(invalid("ports", "at least one port is needed".into()));
        }
        for u in [
            match &self.api {
                ApiServer::Url(u) => Some(u),
                _ => None,
            },
            self.connect_via.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(invalid("url", format!("{u:?} is not an http(s) URL")));
            }
        }
        Ok(())
    }

    /// The labels of the cluster `scope`: `labels` plus `scope_label: scope`.
    pub fn cluster_labels(&self, scope: &str) -> BTreeMap<String, String> {
        let mut l = self.labels.clone();
        l.insert(self.scope_label.clone(), scope.to_string());
        l
    }

    /// The label selector of the cluster `scope`, as Patroni builds it.
    pub fn label_selector(&self, scope: &str) -> String {
        self.cluster_labels(scope)
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The member name to use when the configuration gives none: the Pod's
    /// name from `POD_NAME` (the downward API variable Patroni's manifests
    /// set), else `HOSTNAME` (a Pod's hostname is its name).
    pub fn default_member_name() -> Option<String> {
        ["POD_NAME", "HOSTNAME"]
            .iter()
            .filter_map(|v| std::env::var(v).ok())
            .find(|v| !v.is_empty())
    }
}

fn parse_ports(v: &Value) -> Result<Vec<EndpointPort>, ConfigError> {
    let bad = |reason: String| ConfigError::Invalid {
        key: "ports".into(),
        reason,
    };
    let v = match v {
        Value::String(s) => serde_json::from_str(s).map_err(|e| bad(e.to_string()))?,
        v => v.clone(),
    };
    let Value::Array(items) = v else {
        return Err(bad(format!("expected a list, found {v}")));
    };
    let mut out = Vec::new();
    for item in items {
        let Value::Object(p) = &item else {
            return Err(bad(format!("expected a mapping per port, found {item}")));
        };
        let port = match p.get("port") {
            None => 5432,
            Some(v) => lenient::int(v)
                .and_then(|i| u16::try_from(i).ok())
                .filter(|p| *p > 0)
                .ok_or_else(|| bad(format!("port {v} is not a port number")))?,
        };
        let text = |k: &str| {
            p.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(String::from)
        };
        let protocol = text("protocol");
        if let Some(proto) = &protocol
            && !matches!(proto.as_str(), "TCP" | "UDP" | "SCTP")
        {
            return Err(bad(format!("protocol {proto:?} is not TCP, UDP or SCTP")));
        }
        out.push(EndpointPort {
            name: text("name"),
            port,
            protocol,
        });
    }
    if out.len() > 1 && out.iter().any(|p| p.name.is_none()) {
        return Err(bad("with several ports every port needs a name".into()));
    }
    Ok(out)
}

fn parse_codes(v: Option<&Value>) -> Result<Vec<u16>, ConfigError> {
    let bad = |reason: String| ConfigError::Invalid {
        key: "retriable_http_codes".into(),
        reason,
    };
    let items: Vec<Value> = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a.clone(),
        Some(Value::String(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| Value::String(s.into()))
            .collect(),
        Some(n @ Value::Number(_)) => vec![n.clone()],
        Some(other) => return Err(bad(format!("expected codes, found {other}"))),
    };
    items
        .iter()
        .map(|v| {
            lenient::int(v)
                .and_then(|i| u16::try_from(i).ok())
                .filter(|c| (100..600).contains(c))
                .ok_or_else(|| bad(format!("{v} is not an HTTP status code")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patroni_defaults() {
        let c = K8sConfig::from_patroni(json!({})).unwrap();
        assert_eq!(c.namespace, "default");
        assert_eq!(c.scope_label, "cluster-name");
        assert_eq!(c.role_label, "role");
        assert_eq!(c.leader_label_value, "primary");
        assert_eq!(c.follower_label_value, "replica");
        assert!(!c.use_endpoints);
        assert_eq!(
            c.ports,
            [EndpointPort {
                name: None,
                port: 5432,
                protocol: None
            }]
        );
        assert_eq!(c.label_selector("demo"), "cluster-name=demo");
        assert!(c.warnings().is_empty());
    }

    #[test]
    fn a_full_section() {
        let c = K8sConfig::from_patroni(json!({
            "namespace": "db",
            "labels": {"application": "patroni", "tier": 1},
            "scope_label": "cluster",
            "role_label": "pgrole",
            "leader_label_value": "master",
            "follower_label_value": "standby",
            "tmp_role_label": "tmp-role",
            "bootstrap_labels": {"bootstrapping": "yes"},
            "use_endpoints": "true",
            "pod_ip": "10.1.2.3",
            "ports": [{"name": "postgresql", "port": "5432"}, {"name": "exporter", "port": 9187, "protocol": "TCP"}],
            "retriable_http_codes": "401, 403",
            "context": "prod",
            "bypass_api_service": true,
            "something_new": 1,
        }))
        .unwrap();
        assert_eq!(c.namespace, "db");
        assert_eq!(
            c.label_selector("demo"),
            "application=patroni,cluster=demo,tier=1"
        );
        assert_eq!(c.leader_label_value, "master");
        assert!(c.use_endpoints);
        assert_eq!(c.ports.len(), 2);
        assert_eq!(c.retriable_http_codes, [401, 403]);
        assert_eq!(
            c.api,
            ApiServer::Infer {
                context: Some("prod".into())
            }
        );
        let w = c.warnings().join("\n");
        assert!(w.contains("bypass_api_service"), "{w}");
        assert!(w.contains("something_new"), "{w}");
    }

    #[test]
    fn refusals() {
        for (section, key) in [
            (json!({"labels": {"a": "not valid!"}}), "labels"),
            (json!({"labels": ["a"]}), "labels"),
            (json!({"namespace": "Not_A_Namespace"}), "namespace"),
            (json!({"role_label": "a/b/c"}), "role_label"),
            (json!({"ports": [{"port": 0}]}), "ports"),
            (json!({"ports": [{"port": 1}, {"port": 2}]}), "ports"),
            (json!({"use_endpoints": "maybe"}), "use_endpoints"),
            (json!({"retriable_http_codes": "x"}), "retriable_http_codes"),
        ] {
            match K8sConfig::from_patroni(section.clone()) {
                Err(ConfigError::Invalid { key: k, .. }) => {
                    assert!(k.starts_with(key), "{section}: {k}")
                }
                other => panic!("{section}: {other:?}"),
            }
        }
        assert!(matches!(
            K8sConfig::from_patroni(json!([1])),
            Err(ConfigError::Malformed(_))
        ));
    }

    #[test]
    fn pod_ip_without_endpoints_is_named() {
        let c = K8sConfig::from_patroni(json!({"pod_ip": "1.2.3.4"})).unwrap();
        assert!(c.warnings()[0].contains("pod_ip"));
    }
}
