//! `members/<name>`: what each node publishes about itself every HA cycle.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::lenient;
use super::version::Version;

/// Declares a string enum that keeps values it does not know (written by a
/// newer Patroni, say), so reading and writing back never loses them.
macro_rules! open_string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(from = "String", into = "String")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A value pgha does not know, kept as written.
            Other(String),
        }

        impl $name {
            /// The text Patroni writes for this value.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $text,)+
                    $name::Other(s) => s,
                }
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                match s.as_str() {
                    $($text => $name::$variant,)+
                    _ => $name::Other(s),
                }
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                match v {
                    $name::Other(s) => s,
                    other => other.as_str().to_string(),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

open_string_enum! {
    /// The PostgreSQL role a member reports (`role`).
    Role {
        Primary => "primary",
        /// Written by Patroni before 3.0; means `primary`.
        Master => "master",
        Replica => "replica",
        StandbyLeader => "standby_leader",
        Demoted => "demoted",
        Promoted => "promoted",
        Uninitialized => "uninitialized",
    }
}

impl Role {
    /// True for `primary` and its legacy spelling `master`.
    pub fn is_primary(&self) -> bool {
        matches!(self, Role::Primary | Role::Master)
    }
}

open_string_enum! {
    /// The PostgreSQL state a member reports (`state`), in Patroni's words.
    PgState {
        Running => "running",
        Starting => "starting",
        Stopping => "stopping",
        Stopped => "stopped",
        Restarting => "restarting",
        Crashed => "crashed",
        StartFailed => "start failed",
        RestartFailed => "restart failed",
        StopFailed => "stop failed",
        CreatingReplica => "creating replica",
        InitializingNewCluster => "initializing new cluster",
        InitdbFailed => "initdb failed",
        CustomBootstrap => "running custom bootstrap script",
        CustomBootstrapFailed => "custom bootstrap failed",
        StartingAfterCustomBootstrap => "starting after custom bootstrap",
    }
}

/// A member's tags, kept exactly as configured (any JSON values), with
/// Patroni's rules for the ones that change behaviour.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Tags(pub Map<String, Value>);

impl Tags {
    fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    fn truthy(&self, name: &str) -> bool {
        self.get(name).map(truthy).unwrap_or(false)
    }

    /// Never becomes primary: `nofailover` when set, else `failover_priority <= 0`.
    pub fn nofailover(&self) -> bool {
        match self.get("nofailover") {
            Some(v) => truthy(v),
            None => self
                .get("failover_priority")
                .and_then(lenient::int)
                .is_some_and(|p| p <= 0),
        }
    }

    /// `failover_priority`, 1 by default, 0 when `nofailover` is set.
    pub fn failover_priority(&self) -> i64 {
        if self.truthy("nofailover") {
            return 0;
        }
        self.get("failover_priority")
            .and_then(lenient::int)
            .unwrap_or(1)
    }

    /// Left out of `/replica` load balancing.
    pub fn noloadbalance(&self) -> bool {
        self.truthy("noloadbalance")
    }

    /// Preferred source when a new replica is cloned.
    pub fn clonefrom(&self) -> bool {
        self.truthy("clonefrom")
    }

    /// Never a synchronous standby: `nosync` when set, else `sync_priority <= 0`.
    pub fn nosync(&self) -> bool {
        match self.get("nosync") {
            Some(v) => truthy(v),
            None => self
                .get("sync_priority")
                .and_then(lenient::int)
                .is_some_and(|p| p <= 0),
        }
    }

    /// `sync_priority`, 1 by default, 0 when `nosync` is set: among the
    /// eligible standbys, the higher is made synchronous first.
    pub fn sync_priority(&self) -> i64 {
        if self.truthy("nosync") {
            return 0;
        }
        self.get("sync_priority")
            .and_then(lenient::int)
            .unwrap_or(1)
    }

    /// Does not stream WAL (archive recovery only).
    pub fn nostream(&self) -> bool {
        self.get("nostream")
            .and_then(lenient::bool)
            .unwrap_or(false)
    }

    /// Cascading replication source, when configured.
    pub fn replicatefrom(&self) -> Option<&str> {
        self.get("replicatefrom").and_then(Value::as_str)
    }

    /// The tags Patroni publishes: custom tags always; the boolean ones only
    /// when set, except that `nofailover`/`nosync` stay beside an explicit
    /// `failover_priority`/`sync_priority` so readers can see both.
    pub fn published(&self) -> Tags {
        const BOOLEAN_TAGS: [&str; 5] = [
            "clonefrom",
            "nofailover",
            "noloadbalance",
            "nosync",
            "nostream",
        ];
        Tags(
            self.0
                .iter()
                .filter(|(k, v)| {
                    !BOOLEAN_TAGS.contains(&k.as_str())
                        || truthy(v)
                        || (k.as_str() == "nofailover" && self.0.contains_key("failover_priority"))
                        || (k.as_str() == "nosync" && self.0.contains_key("sync_priority"))
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Python truthiness, which is what Patroni applies to most tags.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// A restart the member has been asked to perform later (`scheduled_restart`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScheduledRestart {
    /// ISO 8601 time of the restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Restart only if the running PostgreSQL is older than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_version: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The JSON value of `members/<name>`, field for field as Patroni 4 writes it.
///
/// Fields pgha does not know are kept in `extra`, so a member written by a
/// newer tool and read here loses nothing. Numeric fields are read leniently
/// (`"123"` or `123`); a field of the wrong shape reads as absent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MemberData {
    /// `postgres://host:port/postgres`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn_url: Option<String>,
    /// `http://host:port/patroni`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<PgState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// The Patroni protocol version this member speaks (see ARCHITECTURE.md).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::de_opt_string"
    )]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_url: Option<String>,
    /// Present (and `false`) only on a new primary until its first checkpoint.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::de_opt_bool"
    )]
    pub checkpoint_after_promote: Option<bool>,
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub tags: Tags,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::de_opt_bool"
    )]
    pub pending_restart: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_restart_reason: Option<Value>,
    /// WAL position in bytes: write LSN on a primary, received/replayed on a replica.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::de_opt_u64"
    )]
    pub xlog_location: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::de_opt_u64"
    )]
    pub replay_lsn: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::de_opt_u64"
    )]
    pub receive_lsn: Option<u64>,
    /// `streaming` or `in archive recovery` on replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_state: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::de_opt_u64"
    )]
    pub timeline: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_restart: Option<ScheduledRestart>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::de_opt_bool"
    )]
    pub pause: Option<bool>,
    /// Fields pgha does not know, kept as read.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The member-key field in which a pgha agent announces its own version
