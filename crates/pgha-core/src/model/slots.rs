//! Permanent replication slots (`slots`) and slots pgha must leave alone
//! (`ignore_slots`), read from the dynamic configuration as Patroni reads
//! them.
//!
//! Why it matters: a slot that no member owns is, to the leader, a leftover
//! of a member that is gone, and the leader drops it after
//! `member_slots_ttl`. A backup tool's slot (Barman, `pg_receivewal`) or a
//! change-data-capture consumer's slot is no such leftover: dropping it
//! breaks its consumer or loses the WAL it needed. Listing a slot in either
//! key is how an operator says so; what pgha does with each is
//! [`crate::ha::slots`].

use serde_json::{Map, Value};

use super::DynamicConfig;

/// What a permanent slot is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotKind {
    /// Reserves WAL for a streaming client (a backup tool, an outside standby).
    Physical,
    /// Decodes changes of one database through an output plugin.
    Logical { database: String, plugin: String },
}

/// One entry of `slots`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermanentSlot {
    pub name: String,
    pub kind: SlotKind,
}

/// One entry of `ignore_slots`: a slot matches when it has every attribute
/// the entry names (an entry naming nothing matches every slot, as in
/// Patroni).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IgnoreMatcher {
    pub name: Option<String>,
    /// `physical` or `logical`.
    pub kind: Option<String>,
    pub database: Option<String>,
    pub plugin: Option<String>,
}

/// A slot as PostgreSQL lists it, for matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotIdentity<'a> {
    pub name: &'a str,
    pub kind: &'a SlotKind,
}

impl IgnoreMatcher {
    /// Whether `slot` has every attribute this entry names.
    pub fn matches(&self, slot: &SlotIdentity<'_>) -> bool {
        let (kind, database, plugin) = match slot.kind {
            SlotKind::Physical => ("physical", None, None),
            SlotKind::Logical { database, plugin } => {
                ("logical", Some(database.as_str()), Some(plugin.as_str()))
            }
        };
        let named = |want: &Option<String>, have: Option<&str>| {
            want.as_deref()
                .is_none_or(|w| w.is_empty() || Some(w) == have)
        };
        named(&self.name, Some(slot.name))
            && named(&self.kind, Some(kind))
            && named(&self.database, database)
            && named(&self.plugin, plugin)
    }
}

/// `slots` and `ignore_slots`, with what could not be used and why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotsConfig {
    pub permanent: Vec<PermanentSlot>,
    pub ignore: Vec<IgnoreMatcher>,
    /// Entries left out, each naming the slot and the reason (Patroni logs
    /// the same entries as errors and leaves them out too).
    pub problems: Vec<String>,
}

/// The keys Patroni reads permanent slots from, first non-empty wins.
const PERMANENT_KEYS: [&str; 3] = ["permanent_replication_slots", "permanent_slots", "slots"];

impl SlotsConfig {
    /// Reads both keys. An entry without attributes is physical; one with
    /// `database` and `plugin` and no `type` is logical.
    pub fn of(config: &DynamicConfig) -> SlotsConfig {
        SlotsConfig::of_document(config.as_map())
    }

    /// [`SlotsConfig::of`] a dynamic configuration document.
    pub fn of_document(doc: &Map<String, Value>) -> SlotsConfig {
        let mut out = SlotsConfig::default();
        let table = PERMANENT_KEYS.iter().find_map(|k| {
            doc.get(*k)
                .and_then(Value::as_object)
                .filter(|m| !m.is_empty())
        });
        for (name, value) in table.into_iter().flatten() {
            match permanent(name, value) {
                Ok(slot) => out.permanent.push(slot),
                Err(why) => out.problems.push(format!("slots.{name}: {why}; left out")),
            }
        }
        if let Some(list) = doc.get("ignore_slots").and_then(Value::as_array) {
            for (i, entry) in list.iter().enumerate() {
                match entry.as_object() {
                    Some(m) => out.ignore.push(IgnoreMatcher {
                        name: text(m, "name"),
                        kind: text(m, "type"),
                        database: text(m, "database"),
                        plugin: text(m, "plugin"),
                    }),
                    None => out
                        .problems
                        .push(format!("ignore_slots[{i}]: not a mapping; left out")),
                }
            }
        }
        out
    }

    /// Whether pgha must never drop or change `slot`.
    pub fn is_ignored(&self, slot: &SlotIdentity<'_>) -> bool {
        self.ignore.iter().any(|m| m.matches(slot))
    }

    /// The permanent slot named `name`, if any.
    pub fn permanent(&self, name: &str) -> Option<&PermanentSlot> {
        self.permanent.iter().find(|s| s.name == name)
    }
}

