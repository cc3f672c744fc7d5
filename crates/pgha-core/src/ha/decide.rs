//! The HA decision: given what was observed, what to do and why.
//!
//! `decide` is a pure function: no I/O, no clock of its own, no hidden
//! state. The agent observes (the DCS, the local PostgreSQL, the peers),
//! asks its [`super::HaNode`] (which calls `decide` with the node's
//! memory), carries the actions out, and comes back next cycle. The same
//! function runs in unit tests and in production, and can run in a
//! simulation that drives `HaNode` on a simulated clock.
//!
//! The order of the checks is the safety argument in code form:
//! 1. a primary whose lock lifetime is over stops at once, whatever else;
//! 2. without the DCS, a primary demotes (it cannot prove it holds the lock),
//!    unless failsafe mode is on and every member of the `failsafe` key
//!    just confirmed it: each such round extends its right to write by a
//!    bound that outlasts no member's promise not to take the lock
//!    ([`super::failsafe`]);
//! 3. a running background job is not interrupted, but the leader keeps
//!    renewing its lock meanwhile;
//!    3b. a leader key no lease or session backs is nobody's lock: the
//!    primary it overwrote takes it back, else it is removed once any lock
//!    it overwrote has expired;
//! 4. the data directory decides between bootstrap, clone, refusal;
//! 5. a stopped PostgreSQL is started in the role the lock allows (a
//!    synchronous primary that crashed hands the lock to a synchronous
//!    standby instead, so crash recovery never shows clients commits no
//!    standby has; a primary stopped only for want of the DCS takes a free
//!    lock back and starts in place, unless anyone went past its timeline);
//! 6. a running one is made to match the lock: the holder is primary,
//!    everybody else a replica of the holder, and without a holder only the
//!    healthiest node races for it (in a standby cluster the holder is the
//!    standby leader instead, a replica of the cluster's source: nobody
//!    promotes while `standby_cluster` is set).

use std::time::Duration;

use super::action::{Action, Decision, StopMode};
use super::divergence;
use super::observation::{DataDir, Job, Observation, PeerSource, PeerStatus};
use super::replication::{self, ConfiguredUpstream};
use super::rule::Rule;
use super::switchover::{self, LeaderStep, RaceGate};
use super::sync;
use crate::model::{Cluster, ClusterKey, Role};

/// How long before the lock's lifetime ends a primary must already have
/// stopped: covers an immediate stop and a loop that is late.
pub const FENCE_MARGIN: Duration = Duration::from_millis(1000);

/// Decides what this node does this cycle. See the module docs.
pub fn decide(o: &Observation<'_>) -> Decision {
    let me = o.inputs.settings.name.as_str();

    // 1. The lock's lifetime is over (or about to be): nothing may keep a
    //    primary writing past it.
    // (Not in maintenance mode: every node is paused and none races for
    // the lock, so an expiring lock cannot give the cluster a second
    // primary; Patroni keeps such a primary running too.)
    if o.inputs.local.is_primary()
        && !o.inputs.settings.paused
        && let Some(deadline) = o.memory.lock_deadline
        && o.now + FENCE_MARGIN >= deadline
    {
        return Decision::new(
            Rule::LockExpiring,
            vec![Action::Demote {
                mode: StopMode::Immediate,
            }],
            format!(
                "demoting at once: the leader lock may expire in {:?} and it was not renewed",
                deadline.saturating_sub(o.now)
            ),
        );
    }

    // 1b. A primary that could not be fenced if its agent died: without
    //     its guard, a killed agent would leave it writing past the lock.
    if !o.inputs.settings.paused
        && o.memory.job.is_none()
        && let Some(why) = &o.inputs.unfenced
    {
        let i_lead = o.inputs.cluster.is_some_and(|c| c.is_leader(me));
        if o.inputs.local.is_primary() {
            let mut actions = vec![Action::Demote {
                mode: StopMode::Fast,
            }];
            if i_lead {
                actions.push(Action::ReleaseLock);
            }
            return Decision::new(
                Rule::Unfenced,
                actions,
                format!("demoting: I could not be fenced if my agent failed ({why})"),
            );
        }
        if i_lead {
            return Decision::new(
                Rule::Unfenced,
                vec![Action::ReleaseLock],
                format!(
                    "releasing the leader lock: I could not be fenced if my agent failed ({why})"
                ),
            );
        }
    }

    // 2. No DCS this cycle.
    let Some(cluster) = o.inputs.cluster else {
        if o.inputs.settings.paused {
            return Decision::idle(
                Rule::NoDcs,
                "DCS is not accessible; paused: no automatic action",
            );
        }
        if o.inputs.local.is_primary() {
            return match failsafe_verdict(o) {
                Some(Ok(why)) => Decision::idle(
                    Rule::Failsafe,
                    format!(
                        "continuing as the leader in failsafe mode: the DCS is not accessible and {why}"
                    ),
                ),
                Some(Err(why)) => Decision::new(
                    Rule::Failsafe,
                    vec![Action::Demote {
                        mode: StopMode::Fast,
                    }],
                    format!(
                        "demoting: the DCS is not accessible, and failsafe mode cannot keep me: {why}"
                    ),
                ),
                None => Decision::new(
                    Rule::NoDcs,
                    vec![Action::Demote {
                        mode: StopMode::Fast,
                    }],
                    "demoting: the DCS is not accessible, so I cannot prove I still hold the leader lock",
                ),
            };
        }
        if let Some(w) = o
            .inputs
            .failsafe_witness
            .as_ref()
            .filter(|w| w.until > o.now)
        {
            return Decision::idle(
                Rule::NoDcs,
                format!(
                    "DCS is not accessible; no action as a replica (failsafe mode: I confirmed {} \
                     as the leader)",
                    w.leader.as_deref().unwrap_or("a leader")
                ),
            );
        }
        return Decision::idle(Rule::NoDcs, "DCS is not accessible; no action as a replica");
    };
    let i_lead = cluster.is_leader(me);

    // 3. A background job is running.
    if let Some(job) = &o.memory.job {
        if i_lead {
            if let Some(why) = &o.inputs.renew_failed {
                // (Not in maintenance mode: a failed renewal demotes no
                // paused primary, job or not; see step 6.)
                if o.inputs.local.is_primary() && !o.inputs.settings.paused {
                    if let Some(Ok(keeps)) = failsafe_verdict(o) {
                        return Decision::idle(
                            Rule::Failsafe,
                            format!(
                                "continuing as the leader in failsafe mode during {}: renewing \
                                 the leader lock failed ({why}) and {keeps}",
                                job_name(job)
                            ),
                        );
                    }
                    return Decision::new(
                        Rule::JobInProgress,
                        vec![Action::Demote {
                            mode: StopMode::Fast,
                        }],
                        format!(
                            "demoting during {}: renewing the leader lock failed: {why}",
                            job_name(job)
                        ),
                    );
                }
                return Decision::idle(
                    Rule::JobInProgress,
                    format!(
                        "{} in progress; renewing the leader lock failed: {why}",
                        job_name(job)
                    ),
                );
            }
            return Decision::new(
                Rule::JobInProgress,
                vec![Action::RenewLock],
                format!("renewing the leader lock during {}", job_name(job)),
            );
        }
        return Decision::idle(
            Rule::JobInProgress,
            format!("{} in progress", job_name(job)),
        );
    }

    // 3b. A leader key no lease or session backs.
    if o.inputs.leader_unowned
        && !o.inputs.settings.paused
        && let Some(lock) = &cluster.leader
    {
        return decide_unowned_lock(o, lock);
    }

    // 4. The data directory.
    match &o.inputs.local.data_dir {
        DataDir::Unusable(why) => {
            let reason = format!(
                "data directory is unusable ({why}); not starting PostgreSQL (reinitialize the node)"
            );
            return if i_lead {
                Decision::new(
                    Rule::UnusableDataDir,
                    vec![Action::ReleaseLock],
                    format!("releasing the leader lock: {reason}"),
                )
            } else {
                Decision::idle(Rule::UnusableDataDir, reason)
            };
        }
        DataDir::Empty => return decide_empty(o, cluster),
        DataDir::Initialized { system_id, .. } => {
            if let Some(d) = decide_identity(o, cluster, system_id) {
                return d;
            }
        }
    }

    // 5. Initialized, but PostgreSQL is not running.
    if !o.inputs.local.running {
        return decide_stopped(o, cluster);
    }

    // 6. Running.
    decide_running(o, cluster)
}

