//! [`EtcdDcs`]: one node's client, implementing [`Dcs`] on etcd v3.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, KeyValue, PutOptions, Txn, TxnOp,
    TxnOpResponse, TxnResponse, WatchOptions,
};
use pgha_core::dcs::{Dcs, DcsError, LockLease, SharedKey, WatchOutcome};
use pgha_core::model::{
    Cluster, ClusterKey, Expect, KeyLayout, LeaderLock, MemberData, RawEntry, Timing, Version,
};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::EtcdConfig;
use crate::conn::{Conn, Connector};
use crate::fail::Fail;

/// How many leases this client granted and moved away from (after a `ttl`
/// change) it remembers as its own, for re-attaching the leader key.
const FORMER_LEASES: usize = 8;

/// The shortest time one attempt on one endpoint gets when a call may move
/// on to the next endpoint.
const MIN_ATTEMPT: Duration = Duration::from_secs(1);

/// Pause between attempts after a failure that left time to try again.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// One node's etcd v3 client. See the crate docs for the mapping and its limits.
///
/// Invariants:
/// - at most one lease is *current*; only this client's own calls refresh
///   it, and only the lock/member operations do;
/// - every trait call returns within `retry_timeout` (watches: at their
///   own timeout), whatever the network does.
#[derive(Debug)]
pub struct EtcdDcs {
    conn: Connector,
    layout: KeyLayout,
    name: String,
    timing: Mutex<Timing>,
    lease: tokio::sync::Mutex<LeaseState>,
}

/// This client's lease, as far as it knows.
#[derive(Debug, Default)]
struct LeaseState {
    current: Option<Lease>,
    /// Leases this client granted and replaced while they were alive (a
    /// `ttl` change). A leader key naming us on one of them is ours to move
    /// to the current lease; on any other lease it is not.
    former: VecDeque<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lease {
    id: i64,
    /// The TTL the server granted (it may raise a short one to its minimum).
    granted: Duration,
    /// The TTL we asked for, in seconds: when `ttl` changes, this lease is
    /// replaced at the next refresh.
    requested: i64,
}

impl LeaseState {
    fn retire(&mut self, id: i64) {
        if !self.former.contains(&id) {
            self.former.push_back(id);
            while self.former.len() > FORMER_LEASES {
                self.former.pop_front();
            }
        }
    }

    /// Forgets the current lease if it is `id` (it expired).
    fn forget(&mut self, id: i64) {
        if self.current.is_some_and(|l| l.id == id) {
            self.current = None;
        }
    }
}

/// Whether a request may be sent again after a failure whose outcome is
/// unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repeat {
    /// Reads, keepalives, unconditional puts and deletes: applying twice is
    /// the same as once.
    Safe,
    /// Compare-and-set: a repeat after a success that was not seen would
    /// report a conflict for our own write. Only repeated when the request
    /// surely never left (the connection could not be made).
    OnlyIfNotSent,
}

/// What [`EtcdDcs::refresh_lease`] may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaseUse {
    /// Keep ours alive, or grant a new one if there is none or it expired.
    KeepOrGrant,
    /// Keep ours alive; an expired one is reported, never replaced, and
    /// having none is not an error (the lock check then says NotOwner).
    /// A lease retired by a `ttl` change is still replaced: it has not
    /// expired, and the leader key on it can then move to the new one.
    KeepOnly,
}

impl EtcdDcs {
    /// A client for node `member_name` of the cluster at `layout`.
    ///
    /// Does not contact etcd: the connection is made by the first call and
    /// remade whenever it fails, so an agent started while etcd is down
    /// works as soon as etcd is up (calls fail with
    /// [`DcsError::Unreachable`] meanwhile). Fails only on a configuration
    /// that cannot work ([`DcsError::Rejected`]).
    pub fn new(
        config: EtcdConfig,
        layout: KeyLayout,
        member_name: impl Into<String>,
        timing: Timing,
    ) -> Result<Self, DcsError> {
        let name = member_name.into();
        if name.is_empty() || name.contains('/') {
            return Err(DcsError::rejected(
                "configure",
                format!("member name {name:?} cannot be a key under members/"),
            ));
        }
        let conn = Connector::new(&config).map_err(|e| DcsError::rejected("configure", e))?;
        Ok(EtcdDcs {
            conn,
            layout,
            name,
            timing: Mutex::new(timing),
            lease: tokio::sync::Mutex::new(LeaseState::default()),
        })
    }

