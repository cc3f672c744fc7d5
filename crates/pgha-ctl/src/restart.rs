//! Commands that act on members one by one through their REST APIs:
//! `restart` (`POST /restart`, `DELETE /restart` to replace a scheduled
//! one), `reload` (`POST /reload`), `reinit` (`POST /reinitialize`) and
//! `flush` (`DELETE /restart`, `DELETE /switchover`). Each member's outcome
//! is printed as patronictl prints it; an unreachable member is named and
//! the others still get their request.

use std::time::Duration;

use hyper::Method;
use pgha_core::dcs::DcsExt;
use pgha_core::model::{Expect, Member, PgState};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::cli::{FlushArgs, ReinitArgs, ReloadArgs, RestartArgs};
use super::members::{RoleFilter, Selection, confirm_action, select};
use super::output::{python_json, timestamp};
use super::pause::leader_first;
use super::{Ctl, CtlError, echo, note, schedule};
use pgha_rest_client::{Response, RestError};

/// How long a request that only records something (reload, flush,
/// starting a reinit) may take.
const QUICK: Duration = Duration::from_secs(15);
/// How often the state of a member being restarted or rebuilt is sampled.
const POLL: Duration = Duration::from_secs(2);
/// The longest `reinit --wait` waits for a rebuild to finish.
const REINIT_WAIT: Duration = Duration::from_secs(3600);
/// How long a member rebuilding may not answer before pghactl gives up on it.
const REINIT_SILENCE: Duration = Duration::from_secs(60);

/// patronictl's `check_response`: prints the outcome, true on success.
fn check_response(r: &Response, member: &str, action: &str, silent_success: bool) -> bool {
    if r.status >= 400 {
        echo(format!(
            "Failed: {action} for member {member}, status code={}, ({})",
            r.status, r.body
        ));
        return false;
    }
    if !silent_success {
        echo(format!("Success: {action} for member {member}"));
    }
    true
}

/// An unreachable member, reported on the line where patronictl reports
/// the member's outcome.
fn unreachable(action: &str, member: &str, e: &RestError) {
    echo(format!(
        "Failed: {action} for member {member}: {}",
        e.detail()
    ));
}

/// Checks `--pg-version` as Patroni does: `X.Y` (10 and later) or `X.Y.Z`.
fn check_pg_version(v: &str) -> Result<(), CtlError> {
    let parts: Result<Vec<u32>, _> = v.split('.').map(str::parse::<u32>).collect();
    match parts {
        Err(_) => Err(CtlError::failed(format!("Invalid PostgreSQL version: {v}"))),
        Ok(p) if p.len() < 2 || p.len() > 3 || (p.len() == 2 && p[0] < 10) => {
            Err(CtlError::failed(format!(
                "Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: {v}"
            )))
        }
        Ok(_) => Ok(()),
    }
}

/// Seconds in Patroni's `--timeout` spelling (`30`, `30s`, `2min`, `1h`).
fn parse_seconds(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().ok()?;
    let factor = match unit.trim() {
        "" | "s" => 1,
        "ms" => return Some(n.div_ceil(1000)),
        "min" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return None,
    };
    n.checked_mul(factor)
}

