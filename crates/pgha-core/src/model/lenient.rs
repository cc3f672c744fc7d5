//! Reading values the way Patroni reads them.
//!
//! Patroni accepts `30`, `"30"` and (for booleans) `"on"`, `"yes"`, `1`. Other
//! tools write either form, so pgha must read both. A value of the wrong shape
//! reads as absent rather than failing the whole key: one odd field written by
//! someone else must not hide the rest of a member's status.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// An integer from a JSON number or a decimal string, like Patroni's `parse_int`.
pub fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(_) | Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// The text of a scalar (`5432` → `"5432"`, `true` → `"true"`), as a
/// setting's value is written into a configuration file or a command line;
/// `None` for null, a list or a mapping.
pub fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// A boolean from `true`/`false`, a number, or PostgreSQL's spellings
/// (`on`, `off`, `yes`, `no`, `true`, `false`, `1`, `0`), like Patroni's `parse_bool`.
pub fn bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_i64().map(|i| i != 0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" | "1" | "t" | "y" => Some(true),
            "off" | "false" | "no" | "0" | "f" | "n" => Some(false),
            _ => None,
        },
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// Serde adapter: an optional integer read leniently; a wrong shape reads as `None`.
pub fn de_opt_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(int(&Value::deserialize(d)?))
}

/// Serde adapter: an optional non-negative integer (LSNs, timelines).
pub fn de_opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(match &v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

/// Serde adapter: an optional boolean read leniently.
pub fn de_opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(bool(&Value::deserialize(d)?))
}

/// Serde adapter: an optional string; numbers and booleans are kept as their text.
pub fn de_opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ints_from_numbers_and_strings() {
        assert_eq!(int(&json!(30)), Some(30));
        assert_eq!(int(&json!("30")), Some(30));
        assert_eq!(int(&json!(" 7 ")), Some(7));
        assert_eq!(int(&json!(30.0)), Some(30));
        assert_eq!(int(&json!(30.5)), None);
        assert_eq!(int(&json!("thirty")), None);
        assert_eq!(int(&json!(null)), None);
        assert_eq!(int(&json!([1])), None);
    }

    #[test]
    fn bools_in_postgres_spellings() {
        for t in [
            json!(true),
            json!("on"),
            json!("Yes"),
            json!("TRUE"),
            json!(1),
        ] {
            assert_eq!(bool(&t), Some(true), "{t}");
        }
        for f in [
            json!(false),
            json!("off"),
            json!("no"),
            json!("0"),
            json!(0),
        ] {
            assert_eq!(bool(&f), Some(false), "{f}");
        }
        assert_eq!(bool(&json!("maybe")), None);
    }
}
