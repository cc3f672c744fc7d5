//! `pghactl`: patronictl's commands for pgha (and Patroni) clusters.
//!
//! Takes patronictl's configuration: a node's YAML file works, or one with
//! just `scope`, `namespace`, the DCS section and `ctl.authentication`.
//! Commands that only look read the DCS directly; commands that act call the
//! members' REST APIs exactly as patronictl does (same paths, bodies and
//! methods), so they work against pgha and Patroni nodes alike.
//!
//! One module per command group; [`cli`] holds the command line and
//! [`run`] dispatches to them.

pub mod cli;
pub mod cluster_role;
pub mod config;
pub mod diff;
pub mod history;
pub mod list;
pub mod members;
pub mod output;
pub mod pause;
pub mod prompt;
pub mod query;
pub mod remove;
pub mod restart;
pub mod schedule;
pub mod switchover;
pub mod table;
pub mod version;
pub mod yaml;

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pgha_core::dcs::{Dcs, DcsError};
use pgha_core::model::{Cluster, KeyLayout, Timing};
use serde_json::{Value, json};

use pgha_config::{ClientTls, DcsSection, env};
use pgha_core::model::lenient;
use pgha_rest_client::{BasicAuth, RestClient};
use prompt::Console;

/// How a command failed. The binary prints it and exits with status 1.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The user said no, or the input ended before an answer.
    #[error("Aborted!")]
    Aborted,
    /// Something went wrong; the text says what (printed as `Error: ...`).
    #[error("{0}")]
    Failed(String),
    /// Failures were already printed (one line per member); exit 1 quietly.
    #[error("some actions failed")]
    Reported,
}

impl CtlError {
    pub fn failed(text: impl Into<String>) -> Self {
        CtlError::Failed(text.into())
    }
}

/// Why pghactl's configuration (the file, `PATRONI_*`, `--dcs-url`) cannot
/// be used. Messages follow patronictl's where it has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CtlConfigError {
    #[error(
        "Provided config file {} not existing or no read rights ({reason}). Check the -c/--config-file parameter",
        file.display()
    )]
    Unreadable { file: PathBuf, reason: String },
    /// The named file's contents are wrong: which file, and why.
    #[error("{}: {source}", file.display())]
    InFile {
        file: PathBuf,
        source: Box<CtlConfigError>,
    },
    #[error("not valid YAML: {0}")]
    NotYaml(String),
    #[error("expected a YAML mapping")]
    NotAMapping,
    /// A DCS pghactl cannot talk to (`etcd`, `raft`, `exhibitor`).
    #[error(
        "{0}: this DCS is not supported by pghactl yet; use etcd3, zookeeper, consul or kubernetes"
    )]
    UnsupportedDcs(String),
    #[error("{}: configure one DCS, not several", .0.join(", "))]
    SeveralDcs(Vec<String>),
    #[error("--dcs-url {url}: bad port {port:?}")]
    DcsUrlPort { url: String, port: String },
    #[error("--dcs-url {0}: exhibitor is not supported by pghactl (etcd3, zookeeper, consul)")]
    DcsUrlExhibitor(String),
    #[error("Unknown dcs scheme: {0}")]
    DcsUrlScheme(String),
}

/// A DCS error, with the cluster it was about.
fn dcs_error(cluster: &str, e: DcsError) -> CtlError {
    CtlError::Failed(format!("cannot read cluster {cluster} from the DCS: {e}"))
}

/// What pghactl needs to find clusters and talk to their members.
#[derive(Debug, Clone, Default)]
pub struct CtlConfig {
    /// The cluster commands act on when none is named.
    pub scope: Option<String>,
    pub namespace: String,
    pub dcs: Option<DcsSection>,
    /// Credentials for the REST API's unsafe methods.
    pub auth: Option<BasicAuth>,
    /// How `https://` members are checked (`ctl`, else `restapi`, files).
    pub tls: ClientTls,
}

/// Where patronictl looks for its configuration by default.
pub fn default_config_path() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".config/patroni/patronictl.yaml")
}

