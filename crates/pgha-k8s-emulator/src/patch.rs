//! PATCH bodies: JSON merge patch (RFC 7386) and the part of the strategic
//! merge patch that the emulated resources need.
//!
//! A strategic merge patch differs from a merge patch only for lists whose
//! field declares a merge key (containers by `name`, ...) and for `$patch`
//! directives. None of the fields pgha or Patroni patch (labels,
//! annotations, Endpoints `subsets`) has a merge key, so lists are replaced
//! as in a merge patch; `$patch: replace` and `$patch: delete` on maps are
//! honoured, `$setElementOrder/...` and `$retainKeys` entries are dropped.
//! Merging lists by key is not emulated.

use serde_json::{Map, Value};

use crate::error::ApiError;

/// Which patch format a `Content-Type` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    Merge,
    Strategic,
}

impl PatchKind {
    pub fn from_content_type(ct: &str) -> Result<PatchKind, ApiError> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/merge-patch+json" => Ok(PatchKind::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchKind::Strategic),
            _ => Err(ApiError::unsupported_media_type(ct)),
        }
    }
}

/// RFC 7386: members of the patch replace those of the target, `null`
/// removes them, objects merge recursively, anything else replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else {
        return;
    };
    for (k, v) in patch {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// A strategic merge patch as described in the module docs.
pub fn strategic(target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return Ok(());
    };
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut replaced = patch.clone();
            replaced.remove("$patch");
            *target = Value::Object(strip_directives(replaced));
            return Ok(());
        }
        Some("delete") => {
            *target = Value::Null;
            return Ok(());
        }
        Some("merge") | None => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown patch type: {other:?}"
            )));
        }
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else {
        return Ok(());
    };
    for (k, v) in patch {
        if k == "$patch" || k == "$retainKeys" || k.starts_with("$setElementOrder/") {
            continue;
        }
        if k.starts_with("$deleteFromPrimitiveList/") {
            return Err(ApiError::bad_request(format!(
                "the emulator does not support the strategic merge directive {k}"
            )));
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        let slot = t.entry(k.clone()).or_insert(Value::Null);
        strategic(slot, v)?;
        if slot.is_null() {
            t.remove(k);
        }
    }
    Ok(())
}

fn strip_directives(mut map: Map<String, Value>) -> Map<String, Value> {
    map.retain(|k, _| !k.starts_with('$'));
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc7386_examples() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
        let mut t = json!({"a": [1, 2]});
        merge(&mut t, &json!({"a": [3]}));
        assert_eq!(t, json!({"a": [3]}));
    }

    #[test]
    fn strategic_maps_and_directives() {
        let mut t = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        strategic(
            &mut t,
            &json!({"metadata": {"labels": {"a": null, "c": "3"}}}),
        )
        .unwrap();
        assert_eq!(t, json!({"metadata": {"labels": {"b": "2", "c": "3"}}}));
        strategic(
            &mut t,
            &json!({"metadata": {"labels": {"$patch": "replace", "z": "9"}}}),
        )
        .unwrap();
        assert_eq!(t, json!({"metadata": {"labels": {"z": "9"}}}));
        strategic(
            &mut t,
            &json!({"metadata": {"labels": {"$patch": "delete"}}}),
        )
        .unwrap();
        assert_eq!(t, json!({"metadata": {}}));
    }
}
