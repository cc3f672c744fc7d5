//! The emulated Consul state: the KV store, sessions, tombstones and
//! lock-delays, as one synchronous state machine.
//!
//! Every rule here follows Consul's documented behaviour (the HTTP API
//! pages for `/kv` and `/session`, the sessions overview and the blocking
//! queries page); where the documentation is silent, Consul's state store
//! is the reference. The HTTP layer (the private `api` module) only translates
//! requests and answers; all decisions are made here, under one lock, so
//! every operation is atomic as in Consul's Raft-applied state machine.
//!
//! Time is given by the caller (the emulator's settable clock), never read
//! here, so tests decide when sessions expire.
//!
//! Indexes: one counter stands for Consul's Raft index and is bumped by
//! every write that reaches the state machine (a compare-and-set that fails
//! still consumes one, as a Raft log entry would). As in Consul, the KV
//! table keeps its own "last changed" index (`kvs_index`), which is what a
//! read of a missing key reports; session writes do not move it.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::duration;

/// The longest lock-delay Consul applies, whatever a session asked for.
pub const MAX_LOCK_DELAY: Duration = Duration::from_secs(60);
/// The longest session TTL Consul accepts.
pub const SESSION_TTL_MAX: Duration = Duration::from_secs(86400);
/// The default lock-delay when a session does not give one.
pub const DEFAULT_LOCK_DELAY: Duration = Duration::from_secs(15);
/// The health check every node has and sessions use by default.
pub const SERF_HEALTH: &str = "serfHealth";

/// How the emulated agent and its servers are configured.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The agent's node name; sessions belong to it.
    pub node: String,
    /// The agent's datacenter; requests naming another one fail.
    pub datacenter: String,
    /// Consul's `session_ttl_min` (default 10 s).
    pub session_ttl_min: Duration,
    /// When a session whose TTL passed without renewal is invalidated, as a
    /// multiple of its TTL, between 1.0 and 2.0. Consul's leader arms its
    /// timers at 2×TTL, so 2.0 (the default) is what a real server does;
    /// 1.0 is the earliest the documentation allows.
    pub ttl_multiplier: f64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            node: "emulator".into(),
            datacenter: "dc1".into(),
            session_ttl_min: Duration::from_secs(10),
            ttl_multiplier: 2.0,
        }
    }
}

/// An error as Consul reports it: an HTTP status and a text body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub body: String,
}

impl ApiError {
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        ApiError {
            status,
            body: body.into(),
        }
    }

    /// Consul answers errors of its state machine with 500 and the message.
    fn internal(body: impl Into<String>) -> Self {
        ApiError::new(500, body)
    }
}

/// One KV entry, as Consul's `DirEntry`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub create_index: u64,
    pub modify_index: u64,
    pub lock_index: u64,
    pub flags: u64,
    pub value: Vec<u8>,
    /// The session holding the lock on this key, if any.
    pub session: Option<String>,
}

impl Entry {
    /// Consul's `DirEntry.Equal`: a write producing an equal entry changes
    /// nothing (not even the `ModifyIndex`).
    fn same_content(&self, other: &Entry) -> bool {
        self.lock_index == other.lock_index
            && self.flags == other.flags
            && self.value == other.value
            && self.session == other.session
    }
}

/// What happens to a session's locks when it is invalidated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behavior {
    Release,
    Delete,
}

impl Behavior {
    pub fn as_str(self) -> &'static str {
        match self {
            Behavior::Release => "release",
            Behavior::Delete => "delete",
        }
    }
}

/// One session.
#[derive(Clone, Debug)]
pub struct Session {
    pub id: String,
    pub name: String,
    pub node: String,
    pub lock_delay: Duration,
    pub behavior: Behavior,
    /// The TTL as the client wrote it (Consul returns it verbatim).
    pub ttl_text: String,
    pub ttl: Option<Duration>,
    pub node_checks: Vec<String>,
    pub create_index: u64,
    pub modify_index: u64,
    /// When the emulator invalidates the session unless renewed first
    /// (clock time); `None` for sessions without a TTL.
    pub expires_at: Option<Duration>,
}

