//! The `log` section, as Patroni reads it: `level`, `type` (plain or
//! json), `dir` with `file_size` and `file_num` (a rotating file, Patroni's
//! `patroni.log`, instead of standard error), `mode` (the files'
//! permissions) and `static_fields` (added to every JSON line).
//! `format` and `dateformat` are not implemented (warned by name
//! through the schema).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

/// How the agent logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// `level`: DEBUG, INFO, WARNING, ERROR or CRITICAL.
    pub level: String,
    /// `type: json`: one JSON object per line.
    pub json: bool,
    /// `dir`: log to `<dir>/patroni.log` (the name Patroni uses, so what
    /// collects Patroni's logs finds these), rotated.
    pub dir: Option<PathBuf>,
    /// `file_size`: rotate once the file reaches this many bytes.
    pub file_size: u64,
    /// `file_num`: how many rotated files to keep.
    pub file_num: u32,
    /// `mode`: the log files' permissions (octal in the YAML, as Patroni).
    pub mode: Option<u32>,
    /// `static_fields`: added to every JSON line.
    pub static_fields: BTreeMap<String, String>,
    /// `loggers`: a level per pgha log target (`pgha_node: DEBUG`,
    /// `pgha_node::guard: WARNING`), as tracing directives
    /// (`pgha_node=debug`); `level` stays the default.
    pub loggers: BTreeMap<String, String>,
}

/// Patroni's defaults: 25,000,000 bytes per file, 4 files kept.
impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: "INFO".into(),
            json: false,
            dir: None,
            file_size: 25_000_000,
            file_num: 4,
            mode: None,
            static_fields: BTreeMap::new(),
            loggers: BTreeMap::new(),
        }
    }
}

/// The file the agent logs to in `dir`, as Patroni names it.
pub const FILE_NAME: &str = "patroni.log";

impl LogSettings {
    /// The levels as tracing directives: `level` as the default, then one
    /// per `loggers` entry (`info,pgha_node=debug`).
    pub fn directives(&self) -> String {
        let mut out = crate::log_filter(&self.level).unwrap_or("info").to_string();
        for (target, level) in &self.loggers {
            if let Some(l) = crate::log_filter(level) {
                out.push_str(&format!(",{target}={l}"));
            }
        }
        out
    }
}

