//! Where each shared key lives in Patroni's Kubernetes layout, and how its
//! value maps to annotations and back.
//!
//! | key | object | annotations |
//! |---|---|---|
//! | `initialize`, `config`, `history` | `<scope>-config` | one each, the value as text |
//! | `status` | leader object | `optime` (integer), `slots` (JSON object), `retain_slots` (JSON list) |
//! | `failsafe` | leader object | `failsafe` (JSON) |
//! | `failover` | `<scope>-failover` | one per field: `leader`, `member`, `scheduled_at` |
//! | `sync` | `<scope>-sync` | one per field: `leader`, `sync_standby`, `quorum` (integer as text) |
//!
//! Keys that share an object share its `resourceVersion`: writing `history`
//! changes the version `config` reads with. For the field-per-annotation
//! objects, the value is the object's unprefixed annotations (prefixed ones,
//! such as `kubectl.kubernetes.io/…`, belong to other tools).

use std::collections::BTreeMap;

use pgha_core::dcs::{DcsError, SharedKey};
use pgha_core::model::Failover;
use serde_json::{Map, Value};

/// The object a key is stored in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Home {
    Config,
    Leader,
    Failover,
    Sync,
}

pub fn home(key: SharedKey) -> Home {
    match key {
        SharedKey::Initialize | SharedKey::Config | SharedKey::History => Home::Config,
        SharedKey::Status | SharedKey::Failsafe => Home::Leader,
        SharedKey::Failover => Home::Failover,
        SharedKey::Sync => Home::Sync,
    }
}

/// Annotation updates: `None` deletes.
pub type Updates = Vec<(String, Option<String>)>;

const STATUS_FIELDS: [&str; 3] = ["optime", "slots", "retain_slots"];

/// The single annotation of a key stored whole.
fn whole(key: SharedKey) -> Option<&'static str> {
    match key {
        SharedKey::Initialize => Some("initialize"),
        SharedKey::Config => Some("config"),
        SharedKey::History => Some("history"),
        SharedKey::Failsafe => Some("failsafe"),
        SharedKey::Status | SharedKey::Failover | SharedKey::Sync => None,
    }
}

fn unprefixed(a: &BTreeMap<String, String>) -> impl Iterator<Item = (&String, &String)> {
    a.iter().filter(|(k, _)| !k.contains('/'))
}

/// A JSON value as annotation text: strings as they are, anything else as
/// compact JSON, `null` as a deletion.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// The annotation updates that store `value` at `key`, given the object's
/// current annotations (fields of the old value that the new one lacks are
/// deleted).
pub fn to_annotations(
    key: SharedKey,
    value: &str,
    current: &BTreeMap<String, String>,
) -> Result<Updates, DcsError> {
    if let Some(name) = whole(key) {
        return Ok(vec![(name.to_string(), Some(value.to_string()))]);
    }
    let parsed: Value = serde_json::from_str(value).map_err(|e| {
        DcsError::rejected(
            "write",
            format!("{key}: on Kubernetes the value must be JSON: {e}"),
        )
    })?;
    let Value::Object(fields) = parsed else {
        return Err(DcsError::rejected(
            "write",
            format!(
                "{key}: on Kubernetes the value must be a JSON object (one annotation per field)"
            ),
        ));
    };
    let mut out: Updates = Vec::new();
    match key {
        SharedKey::Status => {
            for f in STATUS_FIELDS {
                let v = match fields.get(f) {
                    None | Some(Value::Null) => None,
                    // Patroni writes no `slots` / `retain_slots` when empty.
                    Some(Value::Object(m)) if m.is_empty() => None,
                    Some(Value::Array(a)) if a.is_empty() => None,
                    Some(v) => text(v),
                };
                out.push((f.to_string(), v));
            }
        }
        SharedKey::Failover | SharedKey::Sync => {
            for (k, v) in &fields {
                if k.contains('/') {
                    return Err(DcsError::rejected(
                        "write",
                        format!("{key}: field {k:?} cannot be an annotation of its own"),
                    ));
                }
                out.push((k.clone(), text(v)));
            }
            for (k, _) in unprefixed(current) {
                if !fields.contains_key(k) {
                    out.push((k.clone(), None));
                }
            }
        }
        SharedKey::Initialize | SharedKey::Config | SharedKey::History | SharedKey::Failsafe => {}
    }
    Ok(out)
}

/// The annotation updates that delete `key`.
pub fn deletion(key: SharedKey, current: &BTreeMap<String, String>) -> Updates {
    if let Some(name) = whole(key) {
        return vec![(name.to_string(), None)];
    }
    match key {
        SharedKey::Status => STATUS_FIELDS
            .iter()
            .map(|f| (f.to_string(), None))
            .collect(),
        _ => unprefixed(current)
            .map(|(k, _)| (k.clone(), None))
            .collect(),
    }
}