/// (Patroni ignores it): how tools tell a pgha member from a Patroni one.
pub const PGHA_VERSION_FIELD: &str = "pgha_version";

impl MemberData {
    /// The pgha version this member announces; `None` for a Patroni node.
    pub fn pgha_version(&self) -> Option<&str> {
        self.extra.get(PGHA_VERSION_FIELD).and_then(Value::as_str)
    }

    /// Host and port of `conn_url` (`postgres://host:port/db`), default port 5432.
    pub fn conn_host_port(&self) -> Option<(String, u16)> {
        let url = self.conn_url.as_deref()?;
        let rest = url.split_once("://")?.1;
        let authority = rest.split(['/', '?']).next()?;
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
        if let Some(bracketed) = host_port.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']')?;
            let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
            return Some((host.to_string(), port.unwrap_or(5432)));
        }
        match host_port.rsplit_once(':') {
            Some((host, port)) => Some((host.to_string(), port.parse().ok()?)),
            None => Some((host_port.to_string(), 5432)),
        }
    }

    /// Whether the member reports PostgreSQL as running.
    pub fn is_running(&self) -> bool {
        self.state == Some(PgState::Running)
    }

    /// The member's WAL position for comparisons: `xlog_location`.
    pub fn wal_position(&self) -> Option<u64> {
        self.xlog_location
    }
}

