//! [`ConsulDcs`]: one node's client, implementing [`Dcs`] on Consul's KV
//! store and sessions.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use hyper::Method;
use pgha_core::dcs::{Dcs, DcsError, LockLease, SharedKey, WatchOutcome};
use pgha_core::model::{
    Cluster, ClusterKey, Expect, KeyLayout, KeyProblem, LeaderLock, MemberData, RawEntry, Timing,
    Version,
};
use serde_json::json;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::{Consistency, ConsulConfig};
use crate::http::{Answer, Call, Fail, Repeat, Transport};
use crate::wire::{self, KvEntry};

/// The lock-delay our sessions ask for. Consul's default (15 s) would keep
/// the lock of a dead leader unusable for that long after its session is
/// gone; Patroni uses 1 ms too.
const LOCK_DELAY: &str = "1ms";
/// How many sessions retired after a `ttl` change this client remembers as
/// its own, for moving the leader key off them.
const FORMER_SESSIONS: usize = 8;
/// How many recent loads the watch remembers the leader state of.
const REMEMBERED_LOADS: usize = 32;
/// Bounded retries of the lock and member operations (a session vanishing
/// between two requests, a key stuck under lock-delay).
const ATTEMPTS: usize = 3;
/// Pause before trying a lock again when Consul refused it though nobody
/// holds it: the key is under a lock-delay.
const LOCK_DELAY_PAUSE: Duration = Duration::from_millis(20);
/// Time kept back from a call's deadline for the version read after a write,
/// so the write is reported even if that read cannot be made.
const READ_BACK_RESERVE: Duration = Duration::from_millis(50);
/// Shortest time between two requests of one watch, so a watch cannot
/// become a busy loop whatever the server answers.
const WATCH_MIN_INTERVAL: Duration = Duration::from_millis(50);

/// One node's Consul client. See the crate docs for the mapping and its limits.
///
/// Invariants:
/// - at most one session is *current*; only this client's own calls renew
///   it (`touch_member`, `acquire_leader`, `renew_leader`, `take_leader_from`),
///   never a background task;
/// - every trait call returns within `retry_timeout` (watches: at their
///   own timeout), whatever the network does.
#[derive(Debug)]
pub struct ConsulDcs {
    http: Transport,
    layout: KeyLayout,
    name: String,
    consistency: Consistency,
    checks: Vec<String>,
    timing: Mutex<Timing>,
    session: tokio::sync::Mutex<SessionState>,
    /// `(X-Consul-Index, leader ModifyIndex)` of recent loads: whether the
    /// leader key existed at a watch's cursor, which Consul's answer to a
    /// blocking read of a missing key cannot tell.
    loads: Mutex<VecDeque<(u64, Option<u64>)>>,
}

/// This client's session, as far as it knows.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Session {
    id: String,
    /// The TTL Consul accepted: it invalidates the session no earlier than
    /// this after the last renewal.
    ttl: Duration,
    /// The `ttl` timing the session was made for: when that changes, the
    /// session is replaced at the next refresh.
    for_ttl: Duration,
}

#[derive(Debug, Default)]
struct SessionState {
    current: Option<Session>,
    /// Sessions this client created and replaced while alive (a `ttl`
    /// change). A leader key naming us on one of them is ours to move.
    former: VecDeque<String>,
}

impl SessionState {
    fn retire(&mut self, id: String) {
        if !self.former.contains(&id) {
            self.former.push_back(id);
            while self.former.len() > FORMER_SESSIONS {
                self.former.pop_front();
            }
        }
    }
}

/// What [`ConsulDcs::session`] may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionUse {
    /// Renew ours, or create one if there is none or it is gone.
    KeepOrCreate,
    /// Renew ours; a session that is gone is reported (`SessionExpired`),
    /// never replaced, and having none is not an error. One made for an
    /// older `ttl` is still replaced: it has not expired, and the leader
    /// key on it can then move to the new one.
    KeepOnly,
}

/// The outcome of a KV write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Put {
    /// Consul answered `true`.
    Done,
    /// Consul answered `false`: a compare-and-set or lock did not hold.
    Refused,
    /// The session named in `acquire` does not exist (any more).
    InvalidSession,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn to_dcs(operation: &'static str, fail: Fail) -> DcsError {
    match fail {
        Fail::Transport { detail, .. } => DcsError::unreachable(operation, detail),
        Fail::Unavailable { status, body } => {
            DcsError::unreachable(operation, format!("Consul answered {status}: {body}"))
        }
        Fail::Rejected(detail) => DcsError::rejected(operation, detail),
    }
}