impl CtlConfig {
    /// Reads the configuration file (environment overrides applied) and
    /// applies `--dcs-url`. A missing file is an error when it was named,
    /// and an empty configuration when it is the default one (patronictl's rule).
    pub fn load(path: Option<&Path>, dcs_url: Option<&str>) -> Result<Self, CtlConfigError> {
        let (file, named) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (default_config_path(), false),
        };
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(_) if !named => String::new(),
            Err(e) => {
                return Err(CtlConfigError::Unreadable {
                    file,
                    reason: e.to_string(),
                });
            }
        };
        let mut config =
            Self::from_yaml(&text, std::env::vars()).map_err(|e| CtlConfigError::InFile {
                file: file.clone(),
                source: Box::new(e),
            })?;
        if let Some(url) = dcs_url {
            let (dcs, namespace) = parse_dcs_url(url)?;
            config.dcs = Some(dcs);
            if let Some(ns) = namespace {
                config.namespace = ns;
            }
        }
        Ok(config)
    }

    /// Reads a configuration document; `vars` are the environment
    /// (`PATRONI_SCOPE`, `PATRONI_ETCD3_HOSTS`, `PATRONI_CTL_USERNAME`, ...).
    pub fn from_yaml(
        text: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, CtlConfigError> {
        let mut doc: Value = if text.trim().is_empty() {
            json!({})
        } else {
            serde_saphyr::from_str(text).map_err(|e| CtlConfigError::NotYaml(e.to_string()))?
        };
        if !doc.is_object() {
            return Err(CtlConfigError::NotAMapping);
        }
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        env::apply(&mut doc, vars.iter().cloned());
        apply_ctl_env(&mut doc, &vars);
        let scope = doc.get("scope").and_then(lenient::text);
        let namespace = doc
            .get("namespace")
            .and_then(lenient::text)
            .unwrap_or_else(|| "/service/".into());
        let dcs = dcs_section(&doc)?;
        let auth = section_auth(&doc, "ctl").or_else(|| section_auth(&doc, "restapi"));
        Ok(CtlConfig {
            scope,
            namespace,
            dcs,
            auth,
            tls: client_tls(&doc),
        })
    }
}

/// Makes a [`DcsSection`] from a section's value.
type MakeSection = fn(Value) -> DcsSection;

/// The DCS sections pghactl can use, and how each becomes a [`DcsSection`].
const DCS_SECTIONS: [(&str, MakeSection); 4] = [
    ("etcd3", DcsSection::Etcd3),
    ("zookeeper", DcsSection::ZooKeeper),
    ("consul", DcsSection::Consul),
    ("kubernetes", DcsSection::Kubernetes),
];

/// The configuration's one DCS section (none is fine until a command needs it).
fn dcs_section(doc: &Value) -> Result<Option<DcsSection>, CtlConfigError> {
    let present: Vec<&(&str, MakeSection)> = DCS_SECTIONS
        .iter()
        .filter(|(key, _)| doc.get(*key).is_some())
        .collect();
    match present.as_slice() {
        [] => match ["etcd", "raft", "exhibitor"]
            .into_iter()
            .find(|k| doc.get(*k).is_some())
        {
            Some(k) => Err(CtlConfigError::UnsupportedDcs(k.to_string())),
            None => Ok(None),
        },
        [(key, make)] => Ok(doc.get(*key).cloned().map(make)),
        several => Err(CtlConfigError::SeveralDcs(
            several.iter().map(|(k, _)| k.to_string()).collect(),
        )),
    }
}

/// The `ctl` settings Patroni takes from the environment:
/// `PATRONI_CTL_USERNAME`/`PASSWORD` and `PATRONI_CTL_INSECURE`/`CACERT`/`CERTFILE`/`KEYFILE`.
fn apply_ctl_env(doc: &mut Value, vars: &[(String, String)]) {
    let settings: [(&str, &[&str]); 6] = [
        ("PATRONI_CTL_USERNAME", &["authentication", "username"]),
        ("PATRONI_CTL_PASSWORD", &["authentication", "password"]),
        ("PATRONI_CTL_INSECURE", &["insecure"]),
        ("PATRONI_CTL_CACERT", &["cacert"]),
        ("PATRONI_CTL_CERTFILE", &["certfile"]),
        ("PATRONI_CTL_KEYFILE", &["keyfile"]),
    ];
    for (var, path) in settings {
        let Some((_, value)) = vars.iter().find(|(k, v)| k == var && !v.is_empty()) else {
            continue;
        };
        let mut node = &mut *doc;
        for key in std::iter::once(&"ctl").chain(path.iter()) {
            if !node.is_object() {
                *node = json!({});
            }
            let Some(map) = node.as_object_mut() else {
                return;
            };
            node = map.entry(*key).or_insert(Value::Null);
        }
        *node = Value::String(value.clone());
    }
}

