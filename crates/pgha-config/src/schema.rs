//! The shape of Patroni's YAML configuration, and a checker that walks a
//! parsed document against it.
//!
//! Every problem is reported with its path in the file
//! (`postgresql.data_dir: missing`), all at once rather than one per run.
//! Keys pgha does not support yet are warned about by name, never silently
//! ignored; keys nobody knows are warned about as unknown.

use serde_json::Value;

/// What a key may hold.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A string; numbers and booleans are accepted and read as their text
    /// (YAML writes `port: 5432` and `password: 1234`).
    Text,
    Int,
    Bool,
    /// A list of strings, or one comma-separated string (`hosts`).
    TextList,
    /// A list of anything (checked elsewhere).
    List,
    /// A mapping with these keys.
    Section(&'static [Field]),
    /// A mapping with any keys (`parameters`, `tags`, `bootstrap.dcs`).
    Map,
    /// Anything.
    Any,
}

/// How well pgha supports a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Supported, optional.
    Yes,
    /// Supported and must be present.
    Required,
    /// Accepted, but pgha does not act on it yet: a warning names it.
    NotYet,
    /// Known to Patroni, not used by pgha, harmless: a warning names it.
    Ignored,
}

#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
    pub support: Support,
}

const fn f(name: &'static str, kind: Kind, support: Support) -> Field {
    Field {
        name,
        kind,
        support,
    }
}

use Kind::*;
use Support::*;

const CREDENTIALS: &[Field] = &[
    f("username", Text, Yes),
    f("password", Text, Yes),
    f("sslmode", Text, Yes),
    f("sslcert", Text, Yes),
    f("sslkey", Text, Yes),
    f("sslpassword", Text, Yes),
    f("sslrootcert", Text, Yes),
    f("sslcrl", Text, Yes),
    f("sslcrldir", Text, Yes),
    f("gssencmode", Text, Yes),
    f("channel_binding", Text, Yes),
];

const AUTHENTICATION: &[Field] = &[
    f("superuser", Section(CREDENTIALS), Yes),
    f("replication", Section(CREDENTIALS), Yes),
    f("rewind", Section(CREDENTIALS), Yes),
];

const CALLBACKS: &[Field] = &[
    f("on_start", Text, Yes),
    f("on_stop", Text, Yes),
    f("on_restart", Text, Yes),
    f("on_reload", Text, Yes),
    f("on_role_change", Text, Yes),
];

const POSTGRESQL: &[Field] = &[
    f("listen", Text, Required),
    f("connect_address", Text, Required),
    f("proxy_address", Text, Ignored),
    f("data_dir", Text, Required),
    f("config_dir", Text, NotYet),
    f("bin_dir", Text, Yes),
    f("bin_name", Map, Yes),
    f("pgpass", Text, Yes),
    f("authentication", Section(AUTHENTICATION), Yes),
    f("parameters", Map, Yes),
    f("pg_hba", List, Yes),
    f("pg_ident", List, Yes),
    f("pg_ctl_timeout", Int, Yes),
    f("use_pg_rewind", Bool, Yes),
    f("use_slots", Bool, Yes),
    f("remove_data_directory_on_rewind_failure", Bool, Yes),
    f("remove_data_directory_on_diverged_timelines", Bool, Yes),
    f("create_replica_methods", TextList, Yes),
    f("basebackup", Any, Yes),
    f("callbacks", Section(CALLBACKS), Yes),
    f("pre_promote", Text, Yes),
    f("before_stop", Text, NotYet),
    f("custom_conf", Text, NotYet),
    f("use_unix_socket", Bool, Yes),
    f("use_unix_socket_repl", Bool, NotYet),
    f("recovery_conf", Map, Yes),
    f("retry_timeout", Int, Ignored),
    f("connect_timeout", Int, Ignored),
];