/// Failsafe mode's word on a primary that cannot renew its lock this
/// cycle: `None` when failsafe mode is off; `Ok(why)` when this cycle's
/// round confirmed it and its right to write (extended by the round)
/// still holds; `Err(why)` otherwise.
fn failsafe_verdict(o: &Observation<'_>) -> Option<Result<String, String>> {
    if !o.inputs.settings.failsafe_mode {
        return None;
    }
    let Some(round) = o.inputs.failsafe_round else {
        return Some(Err(
            "no confirmation round ran (my right to write had run out)".into(),
        ));
    };
    if !round.confirmed() {
        return Some(Err(round.describe()));
    }
    match o.memory.lock_deadline.filter(|d| o.now + FENCE_MARGIN < *d) {
        Some(d) => Some(Ok(format!(
            "{}: I may write for {:.1?} more",
            round.describe(),
            d - o.now
        ))),
        None => Some(Err(format!(
            "{}, but my right to write had already run out",
            round.describe()
        ))),
    }
}

/// Why failsafe mode keeps this node out of the race for a free lock.
fn failsafe_race_problem(o: &Observation<'_>, cluster: &Cluster) -> Option<String> {
    super::failsafe::race_problem(
        o.now,
        &o.inputs.settings.name,
        o.inputs.settings.failsafe_mode,
        o.inputs.failsafe_witness.as_ref(),
        cluster,
    )
}

fn job_name(job: &Job) -> String {
    match job {
        Job::Bootstrap => "bootstrap".into(),
        Job::Clone { source } => format!("clone from {source}"),
        Job::Rewind { source } => format!("rewind from {source}"),
        Job::Start { as_primary: true } => "start as primary".into(),
        Job::Start { as_primary: false } => "start as replica".into(),
        Job::Stop => "stop".into(),
        Job::Promote => "promote".into(),
        Job::Restart => "restart".into(),
        Job::Reinitialize { source } => format!("reinitialize from {source}"),
    }
}

/// Empty data directory: bootstrap the cluster, or clone a replica.
fn decide_empty(o: &Observation<'_>, cluster: &Cluster) -> Decision {
    let me = o.inputs.settings.name.as_str();
    if cluster.is_leader(me) {
        return Decision::new(
            Rule::EmptyDataDir,
            vec![Action::ReleaseLock],
            "releasing the leader lock: my data directory is empty",
        );
    }
    if o.inputs.settings.paused {
        return Decision::idle(
            Rule::EmptyDataDir,
            "paused: not bootstrapping or cloning an empty data directory",
        );
    }
    if let Some(p) = cluster.problem(&ClusterKey::Initialize) {
        return Decision::idle(
            Rule::EmptyDataDir,
            format!(
                "not bootstrapping or cloning: the initialize key is unreadable ({}); repair it first",
                p.reason
            ),
        );
    }
    let initialized = cluster.initialize.as_ref().map(|v| v.value.as_str());
    match (initialized, cluster.leader_name()) {
        (None, None) => {
            if let Some(why) = &o.inputs.settings.new_cluster_refused {
                Decision::idle(
                    Rule::Bootstrap,
                    format!("cluster is not initialized, and this node will not create it: {why}"),
                )
            } else if !o.inputs.settings.can_bootstrap {
                Decision::idle(
                    Rule::Bootstrap,
                    "cluster is not initialized and this node has no bootstrap section: waiting",
                )
            } else if o.inputs.settings.tags.nofailover() {
                Decision::idle(
                    Rule::Bootstrap,
                    "cluster is not initialized and this node may not become primary (nofailover): waiting",
                )
            } else {
                Decision::new(
                    Rule::Bootstrap,
                    vec![Action::RaceInitialize, Action::Bootstrap],
                    "cluster is not initialized: racing to bootstrap it",
                )
            }
        }
        (Some(""), None) => Decision::idle(
            Rule::Bootstrap,
            "waiting for the leader to finish bootstrapping",
        ),
        (_, leader) => match clone_source(cluster, me) {
            Some(source) => Decision::new(
                Rule::Clone,
                vec![Action::Clone {
                    source: source.clone(),
                }],
                format!("creating a replica: cloning from {source}"),
            ),
            // No leader, the cluster exists: a method marked no_leader
            // (a restore from a backup) makes the replica, as Patroni; it
            // starts with the cluster's system ID or not at all.
            None if leader.is_none() && o.inputs.settings.can_clone_without_leader => {
                Decision::new(
                    Rule::Clone,
                    vec![Action::CloneWithoutLeader],
                    "no leader to clone from: creating a replica with a no_leader method",
                )
            }
            None => Decision::idle(
                Rule::Clone,
                match leader {
                    Some(l) => format!("waiting for leader {l} to run before cloning from it"),
                    None => "waiting for a leader to clone from".into(),
                },
            ),
        },
    }
}

/// The member to clone from: a running member tagged `clonefrom`, else the
/// leader if its PostgreSQL runs.
fn clone_source(cluster: &Cluster, me: &str) -> Option<String> {
    let running = |m: &&crate::model::Member| {
        m.name != me && m.data.is_running() && m.data.conn_url.is_some()
    };
    let leader = cluster.leader_member().filter(running);
    cluster
        .members
        .iter()
        .filter(running)
        .find(|m| {
            m.data.tags.clonefrom()
                && (leader.is_some() || m.data.role.as_ref().is_some_and(|r| r.is_primary()))
        })
        .or(leader)
        .map(|m| m.name.clone())
}