/// A `PUT /v1/session/create` request after decoding.
#[derive(Clone, Debug, Default)]
pub struct CreateSession {
    pub name: String,
    pub node: Option<String>,
    /// `None`: the default (`serfHealth`); `Some(vec![])`: no checks.
    pub checks: Option<Vec<String>>,
    pub lock_delay: Option<Duration>,
    pub behavior: Option<String>,
    pub ttl: Option<String>,
}

/// How a `PUT /v1/kv/<key>` is applied (the query flag that selects it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutOp {
    Set,
    Cas(u64),
    Acquire(String),
    Release(String),
}

/// How a `DELETE /v1/kv/<key>` is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeleteOp {
    Key,
    Cas(u64),
    Tree,
}

/// One KV operation of a `PUT /v1/txn`, decoded (`Value` from base64,
/// `Index` is Consul's `DirEnt.ModifyIndex`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnKvOp {
    pub verb: String,
    pub key: String,
    pub value: Vec<u8>,
    pub flags: u64,
    pub index: u64,
    pub session: String,
}

/// How a transaction ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOutcome {
    /// Every operation applied: the result entries (key and entry; the
    /// value is kept only for `get`, as Consul blanks it for the others;
    /// deletes have none).
    Applied(Vec<(String, Entry)>),
    /// Nothing applied: each failed operation's position and Consul's
    /// message for it.
    RolledBack(Vec<(usize, String)>),
}

/// Whether a transaction verb writes (Consul's `isWrite`): a transaction
/// with one goes through Raft and uses an index.
fn txn_writes(verb: &str) -> bool {
    matches!(
        verb,
        "set" | "delete" | "delete-cas" | "delete-tree" | "cas" | "lock" | "unlock"
    )
}

/// The whole emulated state.
#[derive(Clone, Debug)]
pub struct Store {
    config: StoreConfig,
    /// The last Raft index used.
    index: u64,
    /// The last index at which the KV table or its tombstones changed.
    kvs_index: u64,
    kv: BTreeMap<String, Entry>,
    /// Deleted keys and the index of their deletion, so that listing a
    /// prefix never reports an index lower than a deletion inside it.
    tombstones: BTreeMap<String, u64>,
    sessions: BTreeMap<String, Session>,
    /// Per key, until when (clock time) no lock may be acquired on it.
    lock_delays: HashMap<String, Duration>,
    next_session: u64,
    /// Distinguishes session IDs of different emulator processes.
    id_salt: u64,
}

