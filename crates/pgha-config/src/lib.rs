//! The node configuration: Patroni's YAML, read as Patroni reads it.
//!
//! The only crate that knows Patroni's configuration format: it maps a
//! file onto the settings types of the crates that act on them
//! ([`Config::node_config`] for `pgha-node`, the `restapi` section onto
//! `pgha-rest`'s settings, the DCS section onto `pgha-dcs`').
//!
//! Loading goes: YAML text → document → `PATRONI_*` environment applied →
//! checked against the schema (every problem with its path, unsupported
//! keys warned about by name) → semantic checks (addresses, DCS section,
//! the timing rule) → the typed [`Config`]. Nothing is started and nothing
//! is touched until a file passes.

pub mod env;
pub mod log;
pub mod schema;
pub mod watchdog;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pgha_core::model::{DynamicConfig, KeyLayout, Review, Tags, Unsupported};
use serde_json::{Map, Value};

use pgha_core::model::lenient;
pub use pgha_postgres::address::{AddressError, HostPort, PgListen};
pub use pgha_postgres::settings::{
    BootstrapUser, Credentials, CustomBootstrap, NewCluster, PgSettings, ReplicaMethod,
};
use pgha_rest::access::AllowEntry;
use schema::{Findings, text_list};
pub use watchdog::{WatchdogConfig, WatchdogMode};

/// Why a configuration cannot be used: every problem, with its path.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid configuration{}:\n  {}", source_name.as_deref().map(|s| format!(" in {s}")).unwrap_or_default(), errors.join("\n  "))]
pub struct ConfigError {
    pub source_name: Option<String>,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// The `bootstrap` section: how the first node creates the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Bootstrap {
    /// Written to the DCS as `config` once, by the node that bootstraps.
    pub dcs: DynamicConfig,
    /// How PostgreSQL makes the new cluster; also in
    /// `postgresql.new_cluster`, which is what PostgreSQL control reads.
    pub new_cluster: NewCluster,
}

pub use pgha_node::config::PostgresqlHa;

pub use pgha_rest::settings::{RestApiAccess, RestApiTls, VerifyClient};

/// How pgha calls other members' REST APIs (and how pghactl calls them):
/// the `ctl` section, falling back to `restapi`'s files.
pub use pgha_rest_client::ClientTls;

pub use pgha_dcs::DcsSection;

/// A node's whole configuration, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub name: String,
    pub scope: String,
    pub namespace: String,
    /// `log`: level, format and destination.
    pub log: log::LogSettings,
    pub restapi_listen: HostPort,
    pub restapi_connect_address: HostPort,
    /// `restapi.authentication`: basic-auth credentials for the REST API's
    /// unsafe methods (POST, PUT, PATCH, DELETE).
    pub restapi_auth: Option<(String, String)>,
    /// HTTPS for the REST API, when `restapi.certfile` is set.
    pub restapi_tls: Option<RestApiTls>,
    /// Who may call the REST API's unsafe methods.
    pub restapi_access: RestApiAccess,
    /// How to reach other members' REST APIs.
    pub client_tls: ClientTls,
    pub dcs: DcsSection,
    pub bootstrap: Option<Bootstrap>,
    /// How PostgreSQL is run (the `postgresql` section, with `name`,
    /// `scope` and `bootstrap`'s initdb, users and pg_hba copied in).
    pub postgresql: PgSettings,
    /// What the `postgresql` section says about HA behaviour.
    pub postgresql_ha: PostgresqlHa,
    pub tags: Tags,
    /// The `watchdog` section.
    pub watchdog: WatchdogConfig,
    /// What pgha will not act on, by path.
    pub warnings: Vec<String>,
    /// Keys of this file that pgha refuses (`bootstrap.dcs.synchronous_mode`,
    /// `standby_cluster`, ...; see `pgha_core::model::dynamic_config::keys`):
    /// while any is set, this node never creates a new cluster, since the
    /// cluster would not be what the file asks for (a writable primary
    /// where a standby cluster was meant, asynchronous commits where
    /// synchronous ones were).
    pub refused: Vec<Unsupported>,
    /// The document after the environment was applied.
    pub document: Value,
}

