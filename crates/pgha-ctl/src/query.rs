//! `dsn` and `query`: find a member by name or role in the DCS and give
//! its address, or run SQL on it (tokio-postgres, like patronictl's
//! psycopg: the user, password and database from the options or libpq's
//! environment, `PGUSER`, `PGPASSWORD`, `~/.pgpass`, `PGDATABASE`).

use std::path::PathBuf;
use std::time::Duration;

use pgha_core::model::{Cluster, Member};
use serde_json::{Number, Value, json};
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use super::cli::{DsnArgs, QueryArgs};
use super::members::{RoleFilter, any_member};
use super::output::{Rows, timestamp};
use super::{Ctl, CtlError, echo, echo_raw};

/// How long connecting may take (patronictl's `connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a statement may run before pghactl stops waiting.
const QUERY_TIMEOUT: Duration = Duration::from_secs(3600);

/// Host and port PostgreSQL listens on for `m`.
fn host_port(m: &Member) -> Option<(String, u16)> {
    if let Some(kw) = m.data.extra.get("conn_kwargs").and_then(Value::as_object) {
        let host = kw.get("host").and_then(Value::as_str)?.to_string();
        let port = kw
            .get("port")
            .and_then(|p| p.as_u64().or_else(|| p.as_str()?.parse().ok()))
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(5432);
        return Some((host, port));
    }
    m.data.conn_host_port()
}

pub async fn dsn(ctl: &mut Ctl, a: DsnArgs) -> Result<(), CtlError> {
    let name = ctl.cluster_name(a.cluster_name)?;
    let c = ctl.load(&name).await?;
    let m = any_member(&c, a.role, a.member.as_deref())?.ok_or_else(|| {
        not_found(
            &c,
            &name,
            a.role,
            a.member.as_deref(),
            "Can not find a suitable member",
        )
    })?;
    let (host, port) = host_port(&m)
        .ok_or_else(|| CtlError::failed(format!("{}: its member key has no conn_url", m.name)))?;
    echo(format!("host={host} port={port}"));
    Ok(())
}

/// Says which member or role could not be found, and what exists.
fn not_found(
    c: &Cluster,
    scope: &str,
    role: Option<RoleFilter>,
    member: Option<&str>,
    prefix: &str,
) -> CtlError {
    let known: Vec<&str> = c.members.iter().map(|m| m.name.as_str()).collect();
    let why = match (member, role) {
        (Some(m), _) => format!("{m} is not a member of cluster {scope}"),
        (None, Some(r)) => format!("no member of cluster {scope} has the role '{}'", r.name()),
        (None, None) => format!("cluster {scope} has no leader"),
    };
    CtlError::failed(format!(
        "{prefix}: {why} (members: {})",
        if known.is_empty() {
            "none".into()
        } else {
            known.join(", ")
        }
    ))
}

/// Connection settings from the options and libpq's environment.
#[derive(Debug, Clone)]
struct Login {
    user: String,
    password: Option<String>,
    dbname: Option<String>,
}

fn os_user() -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .or_else(|| std::env::var("USER").ok())
}

/// The password for host:port:db:user in the pgpass file (`PGPASSFILE`,
/// else `~/.pgpass`), libpq's format with `*` wildcards and `\` escapes.
fn pgpass(host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    let file = std::env::var_os("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pgpass")))?;
    let text = std::fs::read_to_string(file).ok()?;
    let port = port.to_string();
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let fields = split_pgpass(l);
            (fields.len() == 5).then_some(fields)
        })
        .find(|f| {
            [host, port.as_str(), db, user]
                .iter()
                .zip(f.iter())
                .all(|(want, got)| got == "*" || got == want)
        })
        .map(|f| f[4].clone())
}

