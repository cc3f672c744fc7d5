//! The object validation kube-apiserver applies to names, labels and
//! annotations (the rules every object type shares).

use serde_json::Value;

use crate::error::ApiError;
use crate::store::Resource;

/// The total size limit of all annotations of one object.
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && s.as_bytes().last().is_some_and(u8::is_ascii_alphanumeric)
}

/// A DNS-1123 subdomain: lowercase labels separated by dots, at most 253
/// characters.
pub fn dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(dns_label)
}

/// `(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?`, at most 63 characters.
pub fn qualified_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && s.as_bytes().last().is_some_and(u8::is_ascii_alphanumeric)
}

/// A label or annotation key: an optional DNS-subdomain prefix and `/`,
/// then a qualified name.
pub fn qualified_name(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => dns_subdomain(prefix) && qualified_part(name),
        None => qualified_part(key),
    }
}

/// A label value: empty, or a qualified name part.
pub fn label_value(v: &str) -> bool {
    v.is_empty() || qualified_part(v)
}

/// Checks what the API checks for every object: the name, labels (keys
/// and values) and annotations (keys, string values, total size).
pub fn object(res: Resource, obj: &Value) -> Result<(), ApiError> {
    let meta = obj.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let name_ok = match res {
        // Service names are DNS-1035 labels: they must start with a letter.
        Resource::Services => {
            dns_label(name) && name.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
        }
        _ => dns_subdomain(name),
    };
    if !name_ok {
        return Err(ApiError::invalid(
            res,
            name,
            format!(
                "metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 name must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            ),
        ));
    }
    for (field, values_are_labels) in [("labels", true), ("annotations", false)] {
        let Some(map) = meta.and_then(|m| m.get(field)) else {
            continue;
        };
        if map.is_null() {
            continue;
        }
        let Some(map) = map.as_object() else {
            return Err(ApiError::bad_request(format!(
                "metadata.{field} must be a map of strings"
            )));
        };
        let mut total = 0usize;
        for (k, v) in map {
            let Some(v) = v.as_str() else {
                return Err(ApiError::bad_request(format!(
                    "json: cannot unmarshal {} into Go struct field ObjectMeta.metadata.{field} of type string",
                    kind_of(v)
                )));
            };
            if !qualified_name(k) {
                return Err(ApiError::invalid(
                    res,
                    name,
                    format!(
                        "metadata.{field}: Invalid value: {k:?}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
                    ),
                ));
            }
            if values_are_labels && !label_value(v) {
                return Err(ApiError::invalid(
                    res,
                    name,
                    format!(
                        "metadata.labels: Invalid value: {v:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
                    ),
                ));
            }
            total += k.len() + v.len();
        }
        if !values_are_labels && total > MAX_ANNOTATIONS_BYTES {
            return Err(ApiError::invalid(
                res,
                name,
                format!(
                    "metadata.annotations: Too long: must have at most {MAX_ANNOTATIONS_BYTES} bytes"
                ),
            ));
        }
    }
    if res == Resource::ConfigMaps
        && let Some(data) = obj.get("data").and_then(Value::as_object)
        && data.values().any(|v| !v.is_string())
    {
        return Err(ApiError::bad_request(
            "json: cannot unmarshal into Go struct field ConfigMap.data of type string",
        ));
    }
    Ok(())
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_keys() {
        assert!(dns_subdomain("demo-leader"));
        assert!(dns_subdomain("a.b-c"));
        assert!(!dns_subdomain("Demo"));
        assert!(!dns_subdomain("-a"));
        assert!(qualified_name("cluster-name"));
        assert!(qualified_name("pgha.io/heartbeat"));
        assert!(!qualified_name("a/b/c"));
        assert!(label_value("standby_leader"));
        assert!(label_value(""));
        assert!(!label_value("a b"));
    }
}
