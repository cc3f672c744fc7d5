//! Every key Patroni 4 accepts in the dynamic configuration, with how far
//! pgha supports it: one table, checked the same way wherever the
//! configuration enters (a node's `bootstrap.dcs`, the DCS `config` key read
//! each cycle, `PATCH`/`PUT /config`, `pghactl edit-config`).
//!
//! A Patroni user's configuration must mean the same thing here or be
//! named as not meaning it: no key is accepted without a word and without
//! effect. Where ignoring a key could lose acknowledged writes or give the
//! cluster a second writable server (synchronous replication, standby
//! clusters), the key is [`Support::Refused`]: writers refuse
//! it and a cluster already holding it reports it on every cycle. When pgha
//! implements a key, flipping its row here is the whole change.

use serde_json::Value;

use super::json_kind;
use crate::model::lenient;

/// How pgha treats a dynamic-configuration key.
#[derive(Debug, Clone, Copy)]
pub enum Support {
    /// pgha acts on it as Patroni does.
    Supported,
    /// Not implemented, and running as if it were absent can lose
    /// acknowledged writes or create a second writable server. Refused by
    /// every writer; reported on every cycle while the DCS holds it.
    Refused {
        /// What the key would have turned on, for messages.
        feature: &'static str,
        /// Whether a value turns the feature on (`synchronous_mode: false`
        /// asks for nothing pgha lacks).
        engaged: fn(&Value) -> bool,
    },
    /// Not implemented yet, harmless to run without: a warning names it.
    NotYet,
    /// Patroni reads it, pgha has no use for it; the reason is given.
    Ignored(&'static str),
}

/// The shape of a value.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A non-negative integer (`30` or `"30"`).
    Count,
    /// An integer, negative allowed.
    Int,
    Bool,
    /// `true`/`false` or `"quorum"` (`synchronous_mode`).
    SyncMode,
    Text,
    List,
    /// A mapping with any keys (`parameters`, `slots`).
    Map,
    /// A mapping with these keys.
    Section(&'static [Key]),
    Any,
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub name: &'static str,
    pub kind: Kind,
    pub support: Support,
}

const fn key(name: &'static str, kind: Kind, support: Support) -> Key {
    Key {
        name,
        kind,
        support,
    }
}

use Kind::*;
use Support::*;

const fn refused(feature: &'static str, engaged: fn(&Value) -> bool) -> Support {
    Refused { feature, engaged }
}

/// `synchronous_mode: quorum`.
fn quorum(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.eq_ignore_ascii_case("quorum"))
}

/// Patroni's `is_standby_cluster` (the section names a `host`, a `port` or
/// a `restore_command`) with neither a `host` nor a `restore_command`: a
/// standby cluster with nothing to replicate from.
fn sourceless_standby(v: &Value) -> bool {
    v.as_object().is_some_and(|m| {
        let set = |k: &str| m.get(k).is_some_and(is_set);
        set("port") && !set("host") && !set("restore_command")
    })
}

