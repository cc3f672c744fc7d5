//! `config`: the cluster-wide dynamic configuration.
//!
//! It is a JSON document edited by people (`patronictl edit-config`,
//! `PATCH /config`) and by several tools, so pgha keeps it as the document
//! itself and reads typed values out of it: nothing written by another tool is
//! lost on a read-modify-write, and a merge patch works on exactly what is
//! stored. Values are read as Patroni reads them (`"30"` and `30` are both 30)
//! and fall back to Patroni's defaults.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::lenient;

pub mod keys;
pub use keys::{ConfigRefused, Review, Unsupported};

/// Patroni's default `ttl`, seconds.
pub const DEFAULT_TTL: u64 = 30;
/// Patroni's default `loop_wait`, seconds.
pub const DEFAULT_LOOP_WAIT: u64 = 10;
/// Patroni's default `retry_timeout`, seconds.
pub const DEFAULT_RETRY_TIMEOUT: u64 = 10;
/// Patroni's default `maximum_lag_on_failover`, bytes.
pub const DEFAULT_MAXIMUM_LAG_ON_FAILOVER: u64 = 1_048_576;
/// Patroni's default `primary_start_timeout`, seconds.
pub const DEFAULT_PRIMARY_START_TIMEOUT: u64 = 300;
/// Patroni's default `member_slots_ttl`, seconds.
pub const DEFAULT_MEMBER_SLOTS_TTL: u64 = 1800;

/// The smallest `ttl` pgha accepts. Patroni insists on 20 s; pgha's deadline
/// accounting (see ARCHITECTURE.md) stays safe at any ttl that satisfies
/// `loop_wait + 2 * retry_timeout <= ttl`, so it only needs room for that rule.
pub const MIN_TTL: u64 = 3;
/// The smallest `loop_wait`.
pub const MIN_LOOP_WAIT: u64 = 1;
/// The smallest `retry_timeout`.
pub const MIN_RETRY_TIMEOUT: u64 = 1;

/// The dynamic configuration document (the value of the `config` key).
///
/// Invariant: serialising gives back exactly the document that was read or
/// built, key order included.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DynamicConfig(Map<String, Value>);

/// `standby_cluster`: where a standby cluster's standby leader replicates
/// from, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StandbyCluster {
    /// The source's host; `None`: the standby cluster replays the WAL
    /// archive only (`restore_command`).
    pub host: Option<String>,
    pub port: u16,
    /// A slot on the source for the standby leader (the source must have
    /// it: a permanent slot there).
    pub primary_slot_name: Option<String>,
    pub restore_command: Option<String>,
    pub archive_cleanup_command: Option<String>,
    pub recovery_min_apply_delay: Option<String>,
    /// The node's replica methods (`postgresql.<name>`, or `basebackup`)
    /// that create the standby leader, in order; `None`: the node's own
    /// `create_replica_methods`. Without a host only methods that need no
    /// connection can work (a restore from a backup).
    pub create_replica_methods: Option<Vec<String>>,
}

impl StandbyCluster {
    /// How the standby leader names its upstream (in logs, in decisions,
    /// in the `postgresql.conf` marker): `host:port`, or `archive` without
    /// a host. A change of source is a change of this label, and the
    /// standby leader follows anew.
    pub fn source(&self) -> String {
        match &self.host {
            Some(host) => format!("{host}:{}", self.port),
            None => Self::ARCHIVE_SOURCE.into(),
        }
    }

    /// [`Self::source`] of a standby cluster without a host.
    pub const ARCHIVE_SOURCE: &str = "archive";

    /// The recovery parameters the standby leader runs with besides
    /// `primary_conninfo` and `primary_slot_name`.
    pub fn recovery_parameters(&self) -> Vec<(String, String)> {
        [
            ("restore_command", &self.restore_command),
            ("archive_cleanup_command", &self.archive_cleanup_command),
            ("recovery_min_apply_delay", &self.recovery_min_apply_delay),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k.to_string(), v)))
        .collect()
    }
}

/// The three timings that bound every HA decision, after validation.
///
/// Invariant: `loop_wait + 2 * retry_timeout <= ttl`: a leader that cannot
/// renew its lock stops acting as primary before the lock can expire and
/// another node can take it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub ttl: Duration,
    pub loop_wait: Duration,
    pub retry_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            ttl: Duration::from_secs(DEFAULT_TTL),
            loop_wait: Duration::from_secs(DEFAULT_LOOP_WAIT),
            retry_timeout: Duration::from_secs(DEFAULT_RETRY_TIMEOUT),
        }
    }
}

