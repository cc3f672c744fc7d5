use super::*;
use crate::ha::observation::PeerStatus;
use crate::model::{RawEntry, Version};

fn member(name: &str) -> SyncMember {
    SyncMember {
        name: name.into(),
        running: true,
        nosync: false,
        nofailover: false,
        sync_priority: 1,
    }
}

fn ws(name: &str, state: &str, flush: u64) -> Walsender {
    Walsender {
        name: name.into(),
        sync_state: state.into(),
        flush_lsn: Some(flush),
    }
}

fn key(leader: &str, standbys: &[&str]) -> SyncState {
    key_value(
        leader,
        &standbys.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    )
}

/// The leader `n1`'s view, mutable step by step.
struct Leader {
    keeper: SyncKeeper,
    settings: SyncSettings,
    members: Vec<SyncMember>,
    walsenders: Vec<Walsender>,
    running: String,
    key: Option<SyncState>,
    lsn: u64,
    managing: bool,
}

impl Leader {
    fn new(strict: bool) -> Self {
        Leader {
            keeper: SyncKeeper::default(),
            settings: SyncSettings {
                mode: SyncMode::On { strict },
                node_count: 1,
                maximum_lag_on_syncnode: -1,
            },
            members: vec![member("n1"), member("n2"), member("n3")],
            walsenders: vec![ws("n2", "async", 100), ws("n3", "async", 90)],
            running: String::new(),
            key: None,
            lsn: 100,
            managing: false,
        }
    }

    fn step(&mut self) -> (SyncStep, String) {
        let v = SyncView {
            me: "n1",
            settings: self.settings,
            members: &self.members,
            walsenders: &self.walsenders,
            running_names: &self.running,
            managing_names: self.managing,
            key: self.key.as_ref(),
            primary_lsn: Some(self.lsn),
        };
        self.keeper.next(&v)
    }

    /// Carries steps out (PostgreSQL marks listed standbys `sync` at once)
    /// until settled; returns the steps.
    fn settle(&mut self) -> Vec<SyncStep> {
        let mut steps = Vec::new();
        for _ in 0..10 {
            let (step, _) = self.step();
            match &step {
                SyncStep::Settled | SyncStep::Waiting => return steps,
                SyncStep::WriteKey(k) => self.key = Some(k.clone()),
                SyncStep::DeleteKey => self.key = None,
                SyncStep::SetNames(n) => {
                    self.running = n.clone();
                    self.managing = true;
                    let names = StandbyNames::parse(n).unwrap();
                    for w in &mut self.walsenders {
                        w.sync_state = if names.contains(&w.name) {
                            "sync".into()
                        } else {
                            "async".into()
                        };
                    }
                }
                SyncStep::ReleaseNames => {
                    self.running.clear();
                    self.managing = false;
                }
            }
            steps.push(step);
        }
        panic!("not settled after 10 steps: {steps:?}");
    }

    fn standbys(&self) -> Vec<String> {
        self.key
            .as_ref()
            .map(|k| k.standbys().iter().map(|s| s.to_string()).collect())
            .unwrap_or_default()
    }
}

#[test]
fn names_parse_as_postgresql_reads_them() {
    let p = |s: &str| StandbyNames::parse(s);
    assert_eq!(p("").unwrap(), StandbyNames::none());
    assert_eq!(p("n2").unwrap(), StandbyNames::first(1, &["n2".into()]));
    assert_eq!(
        p("n2, n3").unwrap(),
        StandbyNames::first(1, &["n2".into(), "n3".into()])
    );
    assert_eq!(
        p("2 (n2,n3)").unwrap(),
        StandbyNames::first(2, &["n2".into(), "n3".into()])
    );
    assert_eq!(
        p("FIRST 2 (\"n2\", \"N 3\")").unwrap(),
        StandbyNames::first(2, &["n2".into(), "N 3".into()])
    );
    let any = p("any 1 (a, b)").unwrap();
    assert_eq!(any.method, Method::Any);
    assert!(!any.requires_all());
    assert!(p("*").unwrap().has_wildcard());
    assert!(!p("*").unwrap().requires_all());
    for bad in ["FIRST 2 (a,", "(a)", "a,,b", "0 (a)", "\"a"] {
        assert_eq!(p(bad), None, "{bad}");
    }
}

