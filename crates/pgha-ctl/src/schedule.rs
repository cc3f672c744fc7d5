//! `--scheduled` times, read and written as patronictl does: ISO 8601 with
//! or without an offset (without one means local time), sent to the REST
//! API in Python's `isoformat()` spelling (`2026-01-14T10:00:00+02:00`).

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{Offset, TimeZone};

use super::CtlError;

/// A scheduled time, resolved to an offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled {
    /// `2026-01-14T10:00:00+02:00`: what the REST API and the DCS get.
    pub iso: String,
    /// `2026-01-14 10:00:00+02:00`: Python's `str()`, used in questions.
    pub shown: String,
}

/// `None` for "now" (or nothing); an error naming the text otherwise.
pub fn parse(text: Option<&str>) -> Result<Option<Scheduled>, CtlError> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty() && *t != "now") else {
        return Ok(None);
    };
    let bad = || {
        CtlError::failed(format!(
            "Unable to parse scheduled timestamp ({text}). It should be in an unambiguous format (e.g. ISO 8601)"
        ))
    };
    let (dt, offset) = parse_parts(text).ok_or_else(bad)?;
    let offset = match offset {
        Some(o) => o,
        None => TimeZone::system()
            .to_ambiguous_zoned(dt)
            .compatible()
            .map_err(|_| bad())?
            .offset(),
    };
    Ok(Some(format_parts(dt, offset)))
}

/// `YYYY-MM-DD[(T| )HH:MM[:SS[.ffffff]]][Z|±HH[[:]MM]]`.
fn parse_parts(text: &str) -> Option<(DateTime, Option<Offset>)> {
    let num = |s: &str| s.parse::<i32>().ok();
    let date_text = text.get(..10)?;
    let mut parts = date_text.split('-');
    let date = Date::new(
        i16::try_from(num(parts.next()?)?).ok()?,
        i8::try_from(num(parts.next()?)?).ok()?,
        i8::try_from(num(parts.next()?)?).ok()?,
    )
    .ok()?;
    let rest = &text[10..];
    if rest.is_empty() {
        return Some((date.to_datetime(Time::midnight()), None));
    }
    let rest = rest.strip_prefix(['T', 't', ' '])?;
    let split = rest.find(['Z', 'z', '+', '-']).unwrap_or(rest.len());
    let (clock, zone) = rest.split_at(split);
    let mut hms = clock.trim().split(':');
    let hour = i8::try_from(num(hms.next()?)?).ok()?;
    let minute = i8::try_from(num(hms.next()?)?).ok()?;
    let (second, nanos) = match hms.next() {
        None => (0, 0),
        Some(s) => {
            let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
            let mut digits: String = frac.chars().take(9).collect();
            if !digits.chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            while digits.len() < 9 {
                digits.push('0');
            }
            (i8::try_from(num(whole)?).ok()?, num(&digits)?)
        }
    };
    if hms.next().is_some() {
        return None;
    }
    let time = Time::new(hour, minute, second, nanos).ok()?;
    let offset = match zone.trim() {
        "" => None,
        "Z" | "z" => Some(Offset::UTC),
        z => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let body = z[1..].replace(':', "");
            let (h, m) = match body.len() {
                1 | 2 => (num(&body)?, 0),
                4 => (num(&body[..2])?, num(&body[2..])?),
                _ => return None,
            };
            if h > 23 || m > 59 {
                return None;
            }
            Some(Offset::from_seconds(sign * (h * 3600 + m * 60)).ok()?)
        }
    };
    Some((date.to_datetime(time), offset))
}

/// Python's `isoformat()` and `str()` of an aware datetime.
fn format_parts(dt: DateTime, offset: Offset) -> Scheduled {
    let micros = dt.subsec_nanosecond() / 1000;
    let clock = if micros == 0 {
        dt.strftime("%H:%M:%S").to_string()
    } else {
        format!("{}.{micros:06}", dt.strftime("%H:%M:%S"))
    };
    let secs = offset.seconds();
    let sign = if secs < 0 { '-' } else { '+' };
    let zone = format!(
        "{sign}{:02}:{:02}",
        secs.abs() / 3600,
        secs.abs() % 3600 / 60
    );
    let date = dt.strftime("%Y-%m-%d");
    Scheduled {
        iso: format!("{date}T{clock}{zone}"),
        shown: format!("{date} {clock}{zone}"),
    }
}

/// The example in the "When should ... take place" question: an hour from now.
pub fn next_hour_example() -> String {
    let later = jiff::Zoned::now()
        .checked_add(jiff::SignedDuration::from_hours(1))
        .unwrap_or_else(|_| jiff::Zoned::now());
    later.strftime("%Y-%m-%dT%H:%M").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iso(text: &str) -> String {
        parse(Some(text)).unwrap().unwrap().iso
    }

    #[test]
    fn times_are_written_like_python_isoformat() {
        assert_eq!(parse(Some("now")).unwrap(), None);
        assert_eq!(parse(None).unwrap(), None);
        assert_eq!(iso("2030-01-01T11:00+02:00"), "2030-01-01T11:00:00+02:00");
        assert_eq!(iso("2030-01-01 11:00:05Z"), "2030-01-01T11:00:05+00:00");
        assert_eq!(
            iso("2030-01-01T11:00:05.25-03"),
            "2030-01-01T11:00:05.250000-03:00"
        );
        assert_eq!(iso("2030-01-01T11:00+0530"), "2030-01-01T11:00:00+05:30");
        assert_eq!(
            parse(Some("2030-01-01T11:00+02:00"))
                .unwrap()
                .unwrap()
                .shown,
            "2030-01-01 11:00:00+02:00"
        );
        // Without an offset: local time, whatever the machine's zone is.
        assert!(iso("2030-01-01T11:00").starts_with("2030-01-01T11:00:00"));
        assert!(iso("2030-01-01").starts_with("2030-01-01T00:00:00"));
        for bad in [
            "tomorrow",
            "2030-13-01T10:00",
            "2030-01-01T25:00",
            "2030-01-01X10:00",
        ] {
            let e = parse(Some(bad)).unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("ISO 8601"), "{e}");
        }
    }
}
