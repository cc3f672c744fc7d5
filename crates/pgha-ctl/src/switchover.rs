//! `switchover` and `failover`: patronictl's questions and checks, then
//! `POST /switchover` (or `/failover`) to the leader (to the candidate when
//! there is no leader) with `{"candidate", "leader", "scheduled_at"}`.
//! While the member works, progress is shown from the DCS; afterwards
//! pghactl waits, bounded, until the DCS shows the new leader. When the
//! REST API cannot be reached, the request is written into the DCS
//! `failover` key instead, as patronictl does.

use std::time::Duration;

use hyper::Method;
use pgha_core::dcs::{Dcs, DcsExt};
use pgha_core::model::{Cluster, Expect, Failover};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::cli::{FailoverArgs, SwitchoverArgs};
use super::members::leader_member;
use super::output::{Format, python_json, timestamp};
use super::schedule::{self, Scheduled};
use super::{Ctl, CtlError, echo, echo_raw, list, note};
use pgha_rest_client::{Response, RestError};

/// How often progress is sampled from the DCS while waiting.
const POLL: Duration = Duration::from_secs(1);
/// An unchanged progress line is repeated this often, so a wait never looks stuck.
const REPEAT: Duration = Duration::from_secs(5);

/// Which of the two commands runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Switchover,
    Failover,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Switchover => "switchover",
            Action::Failover => "failover",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Action::Switchover => "Switchover",
            Action::Failover => "Failover",
        }
    }
}

/// What the user asked for, after the questions.
#[derive(Debug, Clone)]
struct Request {
    action: Action,
    cluster: String,
    leader: Option<String>,
    candidate: Option<String>,
    scheduled: Option<Scheduled>,
}

pub async fn switchover(ctl: &mut Ctl, a: SwitchoverArgs) -> Result<(), CtlError> {
    run(
        ctl,
        Action::Switchover,
        a.cluster_name,
        a.candidate,
        a.force,
        a.leader,
        a.scheduled,
    )
    .await
}

pub async fn failover(ctl: &mut Ctl, a: FailoverArgs) -> Result<(), CtlError> {
    run(
        ctl,
        Action::Failover,
        a.cluster_name,
        a.candidate,
        a.force,
        None,
        None,
    )
    .await
}

