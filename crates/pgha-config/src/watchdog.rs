//! The `watchdog` section, as Patroni reads it: `mode` (off, automatic,
//! required), `device` (`/dev/watchdog`), `safety_margin` (seconds between
//! the watchdog firing and the leader key expiring; -1: half the ttl).

use std::path::PathBuf;

pub use pgha_node::config::{WatchdogConfig, WatchdogMode};
use serde_json::Value;

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
}
