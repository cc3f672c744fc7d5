//! The command line of `pg-fence-guard`, the fence guard program the agent
//! starts beside itself: built by the agent from its configuration
//! ([`GuardCommand::to_args`]), read back by the guard
//! ([`GuardCommand::parse`]).
//!
//! The guard does not read the configuration file: parsing Patroni's YAML
//! and connecting to the DCS would make it as big as the agent, and it runs
//! beside every PostgreSQL. It gets what it needs here — whose PostgreSQL
//! it guards, how to log, and the command that hands a dead agent's lock
//! over (`pgha [CONFIG] --hand-over-lock`, run only then).
//!
//! ```text
//! pg-fence-guard --member NAME --data-dir DIR [--log-level LEVEL] [--log-json]
//!     [--log-dir DIR] [--log-mode OCTAL] [--log-field KEY=VALUE]...
//!     [--log-target TARGET=LEVEL]...
//!     [-- PROGRAM ARGS...]
//! ```

use std::ffi::OsString;
use std::path::PathBuf;

use pgha_config::log::LogSettings;

/// The guard program's file name, installed beside `pgha`.
pub const GUARD_PROGRAM: &str = "pg-fence-guard";

/// Everything the guard is told on its command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardCommand {
    /// The member whose PostgreSQL it guards (for its log and the lock).
    pub member: String,
    pub data_dir: PathBuf,
    /// Where and how it logs (it appends to the agent's file, never
    /// rotates it: only `level`, `json`, `dir`, `mode`, `static_fields`
    /// and `loggers` are passed).
    pub log: LogSettings,
    /// `program args...` handing a dead agent's lock over (the lock's
    /// deadline is appended); `None`: the lock is left to expire.
    pub handover: Option<(PathBuf, Vec<OsString>)>,
}