/// How pghactl checks `https://` members, as the agent does for its peers:
/// `ctl.cacert`/`certfile`/`keyfile`/`insecure`, else the `restapi` files.
fn client_tls(doc: &Value) -> ClientTls {
    let text = |section: &str, key: &str| doc.get(section)?.get(key).and_then(lenient::text);
    ClientTls {
        cacert: text("ctl", "cacert")
            .or_else(|| text("restapi", "cafile"))
            .map(PathBuf::from),
        certfile: text("ctl", "certfile")
            .or_else(|| text("restapi", "certfile"))
            .map(PathBuf::from),
        keyfile: text("ctl", "keyfile")
            .or_else(|| text("ctl", "certfile"))
            .or_else(|| text("restapi", "keyfile"))
            .or_else(|| text("restapi", "certfile"))
            .map(PathBuf::from),
        insecure: doc
            .get("ctl")
            .and_then(|c| c.get("insecure"))
            .and_then(pgha_core::model::lenient::bool)
            .unwrap_or(false),
    }
}

/// `<section>.authentication.{username,password}`, or the older
/// `<section>.auth: "user:password"`.
fn section_auth(doc: &Value, section: &str) -> Option<BasicAuth> {
    let s = doc.get(section)?;
    if let Some(a) = s.get("authentication") {
        let username = a.get("username").and_then(lenient::text)?;
        let password = a
            .get("password")
            .and_then(lenient::text)
            .unwrap_or_default();
        return Some(BasicAuth { username, password });
    }
    let (username, password) = s.get("auth").and_then(Value::as_str)?.split_once(':')?;
    Some(BasicAuth {
        username: username.into(),
        password: password.into(),
    })
}

/// patronictl's `--dcs-url DCS://HOST:PORT/NAMESPACE`. pgha speaks etcd v3,
/// ZooKeeper and Consul; `etcd://` (and no scheme) mean etcd v3 here.
pub fn parse_dcs_url(url: &str) -> Result<(DcsSection, Option<String>), CtlConfigError> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.trim_start_matches("//");
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (
            h,
            Some(p.parse::<u16>().map_err(|_| CtlConfigError::DcsUrlPort {
                url: url.to_string(),
                port: p.to_string(),
            })?),
        ),
        _ => (authority, None),
    };
    let host = if host.is_empty() { "localhost" } else { host };
    let scheme = match (scheme, port) {
        ("", Some(2181)) => "zookeeper",
        ("", Some(8500)) => "consul",
        ("", _) => "etcd3",
        (s, _) => s,
    };
    let namespace = (!path.trim().is_empty()).then(|| format!("/{}", path.trim()));
    let section = match scheme {
        "etcd3" | "etcd" => {
            DcsSection::Etcd3(json!({"host": format!("{host}:{}", port.unwrap_or(2379))}))
        }
        "zookeeper" => {
            DcsSection::ZooKeeper(json!({"hosts": [format!("{host}:{}", port.unwrap_or(2181))]}))
        }
        "consul" => DcsSection::Consul(json!({"host": format!("{host}:{}", port.unwrap_or(8500))})),
        "exhibitor" => {
            return Err(CtlConfigError::DcsUrlExhibitor(url.to_string()));
        }
        other => return Err(CtlConfigError::DcsUrlScheme(other.to_string())),
    };
    Ok((section, namespace))
}

/// Writes a line to standard output; a closed pipe (`pghactl list | head`)
/// is not an error worth a panic.
pub fn echo(text: impl AsRef<str>) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{}", text.as_ref());
    let _ = out.flush();
}

