//! Where etcd is and how to log in: [`EtcdConfig`], and the translation
//! from Patroni's `etcd3:` configuration section ([`PatroniEtcd3`]).

use std::path::PathBuf;

use serde::Deserialize;
use thiserror::Error;

/// etcd's client port, used when an address gives none (as Patroni does).
pub const DEFAULT_PORT: u16 = 2379;

/// How to reach the etcd cluster.
///
/// Invariant (after [`EtcdConfig::validate`], which [`crate::EtcdDcs::new`]
/// runs): there is at least one endpoint and each is a full URL,
/// `http://host:port` or `https://host:port`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs of the etcd members, tried in order: the client stays on
    /// one member and moves to the next when that one fails.
    pub endpoints: Vec<String>,
    /// etcd user, for clusters with authentication enabled.
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM file of the CA that signed the etcd servers' certificates
    /// (needs the `tls` feature).
    pub cacert: Option<PathBuf>,
    /// PEM client certificate and its key, for `--client-cert-auth`
    /// (needs the `tls` feature).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl std::fmt::Debug for EtcdConfig {
    // Never print the password: configs end up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("cacert", &self.cacert)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish()
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("no etcd endpoint configured: set `host`, `hosts` or `url` in the etcd3 section")]
    NoEndpoints,
    #[error("invalid etcd address {0:?}")]
    BadAddress(String),
    #[error("unsupported etcd protocol {0:?}: use http or https")]
    BadProtocol(String),
    #[error(
        "etcd3 `{0}` is not supported by pgha (for SRV discovery: list the members in `hosts`; for `key_password`: use an unencrypted key file)"
    )]
    Unsupported(&'static str),
    #[error("`cert` and `key` must be given together")]
    CertWithoutKey,
    #[error("`username` and `password` must be given together")]
    UserWithoutPassword,
    #[error(
        "TLS settings or https endpoints need pgha-dcs-etcd built with the `tls` feature ({0})"
    )]
    TlsNotBuiltIn(String),
    #[error(
        "https endpoints need `cacert`, or pgha-dcs-etcd built with the `tls-roots` feature to trust the system's CAs"
    )]
    NoCa,
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: String, reason: String },
}

impl EtcdConfig {
    /// Plain endpoints without authentication or TLS. Each endpoint may omit
    /// the scheme (`127.0.0.1:2379` means `http://127.0.0.1:2379`) and the
    /// port (2379).
    pub fn new<S: AsRef<str>>(endpoints: impl IntoIterator<Item = S>) -> Result<Self, ConfigError> {
        let endpoints = endpoints
            .into_iter()
            .map(|e| endpoint_url(e.as_ref(), "http", DEFAULT_PORT))
            .collect::<Result<Vec<_>, _>>()?;
        let config = EtcdConfig {
            endpoints,
            ..Default::default()
        };
        config.validate()?;
        Ok(config)
    }

    /// Username and password for etcd's authentication.
    pub fn with_user(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self.password = Some(password.into());
        self
    }