    fn timing(&self) -> Timing {
        *lock(&self.timing)
    }

    fn path(&self, key: &ClusterKey) -> String {
        self.layout.path(key)
    }

    fn leader_path(&self) -> String {
        self.path(&ClusterKey::Leader)
    }

    /// The lease TTL to ask for: `ttl` in whole seconds, rounded up, at least 1.
    fn ttl_secs(&self) -> i64 {
        let ttl = self.timing().ttl;
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
    }

    /// Runs a whole trait operation under the `retry_timeout` bound
    /// ([`pgha_core::dcs::bounded`]).
    async fn bounded<T, Fut>(
        &self,
        operation: &'static str,
        body: impl FnOnce(Instant) -> Fut,
    ) -> Result<T, DcsError>
    where
        Fut: Future<Output = Result<T, DcsError>>,
    {
        let limit = self.timing().retry_timeout;
        pgha_core::dcs::bounded("etcd", operation, limit, body, || {
            // Whatever connection was in use may be dead: start afresh.
            self.conn.failed(None)
        })
        .await
    }

    /// One etcd request, tried on the current endpoint and, while time is
    /// left and `repeat` allows, again (on the next endpoint when there are
    /// several). Transport failures drop the connection.
    async fn rpc<T, F, Fut>(&self, deadline: Instant, repeat: Repeat, request: F) -> Result<T, Fail>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let endpoints = u32::try_from(self.conn.endpoint_count()).unwrap_or(u32::MAX);
        let per_attempt = if endpoints > 1 && repeat == Repeat::Safe {
            (self.timing().retry_timeout / endpoints).max(MIN_ATTEMPT)
        } else {
            Duration::MAX
        };
        loop {
            let started = Instant::now();
            let remaining = deadline.saturating_duration_since(started);
            if remaining.is_zero() {
                return Err(Fail::timed_out(self.timing().retry_timeout));
            }
            let budget = remaining.min(per_attempt);
            let mut used: Option<Conn> = None;
            let attempt = tokio::time::timeout(budget, async {
                let conn = self.conn.get().await.map_err(|e| Fail::from_etcd(&e))?;
                used = Some(conn.clone());
                request(conn.client).await.map_err(|e| Fail::from_etcd(&e))
            })
            .await;
            let fail = match attempt {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(fail)) => fail,
                Err(_) => Fail::timed_out(budget),
            };
            let Fail::Transport {
                not_sent,
                ref detail,
            } = fail
            else {
                return Err(fail);
            };
            self.conn.failed(used.as_ref());
            let may_repeat = repeat == Repeat::Safe || not_sent;
            if !may_repeat || Instant::now() + RETRY_PAUSE >= deadline {
                return Err(fail);
            }
            debug!(detail, "etcd request failed; trying again");
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Refreshes this client's lease with one keepalive, or grants a new
    /// one, per `mode`. Never runs in the background: this is the only
    /// place a lease is extended.
    ///
    /// A lease granted under another `ttl` than the current one is retired
    /// (left to expire, remembered as ours) and replaced by a new one.
    async fn refresh_lease(
        &self,
        operation: &'static str,
        deadline: Instant,
        mode: LeaseUse,
    ) -> Result<Option<Lease>, DcsError> {
        let mut st = self.lease.lock().await;
        let want = self.ttl_secs();
        if let Some(lease) = st.current {
            if lease.requested == want {
                let kept = self
                    .rpc(deadline, Repeat::Safe, |mut c| async move {
                        c.lease_keep_alive(lease.id).await.map(|_| ())
                    })
                    .await;
                match kept {
                    Ok(()) => {
                        debug!(lease = lease.id, "lease kept alive");
                        return Ok(Some(lease));
                    }
                    Err(Fail::LeaseGone) => {
                        warn!(
                            lease = lease.id,
                            "our etcd lease expired: the leader lock and member key it held are gone"
                        );
                        st.current = None;
                        if mode == LeaseUse::KeepOnly {
                            return Err(DcsError::SessionExpired { what: "lease" });
                        }
                    }
                    Err(f) => return Err(to_dcs(operation, f)),
                }
            } else {
                info!(
                    lease = lease.id,
                    old_ttl = lease.requested,
                    new_ttl = want,
                    "ttl changed: starting a new lease, the old one is left to expire"
                );
                st.retire(lease.id);
                st.current = None;
            }
        } else if mode == LeaseUse::KeepOnly {
            return Ok(None);
        }
        let granted = self
            .rpc(deadline, Repeat::Safe, |mut c| async move {
                c.lease_grant(want, None).await
            })
            .await
            .map_err(|f| to_dcs(operation, f))?;
        if !granted.error().is_empty() || granted.ttl() <= 0 {
            return Err(DcsError::rejected(
                operation,
                format!(
                    "lease grant refused: ttl {} error {:?}",
                    granted.ttl(),
                    granted.error()
                ),
            ));
        }
        let lease = Lease {
            id: granted.id(),
            granted: Duration::from_secs(granted.ttl().unsigned_abs()),
            requested: want,
        };
        debug!(lease = lease.id, ttl = ?lease.granted, "lease granted");
        st.current = Some(lease);
        Ok(Some(lease))
    }

