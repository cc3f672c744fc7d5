//! `PATRONI_*` environment variables, applied over the YAML file as
//! Patroni applies them (the environment wins).

use serde_json::{Map, Value};

/// Settings taken from the environment: `(variable, path in the config)`.
const SIMPLE: &[(&str, &[&str])] = &[
    ("NAME", &["name"]),
    ("NAMESPACE", &["namespace"]),
    ("SCOPE", &["scope"]),
    ("LOG_LEVEL", &["log", "level"]),
    ("RESTAPI_LISTEN", &["restapi", "listen"]),
    ("RESTAPI_CONNECT_ADDRESS", &["restapi", "connect_address"]),
    ("RESTAPI_CERTFILE", &["restapi", "certfile"]),
    ("RESTAPI_KEYFILE", &["restapi", "keyfile"]),
    ("RESTAPI_KEYFILE_PASSWORD", &["restapi", "keyfile_password"]),
    ("RESTAPI_CAFILE", &["restapi", "cafile"]),
    ("RESTAPI_VERIFY_CLIENT", &["restapi", "verify_client"]),
    (
        "RESTAPI_USERNAME",
        &["restapi", "authentication", "username"],
    ),
    (
        "RESTAPI_PASSWORD",
        &["restapi", "authentication", "password"],
    ),
    ("POSTGRESQL_LISTEN", &["postgresql", "listen"]),
    (
        "POSTGRESQL_CONNECT_ADDRESS",
        &["postgresql", "connect_address"],
    ),
    ("POSTGRESQL_PROXY_ADDRESS", &["postgresql", "proxy_address"]),
    ("POSTGRESQL_CONFIG_DIR", &["postgresql", "config_dir"]),
    ("POSTGRESQL_DATA_DIR", &["postgresql", "data_dir"]),
    ("POSTGRESQL_PGPASS", &["postgresql", "pgpass"]),
    ("POSTGRESQL_BIN_DIR", &["postgresql", "bin_dir"]),
];

const AUTH_PARAMS: &[&str] = &[
    "USERNAME",
    "PASSWORD",
    "SSLMODE",
    "SSLCERT",
    "SSLKEY",
    "SSLPASSWORD",
    "SSLROOTCERT",
    "SSLCRL",
    "SSLCRLDIR",
    "GSSENCMODE",
    "CHANNEL_BINDING",
];

const BINARIES: &[&str] = &[
    "pg_ctl",
    "initdb",
    "pg_controldata",
    "pg_basebackup",
    "postgres",
    "pg_isready",
    "pg_rewind",
];

/// `restapi` settings that are not plain text, and how to read each value.
const RESTAPI_TYPED: &[(&str, &str, Parse)] = &[
    ("RESTAPI_ALLOWLIST", "allowlist", Parse::List),
    (
        "RESTAPI_ALLOWLIST_INCLUDE_MEMBERS",
        "allowlist_include_members",
        Parse::Bool,
    ),
];

