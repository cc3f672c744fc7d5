//! The `zookeeper` section of a Patroni configuration file.
//!
//! Patroni's keys are accepted as Patroni spells them. What this backend
//! supports is applied; what it does not is either refused with a
//! [`ConfigError`] (when ignoring it would change security or behaviour:
//! `use_ssl: true`, an unknown ACL permission) or reported as a warning by
//! [`ZkConfig::check`] (when Patroni itself would ignore it: TLS file paths
//! while `use_ssl` is off, keys this backend does not know). Nothing is
//! dropped silently.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer};
use thiserror::Error;
use zookeeper_client::{Acl, AuthId, Permission};

/// Why a `zookeeper` section cannot be used.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// No host to connect to.
    #[error("zookeeper.hosts is empty: give a list or a comma-separated string of host:port")]
    NoHosts,
    /// A host entry is malformed (empty, or with a bad port).
    #[error("zookeeper.hosts: {host:?} is not host[:port]")]
    BadHost { host: String },
    /// A setting this build cannot honour; running without it would be
    /// less safe than what the configuration asks for.
    #[error("zookeeper.{key}: {reason}")]
    Unsupported { key: &'static str, reason: String },
    /// A setting whose value cannot be read.
    #[error("zookeeper.{key}: {reason}")]
    Invalid { key: String, reason: String },
    /// The section itself cannot be read (wrong types, missing `hosts`).
    #[error("zookeeper section: {0}")]
    Malformed(String),
}