#[test]
fn rendered_names_read_back_the_same() {
    for names in [
        StandbyNames::none(),
        StandbyNames::all_of(&["n2".into()]),
        StandbyNames::all_of(&["n3".into(), "n2".into()]),
        StandbyNames::first(1, &["we\"ird".into(), "b".into()]),
    ] {
        assert_eq!(
            StandbyNames::parse(&names.render()).unwrap(),
            names,
            "{names:?}"
        );
    }
    assert_eq!(
        StandbyNames::all_of(&["n3".into(), "n2".into()]).render(),
        "FIRST 2 (\"n2\",\"n3\")"
    );
}

#[test]
fn the_key_names_a_standby_only_after_it_is_synchronous() {
    let mut l = Leader::new(false);
    let steps = l.settle();
    assert_eq!(
        steps,
        vec![
            SyncStep::WriteKey(key("n1", &[])),
            SyncStep::SetNames("\"n2\"".into()),
            SyncStep::WriteKey(key("n1", &["n2"])),
        ]
    );
}

#[test]
fn a_standby_that_has_not_caught_up_is_not_named() {
    let mut l = Leader::new(false);
    l.key = Some(key("n1", &[]));
    assert_eq!(l.step().0, SyncStep::SetNames("\"n2\"".into()));
    l.running = "\"n2\"".into();
    // Reported sync, but behind the position when the value took effect.
    l.walsenders[0] = ws("n2", "sync", 50);
    l.lsn = 100;
    let (step, why) = l.step();
    assert_eq!(step, SyncStep::Waiting);
    assert!(why.contains("waiting for n2 to catch up"), "{why}");
    l.walsenders[0].flush_lsn = Some(100);
    assert_eq!(l.step().0, SyncStep::WriteKey(key("n1", &["n2"])));
}

#[test]
fn a_standby_leaves_the_key_before_it_leaves_synchronous_standby_names() {
    let mut l = Leader::new(false);
    l.settle();
    assert_eq!(l.standbys(), vec!["n2"]);
    // n2 disconnects: its walsender row is gone.
    l.walsenders.retain(|w| w.name != "n2");
    assert_eq!(l.step().0, SyncStep::WriteKey(key("n1", &[])));
    l.key = Some(key("n1", &[]));
    assert_eq!(l.step().0, SyncStep::SetNames("\"n3\"".into()));
    // n3 is behind the primary: listed, but not named until it catches up.
    assert_eq!(l.settle(), vec![SyncStep::SetNames("\"n3\"".into())]);
    assert!(l.standbys().is_empty());
    l.walsenders[0].flush_lsn = Some(100);
    assert_eq!(l.settle(), vec![SyncStep::WriteKey(key("n1", &["n3"]))]);
}

#[test]
fn a_swap_for_lag_never_leaves_the_old_standby_in_the_key() {
    let mut l = Leader::new(false);
    l.settings.maximum_lag_on_syncnode = 1000;
    l.settle();
    assert_eq!(l.standbys(), vec!["n2"]);
    // n2 hangs (still connected, still `sync`), n3 moves on.
    l.lsn = 10_000;
    l.walsenders[1].flush_lsn = Some(9_900);
    let (step, _) = l.step();
    assert_eq!(step, SyncStep::WriteKey(key("n1", &[])), "shrink first");
    l.key = Some(key("n1", &[]));
    assert_eq!(l.step().0, SyncStep::SetNames("\"n3\"".into()));
}