/// Reads the section; problems go to `errors` with their paths, and
/// `loggers` entries that name Python loggers (Patroni's own, `urllib3`,
/// ...), which have no pgha counterpart, to `warnings` by name.
pub fn build(
    section: Option<&Value>,
    errors: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> LogSettings {
    let mut s = LogSettings::default();
    let Some(section) = section else {
        return s;
    };
    let text = |key: &str| section.get(key).and_then(pgha_core::model::lenient::text);
    if let Some(level) = text("level") {
        if crate::log_filter(&level).is_none() {
            errors.push(format!(
                "log.level: {level:?} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL"
            ));
        }
        s.level = level;
    }
    match text("type").map(|t| t.to_ascii_lowercase()).as_deref() {
        None | Some("plain") => {}
        Some("json") => s.json = true,
        Some(other) => errors.push(format!("log.type: {other:?} is not one of plain, json")),
    }
    s.dir = text("dir").filter(|d| !d.is_empty()).map(PathBuf::from);
    let int = |key: &str| {
        section
            .get(key)
            .filter(|v| !v.is_null())
            .map(|v| (v, pgha_core::model::lenient::int(v)))
    };
    match int("file_size") {
        None => {}
        Some((_, Some(n))) if n > 0 => s.file_size = n.unsigned_abs(),
        Some((v, _)) => errors.push(format!("log.file_size: {v} is not a number of bytes")),
    }
    match int("file_num") {
        None => {}
        Some((_, Some(n))) if (1..=1000).contains(&n) => s.file_num = n.unsigned_abs() as u32,
        Some((v, _)) => errors.push(format!(
            "log.file_num: {v} is not a number of files (1 to 1000)"
        )),
    }
    match section.get("mode").filter(|v| !v.is_null()) {
        None => {}
        Some(v) => match file_mode(v) {
            Some(m) => s.mode = Some(m),
            None => errors.push(format!(
                "log.mode: {v} is not a file mode (0600, 0640, ...)"
            )),
        },
    }
    match section.get("static_fields").filter(|v| !v.is_null()) {
        None => {}
        Some(Value::Object(fields)) => {
            for (k, v) in fields {
                let value = match v {
                    Value::String(t) => t.clone(),
                    other => other.to_string(),
                };
                s.static_fields.insert(k.clone(), value);
            }
        }
        Some(v) => errors.push(format!(
            "log.static_fields: {v} is not a mapping of names to values"
        )),
    }
    match section.get("loggers").filter(|v| !v.is_null()) {
        None => {}
        Some(Value::Object(loggers)) => {
            for (name, level) in loggers {
                let level = pgha_core::model::lenient::text(level).unwrap_or_default();
                if crate::log_filter(&level).is_none() {
                    errors.push(format!(
                        "log.loggers.{name}: {level:?} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL"
                    ));
                } else if is_pgha_target(name) {
                    s.loggers.insert(name.clone(), level);
                } else {
                    warnings.push(format!(
                        "log.loggers.{name}: a Python logger of Patroni's; pgha's log targets are \
                         its crates and modules (pgha_node, pgha_node::guard, pgha_dcs_etcd, ...), \
                         so this entry is not applied"
                    ));
                }
            }
        }
        Some(v) => errors.push(format!(
            "log.loggers: {v} is not a mapping of logger names to levels"
        )),
    }
    s
}

/// A tracing target of pgha's: one of its crates, or a module path in one.
fn is_pgha_target(name: &str) -> bool {
    name.starts_with("pgha")
        && name.split("::").all(|part| {
            !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

/// A file mode as Patroni's YAML gives it: an integer (YAML 1.1 reads
/// `0640` as octal, i.e. 416) or a string of octal digits.
fn file_mode(v: &Value) -> Option<u32> {
    let m = match v {
        Value::Number(n) => u32::try_from(n.as_u64()?).ok()?,
        Value::String(s) => u32::from_str_radix(s.trim().trim_start_matches("0o"), 8).ok()?,
        _ => return None,
    };
    (m <= 0o777).then_some(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patroni_settings_and_defaults() {
        let mut errors = Vec::new();
        assert_eq!(
            build(None, &mut errors, &mut Vec::new()),
            LogSettings::default()
        );
        let s = build(
            Some(&json!({
                "level": "WARNING", "type": "json", "dir": "/var/log/pgha",
                "file_size": 1000, "file_num": 2, "mode": "0640",
                "static_fields": {"app": "pgha", "dc": 3}
            })),
            &mut errors,
            &mut Vec::new(),
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(s.level, "WARNING");
        assert!(s.json);
        assert_eq!(s.dir, Some(PathBuf::from("/var/log/pgha")));
        assert_eq!((s.file_size, s.file_num, s.mode), (1000, 2, Some(0o640)));
        assert_eq!(s.static_fields["dc"], "3");
        // YAML 1.1 read 0600 as the integer 384.
        assert_eq!(
            build(Some(&json!({"mode": 384})), &mut errors, &mut Vec::new()).mode,
            Some(0o600)
        );
        assert!(
            !build(
                Some(&json!({"type": "PLAIN"})),
                &mut errors,
                &mut Vec::new()
            )
            .json
        );
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn bad_values_are_named() {
        let mut errors = Vec::new();
        build(
            Some(&json!({
                "level": "LOUD", "type": "xml", "file_size": -1, "file_num": 0,
                "mode": "rw", "static_fields": [1], "loggers": {"pgha_node": "LOUD"}
            })),
            &mut errors,
            &mut Vec::new(),
        );
        let all = errors.join("\n");
        for key in [
            "log.level",
            "log.type",
            "log.file_size",
            "log.file_num",
            "log.mode",
            "log.static_fields",
            "log.loggers.pgha_node",
        ] {
            assert!(all.contains(key), "{key} not named in {all}");
        }
    }

    #[test]
    fn loggers_set_levels_per_pgha_target_and_python_ones_are_warned() {
        let (mut errors, mut warnings) = (Vec::new(), Vec::new());
        let s = build(
            Some(&json!({
                "level": "WARNING",
                "loggers": {"pgha_node::guard": "DEBUG", "pgha_dcs_etcd": "ERROR",
                            "patroni.postmaster": "WARNING", "urllib3": "DEBUG"}
            })),
            &mut errors,
            &mut warnings,
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            s.directives(),
            "warn,pgha_dcs_etcd=error,pgha_node::guard=debug"
        );
        let all = warnings.join("\n");
        assert!(
            all.contains("log.loggers.patroni.postmaster: a Python logger"),
            "{all}"
        );
        assert!(all.contains("log.loggers.urllib3"), "{all}");
        assert_eq!(warnings.len(), 2);
    }
}
