//! Where Consul is and how to talk to it: [`ConsulConfig`], read from
//! Patroni's `consul:` configuration section by [`ConsulConfig::from_patroni`].
//!
//! Patroni's keys are accepted as Patroni spells them. What this backend
//! supports is applied; what it cannot honour safely is refused with a
//! [`ConfigError`]; what it accepts without effect is listed, by name, in
//! [`ConsulConfig::warnings`] (and logged by [`crate::ConsulDcs::new`]).
//! Nothing is dropped silently.

use std::fmt;
use std::path::PathBuf;

use serde_json::Value;
use thiserror::Error;

/// Consul's HTTP port, used when an address gives none (as Patroni does).
pub const DEFAULT_PORT: u16 = 8500;

/// Why a `consul` section cannot be used.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("consul section: expected a mapping, found {0}")]
    NotAMapping(String),
    #[error("consul.{key}: {reason}")]
    Invalid { key: String, reason: String },
    #[error("consul.{key}: {reason}")]
    Unsupported { key: &'static str, reason: String },
    #[error("consul: no address configured")]
    NoHosts,
    #[error("invalid Consul address {0:?}")]
    BadAddress(String),
    #[error("unsupported Consul scheme {0:?}: use http or https")]
    BadScheme(String),
    #[error("consul: `key` needs `cert` (a client key without its certificate)")]
    KeyWithoutCert,
    #[error(
        "TLS settings or https addresses need pgha-dcs-consul built with the `tls` feature ({0})"
    )]
    TlsNotBuiltIn(String),
    #[error(
        "https addresses need `cacert`, or pgha-dcs-consul built with the `tls-roots` feature to trust the system's CAs"
    )]
    NoCa,
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error(
        "cacert/cert/key are set but every address is plain http: use `scheme: https` or https:// addresses"
    )]
    TlsFilesWithoutHttps,
}

/// Which reads may be served by a follower (Consul's consistency modes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Consistency {
    /// The leader answers, without a quorum round trip (Consul's default).
    #[default]
    Default,
    /// The leader answers after confirming it still leads (`?consistent`).
    Consistent,
    /// Any server answers, possibly behind (`?stale`).
    Stale,
}

impl Consistency {
    /// The query flag that selects this mode, if any.
    pub(crate) fn flag(self) -> Option<&'static str> {
        match self {
            Consistency::Default => None,
            Consistency::Consistent => Some("consistent"),
            Consistency::Stale => Some("stale"),
        }
    }
}

/// One Consul agent's HTTP address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `http` or `https`.
    pub scheme: String,
    /// Host name or address; IPv6 in brackets.
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// `scheme://host:port`.
    pub fn base_url(&self) -> String {
        format!("{}://{}:{}", self.scheme, self.host, self.port)
    }

    pub fn is_https(&self) -> bool {
        self.scheme == "https"
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base_url())
    }
}

/// How to reach Consul.
///
/// Invariant (checked by [`ConsulConfig::validate`], which
/// [`crate::ConsulDcs::new`] runs): at least one endpoint; TLS files only
/// with https endpoints; `key` only with `cert`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConsulConfig {
    /// Agents to talk to, in order. The client stays on one and moves to the
    /// next when it fails. Patroni talks to one agent (`host`/`url`); several
    /// are a pgha extension (`hosts`).
    pub endpoints: Vec<Endpoint>,
    /// ACL token, sent as `X-Consul-Token`.
    pub token: Option<String>,
    /// PEM file of the CA that signed the agents' certificates.
    pub cacert: Option<PathBuf>,
    /// PEM client certificate; holds the key too when `key` is not given.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// The datacenter to address (`?dc=`); the agent's own by default.
    pub dc: Option<String>,
    /// The consistency mode of `load` (Patroni's `consistency`).
    pub consistency: Consistency,
    /// Health checks the session is tied to (Patroni's `checks`; default
    /// none, so only the TTL invalidates it, as in Patroni).
    pub checks: Vec<String>,
    /// Settings accepted without effect, one sentence each, naming the key.
    pub warnings: Vec<String>,
}

