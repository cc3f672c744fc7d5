//! Where and how the `pgha` binary logs (`log:` in the YAML, as Patroni):
//! plain lines or one JSON object per line (`type: json`), on standard
//! error or in a rotating `<dir>/patroni.log` (`dir`, `file_size`,
//! `file_num`, `mode`).
//!
//! JSON lines carry Patroni's field names — `asctime` (UTC, Python's
//! `2024-05-01 12:00:00,123` form), `levelname`, `message` — then the
//! event's own fields (the HA decision's `rule`, `member`, `role`, ...) and
//! `static_fields`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use pgha_config::log::{FILE_NAME, LogSettings};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("log.dir: cannot open {path}: {source}")]
    Open { path: String, source: io::Error },
}

/// Which process logs: the agent rotates the file; its fence guard only
/// appends to it (two processes renaming one file would lose lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Agent,
    Guard,
}

/// Sets the global subscriber for `settings` (`PGHA_LOG`, if set and
/// valid, chooses the levels instead of `log.level` and `log.loggers`:
/// `LEVEL` or `TARGET=LEVEL,...`, e.g. `info,pgha_node=debug`).
pub fn init(settings: &LogSettings, role: Role) -> Result<(), LoggingError> {
    // Targets, not EnvFilter: no regular expressions compiled at every
    // start, in a process that must stay small (the guard).
    let filter = std::env::var("PGHA_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| {
            settings
                .directives()
                .parse::<Targets>()
                .unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO))
        });
    let builder = tracing_subscriber::fmt().with_max_level(tracing::Level::TRACE);
    let json = settings
        .json
        .then(|| JsonLines::new(settings.static_fields.clone()));
    match &settings.dir {
        Some(dir) => {
            let file = LogFile::open(dir, settings, role == Role::Agent)?;
            let builder = builder.with_ansi(false).with_writer(file);
            match json {
                Some(j) => install(builder.event_format(j).finish(), filter),
                None => install(builder.with_target(false).finish(), filter),
            }
        }
        None => {
            let builder = builder
                .with_writer(io::stderr)
                .with_ansi(json.is_none() && std::io::IsTerminal::is_terminal(&io::stderr()));
            match json {
                Some(j) => install(builder.event_format(j).finish(), filter),
                None => install(builder.with_target(false).finish(), filter),
            }
        }
    }
    Ok(())
}

fn install<S>(subscriber: S, filter: Targets)
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync + 'static,
{
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    subscriber.with(filter).init();
}

/// One JSON object per event.
#[derive(Debug, Clone)]
pub struct JsonLines {
    static_fields: BTreeMap<String, String>,
}

impl JsonLines {
    pub fn new(static_fields: BTreeMap<String, String>) -> Self {
        JsonLines { static_fields }
    }

    /// The line for an event at `at` with `level` and its `fields` (the
    /// message among them).
    fn line(&self, at: jiff::Timestamp, level: Level, fields: Map<String, Value>) -> String {
        let mut obj = Map::new();
        obj.insert("asctime".into(), Value::String(asctime(at)));
        obj.insert("levelname".into(), Value::String(levelname(level).into()));
        let mut fields = fields;
        obj.insert(
            "message".into(),
            fields
                .remove("message")
                .unwrap_or(Value::String(String::new())),
        );
        for (k, v) in fields {
            obj.insert(k, v);
        }
        for (k, v) in &self.static_fields {
            obj.entry(k.clone())
                .or_insert_with(|| Value::String(v.clone()));
        }
        Value::Object(obj).to_string()
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut fields = Fields(Map::new());
        event.record(&mut fields);
        let line = self.line(jiff::Timestamp::now(), *event.metadata().level(), fields.0);
        writeln!(writer, "{line}")
    }
}

/// Python logging's level names, as Patroni's lines carry them.
fn levelname(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

/// Python's default `asctime`: `2024-05-01 12:00:00,123` (here in UTC).
fn asctime(at: jiff::Timestamp) -> String {
    let mut s = at.strftime("%Y-%m-%d %H:%M:%S").to_string();
    let _ = write!(s, ",{:03}", at.subsec_millisecond());
    s
}

/// Collects an event's fields as JSON values.
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().into(), Value::String(value.into()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
}

/// `<dir>/patroni.log`, rotated by size as Python's `RotatingFileHandler`
/// does for Patroni (`patroni.log.1` the newest old one, up to
/// `file_num`), reopened when another process rotated it.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    rotates: bool,
    file_size: u64,
    file_num: u32,
    mode: Option<u32>,
    open: Mutex<Option<File>>,
}