/// An answer with a status the operation does not expect: authentication,
/// permissions, a malformed request.
fn unexpected(operation: &'static str, answer: &Answer) -> DcsError {
    DcsError::rejected(
        operation,
        format!("Consul answered {}: {}", answer.status, answer.text()),
    )
}

impl ConsulDcs {
    /// A client for node `member_name` of the cluster at `layout`.
    ///
    /// Does not contact Consul: the first call does, so an agent started
    /// while Consul is down works as soon as it is up (calls fail with
    /// [`DcsError::Unreachable`] meanwhile). Fails only on a configuration
    /// that cannot work ([`DcsError::Rejected`]). Logs the configuration's
    /// warnings (settings accepted without effect).
    pub fn new(
        config: ConsulConfig,
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
        let http = Transport::new(&config).map_err(|e| DcsError::rejected("configure", e))?;
        for w in &config.warnings {
            warn!("{w}");
        }
        Ok(ConsulDcs {
            http,
            layout,
            name,
            consistency: config.consistency,
            checks: config.checks,
            timing: Mutex::new(timing),
            session: tokio::sync::Mutex::new(SessionState::default()),
            loads: Mutex::new(VecDeque::new()),
        })
    }

    /// Destroys this client's session, if it has one: Consul deletes the
    /// keys it holds (the member key, and the leader key if held) at once
    /// instead of after the TTL. For a clean shutdown; the next lock or
    /// member call starts a new session.
    pub async fn destroy_session(&self) -> Result<(), DcsError> {
        self.bounded("destroy_session", |deadline| async move {
            let mut st = self.session.lock().await;
            let Some(s) = st.current.take() else {
                return Ok(());
            };
            let call = Call::new(
                Method::PUT,
                format!("/v1/session/destroy/{}", wire::segment(&s.id)),
                Repeat::Safe,
            );
            let answer = self.send(&call, deadline, "destroy_session").await?;
            if answer.status != 200 {
                return Err(unexpected("destroy_session", &answer));
            }
            info!(session = s.id, "session destroyed");
            Ok(())
        })
        .await
    }

    fn timing(&self) -> Timing {
        *lock(&self.timing)
    }

    /// The session TTL for the current `ttl`: half of it, since Consul may
    /// wait up to twice the TTL before invalidating (as Patroni does).
    fn session_ttl(&self) -> Duration {
        (self.timing().ttl / 2).max(Duration::from_millis(1))
    }

    /// The Consul key of `key` (no leading slash: `service/demo/leader`).
    fn key(&self, key: &ClusterKey) -> String {
        self.layout.path(key).trim_start_matches('/').to_string()
    }

    fn leader_key(&self) -> String {
        self.key(&ClusterKey::Leader)
    }

    fn member_key(&self) -> String {
        self.key(&ClusterKey::Member(self.name.clone()))
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
        pgha_core::dcs::bounded("Consul", operation, limit, body, || ()).await
    }

    async fn send(
        &self,
        call: &Call,
        deadline: Instant,
        operation: &'static str,
    ) -> Result<Answer, DcsError> {
        self.http
            .send(call, deadline, self.timing().retry_timeout)
            .await
            .map_err(|f| to_dcs(operation, f))
    }

    // ---- sessions --------------------------------------------------------

    /// This client's session, renewed (or created) per `mode`. The only
    /// place a session is renewed: nothing runs in the background.
    async fn session(
        &self,
        operation: &'static str,
        deadline: Instant,
        mode: SessionUse,
    ) -> Result<Option<Session>, DcsError> {
        let mut st = self.session.lock().await;
        let for_ttl = self.timing().ttl;
        if let Some(s) = st.current.clone() {
            if s.for_ttl == for_ttl {
                match self.renew(&s, deadline, operation).await? {
                    Some(confirmed) => {
                        let renewed = Session {
                            ttl: confirmed,
                            ..s
                        };
                        st.current = Some(renewed.clone());
                        return Ok(Some(renewed));
                    }
                    None => {
                        warn!(
                            session = s.id,
                            "our Consul session is gone: the leader lock and member key it held are deleted"
                        );
                        st.current = None;
                        if mode == SessionUse::KeepOnly {
                            return Err(DcsError::SessionExpired { what: "session" });
                        }
                    }
                }
            } else {
                info!(
                    session = s.id,
                    old_ttl = ?s.for_ttl,
                    new_ttl = ?for_ttl,
                    "ttl changed: starting a new session, the old one is left to expire"
                );
                st.retire(s.id);
                st.current = None;
            }
        } else if mode == SessionUse::KeepOnly {
            return Ok(None);
        }
        let s = self.create_session(deadline, operation, for_ttl).await?;
        st.current = Some(s.clone());
        Ok(Some(s))
    }