/// Python's truthiness, as Patroni tests these values.
fn is_set(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

const LOCAL: Support = Ignored(
    "a node's own setting: set it in the node's YAML file (Patroni ignores it in the dynamic configuration too)",
);
const NODE_FILE: Support =
    Ignored("pgha reads it from the node's YAML file only: set it there (postgresql section)");

const STANDBY_CLUSTER: &[Key] = &[
    key("host", Text, Supported),
    key("port", Any, Supported),
    key("primary_slot_name", Text, Supported),
    key("create_replica_methods", Any, Supported),
    key("restore_command", Text, Supported),
    key("archive_cleanup_command", Text, Supported),
    key("recovery_min_apply_delay", Any, Supported),
];

const POSTGRESQL: &[Key] = &[
    key("use_pg_rewind", Bool, Supported),
    key("use_slots", Bool, Supported),
    key("parameters", Map, Supported),
    key("pg_hba", List, Supported),
    key("pg_ident", List, Supported),
    key("remove_data_directory_on_rewind_failure", Bool, Supported),
    key(
        "remove_data_directory_on_diverged_timelines",
        Bool,
        Supported,
    ),
    key("parameters_primary", Map, NotYet),
    key("parameters_replica", Map, NotYet),
    key("parameters_standby_leader", Map, NotYet),
    key("pg_hba_primary", List, NotYet),
    key("pg_hba_replica", List, NotYet),
    key("pg_hba_standby_leader", List, NotYet),
    key("pg_ident_primary", List, NotYet),
    key("pg_ident_replica", List, NotYet),
    key("pg_ident_standby_leader", List, NotYet),
    key("recovery_conf", Map, NotYet),
    key("pg_ctl_timeout", Count, NODE_FILE),
    key("rewind", Any, NODE_FILE),
    key("basebackup", Any, NODE_FILE),
    key("create_replica_methods", Any, NODE_FILE),
    key("callbacks", Any, NODE_FILE),
    key("pre_promote", Any, NODE_FILE),
    key("before_stop", Any, NODE_FILE),
    key("use_unix_socket", Any, NODE_FILE),
    key("use_unix_socket_repl", Any, NODE_FILE),
    key("bin_dir", Any, NODE_FILE),
    key("bin_name", Any, NODE_FILE),
    key("custom_conf", Any, NODE_FILE),
    key("connect_address", Any, LOCAL),
    key("proxy_address", Any, LOCAL),
    key("listen", Any, LOCAL),
    key("config_dir", Any, LOCAL),
    key("data_dir", Any, LOCAL),
    key("pgpass", Any, LOCAL),
    key("authentication", Any, LOCAL),
];

/// The top level of the dynamic configuration, as Patroni 4.1 reads it.
pub const DYNAMIC: &[Key] = &[
    key("ttl", Count, Supported),
    key("loop_wait", Count, Supported),
    key("retry_timeout", Count, Supported),
    key("maximum_lag_on_failover", Count, Supported),
    key("primary_start_timeout", Count, Supported),
    key("master_start_timeout", Count, Supported),
    key("member_slots_ttl", Any, Supported),
    key("pause", Bool, Supported),
    key("postgresql", Section(POSTGRESQL), Supported),
    key("synchronous_mode", SyncMode, Supported),
    key("synchronous_mode_strict", Bool, Supported),
    key("failsafe_mode", Bool, Supported),
    // pgha's own: how long a primary in failsafe mode waits for each
    // member's confirmation (default: half of `retry_timeout`).
    key("failsafe_timeout", Count, Supported),
    key(
        "standby_cluster",
        Section(STANDBY_CLUSTER),
        refused(
            "standby clusters with neither a host nor a restore_command (nothing to replicate from)",
            sourceless_standby,
        ),
    ),
    key("synchronous_node_count", Count, Supported),
    key("maximum_lag_on_syncnode", Int, Supported),
    key("primary_stop_timeout", Count, NotYet),
    key("master_stop_timeout", Count, NotYet),
    key("primary_race_backoff", Count, NotYet),
    key("check_timeline", Bool, NotYet),
    key("max_timelines_history", Count, NotYet),
    // Read by model::slots (the first non-empty of the three permanent
    // keys, as Patroni); entries it cannot use are warned about there.
    key("slots", Map, Supported),
    key("permanent_slots", Map, Supported),
    key("permanent_replication_slots", Map, Supported),
    key("ignore_slots", List, Supported),
];

/// A refused key that a configuration sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// Its path (`standby_cluster`, `bootstrap.dcs.synchronous_mode`).
    pub key: String,
    /// What it would turn on.
    pub feature: &'static str,
    /// The value it has, as JSON.
    pub value: String,
}

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} is not supported by pgha yet (set to {})",
            self.key, self.feature, self.value
        )
    }
}

/// What checking a configuration against the table found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Review {
    /// Values of the wrong shape, `path: expected ..., found ...`: a writer
    /// refuses them; a reader falls back to the default.
    pub errors: Vec<String>,
    /// Refused keys that are set.
    pub unsupported: Vec<Unsupported>,
    /// Keys pgha does not act on (not yet, ignored, unknown), with why.
    pub warnings: Vec<String>,
}

impl Review {
    /// Checks `doc` (a dynamic configuration) and names every finding with
    /// its path under `prefix` (`""`, or `"bootstrap.dcs"`).
    pub fn of(doc: &serde_json::Map<String, Value>, prefix: &str) -> Review {
        let mut out = Review::default();
        check_map(doc, DYNAMIC, prefix, &mut out);
        let slots = crate::model::slots::SlotsConfig::of_document(doc);
        out.warnings
            .extend(slots.problems.iter().map(|w| join(prefix, w)));
        out
    }

