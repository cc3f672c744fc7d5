//! The distributed configuration store, as the HA loop needs it.
//!
//! One [`Dcs`] value is one node's client: it knows the node's member name
//! and the cluster's [`KeyLayout`], and owns the node's lease or session.
//! Four engines implement it; the table says how each maps the operations.
//! "lease/session" below means: the etcd lease, the ZooKeeper session, the
//! Consul session, or (Kubernetes) the `renewTime` annotation judged by readers.
//!
//! | operation | etcd v3 (`pgha-dcs-etcd`) | ZooKeeper (`pgha-dcs-zk`) | Consul (`pgha-dcs-consul`) | Kubernetes (`pgha-dcs-k8s`) |
//! |---|---|---|---|---|
//! | [`load`](Dcs::load) | one range read of the prefix; cursor = header revision | `getChildren` + `getData` of each known key; cursor = leader znode's `czxid:mzxid` | recursive `GET /v1/kv/<prefix>?recurse`; cursor = `X-Consul-Index` | list ConfigMaps (or Endpoints) by the cluster's labels and the member Pods; cursor = leader object's `resourceVersion` |
//! | [`acquire_leader`](Dcs::acquire_leader) | txn `create_revision(leader) == 0` → put with our lease | create ephemeral `leader` znode | `PUT leader?acquire=<session>` | PATCH leader annotations with `resourceVersion`, allowed only if the holder is empty or its record has not changed for `ttl` since we first saw it; 409 = lost |
//! | [`renew_leader`](Dcs::renew_leader) | lease keepalive, then txn `value(leader) == name` (re-attaching to our lease if needed) | session alive + `leader` znode's `ephemeralOwner` is our session | session renew + leader key's `Session` is ours | PATCH `renewTime` with `resourceVersion` while `leader` names us |
//! | [`release_leader`](Dcs::release_leader) | txn delete if `value(leader) == name` | delete `leader` at the version we created, if `ephemeralOwner` is ours | `PUT leader?release=<session>` then CAS delete | PATCH `leader: ""` with `resourceVersion` while it names us |
//! | [`release_leader_at`](Dcs::release_leader_at) (fence guard, another client of the same member) | txn delete if `value(leader) == name` and `mod_revision == version`, whatever lease it is on | `getData` + delete at the read znode version, only if the data names us and `czxid` is the version's; any session may delete an ephemeral znode | CAS `DELETE leader?cas=<ModifyIndex>` after checking the value names us; a session-locked key can be deleted by any client | PATCH `leader: ""` with `resourceVersion == version` while it names us |
//! | [`take_leader_from`](Dcs::take_leader_from) (a key no lease backs, taken back) | lease keepalive, then txn `mod_revision(leader) == version` → put our name with our lease | `sync` + `getData`: same `mzxid` and owner as read; then one `multi`: delete `leader` at its data version + create ephemeral ours (a persistent key: first create and delete a child of it, which an ephemeral replacement would refuse) | session renew, then `PUT /v1/txn`: `check-index` at the `ModifyIndex` read, `delete`, `lock` with our session (`?cas=` cannot be combined with `?acquire=`) | PATCH our record guarded by the `resourceVersion` read |
//! | [`remove_leader_at`](Dcs::remove_leader_at) (a key no lease backs, removed) | txn `mod_revision(leader) == version` → delete | the same check, then delete at its data version (a persistent key: inside the same child-probe `multi`) | `DELETE leader?cas=<ModifyIndex>` | PATCH `leader: null` guarded by the `resourceVersion` read |
//! | [`touch_member`](Dcs::touch_member) | lease keepalive (grant a new lease if ours expired) + put `members/<name>` with it | create or set ephemeral `members/<name>` in our session | `PUT members/<name>?acquire=<session>` | PATCH our Pod's `status` annotation and `role` label |
//! | [`write`](Dcs::write) / [`delete`](Dcs::delete) with [`Expect`] | txn on `mod_revision` (`Absent`: `create_revision == 0`) | `setData`/`delete` with znode version (`Absent`: `create`) | `?cas=<ModifyIndex>` (`Absent`: `cas=0`) | PATCH with `resourceVersion` (`Absent`: create the object, 409 if it exists) |
//! | [`delete_cluster`](Dcs::delete_cluster) | delete range of the prefix | recursive delete | `DELETE <prefix>?recurse` | delete the cluster's ConfigMaps/Endpoints |
//! | [`watch_leader`](Dcs::watch_leader) | watch `leader` from cursor + 1 | data watch on `leader` (exists watch when absent) | blocking query `?index=<cursor>&wait=` | watch the leader object from its `resourceVersion`; relist on 410 |
//! | expiry of leader and member keys | lease TTL = `ttl`, refreshed only by this client's calls | session timeout = `ttl` | session TTL = `ttl/2` (Consul may wait up to 2×), `Behavior=delete` | judged by readers: `renewTime` older than `ttl` |
//!
//! Rules every implementation keeps:
//! - **Bounded.** Every call returns within `retry_timeout` (plus scheduling
//!   slack); with no answer by then it fails with [`DcsError::Unreachable`].
//!   [`watch_leader`](Dcs::watch_leader) returns at its own timeout.
//! - **No silent ownership.** `renew_leader` succeeds only if, when it
//!   returns, the lock names this node *and* is attached to this node's
//!   current lease/session. A lease or session that expired is reported as
//!   [`DcsError::SessionExpired`] or [`DcsError::NotOwner`], never papered
//!   over by quietly starting a new one under an old lock.
//! - **Honest lifetimes.** A [`LockLease`] says for how long after the call
//!   was *sent* no other node can take the lock. The HA loop stops writes
//!   before that time passes (see ARCHITECTURE.md).
//! - **Nothing refreshes in the background.** An etcd lease is kept alive
//!   only by this client's calls, so a stuck HA loop lets its lock expire.
//!   (A ZooKeeper session is kept alive by the client library's pings; that
//!   engine's limit is documented in `pgha-dcs-zk`.)
//! - **Garbage in, problem out.** A value that cannot be read does not fail
//!   [`load`](Dcs::load); it is reported in [`Cluster::problems`].