    /// Renews `s`: the TTL Consul confirms (never more than the one it
    /// accepted at creation), or `None` if the session is gone.
    async fn renew(
        &self,
        s: &Session,
        deadline: Instant,
        operation: &'static str,
    ) -> Result<Option<Duration>, DcsError> {
        let call = Call::new(
            Method::PUT,
            format!("/v1/session/renew/{}", wire::segment(&s.id)),
            Repeat::Safe,
        );
        let answer = self.send(&call, deadline, operation).await?;
        match answer.status {
            200 => {
                // Consul may answer a higher TTL under load ("renew less
                // often"); the invalidation bound we can rely on stays the
                // TTL it accepted.
                let confirmed = serde_json::from_slice::<Vec<wire::SessionInfo>>(&answer.body)
                    .ok()
                    .and_then(|v| v.into_iter().next())
                    .and_then(|i| wire::parse_go_duration(&i.ttl))
                    .filter(|t| !t.is_zero())
                    .map_or(s.ttl, |t| t.min(s.ttl));
                debug!(session = s.id, ttl = ?confirmed, "session renewed");
                Ok(Some(confirmed))
            }
            404 => Ok(None),
            _ => Err(unexpected(operation, &answer)),
        }
    }

    async fn create_session(
        &self,
        deadline: Instant,
        operation: &'static str,
        for_ttl: Duration,
    ) -> Result<Session, DcsError> {
        let mut ttl = self.session_ttl();
        for _ in 0..2 {
            let body = json!({
                "Name": format!("{}-{}", self.layout.scope(), self.name),
                "TTL": wire::ttl_text(ttl),
                "Behavior": "delete",
                "LockDelay": LOCK_DELAY,
                // Given even when empty: an empty list means "no checks"
                // (the TTL alone), as Patroni's default; omitting it would
                // tie the session to serfHealth.
                "Checks": self.checks,
            });
            let call = Call::new(Method::PUT, "/v1/session/create".into(), Repeat::Safe)
                .body(body.to_string());
            let answer = self.send(&call, deadline, operation).await?;
            if answer.status == 200 {
                let created: wire::Created = serde_json::from_slice(&answer.body).map_err(|e| {
                    DcsError::rejected(operation, format!("unreadable session answer: {e}"))
                })?;
                info!(session = created.id, ttl = ?ttl, "session created");
                return Ok(Session {
                    id: created.id,
                    ttl,
                    for_ttl,
                });
            }
            let text = answer.text();
            match wire::session_ttl_min(&text) {
                Some(min) if min > ttl => {
                    warn!(
                        wanted = ?ttl,
                        min = ?min,
                        "Consul's session_ttl_min is above ttl/2: using {min:?}; \
                         leader and member keys of a dead node now last up to {:?}",
                        min * 2
                    );
                    ttl = min;
                }
                _ => return Err(unexpected(operation, &answer)),
            }
        }
        Err(DcsError::rejected(
            operation,
            "Consul refused the session TTL twice",
        ))
    }

    /// Forgets the current session if it is `id` (Consul said it is gone).
    async fn session_gone(&self, id: &str) {
        warn!(
            session = id,
            "our Consul session is gone: the leader lock and member key it held are deleted"
        );
        let mut st = self.session.lock().await;
        if st.current.as_ref().is_some_and(|s| s.id == id) {
            st.current = None;
        }
    }

    async fn need_session(
        &self,
        operation: &'static str,
        deadline: Instant,
    ) -> Result<Session, DcsError> {
        self.session(operation, deadline, SessionUse::KeepOrCreate)
            .await?
            .ok_or_else(|| DcsError::rejected(operation, "no session after creating one"))
    }

    // ---- KV ------------------------------------------------------------

    /// Reads one key, `consistent` (a read-your-writes check) or in the
    /// configured mode.
    async fn get(
        &self,
        key: &str,
        deadline: Instant,
        operation: &'static str,
    ) -> Result<Option<(KvEntry, Vec<u8>)>, DcsError> {
        let call = Call::new(Method::GET, wire::kv_path(key), Repeat::Safe).flag("consistent");
        let answer = self.send(&call, deadline, operation).await?;
        match answer.status {
            404 => Ok(None),
            200 => {
                let entries: Vec<KvEntry> = serde_json::from_slice(&answer.body).map_err(|e| {
                    DcsError::rejected(operation, format!("unreadable KV answer: {e}"))
                })?;
                Ok(entries.into_iter().find(|e| e.key == key).map(|e| {
                    // Bytes that are not base64 still say "present".
                    let bytes = e
                        .bytes()
                        .unwrap_or_else(|_| e.value.clone().unwrap_or_default().into_bytes());
                    (e, bytes)
                }))
            }
            _ => Err(unexpected(operation, &answer)),
        }
    }

