//! Label and field selectors, as list and watch requests give them.
//!
//! Label selector grammar (Kubernetes "Labels and Selectors"): requirements
//! separated by commas, all of which must hold; each is `key`, `!key`,
//! `key=value`, `key==value`, `key!=value`, `key in (a,b)` or
//! `key notin (a,b)`. `!=` and `notin` also match objects without the key.
//! Field selectors: `metadata.name` and `metadata.namespace` with `=`, `==`
//! or `!=` (the fields every resource type supports).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::ApiError;
use crate::store::{labels, meta_str};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Exists,
    NotExists,
    In(Vec<String>),
    NotIn(Vec<String>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let bad = |why: &str| {
            ApiError::bad_request(format!("unable to parse requirement: {why} in {text:?}"))
        };
        let mut reqs = Vec::new();
        let mut rest = text.trim();
        while !rest.is_empty() {
            // One requirement ends at a comma outside parentheses.
            let mut depth = 0i32;
            let mut end = rest.len();
            for (i, c) in rest.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    ',' if depth == 0 => {
                        end = i;
                        break;
                    }
                    _ => {}
                }
            }
            if depth != 0 {
                return Err(bad("unbalanced parentheses"));
            }
            let part = rest[..end].trim();
            rest = rest.get(end + 1..).unwrap_or("").trim_start();
            if part.is_empty() {
                return Err(bad("empty requirement"));
            }
            reqs.push(parse_requirement(part).ok_or_else(|| bad(part))?);
        }
        Ok(LabelSelector(reqs))
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| {
            let v = labels.get(&r.key);
            match &r.op {
                Op::Exists => v.is_some(),
                Op::NotExists => v.is_none(),
                Op::In(values) => v.is_some_and(|v| values.contains(v)),
                Op::NotIn(values) => v.is_none_or(|v| !values.contains(v)),
            }
        })
    }

    pub fn matches_object(&self, obj: &Value) -> bool {
        self.0.is_empty() || self.matches(&labels(obj))
    }
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn valid_value(v: &str) -> bool {
    v.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn parse_requirement(part: &str) -> Option<Requirement> {
    if let Some(key) = part.strip_prefix('!') {
        let key = key.trim();
        return valid_key(key).then(|| Requirement {
            key: key.to_string(),
            op: Op::NotExists,
        });
    }
    for (sym, negate) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((k, v)) = part.split_once(sym) {
            let (k, v) = (k.trim(), v.trim());
            if !valid_key(k) || !valid_value(v) {
                return None;
            }
            let values = vec![v.to_string()];
            return Some(Requirement {
                key: k.to_string(),
                op: if negate {
                    Op::NotIn(values)
                } else {
                    Op::In(values)
                },
            });
        }
    }
    // key in (...) / key notin (...) / key
    let mut words = part.splitn(2, char::is_whitespace);
    let key = words.next()?.trim();
    let tail = words.next().map(str::trim).unwrap_or("");
    if !valid_key(key) {
        return None;
    }
    if tail.is_empty() {
        return Some(Requirement {
            key: key.to_string(),
            op: Op::Exists,
        });
    }
    let (negate, list) = if let Some(l) = tail.strip_prefix("notin") {
        (true, l)
    } else if let Some(l) = tail.strip_prefix("in") {
        (false, l)
    } else {
        return None;
    };
    let list = list.trim().strip_prefix('(')?.strip_suffix(')')?;
    let values: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(String::from)
        .collect();
    if values.is_empty() || !values.iter().all(|v| valid_value(v)) {
        return None;
    }
    Some(Requirement {
        key: key.to_string(),
        op: if negate {
            Op::NotIn(values)
        } else {
            Op::In(values)
        },
    })
}

/// A parsed field selector over `metadata.name` / `metadata.namespace`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let mut out = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, negate, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, false, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{text}'; can't understand '{part}'"
                )));
            };
            let field = field.trim();
            if field != "metadata.name" && field != "metadata.namespace" {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            out.push((field.to_string(), negate, value.trim().to_string()));
        }
        Ok(FieldSelector(out))
    }

    pub fn matches_object(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, negate, value)| {
            let actual = meta_str(obj, field.trim_start_matches("metadata.")).unwrap_or("");
            (actual == value) != *negate
        })
    }
}

/// Both selectors of one request.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selection {
    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches_object(obj) && self.fields.matches_object(obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn grammar() {
        let s = LabelSelector::parse(
            "app=pg,cluster-name==demo, role!=replica,tier in (a, b),!gone,present,x notin (y)",
        )
        .unwrap();
        assert!(s.matches(&l(&[
            ("app", "pg"),
            ("cluster-name", "demo"),
            ("tier", "b"),
            ("present", "")
        ])));
        assert!(!s.matches(&l(&[
            ("app", "pg"),
            ("cluster-name", "demo"),
            ("tier", "c"),
            ("present", "")
        ])));
        assert!(!s.matches(&l(&[
            ("app", "pg"),
            ("cluster-name", "demo"),
            ("tier", "a"),
            ("present", ""),
            ("gone", "1")
        ])));
        assert!(!s.matches(&l(&[
            ("app", "pg"),
            ("cluster-name", "demo"),
            ("tier", "a"),
            ("present", ""),
            ("role", "replica")
        ])));
        assert!(LabelSelector::parse("a in (").is_err());
        assert!(LabelSelector::parse("a=b=c").is_err());
        assert!(LabelSelector::parse("").unwrap().matches(&l(&[])));
        assert!(FieldSelector::parse("status.phase=Running").is_err());
    }
}