/// Writes text as it is (tables end with their own newline).
pub fn echo_raw(text: impl AsRef<str>) {
    let mut out = std::io::stdout();
    let _ = out.write_all(text.as_ref().as_bytes());
    let _ = out.flush();
}

/// Progress and warnings, on standard error so that standard output stays
/// what patronictl prints.
pub fn note(text: impl AsRef<str>) {
    let mut err = std::io::stderr();
    let _ = writeln!(err, "{}", text.as_ref());
}

/// Clears the terminal before a watch refresh (nothing when not a terminal).
pub fn clear_screen() {
    if std::io::stdout().is_terminal() {
        echo_raw("\x1b[H\x1b[2J");
    }
}

/// Everything a command needs: the configuration, DCS clients per cluster,
/// the REST client and the console for questions.
#[derive(Debug)]
pub struct Ctl {
    pub config: CtlConfig,
    pub rest: RestClient,
    pub console: Console,
    clients: HashMap<String, Arc<dyn Dcs>>,
}

impl Ctl {
    pub fn new(config: CtlConfig, console: Console) -> Self {
        let rest = RestClient::new("pghactl", config.auth.clone(), &config.tls);
        Ctl {
            config,
            rest,
            console,
            clients: HashMap::new(),
        }
    }

    /// The cluster named on the command line, else the configured scope.
    pub fn cluster_name(&self, given: Option<String>) -> Result<String, CtlError> {
        given.or_else(|| self.config.scope.clone()).ok_or_else(|| {
            CtlError::failed(
                "no cluster name given and the configuration has no scope (use -c CONFIG or name the cluster)",
            )
        })
    }

    /// The DCS client for `cluster` (one per cluster, reused).
    pub fn dcs(&mut self, cluster: &str) -> Result<Arc<dyn Dcs>, CtlError> {
        if let Some(d) = self.clients.get(cluster) {
            return Ok(d.clone());
        }
        let section = self.config.dcs.as_ref().ok_or_else(|| {
            CtlError::failed(
                "the configuration has no DCS section (etcd3, zookeeper or consul); use -c CONFIG or --dcs-url",
            )
        })?;
        let layout = KeyLayout::new(&self.config.namespace, cluster);
        // Every DCS call returns within retry_timeout: no command hangs on
        // a DCS that does not answer.
        let timing = Timing {
            retry_timeout: Duration::from_secs(5),
            ..Timing::default()
        };
        let dcs = pgha_dcs::connect(section, layout, "pghactl", timing)
            .map_err(|e| CtlError::Failed(e.to_string()))?;
        self.clients.insert(cluster.to_string(), dcs.clone());
        Ok(dcs)
    }

    /// Reads `cluster` from the DCS.
    pub async fn load(&mut self, cluster: &str) -> Result<Cluster, CtlError> {
        let dcs = self.dcs(cluster)?;
        dcs.load().await.map_err(|e| dcs_error(cluster, e))
    }
}