/// A guard command line that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardCommandError {
    #[error("{0} needs a value")]
    MissingValue(&'static str),
    #[error("{0} is required")]
    Required(&'static str),
    #[error("{option}: {value:?} is not valid ({why})")]
    Invalid {
        option: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("unknown argument {0:?}")]
    Unknown(String),
}

impl GuardCommand {
    /// The arguments `pg-fence-guard` reads back with [`parse`](Self::parse).
    pub fn to_args(&self) -> Vec<OsString> {
        let mut out: Vec<OsString> = vec![
            "--member".into(),
            self.member.clone().into(),
            "--data-dir".into(),
            self.data_dir.clone().into(),
            "--log-level".into(),
            self.log.level.clone().into(),
        ];
        if self.log.json {
            out.push("--log-json".into());
        }
        if let Some(dir) = &self.log.dir {
            out.push("--log-dir".into());
            out.push(dir.clone().into());
        }
        if let Some(mode) = self.log.mode {
            out.push("--log-mode".into());
            out.push(format!("{mode:o}").into());
        }
        for (k, v) in &self.log.static_fields {
            out.push("--log-field".into());
            out.push(format!("{k}={v}").into());
        }
        for (target, level) in &self.log.loggers {
            out.push("--log-target".into());
            out.push(format!("{target}={level}").into());
        }
        if let Some((program, args)) = &self.handover {
            out.push("--".into());
            out.push(program.clone().into());
            out.extend(args.iter().cloned());
        }
        out
    }

    /// Reads the arguments after the program name.
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Self, GuardCommandError> {
        let mut args = args.into_iter();
        let mut member = None;
        let mut data_dir = None;
        let mut log = LogSettings::default();
        let mut handover = None;
        while let Some(arg) = args.next() {
            let Some(name) = arg.to_str() else {
                return Err(GuardCommandError::Unknown(arg.to_string_lossy().into()));
            };
            match name {
                "--member" => member = Some(text(value(&mut args, "--member")?, "--member")?),
                "--data-dir" => data_dir = Some(PathBuf::from(value(&mut args, "--data-dir")?)),
                "--log-level" => log.level = text(value(&mut args, "--log-level")?, "--log-level")?,
                "--log-json" => log.json = true,
                "--log-dir" => log.dir = Some(PathBuf::from(value(&mut args, "--log-dir")?)),
                "--log-mode" => {
                    let v = text(value(&mut args, "--log-mode")?, "--log-mode")?;
                    let mode =
                        u32::from_str_radix(&v, 8).map_err(|_| GuardCommandError::Invalid {
                            option: "--log-mode",
                            value: v.clone(),
                            why: "not an octal file mode",
                        })?;
                    log.mode = Some(mode);
                }
                "--log-field" => {
                    let (k, v) = pair(&mut args, "--log-field", "not KEY=VALUE")?;
                    log.static_fields.insert(k, v);
                }
                "--log-target" => {
                    let (target, level) = pair(&mut args, "--log-target", "not TARGET=LEVEL")?;
                    log.loggers.insert(target, level);
                }
                "--" => {
                    let program = args.next().ok_or(GuardCommandError::MissingValue("--"))?;
                    handover = Some((PathBuf::from(program), args.by_ref().collect()));
                }
                other => return Err(GuardCommandError::Unknown(other.to_string())),
            }
        }
        Ok(GuardCommand {
            member: member.ok_or(GuardCommandError::Required("--member"))?,
            data_dir: data_dir.ok_or(GuardCommandError::Required("--data-dir"))?,
            log,
            handover,
        })
    }
}

fn value(
    args: &mut impl Iterator<Item = OsString>,
    option: &'static str,
) -> Result<OsString, GuardCommandError> {
    args.next().ok_or(GuardCommandError::MissingValue(option))
}

/// The value of `option`, split at its first `=`.
fn pair(
    args: &mut impl Iterator<Item = OsString>,
    option: &'static str,
    why: &'static str,
) -> Result<(String, String), GuardCommandError> {
    let v = text(value(args, option)?, option)?;
    match v.split_once('=') {
        Some((k, val)) => Ok((k.to_string(), val.to_string())),
        None => Err(GuardCommandError::Invalid {
            option,
            value: v,
            why,
        }),
    }
}

fn text(value: OsString, option: &'static str) -> Result<String, GuardCommandError> {
    value.into_string().map_err(|v| GuardCommandError::Invalid {
        option,
        value: v.to_string_lossy().into(),
        why: "not UTF-8",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> GuardCommand {
        let mut log = LogSettings {
            level: "DEBUG".into(),
            json: true,
            dir: Some("/var/log/pgha".into()),
            mode: Some(0o640),
            ..LogSettings::default()
        };
        log.static_fields.insert("app".into(), "pgha=x".into());
        log.static_fields.insert("dc".into(), "eu 1".into());
        log.loggers
            .insert("pgha_node::guard".into(), "DEBUG".into());
        GuardCommand {
            member: "node1".into(),
            data_dir: "/var/lib/postgresql/15/main".into(),
            log,
            handover: Some((
                "/usr/bin/pgha".into(),
                vec!["/etc/pgha.yml".into(), "--hand-over-lock".into()],
            )),
        }
    }

    #[test]
    fn what_the_agent_writes_the_guard_reads_back() {
        let c = full();
        assert_eq!(GuardCommand::parse(c.to_args()), Ok(c));
        let bare = GuardCommand {
            member: "n".into(),
            data_dir: "/d".into(),
            log: LogSettings::default(),
            handover: None,
        };
        assert_eq!(GuardCommand::parse(bare.to_args()), Ok(bare));
    }

    #[test]
    fn a_bad_command_line_names_the_argument() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        let parse = |v: &[&str]| GuardCommand::parse(args(v)).unwrap_err().to_string();
        assert_eq!(parse(&["--data-dir", "/d"]), "--member is required");
        assert_eq!(parse(&["--member"]), "--member needs a value");
        assert_eq!(
            parse(&["--member", "n", "--data-dir", "/d", "--log-mode", "9"]),
            "--log-mode: \"9\" is not valid (not an octal file mode)"
        );
        assert_eq!(
            parse(&["--member", "n", "--data-dir", "/d", "--log-field", "x"]),
            "--log-field: \"x\" is not valid (not KEY=VALUE)"
        );
        assert_eq!(
            parse(&["--guard", "/etc/pgha.yml"]),
            "unknown argument \"--guard\""
        );
        assert_eq!(
            parse(&["--member", "n", "--data-dir", "/d", "--"]),
            "-- needs a value"
        );
    }
}
