//! `status`: the leader's last WAL position and slot positions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::lenient;

/// The value of the `status` key, written by the leader on every renewal:
/// `{"optime": 67108960, "slots": {"node2": 67108960}, "retain_slots": ["node2"]}`.
///
/// Replicas use `optime` to judge their lag when deciding whether they may
/// take over.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::de_opt_u64"
    )]
    pub optime: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<BTreeMap<String, u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_slots: Option<Vec<String>>,
    /// pgha only: the leader that wrote this ran in maintenance mode and
    /// has not yet seen it end (with its fences armed again). Outlives
    /// the leader's lease: a node that could not see the pause learns
    /// from it that the lock may have lapsed with the primary still
    /// running (see `ha::decide`). Patroni ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_leader: Option<String>,
    /// pgha only: the leader's timeline. Outlives its lease, so a node
    /// promoting later never takes the same number (the `history` key
    /// lists only the timelines that ended; see
    /// `ha::divergence::next_timeline`). Patroni ignores it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::de_opt_u64"
    )]
    pub timeline: Option<u64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Status {
    /// Parses the stored text. A bare number is the pre-2.1 form of `optime`.
    pub fn parse(text: &str) -> Result<Self, super::ValueError> {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => {
                serde_json::from_value(Value::Object(map)).map_err(|e| super::ValueError::Invalid {
                    what: "status object",
                    reason: e.to_string(),
                })
            }
            Ok(n @ (Value::Number(_) | Value::String(_))) => lenient::int(&n)
                .and_then(|i| u64::try_from(i).ok())
                .map(|optime| Status {
                    optime: Some(optime),
                    ..Default::default()
                })
                .ok_or_else(|| super::ValueError::NotAnLsn(n.to_string())),
            Ok(other) => Err(super::ValueError::wrong_kind("a JSON object", &other)),
            Err(_) => text
                .trim()
                .parse()
                .map(|optime| Status {
                    optime: Some(optime),
                    ..Default::default()
                })
                .map_err(|_| super::ValueError::NotAnLsn(text.trim().to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patroni_status_round_trips() {
        let text = r#"{"optime":67108960,"slots":{"node2":67108960,"node3":67108800},"retain_slots":["node2","node3"]}"#;
        let s = Status::parse(text).unwrap();
        assert_eq!(s.optime, Some(67108960));
        assert_eq!(serde_json::to_string(&s).unwrap(), text);
    }

    #[test]
    fn legacy_optime_is_a_bare_number() {
        assert_eq!(Status::parse("12345").unwrap().optime, Some(12345));
        assert!(Status::parse("[1]").is_err());
        assert!(Status::parse("garbage").is_err());
    }
}
