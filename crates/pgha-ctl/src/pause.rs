//! `pause` / `resume`: maintenance mode on or off, through `PATCH /config`
//! (`{"pause": true}` / `{"pause": null}`) on the first member that answers,
//! the leader first; `--wait` until every member reports the new state.

use std::time::Duration;

use hyper::Method;
use pgha_core::model::{Cluster, Member};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::cli::PauseArgs;
use super::output::python_json;
use super::{Ctl, CtlError, echo, note};

/// How long one `PATCH /config` may take.
const PATCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Members with a REST API, the leader first (patronictl's order).
pub fn leader_first(c: &Cluster) -> Vec<Member> {
    let has_api = |m: &&Member| m.data.api_url.as_deref().is_some_and(|u| !u.is_empty());
    let leader = c.leader_member().filter(|m| has_api(m));
    let mut out: Vec<Member> = leader.into_iter().cloned().collect();
    out.extend(
        c.members
            .iter()
            .filter(has_api)
            .filter(|m| Some(m.name.as_str()) != c.leader_name())
            .cloned(),
    );
    out
}

pub async fn toggle(ctl: &mut Ctl, args: PauseArgs, paused: bool) -> Result<(), CtlError> {
    let name = ctl.cluster_name(args.cluster_name)?;
    let c = ctl.load(&name).await?;
    if c.dynamic_config().pause() == paused {
        return Err(CtlError::failed(if paused {
            "Cluster is already paused"
        } else {
            "Cluster is not paused"
        }));
    }
    let (verb, done) = if paused {
        ("pause", "paused")
    } else {
        ("resume", "resumed")
    };
    let body = json!({"pause": if paused { Value::Bool(true) } else { Value::Null }});
    let mut unreachable = Vec::new();
    for member in leader_first(&c) {
        let r = match ctl
            .rest
            .call(
                &member,
                Method::PATCH,
                "config",
                Some(python_json(&body)),
                PATCH_TIMEOUT,
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                note(format!("Member {} is not accessible: {e}", member.name));
                unreachable.push(member.name.clone());
                continue;
            }
        };
        if r.status != 200 {
            echo(format!(
                "Failed: {verb} cluster management status code={}, ({})",
                r.status, r.body
            ));
            return Err(CtlError::Reported);
        }
        if args.wait {
            return wait_applied(ctl, &name, paused, &c).await;
        }
        echo(format!("Success: cluster management is {done}"));
        return Ok(());
    }
    Err(CtlError::failed(if unreachable.is_empty() {
        "Can not find accessible cluster member: no member has a REST API address".to_string()
    } else {
        format!(
            "Can not find accessible cluster member (tried {})",
            unreachable.join(", ")
        )
    }))
}

/// Waits (bounded) until every member that had a REST API reports `pause`
/// as wanted in its member key.
async fn wait_applied(
    ctl: &mut Ctl,
    name: &str,
    paused: bool,
    old: &Cluster,
) -> Result<(), CtlError> {
    let (verb, done) = if paused {
        ("pause", "paused")
    } else {
        ("resume", "resumed")
    };
    echo(format!(
        "'{verb}' request sent, waiting until it is recognized by all nodes"
    ));
    let loop_wait = old.dynamic_config().timing().0.loop_wait;
    // Each member notices within a loop; allow two, and the write.
    let bound = loop_wait * 2 + Duration::from_secs(2);
    let before: Vec<(String, pgha_core::model::Version)> = leader_first(old)
        .into_iter()
        .map(|m| (m.name, m.version))
        .collect();
    let deadline = Instant::now() + bound;
    let lagging = |c: &Cluster| -> Vec<Member> {
        c.members
            .iter()
            .filter(|m| before.iter().any(|(n, _)| *n == m.name))
            .filter(|m| m.data.pause.unwrap_or(false) != paused)
            .cloned()
            .collect()
    };
    let last = loop {
        let c = ctl.load(name).await?;
        if lagging(&c).is_empty() {
            echo(format!("Success: cluster management is {done}"));
            return Ok(());
        }
        if Instant::now() >= deadline {
            break c;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    // Members whose key did not change at all are not running their loop
    // (Patroni does not wait for them either).
    let remaining: Vec<String> = lagging(&last)
        .into_iter()
        .filter(|m| before.iter().any(|(n, v)| *n == m.name && *v != m.version))
        .map(|m| m.name)
        .collect();
    if remaining.is_empty() {
        echo(format!("Success: cluster management is {done}"));
        return Ok(());
    }
    echo(format!(
        "{} members didn't recognized pause state after {} seconds",
        remaining.join(", "),
        bound.as_secs()
    ));
    Err(CtlError::Reported)
}