/// The stored value of `key` as text in Patroni's JSON shape, `None` when
/// absent, `Some(Err(reason))` when what is stored cannot be read.
pub fn read(key: SharedKey, a: &BTreeMap<String, String>) -> Option<Result<String, String>> {
    if let Some(name) = whole(key) {
        return a.get(name).map(|v| Ok(v.clone()));
    }
    match key {
        SharedKey::Status => {
            if !STATUS_FIELDS.iter().any(|f| a.contains_key(*f)) {
                return None;
            }
            let mut m = Map::new();
            if let Some(o) = a.get("optime") {
                match o.trim().parse::<u64>() {
                    Ok(n) => {
                        m.insert("optime".into(), Value::from(n));
                    }
                    Err(_) => return Some(Err(format!("optime annotation {o:?} is not an LSN"))),
                }
            }
            for (f, want_object) in [("slots", true), ("retain_slots", false)] {
                if let Some(t) = a.get(f) {
                    match serde_json::from_str::<Value>(t) {
                        Ok(v @ Value::Object(_)) if want_object => {
                            m.insert(f.into(), v);
                        }
                        Ok(v @ Value::Array(_)) if !want_object => {
                            m.insert(f.into(), v);
                        }
                        _ => {
                            return Some(Err(format!(
                                "{f} annotation {t:?} is not a JSON {}",
                                if want_object { "object" } else { "list" }
                            )));
                        }
                    }
                }
            }
            Some(Ok(Value::Object(m).to_string()))
        }
        SharedKey::Failover | SharedKey::Sync => {
            let mut m = Map::new();
            for (k, v) in unprefixed(a) {
                m.insert(k.clone(), Value::String(v.clone()));
            }
            if m.is_empty() {
                return None;
            }
            if key == SharedKey::Sync
                && let Some(q) = a.get("quorum")
            {
                match q.trim().parse::<i64>() {
                    Ok(n) => {
                        m.insert("quorum".into(), Value::from(n));
                    }
                    Err(_) => {
                        return Some(Err(format!("quorum annotation {q:?} is not an integer")));
                    }
                }
            }
            let text = Value::Object(m).to_string();
            if key == SharedKey::Failover {
                // Patroni cannot read a failover whose time it cannot parse;
                // pgha reports it.
                if let Ok(f) = Failover::parse(&text)
                    && let Err(e) = f.scheduled_at()
                {
                    return Some(Err(format!("scheduled_at: {e}")));
                }
            }
            Some(Ok(text))
        }
        SharedKey::Initialize | SharedKey::Config | SharedKey::History | SharedKey::Failsafe => {
            None
        }
    }
}

/// Whether `key` is stored.
pub fn present(key: SharedKey, a: &BTreeMap<String, String>) -> bool {
    read(key, a).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn apply(a: &mut BTreeMap<String, String>, u: Updates) {
        for (k, v) in u {
            match v {
                Some(v) => a.insert(k, v),
                None => a.remove(&k),
            };
        }
    }

    #[test]
    fn sync_round_trips_like_patroni_writes_it() {
        let mut a = ann(&[("kubectl.kubernetes.io/last-applied-configuration", "{}")]);
        let u = to_annotations(
            SharedKey::Sync,
            r#"{"leader":"a","quorum":0,"sync_standby":null}"#,
            &a,
        )
        .unwrap();
        apply(&mut a, u);
        assert_eq!(a.get("quorum").map(String::as_str), Some("0"));
        assert!(!a.contains_key("sync_standby"));
        let back: Value =
            serde_json::from_str(&read(SharedKey::Sync, &a).unwrap().unwrap()).unwrap();
        assert_eq!(back, serde_json::json!({"leader": "a", "quorum": 0}));
        let u = deletion(SharedKey::Sync, &a);
        apply(&mut a, u);
        assert!(!present(SharedKey::Sync, &a));
        assert!(a.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
    }

    #[test]
    fn failover_fields_replace_the_old_ones() {
        let mut a = BTreeMap::new();
        let u = to_annotations(SharedKey::Failover, r#"{"leader":"a","member":"b"}"#, &a).unwrap();
        apply(&mut a, u);
        let u = to_annotations(SharedKey::Failover, r#"{"member":"b"}"#, &a).unwrap();
        apply(&mut a, u);
        assert_eq!(a, ann(&[("member", "b")]));
        a.insert("scheduled_at".into(), "not a time".into());
        assert!(read(SharedKey::Failover, &a).unwrap().is_err());
    }

    #[test]
    fn status_annotations() {
        let mut a = ann(&[("leader", "n1"), ("optime", "1")]);
        let u = to_annotations(
            SharedKey::Status,
            r#"{"optime":67108960,"slots":{"b":5},"retain_slots":[]}"#,
            &a,
        )
        .unwrap();
        apply(&mut a, u);
        assert_eq!(a.get("optime").map(String::as_str), Some("67108960"));
        assert_eq!(a.get("slots").map(String::as_str), Some(r#"{"b":5}"#));
        assert!(!a.contains_key("retain_slots"));
        assert_eq!(a.get("leader").map(String::as_str), Some("n1"));
        a.insert("optime".into(), "???".into());
        assert!(read(SharedKey::Status, &a).unwrap().is_err());
        assert!(to_annotations(SharedKey::Sync, "7", &a).is_err());
    }
}