impl Timing {
    /// Builds timings from whole seconds, raising values below the minimums
    /// and then shrinking `loop_wait` (or, if it is already minimal,
    /// `retry_timeout`) until `loop_wait + 2 * retry_timeout <= ttl`, as
    /// Patroni does. Every change made is described in the returned list.
    pub fn adjusted(ttl: u64, loop_wait: u64, retry_timeout: u64) -> (Timing, Vec<String>) {
        let mut notes = Vec::new();
        let mut raise = |name: &str, value: u64, min: u64| {
            if value < min {
                notes.push(format!(
                    "{name}={value} is below the minimum {min}; using {min}"
                ));
                min
            } else {
                value
            }
        };
        let ttl = raise("ttl", ttl, MIN_TTL);
        let mut loop_wait = raise("loop_wait", loop_wait, MIN_LOOP_WAIT);
        let mut retry_timeout = raise("retry_timeout", retry_timeout, MIN_RETRY_TIMEOUT);
        if MIN_LOOP_WAIT + 2 * retry_timeout > ttl {
            let new_retry = (ttl - MIN_LOOP_WAIT) / 2;
            notes.push(format!(
                "loop_wait + 2*retry_timeout <= ttl is violated (ttl={ttl}): \
                 loop_wait {loop_wait} -> {MIN_LOOP_WAIT}, retry_timeout {retry_timeout} -> {new_retry}"
            ));
            loop_wait = MIN_LOOP_WAIT;
            retry_timeout = new_retry;
        } else if loop_wait + 2 * retry_timeout > ttl {
            let new_loop_wait = ttl - 2 * retry_timeout;
            notes.push(format!(
                "loop_wait + 2*retry_timeout <= ttl is violated (ttl={ttl}, retry_timeout={retry_timeout}): \
                 loop_wait {loop_wait} -> {new_loop_wait}"
            ));
            loop_wait = new_loop_wait;
        }
        (
            Timing {
                ttl: Duration::from_secs(ttl),
                loop_wait: Duration::from_secs(loop_wait),
                retry_timeout: Duration::from_secs(retry_timeout),
            },
            notes,
        )
    }
}

impl DynamicConfig {
    /// An empty document: every value takes Patroni's default.
    pub fn new() -> Self {
        DynamicConfig(Map::new())
    }

    /// Wraps a JSON object.
    pub fn from_map(map: Map<String, Value>) -> Self {
        DynamicConfig(map)
    }

    /// Parses the stored text. The value must be a JSON object.
    pub fn parse(text: &str) -> Result<Self, super::ValueError> {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Ok(DynamicConfig(map)),
            Ok(other) => Err(super::ValueError::wrong_kind("a JSON object", &other)),
            Err(e) => Err(super::ValueError::NotJson(e.to_string())),
        }
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    pub fn into_map(self) -> Map<String, Value> {
        self.0
    }

