//! `HaNode`, transition by transition.

use std::time::Duration;

use super::*;
use crate::ha::action::Action;
use crate::ha::world::*;

const T0: Duration = Duration::from_secs(100);

fn timing() -> Timing {
    Timing {
        ttl: Duration::from_secs(30),
        loop_wait: Duration::from_secs(10),
        retry_timeout: Duration::from_secs(10),
    }
}

/// A node whose cycle started at `T0`.
fn node() -> HaNode {
    let mut n = HaNode::new(timing());
    n.begin_cycle(T0);
    n
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn granted(n: &mut HaNode, call: LockCall) {
    n.handle(
        T0,
        Outcome::LockGranted {
            call,
            sent: T0,
            valid_for: secs(30),
        },
    );
}

// ---- the lock

#[test]
fn a_granted_lock_is_held_for_its_lifetime_from_the_send_time() {
    let mut n = node();
    assert!(!n.holds_lock(T0));
    n.handle(
        T0 + secs(2),
        Outcome::LockGranted {
            call: LockCall::Acquire,
            sent: T0,
            valid_for: secs(30),
        },
    );
    assert_eq!(n.memory().lock_deadline, Some(T0 + secs(30)));
    assert!(n.holds_lock(T0 + secs(29)));
    assert!(
        !n.holds_lock(T0 + secs(30)),
        "not a moment past the lifetime"
    );
}

#[test]
fn taking_the_lock_starts_the_next_cycle_at_once_renewing_it_does_not() {
    let mut n = node();
    granted(&mut n, LockCall::Acquire);
    assert_eq!(n.poll_timeout(T0), T0, "who leads changed: publish it now");
    n.begin_cycle(T0 + secs(1));
    assert!(n.poll_timeout(T0 + secs(1)) > T0 + secs(1));

    let mut n = node();
    granted(&mut n, LockCall::Reclaim);
    assert_eq!(n.poll_timeout(T0), T0);

    let mut n = node();
    granted(&mut n, LockCall::Renew);
    assert_eq!(n.poll_timeout(T0), T0 + secs(10), "one loop_wait");
}

#[test]
fn holding_the_lock_spends_the_right_a_bootstrap_gave() {
    let mut n = node();
    n.handle(T0, Outcome::JobStarted(Job::Bootstrap));
    n.handle(T0, Outcome::JobEnded(Job::Bootstrap, JobResult::Succeeded));
    assert!(n.memory().bootstrapped_here);
    granted(&mut n, LockCall::Acquire);
    assert!(!n.memory().bootstrapped_here);
}

#[test]
fn a_failed_renewal_keeps_the_lifetime_unless_the_lease_is_gone() {
    let cases = [
        (DcsError::unreachable("renew", "timeout"), true),
        (DcsError::not_owner("leader", Some("n9".into())), true),
        (DcsError::conflict("leader"), false),
        (DcsError::SessionExpired { what: "etcd lease" }, false),
        (DcsError::rejected("renew", "permission denied"), false),
    ];
    for (error, keeps) in cases {
        let mut n = node();
        granted(&mut n, LockCall::Renew);
        n.handle(
            T0 + secs(5),
            Outcome::LockFailed {
                call: LockCall::Renew,
                error: &error,
            },
        );
        assert_eq!(
            n.holds_lock(T0 + secs(5)),
            keeps,
            "after {error}: the lifetime is {}",
            if keeps { "kept" } else { "gone" }
        );
    }
}

// ---- failsafe mode

fn confirmed(n: &mut HaNode, sent: Duration) {
    n.handle(
        sent + secs(1),
        Outcome::FailsafeConfirmed {
            sent,
            valid_for: secs(30),
        },
    );
}

#[test]
fn a_failsafe_confirmation_extends_a_right_that_still_holds_from_the_round_send_time() {
    let mut n = node();
    granted(&mut n, LockCall::Renew); // until T0 + 30
    confirmed(&mut n, T0 + secs(18));
    assert_eq!(n.memory().lock_deadline, Some(T0 + secs(48)));
    assert_eq!(n.memory().failsafe_since, Some(T0 + secs(18)));
    assert!(n.failsafe_active(T0 + secs(40)));
    // The next round extends again; `failsafe_since` keeps its start.
    confirmed(&mut n, T0 + secs(36));
    assert_eq!(n.memory().lock_deadline, Some(T0 + secs(66)));
    assert_eq!(n.memory().failsafe_since, Some(T0 + secs(18)));
    // An older round's answer never shortens the right.
    confirmed(&mut n, T0 + secs(20));
    assert_eq!(n.memory().lock_deadline, Some(T0 + secs(66)));
}

#[test]
fn a_failsafe_confirmation_never_revives_a_lapsed_right() {
    let mut n = node();
    confirmed(&mut n, T0);
    assert_eq!(n.memory().lock_deadline, None, "no lock ever held");
    granted(&mut n, LockCall::Renew); // until T0 + 30
    // Sent within the fence margin of the end, or after it: a member may
    // already race for the lock.
    confirmed(&mut n, T0 + secs(29) + Duration::from_millis(500));
    confirmed(&mut n, T0 + secs(31));
    assert_eq!(n.memory().lock_deadline, Some(T0 + secs(30)));
    assert_eq!(n.memory().failsafe_since, None);
}

#[test]
fn in_failsafe_mode_a_failed_renewal_keeps_the_right_and_a_granted_lock_ends_the_mode() {
    let mut n = node();
    granted(&mut n, LockCall::Renew);
    confirmed(&mut n, T0 + secs(10));
    let gone = DcsError::SessionExpired { what: "etcd lease" };
    n.handle(
        T0 + secs(20),
        Outcome::LockFailed {
            call: LockCall::Renew,
            error: &gone,
        },
    );
    assert_eq!(n.memory().lock_deadline, Some(T0 + secs(40)));
    n.handle(
        T0 + secs(21),
        Outcome::LockGranted {
            call: LockCall::Acquire,
            sent: T0 + secs(20),
            valid_for: secs(30),
        },
    );
    assert_eq!(n.memory().lock_deadline, Some(T0 + secs(50)));
    assert_eq!(n.memory().failsafe_since, None);
    assert!(!n.failsafe_active(T0 + secs(21)));

    // A demotion ends it too (the right runs out on its own).
    confirmed(&mut n, T0 + secs(25));
    assert!(n.failsafe_active(T0 + secs(26)));
    n.handle(T0 + secs(26), Outcome::Demoting);
    assert!(!n.failsafe_active(T0 + secs(26)));
}

#[test]
fn a_round_is_due_only_for_a_running_primary_with_a_right_left_in_failsafe_mode() {
    let mut w = World::new("n1");
    w.primary();
    w.settings.failsafe_mode = true;
    let mut n = node();
    assert!(!n.failsafe_round_due(T0, &w.settings, &w.local), "no right");
    granted(&mut n, LockCall::Renew);
    assert!(n.failsafe_round_due(T0 + secs(5), &w.settings, &w.local));
    assert!(!n.failsafe_round_due(
        T0 + secs(29) + Duration::from_millis(1),
        &w.settings,
        &w.local
    ));
    w.settings.paused = true;
    assert!(!n.failsafe_round_due(T0 + secs(5), &w.settings, &w.local));
    w.settings.paused = false;
    w.settings.failsafe_mode = false;
    assert!(!n.failsafe_round_due(T0 + secs(5), &w.settings, &w.local));
    w.settings.failsafe_mode = true;
    w.local.role = Some(PgRole::Replica);
    assert!(!n.failsafe_round_due(T0 + secs(5), &w.settings, &w.local));
}

#[test]
fn a_primary_demoted_for_want_of_the_dcs_remembers_it_until_postgres_runs_or_another_leads() {
    let mut w = World::new("n1");
    w.primary();
    w.dcs_down = true;
    let mut n = node();
    let cluster = w.cluster();
    let d = n.decide(T0, w.inputs(&cluster));
    assert_eq!(d.rule, crate::ha::rule::Rule::NoDcs);
    assert!(n.memory().demoted_offline);
    assert!(n.takes_lock_back(&w.settings));
    let mut sync = w.settings.clone();
    sync.sync_mode = crate::ha::SyncMode::On { strict: false };
    assert!(!n.takes_lock_back(&sync), "not in a synchronous mode");

    let mut again = n.clone();
    again.handle(
        T0,
        Outcome::PostgresSeen {
            role: Some(PgRole::Replica),
        },
    );
    assert!(!again.memory().demoted_offline);

    // Another member leads: nothing to take back.
    w.dcs_down = false;
    w.leader("n2");
    let cluster = w.cluster();
    n.observe(T0, &w.inputs(&cluster));
    assert!(!n.memory().demoted_offline);
}

#[test]
fn losing_the_race_for_a_free_lock_changes_nothing() {
    let mut n = node();
    let before = n.memory().clone();
    let error = DcsError::conflict("leader");
    n.handle(
        T0,
        Outcome::LockFailed {
            call: LockCall::Acquire,
            error: &error,
        },
    );
    assert_eq!(n.memory(), &before);
    assert_eq!(n.poll_timeout(T0), T0 + secs(10));
}

#[test]
fn a_released_lock_is_not_held() {
    let mut n = node();
    granted(&mut n, LockCall::Acquire);
    n.handle(T0 + secs(1), Outcome::LockReleased);
    assert!(!n.holds_lock(T0 + secs(1)));
    assert_eq!(n.memory().lock_deadline, None);
}

#[test]
fn removing_an_unowned_key_starts_the_next_cycle_at_once() {
    let mut n = node();
    n.handle(T0, Outcome::UnownedLockRemoved);
    assert_eq!(n.poll_timeout(T0), T0);
    n.begin_cycle(T0 + secs(1));
    assert_eq!(n.poll_timeout(T0 + secs(1)), T0 + secs(11));
}

#[test]
fn the_leader_wakes_in_time_to_renew_before_its_lock_runs_out() {
    let mut n = node();
    n.handle(
        T0,
        Outcome::LockGranted {
            call: LockCall::Renew,
            sent: T0,
            // A Consul session: only ttl/2 guaranteed.
            valid_for: secs(15),
        },
    );
    // deadline T0+15 - (retry_timeout 10 + margin 1) = T0+4, before loop_wait.
    assert_eq!(n.poll_timeout(T0), T0 + secs(4));
    // Already past that point: wake almost at once, never in the past.
    assert_eq!(
        n.poll_timeout(T0 + secs(6)),
        T0 + secs(6) + Duration::from_millis(100)
    );
}

// ---- jobs

#[test]
fn a_started_job_is_in_progress_until_it_ends_or_is_cancelled() {
    let mut n = node();
    n.handle(T0, Outcome::JobStarted(Job::Restart));
    assert_eq!(n.memory().job, Some(Job::Restart));
    n.handle(T0, Outcome::JobEnded(Job::Restart, JobResult::Succeeded));
    assert_eq!(n.memory().job, None);
    n.handle(
        T0,
        Outcome::JobStarted(Job::Clone {
            source: "n1".into(),
        }),
    );
    n.handle(T0, Outcome::JobCancelled);
    assert_eq!(n.memory().job, None);
}

#[test]
fn a_rewind_or_reinitialize_stops_postgres_so_its_absence_is_no_crash() {
    for job in [
        Job::Rewind {
            source: "n1".into(),
        },
        Job::Reinitialize {
            source: "n1".into(),
        },
    ] {
        let mut n = node();
        n.handle(
            T0,
            Outcome::PostgresSeen {
                role: Some(PgRole::Replica),
            },
        );
        assert!(
            n.crashed(false),
            "a running PostgreSQL that vanished crashed"
        );
        n.handle(T0, Outcome::JobStarted(job.clone()));
        assert!(!n.crashed(false), "{job:?} stopped it on purpose");
    }
}

#[test]
fn starting_as_primary_counts_the_start_timeout_from_the_first_attempt() {
    let mut n = node();
    n.handle(T0, Outcome::Demoting);
    assert!(n.memory().demoted);
    n.handle(T0, Outcome::JobStarted(Job::Start { as_primary: true }));
    assert_eq!(n.memory().primary_start_since, Some(T0));
    assert!(
        !n.memory().demoted,
        "starting as primary undoes the demotion"
    );
    n.handle(
        T0,
        Outcome::JobEnded(Job::Start { as_primary: true }, JobResult::Failed),
    );
    n.handle(
        T0 + secs(20),
        Outcome::JobStarted(Job::Start { as_primary: true }),
    );
    assert_eq!(
        n.memory().primary_start_since,
        Some(T0),
        "kept, not restarted"
    );
    n.handle(
        T0 + secs(25),
        Outcome::PostgresSeen {
            role: Some(PgRole::Primary),
        },
    );
    assert_eq!(n.memory().primary_start_since, None, "it runs now");
}

#[test]
fn a_failed_start_or_restart_is_remembered_until_postgres_answers() {
    for job in [Job::Start { as_primary: false }, Job::Restart] {
        let mut n = node();
        n.begin_cycle(T0);
        n.handle(T0, Outcome::JobStarted(job.clone()));
        n.handle(T0, Outcome::JobEnded(job.clone(), JobResult::Failed));
        assert_eq!(n.memory().start_failed, Some(T0), "{job:?}");
        n.handle(T0, Outcome::PostgresSeen { role: None });
        assert_eq!(
            n.memory().start_failed,
            Some(T0),
            "not answering is no news"
        );
        n.handle(
            T0,
            Outcome::PostgresSeen {
                role: Some(PgRole::Replica),
            },
        );
        assert_eq!(n.memory().start_failed, None);
        assert!(n.memory().expect_running);
    }
}

#[test]
fn a_started_replica_is_looked_at_every_second_until_it_streams() {
    let mut n = node();
    n.handle(T0, Outcome::JobStarted(Job::Start { as_primary: false }));
    n.handle(
        T0,
        Outcome::JobEnded(Job::Start { as_primary: false }, JobResult::Succeeded),
    );
    assert!(n.memory().expect_running);
    assert_eq!(n.poll_timeout(T0), T0 + QUICK_CHECK);
    // For one loop_wait at most.
    n.begin_cycle(T0 + secs(10));
    assert_eq!(n.poll_timeout(T0 + secs(10)), T0 + secs(20));
    // And not once it streams.
    let mut n = node();
    n.handle(T0, Outcome::Followed);
    assert_eq!(n.poll_timeout(T0), T0 + QUICK_CHECK);
    n.handle(T0, Outcome::StreamsFromLeader);
    assert_eq!(n.poll_timeout(T0), T0 + secs(10));
}

#[test]
fn a_started_primary_is_not_looked_at_more_often() {
    let mut n = node();
    n.handle(T0, Outcome::JobStarted(Job::Start { as_primary: true }));
    n.handle(
        T0,
        Outcome::JobEnded(Job::Start { as_primary: true }, JobResult::Succeeded),
    );
    assert_eq!(n.poll_timeout(T0), T0 + secs(10));
}

#[test]
fn a_bootstrap_entitles_to_the_free_lock_only_if_it_succeeded() {
    let mut n = node();
    n.handle(T0, Outcome::JobStarted(Job::Bootstrap));
    n.handle(T0, Outcome::JobEnded(Job::Bootstrap, JobResult::Failed));
    assert!(!n.memory().bootstrapped_here);
    assert!(!n.memory().expect_running);
    n.handle(T0, Outcome::JobStarted(Job::Bootstrap));
    n.handle(T0, Outcome::JobEnded(Job::Bootstrap, JobResult::Succeeded));
    assert!(n.memory().bootstrapped_here);
    assert!(n.memory().expect_running, "bootstrap leaves it running");
}

#[test]
fn a_rewind_is_remembered_against_its_leader_as_done_or_failed() {
    let mut n = node();
    let rewind = |s: &str| Job::Rewind { source: s.into() };
    n.handle(T0, Outcome::JobStarted(rewind("n1")));
    n.handle(T0, Outcome::JobEnded(rewind("n1"), JobResult::Succeeded));
    assert_eq!(n.memory().rewound_against.as_deref(), Some("n1"));
    n.handle(T0, Outcome::JobStarted(rewind("n2")));
    n.handle(T0, Outcome::JobEnded(rewind("n2"), JobResult::Failed));
    assert_eq!(n.memory().rewind_failed_against.as_deref(), Some("n2"));
}

#[test]
fn a_promotion_owes_its_checkpoint_until_it_ends() {
    for result in [JobResult::Succeeded, JobResult::Failed] {
        let mut n = node();
        granted(&mut n, LockCall::Acquire);
        n.handle(T0, Outcome::Demoting);
        n.handle(T0, Outcome::JobStarted(Job::Promote));
        assert!(n.memory().checkpoint_pending);
        n.handle(T0 + secs(1), Outcome::JobEnded(Job::Promote, result));
        assert!(!n.memory().checkpoint_pending);
        assert_eq!(n.memory().demoted, result != JobResult::Succeeded);
        assert!(
            n.holds_lock(T0 + secs(1)),
            "a failed promotion keeps the lock"
        );
        assert_eq!(n.memory().no_race_until, None);
    }
}

#[test]
fn a_vetoed_promotion_gives_the_lock_up_and_stays_out_of_the_race_for_a_ttl() {
    let mut n = node();
    granted(&mut n, LockCall::Acquire);
    n.handle(T0, Outcome::JobStarted(Job::Promote));
    n.handle(
        T0 + secs(2),
        Outcome::JobEnded(Job::Promote, JobResult::Vetoed),
    );
    assert!(!n.holds_lock(T0 + secs(2)));
    assert_eq!(n.memory().no_race_until, Some(T0 + secs(32)));
    assert!(!n.memory().checkpoint_pending);
}

// ---- PostgreSQL

#[test]
fn a_postgres_seen_answering_is_expected_to_keep_running() {
    let mut n = node();
    assert!(!n.crashed(false), "never seen: not a crash");
    n.handle(
        T0,
        Outcome::PostgresSeen {
            role: Some(PgRole::Replica),
        },
    );
    assert!(!n.crashed(true));
    assert!(n.crashed(false));
}

#[test]
fn a_demotion_or_a_shutdown_stops_postgres_on_purpose() {
    let mut n = node();
    n.handle(
        T0,
        Outcome::PostgresSeen {
            role: Some(PgRole::Primary),
        },
    );
    n.handle(T0, Outcome::Demoting);
    assert!(n.memory().demoted);
    assert!(!n.crashed(false));

    let mut n = node();
    n.handle(
        T0,
        Outcome::PostgresSeen {
            role: Some(PgRole::Replica),
        },
    );
    n.handle(T0, Outcome::ShuttingDown);
    assert!(!n.crashed(false));
    assert!(!n.memory().demoted);
}

// ---- decide

#[test]
fn decide_sees_a_postmaster_that_does_not_answer_yet_as_a_start_in_progress() {
    let mut w = World::new("n2");
    w.stopped();
    w.local.starting = Some(PgRole::Replica);
    let cluster = w.cluster();
    let mut n = node();
    let d = n.decide(T0, w.inputs(&cluster));
    assert!(d.actions.is_empty(), "{d:?}");
    assert!(d.reason.contains("start as replica in progress"), "{d:?}");
    assert_eq!(n.memory().job, None, "no job of the agent's own");

    w.local.starting = None;
    let d = n.decide(T0, w.inputs(&cluster));
    assert!(
        d.actions.contains(&Action::StartReplica {
            leader: Some("n1".into())
        }),
        "{d:?}"
    );
}

#[test]
fn a_failed_start_is_tried_again_a_loop_wait_later_not_at_once() {
    let mut w = World::new("n2");
    w.stopped();
    let cluster = w.cluster();
    let mut n = node();
    let start = Job::Start { as_primary: false };
    n.begin_cycle(T0);
    n.handle(T0, Outcome::JobStarted(start.clone()));
    n.handle(T0, Outcome::JobEnded(start, JobResult::Failed));
    let loop_wait = timing().loop_wait;
    let d = n.decide(T0 + secs(1), w.inputs(&cluster));
    assert!(d.actions.is_empty(), "{d:?}");
    assert!(d.reason.contains("the last start failed 1.0s ago"), "{d:?}");
    let d = n.decide(T0 + loop_wait, w.inputs(&cluster));
    assert!(
        d.actions.contains(&Action::StartReplica {
            leader: Some("n1".into())
        }),
        "{d:?}"
    );
}

#[test]
fn observing_notes_that_the_data_belongs_to_the_cluster() {
    let w = World::new("n2");
    let cluster = w.cluster();
    let mut n = node();
    assert!(!n.memory().belongs_to_cluster);
    n.observe(T0, &w.inputs(&cluster));
    assert!(n.memory().belongs_to_cluster);
}

#[test]
fn observing_counts_since_when_the_leader_key_is_unowned() {
    let mut w = World::new("n2");
    w.leader_unowned = true;
    let cluster = w.cluster();
    let mut n = node();
    n.observe(T0, &w.inputs(&cluster));
    n.observe(T0 + secs(5), &w.inputs(&cluster));
    let since = n.memory().unowned_lock_since.as_ref().map(|(_, t)| *t);
    assert_eq!(
        since,
        Some(T0),
        "the same key: counted from the first sight"
    );
}

#[test]
fn observing_reports_when_replication_breaks_and_heals() {
    let mut w = World::new("n2");
    w.local.replication_state = None;
    w.local.receiver_sender = None;
    let cluster = w.cluster();
    let limit = w.settings.not_streaming_limit;
    let mut n = node();
    // The first look learns who leads, the second starts counting.
    assert_eq!(n.observe(T0, &w.inputs(&cluster)), (false, false));
    assert_eq!(n.observe(T0, &w.inputs(&cluster)), (false, false));
    // The leader's agent lives: its key is rewritten between the looks.
    let (later, last) = (w.cluster_rewritten(1), w.cluster_rewritten(2));
    assert_eq!(
        n.observe(T0 + limit, &w.inputs(&later)),
        (false, false),
        "exactly the limit is not more than it"
    );
    assert_eq!(
        n.observe(T0 + limit + secs(1), &w.inputs(&last)),
        (false, true)
    );
    w.local.replication_state = Some("streaming".into());
    w.local.receiver_sender = Some(crate::ha::Endpoint::new("127.0.0.1", 5432));
    assert_eq!(
        n.observe(T0 + limit + secs(2), &w.inputs(&last)),
        (true, false),
        "healed"
    );
}

#[test]
fn a_dead_leaders_lingering_key_does_not_make_its_replicas_broken() {
    // The leader died with its replicas streaming; its key (still saying
    // "running") outlives ttl, as a loaded etcd's did for 12 s at ttl 5.
    let mut w = World::new("n2");
    let mut n = node();
    let limit = w.settings.not_streaming_limit;
    let t = n.timing();
    let alive = w.cluster();
    assert_eq!(n.observe(T0, &w.inputs(&alive)), (false, false));
    w.local.replication_state = None;
    w.local.receiver_sender = None;
    let mut at = T0;
    while at < T0 + limit * 3 {
        at += t.loop_wait;
        assert_eq!(
            n.observe(at, &w.inputs(&alive)),
            (false, false),
            "at {at:?}: the key stopped changing at {T0:?}"
        );
    }
    assert!(n.memory().streaming.not_streaming_for <= 2 * w.settings.upstream_silence_limit);
    // The same silence with the key rewritten every cycle (the leader's
    // agent lives, this replica does not stream from it): broken.
    let mut round = 0;
    while at < T0 + limit * 6 {
        at += t.loop_wait;
        round += 1;
        n.observe(at, &w.inputs(&w.cluster_rewritten(round)));
    }
    assert!(n.memory().streaming.broken(limit));
}

#[test]
fn the_race_memory_follows_the_requests_and_maintenance_mode() {
    use crate::ha::world::World;
    let mut w = World::new("n3");
    let mut node = HaNode::new(crate::model::Timing::default());
    // Paused with n1 leading: n1 is remembered.
    w.settings.paused = true;
    let c = w.cluster();
    node.observe(w.now, &w.inputs(&c));
    assert_eq!(node.memory().paused_leader.as_deref(), Some("n1"));
    // The pause ends and the lock lapses: still remembered.
    w.settings.paused = false;
    w.no_leader();
    let c = w.cluster();
    node.observe(w.now, &w.inputs(&c));
    assert_eq!(node.memory().paused_leader.as_deref(), Some("n1"));
    // The leader again, its member key as it was during the pause (its
    // writes since failed): still remembered.
    w.leader("n1");
    let mut c = w.cluster();
    let seen = node.memory().paused_leader_key.clone();
    if let (Some(m), Some(v)) = (c.members.iter_mut().find(|m| m.name == "n1"), seen) {
        m.version = v;
    }
    node.observe(w.now, &w.inputs(&c));
    assert_eq!(node.memory().paused_leader.as_deref(), Some("n1"));
    // Written again, without the pause: forgotten.
    w.set("members/n1", &member_json("primary", "running", 1000));
    let c = w.cluster();
    node.observe(w.now, &w.inputs(&c));
    assert_eq!(node.memory().paused_leader, None);
    // A leader whose member key still says paused (its agent has not seen
    // the pause end): remembered.
    w.set(
        "members/n1",
        r#"{"conn_url":"postgres://127.0.0.1:5432/postgres","state":"running","role":"primary","pause":true}"#,
    );
    let c = w.cluster();
    node.observe(w.now, &w.inputs(&c));
    assert_eq!(node.memory().paused_leader.as_deref(), Some("n1"));

    // A free lock and a request naming another candidate: counted from
    // the first such observation, reset when a leader is back.
    w.no_leader().set("failover", r#"{"member":"n2"}"#);
    let c = w.cluster();
    node.observe(w.now, &w.inputs(&c));
    let later = w.now + Duration::from_secs(5);
    node.observe(later, &w.inputs(&c));
    assert_eq!(node.memory().candidate_awaited_since, Some(w.now));
    w.leader("n2");
    let c = w.cluster();
    node.observe(later, &w.inputs(&c));
    assert_eq!(node.memory().candidate_awaited_since, None);
}