    /// The leader key's holder name, for `NotOwner`.
    async fn holder(
        &self,
        deadline: Instant,
        operation: &'static str,
    ) -> Result<Option<String>, DcsError> {
        Ok(self
            .get(&self.leader_key(), deadline, operation)
            .await?
            .map(|(_, v)| String::from_utf8_lossy(&v).into_owned()))
    }

    async fn put(
        &self,
        call: Call,
        deadline: Instant,
        operation: &'static str,
    ) -> Result<Put, DcsError> {
        let answer = self.send(&call, deadline, operation).await?;
        match (answer.status, answer.boolean()) {
            (200, Some(true)) => Ok(Put::Done),
            (200, Some(false)) => Ok(Put::Refused),
            (500, _) if answer.text().contains("invalid session") => Ok(Put::InvalidSession),
            _ => Err(unexpected(operation, &answer)),
        }
    }

    fn acquire_call(
        &self,
        key: &str,
        session: &Session,
        value: impl Into<hyper::body::Bytes>,
    ) -> Call {
        Call::new(Method::PUT, wire::kv_path(key), Repeat::Safe)
            .param("acquire", &session.id)
            .body(value)
    }

    fn delete_call(&self, key: &str) -> Call {
        Call::new(Method::DELETE, wire::kv_path(key), Repeat::Safe)
    }

    // ---- operations ----------------------------------------------------

    async fn do_load(&self, deadline: Instant) -> Result<Cluster, DcsError> {
        let prefix = self.layout.prefix().trim_start_matches('/').to_string();
        let mut call = Call::new(Method::GET, wire::kv_path(&prefix), Repeat::Safe).flag("recurse");
        if let Some(flag) = self.consistency.flag() {
            call = call.flag(flag);
        }
        let answer = self.send(&call, deadline, "load").await?;
        let entries: Vec<KvEntry> = match answer.status {
            404 => Vec::new(),
            200 => serde_json::from_slice(&answer.body)
                .map_err(|e| DcsError::rejected("load", format!("unreadable KV answer: {e}")))?,
            _ => return Err(unexpected("load", &answer)),
        };
        let index = answer
            .index
            .ok_or_else(|| DcsError::rejected("load", "Consul answered without X-Consul-Index"))?
            .max(1);
        let mut raw = Vec::new();
        let mut problems = Vec::new();
        let mut leader = None;
        for e in entries {
            let absolute = format!("/{}", e.key);
            let Some(relative) = self.layout.strip(&absolute) else {
                continue;
            };
            let Some(key) = ClusterKey::parse(relative) else {
                continue;
            };
            let version = Version::number(wire::index_version(e.modify_index));
            if key == ClusterKey::Leader {
                leader = Some(e.modify_index);
            }
            let value = match e.bytes() {
                Ok(v) => v,
                Err(err) if key == ClusterKey::Leader => {
                    // Held whatever it holds: never read a garbled lock as free.
                    problems.push(KeyProblem {
                        key: key.relative(),
                        version: Some(version.clone()),
                        reason: format!("value is not base64: {err}"),
                    });
                    e.value.clone().unwrap_or_default().into_bytes()
                }
                Err(err) => {
                    problems.push(KeyProblem {
                        key: key.relative(),
                        version: Some(version),
                        reason: format!("value is not base64: {err}"),
                    });
                    continue;
                }
            };
            raw.push(RawEntry {
                key,
                value,
                version,
                owner: e.session.clone(),
            });
        }
        {
            let mut loads = lock(&self.loads);
            loads.push_back((index, leader));
            while loads.len() > REMEMBERED_LOADS {
                loads.pop_front();
            }
        }
        let mut cluster = Cluster::from_entries(raw, Version::number(wire::index_version(index)));
        if !problems.is_empty() {
            cluster.problems.extend(problems);
            cluster.problems.sort_by(|a, b| a.key.cmp(&b.key));
        }
        debug!(index, "cluster loaded");
        Ok(cluster)
    }

