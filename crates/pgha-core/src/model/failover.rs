//! `failover`: a switchover or failover someone asked for.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::lenient;

/// The value of the `failover` key, as `POST /switchover`, `POST /failover`
/// and `patronictl switchover|failover` write it:
/// `{"leader": "node1", "member": "node2", "scheduled_at": "2024-01-14T10:09:57+00:00"}`.
///
/// `leader` set means a switchover away from that node; `member` is the
/// candidate (Patroni's name for it on the wire).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Failover {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::de_opt_string"
    )]
    pub leader: Option<String>,
    /// The candidate.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::de_opt_string"
    )]
    pub member: Option<String>,
    /// ISO 8601, as written (Python's `isoformat()`); see [`Failover::scheduled_at`].
    #[serde(
        default,
        rename = "scheduled_at",
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::de_opt_string"
    )]
    pub scheduled_at_text: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Failover {
    /// Parses the stored text: a JSON object, or the legacy `leader:candidate` form.
    pub fn parse(text: &str) -> Result<Self, super::ValueError> {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => {
                serde_json::from_value(Value::Object(map)).map_err(|e| super::ValueError::Invalid {
                    what: "failover object",
                    reason: e.to_string(),
                })
            }
            Ok(other) => Err(super::ValueError::wrong_kind("a JSON object", &other)),
            Err(_) if text.contains(':') && !text.trim_start().starts_with(['{', '[', '"']) => {
                let mut parts = text.splitn(2, ':').map(str::trim);
                let leader = parts.next().filter(|s| !s.is_empty()).map(String::from);
                let member = parts.next().filter(|s| !s.is_empty()).map(String::from);
                Ok(Failover {
                    leader,
                    member,
                    ..Default::default()
                })
            }
            Err(e) => Err(super::ValueError::NotJson(e.to_string())),
        }
    }

    /// The scheduled time, if one is set. An unparsable time is an error
    /// naming the text, never silently "now".
    pub fn scheduled_at(&self) -> Result<Option<jiff::Timestamp>, super::ValueError> {
        match self.scheduled_at_text.as_deref() {
            None | Some("") => Ok(None),
            Some(text) => parse_iso8601(text).map(Some),
        }
    }

    /// Neither a leader nor a candidate: nothing to act on.
    pub fn is_empty(&self) -> bool {
        self.leader.as_deref().is_none_or(str::is_empty)
            && self.member.as_deref().is_none_or(str::is_empty)
    }
}

/// Parses an ISO 8601 time as Python writes and reads them: with an offset
/// (`+00:00`, `Z`) or, as Patroni tolerates, without one (taken as UTC).
pub fn parse_iso8601(text: &str) -> Result<jiff::Timestamp, super::ValueError> {
    let t = text.trim();
    if let Ok(ts) = t.parse::<jiff::Timestamp>() {
        return Ok(ts);
    }
    let with_t = t.replacen(' ', "T", 1);
    if let Ok(ts) = with_t.parse::<jiff::Timestamp>() {
        return Ok(ts);
    }
    with_t
        .parse::<jiff::civil::DateTime>()
        .ok()
        .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|z| z.timestamp())
        .ok_or_else(|| super::ValueError::NotATime(text.to_string()))
}

/// The time in `text` as Patroni stores a scheduled time: Python's
/// `datetime.isoformat()`, in the offset `text` gives (`Z` and no offset are
/// UTC, written `+00:00`), microseconds only when not zero. patronictl shows
/// the stored string as it is, so pgha writes the same one Patroni would.
pub fn python_isoformat(text: &str) -> Result<String, super::ValueError> {
    let at = parse_iso8601(text)?;
    let offset = given_offset(text.trim()).unwrap_or(jiff::tz::Offset::UTC);
    let dt = offset.to_datetime(at);
    let mut out = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    );
    let micros = dt.subsec_nanosecond() / 1000;
    if micros != 0 {
        out.push_str(&format!(".{micros:06}"));
    }
    let secs = offset.seconds();
    let abs = secs.unsigned_abs();
    out.push_str(&format!(
        "{}{:02}:{:02}",
        if secs < 0 { '-' } else { '+' },
        abs / 3600,
        abs % 3600 / 60
    ));
    Ok(out)
}