    /// The raw value of a top-level key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    fn uint(&self, key: &str) -> Option<u64> {
        self.get(key)
            .and_then(lenient::int)
            .and_then(|i| u64::try_from(i).ok())
    }

    fn flag(&self, key: &str) -> bool {
        self.get(key).and_then(lenient::bool).unwrap_or(false)
    }

    /// `ttl`, `loop_wait`, `retry_timeout` with Patroni's defaults, adjusted
    /// to satisfy the timing rule; the notes say what was adjusted.
    pub fn timing(&self) -> (Timing, Vec<String>) {
        Timing::adjusted(
            self.uint("ttl").unwrap_or(DEFAULT_TTL),
            self.uint("loop_wait").unwrap_or(DEFAULT_LOOP_WAIT),
            self.uint("retry_timeout").unwrap_or(DEFAULT_RETRY_TIMEOUT),
        )
    }

    /// Bytes a replica may lag and still be promoted automatically.
    pub fn maximum_lag_on_failover(&self) -> u64 {
        self.uint("maximum_lag_on_failover")
            .unwrap_or(DEFAULT_MAXIMUM_LAG_ON_FAILOVER)
    }

    /// Seconds to wait for a crashed primary to recover before failing over.
    /// Patroni still reads the old name `master_start_timeout`.
    pub fn primary_start_timeout(&self) -> u64 {
        self.uint("primary_start_timeout")
            .or_else(|| self.uint("master_start_timeout"))
            .unwrap_or(DEFAULT_PRIMARY_START_TIMEOUT)
    }

    /// Seconds to wait for a clean stop of the primary in synchronous mode (0 = forever).
    pub fn primary_stop_timeout(&self) -> u64 {
        self.uint("primary_stop_timeout")
            .or_else(|| self.uint("master_stop_timeout"))
            .unwrap_or(0)
    }

    /// Maintenance mode: no automatic action.
    pub fn pause(&self) -> bool {
        self.flag("pause")
    }

    /// `failsafe_mode`: a primary that loses the DCS runs on while every
    /// member confirms it (see `ha::failsafe`).
    pub fn failsafe_mode(&self) -> bool {
        self.flag("failsafe_mode")
    }

    /// `failsafe_timeout` (pgha's own, seconds): how long a primary in
    /// failsafe mode waits for each member's confirmation; `None`: the
    /// default (half of `retry_timeout`).
    pub fn failsafe_timeout(&self) -> Option<std::time::Duration> {
        self.uint("failsafe_timeout")
            .map(std::time::Duration::from_secs)
    }

    /// `synchronous_mode`: `true`, `false` or `"quorum"`.
    pub fn synchronous_mode(&self) -> bool {
        self.flag("synchronous_mode") || self.quorum_commit_mode()
    }

    /// `synchronous_mode: quorum`.
    pub fn quorum_commit_mode(&self) -> bool {
        self.get("synchronous_mode")
            .and_then(Value::as_str)
            .is_some_and(|s| s.eq_ignore_ascii_case("quorum"))
    }

    pub fn synchronous_mode_strict(&self) -> bool {
        self.flag("synchronous_mode_strict")
    }

    pub fn synchronous_node_count(&self) -> u64 {
        self.uint("synchronous_node_count").unwrap_or(1).max(1)
    }

    /// `maximum_lag_on_syncnode`, bytes (`-1` by default: never swap a
    /// synchronous standby for lag).
    pub fn maximum_lag_on_syncnode(&self) -> i64 {
        self.get("maximum_lag_on_syncnode")
            .and_then(lenient::int)
            .unwrap_or(-1)
    }

    /// The synchronous replication settings pgha acts on.
    pub fn sync_settings(&self) -> crate::ha::SyncSettings {
        use crate::ha::SyncMode;
        let strict = self.synchronous_mode_strict();
        let mode = if self.quorum_commit_mode() {
            SyncMode::Quorum { strict }
        } else if self.flag("synchronous_mode") {
            SyncMode::On { strict }
        } else {
            SyncMode::Off
        };
        crate::ha::SyncSettings {
            mode,
            node_count: usize::try_from(self.synchronous_node_count()).unwrap_or(1),
            maximum_lag_on_syncnode: self.maximum_lag_on_syncnode(),
        }
    }

    /// `standby_cluster` with a `host` (this cluster is a standby of the
    /// one `host:port` reaches, Patroni's default port 5432) or with a
    /// `restore_command` only (it replays that archive). `None` otherwise;
    /// a section with neither is refused by the key table, not read here.
    pub fn standby_cluster(&self) -> Option<StandbyCluster> {
        let section = self.get("standby_cluster")?.as_object()?;
        let text = |k: &str| {
            section
                .get(k)
                .and_then(lenient::text)
                .filter(|t| !t.is_empty())
        };
        let host = text("host");
        if host.is_none() && text("restore_command").is_none() {
            return None;
        }
        let port = section
            .get("port")
            .and_then(lenient::int)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(5432);
        Some(StandbyCluster {
            host,
            port,
            primary_slot_name: text("primary_slot_name"),
            restore_command: text("restore_command"),
            archive_cleanup_command: text("archive_cleanup_command"),
            recovery_min_apply_delay: text("recovery_min_apply_delay"),
            create_replica_methods: section.get("create_replica_methods").map(|v| match v {
                Value::Array(items) => items.iter().filter_map(lenient::text).collect(),
                other => lenient::text(other)
                    .map(|t| t.split(',').map(|s| s.trim().to_string()).collect())
                    .unwrap_or_default(),
            }),
        })
    }

    pub fn check_timeline(&self) -> bool {
        self.flag("check_timeline")
    }

    pub fn member_slots_ttl(&self) -> u64 {
        self.uint("member_slots_ttl")
            .unwrap_or(DEFAULT_MEMBER_SLOTS_TTL)
    }

    /// The `postgresql` section.
    pub fn postgresql(&self) -> Option<&Map<String, Value>> {
        self.get("postgresql").and_then(Value::as_object)
    }

    /// `postgresql.use_slots`, true by default.
    pub fn use_slots(&self) -> bool {
        self.postgresql()
            .and_then(|p| p.get("use_slots"))
            .and_then(lenient::bool)
            .unwrap_or(true)
    }

    /// `postgresql.use_pg_rewind`, false by default.
    pub fn use_pg_rewind(&self) -> bool {
        self.postgresql()
            .and_then(|p| p.get("use_pg_rewind"))
            .and_then(lenient::bool)
            .unwrap_or(false)
    }

    /// A `postgresql` flag that is off unless set
    /// (`remove_data_directory_on_rewind_failure`,
    /// `remove_data_directory_on_diverged_timelines`).
    pub fn postgresql_flag(&self, key: &str) -> bool {
        self.postgresql()
            .and_then(|p| p.get(key))
            .and_then(lenient::bool)
            .unwrap_or(false)
    }

    /// `postgresql.parameters`.
    pub fn parameters(&self) -> Option<&Map<String, Value>> {
        self.postgresql()
            .and_then(|p| p.get("parameters"))
            .and_then(Value::as_object)
    }

    /// The document checked against [`keys::DYNAMIC`], Patroni's dynamic
    /// configuration key by key: values of the wrong shape, keys pgha
    /// refuses because running without them can lose data or create a
    /// second primary, and keys it does not act on.
    pub fn review(&self) -> Review {
        Review::of(&self.0, "")
    }

    /// Applies a JSON merge patch the way `PATCH /config` and
    /// `patronictl edit-config -s` do: objects merge recursively and a `null`
    /// deletes the key; any other value replaces what was there.
    pub fn merge_patch(&mut self, patch: &Map<String, Value>) {
        merge_into(&mut self.0, patch);
    }

    /// Sets a value by dotted path (`postgresql.parameters.work_mem`),
    /// creating objects on the way; `None` deletes it.
    pub fn set_path(&mut self, path: &str, value: Option<Value>) {
        let mut patch = match value {
            Some(v) => v,
            None => Value::Null,
        };
        for segment in path.rsplit('.') {
            let mut m = Map::new();
            m.insert(segment.to_string(), patch);
            patch = Value::Object(m);
        }
        if let Value::Object(m) = patch {
            self.merge_patch(&m);
        }
    }
}