#[test]
fn without_a_standby_commits_go_async_unless_strict() {
    let mut l = Leader::new(false);
    l.walsenders.clear();
    l.settle();
    assert_eq!(l.running, "");
    assert!(l.standbys().is_empty());
    assert_eq!(l.key.as_ref().unwrap().leader.as_deref(), Some("n1"));

    let mut s = Leader::new(true);
    s.walsenders.clear();
    s.settle();
    assert_eq!(
        s.running, "FIRST 1 (\"n2\",\"n3\")",
        "members only, never '*'"
    );
    assert!(s.standbys().is_empty());

    let mut alone = Leader::new(true);
    alone.walsenders.clear();
    alone.members.truncate(1);
    alone.settle();
    assert_eq!(alone.running, format!("\"{NO_STANDBY}\""));
}

#[test]
fn nosync_members_and_other_walsenders_are_never_synchronous() {
    let mut l = Leader::new(true);
    l.members[1].nosync = true;
    l.members[2].running = false;
    l.walsenders.push(ws("pg_receivewal", "async", 100));
    l.settle();
    assert!(l.standbys().is_empty());
    assert_eq!(l.running, "\"n3\"", "strict: wait for a member");
}

#[test]
fn synchronous_node_count_and_priorities_choose_the_standbys() {
    let mut l = Leader::new(false);
    l.settings.node_count = 2;
    l.members.push(member("n4"));
    l.walsenders.push(ws("n4", "async", 100));
    l.members[3].sync_priority = 5;
    l.settle();
    assert_eq!(l.running, "FIRST 2 (\"n2\",\"n4\")");
    assert_eq!(l.standbys(), vec!["n2", "n4"]);
    assert_eq!(
        l.key.as_ref().unwrap().sync_standby.as_deref(),
        Some("n2,n4")
    );
}

#[test]
fn a_former_leaders_key_is_taken_before_anything_else() {
    let mut l = Leader::new(false);
    l.key = Some(key("n0", &["n1", "n2"]));
    l.running = "\"n2\"".into();
    l.walsenders[0].sync_state = "sync".into();
    assert_eq!(l.step().0, SyncStep::WriteKey(key("n1", &[])));
}

#[test]
fn turning_synchronous_mode_off_deletes_the_key_then_releases_the_names() {
    let mut l = Leader::new(false);
    l.settle();
    l.settings.mode = SyncMode::Off;
    assert_eq!(
        l.settle(),
        vec![SyncStep::DeleteKey, SyncStep::ReleaseNames]
    );
}

/// Every standby the key names holds every acknowledged commit, through a
/// long run of random disconnections, lag and settings changes: simulated
/// commits are acknowledged only when every listed `sync` standby flushed
/// them, and each step checks the key against what each standby holds.
#[test]
fn invariant_the_key_names_only_standbys_holding_every_acknowledged_commit() {
    let mut seed: u64 = 0x5eed;
    let mut rnd = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for _run in 0..200 {
        let mut l = Leader::new(rnd(2) == 0);
        l.settings.node_count = 1 + rnd(2) as usize;
        l.settings.maximum_lag_on_syncnode = if rnd(2) == 0 { -1 } else { 50 };
        let mut acked: u64 = 0;
        let mut held = [100u64, 100, 90]; // n1 (unused), n2, n3
        let mut connected = [true, true, true];
        for _ in 0..60 {
            // The world moves.
            match rnd(5) {
                0 => {
                    let i = 1 + rnd(2) as usize;
                    connected[i] = !connected[i];
                }
                1 => {
                    // A commit: written locally, acknowledged if every
                    // listed standby is sync and flushes it.
                    l.lsn += 1 + rnd(40);
                    let names = StandbyNames::parse(&l.running).unwrap();
                    let mut ok = true;
                    for (i, n) in ["n2", "n3"].iter().enumerate() {
                        if connected[i + 1] && rnd(3) != 0 {
                            held[i + 1] = l.lsn;
                        }
                        if names.contains(n) && held[i + 1] < l.lsn {
                            ok = false;
                        }
                    }
                    let waits_for_nobody = names.is_none();
                    if ok || waits_for_nobody {
                        acked = l.lsn;
                    }
                }
                _ => {}
            }
            let names = StandbyNames::parse(&l.running).unwrap();
            l.walsenders = ["n2", "n3"]
                .iter()
                .enumerate()
                .filter(|(i, _)| connected[i + 1])
                .map(|(i, n)| {
                    let state = if names.contains(n) && names.requires_all() {
                        "sync"
                    } else if names.contains(n) {
                        "potential"
                    } else {
                        "async"
                    };
                    ws(n, state, held[i + 1])
                })
                .collect();
            // The leader acts (one step, as if the cycle was cut short).
            let (step, _) = l.step();
            match step {
                SyncStep::WriteKey(k) => l.key = Some(k),
                SyncStep::SetNames(n) => l.running = n,
                SyncStep::DeleteKey
                | SyncStep::ReleaseNames
                | SyncStep::Settled
                | SyncStep::Waiting => {}
            }
            for s in l.standbys() {
                let i = if s == "n2" { 1 } else { 2 };
                assert!(
                    held[i] >= acked,
                    "the key names {s}, which holds {} < acknowledged {acked} (names {:?})",
                    held[i],
                    l.running
                );
            }
        }
    }
}