/// One entry under `members/`, as read from the DCS.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    pub name: String,
    pub version: Version,
    /// The lease or session the key is attached to, as the engine names it
    /// (etcd lease id, ZooKeeper session id, Consul session id).
    pub owner: Option<String>,
    pub data: MemberData,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patroni_member_round_trips_exactly() {
        // As Patroni 4 writes it: compact JSON, this field order.
        let text = r#"{"conn_url":"postgres://127.0.0.1:5432/postgres","api_url":"http://127.0.0.1:8008/patroni","state":"running","role":"replica","version":"4.1.4","tags":{"nofailover":true,"custom":"x"},"xlog_location":50331808,"replay_lsn":50331808,"receive_lsn":50331808,"replication_state":"streaming","timeline":3}"#;
        let data: MemberData = serde_json::from_str(text).unwrap();
        assert_eq!(data.role, Some(Role::Replica));
        assert_eq!(data.state, Some(PgState::Running));
        assert_eq!(data.xlog_location, Some(50331808));
        assert!(data.tags.nofailover());
        assert_eq!(serde_json::to_string(&data).unwrap(), text);
    }

    #[test]
    fn unknown_fields_and_values_are_kept() {
        let text = r#"{"state":"hibernating","role":"observer","future_field":{"a":[1,2]}}"#;
        let data: MemberData = serde_json::from_str(text).unwrap();
        assert_eq!(data.state, Some(PgState::Other("hibernating".into())));
        assert_eq!(data.role, Some(Role::Other("observer".into())));
        assert_eq!(serde_json::to_string(&data).unwrap(), text);
    }

    #[test]
    fn numbers_written_as_strings_are_read() {
        let data: MemberData =
            serde_json::from_value(json!({"xlog_location": "123", "timeline": "2", "pause": "on"}))
                .unwrap();
        assert_eq!(data.xlog_location, Some(123));
        assert_eq!(data.timeline, Some(2));
        assert_eq!(data.pause, Some(true));
    }

    #[test]
    fn a_field_of_the_wrong_shape_reads_as_absent() {
        let data: MemberData =
            serde_json::from_value(json!({"xlog_location": {"x": 1}, "role": "replica"})).unwrap();
        assert_eq!(data.xlog_location, None);
        assert_eq!(data.role, Some(Role::Replica));
    }

    #[test]
    fn tags_follow_patroni_rules() {
        let t = |v: Value| Tags(v.as_object().unwrap().clone());
        assert!(!t(json!({})).nofailover());
        assert_eq!(t(json!({})).failover_priority(), 1);
        assert!(t(json!({"failover_priority": 0})).nofailover());
        assert!(t(json!({"failover_priority": "-1"})).nofailover());
        assert!(!t(json!({"nofailover": false, "failover_priority": 0})).nofailover());
        assert_eq!(
            t(json!({"nofailover": true, "failover_priority": 5})).failover_priority(),
            0
        );
        assert_eq!(t(json!({"failover_priority": 3})).failover_priority(), 3);
        assert!(t(json!({"nosync": "yes"})).nosync());
        assert!(t(json!({"nostream": "on"})).nostream());
        assert_eq!(
            t(json!({"replicatefrom": "n2"})).replicatefrom(),
            Some("n2")
        );
        let published =
            t(json!({"nofailover": false, "noloadbalance": false, "clonefrom": true, "dc": "eu"}))
                .published();
        assert_eq!(
            Value::Object(published.0),
            json!({"clonefrom": true, "dc": "eu"})
        );
        let published = t(json!({"nofailover": false, "failover_priority": 2})).published();
        assert_eq!(
            Value::Object(published.0),
            json!({"nofailover": false, "failover_priority": 2})
        );
    }

    #[test]
    fn conn_url_host_and_port() {
        let m = |u: &str| MemberData {
            conn_url: Some(u.into()),
            ..Default::default()
        };
        assert_eq!(
            m("postgres://127.0.0.1:5433/postgres").conn_host_port(),
            Some(("127.0.0.1".into(), 5433))
        );
        assert_eq!(
            m("postgres://db.example/postgres").conn_host_port(),
            Some(("db.example".into(), 5432))
        );
        assert_eq!(
            m("postgres://u:p@h:1/x").conn_host_port(),
            Some(("h".into(), 1))
        );
        assert_eq!(
            m("postgres://[::1]:6000/postgres").conn_host_port(),
            Some(("::1".into(), 6000))
        );
        assert_eq!(m("garbage").conn_host_port(), None);
    }
}