/// Runs one command.
pub async fn run(ctl: &mut Ctl, command: cli::Command) -> Result<(), CtlError> {
    use cli::Command as C;
    match command {
        C::List(a) => list::run(ctl, a, false).await,
        C::Topology(a) => list::run(ctl, a.into(), true).await,
        C::Switchover(a) => switchover::switchover(ctl, a).await,
        C::Failover(a) => switchover::failover(ctl, a).await,
        C::Restart(a) => restart::restart(ctl, a).await,
        C::Reload(a) => restart::reload(ctl, a).await,
        C::Reinit(a) => restart::reinit(ctl, a).await,
        C::Flush(a) => restart::flush(ctl, a).await,
        C::Pause(a) => pause::toggle(ctl, a, true).await,
        C::Resume(a) => pause::toggle(ctl, a, false).await,
        C::DemoteCluster(a) => cluster_role::demote(ctl, a).await,
        C::PromoteCluster(a) => cluster_role::promote(ctl, a).await,
        C::EditConfig(a) => config::edit_config(ctl, a).await,
        C::ShowConfig(a) => config::show_config(ctl, a).await,
        C::History(a) => history::run(ctl, a).await,
        C::Dsn(a) => query::dsn(ctl, a).await,
        C::Query(a) => query::query(ctl, a).await,
        C::Remove(a) => remove::run(ctl, a).await,
        C::Version(a) => version::run(ctl, a).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_node_configuration_gives_scope_dcs_and_rest_credentials() {
        let c = CtlConfig::from_yaml(
            "scope: demo\netcd3:\n  hosts: 127.0.0.1:2379\nrestapi:\n  authentication: {username: admin, password: secret}\n",
            vars(&[]),
        )
        .unwrap();
        assert_eq!(c.scope.as_deref(), Some("demo"));
        assert_eq!(c.namespace, "/service/");
        assert!(matches!(c.dcs, Some(DcsSection::Etcd3(_))));
        assert_eq!(c.auth.unwrap().username, "admin");
        // ctl.authentication wins over restapi's; the environment over the file.
        let c = CtlConfig::from_yaml(
            "scope: demo\nctl: {auth: 'u:p'}\nrestapi:\n  authentication: {username: admin, password: secret}\n",
            vars(&[("PATRONI_SCOPE", "other")]),
        )
        .unwrap();
        assert_eq!(c.scope.as_deref(), Some("other"));
        let auth = c.auth.unwrap();
        assert_eq!((auth.username.as_str(), auth.password.as_str()), ("u", "p"));
        let c = CtlConfig::from_yaml(
            "",
            vars(&[("PATRONI_CTL_USERNAME", "x"), ("PATRONI_CTL_PASSWORD", "y")]),
        )
        .unwrap();
        assert_eq!(c.auth.unwrap().password, "y");
        assert!(c.scope.is_none() && c.dcs.is_none());
        // TLS: ctl's files, else restapi's; insecure from the file or the environment.
        let c = CtlConfig::from_yaml(
            "restapi: {cafile: /ca.crt, certfile: /srv.crt}\nctl: {certfile: /cli.crt}\n",
            vars(&[("PATRONI_CTL_INSECURE", "true")]),
        )
        .unwrap();
        assert_eq!(
            c.tls,
            ClientTls {
                cacert: Some("/ca.crt".into()),
                certfile: Some("/cli.crt".into()),
                keyfile: Some("/cli.crt".into()),
                insecure: true,
            }
        );
    }

    #[test]
    fn dcs_urls() {
        let (d, ns) = parse_dcs_url("etcd3://10.0.0.1:2399/custom").unwrap();
        assert_eq!(d, DcsSection::Etcd3(json!({"host": "10.0.0.1:2399"})));
        assert_eq!(ns.as_deref(), Some("/custom"));
        let (d, ns) = parse_dcs_url("localhost:2181").unwrap();
        assert_eq!(
            d,
            DcsSection::ZooKeeper(json!({"hosts": ["localhost:2181"]}))
        );
        assert_eq!(ns, None);
        let (d, _) = parse_dcs_url("").unwrap();
        assert_eq!(d, DcsSection::Etcd3(json!({"host": "localhost:2379"})));
        let (d, _) = parse_dcs_url("consul://h").unwrap();
        assert_eq!(d, DcsSection::Consul(json!({"host": "h:8500"})));
        assert!(parse_dcs_url("exhibitor://h").is_err());
        assert_eq!(
            CtlConfig::from_yaml("kubernetes: {namespace: db}\n", vars(&[]))
                .unwrap()
                .dcs,
            Some(DcsSection::Kubernetes(json!({"namespace": "db"})))
        );
        assert_eq!(
            CtlConfig::from_yaml("raft: {}\n", vars(&[])).unwrap_err(),
            CtlConfigError::UnsupportedDcs("raft".into())
        );
        assert_eq!(
            CtlConfig::from_yaml("etcd3: {}\nconsul: {}\n", vars(&[])).unwrap_err(),
            CtlConfigError::SeveralDcs(vec!["etcd3".into(), "consul".into()])
        );
        assert_eq!(
            parse_dcs_url("foo://h").unwrap_err().to_string(),
            "Unknown dcs scheme: foo"
        );
    }
}
