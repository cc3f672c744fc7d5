//! [`ZkDcs`]: one node's client, holding one ZooKeeper session at a time.

use std::fmt;
use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use pgha_core::dcs::{Dcs, DcsError, LockLease, SharedKey, WatchOutcome, to_json};
use pgha_core::model::{
    Cluster, ClusterKey, Expect, KeyLayout, LeaderLock, MemberData, RawEntry, Timing, Version,
};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};
use zookeeper_client::{
    Acl, Acls, Client, CreateMode, CreateOptions, EventType, SessionId, SessionState, Stat,
    StateWatcher,
};

use crate::config::ZkConfig;

/// The watch cursor when there is no `leader` znode.
const ABSENT: &str = "absent";

/// How often one call may go round "wait for the connection / start a
/// session" before giving up. Each round either returns or waits for a
/// session state change, so this only bounds a flapping connection; the
/// call's `retry_timeout` bounds the time.
const MAX_SESSION_ROUNDS: usize = 16;

/// How often an operation retries after losing a race with another writer
/// (a znode appearing or vanishing between two of its steps).
const MAX_RACE_RETRIES: usize = 4;

/// How many sessions in a row a watch may see end before it gives up.
const MAX_WATCH_ROUNDS: usize = 8;

/// Upper bound on the znodes `delete_cluster` removes in one call.
const MAX_TREE_NODES: usize = 100_000;

/// The child created and deleted again inside a *persistent* leader znode,
/// within the `multi` that replaces or deletes it (see `ZkDcs::guarded_delete`).
const PROBE: &str = "pgha-cas-probe";

/// How an operation treats a session that ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Works on a new session (the loss stays recorded for the next lock
    /// operation to report).
    Plain,
    /// Reports an unreported loss as [`DcsError::SessionExpired`]: the caller
    /// believes it may hold the lock, and must learn that it does not.
    Lock,
}

/// The session in use, with the task that logs its state changes.
#[derive(Debug)]
struct Live {
    client: Client,
    monitor: tokio::task::AbortHandle,
}

impl Drop for Live {
    fn drop(&mut self) {
        // The client itself closes the session when its last clone drops.
        self.monitor.abort();
    }
}

/// A ZooKeeper-backed [`Dcs`]: one node's client.
///
/// Invariants:
/// - At most one session is in use at a time (`slot`); a session that ended
///   is never used again, and replacing it is recorded in `lost` until a
///   lock operation reported it or the lock was acquired again.
/// - Every trait call is bounded by the `retry_timeout` of the moment it
///   started (`watch_leader` by its own timeout plus one `retry_timeout`
///   for setting the watch).
pub struct ZkDcs {
    layout: KeyLayout,
    name: String,
    connect_string: String,
    auth: Vec<(String, Vec<u8>)>,
    acls: Vec<Acl>,
    warnings: Vec<String>,
    timing: Mutex<Timing>,
    /// Serialises session (re)creation; holds the current session.
    slot: tokio::sync::Mutex<Option<Live>>,
    /// A session that ended and was replaced by a plain call, not yet
    /// reported to a lock operation.
    lost: Mutex<Option<SessionId>>,
}