/// The data directory holds a cluster: is it this cluster?
fn decide_identity(o: &Observation<'_>, cluster: &Cluster, system_id: &str) -> Option<Decision> {
    let me = o.inputs.settings.name.as_str();
    match cluster.initialize.as_ref().map(|v| v.value.as_str()) {
        Some(stored) if !stored.is_empty() && stored != system_id => {
            let reason = format!(
                "system ID mismatch: my data directory has system ID {system_id}, \
                 but the cluster's initialize key says {stored}; refusing to start"
            );
            if o.inputs.settings.paused {
                return Some(if cluster.is_leader(me) {
                    Decision::new(
                        Rule::SystemIdMismatch,
                        vec![Action::ReleaseLock],
                        format!("releasing the leader lock: {reason}"),
                    )
                } else {
                    Decision::idle(Rule::SystemIdMismatch, reason)
                });
            }
            Some(Decision::new(
                Rule::SystemIdMismatch,
                vec![Action::Exit {
                    reason: reason.clone(),
                }],
                reason,
            ))
        }
        None if cluster.problem(&ClusterKey::Initialize).is_none()
            && cluster.leader.is_none()
            && !o.inputs.settings.paused =>
        {
            if o.inputs.local.is_replica() {
                if o.memory.belongs_to_cluster {
                    // The DCS lost the cluster's keys under a running
                    // cluster: carry on; the primary restores them, or
                    // the usual race replaces a primary that is gone.
                    return None;
                }
                let reason = "the cluster has no initialize key and my PostgreSQL runs as a replica: \
                              start the agent on the node running as primary first";
                return Some(Decision::new(
                    Rule::NoInitializeKey,
                    vec![Action::Exit {
                        reason: reason.into(),
                    }],
                    reason,
                ));
            }
            Some(Decision::new(
                Rule::NoInitializeKey,
                vec![Action::RecordSystemId {
                    system_id: system_id.to_string(),
                }],
                format!(
                    "the cluster has no initialize key: recording my data directory's system ID {system_id}"
                ),
            ))
        }
        _ => None,
    }
}

/// The leader key is attached to no lease or session (step 3b): written by
/// hand or by a tool without one, it is nobody's lock, and it never
/// expires, so left alone it keeps the cluster without a primary for good
/// (Patroni's behaviour: until someone deletes it). It is replaced or
/// removed by compare-and-set on the version read, so a real lock taken
/// meanwhile is never touched. Neither can make a second primary:
/// - the node whose lock it overwrote is still within that lock's lifetime
///   (no other node could have acquired before it ends): as primary, it
///   takes the key back at once, without a gap;
/// - anyone else removes it only once it has seen it unchanged for `ttl`:
///   by then any lock it overwrote has expired (its holder's renewals fail
///   and a lock lives at most `ttl` past its last one), so its holder has
///   stopped writing (step 1, or its fence), even one that was promoting
///   when the key was written. The usual race then elects a leader.
fn decide_unowned_lock(o: &Observation<'_>, lock: &crate::model::LeaderLock) -> Decision {
    let name = &lock.name;
    let within_lifetime = o
        .memory
        .lock_deadline
        .is_some_and(|d| o.now + FENCE_MARGIN < d);
    if o.inputs.local.is_primary() && within_lifetime {
        return Decision::new(
            Rule::UnownedLock,
            vec![Action::ReclaimLock { lock: lock.clone() }],
            format!(
                "the leader key names {name:?} but no lease or session backs it: it overwrote my lock, \
                 which nobody else can hold for {:?} more; taking it back",
                o.memory
                    .lock_deadline
                    .unwrap_or_default()
                    .saturating_sub(o.now)
            ),
        );
    }
    let seen_for = o
        .memory
        .unowned_lock_since
        .as_ref()
        .filter(|(version, _)| *version == lock.version)
        .map_or(Duration::ZERO, |(_, since)| o.now.saturating_sub(*since));
    if seen_for < o.inputs.settings.ttl {
        return Decision::idle(
            Rule::UnownedLock,
            format!(
                "the leader key names {name:?} but no lease or session backs it: nobody holds it; \
             removing it once it has been unchanged for ttl ({:?}), when any lock it overwrote has \
             expired (seen for {seen_for:.1?})",
                o.inputs.settings.ttl
            ),
        );
    }
    Decision::new(
        Rule::UnownedLock,
        vec![Action::RemoveUnownedLock { lock: lock.clone() }],
        format!(
            "the leader key names {name:?} but no lease or session backs it, unchanged for \
             {seen_for:.1?} (more than ttl): nobody holds it and it never expires; removing it so \
             that a leader can be elected"
        ),
    )
}

/// PostgreSQL is not running: start it in the role the lock allows.
fn decide_stopped(o: &Observation<'_>, cluster: &Cluster) -> Decision {
    let me = o.inputs.settings.name.as_str();
    let was_primary = matches!(
        o.inputs.local.data_dir,
        DataDir::Initialized {
            was_primary: true,
            ..
        }
    );
    let what = if o.inputs.local.crashed {
        "crashed"
    } else {
        "not running"
    };

    let handover = sync_crash_handover(o, cluster, was_primary);
    if cluster.is_leader(me) {
        if o.inputs.settings.paused {
            return Decision::new(
                Rule::Paused,
                vec![Action::ReleaseLock],
                format!("paused and PostgreSQL is {what}: releasing the leader lock"),
            );
        }
        if let Some(to) = &handover {
            return Decision::new(
                Rule::SyncCrash,
                vec![Action::ReleaseLock],
                format!(
                    "PostgreSQL crashed as the synchronous primary: restarted in place it would \
                     show clients the commits that were waiting for their standbys; releasing \
                     the leader lock to {to}, which holds every acknowledged commit (I rejoin \
                     after a rewind)"
                ),
            );
        }
        if let Some(since) = o.memory.primary_start_since
            && o.now.saturating_sub(since) > o.inputs.settings.primary_start_timeout
        {
            return Decision::new(
                Rule::PrimaryStartTimeout,
                vec![Action::ReleaseLock],
                format!(
                    "PostgreSQL did not start within primary_start_timeout ({:?}): releasing the leader lock so a replica can take over",
                    o.inputs.settings.primary_start_timeout
                ),
            );
        }
        if let Some(why) = &o.inputs.renew_failed {
            return Decision::idle(
                Rule::RenewFailed,
                format!(
                    "not starting PostgreSQL as primary: renewing the leader lock failed: {why}"
                ),
            );
        }
        if let Some(source) = &o.inputs.settings.standby_cluster {
            // A former primary (demote-cluster) may have written past the
            // source's fork point: rewound against the source first when
            // pg_rewind is allowed and there is a server to rewind from.
            let rewind = was_primary
                && o.inputs.settings.use_pg_rewind
                && source != crate::model::StandbyCluster::ARCHIVE_SOURCE;
            return Decision::new(
                Rule::StandbyLeader,
                vec![
                    Action::RenewLock,
                    Action::StartStandbyLeader {
                        source: source.clone(),
                        rewind,
                    },
                ],
                format!(
                    "PostgreSQL is {what} and I hold the leader lock of a standby cluster: starting it as the standby leader, replicating from {source}{}",
                    if rewind {
                        " (after pg_rewind from it: it ran as a primary)"
                    } else {
                        ""
                    }
                ),
            );
        }
        return if was_primary {
            Decision::new(
                Rule::Stopped,
                vec![Action::RenewLock, Action::StartPrimary],
                format!("PostgreSQL is {what} and I hold the leader lock: starting it as primary"),
            )
        } else {
            Decision::new(
                Rule::Stopped,
                vec![Action::RenewLock, Action::StartReplica { leader: None }],
                format!(
                    "PostgreSQL is {what} and I hold the leader lock: starting it read-only, then promoting"
                ),
            )
        };
    }

    if o.inputs.settings.paused {
        return Decision::idle(
            Rule::Stopped,
            format!("paused: PostgreSQL is {what}; no automatic start"),
        );
    }

    let Some(leader) = cluster.leader_name() else {
        if let Some(d) = decide_takeback(o, cluster) {
            return d;
        }
        if let Some(to) = &handover {
            return Decision::idle(
                Rule::SyncCrash,
                format!(
                    "PostgreSQL crashed as the synchronous primary: not starting it until {to} \
                     takes over (then rewinding), so that nobody sees commits no standby has"
                ),
            );
        }
        return Decision::new(
            Rule::Stopped,
            vec![Action::StartReplica { leader: None }],
            format!("PostgreSQL is {what} and there is no leader: starting as a replica"),
        );
    };

    let rewound = o.memory.rewound_against.as_deref() == Some(leader);
    if was_primary && !rewound {
        return decide_rejoin(o, cluster, leader);
    }
    let upstream =
        replication::upstream(cluster, o.inputs.local.replicate_from.as_deref()).unwrap_or(leader);
    Decision::new(
        Rule::Stopped,
        vec![Action::StartReplica {
            leader: Some(upstream.to_string()),
        }],
        format!("PostgreSQL is {what}: starting as a replica of {upstream}"),
    )
}