/// DCS settings (`PATRONI_<DCS>_<SETTING>`) and how to read each value.
const DCS_SETTINGS: &[(&str, Parse)] = &[
    ("HOST", Parse::Text),
    ("HOSTS", Parse::List),
    ("PORT", Parse::Int),
    ("PROTOCOL", Parse::Text),
    ("SCHEME", Parse::Text),
    ("USE_PROXIES", Parse::Bool),
    ("URL", Parse::Text),
    ("PROXY", Parse::Text),
    ("SRV", Parse::Text),
    ("SRV_SUFFIX", Parse::Text),
    ("CACERT", Parse::Text),
    ("CERT", Parse::Text),
    ("KEY", Parse::Text),
    ("KEY_PASSWORD", Parse::Text),
    ("VERIFY", Parse::Bool),
    ("USE_SSL", Parse::Bool),
    ("SET_ACLS", Parse::Dict),
    ("AUTH_DATA", Parse::Dict),
    ("USERNAME", Parse::Text),
    ("PASSWORD", Parse::Text),
    ("TOKEN", Parse::Text),
    ("CHECKS", Parse::List),
    ("DC", Parse::Text),
    ("CONSISTENCY", Parse::Text),
    ("REGISTER_SERVICE", Parse::Bool),
    ("SERVICE_TAGS", Parse::List),
    ("SERVICE_CHECK_INTERVAL", Parse::Text),
    ("SERVICE_CHECK_TLS_SERVER_NAME", Parse::Text),
    ("NAMESPACE", Parse::Text),
    ("CONTEXT", Parse::Text),
    ("USE_ENDPOINTS", Parse::Bool),
    ("SCOPE_LABEL", Parse::Text),
    ("ROLE_LABEL", Parse::Text),
    ("LEADER_LABEL_VALUE", Parse::Text),
    ("FOLLOWER_LABEL_VALUE", Parse::Text),
    ("STANDBY_LEADER_LABEL_VALUE", Parse::Text),
    ("TMP_ROLE_LABEL", Parse::Text),
    ("POD_IP", Parse::Text),
    ("PORTS", Parse::List),
    ("LABELS", Parse::Dict),
    ("BOOTSTRAP_LABELS", Parse::Dict),
    ("BYPASS_API_SERVICE", Parse::Bool),
    ("RETRIABLE_HTTP_CODES", Parse::List),
];

const DCS_NAMES: &[&str] = &[
    "ETCD3",
    "ZOOKEEPER",
    "CONSUL",
    "KUBERNETES",
    "ETCD",
    "EXHIBITOR",
    "RAFT",
];

#[derive(Clone, Copy)]
enum Parse {
    Text,
    Int,
    Bool,
    List,
    Dict,
}

/// Applies the `PATRONI_*` variables in `vars` to `doc`; returns the names
/// of the variables used, for the log.
pub fn apply(doc: &mut Value, vars: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
    let mut used = Vec::new();
    for (var, value) in vars {
        let Some(name) = var.strip_prefix("PATRONI_") else {
            continue;
        };
        if name == "CONFIGURATION" {
            continue;
        }
        let applied = if let Some((_, path)) = SIMPLE.iter().find(|(n, _)| *n == name) {
            set(doc, path, Value::String(value));
            true
        } else if let Some((_, key, parse)) = RESTAPI_TYPED.iter().find(|(n, ..)| *n == name) {
            match parsed(&value, *parse) {
                Some(v) => set(doc, &["restapi", key], v),
                None => false,
            }
        } else if let Some(binary) = name.strip_prefix("POSTGRESQL_BIN_") {
            let binary = binary.to_ascii_lowercase();
            BINARIES.contains(&binary.as_str())
                && set(
                    doc,
                    &["postgresql", "bin_name", &binary],
                    Value::String(value),
                )
        } else if let Some((user, param)) = auth_var(name) {
            set(
                doc,
                &["postgresql", "authentication", user, &param],
                Value::String(value),
            )
        } else if let Some((dcs, setting, parse)) = dcs_var(name) {
            match parsed(&value, parse) {
                Some(v) => set(doc, &[&dcs, &setting], v),
                None => false,
            }
        } else {
            false
        };
        if applied {
            used.push(var);
        }
    }
    used
}

fn auth_var(name: &str) -> Option<(&'static str, String)> {
    for user in ["SUPERUSER", "REPLICATION", "REWIND"] {
        if let Some(param) = name.strip_prefix(user).and_then(|r| r.strip_prefix('_'))
            && AUTH_PARAMS.contains(&param)
        {
            return Some((
                match user {
                    "SUPERUSER" => "superuser",
                    "REPLICATION" => "replication",
                    _ => "rewind",
                },
                param.to_ascii_lowercase(),
            ));
        }
    }
    None
}

fn dcs_var(name: &str) -> Option<(String, String, Parse)> {
    let dcs = DCS_NAMES
        .iter()
        .find(|d| name.starts_with(&format!("{d}_")))?;
    let setting = &name[dcs.len() + 1..];
    let (_, parse) = DCS_SETTINGS.iter().find(|(s, _)| *s == setting)?;
    Some((
        dcs.to_ascii_lowercase(),
        setting.to_ascii_lowercase(),
        *parse,
    ))
}