mod bounded;
pub mod error;
pub mod memory;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

pub use bounded::bounded;
pub use error::DcsError;

use crate::model::{
    Cluster, ClusterKey, DynamicConfig, Expect, Failover, Failsafe, History, KeyLayout, LeaderLock,
    MemberData, Status, SyncState, Timing, Version,
};

/// What holding the leader lock is worth: for how long after the request
/// was sent no other node can take it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockLease {
    /// Measured from the moment the call that returned this was sent.
    pub valid_for: Duration,
}

/// How a [`Dcs::watch_leader`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchOutcome {
    /// The leader key was created, deleted or handed to another holder
    /// since the cursor (a renewal by the same holder may also wake it).
    Changed,
    /// The timeout passed with no change.
    TimedOut,
}

/// The keys written by compare-and-set rather than held by a lease or
/// session: they outlive the node that wrote them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SharedKey {
    Initialize,
    Config,
    Failover,
    Sync,
    History,
    Status,
    Failsafe,
}

impl SharedKey {
    pub fn cluster_key(self) -> ClusterKey {
        match self {
            SharedKey::Initialize => ClusterKey::Initialize,
            SharedKey::Config => ClusterKey::Config,
            SharedKey::Failover => ClusterKey::Failover,
            SharedKey::Sync => ClusterKey::Sync,
            SharedKey::History => ClusterKey::History,
            SharedKey::Status => ClusterKey::Status,
            SharedKey::Failsafe => ClusterKey::Failsafe,
        }
    }
}

impl fmt::Display for SharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.cluster_key().fmt(f)
    }
}

/// One node's view of the DCS. See the module docs for the engine mapping
/// and the rules every implementation keeps.
#[async_trait]
pub trait Dcs: Send + Sync + fmt::Debug {
    /// This node's member name: what it writes into `leader` and under `members/`.
    fn member_name(&self) -> &str;