    /// Translates Patroni's `etcd3:` section, with Patroni's precedence:
    /// `url` (or `proxy`), else `hosts`, else `host`. `protocol` (default
    /// `http`) and `port` (default 2379) apply to addresses that give none.
    pub fn from_patroni(section: &PatroniEtcd3) -> Result<Self, ConfigError> {
        for (set, name) in [
            (section.srv.is_some(), "srv"),
            (section.srv_suffix.is_some(), "srv_suffix"),
            (section.discovery_srv.is_some(), "discovery_srv"),
            (section.srv_domain.is_some(), "srv_domain"),
            (section.key_password.is_some(), "key_password"),
        ] {
            if set {
                return Err(ConfigError::Unsupported(name));
            }
        }
        let protocol = section.protocol.as_deref().unwrap_or("http");
        if protocol != "http" && protocol != "https" {
            return Err(ConfigError::BadProtocol(protocol.to_string()));
        }
        let port = section.port.unwrap_or(DEFAULT_PORT);
        let endpoints = if let Some(url) = section.url.as_ref().or(section.proxy.as_ref()) {
            vec![endpoint_url(url, protocol, DEFAULT_PORT)?]
        } else if let Some(hosts) = &section.hosts {
            hosts
                .items()
                .map(|h| endpoint_url(h, protocol, port))
                .collect::<Result<Vec<_>, _>>()?
        } else if let Some(host) = &section.host {
            vec![endpoint_url(host, protocol, port)?]
        } else {
            Vec::new()
        };
        let config = EtcdConfig {
            endpoints,
            username: section.username.clone(),
            password: section.password.clone(),
            cacert: section.cacert.clone(),
            cert: section.cert.clone(),
            key: section.key.clone(),
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks what can be checked without a server: endpoints present and
    /// well-formed, credentials complete, TLS available when asked for.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.endpoints.is_empty() {
            return Err(ConfigError::NoEndpoints);
        }
        for e in &self.endpoints {
            let Some((scheme, rest)) = e.split_once("://") else {
                return Err(ConfigError::BadAddress(e.clone()));
            };
            if scheme != "http" && scheme != "https" {
                return Err(ConfigError::BadProtocol(scheme.to_string()));
            }
            if rest.is_empty() {
                return Err(ConfigError::BadAddress(e.clone()));
            }
        }
        if self.cert.is_some() != self.key.is_some() {
            return Err(ConfigError::CertWithoutKey);
        }
        if self.username.is_some() != self.password.is_some() {
            return Err(ConfigError::UserWithoutPassword);
        }
        if !cfg!(feature = "tls") {
            if let Some(e) = self.endpoints.iter().find(|e| e.starts_with("https://")) {
                return Err(ConfigError::TlsNotBuiltIn(e.clone()));
            }
            if self.cacert.is_some() || self.cert.is_some() {
                return Err(ConfigError::TlsNotBuiltIn("cacert/cert/key".into()));
            }
        }
        Ok(())
    }

    /// Whether any endpoint uses TLS.
    pub fn uses_tls(&self) -> bool {
        self.endpoints.iter().any(|e| e.starts_with("https://"))
    }
}

/// Patroni's `etcd3:` section, as found in its YAML (field names are
/// Patroni's). Fields pgha does not use are ignored.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct PatroniEtcd3 {
    /// `host:port` of one etcd member.
    pub host: Option<String>,
    /// `host:port` of each member: a YAML list or a comma-separated string.
    pub hosts: Option<Hosts>,
    /// Port for addresses that give none (default 2379).
    pub port: Option<u16>,
    /// `http` (default) or `https`.
    pub protocol: Option<String>,
    /// One full URL, `http://host:port`.
    pub url: Option<String>,
    /// An etcd gRPC proxy's URL; pgha never discovers members, so this is a
    /// plain endpoint.
    pub proxy: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub cacert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Passphrase of an encrypted `key`: not supported (rejected, not
    /// ignored); decrypt the key file instead.
    pub key_password: Option<String>,
    /// DNS SRV discovery: not supported (rejected, not ignored).
    pub srv: Option<String>,
    pub srv_suffix: Option<String>,
    pub discovery_srv: Option<String>,
    pub srv_domain: Option<String>,
}

impl std::fmt::Debug for PatroniEtcd3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatroniEtcd3")
            .field("host", &self.host)
            .field("hosts", &self.hosts)
            .field("port", &self.port)
            .field("protocol", &self.protocol)
            .field("url", &self.url)
            .field("proxy", &self.proxy)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("cacert", &self.cacert)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Patroni accepts `hosts` as a list or as one comma-separated string.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Hosts {
    List(Vec<String>),
    Csv(String),
}

impl Hosts {
    /// The non-empty entries, trimmed.
    pub fn items(&self) -> impl Iterator<Item = &str> {
        let items: Vec<&str> = match self {
            Hosts::List(v) => v.iter().map(|s| s.as_str()).collect(),
            Hosts::Csv(s) => s.split(',').collect(),
        };
        items.into_iter().map(str::trim).filter(|s| !s.is_empty())
    }
}