impl Store {
    pub fn new(config: StoreConfig, id_salt: u64) -> Self {
        Store {
            config,
            index: 1,
            kvs_index: 0,
            kv: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            sessions: BTreeMap::new(),
            lock_delays: HashMap::new(),
            next_session: 0,
            id_salt,
        }
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// The last Raft index used.
    pub fn index(&self) -> u64 {
        self.index
    }

    fn next_index(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    // ---- KV ----------------------------------------------------------

    /// A single key and the index a read of it reports: the key's
    /// `ModifyIndex` when it exists, else the KV table's index (at least 1).
    pub fn kv_get(&self, key: &str) -> (u64, Option<Entry>) {
        match self.kv.get(key) {
            Some(e) => (e.modify_index.max(1), Some(e.clone())),
            None => (self.kvs_index.max(1), None),
        }
    }

    /// Every key under `prefix`, and the index a recursive read reports: the
    /// highest `ModifyIndex` or tombstone under the prefix, else the KV
    /// table's index.
    pub fn kv_list(&self, prefix: &str) -> (u64, Vec<(String, Entry)>) {
        let entries: Vec<(String, Entry)> = self
            .kv
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        let mut lindex = entries
            .iter()
            .map(|(_, e)| e.modify_index)
            .max()
            .unwrap_or(0);
        if prefix.is_empty() {
            lindex = self.kvs_index;
        } else {
            let gindex = self
                .tombstones
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(_, i)| *i)
                .max()
                .unwrap_or(0);
            lindex = lindex.max(gindex);
        }
        let index = if lindex != 0 { lindex } else { self.kvs_index };
        (index.max(1), entries)
    }

    /// Applies a KV write. `Ok(false)` is Consul's `false` answer (a
    /// compare-and-set or lock that did not hold); errors are Consul's 500s.
    pub fn kv_put(
        &mut self,
        key: &str,
        value: Vec<u8>,
        flags: u64,
        op: PutOp,
        now: Duration,
    ) -> Result<bool, ApiError> {
        if let PutOp::Acquire(_) = op {
            // Checked before the write reaches the state machine, as Consul's
            // KVS endpoint does: a key under lock-delay cannot be locked.
            if self.lock_delays.get(key).is_some_and(|until| *until > now) {
                return Ok(false);
            }
        }
        let idx = self.next_index();
        let existing = self.kv.get(key).cloned();
        let mut entry = Entry {
            create_index: existing.as_ref().map_or(idx, |e| e.create_index),
            modify_index: idx,
            lock_index: existing.as_ref().map_or(0, |e| e.lock_index),
            flags,
            value,
            // A plain write keeps whatever lock the key has.
            session: existing.as_ref().and_then(|e| e.session.clone()),
        };
        match op {
            PutOp::Set => {}
            PutOp::Cas(cas) => match (&existing, cas) {
                (Some(_), 0) | (None, 1..) => return Ok(false),
                (Some(e), cas) if e.modify_index != cas => return Ok(false),
                _ => {}
            },
            PutOp::Acquire(session) => {
                if session.is_empty() {
                    return Err(ApiError::internal("missing session"));
                }
                if !self.sessions.contains_key(&session) {
                    return Err(ApiError::internal(format!("invalid session {session:?}")));
                }
                match existing.as_ref().and_then(|e| e.session.as_deref()) {
                    Some(holder) if holder == session => {}
                    Some(_) => return Ok(false),
                    None => entry.lock_index += 1,
                }
                entry.session = Some(session);
            }
            PutOp::Release(session) => {
                if session.is_empty() {
                    return Err(ApiError::internal("missing session"));
                }
                let Some(e) = &existing else {
                    return Ok(false);
                };
                if e.session.as_deref() != Some(session.as_str()) {
                    return Ok(false);
                }
                entry.session = None;
            }
        }
        self.store_entry(key, entry, existing.as_ref(), idx);
        Ok(true)
    }

    /// Stores `entry` unless it equals `existing` (then nothing changes,
    /// as in Consul).
    fn store_entry(&mut self, key: &str, mut entry: Entry, existing: Option<&Entry>, idx: u64) {
        if let Some(e) = existing
            && e.same_content(&entry)
        {
            return;
        }
        entry.modify_index = idx;
        self.kv.insert(key.to_string(), entry);
        self.tombstones.remove(key);
        self.kvs_index = idx;
    }

    /// Applies a KV delete; `Ok(false)` only for a compare-and-set delete
    /// whose index did not match an existing key.
    pub fn kv_delete(&mut self, key: &str, op: DeleteOp) -> Result<bool, ApiError> {
        let idx = self.next_index();
        match op {
            DeleteOp::Key => {
                self.remove_key(key, idx);
                Ok(true)
            }
            DeleteOp::Cas(cas) => match self.kv.get(key) {
                // As in Consul's state store: a missing key counts as deleted.
                None => Ok(true),
                Some(e) if e.modify_index != cas => Ok(false),
                Some(_) => {
                    self.remove_key(key, idx);
                    Ok(true)
                }
            },
            DeleteOp::Tree => {
                let doomed: Vec<String> = self
                    .kv
                    .range(key.to_string()..)
                    .take_while(|(k, _)| k.starts_with(key))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in doomed {
                    self.remove_key(&k, idx);
                }
                Ok(true)
            }
        }
    }

    fn remove_key(&mut self, key: &str, idx: u64) {
        if self.kv.remove(key).is_some() {
            self.tombstones.insert(key.to_string(), idx);
            self.kvs_index = idx;
        }
    }

    /// Applies a transaction (`PUT /v1/txn`, KV operations only) as Consul
    /// does: the lock-delay of every `lock` is checked first (by Consul's
    /// leader, before Raft: a refusal uses no index); then all operations
    /// run in order at one index, each seeing the effects of those before
    /// it, and every failure is collected; if any failed, the state is as
    /// before (the index, as for any Raft entry, stays used).
    pub fn txn(&mut self, ops: &[TxnKvOp], now: Duration) -> TxnOutcome {
        let delayed: Vec<(usize, String)> = ops
            .iter()
            .enumerate()
            .filter(|(_, op)| {
                op.verb == "lock"
                    && self
                        .lock_delays
                        .get(&op.key)
                        .is_some_and(|until| *until > now)
            })
            .map(|(i, op)| {
                (
                    i,
                    format!("failed to lock key {:?} due to lock delay", op.key),
                )
            })
            .collect();
        if !delayed.is_empty() {
            return TxnOutcome::RolledBack(delayed);
        }
        let before = self.clone();
        let idx = if ops.iter().any(|op| txn_writes(&op.verb)) {
            self.next_index()
        } else {
            self.index
        };
        let mut results = Vec::new();
        let mut errors = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            match self.txn_op(op, idx) {
                Ok(Some(entry)) => results.push((op.key.clone(), entry)),
                Ok(None) => {}
                Err(what) => errors.push((i, what)),
            }
        }
        if errors.is_empty() {
            return TxnOutcome::Applied(results);
        }
        let used = self.index;
        *self = before;
        self.index = used;
        TxnOutcome::RolledBack(errors)
    }

