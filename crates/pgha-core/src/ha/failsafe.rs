//! Failsafe mode (`failsafe_mode` in the dynamic configuration): a primary
//! that loses the DCS keeps running while every member it listed in the
//! `failsafe` key confirms it over REST (`POST /failsafe`), as Patroni's
//! does, but with its right to write bounded on the monotonic clock.
//!
//! Why this can never give the cluster a second primary:
//! - A confirmation *round* the primary starts at `sent` (its monotonic
//!   clock), in which every member of the key answered 200, extends the
//!   primary's right to write (its lock deadline, which `decide`'s rule 1,
//!   the in-process fence and the fence guard enforce) to `sent + ttl`,
//!   and only while that right still holds at `sent`: the right stays one
//!   unbroken interval from its last lock call ([`super::HaNode::handle`]).
//!   A round in which anyone did not answer extends nothing, and the
//!   primary demotes at once.
//! - A member that confirms becomes a [`Witness`]: it takes no lock (and
//!   confirms nothing while it is itself a candidate or primary) until
//!   `received + ttl` on its own clock. It received the call after `sent`,
//!   so its refusal outlasts the right it granted.
//! - A member the key does not name is never asked, so while failsafe mode
//!   is on it never races ([`race_problem`]).
//! - An agent that restarts forgets what it confirmed: it counts as a
//!   witness of an unknown leader for `ttl` after it starts (the shell
//!   does that, see `pgha-node`).
//!
//! So for as long as the primary may write, no member that could take the
//! lock would; the DCS's own lease is not needed for that interval.
//!
//! Patroni's holes this avoids: its fixed 2 s peer timeout is
//! [`round_timeout`] (half of `retry_timeout`, or `failsafe_timeout`);
//! every error class of the DCS read counts as the DCS being unreachable
//! (the loop passes no snapshot at all); a member key expiring meanwhile
//! changes nothing, since the round asks the members of the `failsafe`
//! key, not of the last snapshot.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{Cluster, Failsafe, Timing};

/// The member-key and `GET /patroni` field (pgha only) of a former
/// primary stopped only because the DCS went away (failsafe mode off, or
/// not confirmed): when the DCS returns with no leader, it takes the lock
/// back and starts in place, on its timeline, and the others let it for a
/// ttl instead of promoting one of them onto a new timeline.
pub const TAKEBACK_FIELD: &str = "takes_lock_back";

/// The member-key field (pgha only) naming the leader this member
/// confirmed in failsafe mode while its promise lasts: how `pghactl list`
/// shows a leader that runs without the DCS (its own key cannot be
/// written, and its leader key expired).
pub const LEADER_FIELD: &str = "failsafe_leader";

/// The leader the members' keys say runs in failsafe mode, and who
/// confirmed it: for a cluster whose leader key is gone.
pub fn confirmed_leader(cluster: &Cluster) -> Option<(String, Vec<String>)> {
    if cluster.leader.is_some() {
        return None;
    }
    let mut by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in &cluster.members {
        if let Some(l) = m.data.extra.get(LEADER_FIELD).and_then(|v| v.as_str()) {
            by.entry(l.to_string()).or_default().push(m.name.clone());
        }
    }
    by.into_iter().max_by_key(|(_, who)| who.len())
}

/// The body of `POST /failsafe`, as Patroni sends it: who the primary is
/// and where to reach it. pgha adds `ttl`, how long the sender's right to
/// write may last after it sent the call (a witness refuses the lock for
/// at least that long, even if its own `ttl` is shorter).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailsafePing {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// Replication slots on the primary (Patroni's; kept for compatibility).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<BTreeMap<String, u64>>,
    /// Seconds; pgha's own field, ignored by Patroni.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
}

/// A leader this node confirmed in failsafe mode, and until when
/// (monotonic) it refuses the lock because of that.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Witness {
    /// The member that asked (`None`: unknown, the agent restarted and may
    /// have confirmed someone before).
    pub leader: Option<String>,
    pub until: Duration,
}

/// The primary's confirmation round: which members of the `failsafe` key
/// were asked and who did not confirm.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// Every member asked (the key without this node).
    pub asked: Vec<String>,
    /// The members that did not confirm, and why (no answer, an error, a
    /// refusal).
    pub refused: Vec<(String, String)>,
    /// Why no round could be run (the key does not name this node, or is
    /// unknown); nothing was asked.
    pub impossible: Option<String>,
}

impl Round {
    /// Every member of the key confirmed.
    pub fn confirmed(&self) -> bool {
        self.impossible.is_none() && self.refused.is_empty()
    }

    /// One line for the decision's reason.
    pub fn describe(&self) -> String {
        if let Some(why) = &self.impossible {
            return why.clone();
        }
        if self.refused.is_empty() {
            return match self.asked.len() {
                0 => "I am the only member of the failsafe key".into(),
                n => format!(
                    "all {n} other members of the failsafe key confirmed ({})",
                    self.asked.join(", ")
                ),
            };
        }
        let who: Vec<String> = self
            .refused
            .iter()
            .map(|(name, why)| format!("{name}: {why}"))
            .collect();
        format!("not confirmed by {}", who.join("; "))
    }
}

/// How long a confirmation keeps the primary's right to write, from when
/// the round was sent, and how long a witness refuses the lock after it
/// confirmed: `ttl`, the lifetime a lock renewal gets.
pub fn window(timing: Timing) -> Duration {
    timing.ttl
}

