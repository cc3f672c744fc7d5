//! The simulator as part of the test suite: a sweep of seeded schedules
//! (CI runs 100,000 more through `scripts/simulate.sh`), every seed that
//! once broke an invariant, determinism, and proof that the invariants
//! catch what the protections guard against.

use pgha_sim::faults::Fault;
use pgha_sim::{Options, Protections, Report, Scenario, Violation, run_scenario, run_seed};

/// Fails with every broken schedule's report and the command replaying it.
#[track_caller]
fn assert_clean(reports: &[Report], without: &str) {
    let broken: Vec<String> = reports
        .iter()
        .filter_map(|r| {
            r.violation.as_ref().map(|v| {
                format!(
                    "seed {}: {v}\n  scenario: {}\n  replay: scripts/simulate.sh --replay {}{without}\n  {}",
                    r.seed,
                    r.scenario,
                    r.seed,
                    r.trace_tail
                        .iter()
                        .rev()
                        .take(15)
                        .rev()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("\n  ")
                )
            })
        })
        .collect();
    assert!(broken.is_empty(), "{}", broken.join("\n\n"));
}

#[test]
fn a_sweep_of_schedules_breaks_no_invariant() {
    let reports: Vec<Report> = (1_000_000..1_000_300)
        .map(|s| run_seed(s, Options::default()))
        .collect();
    assert_clean(&reports, "");
    // The schedules did something: every one converged after its faults.
    assert!(reports.iter().all(|r| r.converged_after.is_some()));
    assert!(reports.iter().all(|r| r.commits > 0));
}

/// Seeds that broke an invariant while the simulator was being built, and
/// what each found. Kept so that none comes back. Found before restart
/// requests, slow lease revocation and a lost leader host were drawn
/// (each from a stream of its own, added to a schedule): they run without
/// them, exactly the schedules that failed.
const FOUND_BEFORE_RESTARTS: &[(u64, &str)] = &[
    (
        185,
        "sync switchover to a non-synchronous candidate left the cluster leaderless",
    ),
    (
        375,
        "a lock that lapsed in maintenance mode, taken while its primary still ran",
    ),
    (
        442,
        "quorum: a requested candidate promoted without the voters' votes lost acknowledged commits",
    ),
    (
        1107,
        "maintenance mode and a DCS outage longer than ttl: split brain after resume",
    ),
    (
        1252,
        "an old primary on timeline 1 beat members on timeline 2 by WAL position",
    ),
    (
        1472,
        "a paused primary cut off from the DCS did not learn that the pause ended",
    ),
    (
        1606,
        "a frozen agent when maintenance mode ended: its guard still thought it paused",
    ),
    (
        1967,
        "slow DCS calls moved the simulated server clock (a simulator bug)",
    ),
    (
        2004,
        "an operator failover to a stale member reused timeline 2",
    ),
    (
        697,
        "a replica of a timeline the leader never passed through was not seen to diverge",
    ),
    (
        6753,
        "a node that could not see maintenance mode raced after it ended",
    ),
    (
        7487,
        "a failover requested during maintenance mode (a simulated-operator bound)",
    ),
    (
        12107,
        "quorum: a hand-over to a member outside the key looped forever",
    ),
    (
        24672,
        "quorum: an old primary outside the key held the key's leader back for ever (and later: an announced promotion that never happened stopped every race)",
    ),
    (
        34620,
        "the guard model did not stop a standby under the lock (a simulator bug)",
    ),
    (
        48682,
        "a failover requested while the leader still held the lock (a simulated-operator bound)",
    ),
    (
        82475,
        "a paused switchover candidate took the lock its frozen leader let lapse",
    ),
    (
        59339,
        "quorum: GET /patroni answered the last cycle's WAL position, so a voter behind won",
    ),
    (
        71452,
        "standbys did not take the lineage with a timeline switch (a simulator bug)",
    ),
    (
        206145,
        "maintenance mode: the leader's member-key writes failed during the pause, so its old key (no pause) made the others forget it",
    ),
    (
        22780,
        "the history key rewritten as the leader's lineage forgot a timeline a dead leader took",
    ),
    (
        4676,
        "a promotion during a DCS outage went unrecorded, and another member reused its timeline",
    ),
    (
        7,
        "failsafe mode: a switchover to a member the failsafe key did not name yet left the cluster leaderless",
    ),
    (
        90290,
        "failsafe mode: the key gained a member while the primary ran on confirmations that never asked it; it raced",
    ),
];

