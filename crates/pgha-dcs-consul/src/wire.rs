//! Consul's HTTP wire forms: KV entries, session answers, Go durations,
//! and URL encoding of keys and query values.

use std::time::Duration;

use base64::Engine as _;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

/// One entry of a `GET /v1/kv/...` answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct KvEntry {
    pub key: String,
    /// Base64; `null` for an empty value.
    #[serde(default)]
    pub value: Option<String>,
    /// The session holding the lock on the key.
    #[serde(default)]
    pub session: Option<String>,
    pub modify_index: u64,
}

impl KvEntry {
    /// The value's bytes; an error for a value that is not base64.
    pub fn bytes(&self) -> Result<Vec<u8>, base64::DecodeError> {
        match &self.value {
            None => Ok(Vec::new()),
            Some(v) => base64::engine::general_purpose::STANDARD.decode(v),
        }
    }
}

/// The answer to `PUT /v1/txn`, applied (200) or rolled back (409). Only
/// the errors matter here: a rolled-back transaction names the operation
/// that failed and why.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TxnAnswer {
    #[serde(default)]
    pub errors: Option<Vec<TxnError>>,
}

/// One failed operation of a rolled-back transaction.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TxnError {
    /// The position of the failed operation in the request.
    pub op_index: usize,
    /// Consul's message (`failed index check for key …`, `invalid session …`).
    pub what: String,
}

/// `bytes` as the base64 Consul expects of a value in a transaction.
pub(crate) fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The part of a session Consul returns on renewal that matters here.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct SessionInfo {
    #[serde(rename = "TTL", default)]
    pub ttl: String,
}

/// `{"ID": "..."}`, the answer to a session creation.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Created {
    #[serde(rename = "ID")]
    pub id: String,
}

/// Characters left as they are in a key's path: unreserved ones and `/`.
const PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// Characters left as they are in a query value: unreserved ones.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `/v1/kv/<key>` with the key percent-encoded (slashes kept).
pub(crate) fn kv_path(key: &str) -> String {
    format!("/v1/kv/{}", utf8_percent_encode(key, PATH))
}

/// A path segment such as a session ID, percent-encoded.
pub(crate) fn segment(s: &str) -> String {
    utf8_percent_encode(s, QUERY).to_string()
}

pub(crate) fn query_value(s: &str) -> String {
    utf8_percent_encode(s, QUERY).to_string()
}

/// A session TTL as Consul reads it: whole seconds (`15s`), or seconds
/// with a fraction (`2.5s`), millisecond precision.
pub(crate) fn ttl_text(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        let s = format!("{}.{:03}", ms / 1000, ms % 1000);
        format!("{}s", s.trim_end_matches('0'))
    }
}

/// `wait=` for a blocking query: milliseconds, at least 1.
pub(crate) fn wait_text(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

/// Parses a Go duration (`15s`, `15.0s`, `1m30s`, `500ms`); `None` for
/// anything else or a negative value.
pub(crate) fn parse_go_duration(text: &str) -> Option<Duration> {
    let s = text.trim();
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() || s.starts_with('-') {
        return None;
    }
    let mut nanos = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..end].parse().ok()?;
        rest = &rest[end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_end..];
        nanos += number * scale;
    }
    (nanos.is_finite() && nanos >= 0.0 && nanos < u64::MAX as f64)
        .then(|| Duration::from_nanos(nanos.round() as u64))
}

/// The lower bound in Consul's "Invalid Session TTL '…', must be between
/// [10s=24h0m0s]" error.
pub(crate) fn session_ttl_min(message: &str) -> Option<Duration> {
    let start = message.find("must be between [")? + "must be between [".len();
    let rest = &message[start..];
    let end = rest.find('=')?;
    parse_go_duration(&rest[..end])
}

/// A Consul index as pgha's version number (they fit: Consul's are u64
/// counters far below i64::MAX).
pub(crate) fn index_version(index: u64) -> i64 {
    i64::try_from(index).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_with_slashes_kept() {
        assert_eq!(
            kv_path("service/demo/members/node 1"),
            "/v1/kv/service/demo/members/node%201"
        );
        assert_eq!(kv_path("service/a?b"), "/v1/kv/service/a%3Fb");
        assert_eq!(query_value("a b&c"), "a%20b%26c");
    }

    #[test]
    fn durations() {
        assert_eq!(ttl_text(Duration::from_secs(15)), "15s");
        assert_eq!(ttl_text(Duration::from_millis(2500)), "2.5s");
        assert_eq!(ttl_text(Duration::from_millis(1001)), "1.001s");
        assert_eq!(wait_text(Duration::from_micros(10)), "1ms");
        assert_eq!(parse_go_duration("15.0s"), Some(Duration::from_secs(15)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("x"), None);
        assert_eq!(parse_go_duration("-1s"), None);
        assert_eq!(
            session_ttl_min("Invalid Session TTL '2000000000', must be between [10s=24h0m0s]"),
            Some(Duration::from_secs(10))
        );
        assert_eq!(session_ttl_min("something else"), None);
    }
}
