//! Quorum commit (`synchronous_mode: quorum`), Patroni 4's meaning:
//! PostgreSQL acknowledges a commit once any `k` of the listed standbys
//! flushed it (`ANY k (...)`), and the `sync` key names the *voters* and a
//! `quorum`. A node may take a free lock only when it gets `quorum` votes
//! ([`vote_problem`]; a vote is a voter that answers, runs PostgreSQL and
//! is not ahead; a candidate that is no voter needs one more). The key is
//! therefore safe while any `quorum + 1` voters include one holding every
//! acknowledged commit: for every way commits may have been acknowledged
//! since the older ones were known to be on enough standbys (on at least
//! `k` of `names`: an [`AckRule`]),
//! `quorum + k >= |voters| + |names that are not voters|` ([`smallest_quorum`]).
//!
//! The leader moves towards `voters = names = the eligible standbys`,
//! `k = min(synchronous_node_count, their number)`, `quorum = |voters| - k`
//! (the invariant's tightest form), one step at a time:
//! 1. the key first: the wanted voters, with the smallest quorum safe for
//!    the running value, the values still pending, and the wanted one (so
//!    the quorum is raised before `synchronous_standby_names` widens or
//!    lowers `k`);
//! 2. then `synchronous_standby_names`;
//! 3. once `k` of the running value's standbys flushed past the primary's
//!    position when it took effect, every earlier commit is on them: the
//!    earlier values stop counting and the quorum comes down (lowered
//!    after).

use super::{
    Method, StandbyNames, SyncKeeper, SyncStep, SyncView, contains, pick_all, syncable_members,
    take_key,
};
use crate::ha::observation::{PeerSource, PeerStatus};
use crate::model::SyncState;

/// Commits may have been acknowledged on only `k` of `names`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckRule {
    pub names: Vec<String>,
    pub k: usize,
}

impl AckRule {
    /// The rule a `synchronous_standby_names` value makes: `ANY k` and
    /// `FIRST k` alike put a commit on at least `k` of the names; no value,
    /// or the wildcard (any walsender, member or not), on none of them.
    pub fn of(names: Option<&StandbyNames>) -> AckRule {
        match names {
            Some(n) if !n.has_wildcard() && !n.is_none() => AckRule {
                names: n.names.clone(),
                k: n.num.min(n.names.len()),
            },
            _ => AckRule {
                names: Vec::new(),
                k: 0,
            },
        }
    }

    /// The rule a safe key vouches for: commits on `|voters| - quorum` of
    /// its voters (what a node that starts leading with this key in place
    /// knows of the commits before it).
    pub fn of_key(key: &SyncState) -> AckRule {
        let names: Vec<String> = key.standbys().iter().map(|s| s.to_string()).collect();
        let quorum = usize::try_from(key.quorum.unwrap_or(0)).unwrap_or(0);
        AckRule {
            k: names.len().saturating_sub(quorum),
            names,
        }
    }
}

/// The smallest quorum that keeps `voters` safe under every rule: any
/// `quorum + 1` voters then include one holding every commit acknowledged
/// under each.
pub fn smallest_quorum(voters: &[String], rules: &[AckRule]) -> usize {
    rules
        .iter()
        .map(|r| {
            let outside = r.names.iter().filter(|n| !contains(voters, n)).count();
            (voters.len() + outside).saturating_sub(r.k)
        })
        .max()
        .unwrap_or(0)
}

/// `ANY k (names)`, or nothing.
pub fn names_value(names: &[String], k: usize) -> StandbyNames {
    if names.is_empty() || k == 0 {
        return StandbyNames::none();
    }
    let mut names = names.to_vec();
    names.sort_by_key(|n| n.to_lowercase());
    StandbyNames {
        method: Method::Any,
        num: k,
        names,
    }
}

/// The `sync` key naming `voters` (sorted) and `quorum`.
fn key_value(leader: &str, voters: &[String], quorum: usize) -> SyncState {
    let mut state = super::key_value(leader, voters);
    state.quorum = Some(i64::try_from(quorum).unwrap_or(i64::MAX));
    state
}

fn same_names(a: &[String], b: &[String]) -> bool {
    a.len() == b.len() && a.iter().all(|n| contains(b, n))
}