impl Config {
    /// The file when one is given, else `PATRONI_CONFIGURATION` (as
    /// Patroni reads it), with the process's `PATRONI_*` variables applied.
    pub fn load_file_or_env(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            Some(path) => Config::load(path),
            None => match std::env::var("PATRONI_CONFIGURATION") {
                Ok(text) => {
                    Config::from_yaml(&text, std::env::vars(), Some("PATRONI_CONFIGURATION"))
                }
                Err(_) => Err(ConfigError {
                    source_name: None,
                    errors: vec![
                        "no configuration: give a file, or set PATRONI_CONFIGURATION".into(),
                    ],
                    warnings: Vec::new(),
                }),
            },
        }
    }

    /// Reads and checks a configuration file, applying the process's `PATRONI_*` variables.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source_name: Some(path.display().to_string()),
            errors: vec![format!("cannot read the file: {e}")],
            warnings: Vec::new(),
        })?;
        Config::from_yaml(&text, std::env::vars(), Some(&path.display().to_string()))
    }

    /// Checks a configuration from YAML text and environment variables.
    pub fn from_yaml(
        text: &str,
        vars: impl IntoIterator<Item = (String, String)>,
        source_name: Option<&str>,
    ) -> Result<Config, ConfigError> {
        let fail = |errors: Vec<String>, warnings: Vec<String>| ConfigError {
            source_name: source_name.map(String::from),
            errors,
            warnings,
        };
        let mut doc: Value = match serde_saphyr::from_str::<Value>(text) {
            Ok(Value::Null) => Value::Object(Map::new()),
            Ok(v) => v,
            Err(e) => return Err(fail(vec![format!("not valid YAML: {e}")], Vec::new())),
        };
        env::apply(&mut doc, vars);
        let mut findings = Findings::default();
        schema::check(&doc, schema::ROOT, "", &mut findings);
        let built = build(&doc, &mut findings);
        match built {
            Some(mut config) if findings.errors.is_empty() => {
                config.warnings = findings.warnings;
                Ok(config)
            }
            _ => Err(fail(findings.errors, findings.warnings)),
        }
    }

    /// Where the cluster's keys live.
    pub fn layout(&self) -> KeyLayout {
        KeyLayout::new(&self.namespace, &self.scope)
    }

    /// `postgres://host:port/postgres`, as published in the member key.
    pub fn conn_url(&self) -> String {
        format!("postgres://{}/postgres", self.postgresql.connect_address)
    }

    /// `http(s)://host:port/patroni`, as published in the member key.
    pub fn api_url(&self) -> String {
        let scheme = if self.restapi_tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}/patroni", self.restapi_connect_address)
    }

    /// The `verify_client` the REST API enforces: none over plain HTTP or
    /// without a `cafile` (nothing to verify against).
    pub fn restapi_verify_client(&self) -> VerifyClient {
        match &self.restapi_tls {
            Some(t) if t.cafile.is_some() => t.verify_client,
            _ => VerifyClient::None,
        }
    }

    /// What the node runtime needs of this file.
    pub fn node_config(&self) -> pgha_node::NodeConfig {
        pgha_node::NodeConfig {
            name: self.name.clone(),
            layout: self.layout(),
            postgresql: self.postgresql.clone(),
            ha: self.postgresql_ha.clone(),
            tags: self.tags.clone(),
            watchdog: self.watchdog.clone(),
            api_url: self.api_url(),
            bootstrap: self.bootstrap.as_ref().map(|b| b.dcs.clone()),
            refused: self.refused.clone(),
            client_tls: self.client_tls.clone(),
            client_auth: self
                .restapi_auth
                .clone()
                .map(|(username, password)| pgha_rest_client::BasicAuth { username, password }),
        }
    }

    /// The full path of a PostgreSQL binary (`pg_ctl`, `initdb`, ...).
    pub fn binary(&self, name: &str) -> PathBuf {
        self.postgresql.binary(name)
    }
}