/// Turns `host`, `host:port`, `[v6]:port`, a bare IPv6 address, or a URL with
/// scheme into `scheme://host:port`. An address without scheme gets
/// `protocol`; one without port gets `default_port`. A trailing `/` is
/// dropped; any other path is refused (etcd's gRPC API has none).
pub fn endpoint_url(
    address: &str,
    protocol: &str,
    default_port: u16,
) -> Result<String, ConfigError> {
    let bad = || ConfigError::BadAddress(address.to_string());
    let address = address.trim();
    let (scheme, rest) = match address.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None => (protocol.to_string(), address),
    };
    if scheme != "http" && scheme != "https" {
        return Err(ConfigError::BadProtocol(scheme));
    }
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || rest.contains('@') {
        return Err(bad());
    }
    let (host, port) = if let Some(after) = rest.strip_prefix('[') {
        // [v6] or [v6]:port
        let (host, tail) = after.split_once(']').ok_or_else(bad)?;
        let port = match tail {
            "" => default_port,
            t => t
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .ok_or_else(bad)?,
        };
        (format!("[{host}]"), port)
    } else if rest.matches(':').count() > 1 {
        // A bare IPv6 address: as in Patroni, the last group is the port
        // (`0:0:0:0:0:0:0:1:2379`). Where that leaves no address
        // (`fe80::1`), the address is ambiguous: write `[fe80::1]`.
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        if host.ends_with(':') {
            return Err(bad());
        }
        (format!("[{host}]"), port.parse().map_err(|_| bad())?)
    } else if let Some((host, port)) = rest.split_once(':') {
        (host.to_string(), port.parse().map_err(|_| bad())?)
    } else {
        (rest.to_string(), default_port)
    };
    if host.is_empty() || host == "[]" || port == 0 {
        return Err(bad());
    }
    Ok(format!("{scheme}://{host}:{port}"))
}