    /// One operation of a transaction at index `idx`, with Consul's
    /// messages (agent/consul/state/txn.go and kvs.go).
    fn txn_op(&mut self, op: &TxnKvOp, idx: u64) -> Result<Option<Entry>, String> {
        let key = op.key.as_str();
        let existing = self.kv.get(key).cloned();
        let blank = |e: Entry| Entry {
            value: Vec::new(),
            ..e
        };
        let stored = |st: &Store| st.kv.get(key).cloned().map(blank);
        match op.verb.as_str() {
            "set" | "cas" | "lock" | "unlock" => {
                let mut entry = Entry {
                    create_index: existing.as_ref().map_or(idx, |e| e.create_index),
                    modify_index: idx,
                    lock_index: existing.as_ref().map_or(0, |e| e.lock_index),
                    flags: op.flags,
                    value: op.value.clone(),
                    session: existing.as_ref().and_then(|e| e.session.clone()),
                };
                match op.verb.as_str() {
                    "cas" => {
                        let holds = match (&existing, op.index) {
                            (None, 0) => true,
                            (Some(e), i) => i != 0 && e.modify_index == i,
                            (None, _) => false,
                        };
                        if !holds {
                            return Err(format!("failed to set key {key:?}, index is stale"));
                        }
                    }
                    "lock" => {
                        if op.session.is_empty() {
                            return Err("missing session".into());
                        }
                        if !self.sessions.contains_key(&op.session) {
                            return Err(format!("invalid session {:?}", op.session));
                        }
                        match existing.as_ref().and_then(|e| e.session.as_deref()) {
                            Some(holder) if holder == op.session => {}
                            Some(_) => {
                                return Err(format!(
                                    "failed to lock key {key:?}, lock is already held"
                                ));
                            }
                            None => entry.lock_index += 1,
                        }
                        entry.session = Some(op.session.clone());
                    }
                    "unlock" => {
                        if op.session.is_empty() {
                            return Err("missing session".into());
                        }
                        let held = existing
                            .as_ref()
                            .is_some_and(|e| e.session.as_deref() == Some(op.session.as_str()));
                        if !held {
                            return Err(format!(
                                "failed to unlock key {key:?}, lock isn't held, or is held by another session"
                            ));
                        }
                        entry.session = None;
                    }
                    _ => {}
                }
                self.store_entry(key, entry, existing.as_ref(), idx);
                Ok(stored(self))
            }
            "get" => match existing {
                Some(e) => Ok(Some(e)),
                None => Err(format!("key {key:?} doesn't exist")),
            },
            "check-index" => match existing {
                None => Err(format!("failed to check index, key {key:?} doesn't exist")),
                Some(e) if e.modify_index != op.index => Err(format!(
                    "failed index check for key {key:?}, current modify index {} != {}",
                    e.modify_index, op.index
                )),
                Some(e) => Ok(Some(blank(e))),
            },
            "check-session" => match existing {
                None => Err(format!(
                    "failed to check session, key {key:?} doesn't exist"
                )),
                Some(e) if e.session.as_deref().unwrap_or_default() != op.session => Err(format!(
                    "failed session check for key {key:?}, current session {:?} != {:?}",
                    e.session.as_deref().unwrap_or_default(),
                    op.session
                )),
                Some(e) => Ok(Some(blank(e))),
            },
            "check-not-exists" => match existing {
                Some(_) => Err(format!("key {key:?} exists")),
                None => Ok(None),
            },
            "delete" => {
                self.remove_key(key, idx);
                Ok(None)
            }
            "delete-cas" => match existing {
                // As in Consul's state store: a missing key counts as deleted.
                None => Ok(None),
                Some(e) if e.modify_index != op.index => {
                    Err(format!("failed to delete key {key:?}, index is stale"))
                }
                Some(_) => {
                    self.remove_key(key, idx);
                    Ok(None)
                }
            },
            "delete-tree" => {
                let doomed: Vec<String> = self
                    .kv
                    .range(key.to_string()..)
                    .take_while(|(k, _)| k.starts_with(key))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in doomed {
                    self.remove_key(&k, idx);
                }
                Ok(None)
            }
            other => Err(format!("unknown KV verb {other:?}")),
        }
    }

