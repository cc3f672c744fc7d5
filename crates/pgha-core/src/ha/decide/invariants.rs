//! The safety rules of `decide`, checked over every combination of a grid
//! of observations (not a sample): whoever leads, what the local
//! PostgreSQL is, how much of the lock's lifetime is left, the DCS up or
//! down, maintenance mode, the fence guard, a job in progress, a failed
//! renewal, an unowned leader key, the peers, a switchover request, and
//! synchronous mode with a `sync` key naming this node or not.
//!
//! A rule broken prints the whole world it was broken in.

use std::time::Duration;

use super::*;
use crate::ha::observation::*;
use crate::ha::rule::Rule;
use crate::ha::world::*;

const ME: &str = "n2";

/// Every value each dimension of the grid takes.
struct Grid {
    leader: [Option<&'static str>; 3],
    local: [Local; 5],
    /// Lock lifetime left at `now`, in ms (`None`: no lock held).
    lock_left_ms: [Option<i64>; 4],
    dcs_down: [bool; 2],
    paused: [bool; 2],
    unfenced: [bool; 2],
    job: [Option<Job>; 3],
    renew_failed: [bool; 2],
    leader_unowned: [bool; 2],
    peers: [Peers; 3],
    failover: [Failover; 3],
    sync: [Sync; 3],
}

/// Synchronous mode, and whom its `sync` key names.
#[derive(Clone, Copy, Debug)]
enum Sync {
    Off,
    /// `true`, the key naming `n1` and `n3`, not this node.
    NamesOthers,
    /// `true`, the key naming `n1` and this node.
    NamesMe,
}

#[derive(Clone, Copy, Debug)]
enum Local {
    Primary,
    Replica,
    StoppedWasPrimary,
    StoppedWasReplica,
    Empty,
}

#[derive(Clone, Copy, Debug)]
enum Peers {
    None,
    OneAhead,
    OneBehind,
}

#[derive(Clone, Copy, Debug)]
enum Failover {
    None,
    ToMe,
    AwayFromMe,
}

fn grid() -> Grid {
    Grid {
        leader: [Some(ME), Some("n1"), None],
        local: [
            Local::Primary,
            Local::Replica,
            Local::StoppedWasPrimary,
            Local::StoppedWasReplica,
            Local::Empty,
        ],
        lock_left_ms: [None, Some(-1000), Some(500), Some(20_000)],
        dcs_down: [false, true],
        paused: [false, true],
        unfenced: [false, true],
        job: [
            None,
            Some(Job::Promote),
            Some(Job::Start { as_primary: false }),
        ],
        renew_failed: [false, true],
        leader_unowned: [false, true],
        peers: [Peers::None, Peers::OneAhead, Peers::OneBehind],
        failover: [Failover::None, Failover::ToMe, Failover::AwayFromMe],
        sync: [Sync::Off, Sync::NamesOthers, Sync::NamesMe],
    }
}

/// One point of the grid.
#[derive(Clone, Debug)]
struct Point {
    leader: Option<&'static str>,
    local: Local,
    lock_left_ms: Option<i64>,
    dcs_down: bool,
    paused: bool,
    unfenced: bool,
    job: Option<Job>,
    renew_failed: bool,
    leader_unowned: bool,
    peers: Peers,
    failover: Failover,
    sync: Sync,
}

fn points() -> Vec<Point> {
    let g = grid();
    let mut out = Vec::new();
    for leader in g.leader {
        for local in g.local {
            for lock_left_ms in g.lock_left_ms {
                for dcs_down in g.dcs_down {
                    for paused in g.paused {
                        for unfenced in g.unfenced {
                            for job in &g.job {
                                for renew_failed in g.renew_failed {
                                    for leader_unowned in g.leader_unowned {
                                        for peers in g.peers {
                                            for (failover, sync) in g
                                                .failover
                                                .iter()
                                                .flat_map(|f| g.sync.iter().map(move |s| (*f, *s)))
                                            {
                                                out.push(Point {
                                                    leader,
                                                    local,
                                                    lock_left_ms,
                                                    dcs_down,
                                                    paused,
                                                    unfenced,
                                                    job: job.clone(),
                                                    renew_failed,
                                                    leader_unowned: leader_unowned
                                                        && leader.is_some(),
                                                    peers,
                                                    failover,
                                                    sync,
                                                });
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

fn world(p: &Point) -> World {
    let mut w = World::new(ME);
    match p.leader {
        Some(l) => {
            w.leader(l);
        }
        None => {
            w.no_leader();
        }
    }
    match p.local {
        Local::Primary => {
            w.primary();
        }
        Local::Replica => {}
        Local::StoppedWasPrimary => {
            w.stopped().was_primary();
        }
        Local::StoppedWasReplica => {
            w.stopped();
        }
        Local::Empty => {
            w.stopped();
            w.local.data_dir = DataDir::Empty;
        }
    }
    w.memory.lock_deadline = p.lock_left_ms.map(|ms| {
        if ms >= 0 {
            w.now + Duration::from_millis(ms as u64)
        } else {
            w.now - Duration::from_millis(ms.unsigned_abs())
        }
    });
    w.dcs_down = p.dcs_down;
    w.settings.paused = p.paused;
    w.unfenced = p.unfenced.then(|| "the fence guard is down".to_string());
    w.memory.job = p.job.clone();
    w.renew_failed = p.renew_failed.then(|| "DCS unreachable".to_string());
    w.leader_unowned = p.leader_unowned;
    match p.peers {
        Peers::None => {}
        Peers::OneAhead => {
            w.peer("n3", 5000, 1);
        }
        Peers::OneBehind => {
            w.peer("n3", 10, 1);
        }
    }
    match p.sync {
        Sync::Off => {}
        Sync::NamesOthers => {
            w.settings.sync_mode = crate::ha::sync::SyncMode::On { strict: false };
            w.set("sync", r#"{"leader":"n1","quorum":0,"sync_standby":"n3"}"#);
        }
        Sync::NamesMe => {
            w.settings.sync_mode = crate::ha::sync::SyncMode::On { strict: false };
            w.set("sync", r#"{"leader":"n1","quorum":0,"sync_standby":"n2"}"#);
        }
    }
    match p.failover {
        Failover::None => {}
        Failover::ToMe => {
            w.set("failover", r#"{"leader":"n1","member":"n2"}"#);
        }
        Failover::AwayFromMe => {
            w.set("failover", r#"{"leader":"n2","member":"n3"}"#);
        }
    }
    w
}

fn is_lock_call(a: &Action) -> bool {
    matches!(
        a,
        Action::AcquireLock | Action::RenewLock | Action::ReclaimLock { .. }
    )
}

/// The rules, each with what it protects. Returns the first broken one.
fn check(p: &Point, d: &Decision) -> Result<(), String> {
    let a = &d.actions;
    let pos = |f: &dyn Fn(&Action) -> bool| a.iter().position(f);
    let demotes = pos(&|x| matches!(x, Action::Demote { .. })).is_some();
    let lock_call = pos(&is_lock_call);
    let primary = matches!(p.local, Local::Primary);
    let lock_over = p
        .lock_left_ms
        .is_some_and(|ms| ms <= FENCE_MARGIN.as_millis() as i64);

    // A node becomes (or starts as) a writable primary only right after a
    // lock call in the same decision: the call failing stops the decision.
    if let Some(i) = pos(&|x| matches!(x, Action::Promote | Action::StartPrimary))
        && lock_call.is_none_or(|l| l >= i)
    {
        return Err("Promote/StartPrimary without a lock call before it".into());
    }
    // No DCS: no lock call can succeed, so none is asked for.
    if p.dcs_down && lock_call.is_some() {
        return Err("a lock call without the DCS".into());
    }
    // A node that could not be fenced never takes the lock or promotes.
    if p.unfenced
        && !p.paused
        && a.iter().any(|x| {
            matches!(
                x,
                Action::AcquireLock | Action::Promote | Action::StartPrimary
            )
        })
    {
        return Err("an unfenced node takes the lock or promotes".into());
    }
    // 1. A primary whose lock lifetime is (nearly) over stops at once,
    //    before anything else.
    if primary
        && !p.paused
        && lock_over
        && a.first()
            != Some(&Action::Demote {
                mode: StopMode::Immediate,
            })
    {
        return Err("a primary past its lock's lifetime does not stop at once".into());
    }
    // 2. A primary that cannot read the DCS demotes.
    if primary && !p.paused && p.dcs_down && !demotes {
        return Err("a primary without the DCS keeps running".into());
    }
    // A primary that sees another holder, with no job in progress and no
    // unowned key to deal with, demotes.
    if primary
        && !p.paused
        && !p.dcs_down
        && p.leader == Some("n1")
        && p.job.is_none()
        && !p.leader_unowned
        && !demotes
    {
        return Err("a primary under another holder keeps running".into());
    }
    // A leader whose renewal just failed does not promote on the strength
    // of the lock it could not renew.
    if p.renew_failed
        && p.leader == Some(ME)
        && a.iter()
            .any(|x| matches!(x, Action::Promote | Action::StartPrimary))
    {
        return Err("a leader promotes although its renewal just failed".into());
    }
    // Maintenance mode: nothing automatic touches PostgreSQL; only a
    // requested switchover may.
    if p.paused
        && matches!(p.failover, Failover::None)
        && a.iter().any(|x| {
            matches!(
                x,
                Action::Promote
                    | Action::Demote { .. }
                    | Action::Rewind { .. }
                    | Action::Reinitialize { .. }
                    | Action::Bootstrap
                    | Action::Clone { .. }
                    | Action::CloneWithoutLeader
                    | Action::StartPrimary
                    | Action::StartReplica { .. }
                    | Action::AcquireLock
            )
        })
    {
        return Err("an automatic action while paused".into());
    }
    // In synchronous mode, a node the `sync` key does not name may miss
    // acknowledged commits: it never takes a free lock, not even as a
    // switchover's candidate.
    if matches!(p.sync, Sync::NamesOthers) && p.leader.is_none() && a.contains(&Action::AcquireLock)
    {
        return Err("a node the sync key does not name takes a free lock".into());
    }
    // The rule named is the step of the chain that applies first.
    let first_step = if primary && !p.paused && lock_over {
        Some(Rule::LockExpiring)
    } else if p.dcs_down && !(p.unfenced && !p.paused && p.job.is_none()) {
        Some(Rule::NoDcs)
    } else if p.job.is_some() && !p.dcs_down {
        Some(Rule::JobInProgress)
    } else {
        None
    };
    if let Some(rule) = first_step
        && d.rule != rule
    {
        return Err(format!("decided by {} where {rule} applies first", d.rule));
    }
    // A job in progress is not interrupted except by a demotion.
    if p.job.is_some()
        && !lock_over
        && a.iter().any(|x| {
            !matches!(
                x,
                Action::RenewLock | Action::Demote { .. } | Action::ReleaseLock
            )
        })
    {
        return Err("a job in progress is interrupted".into());
    }
    Ok(())
}

#[test]
fn no_observation_in_the_grid_breaks_a_safety_rule() {
    let points = points();
    let mut broken = Vec::new();
    for p in &points {
        let w = world(p);
        let d = w.decide();
        if let Err(rule) = check(p, &d) {
            broken.push(format!("{rule}\n  world: {p:?}\n  decision: {d:?}"));
        }
    }
    let mut rules: Vec<&str> = broken.iter().filter_map(|b| b.lines().next()).collect();
    rules.sort_unstable();
    rules.dedup();
    assert!(
        broken.is_empty(),
        "{} of {} observations break a rule ({}); the first ones:\n{}",
        broken.len(),
        points.len(),
        rules.join("; "),
        rules
            .iter()
            .filter_map(|r| broken.iter().find(|b| b.starts_with(r)))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The grid is what it claims to be.
    assert_eq!(points.len(), 3 * 5 * 4 * 2 * 2 * 2 * 3 * 2 * 2 * 3 * 3 * 3);
}

/// The sweep can fail: a `decide` that promoted whenever nobody leads,
/// without taking the lock first, is caught.
#[test]
fn the_sweep_catches_a_promotion_without_the_lock() {
    let p = points()
        .into_iter()
        .find(|p| p.leader.is_none() && matches!(p.local, Local::Replica))
        .expect("the grid has such a point");
    let wrong = Decision::new(Rule::Race, vec![Action::Promote], "promoting");
    assert!(check(&p, &wrong).is_err());
}