pub async fn restart(ctl: &mut Ctl, a: RestartArgs) -> Result<(), CtlError> {
    let c = ctl.load(&a.cluster_name).await?;
    let mut members = select(
        ctl,
        &c,
        Selection {
            scope: &a.cluster_name,
            names: &a.member_names,
            role: a.role,
            force: a.force,
            action: "restart",
        },
    )?;
    let mut scheduled = a.scheduled.clone();
    if scheduled.is_none() && !a.force {
        scheduled = Some(ctl.console.prompt(
            &format!(
                "When should the restart take place (e.g. {}) ",
                schedule::next_hour_example()
            ),
            Some("now"),
        )?);
    }
    let when = schedule::parse(scheduled.as_deref())?;
    let mut content = Map::new();
    if a.pending {
        content.insert("restart_pending".into(), json!(true));
        // A scheduled restart decides at its time who needs one.
        if when.is_none() {
            members.retain(|m| m.data.pending_restart.unwrap_or(false));
            if members.is_empty() {
                echo("No member has a pending restart");
                return Ok(());
            }
        }
    }
    if a.any && members.len() > 1 {
        let pick = pseudo_random(members.len());
        members = vec![members.swap_remove(pick)];
    }
    confirm_action(
        ctl,
        &members,
        a.force,
        "restart",
        when.as_ref().map(|w| w.shown.as_str()),
        a.pending,
    )?;
    let mut version = a.pg_version.clone();
    if version.is_none() && !a.force {
        version = Some(ctl.console.prompt(
            "Restart if the PostgreSQL version is less than provided (e.g. 9.5.2) ",
            Some(""),
        )?);
    }
    if let Some(v) = version.filter(|v| !v.is_empty()) {
        check_pg_version(&v)?;
        content.insert("postgres_version".into(), json!(v));
    }
    if let Some(w) = &when {
        if c.dynamic_config().pause() {
            return Err(CtlError::failed(
                "Can't schedule restart in the paused state",
            ));
        }
        content.insert("schedule".into(), json!(w.iso));
    }
    if let Some(t) = &a.timeout {
        content.insert("timeout".into(), json!(t));
    }
    // Patroni answers a restart once PostgreSQL is back (or the timeout
    // passed); allow for the longest start Patroni waits for.
    let config = c.dynamic_config();
    let limit = a
        .timeout
        .as_deref()
        .and_then(parse_seconds)
        .unwrap_or(config.primary_start_timeout());
    let within = Duration::from_secs(limit) + config.timing().0.ttl + Duration::from_secs(30);
    let body = Value::Object(content);
    let mut failed = false;
    for m in &members {
        if when.is_some() && a.force && m.data.scheduled_restart.is_some() {
            match ctl
                .rest
                .call(m, Method::DELETE, "restart", None, QUICK)
                .await
            {
                Ok(r) => {
                    check_response(&r, &m.name, "flush scheduled restart", true);
                }
                Err(e) => note(format!("{e}")),
            }
        }
        let answer = if when.is_some() {
            ctl.rest
                .call(m, Method::POST, "restart", Some(python_json(&body)), QUICK)
                .await
        } else {
            let dcs = ctl.dcs(&a.cluster_name)?;
            let post = ctl
                .rest
                .call(m, Method::POST, "restart", Some(python_json(&body)), within);
            watch_member(post, dcs.as_ref(), &m.name, "restart").await
        };
        match answer {
            Ok(r) if r.status == 200 => echo(format!("Success: restart on member {}", m.name)),
            Ok(r) if r.status == 202 => {
                echo(format!("Success: restart scheduled on member {}", m.name))
            }
            Ok(r) if r.status == 409 => {
                failed = true;
                echo(format!(
                    "Failed: another restart is already scheduled on member {}",
                    m.name
                ))
            }
            Ok(r) => {
                failed = true;
                echo(format!(
                    "Failed: restart for member {}, status code={}, ({})",
                    m.name, r.status, r.body
                ))
            }
            Err(e) => {
                failed = true;
                unreachable("restart", &m.name, &e);
            }
        }
    }
    if failed {
        Err(CtlError::Reported)
    } else {
        Ok(())
    }
}

/// An index in `0..n` that differs from run to run (`restart --any`).
fn pseudo_random(n: usize) -> usize {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as usize)
        .unwrap_or(0);
    (nanos ^ std::process::id() as usize) % n.max(1)
}

/// Awaits a member's answer while showing, on standard error, the state
/// its member key reports (sampled every 2 seconds).
async fn watch_member<F>(
    request: F,
    dcs: &dyn pgha_core::dcs::Dcs,
    member: &str,
    action: &str,
) -> F::Output
where
    F: std::future::Future,
{
    tokio::pin!(request);
    let started = Instant::now();
    let mut last = String::new();
    loop {
        tokio::select! {
            out = &mut request => return out,
            () = tokio::time::sleep(POLL) => {
                let state = match dcs.load().await {
                    Ok(c) => c.member(member).and_then(|m| m.data.state.as_ref().map(|s| s.to_string()))
                        .unwrap_or_else(|| "no member key".into()),
                    Err(e) => format!("DCS: {e}"),
                };
                if state != last || started.elapsed().as_secs() % 10 < POLL.as_secs() {
                    note(format!("{action} of {member} in progress ({}s): {state}", started.elapsed().as_secs()));
                    last = state;
                }
            }
        }
    }
}

pub async fn reload(ctl: &mut Ctl, a: ReloadArgs) -> Result<(), CtlError> {
    let c = ctl.load(&a.cluster_name).await?;
    let members = select(
        ctl,
        &c,
        Selection {
            scope: &a.cluster_name,
            names: &a.member_names,
            role: a.role,
            force: a.force,
            action: "reload",
        },
    )?;
    confirm_action(ctl, &members, a.force, "reload", None, false)?;
    let loop_wait = c.dynamic_config().timing().0.loop_wait.as_secs();
    let mut failed = false;
    for m in &members {
        match ctl.rest.call(m, Method::POST, "reload", None, QUICK).await {
            Ok(r) if r.status == 200 => echo(format!("No changes to apply on member {}", m.name)),
            Ok(r) if r.status == 202 => echo(format!(
                "Reload request received for member {} and will be processed within {loop_wait} seconds",
                m.name
            )),
            Ok(r) => {
                failed = true;
                echo(format!(
                    "Failed: reload for member {}, status code={}, ({})",
                    m.name, r.status, r.body
                ))
            }
            Err(e) => {
                failed = true;
                unreachable("reload", &m.name, &e);
            }
        }
    }
    if failed {
        Err(CtlError::Reported)
    } else {
        Ok(())
    }
}

