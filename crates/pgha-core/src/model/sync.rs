//! `sync`: who the synchronous standbys are.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::lenient;

/// The value of the `sync` key, written by the leader in synchronous mode:
/// `{"leader":"node1","quorum":0,"sync_standby":"node2,node3"}`.
///
/// Patroni writes `sync_standby` as `null` when there is none, so it is
/// always serialised.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncState {
    #[serde(default, deserialize_with = "lenient::de_opt_string")]
    pub leader: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::de_opt_int"
    )]
    pub quorum: Option<i64>,
    #[serde(default, deserialize_with = "lenient::de_opt_string")]
    pub sync_standby: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl SyncState {
    pub fn parse(text: &str) -> Result<Self, super::ValueError> {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => {
                serde_json::from_value(Value::Object(map)).map_err(|e| super::ValueError::Invalid {
                    what: "sync object",
                    reason: e.to_string(),
                })
            }
            Ok(other) => Err(super::ValueError::wrong_kind("a JSON object", &other)),
            Err(e) => Err(super::ValueError::NotJson(e.to_string())),
        }
    }

    /// The synchronous standbys named in `sync_standby`. Empty when the
    /// state names no leader, as Patroni treats such a value as empty.
    pub fn standbys(&self) -> Vec<&str> {
        if self.leader.as_deref().is_none_or(str::is_empty) {
            return Vec::new();
        }
        self.sync_standby
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// Whether `name` is a synchronous standby (case-insensitive, like
    /// PostgreSQL's `synchronous_standby_names`).
    pub fn is_standby(&self, name: &str) -> bool {
        self.standbys().iter().any(|s| s.eq_ignore_ascii_case(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patroni_sync_round_trips_with_null_standby() {
        for text in [
            r#"{"leader":"node1","quorum":0,"sync_standby":"node2,node3"}"#,
            r#"{"leader":"node1","quorum":0,"sync_standby":null}"#,
        ] {
            let s = SyncState::parse(text).unwrap();
            assert_eq!(serde_json::to_string(&s).unwrap(), text);
        }
        let s = SyncState::parse(r#"{"leader":"node1","sync_standby":"node2, Node3"}"#).unwrap();
        assert_eq!(s.standbys(), vec!["node2", "Node3"]);
        assert!(s.is_standby("NODE3"));
        assert!(!s.is_standby("node1"));
        assert!(
            SyncState::parse(r#"{"sync_standby":"node2"}"#)
                .unwrap()
                .standbys()
                .is_empty()
        );
        assert!(SyncState::parse("[]").is_err());
    }
}