/// Patroni's `zookeeper` configuration section.
///
/// Deserialises from the YAML/JSON section as Patroni reads it; `hosts`
/// may be a list (`["h1:2181", "h2:2181"]`) or one comma-separated string
/// (`"h1:2181,h2:2181"`).
#[derive(Clone, Default, Deserialize, PartialEq)]
pub struct ZkConfig {
    /// `host[:port]` of each ensemble member (port defaults to 2181).
    #[serde(deserialize_with = "hosts_from_list_or_string")]
    pub hosts: Vec<String>,
    /// TLS to ZooKeeper. Not supported by this build: `true` is refused.
    #[serde(default)]
    pub use_ssl: bool,
    /// TLS CA file. Only meaningful with `use_ssl`.
    #[serde(default)]
    pub cacert: Option<String>,
    /// TLS client certificate. Only meaningful with `use_ssl`.
    #[serde(default)]
    pub cert: Option<String>,
    /// TLS client key. Only meaningful with `use_ssl`.
    #[serde(default)]
    pub key: Option<String>,
    /// Password of the TLS client key. Only meaningful with `use_ssl`.
    #[serde(default)]
    pub key_password: Option<String>,
    /// Whether to verify the server's certificate. Only meaningful with `use_ssl`.
    #[serde(default)]
    pub verify: Option<bool>,
    /// Credentials sent on every connection: scheme → credential, e.g.
    /// `{"digest": "user:password"}`.
    #[serde(default)]
    pub auth_data: BTreeMap<String, String>,
    /// ACL set on every znode this node creates: principal → permissions.
    /// A principal `scheme:id` (e.g. `digest:user:hash`, or `auth:` for the
    /// identities of `auth_data`) names its scheme; one without `:` is an
    /// `x509` principal, as in Patroni. Permissions: `READ`, `WRITE`,
    /// `CREATE`, `DELETE`, `ADMIN`, `ALL` (any case).
    #[serde(default)]
    pub set_acls: BTreeMap<String, Vec<String>>,
    /// Keys this backend does not know; reported as warnings by [`ZkConfig::check`].
    #[serde(flatten)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

impl fmt::Debug for ZkConfig {
    // Credentials and key passwords stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZkConfig")
            .field("hosts", &self.hosts)
            .field("use_ssl", &self.use_ssl)
            .field("cacert", &self.cacert)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field(
                "key_password",
                &self.key_password.as_ref().map(|_| "<redacted>"),
            )
            .field("verify", &self.verify)
            .field("auth_data", &self.auth_data.keys().collect::<Vec<_>>())
            .field("set_acls", &self.set_acls)
            .field("unknown", &self.unknown.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// What [`ZkConfig::check`] derived: everything a connection needs.
#[derive(Clone)]
pub struct CheckedConfig {
    /// The connect string: `h1:2181,h2:2181`.
    pub connect_string: String,
    /// `(scheme, credential)` sent on every (re)connection.
    pub auth: Vec<(String, Vec<u8>)>,
    /// ACL for every znode we create; empty means `world:anyone` with all
    /// permissions, ZooKeeper's and Patroni's default.
    pub acls: Vec<Acl>,
    /// Settings that were accepted but have no effect, one sentence each.
    pub warnings: Vec<String>,
}

impl fmt::Debug for CheckedConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckedConfig")
            .field("connect_string", &self.connect_string)
            .field(
                "auth",
                &self
                    .auth
                    .iter()
                    .map(|(s, _)| s.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("acls", &self.acls)
            .field("warnings", &self.warnings)
            .finish()
    }
}

impl ZkConfig {
    /// A configuration with these hosts and every other setting at its default.
    pub fn new<S: Into<String>>(hosts: impl IntoIterator<Item = S>) -> Self {
        ZkConfig {
            hosts: hosts.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }

    /// Reads the section from a parsed YAML/JSON value.
    pub fn from_value(value: serde_json::Value) -> Result<Self, ConfigError> {
        serde_json::from_value(value).map_err(|e| ConfigError::Malformed(e.to_string()))
    }

    /// Splits Patroni's comma-separated host string (`"h1:2181, h2:2181"`).
    pub fn parse_hosts(hosts: &str) -> Vec<String> {
        hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Validates the section and derives what a connection needs. Refuses
    /// what cannot be honoured; lists what is accepted without effect.
    pub fn check(&self) -> Result<CheckedConfig, ConfigError> {
        let mut warnings = Vec::new();
        let hosts: Vec<&str> = self
            .hosts
            .iter()
            .map(|h| h.trim())
            .filter(|h| !h.is_empty())
            .collect();
        if hosts.is_empty() {
            return Err(ConfigError::NoHosts);
        }
        // As with kazoo, the last host may carry the chroot: `h1,h2/chroot`.
        let mut chroot = "";
        for (i, host) in hosts.iter().enumerate() {
            let (host, root) = match host.find('/') {
                Some(at) if i + 1 == hosts.len() => host.split_at(at),
                _ => (*host, ""),
            };
            check_host(host)?;
            chroot = root;
        }
        if !chroot.is_empty()
            && (chroot.ends_with('/') || chroot[1..].split('/').any(str::is_empty))
        {
            return Err(ConfigError::Invalid {
                key: "hosts".into(),
                reason: format!("chroot {chroot:?} is not an absolute path"),
            });
        }

        if self.use_ssl {
            return Err(ConfigError::Unsupported {
                key: "use_ssl",
                reason: "TLS connections to ZooKeeper are not supported by this build of \
                         pgha-dcs-zk; refusing to fall back to plaintext"
                    .into(),
            });
        }
        for (key, set) in [
            ("cacert", self.cacert.is_some()),
            ("cert", self.cert.is_some()),
            ("key", self.key.is_some()),
            ("key_password", self.key_password.is_some()),
            ("verify", self.verify.is_some()),
        ] {
            if set {
                warnings.push(format!(
                    "zookeeper.{key} is ignored because use_ssl is off (as Patroni does)"
                ));
            }
        }
        for key in self.unknown.keys() {
            warnings.push(format!(
                "zookeeper.{key} is not a setting pgha-dcs-zk knows; ignored"
            ));
        }

        let mut auth = Vec::new();
        for (scheme, credential) in &self.auth_data {
            if scheme.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "auth_data".into(),
                    reason: "empty authentication scheme".into(),
                });
            }
            auth.push((scheme.clone(), credential.as_bytes().to_vec()));
        }

        let mut acls = Vec::new();
        for (principal, permissions) in &self.set_acls {
            let (scheme, id) = match principal.split_once(':') {
                Some((scheme, id)) => (scheme, id),
                None => ("x509", principal.as_str()),
            };
            // `auth:` (every identity the creating session authenticated
            // as) is the one scheme whose id is empty.
            if scheme.is_empty() || (id.is_empty() && scheme != "auth") {
                return Err(ConfigError::Invalid {
                    key: format!("set_acls.{principal}"),
                    reason: "principal must be `scheme:id` or an x509 name".into(),
                });
            }
            let mut permission = Permission::NONE;
            for p in permissions {
                permission = permission
                    | match p.to_ascii_uppercase().as_str() {
                        "READ" => Permission::READ,
                        "WRITE" => Permission::WRITE,
                        "CREATE" => Permission::CREATE,
                        "DELETE" => Permission::DELETE,
                        "ADMIN" => Permission::ADMIN,
                        "ALL" => Permission::ALL,
                        other => {
                            return Err(ConfigError::Invalid {
                                key: format!("set_acls.{principal}"),
                                reason: format!(
                                    "unknown permission {other:?} (READ, WRITE, CREATE, DELETE, ADMIN, ALL)"
                                ),
                            });
                        }
                    };
            }
            if permission == Permission::NONE {
                return Err(ConfigError::Invalid {
                    key: format!("set_acls.{principal}"),
                    reason: "no permission given".into(),
                });
            }
            acls.push(Acl::new(permission, AuthId::new(scheme, id)));
        }

        Ok(CheckedConfig {
            connect_string: hosts.join(","),
            auth,
            acls,
            warnings,
        })
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`, with a port in 1..=65535.
fn check_host(host: &str) -> Result<(), ConfigError> {
    let bad = || ConfigError::BadHost {
        host: host.to_string(),
    };
    if host.contains('/') || host.contains(',') || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    let port = if let Some(rest) = host.strip_prefix('[') {
        let (addr, after) = rest.split_once(']').ok_or_else(bad)?;
        if addr.is_empty() {
            return Err(bad());
        }
        match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(bad)?),
        }
    } else {
        match host.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && !h.contains(':') => Some(p),
            Some(_) => return Err(bad()),
            None => None,
        }
    };
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(bad()),
        }
    }
    Ok(())
}

fn hosts_from_list_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Hosts {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Hosts::deserialize(d)? {
        Hosts::One(s) => ZkConfig::parse_hosts(&s),
        Hosts::Many(list) => list.iter().flat_map(|h| ZkConfig::parse_hosts(h)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hosts_as_list_or_comma_string() {
        let a = ZkConfig::from_value(json!({"hosts": ["10.0.0.1:2181", "10.0.0.2:2182"]})).unwrap();
        let b = ZkConfig::from_value(json!({"hosts": "10.0.0.1:2181, 10.0.0.2:2182"})).unwrap();
        assert_eq!(a.hosts, ["10.0.0.1:2181", "10.0.0.2:2182"]);
        assert_eq!(a, b);
        assert_eq!(
            a.check().unwrap().connect_string,
            "10.0.0.1:2181,10.0.0.2:2182"
        );
        let c = ZkConfig::from_value(json!({"hosts": "zk1"})).unwrap();
        assert_eq!(c.check().unwrap().connect_string, "zk1");
        let v6 = ZkConfig::new(["[::1]:2181", "[fe80::1]"]);
        assert!(v6.check().is_ok());
        let chroot = ZkConfig::new(["h1:2181", "h2:2181/pg/ha"]).check().unwrap();
        assert_eq!(chroot.connect_string, "h1:2181,h2:2181/pg/ha");
        assert!(ZkConfig::new(["h1/x", "h2"]).check().is_err());
        assert!(ZkConfig::new(["h1", "h2/x/"]).check().is_err());
    }

    #[test]
    fn bad_hosts_are_refused() {
        assert_eq!(
            ZkConfig::new(Vec::<String>::new()).check().unwrap_err(),
            ConfigError::NoHosts
        );
        assert_eq!(
            ZkConfig::new([" ", ""]).check().unwrap_err(),
            ConfigError::NoHosts
        );
        for bad in ["h:0", "h:99999", "h:x", ":2181", "[::1", "::1:2181"] {
            assert!(
                matches!(
                    ZkConfig::new([bad]).check(),
                    Err(ConfigError::BadHost { .. })
                ),
                "{bad}"
            );
        }
        assert!(
            ZkConfig::from_value(json!({"use_ssl": false})).is_err(),
            "hosts is required"
        );
    }

    #[test]
    fn tls_is_refused_and_tls_files_without_it_warn() {
        let err = ZkConfig::from_value(json!({"hosts": "h", "use_ssl": true}))
            .unwrap()
            .check()
            .unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Unsupported { key: "use_ssl", .. }
        ));
        let c = ZkConfig::from_value(json!({
            "hosts": "h", "cacert": "/ca.pem", "verify": false, "frobnicate": 1
        }))
        .unwrap()
        .check()
        .unwrap();
        assert_eq!(c.warnings.len(), 3, "{:?}", c.warnings);
        assert!(c.warnings.iter().any(|w| w.contains("frobnicate")));
    }

    #[test]
    fn acls_and_auth_data() {
        let c = ZkConfig::from_value(json!({
            "hosts": ["h"],
            "auth_data": {"digest": "user:secret"},
            "set_acls": {"CN=principal1": ["create", "READ"], "digest:user:hash=": ["ALL"]}
        }))
        .unwrap();
        assert!(!format!("{c:?}").contains("secret"));
        let checked = c.check().unwrap();
        assert_eq!(
            checked.auth,
            [("digest".to_string(), b"user:secret".to_vec())]
        );
        assert_eq!(
            checked.acls,
            [
                Acl::new(
                    Permission::CREATE | Permission::READ,
                    AuthId::new("x509", "CN=principal1")
                ),
                Acl::new(Permission::ALL, AuthId::new("digest", "user:hash=")),
            ]
        );
        let creator = ZkConfig::from_value(json!({"hosts": "h", "set_acls": {"auth:": ["all"]}}))
            .unwrap()
            .check()
            .unwrap();
        assert_eq!(creator.acls, [Acl::new(Permission::ALL, AuthId::authed())]);
        let no_id = ZkConfig::from_value(json!({"hosts": "h", "set_acls": {"digest:": ["ALL"]}}))
            .unwrap()
            .check();
        assert!(matches!(no_id, Err(ConfigError::Invalid { .. })));
        let bad = ZkConfig::from_value(json!({"hosts": "h", "set_acls": {"x": ["EVERYTHING"]}}))
            .unwrap()
            .check();
        assert!(matches!(bad, Err(ConfigError::Invalid { .. })));
    }
}
