//! `decide`, branch by branch.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::ha::failsafe::{Round, Witness};
use crate::ha::observation::*;
use crate::ha::replication::{ConfiguredUpstream, Endpoint};
use crate::ha::rule::Rule;
use crate::ha::sync::SyncMode;
use crate::ha::world::*;

fn actions(d: &Decision) -> &[Action] {
    &d.actions
}

#[track_caller]
fn assert_idle(d: &Decision, rule: Rule, reason_part: &str) {
    assert_eq!(d.rule, rule, "{d:?}");
    assert!(d.actions.is_empty(), "expected no action, got {d:?}");
    assert!(
        d.reason.contains(reason_part),
        "reason {:?} should mention {reason_part:?}",
        d.reason
    );
}

#[track_caller]
fn assert_decided(d: &Decision, rule: Rule, reason_part: &str) {
    assert_eq!(d.rule, rule, "{d:?}");
    assert!(d.reason.contains(reason_part), "{}", d.reason);
}

// ---- 1. the lock deadline

#[test]
fn primary_past_its_lock_deadline_stops_immediately_even_if_it_still_looks_like_the_leader() {
    let mut w = World::new("n1");
    w.primary();
    w.memory.lock_deadline = Some(w.now + FENCE_MARGIN / 2);
    let d = w.decide();
    assert_eq!(
        actions(&d),
        [Action::Demote {
            mode: StopMode::Immediate
        }]
    );
    assert_decided(&d, Rule::LockExpiring, "expire");
}

#[test]
fn primary_well_inside_its_lock_deadline_renews() {
    let mut w = World::new("n1");
    w.primary();
    w.memory.lock_deadline = Some(w.now + Duration::from_secs(20));
    assert_eq!(actions(&w.decide()), [Action::RenewLock]);
}

#[test]
fn a_leader_without_its_fence_guard_demotes_and_gives_the_lock_up() {
    let mut w = World::new("n1");
    w.primary();
    w.memory.lock_deadline = Some(w.now + Duration::from_secs(20));
    w.unfenced = Some("the fence guard is not running: it exited".into());
    let d = w.decide();
    assert_eq!(
        actions(&d),
        [
            Action::Demote {
                mode: StopMode::Fast
            },
            Action::ReleaseLock
        ]
    );
    assert_decided(&d, Rule::Unfenced, "fenced");
}

#[test]
fn a_primary_without_its_fence_guard_is_left_alone_while_paused_or_in_a_job() {
    let mut w = World::new("n1");
    w.primary();
    w.memory.lock_deadline = Some(w.now + Duration::from_secs(20));
    w.unfenced = Some("the fence guard is not running".into());
    w.settings.paused = true;
    assert!(
        !actions(&w.decide())
            .iter()
            .any(|a| matches!(a, Action::Demote { .. })),
        "paused: no automatic action"
    );
    w.settings.paused = false;
    w.memory.job = Some(Job::Restart);
    assert_eq!(actions(&w.decide()), [Action::RenewLock]);
}

#[test]
fn a_leader_not_yet_primary_that_cannot_be_fenced_gives_the_lock_up() {
    let mut w = World::new("n1");
    w.memory.lock_deadline = Some(w.now + Duration::from_secs(20));
    w.unfenced = Some("watchdog.mode is required and the watchdog failed".into());
    let d = w.decide();
    assert_eq!(actions(&d), [Action::ReleaseLock]);
    assert_decided(&d, Rule::Unfenced, "watchdog");
}

#[test]
fn a_replica_without_its_fence_guard_does_not_race() {
    let mut w = World::new("n2");
    w.no_leader().peer("n3", 900, 1);
    w.unfenced = Some("the fence guard is not running".into());
    let d = w.decide();
    assert!(actions(&d).is_empty(), "{d:?}");
    assert_decided(&d, Rule::Race, "could not be fenced");
    w.unfenced = None;
    assert_eq!(actions(&w.decide()), [Action::AcquireLock, Action::Promote]);
}

// ---- 2. no DCS

#[test]
fn without_the_dcs_a_primary_demotes_and_a_replica_waits() {
    let mut w = World::new("n1");
    w.primary();
    w.dcs_down = true;
    assert_eq!(
        actions(&w.decide()),
        [Action::Demote {
            mode: StopMode::Fast
        }]
    );

    let mut w = World::new("n2");
    w.dcs_down = true;
    assert_idle(&w.decide(), Rule::NoDcs, "DCS is not accessible");
}

// ---- 2. failsafe mode

impl World {
    /// `n1`, the leader, runs as primary in failsafe mode with its right to
    /// write good for `secs` more, and this cycle's round `round`.
    fn failsafe_primary(&mut self, secs: u64, round: Round) -> &mut Self {
        self.primary();
        self.settings.failsafe_mode = true;
        self.memory.lock_deadline = Some(self.now + Duration::from_secs(secs));
        self.failsafe_round = Some(round);
        self
    }
}

fn confirmed_by(names: &[&str]) -> Round {
    Round {
        asked: names.iter().map(|n| n.to_string()).collect(),
        ..Round::default()
    }
}

#[test]
fn without_the_dcs_a_primary_confirmed_by_every_member_runs_on_in_failsafe_mode() {
    let mut w = World::new("n1");
    w.failsafe_primary(25, confirmed_by(&["n2", "n3"]));
    w.dcs_down = true;
    assert_idle(
        &w.decide(),
        Rule::Failsafe,
        "all 2 other members of the failsafe key confirmed",
    );

    // One member did not answer: demote, as without failsafe mode.
    let mut round = confirmed_by(&["n2", "n3"]);
    round
        .refused
        .push(("n3".into(), "timed out after 10s".into()));
    w.failsafe_round = Some(round);
    let d = w.decide();
    assert_decided(&d, Rule::Failsafe, "not confirmed by n3: timed out");
    assert_eq!(
        actions(&d),
        [Action::Demote {
            mode: StopMode::Fast
        }]
    );

    // No round ran (the right had lapsed, or the key does not name me).
    w.failsafe_round = None;
    assert_decided(&w.decide(), Rule::Failsafe, "no confirmation round ran");

    // Confirmed, but the right to write is over: rule 1 stops it first.
    w.failsafe_primary(0, confirmed_by(&["n2"]));
    assert_decided(&w.decide(), Rule::LockExpiring, "may expire");

    // Failsafe mode off: the old rule.
    let mut w = World::new("n1");
    w.failsafe_primary(25, confirmed_by(&["n2", "n3"]));
    w.settings.failsafe_mode = false;
    w.dcs_down = true;
    assert_decided(&w.decide(), Rule::NoDcs, "cannot prove");
}

#[test]
fn a_failed_renewal_is_survived_only_when_every_member_confirmed() {
    let mut w = World::new("n1");
    w.failsafe_primary(25, confirmed_by(&["n2", "n3"]));
    w.renew_failed = Some("DCS unreachable during renew: no leader".into());
    assert_idle(
        &w.decide(),
        Rule::Failsafe,
        "renewing the leader lock failed",
    );
    w.memory.job = Some(Job::Restart);
    assert_idle(&w.decide(), Rule::Failsafe, "during restart");

    w.memory.job = None;
    w.failsafe_round = None;
    assert_decided(&w.decide(), Rule::RenewFailed, "demoting");
}

#[test]
fn back_from_the_outage_a_failsafe_primary_takes_the_free_key_back_without_a_race() {
    let mut w = World::new("n1");
    w.failsafe_primary(20, Round::default());
    w.failsafe_round = None;
    w.memory.failsafe_since = Some(w.now - Duration::from_secs(40));
    w.no_leader();
    // Peers unknown, nobody asked: no race is needed.
    let d = w.decide();
    assert_decided(&d, Rule::Failsafe, "taking it back");
    assert_eq!(actions(&d), [Action::AcquireLock]);

    // Once the right has lapsed, it is an ordinary race again.
    w.memory.lock_deadline = Some(w.now);
    w.memory.failsafe_since = None;
    assert_ne!(w.decide().rule, Rule::Failsafe);
}

