//! Lifetimes judged by readers: the leader record, member heartbeats, and
//! what this client knows of its own lock.
//!
//! Kubernetes has no leases that expire by themselves (for this purpose),
//! so, as in Patroni, a reader keeps, for each record it watches, the
//! content it last saw and the moment (on its own monotonic clock) it first
//! saw that content. A record is alive while that moment is less than the
//! record's `ttl` ago. A holder that stops writing is therefore considered
//! gone `ttl` after each reader first saw its last write: never before the
//! write was made, whatever the readers' clocks say.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Annotation names of the leader record, Patroni's.
pub const LEADER: &str = "leader";
pub const ACQUIRE_TIME: &str = "acquireTime";
pub const RENEW_TIME: &str = "renewTime";
pub const TTL: &str = "ttl";
pub const TRANSITIONS: &str = "transitions";

/// The five annotations of the leader object that make Patroni's leader
/// record. Anything else on the object (`optime`, `slots`, `failsafe`) is
/// not part of it, so a status update neither renews nor disturbs the lock.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderRecord {
    pub leader: Option<String>,
    pub acquire_time: Option<String>,
    pub renew_time: Option<String>,
    pub ttl: Option<String>,
    pub transitions: Option<String>,
}

impl LeaderRecord {
    pub fn from_annotations(a: &BTreeMap<String, String>) -> Self {
        let get = |k: &str| a.get(k).cloned();
        LeaderRecord {
            leader: get(LEADER),
            acquire_time: get(ACQUIRE_TIME),
            renew_time: get(RENEW_TIME),
            ttl: get(TTL),
            transitions: get(TRANSITIONS),
        }
    }

    /// Nothing recorded at all.
    pub fn is_empty(&self) -> bool {
        *self == LeaderRecord::default()
    }

    /// The holder, if the record names one.
    pub fn holder(&self) -> Option<&str> {
        self.leader.as_deref().filter(|l| !l.is_empty())
    }

    /// The record's own `ttl` (whole seconds), else `default`; a value that
    /// is not a positive integer reads as `default`, as in Patroni.
    pub fn ttl_or(&self, default: Duration) -> Duration {
        self.ttl
            .as_deref()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .filter(|t| *t > 0)
            .map_or(default, Duration::from_secs)
    }

    pub fn transitions(&self) -> u64 {
        self.transitions
            .as_deref()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The annotations that write this record (`None` deletes).
    pub fn annotations(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            (LEADER, self.leader.clone()),
            (ACQUIRE_TIME, self.acquire_time.clone()),
            (RENEW_TIME, self.renew_time.clone()),
            (TTL, self.ttl.clone()),
            (TRANSITIONS, self.transitions.clone()),
        ]
    }
}

/// One reader's view of a record: the content and when it was first seen.
#[derive(Clone, Debug)]
pub struct Seen<T> {
    pub content: T,
    pub since: Instant,
}

/// Tracks when each record (by key) was first seen in its current form.
#[derive(Debug)]
pub struct Observer<K, T> {
    seen: HashMap<K, Seen<T>>,
}