/// A primary stopped only because the DCS went away (failsafe mode off,
/// or not confirmed), back with the DCS and no leader: it takes the lock
/// back and starts in place, on its own timeline, instead of leaving the
/// race to a replica that would promote onto a new one (Patroni keeps the
/// old leader too). Its WAL is the cluster's newest as long as nobody
/// went past its timeline: replicas only ever receive what it wrote, and a
/// promotion anywhere records a newer timeline in the `history` key before
/// it happens (announced promotions count: one may have happened, its
/// node dead before it said so; found by the simulator, seed 7726).
/// Taking the lock is the race: exclusive, as always.
fn decide_takeback(o: &Observation<'_>, cluster: &Cluster) -> Option<Decision> {
    let DataDir::Initialized {
        was_primary: true,
        timeline,
        ..
    } = o.inputs.local.data_dir
    else {
        return None;
    };
    if !takes_lock_back(o.memory, o.inputs.settings)
        || o.inputs.unfenced.is_some()
        || cluster.failover.is_some()
        || failsafe_race_problem(o, cluster).is_some()
    {
        return None;
    }
    // Any promotion past my timeline, even one only announced (its node
    // may have promoted and died before it could say so), rules it out.
    let announced_past = cluster
        .history
        .as_ref()
        .is_some_and(|h| h.value.0.iter().any(|e| e.timeline >= timeline));
    if announced_past {
        return None;
    }
    let me = o.inputs.settings.name.as_str();
    let passed = o.inputs.peers.iter().find(|p| {
        p.name != me
            && ((p.source == PeerSource::Rest && p.is_primary)
                || p.timeline.is_some_and(|t| t > timeline))
    });
    if passed.is_some() {
        return None;
    }
    Some(Decision::new(
        Rule::Race,
        vec![Action::AcquireLock, Action::StartPrimary],
        format!(
            "no leader: I was the primary on timeline {timeline} until the DCS went away, and \
             nobody went past it: taking the lock back and starting in place"
        ),
    ))
}

/// Whether a node with this memory takes the free lock back when the DCS
/// returns ([`decide_takeback`]): it is a primary stopped only for want of
/// the DCS. Not in a synchronous mode: started in place, the commits that
/// were waiting for their standbys at the demotion would become visible
/// (the others race as usual); nor when it may not lead (`nofailover`).
pub fn takes_lock_back(memory: &super::HaMemory, settings: &super::NodeSettings) -> bool {
    memory.demoted_offline
        && settings.sync_mode == sync::SyncMode::Off
        && !settings.tags.nofailover()
}

/// How long a crashed synchronous primary waits for a standby to take over
/// before it starts again after all (the standby may be unable to).
pub fn crash_handover_limit(ttl: Duration) -> Duration {
    2 * ttl
}

/// A synchronous primary whose PostgreSQL crashed (`crashed`: it ran,
/// started by this agent or seen answering, and its postmaster is gone)
/// hands over when the `sync` key, naming it as leader, also names a
/// running member able to take over without it (`true`: a synchronous
/// standby; quorum: enough running voters to give one the quorum's votes),
/// and it has not waited longer than [`crash_handover_limit`]. Restarted
/// in place, crash recovery would make visible the commits that were
/// waiting for their standbys: a client could read them, and lose them if
/// the node failed again before its standbys caught up. The member it
/// hands over to, if any.
fn sync_crash_handover(
    o: &Observation<'_>,
    cluster: &Cluster,
    was_primary: bool,
) -> Option<String> {
    let me = o.inputs.settings.name.as_str();
    let mode = o.inputs.settings.sync_mode;
    if !(o.inputs.local.crashed && was_primary && sync::is_active(mode, cluster)) {
        return None;
    }
    if o.memory.crash_handover_since.is_some_and(|since| {
        o.now.saturating_sub(since) > crash_handover_limit(o.inputs.settings.ttl)
    }) {
        return None;
    }
    let key = &cluster.sync.as_ref()?.value;
    if !key
        .leader
        .as_deref()
        .is_some_and(|l| l.eq_ignore_ascii_case(me))
    {
        return None;
    }
    let able: Vec<&str> = key
        .standbys()
        .into_iter()
        .filter(|s| {
            cluster.members.iter().any(|m| {
                m.name.eq_ignore_ascii_case(s) && m.data.is_running() && !m.data.tags.nofailover()
            })
        })
        .collect();
    let needed = match mode {
        sync::SyncMode::Quorum { .. } => usize::try_from(key.quorum.unwrap_or(0))
            .unwrap_or(usize::MAX)
            .saturating_add(1),
        _ => 1,
    };
    (able.len() >= needed).then(|| able.join(" or "))
}

/// A former primary rejoins under another leader: rewind first.
fn decide_rejoin(o: &Observation<'_>, cluster: &Cluster, leader: &str) -> Decision {
    decide_rewind(
        o,
        cluster,
        leader,
        &format!("I ran as primary and {leader} now leads"),
    )
}