fn get<'a>(doc: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut here = doc;
    for key in path {
        here = here.get(key)?;
    }
    (!here.is_null()).then_some(here)
}

fn text(doc: &Value, path: &[&str]) -> Option<String> {
    get(doc, path).and_then(lenient::text)
}

fn flag(doc: &Value, path: &[&str]) -> Option<bool> {
    get(doc, path).and_then(pgha_core::model::lenient::bool)
}

/// Builds the typed config, adding semantic problems to `findings`.
/// Returns `None` when the document is too broken to build from.
fn build(doc: &Value, findings: &mut Findings) -> Option<Config> {
    let errors = &mut findings.errors;
    let warnings = &mut findings.warnings;

    let name = text(doc, &["name"]).unwrap_or_default();
    let scope = text(doc, &["scope"]).unwrap_or_default();
    if name.contains('/') {
        errors.push(format!("name: {name:?} may not contain '/'"));
    }
    let namespace = text(doc, &["namespace"]).unwrap_or_else(|| "/service/".to_string());

    let mut address =
        |path: &[&str], parse: fn(&str) -> Result<HostPort, AddressError>| -> Option<HostPort> {
            let raw = text(doc, path)?;
            parse(&raw)
                .map_err(|e| errors.push(format!("{}: {e}", path.join("."))))
                .ok()
        };
    let restapi_listen = address(&["restapi", "listen"], HostPort::parse_listen);
    let restapi_connect_address = address(&["restapi", "connect_address"], HostPort::parse_connect);
    let pg_connect = address(&["postgresql", "connect_address"], HostPort::parse_connect);
    let pg_listen = text(doc, &["postgresql", "listen"]).and_then(|raw| {
        PgListen::parse(&raw)
            .map_err(|e| errors.push(format!("postgresql.listen: {e}")))
            .ok()
    });

    // Exactly one DCS pgha can talk to.
    let dcs = dcs_section(doc, errors);

    let bootstrap = get(doc, &["bootstrap"]).map(|b| build_bootstrap(b, errors, warnings));
    let refused = refused_keys(doc, bootstrap.as_ref());
    for u in &refused {
        warnings.push(format!(
            "{u}: this node will not create a new cluster while it is set"
        ));
    }
    let postgresql =
        build_postgresql(doc, pg_listen, pg_connect, errors, warnings).map(|(mut pg, ha)| {
            pg.member.clone_from(&name);
            pg.scope.clone_from(&scope);
            pg.new_cluster = bootstrap.as_ref().map(|b| b.new_cluster.clone());
            (pg, ha)
        });

    let tags = match get(doc, &["tags"]) {
        Some(Value::Object(map)) => Tags(map.clone()),
        _ => Tags::default(),
    };
    // A tag pgha publishes (pghactl topology and patronictl show it) but
    // does not act on yet: named, never silently taken for done.
    if tags.replicatefrom() == Some(name.as_str()) {
        warnings
            .push("tags.replicatefrom: names this node itself; it streams from the leader".into());
    }
    if tags.nostream() && get(doc, &["postgresql", "recovery_conf", "restore_command"]).is_none() {
        warnings.push(
            "tags.nostream: this replica does not stream and postgresql.recovery_conf has no restore_command, so it replays only WAL put in its pg_wal by other means".into(),
        );
    }
    let log = log::build(get(doc, &["log"]), errors, warnings);

    let (postgresql, postgresql_ha) = postgresql?;
    Some(Config {
        name,
        scope,
        namespace,
        log,
        restapi_listen: restapi_listen?,
        restapi_connect_address: restapi_connect_address?,
        restapi_auth: text(doc, &["restapi", "authentication", "username"])
            .zip(text(doc, &["restapi", "authentication", "password"])),
        restapi_tls: restapi_tls(doc, errors),
        restapi_access: restapi_access(doc, errors),
        client_tls: client_tls(doc),
        dcs: dcs?,
        bootstrap,
        postgresql,
        postgresql_ha,
        tags,
        watchdog: watchdog::build(get(doc, &["watchdog"]), errors),
        warnings: Vec::new(),
        refused,
        document: doc.clone(),
    })
}