impl fmt::Debug for ZkDcs {
    // Credentials stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZkDcs")
            .field("layout", &self.layout)
            .field("name", &self.name)
            .field("connect_string", &self.connect_string)
            .field(
                "auth",
                &self
                    .auth
                    .iter()
                    .map(|(s, _)| s.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("acls", &self.acls)
            .field("timing", &self.timing())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data behind the lock; a panic elsewhere leaves it usable.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Maps a ZooKeeper error that the operation did not expect.
fn zk_err(op: &'static str, e: zookeeper_client::Error) -> DcsError {
    use zookeeper_client::Error as E;
    match e {
        E::SessionExpired | E::SessionMoved | E::ClientClosed => {
            DcsError::SessionExpired { what: "session" }
        }
        E::AuthFailed
        | E::NoAuth
        | E::InvalidAcl
        | E::BadArguments(_)
        | E::Unimplemented
        | E::MarshallingError
        | E::NoChildrenForEphemerals
        | E::NotReadOnly
        | E::QuotaExceeded
        | E::ReconfigDisabled
        | E::NotEmpty
        | E::NoNode
        | E::NodeExists
        | E::BadVersion => DcsError::rejected(op, e),
        // Connection loss, timeouts, throttling, I/O errors: the outcome is unknown.
        other => DcsError::unreachable(op, other),
    }
}

/// Maps an error of a guarded `multi` that is neither "gone" nor "changed".
fn guard_err(op: &'static str, e: zookeeper_client::Error) -> DcsError {
    match e {
        // The hand-written leader znode has children of its own: deleting
        // it would need a recursive delete of someone else's data.
        zookeeper_client::Error::NotEmpty => {
            DcsError::rejected(op, "the leader znode has children; remove them by hand")
        }
        other => zk_err(op, other),
    }
}

fn holder(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

fn lease(client: &Client) -> LockLease {
    LockLease {
        valid_for: client.session_timeout(),
    }
}

/// The leader znode's identity: changes when it is created anew or its
/// data is set, not when its holder merely renews (renewal writes nothing).
fn identity(stat: Option<&Stat>) -> String {
    stat.map_or_else(
        || ABSENT.to_string(),
        |s| format!("{}:{}", s.czxid, s.mzxid),
    )
}

fn owner_of(stat: &Stat) -> Option<String> {
    (stat.ephemeral_owner != 0).then(|| SessionId(stat.ephemeral_owner).to_string())
}

fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// Whether the leader znode `stat` describes is the lock `lock` was read
/// as: the same write (`mzxid`, unique to it) and the same owner.
fn is_lock_read(stat: &Stat, lock: &LeaderLock) -> bool {
    Version::number(stat.mzxid) == lock.version && owner_of(stat) == lock.owner
}

/// What a `multi` of `ZkDcs::guarded_delete` (and what follows it) failing at
/// one of its operations means.
#[derive(Debug, Clone, PartialEq, Eq)]
enum GuardFailed {
    /// The leader znode is gone.
    Gone,
    /// Another znode is there now: the probe was refused under an
    /// ephemeral one (`NoChildrenForEphemerals`), or the data version moved.
    Changed,
    /// Something else; the error as it came.
    Other(zookeeper_client::Error),
}

impl GuardFailed {
    fn of(e: zookeeper_client::MultiWriteError) -> Self {
        use zookeeper_client::Error as E;
        match zookeeper_client::Error::from(e) {
            E::NoNode => GuardFailed::Gone,
            E::NoChildrenForEphemerals | E::BadVersion | E::NodeExists => GuardFailed::Changed,
            other => GuardFailed::Other(other),
        }
    }
}

/// How long the library waits for a silent connection before declaring it
/// lost (and how often it pings: 3/8 of it). At most `retry_timeout`, so a
/// dead link is noticed, and another ensemble member tried, while a call
/// could still succeed; at most 2/5 of `ttl`, the library's own default.
fn connection_timeout(t: &Timing) -> Duration {
    t.retry_timeout
        .min(t.ttl * 2 / 5)
        .max(Duration::from_millis(100))
}

impl ZkDcs {
    /// A client for node `member_name` of the cluster at `layout`. Does not
    /// connect: the first call does, so this succeeds while ZooKeeper is
    /// down. Fails only on a configuration that cannot be used.
    pub fn new(
        config: ZkConfig,
        layout: KeyLayout,
        member_name: impl Into<String>,
        timing: Timing,
    ) -> Result<ZkDcs, DcsError> {
        let checked = config
            .check()
            .map_err(|e| DcsError::rejected("configure zookeeper", e))?;
        for w in &checked.warnings {
            warn!("{w}");
        }
        let name = member_name.into();
        if name.is_empty() || name.contains('/') {
            return Err(DcsError::rejected(
                "configure zookeeper",
                format!("member name {name:?} cannot be a znode name"),
            ));
        }
        Ok(ZkDcs {
            layout,
            name,
            connect_string: checked.connect_string,
            auth: checked.auth,
            acls: checked.acls,
            warnings: checked.warnings,
            timing: Mutex::new(timing),
            slot: tokio::sync::Mutex::new(None),
            lost: Mutex::new(None),
        })
    }

    /// Settings that were accepted but have no effect (see [`ZkConfig::check`]).
    pub fn config_warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The id of the session in use, if one is open (whatever its state).
    pub async fn session_id(&self) -> Option<i64> {
        self.slot
            .lock()
            .await
            .as_ref()
            .map(|l| l.client.session_id().0)
    }

    fn timing(&self) -> Timing {
        *lock(&self.timing)
    }

    fn path(&self, key: &ClusterKey) -> String {
        self.layout.path(key)
    }

    fn options(&self, mode: CreateMode) -> CreateOptions<'_> {
        if self.acls.is_empty() {
            mode.with_acls(Acls::anyone_all())
        } else {
            mode.with_acls(Acls::new(&self.acls))
        }
    }

    fn note_lost(&self, id: SessionId) {
        *lock(&self.lost) = Some(id);
    }

    fn take_lost(&self) -> Option<SessionId> {
        lock(&self.lost).take()
    }

    /// Opens a new session. Bounded by the caller's timeout.
    async fn connect(&self, op: &'static str) -> Result<Client, DcsError> {
        let timing = self.timing();
        let mut connector = Client::connector()
            .with_session_timeout(timing.ttl)
            .with_connection_timeout(connection_timeout(&timing));
        for (scheme, credential) in &self.auth {
            connector = connector.with_auth(scheme, credential);
        }
        debug!(hosts = %self.connect_string, ttl = ?timing.ttl, "opening a ZooKeeper session");
        match connector.connect(&self.connect_string).await {
            Ok(client) => {
                let negotiated = client.session_timeout();
                info!(
                    member = %self.name,
                    session = %client.session_id(),
                    timeout = ?negotiated,
                    "ZooKeeper session established"
                );
                if negotiated != timing.ttl {
                    warn!(
                        requested = ?timing.ttl,
                        negotiated = ?negotiated,
                        "ZooKeeper negotiated another session timeout than ttl; \
                         leader leases last the negotiated time"
                    );
                }
                Ok(client)
            }
            Err(
                e
                @ (zookeeper_client::Error::AuthFailed | zookeeper_client::Error::BadArguments(_)),
            ) => Err(DcsError::rejected(op, e)),
            Err(e) => Err(DcsError::unreachable(op, e)),
        }
    }

    /// The session to use now: the current one once it is connected, or a
    /// new one if it ended (or none was open). A session that ended is
    /// recorded in `lost`, for the next lock operation to report.
    async fn client(&self, op: &'static str) -> Result<Client, DcsError> {
        for _ in 0..MAX_SESSION_ROUNDS {
            let mut slot = self.slot.lock().await;
            let current = slot.as_ref().map(|l| (l.client.clone(), l.client.state()));
            match current {
                Some((client, SessionState::SyncConnected | SessionState::ConnectedReadOnly)) => {
                    return Ok(client);
                }
                Some((client, SessionState::Disconnected)) => {
                    // Wait for the library to reconnect (or give up) rather
                    // than queue a request that might run much later.
                    let mut watcher = client.state_watcher();
                    drop(slot);
                    if watcher.peek_state() == SessionState::Disconnected {
                        watcher.changed().await;
                    }
                    continue;
                }
                Some((client, state)) => {
                    let id = client.session_id();
                    *slot = None;
                    warn!(
                        member = %self.name,
                        session = %id,
                        %state,
                        "ZooKeeper session ended: the leader and member znodes it held are gone"
                    );
                    self.note_lost(id);
                }
                None => {}
            }
            let client = self.connect(op).await?;
            let monitor = tokio::spawn(monitor(
                client.state_watcher(),
                client.session_id(),
                self.name.clone(),
            ))
            .abort_handle();
            *slot = Some(Live {
                client: client.clone(),
                monitor,
            });
            return Ok(client);
        }
        Err(DcsError::unreachable(
            op,
            "the ZooKeeper connection keeps flapping",
        ))
    }

    /// Drops `client`'s session from the slot if it is still the current one.
    async fn forget(&self, client: &Client) {
        let mut slot = self.slot.lock().await;
        if slot
            .as_ref()
            .is_some_and(|l| l.client.session_id() == client.session_id())
        {
            *slot = None;
        }
    }

    /// Runs `f` on a live session, the whole of it (reconnecting included)
    /// bounded by `retry_timeout`.
    ///
    /// A session found ended during `f` is dropped (and the loss recorded).
    /// If the server refused `f`'s request because of it (`SessionExpired`:
    /// nothing was applied), `f` runs once more on a new session; any other
    /// failure is returned as it is, since whether it was applied is unknown.
    ///
    /// In [`Mode::Lock`], a session that ended and has not been reported yet
    /// fails the call with [`DcsError::SessionExpired`] — once a new session
    /// is up, i.e. once the server can be reached: while it cannot, the call
    /// fails with `Unreachable` like every other, as the trait requires.
    async fn run<T, F, Fut>(&self, op: &'static str, mode: Mode, f: F) -> Result<T, DcsError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, DcsError>>,
    {
        let limit = self.timing().retry_timeout;
        let work = async {
            for _attempt in 0..2 {
                let client = self.client(op).await?;
                if mode == Mode::Lock
                    && let Some(id) = self.take_lost()
                {
                    warn!(
                        member = %self.name,
                        session = %id,
                        op,
                        "reporting the ZooKeeper session that ended as a lost lock"
                    );
                    return Err(DcsError::SessionExpired { what: "session" });
                }
                let result = f(client.clone()).await;
                let refused = matches!(result, Err(DcsError::SessionExpired { .. }));
                if refused || (result.is_err() && client.state().is_terminated()) {
                    warn!(
                        member = %self.name,
                        session = %client.session_id(),
                        op,
                        "ZooKeeper session ended during the call"
                    );
                    self.forget(&client).await;
                    self.note_lost(client.session_id());
                    if refused {
                        continue;
                    }
                }
                return result;
            }
            Err(DcsError::unreachable(op, "ZooKeeper sessions keep ending"))
        };
        match tokio::time::timeout(limit, work).await {
            Ok(result) => result,
            Err(_) => Err(DcsError::unreachable(
                op,
                format!("no answer from ZooKeeper within retry_timeout ({limit:?})"),
            )),
        }
    }

    /// Creates `path`, creating missing parents as persistent znodes.
    async fn create(
        &self,
        client: &Client,
        path: &str,
        data: &[u8],
        mode: CreateMode,
    ) -> Result<Stat, zookeeper_client::Error> {
        let options = self.options(mode);
        match client.create(path, data, &options).await {
            Err(zookeeper_client::Error::NoNode) => {
                client
                    .mkdir(parent_of(path), &self.options(CreateMode::Persistent))
                    .await?;
                client.create(path, data, &options).await.map(|(s, _)| s)
            }
            other => other.map(|(s, _)| s),
        }
    }

    /// Adds to `txn` the deletion of the leader znode at `path`, guarded so
    /// that it deletes only the znode `stat` was read from.
    ///
    /// ZooKeeper conditions a delete only on the data version, which every
    /// new znode starts again at 0, so a lock created between the read and
    /// the `multi` could be deleted in its place. For a *persistent* znode
    /// (one written by hand, the case this is for) the `multi` first
    /// creates and deletes a child of it: ZooKeeper refuses children of an
    /// ephemeral znode, so a lock that replaced it fails the whole `multi`.
    /// For an ephemeral znode no such proof exists: the data version is the
    /// only guard (see the crate docs' limits).
    fn guarded_delete(
        &self,
        txn: &mut zookeeper_client::MultiWriter<'_>,
        path: &str,
        stat: &Stat,
    ) -> Result<(), zookeeper_client::Error> {
        if stat.ephemeral_owner == 0 {
            let probe = format!("{path}/{PROBE}");
            txn.add_create(&probe, &[], &self.options(CreateMode::Persistent))?;
            txn.add_delete(&probe, None)?;
        }
        txn.add_delete(path, Some(stat.version))
    }

    async fn load_with(&self, client: &Client) -> Result<Cluster, DcsError> {
        const OP: &str = "load";
        let base = self.layout.base();
        let members_dir = format!("{}members", self.layout.prefix());
        let (top, members) = futures::join!(
            client.list_children(base),
            client.list_children(&members_dir)
        );
        let top = match top {
            Ok(children) => children,
            Err(zookeeper_client::Error::NoNode) => {
                return Ok(Cluster::empty(Version::token(ABSENT)));
            }
            Err(e) => return Err(zk_err(OP, e)),
        };
        let members = match members {
            Ok(children) => children,
            Err(zookeeper_client::Error::NoNode) => Vec::new(),
            Err(e) => return Err(zk_err(OP, e)),
        };
        let mut keys: Vec<ClusterKey> = top
            .iter()
            .filter_map(|child| match child.as_str() {
                "optime" => Some(ClusterKey::LegacyOptime),
                other => ClusterKey::parse(other),
            })
            .collect();
        keys.extend(
            members
                .iter()
                .filter_map(|m| ClusterKey::parse(&format!("members/{m}"))),
        );
        // Requests go out as the futures are created: one round trip.
        let reads = keys.iter().map(|k| client.get_data(&self.path(k)));
        let results = join_all(reads).await;
        let mut cursor = Version::token(ABSENT);
        let mut entries = Vec::with_capacity(keys.len());
        for (key, result) in keys.into_iter().zip(results) {
            let (value, stat) = match result {
                Ok(found) => found,
                // Deleted since it was listed (or `optime` has no `leader`).
                Err(zookeeper_client::Error::NoNode) => continue,
                Err(e) => return Err(zk_err(OP, e)),
            };
            // The leader's version is its `mzxid`, unique to each write:
            // the data version starts again at 0 with every new lock, so it
            // could not tell one lock of ours from a later one.
            let version = if key == ClusterKey::Leader {
                cursor = Version::token(identity(Some(&stat)));
                Version::number(stat.mzxid)
            } else {
                Version::number(stat.version.into())
            };
            entries.push(RawEntry {
                key,
                value,
                version,
                owner: owner_of(&stat),
            });
        }
        Ok(Cluster::from_entries(entries, cursor))
    }

    /// Reads `leader` after a `sync`, so the answer is not a lagging
    /// follower's. `None` when there is no leader znode.
    async fn read_leader_synced(
        client: &Client,
        path: &str,
        op: &'static str,
    ) -> Result<Option<(Vec<u8>, Stat)>, DcsError> {
        // Both requests are sent at once; the server answers them in order.
        let (synced, read) = futures::join!(client.sync(path), client.get_data(path));
        match synced {
            Ok(()) | Err(zookeeper_client::Error::NoNode) => {}
            Err(e) => return Err(zk_err(op, e)),
        }
        match read {
            Ok(found) => Ok(Some(found)),
            Err(zookeeper_client::Error::NoNode) => Ok(None),
            Err(e) => Err(zk_err(op, e)),
        }
    }

    async fn current_holder(
        client: &Client,
        path: &str,
        op: &'static str,
    ) -> Result<Option<String>, DcsError> {
        match client.get_data(path).await {
            Ok((data, _)) => Ok(Some(holder(&data))),
            Err(zookeeper_client::Error::NoNode) => Ok(None),
            Err(e) => Err(zk_err(op, e)),
        }
    }
}

/// Logs the session's state changes as they happen, so an expiry shows in
/// the log when it occurs, not only when the next call notices it.
async fn monitor(mut watcher: StateWatcher, session: SessionId, member: String) {
    // Ends at the first terminal state (or when aborted with its session).
    loop {
        let state = watcher.changed().await;
        match state {
            SessionState::Disconnected => warn!(
                %member,
                %session,
                "ZooKeeper connection lost; reconnecting while the session lives"
            ),
            SessionState::SyncConnected | SessionState::ConnectedReadOnly => info!(
                %member,
                %session,
                "ZooKeeper connection re-established; session still alive"
            ),
            SessionState::Expired => {
                warn!(
                    %member,
                    %session,
                    "ZooKeeper session expired: its leader and member znodes are gone"
                );
                return;
            }
            SessionState::AuthFailed => {
                error!(%member, %session, "ZooKeeper authentication failed; session closed");
                return;
            }
            SessionState::Closed => {
                debug!(%member, %session, "ZooKeeper session closed");
                return;
            }
        }
    }
}

/// Every znode under (and including) `root`, parents before children.
async fn list_tree(client: &Client, root: &str) -> Result<Vec<String>, zookeeper_client::Error> {
    let mut all = vec![root.to_string()];
    let mut level = vec![root.to_string()];
    while !level.is_empty() && all.len() < MAX_TREE_NODES {
        let listings = join_all(level.iter().map(|p| client.list_children(p))).await;
        let mut next = Vec::new();
        for (parent, listing) in level.iter().zip(listings) {
            match listing {
                Ok(children) => next.extend(children.iter().map(|c| {
                    if parent.ends_with('/') {
                        format!("{parent}{c}")
                    } else {
                        format!("{parent}/{c}")
                    }
                })),
                Err(zookeeper_client::Error::NoNode) => {}
                Err(e) => return Err(e),
            }
        }
        all.extend(next.iter().cloned());
        level = next;
    }
    Ok(all)
}

#[async_trait]
impl Dcs for ZkDcs {
    fn member_name(&self) -> &str {
        &self.name
    }

    fn layout(&self) -> &KeyLayout {
        &self.layout
    }

    fn set_timing(&self, timing: Timing) {
        let mut current = lock(&self.timing);
        if current.ttl != timing.ttl {
            info!(
                old = ?current.ttl,
                new = ?timing.ttl,
                "ttl changed: applies from the next ZooKeeper session (replacing the current \
                 one would drop our leader and member znodes)"
            );
        }
        *current = timing;
    }

    async fn load(&self) -> Result<Cluster, DcsError> {
        self.run("load", Mode::Plain, |client| async move {
            self.load_with(&client).await
        })
        .await
    }

    async fn acquire_leader(&self) -> Result<LockLease, DcsError> {
        const OP: &str = "acquire_leader";
        let path = self.path(&ClusterKey::Leader);
        let path = path.as_str();
        let result = self
            .run(OP, Mode::Plain, |client| async move {
                for _ in 0..MAX_RACE_RETRIES {
                    match self
                        .create(&client, path, self.name.as_bytes(), CreateMode::Ephemeral)
                        .await
                    {
                        Ok(_) => return Ok(lease(&client)),
                        Err(zookeeper_client::Error::NodeExists) => {
                            match Self::current_holder(&client, path, OP).await? {
                                Some(h) => return Err(DcsError::not_owner("leader", Some(h))),
                                // Gone meanwhile: try again.
                                None => continue,
                            }
                        }
                        Err(e) => return Err(zk_err(OP, e)),
                    }
                }
                Err(DcsError::not_owner("leader", None))
            })
            .await;
        match &result {
            Ok(l) => {
                // A lock held in this session supersedes any earlier loss.
                self.take_lost();
                info!(member = %self.name, valid_for = ?l.valid_for, "acquired the leader lock");
            }
            Err(e) => debug!(member = %self.name, "acquire_leader: {e}"),
        }
        result
    }

    async fn renew_leader(&self) -> Result<LockLease, DcsError> {
        const OP: &str = "renew_leader";
        let path = self.path(&ClusterKey::Leader);
        let path = path.as_str();
        let result = self
            .run(OP, Mode::Lock, |client| async move {
                match Self::read_leader_synced(&client, path, OP).await? {
                    None => Err(DcsError::not_owner("leader", None)),
                    Some((data, stat))
                        if data == self.name.as_bytes()
                            && stat.ephemeral_owner == client.session_id().0 =>
                    {
                        Ok(lease(&client))
                    }
                    Some((data, _)) => Err(DcsError::not_owner("leader", Some(holder(&data)))),
                }
            })
            .await;
        if let Err(e) = &result
            && !e.is_unreachable()
        {
            warn!(member = %self.name, "renew_leader: {e}");
        }
        result
    }

    async fn release_leader(&self) -> Result<(), DcsError> {
        const OP: &str = "release_leader";
        let path = self.path(&ClusterKey::Leader);
        let path = path.as_str();
        let result = self
            .run(OP, Mode::Lock, |client| async move {
                match Self::read_leader_synced(&client, path, OP).await? {
                    None => Err(DcsError::not_owner("leader", None)),
                    Some((data, stat))
                        if data == self.name.as_bytes()
                            && stat.ephemeral_owner == client.session_id().0 =>
                    {
                        match client.delete(path, Some(stat.version)).await {
                            Ok(()) => Ok(()),
                            Err(
                                zookeeper_client::Error::NoNode
                                | zookeeper_client::Error::BadVersion,
                            ) => Err(DcsError::not_owner(
                                "leader",
                                Self::current_holder(&client, path, OP).await?,
                            )),
                            Err(e) => Err(zk_err(OP, e)),
                        }
                    }
                    Some((data, _)) => Err(DcsError::not_owner("leader", Some(holder(&data)))),
                }
            })
            .await;
        if result.is_ok() {
            info!(member = %self.name, "released the leader lock");
        }
        result
    }

    async fn release_leader_at(&self, lock: &LeaderLock) -> Result<(), DcsError> {
        const OP: &str = "release_leader";
        if lock.name != self.name {
            return Err(DcsError::not_owner("leader", Some(lock.name.clone())));
        }
        let path = self.path(&ClusterKey::Leader);
        let path = path.as_str();
        let result = self
            .run(OP, Mode::Plain, |client| async move {
                match Self::read_leader_synced(&client, path, OP).await? {
                    None => Err(DcsError::not_owner("leader", None)),
                    Some((data, _)) if data != self.name.as_bytes() => {
                        Err(DcsError::not_owner("leader", Some(holder(&data))))
                    }
                    // Same name, but another znode (another session, or
                    // written since): not the lock we were asked to release.
                    Some((_, stat))
                        if Version::number(stat.mzxid) != lock.version
                            || owner_of(&stat) != lock.owner =>
                    {
                        Err(DcsError::conflict("leader"))
                    }
                    // Any session may delete an ephemeral znode. The delete
                    // can only be conditioned on the data version, which a
                    // new znode starts again at 0: a new lock of ours would
                    // have to be created between the read above and this
                    // delete, after the session we just saw holding it
                    // expired; the guard only calls this while that
                    // session's promised lifetime is still ahead.
                    Some((_, stat)) => match client.delete(path, Some(stat.version)).await {
                        Ok(()) => Ok(()),
                        Err(zookeeper_client::Error::NoNode) => {
                            Err(DcsError::not_owner("leader", None))
                        }
                        Err(zookeeper_client::Error::BadVersion) => {
                            Err(DcsError::conflict("leader"))
                        }
                        Err(e) => Err(zk_err(OP, e)),
                    },
                }
            })
            .await;
        if result.is_ok() {
            info!(member = %self.name, "released the leader lock on behalf of this member");
        }
        result
    }

    /// Every lock is an ephemeral znode in a session; a persistent `leader`
    /// znode was created by hand (zkCli) or by a tool.
    fn locks_have_owners(&self) -> bool {
        true
    }

    async fn take_leader_from(&self, lock: &LeaderLock) -> Result<LockLease, DcsError> {
        const OP: &str = "take_leader_from";
        let path = self.path(&ClusterKey::Leader);
        let path = path.as_str();
        let result = self
            .run(OP, Mode::Plain, |client| async move {
                let Some((_, stat)) = Self::read_leader_synced(&client, path, OP).await? else {
                    return Err(DcsError::conflict("leader"));
                };
                if !is_lock_read(&stat, lock) {
                    return Err(DcsError::conflict("leader"));
                }
                let mut txn = client.new_multi_writer();
                self.guarded_delete(&mut txn, path, &stat)
                    .map_err(|e| zk_err(OP, e))?;
                txn.add_create(
                    path,
                    self.name.as_bytes(),
                    &self.options(CreateMode::Ephemeral),
                )
                .map_err(|e| zk_err(OP, e))?;
                match txn.commit().await.map_err(GuardFailed::of) {
                    Ok(_) => Ok(lease(&client)),
                    Err(GuardFailed::Gone | GuardFailed::Changed) => {
                        Err(DcsError::conflict("leader"))
                    }
                    Err(GuardFailed::Other(e)) => Err(guard_err(OP, e)),
                }
            })
            .await;
        match &result {
            Ok(l) => {
                // A lock held in this session supersedes any earlier loss.
                self.take_lost();
                info!(
                    member = %self.name,
                    replaced = %lock.name,
                    replaced_owner = ?lock.owner,
                    valid_for = ?l.valid_for,
                    "took the leader znode over by compare-and-set"
                );
            }
            Err(e) => debug!(member = %self.name, "take_leader_from: {e}"),
        }
        result
    }

    async fn remove_leader_at(&self, lock: &LeaderLock) -> Result<(), DcsError> {
        const OP: &str = "remove_leader_at";
        let path = self.path(&ClusterKey::Leader);
        let path = path.as_str();
        let result = self
            .run(OP, Mode::Plain, |client| async move {
                let Some((_, stat)) = Self::read_leader_synced(&client, path, OP).await? else {
                    return Ok(false);
                };
                if !is_lock_read(&stat, lock) {
                    return Err(DcsError::conflict("leader"));
                }
                let mut txn = client.new_multi_writer();
                self.guarded_delete(&mut txn, path, &stat)
                    .map_err(|e| zk_err(OP, e))?;
                match txn.commit().await.map_err(GuardFailed::of) {
                    Ok(_) => Ok(true),
                    Err(GuardFailed::Gone) => Ok(false),
                    Err(GuardFailed::Changed) => Err(DcsError::conflict("leader")),
                    Err(GuardFailed::Other(e)) => Err(guard_err(OP, e)),
                }
            })
            .await;
        match &result {
            Ok(true) => info!(
                member = %self.name,
                holder = %lock.name,
                owner = ?lock.owner,
                "removed the leader znode by compare-and-set"
            ),
            Ok(false) => debug!(member = %self.name, "leader znode already gone"),
            Err(e) => debug!(member = %self.name, "remove_leader_at: {e}"),
        }
        result.map(|_| ())
    }

    async fn touch_member(&self, data: &MemberData) -> Result<(), DcsError> {
        const OP: &str = "touch_member";
        let value = to_json(data)?;
        let value = value.as_bytes();
        let path = self.path(&ClusterKey::Member(self.name.clone()));
        let path = path.as_str();
        self.run(OP, Mode::Plain, |client| async move {
            let ours = client.session_id().0;
            for _ in 0..MAX_RACE_RETRIES {
                match client.check_stat(path).await.map_err(|e| zk_err(OP, e))? {
                    None => match self
                        .create(&client, path, value, CreateMode::Ephemeral)
                        .await
                    {
                        Ok(_) => return Ok(()),
                        Err(zookeeper_client::Error::NodeExists) => continue,
                        Err(e) => return Err(zk_err(OP, e)),
                    },
                    Some(stat) if stat.ephemeral_owner == ours => {
                        match client.set_data(path, value, Some(stat.version)).await {
                            Ok(_) => return Ok(()),
                            Err(
                                zookeeper_client::Error::NoNode
                                | zookeeper_client::Error::BadVersion,
                            ) => continue,
                            Err(e) => return Err(zk_err(OP, e)),
                        }
                    }
                    Some(stat) => {
                        // Left by an earlier session of ours (or written by
                        // hand): it would vanish with that session, or never.
                        info!(
                            member = %self.name,
                            owner = ?owner_of(&stat),
                            "member znode is not in our session; recreating it"
                        );
                        match client.delete(path, Some(stat.version)).await {
                            Ok(())
                            | Err(
                                zookeeper_client::Error::NoNode
                                | zookeeper_client::Error::BadVersion,
                            ) => continue,
                            Err(e) => return Err(zk_err(OP, e)),
                        }
                    }
                }
            }
            Err(DcsError::conflict(format!("members/{}", self.name)))
        })
        .await
    }

    async fn write(
        &self,
        key: SharedKey,
        value: &str,
        expect: Expect,
    ) -> Result<Version, DcsError> {
        const OP: &str = "write";
        let path = self.path(&key.cluster_key());
        let path = path.as_str();
        let value = value.as_bytes();
        let expect = &expect;
        self.run(OP, Mode::Plain, |client| async move {
            use zookeeper_client::Error as E;
            match expect {
                Expect::Absent => {
                    match self
                        .create(&client, path, value, CreateMode::Persistent)
                        .await
                    {
                        Ok(stat) => Ok(Version::number(stat.version.into())),
                        Err(E::NodeExists) => Err(DcsError::conflict(key)),
                        Err(e) => Err(zk_err(OP, e)),
                    }
                }
                Expect::Version(v) => {
                    let Some(version) = v.as_number().and_then(|n| i32::try_from(n).ok()) else {
                        // Not a znode version: it cannot match.
                        return Err(DcsError::conflict(key));
                    };
                    match client.set_data(path, value, Some(version)).await {
                        Ok(stat) => Ok(Version::number(stat.version.into())),
                        Err(E::BadVersion | E::NoNode) => Err(DcsError::conflict(key)),
                        Err(e) => Err(zk_err(OP, e)),
                    }
                }
                Expect::Any => {
                    for _ in 0..MAX_RACE_RETRIES {
                        match client.set_data(path, value, None).await {
                            Ok(stat) => return Ok(Version::number(stat.version.into())),
                            Err(E::NoNode) => {}
                            Err(e) => return Err(zk_err(OP, e)),
                        }
                        match self
                            .create(&client, path, value, CreateMode::Persistent)
                            .await
                        {
                            Ok(stat) => return Ok(Version::number(stat.version.into())),
                            Err(E::NodeExists) => continue,
                            Err(e) => return Err(zk_err(OP, e)),
                        }
                    }
                    Err(DcsError::conflict(key))
                }
            }
        })
        .await
    }

    async fn delete(&self, key: SharedKey, expect: Expect) -> Result<(), DcsError> {
        const OP: &str = "delete";
        let path = self.path(&key.cluster_key());
        let path = path.as_str();
        let expect = &expect;
        self.run(OP, Mode::Plain, |client| async move {
            use zookeeper_client::Error as E;
            match expect {
                Expect::Any => match client.delete(path, None).await {
                    Ok(()) | Err(E::NoNode) => Ok(()),
                    Err(e) => Err(zk_err(OP, e)),
                },
                Expect::Absent => match client.check_stat(path).await {
                    Ok(None) => Ok(()),
                    Ok(Some(_)) => Err(DcsError::conflict(key)),
                    Err(e) => Err(zk_err(OP, e)),
                },
                Expect::Version(v) => {
                    let Some(version) = v.as_number().and_then(|n| i32::try_from(n).ok()) else {
                        return Err(DcsError::conflict(key));
                    };
                    match client.delete(path, Some(version)).await {
                        Ok(()) => Ok(()),
                        Err(E::BadVersion | E::NoNode) => Err(DcsError::conflict(key)),
                        Err(e) => Err(zk_err(OP, e)),
                    }
                }
            }
        })
        .await
    }

    async fn delete_cluster(&self) -> Result<(), DcsError> {
        const OP: &str = "delete_cluster";
        let base = self.layout.base();
        let result = self
            .run(OP, Mode::Plain, |client| async move {
                for _ in 0..MAX_RACE_RETRIES {
                    let tree = list_tree(&client, base).await.map_err(|e| zk_err(OP, e))?;
                    // Children before parents; sent at once, applied in order.
                    let deletes = join_all(tree.iter().rev().map(|p| client.delete(p, None))).await;
                    let mut raced = false;
                    for r in deletes {
                        match r {
                            Ok(()) | Err(zookeeper_client::Error::NoNode) => {}
                            // A znode was added meanwhile (a member came back): go again.
                            Err(zookeeper_client::Error::NotEmpty) => raced = true,
                            Err(e) => return Err(zk_err(OP, e)),
                        }
                    }
                    if !raced {
                        return Ok(());
                    }
                }
                Err(DcsError::conflict(base))
            })
            .await;
        if result.is_ok() {
            info!(base, "deleted the cluster's znodes");
        }
        result
    }

    async fn watch_leader(
        &self,
        cursor: &Version,
        timeout: Duration,
    ) -> Result<WatchOutcome, DcsError> {
        const OP: &str = "watch_leader";
        let deadline = Instant::now() + timeout;
        let path = self.path(&ClusterKey::Leader);
        let path = path.as_str();
        // A cursor that is not one of ours never matches: report a change.
        let expected = cursor.as_token();
        for _ in 0..MAX_WATCH_ROUNDS {
            let (stat, watcher) = self
                .run(OP, Mode::Plain, |client| async move {
                    client
                        .check_and_watch_stat(path)
                        .await
                        .map_err(|e| zk_err(OP, e))
                })
                .await?;
            if expected != Some(identity(stat.as_ref()).as_str()) {
                return Ok(WatchOutcome::Changed);
            }
            match tokio::time::timeout_at(deadline, watcher.changed()).await {
                Err(_) => return Ok(WatchOutcome::TimedOut),
                Ok(event) if event.event_type == EventType::Session => {
                    // The session ended under the watch; look again on a new one.
                    debug!(state = %event.session_state, "leader watch interrupted by the session");
                    if Instant::now() >= deadline {
                        return Ok(WatchOutcome::TimedOut);
                    }
                }
                Ok(event) => {
                    debug!(event = %event.event_type, "leader znode changed");
                    return Ok(WatchOutcome::Changed);
                }
            }
        }
        Err(DcsError::unreachable(
            OP,
            "the ZooKeeper session keeps ending during the watch",
        ))
    }
}
