//! The `watchdog` section, as Patroni reads it: `mode` (off, automatic,
//! required), `device` (`/dev/watchdog`), `safety_margin` (seconds between
//! the watchdog firing and the leader key expiring; -1: half the ttl).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

/// How much the node insists on a watchdog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchdogMode {
    Off,
    /// Used when it can be activated; ignored (with a log line) otherwise.
    Automatic,
    /// The node does not become primary unless it is active.
    Required,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchdogConfig {
    pub mode: WatchdogMode,
    pub device: PathBuf,
    /// Seconds; -1 means "timeout = ttl / 2".
    pub safety_margin: i64,
}

impl Default for WatchdogConfig {
    /// Patroni's defaults.
    fn default() -> Self {
        WatchdogConfig {
            mode: WatchdogMode::Automatic,
            device: PathBuf::from("/dev/watchdog"),
            safety_margin: 5,
        }
    }
}

impl WatchdogConfig {
    /// The watchdog timeout for these timings: `ttl - safety_margin` (or
    /// `ttl / 2`), so that the host resets before the lock can expire. A
    /// keepalive comes with each renewal, at most `loop_wait +
    /// retry_timeout` apart, and the guard fences a silent agent one second
    /// before the watchdog would fire: a timeout shorter than that sum plus
    /// one second would have the guard stop a healthy primary.
    pub fn timeout(
        &self,
        ttl: Duration,
        loop_wait: Duration,
        retry_timeout: Duration,
    ) -> Result<u32, String> {
        let ttl_s = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        let timeout = if self.safety_margin == -1 {
            ttl_s / 2
        } else {
            ttl_s.saturating_sub(self.safety_margin)
        };
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let needed = secs(loop_wait)
            .saturating_add(secs(retry_timeout))
            .saturating_add(1);
        if timeout < needed {
            return Err(format!(
                "watchdog timeout {timeout} s (ttl {ttl_s} s - watchdog.safety_margin {}) \
                 must be at least loop_wait + retry_timeout + 1 s ({needed} s)",
                self.safety_margin
            ));
        }
        u32::try_from(timeout).map_err(|_| format!("watchdog timeout {timeout} s is too long"))
    }
}

/// Reads the section; problems go to `errors` with their paths.
pub fn build(section: Option<&Value>, errors: &mut Vec<String>) -> WatchdogConfig {
    let mut config = WatchdogConfig::default();
    let Some(section) = section else {
        return config;
    };
    match section.get("mode") {
        None | Some(Value::Null) => {}
        Some(v) => match parse_mode(v) {
            Some(m) => config.mode = m,
            None => errors.push(format!(
                "watchdog.mode: {v} is not one of off, automatic, required"
            )),
        },
    }
    if let Some(d) = section.get("device").and_then(Value::as_str) {
        config.device = PathBuf::from(d);
    }
    match section.get("safety_margin") {
        None | Some(Value::Null) => {}
        Some(v) => match pgha_core::model::lenient::int(v) {
            Some(m) if m >= -1 => config.safety_margin = m,
            _ => errors.push(format!(
                "watchdog.safety_margin: {v} is not a number of seconds (or -1)"
            )),
        },
    }
    config
}

/// Patroni's spellings: YAML 1.1 reads `off` as false and `on` as true.
fn parse_mode(v: &Value) -> Option<WatchdogMode> {
    match v {
        Value::Bool(false) => Some(WatchdogMode::Off),
        Value::Bool(true) => Some(WatchdogMode::Automatic),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "off" | "false" | "disable" | "disabled" => Some(WatchdogMode::Off),
            "automatic" | "on" | "true" | "auto" => Some(WatchdogMode::Automatic),
            "required" | "require" => Some(WatchdogMode::Required),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patroni_spellings_and_defaults() {
        let mut errors = Vec::new();
        assert_eq!(build(None, &mut errors), WatchdogConfig::default());
        let c = build(
            Some(&json!({"mode": "required", "device": "/tmp/wd", "safety_margin": -1})),
            &mut errors,
        );
        assert_eq!(c.mode, WatchdogMode::Required);
        assert_eq!(c.device, PathBuf::from("/tmp/wd"));
        assert_eq!(
            build(Some(&json!({"mode": false})), &mut errors).mode,
            WatchdogMode::Off
        );
        assert_eq!(
            build(Some(&json!({"mode": "off"})), &mut errors).mode,
            WatchdogMode::Off
        );
        assert!(errors.is_empty(), "{errors:?}");
        build(
            Some(&json!({"mode": "sometimes", "safety_margin": "x"})),
            &mut errors,
        );
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("watchdog.mode:"), "{errors:?}");
        assert!(
            errors[1].starts_with("watchdog.safety_margin:"),
            "{errors:?}"
        );
    }

    #[test]
    fn the_timeout_ends_before_the_lock_and_after_the_next_keepalive() {
        let s = Duration::from_secs;
        let c = WatchdogConfig::default();
        assert_eq!(c.timeout(s(30), s(10), s(10)), Ok(25));
        assert!(c.timeout(s(5), s(1), s(2)).is_err(), "ttl 5 - 5 = 0");
        let half = WatchdogConfig {
            safety_margin: -1,
            ..c.clone()
        };
        assert_eq!(half.timeout(s(8), s(1), s(2)), Ok(4));
        assert!(
            half.timeout(s(5), s(1), s(2)).is_err(),
            "2 s: the guard would fence 1 s after each keepalive"
        );
        let one = WatchdogConfig {
            safety_margin: 1,
            ..c
        };
        assert_eq!(one.timeout(s(5), s(1), s(2)), Ok(4));
    }
}