fn restapi_tls(doc: &Value, errors: &mut Vec<String>) -> Option<RestApiTls> {
    let certfile = text(doc, &["restapi", "certfile"]).map(PathBuf::from)?;
    if text(doc, &["restapi", "keyfile_password"]).is_some() {
        errors.push("restapi.keyfile_password: encrypted private keys are not supported; give an unencrypted keyfile (mode 0600)".into());
    }
    let verify_client = match text(doc, &["restapi", "verify_client"]).as_deref() {
        None | Some("none") => VerifyClient::None,
        Some("optional") => VerifyClient::Optional,
        Some("required") => VerifyClient::Required,
        Some(other) => {
            errors.push(format!(
                "restapi.verify_client: {other:?} is not one of none, optional, required"
            ));
            VerifyClient::None
        }
    };
    let cafile = text(doc, &["restapi", "cafile"]).map(PathBuf::from);
    if verify_client != VerifyClient::None && cafile.is_none() {
        errors.push(
            "restapi.cafile: missing (needed to check client certificates with verify_client)"
                .into(),
        );
    }
    Some(RestApiTls {
        keyfile: text(doc, &["restapi", "keyfile"])
            .map(PathBuf::from)
            .unwrap_or_else(|| certfile.clone()),
        certfile,
        cafile,
        verify_client,
    })
}

/// `restapi.allowlist` (a list; the schema check reports anything else)
/// and `allowlist_include_members`. Invalid entries are errors rather than
/// Patroni's logged-and-dropped: a list whose every entry was dropped
/// would admit everyone.
fn restapi_access(doc: &Value, errors: &mut Vec<String>) -> RestApiAccess {
    let mut allowlist = Vec::new();
    if let Some(Value::Array(items)) = get(doc, &["restapi", "allowlist"]) {
        for (i, item) in items.iter().enumerate() {
            let here = format!("restapi.allowlist[{i}]");
            match item {
                Value::String(text) => match AllowEntry::parse(text) {
                    Ok(entry) => allowlist.push(entry),
                    Err(e) => errors.push(format!("{here}: {text:?}: {e}")),
                },
                other => errors.push(format!(
                    "{here}: expected an IP address, a network or a host name, found {}",
                    schema::kind_name(other)
                )),
            }
        }
    }
    RestApiAccess {
        allowlist,
        include_members: flag(doc, &["restapi", "allowlist_include_members"]).unwrap_or(false),
    }
}

fn client_tls(doc: &Value) -> ClientTls {
    ClientTls {
        cacert: text(doc, &["ctl", "cacert"])
            .or_else(|| text(doc, &["restapi", "cafile"]))
            .map(PathBuf::from),
        certfile: text(doc, &["ctl", "certfile"])
            .or_else(|| text(doc, &["restapi", "certfile"]))
            .map(PathBuf::from),
        keyfile: text(doc, &["ctl", "keyfile"])
            .or_else(|| text(doc, &["ctl", "certfile"]))
            .or_else(|| text(doc, &["restapi", "keyfile"]))
            .or_else(|| text(doc, &["restapi", "certfile"]))
            .map(PathBuf::from),
        insecure: flag(doc, &["ctl", "insecure"]).unwrap_or(false),
    }
}