    async fn do_acquire(&self, deadline: Instant) -> Result<LockLease, DcsError> {
        let key = self.leader_key();
        for _ in 0..ATTEMPTS {
            let s = self.need_session("acquire_leader", deadline).await?;
            let call = self.acquire_call(&key, &s, self.name.clone());
            match self.put(call, deadline, "acquire_leader").await? {
                Put::Done => {
                    info!(session = s.id, "took the leader lock");
                    return Ok(LockLease { valid_for: s.ttl });
                }
                Put::InvalidSession => self.session_gone(&s.id).await,
                Put::Refused => match self.holder(deadline, "acquire_leader").await? {
                    Some(holder) => return Err(DcsError::not_owner("leader", Some(holder))),
                    // Free, yet refused: the key is under a lock-delay.
                    None => tokio::time::sleep(LOCK_DELAY_PAUSE).await,
                },
            }
        }
        let holder = self.holder(deadline, "acquire_leader").await?;
        Err(DcsError::not_owner("leader", holder))
    }

    async fn do_renew(&self, deadline: Instant) -> Result<LockLease, DcsError> {
        let s = self
            .session("renew_leader", deadline, SessionUse::KeepOnly)
            .await?;
        let key = self.leader_key();
        let current = self.get(&key, deadline, "renew_leader").await?;
        let Some(s) = s else {
            // No session of ours: whatever the key says, we do not hold it.
            let holder = current.map(|(_, v)| String::from_utf8_lossy(&v).into_owned());
            return Err(DcsError::not_owner("leader", holder));
        };
        let Some((entry, value)) = current else {
            return Err(DcsError::not_owner("leader", None));
        };
        let holder = String::from_utf8_lossy(&value).into_owned();
        if value != self.name.as_bytes() {
            return Err(DcsError::not_owner("leader", Some(holder)));
        }
        let on = entry.session.as_deref();
        if on == Some(s.id.as_str()) {
            debug!(session = s.id, "leader lock renewed");
            return Ok(LockLease { valid_for: s.ttl });
        }
        // The key names us but is on another session. Move it to the
        // current one only if that session is ours (replaced after a ttl
        // change and still alive, since the key still exists).
        let former = match on {
            Some(id) => self.session.lock().await.former.contains(&id.to_string()),
            None => false,
        };
        let Some(old) = on.filter(|_| former) else {
            warn!(
                key_session = ?on,
                our_session = s.id,
                "the leader key names us but is not held by our session"
            );
            return Err(DcsError::not_owner("leader", Some(holder)));
        };
        // Release keeps the key (naming us) but unlocked; a competitor only
        // tries to acquire a lock it saw free, which it never is here.
        let release = Call::new(Method::PUT, wire::kv_path(&key), Repeat::OnlyIfNotApplied)
            .param("release", old)
            .body(self.name.clone());
        if self.put(release, deadline, "renew_leader").await? != Put::Done {
            let holder = self.holder(deadline, "renew_leader").await?;
            return Err(DcsError::not_owner("leader", holder));
        }
        match self
            .put(
                self.acquire_call(&key, &s, self.name.clone()),
                deadline,
                "renew_leader",
            )
            .await?
        {
            Put::Done => {
                info!(
                    from = old,
                    to = s.id,
                    "leader lock moved to our new session"
                );
                Ok(LockLease { valid_for: s.ttl })
            }
            Put::InvalidSession => {
                self.session_gone(&s.id).await;
                Err(DcsError::SessionExpired { what: "session" })
            }
            Put::Refused => {
                let holder = self.holder(deadline, "renew_leader").await?;
                Err(DcsError::not_owner("leader", holder))
            }
        }
    }

    async fn do_release(&self, deadline: Instant) -> Result<(), DcsError> {
        let key = self.leader_key();
        let Some((entry, value)) = self.get(&key, deadline, "release_leader").await? else {
            return Err(DcsError::not_owner("leader", None));
        };
        if value != self.name.as_bytes() {
            return Err(DcsError::not_owner(
                "leader",
                Some(String::from_utf8_lossy(&value).into_owned()),
            ));
        }
        // Deleting at the version read removes exactly the lock we saw
        // naming us; Consul answers `true` for a key already gone too.
        let call = self.delete_call(&key).param("cas", entry.modify_index);
        match self.put(call, deadline, "release_leader").await? {
            Put::Done => {
                info!("released the leader lock");
                Ok(())
            }
            _ => {
                let holder = self.holder(deadline, "release_leader").await?;
                Err(DcsError::not_owner("leader", holder))
            }
        }
    }