/// Reads a PEM file named in the configuration.
#[cfg(feature = "tls")]
pub(crate) fn read_pem(path: &std::path::Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| ConfigError::Unreadable {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(json: &str) -> PatroniEtcd3 {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn hosts_as_a_list() {
        let c = EtcdConfig::from_patroni(&section(
            r#"{"hosts":["10.0.0.1:2379","10.0.0.2:2380"," etcd3 "]}"#,
        ))
        .unwrap();
        assert_eq!(
            c.endpoints,
            [
                "http://10.0.0.1:2379",
                "http://10.0.0.2:2380",
                "http://etcd3:2379"
            ]
        );
    }

    #[test]
    fn hosts_as_a_comma_separated_string() {
        let c = EtcdConfig::from_patroni(&section(
            r#"{"hosts":"10.0.0.1:2379, 10.0.0.2:2379,,etcd3","protocol":"https","port":4001}"#,
        ));
        if cfg!(feature = "tls") {
            assert_eq!(
                c.unwrap().endpoints,
                [
                    "https://10.0.0.1:2379",
                    "https://10.0.0.2:2379",
                    "https://etcd3:4001"
                ]
            );
        } else {
            assert!(matches!(c, Err(ConfigError::TlsNotBuiltIn(_))));
        }
    }

    #[test]
    fn addresses_with_and_without_scheme() {
        let c =
            EtcdConfig::from_patroni(&section(r#"{"hosts":["http://a:1","b:2","HTTP://c","d"]}"#))
                .unwrap();
        assert_eq!(
            c.endpoints,
            ["http://a:1", "http://b:2", "http://c:2379", "http://d:2379"]
        );
        assert_eq!(
            endpoint_url("https://e:3/", "http", 2379).unwrap(),
            "https://e:3"
        );
        assert_eq!(endpoint_url("f", "https", 9).unwrap(), "https://f:9");
    }

    #[test]
    fn ipv6_addresses() {
        assert_eq!(
            endpoint_url("[::1]:2379", "http", 1).unwrap(),
            "http://[::1]:2379"
        );
        assert_eq!(endpoint_url("[::1]", "http", 7).unwrap(), "http://[::1]:7");
        assert_eq!(
            endpoint_url("0:0:0:0:0:0:0:1:2380", "http", 2379).unwrap(),
            "http://[0:0:0:0:0:0:0:1]:2380"
        );
        assert!(matches!(
            endpoint_url("fe80::1", "http", 2379),
            Err(ConfigError::BadAddress(_))
        ));
        assert_eq!(
            endpoint_url("http://[::1]:5/", "http", 1).unwrap(),
            "http://[::1]:5"
        );
    }

    #[test]
    fn host_url_and_precedence() {
        let c = EtcdConfig::from_patroni(&section(r#"{"host":"127.0.0.1:2381"}"#)).unwrap();
        assert_eq!(c.endpoints, ["http://127.0.0.1:2381"]);
        let c = EtcdConfig::from_patroni(&section(r#"{"host":"etcd","port":4001}"#)).unwrap();
        assert_eq!(c.endpoints, ["http://etcd:4001"]);
        // url wins over hosts, which wins over host (Patroni's order)
        let c = EtcdConfig::from_patroni(&section(
            r#"{"url":"http://u:1","hosts":"h:2","host":"x:3"}"#,
        ))
        .unwrap();
        assert_eq!(c.endpoints, ["http://u:1"]);
        let c = EtcdConfig::from_patroni(&section(r#"{"hosts":["h:2"],"host":"x:3"}"#)).unwrap();
        assert_eq!(c.endpoints, ["http://h:2"]);
        let c = EtcdConfig::from_patroni(&section(r#"{"proxy":"http://p:23790"}"#)).unwrap();
        assert_eq!(c.endpoints, ["http://p:23790"]);
    }

    #[test]
    fn credentials_are_carried_and_hidden_from_debug() {
        let c = EtcdConfig::from_patroni(&section(
            r#"{"host":"e","username":"patroni","password":"s3cret"}"#,
        ))
        .unwrap();
        assert_eq!(c.username.as_deref(), Some("patroni"));
        assert_eq!(c.password.as_deref(), Some("s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(!format!("{:?}", section(r#"{"password":"s3cret"}"#)).contains("s3cret"));
        assert_eq!(
            EtcdConfig::from_patroni(&section(r#"{"host":"e","username":"u"}"#)),
            Err(ConfigError::UserWithoutPassword)
        );
    }

    #[test]
    fn bad_configurations_are_refused() {
        assert_eq!(
            EtcdConfig::from_patroni(&section("{}")),
            Err(ConfigError::NoEndpoints)
        );
        assert_eq!(
            EtcdConfig::from_patroni(&section(r#"{"hosts":" , "}"#)),
            Err(ConfigError::NoEndpoints)
        );
        assert_eq!(
            EtcdConfig::from_patroni(&section(r#"{"srv":"example.org"}"#)),
            Err(ConfigError::Unsupported("srv"))
        );
        assert_eq!(
            EtcdConfig::from_patroni(&section(r#"{"host":"e","protocol":"ftp"}"#)),
            Err(ConfigError::BadProtocol("ftp".into()))
        );
        assert!(matches!(
            endpoint_url("e:notaport", "http", 1),
            Err(ConfigError::BadAddress(_))
        ));
        assert!(matches!(
            endpoint_url("e:2379/v3", "http", 1),
            Err(ConfigError::BadAddress(_))
        ));
        assert!(matches!(
            endpoint_url("unix://x", "http", 1),
            Err(ConfigError::BadProtocol(_))
        ));
        assert_eq!(
            EtcdConfig::from_patroni(&section(r#"{"host":"e","key_password":"x"}"#)),
            Err(ConfigError::Unsupported("key_password"))
        );
        assert_eq!(
            EtcdConfig::from_patroni(&section(r#"{"host":"e","cert":"/c.pem"}"#)),
            Err(ConfigError::CertWithoutKey)
        );
    }

    #[test]
    fn new_accepts_plain_addresses() {
        let c = EtcdConfig::new(["127.0.0.1:1", "http://127.0.0.1:2"]).unwrap();
        assert_eq!(c.endpoints, ["http://127.0.0.1:1", "http://127.0.0.1:2"]);
        assert_eq!(
            EtcdConfig::new(Vec::<String>::new()),
            Err(ConfigError::NoEndpoints)
        );
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn tls_without_the_feature_is_refused() {
        assert!(matches!(
            EtcdConfig::new(["https://e:1"]),
            Err(ConfigError::TlsNotBuiltIn(_))
        ));
        assert!(matches!(
            EtcdConfig::from_patroni(&section(r#"{"host":"e","cacert":"/ca.pem"}"#)),
            Err(ConfigError::TlsNotBuiltIn(_))
        ));
    }
}