    /// The refused keys `self` sets that `before` did not set to the same
    /// value: what a writer must refuse. A key already stored (written by
    /// Patroni, or by hand) may stay while other keys change; it is
    /// reported by the running cluster instead.
    pub fn newly_unsupported(&self, before: &Review) -> Vec<&Unsupported> {
        self.unsupported
            .iter()
            .filter(|u| !before.unsupported.contains(u))
            .collect()
    }
}

/// Why a configuration may not be written to the DCS.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigRefused {
    /// Values of the wrong shape: Patroni would store them and misread
    /// them later.
    #[error("invalid configuration: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// It turns on what pgha does not implement and cannot run without.
    #[error(
        "refused: {}; nothing was written (pgha would run as if the key were absent, which can lose acknowledged writes or create a second primary)",
        .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    Unsupported(Vec<Unsupported>),
}

impl super::DynamicConfig {
    /// Whether this configuration may replace `stored` (the one in the DCS,
    /// if any): every writer (`PATCH`/`PUT /config`, `pghactl edit-config`)
    /// asks this before writing. On success, the review, whose warnings the
    /// writer shows.
    pub fn check_write(
        &self,
        stored: Option<&super::DynamicConfig>,
    ) -> Result<Review, ConfigRefused> {
        let review = self.review();
        if !review.errors.is_empty() {
            return Err(ConfigRefused::Invalid(review.errors));
        }
        let before = stored.map(|s| s.review()).unwrap_or_default();
        let new: Vec<Unsupported> = review
            .newly_unsupported(&before)
            .into_iter()
            .cloned()
            .collect();
        if !new.is_empty() {
            return Err(ConfigRefused::Unsupported(new));
        }
        Ok(review)
    }
}

fn check_map(map: &serde_json::Map<String, Value>, keys: &[Key], path: &str, out: &mut Review) {
    for (name, value) in map {
        let here = join(path, name);
        if value.is_null() {
            continue;
        }
        let Some(k) = keys.iter().find(|k| k.name == name) else {
            out.warnings
                .push(format!("{here}: unknown key; ignored by pgha"));
            continue;
        };
        let well_formed = check_kind(value, k.kind, &here, out);
        match k.support {
            Supported => {}
            Refused { feature, engaged } => {
                if engaged(value) {
                    out.unsupported.push(Unsupported {
                        key: here,
                        feature,
                        value: value.to_string(),
                    });
                }
            }
            NotYet if well_formed => out
                .warnings
                .push(format!("{here}: not supported by pgha yet; ignored")),
            Ignored(why) if well_formed => out.warnings.push(format!("{here}: ignored: {why}")),
            NotYet | Ignored(_) => {}
        }
    }
}