impl SyncKeeper {
    /// `synchronous_mode: quorum`: one step (see the module docs).
    pub(super) fn next_quorum(&mut self, v: &SyncView<'_>, strict: bool) -> (SyncStep, String) {
        let running = StandbyNames::parse(v.running_names);
        self.observe(v, running.as_ref());
        if let Some(step) = take_key(v) {
            return step;
        }
        let key = v.key.cloned().unwrap_or_default();
        let voters: Vec<String> = key.standbys().iter().map(|s| s.to_string()).collect();
        let quorum = usize::try_from(key.quorum.unwrap_or(0)).unwrap_or(0);

        // What is wanted: every eligible standby, k of them required;
        // strict mode without one waits for any member.
        let eligible = pick_all(v);
        let (names, k) = if !eligible.is_empty() {
            let k = v.settings.node_count.clamp(1, eligible.len());
            (eligible, k)
        } else if strict {
            (syncable_members(v.me, v.members), 1)
        } else {
            (Vec::new(), 0)
        };
        let wanted = names_value(&names, k);
        let in_force = running.as_ref() == Some(&wanted);
        let mut rules = vec![AckRule::of(running.as_ref())];
        rules.extend(self.pending.iter().cloned());
        if !in_force {
            rules.push(AckRule::of(Some(&wanted)));
        }
        // The voters are the eligible standbys only: a member listed just
        // so that strict mode waits (not streaming now) gets no vote.
        let wanted_voters: Vec<String> = names
            .iter()
            .filter(|n| v.walsenders.iter().any(|w| w.name.eq_ignore_ascii_case(n)))
            .cloned()
            .collect();
        let wanted_quorum = smallest_quorum(&wanted_voters, &rules);

        // 1. The key.
        if !same_names(&voters, &wanted_voters) || quorum != wanted_quorum {
            return (
                SyncStep::WriteKey(key_value(v.me, &wanted_voters, wanted_quorum)),
                format!(
                    "quorum commit: voters {} with quorum {wanted_quorum} (were {} with quorum \
                     {quorum}){}",
                    super::list(&wanted_voters),
                    super::list(&voters),
                    if self.pending.is_empty() {
                        ""
                    } else {
                        "; earlier synchronous_standby_names still count until their commits are on enough standbys"
                    }
                ),
            );
        }
        // 2. synchronous_standby_names.
        if !in_force {
            return (
                SyncStep::SetNames(wanted.render()),
                format!(
                    "quorum commit: setting synchronous_standby_names to {:?}{}",
                    wanted.render(),
                    if names.is_empty() {
                        " (no eligible standby: commits are asynchronous, and no replica may be \
                         promoted automatically meanwhile)"
                    } else {
                        ""
                    }
                ),
            );
        }
        // 3. Waiting for the earlier values to stop counting.
        if !self.pending.is_empty() {
            return (
                SyncStep::Waiting,
                format!(
                    "quorum commit: waiting for {k} of {} to catch up before lowering the quorum",
                    super::list(&names)
                ),
            );
        }
        (
            SyncStep::Settled,
            if names.is_empty() {
                "quorum commit: no eligible standby; commits are asynchronous".into()
            } else {
                format!(
                    "quorum commit: ANY {k} of {}, quorum {quorum}",
                    super::list(&names)
                )
            },
        )
    }
}

/// Why `me`, at WAL position `mine`, may not take a free lock under a
/// quorum `sync` key, or `None`: it needs `quorum` votes, a vote being a
/// voter that answered on its REST API, runs PostgreSQL and is not ahead;
/// a candidate that is no voter needs one more. The key's leader, with
/// nobody ahead, needs none (as Patroni's race).
pub fn vote_problem(sync: &SyncState, me: &str, mine: u64, peers: &[PeerStatus]) -> Option<String> {
    let voters: Vec<String> = sync.standbys().iter().map(|s| s.to_string()).collect();
    let quorum = sync.quorum.unwrap_or(0).max(0);
    let answered: Vec<&PeerStatus> = peers
        .iter()
        .filter(|p| p.name != me && p.source == PeerSource::Rest && p.running)
        .collect();
    let key_leader = sync
        .leader
        .as_deref()
        .is_some_and(|l| l.eq_ignore_ascii_case(me));
    // Only a voter can hold back the key's leader: a member outside the
    // key that is ahead (an old primary) holds nothing acknowledged there,
    // since every acknowledgement needed the voters.
    if key_leader
        && answered
            .iter()
            .filter(|p| contains(&voters, &p.name))
            .all(|p| p.wal_position.is_none_or(|w| w <= mine))
    {
        return None;
    }
    let mut votes: i64 = if contains(&voters, me) { 0 } else { -1 };
    for p in &answered {
        if contains(&voters, &p.name) && p.wal_position.is_some_and(|w| w <= mine) {
            votes += 1;
        }
    }
    if votes >= quorum {
        return None;
    }
    Some(format!(
        "quorum commit: {} of the {quorum} votes needed from the voters ({}) to be sure I hold \
         every acknowledged commit{}",
        votes.max(0),
        super::list(&voters),
        if contains(&voters, me) {
            ""
        } else {
            "; I am no voter, so I need one more"
        }
    ))
}