async fn run(
    ctl: &mut Ctl,
    action: Action,
    cluster_name: Option<String>,
    candidate: Option<String>,
    force: bool,
    leader: Option<String>,
    scheduled: Option<String>,
) -> Result<(), CtlError> {
    let name = ctl.cluster_name(cluster_name)?;
    let c = ctl.load(&name).await?;
    echo("Current cluster topology");
    echo_raw(list::render(&c, &name, false, Format::Pretty));
    let request = ask(ctl, &c, action, &name, candidate, force, leader, scheduled)?;
    let dcs = ctl.dcs(&name)?;
    let timing = c.dynamic_config().timing().0;
    // Patroni answers after the new leader is in place (it polls up to
    // 2 * max(10, loop_wait) seconds); allow for that plus a lock expiry.
    let answer_within = Duration::from_secs(2 * timing.loop_wait.as_secs().max(10))
        + timing.ttl
        + Duration::from_secs(10);
    let settle_within = timing.ttl + timing.loop_wait * 2 + Duration::from_secs(5);
    let old_leader = c.leader_name().filter(|l| !l.is_empty()).map(String::from);

    let Some(target) = leader_member(&c).or_else(|| {
        request
            .candidate
            .as_deref()
            .and_then(|n| c.member(n))
            .cloned()
    }) else {
        return Err(CtlError::failed(format!(
            "{} cluster has no leader and no candidate to send the {} request to",
            name,
            action.name()
        )));
    };
    let body = body(&request);
    let sent = {
        let post = ctl.rest.call(
            &target,
            Method::POST,
            action.name(),
            Some(python_json(&body)),
            answer_within,
        );
        with_progress(post, dcs.as_ref(), &request, old_leader.as_deref()).await
    };
    let mut settle = request.scheduled.is_none();
    match sent {
        Ok(r) => {
            let r = retry_as_failover(ctl, &request, &target, &body, r, answer_within).await;
            if r.status == 200 || r.status == 202 {
                echo(format!("{} {}", timestamp(6), r.body));
                settle &= r.status == 200;
            } else {
                echo(format!(
                    "{} failed, details: {}, {}",
                    action.title(),
                    r.status,
                    r.body
                ));
                return Err(CtlError::Reported);
            }
        }
        Err(e @ RestError::NoAnswer { .. }) => {
            // The leader got the request and may be acting on it: writing
            // the DCS too could start a second switchover.
            echo_raw(list::render(
                &ctl.load(&name).await?,
                &name,
                false,
                Format::Pretty,
            ));
            return Err(CtlError::failed(format!(
                "{e}; the {} may still happen: check `pghactl list`",
                action.name()
            )));
        }
        Err(e) => {
            note(format!("{e}"));
            echo(format!(
                "{} Could not {} using Patroni api, falling back to DCS",
                timestamp(6),
                action.name()
            ));
            let failover = Failover {
                leader: request.leader.clone(),
                member: request.candidate.clone().filter(|c| !c.is_empty()),
                scheduled_at_text: request.scheduled.as_ref().map(|s| s.iso.clone()),
                extra: Map::new(),
            };
            dcs.write_failover(&failover, Expect::Any)
                .await
                .map_err(|e| CtlError::failed(format!("cannot write the failover key: {e}")))?;
        }
    }
    let c = if settle {
        wait_for_new_leader(dcs.as_ref(), &request, old_leader.as_deref(), settle_within).await?
    } else {
        ctl.load(&name).await?
    };
    echo_raw(list::render(&c, &name, false, Format::Pretty));
    Ok(())
}