/// Wraps a DCS section's value in its variant.
type SectionKind = (&'static str, fn(Value) -> DcsSection);

/// The one DCS section of the document.
fn dcs_section(doc: &Value, errors: &mut Vec<String>) -> Option<DcsSection> {
    let supported: Vec<SectionKind> = vec![
        ("etcd3", DcsSection::Etcd3),
        ("zookeeper", DcsSection::ZooKeeper),
        ("consul", DcsSection::Consul),
        ("kubernetes", DcsSection::Kubernetes),
    ];
    let present: Vec<SectionKind> = supported
        .into_iter()
        .filter(|(k, _)| get(doc, &[k]).is_some())
        .collect();
    let unsupported: Vec<&str> = ["etcd", "raft", "exhibitor"]
        .into_iter()
        .filter(|k| get(doc, &[k]).is_some())
        .collect();
    match present.as_slice() {
        [(key, make)] => get(doc, &[key]).cloned().map(make),
        [] => {
            errors.push(if unsupported.is_empty() {
                "etcd3: missing (a DCS section is required: etcd3, zookeeper, consul or kubernetes)".into()
            } else {
                format!(
                    "{}: this DCS is not supported by pgha; use etcd3, zookeeper, consul or kubernetes",
                    unsupported.join(", ")
                )
            });
            None
        }
        several => {
            let names: Vec<&str> = several.iter().map(|(k, _)| *k).collect();
            errors.push(format!(
                "{}: configure one DCS, not several",
                names.join(", ")
            ));
            None
        }
    }
}

/// The `tracing` filter for a Patroni log level.
pub fn log_filter(level: &str) -> Option<&'static str> {
    Some(match level.to_ascii_uppercase().as_str() {
        "DEBUG" => "debug",
        "INFO" => "info",
        "WARNING" | "WARN" => "warn",
        "ERROR" | "CRITICAL" | "FATAL" => "error",
        _ => return None,
    })
}

/// The refused keys a node's file sets: in `bootstrap.dcs` (what a new
/// cluster would be created with) and a top-level `standby_cluster`
/// (Patroni reads it from `bootstrap.dcs` only, but whoever wrote it meant a
/// standby cluster all the same).
fn refused_keys(doc: &Value, bootstrap: Option<&Bootstrap>) -> Vec<Unsupported> {
    let mut out = bootstrap
        .map(|b| Review::of(b.dcs.as_map(), "bootstrap.dcs").unsupported)
        .unwrap_or_default();
    if let Some(standby) = get(doc, &["standby_cluster"]).filter(|v| !v.is_null()) {
        out.push(Unsupported {
            key: "standby_cluster".into(),
            feature: "standby_cluster at the top level of a node's file (Patroni reads it from \
                      bootstrap.dcs only; move it there)",
            value: standby.to_string(),
        });
    }
    out
}

fn build_bootstrap(b: &Value, errors: &mut Vec<String>, warnings: &mut Vec<String>) -> Bootstrap {
    let dcs = match b.get("dcs") {
        Some(Value::Object(map)) => DynamicConfig::from_map(map.clone()),
        _ => DynamicConfig::new(),
    };
    let review = Review::of(dcs.as_map(), "bootstrap.dcs");
    errors.extend(review.errors);
    warnings.extend(review.warnings);
    let (_, notes) = dcs.timing();
    for n in notes {
        warnings.push(format!("bootstrap.dcs: {n}"));
    }
    let mut initdb = Vec::new();
    if let Some(Value::Array(items)) = b.get("initdb") {
        for (i, item) in items.iter().enumerate() {
            match item {
                Value::String(flag) => initdb.push(format!("--{flag}")),
                Value::Object(map) if map.len() == 1 => {
                    for (k, v) in map {
                        match lenient::text(v) {
                            Some(v) => initdb.push(format!("--{k}={v}")),
                            None => errors.push(format!(
                                "bootstrap.initdb[{i}].{k}: expected a single value"
                            )),
                        }
                    }
                }
                _ => errors.push(format!(
                    "bootstrap.initdb[{i}]: expected an option name or a one-key mapping, found {}",
                    schema::kind_name(item)
                )),
            }
        }
    }
    let pg_hba = b
        .get("pg_hba")
        .and_then(Value::as_array)
        .map(|l| l.iter().filter_map(lenient::text).collect());
    if pg_hba.is_some() {
        warnings.push("bootstrap.pg_hba: deprecated in Patroni; prefer postgresql.pg_hba".into());
    }
    let mut users = Vec::new();
    if let Some(Value::Object(map)) = b.get("users") {
        warnings.push("bootstrap.users: deprecated in Patroni; prefer post_bootstrap".into());
        for (name, spec) in map {
            users.push(BootstrapUser {
                name: name.clone(),
                password: spec.get("password").and_then(lenient::text),
                options: spec.get("options").map(text_list).unwrap_or_default(),
            });
        }
    }
    let post_bootstrap = b
        .get("post_bootstrap")
        .or_else(|| b.get("post_init"))
        .and_then(lenient::text);
    let custom = custom_bootstrap(b, errors);
    Bootstrap {
        dcs,
        new_cluster: NewCluster {
            initdb,
            pg_hba,
            users,
            post_bootstrap,
            custom,
        },
    }
}

