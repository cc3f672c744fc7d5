//! Requested switchovers and failovers: what the `failover` key asks, and
//! how each node acts on it.
//!
//! The key (`{"leader": L, "member": C, "scheduled_at": T}`, written by
//! `POST /switchover`, `POST /failover` or patronictl) means:
//! - on the leader: at `T` (or now), if a good candidate exists, stop
//!   gracefully and release the lock;
//! - on the other nodes: while it is pending, only the candidate `C` races
//!   for the lock, and `L` never does;
//! - on the new leader: the request is done; remove the key.

use super::observation::{Observation, PeerSource, PeerStatus};
use crate::model::{Cluster, Failover};

/// What the leader does about the `failover` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaderStep {
    /// No request.
    Nothing,
    /// A request for later (or for a candidate not ready): say so, keep leading.
    Wait(String),
    /// The request is done, stale or impossible: remove the key.
    Clear(String),
    /// Hand over now: graceful stop, then release the lock.
    HandOver(String),
}

/// The non-empty value of a text field.
fn text(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

fn request(cluster: &Cluster) -> Option<&Failover> {
    cluster.failover.as_ref().map(|v| &v.value)
}

/// The leader's step for the current `failover` key.
pub fn for_leader(o: &Observation<'_>, cluster: &Cluster) -> LeaderStep {
    let me = o.inputs.settings.name.as_str();
    let Some(f) = request(cluster) else {
        return LeaderStep::Nothing;
    };
    if f.is_empty() {
        return LeaderStep::Clear("the failover key names neither a leader nor a candidate".into());
    }
    if let Some(from) = text(&f.leader)
        && from != me
    {
        return LeaderStep::Clear(format!(
            "a switchover away from {from} is recorded, but I lead: it is over"
        ));
    }
    let candidate = text(&f.member);
    if candidate == Some(me) {
        return LeaderStep::Clear("the switchover to me is done".into());
    }
    match f.scheduled_at() {
        Err(e) => {
            return LeaderStep::Clear(format!("the requested switchover cannot be read: {e}"));
        }
        Ok(Some(at)) if at > o.inputs.wall_now => {
            return LeaderStep::Wait(format!("switchover scheduled at {at}"));
        }
        Ok(_) => {}
    }
    if o.inputs.settings.paused && candidate.is_none() {
        return LeaderStep::Clear(
            "paused: a switchover must name a candidate; removing the request".into(),
        );
    }
    let me_name = me.to_string();
    let others: Vec<&PeerStatus> = o
        .inputs
        .peers
        .iter()
        .filter(|p| p.name != me_name)
        .collect();
    let judge =
        |p: &PeerStatus| candidate_problem(p).or_else(|| not_synchronous(o, cluster, &p.name));
    let judged: Vec<(String, Option<String>)> = match candidate {
        Some(c) => vec![(
            c.to_string(),
            match others.iter().find(|p| p.name == c) {
                Some(p) => judge(p),
                None => Some("is not a member of the cluster".into()),
            },
        )],
        None => others.iter().map(|p| (p.name.clone(), judge(p))).collect(),
    };
    let able: Vec<&String> = judged
        .iter()
        .filter(|(_, problem)| problem.is_none())
        .map(|(name, _)| name)
        .collect();
    if !able.is_empty()
        && let Some(why) = able
            .iter()
            .map(|name| not_in_failsafe_key(o, cluster, name).map(|w| format!("{name} {w}")))
            .collect::<Option<Vec<String>>>()
    {
        return LeaderStep::Wait(format!("waiting to switch over: {}", why.join("; ")));
    }
    if let Some(name) = able
        .iter()
        .find(|name| not_in_failsafe_key(o, cluster, name).is_none())
    {
        let to = candidate.map_or_else(
            || format!("the healthiest member (e.g. {name})"),
            String::from,
        );
        return LeaderStep::HandOver(format!(
            "switching over to {to} as requested: stopping cleanly and releasing the leader lock"
        ));
    }
    let why = if judged.is_empty() {
        "there is no other member".to_string()
    } else {
        judged
            .iter()
            .map(|(n, p)| format!("{n} {}", p.as_deref().unwrap_or("")))
            .collect::<Vec<_>>()
            .join("; ")
    };
    LeaderStep::Clear(format!("the requested switchover is not possible: {why}"))
}

/// In failsafe mode a member the `failsafe` key does not name never takes
/// the lock ([`super::failsafe::race_problem`]): handing over to it would
/// leave the cluster without a leader. The leader adds it to the key at
/// the end of its next cycle.
fn not_in_failsafe_key(o: &Observation<'_>, cluster: &Cluster, name: &str) -> Option<String> {
    if !o.inputs.settings.failsafe_mode {
        return None;
    }
    let key = &cluster.failsafe.as_ref()?.value.0;
    (!key.is_empty() && !key.contains_key(name))
        .then(|| "is not in the failsafe key yet (the leader adds it within a cycle)".into())
}

/// In synchronous mode, why `name` cannot take over in a switchover: it
/// is not a synchronous standby, so it may miss acknowledged commits.
pub fn not_synchronous(o: &Observation<'_>, cluster: &Cluster, name: &str) -> Option<String> {
    sync_problem(o.inputs.settings.sync_mode, cluster, name)
}

/// [`not_synchronous`] for a given mode (the REST API's check). In
/// quorum mode a candidate must be a voter the `sync` key names: only
/// the voters (and the key's leader) can gather the votes that prove they
/// hold every acknowledged commit, so a hand-over to anyone else would
/// leave the cluster without a leader.
pub fn sync_problem(mode: super::sync::SyncMode, cluster: &Cluster, name: &str) -> Option<String> {
    use super::sync::{SyncMode, holds_every_commit, is_active};
    if matches!(mode, SyncMode::Quorum { .. }) {
        let voter = cluster
            .sync
            .as_ref()
            .is_some_and(|k| holds_every_commit(&k.value, name));
        return (is_active(mode, cluster) && !voter).then(|| {
            "is not a quorum standby (synchronous_mode: quorum): it may miss acknowledged commits"
                .into()
        });
    }
    super::sync::promotion_problem(mode, cluster, name).map(|_| {
        "is not a synchronous standby (synchronous_mode): it may miss acknowledged commits".into()
    })
}

/// The request names the leader to move away from: a switchover, not a
/// failover (which names only a candidate).
pub fn is_switchover(cluster: &Cluster) -> bool {
    request(cluster).is_some_and(|f| text(&f.leader).is_some())
}

/// Why `peer` cannot take over now, or `None` if it can.
pub fn candidate_problem(peer: &PeerStatus) -> Option<String> {
    if peer.source != PeerSource::Rest {
        return Some("does not answer on its REST API".into());
    }
    if peer.nofailover {
        return Some("may not become primary (nofailover or failover_priority <= 0)".into());
    }
    if peer.is_primary {
        return Some("runs as a primary".into());
    }
    if !peer.running {
        return Some("does not run PostgreSQL".into());
    }
    if peer.wal_position.is_none() {
        return Some("reports no WAL position".into());
    }
    if peer.replication_broken {
        return Some("has not been streaming from the leader for too long".into());
    }
    None
}

/// [`candidate_problem`] for a switchover or failover asked of the REST
/// API. `named_without_leader`: the cluster has no leader and the operator
/// named this candidate; then a replica that was not streaming (M1) is
/// accepted: whether its data will do is the operator's call, and the
/// named candidate races regardless ([`RaceGate::Candidate`]).
pub fn requested_candidate_problem(
    peer: &PeerStatus,
    named_without_leader: bool,
) -> Option<String> {
    if named_without_leader && peer.replication_broken {
        return candidate_problem(&PeerStatus {
            replication_broken: false,
            takes_lock_back: false,
            ..peer.clone()
        });
    }
    candidate_problem(peer)
}

/// How a pending request changes who may race for a free lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RaceGate {
    /// No request affecting the race.
    Open,
    /// I am the requested candidate: race without comparing with peers.
    Candidate,
    /// Not me: stay out (and why).
    Closed(String),
}

