//! `version`: pghactl's version, and with a cluster name each member's
//! Patroni (or pgha) and PostgreSQL versions from `GET /patroni`.

use std::time::Duration;

use hyper::Method;
use pgha_core::model::PGHA_VERSION;
use serde_json::Value;

use super::cli::VersionArgs;
use super::members::{RoleFilter, with_role};
use super::{Ctl, CtlError, echo};

/// How long each member may take to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// `150010` -> `15.10`, `90624` -> `9.6.24`.
pub fn format_pg_version(v: u64) -> String {
    if v < 100_000 {
        format!("{}.{}.{}", v / 10000, v / 100 % 100, v % 100)
    } else {
        format!("{}.{}", v / 10000, v % 100)
    }
}

/// One member's line from its `GET /patroni` answer.
fn describe(name: &str, status: &Value) -> String {
    let patroni = status
        .get("patroni")
        .and_then(|p| p.get("version"))
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    let pg = status
        .get("server_version")
        .and_then(Value::as_u64)
        .filter(|v| *v > 0)
        .map(|v| format!(" PostgreSQL {}", format_pg_version(v)))
        .unwrap_or_default();
    let pgha = status
        .get(pgha_core::model::member::PGHA_VERSION_FIELD)
        .and_then(Value::as_str)
        .map(|v| format!(" (pgha {v})"))
        .unwrap_or_default();
    format!("{name}: Patroni {patroni}{pg}{pgha}")
}

pub async fn run(ctl: &mut Ctl, a: VersionArgs) -> Result<(), CtlError> {
    echo(format!("pghactl version {PGHA_VERSION}"));
    let Some(name) = a.cluster_name else {
        return Ok(());
    };
    echo("");
    let c = ctl.load(&name).await?;
    for unknown in a.member_names.iter().filter(|n| c.member(n).is_none()) {
        echo(format!("{unknown}: not a member of cluster {name}"));
    }
    for m in with_role(&c, RoleFilter::Any) {
        if m.data.api_url.is_none()
            || !(a.member_names.is_empty() || a.member_names.contains(&m.name))
        {
            continue;
        }
        let line = match ctl
            .rest
            .call(&m, Method::GET, "patroni", None, ASK_TIMEOUT)
            .await
        {
            Ok(r) => match r.json() {
                Some(status) => describe(&m.name, &status),
                None => format!(
                    "{}: failed to get version: HTTP {} without JSON",
                    m.name, r.status
                ),
            },
            Err(e) => format!("{}: failed to get version: {e}", m.name),
        };
        echo(line);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn versions_read_like_patronictl() {
        assert_eq!(format_pg_version(90624), "9.6.24");
        assert_eq!(format_pg_version(150010), "15.10");
        assert_eq!(
            describe(
                "n1",
                &json!({"patroni": {"version": "4.1.5"}, "server_version": 150018})
            ),
            "n1: Patroni 4.1.5 PostgreSQL 15.18"
        );
        assert_eq!(
            describe(
                "n1",
                &json!({"patroni": {"version": "4.1.4"}, "server_version": 150018, "pgha_version": "0.1.0"})
            ),
            "n1: Patroni 4.1.4 PostgreSQL 15.18 (pgha 0.1.0)"
        );
    }
}