impl fmt::Debug for ConsulConfig {
    // The token stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulConfig")
            .field("endpoints", &self.endpoints)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("cacert", &self.cacert)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("dc", &self.dc)
            .field("consistency", &self.consistency)
            .field("checks", &self.checks)
            .field("warnings", &self.warnings)
            .finish()
    }
}

/// Keys of Patroni's `consul` section that have no effect in pgha because
/// pgha does not register a Consul service.
const SERVICE_KEYS: [&str; 3] = [
    "service_tags",
    "service_check_interval",
    "service_check_tls_server_name",
];

impl ConsulConfig {
    /// Plain-http endpoints without TLS or token. Each address may omit the
    /// scheme (`127.0.0.1:8500`) and the port (8500).
    pub fn new<S: AsRef<str>>(addresses: impl IntoIterator<Item = S>) -> Result<Self, ConfigError> {
        let endpoints = addresses
            .into_iter()
            .map(|a| endpoint(a.as_ref(), "http", Port::Default(DEFAULT_PORT)))
            .collect::<Result<Vec<_>, _>>()?;
        let config = ConsulConfig {
            endpoints,
            ..Default::default()
        };
        config.validate()?;
        Ok(config)
    }

    /// Reads Patroni's `consul:` section (YAML parsed into JSON).
    ///
    /// Addresses, with Patroni's precedence: `url`, else `host` (default
    /// `127.0.0.1:8500`); `port` overrides the port of `host`; `scheme`
    /// (default `http`) applies to addresses without one. `hosts` (a list
    /// or a comma-separated string) is a pgha extension naming several
    /// agents to fail over between; Patroni ignores it, so in a mixed
    /// cluster keep `host` pointing at the first of them.
    ///
    /// Refused: `verify: false` (certificate checks cannot be switched
    /// off), `register_service: true` (pgha does not register a service,
    /// and DNS clients relying on it would be left with stale records).
    /// Accepted without effect (warned): `service_tags`,
    /// `service_check_interval`, `service_check_tls_server_name`, and any
    /// key this backend does not know.
    pub fn from_patroni(section: &Value) -> Result<Self, ConfigError> {
        let map = match section {
            Value::Object(m) => m,
            Value::Null => &serde_json::Map::new(),
            other => return Err(ConfigError::NotAMapping(kind(other).into())),
        };
        let mut warnings = Vec::new();
        let string = |key: &str| -> Result<Option<String>, ConfigError> {
            match map.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
                Some(Value::Number(n)) => Ok(Some(n.to_string())),
                Some(other) => Err(ConfigError::Invalid {
                    key: key.into(),
                    reason: format!("expected a string, found {}", kind(other)),
                }),
            }
        };
        let boolean = |key: &str| -> Result<Option<bool>, ConfigError> {
            match map.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Bool(b)) => Ok(Some(*b)),
                Some(Value::String(s)) => {
                    parse_bool(s).map(Some).ok_or_else(|| ConfigError::Invalid {
                        key: key.into(),
                        reason: format!("{s:?} is not a boolean"),
                    })
                }
                Some(other) => Err(ConfigError::Invalid {
                    key: key.into(),
                    reason: format!("expected a boolean, found {}", kind(other)),
                }),
            }
        };

        let scheme = string("scheme")?
            .unwrap_or_else(|| "http".into())
            .to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(ConfigError::BadScheme(scheme));
        }
        let port = match map.get("port") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(
                n.as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .filter(|p| *p != 0)
                    .ok_or_else(|| ConfigError::Invalid {
                        key: "port".into(),
                        reason: format!("{n} is not a port"),
                    })?,
            ),
            Some(Value::String(s)) => {
                Some(s.trim().parse().ok().filter(|p| *p != 0).ok_or_else(|| {
                    ConfigError::Invalid {
                        key: "port".into(),
                        reason: format!("{s:?} is not a port"),
                    }
                })?)
            }
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "port".into(),
                    reason: format!("expected a number, found {}", kind(other)),
                });
            }
        };
        let endpoints = if let Some(url) = string("url")? {
            // Patroni takes scheme, host and port from the URL alone.
            vec![endpoint(&url, &scheme, Port::Default(DEFAULT_PORT))?]
        } else if let Some(hosts) = map.get("hosts").filter(|v| !v.is_null()) {
            let items: Vec<String> = match hosts {
                Value::String(s) => s.split(',').map(str::to_string).collect(),
                Value::Array(items) => items
                    .iter()
                    .map(|i| match i {
                        Value::String(s) => Ok(s.clone()),
                        other => Err(ConfigError::Invalid {
                            key: "hosts".into(),
                            reason: format!("expected strings, found {}", kind(other)),
                        }),
                    })
                    .collect::<Result<_, _>>()?,
                other => {
                    return Err(ConfigError::Invalid {
                        key: "hosts".into(),
                        reason: format!("expected a list or a string, found {}", kind(other)),
                    });
                }
            };
            items
                .iter()
                .map(|h| h.trim())
                .filter(|h| !h.is_empty())
                .map(|h| endpoint(h, &scheme, Port::Default(port.unwrap_or(DEFAULT_PORT))))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            let host = string("host")?.unwrap_or_else(|| format!("127.0.0.1:{DEFAULT_PORT}"));
            let rule = port.map_or(Port::Default(DEFAULT_PORT), Port::Override);
            vec![endpoint(&host, &scheme, rule)?]
        };

        if boolean("verify")? == Some(false) {
            return Err(ConfigError::Unsupported {
                key: "verify",
                reason: "switching off certificate verification is not supported; give the CA in `cacert`"
                    .into(),
            });
        }
        if boolean("register_service")? == Some(true) {
            return Err(ConfigError::Unsupported {
                key: "register_service",
                reason: "pgha does not register a Consul service; DNS names such as \
                         primary.<scope>.service.consul would not follow failovers"
                    .into(),
            });
        }
        for key in SERVICE_KEYS {
            if map.get(key).is_some_and(|v| !v.is_null()) {
                warnings.push(format!(
                    "consul.{key} has no effect: pgha does not register a Consul service"
                ));
            }
        }
        let consistency = match string("consistency")?.as_deref() {
            None | Some("default") => Consistency::Default,
            Some("consistent") => Consistency::Consistent,
            Some("stale") => Consistency::Stale,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "consistency".into(),
                    reason: format!("{other:?}: use default, consistent or stale"),
                });
            }
        };
        let checks = match map.get("checks") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| match i {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(ConfigError::Invalid {
                        key: "checks".into(),
                        reason: format!("expected check IDs (strings), found {}", kind(other)),
                    }),
                })
                .collect::<Result<_, _>>()?,
            Some(Value::String(s)) => vec![s.clone()],
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "checks".into(),
                    reason: format!("expected a list of check IDs, found {}", kind(other)),
                });
            }
        };
        const KNOWN: [&str; 17] = [
            "host",
            "hosts",
            "url",
            "port",
            "scheme",
            "token",
            "verify",
            "cacert",
            "cert",
            "key",
            "dc",
            "consistency",
            "checks",
            "register_service",
            "service_tags",
            "service_check_interval",
            "service_check_tls_server_name",
        ];
        for key in map.keys() {
            if !KNOWN.contains(&key.as_str()) {
                warnings.push(format!("consul.{key} is not a setting pgha knows; ignored"));
            }
        }
        let config = ConsulConfig {
            endpoints,
            token: string("token")?,
            cacert: string("cacert")?.map(PathBuf::from),
            cert: string("cert")?.map(PathBuf::from),
            key: string("key")?.map(PathBuf::from),
            dc: string("dc")?,
            consistency,
            checks,
            warnings,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks what can be checked without a server.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.endpoints.is_empty() {
            return Err(ConfigError::NoHosts);
        }
        if self.key.is_some() && self.cert.is_none() {
            return Err(ConfigError::KeyWithoutCert);
        }
        let tls_files = self.cacert.is_some() || self.cert.is_some();
        if !cfg!(feature = "tls") {
            if let Some(e) = self.endpoints.iter().find(|e| e.is_https()) {
                return Err(ConfigError::TlsNotBuiltIn(e.base_url()));
            }
            if tls_files {
                return Err(ConfigError::TlsNotBuiltIn("cacert/cert/key".into()));
            }
        }
        if tls_files && !self.uses_tls() {
            return Err(ConfigError::TlsFilesWithoutHttps);
        }
        if self.uses_tls() && self.cacert.is_none() && !cfg!(feature = "tls-roots") {
            return Err(ConfigError::NoCa);
        }
        Ok(())
    }

    /// Whether any endpoint uses TLS.
    pub fn uses_tls(&self) -> bool {
        self.endpoints.iter().any(Endpoint::is_https)
    }
}