/// How long the primary waits for each member's answer: `failsafe_timeout`
/// when set, else half of `retry_timeout` (5 s with Patroni's defaults,
/// where Patroni waits a fixed 2 s and demotes over slow links).
///
/// The trade-off: a member that cannot be reached is only known to be so
/// when this runs out, and until then a primary cut off from everyone
/// (N1) keeps acknowledging writes no replica receives (lost in
/// asynchronous mode). Never more than `retry_timeout`: the loop starts a
/// renewal, or a round, that long before the right runs out, so a longer
/// round could not end before the right it is meant to extend.
pub fn round_timeout(timing: Timing, configured: Option<Duration>) -> Duration {
    configured
        .unwrap_or(timing.retry_timeout / 2)
        .clamp(Duration::from_millis(100), timing.retry_timeout)
}

/// The `failsafe` key the leader keeps: every member with a REST API, and
/// itself (`my_api_url`), as Patroni writes it.
pub fn topology(cluster: &Cluster, me: &str, my_api_url: &str) -> Failsafe {
    let mut map: BTreeMap<String, String> = cluster
        .members
        .iter()
        .filter_map(|m| Some((m.name.clone(), m.data.api_url.clone()?)))
        .filter(|(_, url)| !url.is_empty())
        .collect();
    map.entry(me.to_string())
        .or_insert_with(|| my_api_url.to_string());
    Failsafe(map)
}

/// Why this node must not take a free lock because of failsafe mode, if
/// it must not: it confirmed a leader less than a window ago (that leader
/// may still write), or failsafe mode is on and the `failsafe` key does
/// not name it (a leader in failsafe mode never asks it).
pub fn race_problem(
    now: Duration,
    me: &str,
    failsafe_mode: bool,
    witness: Option<&Witness>,
    cluster: &Cluster,
) -> Option<String> {
    if let Some(w) = witness.filter(|w| w.until > now) {
        return Some(match &w.leader {
            Some(l) => format!(
                "I confirmed {l} as the leader in failsafe mode: it may write for {:.1?} more",
                w.until - now
            ),
            None => format!(
                "my agent started less than ttl ago and may have confirmed a leader in failsafe \
                 mode before: waiting {:.1?}",
                w.until - now
            ),
        });
    }
    let key = cluster.failsafe.as_ref().map(|f| &f.value.0)?;
    if failsafe_mode && !key.is_empty() && !key.keys().any(|k| k == me) {
        return Some(format!(
            "failsafe mode is on and the failsafe key does not name me (it names {}): a leader \
             in failsafe mode would not ask me",
            key.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Member, MemberData, Version, Versioned};

    fn member(name: &str, api: Option<&str>) -> Member {
        Member {
            name: name.into(),
            data: MemberData {
                api_url: api.map(Into::into),
                ..MemberData::default()
            },
            version: Version::number(1),
            owner: None,
        }
    }

    #[test]
    fn the_topology_lists_every_member_with_an_api_and_the_leader() {
        let mut c = Cluster::empty(Version::number(0));
        c.members = vec![
            member("a", Some("http://a/patroni")),
            member("b", None),
            member("c", Some("http://c/patroni")),
        ];
        let t = topology(&c, "me", "http://me/patroni");
        assert_eq!(
            t.0.keys().cloned().collect::<Vec<_>>(),
            ["a", "c", "me"].map(String::from)
        );
    }

    #[test]
    fn a_witness_and_a_member_outside_the_key_stay_out_of_the_race() {
        let mut c = Cluster::empty(Version::number(0));
        let now = Duration::from_secs(100);
        let w = Witness {
            leader: Some("p".into()),
            until: now + Duration::from_secs(3),
        };
        assert!(race_problem(now, "r", true, Some(&w), &c).is_some());
        // Its promise holds even if failsafe mode was switched off since.
        assert!(race_problem(now, "r", false, Some(&w), &c).is_some());
        let expired = Witness { until: now, ..w };
        assert!(race_problem(now, "r", true, Some(&expired), &c).is_none());

        let key = Failsafe(
            [("p".to_string(), "http://p/patroni".to_string())]
                .into_iter()
                .collect(),
        );
        c.failsafe = Some(Versioned::new(key, Version::number(1)));
        assert!(race_problem(now, "r", true, None, &c).is_some());
        assert!(race_problem(now, "p", true, None, &c).is_none());
        assert!(race_problem(now, "r", false, None, &c).is_none());
    }

    #[test]
    fn the_round_timeout_follows_retry_timeout_and_never_exceeds_it() {
        let t = Timing::adjusted(30, 10, 10).0;
        assert_eq!(round_timeout(t, None), Duration::from_secs(5));
        assert_eq!(
            round_timeout(t, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            round_timeout(t, Some(Duration::from_secs(60))),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn pings_read_patronis_body_and_carry_the_ttl() {
        let p: FailsafePing = serde_json::from_str(
            r#"{"name":"n1","conn_url":"postgres://h:5432/postgres","api_url":"http://h:8008/patroni","slots":{"n1":100}}"#,
        )
        .unwrap();
        assert_eq!(p.name, "n1");
        assert_eq!(p.ttl, None);
        assert!(serde_json::from_str::<FailsafePing>(r#"{"conn_url":"x"}"#).is_err());
    }
}