/// This node's WAL may have gone where `leader`'s did not (`why`: it ran
/// as primary, or a replica's divergence was seen): `pg_rewind` from the
/// leader once it runs and has checkpointed after its promotion, else a
/// new clone where the configuration allows it
/// (`remove_data_directory_on_rewind_failure` after a failed rewind;
/// without pg_rewind, that or `remove_data_directory_on_diverged_timelines`).
fn decide_rewind(o: &Observation<'_>, cluster: &Cluster, leader: &str, why: &str) -> Decision {
    let s = o.inputs.settings;
    let reinitialize = |reason: String| {
        Decision::new(
            Rule::Rewind,
            vec![Action::Reinitialize {
                source: leader.to_string(),
            }],
            reason,
        )
    };
    if !s.use_pg_rewind {
        if s.remove_data_directory_on_diverged_timelines
            || s.remove_data_directory_on_rewind_failure
        {
            return reinitialize(format!(
                "{why}, and use_pg_rewind is off: reinitializing from {leader}"
            ));
        }
        if o.inputs.local.running {
            return Decision::idle(
                Rule::Rewind,
                format!(
                    "{why}, and use_pg_rewind and remove_data_directory_on_diverged_timelines are off: \
                 this replica cannot stream from {leader}; reinitialize it (pghactl reinit)"
                ),
            );
        }
        return Decision::new(
            Rule::Rewind,
            vec![Action::StartReplica {
                leader: Some(leader.to_string()),
            }],
            format!(
                "{why}, and use_pg_rewind is off: starting as a replica of {leader}; \
                 it cannot stream if our histories diverged"
            ),
        );
    }
    if o.memory.rewind_failed_against.as_deref() == Some(leader) {
        if s.remove_data_directory_on_rewind_failure {
            return reinitialize(format!(
                "rewind from {leader} failed: reinitializing from it (remove_data_directory_on_rewind_failure)"
            ));
        }
        return Decision::idle(
            Rule::Rewind,
            format!(
                "rewind from {leader} failed and remove_data_directory_on_rewind_failure is off: \
             not starting; reinitialize this node"
            ),
        );
    }
    let leader_member = cluster.member(leader);
    // Both are due within a moment of a promotion: look again soon rather
    // than a loop later.
    if leader_member.is_none_or(|m| !m.data.is_running()) {
        return Decision::idle(
            Rule::Rewind,
            format!("waiting for leader {leader} to run before rewinding from it"),
        )
        .soon();
    }
    // A leader that has just taken the lock may still be promoting: its
    // member key says so (role replica) until its next cycle. pg_rewind
    // against a source still on our timeline finds nothing to do, and
    // this node would start as a replica with WAL the new timeline does
    // not have, showing clients commits that are about to vanish. A
    // standby cluster's standby leader is on its source's timeline
    // already: it never promotes.
    if leader_member.is_some_and(|m| {
        !m.data
            .role
            .as_ref()
            .is_some_and(|r| r.is_primary() || *r == Role::StandbyLeader)
    }) {
        return Decision::idle(
            Rule::Rewind,
            format!("waiting for leader {leader} to finish its promotion before rewinding from it"),
        )
        .soon();
    }
    if leader_member.is_some_and(|m| m.data.checkpoint_after_promote == Some(false)) {
        return Decision::idle(
            Rule::Rewind,
            format!(
                "waiting for leader {leader} to checkpoint after its promotion before rewinding"
            ),
        )
        .soon();
    }
    Decision::new(
        Rule::Rewind,
        vec![Action::Rewind {
            source: leader.to_string(),
        }],
        format!("{why}: rewinding from it before following"),
    )
}