/// The offset written at the end of an ISO 8601 time (`Z`, `+01`,
/// `+0100`, `+01:00`), if any.
fn given_offset(t: &str) -> Option<jiff::tz::Offset> {
    if t.ends_with(['Z', 'z']) {
        return Some(jiff::tz::Offset::UTC);
    }
    // Past the date part, whose `-` are not offsets.
    let i = t.rfind(['+', '-']).filter(|&i| i > 10)?;
    let sign = if t[i..].starts_with('-') { -1 } else { 1 };
    let digits: String = t[i + 1..].chars().filter(char::is_ascii_digit).collect();
    let (h, m) = match digits.len() {
        2 => (digits.parse::<i32>().ok()?, 0),
        4 => (
            digits[..2].parse::<i32>().ok()?,
            digits[2..].parse::<i32>().ok()?,
        ),
        _ => return None,
    };
    jiff::tz::Offset::from_seconds(sign * (h * 3600 + m * 60)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduled_times_are_stored_as_python_writes_them() {
        for (given, stored) in [
            ("2026-01-14T03:00+01:00", "2026-01-14T03:00:00+01:00"),
            ("2026-01-14T02:00:00Z", "2026-01-14T02:00:00+00:00"),
            (
                "2026-01-14 02:00:00.5-05:30",
                "2026-01-14T02:00:00.500000-05:30",
            ),
            (
                "2026-01-14T10:09:57.139400+00:00",
                "2026-01-14T10:09:57.139400+00:00",
            ),
            ("2026-01-14T02:00:00+0200", "2026-01-14T02:00:00+02:00"),
            ("2026-01-14T02:00:00", "2026-01-14T02:00:00+00:00"),
        ] {
            assert_eq!(python_isoformat(given).unwrap(), stored, "{given}");
            assert_eq!(
                parse_iso8601(stored).unwrap(),
                parse_iso8601(given).unwrap(),
                "{given}: same instant"
            );
        }
        assert!(python_isoformat("tomorrow").is_err());
    }

    #[test]
    fn patroni_failover_round_trips() {
        let text = r#"{"leader":"node1","member":"node2","scheduled_at":"2026-01-14T10:09:57.139400+00:00"}"#;
        let f = Failover::parse(text).unwrap();
        assert_eq!(f.leader.as_deref(), Some("node1"));
        assert_eq!(f.member.as_deref(), Some("node2"));
        assert_eq!(
            f.scheduled_at().unwrap().unwrap().to_string(),
            "2026-01-14T10:09:57.1394Z"
        );
        assert_eq!(serde_json::to_string(&f).unwrap(), text);
    }

    #[test]
    fn legacy_colon_form_and_empties() {
        let f = Failover::parse("abc:def").unwrap();
        assert_eq!(
            (f.leader.as_deref(), f.member.as_deref()),
            (Some("abc"), Some("def"))
        );
        assert!(Failover::parse("{}").unwrap().is_empty());
        assert!(Failover::parse("[1]").is_err());
        assert!(Failover::parse("{\"leader\":").is_err());
    }

    #[test]
    fn times_without_offset_are_utc_and_garbage_is_an_error() {
        assert_eq!(
            parse_iso8601("2026-01-14T10:09:57").unwrap().to_string(),
            "2026-01-14T10:09:57Z"
        );
        assert_eq!(
            parse_iso8601("2026-01-14 10:09:57+02:00")
                .unwrap()
                .to_string(),
            "2026-01-14T08:09:57Z"
        );
        let f = Failover {
            scheduled_at_text: Some("tomorrow".into()),
            ..Default::default()
        };
        assert!(
            f.scheduled_at()
                .unwrap_err()
                .to_string()
                .contains("tomorrow")
        );
    }
}