fn cluster_with_sync(sync: Option<&str>) -> Cluster {
    let entry = |k: &str, v: &str, n: i64| RawEntry {
        key: ClusterKey::parse(k).unwrap(),
        value: v.as_bytes().to_vec(),
        version: Version::number(n),
        owner: None,
    };
    let mut entries = vec![entry("initialize", "1", 1)];
    if let Some(s) = sync {
        entries.push(entry("sync", s, 2));
    }
    Cluster::from_entries(entries, Version::number(100))
}

#[test]
fn only_the_key_leader_and_its_standbys_may_be_promoted() {
    let on = SyncMode::On { strict: false };
    let c = cluster_with_sync(Some(r#"{"leader":"n1","sync_standby":"n2"}"#));
    assert_eq!(promotion_problem(on, &c, "n2"), None);
    assert_eq!(promotion_problem(on, &c, "N1"), None);
    let why = promotion_problem(on, &c, "n3").unwrap();
    assert!(
        why.contains("only n1 and the synchronous standbys"),
        "{why}"
    );
    assert_eq!(promotion_problem(SyncMode::Off, &c, "n3"), None);

    let none = cluster_with_sync(Some(r#"{"leader":"n1","sync_standby":null}"#));
    assert!(promotion_problem(on, &none, "n2").is_some());
    // Never activated: the usual race.
    assert_eq!(promotion_problem(on, &cluster_with_sync(None), "n3"), None);
    let garbage = cluster_with_sync(Some("[1,2]"));
    let why = promotion_problem(on, &garbage, "n2").unwrap();
    assert!(why.contains("unreadable"), "{why}");
}

#[test]
fn before_a_promotion_strict_mode_waits_for_members_and_true_starts_async() {
    let l = Leader::new(true);
    assert_eq!(
        names_at_promotion(l.settings, "n2", &l.members).render(),
        "FIRST 1 (\"n1\",\"n3\")"
    );
    let l = Leader::new(false);
    assert!(names_at_promotion(l.settings, "n2", &l.members).is_none());
    assert_eq!(key_at_promotion("n2").standbys(), Vec::<&str>::new());
    assert_eq!(key_at_promotion("n2").leader.as_deref(), Some("n2"));
}

// ---- quorum commit

fn quorum_key(leader: &str, voters: &[&str], quorum: i64) -> SyncState {
    let mut k = key(leader, voters);
    k.quorum = Some(quorum);
    k
}

impl Leader {
    fn quorum(strict: bool) -> Self {
        let mut l = Leader::new(strict);
        l.settings.mode = SyncMode::Quorum { strict };
        l
    }
}

#[test]
fn quorum_raises_the_quorum_before_listing_and_lowers_it_once_caught_up() {
    let mut l = Leader::quorum(false);
    l.walsenders[1].flush_lsn = Some(100);
    let steps = l.settle();
    assert_eq!(
        steps,
        vec![
            SyncStep::WriteKey(key("n1", &[])),
            // Commits so far are on no standby: nobody may be promoted yet.
            SyncStep::WriteKey(quorum_key("n1", &["n2", "n3"], 2)),
            SyncStep::SetNames("ANY 1 (\"n2\",\"n3\")".into()),
            SyncStep::WriteKey(quorum_key("n1", &["n2", "n3"], 1)),
        ]
    );
}

#[test]
fn quorum_keeps_a_dead_voters_weight_until_its_commits_are_elsewhere() {
    let mut l = Leader::quorum(false);
    l.walsenders[1].flush_lsn = Some(100);
    l.settle();
    // n3 dies; commits may be on n3 only.
    l.walsenders.retain(|w| w.name != "n3");
    l.lsn = 200;
    let (step, _) = l.step();
    assert_eq!(step, SyncStep::WriteKey(quorum_key("n1", &["n2"], 1)));
    l.key = Some(quorum_key("n1", &["n2"], 1));
    assert_eq!(l.step().0, SyncStep::SetNames("ANY 1 (\"n2\")".into()));
    l.running = "ANY 1 (\"n2\")".into();
    // n2 behind the position when the value took effect: still quorum 1,
    // so n2 alone (no other voter) cannot be promoted.
    l.walsenders[0].flush_lsn = Some(150);
    assert_eq!(l.step().0, SyncStep::Waiting);
    l.walsenders[0].flush_lsn = Some(200);
    assert_eq!(l.step().0, SyncStep::WriteKey(quorum_key("n1", &["n2"], 0)));
}

#[test]
fn quorum_votes_follow_patronis_race() {
    let peer = |name: &str, wal: u64| PeerStatus {
        name: name.into(),
        source: crate::ha::observation::PeerSource::Rest,
        is_primary: false,
        running: true,
        starting: false,
        wal_position: Some(wal),
        nofailover: false,
        failover_priority: 1,
        replication_broken: false,
        takes_lock_back: false,
        timeline: None,
    };
    let k = quorum_key("n1", &["n2", "n3", "n4"], 1);
    // A voter needs one vote: a voter not ahead.
    assert_eq!(quorum::vote_problem(&k, "n2", 100, &[peer("n3", 90)]), None);
    let why = quorum::vote_problem(&k, "n2", 100, &[peer("n3", 110)]).unwrap();
    assert!(why.contains("0 of the 1 votes"), "{why}");
    // A non-voter needs one more.
    assert!(quorum::vote_problem(&k, "n5", 100, &[peer("n3", 90)]).is_some());
    assert_eq!(
        quorum::vote_problem(&k, "n5", 100, &[peer("n3", 90), peer("n4", 100)]),
        None
    );
    // The key's leader needs none while nobody is ahead.
    assert_eq!(quorum::vote_problem(&k, "n1", 100, &[]), None);
    assert!(quorum::vote_problem(&k, "n1", 100, &[peer("n2", 101)]).is_some());
}

/// Under random faults, any `quorum + 1` voters of the key (the smallest
/// set that may elect a leader) include one holding every acknowledged
/// commit: commits are acknowledged when `k` of the listed standbys
/// flushed them, and at most `quorum` voters may lack the newest.
#[test]
fn invariant_quorum_and_acknowledgements_always_intersect() {
    let mut seed: u64 = 0xC0FFEE;
    let mut rnd = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let names = ["n2", "n3", "n4"];
    for _run in 0..300 {
        let mut l = Leader::quorum(rnd(2) == 0);
        l.members.push(member("n4"));
        l.settings.node_count = 1 + rnd(3) as usize;
        l.settings.maximum_lag_on_syncnode = if rnd(2) == 0 { -1 } else { 60 };
        let mut acked: u64 = 0;
        let mut held = [100u64, 100, 90];
        let mut connected = [true, true, true];
        for _ in 0..80 {
            match rnd(5) {
                0 => {
                    let i = rnd(3) as usize;
                    connected[i] = !connected[i];
                }
                1 => {
                    l.lsn += 1 + rnd(40);
                    for i in 0..3 {
                        if connected[i] && rnd(3) != 0 {
                            held[i] = l.lsn;
                        }
                    }
                    let ssn = StandbyNames::parse(&l.running).unwrap();
                    let have = names
                        .iter()
                        .enumerate()
                        .filter(|(i, n)| ssn.contains(n) && held[*i] >= l.lsn)
                        .count();
                    if ssn.is_none() || have >= ssn.num {
                        acked = l.lsn;
                    }
                }
                2 if rnd(4) == 0 => l.settings.node_count = 1 + rnd(3) as usize,
                _ => {}
            }
            let ssn = StandbyNames::parse(&l.running).unwrap();
            l.walsenders = names
                .iter()
                .enumerate()
                .filter(|(i, _)| connected[*i])
                .map(|(i, n)| {
                    let state = if ssn.contains(n) { "quorum" } else { "async" };
                    ws(n, state, held[i])
                })
                .collect();
            // Checked after the world moved (commits under the value in
            // force) and after the leader's step.
            for stepped in [false, true] {
                if stepped {
                    match l.step().0 {
                        SyncStep::WriteKey(k) => l.key = Some(k),
                        SyncStep::SetNames(n) => l.running = n,
                        _ => {}
                    }
                }
                let Some(k) = &l.key else { continue };
                let voters = k.standbys();
                if voters.is_empty() {
                    continue; // only the leader itself may be promoted
                }
                let quorum = k.quorum.unwrap_or(0) as usize;
                let lacking = voters
                    .iter()
                    .filter(|v| {
                        let i = names.iter().position(|n| n == *v).unwrap();
                        held[i] < acked
                    })
                    .count();
                assert!(
                    lacking <= quorum,
                    "{lacking} of voters {voters:?} lack acknowledged {acked}, quorum {quorum} \
                     (names {:?}, held {held:?})",
                    l.running
                );
            }
        }
    }
}

#[test]
fn a_leaderless_synchronous_cluster_says_who_may_take_over() {
    let with = |config: &str, sync: &str| {
        let entry = |k: &str, v: &str, n: i64| RawEntry {
            key: ClusterKey::parse(k).unwrap(),
            value: v.as_bytes().to_vec(),
            version: Version::number(n),
            owner: None,
        };
        Cluster::from_entries(
            vec![entry("config", config, 1), entry("sync", sync, 2)],
            Version::number(100),
        )
    };
    let on = r#"{"synchronous_mode": true}"#;
    let note = leaderless_note(&with(on, r#"{"leader":"n1","sync_standby":"n2"}"#)).unwrap();
    assert!(
        note.contains("only n1 and the synchronous standbys (n2)"),
        "{note}"
    );
    let note = leaderless_note(&with(on, "garbage")).unwrap();
    assert!(note.contains("unreadable"), "{note}");
    let q = r#"{"synchronous_mode": "quorum"}"#;
    let note = leaderless_note(&with(
        q,
        r#"{"leader":"n1","quorum":1,"sync_standby":"n2,n3"}"#,
    ))
    .unwrap();
    assert!(
        note.contains("1 vote(s) from the voters (n2, n3)"),
        "{note}"
    );
    assert_eq!(
        leaderless_note(&with("{}", r#"{"leader":"n1","sync_standby":"n2"}"#)),
        None
    );
}