/// The race gate for this node while the lock is free.
pub fn race_gate(o: &Observation<'_>, cluster: &Cluster) -> RaceGate {
    let me = o.inputs.settings.name.as_str();
    let Some(f) = request(cluster).filter(|f| !f.is_empty()) else {
        return RaceGate::Open;
    };
    let ttl = o.inputs.settings.ttl;
    if text(&f.member) != Some(me)
        && o.memory
            .candidate_awaited_since
            .is_some_and(|since| o.now.saturating_sub(since) >= ttl)
    {
        // The candidate has had a free lock for ttl and not taken it (it
        // cannot: lagging, not synchronous, failing): a request must not
        // leave the cluster without a leader.
        return RaceGate::Open;
    }
    if text(&f.leader) == Some(me) {
        return RaceGate::Closed("a switchover away from me is in progress".into());
    }
    match text(&f.member) {
        Some(c) if c == me => RaceGate::Candidate,
        Some(c) => {
            // The candidate decides, unless it is clearly not there to do it.
            let available = o
                .inputs
                .peers
                .iter()
                .any(|p| p.name == c && p.source == PeerSource::Rest && p.running);
            if available {
                RaceGate::Closed(format!("a switchover to {c} is in progress"))
            } else {
                RaceGate::Open
            }
        }
        None => RaceGate::Open,
    }
}