fn split_pgpass(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(n), Some(last)) = (chars.next(), fields.last_mut()) {
                    last.push(n);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => {
                if let Some(last) = fields.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    fields
}

/// Why `pghactl query` got no rows: printed after `ERROR, SQLSTATE:` as
/// patronictl prints its errors.
#[derive(Debug, thiserror::Error)]
enum QueryError {
    #[error("{0}: its member key has no conn_url")]
    NoConnUrl(String),
    #[error("connection to {member} ({host}:{port}) timed out")]
    ConnectTimedOut {
        member: String,
        host: String,
        port: u16,
    },
    #[error("connection to {member} ({host}:{port}) failed: {reason}")]
    ConnectFailed {
        member: String,
        host: String,
        port: u16,
        reason: String,
    },
    #[error(
        "No connection to member {member} is available: {member} is not a member of cluster {scope}"
    )]
    NotAMember { member: String, scope: String },
    #[error("No connection to role '{0}' is available: no member has it")]
    NoMemberWithRole(&'static str),
    #[error("No connection is available: cluster {0} has no leader")]
    NoLeader(String),
    /// The server disagrees with `--role` (`pg_is_in_recovery()`).
    #[error("No connection to role '{role}' is available: {member} is {}", if *.in_recovery { "in recovery" } else { "not in recovery" })]
    WrongRole {
        role: &'static str,
        member: String,
        in_recovery: bool,
    },
    #[error("no result within {}s", .0.as_secs())]
    NoResult(Duration),
    /// PostgreSQL's error: SQLSTATE and message when the server sent one.
    #[error("{0}")]
    Postgres(String),
    #[error(transparent)]
    Arguments(#[from] CtlError),
}

async fn connect(m: &Member, login: &Login) -> Result<Client, QueryError> {
    let (host, port) = host_port(m).ok_or_else(|| QueryError::NoConnUrl(m.name.clone()))?;
    let db = login.dbname.clone().unwrap_or_else(|| login.user.clone());
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&host)
        .port(port)
        .user(&login.user)
        .dbname(&db)
        .application_name("pghactl")
        .connect_timeout(CONNECT_TIMEOUT);
    if let Some(p) = login
        .password
        .clone()
        .or_else(|| pgpass(&host, port, &db, &login.user))
    {
        cfg.password(p);
    }
    let connecting = cfg.connect(NoTls);
    let (client, connection) =
        tokio::time::timeout(CONNECT_TIMEOUT + Duration::from_secs(1), connecting)
            .await
            .map_err(|_| QueryError::ConnectTimedOut {
                member: m.name.clone(),
                host: host.clone(),
                port,
            })?
            .map_err(|e| QueryError::ConnectFailed {
                member: m.name.clone(),
                host: host.clone(),
                port,
                reason: pg_error(&e),
            })?;
    tokio::spawn(connection);
    Ok(client)
}

/// A PostgreSQL error in one line: SQLSTATE and message when the server sent one.
fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            text
        }
    }
}

/// A connection to the member `-m`, or the first with `--role` (the leader
/// by default). For replica and primary roles the server itself must agree
/// (`pg_is_in_recovery()`), as patronictl checks.
async fn open(
    c: &Cluster,
    scope: &str,
    a: &QueryArgs,
    login: &Login,
) -> Result<Client, QueryError> {
    let m =
        any_member(c, a.role, a.member.as_deref())?.ok_or_else(|| match (&a.member, a.role) {
            (Some(m), _) => QueryError::NotAMember {
                member: m.clone(),
                scope: scope.to_string(),
            },
            (None, Some(r)) => QueryError::NoMemberWithRole(r.name()),
            (None, None) => QueryError::NoLeader(scope.to_string()),
        })?;
    let client = connect(&m, login).await?;
    let check = match a.role {
        Some(RoleFilter::Replica | RoleFilter::Standby | RoleFilter::StandbyLeader) => Some(true),
        Some(RoleFilter::Primary) => Some(false),
        _ => None,
    };
    if let Some(want_recovery) = check {
        let rows = client
            .simple_query("SELECT pg_catalog.pg_is_in_recovery()")
            .await
            .map_err(|e| QueryError::Postgres(pg_error(&e)))?;
        let in_recovery = rows
            .iter()
            .any(|r| matches!(r, SimpleQueryMessage::Row(row) if row.get(0) == Some("t")));
        if in_recovery != want_recovery {
            return Err(QueryError::WrongRole {
                role: a.role.map_or("", RoleFilter::name),
                member: m.name.clone(),
                in_recovery,
            });
        }
    }
    Ok(client)
}

/// A cell as patronictl prints it (psycopg's Python values): NULL as
/// None, booleans as True/False, numbers as numbers.
fn cell(text: Option<&str>, ty: Option<&Type>) -> Value {
    let Some(text) = text else {
        return Value::Null;
    };
    match ty {
        Some(&Type::BOOL) => json!(text == "t"),
        Some(&Type::INT2 | &Type::INT4 | &Type::INT8 | &Type::OID) => text
            .parse::<i64>()
            .map_or_else(|_| json!(text), Value::from),
        Some(&Type::FLOAT4 | &Type::FLOAT8 | &Type::NUMERIC) => text
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite() && !text.contains(['e', 'E']))
            .and_then(|_| serde_json::from_str::<Number>(text).ok())
            .map_or_else(|| json!(text), Value::Number),
        // Python writes the offset of a timestamptz as +00:00.
        Some(&Type::TIMESTAMPTZ) => {
            let short_offset = text.len() > 3
                && text.is_char_boundary(text.len() - 3)
                && matches!(&text[text.len() - 3..text.len() - 2], "+" | "-");
            json!(if short_offset {
                format!("{text}:00")
            } else {
                text.to_string()
            })
        }
        _ => json!(text),
    }
}