    /// Where the cluster's keys live.
    fn layout(&self) -> &KeyLayout;

    /// Adopts new timings (the dynamic configuration changed). `ttl` applies
    /// from the next lease or session this client starts; `retry_timeout`
    /// bounds every call from now on. A shorter lease is never assumed
    /// before it is granted: [`LockLease::valid_for`] always tells the truth.
    fn set_timing(&self, timing: Timing);

    /// Reads the whole cluster in one consistent snapshot where the engine
    /// offers one (etcd, Consul), or key by key (ZooKeeper, Kubernetes).
    async fn load(&self) -> Result<Cluster, DcsError>;

    /// Takes the leader lock if, and only if, nobody holds it. Fails with
    /// [`DcsError::NotOwner`] naming the holder when someone does.
    async fn acquire_leader(&self) -> Result<LockLease, DcsError>;

    /// Extends the lock this node holds. Fails, changing nothing, when the
    /// lock is gone, held by another node, or our lease/session expired.
    async fn renew_leader(&self) -> Result<LockLease, DcsError>;

    /// Gives the lock up, if this node holds it; [`DcsError::NotOwner`] and
    /// no change otherwise.
    async fn release_leader(&self) -> Result<(), DcsError>;

    /// Deletes the leader key if it is still exactly `lock` as a
    /// [`load`](Dcs::load) read it (names this member, same version, same
    /// lease or session), whichever client holds that lease or session. For
    /// the fence guard, a second client of the same member, releasing the
    /// lock of its agent that died: it never deletes another node's lock,
    /// nor a later lock of this member. [`DcsError::NotOwner`] when `lock`
    /// names another member or the key names another node or is gone,
    /// [`DcsError::Conflict`] when it changed since it was read; no change
    /// then. (ZooKeeper can only condition a delete on the data version;
    /// see `pgha-dcs-zk` for why that is enough for the guard.)
    async fn release_leader_at(&self, lock: &LeaderLock) -> Result<(), DcsError>;

    /// Whether every lock this engine grants lives in a lease or session
    /// (etcd, ZooKeeper, Consul, the in-memory DCS), so that a leader key
    /// attached to none ([`LeaderLock::owner`] `None`) was written by hand
    /// or by a tool without one: nobody renews it and it never expires.
    /// `false` where locks are judged by their age instead (Kubernetes,
    /// whose `load` reports only records still renewed). No default: each
    /// backend states what its engine does, since `ha::decide` removes or
    /// takes over a key it reads as unowned.
    fn locks_have_owners(&self) -> bool;

    /// Replaces the leader key with a lock of this member on its current
    /// lease or session, if the key is still exactly `lock` as a
    /// [`load`](Dcs::load) read it (same version), whatever it names and
    /// whichever lease or session (if any) holds it. For a key no lease or
    /// session backs, taken back by the primary whose lock it overwrote
    /// (see `ha::decide`, step 3b).
    ///
    /// The replacement is one compare-and-set on the version read: a key
    /// written, re-acquired, released or deleted since the read is never
    /// replaced ([`DcsError::Conflict`] and no change, also when it is
    /// gone). On success the lock is like one [`acquire_leader`](Dcs::acquire_leader)
    /// took: [`renew_leader`](Dcs::renew_leader) and
    /// [`release_leader`](Dcs::release_leader) work on it, and it expires
    /// with this node's lease or session. The [`LockLease`] is as honest as
    /// `acquire_leader`'s: measured from the moment this call was sent.
    async fn take_leader_from(&self, lock: &LeaderLock) -> Result<LockLease, DcsError>;