/// PostgreSQL runs: make its role match the lock.
fn decide_running(o: &Observation<'_>, cluster: &Cluster) -> Decision {
    let me = o.inputs.settings.name.as_str();
    let primary = o.inputs.local.is_primary();
    let mut repair = Vec::new();

    if cluster.is_leader(me) {
        // Finish what bootstrap or a lost DCS left undone.
        if let Some(sysid) = o.inputs.local.system_id() {
            let stored = cluster.initialize.as_ref().map(|v| v.value.as_str());
            if (stored.is_none() && cluster.problem(&ClusterKey::Initialize).is_none())
                || stored == Some("")
            {
                repair.push(Action::RecordSystemId {
                    system_id: sysid.to_string(),
                });
            }
        }
        if cluster.config.is_none() && cluster.problem(&ClusterKey::Config).is_none() {
            repair.push(Action::WriteConfig);
        }
    }

    // Right after bootstrapping: the cluster is ours, take its free lock
    // at once (nobody else can have data to race with: we won the
    // initialize race). A lock someone holds is dealt with below like any
    // other: it is theirs.
    let standby = o.inputs.settings.standby_cluster.as_deref();
    if o.memory.bootstrapped_here && (primary || standby.is_some()) && cluster.leader.is_none() {
        let mut actions = vec![Action::AcquireLock];
        if let Some(sysid) = o.inputs.local.system_id() {
            actions.push(Action::RecordSystemId {
                system_id: sysid.to_string(),
            });
        }
        if cluster.config.is_none() && cluster.problem(&ClusterKey::Config).is_none() {
            actions.push(Action::WriteConfig);
        }
        return Decision::new(
            Rule::AfterBootstrap,
            actions,
            "initialized a new cluster: taking the leader lock",
        );
    }

    if o.inputs.settings.paused {
        if cluster.is_leader(me) {
            if !primary && standby.is_none() {
                return Decision::new(
                    Rule::Paused,
                    vec![Action::ReleaseLock],
                    "paused and PostgreSQL is not a primary: releasing the leader lock",
                );
            }
            if standby.is_some() && !primary {
                return Decision::new(
                    Rule::Paused,
                    vec![Action::RenewLock],
                    "paused: keeping the standby leader's lock; no automatic action",
                );
            }
            let mut actions = vec![Action::RenewLock];
            actions.extend(repair);
            // A manual switchover to a named candidate still works in maintenance mode.
            return match switchover::for_leader(o, cluster) {
                LeaderStep::HandOver(reason) if o.inputs.renew_failed.is_none() => {
                    actions.extend([
                        Action::Demote {
                            mode: StopMode::Graceful,
                        },
                        Action::ReleaseLock,
                    ]);
                    Decision::new(Rule::Paused, actions, format!("paused, but {reason}"))
                }
                LeaderStep::Clear(reason) => {
                    actions.push(Action::ClearFailover);
                    Decision::new(
                        Rule::Paused,
                        actions,
                        format!("paused: keeping the leader lock; {reason}"),
                    )
                }
                _ => Decision::new(
                    Rule::Paused,
                    actions,
                    "paused: keeping the leader lock; no automatic action",
                ),
            };
        }
        if cluster.leader.is_none()
            && switchover::race_gate(o, cluster) == RaceGate::Candidate
            && candidate_sync_problem(o, cluster).is_none()
            && failsafe_race_problem(o, cluster).is_none()
            && !(switchover::is_switchover(cluster) && paused_leader_problem(o, cluster).is_some())
        {
            let mut actions = vec![Action::AcquireLock];
            if !primary {
                actions.push(match standby {
                    Some(source) => Action::FollowSource {
                        source: source.to_string(),
                    },
                    None => Action::Promote,
                });
            }
            return Decision::new(
                Rule::Paused,
                actions,
                "paused, but I am the requested switchover candidate: taking the lock",
            );
        }
        return Decision::idle(Rule::Paused, "paused: no automatic action");
    }

    if cluster.is_leader(me) {
        if let Some(why) = &o.inputs.renew_failed {
            if primary && let Some(Ok(keeps)) = failsafe_verdict(o) {
                return Decision::idle(
                    Rule::Failsafe,
                    format!(
                        "continuing as the leader in failsafe mode: renewing the leader lock \
                         failed ({why}) and {keeps}"
                    ),
                );
            }
            return if primary {
                Decision::new(
                    Rule::RenewFailed,
                    vec![Action::Demote {
                        mode: StopMode::Fast,
                    }],
                    format!("demoting: renewing the leader lock failed: {why}"),
                )
            } else {
                Decision::idle(
                    Rule::RenewFailed,
                    format!("not promoting: renewing the leader lock failed: {why}"),
                )
            };
        }
        let mut actions = vec![Action::RenewLock];
        actions.extend(repair);
        if let Some(source) = standby {
            return standby_leader(o, cluster, actions, source, primary);
        }
        if primary {
            return match switchover::for_leader(o, cluster) {
                LeaderStep::HandOver(reason) => {
                    actions.extend([
                        Action::Demote {
                            mode: StopMode::Graceful,
                        },
                        Action::ReleaseLock,
                    ]);
                    Decision::new(Rule::Switchover, actions, reason)
                }
                LeaderStep::Clear(reason) => {
                    actions.push(Action::ClearFailover);
                    Decision::new(
                        Rule::Switchover,
                        actions,
                        format!("I am {me}, the leader with the lock; {reason}"),
                    )
                }
                LeaderStep::Wait(reason) => Decision::new(
                    Rule::Switchover,
                    actions,
                    format!("I am {me}, the leader with the lock; {reason}"),
                ),
                LeaderStep::Nothing => Decision::new(
                    Rule::Leader,
                    actions,
                    format!("no action: I am {me}, the leader with the lock"),
                ),
            };
        }
        actions.push(Action::Promote);
        return Decision::new(
            Rule::HolderPromotes,
            actions,
            "promoting: I hold the leader lock and run as a replica",
        );
    }

    if let Some(leader) = cluster.leader_name() {
        if primary {
            return Decision::new(
                Rule::OtherHolder,
                vec![Action::Demote {
                    mode: StopMode::Immediate,
                }],
                format!("demoting at once: {leader} holds the leader lock and I run as primary"),
            );
        }
        // The leader, or the member `replicatefrom` names while it runs.
        let upstream = replication::upstream(cluster, o.inputs.local.replicate_from.as_deref())
            .unwrap_or(leader);
        let via = if upstream == leader {
            String::new()
        } else {
            format!(" through {upstream} (replicatefrom)")
        };
        if o.inputs.local.following.as_deref() != Some(upstream) {
            return Decision::new(
                Rule::Follow,
                vec![Action::Follow {
                    leader: Some(upstream.to_string()),
                }],
                if upstream == leader {
                    format!("following the new leader {leader}")
                } else {
                    format!("following leader {leader}{via}")
                },
            );
        }
        if let Some(d) = decide_not_streaming(o, cluster, upstream) {
            return d;
        }
        if o.inputs.local.archive_only {
            return Decision::idle(
                Rule::Follow,
                format!(
                    "no action: I am {me}, a replica of {leader} replaying its WAL archive (nostream)"
                ),
            );
        }
        if replication::streams_from_upstream(o.inputs.local, Some(cluster)) == Some(false) {
            return Decision::idle(
                Rule::Follow,
                format!(
                    "no action: I am {me}, a replica following {leader}{via}, but not streaming from \
                 {} for {:.1?} (repaired or dropped as a candidate after {:?})",
                    if via.is_empty() { "it" } else { upstream },
                    o.memory.streaming.not_streaming_for,
                    o.inputs.settings.not_streaming_limit
                ),
            );
        }
        return Decision::idle(
            Rule::Follow,
            format!("no action: I am {me}, a replica following {leader}{via}"),
        );
    }

    // No leader, but this primary's right to write stands on failsafe
    // confirmations: no member may take the lock before it ends, so the
    // key is taken back at once, with no race and no new timeline.
    if primary
        && o.memory.failsafe_since.is_some()
        && let Some(deadline) = o.memory.lock_deadline.filter(|d| o.now + FENCE_MARGIN < *d)
    {
        return Decision::new(
            Rule::Failsafe,
            vec![Action::AcquireLock],
            format!(
                "no leader key: I ran as the leader in failsafe mode, and no member may take the \
                 lock for {:.1?} more; taking it back",
                deadline - o.now
            ),
        );
    }

    // No leader: race if, and only if, this node is the healthiest.
    match healthiest(o, cluster) {
        RaceVerdict::Race(why) => {
            let mut actions = vec![Action::AcquireLock];
            let reason = if let Some(source) = standby.filter(|_| !primary) {
                if o.inputs.local.following.as_deref() != Some(source) {
                    actions.push(Action::FollowSource {
                        source: source.to_string(),
                    });
                }
                format!(
                    "no leader: I am the healthiest node ({why}); taking the lock as the standby leader, replicating from {source}"
                )
            } else if primary {
                format!("no leader: taking the lock as the running primary ({why})")
            } else {
                actions.push(Action::Promote);
                format!(
                    "no leader: I am the healthiest node ({why}); taking the lock and promoting"
                )
            };
            Decision::new(Rule::Race, actions, reason)
        }
        RaceVerdict::StayOut(why) => {
            if primary {
                Decision::new(
                    Rule::Race,
                    vec![Action::Demote {
                        mode: StopMode::Fast,
                    }],
                    format!("demoting: there is no leader and I may not take the lock: {why}"),
                )
            } else {
                Decision::idle(Rule::Race, format!("no leader, not racing: {why}"))
            }
        }
    }
}

/// The lock holder of a standby cluster (`standby_cluster` names
/// `source`): it never promotes. A primary demotes first (`pghactl
/// demote-cluster`: it starts again as the standby leader); a replica makes
/// sure it replicates from the source, and hands the lock over for a
/// switchover as a primary would (the candidate then follows the source).
/// Removing `standby_cluster` makes the same node promote (rule
/// `holder-promotes`).
fn standby_leader(
    o: &Observation<'_>,
    cluster: &Cluster,
    mut actions: Vec<Action>,
    source: &str,
    primary: bool,
) -> Decision {
    if primary {
        actions.push(Action::Demote {
            mode: StopMode::Fast,
        });
        return Decision::new(
            Rule::StandbyLeader,
            actions,
            format!(
                "demoting: the cluster is now a standby cluster of {source}; I start again as its standby leader"
            ),
        );
    }
    match switchover::for_leader(o, cluster) {
        LeaderStep::HandOver(reason) => {
            actions.extend([
                Action::Demote {
                    mode: StopMode::Graceful,
                },
                Action::ReleaseLock,
            ]);
            return Decision::new(Rule::Switchover, actions, reason);
        }
        LeaderStep::Clear(reason) => {
            actions.push(Action::ClearFailover);
            return Decision::new(
                Rule::Switchover,
                actions,
                format!("I am the standby leader; {reason}"),
            );
        }
        LeaderStep::Wait(_) | LeaderStep::Nothing => {}
    }
    if o.inputs.local.following.as_deref() != Some(source) {
        actions.push(Action::FollowSource {
            source: source.to_string(),
        });
        return Decision::new(
            Rule::StandbyLeader,
            actions,
            format!("I am the standby leader: replicating from {source}"),
        );
    }
    Decision::new(
        Rule::StandbyLeader,
        actions,
        format!("no action: I am the standby leader, replicating from {source}"),
    )
}