const RESTAPI: &[Field] = &[
    f("listen", Text, Required),
    f("connect_address", Text, Required),
    f(
        "authentication",
        Section(&[f("username", Text, Yes), f("password", Text, Yes)]),
        Yes,
    ),
    f("certfile", Text, Yes),
    f("keyfile", Text, Yes),
    f("keyfile_password", Text, Yes),
    f("cafile", Text, Yes),
    f("ciphers", Text, Ignored),
    f("verify_client", Text, Yes),
    f("allowlist", List, Yes),
    f("allowlist_include_members", Bool, Yes),
    f("http_extra_headers", Map, NotYet),
    f("https_extra_headers", Map, NotYet),
    f("request_queue_size", Int, Ignored),
    f("server_tokens", Text, Ignored),
];

const ETCD3: &[Field] = &[
    f("host", Text, Yes),
    f("hosts", TextList, Yes),
    f("port", Int, Yes),
    f("protocol", Text, Yes),
    f("username", Text, Yes),
    f("password", Text, Yes),
    f("cacert", Text, Yes),
    f("cert", Text, Yes),
    f("key", Text, Yes),
    f("key_password", Text, NotYet),
    f("url", Text, Yes),
    f("proxy", Text, Yes),
    f("srv", Text, NotYet),
    f("srv_suffix", Text, NotYet),
    f("use_proxies", Bool, NotYet),
    f("retry_timeout", Int, Ignored),
];

const ZOOKEEPER: &[Field] = &[
    f("hosts", TextList, Yes),
    f("use_ssl", Bool, Yes),
    f("cacert", Text, Yes),
    f("cert", Text, Yes),
    f("key", Text, Yes),
    f("key_password", Text, Yes),
    f("verify", Bool, Yes),
    f("set_acls", Map, Yes),
    f("auth_data", Map, Yes),
];

/// Patroni's `consul:` section; pgha-dcs-consul reads it and names what it
/// refuses or ignores.
const CONSUL: &[Field] = &[
    f("host", Text, Yes),
    f("hosts", TextList, Yes),
    f("url", Text, Yes),
    f("port", Int, Yes),
    f("scheme", Text, Yes),
    f("token", Text, Yes),
    f("verify", Bool, Yes),
    f("cacert", Text, Yes),
    f("cert", Text, Yes),
    f("key", Text, Yes),
    f("dc", Text, Yes),
    f("consistency", Text, Yes),
    f("checks", Any, Yes),
    f("register_service", Bool, Yes),
    f("service_tags", Any, Ignored),
    f("service_check_interval", Text, Ignored),
    f("service_check_tls_server_name", Text, Ignored),
];

const BOOTSTRAP: &[Field] = &[
    f("dcs", Map, Yes),
    f("initdb", List, Yes),
    f("pg_hba", List, Yes),
    f("users", Map, Yes),
    f("post_bootstrap", Text, Yes),
    f("post_init", Text, Yes),
    f("method", Text, Yes),
];

const LOG: &[Field] = &[
    f("level", Text, Yes),
    f("type", Text, Yes),
    f("traceback_level", Text, Ignored),
    f("format", Any, NotYet),
    f("dateformat", Text, NotYet),
    f("static_fields", Map, Yes),
    f("max_queue_size", Int, Ignored),
    f("dir", Text, Yes),
    f("mode", Any, Yes),
    f("file_num", Int, Yes),
    f("file_size", Int, Yes),
    f("loggers", Map, Yes),
    f("deduplicate_heartbeat_logs", Bool, Ignored),
];

const CTL: &[Field] = &[
    f("insecure", Bool, Yes),
    f("cacert", Text, Yes),
    f("certfile", Text, Yes),
    f("keyfile", Text, Yes),
    f("keyfile_password", Text, Yes),
    f(
        "authentication",
        Section(&[f("username", Text, Required), f("password", Text, Required)]),
        Yes,
    ),
];

const WATCHDOG: &[Field] = &[
    f("mode", Text, Yes),
    f("device", Text, Yes),
    f("safety_margin", Int, Yes),
];