    /// Writes a value as a foreign tool would (tests plant garbage with it).
    pub fn put_raw(&mut self, key: &str, value: &[u8]) {
        // Set never fails.
        let _ = self.kv_put(key, value.to_vec(), 0, PutOp::Set, Duration::ZERO);
    }

    // ---- sessions ------------------------------------------------------

    /// Creates a session; its ID.
    pub fn session_create(
        &mut self,
        req: CreateSession,
        now: Duration,
    ) -> Result<String, ApiError> {
        let node = req.node.unwrap_or_else(|| self.config.node.clone());
        if node != self.config.node {
            return Err(ApiError::internal(format!(
                "Failed to create session: Missing node registration for {node:?}"
            )));
        }
        let checks = req.checks.unwrap_or_else(|| vec![SERF_HEALTH.to_string()]);
        if let Some(unknown) = checks.iter().find(|c| c.as_str() != SERF_HEALTH) {
            return Err(ApiError::internal(format!(
                "Missing check '{unknown}' registration"
            )));
        }
        let behavior = match req.behavior.as_deref() {
            None | Some("") | Some("release") => Behavior::Release,
            Some("delete") => Behavior::Delete,
            Some(other) => {
                return Err(ApiError::internal(format!(
                    "Invalid Behavior setting '{other}'"
                )));
            }
        };
        let ttl_text = req.ttl.unwrap_or_default();
        let ttl = if ttl_text.is_empty() {
            None
        } else {
            let ttl = duration::parse(&ttl_text).ok_or_else(|| {
                ApiError::internal(format!(
                    "Session TTL '{ttl_text}' invalid: time: invalid duration {ttl_text:?}"
                ))
            })?;
            if !ttl.is_zero() && (ttl < self.config.session_ttl_min || ttl > SESSION_TTL_MAX) {
                return Err(ApiError::internal(format!(
                    "Invalid Session TTL '{}', must be between [{}={}]",
                    ttl.as_nanos(),
                    duration::format(self.config.session_ttl_min),
                    duration::format(SESSION_TTL_MAX)
                )));
            }
            (!ttl.is_zero()).then_some(ttl)
        };
        let idx = self.next_index();
        self.next_session += 1;
        let id = session_id(self.id_salt, self.next_session);
        let session = Session {
            id: id.clone(),
            name: req.name,
            node,
            lock_delay: req.lock_delay.unwrap_or(DEFAULT_LOCK_DELAY),
            behavior,
            ttl_text,
            ttl,
            node_checks: checks,
            create_index: idx,
            modify_index: idx,
            expires_at: ttl.map(|t| now + self.invalidation_after(t)),
        };
        self.sessions.insert(id.clone(), session);
        Ok(id)
    }

