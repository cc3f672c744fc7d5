//! `demote-cluster` / `promote-cluster` (patronictl 4.1): turn a cluster
//! into a standby cluster of another one, or back into a standalone one,
//! by setting or removing `standby_cluster` with `PATCH /config` on the
//! leader, then watching until the leader runs in its new role.

use std::time::Duration;

use hyper::Method;
use pgha_core::model::Role;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::cli::{DemoteClusterArgs, PromoteClusterArgs};
use super::output::{Format, python_json, timestamp};
use super::{Ctl, CtlError, echo, echo_raw, list};

/// How long one `PATCH /config` may take.
const PATCH_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn demote(ctl: &mut Ctl, args: DemoteClusterArgs) -> Result<(), CtlError> {
    if args.host.is_none() && args.port.is_none() && args.restore_command.is_none() {
        return Err(CtlError::failed(
            "At least --host, --port or --restore-command should be specified",
        ));
    }
    let mut standby = Map::new();
    for (key, value) in [
        ("host", args.host.map(Value::from)),
        ("port", args.port.map(Value::from)),
        ("primary_slot_name", args.primary_slot_name.map(Value::from)),
        ("restore_command", args.restore_command.map(Value::from)),
    ] {
        if let Some(v) = value {
            standby.insert(key.into(), v);
        }
    }
    change_role(
        ctl,
        args.cluster_name,
        args.force,
        Some(Value::Object(standby)),
    )
    .await
}

pub async fn promote(ctl: &mut Ctl, args: PromoteClusterArgs) -> Result<(), CtlError> {
    change_role(ctl, args.cluster_name, args.force, None).await
}

/// patronictl's `change_cluster_role`.
async fn change_role(
    ctl: &mut Ctl,
    cluster_name: Option<String>,
    force: bool,
    standby: Option<Value>,
) -> Result<(), CtlError> {
    let demote = standby.is_some();
    let (action, target) = if demote {
        ("demot", Role::StandbyLeader)
    } else {
        ("promot", Role::Primary)
    };
    let name = ctl.cluster_name(cluster_name)?;
    let c = ctl.load(&name).await?;
    let Some(leader) = c.leader_member().cloned() else {
        return Err(CtlError::failed(format!(
            "Cluster has no leader, {action}ion is not possible"
        )));
    };
    if leader.data.role.as_ref() == Some(&target) {
        return Err(CtlError::failed("Cluster is already in the required state"));
    }
    echo("Current cluster topology");
    echo_raw(list::render(&c, &name, false, Format::Pretty));
    if !force
        && !ctl.console.confirm(
            &format!("Are you sure you want to {action}e {name} cluster?"),
            false,
        )?
    {
        return Err(CtlError::failed(format!("Aborted cluster {action}ion")));
    }
    let body = json!({ "standby_cluster": standby.unwrap_or(Value::Null) });
    let r = ctl
        .rest
        .call(
            &leader,
            Method::PATCH,
            "config",
            Some(python_json(&body)),
            PATCH_TIMEOUT,
        )
        .await
        .map_err(|e| CtlError::failed(format!("Failed to {action}e {name} cluster: {e}")))?;
    if r.status != 200 {
        return Err(CtlError::failed(format!(
            "Failed to {action}e {name} cluster: /config PATCH status code={}, ({})",
            r.status, r.body
        )));
    }
    // Bounded: a demotion stops and starts PostgreSQL; allow a few loops.
    let timing = c.dynamic_config().timing().0;
    let deadline = Instant::now() + timing.ttl + timing.loop_wait * 4 + Duration::from_secs(60);
    loop {
        let c = ctl.load(&name).await?;
        let holder = c.leader_member();
        let role = holder.and_then(|m| m.data.role.clone());
        let state = holder.and_then(|m| m.data.state.as_ref().map(ToString::to_string));
        let old_state = c
            .member(&leader.name)
            .and_then(|m| m.data.state.as_ref().map(ToString::to_string));
        let running = |s: &Option<String>| s.as_deref() == Some("running");
        if role.as_ref() == Some(&target) && running(&state) && (!demote || running(&old_state)) {
            echo(format!(
                "{} cluster is successfully {action}ed",
                timestamp(0)
            ));
            echo_raw(list::render(&c, &name, false, Format::Pretty));
            return Ok(());
        }
        let mut parts = vec![
            format!("{} cluster is unlocked: {}", timestamp(0), holder.is_none()),
            format!(
                "leader role: {}",
                role.as_ref().map_or("None", |r| r.as_str())
            ),
            format!("leader state: {}", state.as_deref().unwrap_or("None")),
        ];
        if demote && holder.is_some_and(|h| h.name != leader.name) && old_state.is_some() {
            parts.push(format!(
                "previous leader state: '{}'",
                old_state.as_deref().unwrap_or_default()
            ));
        }
        echo(parts.join(", "));
        if Instant::now() >= deadline {
            return Err(CtlError::failed(format!(
                "{name} cluster did not finish being {action}ed in time"
            )));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