/// The top level of a Patroni 4 node configuration.
pub const ROOT: &[Field] = &[
    f("name", Text, Required),
    f("scope", Text, Required),
    f("namespace", Text, Yes),
    f("log", Section(LOG), Yes),
    f("restapi", Section(RESTAPI), Required),
    f("ctl", Section(CTL), Yes),
    f("etcd3", Section(ETCD3), Yes),
    f("zookeeper", Section(ZOOKEEPER), Yes),
    f("bootstrap", Section(BOOTSTRAP), Yes),
    f("postgresql", Section(POSTGRESQL), Required),
    f("watchdog", Section(WATCHDOG), Yes),
    f("tags", Map, Yes),
    f("citus", Map, NotYet),
    // Checked with the dynamic configuration's table (config::refused_keys).
    f("standby_cluster", Map, Yes),
    f("consul", Section(CONSUL), Yes),
    // Checked key by key by pgha-dcs-k8s, which names what it refuses or ignores.
    f("kubernetes", Map, Yes),
    f("etcd", Map, NotYet), // the etcd v2 API
    f("raft", Map, NotYet),
    f("exhibitor", Map, NotYet),
    f("synchronous_mode", Any, Ignored),
];

/// What the checker found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Findings {
    /// Problems that make the file unusable: `path: what is wrong`.
    pub errors: Vec<String>,
    /// Things pgha will not act on: `path: why`.
    pub warnings: Vec<String>,
}

/// Checks `doc` against `fields`, adding what it finds under `path`.
pub fn check(doc: &Value, fields: &[Field], path: &str, out: &mut Findings) {
    let Some(map) = doc.as_object() else {
        out.errors.push(format!(
            "{}: expected a mapping, found {}",
            display(path),
            kind_name(doc)
        ));
        return;
    };
    for field in fields {
        let here = join(path, field.name);
        match map.get(field.name) {
            None | Some(Value::Null) => {
                if field.support == Required {
                    out.errors.push(format!("{here}: missing"));
                }
            }
            Some(v) => {
                match field.support {
                    NotYet => out
                        .warnings
                        .push(format!("{here}: not supported by pgha yet; ignored")),
                    Ignored => out
                        .warnings
                        .push(format!("{here}: not used by pgha; ignored")),
                    Yes | Required => {}
                }
                check_kind(v, field.kind, &here, out);
            }
        }
    }
    for key in map.keys() {
        if !fields.iter().any(|f| f.name == key) && !is_extension(path, key, map) {
            out.warnings
                .push(format!("{}: unknown key; ignored", join(path, key)));
        }
    }
}

/// `postgresql.<method>` sections named in `create_replica_methods`, or
/// with a `command` (a method `standby_cluster.create_replica_methods` may
/// name), are the custom replica methods' settings, and
/// `bootstrap.<method>` the one `bootstrap.method` names, not unknown keys.
fn is_extension(path: &str, key: &str, map: &serde_json::Map<String, Value>) -> bool {
    match path {
        "postgresql" => {
            map.get("create_replica_methods")
                .map(|m| text_list(m).iter().any(|name| name == key))
                .unwrap_or(false)
                || map
                    .get(key)
                    .and_then(Value::as_object)
                    .is_some_and(|s| s.contains_key("command"))
        }
        "bootstrap" => map
            .get("method")
            .and_then(pgha_core::model::lenient::text)
            .is_some_and(|m| m == key),
        _ => false,
    }
}