/// A replica that has not been streaming from `leader` for longer than
/// `not_streaming_limit` (scenario M1): point `primary_conninfo` at the
/// leader again when it points elsewhere (a hand edit, `ALTER SYSTEM`, the
/// leader's `conn_url` changed); otherwise say so, since rewriting it would
/// change nothing (the leader refuses the connection, the network, a
/// missing slot, diverged timelines...). `None` while replication is fine.
/// `leader` here is the replica's upstream: the leader, or the member its
/// `replicatefrom` tag names.
fn decide_not_streaming(o: &Observation<'_>, cluster: &Cluster, leader: &str) -> Option<Decision> {
    let watch = &o.memory.streaming;
    let limit = o.inputs.settings.not_streaming_limit;
    if watch.upstream.as_deref() != Some(leader) || !watch.broken(limit) {
        return None;
    }
    let what = format!(
        "not streaming from leader {leader} for {:.1?} (more than {limit:?})",
        watch.not_streaming_for
    );
    if let Some(div) = divergence::diverged(o.inputs.local, cluster) {
        return Some(decide_rewind(
            o,
            cluster,
            leader,
            &format!("{what}, and my WAL diverged from its history ({div})"),
        ));
    }
    let Some(wanted) = cluster
        .member(leader)
        .and_then(|m| m.data.conn_host_port())
        .map(|(host, port)| replication::Endpoint::new(host, port))
    else {
        return Some(Decision::idle(
            Rule::NotStreaming,
            format!(
                "{what}, and its member key has no usable conn_url: cannot repair primary_conninfo"
            ),
        ));
    };
    match &o.inputs.local.configured_upstream {
        Some(configured) if *configured != ConfiguredUpstream::At(wanted.clone()) => {
            Some(Decision::new(
                Rule::NotStreaming,
                vec![Action::Follow {
                    leader: Some(leader.to_string()),
                }],
                format!(
                    "repairing replication: {what}; primary_conninfo points at {configured}, \
                     not at {leader} ({wanted}): rewriting it and reloading"
                ),
            ))
        }
        Some(_) => Some(Decision::idle(
            Rule::NotStreaming,
            format!(
                "{what}, though primary_conninfo points at it ({wanted}): not a failover candidate \
             until it streams again (check the leader's pg_hba.conf, the network, the slot, the timeline)"
            ),
        )),
        None => Some(Decision::idle(
            Rule::NotStreaming,
            format!(
                "{what}; the primary_conninfo PostgreSQL runs with cannot be read: not a failover \
             candidate until it streams again"
            ),
        )),
    }
}

/// Whether this node may race for the lock, and why (both verdicts go
/// into the decision's reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RaceVerdict {
    /// Race: the short justification.
    Race(String),
    /// Stay out: why.
    StayOut(String),
}