/// `bootstrap.method` other than `initdb`, and its `bootstrap.<method>`
/// section, as Patroni reads them: a method without a `command` falls back
/// to initdb in Patroni, silently; here it is an error naming the key, so a
/// restore is never replaced by an empty new cluster.
fn custom_bootstrap(b: &Value, errors: &mut Vec<String>) -> Option<CustomBootstrap> {
    let method = b.get("method").and_then(lenient::text)?;
    if method == "initdb" {
        return None;
    }
    let Some(section) = b.get(method.as_str()).and_then(Value::as_object) else {
        errors.push(format!(
            "bootstrap.{method}: missing (bootstrap.method names {method:?})"
        ));
        return None;
    };
    let Some(command) = section.get("command").and_then(lenient::text) else {
        errors.push(format!(
            "bootstrap.{method}.command: missing (bootstrap.method names {method:?})"
        ));
        return None;
    };
    let flag = |k: &str| section.get(k).and_then(lenient::bool).unwrap_or(false);
    let recovery_conf = match section.get("recovery_conf") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(
            m.iter()
                .filter_map(|(k, v)| lenient::text(v).map(|v| (k.clone(), v)))
                .collect(),
        ),
        Some(other) => {
            errors.push(format!(
                "bootstrap.{method}.recovery_conf: expected a mapping, found {}",
                schema::kind_name(other)
            ));
            None
        }
    };
    const RESERVED: [&str; 6] = [
        "command",
        "no_params",
        "keep_existing_recovery_conf",
        "recovery_conf",
        "scope",
        "datadir",
    ];
    let params = section
        .iter()
        .filter(|(k, _)| !RESERVED.contains(&k.as_str()))
        .filter_map(|(k, v)| lenient::text(v).map(|v| (k.clone(), v)))
        .collect();
    Some(CustomBootstrap {
        name: method,
        command,
        no_params: flag("no_params"),
        keep_existing_recovery_conf: flag("keep_existing_recovery_conf"),
        recovery_conf,
        params,
    })
}

fn credentials(
    doc: &Value,
    role: &str,
    default_user: Option<&str>,
    warnings: &mut Vec<String>,
) -> Option<Credentials> {
    let section = get(doc, &["postgresql", "authentication", role]);
    let username = section
        .and_then(|s| s.get("username"))
        .and_then(lenient::text);
    let username = match (username, default_user) {
        (Some(u), _) => u,
        (None, Some(d)) => {
            warnings.push(format!(
                "postgresql.authentication.{role}.username: missing; using {d:?}"
            ));
            d.to_string()
        }
        (None, None) => return None,
    };
    let mut ssl = BTreeMap::new();
    if let Some(Value::Object(map)) = section {
        for (k, v) in map {
            if k != "username"
                && k != "password"
                && let Some(v) = lenient::text(v)
            {
                ssl.insert(k.clone(), v);
            }
        }
    }
    Some(Credentials {
        username,
        password: section
            .and_then(|s| s.get("password"))
            .and_then(lenient::text),
        ssl,
    })
}

/// A custom replica method from its `postgresql.<name>` section: `None`
/// without a `command`. `keep_data`, `no_params` and `no_leader` (Patroni's
/// older `no_master`) are read; the other keys are passed to the command
/// as `--key=value`, as Patroni does.
fn custom_replica_method(name: &str, section: Option<&Value>) -> Option<ReplicaMethod> {
    let command = section?.get("command").and_then(lenient::text)?;
    let mut params = section
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut flag = |k: &str| {
        params
            .remove(k)
            .and_then(|v| pgha_core::model::lenient::bool(&v))
            .unwrap_or(false)
    };
    let keep_data = flag("keep_data");
    let no_params = flag("no_params");
    let no_leader = flag("no_leader") | flag("no_master");
    params.remove("command");
    Some(ReplicaMethod::Custom {
        name: name.to_string(),
        command,
        keep_data,
        no_params,
        no_leader,
        params,
    })
}