    /// Forgets `lease` after etcd said it is gone.
    async fn lease_gone(&self, lease: &Lease) {
        warn!(
            lease = lease.id,
            "our etcd lease expired: the leader lock and member key it held are gone"
        );
        self.lease.lock().await.forget(lease.id);
    }

    async fn txn(&self, deadline: Instant, repeat: Repeat, txn: Txn) -> Result<TxnResponse, Fail> {
        self.rpc(deadline, repeat, |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await
    }

    /// Ok if the lock names us on our current lease; otherwise the holder.
    async fn check_leader(
        &self,
        deadline: Instant,
        lease: Lease,
    ) -> Result<Result<(), Option<KeyValue>>, DcsError> {
        let path = self.leader_path();
        let txn = Txn::new()
            .when([
                Compare::value(path.clone(), CompareOp::Equal, self.name.clone()),
                Compare::lease(path.clone(), CompareOp::Equal, lease.id),
            ])
            .or_else([TxnOp::get(path, None)]);
        let resp = self
            .txn(deadline, Repeat::Safe, txn)
            .await
            .map_err(|f| to_dcs("renew_leader", f))?;
        if resp.succeeded() {
            Ok(Ok(()))
        } else {
            Ok(Err(first_kv(&resp)))
        }
    }

    fn not_owner(&self, holder: Option<&KeyValue>) -> DcsError {
        DcsError::not_owner(
            "leader",
            holder.map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
        )
    }

    fn lock_lease(lease: &Lease) -> LockLease {
        LockLease {
            valid_for: lease.granted,
        }
    }

    async fn do_acquire(&self, deadline: Instant) -> Result<LockLease, DcsError> {
        let lease = self.need_lease("acquire_leader", deadline).await?;
        let path = self.leader_path();
        let txn = Txn::new()
            .when([Compare::create_revision(path.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                path.clone(),
                self.name.clone(),
                Some(PutOptions::new().with_lease(lease.id)),
            )])
            .or_else([TxnOp::get(path, None)]);
        match self.txn(deadline, Repeat::OnlyIfNotSent, txn).await {
            Ok(resp) if resp.succeeded() => {
                info!(lease = lease.id, "took the leader lock");
                Ok(Self::lock_lease(&lease))
            }
            Ok(resp) => Err(self.not_owner(first_kv(&resp).as_ref())),
            Err(Fail::LeaseGone) => {
                self.lease_gone(&lease).await;
                Err(DcsError::SessionExpired { what: "lease" })
            }
            Err(f) => Err(to_dcs("acquire_leader", f)),
        }
    }

    /// Our lease, kept alive or newly granted.
    async fn need_lease(
        &self,
        operation: &'static str,
        deadline: Instant,
    ) -> Result<Lease, DcsError> {
        self.refresh_lease(operation, deadline, LeaseUse::KeepOrGrant)
            .await?
            .ok_or_else(|| DcsError::rejected(operation, "no lease after a grant"))
    }

    async fn do_renew(&self, deadline: Instant) -> Result<LockLease, DcsError> {
        let lease = self
            .refresh_lease("renew_leader", deadline, LeaseUse::KeepOnly)
            .await?;
        let Some(lease) = lease else {
            // No lease of ours: whatever the key says, it is not held by us.
            let holder = self.read_leader(deadline).await?;
            return Err(self.not_owner(holder.as_ref()));
        };
        let holder = match self.check_leader(deadline, lease).await? {
            Ok(()) => {
                debug!(lease = lease.id, "leader lock renewed");
                return Ok(Self::lock_lease(&lease));
            }
            Err(holder) => holder,
        };
        let Some(kv) = holder else {
            return Err(self.not_owner(None));
        };
        if kv.value() != self.name.as_bytes() {
            return Err(self.not_owner(Some(&kv)));
        }
        // The key names us but is on another lease. Move it to the current
        // one only if that other lease is ours (replaced after a ttl change
        // and still alive, since the key still exists).
        let ours = self.lease.lock().await.former.contains(&kv.lease());
        if !ours {
            warn!(
                key_lease = kv.lease(),
                our_lease = lease.id,
                "the leader key names us but is attached to a lease this client never held"
            );
            return Err(self.not_owner(Some(&kv)));
        }
        let path = self.leader_path();
        let txn = Txn::new()
            .when([
                Compare::value(path.clone(), CompareOp::Equal, self.name.clone()),
                Compare::lease(path.clone(), CompareOp::Equal, kv.lease()),
            ])
            .and_then([TxnOp::put(
                path.clone(),
                self.name.clone(),
                Some(PutOptions::new().with_lease(lease.id)),
            )])
            .or_else([TxnOp::get(path, None)]);
        match self.txn(deadline, Repeat::OnlyIfNotSent, txn).await {
            Ok(resp) if resp.succeeded() => {
                info!(
                    from = kv.lease(),
                    to = lease.id,
                    "leader lock moved to our new lease"
                );
                Ok(Self::lock_lease(&lease))
            }
            Ok(resp) => Err(self.not_owner(first_kv(&resp).as_ref())),
            Err(Fail::LeaseGone) => {
                self.lease_gone(&lease).await;
                Err(DcsError::SessionExpired { what: "lease" })
            }
            Err(f) => Err(to_dcs("renew_leader", f)),
        }
    }

    async fn read_leader(&self, deadline: Instant) -> Result<Option<KeyValue>, DcsError> {
        let path = self.leader_path();
        let resp = self
            .rpc(deadline, Repeat::Safe, |mut c| {
                let path = path.clone();
                async move { c.get(path, None).await }
            })
            .await
            .map_err(|f| to_dcs("renew_leader", f))?;
        Ok(resp.kvs().first().cloned())
    }

    async fn do_release(&self, deadline: Instant) -> Result<(), DcsError> {
        let path = self.leader_path();
        let txn = Txn::new()
            .when([Compare::value(
                path.clone(),
                CompareOp::Equal,
                self.name.clone(),
            )])
            .and_then([TxnOp::delete(path.clone(), None)])
            .or_else([TxnOp::get(path, None)]);
        let resp = self
            .txn(deadline, Repeat::OnlyIfNotSent, txn)
            .await
            .map_err(|f| to_dcs("release_leader", f))?;
        if resp.succeeded() {
            info!("released the leader lock");
            Ok(())
        } else {
            Err(self.not_owner(first_kv(&resp).as_ref()))
        }
    }

    /// Deletes the leader key if it names us and is at the `mod_revision`
    /// `lock` was read at (unique to that write, so a later lock of ours
    /// never matches), on whatever lease: for the fence guard.
    async fn do_release_at(&self, deadline: Instant, lock: &LeaderLock) -> Result<(), DcsError> {
        if lock.name != self.name {
            return Err(DcsError::not_owner("leader", Some(lock.name.clone())));
        }
        let Some(rev) = lock.version.as_number().filter(|r| *r > 0) else {
            return Err(DcsError::conflict("leader"));
        };
        let path = self.leader_path();
        let txn = Txn::new()
            .when([
                Compare::value(path.clone(), CompareOp::Equal, self.name.clone()),
                Compare::mod_revision(path.clone(), CompareOp::Equal, rev),
            ])
            .and_then([TxnOp::delete(path.clone(), None)])
            .or_else([TxnOp::get(path, None)]);
        let resp = self
            .txn(deadline, Repeat::OnlyIfNotSent, txn)
            .await
            .map_err(|f| to_dcs("release_leader", f))?;
        if resp.succeeded() {
            info!(rev, "released the leader lock on behalf of this member");
            return Ok(());
        }
        match first_kv(&resp) {
            Some(kv) if kv.value() == self.name.as_bytes() => Err(DcsError::conflict("leader")),
            holder => Err(self.not_owner(holder.as_ref())),
        }
    }

    /// Puts our name on our lease in place of the leader key, if it is still
    /// at the `mod_revision` `lock` was read at: one txn, so nothing written
    /// after the read (another node's lock included) is ever replaced. The
    /// lease is kept alive (or granted) first, so the lock lives at least
    /// its granted TTL after this call was sent.
    async fn do_take_from(
        &self,
        deadline: Instant,
        lock: &LeaderLock,
    ) -> Result<LockLease, DcsError> {
        const OP: &str = "take_leader_from";
        let Some(rev) = lock.version.as_number().filter(|r| *r > 0) else {
            // Not a revision: no stored key is at it.
            return Err(DcsError::conflict("leader"));
        };
        let lease = self.need_lease(OP, deadline).await?;
        let path = self.leader_path();
        let txn = Txn::new()
            .when([Compare::mod_revision(path.clone(), CompareOp::Equal, rev)])
            .and_then([TxnOp::put(
                path.clone(),
                self.name.clone(),
                Some(PutOptions::new().with_lease(lease.id)),
            )])
            .or_else([TxnOp::get(path, None)]);
        match self.txn(deadline, Repeat::OnlyIfNotSent, txn).await {
            Ok(resp) if resp.succeeded() => {
                info!(
                    lease = lease.id,
                    rev,
                    replaced = %lock.name,
                    replaced_owner = ?lock.owner,
                    "took the leader key over by compare-and-set"
                );
                Ok(Self::lock_lease(&lease))
            }
            Ok(resp) => {
                let now = first_kv(&resp);
                debug!(
                    rev,
                    current_rev = now.as_ref().map(KeyValue::mod_revision),
                    "leader key changed since it was read: not taken over"
                );
                Err(DcsError::conflict("leader"))
            }
            Err(Fail::LeaseGone) => {
                self.lease_gone(&lease).await;
                Err(DcsError::SessionExpired { what: "lease" })
            }
            Err(f) => Err(to_dcs(OP, f)),
        }
    }

    /// Deletes the leader key if it is still at the `mod_revision` `lock`
    /// was read at, whatever it names and whatever lease it is on.
    async fn do_remove_at(&self, deadline: Instant, lock: &LeaderLock) -> Result<(), DcsError> {
        const OP: &str = "remove_leader_at";
        let rev = lock.version.as_number().filter(|r| *r > 0);
        let path = self.leader_path();
        let txn = match rev {
            Some(rev) => Txn::new()
                .when([Compare::mod_revision(path.clone(), CompareOp::Equal, rev)])
                .and_then([TxnOp::delete(path.clone(), None)])
                .or_else([TxnOp::get(path, None)]),
            // Not a revision: nothing to delete, only whether a key is there.
            None => Txn::new().and_then([TxnOp::get(path, None)]),
        };
        let resp = self
            .txn(deadline, Repeat::OnlyIfNotSent, txn)
            .await
            .map_err(|f| to_dcs(OP, f))?;
        if rev.is_some() && resp.succeeded() {
            info!(rev, holder = %lock.name, "removed the leader key by compare-and-set");
            return Ok(());
        }
        match first_kv(&resp) {
            None => {
                debug!(rev, "leader key already gone");
                Ok(())
            }
            Some(kv) => {
                debug!(
                    rev,
                    current_rev = kv.mod_revision(),
                    "leader key changed since it was read: not removed"
                );
                Err(DcsError::conflict("leader"))
            }
        }
    }

    async fn do_touch(&self, deadline: Instant, value: String) -> Result<(), DcsError> {
        let path = self.path(&ClusterKey::Member(self.name.clone()));
        // A lease can vanish between the keepalive and the put (it expired
        // just then): start a new one and put again, once.
        for _ in 0..2 {
            let lease = self.need_lease("touch_member", deadline).await?;
            let put = self
                .rpc(deadline, Repeat::Safe, |mut c| {
                    let (path, value) = (path.clone(), value.clone());
                    async move {
                        c.put(path, value, Some(PutOptions::new().with_lease(lease.id)))
                            .await
                    }
                })
                .await;
            match put {
                Ok(_) => {
                    debug!(lease = lease.id, "member key published");
                    return Ok(());
                }
                Err(Fail::LeaseGone) => self.lease_gone(&lease).await,
                Err(f) => return Err(to_dcs("touch_member", f)),
            }
        }
        Err(DcsError::SessionExpired { what: "lease" })
    }

    async fn do_write(
        &self,
        deadline: Instant,
        key: SharedKey,
        value: &str,
        expect: Expect,
    ) -> Result<Version, DcsError> {
        let path = self.path(&key.cluster_key());
        let compare = match guard(&path, &expect) {
            Guard::Never => return Err(DcsError::conflict(key)),
            Guard::None => None,
            Guard::Compare(c) => Some(c),
        };
        let Some(compare) = compare else {
            let value = value.to_string();
            let resp = self
                .rpc(deadline, Repeat::Safe, |mut c| {
                    let (path, value) = (path.clone(), value.clone());
                    async move { c.put(path, value, None).await }
                })
                .await
                .map_err(|f| to_dcs("write", f))?;
            let rev = revision("write", resp.header())?;
            debug!(%key, rev, "written");
            return Ok(Version::number(rev));
        };
        let txn = Txn::new()
            .when([compare])
            .and_then([TxnOp::put(path, value, None)]);
        let resp = self
            .txn(deadline, Repeat::OnlyIfNotSent, txn)
            .await
            .map_err(|f| to_dcs("write", f))?;
        if !resp.succeeded() {
            debug!(%key, ?expect, "compare-and-set lost");
            return Err(DcsError::conflict(key));
        }
        // The revision of the transaction is the put's mod_revision.
        let rev = revision("write", resp.header())?;
        debug!(%key, rev, "written by compare-and-set");
        Ok(Version::number(rev))
    }

    async fn do_delete(
        &self,
        deadline: Instant,
        key: SharedKey,
        expect: Expect,
    ) -> Result<(), DcsError> {
        let path = self.path(&key.cluster_key());
        let compare = match guard(&path, &expect) {
            Guard::Never => return Err(DcsError::conflict(key)),
            Guard::None => None,
            Guard::Compare(c) => Some(c),
        };
        let Some(compare) = compare else {
            self.rpc(deadline, Repeat::Safe, |mut c| {
                let path = path.clone();
                async move { c.delete(path, None).await }
            })
            .await
            .map_err(|f| to_dcs("delete", f))?;
            debug!(%key, "deleted");
            return Ok(());
        };
        // With `Absent` there is nothing to delete: the success branch is empty.
        let ops = if expect == Expect::Absent {
            vec![]
        } else {
            vec![TxnOp::delete(path, None)]
        };
        let txn = Txn::new().when([compare]).and_then(ops);
        let resp = self
            .txn(deadline, Repeat::OnlyIfNotSent, txn)
            .await
            .map_err(|f| to_dcs("delete", f))?;
        if resp.succeeded() {
            debug!(%key, "deleted by compare-and-set");
            Ok(())
        } else {
            Err(DcsError::conflict(key))
        }
    }

    async fn do_load(&self, deadline: Instant) -> Result<Cluster, DcsError> {
        let prefix = self.layout.prefix();
        let resp = self
            .rpc(deadline, Repeat::Safe, |mut c| {
                let prefix = prefix.clone();
                async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
            })
            .await
            .map_err(|f| to_dcs("load", f))?;
        let revision = revision("load", resp.header())?;
        let entries: Vec<RawEntry> = resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                let key = std::str::from_utf8(kv.key()).ok()?;
                let key = ClusterKey::parse(self.layout.strip(key)?)?;
                Some(RawEntry {
                    key,
                    value: kv.value().to_vec(),
                    version: Version::number(kv.mod_revision()),
                    owner: (kv.lease() != 0).then(|| kv.lease().to_string()),
                })
            })
            .collect();
        debug!(revision, keys = entries.len(), "cluster loaded");
        Ok(Cluster::from_entries(entries, Version::number(revision)))
    }

    async fn do_delete_cluster(&self, deadline: Instant) -> Result<(), DcsError> {
        let prefix = self.layout.prefix();
        let resp = self
            .rpc(deadline, Repeat::Safe, |mut c| {
                let prefix = prefix.clone();
                async move {
                    c.delete(prefix, Some(DeleteOptions::new().with_prefix()))
                        .await
                }
            })
            .await
            .map_err(|f| to_dcs("delete_cluster", f))?;
        info!(prefix, deleted = resp.deleted(), "cluster deleted");
        Ok(())
    }

    /// Watches the leader key from `cursor + 1` until an event, the end of
    /// the stream, or `until`.
    async fn do_watch(&self, cursor: &Version, until: Instant) -> Result<WatchOutcome, DcsError> {
        let path = self.leader_path();
        let start = cursor.as_number().unwrap_or(0).saturating_add(1).max(1);
        // Setting the watch up is a request like any other: bounded by
        // retry_timeout (and by the watch's own end).
        let setup_deadline = (Instant::now() + self.timing().retry_timeout).min(until);
        let setup = self
            .rpc(setup_deadline, Repeat::Safe, |mut c| {
                let path = path.clone();
                async move {
                    c.watch(path, Some(WatchOptions::new().with_start_revision(start)))
                        .await
                }
            })
            .await;
        let mut stream = match setup {
            Ok(s) => s,
            Err(_) if Instant::now() >= until => return Ok(WatchOutcome::TimedOut),
            Err(f) => return Err(to_dcs("watch_leader", f)),
        };
        loop {
            let msg = match tokio::time::timeout_at(until, stream.message()).await {
                Err(_) => return Ok(WatchOutcome::TimedOut),
                Ok(m) => m,
            };
            match msg {
                Ok(Some(resp)) => {
                    if resp.compact_revision() > 0 {
                        // History before our cursor is gone: whether the
                        // leader changed cannot be told, so say it did and
                        // let the caller load afresh.
                        debug!(
                            start,
                            compacted = resp.compact_revision(),
                            "watch start revision compacted"
                        );
                        return Ok(WatchOutcome::Changed);
                    }
                    if !resp.events().is_empty() {
                        debug!(events = resp.events().len(), "leader key changed");
                        return Ok(WatchOutcome::Changed);
                    }
                    if resp.canceled() {
                        let reason = resp.cancel_reason().to_string();
                        return Err(if reason.contains("permission denied") {
                            DcsError::rejected("watch_leader", reason)
                        } else {
                            self.conn.failed(None);
                            DcsError::unreachable(
                                "watch_leader",
                                format!("watch canceled: {reason}"),
                            )
                        });
                    }
                    // `created`, or a progress notification: keep waiting.
                }
                Ok(None) => {
                    self.conn.failed(None);
                    return Err(DcsError::unreachable(
                        "watch_leader",
                        "etcd closed the watch stream",
                    ));
                }
                Err(e) => {
                    let fail = Fail::from_etcd(&e);
                    if matches!(fail, Fail::Transport { .. }) {
                        self.conn.failed(None);
                    }
                    return Err(to_dcs("watch_leader", fail));
                }
            }
        }
    }
}