    /// How long after its last renewal a session with `ttl` is invalidated.
    fn invalidation_after(&self, ttl: Duration) -> Duration {
        ttl.mul_f64(self.config.ttl_multiplier.clamp(1.0, 2.0))
    }

    /// Renews a session: its new state, or `None` if it does not exist.
    pub fn session_renew(&mut self, id: &str, now: Duration) -> Option<Session> {
        let after = self
            .sessions
            .get(id)?
            .ttl
            .map(|t| self.invalidation_after(t));
        let s = self.sessions.get_mut(id)?;
        s.expires_at = after.map(|a| now + a);
        Some(s.clone())
    }

    pub fn session_get(&self, id: &str) -> Option<Session> {
        self.sessions.get(id).cloned()
    }

    pub fn sessions(&self) -> Vec<Session> {
        self.sessions.values().cloned().collect()
    }

    /// Destroys a session (idempotent), invalidating it.
    pub fn session_destroy(&mut self, id: &str, now: Duration) {
        if self.sessions.contains_key(id) {
            self.invalidate(id, now);
        }
    }

    /// Invalidates every session whose time is up; whether any was.
    pub fn expire(&mut self, now: Duration) -> bool {
        let due: Vec<String> = self
            .sessions
            .values()
            .filter(|s| s.expires_at.is_some_and(|at| at <= now))
            .map(|s| s.id.clone())
            .collect();
        for id in &due {
            self.invalidate(id, now);
        }
        !due.is_empty()
    }

    /// When the next session expires, if any has a TTL.
    pub fn next_expiry(&self) -> Option<Duration> {
        self.sessions.values().filter_map(|s| s.expires_at).min()
    }

    /// What a new Consul leader does: every session's TTL starts afresh.
    pub fn reset_session_timers(&mut self, now: Duration) {
        let ids: Vec<String> = self.sessions.keys().cloned().collect();
        for id in ids {
            let after = self.sessions[&id].ttl.map(|t| self.invalidation_after(t));
            if let Some(s) = self.sessions.get_mut(&id) {
                s.expires_at = after.map(|a| now + a);
            }
        }
    }

    /// Removes a session and applies its behaviour to the keys it holds:
    /// released (`Session` cleared, `ModifyIndex` moved) or deleted, each
    /// put under the session's lock-delay.
    fn invalidate(&mut self, id: &str, now: Duration) {
        let Some(session) = self.sessions.remove(id) else {
            return;
        };
        let idx = self.next_index();
        let held: Vec<String> = self
            .kv
            .iter()
            .filter(|(_, e)| e.session.as_deref() == Some(id))
            .map(|(k, _)| k.clone())
            .collect();
        let delay = session.lock_delay.min(MAX_LOCK_DELAY);
        for key in held {
            match session.behavior {
                Behavior::Release => {
                    if let Some(e) = self.kv.get_mut(&key) {
                        e.session = None;
                        e.modify_index = idx;
                        self.kvs_index = idx;
                    }
                }
                Behavior::Delete => self.remove_key(&key, idx),
            }
            if !delay.is_zero() {
                self.lock_delays.insert(key, now + delay);
            }
        }
        self.lock_delays.retain(|_, until| *until > now);
    }
}