    /// Deletes the leader key if it is still `lock` (names us, same
    /// `ModifyIndex`, same session), by compare-and-set on that index:
    /// Consul lets any client delete a session-locked key. For the guard.
    async fn do_release_at(&self, deadline: Instant, lock: &LeaderLock) -> Result<(), DcsError> {
        if lock.name != self.name {
            return Err(DcsError::not_owner("leader", Some(lock.name.clone())));
        }
        let key = self.leader_key();
        let Some((entry, value)) = self.get(&key, deadline, "release_leader").await? else {
            return Err(DcsError::not_owner("leader", None));
        };
        if value != self.name.as_bytes() {
            return Err(DcsError::not_owner(
                "leader",
                Some(String::from_utf8_lossy(&value).into_owned()),
            ));
        }
        if Version::number(wire::index_version(entry.modify_index)) != lock.version
            || entry.session != lock.owner
        {
            return Err(DcsError::conflict("leader"));
        }
        let call = self.delete_call(&key).param("cas", entry.modify_index);
        match self.put(call, deadline, "release_leader").await? {
            Put::Done => {
                info!("released the leader lock on behalf of this member");
                Ok(())
            }
            _ => Err(DcsError::conflict("leader")),
        }
    }

    /// Replaces the leader key with a lock of our session, if it is still
    /// at the `ModifyIndex` `lock` was read at: one transaction
    /// (`check-index`, `delete`, `lock`), all applied or none. A KV `PUT`
    /// cannot do it: Consul refuses `?cas=` together with `?acquire=`
    /// ("Conflicting flags"), and a CAS write followed by an acquire would
    /// leave a moment where the key is nobody's. `delete` first, so a key
    /// still locked by the session read is replaced too, as the trait asks;
    /// `Flags` is the index replaced, as in `write`. The session is renewed
    /// (or created) first, so the lock lives at least its TTL after this
    /// call was sent.
    async fn do_take_from(
        &self,
        deadline: Instant,
        lock: &LeaderLock,
    ) -> Result<LockLease, DcsError> {
        const OP: &str = "take_leader_from";
        let Some(index) = lock
            .version
            .as_number()
            .filter(|n| *n > 0)
            .and_then(|n| u64::try_from(n).ok())
        else {
            // Not an index: no stored key is at it.
            return Err(DcsError::conflict("leader"));
        };
        let key = self.leader_key();
        let value = wire::base64(self.name.as_bytes());
        for _ in 0..ATTEMPTS {
            let s = self.need_session(OP, deadline).await?;
            let ops = json!([
                {"KV": {"Verb": "check-index", "Key": key, "Index": index}},
                {"KV": {"Verb": "delete", "Key": key}},
                {"KV": {"Verb": "lock", "Key": key, "Value": value, "Flags": index, "Session": s.id}},
            ]);
            let call = Call::new(Method::PUT, "/v1/txn".into(), Repeat::OnlyIfNotApplied)
                .body(ops.to_string());
            let answer = self.send(&call, deadline, OP).await?;
            match answer.status {
                200 => {
                    info!(
                        session = s.id,
                        index,
                        replaced = %lock.name,
                        replaced_owner = ?lock.owner,
                        "took the leader key over by compare-and-set"
                    );
                    return Ok(LockLease { valid_for: s.ttl });
                }
                409 => {
                    let errors = serde_json::from_slice::<wire::TxnAnswer>(&answer.body)
                        .map_err(|e| {
                            DcsError::rejected(OP, format!("unreadable transaction answer: {e}"))
                        })?
                        .errors
                        .unwrap_or_default();
                    if errors.iter().any(|e| e.op_index == 0) {
                        debug!(index, ?errors, "leader key changed since it was read");
                        return Err(DcsError::conflict("leader"));
                    }
                    if errors.iter().any(|e| e.what.contains("invalid session")) {
                        self.session_gone(&s.id).await;
                    } else if errors.iter().any(|e| e.what.contains("lock delay")) {
                        debug!(?errors, "leader key under a lock-delay; trying again");
                        tokio::time::sleep(LOCK_DELAY_PAUSE).await;
                    } else {
                        let what: Vec<&str> = errors.iter().map(|e| e.what.as_str()).collect();
                        return Err(DcsError::rejected(OP, what.join("; ")));
                    }
                }
                _ => return Err(unexpected(OP, &answer)),
            }
        }
        // Still under a lock-delay, or our sessions keep vanishing: the key
        // was left as it was.
        Err(DcsError::conflict("leader"))
    }

    /// Deletes the leader key if it is still at the `ModifyIndex` `lock` was
    /// read at, whatever it holds and whichever session locks it: one CAS
    /// delete, which Consul also answers `true` for a key already gone.
    async fn do_remove_at(&self, deadline: Instant, lock: &LeaderLock) -> Result<(), DcsError> {
        const OP: &str = "remove_leader_at";
        let key = self.leader_key();
        let index = lock
            .version
            .as_number()
            .filter(|n| *n > 0)
            .and_then(|n| u64::try_from(n).ok());
        let Some(index) = index else {
            // Not an index: nothing stored is at it; only absence is fine.
            return match self.get(&key, deadline, OP).await? {
                None => Ok(()),
                Some(_) => Err(DcsError::conflict("leader")),
            };
        };
        let call = self.delete_call(&key).param("cas", index);
        match self.put(call, deadline, OP).await? {
            Put::Done => {
                info!(
                    index,
                    holder = %lock.name,
                    owner = ?lock.owner,
                    "removed the leader key by compare-and-set (or it was already gone)"
                );
                Ok(())
            }
            Put::Refused => {
                debug!(index, "leader key changed since it was read: not removed");
                Err(DcsError::conflict("leader"))
            }
            Put::InvalidSession => Err(DcsError::rejected(OP, "invalid session")),
        }
    }