/// The store revision a response was produced at. etcd always sends a
/// header; a response without one cannot give a version or a cursor.
fn revision(
    operation: &'static str,
    header: Option<&etcd_client::ResponseHeader>,
) -> Result<i64, DcsError> {
    header
        .map(|h| h.revision())
        .filter(|r| *r > 0)
        .ok_or_else(|| DcsError::rejected(operation, "etcd answered without a revision"))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The first key-value of the first range read in a transaction's
/// responses (the `or_else` read of the leader key).
fn first_kv(resp: &TxnResponse) -> Option<KeyValue> {
    resp.op_responses().into_iter().find_map(|r| match r {
        TxnOpResponse::Get(g) => g.kvs().first().cloned(),
        _ => None,
    })
}

enum Guard {
    /// Unconditional.
    None,
    /// Guarded by this comparison.
    Compare(Compare),
    /// Can never hold (a version no stored value can have).
    Never,
}

/// The etcd comparison for `expect` on `path`. Versions are `mod_revision`s;
/// a version that is not a positive number cannot match any stored value.
fn guard(path: &str, expect: &Expect) -> Guard {
    match expect {
        Expect::Any => Guard::None,
        Expect::Absent => Guard::Compare(Compare::create_revision(path, CompareOp::Equal, 0)),
        Expect::Version(v) => match v.as_number() {
            Some(rev) if rev > 0 => {
                Guard::Compare(Compare::mod_revision(path, CompareOp::Equal, rev))
            }
            _ => Guard::Never,
        },
    }
}

fn to_dcs(operation: &'static str, fail: Fail) -> DcsError {
    match fail {
        Fail::Transport { detail, .. } => DcsError::unreachable(operation, detail),
        Fail::Rejected(detail) => DcsError::rejected(operation, detail),
        Fail::LeaseGone => DcsError::SessionExpired { what: "lease" },
    }
}

#[async_trait]
impl Dcs for EtcdDcs {
    fn member_name(&self) -> &str {
        &self.name
    }

    fn layout(&self) -> &KeyLayout {
        &self.layout
    }

    /// Stores the timings. A new `ttl` takes effect with the next lease:
    /// the next lock or member call grants one and retires the old lease,
    /// which is left to expire (never revoked: keys may still be on it).
    fn set_timing(&self, timing: Timing) {
        let mut t = lock(&self.timing);
        if *t != timing {
            info!(?timing, "new timings");
        }
        *t = timing;
    }

    async fn load(&self) -> Result<Cluster, DcsError> {
        self.bounded("load", |d| self.do_load(d)).await
    }

    async fn acquire_leader(&self) -> Result<LockLease, DcsError> {
        self.bounded("acquire_leader", |d| self.do_acquire(d)).await
    }

    async fn renew_leader(&self) -> Result<LockLease, DcsError> {
        self.bounded("renew_leader", |d| self.do_renew(d)).await
    }

    async fn release_leader(&self) -> Result<(), DcsError> {
        self.bounded("release_leader", |d| self.do_release(d)).await
    }

    async fn release_leader_at(&self, lock: &LeaderLock) -> Result<(), DcsError> {
        self.bounded("release_leader", |d| self.do_release_at(d, lock))
            .await
    }

    /// Every lock lives in a lease; a leader key without one was put by hand.
    fn locks_have_owners(&self) -> bool {
        true
    }

    async fn take_leader_from(&self, lock: &LeaderLock) -> Result<LockLease, DcsError> {
        self.bounded("take_leader_from", |d| self.do_take_from(d, lock))
            .await
    }

    async fn remove_leader_at(&self, lock: &LeaderLock) -> Result<(), DcsError> {
        self.bounded("remove_leader_at", |d| self.do_remove_at(d, lock))
            .await
    }

    async fn touch_member(&self, data: &MemberData) -> Result<(), DcsError> {
        let value = pgha_core::dcs::to_json(data)?;
        self.bounded("touch_member", |d| self.do_touch(d, value))
            .await
    }

    async fn write(
        &self,
        key: SharedKey,
        value: &str,
        expect: Expect,
    ) -> Result<Version, DcsError> {
        self.bounded("write", |d| self.do_write(d, key, value, expect))
            .await
    }

    async fn delete(&self, key: SharedKey, expect: Expect) -> Result<(), DcsError> {
        self.bounded("delete", |d| self.do_delete(d, key, expect))
            .await
    }

    async fn delete_cluster(&self) -> Result<(), DcsError> {
        self.bounded("delete_cluster", |d| self.do_delete_cluster(d))
            .await
    }

    async fn watch_leader(
        &self,
        cursor: &Version,
        timeout: Duration,
    ) -> Result<WatchOutcome, DcsError> {
        let until = Instant::now() + timeout;
        // The inner bounds end it at `until`; this outer one only guards
        // against a path that forgot to.
        match tokio::time::timeout_at(
            until + Duration::from_millis(50),
            self.do_watch(cursor, until),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Ok(WatchOutcome::TimedOut),
        }
    }
}