fn parsed(value: &str, parse: Parse) -> Option<Value> {
    match parse {
        Parse::Text => Some(Value::String(value.to_string())),
        Parse::Int => value.trim().parse::<i64>().ok().map(Value::from),
        Parse::Bool => {
            pgha_core::model::lenient::bool(&Value::String(value.to_string())).map(Value::Bool)
        }
        Parse::List => {
            let text = value.trim();
            let yaml = if text.starts_with('-') || text.contains('[') {
                text.to_string()
            } else {
                format!("[{text}]")
            };
            serde_saphyr::from_str::<Value>(&yaml)
                .ok()
                .filter(Value::is_array)
        }
        Parse::Dict => {
            let text = value.trim();
            let yaml = if text.starts_with('{') {
                text.to_string()
            } else {
                format!("{{{text}}}")
            };
            serde_saphyr::from_str::<Value>(&yaml)
                .ok()
                .filter(Value::is_object)
        }
    }
}

/// Sets `path` in `doc`, creating mappings on the way. False if something
/// that is not a mapping is in the way.
fn set(doc: &mut Value, path: &[&str], value: Value) -> bool {
    let mut here = doc;
    for (i, key) in path.iter().enumerate() {
        if !here.is_object() {
            if here.is_null() {
                *here = Value::Object(Map::new());
            } else {
                return false;
            }
        }
        let Some(map) = here.as_object_mut() else {
            return false;
        };
        if i + 1 == path.len() {
            map.insert((*key).to_string(), value);
            return true;
        }
        here = map
            .entry((*key).to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn environment_wins_over_the_file() {
        let mut doc = json!({"name": "file", "postgresql": {"data_dir": "/file"}});
        let used = apply(
            &mut doc,
            vars(&[
                ("PATRONI_NAME", "env"),
                ("PATRONI_POSTGRESQL_DATA_DIR", "/env"),
                ("PATRONI_RESTAPI_LISTEN", "0.0.0.0:8008"),
                ("PATRONI_SUPERUSER_PASSWORD", "s3cret"),
                ("PATRONI_REPLICATION_USERNAME", "repl"),
                ("PATRONI_ETCD3_HOSTS", "'10.0.0.1:2379','10.0.0.2:2379'"),
                ("PATRONI_ZOOKEEPER_USE_SSL", "true"),
                ("PATRONI_POSTGRESQL_BIN_PG_CTL", "/opt/pg_ctl"),
                ("PATRONI_RESTAPI_ALLOWLIST", "10.0.0.0/8, db1.example"),
                ("PATRONI_RESTAPI_ALLOWLIST_INCLUDE_MEMBERS", "on"),
                ("PATRONI_UNRELATED_THING", "x"),
                ("HOME", "/root"),
            ]),
        );
        assert_eq!(doc["name"], "env");
        assert_eq!(doc["postgresql"]["data_dir"], "/env");
        assert_eq!(doc["restapi"]["listen"], "0.0.0.0:8008");
        assert_eq!(
            doc["postgresql"]["authentication"]["superuser"]["password"],
            "s3cret"
        );
        assert_eq!(
            doc["postgresql"]["authentication"]["replication"]["username"],
            "repl"
        );
        assert_eq!(
            doc["etcd3"]["hosts"],
            json!(["10.0.0.1:2379", "10.0.0.2:2379"])
        );
        assert_eq!(doc["zookeeper"]["use_ssl"], true);
        assert_eq!(doc["postgresql"]["bin_name"]["pg_ctl"], "/opt/pg_ctl");
        assert_eq!(
            doc["restapi"]["allowlist"],
            json!(["10.0.0.0/8", "db1.example"])
        );
        assert_eq!(doc["restapi"]["allowlist_include_members"], true);
        assert_eq!(used.len(), 10, "{used:?}");
    }
}