fn merge_into(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(sub) => match target.get_mut(key) {
                Some(Value::Object(existing)) => merge_into(existing, sub),
                _ => {
                    let mut fresh = Map::new();
                    merge_into(&mut fresh, sub);
                    target.insert(key.clone(), Value::Object(fresh));
                }
            },
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

/// The JSON type of a value, for error messages.
/// What kind of JSON value `v` is, for messages (`a list`, `an object`).
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(v: Value) -> DynamicConfig {
        DynamicConfig::from_map(v.as_object().unwrap().clone())
    }

    #[test]
    fn defaults_are_patronis() {
        let c = DynamicConfig::new();
        let (t, notes) = c.timing();
        assert_eq!(t, Timing::default());
        assert!(notes.is_empty());
        assert_eq!(t.ttl.as_secs(), 30);
        assert_eq!(c.maximum_lag_on_failover(), 1_048_576);
        assert_eq!(c.primary_start_timeout(), 300);
        assert!(c.use_slots());
        assert!(!c.use_pg_rewind());
        assert!(!c.pause());
        assert!(!c.synchronous_mode());
    }

    #[test]
    fn values_read_leniently() {
        let c = cfg(
            json!({"ttl": "20", "loop_wait": 5, "retry_timeout": "5", "pause": "on",
                           "postgresql": {"use_pg_rewind": "true"}, "master_start_timeout": 10}),
        );
        let (t, notes) = c.timing();
        assert_eq!(
            (
                t.ttl.as_secs(),
                t.loop_wait.as_secs(),
                t.retry_timeout.as_secs()
            ),
            (20, 5, 5)
        );
        assert!(notes.is_empty());
        assert!(c.pause());
        assert!(c.use_pg_rewind());
        assert_eq!(c.primary_start_timeout(), 10);
        assert!(c.review().errors.is_empty(), "{:?}", c.review());
    }

    #[test]
    fn timing_rule_is_enforced_like_patroni() {
        // loop_wait shrinks first
        let (t, notes) = Timing::adjusted(30, 15, 10);
        assert_eq!(t.loop_wait.as_secs(), 10);
        assert_eq!(notes.len(), 1);
        // retry_timeout shrinks when loop_wait is already minimal
        let (t, _) = Timing::adjusted(10, 10, 10);
        assert_eq!((t.loop_wait.as_secs(), t.retry_timeout.as_secs()), (1, 4));
        assert!(t.loop_wait + 2 * t.retry_timeout <= t.ttl);
        // minimums
        let (t, notes) = Timing::adjusted(1, 0, 0);
        assert!(t.ttl.as_secs() >= MIN_TTL);
        assert!(t.loop_wait + 2 * t.retry_timeout <= t.ttl);
        assert!(notes.len() >= 3);
        // fast settings for tests and benchmarks stay as given
        let (t, notes) = Timing::adjusted(5, 1, 2);
        assert_eq!(
            (
                t.ttl.as_secs(),
                t.loop_wait.as_secs(),
                t.retry_timeout.as_secs()
            ),
            (5, 1, 2)
        );
        assert!(notes.is_empty());
    }

    #[test]
    fn every_adjusted_timing_satisfies_the_rule() {
        for ttl in 0..40 {
            for lw in 0..20 {
                for rt in 0..20 {
                    let (t, _) = Timing::adjusted(ttl, lw, rt);
                    assert!(
                        t.loop_wait + 2 * t.retry_timeout <= t.ttl,
                        "{ttl} {lw} {rt}"
                    );
                    assert!(t.loop_wait.as_secs() >= MIN_LOOP_WAIT);
                    assert!(t.retry_timeout.as_secs() >= MIN_RETRY_TIMEOUT);
                }
            }
        }
    }

    #[test]
    fn problems_name_the_path() {
        let c = cfg(
            json!({"ttl": "soon", "pause": "perhaps", "postgresql": {"parameters": [1], "use_slots": "x"}}),
        );
        let p = c.review().errors;
        assert!(p.iter().any(|s| s.starts_with("ttl:")), "{p:?}");
        assert!(p.iter().any(|s| s.starts_with("pause:")), "{p:?}");
        assert!(
            p.iter().any(|s| s.starts_with("postgresql.parameters:")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|s| s.starts_with("postgresql.use_slots:")),
            "{p:?}"
        );
        // a bad value falls back to the default rather than being misread
        assert_eq!(c.timing().0.ttl.as_secs(), 30);
    }

    #[test]
    fn merge_patch_merges_and_null_deletes() {
        let mut c = cfg(
            json!({"ttl": 30, "postgresql": {"parameters": {"a": 1, "b": 2}, "use_slots": true}, "x": {"y": 1}}),
        );
        c.merge_patch(json!({"ttl": 20, "postgresql": {"parameters": {"a": null, "c": 3}}, "x": 5, "z": {"n": null, "m": 1}}).as_object().unwrap());
        assert_eq!(
            Value::Object(c.as_map().clone()),
            json!({"ttl": 20, "postgresql": {"parameters": {"b": 2, "c": 3}, "use_slots": true}, "x": 5, "z": {"m": 1}})
        );
        c.set_path("postgresql.parameters.work_mem", Some(json!("8MB")));
        c.set_path("postgresql.parameters.b", None);
        assert_eq!(c.parameters().unwrap().get("work_mem"), Some(&json!("8MB")));
        assert!(c.parameters().unwrap().get("b").is_none());
    }

    #[test]
    fn parse_rejects_non_objects_with_a_reason() {
        assert!(
            DynamicConfig::parse("{")
                .unwrap_err()
                .to_string()
                .contains("invalid JSON")
        );
        assert!(
            DynamicConfig::parse("[1]")
                .unwrap_err()
                .to_string()
                .contains("a list")
        );
        let text = r#"{"ttl":30,"loop_wait":10,"unknown":{"k":[1,"2"]}}"#;
        let c = DynamicConfig::parse(text).unwrap();
        assert_eq!(serde_json::to_string(&c).unwrap(), text);
    }
}