fn check_kind(v: &Value, kind: Kind, here: &str, out: &mut Findings) {
    let wrong = |expected: &str, out: &mut Findings| {
        out.errors.push(format!(
            "{here}: expected {expected}, found {}",
            kind_name(v)
        ));
    };
    match kind {
        Text => {
            if !matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
                wrong("a string", out);
            }
        }
        Int => {
            if pgha_core::model::lenient::int(v).is_none() {
                wrong("an integer", out);
            }
        }
        Bool => {
            if pgha_core::model::lenient::bool(v).is_none() {
                wrong("true or false", out);
            }
        }
        TextList => match v {
            Value::String(_) => {}
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if !matches!(item, Value::String(_) | Value::Number(_)) {
                        out.errors.push(format!(
                            "{here}[{i}]: expected a string, found {}",
                            kind_name(item)
                        ));
                    }
                }
            }
            _ => wrong("a list of strings or a comma-separated string", out),
        },
        List => {
            if !v.is_array() {
                wrong("a list", out);
            }
        }
        Section(fields) => check(v, fields, here, out),
        Map => {
            if !v.is_object() {
                wrong("a mapping", out);
            }
        }
        Any => {}
    }
}

/// A list of strings from a YAML list or a comma-separated string.
pub fn text_list(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => s
            .split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(pgha_core::model::lenient::text)
            .collect(),
        _ => Vec::new(),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn display(path: &str) -> &str {
    if path.is_empty() { "(top level)" } else { path }
}

pub fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn findings(doc: Value) -> Findings {
        let mut out = Findings::default();
        check(&doc, ROOT, "", &mut out);
        out
    }

    #[test]
    fn every_missing_required_key_is_listed_with_its_path() {
        let f = findings(json!({"postgresql": {"listen": "x"}}));
        for expected in [
            "name: missing",
            "scope: missing",
            "restapi: missing",
            "postgresql.connect_address: missing",
            "postgresql.data_dir: missing",
        ] {
            assert!(
                f.errors.contains(&expected.to_string()),
                "{expected} not in {:?}",
                f.errors
            );
        }
    }

    #[test]
    fn wrong_types_are_errors_unknown_and_unsupported_keys_are_warnings() {
        let f = findings(json!({
            "name": "n1", "scope": "demo",
            "restapi": {"listen": ":8008", "connect_address": "h:8008", "certfile": "/x", "allowlist": ["10.0.0.0/8"], "http_extra_headers": {"X-A": "b"}},
            "postgresql": {"listen": "h:5432", "connect_address": "h:5432", "data_dir": "/d",
                           "use_pg_rewind": "maybe", "parameters": [1], "create_replica_methods": ["basebackup", "wal_g"],
                           "wal_g": {"command": "x"}, "typo_key": 1},
            "etcd3": {"hosts": [{"a": 1}]},
            "mystery": true
        }));
        assert!(
            f.errors.contains(
                &"postgresql.use_pg_rewind: expected true or false, found a string".into()
            ),
            "{:?}",
            f.errors
        );
        assert!(
            f.errors
                .contains(&"postgresql.parameters: expected a mapping, found a list".into()),
            "{:?}",
            f.errors
        );
        assert!(
            f.errors
                .contains(&"etcd3.hosts[0]: expected a string, found a mapping".into()),
            "{:?}",
            f.errors
        );
        assert!(
            f.warnings
                .contains(&"restapi.http_extra_headers: not supported by pgha yet; ignored".into()),
            "{:?}",
            f.warnings
        );
        assert!(
            !f.warnings.iter().any(|w| w.contains("allowlist")),
            "restapi.allowlist is supported: {:?}",
            f.warnings
        );
        assert!(
            f.warnings
                .contains(&"postgresql.typo_key: unknown key; ignored".into()),
            "{:?}",
            f.warnings
        );
        assert!(
            f.warnings.contains(&"mystery: unknown key; ignored".into()),
            "{:?}",
            f.warnings
        );
        assert!(
            !f.warnings.iter().any(|w| w.contains("wal_g")),
            "custom replica method flagged: {:?}",
            f.warnings
        );
    }

    #[test]
    fn lists_read_from_lists_or_commas() {
        assert_eq!(text_list(&json!("a:1, b:2,")), vec!["a:1", "b:2"]);
        assert_eq!(text_list(&json!(["a:1", 5])), vec!["a:1", "5"]);
    }
}
