//! An in-memory DCS: a [`MemoryStore`] plays the server, each
//! [`MemoryDcs`] is one node's client.
//!
//! It behaves like etcd (revisions, one lease per node, keys attached to
//! leases) and is driven by a [`Clock`]: with a [`ManualClock`] a test decides
//! when leases expire; with [`MonotonicClock`] it runs in real time and
//! passes the same conformance suite as the real engines. [`Faults`] make a
//! node's link unreachable, a black hole, slow, or make its next writes lose
//! compare-and-set races.
//!
//! It is a stand-in for unit tests and whole-cluster simulations, never for
//! production: nothing survives the process.
//!
//! [`ManualClock`]: crate::clock::ManualClock

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{Dcs, DcsError, LockLease, SharedKey, WatchOutcome};
use crate::clock::{Clock, MonotonicClock};
use crate::model::{
    Cluster, ClusterKey, Expect, KeyLayout, LeaderLock, MemberData, RawEntry, Timing, Version,
};

/// The shared "server" all [`MemoryDcs`] clients talk to.
#[derive(Clone, Debug)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Woken on every change a watcher may care about.
    changed: Notify,
    clock: Arc<dyn Clock>,
}

#[derive(Debug, Default)]
struct State {
    revision: i64,
    keys: BTreeMap<String, Entry>,
    leases: HashMap<i64, Lease>,
    next_lease: i64,
    /// For each leader path, the revision of its last create/update/delete.
    leader_events: HashMap<String, i64>,
    /// How long after its ttl a lease (and every key attached to it) is
    /// revoked: see [`MemoryStore::set_revocation_delay`].
    revocation_delay: Duration,
}

#[derive(Debug, Clone)]
struct Entry {
    value: Vec<u8>,
    mod_revision: i64,
    lease: Option<i64>,
}

#[derive(Debug, Clone, Copy)]
struct Lease {
    ttl: Duration,
    expires_at: Duration,
}

impl State {
    /// Drops expired leases and every key attached to them.
    fn expire(&mut self, now: Duration) -> bool {
        let expired: Vec<i64> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expires_at + self.revocation_delay <= now)
            .map(|(id, _)| *id)
            .collect();
        if expired.is_empty() {
            return false;
        }
        for id in &expired {
            self.leases.remove(id);
        }
        let doomed: Vec<String> = self
            .keys
            .iter()
            .filter(|(_, e)| e.lease.is_some_and(|l| expired.contains(&l)))
            .map(|(k, _)| k.clone())
            .collect();
        for key in doomed {
            self.remove(&key);
        }
        true
    }

    fn bump(&mut self) -> i64 {
        self.revision += 1;
        self.revision
    }

    fn put(&mut self, key: &str, value: Vec<u8>, lease: Option<i64>) -> i64 {
        let rev = self.bump();
        self.keys.insert(
            key.to_string(),
            Entry {
                value,
                mod_revision: rev,
                lease,
            },
        );
        self.note_leader_event(key, rev);
        rev
    }

    fn remove(&mut self, key: &str) -> bool {
        if self.keys.remove(key).is_some() {
            let rev = self.bump();
            self.note_leader_event(key, rev);
            true
        } else {
            false
        }
    }

    fn note_leader_event(&mut self, key: &str, rev: i64) {
        if key.ends_with("/leader") {
            self.leader_events.insert(key.to_string(), rev);
        }
    }

    fn check(&self, key: &str, expect: &Expect) -> bool {
        let current = self.keys.get(key);
        match expect {
            Expect::Any => true,
            Expect::Absent => current.is_none(),
            Expect::Version(v) => current.is_some_and(|e| Some(e.mod_revision) == v.as_number()),
        }
    }

    fn grant(&mut self, ttl: Duration, now: Duration) -> i64 {
        self.next_lease += 1;
        let id = self.next_lease;
        self.leases.insert(
            id,
            Lease {
                ttl,
                expires_at: now + ttl,
            },
        );
        id
    }

    fn next_expiry(&self) -> Option<Duration> {
        self.leases
            .values()
            .map(|l| l.expires_at + self.revocation_delay)
            .min()
    }

    /// The lease `id` if its ttl has not run out: a lease past its ttl
    /// but not yet revoked cannot be renewed (etcd answers such a
    /// keepalive only once the revocation is done: "lease not found").
    fn live_lease(&mut self, id: i64, now: Duration) -> Option<&mut Lease> {
        self.leases.get_mut(&id).filter(|l| l.expires_at > now)
    }
}