/// Checks a value's shape; `false` (with an error recorded) when wrong.
fn check_kind(v: &Value, kind: Kind, here: &str, out: &mut Review) -> bool {
    let ok = match kind {
        Count => lenient::int(v).is_some_and(|i| i >= 0),
        Int => lenient::int(v).is_some(),
        Bool => lenient::bool(v).is_some(),
        SyncMode => lenient::bool(v).is_some() || quorum(v),
        Text => matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)),
        List => v.is_array(),
        Map => v.is_object(),
        Section(keys) => match v.as_object() {
            Some(m) => {
                check_map(m, keys, here, out);
                true
            }
            None => false,
        },
        Any => true,
    };
    if !ok {
        let expected = match kind {
            Count => "a non-negative integer",
            Int => "an integer",
            Bool => "a boolean",
            SyncMode => "a boolean or \"quorum\"",
            Text => "a string",
            List => "a list",
            Map | Section(_) => "an object",
            Any => "anything",
        };
        let found = match v {
            Value::Object(_) | Value::Array(_) => json_kind(v).to_string(),
            other => other.to_string(),
        };
        out.errors
            .push(format!("{here}: expected {expected}, found {found}"));
    }
    ok
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn review(v: Value) -> Review {
        Review::of(v.as_object().unwrap(), "")
    }

    #[test]
    fn patronis_example_configuration_is_supported_as_is() {
        let r = review(json!({
            "ttl": 30, "loop_wait": 10, "retry_timeout": 10,
            "maximum_lag_on_failover": 1048576, "pause": false,
            "synchronous_mode": false, "failsafe_mode": false,
            "standby_cluster": {"host": "", "port": ""},
            "postgresql": {"use_pg_rewind": true, "use_slots": true,
                           "parameters": {"wal_level": "replica"}, "pg_hba": ["host all all 0.0.0.0/0 md5"]}
        }));
        assert_eq!(r, Review::default());
    }

    #[test]
    fn data_losing_keys_are_unsupported_only_when_they_turn_something_on() {
        for (doc, key) in [
            (
                json!({"standby_cluster": {"port": 5432}}),
                "standby_cluster",
            ),
            (
                json!({"standby_cluster": {"port": 5432, "host": ""}}),
                "standby_cluster",
            ),
        ] {
            let r = review(doc.clone());
            assert_eq!(
                r.unsupported
                    .iter()
                    .map(|u| u.key.as_str())
                    .collect::<Vec<_>>(),
                [key],
                "{doc}"
            );
            assert!(r.errors.is_empty(), "{doc}: {:?}", r.errors);
        }
        for doc in [
            json!({"synchronous_mode": "off"}),
            json!({"synchronous_mode": true}),
            json!({"synchronous_mode": "quorum"}),
            json!({"synchronous_mode": "on", "synchronous_mode_strict": "yes"}),
            json!({"synchronous_node_count": 2, "maximum_lag_on_syncnode": -1}),
            json!({"failsafe_mode": false}),
            json!({"failsafe_mode": true, "failsafe_timeout": 3}),
            json!({"standby_cluster": {"host": null, "primary_slot_name": "x"}}),
            json!({"standby_cluster": {}}),
            json!({"standby_cluster": {"host": "10.0.0.1", "port": 5432, "restore_command": "x"}}),
            json!({"standby_cluster": {"restore_command": "cp /a/%f %p"}}),
        ] {
            assert!(review(doc.clone()).unsupported.is_empty(), "{doc}");
        }
    }

    #[test]
    fn the_message_names_the_key_the_feature_and_the_value() {
        let r = Review::of(
            json!({"standby_cluster": {"port": 5432}})
                .as_object()
                .unwrap(),
            "bootstrap.dcs",
        );
        assert_eq!(
            r.unsupported[0].to_string(),
            "bootstrap.dcs.standby_cluster: standby clusters with neither a host nor a restore_command (nothing to replicate from) is not supported by pgha yet (set to {\"port\":5432})"
        );
    }

    #[test]
    fn other_unsupported_keys_are_warned_by_path() {
        let r = review(json!({
            "check_timeline": true, "max_timelines_history": 10, "primary_stop_timeout": 30,
            "postgresql": {"recovery_conf": {"restore_command": "x"}, "data_dir": "/x", "pg_ctl_timeout": 60},
            "typo": 1
        }));
        for w in [
            "check_timeline: not supported by pgha yet; ignored",
            "max_timelines_history: not supported by pgha yet; ignored",
            "primary_stop_timeout: not supported by pgha yet; ignored",
            "postgresql.recovery_conf: not supported by pgha yet; ignored",
            "typo: unknown key; ignored by pgha",
        ] {
            assert!(
                r.warnings.iter().any(|x| x == w),
                "{w} not in {:?}",
                r.warnings
            );
        }
        assert!(
            r.warnings
                .iter()
                .any(|w| w.starts_with("postgresql.data_dir: ignored: a node's own setting")),
            "{:?}",
            r.warnings
        );
        assert!(
            r.warnings.iter().any(|w| w.starts_with(
                "postgresql.pg_ctl_timeout: ignored: pgha reads it from the node's YAML file"
            )),
            "{:?}",
            r.warnings
        );
        assert!(r.unsupported.is_empty() && r.errors.is_empty());
    }

    #[test]
    fn wrong_shapes_are_errors_with_their_path() {
        let r = review(json!({
            "ttl": "soon", "loop_wait": -1, "pause": "perhaps", "synchronous_mode": "sometimes",
            "postgresql": {"parameters": [1], "use_slots": "x"}, "standby_cluster": "host=x",
            "maximum_lag_on_syncnode": -1
        }));
        for e in [
            "ttl: expected a non-negative integer, found \"soon\"",
            "loop_wait: expected a non-negative integer, found -1",
            "pause: expected a boolean, found \"perhaps\"",
            "synchronous_mode: expected a boolean or \"quorum\", found \"sometimes\"",
            "postgresql.parameters: expected an object, found a list",
            "postgresql.use_slots: expected a boolean, found \"x\"",
            "standby_cluster: expected an object, found \"host=x\"",
        ] {
            assert!(r.errors.iter().any(|x| x == e), "{e} not in {:?}", r.errors);
        }
        assert_eq!(r.errors.len(), 7, "{:?}", r.errors);
    }

    #[test]
    fn a_writer_refuses_only_what_it_newly_sets() {
        let stored = review(json!({"standby_cluster": {"port": 5432}}));
        let same = review(json!({"standby_cluster": {"port": 5432}, "ttl": 20}));
        assert!(same.newly_unsupported(&stored).is_empty());
        let none = review(json!({"ttl": 20}));
        assert_eq!(
            stored
                .newly_unsupported(&none)
                .iter()
                .map(|u| u.key.as_str())
                .collect::<Vec<_>>(),
            ["standby_cluster"]
        );
    }

    #[test]
    fn check_write_refuses_bad_shapes_and_new_unsupported_keys_by_name() {
        use crate::model::DynamicConfig;
        let cfg = |v: Value| DynamicConfig::from_map(v.as_object().unwrap().clone());
        let stored = cfg(json!({"ttl": 30}));
        let err = cfg(json!({"ttl": 30, "standby_cluster": {"port": 5432}}))
            .check_write(Some(&stored))
            .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "refused: standby_cluster: standby clusters with neither a host nor a restore_command (nothing to replicate from) is not supported by pgha yet (set to {\"port\":5432}); nothing was written"
            ),
            "{err}"
        );
        assert!(matches!(
            cfg(json!({"ttl": "x"})).check_write(Some(&stored)),
            Err(ConfigRefused::Invalid(_))
        ));
        let review = cfg(json!({"ttl": 20, "primary_stop_timeout": 30}))
            .check_write(Some(&stored))
            .unwrap();
        assert_eq!(
            review.warnings,
            ["primary_stop_timeout: not supported by pgha yet; ignored"]
        );
        // Written by Patroni before: may stay while something else changes.
        let patronis = cfg(json!({"ttl": 30, "standby_cluster": {"port": 5432}}));
        assert!(
            cfg(json!({"ttl": 20, "standby_cluster": {"port": 5432}}))
                .check_write(Some(&patronis))
                .is_ok()
        );
        assert!(
            cfg(json!({"standby_cluster": {"port": 5432}}))
                .check_write(None)
                .is_err()
        );
    }

    #[test]
    fn slots_entries_pgha_cannot_keep_as_patroni_does_are_warned_by_name() {
        let r = Review::of(
            json!({"slots": {
                "barman": {"type": "physical"},
                "cdc": {"database": "app", "plugin": "pgoutput"},
                "Bad": {}
            }})
            .as_object()
            .unwrap(),
            "bootstrap.dcs",
        );
        assert!(r.errors.is_empty() && r.unsupported.is_empty(), "{r:?}");
        assert_eq!(r.warnings.len(), 1, "a logical slot is supported: {r:?}");
        assert!(r.warnings[0].starts_with("bootstrap.dcs.slots.Bad: not a valid slot name"));
    }

    #[test]
    fn every_key_patroni_documents_has_a_row() {
        // Patroni 4.1's dynamic configuration documentation, key by key.
        let top = [
            "ttl",
            "loop_wait",
            "retry_timeout",
            "primary_race_backoff",
            "maximum_lag_on_failover",
            "maximum_lag_on_syncnode",
            "max_timelines_history",
            "primary_start_timeout",
            "primary_stop_timeout",
            "synchronous_mode",
            "synchronous_mode_strict",
            "synchronous_node_count",
            "failsafe_mode",
            "postgresql",
            "standby_cluster",
            "member_slots_ttl",
            "slots",
            "ignore_slots",
            "pause",
            "check_timeline",
        ];
        for k in top {
            assert!(DYNAMIC.iter().any(|r| r.name == k), "{k}");
        }
        for k in [
            "use_pg_rewind",
            "use_slots",
            "recovery_conf",
            "parameters",
            "parameters_primary",
            "parameters_replica",
            "parameters_standby_leader",
            "pg_hba",
            "pg_hba_primary",
            "pg_hba_replica",
            "pg_hba_standby_leader",
            "pg_ident",
            "pg_ident_primary",
            "pg_ident_replica",
            "pg_ident_standby_leader",
        ] {
            assert!(POSTGRESQL.iter().any(|r| r.name == k), "postgresql.{k}");
        }
        for k in [
            "host",
            "port",
            "primary_slot_name",
            "create_replica_methods",
            "restore_command",
            "archive_cleanup_command",
            "recovery_min_apply_delay",
        ] {
            assert!(
                STANDBY_CLUSTER.iter().any(|r| r.name == k),
                "standby_cluster.{k}"
            );
        }
    }
}
