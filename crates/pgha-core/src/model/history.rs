//! `history`: the cluster's timeline history.

use serde::de::{self, Deserializer};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::lenient;

/// One timeline switch: `[timeline, lsn, "reason", "timestamp", "new_leader"]`.
///
/// The first three items come from PostgreSQL's `.history` file; Patroni
/// appends when and to whom it switched. Older entries may have only three
/// or four items, and those forms are kept.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryEntry {
    /// The timeline that ended.
    pub timeline: u64,
    /// Where it ended (bytes).
    pub lsn: u64,
    pub reason: String,
    /// ISO 8601, as written.
    pub timestamp: Option<String>,
    pub new_leader: Option<String>,
}

impl Serialize for HistoryEntry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let len = 3
            + usize::from(self.timestamp.is_some() || self.new_leader.is_some())
            + usize::from(self.new_leader.is_some());
        let mut seq = s.serialize_seq(Some(len))?;
        seq.serialize_element(&self.timeline)?;
        seq.serialize_element(&self.lsn)?;
        seq.serialize_element(&self.reason)?;
        if len > 3 {
            seq.serialize_element(&self.timestamp)?;
        }
        if len > 4 {
            seq.serialize_element(&self.new_leader)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for HistoryEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let items = Vec::<Value>::deserialize(d)?;
        if items.len() < 3 {
            return Err(de::Error::custom(format!(
                "a history entry has at least 3 items, this one has {}",
                items.len()
            )));
        }
        let number = |v: &Value, what: &str| {
            lenient::int(v)
                .and_then(|i| u64::try_from(i).ok())
                .ok_or_else(|| de::Error::custom(format!("history {what} is not a number: {v}")))
        };
        let text = |v: Option<&Value>| match v {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Null) | None => None,
            Some(other) => Some(other.to_string()),
        };
        Ok(HistoryEntry {
            timeline: number(&items[0], "timeline")?,
            lsn: number(&items[1], "lsn")?,
            reason: text(items.get(2)).unwrap_or_default(),
            timestamp: text(items.get(3)),
            new_leader: text(items.get(4)),
        })
    }
}

/// The value of the `history` key: a JSON list of [`HistoryEntry`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct History(pub Vec<HistoryEntry>);

impl History {
    pub fn parse(text: &str) -> Result<Self, super::ValueError> {
        match serde_json::from_str::<Value>(text) {
            Ok(v @ Value::Array(_)) => {
                serde_json::from_value(v).map_err(|e| super::ValueError::Invalid {
                    what: "history",
                    reason: e.to_string(),
                })
            }
            Ok(other) => Err(super::ValueError::wrong_kind("a JSON list", &other)),
            Err(e) => Err(super::ValueError::NotJson(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patroni_history_round_trips() {
        let text = r#"[[1,25165984,"no recovery target specified","2026-11-21T10:00:00.123456+00:00","node2"],[2,33554592,"no recovery target specified"]]"#;
        let h = History::parse(text).unwrap();
        assert_eq!(h.0.len(), 2);
        assert_eq!(h.0[0].new_leader.as_deref(), Some("node2"));
        assert_eq!(h.0[1].timestamp, None);
        assert_eq!(serde_json::to_string(&h).unwrap(), text);
    }

    #[test]
    fn bad_history_is_an_error_with_a_reason() {
        assert!(
            History::parse("{}")
                .unwrap_err()
                .to_string()
                .contains("list")
        );
        assert!(
            History::parse("[[1]]")
                .unwrap_err()
                .to_string()
                .contains("at least 3")
        );
        assert!(
            History::parse(r#"[["x",1,"r"]]"#)
                .unwrap_err()
                .to_string()
                .contains("timeline")
        );
    }
}