    /// Deletes the leader key if it is still exactly `lock` as read (same
    /// version), whatever it names and whoever holds it. For a key no lease
    /// or session backs, which would otherwise block every election
    /// forever. [`DcsError::Conflict`] and no change when it changed since
    /// (a new key in its place included); `Ok` when it is already gone, so
    /// that the caller's next step, the usual race for the lock, is the same
    /// either way.
    async fn remove_leader_at(&self, lock: &LeaderLock) -> Result<(), DcsError>;

    /// Publishes this node's status under `members/<name>`, attached to its
    /// lease/session so the key vanishes when the node stops refreshing.
    /// Refreshes the lease/session, starting a new one if it had expired.
    async fn touch_member(&self, data: &MemberData) -> Result<(), DcsError>;

    /// Writes a shared key if `expect` holds; returns the new version.
    /// [`DcsError::Conflict`] and no change when it does not.
    async fn write(&self, key: SharedKey, value: &str, expect: Expect)
    -> Result<Version, DcsError>;

    /// Deletes a shared key if `expect` holds (`Expect::Absent`: succeeds
    /// only when there is nothing to delete). Deleting an absent key with
    /// `Expect::Any` succeeds.
    async fn delete(&self, key: SharedKey, expect: Expect) -> Result<(), DcsError>;

    /// Deletes every key of the cluster (`patronictl remove`).
    async fn delete_cluster(&self) -> Result<(), DcsError>;

    /// Blocks until the leader key changed after `cursor` (taken from
    /// [`Cluster::watch_cursor`]) or `timeout` passed. Returns at once if it
    /// already changed, so no change between a load and a watch is missed.
    async fn watch_leader(
        &self,
        cursor: &Version,
        timeout: Duration,
    ) -> Result<WatchOutcome, DcsError>;
}

/// Typed writes on top of [`Dcs::write`]: values serialised exactly as Patroni does.
#[async_trait]
pub trait DcsExt: Dcs {
    /// Races to create `initialize` with an empty value: the winner
    /// bootstraps the cluster. [`DcsError::Conflict`] if it already exists.
    async fn race_initialize(&self) -> Result<Version, DcsError> {
        self.write(SharedKey::Initialize, "", Expect::Absent).await
    }

    /// Records the system identifier after a successful bootstrap.
    async fn set_initialize(&self, system_id: &str, expect: Expect) -> Result<Version, DcsError> {
        self.write(SharedKey::Initialize, system_id, expect).await
    }

    /// Gives up a bootstrap that failed, so another node can try.
    async fn cancel_initialize(&self) -> Result<(), DcsError> {
        self.delete(SharedKey::Initialize, Expect::Any).await
    }

    async fn write_config(
        &self,
        config: &DynamicConfig,
        expect: Expect,
    ) -> Result<Version, DcsError> {
        self.write(SharedKey::Config, &to_json(config)?, expect)
            .await
    }

    async fn write_failover(
        &self,
        failover: &Failover,
        expect: Expect,
    ) -> Result<Version, DcsError> {
        self.write(SharedKey::Failover, &to_json(failover)?, expect)
            .await
    }

    async fn write_sync(&self, sync: &SyncState, expect: Expect) -> Result<Version, DcsError> {
        self.write(SharedKey::Sync, &to_json(sync)?, expect).await
    }

    async fn write_history(&self, history: &History) -> Result<Version, DcsError> {
        self.write(SharedKey::History, &to_json(history)?, Expect::Any)
            .await
    }

    async fn write_status(&self, status: &Status) -> Result<Version, DcsError> {
        self.write(SharedKey::Status, &to_json(status)?, Expect::Any)
            .await
    }

    async fn write_failsafe(&self, failsafe: &Failsafe) -> Result<Version, DcsError> {
        self.write(SharedKey::Failsafe, &to_json(failsafe)?, Expect::Any)
            .await
    }
}

impl<D: Dcs + ?Sized> DcsExt for D {}

/// Compact JSON, as Patroni writes (`separators=(',', ':')`).
pub fn to_json<T: serde::Serialize>(value: &T) -> Result<String, DcsError> {
    serde_json::to_string(value).map_err(|e| DcsError::rejected("serialise", e))
}