pub async fn reinit(ctl: &mut Ctl, a: ReinitArgs) -> Result<(), CtlError> {
    let c = ctl.load(&a.cluster_name).await?;
    let members = select(
        ctl,
        &c,
        Selection {
            scope: &a.cluster_name,
            names: &a.member_names,
            role: RoleFilter::Replica,
            force: a.force,
            action: "reinitialize",
        },
    )?;
    confirm_action(ctl, &members, a.force, "reinitialize", None, false)?;
    let mut failed = false;
    let mut waiting: Vec<(Member, Option<String>)> = Vec::new();
    for m in &members {
        // What the member ran before, to tell a finished rebuild from one not begun.
        let before = started_at(ctl, m).await;
        let mut body = json!({"force": a.force, "from_leader": a.from_leader});
        let mut started = false;
        for _ in 0..2 {
            let r = match ctl
                .rest
                .call(
                    m,
                    Method::POST,
                    "reinitialize",
                    Some(python_json(&body)),
                    QUICK,
                )
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    unreachable("reinitialize", &m.name, &e);
                    break;
                }
            };
            started = check_response(&r, &m.name, "reinitialize", false);
            if !started
                && r.body.ends_with(" already in progress")
                && !a.force
                && ctl
                    .console
                    .confirm("Do you want to cancel it and reinitialize anyway?", false)?
            {
                body["force"] = json!(true);
                continue;
            }
            break;
        }
        failed |= !started;
        if started && a.wait {
            waiting.push((m.clone(), before));
        }
    }
    if !waiting.is_empty() {
        failed |= !wait_reinit(ctl, waiting).await;
    }
    if failed {
        Err(CtlError::Reported)
    } else {
        Ok(())
    }
}

/// The member's `postmaster_start_time` from `GET /patroni`, if it answers.
async fn started_at(ctl: &Ctl, m: &Member) -> Option<String> {
    let r = ctl
        .rest
        .call(m, Method::GET, "patroni", None, QUICK)
        .await
        .ok()?;
    r.json()?
        .get("postmaster_start_time")
        .and_then(Value::as_str)
        .map(String::from)
}

/// `reinit --wait`: polls each member's `GET /patroni` until it no longer
/// creates a replica and runs a new postmaster. Bounded in time, and a
/// member that stops answering for a minute is given up on, named.
async fn wait_reinit(ctl: &Ctl, mut waiting: Vec<(Member, Option<String>)>) -> bool {
    let creating = PgState::CreatingReplica.to_string();
    let deadline = Instant::now() + REINIT_WAIT;
    let mut shown: Vec<String> = Vec::new();
    let mut seen_creating: Vec<String> = Vec::new();
    let mut last_answer: Vec<(String, Instant)> = waiting
        .iter()
        .map(|(m, _)| (m.name.clone(), Instant::now()))
        .collect();
    let mut ok = true;
    while !waiting.is_empty() {
        let names: Vec<String> = waiting.iter().map(|(m, _)| m.name.clone()).collect();
        if names != shown {
            echo(format!(
                "Waiting for reinitialize to complete on: {}",
                names.join(", ")
            ));
            shown = names;
        }
        if Instant::now() >= deadline {
            echo(format!(
                "Failed: reinitialize did not complete within {}s on: {}",
                REINIT_WAIT.as_secs(),
                shown.join(", ")
            ));
            return false;
        }
        tokio::time::sleep(POLL).await;
        let mut still = Vec::new();
        for (m, before) in waiting {
            let answer = ctl.rest.call(&m, Method::GET, "patroni", None, QUICK).await;
            let status = answer.ok().and_then(|r| r.json());
            let Some(status) = status else {
                let since = last_answer
                    .iter()
                    .find(|(n, _)| *n == m.name)
                    .map_or(Duration::ZERO, |(_, t)| t.elapsed());
                if since >= REINIT_SILENCE {
                    echo(format!(
                        "Failed: {} has not answered for {}s while reinitializing",
                        m.name,
                        since.as_secs()
                    ));
                    ok = false;
                } else {
                    still.push((m, before));
                }
                continue;
            };
            if let Some(entry) = last_answer.iter_mut().find(|(n, _)| *n == m.name) {
                entry.1 = Instant::now();
            }
            let state = status
                .get("state")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if state == creating {
                if !seen_creating.contains(&m.name) {
                    note(format!("{}: {state}", m.name));
                    seen_creating.push(m.name.clone());
                }
                still.push((m, before));
                continue;
            }
            let restarted = status
                .get("postmaster_start_time")
                .and_then(Value::as_str)
                .is_some_and(|t| Some(t) != before.as_deref());
            let finished = state == "running" && (restarted || seen_creating.contains(&m.name));
            if finished {
                echo(format!("Reinitialize is completed on: {}", m.name));
            } else if seen_creating.contains(&m.name) && state.contains("fail") {
                echo(format!(
                    "Failed: reinitialize of {} ended in state {state}",
                    m.name
                ));
                ok = false;
            } else {
                still.push((m, before));
            }
        }
        waiting = still;
    }
    ok
}