/// Whether this node is the healthiest and may race for the lock.
pub fn healthiest(o: &Observation<'_>, cluster: &Cluster) -> RaceVerdict {
    let me = o.inputs.settings.name.as_str();
    let tags = &o.inputs.settings.tags;
    if let Some(until) = o.memory.no_race_until.filter(|u| *u > o.now) {
        return RaceVerdict::StayOut(format!(
            "my promotion was vetoed by pre_promote; staying out of the race for {:?}",
            until - o.now
        ));
    }
    if let Some(why) = &o.inputs.unfenced {
        return RaceVerdict::StayOut(format!("I could not be fenced if my agent failed ({why})"));
    }
    if let Some(why) = failsafe_race_problem(o, cluster) {
        return RaceVerdict::StayOut(why);
    }
    let sync_mode = o.inputs.settings.sync_mode;
    match switchover::race_gate(o, cluster) {
        RaceGate::Closed(why) => return RaceVerdict::StayOut(why),
        RaceGate::Candidate => {
            // A switchover whose leader's lock lapsed in maintenance mode
            // (it never handed over): it may still run as a primary. (A
            // failover is the operator's word that it does not.)
            if switchover::is_switchover(cluster)
                && let Some(why) = paused_leader_problem(o, cluster)
            {
                return RaceVerdict::StayOut(why);
            }
            if let Some(why) = candidate_sync_problem(o, cluster) {
                return RaceVerdict::StayOut(format!(
                    "I am the requested switchover candidate, but {why}"
                ));
            }
            // The operator chose this node: its peers' positions do not
            // matter, but it must be able to serve.
            if tags.nofailover() {
                return RaceVerdict::StayOut(
                    "I am the requested candidate, but tagged nofailover".into(),
                );
            }
            if !o.inputs.local.running {
                return RaceVerdict::StayOut(
                    "I am the requested candidate, but PostgreSQL is not running".into(),
                );
            }
            return RaceVerdict::Race("the requested switchover candidate".into());
        }
        RaceGate::Open => {}
    }
    if tags.nofailover() {
        return RaceVerdict::StayOut(
            if tags.failover_priority() <= 0 && !tags.0.contains_key("nofailover") {
                "failover_priority <= 0".into()
            } else {
                "tagged nofailover".into()
            },
        );
    }
    if !o.inputs.local.running {
        return RaceVerdict::StayOut("PostgreSQL is not running".into());
    }
    if let Some(why) = paused_leader_problem(o, cluster) {
        return RaceVerdict::StayOut(why);
    }
    // The `history` key outlives every member key: after a DCS outage
    // longer than ttl, the first node back sees few members, and an old
    // primary that was never rewound could win with WAL of a timeline the
    // cluster left (throwing away what later leaders wrote).
    let newest = divergence::reached_timeline(cluster);
    if let (Some(mine), Some(newest)) = (o.inputs.local.timeline, newest)
        && mine < newest
    {
        return RaceVerdict::StayOut(format!(
            "my timeline {mine} is older than the cluster's timeline {newest} (history key): \
             my WAL may miss what later leaders wrote"
        ));
    }
    let watch = &o.memory.streaming;
    if watch.broken(o.inputs.settings.not_streaming_limit) {
        // My WAL may not be the cluster's (a wrong host, an old primary);
        // an operator can still name me in a failover (the branch above).
        return RaceVerdict::StayOut(format!(
            "I was not streaming from {} for {:.1?} (more than {:?}): not a failover candidate",
            watch.upstream.as_deref().unwrap_or("the leader"),
            watch.not_streaming_for,
            o.inputs.settings.not_streaming_limit
        ));
    }
    let Some(mine) = o.inputs.local.wal_position else {
        return RaceVerdict::StayOut("my WAL position is unknown".into());
    };
    if let Some(leader_lsn) = cluster.last_leader_lsn() {
        let lag = leader_lsn.saturating_sub(mine);
        if lag > o.inputs.settings.maximum_lag_on_failover {
            return RaceVerdict::StayOut(format!(
                "I am {lag} bytes behind the last known leader position, more than maximum_lag_on_failover ({})",
                o.inputs.settings.maximum_lag_on_failover
            ));
        }
    }
    if let Some(why) = sync::race_problem(sync_mode, cluster, me, mine, o.inputs.peers) {
        return RaceVerdict::StayOut(why);
    }
    let my_priority = tags.failover_priority();
    let my_timeline = o.inputs.local.timeline;
    // Who is ahead: a newer timeline first (it holds what a later leader
    // wrote; WAL positions on different timelines cannot be compared:
    // an old primary's WAL can run past the point where a newer timeline
    // forked off, and promoting it would throw the newer timeline away
    // and fork a second timeline with the same number), then the WAL.
    let ahead_of_me = |peer: &PeerStatus, theirs: u64| match (peer.timeline, my_timeline) {
        (Some(t), Some(m)) if t != m => t > m,
        _ => theirs > mine,
    };
    // A primary stopped only because the DCS went away takes the lock back
    // (rule 5) on its timeline; for a ttl nobody else races beside it.
    let leaderless_for = o
        .memory
        .leaderless_since
        .map_or(Duration::ZERO, |since| o.now.saturating_sub(since));
    if leaderless_for < o.inputs.settings.ttl
        && let Some(p) = o.inputs.peers.iter().find(|p| {
            p.name != me
                && p.takes_lock_back
                && match (p.timeline, my_timeline) {
                    (Some(t), Some(m)) => t >= m,
                    _ => true,
                }
        })
    {
        return RaceVerdict::StayOut(format!(
            "{} led until the DCS went away and takes its lock back (waiting up to ttl, {:.1?} so far)",
            p.name, leaderless_for
        ));
    }
    for peer in o.inputs.peers.iter().filter(|p| p.name != me) {
        if peer.source == PeerSource::Rest && peer.is_primary {
            return RaceVerdict::StayOut(format!("{} still runs as a primary", peer.name));
        }
        let sync_excluded = !sync::peer_counts(sync_mode, cluster, &peer.name);
        if peer.nofailover || peer.replication_broken || sync_excluded {
            // Not a candidate: it does not hold me back, whatever its WAL
            // position says (it may come from another history, or, not
            // being a synchronous standby, miss acknowledged commits).
            continue;
        }
        let Some(theirs) = peer.wal_position else {
            continue;
        };
        if !peer.running {
            // A node that is not running but whose last WAL position is
            // ahead of ours: promoting now would throw its transactions
            // away. Wait for it while it may come back soon: its PostgreSQL
            // is starting, or its agent is gone (no REST answer) and its
            // member key expires with its lease, within ttl. A node whose
            // agent answers that its PostgreSQL is stopped or failed to
            // start does not hold the race up: it might never return.
            if (peer.starting || peer.source == PeerSource::MemberKey) && ahead_of_me(peer, theirs)
            {
                return RaceVerdict::StayOut(format!(
                    "{} is not running but its last WAL position is ahead of mine ({}); \
                     waiting for it to {}",
                    peer.name,
                    position_pair(peer, theirs, my_timeline, mine),
                    if peer.starting {
                        "finish starting"
                    } else {
                        "come back or for its member key to expire"
                    }
                ));
            }
            continue;
        }
        if ahead_of_me(peer, theirs) {
            return RaceVerdict::StayOut(format!(
                "{} is ahead of me ({})",
                peer.name,
                position_pair(peer, theirs, my_timeline, mine)
            ));
        }
        let same_timeline = match (peer.timeline, my_timeline) {
            (Some(t), Some(m)) => t == m,
            _ => true,
        };
        if theirs == mine && same_timeline && peer.failover_priority > my_priority {
            return RaceVerdict::StayOut(format!(
                "{} has the same WAL position and a higher failover_priority ({} > {my_priority})",
                peer.name, peer.failover_priority
            ));
        }
    }
    RaceVerdict::Race(format!("WAL {mine}, nobody ahead"))
}

/// "timeline 3 > 2" when the timelines differ, else "WAL a > b".
fn position_pair(peer: &PeerStatus, theirs: u64, my_timeline: Option<u64>, mine: u64) -> String {
    match (peer.timeline, my_timeline) {
        (Some(t), Some(m)) if t != m => format!("timeline {t} > {m}"),
        _ => format!("WAL {theirs} > {mine}"),
    }
}

/// Why this node, the requested candidate, may not take the lock in a
/// synchronous mode. A switchover (the request names the leader) goes to
/// a synchronous standby only; a failover to a named candidate is the
/// operator's explicit call in `true` mode, whatever it may lose. In
/// quorum mode no single member is known to hold every acknowledged
/// commit: any candidate needs the voters' votes, like anyone racing (a
/// voter that missed the last commits, say restarting while the leader
/// handed over, must not win).
fn candidate_sync_problem(o: &Observation<'_>, cluster: &Cluster) -> Option<String> {
    let me = o.inputs.settings.name.as_str();
    let mode = o.inputs.settings.sync_mode;
    match mode {
        sync::SyncMode::Quorum { .. } => {
            let Some(mine) = o.inputs.local.wal_position else {
                return Some("my WAL position is unknown".into());
            };
            sync::race_problem(mode, cluster, me, mine, o.inputs.peers)
        }
        _ if switchover::is_switchover(cluster) => sync::promotion_problem(mode, cluster, me),
        _ => None,
    }
}

/// Why the race waits for the member that led during maintenance mode
/// (as this node saw it, or as the `status` key the paused leader wrote
/// says, for a node that could not see the pause):
/// nothing renews or fences in maintenance mode, so its lock may have
/// lapsed while its PostgreSQL still runs as a primary (and, unable to
/// reach the DCS, it may not know the pause ended). Until it answers
/// that it is not a primary (or its agent says it stopped), taking the
/// lock could start a second primary beside it. An operator's failover
/// naming a candidate still goes through ([`RaceGate::Candidate`]).
fn paused_leader_problem(o: &Observation<'_>, cluster: &Cluster) -> Option<String> {
    let me = o.inputs.settings.name.as_str();
    let old = o
        .memory
        .paused_leader
        .as_deref()
        .or_else(|| {
            cluster
                .status
                .as_ref()
                .and_then(|s| s.value.paused_leader.as_deref())
        })
        .filter(|l| *l != me)?;
    let answered = o
        .inputs
        .peers
        .iter()
        .any(|p| p.name == old && p.source == PeerSource::Rest && !p.is_primary);
    let stopped = cluster
        .member(old)
        .is_some_and(|m| m.data.state.is_some() && !m.data.is_running());
    if answered || stopped {
        return None;
    }
    Some(format!(
        "the leader lock lapsed while {old} led in maintenance mode, and {old} has not answered \
         that it no longer runs as a primary: waiting for it (or for a failover an operator \
         requests)"
    ))
}

#[cfg(test)]
mod invariants;
#[cfg(test)]
mod tests;