/// patronictl's questions and checks, in its order and words.
#[allow(clippy::too_many_arguments)]
fn ask(
    ctl: &mut Ctl,
    c: &Cluster,
    action: Action,
    name: &str,
    mut candidate: Option<String>,
    force: bool,
    mut leader: Option<String>,
    mut scheduled: Option<String>,
) -> Result<Request, CtlError> {
    let config = c.dynamic_config();
    let cluster_leader = c.leader_name().filter(|l| !l.is_empty()).map(String::from);
    if action == Action::Switchover {
        let Some(current) = &cluster_leader else {
            return Err(CtlError::failed("This cluster has no leader"));
        };
        if leader.is_none() {
            leader = Some(if force {
                current.clone()
            } else {
                let standby = config.get("standby_cluster").is_some_and(Value::is_object);
                let label = if standby { "Standby Leader" } else { "Primary" };
                ctl.console.prompt(label, Some(current))?
            });
        }
        if leader.as_ref() != Some(current) {
            return Err(CtlError::failed(format!(
                "Member {} is not the leader of cluster {name} (the leader is {current})",
                leader.unwrap_or_default()
            )));
        }
    }
    let candidates: Vec<&str> = c
        .members
        .iter()
        .filter(|m| Some(&m.name) != cluster_leader.as_ref() && !m.data.tags.nofailover())
        .map(|m| m.name.as_str())
        .collect();
    if candidates.is_empty() {
        return Err(CtlError::failed(format!(
            "No candidates found to {} to",
            action.name()
        )));
    }
    if candidate.is_none() && !force {
        let listed: Vec<String> = candidates.iter().map(|n| format!("'{n}'")).collect();
        candidate = Some(
            ctl.console
                .prompt(&format!("Candidate [{}]", listed.join(", ")), Some(""))?,
        );
    }
    let wanted = candidate.as_deref().filter(|c| !c.is_empty());
    if action == Action::Failover && wanted.is_none() {
        return Err(CtlError::failed(
            "Failover could be performed only to a specific candidate",
        ));
    }
    if let Some(w) = wanted {
        if !candidates.contains(&w) {
            return Err(CtlError::failed(if Some(w) == cluster_leader.as_deref() {
                format!("Member {w} is already the leader of cluster {name}")
            } else if c.member(w).is_some() {
                format!("Member {w} is tagged as nofailover and cannot be promoted")
            } else {
                format!(
                    "Member {w} does not exist in cluster {name} (candidates: {})",
                    candidates.join(", ")
                )
            }));
        }
        let sync = c.sync.as_ref().map(|s| &s.value);
        if !force
            && action == Action::Failover
            && config.synchronous_mode()
            && sync.is_some_and(|s| {
                !s.standbys().is_empty() && !s.is_standby(w) && s.leader.as_deref() != Some(w)
            })
            && !ctl.console.confirm(
                &format!("Are you sure you want to failover to the asynchronous node {w}?"),
                false,
            )?
        {
            return Err(CtlError::failed("Aborting failover"));
        }
    }
    let mut when = None;
    if action == Action::Switchover {
        if scheduled.is_none() && !force {
            scheduled = Some(ctl.console.prompt(
                &format!(
                    "When should the switchover take place (e.g. {} ) ",
                    schedule::next_hour_example()
                ),
                Some("now"),
            )?);
        }
        when = schedule::parse(scheduled.as_deref())?;
        if when.is_some() && config.pause() {
            return Err(CtlError::failed(
                "Can't schedule switchover in the paused state",
            ));
        }
    }
    if !force {
        let demote = cluster_leader
            .as_ref()
            .map(|l| format!(", demoting current leader {l}"))
            .unwrap_or_default();
        let (question, aborted) = match &when {
            Some(at) => (
                format!(
                    "Are you sure you want to schedule switchover of cluster {name} at {}{demote}?",
                    at.iso
                ),
                "Aborting scheduled switchover".to_string(),
            ),
            None => (
                format!(
                    "Are you sure you want to {} cluster {name}{demote}?",
                    action.name()
                ),
                format!("Aborting {}", action.name()),
            ),
        };
        if !ctl.console.confirm(&question, false)? {
            return Err(CtlError::Failed(aborted));
        }
    }
    Ok(Request {
        action,
        cluster: name.to_string(),
        leader: if action == Action::Switchover {
            leader
        } else {
            None
        },
        candidate,
        scheduled: when,
    })
}

/// The request body, keys in patronictl's order.
fn body(r: &Request) -> Value {
    let mut b = Map::new();
    b.insert("candidate".into(), json!(r.candidate));
    if r.action == Action::Switchover {
        b.insert("leader".into(), json!(r.leader));
    }
    if let Some(s) = &r.scheduled {
        b.insert("scheduled_at".into(), json!(s.iso));
    }
    Value::Object(b)
}

/// A Patroni too old for `/switchover` says so with 501: ask `/failover`.
async fn retry_as_failover(
    ctl: &Ctl,
    r: &Request,
    target: &pgha_core::model::Member,
    body: &Value,
    first: Response,
    within: Duration,
) -> Response {
    let unsupported = first.status == 501
        && r.action == Action::Switchover
        && first
            .body
            .contains("Server does not support this operation");
    if !unsupported {
        return first;
    }
    ctl.rest
        .call(
            target,
            Method::POST,
            "failover",
            Some(python_json(body)),
            within,
        )
        .await
        .unwrap_or(first)
}