#[test]
fn every_seed_that_once_broke_an_invariant_now_holds() {
    let reports: Vec<Report> = FOUND_BEFORE_RESTARTS
        .iter()
        .map(|(s, _)| {
            let mut scenario = Scenario::from_seed(*s);
            scenario
                .faults
                .retain(|p| !matches!(p.fault, Fault::Restart { .. }));
            scenario.revocation_delay = std::time::Duration::ZERO;
            scenario.leader_host_lost = false;
            run_scenario(scenario, Options::default())
        })
        .collect();
    assert_clean(&reports, "");
    let reports: Vec<Report> = FOUND_SINCE
        .iter()
        .map(|(s, _)| run_seed(*s, Options::default()))
        .collect();
    assert_clean(&reports, "");
}

/// Seeds found since, run as drawn.
const FOUND_SINCE: &[(u64, &str)] = &[(
    5,
    "an etcd slow to revoke a dead leader's lease: every replica counted its not-streaming \
     time past the limit while the key lingered, and nobody took over",
)];

#[test]
fn a_seed_replays_exactly() {
    for seed in [3, 442, 82475] {
        let a = run_seed(seed, Options::default());
        let b = run_seed(seed, Options::default());
        assert_eq!(a.trace_tail, b.trace_tail, "seed {seed}");
        assert_eq!(
            (a.commits, a.acknowledged, a.events),
            (b.commits, b.acknowledged, b.events)
        );
    }
}

/// The first violation in seeds `0..limit` with `protections`.
fn first_violation(protections: Protections, limit: u64) -> Option<(u64, Violation)> {
    (0..limit).find_map(|s| {
        run_seed(
            s,
            Options {
                trace: false,
                record: false,
                protections,
            },
        )
        .violation
        .map(|v| (s, v))
    })
}

#[test]
fn without_the_fences_the_simulator_finds_two_primaries() {
    let found = first_violation(
        Protections {
            fences: false,
            ..Protections::default()
        },
        300,
    );
    assert!(
        matches!(found, Some((_, Violation::TwoPrimaries { .. }))),
        "{found:?}"
    );
}

#[test]
fn without_the_synchronous_race_rules_the_simulator_finds_lost_commits() {
    let found = first_violation(
        Protections {
            sync_race: false,
            ..Protections::default()
        },
        300,
    );
    assert!(
        matches!(found, Some((_, Violation::LostAcknowledged { .. }))),
        "{found:?}"
    );
}

#[test]
fn counting_while_a_dead_leaders_key_lingers_leaves_the_cluster_without_a_leader() {
    // Replicas that count their not-streaming time for as long as a dead
    // leader's key says it runs (a DCS slow to revoke its lease) all pass
    // the limit, stay out of the race, and nobody takes over.
    let found = first_violation(
        Protections {
            silent_upstream: false,
            ..Protections::default()
        },
        300,
    );
    assert!(
        matches!(found, Some((_, Violation::NoConvergence { .. }))),
        "{found:?}"
    );
}

#[test]
fn without_the_failsafe_promise_the_simulator_finds_two_primaries() {
    // Members that confirm a primary in failsafe mode and race all the
    // same: a primary cut off from the DCS only runs on while another
    // takes the expired lock.
    let found = first_violation(
        Protections {
            failsafe_promise: false,
            ..Protections::default()
        },
        300,
    );
    assert!(
        matches!(found, Some((_, Violation::TwoPrimaries { .. }))),
        "{found:?}"
    );
}