    async fn do_touch(&self, deadline: Instant, value: String) -> Result<(), DcsError> {
        let key = self.member_key();
        for _ in 0..ATTEMPTS {
            let s = self.need_session("touch_member", deadline).await?;
            match self
                .put(
                    self.acquire_call(&key, &s, value.clone()),
                    deadline,
                    "touch_member",
                )
                .await?
            {
                Put::Done => {
                    debug!(session = s.id, "member key published");
                    return Ok(());
                }
                Put::InvalidSession => self.session_gone(&s.id).await,
                Put::Refused => {
                    // Held by another session: ours from before a ttl
                    // change, or an earlier run of this node. Patroni
                    // deletes and writes it again; so do we.
                    debug!("member key held by another session: recreating it");
                    let answer = self
                        .send(&self.delete_call(&key), deadline, "touch_member")
                        .await?;
                    if answer.status != 200 {
                        return Err(unexpected("touch_member", &answer));
                    }
                }
            }
        }
        Err(DcsError::conflict(format!("members/{}", self.name)))
    }

    async fn do_write(
        &self,
        deadline: Instant,
        key: SharedKey,
        value: &str,
        expect: Expect,
    ) -> Result<Version, DcsError> {
        let path = self.key(&key.cluster_key());
        let mut call = Call::new(Method::PUT, wire::kv_path(&path), Repeat::OnlyIfNotApplied)
            .body(value.to_string());
        match &expect {
            Expect::Any => call.repeat = Repeat::Safe,
            Expect::Absent => call = call.param("cas", 0),
            Expect::Version(v) => match v.as_number() {
                // cas=0 would mean "create": a version that is not a
                // positive number matches nothing stored.
                //
                // `flags` = the version replaced: Consul skips a write that
                // changes nothing (same value, same flags) and keeps the
                // ModifyIndex, so two writers at one version could both
                // succeed. The entry at version n never has flags n (it
                // holds the version *it* replaced, or 0), so this write
                // always makes a new version. Patroni ignores Flags.
                Some(n) if n > 0 => call = call.param("cas", n).param("flags", n),
                _ => return Err(DcsError::conflict(key)),
            },
        }
        match self.put(call, deadline, "write").await? {
            Put::Done => {}
            Put::Refused => {
                debug!(%key, ?expect, "compare-and-set lost");
                return Err(DcsError::conflict(key));
            }
            Put::InvalidSession => return Err(DcsError::rejected("write", "invalid session")),
        }
        // Consul's write answers carry no index: read the version back.
        let read_by = deadline.checked_sub(READ_BACK_RESERVE).unwrap_or(deadline);
        let version =
            match tokio::time::timeout_at(read_by, self.get(&path, read_by, "write")).await {
                Ok(Ok(Some((entry, stored)))) if stored == value.as_bytes() => {
                    wire::index_version(entry.modify_index)
                }
                other => {
                    // Written, but changed again before the read (or the read
                    // failed): no version of ours to give. 0 matches nothing, so
                    // a compare-and-set against it conflicts, which is right.
                    debug!(%key, ?other, "written; its version could not be read back");
                    0
                }
            };
        debug!(%key, version, "written");
        Ok(Version::number(version))
    }

    async fn do_delete(
        &self,
        deadline: Instant,
        key: SharedKey,
        expect: Expect,
    ) -> Result<(), DcsError> {
        let path = self.key(&key.cluster_key());
        let call = self.delete_call(&path);
        let call = match &expect {
            Expect::Any => call,
            Expect::Absent => {
                return match self.get(&path, deadline, "delete").await? {
                    None => Ok(()),
                    Some(_) => Err(DcsError::conflict(key)),
                };
            }
            Expect::Version(v) => {
                let Some(n) = v.as_number().filter(|n| *n > 0) else {
                    return Err(DcsError::conflict(key));
                };
                // Consul's CAS delete succeeds on a missing key; a version
                // was expected, so absence is a conflict: look first.
                match self.get(&path, deadline, "delete").await? {
                    Some((e, _)) if wire::index_version(e.modify_index) == n => {}
                    _ => return Err(DcsError::conflict(key)),
                }
                call.param("cas", n)
            }
        };
        match self.put(call, deadline, "delete").await? {
            Put::Done => {
                debug!(%key, "deleted");
                Ok(())
            }
            _ => Err(DcsError::conflict(key)),
        }
    }

