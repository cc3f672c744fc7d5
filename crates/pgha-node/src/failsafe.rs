//! Failsafe mode's I/O (the decisions are `pgha_core::ha::failsafe`'s):
//! the promise a member gives when it confirms a primary ([`FailsafeGate`],
//! shared by the REST API's `POST /failsafe` and the HA loop), and the
//! primary's confirmation round ([`confirm_round`]).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::join_all;
use hyper::Method;
use pgha_core::clock::Clock;
use pgha_core::ha::failsafe::{FailsafePing, Round, Witness};
use pgha_core::model::{Failsafe, Member, MemberData, Version};
use pgha_rest_client::RestClient;

/// Why this node does not confirm a primary (`POST /failsafe`), with
/// Patroni's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PingRefused {
    /// `failsafe_mode` is off here (Patroni answers 502).
    #[error("failsafe_mode is not enabled")]
    Disabled,
    /// This node holds, or is taking, the leader lock, or runs as primary
    /// (Patroni answers 500 "Running as a leader").
    #[error("Running as a leader")]
    Leader,
}

/// The one place where confirming a primary and taking the lock exclude
/// each other. A member that answered a confirmation refuses the lock until
/// its promise ends; a member about to take the lock (or holding it, or
/// running as primary) confirms nobody. Both checks happen under one
/// mutex, so a confirmation can never be given while this node races:
/// the decision that saw no promise is re-checked by
/// [`FailsafeGate::claim_lock`] right before the lock call.
#[derive(Debug, Clone)]
pub struct FailsafeGate {
    state: Arc<Mutex<GateState>>,
    clock: Arc<dyn Clock>,
}

#[derive(Debug)]
struct GateState {
    enabled: bool,
    ttl: Duration,
    /// The promise given last, while it lasts.
    witness: Option<Witness>,
    /// This node holds or is taking the lock, or runs as primary.
    candidate: bool,
}