/// Patroni's `parse_bool`: yes/no, on/off, true/false, 1/0 (any case).
fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" | "y" | "t" => Some(true),
        "false" | "no" | "off" | "0" | "n" | "f" => Some(false),
        _ => None,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// How an address's port is decided when the address gives none (or one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    /// For addresses without a port (`hosts` entries, `url`, `new`).
    Default(u16),
    /// Patroni's `port` key next to `host`: wins over the port in `host`.
    Override(u16),
}

/// Reads `host`, `host:port`, `[v6]:port` or `scheme://host[:port][/]`.
/// An address without scheme gets `scheme`; its port follows `port`.
pub fn endpoint(address: &str, scheme: &str, port: Port) -> Result<Endpoint, ConfigError> {
    let bad = || ConfigError::BadAddress(address.to_string());
    let address = address.trim();
    let (scheme, rest, from_url) = match address.split_once("://") {
        Some((s, rest)) => (s.to_ascii_lowercase(), rest, true),
        None => (scheme.to_string(), address, false),
    };
    if scheme != "http" && scheme != "https" {
        return Err(ConfigError::BadScheme(scheme));
    }
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || rest.contains('@') {
        return Err(bad());
    }
    let rule = port;
    let (host, port) = if let Some(after) = rest.strip_prefix('[') {
        let (host, tail) = after.split_once(']').ok_or_else(bad)?;
        let port = match tail {
            "" => None,
            t => Some(
                t.strip_prefix(':')
                    .and_then(|p| p.parse::<u16>().ok())
                    .ok_or_else(bad)?,
            ),
        };
        (format!("[{host}]"), port)
    } else if rest.matches(':').count() > 1 {
        return Err(bad());
    } else if let Some((host, port)) = rest.split_once(':') {
        (
            host.to_string(),
            Some(port.parse::<u16>().map_err(|_| bad())?),
        )
    } else {
        (rest.to_string(), None)
    };
    let port = match rule {
        Port::Override(p) if !from_url => p,
        Port::Override(_) => port.unwrap_or(DEFAULT_PORT),
        Port::Default(d) => port.unwrap_or(d),
    };
    if host.is_empty() || host == "[]" || port == 0 {
        return Err(bad());
    }
    Ok(Endpoint { scheme, host, port })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn from(v: Value) -> Result<ConsulConfig, ConfigError> {
        ConsulConfig::from_patroni(&v)
    }

    fn urls(c: &ConsulConfig) -> Vec<String> {
        c.endpoints.iter().map(Endpoint::base_url).collect()
    }

    #[test]
    fn defaults_to_the_local_agent_as_patroni_does() {
        let c = from(json!({})).unwrap();
        assert_eq!(urls(&c), ["http://127.0.0.1:8500"]);
        assert_eq!(c.consistency, Consistency::Default);
        assert!(c.checks.is_empty() && c.warnings.is_empty());
        assert_eq!(urls(&from(Value::Null).unwrap()), ["http://127.0.0.1:8500"]);
    }

    #[test]
    fn host_port_url_and_precedence() {
        assert_eq!(
            urls(&from(json!({"host": "consul1:8600"})).unwrap()),
            ["http://consul1:8600"]
        );
        // `port` wins over the port in `host`, as in Patroni.
        assert_eq!(
            urls(&from(json!({"host": "consul1:8600", "port": 9500})).unwrap()),
            ["http://consul1:9500"]
        );
        assert_eq!(
            urls(&from(json!({"host": "consul1", "port": "9501"})).unwrap()),
            ["http://consul1:9501"]
        );
        // `url` wins over `host`.
        assert_eq!(
            urls(&from(json!({"url": "http://u:1/", "host": "h:2"})).unwrap()),
            ["http://u:1"]
        );
        assert_eq!(
            urls(&from(json!({"url": "http://u"})).unwrap()),
            ["http://u:8500"]
        );
        assert_eq!(
            urls(&from(json!({"host": "[::1]:8501"})).unwrap()),
            ["http://[::1]:8501"]
        );
    }

    #[test]
    fn several_hosts_are_a_pgha_extension() {
        let c = from(json!({"hosts": "a:1, b ,,c:3", "port": 9000})).unwrap();
        assert_eq!(urls(&c), ["http://a:1", "http://b:9000", "http://c:3"]);
        let c = from(json!({"hosts": ["x:1", "http://y:2"], "host": "ignored:3"})).unwrap();
        assert_eq!(urls(&c), ["http://x:1", "http://y:2"]);
        assert_eq!(from(json!({"hosts": " , "})), Err(ConfigError::NoHosts));
    }

    #[test]
    fn token_dc_consistency_checks() {
        let c = from(json!({
            "token": "s3cret", "dc": "eu-1", "consistency": "consistent",
            "checks": ["serfHealth", "service:pg"]
        }))
        .unwrap();
        assert_eq!(c.token.as_deref(), Some("s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(c.dc.as_deref(), Some("eu-1"));
        assert_eq!(c.consistency, Consistency::Consistent);
        assert_eq!(c.checks, ["serfHealth", "service:pg"]);
        assert_eq!(
            from(json!({"consistency": "stale"})).unwrap().consistency,
            Consistency::Stale
        );
        assert!(matches!(
            from(json!({"consistency": "eventual"})),
            Err(ConfigError::Invalid { .. })
        ));
    }

    #[test]
    fn what_cannot_be_honoured_is_refused() {
        assert!(matches!(
            from(json!({"verify": false})),
            Err(ConfigError::Unsupported { key: "verify", .. })
        ));
        assert!(matches!(
            from(json!({"verify": "off"})),
            Err(ConfigError::Unsupported { key: "verify", .. })
        ));
        assert!(matches!(
            from(json!({"register_service": true})),
            Err(ConfigError::Unsupported {
                key: "register_service",
                ..
            })
        ));
        assert!(from(json!({"register_service": false, "verify": true})).is_ok());
        assert_eq!(
            from(json!({"scheme": "ftp"})),
            Err(ConfigError::BadScheme("ftp".into()))
        );
        assert!(matches!(
            from(json!({"host": "a:notaport"})),
            Err(ConfigError::BadAddress(_))
        ));
        assert!(matches!(
            from(json!({"host": "a:1/v1"})),
            Err(ConfigError::BadAddress(_))
        ));
        assert!(matches!(from(json!("x")), Err(ConfigError::NotAMapping(_))));
    }

    #[test]
    fn what_has_no_effect_is_warned_about_by_name() {
        let c = from(json!({
            "service_tags": ["a"], "service_check_interval": "5s",
            "service_check_tls_server_name": "x", "frobnicate": 1
        }))
        .unwrap();
        for key in [
            "service_tags",
            "service_check_interval",
            "service_check_tls_server_name",
            "frobnicate",
        ] {
            assert!(
                c.warnings
                    .iter()
                    .any(|w| w.contains(&format!("consul.{key} "))),
                "{key}: {:?}",
                c.warnings
            );
        }
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn tls_without_the_feature_is_refused() {
        assert!(matches!(
            from(json!({"scheme": "https"})),
            Err(ConfigError::TlsNotBuiltIn(_))
        ));
        assert!(matches!(
            from(json!({"cacert": "/ca.pem"})),
            Err(ConfigError::TlsNotBuiltIn(_))
        ));
    }

    #[cfg(feature = "tls")]
    #[test]
    fn tls_settings_are_checked() {
        assert_eq!(
            from(json!({"cacert": "/ca.pem"})),
            Err(ConfigError::TlsFilesWithoutHttps)
        );
        assert_eq!(
            from(json!({"scheme": "https", "cacert": "/ca.pem", "key": "/k.pem"})),
            Err(ConfigError::KeyWithoutCert)
        );
        let c = from(
            json!({"scheme": "https", "cacert": "/ca.pem", "cert": "/c.pem", "key": "/k.pem"}),
        )
        .unwrap();
        assert_eq!(urls(&c), ["https://127.0.0.1:8500"]);
    }
}