impl LogFile {
    /// Opens (creates) the file; `rotates`: this process rotates it.
    pub fn open(dir: &Path, settings: &LogSettings, rotates: bool) -> Result<Self, LoggingError> {
        let path = dir.join(FILE_NAME);
        let log = LogFile {
            path,
            rotates,
            file_size: settings.file_size,
            file_num: settings.file_num,
            mode: settings.mode,
            open: Mutex::new(None),
        };
        let file = log.create().map_err(|source| LoggingError::Open {
            path: log.path.display().to_string(),
            source,
        })?;
        *log.lock() = Some(file);
        Ok(log)
    }

    fn create(&self) -> io::Result<File> {
        let mut o = OpenOptions::new();
        o.create(true).append(true);
        if let Some(m) = self.mode {
            o.mode(m);
        }
        o.open(&self.path)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<File>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write_line(&self, buf: &[u8]) -> io::Result<()> {
        let mut open = self.lock();
        let current = match open.as_ref() {
            Some(f) => {
                let here = std::fs::metadata(&self.path)
                    .ok()
                    .map(|m| (m.dev(), m.ino()));
                let mine = f.metadata().ok().map(|m| (m.dev(), m.ino()));
                if here.is_some() && here == mine {
                    f.metadata().map(|m| m.len()).unwrap_or(0)
                } else {
                    // Rotated (or removed) by someone else: follow the path.
                    *open = Some(self.create()?);
                    0
                }
            }
            None => {
                *open = Some(self.create()?);
                0
            }
        };
        if self.rotates && current > 0 && current + buf.len() as u64 > self.file_size {
            *open = None;
            self.rotate();
            *open = Some(self.create()?);
        }
        match open.as_mut() {
            Some(f) => f.write_all(buf),
            None => Ok(()),
        }
    }

    /// `patroni.log.N-1` → `.N`, ..., `patroni.log` → `.1`; the oldest
    /// beyond `file_num` is dropped.
    fn rotate(&self) {
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        let _ = std::fs::remove_file(numbered(self.file_num));
        for n in (1..self.file_num).rev() {
            let _ = std::fs::rename(numbered(n), numbered(n + 1));
        }
        let _ = std::fs::rename(&self.path, numbered(1));
    }
}

/// One write per event (the formatter writes a whole line at once).
#[derive(Debug)]
pub struct LogFileWriter<'a>(&'a LogFile);

impl Write for LogFileWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_line(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogFile {
    type Writer = LogFileWriter<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        LogFileWriter(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_carry_patronis_names_and_the_events_fields() {
        let j = JsonLines::new(BTreeMap::from([("app".into(), "pgha".into())]));
        let mut fields = Map::new();
        fields.insert("message".into(), Value::String("promoted".into()));
        fields.insert("rule".into(), Value::String("race".into()));
        let at: jiff::Timestamp = "2024-05-01T12:00:00.123Z".parse().unwrap();
        let line = j.line(at, Level::WARN, fields);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["asctime"], "2024-05-01 12:00:00,123");
        assert_eq!(v["levelname"], "WARNING");
        assert_eq!(v["message"], "promoted");
        assert_eq!(v["rule"], "race");
        assert_eq!(v["app"], "pgha");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn the_file_rotates_by_size_and_keeps_file_num() {
        let tmp = tempfile::tempdir().unwrap();
        let settings = LogSettings {
            file_size: 100,
            file_num: 2,
            mode: Some(0o640),
            ..LogSettings::default()
        };
        let log = LogFile::open(tmp.path(), &settings, true).unwrap();
        // A reader in another process (the guard) follows the rotation.
        let guard = LogFile::open(tmp.path(), &settings, false).unwrap();
        let line = [b'x'; 39];
        for i in 0..10 {
            let mut l = line.to_vec();
            l.push(b'0' + i);
            l.push(b'\n');
            log.write_line(&l).unwrap();
            guard.write_line(b"guard\n").unwrap();
        }
        let base = tmp.path().join(FILE_NAME);
        for p in [
            base.clone(),
            tmp.path().join("patroni.log.1"),
            tmp.path().join("patroni.log.2"),
        ] {
            let len = std::fs::metadata(&p).unwrap().len();
            assert!(len <= 100 + 6, "{} is {len} bytes", p.display());
        }
        assert!(!tmp.path().join("patroni.log.3").exists());
        let newest = std::fs::read_to_string(&base).unwrap();
        assert!(newest.contains("x9"), "{newest}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&base).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o640, 0, "{mode:o}");
    }
}