#[test]
fn a_member_that_confirmed_a_failsafe_leader_does_not_race_until_its_promise_ends() {
    let mut w = World::new("n2");
    w.no_leader();
    w.peer("n3", 900, 1);
    assert_eq!(w.decide().rule, Rule::Race);
    assert!(actions(&w.decide()).contains(&Action::AcquireLock));

    w.failsafe_witness = Some(Witness {
        leader: Some("n1".into()),
        until: w.now + Duration::from_secs(5),
    });
    assert_idle(
        &w.decide(),
        Rule::Race,
        "I confirmed n1 as the leader in failsafe mode",
    );
    // Even named as the failover candidate.
    w.set("failover", r#"{"member":"n2"}"#);
    assert_idle(&w.decide(), Rule::Race, "confirmed n1");

    w.failsafe_witness.as_mut().unwrap().until = w.now;
    assert!(actions(&w.decide()).contains(&Action::AcquireLock));
}

#[test]
fn in_failsafe_mode_the_leader_waits_for_the_key_to_name_the_switchover_candidate() {
    // Found by the simulator (seed 7): a member back from a DCS outage is
    // not in the key yet; handing over to it left the cluster leaderless.
    let mut w = World::new("n1");
    w.primary();
    w.settings.failsafe_mode = true;
    w.set(
        "failsafe",
        r#"{"n1":"http://n1/patroni","n3":"http://n3/patroni"}"#,
    )
    .set("failover", r#"{"leader":"n1","member":"n2"}"#)
    .peer("n2", 1000, 1)
    .peer("n3", 1000, 1);
    let d = w.decide();
    assert_decided(&d, Rule::Switchover, "n2 is not in the failsafe key yet");
    assert_eq!(actions(&d), [Action::RenewLock], "waiting, not clearing");
    w.set(
        "failsafe",
        r#"{"n1":"http://n1/patroni","n2":"http://n2/patroni","n3":"http://n3/patroni"}"#,
    );
    assert!(w.decide().actions.contains(&Action::ReleaseLock));
    // Without a candidate, a member in the key takes it.
    w.set(
        "failsafe",
        r#"{"n1":"http://n1/patroni","n3":"http://n3/patroni"}"#,
    )
    .set("failover", r#"{"leader":"n1"}"#);
    assert_decided(&w.decide(), Rule::Switchover, "e.g. n3");
}

#[test]
fn in_failsafe_mode_a_member_the_failsafe_key_does_not_name_does_not_race() {
    let mut w = World::new("n2");
    w.no_leader();
    w.settings.failsafe_mode = true;
    w.set(
        "failsafe",
        r#"{"n1":"http://n1:8008/patroni","n3":"http://n3:8008/patroni"}"#,
    );
    assert_idle(&w.decide(), Rule::Race, "does not name me");
    w.set(
        "failsafe",
        r#"{"n1":"http://n1:8008/patroni","n2":"http://n2:8008/patroni"}"#,
    );
    assert!(actions(&w.decide()).contains(&Action::AcquireLock));
}

// ---- 5. a primary stopped for want of the DCS takes its lock back

#[test]
fn back_from_an_outage_a_primary_stopped_for_want_of_the_dcs_takes_its_lock_back() {
    let mut w = World::new("n1");
    w.stopped().was_primary().no_leader();
    w.memory.demoted_offline = true;
    w.peer("n2", 1000, 1).peer("n3", 1000, 1);
    let d = w.decide();
    assert_decided(&d, Rule::Race, "taking the lock back and starting in place");
    assert_eq!(actions(&d), [Action::AcquireLock, Action::StartPrimary]);

    // Someone went past its timeline (a promotion recorded in history, or
    // a peer on a newer timeline), or runs as primary: it rejoins instead.
    let mut later = World::new("n1");
    later.stopped().was_primary().no_leader();
    later.memory.demoted_offline = true;
    later.set("history", "[[1, 5000, \"no recovery target specified\"]]");
    assert!(!later.decide().actions.contains(&Action::StartPrimary));
    // Only announced: the node may have promoted and died (seed 7726).
    later.set(
        "history",
        &format!(
            "[[1, 5000, \"{}\"]]",
            crate::ha::divergence::PROMOTION_ANNOUNCED
        ),
    );
    assert!(!later.decide().actions.contains(&Action::StartPrimary));
    w.peers[0].timeline = Some(2);
    assert!(!w.decide().actions.contains(&Action::StartPrimary));
    w.peers[0].timeline = None;
    w.peers[0].is_primary = true;
    assert!(!w.decide().actions.contains(&Action::StartPrimary));
    w.peers[0].is_primary = false;

    // Not in a synchronous mode (waiting commits would become visible),
    // not when an operator asked for something, not without the flag.
    w.settings.sync_mode = SyncMode::On { strict: false };
    assert!(!w.decide().actions.contains(&Action::StartPrimary));
    w.settings.sync_mode = SyncMode::Off;
    w.set("failover", r#"{"member":"n2"}"#);
    assert!(!w.decide().actions.contains(&Action::StartPrimary));
    w.unset("failover");
    w.memory.demoted_offline = false;
    assert_eq!(
        actions(&w.decide()),
        [Action::StartReplica { leader: None }]
    );
}

#[test]
fn the_others_let_a_primary_stopped_for_want_of_the_dcs_take_its_lock_back_for_a_ttl() {
    let mut w = World::new("n2");
    w.no_leader();
    w.peer("n1", 1000, 1).peer("n3", 900, 1);
    w.peers[0].running = false;
    w.peers[0].takes_lock_back = true;
    w.memory.leaderless_since = Some(w.now - Duration::from_secs(5));
    assert_idle(&w.decide(), Rule::Race, "n1 led until the DCS went away");
    // A ttl later, the race is open again.
    w.memory.leaderless_since = Some(w.now - Duration::from_secs(30));
    assert!(actions(&w.decide()).contains(&Action::AcquireLock));
    // A peer on an older timeline is not waited for.
    w.memory.leaderless_since = Some(w.now);
    w.peers[0].timeline = Some(0);
    w.local.timeline = Some(1);
    assert!(actions(&w.decide()).contains(&Action::AcquireLock));
}

// ---- 3. background jobs

#[test]
fn a_leader_keeps_renewing_during_a_job_and_others_wait() {
    let mut w = World::new("n1");
    w.primary();
    w.memory.job = Some(Job::Start { as_primary: true });
    assert_eq!(actions(&w.decide()), [Action::RenewLock]);

    w.renew_failed = Some("unreachable".into());
    assert_eq!(
        actions(&w.decide()),
        [Action::Demote {
            mode: StopMode::Fast
        }]
    );

    // Paused: a failed renewal demotes no primary, job or not (found by
    // the invariant sweep: only the job branch did).
    w.settings.paused = true;
    assert_idle(
        &w.decide(),
        Rule::JobInProgress,
        "renewing the leader lock failed",
    );

    let mut w = World::new("n2");
    w.memory.job = Some(Job::Clone {
        source: "n1".into(),
    });
    assert_idle(
        &w.decide(),
        Rule::JobInProgress,
        "clone from n1 in progress",
    );
}

// ---- 4. the data directory

#[test]
fn empty_data_dir_in_an_uninitialized_cluster_races_to_bootstrap() {
    let mut w = World::new("n1");
    w.entries.clear();
    w.stopped();
    w.local.data_dir = DataDir::Empty;
    assert_eq!(
        actions(&w.decide()),
        [Action::RaceInitialize, Action::Bootstrap]
    );

    w.tags(json!({"nofailover": true}));
    assert_idle(&w.decide(), Rule::Bootstrap, "nofailover");

    w.tags(json!({}));
    w.settings.can_bootstrap = false;
    assert_idle(&w.decide(), Rule::Bootstrap, "no bootstrap section");
}

#[test]
fn a_node_whose_configuration_sets_a_refused_key_never_creates_a_cluster() {
    let mut w = World::new("n1");
    w.entries.clear();
    w.stopped();
    w.local.data_dir = DataDir::Empty;
    w.settings.new_cluster_refused = Some(
        "bootstrap.dcs.standby_cluster: standby clusters are not supported by pgha yet".into(),
    );
    assert_idle(
        &w.decide(),
        Rule::Bootstrap,
        "will not create it: bootstrap.dcs.standby_cluster",
    );
    // A cluster that exists is joined as usual.
    let refused = w.settings.new_cluster_refused.clone();
    let mut w = World::new("n2");
    w.stopped();
    w.local.data_dir = DataDir::Empty;
    w.settings.new_cluster_refused = refused;
    assert_eq!(
        actions(&w.decide()),
        [Action::Clone {
            source: "n1".into()
        }]
    );
}

#[test]
fn empty_data_dir_waits_while_someone_bootstraps() {
    let mut w = World::new("n2");
    w.entries.clear();
    w.set("initialize", "");
    w.stopped();
    w.local.data_dir = DataDir::Empty;
    assert_idle(&w.decide(), Rule::Bootstrap, "finish bootstrapping");
}

#[test]
fn without_a_leader_only_a_no_leader_method_creates_a_replica() {
    let mut w = World::new("n3");
    w.stopped().no_leader();
    w.local.data_dir = DataDir::Empty;
    w.unset("members/n3");
    w.unset("members/n1");
    w.unset("members/n2");
    assert_idle(
        &w.decide(),
        Rule::Clone,
        "waiting for a leader to clone from",
    );
    w.settings.can_clone_without_leader = true;
    assert_eq!(actions(&w.decide()), [Action::CloneWithoutLeader]);
    // While someone bootstraps, or once a leader runs, never.
    w.set("initialize", "");
    assert_idle(&w.decide(), Rule::Bootstrap, "finish bootstrapping");
    let mut led = World::new("n3");
    led.stopped();
    led.local.data_dir = DataDir::Empty;
    led.settings.can_clone_without_leader = true;
    assert_eq!(
        actions(&led.decide()),
        [Action::Clone {
            source: "n1".into()
        }]
    );
}

#[test]
fn empty_data_dir_clones_from_the_running_leader_or_a_clonefrom_member() {
    let mut w = World::new("n3");
    w.stopped();
    w.local.data_dir = DataDir::Empty;
    w.unset("members/n3");
    assert_eq!(
        actions(&w.decide()),
        [Action::Clone {
            source: "n1".into()
        }]
    );

    let mut n2 =
        serde_json::from_str::<serde_json::Value>(&member_json("replica", "running", 1000))
            .unwrap();
    n2["tags"] = json!({"clonefrom": true});
    w.set("members/n2", &n2.to_string());
    assert_eq!(
        actions(&w.decide()),
        [Action::Clone {
            source: "n2".into()
        }]
    );

    // A leader that is not running is no source.
    w.set("members/n2", &member_json("replica", "running", 1000));
    w.set("members/n1", &member_json("primary", "stopped", 1000));
    assert_idle(&w.decide(), Rule::Clone, "waiting for leader n1");
}

#[test]
fn empty_data_dir_on_the_leader_gives_the_lock_up() {
    let mut w = World::new("n1");
    w.stopped();
    w.local.data_dir = DataDir::Empty;
    assert_eq!(actions(&w.decide()), [Action::ReleaseLock]);
}

#[test]
fn an_unreadable_initialize_key_blocks_bootstrap_and_clone() {
    let mut w = World::new("n3");
    w.stopped();
    w.local.data_dir = DataDir::Empty;
    w.entries.retain(|(k, _)| k != "initialize");
    w.entries.push(("initialize".into(), String::new()));
    // Make it unreadable: not UTF-8 is the only way for this key.
    let mut c = w.cluster();
    c.initialize = None;
    c.problems.push(crate::model::KeyProblem {
        key: "initialize".into(),
        version: None,
        reason: "value is not UTF-8".into(),
    });
    let o = Observation {
        now: w.now,
        memory: &w.memory,
        inputs: Inputs {
            settings: &w.settings,
            cluster: Some(&c),
            local: &w.local,
            peers: &w.peers,
            renew_failed: None,
            wall_now: w.wall_now,
            unfenced: None,
            leader_unowned: false,
            failsafe_round: None,
            failsafe_witness: None,
        },
    };
    assert_idle(
        &decide(&o),
        Rule::EmptyDataDir,
        "initialize key is unreadable",
    );
}

#[test]
fn an_unusable_data_dir_refuses_and_a_leader_releases() {
    let mut w = World::new("n2");
    w.stopped();
    w.local.data_dir = DataDir::Unusable("PG_VERSION missing".into());
    assert_idle(&w.decide(), Rule::UnusableDataDir, "PG_VERSION missing");
    let mut w = World::new("n1");
    w.stopped();
    w.local.data_dir = DataDir::Unusable("x".into());
    assert_eq!(actions(&w.decide()), [Action::ReleaseLock]);
}

#[test]
fn a_system_id_mismatch_refuses_to_start_and_says_why() {
    let mut w = World::new("n2");
    w.set("initialize", "6999999999999999999");
    let d = w.decide();
    assert!(matches!(actions(&d), [Action::Exit { .. }]), "{d:?}");
    assert!(
        d.reason.contains("6999999999999999999") && d.reason.contains(SYSID),
        "{}",
        d.reason
    );

    // Paused: never exit; a leader gives the lock up.
    w.settings.paused = true;
    w.leader("n2");
    assert_eq!(actions(&w.decide()), [Action::ReleaseLock]);
}

#[test]
fn existing_data_without_an_initialize_key_records_its_system_id() {
    let mut w = World::new("n1");
    w.unset("initialize").no_leader().stopped().was_primary();
    assert_eq!(
        actions(&w.decide()),
        [Action::RecordSystemId {
            system_id: SYSID.into()
        }]
    );

    // ... but a running replica must not claim the cluster.
    let mut w = World::new("n2");
    w.unset("initialize").no_leader();
    assert!(matches!(actions(&w.decide()), [Action::Exit { .. }]));
}

#[test]
fn a_replica_of_the_cluster_carries_on_when_the_dcs_loses_its_keys() {
    // The cluster's keys were deleted from the DCS while it ran: this
    // replica saw `initialize` hold its system ID, so the key's absence
    // is the DCS's loss, not a cluster nobody created. It neither exits
    // nor races while the primary runs.
    let mut w = World::new("n2");
    let before = w.cluster();
    w.memory.observe_initialize(Some(&before), Some(SYSID));
    assert!(w.memory.belongs_to_cluster);
    w.entries.clear();
    w.set("members/n2", &member_json("replica", "running", 1000));
    w.peers.push(PeerStatus {
        name: "n1".into(),
        source: PeerSource::Rest,
        is_primary: true,
        running: true,
        starting: false,
        wal_position: Some(1000),
        nofailover: false,
        failover_priority: 1,
        replication_broken: false,
        takes_lock_back: false,
        timeline: None,
    });
    assert_idle(&w.decide(), Rule::Race, "n1 still runs as a primary");
    // With the primary gone too, the usual race replaces it.
    w.peers.clear();
    assert_eq!(actions(&w.decide()), [Action::AcquireLock, Action::Promote]);
    // A missing key never makes a node forget its cluster.
    w.memory.observe_initialize(Some(&w.cluster()), Some(SYSID));
    assert!(w.memory.belongs_to_cluster);
    // Another cluster's ID does not make it belong.
    let mut fresh = HaMemory::default();
    fresh.observe_initialize(Some(&before), Some("42"));
    assert!(!fresh.belongs_to_cluster);
    fresh.observe_initialize(None, Some(SYSID));
    assert!(!fresh.belongs_to_cluster);
}

#[test]
fn right_after_bootstrap_the_node_takes_the_free_lock_and_records_the_cluster() {
    let mut w = World::new("n1");
    w.entries.clear();
    w.set("initialize", "");
    w.primary();
    w.memory.bootstrapped_here = true;
    assert_eq!(
        actions(&w.decide()),
        [
            Action::AcquireLock,
            Action::RecordSystemId {
                system_id: SYSID.into()
            },
            Action::WriteConfig
        ]
    );
    assert_decided(
        &w.decide(),
        Rule::AfterBootstrap,
        "initialized a new cluster",
    );
    // Without having bootstrapped, the same situation races normally.
    w.memory.bootstrapped_here = false;
    assert_eq!(actions(&w.decide()), [Action::AcquireLock]);
}

#[test]
fn having_bootstrapped_never_entitles_a_node_to_someone_elses_lock() {
    // The defect: the flag stayed set for the life of the process, and any
    // leader key not naming the node was overwritten ("taking the leader
    // lock"), a live lock of another member included.
    let mut w = World::new("n1");
    w.primary();
    w.memory.bootstrapped_here = true;
    w.leader("n2");
    assert_eq!(
        actions(&w.decide()),
        [Action::Demote {
            mode: StopMode::Immediate
        }],
        "n2 holds a real lock: n1 demotes, as any primary would"
    );
    // The first lock held spends the flag.
    w.memory.lock_held(w.now + Duration::from_secs(20));
    assert!(!w.memory.bootstrapped_here);
    assert_eq!(
        w.memory.lock_deadline,
        Some(w.now + Duration::from_secs(20))
    );
    w.memory.lock_gone();
    assert_eq!(w.memory.lock_deadline, None);
    assert!(!w.memory.bootstrapped_here, "gone for good");
}

// ---- 3b. a leader key no lease or session backs

fn unowned_lock(w: &World) -> crate::model::LeaderLock {
    w.cluster().leader.unwrap()
}

#[test]
fn the_primary_whose_lock_was_overwritten_by_an_unowned_key_takes_it_back() {
    for holder in ["n2", "garbage \u{fffd}", "n1"] {
        let mut w = World::new("n1");
        w.primary();
        w.memory.lock_deadline = Some(w.now + Duration::from_secs(20));
        w.leader(holder);
        w.leader_unowned = true;
        let d = w.decide();
        assert_eq!(
            actions(&d),
            [Action::ReclaimLock {
                lock: unowned_lock(&w)
            }],
            "{holder}"
        );
        assert!(
            d.reason.contains("no lease or session backs it"),
            "{}",
            d.reason
        );
    }
}

impl World {
    /// The leader key (as set) is attached to no lease, and this node has
    /// seen it unchanged for `secs`.
    fn unowned_seen_for(&mut self, secs: u64) -> &mut Self {
        self.leader_unowned = true;
        let version = unowned_lock(self).version;
        self.memory.unowned_lock_since = Some((version, self.now - Duration::from_secs(secs)));
        self
    }
}

#[test]
fn a_primary_past_its_lifetime_never_reclaims_an_unowned_key() {
    let mut w = World::new("n1");
    w.primary();
    w.leader("n2");
    w.unowned_seen_for(0);
    // Rule 1 first: past the lifetime it stops, whatever the key says.
    w.memory.lock_deadline = Some(w.now + FENCE_MARGIN / 2);
    assert_eq!(
        actions(&w.decide()),
        [Action::Demote {
            mode: StopMode::Immediate
        }]
    );
    // Without any lifetime (a restarted agent) it waits like anyone else.
    w.memory.lock_deadline = None;
    assert_idle(
        &w.decide(),
        Rule::UnownedLock,
        "removing it once it has been unchanged for ttl",
    );
}

#[test]
fn others_remove_an_unowned_key_only_once_any_lock_it_overwrote_has_expired() {
    // The holder of the lock it overwrote may be promoting right now: only
    // ttl after the key was first seen is its lifetime surely over.
    let mut w = World::new("n2");
    w.leader("n3");
    w.unowned_seen_for(29);
    assert_idle(
        &w.decide(),
        Rule::UnownedLock,
        "removing it once it has been unchanged for ttl (30s)",
    );
    w.unowned_seen_for(30);
    let d = w.decide();
    assert_eq!(
        actions(&d),
        [Action::RemoveUnownedLock {
            lock: unowned_lock(&w)
        }]
    );
    assert_decided(&d, Rule::UnownedLock, "never expires");
    // The named member itself, stopped, does the same.
    let mut w = World::new("n3");
    w.leader("n3");
    w.stopped();
    w.unowned_seen_for(31);
    assert_eq!(
        actions(&w.decide()),
        [Action::RemoveUnownedLock {
            lock: unowned_lock(&w)
        }]
    );
    // A key backed by a lease is a lock, whatever it names: left alone.
    w.leader_unowned = false;
    assert!(
        !actions(&w.decide())
            .iter()
            .any(|a| matches!(a, Action::RemoveUnownedLock { .. })),
    );
}

#[test]
fn the_unowned_key_count_restarts_when_the_key_changes() {
    let mut m = HaMemory::default();
    let mut w = World::new("n2");
    w.leader("n3");
    let t0 = w.now;
    m.observe_unowned_lock(Some(&w.cluster()), true, t0);
    m.observe_unowned_lock(Some(&w.cluster()), true, t0 + Duration::from_secs(10));
    assert_eq!(m.unowned_lock_since.as_ref().map(|(_, t)| *t), Some(t0));
    // Rewritten (a new version: the builder numbers keys by position): counted from now.
    w.set("sync", r#"{"leader":"n1","sync_standby":null}"#);
    w.set("leader", "n1");
    m.observe_unowned_lock(Some(&w.cluster()), true, t0 + Duration::from_secs(20));
    assert_eq!(
        m.unowned_lock_since.as_ref().map(|(_, t)| *t),
        Some(t0 + Duration::from_secs(20))
    );
    // Owned again, or no DCS this cycle: forgotten, or kept.
    m.observe_unowned_lock(None, true, t0 + Duration::from_secs(25));
    assert!(m.unowned_lock_since.is_some());
    m.observe_unowned_lock(Some(&w.cluster()), false, t0 + Duration::from_secs(30));
    assert!(m.unowned_lock_since.is_none());
}

#[test]
fn in_maintenance_mode_an_unowned_key_is_left_alone() {
    let mut w = World::new("n2");
    w.leader("n3");
    w.leader_unowned = true;
    w.settings.paused = true;
    assert!(!actions(&w.decide()).iter().any(|a| matches!(
        a,
        Action::RemoveUnownedLock { .. } | Action::ReclaimLock { .. }
    )),);
}

#[test]
fn a_backed_lock_naming_nobody_readable_is_still_held() {
    // A primary seeing a live lock it cannot read demotes; a replica waits
    // for the lease behind it to end.
    let mut w = World::new("n1");
    w.primary();
    w.memory.lock_deadline = Some(w.now + Duration::from_secs(20));
    w.leader("\u{fffd}\u{fffd}");
    assert_eq!(
        actions(&w.decide()),
        [Action::Demote {
            mode: StopMode::Immediate
        }]
    );
    let mut w = World::new("n2");
    w.leader("\u{fffd}\u{fffd}");
    assert!(!actions(&w.decide()).contains(&Action::AcquireLock));
}

// ---- 5. stopped

#[test]
fn a_stopped_leader_that_ran_as_primary_restarts_as_primary() {
    let mut w = World::new("n1");
    w.stopped().was_primary();
    w.local.crashed = true;
    let d = w.decide();
    assert_eq!(actions(&d), [Action::RenewLock, Action::StartPrimary]);
    assert_decided(&d, Rule::Stopped, "crashed");
}

#[test]
fn a_stopped_leader_that_ran_as_replica_starts_read_only_first() {
    let mut w = World::new("n1");
    w.stopped();
    assert_eq!(
        actions(&w.decide()),
        [Action::RenewLock, Action::StartReplica { leader: None }]
    );
}

#[test]
fn a_leader_whose_postgres_will_not_start_gives_the_lock_up_after_primary_start_timeout() {
    let mut w = World::new("n1");
    w.stopped().was_primary();
    w.now = Duration::from_secs(1000);
    w.memory.primary_start_since = Some(w.now - Duration::from_secs(301));
    assert_eq!(actions(&w.decide()), [Action::ReleaseLock]);
    w.memory.primary_start_since = Some(w.now - Duration::from_secs(299));
    assert_eq!(
        actions(&w.decide()),
        [Action::RenewLock, Action::StartPrimary]
    );
}

#[test]
fn a_stopped_leader_whose_renewal_failed_does_not_start_as_primary() {
    let mut w = World::new("n1");
    w.stopped().was_primary();
    w.renew_failed = Some("timed out".into());
    assert_idle(
        &w.decide(),
        Rule::RenewFailed,
        "renewing the leader lock failed",
    );
}

#[test]
fn a_stopped_replica_starts_following_the_leader() {
    let mut w = World::new("n2");
    w.stopped();
    w.local.crashed = true;
    assert_eq!(
        actions(&w.decide()),
        [Action::StartReplica {
            leader: Some("n1".into())
        }]
    );
    w.no_leader();
    assert_eq!(
        actions(&w.decide()),
        [Action::StartReplica { leader: None }]
    );
}

#[test]
fn a_former_primary_rewinds_before_following_the_new_leader() {
    let mut w = World::new("n2");
    w.stopped().was_primary();
    assert_eq!(
        actions(&w.decide()),
        [Action::Rewind {
            source: "n1".into()
        }]
    );

    // not before the new leader's checkpoint after promotion
    let mut n1: serde_json::Value =
        serde_json::from_str(&member_json("primary", "running", 1000)).unwrap();
    n1["checkpoint_after_promote"] = json!(false);
    w.set("members/n1", &n1.to_string());
    assert_idle(&w.decide(), Rule::Rewind, "checkpoint");

    // not from a leader that is not running
    w.set("members/n1", &member_json("primary", "starting", 1000));
    assert_idle(&w.decide(), Rule::Rewind, "waiting for leader n1");

    // once rewound, it starts as a replica
    w.set("members/n1", &member_json("primary", "running", 1000));
    w.memory.rewound_against = Some("n1".into());
    assert_eq!(
        actions(&w.decide()),
        [Action::StartReplica {
            leader: Some("n1".into())
        }]
    );
}

#[test]
fn a_failed_rewind_reinitializes_only_when_allowed() {
    let mut w = World::new("n2");
    w.stopped().was_primary();
    w.memory.rewind_failed_against = Some("n1".into());
    assert_idle(
        &w.decide(),
        Rule::Rewind,
        "remove_data_directory_on_rewind_failure is off",
    );
    w.settings.remove_data_directory_on_rewind_failure = true;
    assert_eq!(
        actions(&w.decide()),
        [Action::Reinitialize {
            source: "n1".into()
        }]
    );
    // A rewind failure against an older leader does not block rewinding from a new one.
    w.memory.rewind_failed_against = Some("n3".into());
    assert_eq!(
        actions(&w.decide()),
        [Action::Rewind {
            source: "n1".into()
        }]
    );
}

#[test]
fn without_pg_rewind_a_former_primary_starts_as_replica_or_reinitializes() {
    let mut w = World::new("n2");
    w.stopped().was_primary();
    w.settings.use_pg_rewind = false;
    let d = w.decide();
    assert_eq!(
        actions(&d),
        [Action::StartReplica {
            leader: Some("n1".into())
        }]
    );
    assert_decided(&d, Rule::Rewind, "diverged");
    w.settings.remove_data_directory_on_rewind_failure = true;
    assert_eq!(
        actions(&w.decide()),
        [Action::Reinitialize {
            source: "n1".into()
        }]
    );
}

#[test]
fn paused_stopped_nodes_are_not_started() {
    let mut w = World::new("n2");
    w.stopped();
    w.settings.paused = true;
    assert_idle(&w.decide(), Rule::Stopped, "paused");
    let mut w = World::new("n1");
    w.stopped().was_primary();
    w.settings.paused = true;
    assert_eq!(actions(&w.decide()), [Action::ReleaseLock]);
}

// ---- 6. running, with a leader

#[test]
fn the_leader_renews_and_stays_primary() {
    let mut w = World::new("n1");
    w.primary();
    let d = w.decide();
    assert_eq!(actions(&d), [Action::RenewLock]);
    assert_decided(&d, Rule::Leader, "the leader with the lock");
}

#[test]
fn a_leader_running_as_replica_promotes() {
    let w = World::new("n1");
    assert_eq!(actions(&w.decide()), [Action::RenewLock, Action::Promote]);
}

#[test]
fn a_leader_whose_renewal_failed_demotes_or_does_not_promote() {
    let mut w = World::new("n1");
    w.primary();
    w.renew_failed = Some("DCS unreachable".into());
    let d = w.decide();
    assert_eq!(
        actions(&d),
        [Action::Demote {
            mode: StopMode::Fast
        }]
    );
    assert_decided(&d, Rule::RenewFailed, "DCS unreachable");

    let mut w = World::new("n1");
    w.renew_failed = Some("x".into());
    assert_idle(&w.decide(), Rule::RenewFailed, "not promoting");
}

#[test]
fn the_leader_fills_in_initialize_and_config_after_bootstrap() {
    let mut w = World::new("n1");
    w.primary();
    w.set("initialize", "").unset("config");
    assert_eq!(
        actions(&w.decide()),
        [
            Action::RenewLock,
            Action::RecordSystemId {
                system_id: SYSID.into()
            },
            Action::WriteConfig
        ]
    );
}

#[test]
fn a_primary_without_the_lock_demotes_at_once() {
    let mut w = World::new("n2");
    w.primary();
    let d = w.decide();
    assert_eq!(
        actions(&d),
        [Action::Demote {
            mode: StopMode::Immediate
        }]
    );
    assert_decided(&d, Rule::OtherHolder, "n1 holds the leader lock");
}

#[test]
fn a_replica_follows_the_leader() {
    let mut w = World::new("n2");
    assert_idle(&w.decide(), Rule::Follow, "following n1");
    w.local.following = Some("n3".into());
    assert_eq!(
        actions(&w.decide()),
        [Action::Follow {
            leader: Some("n1".into())
        }]
    );
    w.local.following = None;
    assert_eq!(
        actions(&w.decide()),
        [Action::Follow {
            leader: Some("n1".into())
        }]
    );
}

// ---- 6. running, no leader: the race

#[test]
fn the_healthiest_replica_takes_the_lock_and_promotes() {
    let mut w = World::new("n2");
    w.no_leader().peer("n3", 900, 1);
    let d = w.decide();
    assert_eq!(actions(&d), [Action::AcquireLock, Action::Promote]);
    assert_decided(&d, Rule::Race, "healthiest");
}

#[test]
fn a_running_primary_without_leader_takes_the_lock_without_promoting() {
    let mut w = World::new("n1");
    w.no_leader().primary();
    assert_eq!(actions(&w.decide()), [Action::AcquireLock]);
}

#[test]
fn nofailover_or_nonpositive_priority_never_races() {
    let mut w = World::new("n2");
    w.no_leader().tags(json!({"nofailover": true}));
    assert_idle(&w.decide(), Rule::Race, "nofailover");
    w.tags(json!({"failover_priority": 0}));
    assert_idle(&w.decide(), Rule::Race, "failover_priority <= 0");
    w.tags(json!({"failover_priority": -3}));
    assert_idle(&w.decide(), Rule::Race, "failover_priority <= 0");
    // nofailover: false beats failover_priority: 0, as in Patroni
    w.tags(json!({"nofailover": false, "failover_priority": 0}));
    assert_eq!(actions(&w.decide()), [Action::AcquireLock, Action::Promote]);
}

#[test]
fn a_node_lagging_more_than_maximum_lag_on_failover_never_races() {
    let mut w = World::new("n2");
    w.no_leader().set("status", r#"{"optime": 3000000}"#);
    let d = w.decide();
    assert_idle(&d, Rule::Race, "maximum_lag_on_failover");
    w.settings.maximum_lag_on_failover = 5_000_000;
    assert_eq!(actions(&w.decide()), [Action::AcquireLock, Action::Promote]);
}

#[test]
fn a_peer_ahead_wins_and_equal_wal_goes_to_higher_priority() {
    let mut w = World::new("n2");
    w.no_leader().peer("n3", 1001, 1);
    assert_idle(&w.decide(), Rule::Race, "n3 is ahead");

    let mut w = World::new("n2");
    w.no_leader().peer("n3", 1000, 2);
    assert_idle(&w.decide(), Rule::Race, "higher failover_priority");

    let mut w = World::new("n2");
    w.no_leader()
        .tags(json!({"failover_priority": 3}))
        .peer("n3", 1000, 2);
    assert_eq!(actions(&w.decide()), [Action::AcquireLock, Action::Promote]);

    // a peer that may not fail over does not count, however far ahead
    let mut w = World::new("n2");
    w.no_leader().peer("n3", 5000, 0);
    assert_eq!(actions(&w.decide()), [Action::AcquireLock, Action::Promote]);
}

#[test]
fn a_live_old_primary_stops_the_race_but_only_if_it_answered_itself() {
    let mut w = World::new("n2");
    w.no_leader().peer("n1", 900, 1);
    w.peers[0].is_primary = true;
    assert_idle(&w.decide(), Rule::Race, "n1 still runs as a primary");
    w.peers[0].source = PeerSource::MemberKey;
    assert_eq!(actions(&w.decide()), [Action::AcquireLock, Action::Promote]);
}

#[test]
fn a_stopped_peer_ahead_of_me_holds_the_race_only_while_its_agent_is_gone() {
    // Its agent does not answer and its member key shows more WAL: wait.
    let mut w = World::new("n2");
    w.no_leader().peer("n3", 2000, 1);
    w.peers[0].running = false;
    w.peers[0].source = PeerSource::MemberKey;
    assert_idle(
        &w.decide(),
        Rule::Race,
        "n3 is not running but its last WAL position is ahead of mine",
    );
    // Behind me: no reason to wait.
    w.peers[0].wal_position = Some(500);
    assert_eq!(actions(&w.decide()), [Action::AcquireLock, Action::Promote]);
    // Its agent answers that its PostgreSQL is starting: wait for it.
    w.peers[0].wal_position = Some(2000);
    w.peers[0].source = PeerSource::Rest;
    w.peers[0].starting = true;
    assert_idle(&w.decide(), Rule::Race, "waiting for it to finish starting");
    // Its agent answers that its PostgreSQL is down (it may never start): race.
    w.peers[0].starting = false;
    assert_eq!(actions(&w.decide()), [Action::AcquireLock, Action::Promote]);
}

#[test]
fn unknown_wal_position_or_stopped_postgres_never_races() {
    let mut w = World::new("n2");
    w.no_leader();
    w.local.wal_position = None;
    assert_idle(&w.decide(), Rule::Race, "WAL position is unknown");
}

#[test]
fn a_primary_that_may_not_race_demotes() {
    let mut w = World::new("n1");
    w.no_leader().primary().tags(json!({"nofailover": true}));
    assert_eq!(
        actions(&w.decide()),
        [Action::Demote {
            mode: StopMode::Fast
        }]
    );
}

// ---- paused

#[test]
fn paused_leader_keeps_the_lock_and_nobody_acts() {
    let mut w = World::new("n1");
    w.primary();
    w.settings.paused = true;
    assert_eq!(actions(&w.decide()), [Action::RenewLock]);

    let mut w = World::new("n2");
    w.settings.paused = true;
    w.local.following = Some("n3".into());
    assert_idle(&w.decide(), Rule::Paused, "paused");

    let mut w = World::new("n2");
    w.settings.paused = true;
    w.no_leader().peer("n3", 1, 1);
    assert_idle(&w.decide(), Rule::Paused, "paused");

    let mut w = World::new("n1");
    w.settings.paused = true;
    assert_eq!(actions(&w.decide()), [Action::ReleaseLock]);
}

// ---- requested switchovers and failovers

#[test]
fn the_leader_hands_over_to_a_good_candidate() {
    let mut w = World::new("n1");
    w.primary().peer("n2", 1000, 1).peer("n3", 1000, 1);
    w.set("failover", r#"{"leader":"n1","member":"n2"}"#);
    let d = w.decide();
    assert_eq!(
        actions(&d),
        [
            Action::RenewLock,
            Action::Demote {
                mode: StopMode::Graceful
            },
            Action::ReleaseLock
        ]
    );
    assert_decided(&d, Rule::Switchover, "switching over to n2");
    // Without a candidate, any good member will do.
    w.set("failover", r#"{"leader":"n1"}"#);
    assert_eq!(
        actions(&w.decide())[1],
        Action::Demote {
            mode: StopMode::Graceful
        }
    );
    // A failover request (no leader named) to n3 also makes the leader hand over.
    w.set("failover", r#"{"member":"n3"}"#);
    assert_eq!(
        actions(&w.decide())[1],
        Action::Demote {
            mode: StopMode::Graceful
        }
    );
}

#[test]
fn an_impossible_switchover_is_removed_with_every_reason() {
    let mut w = World::new("n1");
    w.primary().peer("n2", 1000, 0).peer("n3", 1000, 1);
    w.peers[1].running = false;
    w.set("failover", r#"{"leader":"n1"}"#);
    let d = w.decide();
    assert_eq!(actions(&d), [Action::RenewLock, Action::ClearFailover]);
    assert!(
        d.reason.contains("n2 may not become primary")
            && d.reason.contains("n3 does not run PostgreSQL"),
        "{}",
        d.reason
    );

    w.set("failover", r#"{"leader":"n1","member":"n9"}"#);
    assert_decided(&w.decide(), Rule::Switchover, "n9 is not a member");
    w.peers.clear();
    w.peer("n2", 1000, 1);
    w.peers[0].source = PeerSource::MemberKey;
    w.set("failover", r#"{"leader":"n1","member":"n2"}"#);
    assert!(
        w.decide()
            .reason
            .contains("n2 does not answer on its REST API")
    );
}

#[test]
fn a_scheduled_switchover_waits_for_its_time() {
    let mut w = World::new("n1");
    w.primary().peer("n2", 1000, 1);
    w.set(
        "failover",
        r#"{"leader":"n1","member":"n2","scheduled_at":"2026-11-21T12:30:00+00:00"}"#,
    );
    let d = w.decide();
    assert_eq!(actions(&d), [Action::RenewLock]);
    assert!(
        d.reason.contains("scheduled at 2026-11-21T12:30:00Z"),
        "{}",
        d.reason
    );
    w.wall_now = "2026-11-21T12:30:01Z".parse().unwrap();
    assert_eq!(
        actions(&w.decide())[1],
        Action::Demote {
            mode: StopMode::Graceful
        }
    );
}

#[test]
fn the_new_leader_removes_a_finished_request_and_stale_ones_go_too() {
    let mut w = World::new("n2");
    w.leader("n2").primary();
    w.set("failover", r#"{"leader":"n1","member":"n2"}"#);
    assert_eq!(
        actions(&w.decide()),
        [Action::RenewLock, Action::ClearFailover]
    );
    w.set("failover", r#"{"member":"n2"}"#);
    assert_eq!(
        actions(&w.decide()),
        [Action::RenewLock, Action::ClearFailover]
    );
    w.set("failover", "{}");
    assert_eq!(
        actions(&w.decide()),
        [Action::RenewLock, Action::ClearFailover]
    );
}

#[test]
fn while_a_request_is_pending_only_the_candidate_races_and_the_old_leader_never() {
    // The candidate races even when a peer is ahead.
    let mut w = World::new("n2");
    w.no_leader()
        .set("failover", r#"{"leader":"n1","member":"n2"}"#)
        .peer("n3", 5000, 1);
    let d = w.decide();
    assert_eq!(actions(&d), [Action::AcquireLock, Action::Promote]);
    assert!(
        d.reason.contains("requested switchover candidate"),
        "{}",
        d.reason
    );

    // Another node waits for the candidate...
    let mut w = World::new("n3");
    w.no_leader()
        .set("failover", r#"{"leader":"n1","member":"n2"}"#)
        .peer("n2", 900, 1);
    assert_idle(&w.decide(), Rule::Race, "a switchover to n2 is in progress");
    // ...unless the candidate is not there to take over.
    w.peers[0].running = false;
    assert_eq!(actions(&w.decide()), [Action::AcquireLock, Action::Promote]);

    // The old leader stays out even with the most WAL.
    let mut w = World::new("n1");
    w.no_leader().set("failover", r#"{"leader":"n1"}"#);
    w.local.wal_position = Some(9999);
    assert_idle(
        &w.decide(),
        Rule::Race,
        "a switchover away from me is in progress",
    );
}

#[test]
fn paused_switchover_needs_a_named_candidate() {
    let mut w = World::new("n1");
    w.primary().peer("n2", 1000, 1);
    w.settings.paused = true;
    w.set("failover", r#"{"leader":"n1"}"#);
    let d = w.decide();
    assert_eq!(actions(&d), [Action::RenewLock, Action::ClearFailover]);
    assert_decided(&d, Rule::Paused, "must name a candidate");
    w.set("failover", r#"{"leader":"n1","member":"n2"}"#);
    assert_eq!(
        actions(&w.decide())[1],
        Action::Demote {
            mode: StopMode::Graceful
        }
    );

    let mut w = World::new("n2");
    w.settings.paused = true;
    w.no_leader()
        .set("failover", r#"{"leader":"n1","member":"n2"}"#);
    assert_eq!(actions(&w.decide()), [Action::AcquireLock, Action::Promote]);
}

#[test]
fn a_vetoed_promotion_keeps_the_node_out_of_the_race_for_a_while() {
    let mut w = World::new("n2");
    w.no_leader();
    w.memory.no_race_until = Some(w.now + Duration::from_secs(10));
    assert_idle(&w.decide(), Rule::Race, "vetoed by pre_promote");
    w.memory.no_race_until = Some(w.now - Duration::from_secs(1));
    assert_eq!(actions(&w.decide()), [Action::AcquireLock, Action::Promote]);
}

#[test]
fn paused_primaries_are_not_demoted_for_dcs_trouble() {
    let mut w = World::new("n1");
    w.primary();
    w.settings.paused = true;
    w.dcs_down = true;
    assert_idle(&w.decide(), Rule::NoDcs, "paused");
    w.dcs_down = false;
    w.memory.lock_deadline = Some(w.now);
    assert_eq!(actions(&w.decide()), [Action::RenewLock]);
}

// ---- a replica that does not stream from the leader (scenario M1)

impl World {
    /// `me` has not been streaming from `n1` for `secs` (the agent's count).
    fn not_streaming_for(&mut self, secs: u64) -> &mut Self {
        self.local.replication_state = Some("waiting".into());
        self.local.receiver_sender = None;
        self.memory.streaming = crate::ha::StreamingWatch {
            upstream: Some("n1".into()),
            not_streaming_for: Duration::from_secs(secs),
            updated_at: Some(self.now),
            counting: true,
            upstream_key: None,
        };
        self
    }
}

#[test]
fn a_replica_not_streaming_within_the_limit_is_left_alone() {
    let mut w = World::new("n2");
    w.not_streaming_for(50);
    w.local.configured_upstream = Some(ConfiguredUpstream::At(Endpoint::new("127.0.0.1", 6000)));
    assert_idle(
        &w.decide(),
        Rule::Follow,
        "a replica following n1, but not streaming from it for 50.0s (repaired or dropped as a candidate after 50s)",
    );
}

#[test]
fn an_archive_only_replica_is_left_replaying_the_archive() {
    let mut w = World::new("n2");
    w.not_streaming_for(0);
    w.local.replication_state = None;
    w.local.configured_upstream = Some(ConfiguredUpstream::Nowhere);
    w.local.archive_only = true;
    assert_idle(
        &w.decide(),
        Rule::Follow,
        "a replica of n1 replaying its WAL archive (nostream)",
    );
}

#[test]
fn a_replica_not_streaming_past_the_limit_with_a_wrong_primary_conninfo_repairs_it() {
    let mut w = World::new("n2");
    w.not_streaming_for(51);
    w.local.configured_upstream = Some(ConfiguredUpstream::At(Endpoint::new("127.0.0.1", 6000)));
    let d = w.decide();
    assert_eq!(
        actions(&d),
        [Action::Follow {
            leader: Some("n1".into())
        }]
    );
    assert!(
        d.reason.contains("repairing replication")
            && d.reason
                .contains("points at 127.0.0.1:6000, not at n1 (127.0.0.1:5432)"),
        "{}",
        d.reason
    );
    // An empty primary_conninfo (ALTER SYSTEM SET primary_conninfo = '') too.
    w.local.configured_upstream = Some(ConfiguredUpstream::Nowhere);
    let d = w.decide();
    assert_eq!(actions(&d).len(), 1);
    assert_decided(&d, Rule::NotStreaming, "points at nowhere");
    // The leader's conn_url changed: follow its new address.
    w.local.configured_upstream = Some(ConfiguredUpstream::At(Endpoint::new("127.0.0.1", 5432)));
    w.set(
        "members/n1",
        &member_json("primary", "running", 1000).replace("127.0.0.1:5432", "10.0.0.1:5432"),
    );
    assert_decided(&w.decide(), Rule::NotStreaming, "not at n1 (10.0.0.1:5432)");
}

#[test]
fn a_replica_not_streaming_past_the_limit_with_the_right_primary_conninfo_says_so() {
    let mut w = World::new("n2");
    w.not_streaming_for(51);
    assert_idle(
        &w.decide(),
        Rule::NotStreaming,
        "though primary_conninfo points at it (127.0.0.1:5432): not a failover candidate",
    );
    // Unknown configured upstream: nothing to repair from here either.
    w.local.configured_upstream = None;
    assert_idle(
        &w.decide(),
        Rule::NotStreaming,
        "cannot be read: not a failover candidate",
    );
    // The leader publishes no usable conn_url.
    w.set(
        "members/n1",
        r#"{"state":"running","role":"primary","xlog_location":1000}"#,
    );
    assert_idle(&w.decide(), Rule::NotStreaming, "has no usable conn_url");
}

#[test]
fn a_count_about_another_leader_does_not_repair() {
    // The agent resets the count when the leader changes; a stale one
    // (about n3) must not make the replica of n1 act.
    let mut w = World::new("n2");
    w.not_streaming_for(100);
    w.memory.streaming.upstream = Some("n3".into());
    w.local.configured_upstream = Some(ConfiguredUpstream::Nowhere);
    assert_idle(&w.decide(), Rule::Follow, "a replica following n1");
}

#[test]
fn following_another_member_is_still_fixed_first() {
    let mut w = World::new("n2");
    w.not_streaming_for(100);
    w.local.following = Some("n3".into());
    assert_eq!(
        actions(&w.decide()),
        [Action::Follow {
            leader: Some("n1".into())
        }]
    );
}

#[test]
fn a_replica_that_was_not_streaming_does_not_race() {
    let mut w = World::new("n2");
    w.no_leader().not_streaming_for(51).peer("n3", 900, 1);
    let d = w.decide();
    assert_idle(
        &d,
        Rule::Race,
        "I was not streaming from n1 for 51.0s (more than 50s)",
    );
    // Within the limit (a leader that just died stopped everybody's
    // streaming): it races as usual.
    w.memory.streaming.not_streaming_for = Duration::from_secs(50);
    assert_eq!(actions(&w.decide()), [Action::AcquireLock, Action::Promote]);
    // Even alone: its WAL may not be the cluster's.
    let mut w = World::new("n2");
    w.no_leader().not_streaming_for(51);
    assert_idle(&w.decide(), Rule::Race, "not a failover candidate");
}

#[test]
fn a_replica_that_was_not_streaming_may_still_be_named_by_an_operator() {
    let mut w = World::new("n2");
    w.no_leader()
        .not_streaming_for(51)
        .set("failover", r#"{"member":"n2"}"#);
    assert_eq!(actions(&w.decide()), [Action::AcquireLock, Action::Promote]);
}

#[test]
fn a_peer_that_was_not_streaming_does_not_hold_a_healthy_node_back() {
    let mut w = World::new("n2");
    w.no_leader().peer("n3", 5000, 1);
    assert_idle(&w.decide(), Rule::Race, "n3 is ahead");
    w.peers[0].replication_broken = true;
    assert_eq!(actions(&w.decide()), [Action::AcquireLock, Action::Promote]);
    // Nor at an equal position with a higher priority.
    w.peers[0].wal_position = Some(1000);
    w.peers[0].failover_priority = 5;
    assert_eq!(actions(&w.decide()), [Action::AcquireLock, Action::Promote]);
    // Nor a stopped one whose member key shows more WAL.
    w.peers[0].running = false;
    w.peers[0].source = PeerSource::MemberKey;
    w.peers[0].wal_position = Some(5000);
    assert_eq!(actions(&w.decide()), [Action::AcquireLock, Action::Promote]);
}

#[test]
fn a_switchover_does_not_hand_over_to_a_replica_that_is_not_streaming() {
    let mut w = World::new("n1");
    w.primary().peer("n2", 1000, 1);
    w.peers[0].replication_broken = true;
    w.set("failover", r#"{"leader":"n1","member":"n2"}"#);
    let d = w.decide();
    assert_eq!(actions(&d), [Action::RenewLock, Action::ClearFailover]);
    assert!(
        d.reason
            .contains("n2 has not been streaming from the leader for too long"),
        "{}",
        d.reason
    );
}

#[test]
fn an_operator_may_name_a_replica_that_was_not_streaming_only_without_a_leader() {
    use crate::ha::switchover::requested_candidate_problem;
    let mut w = World::new("n1");
    w.peer("n2", 1000, 1);
    w.peers[0].replication_broken = true;
    let p = &w.peers[0];
    assert!(
        requested_candidate_problem(p, false).is_some_and(|why| why.contains("not been streaming"))
    );
    assert_eq!(requested_candidate_problem(p, true), None);
    // Its other problems still count.
    let mut stopped = p.clone();
    stopped.running = false;
    assert!(requested_candidate_problem(&stopped, true).is_some());
}

// ---- a replica whose WAL diverged from the leader's history

impl World {
    /// `n1` leads on timeline 2, which forked off timeline 1 at 1500; `me`
    /// is a replica on timeline 1 at `position`, not streaming for a minute.
    fn diverged_at(&mut self, position: u64) -> &mut Self {
        let mut leader: serde_json::Value =
            serde_json::from_str(&member_json("primary", "running", 5000)).unwrap();
        leader["timeline"] = json!(2);
        self.set("members/n1", &leader.to_string());
        self.set("history", r#"[[1, 1500, "no recovery target specified"]]"#);
        self.local.timeline = Some(1);
        self.local.wal_position = Some(position);
        self.not_streaming_for(60)
    }
}

#[test]
fn a_replica_whose_wal_went_past_the_fork_is_rewound_from_the_leader() {
    let mut w = World::new("n2");
    w.diverged_at(2000);
    let d = w.decide();
    assert_eq!(
        actions(&d),
        [Action::Rewind {
            source: "n1".into()
        }]
    );
    assert!(
        d.reason
            .contains("my WAL diverged from its history (my WAL reaches 0/7D0 on timeline 1, which the cluster left at 0/5DC for timeline 2)"),
        "{}",
        d.reason
    );
    // Not before its replication counts as broken: a replica about to
    // switch timelines, or one whose timeline reading lags, is left alone.
    w.not_streaming_for(10);
    assert_idle(&w.decide(), Rule::Follow, "following n1");
}

#[test]
fn a_replica_behind_the_fork_or_without_history_is_not_rewound() {
    let mut w = World::new("n2");
    w.diverged_at(1500);
    assert!(actions(&w.decide()).is_empty(), "{:?}", w.decide());
    let mut w = World::new("n2");
    w.diverged_at(2000).unset("history");
    assert!(actions(&w.decide()).is_empty(), "no evidence, no repair");
    let mut w = World::new("n2");
    w.diverged_at(2000);
    w.local.timeline = Some(2);
    assert!(
        actions(&w.decide()).is_empty(),
        "already on the leader's timeline"
    );
}

#[test]
fn a_diverged_replica_is_recloned_only_where_the_configuration_allows() {
    let mut w = World::new("n2");
    w.diverged_at(2000);
    w.settings.use_pg_rewind = false;
    assert_idle(
        &w.decide(),
        Rule::Rewind,
        "reinitialize it (pghactl reinit)",
    );
    w.settings.remove_data_directory_on_diverged_timelines = true;
    assert_eq!(
        actions(&w.decide()),
        [Action::Reinitialize {
            source: "n1".into()
        }]
    );
    // With pg_rewind, a failed rewind is recloned after
    // remove_data_directory_on_rewind_failure only.
    let mut w = World::new("n2");
    w.diverged_at(2000);
    w.memory.rewind_failed_against = Some("n1".into());
    assert_idle(
        &w.decide(),
        Rule::Rewind,
        "remove_data_directory_on_rewind_failure is off",
    );
    w.settings.remove_data_directory_on_rewind_failure = true;
    assert_eq!(
        actions(&w.decide()),
        [Action::Reinitialize {
            source: "n1".into()
        }]
    );
}

#[test]
fn a_diverged_replica_waits_for_the_leaders_checkpoint_after_promotion() {
    let mut w = World::new("n2");
    w.diverged_at(2000);
    let mut leader: serde_json::Value =
        serde_json::from_str(&member_json("primary", "running", 5000)).unwrap();
    leader["timeline"] = json!(2);
    leader["checkpoint_after_promote"] = json!(false);
    w.set("members/n1", &leader.to_string());
    let d = w.decide();
    assert_idle(&d, Rule::Rewind, "to checkpoint after its promotion");
    assert!(
        d.look_again_soon,
        "due within a moment: looked at again soon"
    );
}

#[test]
fn a_former_primary_waits_for_the_new_leaders_checkpoint_looking_again_soon() {
    // The old primary's agent often starts while the new leader is still
    // promoting: waiting a loop_wait for the checkpoint flag cost a rejoin
    // at ttl 30 about 10 s.
    let mut w = World::new("n2");
    w.stopped().was_primary();
    let mut leader: serde_json::Value =
        serde_json::from_str(&member_json("primary", "running", 5000)).unwrap();
    leader["checkpoint_after_promote"] = json!(false);
    w.set("members/n1", &leader.to_string());
    let d = w.decide();
    assert_idle(
        &d,
        Rule::Rewind,
        "to checkpoint after its promotion before rewinding",
    );
    assert!(d.look_again_soon);
    leader["checkpoint_after_promote"] = json!(true);
    w.set("members/n1", &leader.to_string());
    let d = w.decide();
    assert_eq!(
        actions(&d),
        [Action::Rewind {
            source: "n1".into()
        }]
    );
    assert!(!d.look_again_soon);
}

// ---- rules

/// How a case changes the default world.
type Setup = Box<dyn Fn(&mut World)>;

/// Each rule of the chain, reached by the smallest world that reaches it:
/// the rule is asserted, not the wording of the reason.
#[test]
fn every_rule_is_reached_and_named() {
    let secs = Duration::from_secs;
    let cases: Vec<(Rule, Setup)> = vec![
        (
            Rule::LockExpiring,
            Box::new(|w| {
                w.primary();
                w.memory.lock_deadline = Some(w.now);
            }),
        ),
        (
            Rule::Unfenced,
            Box::new(|w| {
                w.primary();
                w.unfenced = Some("guard down".into());
            }),
        ),
        (Rule::NoDcs, Box::new(|w| w.dcs_down = true)),
        (
            Rule::Failsafe,
            Box::new(|w| {
                w.primary();
                w.dcs_down = true;
                w.settings.failsafe_mode = true;
            }),
        ),
        (
            Rule::JobInProgress,
            Box::new(|w| w.memory.job = Some(Job::Restart)),
        ),
        (Rule::UnownedLock, Box::new(|w| w.leader_unowned = true)),
        (
            Rule::UnusableDataDir,
            Box::new(|w| w.local.data_dir = DataDir::Unusable("no PG_VERSION".into())),
        ),
        (
            Rule::EmptyDataDir,
            Box::new(|w| {
                w.stopped().leader("n2");
                w.local.data_dir = DataDir::Empty;
            }),
        ),
        (
            Rule::Bootstrap,
            Box::new(|w| {
                w.stopped().no_leader().unset("initialize");
                w.local.data_dir = DataDir::Empty;
            }),
        ),
        (
            Rule::Clone,
            Box::new(|w| {
                w.stopped();
                w.local.data_dir = DataDir::Empty;
            }),
        ),
        (
            Rule::SystemIdMismatch,
            Box::new(|w| {
                w.set("initialize", "42");
            }),
        ),
        (
            Rule::NoInitializeKey,
            Box::new(|w| {
                w.stopped().no_leader().unset("initialize");
            }),
        ),
        (
            Rule::Stopped,
            Box::new(|w| {
                w.stopped();
            }),
        ),
        (
            Rule::PrimaryStartTimeout,
            Box::new(move |w| {
                w.stopped().was_primary().leader("n2");
                w.now = secs(1000);
                w.memory.primary_start_since = Some(w.now - secs(301));
            }),
        ),
        (
            Rule::Rewind,
            Box::new(|w| {
                w.stopped().was_primary();
            }),
        ),
        (
            Rule::AfterBootstrap,
            Box::new(|w| {
                w.primary().no_leader();
                w.memory.bootstrapped_here = true;
            }),
        ),
        (Rule::Paused, Box::new(|w| w.settings.paused = true)),
        (
            Rule::RenewFailed,
            Box::new(|w| {
                w.primary().leader("n2");
                w.renew_failed = Some("DCS unreachable".into());
            }),
        ),
        (
            Rule::Switchover,
            Box::new(|w| {
                w.primary().leader("n2");
                w.set("failover", r#"{"leader":"n2","member":"n9"}"#);
            }),
        ),
        (
            Rule::Leader,
            Box::new(|w| {
                w.primary().leader("n2");
            }),
        ),
        (
            Rule::HolderPromotes,
            Box::new(|w| {
                w.leader("n2");
            }),
        ),
        (
            Rule::OtherHolder,
            Box::new(|w| {
                w.primary();
            }),
        ),
        (Rule::Follow, Box::new(|_| {})),
        (
            Rule::NotStreaming,
            Box::new(move |w| {
                w.memory.streaming.upstream = Some("n1".into());
                w.memory.streaming.not_streaming_for = secs(60);
            }),
        ),
        (
            Rule::Race,
            Box::new(|w| {
                w.no_leader();
            }),
        ),
    ];
    for (rule, setup) in &cases {
        let mut w = World::new("n2");
        setup(&mut w);
        let d = w.decide();
        assert_eq!(d.rule, *rule, "{d:?}");
    }
    let mut ids: Vec<&str> = cases.iter().map(|(r, _)| r.id()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 25, "every rule once, each with its own id");
}

// ---- 6. the race in synchronous mode

fn sync_world(me: &str) -> World {
    let mut w = World::new(me);
    w.settings.sync_mode = SyncMode::On { strict: false };
    w.no_leader()
        .set("sync", r#"{"leader":"n1","quorum":0,"sync_standby":"n2"}"#);
    w
}

#[test]
fn in_synchronous_mode_only_a_synchronous_standby_races_even_when_behind() {
    // n3 is ahead of n2, but only n2 is known to hold every acknowledged
    // commit: n3 stays out, and does not hold n2 back.
    let mut w = sync_world("n3");
    w.local.wal_position = Some(1200);
    w.peer("n2", 1000, 1);
    assert_idle(
        &w.decide(),
        Rule::Race,
        "synchronous standbys the sync key names (n2)",
    );
    let mut w = sync_world("n2");
    w.peer("n3", 1200, 1);
    let d = w.decide();
    assert_eq!(actions(&d), [Action::AcquireLock, Action::Promote]);
    // The same world without synchronous mode: n3, ahead, wins.
    w.settings.sync_mode = SyncMode::Off;
    assert_idle(&w.decide(), Rule::Race, "n3 is ahead of me");
}

#[test]
fn in_synchronous_mode_without_a_synchronous_standby_nobody_races() {
    let mut w = sync_world("n2");
    w.set("sync", r#"{"leader":"n1","quorum":0,"sync_standby":null}"#);
    assert_idle(&w.decide(), Rule::Race, "(none)");
    w.set("sync", "not json");
    assert_idle(&w.decide(), Rule::Race, "sync key is unreadable");
    // A key never taken by a leader in synchronous mode: the usual race.
    w.unset("sync");
    assert_eq!(actions(&w.decide()), [Action::AcquireLock, Action::Promote]);
}

#[test]
fn a_switchover_goes_to_a_synchronous_standby_only_a_failover_anywhere() {
    let mut w = sync_world("n3");
    w.set("failover", r#"{"leader":"n1","member":"n3"}"#);
    assert_idle(
        &w.decide(),
        Rule::Race,
        "requested switchover candidate, but",
    );
    w.set("failover", r#"{"member":"n3"}"#);
    assert_eq!(actions(&w.decide()), [Action::AcquireLock, Action::Promote]);
}

#[test]
fn the_leader_refuses_a_switchover_to_an_asynchronous_member() {
    let mut w = World::new("n1");
    w.primary();
    w.settings.sync_mode = SyncMode::On { strict: false };
    w.set("sync", r#"{"leader":"n1","quorum":0,"sync_standby":"n2"}"#)
        .set("failover", r#"{"leader":"n1","member":"n3"}"#)
        .peer("n2", 1000, 1)
        .peer("n3", 1000, 1);
    let d = w.decide();
    assert!(d.actions.contains(&Action::ClearFailover), "{d:?}");
    assert_decided(&d, Rule::Switchover, "n3 is not a synchronous standby");
    // Without a candidate, it hands over (to n2, the synchronous standby).
    w.set("failover", r#"{"leader":"n1"}"#);
    let d = w.decide();
    assert_decided(&d, Rule::Switchover, "e.g. n2");
}

#[test]
fn in_quorum_mode_a_node_races_only_with_the_quorum_of_votes() {
    let mut w = World::new("n2");
    w.settings.sync_mode = SyncMode::Quorum { strict: false };
    w.no_leader().set(
        "sync",
        r#"{"leader":"n1","quorum":1,"sync_standby":"n2,n3"}"#,
    );
    // n3 does not answer: no vote.
    assert_idle(&w.decide(), Rule::Race, "0 of the 1 votes");
    w.peer("n3", 900, 1);
    assert_eq!(actions(&w.decide()), [Action::AcquireLock, Action::Promote]);
    // A node outside the voters needs one more vote than a voter.
    let mut w = World::new("n4");
    w.settings.sync_mode = SyncMode::Quorum { strict: false };
    w.no_leader()
        .set(
            "sync",
            r#"{"leader":"n1","quorum":1,"sync_standby":"n2,n3"}"#,
        )
        .peer("n3", 900, 1);
    assert_idle(&w.decide(), Rule::Race, "I am no voter");
    w.peer("n2", 900, 1);
    assert_eq!(actions(&w.decide()), [Action::AcquireLock, Action::Promote]);
}

#[test]
fn a_crashed_synchronous_primary_hands_over_instead_of_showing_unreplicated_commits() {
    let mut w = World::new("n1");
    w.settings.sync_mode = SyncMode::On { strict: false };
    w.stopped().was_primary();
    w.local.crashed = true;
    w.set("sync", r#"{"leader":"n1","quorum":0,"sync_standby":"n2"}"#);
    let d = w.decide();
    assert_eq!(actions(&d), [Action::ReleaseLock]);
    assert_decided(&d, Rule::SyncCrash, "releasing the leader lock to n2");
    // Lock released: it waits for n2 rather than starting.
    w.no_leader();
    assert_idle(
        &w.decide(),
        Rule::SyncCrash,
        "not starting it until n2 takes over",
    );
    // ... for a bounded time only.
    w.memory.crash_handover_since = Some(w.now);
    w.now += crash_handover_limit(w.settings.ttl) + Duration::from_secs(1);
    assert_eq!(
        actions(&w.decide()),
        [Action::StartReplica { leader: None }]
    );
}

#[test]
fn a_crashed_synchronous_primary_restarts_in_place_when_nobody_could_take_over() {
    let mut w = World::new("n1");
    w.settings.sync_mode = SyncMode::On { strict: false };
    w.stopped().was_primary();
    w.local.crashed = true;
    // No synchronous standby: commits were asynchronous anyway.
    w.set("sync", r#"{"leader":"n1","quorum":0,"sync_standby":null}"#);
    assert_eq!(
        actions(&w.decide()),
        [Action::RenewLock, Action::StartPrimary]
    );
    // Its standby is not running.
    w.set("sync", r#"{"leader":"n1","quorum":0,"sync_standby":"n2"}"#)
        .set("members/n2", &member_json("replica", "stopped", 900));
    assert_eq!(
        actions(&w.decide()),
        [Action::RenewLock, Action::StartPrimary]
    );
    // Quorum: one running voter cannot gather a quorum of 1 alone.
    w.settings.sync_mode = SyncMode::Quorum { strict: false };
    w.set(
        "sync",
        r#"{"leader":"n1","quorum":1,"sync_standby":"n2,n3"}"#,
    );
    assert_eq!(
        actions(&w.decide()),
        [Action::RenewLock, Action::StartPrimary]
    );
    w.set("members/n2", &member_json("replica", "running", 900));
    assert_decided(&w.decide(), Rule::SyncCrash, "n2 or n3");
    // A stop by the operator is no crash: restart in place.
    w.local.crashed = false;
    assert_eq!(
        actions(&w.decide()),
        [Action::RenewLock, Action::StartPrimary]
    );
}

// ---- found by the simulator (crate pgha-sim)

#[test]
fn a_newer_timeline_is_ahead_whatever_the_wal_positions_say() {
    // An old primary's WAL runs past where a newer timeline forked: it
    // does not win against a member on the newer timeline.
    let mut w = World::new("n2");
    w.no_leader().peer("n3", 500, 1);
    w.peers[0].timeline = Some(2);
    w.local.wal_position = Some(9000);
    assert_idle(
        &w.decide(),
        Rule::Race,
        "n3 is ahead of me (timeline 2 > 1)",
    );
    // On an older timeline, more WAL does not hold me back.
    let mut w = World::new("n2");
    w.local.timeline = Some(3);
    w.no_leader().peer("n3", 9000, 1);
    w.peers[0].timeline = Some(2);
    assert_eq!(actions(&w.decide()), [Action::AcquireLock, Action::Promote]);
}

#[test]
fn a_node_on_a_timeline_the_cluster_left_does_not_race() {
    // After a DCS outage longer than ttl the member keys are gone; the
    // history key (no lease) still says the cluster reached timeline 2.
    let mut w = World::new("n2");
    w.no_leader().set(
        "history",
        r#"[[1,50331648,"no recovery target specified","2026-12-01T10:00:00+00:00","n3"]]"#,
    );
    assert_idle(
        &w.decide(),
        Rule::Race,
        "my timeline 1 is older than the cluster's timeline 2",
    );
    w.local.timeline = Some(2);
    assert_eq!(actions(&w.decide()), [Action::AcquireLock, Action::Promote]);
}

#[test]
fn the_lock_that_lapsed_in_maintenance_mode_waits_for_its_holder() {
    let mut w = World::new("n2");
    w.no_leader().peer("n3", 900, 1);
    w.memory.paused_leader = Some("n1".into());
    // n1 does not answer (its member key expired, or it is partitioned).
    assert_idle(
        &w.decide(),
        Rule::Race,
        "the leader lock lapsed while n1 led in maintenance mode",
    );
    // n1 answers as a replica (it demoted, or rejoined): the race is on.
    w.peer("n1", 800, 1);
    assert_eq!(actions(&w.decide()), [Action::AcquireLock, Action::Promote]);
    // ... and as a primary: still waiting.
    w.peers[1].is_primary = true;
    assert_idle(
        &w.decide(),
        Rule::Race,
        "n1 has not answered that it no longer runs",
    );
    // An operator's failover goes through.
    w.peers.pop();
    w.set("failover", r#"{"member":"n2"}"#);
    assert_eq!(actions(&w.decide()), [Action::AcquireLock, Action::Promote]);
}

#[test]
fn a_candidate_that_does_not_take_the_free_lock_within_ttl_opens_the_race() {
    let mut w = World::new("n3");
    w.no_leader()
        .set("failover", r#"{"leader":"n1","member":"n2"}"#)
        .peer("n2", 900, 1);
    w.memory.candidate_awaited_since = Some(w.now);
    assert_idle(&w.decide(), Rule::Race, "a switchover to n2 is in progress");
    w.now += w.settings.ttl;
    assert_eq!(actions(&w.decide()), [Action::AcquireLock, Action::Promote]);
}

#[test]
fn in_quorum_mode_a_requested_candidate_still_needs_the_votes() {
    // n2 missed the last commits (restarting while the leader handed
    // over): n3, the other voter, is ahead and does not vote for it.
    let mut w = World::new("n2");
    w.settings.sync_mode = SyncMode::Quorum { strict: false };
    w.no_leader()
        .set(
            "sync",
            r#"{"leader":"n1","quorum":1,"sync_standby":"n2,n3"}"#,
        )
        .set("failover", r#"{"member":"n2"}"#)
        .peer("n3", 1200, 1);
    assert_idle(
        &w.decide(),
        Rule::Race,
        "I am the requested switchover candidate, but quorum",
    );
    // In maintenance mode too.
    w.settings.paused = true;
    assert_idle(&w.decide(), Rule::Paused, "no automatic action");
    // Caught up: n3 votes, n2 takes over.
    w.settings.paused = false;
    w.peers[0].wal_position = Some(1000);
    assert_eq!(actions(&w.decide()), [Action::AcquireLock, Action::Promote]);
}

#[test]
fn a_former_primary_does_not_rewind_from_a_leader_still_promoting() {
    // The crashed synchronous primary released the lock; n3 took it and is
    // promoting, its member key still saying replica. pg_rewind now would
    // find the source on our timeline and do nothing, and this node would
    // start as a replica showing commits the new timeline lacks (seen on a
    // fresh machine, where promotions take longer).
    let mut w = World::new("n2");
    w.stopped().was_primary();
    w.leader("n3");
    w.set("members/n3", &member_json("replica", "running", 5000));
    let d = w.decide();
    assert_idle(&d, Rule::Rewind, "to finish its promotion");
    assert!(d.look_again_soon);
    w.set("members/n3", &member_json("primary", "running", 5000));
    assert_eq!(
        actions(&w.decide()),
        [Action::Rewind {
            source: "n3".into()
        }]
    );
}

#[test]
fn an_announced_promotion_that_never_happened_does_not_stop_the_race() {
    // n3 recorded the timeline it was leaving, then died before promoting:
    // nobody reached timeline 2, and the members of timeline 1 still race.
    let mut w = World::new("n2");
    w.no_leader().set(
        "history",
        &format!(
            r#"[[1,50331648,"{}",null,"n3"]]"#,
            crate::ha::divergence::PROMOTION_ANNOUNCED
        ),
    );
    assert_eq!(actions(&w.decide()), [Action::AcquireLock, Action::Promote]);
}

// ---- standby cluster

const SOURCE: &str = "10.0.0.9:5432";

fn standby_world(me: &str) -> World {
    let mut w = World::new(me);
    w.settings.standby_cluster = Some(SOURCE.into());
    w.memory.lock_deadline = Some(w.now + Duration::from_secs(20));
    w
}

fn follow_source() -> Action {
    Action::FollowSource {
        source: SOURCE.into(),
    }
}

#[test]
fn a_standby_clusters_lock_holder_replicates_from_the_source_and_never_promotes() {
    // n1 holds the lock and runs as a replica of a member.
    let mut w = standby_world("n1");
    let d = w.decide();
    assert_eq!(actions(&d), [Action::RenewLock, follow_source()]);
    assert_decided(&d, Rule::StandbyLeader, "replicating from 10.0.0.9:5432");
    w.local.following = Some(SOURCE.into());
    let d = w.decide();
    assert_eq!(actions(&d), [Action::RenewLock]);
    assert_decided(
        &d,
        Rule::StandbyLeader,
        "no action: I am the standby leader",
    );
    // standby_cluster removed: the same node promotes (promote-cluster).
    w.settings.standby_cluster = None;
    assert_eq!(actions(&w.decide()), [Action::RenewLock, Action::Promote]);
}

#[test]
fn a_primary_whose_cluster_becomes_a_standby_cluster_demotes_and_keeps_the_lock() {
    let mut w = standby_world("n1");
    w.primary();
    let d = w.decide();
    assert_eq!(
        actions(&d),
        [
            Action::RenewLock,
            Action::Demote {
                mode: StopMode::Fast
            }
        ]
    );
    assert_decided(&d, Rule::StandbyLeader, "standby cluster of 10.0.0.9:5432");
    // Stopped with the lock: it starts as the standby leader, not as
    // primary, rewound against the source first (it was a primary).
    let mut w = standby_world("n1");
    w.stopped().was_primary();
    let d = w.decide();
    assert_eq!(
        actions(&d),
        [
            Action::RenewLock,
            Action::StartStandbyLeader {
                source: SOURCE.into(),
                rewind: true,
            }
        ]
    );
    // Not when pg_rewind is off, nor for a standby leader's own restart.
    w.settings.use_pg_rewind = false;
    assert!(matches!(
        actions(&w.decide())[1],
        Action::StartStandbyLeader { rewind: false, .. }
    ));
    let mut w = standby_world("n1");
    w.stopped();
    assert!(matches!(
        actions(&w.decide())[1],
        Action::StartStandbyLeader { rewind: false, .. }
    ));
}

#[test]
fn in_a_standby_cluster_the_race_winner_follows_the_source_instead_of_promoting() {
    let mut w = standby_world("n2");
    w.memory.lock_deadline = None;
    w.no_leader().peer("n3", 900, 1);
    let d = w.decide();
    assert_eq!(actions(&d), [Action::AcquireLock, follow_source()]);
    assert_decided(&d, Rule::Race, "as the standby leader");
    // Its replicas follow it as in any cluster.
    let mut r = standby_world("n3");
    r.leader("n2");
    r.local.following = Some("n1".into());
    assert_eq!(
        actions(&r.decide()),
        [Action::Follow {
            leader: Some("n2".into())
        }]
    );
}

#[test]
fn a_paused_standby_leader_keeps_its_lock() {
    let mut w = standby_world("n1");
    w.settings.paused = true;
    let d = w.decide();
    assert_eq!(actions(&d), [Action::RenewLock]);
    assert_decided(&d, Rule::Paused, "standby leader");
}

#[test]
fn a_standby_leader_hands_over_for_a_switchover_and_the_candidate_follows_the_source() {
    let mut w = standby_world("n1");
    w.local.following = Some(SOURCE.into());
    w.set("failover", r#"{"leader":"n1","member":"n2"}"#)
        .peer("n2", 1000, 1)
        .peer("n3", 1000, 1);
    let d = w.decide();
    assert_eq!(
        actions(&d),
        [
            Action::RenewLock,
            Action::Demote {
                mode: StopMode::Graceful
            },
            Action::ReleaseLock
        ],
        "{d:?}"
    );
    let mut c = standby_world("n2");
    c.memory.lock_deadline = None;
    c.no_leader()
        .set("failover", r#"{"leader":"n1","member":"n2"}"#)
        .peer("n3", 1000, 1);
    assert_eq!(actions(&c.decide()), [Action::AcquireLock, follow_source()]);
}

// ---- cascading replication (replicatefrom)

#[test]
fn a_replica_follows_its_replicatefrom_member_while_it_runs_else_the_leader() {
    let mut w = World::new("n2");
    w.local.replicate_from = Some("n3".into());
    let d = w.decide();
    assert_eq!(
        actions(&d),
        [Action::Follow {
            leader: Some("n3".into())
        }]
    );
    assert_decided(
        &d,
        Rule::Follow,
        "following leader n1 through n3 (replicatefrom)",
    );
    w.local.following = Some("n3".into());
    assert_idle(
        &w.decide(),
        Rule::Follow,
        "a replica following n1 through n3",
    );
    // n3 stops: back to the leader.
    w.set("members/n3", &member_json("replica", "stopped", 1000));
    assert_eq!(
        actions(&w.decide()),
        [Action::Follow {
            leader: Some("n1".into())
        }]
    );
    // A stopped replica starts as one of its upstream.
    let mut s = World::new("n2");
    s.stopped();
    s.local.replicate_from = Some("n3".into());
    assert_eq!(
        actions(&s.decide()),
        [Action::StartReplica {
            leader: Some("n3".into())
        }]
    );
}