impl FailsafeGate {
    /// The gate of an agent starting now. With failsafe mode on (as last
    /// known), it counts as having confirmed an unknown leader for `ttl`:
    /// a confirmation given before a restart is forgotten, its promise
    /// must not be.
    pub fn new(clock: Arc<dyn Clock>, enabled: bool, ttl: Duration) -> Self {
        let witness = enabled.then(|| Witness {
            leader: None,
            until: clock.now() + ttl,
        });
        FailsafeGate {
            state: Arc::new(Mutex::new(GateState {
                enabled,
                ttl,
                witness,
                candidate: false,
            })),
            clock,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, GateState> {
        // Every critical section leaves the state consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `POST /failsafe`: confirms `ping`'s sender as the leader, promising
    /// not to take the lock for `max(ttl, ping.ttl)` from now.
    pub fn confirm(&self, ping: &FailsafePing) -> Result<(), PingRefused> {
        let mut s = self.state();
        if !s.enabled {
            return Err(PingRefused::Disabled);
        }
        if s.candidate {
            return Err(PingRefused::Leader);
        }
        let window = s.ttl.max(Duration::from_secs(ping.ttl.unwrap_or(0)));
        // A promise given is never shortened.
        let until =
            (self.clock.now() + window).max(s.witness.as_ref().map_or(Duration::ZERO, |w| w.until));
        s.witness = Some(Witness {
            leader: Some(ping.name.clone()),
            until,
        });
        Ok(())
    }

    /// The cluster's settings, as read this cycle.
    pub(crate) fn configure(&self, enabled: bool, ttl: Duration) {
        let mut s = self.state();
        s.enabled = enabled;
        s.ttl = ttl;
    }

    /// The promise that still binds this node, if any.
    pub fn witness(&self) -> Option<Witness> {
        let now = self.clock.now();
        self.state().witness.clone().filter(|w| w.until > now)
    }

    /// Right before a lock call that takes the lock: fails with the
    /// promise given since the decision, else marks this node a candidate
    /// so it confirms nobody from now on.
    pub(crate) fn claim_lock(&self) -> Result<(), Witness> {
        let now = self.clock.now();
        let mut s = self.state();
        if let Some(w) = s.witness.clone().filter(|w| w.until > now) {
            return Err(w);
        }
        s.candidate = true;
        Ok(())
    }

    /// Whether this node holds the lock or runs as primary (after each
    /// cycle): only then does it keep refusing confirmations.
    pub(crate) fn set_candidate(&self, candidate: bool) {
        self.state().candidate = candidate;
    }
}

/// Asks every member of `key` but `me` to confirm `ping`'s sender, each
/// within `timeout`, all at once. A member confirms with 200 and the body
/// `Accepted` (Patroni's answer); anything else is a refusal, with why.
pub(crate) async fn confirm_round(
    rest: &RestClient,
    key: Option<&Failsafe>,
    me: &str,
    ping: &FailsafePing,
    timeout: Duration,
) -> Round {
    let Some(key) = key else {
        return Round {
            impossible: Some("no failsafe key was read before the DCS became unreachable".into()),
            ..Round::default()
        };
    };
    if !key.0.contains_key(me) {
        return Round {
            impossible: Some("the failsafe key does not name me".into()),
            ..Round::default()
        };
    }
    let body = match serde_json::to_string(ping) {
        Ok(b) => b,
        Err(e) => {
            return Round {
                impossible: Some(format!("cannot encode the confirmation request: {e}")),
                ..Round::default()
            };
        }
    };
    let others: Vec<Member> = key
        .0
        .iter()
        .filter(|(name, _)| name.as_str() != me)
        .map(|(name, url)| Member {
            name: name.clone(),
            version: Version::number(0),
            owner: None,
            data: MemberData {
                api_url: Some(url.clone()),
                ..MemberData::default()
            },
        })
        .collect();
    let answers = join_all(others.iter().map(|m| {
        let body = body.clone();
        async move {
            let why = match rest
                .call(m, Method::POST, "failsafe", Some(body), timeout)
                .await
            {
                Ok(r) if r.status == 200 && r.body == "Accepted" => None,
                Ok(r) => Some(format!(
                    "answered {} {}",
                    r.status,
                    r.body.chars().take(80).collect::<String>().trim()
                )),
                Err(e) => Some(e.detail()),
            };
            (m.name.clone(), why)
        }
    }))
    .await;
    Round {
        asked: others.iter().map(|m| m.name.clone()).collect(),
        refused: answers
            .into_iter()
            .filter_map(|(name, why)| why.map(|w| (name, w)))
            .collect(),
        impossible: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgha_core::clock::ManualClock;

    fn ping(name: &str) -> FailsafePing {
        FailsafePing {
            name: name.into(),
            conn_url: None,
            api_url: None,
            slots: None,
            ttl: None,
        }
    }

    #[test]
    fn a_confirmation_and_a_lock_claim_exclude_each_other() {
        let clock = Arc::new(ManualClock::new());
        clock.advance(Duration::from_secs(100));
        let gate = FailsafeGate::new(clock.clone(), false, Duration::from_secs(30));
        assert_eq!(gate.confirm(&ping("n1")), Err(PingRefused::Disabled));
        gate.configure(true, Duration::from_secs(30));
        assert_eq!(gate.confirm(&ping("n1")), Ok(()));
        let w = gate.claim_lock().expect_err("a promise binds");
        assert_eq!(w.leader.as_deref(), Some("n1"));
        assert_eq!(w.until, Duration::from_secs(130));

        clock.advance(Duration::from_secs(30));
        assert_eq!(gate.witness(), None, "the promise ended");
        assert_eq!(gate.claim_lock(), Ok(()));
        assert_eq!(gate.confirm(&ping("n1")), Err(PingRefused::Leader));
        gate.set_candidate(false);
        assert_eq!(gate.confirm(&ping("n1")), Ok(()));
    }

    #[test]
    fn a_restarted_agent_keeps_an_unknown_promise_for_a_ttl_and_longer_claims_win() {
        let clock = Arc::new(ManualClock::new());
        clock.advance(Duration::from_secs(100));
        let gate = FailsafeGate::new(clock.clone(), true, Duration::from_secs(30));
        assert_eq!(gate.witness().map(|w| w.leader), Some(None));
        assert!(gate.claim_lock().is_err());
        // A sender whose ttl is longer than ours is promised its own.
        let mut long = ping("n1");
        long.ttl = Some(60);
        assert_eq!(gate.confirm(&long), Ok(()));
        assert_eq!(
            gate.witness().map(|w| w.until),
            Some(Duration::from_secs(160))
        );
        // A shorter promise never shortens one given.
        assert_eq!(gate.confirm(&ping("n1")), Ok(()));
        assert_eq!(
            gate.witness().map(|w| w.until),
            Some(Duration::from_secs(160))
        );
    }
}