/// The recovery settings a replica may run with (`postgresql.recovery_conf`).
const REPLICA_RECOVERY: &[&str] = &[
    "restore_command",
    "archive_cleanup_command",
    "recovery_end_command",
    "recovery_min_apply_delay",
];

/// `postgresql.recovery_conf`: the settings every replica runs with. Keys
/// pgha manages itself (`primary_conninfo`, `primary_slot_name`,
/// `recovery_target_timeline`) and recovery targets (which would stop a
/// replica's replay) are warned by name and not applied.
fn replica_recovery_conf(
    section: Option<&Value>,
    errors: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Vec<(String, String)> {
    let entries = match section {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::Object(m)) => m,
        Some(other) => {
            errors.push(format!(
                "postgresql.recovery_conf: expected a mapping, found {}",
                schema::kind_name(other)
            ));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (key, value) in entries {
        let Some(value) = lenient::text(value) else {
            errors.push(format!(
                "postgresql.recovery_conf.{key}: expected a value, found {}",
                schema::kind_name(value)
            ));
            continue;
        };
        if REPLICA_RECOVERY.contains(&key.as_str()) {
            out.push((key.clone(), value));
        } else if [
            "primary_conninfo",
            "primary_slot_name",
            "recovery_target_timeline",
        ]
        .contains(&key.as_str())
        {
            warnings.push(format!(
                "postgresql.recovery_conf.{key}: set by pgha itself for every replica; not applied"
            ));
        } else {
            warnings.push(format!(
                "postgresql.recovery_conf.{key}: not applied to replicas (pgha applies {})",
                REPLICA_RECOVERY.join(", ")
            ));
        }
    }
    out
}

fn build_postgresql(
    doc: &Value,
    listen: Option<PgListen>,
    connect_address: Option<HostPort>,
    errors: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Option<(PgSettings, PostgresqlHa)> {
    let data_dir = text(doc, &["postgresql", "data_dir"]).map(PathBuf::from);
    if let Some(d) = &data_dir
        && d.is_relative()
    {
        errors.push(format!(
            "postgresql.data_dir: {} must be an absolute path",
            d.display()
        ));
    }
    let superuser = credentials(doc, "superuser", Some("postgres"), warnings)?;
    let replication = credentials(doc, "replication", Some("replicator"), warnings)?;
    let rewind = credentials(doc, "rewind", None, warnings);

    let pgpass = text(doc, &["postgresql", "pgpass"])
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home =
                std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
            home.join(".pgpass_pgha")
        });

    let parameters = match get(doc, &["postgresql", "parameters"]) {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    for managed in [
        "listen_addresses",
        "port",
        "hot_standby",
        "primary_conninfo",
        "primary_slot_name",
    ] {
        if parameters.contains_key(managed) {
            warnings.push(format!(
                "postgresql.parameters.{managed}: set by pgha from the rest of the configuration; this value is ignored"
            ));
        }
    }

    let lines = |key: &str| {
        get(doc, &["postgresql", key])
            .and_then(Value::as_array)
            .map(|l| l.iter().filter_map(lenient::text).collect())
    };

    let mut methods = Vec::new();
    let names = get(doc, &["postgresql", "create_replica_methods"])
        .map(text_list)
        .unwrap_or_else(|| vec!["basebackup".into()]);
    for name in names {
        if name == "basebackup" {
            match basebackup_options(get(doc, &["postgresql", "basebackup"])) {
                Ok(options) => methods.push(ReplicaMethod::Basebackup { options }),
                Err(e) => errors.push(format!("postgresql.basebackup: {e}")),
            }
            continue;
        }
        match custom_replica_method(&name, get(doc, &["postgresql", &name])) {
            Some(method) => methods.push(method),
            None => errors.push(format!(
                "postgresql.{name}.command: missing (create_replica_methods names {name:?})"
            )),
        }
    }
    // Methods defined but not listed: standby_cluster.create_replica_methods
    // may name them (the standby leader's creation).
    let other_replica_methods = get(doc, &["postgresql"])
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(name, _)| {
            !methods.iter().any(|m| match m {
                ReplicaMethod::Custom { name: n, .. } => n == *name,
                ReplicaMethod::Basebackup { .. } => false,
            })
        })
        .filter_map(|(name, section)| custom_replica_method(name, Some(section)))
        .collect();

    let bin_name = match get(doc, &["postgresql", "bin_name"]) {
        Some(Value::Object(m)) => m
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), lenient::text(v)?)))
            .collect(),
        _ => BTreeMap::new(),
    };
    let pg_ctl_timeout = get(doc, &["postgresql", "pg_ctl_timeout"])
        .and_then(pgha_core::model::lenient::int)
        .and_then(|s| u64::try_from(s).ok())
        .unwrap_or(60);

    let pg = PgSettings {
        member: String::new(),
        scope: String::new(),
        listen: listen?,
        connect_address: connect_address?,
        data_dir: data_dir?,
        bin_dir: text(doc, &["postgresql", "bin_dir"]).map(PathBuf::from),
        bin_name,
        pgpass,
        superuser,
        replication,
        rewind,
        parameters,
        pg_hba: lines("pg_hba"),
        pg_ident: lines("pg_ident"),
        pg_ctl_timeout: Duration::from_secs(pg_ctl_timeout),
        create_replica_methods: methods,
        other_replica_methods,
        recovery_conf: replica_recovery_conf(
            get(doc, &["postgresql", "recovery_conf"]),
            errors,
            warnings,
        ),
        use_unix_socket: flag(doc, &["postgresql", "use_unix_socket"]).unwrap_or(false),
        new_cluster: None,
    };
    let ha = PostgresqlHa {
        use_pg_rewind: flag(doc, &["postgresql", "use_pg_rewind"]),
        use_slots: flag(doc, &["postgresql", "use_slots"]),
        remove_data_directory_on_rewind_failure: flag(
            doc,
            &["postgresql", "remove_data_directory_on_rewind_failure"],
        ),
        remove_data_directory_on_diverged_timelines: flag(
            doc,
            &["postgresql", "remove_data_directory_on_diverged_timelines"],
        ),
        callbacks: match get(doc, &["postgresql", "callbacks"]) {
            Some(Value::Object(m)) => m
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), lenient::text(v)?)))
                .collect(),
            _ => BTreeMap::new(),
        },
        pre_promote: text(doc, &["postgresql", "pre_promote"]),
    };
    Some((pg, ha))
}