pub async fn flush(ctl: &mut Ctl, a: FlushArgs) -> Result<(), CtlError> {
    let cluster = &a.cluster_name;
    let (target, names) = a
        .rest
        .split_last()
        .ok_or_else(|| CtlError::failed("Missing argument 'TARGET' (restart or switchover)"))?;
    let c = ctl.load(cluster).await?;
    match target.as_str() {
        "restart" => {
            let members = select(
                ctl,
                &c,
                Selection {
                    scope: cluster,
                    names,
                    role: a.role,
                    force: a.force,
                    action: "flush",
                },
            )?;
            confirm_action(ctl, &members, a.force, "flush", None, false)?;
            let mut failed = false;
            for m in &members {
                if m.data.scheduled_restart.is_none() {
                    echo(format!("No scheduled restart for member {}", m.name));
                    continue;
                }
                match ctl
                    .rest
                    .call(m, Method::DELETE, "restart", None, QUICK)
                    .await
                {
                    Ok(r) => {
                        failed |= !check_response(&r, &m.name, "flush scheduled restart", false)
                    }
                    Err(e) => {
                        failed = true;
                        unreachable("flush scheduled restart", &m.name, &e);
                    }
                }
            }
            if failed {
                Err(CtlError::Reported)
            } else {
                Ok(())
            }
        }
        "switchover" => {
            let Some(failover) = c.failover.as_ref().filter(|f| {
                f.value
                    .scheduled_at_text
                    .as_deref()
                    .is_some_and(|t| !t.is_empty())
            }) else {
                echo("No pending scheduled switchover");
                return Ok(());
            };
            for m in leader_first(&c) {
                match ctl
                    .rest
                    .call(&m, Method::DELETE, "switchover", None, QUICK)
                    .await
                {
                    Ok(r) if r.status == 200 => {
                        echo(format!("Success: {}", r.body));
                        return Ok(());
                    }
                    Ok(r) if r.status == 404 => {
                        echo(format!("Failed: {}", r.body));
                        return Err(CtlError::Reported);
                    }
                    Ok(r) => echo(format!(
                        "Failed: member={}, status_code={}, ({})",
                        m.name, r.status, r.body
                    )),
                    Err(e) => note(format!("Member {} is not accessible: {e}", m.name)),
                }
            }
            echo(format!(
                "{} Could not find any accessible member of cluster {cluster}",
                timestamp(6)
            ));
            let dcs = ctl.dcs(cluster)?;
            dcs.write_failover(
                &Default::default(),
                Expect::Version(failover.version.clone()),
            )
            .await
            .map_err(|e| CtlError::failed(format!("cannot clear the failover key: {e}")))?;
            Ok(())
        }
        other => Err(CtlError::failed(format!(
            "Invalid value for 'TARGET': '{other}' is not one of 'restart', 'switchover'"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_timeouts_are_checked_like_patroni() {
        assert!(check_pg_version("15.4").is_ok());
        assert!(check_pg_version("9.6.24").is_ok());
        assert!(check_pg_version("9.6").is_err());
        assert!(check_pg_version("15").is_err());
        assert!(
            check_pg_version("x.y")
                .unwrap_err()
                .to_string()
                .contains("Invalid PostgreSQL version: x.y")
        );
        assert_eq!(parse_seconds("30"), Some(30));
        assert_eq!(parse_seconds("2min"), Some(120));
        assert_eq!(parse_seconds("1500ms"), Some(2));
        assert_eq!(parse_seconds("soon"), None);
        assert!((0..100).all(|_| pseudo_random(3) < 3));
    }
}