    async fn do_delete_cluster(&self, deadline: Instant) -> Result<(), DcsError> {
        // The trailing slash matters: `service/demo` would also delete
        // `service/demo2/...`.
        let prefix = self.layout.prefix().trim_start_matches('/').to_string();
        let call = self.delete_call(&prefix).flag("recurse");
        let answer = self.send(&call, deadline, "delete_cluster").await?;
        if answer.status != 200 {
            return Err(unexpected("delete_cluster", &answer));
        }
        info!(prefix, "cluster deleted");
        Ok(())
    }

    /// The leader's `ModifyIndex` at the load whose cursor is `cursor`:
    /// `Some(None)` if the key was absent, `None` if that load is unknown.
    fn leader_at(&self, cursor: u64) -> Option<Option<u64>> {
        lock(&self.loads)
            .iter()
            .rev()
            .find(|(i, _)| *i == cursor)
            .map(|(_, l)| *l)
    }

    /// Blocking reads of the leader key from the cursor until it changed or
    /// `until` passed.
    async fn do_watch(&self, cursor: &Version, until: Instant) -> Result<WatchOutcome, DcsError> {
        let Some(cursor) = cursor.as_number().and_then(|n| u64::try_from(n).ok()) else {
            // Not a cursor this backend made: the caller must load afresh.
            return Ok(WatchOutcome::Changed);
        };
        let at_load = self.leader_at(cursor);
        let key = self.leader_key();
        let mut index = cursor.max(1);
        loop {
            let started = Instant::now();
            let remaining = until.saturating_duration_since(started);
            if remaining.is_zero() {
                return Ok(WatchOutcome::TimedOut);
            }
            let call = Call::new(Method::GET, wire::kv_path(&key), Repeat::Safe)
                .param("index", index)
                .param("wait", wire::wait_text(remaining));
            let answer = match self.http.send_once(&call, until).await {
                Ok(a) => a,
                Err(_) if Instant::now() >= until => return Ok(WatchOutcome::TimedOut),
                Err(f) => return Err(to_dcs("watch_leader", f)),
            };
            let Some(seen) = answer.index else {
                return Err(DcsError::rejected(
                    "watch_leader",
                    "Consul answered without X-Consul-Index",
                ));
            };
            if seen < index {
                // Consul's rule: an index going backwards means the data
                // was restored or rebuilt; start over (the caller reloads).
                debug!(seen, index, "Consul index went backwards");
                return Ok(WatchOutcome::Changed);
            }
            match answer.status {
                200 => {
                    let entries: Vec<KvEntry> =
                        serde_json::from_slice(&answer.body).map_err(|e| {
                            DcsError::rejected("watch_leader", format!("unreadable KV answer: {e}"))
                        })?;
                    let modified = entries
                        .iter()
                        .find(|e| e.key == key)
                        .map_or(seen, |e| e.modify_index);
                    if modified > cursor || at_load == Some(None) {
                        return Ok(WatchOutcome::Changed);
                    }
                }
                404 => match at_load {
                    // Present at the load, gone now.
                    Some(Some(_)) => return Ok(WatchOutcome::Changed),
                    // Absent then and now: something else in the KV store
                    // moved the index. Keep that index and wait on.
                    Some(None) => {}
                    // Unknown load: a higher index may be the leader's
                    // deletion; say so rather than miss it.
                    None if seen > cursor => return Ok(WatchOutcome::Changed),
                    None => {}
                },
                _ => return Err(unexpected("watch_leader", &answer)),
            }
            index = index.max(seen).max(1);
            let next = started + WATCH_MIN_INTERVAL;
            if next < until {
                tokio::time::sleep_until(next).await;
            }
        }
    }
}

#[async_trait]
impl Dcs for ConsulDcs {
    fn member_name(&self) -> &str {
        &self.name
    }

    fn layout(&self) -> &KeyLayout {
        &self.layout
    }

    /// Stores the timings. A new `ttl` takes effect with the next session:
    /// the next lock or member call creates one and retires the old one,
    /// which is left to expire (never destroyed: keys may still be on it);
    /// `renew_leader` moves the leader key over, `touch_member` the member key.
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

    /// Every lock is acquired with a session; a leader key without one was
    /// written by a plain `PUT` (by hand, or a tool).
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