impl MemoryStore {
    /// A store on the real monotonic clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(MonotonicClock::new()))
    }

    /// A store whose leases expire by `clock` (a `ManualClock` for tests
    /// that decide when time passes).
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            clock: clock.clone(),
        });
        if let Some(mut rx) = clock.subscribe() {
            // Wake watchers whenever a manual clock moves, so they re-check
            // expiry and their own timeouts.
            let weak = Arc::downgrade(&shared);
            tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    let Some(shared) = weak.upgrade() else { break };
                    let now = shared.clock.now();
                    lock(&shared.state).expire(now);
                    shared.changed.notify_waiters();
                }
            });
        }
        MemoryStore { shared }
    }

    /// A client for node `name` of the cluster at `layout`.
    pub fn client(&self, layout: KeyLayout, name: &str, timing: Timing) -> MemoryDcs {
        MemoryDcs {
            store: self.clone(),
            layout,
            name: name.to_string(),
            timing: Mutex::new(timing),
            lease: Mutex::new(None),
            faults: Arc::new(Faults::default()),
        }
    }

    /// Writes raw bytes at an absolute path, as a foreign tool might (tests
    /// use it to plant garbage).
    pub fn write_raw(&self, path: &str, value: &[u8]) {
        let mut st = lock(&self.shared.state);
        st.put(path, value.to_vec(), None);
        drop(st);
        self.shared.changed.notify_waiters();
    }

    /// Expires the leases that are due by the store's clock and returns
    /// the revision of the last change (create, update, delete) of
    /// `layout`'s leader key, 0 if it never changed: what a watch on that
    /// key would report, for a simulation that moves time itself and
    /// wakes its watchers (see the `pgha-sim` crate).
    pub fn leader_changed_at(&self, layout: &KeyLayout) -> i64 {
        let path = layout.path(&ClusterKey::Leader);
        self.with_state(|st, _| st.leader_events.get(&path).copied().unwrap_or(0))
    }

    /// Revokes leases `delay` after their ttl ran out instead of at once:
    /// a model of a loaded etcd, seen here keeping a killed leader's lease
    /// 7 s past its ttl of 5 s. Meanwhile the lease's keys stay visible
    /// (so nobody can create the leader key) and the lease cannot be
    /// renewed. The simulator draws it for some schedules.
    pub fn set_revocation_delay(&self, delay: Duration) {
        lock(&self.shared.state).revocation_delay = delay;
    }

    /// The clock leases expire by.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.shared.clock
    }

    fn now(&self) -> Duration {
        self.shared.clock.now()
    }

    /// Runs `f` on the state after expiring leases; wakes watchers afterwards.
    fn with_state<T>(&self, f: impl FnOnce(&mut State, Duration) -> T) -> T {
        let now = self.now();
        let out = {
            let mut st = lock(&self.shared.state);
            st.expire(now);
            f(&mut st, now)
        };
        self.shared.changed.notify_waiters();
        out
    }

    /// Sleeps until `deadline` on the store's clock, or until woken by a change.
    async fn wait_for_change_until(&self, deadline: Duration) {
        let notified = self.shared.changed.notified();
        let now = self.now();
        if now >= deadline {
            return;
        }
        let next_expiry = lock(&self.shared.state).next_expiry();
        let wake_at = next_expiry.map_or(deadline, |e| e.min(deadline));
        if self.shared.clock.subscribe().is_some() {
            // Manual time: only a change (or a clock move, which notifies) wakes us.
            notified.await;
        } else {
            let sleep = wake_at.saturating_sub(now);
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// Sleeps for `d` on the store's clock.
    async fn sleep(&self, d: Duration) {
        let deadline = self.now() + d;
        while self.now() < deadline {
            self.wait_for_change_until(deadline).await;
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding this lock leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What is wrong with one node's link to the store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LinkFault {
    /// Requests go through.
    #[default]
    None,
    /// Every request fails at once, as with a refused connection.
    Unreachable,
    /// Every request hangs until `retry_timeout`, then fails, as with a
    /// partition that drops packets.
    Blackhole,
}

/// Faults injected into one [`MemoryDcs`] client. Shared, so a test keeps a
/// handle after the client is boxed as `dyn Dcs`.
#[derive(Debug, Default)]
pub struct Faults {
    link: Mutex<LinkFault>,
    latency: Mutex<Duration>,
    conflicts: AtomicU32,
}

impl Faults {
    pub fn set_link(&self, fault: LinkFault) {
        *lock(&self.link) = fault;
    }

    pub fn link(&self) -> LinkFault {
        *lock(&self.link)
    }

    /// Delay added to every request (on the store's clock). A delay beyond
    /// `retry_timeout` makes the request time out.
    pub fn set_latency(&self, latency: Duration) {
        *lock(&self.latency) = latency;
    }

    /// The next `n` guarded writes and lock acquisitions lose their race.
    pub fn fail_next_writes_with_conflict(&self, n: u32) {
        self.conflicts.store(n, Ordering::SeqCst);
    }

    fn take_conflict(&self) -> bool {
        self.conflicts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// One node's client of a [`MemoryStore`].
#[derive(Debug)]
pub struct MemoryDcs {
    store: MemoryStore,
    layout: KeyLayout,
    name: String,
    timing: Mutex<Timing>,
    lease: Mutex<Option<i64>>,
    faults: Arc<Faults>,
}

impl MemoryDcs {
    /// The fault switches of this client's link.
    pub fn faults(&self) -> Arc<Faults> {
        self.faults.clone()
    }

    fn timing(&self) -> Timing {
        *lock(&self.timing)
    }

    fn path(&self, key: &ClusterKey) -> String {
        self.layout.path(key)
    }

    /// Applies the link faults: latency, then black hole or refusal.
    async fn gate(&self, operation: &'static str) -> Result<(), DcsError> {
        let retry_timeout = self.timing().retry_timeout;
        let latency = *lock(&self.faults.latency);
        if latency > Duration::ZERO {
            self.store.sleep(latency.min(retry_timeout)).await;
            if latency >= retry_timeout {
                return Err(DcsError::unreachable(operation, "request timed out"));
            }
        }
        match self.faults.link() {
            LinkFault::None => Ok(()),
            LinkFault::Unreachable => Err(DcsError::unreachable(operation, "connection refused")),
            LinkFault::Blackhole => {
                self.store
                    .sleep(retry_timeout.saturating_sub(latency))
                    .await;
                Err(DcsError::unreachable(operation, "request timed out"))
            }
        }
    }

    /// Our lease if it is still alive, refreshed; else a new one. Reports
    /// whether the previous lease had expired.
    fn refresh_or_grant(&self, st: &mut State, now: Duration) -> (i64, bool) {
        let ttl = self.timing().ttl;
        let mut lease = lock(&self.lease);
        if let Some(id) = *lease
            && let Some(l) = st.live_lease(id, now)
        {
            l.expires_at = now + l.ttl;
            return (id, false);
        }
        let had_one = lease.is_some();
        let id = st.grant(ttl, now);
        *lease = Some(id);
        (id, had_one)
    }

    fn lease_ttl(st: &State, id: i64) -> Duration {
        st.leases.get(&id).map_or(Duration::ZERO, |l| l.ttl)
    }
}

#[async_trait]
impl Dcs for MemoryDcs {
    fn member_name(&self) -> &str {
        &self.name
    }

    fn layout(&self) -> &KeyLayout {
        &self.layout
    }

    fn set_timing(&self, timing: Timing) {
        *lock(&self.timing) = timing;
    }

    async fn load(&self) -> Result<Cluster, DcsError> {
        self.gate("load").await?;
        let prefix = self.layout.prefix();
        let (entries, revision) = self.store.with_state(|st, _| {
            let entries: Vec<RawEntry> = st
                .keys
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .filter_map(|(k, e)| {
                    let key = ClusterKey::parse(&k[prefix.len()..])?;
                    Some(RawEntry {
                        key,
                        value: e.value.clone(),
                        version: Version::number(e.mod_revision),
                        owner: e.lease.map(|l| l.to_string()),
                    })
                })
                .collect();
            (entries, st.revision)
        });
        Ok(Cluster::from_entries(entries, Version::number(revision)))
    }

    async fn acquire_leader(&self) -> Result<LockLease, DcsError> {
        self.gate("acquire_leader").await?;
        let path = self.path(&ClusterKey::Leader);
        if self.faults.take_conflict() {
            return Err(DcsError::not_owner("leader", Some("(injected)".into())));
        }
        self.store.with_state(|st, now| {
            if let Some(e) = st.keys.get(&path) {
                return Err(DcsError::not_owner(
                    "leader",
                    Some(String::from_utf8_lossy(&e.value).into_owned()),
                ));
            }
            let (lease, _) = self.refresh_or_grant(st, now);
            st.put(&path, self.name.as_bytes().to_vec(), Some(lease));
            Ok(LockLease {
                valid_for: Self::lease_ttl(st, lease),
            })
        })
    }

    async fn renew_leader(&self) -> Result<LockLease, DcsError> {
        self.gate("renew_leader").await?;
        let path = self.path(&ClusterKey::Leader);
        self.store.with_state(|st, now| {
            let ours = *lock(&self.lease);
            let alive = ours.filter(|id| st.live_lease(*id, now).is_some());
            match st.keys.get(&path) {
                Some(e)
                    if e.value == self.name.as_bytes() && e.lease.is_some() && e.lease == alive =>
                {
                    let id = alive.unwrap_or_default();
                    if let Some(l) = st.leases.get_mut(&id) {
                        l.expires_at = now + l.ttl;
                    }
                    Ok(LockLease {
                        valid_for: Self::lease_ttl(st, id),
                    })
                }
                _ if ours.is_some() && alive.is_none() => {
                    Err(DcsError::SessionExpired { what: "lease" })
                }
                Some(e) => Err(DcsError::not_owner(
                    "leader",
                    Some(String::from_utf8_lossy(&e.value).into_owned()),
                )),
                None => Err(DcsError::not_owner("leader", None)),
            }
        })
    }

    async fn release_leader(&self) -> Result<(), DcsError> {
        self.gate("release_leader").await?;
        let path = self.path(&ClusterKey::Leader);
        self.store.with_state(|st, _| match st.keys.get(&path) {
            Some(e) if e.value == self.name.as_bytes() => {
                st.remove(&path);
                Ok(())
            }
            Some(e) => Err(DcsError::not_owner(
                "leader",
                Some(String::from_utf8_lossy(&e.value).into_owned()),
            )),
            None => Err(DcsError::not_owner("leader", None)),
        })
    }

    async fn release_leader_at(&self, lock: &LeaderLock) -> Result<(), DcsError> {
        self.gate("release_leader").await?;
        if lock.name != self.name {
            return Err(DcsError::not_owner("leader", Some(lock.name.clone())));
        }
        let path = self.path(&ClusterKey::Leader);
        let want = lock.version.as_number();
        self.store.with_state(|st, _| match st.keys.get(&path) {
            Some(e)
                if e.value == self.name.as_bytes()
                    && Some(e.mod_revision) == want
                    && e.lease.map(|l| l.to_string()) == lock.owner =>
            {
                st.remove(&path);
                Ok(())
            }
            Some(e) if e.value == self.name.as_bytes() => Err(DcsError::conflict("leader")),
            Some(e) => Err(DcsError::not_owner(
                "leader",
                Some(String::from_utf8_lossy(&e.value).into_owned()),
            )),
            None => Err(DcsError::not_owner("leader", None)),
        })
    }

    /// Every lock lives in a lease, as in etcd; [`MemoryStore::write_raw`]
    /// writes keys without one.
    fn locks_have_owners(&self) -> bool {
        true
    }

    async fn take_leader_from(&self, lock: &LeaderLock) -> Result<LockLease, DcsError> {
        self.gate("take_leader_from").await?;
        if self.faults.take_conflict() {
            return Err(DcsError::conflict("leader"));
        }
        let path = self.path(&ClusterKey::Leader);
        let want = lock.version.as_number();
        self.store.with_state(|st, now| {
            // The version is the key's mod_revision, unique to one write:
            // whatever happened to the key since the read moved it.
            let current = st.keys.get(&path).map(|e| e.mod_revision);
            if want.is_none() || current != want {
                return Err(DcsError::conflict("leader"));
            }
            let (lease, _) = self.refresh_or_grant(st, now);
            st.put(&path, self.name.as_bytes().to_vec(), Some(lease));
            Ok(LockLease {
                valid_for: Self::lease_ttl(st, lease),
            })
        })
    }

    async fn remove_leader_at(&self, lock: &LeaderLock) -> Result<(), DcsError> {
        self.gate("remove_leader_at").await?;
        if self.faults.take_conflict() {
            return Err(DcsError::conflict("leader"));
        }
        let path = self.path(&ClusterKey::Leader);
        let want = lock.version.as_number();
        self.store.with_state(|st, _| match st.keys.get(&path) {
            None => Ok(()),
            Some(e) if want.is_some() && Some(e.mod_revision) == want => {
                st.remove(&path);
                Ok(())
            }
            Some(_) => Err(DcsError::conflict("leader")),
        })
    }

    async fn touch_member(&self, data: &MemberData) -> Result<(), DcsError> {
        self.gate("touch_member").await?;
        let value = super::to_json(data)?;
        let path = self.path(&ClusterKey::Member(self.name.clone()));
        self.store.with_state(|st, now| {
            let (lease, _) = self.refresh_or_grant(st, now);
            st.put(&path, value.into_bytes(), Some(lease));
            Ok(())
        })
    }

    async fn write(
        &self,
        key: SharedKey,
        value: &str,
        expect: Expect,
    ) -> Result<Version, DcsError> {
        self.gate("write").await?;
        if self.faults.take_conflict() {
            return Err(DcsError::conflict(key));
        }
        let path = self.path(&key.cluster_key());
        self.store.with_state(|st, _| {
            if !st.check(&path, &expect) {
                return Err(DcsError::conflict(key));
            }
            Ok(Version::number(st.put(
                &path,
                value.as_bytes().to_vec(),
                None,
            )))
        })
    }

    async fn delete(&self, key: SharedKey, expect: Expect) -> Result<(), DcsError> {
        self.gate("delete").await?;
        if self.faults.take_conflict() {
            return Err(DcsError::conflict(key));
        }
        let path = self.path(&key.cluster_key());
        self.store.with_state(|st, _| {
            if !st.check(&path, &expect) {
                return Err(DcsError::conflict(key));
            }
            st.remove(&path);
            Ok(())
        })
    }

    async fn delete_cluster(&self) -> Result<(), DcsError> {
        self.gate("delete_cluster").await?;
        let prefix = self.layout.prefix();
        self.store.with_state(|st, _| {
            let doomed: Vec<String> = st
                .keys
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(k, _)| k.clone())
                .collect();
            for k in doomed {
                st.remove(&k);
            }
            Ok(())
        })
    }

    async fn watch_leader(
        &self,
        cursor: &Version,
        timeout: Duration,
    ) -> Result<WatchOutcome, DcsError> {
        let start = self.store.now();
        self.gate("watch_leader").await?;
        let deadline = start + timeout;
        let path = self.path(&ClusterKey::Leader);
        let since = cursor.as_number().unwrap_or(0);
        loop {
            let changed = self
                .store
                .with_state(|st, _| st.leader_events.get(&path).is_some_and(|rev| *rev > since));
            if changed {
                return Ok(WatchOutcome::Changed);
            }
            if self.faults.link() != LinkFault::None {
                return Err(DcsError::unreachable(
                    "watch_leader",
                    "link lost during watch",
                ));
            }
            if self.store.now() >= deadline {
                return Ok(WatchOutcome::TimedOut);
            }
            self.store.wait_for_change_until(deadline).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::dcs::DcsExt;
    use crate::model::DynamicConfig;

    fn timing(ttl: u64) -> Timing {
        Timing::adjusted(ttl, 1, 1).0
    }

    fn layout() -> KeyLayout {
        KeyLayout::new("/service", "test")
    }

    #[tokio::test]
    async fn leases_expire_by_the_manual_clock() {
        let clock = Arc::new(ManualClock::new());
        let store = MemoryStore::with_clock(clock.clone());
        let a = store.client(layout(), "a", timing(10));
        let b = store.client(layout(), "b", timing(10));
        a.touch_member(&MemberData::default()).await.unwrap();
        let lease = a.acquire_leader().await.unwrap();
        assert_eq!(lease.valid_for, Duration::from_secs(10));

        clock.advance(Duration::from_secs(9));
        assert!(b.acquire_leader().await.is_err());
        assert_eq!(b.load().await.unwrap().leader_name(), Some("a"));

        clock.advance(Duration::from_secs(1));
        let c = b.load().await.unwrap();
        assert_eq!(c.leader, None);
        assert!(c.member("a").is_none());
        assert!(matches!(
            a.renew_leader().await,
            Err(DcsError::SessionExpired { .. })
        ));
        b.acquire_leader().await.unwrap();
        // a's next touch starts a fresh lease; it does not bring the lock back
        a.touch_member(&MemberData::default()).await.unwrap();
        assert!(matches!(
            a.renew_leader().await,
            Err(DcsError::NotOwner { .. })
        ));
    }

    #[tokio::test]
    async fn watch_wakes_on_manual_expiry_and_times_out_on_manual_time() {
        let clock = Arc::new(ManualClock::new());
        let store = MemoryStore::with_clock(clock.clone());
        let a = store.client(layout(), "a", timing(5));
        let b = Arc::new(store.client(layout(), "b", timing(5)));
        a.acquire_leader().await.unwrap();
        let cursor = b.load().await.unwrap().watch_cursor;
        let watcher = {
            let b = b.clone();
            let cursor = cursor.clone();
            tokio::spawn(async move { b.watch_leader(&cursor, Duration::from_secs(100)).await })
        };
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(5));
        assert_eq!(watcher.await.unwrap().unwrap(), WatchOutcome::Changed);

        let cursor = b.load().await.unwrap().watch_cursor;
        let watcher = {
            let b = b.clone();
            tokio::spawn(async move { b.watch_leader(&cursor, Duration::from_secs(3)).await })
        };
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(3));
        assert_eq!(watcher.await.unwrap().unwrap(), WatchOutcome::TimedOut);
    }

    #[tokio::test]
    async fn injected_faults() {
        let store = MemoryStore::new();
        let a = store.client(layout(), "a", timing(10));
        let faults = a.faults();

        faults.set_link(LinkFault::Unreachable);
        assert!(a.load().await.unwrap_err().is_unreachable());
        faults.set_link(LinkFault::None);

        faults.fail_next_writes_with_conflict(1);
        let err = a
            .write_config(&DynamicConfig::new(), Expect::Any)
            .await
            .unwrap_err();
        assert_eq!(err, DcsError::conflict("config"));
        a.write_config(&DynamicConfig::new(), Expect::Any)
            .await
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn blackhole_and_latency_respect_retry_timeout() {
        let store = MemoryStore::new();
        let a = store.client(layout(), "a", timing(10));
        let rt = a.timing().retry_timeout;
        let faults = a.faults();

        faults.set_link(LinkFault::Blackhole);
        let t0 = tokio::time::Instant::now();
        assert!(a.renew_leader().await.unwrap_err().is_unreachable());
        assert_eq!(t0.elapsed(), rt);
        faults.set_link(LinkFault::None);

        faults.set_latency(rt * 3);
        let t0 = tokio::time::Instant::now();
        assert!(a.load().await.unwrap_err().is_unreachable());
        assert_eq!(t0.elapsed(), rt);

        faults.set_latency(rt / 2);
        let t0 = tokio::time::Instant::now();
        a.load().await.unwrap();
        assert_eq!(t0.elapsed(), rt / 2);
    }
}