/// What is wrong with a `basebackup` setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum BasebackupError {
    #[error("{0}: expected a single value")]
    NotSingle(String),
    #[error("expected option names or mappings, found {0}")]
    BadItem(&'static str),
    #[error("expected a list or a mapping, found {0}")]
    BadKind(&'static str),
}

/// pg_basebackup flags from Patroni's `basebackup` setting: a list of
/// option names and one-key mappings, or a mapping.
fn basebackup_options(v: Option<&Value>) -> Result<Vec<String>, BasebackupError> {
    let mut out = Vec::new();
    let mut push = |k: &str, v: Option<&Value>| -> Result<(), BasebackupError> {
        match v {
            None => out.push(format!("--{k}")),
            Some(v) => out.push(format!(
                "--{k}={}",
                lenient::text(v).ok_or_else(|| BasebackupError::NotSingle(k.to_string()))?
            )),
        }
        Ok(())
    };
    match v {
        None => {}
        Some(Value::Array(items)) => {
            for item in items {
                match item {
                    Value::String(s) => push(s, None)?,
                    Value::Object(m) => {
                        for (k, v) in m {
                            push(k, Some(v))?;
                        }
                    }
                    other => return Err(BasebackupError::BadItem(schema::kind_name(other))),
                }
            }
        }
        Some(Value::Object(m)) => {
            for (k, v) in m {
                push(k, Some(v))?;
            }
        }
        Some(other) => return Err(BasebackupError::BadKind(schema::kind_name(other))),
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