/// One line about where the switchover stands, from a DCS snapshot.
fn progress_line(c: &Cluster, r: &Request, old_leader: Option<&str>) -> String {
    let state = |name: &str| {
        c.member(name)
            .map(|m| {
                m.data
                    .replication_state
                    .clone()
                    .filter(|_| !c.is_leader(name))
                    .or_else(|| m.data.state.as_ref().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown".into())
            })
            .unwrap_or_else(|| "no member key".into())
    };
    let mut parts = vec![match c.leader_name() {
        Some(l) if Some(l) == old_leader => {
            format!("{l} still holds the leader lock ({})", state(l))
        }
        Some(l) => format!("new leader {l} ({})", state(l)),
        None => "nobody holds the leader lock".to_string(),
    }];
    if let Some(cand) = r
        .candidate
        .as_deref()
        .filter(|n| !n.is_empty() && !c.is_leader(n))
    {
        parts.push(format!("candidate {cand}: {}", state(cand)));
    }
    if let Some(o) = old_leader.filter(|o| !c.is_leader(o)) {
        parts.push(format!("{o}: {}", state(o)));
    }
    parts.join(", ")
}

/// Awaits the REST answer while showing, on standard error, how the
/// cluster moves (sampled from the DCS every second).
async fn with_progress<F>(
    post: F,
    dcs: &dyn Dcs,
    r: &Request,
    old_leader: Option<&str>,
) -> F::Output
where
    F: std::future::Future,
{
    tokio::pin!(post);
    let started = Instant::now();
    let mut last = (String::new(), started);
    loop {
        tokio::select! {
            out = &mut post => return out,
            () = tokio::time::sleep(POLL) => {
                if r.scheduled.is_some() {
                    continue;
                }
                if let Ok(c) = dcs.load().await {
                    let line = progress_line(&c, r, old_leader);
                    if line != last.0 || last.1.elapsed() >= REPEAT {
                        note(format!("{} in progress ({}s): {line}", r.action.name(), started.elapsed().as_secs()));
                        last = (line, Instant::now());
                    }
                }
            }
        }
    }
}

/// Waits until the DCS shows a running leader other than the old one, at
/// most `within`.
async fn wait_for_new_leader(
    dcs: &dyn Dcs,
    r: &Request,
    old_leader: Option<&str>,
    within: Duration,
) -> Result<Cluster, CtlError> {
    let started = Instant::now();
    let mut last = (String::new(), started);
    loop {
        let c = dcs
            .load()
            .await
            .map_err(|e| CtlError::failed(format!("cannot read cluster {}: {e}", r.cluster)))?;
        let leader = c.leader_name().filter(|l| !l.is_empty());
        // Patroni may promote another member than the one named (it says
        // so in its answer): any new running leader ends the wait.
        let done = leader.is_some_and(|l| Some(l) != old_leader)
            && c.leader_member().is_some_and(|m| m.data.is_running());
        if done {
            return Ok(c);
        }
        if started.elapsed() >= within {
            note(format!(
                "Warning: after {}s the DCS does not show the {} done yet: {}",
                within.as_secs(),
                r.action.name(),
                progress_line(&c, r, old_leader)
            ));
            return Ok(c);
        }
        let line = progress_line(&c, r, old_leader);
        if line != last.0 || last.1.elapsed() >= REPEAT {
            note(format!(
                "waiting for the new leader ({}s): {line}",
                started.elapsed().as_secs()
            ));
            last = (line, Instant::now());
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_patronictls() {
        let mut r = Request {
            action: Action::Switchover,
            cluster: "demo".into(),
            leader: Some("n1".into()),
            candidate: Some("n2".into()),
            scheduled: None,
        };
        assert_eq!(
            super::super::output::python_json(&body(&r)),
            r#"{"candidate": "n2", "leader": "n1"}"#
        );
        r.scheduled = schedule::parse(Some("2030-01-01T10:00Z")).unwrap();
        r.candidate = None;
        assert_eq!(
            super::super::output::python_json(&body(&r)),
            r#"{"candidate": null, "leader": "n1", "scheduled_at": "2030-01-01T10:00:00+00:00"}"#
        );
        r.action = Action::Failover;
        r.candidate = Some("n3".into());
        r.scheduled = None;
        assert_eq!(
            super::super::output::python_json(&body(&r)),
            r#"{"candidate": "n3"}"#
        );
    }
}
