//! `failsafe`: the members a leader in failsafe mode has seen.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The value of the `failsafe` key: `{"node1": "http://127.0.0.1:8008/patroni", ...}`.
///
/// With `failsafe_mode` on, a leader that loses the DCS keeps running as
/// primary only while every member listed here confirms it over REST.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Failsafe(pub BTreeMap<String, String>);

impl Failsafe {
    pub fn parse(text: &str) -> Result<Self, super::ValueError> {
        match serde_json::from_str::<Value>(text) {
            Ok(v @ Value::Object(_)) => {
                serde_json::from_value(v).map_err(|e| super::ValueError::Invalid {
                    what: "failsafe (member names mapped to API URLs)",
                    reason: e.to_string(),
                })
            }
            Ok(other) => Err(super::ValueError::wrong_kind("a JSON object", &other)),
            Err(e) => Err(super::ValueError::NotJson(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failsafe_round_trips() {
        let text =
            r#"{"node1":"http://127.0.0.1:8008/patroni","node2":"http://127.0.0.1:8009/patroni"}"#;
        let f = Failsafe::parse(text).unwrap();
        assert_eq!(f.0.len(), 2);
        assert_eq!(serde_json::to_string(&f).unwrap(), text);
        assert!(Failsafe::parse(r#"{"node1": 5}"#).is_err());
    }
}