impl<K, T> Default for Observer<K, T> {
    fn default() -> Self {
        Observer {
            seen: HashMap::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone, T: PartialEq + Clone> Observer<K, T> {
    /// Records that `content` was seen at `at` and returns since when it
    /// has been seen unchanged.
    pub fn observe(&mut self, key: &K, content: &T, at: Instant) -> Instant {
        match self.seen.get_mut(key) {
            Some(s) if s.content == *content => s.since,
            _ => {
                self.seen.insert(
                    key.clone(),
                    Seen {
                        content: content.clone(),
                        since: at,
                    },
                );
                at
            }
        }
    }

    /// Since when `content` has been seen, if it is what was last seen.
    pub fn since(&self, key: &K, content: &T) -> Option<Instant> {
        self.seen
            .get(key)
            .filter(|s| s.content == *content)
            .map(|s| s.since)
    }

    /// Keeps only the keys `keep` says to keep.
    pub fn retain(&mut self, keep: impl Fn(&K) -> bool) {
        self.seen.retain(|k, _| keep(k));
    }

    pub fn clear(&mut self) {
        self.seen.clear();
    }
}

/// The leader records this client wrote, so it can tell its own lock from
/// one a namesake (another process with the same member name, or its own
/// previous run) wrote.
#[derive(Debug, Default)]
pub struct OwnLock {
    /// The newest record this client wrote and saw applied, with the
    /// instant its request was sent.
    pub confirmed: Option<(LeaderRecord, Instant)>,
    /// Records whose write was sent but whose outcome was not seen (a
    /// timeout): if one of them is found on the object, it is ours.
    pub unconfirmed: VecDeque<(LeaderRecord, Instant)>,
}

/// How many unconfirmed writes are remembered.
const UNCONFIRMED: usize = 8;

impl OwnLock {
    pub fn sending(&mut self, rec: &LeaderRecord, sent: Instant) {
        self.unconfirmed.push_back((rec.clone(), sent));
        while self.unconfirmed.len() > UNCONFIRMED {
            self.unconfirmed.pop_front();
        }
    }

    pub fn confirmed(&mut self, rec: LeaderRecord, sent: Instant) {
        self.unconfirmed.clear();
        self.confirmed = Some((rec, sent));
    }

    /// A write that surely did not apply (409): forget it.
    pub fn refused(&mut self, rec: &LeaderRecord) {
        self.unconfirmed.retain(|(r, _)| r != rec);
    }

    /// If `current` is a record this client wrote: when that write was sent.
    pub fn sent_at(&mut self, current: &LeaderRecord) -> Option<Instant> {
        if let Some((r, sent)) = &self.confirmed
            && r == current
        {
            return Some(*sent);
        }
        let found = self
            .unconfirmed
            .iter()
            .find(|(r, _)| r == current)
            .cloned()?;
        self.confirmed(found.0, found.1);
        Some(found.1)
    }

    pub fn clear(&mut self) {
        self.confirmed = None;
        self.unconfirmed.clear();
    }
}

/// The annotation of a member Pod in which pgha proves it is alive.
pub const HEARTBEAT: &str = "pgha/heartbeat";

/// What pgha writes into [`HEARTBEAT`] with every `touch_member`.
///
/// It changes on every write (so readers can judge the member as they judge
/// the leader record) and names the `status` it was written with, so a
/// status written later by something else (a Patroni node taking over the
/// Pod) is recognised and not judged by a heartbeat that is not its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    #[serde(rename = "renewTime")]
    pub renew_time: String,
    /// Seconds after which readers may consider the member gone.
    pub ttl: u64,
    /// [`digest`] of the `status` annotation written with it.
    pub status: String,
}

impl Heartbeat {
    pub fn parse(text: &str) -> Option<Heartbeat> {
        serde_json::from_str(text).ok()
    }

    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A stable fingerprint of a text (FNV-1a, 64 bits): not for security,
/// only to tie a heartbeat to the status it was written with.
pub fn digest(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("fnv1a64:{h:016x}")
}

/// `renewTime` / `acquireTime` as Patroni writes them
/// (`datetime.now(tzutc).isoformat()`): microseconds and `+00:00`.
pub fn iso_now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observer_keeps_the_first_sighting_of_unchanged_content() {
        let mut o: Observer<&str, String> = Observer::default();
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(3);
        assert_eq!(o.observe(&"k", &"a".to_string(), t0), t0);
        assert_eq!(o.observe(&"k", &"a".to_string(), t1), t0);
        assert_eq!(o.observe(&"k", &"b".to_string(), t1), t1);
        assert_eq!(o.since(&"k", &"a".to_string()), None);
    }

    #[test]
    fn own_lock_recognises_an_unseen_write() {
        let mut own = OwnLock::default();
        let t = Instant::now();
        let r = LeaderRecord {
            leader: Some("a".into()),
            renew_time: Some("x".into()),
            ..Default::default()
        };
        own.sending(&r, t);
        assert_eq!(own.sent_at(&r), Some(t));
        assert!(own.confirmed.is_some());
        let other = LeaderRecord {
            leader: Some("a".into()),
            renew_time: Some("y".into()),
            ..Default::default()
        };
        assert_eq!(own.sent_at(&other), None);
    }

    #[test]
    fn record_fields() {
        let a: BTreeMap<String, String> = [
            ("leader", "n1"),
            ("ttl", "30"),
            ("transitions", "4"),
            ("optime", "5"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let r = LeaderRecord::from_annotations(&a);
        assert_eq!(r.holder(), Some("n1"));
        assert_eq!(r.ttl_or(Duration::from_secs(1)), Duration::from_secs(30));
        assert_eq!(r.transitions(), 4);
        let mut bad = r.clone();
        bad.ttl = Some("0".into());
        assert_eq!(bad.ttl_or(Duration::from_secs(7)), Duration::from_secs(7));
        assert_eq!(digest("abc"), digest("abc"));
        assert_ne!(digest("abc"), digest("abd"));
        let now = iso_now();
        assert!(now.ends_with("+00:00") && now.contains('.'), "{now}");
    }
}