/// PostgreSQL's slot names, as Patroni accepts them.
pub fn is_valid_slot_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn permanent(name: &str, value: &Value) -> Result<PermanentSlot, String> {
    if !is_valid_slot_name(name) {
        return Err(
            "not a valid slot name (1 to 63 lower case letters, digits and underscores)".into(),
        );
    }
    let empty = Map::new();
    let attrs = match value {
        Value::Null => &empty,
        Value::Object(m) => m,
        other => return Err(format!("expected a mapping, found {other}")),
    };
    let database = text(attrs, "database");
    let plugin = text(attrs, "plugin");
    let declared = text(attrs, "type");
    let kind = match declared.as_deref() {
        Some("physical") => SlotKind::Physical,
        None if database.is_none() && plugin.is_none() => SlotKind::Physical,
        Some("logical") | None => match (database, plugin) {
            (Some(database), Some(plugin)) => SlotKind::Logical { database, plugin },
            _ => return Err("a logical slot needs both database and plugin".into()),
        },
        Some(other) => return Err(format!("type {other:?} is neither physical nor logical")),
    };
    Ok(PermanentSlot {
        name: name.to_string(),
        kind,
    })
}

fn text(m: &Map<String, Value>, key: &str) -> Option<String> {
    match m.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config(v: Value) -> DynamicConfig {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn entries_are_read_as_patroni_reads_them() {
        let c = SlotsConfig::of(&config(json!({"slots": {
            "barman": null,
            "walrcv": {"type": "physical"},
            "cdc": {"database": "app", "plugin": "pgoutput"},
            "dbz": {"type": "logical", "database": "app", "plugin": "test_decoding"},
            "half": {"type": "logical", "database": "app"},
            "Bad-Name": {},
            "odd": {"type": "other"},
        }})));
        let kinds: Vec<(&str, &SlotKind)> = c
            .permanent
            .iter()
            .map(|s| (s.name.as_str(), &s.kind))
            .collect();
        let logical = |p: &str| SlotKind::Logical {
            database: "app".into(),
            plugin: p.into(),
        };
        assert_eq!(
            kinds,
            [
                ("barman", &SlotKind::Physical),
                ("walrcv", &SlotKind::Physical),
                ("cdc", &logical("pgoutput")),
                ("dbz", &logical("test_decoding")),
            ]
        );
        assert_eq!(c.problems.len(), 3, "{:?}", c.problems);
        assert!(
            c.problems
                .iter()
                .any(|p| p.starts_with("slots.half: a logical slot needs"))
        );
        assert!(
            c.problems
                .iter()
                .any(|p| p.starts_with("slots.Bad-Name: not a valid slot name"))
        );
        assert!(
            c.problems
                .iter()
                .any(|p| p.starts_with("slots.odd: type \"other\""))
        );
    }

    #[test]
    fn the_first_non_empty_of_patronis_three_keys_wins() {
        let c = SlotsConfig::of(&config(json!({
            "permanent_slots": {},
            "slots": {"b": null},
            "permanent_replication_slots": {"a": null},
        })));
        let names: Vec<&str> = c.permanent.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a"]);
        let c = SlotsConfig::of(&config(
            json!({"permanent_slots": {}, "slots": {"b": null}}),
        ));
        let names: Vec<&str> = c.permanent.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["b"]);
    }

    #[test]
    fn an_ignore_entry_matches_on_every_attribute_it_names() {
        let c = SlotsConfig::of(&config(json!({"ignore_slots": [
            {"name": "keep_me"},
            {"type": "logical", "database": "reports"},
            "garbage",
        ]})));
        assert_eq!(c.problems, ["ignore_slots[2]: not a mapping; left out"]);
        let physical = SlotKind::Physical;
        let reports = SlotKind::Logical {
            database: "reports".into(),
            plugin: "pgoutput".into(),
        };
        let app = SlotKind::Logical {
            database: "app".into(),
            plugin: "pgoutput".into(),
        };
        let id = |name, kind| SlotIdentity { name, kind };
        assert!(c.is_ignored(&id("keep_me", &physical)));
        assert!(c.is_ignored(&id("keep_me", &app)));
        assert!(c.is_ignored(&id("any", &reports)));
        assert!(!c.is_ignored(&id("any", &app)));
        assert!(!c.is_ignored(&id("any", &physical)));
        let everything = SlotsConfig::of(&config(json!({"ignore_slots": [{}]})));
        assert!(everything.is_ignored(&id("any", &physical)));
    }
}