/// A UUID-shaped session ID, unique per emulator (salt) and session (n).
fn session_id(salt: u64, n: u64) -> String {
    let a = splitmix(salt ^ n.rotate_left(17));
    let b = splitmix(a ^ n);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::new(
            StoreConfig {
                session_ttl_min: Duration::from_secs(1),
                ..Default::default()
            },
            7,
        )
    }

    fn session(s: &mut Store, ttl: &str, behavior: &str, delay_ms: u64) -> String {
        s.session_create(
            CreateSession {
                ttl: Some(ttl.into()),
                behavior: Some(behavior.into()),
                lock_delay: Some(Duration::from_millis(delay_ms)),
                checks: Some(vec![]),
                ..Default::default()
            },
            Duration::ZERO,
        )
        .unwrap()
    }

    #[test]
    fn session_ids_are_unique_and_uuid_shaped() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|n| session_id(1, n)).collect();
        assert_eq!(ids.len(), 1000);
        let id = session_id(1, 1);
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
    }

    #[test]
    fn identical_writes_do_not_move_the_index() {
        let mut s = store();
        s.kv_put("k", b"v".to_vec(), 0, PutOp::Set, Duration::ZERO)
            .unwrap();
        let (i1, _) = s.kv_get("k");
        s.kv_put("k", b"v".to_vec(), 0, PutOp::Set, Duration::ZERO)
            .unwrap();
        assert_eq!(s.kv_get("k").0, i1);
        s.kv_put("k", b"w".to_vec(), 0, PutOp::Set, Duration::ZERO)
            .unwrap();
        assert!(s.kv_get("k").0 > i1);
    }

    #[test]
    fn list_index_covers_deletions_under_the_prefix() {
        let mut s = store();
        s.put_raw("a/x", b"1");
        s.put_raw("a/y", b"2");
        s.put_raw("b/z", b"3");
        let (before, _) = s.kv_list("a/");
        s.kv_delete("a/y", DeleteOp::Key).unwrap();
        let (after, entries) = s.kv_list("a/");
        assert_eq!(entries.len(), 1);
        assert!(after > before, "a deletion must move the prefix's index");
        // A write elsewhere does not move this prefix's index.
        s.put_raw("b/z", b"4");
        assert_eq!(s.kv_list("a/").0, after);
    }

    #[test]
    fn invalidation_applies_behavior_and_lock_delay() {
        let mut s = store();
        let del = session(&mut s, "2s", "delete", 500);
        let rel = session(&mut s, "2s", "release", 0);
        assert!(
            s.kv_put("d", vec![], 0, PutOp::Acquire(del.clone()), Duration::ZERO)
                .unwrap()
        );
        assert!(
            s.kv_put("r", vec![], 0, PutOp::Acquire(rel.clone()), Duration::ZERO)
                .unwrap()
        );
        let t = Duration::from_secs(4);
        assert!(s.expire(t));
        assert!(s.kv_get("d").1.is_none());
        assert_eq!(s.kv_get("r").1.unwrap().session, None);
        let other = session(&mut s, "2s", "delete", 0);
        assert!(
            !s.kv_put("d", vec![], 0, PutOp::Acquire(other.clone()), t)
                .unwrap(),
            "lock-delay"
        );
        assert!(
            s.kv_put(
                "d",
                vec![],
                0,
                PutOp::Acquire(other),
                t + Duration::from_millis(501)
            )
            .unwrap()
        );
    }
}