/// Runs `sql` and returns the last statement's rows (like a psycopg
/// cursor after `execute`), with column names; `None` when it returned none.
async fn run_sql(client: &Client, sql: &str) -> Result<Option<Rows>, QueryError> {
    // A single statement can be described first, which gives the column types.
    let types: Option<Vec<Type>> = client
        .prepare(sql)
        .await
        .ok()
        .map(|s| s.columns().iter().map(|c| c.type_().clone()).collect());
    let messages = tokio::time::timeout(QUERY_TIMEOUT, client.simple_query(sql))
        .await
        .map_err(|_| QueryError::NoResult(QUERY_TIMEOUT))?
        .map_err(|e| QueryError::Postgres(pg_error(&e)))?;
    // Each statement's rows end with its CommandComplete; the last one counts.
    let mut current: Option<Rows> = None;
    let mut result: Option<Rows> = None;
    for msg in messages {
        match msg {
            SimpleQueryMessage::RowDescription(cols) => {
                let names: Vec<&str> = cols.iter().map(|c| c.name()).collect();
                current = Some(Rows::new(&names));
            }
            SimpleQueryMessage::Row(row) => {
                let rows = current.get_or_insert_with(|| {
                    let names: Vec<&str> = row.columns().iter().map(|c| c.name()).collect();
                    Rows::new(&names)
                });
                rows.rows.push(
                    (0..row.len())
                        .map(|i| cell(row.get(i), types.as_ref().and_then(|t| t.get(i))))
                        .collect(),
                );
            }
            SimpleQueryMessage::CommandComplete(_) => result = current.take(),
            _ => {}
        }
    }
    Ok(result)
}

pub async fn query(ctl: &mut Ctl, a: QueryArgs) -> Result<(), CtlError> {
    let sql = match (&a.file, &a.command) {
        (Some(_), Some(_)) => {
            return Err(CtlError::failed(
                "--file and --command are mutually exclusive options",
            ));
        }
        (Some(f), None) => std::fs::read_to_string(f)
            .map_err(|e| CtlError::failed(format!("cannot read {}: {e}", f.display())))?,
        (None, Some(c)) => c.clone(),
        (None, None) => {
            return Err(CtlError::failed(
                "You need to specify either --command or --file",
            ));
        }
    };
    let user = a
        .username
        .clone()
        .or_else(|| std::env::var("PGUSER").ok())
        .or_else(os_user)
        .ok_or_else(|| CtlError::failed("no database user: use -U"))?;
    let password = if a.password {
        Some(ctl.console.password("Password")?)
    } else {
        std::env::var("PGPASSWORD").ok()
    };
    let login = Login {
        user,
        password,
        dbname: a
            .dbname
            .clone()
            .or_else(|| std::env::var("PGDATABASE").ok()),
    };
    let name = ctl.cluster_name(a.cluster_name.clone())?;
    let c = ctl.load(&name).await?;
    let every = a.watch.interval();
    let mut client: Option<Client> = None;
    loop {
        let outcome = async {
            if client.as_ref().is_none_or(Client::is_closed) {
                client = Some(open(&c, &name, &a, &login).await?);
            }
            match &client {
                Some(cl) => run_sql(cl, &sql).await,
                None => Ok(None),
            }
        }
        .await;
        let ok = match outcome {
            Ok(Some(mut rows)) => {
                rows.delimiter = a.delimiter.clone();
                echo_raw(rows.render(a.format));
                true
            }
            Ok(None) => true,
            Err(e) => {
                client = None;
                echo(format!(
                    "{}{}ERROR, SQLSTATE: {}",
                    timestamp(0),
                    a.delimiter,
                    e.to_string().replace('\n', " ")
                ));
                false
            }
        };
        match every {
            Some(every) => tokio::time::sleep(every).await,
            None if ok => return Ok(()),
            None => return Err(CtlError::Reported),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_look_like_python_values() {
        assert_eq!(cell(None, Some(&Type::TEXT)), Value::Null);
        assert_eq!(cell(Some("t"), Some(&Type::BOOL)), json!(true));
        assert_eq!(cell(Some("42"), Some(&Type::INT4)), json!(42));
        assert_eq!(cell(Some("1.5"), Some(&Type::NUMERIC)), json!(1.5));
        assert_eq!(cell(Some("NaN"), Some(&Type::FLOAT8)), json!("NaN"));
        assert_eq!(
            cell(
                Some("2026-11-21 20:16:57.884803+00"),
                Some(&Type::TIMESTAMPTZ)
            ),
            json!("2026-11-21 20:16:57.884803+00:00")
        );
        assert_eq!(cell(Some("x"), None), json!("x"));
        assert_eq!(super::super::output::python_str(&cell(None, None)), "None");
    }

    #[test]
    fn pgpass_lines() {
        assert_eq!(
            split_pgpass(r"h:5432:*:u:pa\:ss"),
            ["h", "5432", "*", "u", "pa:ss"]
        );
    }
}
