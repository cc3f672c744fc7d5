//! Synchronous replication (`synchronous_mode`): which standbys the leader
//! names in PostgreSQL's `synchronous_standby_names` and in the DCS `sync`
//! key, in which order it changes the two, and who may take a free lock.
//!
//! The invariant, kept at every step: **every standby the `sync` key names
//! holds every commit PostgreSQL acknowledged** (for as long as the key
//! names it). Only those standbys (and the key's leader) may then take a
//! free lock ([`promotion_problem`]), so a failover never loses an
//! acknowledged commit. [`SyncKeeper`] keeps it by:
//! - naming in `synchronous_standby_names` exactly the standbys it wants,
//!   all of them required (`FIRST k (k names)`): while a standby is listed,
//!   no commit is acknowledged without it;
//! - removing a standby from the key *before* it leaves
//!   `synchronous_standby_names` (shrink first);
//! - adding one to the key only *after* PostgreSQL reports it `sync` under
//!   the current `synchronous_standby_names` and it has flushed WAL up to
//!   the primary's position when that value took effect (so it also holds
//!   the commits acknowledged before it was listed). Patroni keeps a
//!   standby in the key while it leaves `synchronous_standby_names` until
//!   the next cycle; pgha does not.
//!
//! Strict mode never names `'*'` (which lets any walsender, a
//! `pg_receivewal` or Barman, acknowledge commits): without an eligible
//! standby it lists the cluster's members, so commits wait for one of them.
//!
//! Pure: the shell observes (`pg_stat_replication`, the value PostgreSQL
//! runs with, the key), asks [`SyncKeeper::next`] for one step, carries it
//! out, observes again.

use std::collections::BTreeMap;

use super::observation::PeerStatus;
use crate::model::{Cluster, ClusterKey, Expect, SyncState, Versioned};

pub mod quorum;

/// `synchronous_mode` (with `synchronous_mode_strict`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// Asynchronous replication (`synchronous_mode: false`).
    Off,
    /// `synchronous_mode: true`. `strict`: commits never go asynchronous;
    /// without an eligible standby they wait.
    On { strict: bool },
    /// `synchronous_mode: quorum` ([`quorum`]): `ANY k (...)`, and a free
    /// lock goes to a node that gathers the key's quorum of votes.
    Quorum { strict: bool },
}

impl SyncMode {
    pub fn is_on(self) -> bool {
        self != SyncMode::Off
    }

    /// `synchronous_mode_strict`.
    pub fn is_strict(self) -> bool {
        matches!(
            self,
            SyncMode::On { strict: true } | SyncMode::Quorum { strict: true }
        )
    }
}

/// The settings that shape synchronous replication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncSettings {
    pub mode: SyncMode,
    /// `synchronous_node_count` (at least 1).
    pub node_count: usize,
    /// `maximum_lag_on_syncnode`, bytes: a standby further behind the most
    /// advanced one is swapped out; `<= 0`: never.
    pub maximum_lag_on_syncnode: i64,
}

/// Whether the `sync` key has been taken by a leader in synchronous mode
/// (Patroni's "synchronous mode is active"): only then does it restrict
/// who may take a free lock.
pub fn is_active(mode: SyncMode, cluster: &Cluster) -> bool {
    mode.is_on()
        && cluster
            .sync
            .as_ref()
            .is_some_and(|s| s.value.leader.as_deref().is_some_and(|l| !l.is_empty()))
}

/// Whether `name` may hold every acknowledged commit: the key's leader or
/// a standby it names.
pub fn holds_every_commit(sync: &SyncState, name: &str) -> bool {
    sync.leader
        .as_deref()
        .is_some_and(|l| l.eq_ignore_ascii_case(name))
        || sync.is_standby(name)
}

/// Why `me` may not take a free lock in synchronous mode, or `None` if it
/// may: only the `sync` key's leader and the standbys it names hold every
/// acknowledged commit. A key that cannot be read means the safe set is
/// unknown: nobody races (the cluster waits rather than guesses).
pub fn promotion_problem(mode: SyncMode, cluster: &Cluster, me: &str) -> Option<String> {
    if !matches!(mode, SyncMode::On { .. }) {
        return None;
    }
    if let Some(p) = cluster.problem(&ClusterKey::Sync) {
        return Some(format!(
            "synchronous_mode: the sync key is unreadable ({}), so who holds every acknowledged \
             commit is unknown; waiting",
            p.reason
        ));
    }
    if !is_active(mode, cluster) {
        return None;
    }
    let sync = &cluster.sync.as_ref()?.value;
    if holds_every_commit(sync, me) {
        return None;
    }
    let standbys = sync.standbys();
    Some(format!(
        "synchronous_mode: only {} and the synchronous standbys the sync key names ({}) are known \
         to hold every acknowledged commit, and I am not one of them",
        sync.leader.as_deref().unwrap_or_default(),
        if standbys.is_empty() {
            "none".to_string()
        } else {
            standbys.join(", ")
        }
    ))
}

/// Why `me`, with WAL position `mine`, may not race for a free lock in
/// synchronous mode (`peers`: what the other members' REST APIs said), or
/// `None`: in `true` mode, [`promotion_problem`]; in quorum mode, the
/// votes of [`quorum::vote_problem`]. An unreadable key stops everyone.
pub fn race_problem(
    mode: SyncMode,
    cluster: &Cluster,
    me: &str,
    mine: u64,
    peers: &[PeerStatus],
) -> Option<String> {
    match mode {
        SyncMode::Off => None,
        SyncMode::On { .. } => promotion_problem(mode, cluster, me),
        SyncMode::Quorum { .. } => {
            if let Some(p) = cluster.problem(&ClusterKey::Sync) {
                return Some(format!(
                    "quorum commit: the sync key is unreadable ({}), so who holds every \
                     acknowledged commit is unknown; waiting",
                    p.reason
                ));
            }
            if !is_active(mode, cluster) {
                return None;
            }
            quorum::vote_problem(&cluster.sync.as_ref()?.value, me, mine, peers)
        }
    }
}

/// Whether a peer's WAL position can hold `me` back in the race: in a
/// synchronous mode only the key's leader and standbys (voters) count:
/// the others may miss acknowledged commits and cannot win, and what they
/// have beyond the key's members (an old primary's last commits) was
/// never acknowledged; otherwise every member.
pub fn peer_counts(mode: SyncMode, cluster: &Cluster, peer: &str) -> bool {
    !(mode.is_on()
        && is_active(mode, cluster)
        && cluster
            .sync
            .as_ref()
            .is_some_and(|k| !holds_every_commit(&k.value, peer)))
}

/// For a cluster without a leader in synchronous mode: who may take over,
/// one line for `pghactl list` and `GET /patroni` (the cluster waits for
/// one of them rather than guess). `None` when not in synchronous mode or
/// a leader runs.
pub fn leaderless_note(cluster: &Cluster) -> Option<String> {
    let mode = cluster.dynamic_config().sync_settings().mode;
    if cluster.leader.is_some() || !mode.is_on() {
        return None;
    }
    if let Some(p) = cluster.problem(&ClusterKey::Sync) {
        return Some(format!(
            "no leader, and the sync key is unreadable ({}): no member may take over until it is repaired",
            p.reason
        ));
    }
    if !is_active(mode, cluster) {
        return None;
    }
    let key = &cluster.sync.as_ref()?.value;
    let standbys: Vec<String> = key.standbys().iter().map(|s| s.to_string()).collect();
    Some(match mode {
        SyncMode::Quorum { .. } => format!(
            "no leader: quorum commit: a member takes over with {} vote(s) from the voters ({}), \
             or {} itself",
            key.quorum.unwrap_or(0),
            list(&standbys),
            key.leader.as_deref().unwrap_or_default()
        ),
        _ => format!(
            "no leader: synchronous_mode: only {} and the synchronous standbys ({}) hold every \
             acknowledged commit; waiting for one of them to take over",
            key.leader.as_deref().unwrap_or_default(),
            list(&standbys)
        ),
    })
}

/// How `synchronous_standby_names` counts its standbys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `FIRST k (...)` (or a bare list): the first `k` connected, by order.
    First,
    /// `ANY k (...)`: any `k` of them (quorum commit).
    Any,
}

/// A value of `synchronous_standby_names`, parsed as PostgreSQL does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StandbyNames {
    pub method: Method,
    pub num: usize,
    /// The names, unquoted (`*` for the wildcard).
    pub names: Vec<String>,
}

impl StandbyNames {
    /// No synchronous standby: commits are acknowledged locally.
    pub fn none() -> Self {
        StandbyNames {
            method: Method::First,
            num: 0,
            names: Vec::new(),
        }
    }

    /// All of `names` required.
    pub fn all_of(names: &[String]) -> Self {
        let mut names = names.to_vec();
        names.sort_by_key(|n| n.to_lowercase());
        StandbyNames {
            method: Method::First,
            num: names.len(),
            names,
        }
    }

    /// `FIRST num (names)`: the first `num` of them that are connected.
    pub fn first(num: usize, names: &[String]) -> Self {
        StandbyNames {
            method: Method::First,
            num,
            names: names.to_vec(),
        }
    }

    /// Parses a value as PostgreSQL reads it; `None` when it does not.
    pub fn parse(text: &str) -> Option<Self> {
        let tokens = tokenize(text)?;
        if tokens.is_empty() {
            return Some(Self::none());
        }
        let (method, num, rest) = match tokens.as_slice() {
            [Token::Word(w), Token::Word(n), Token::Open, rest @ ..]
                if (w.eq_ignore_ascii_case("first") || w.eq_ignore_ascii_case("any"))
                    && n.parse::<usize>().is_ok() =>
            {
                let method = if w.eq_ignore_ascii_case("any") {
                    Method::Any
                } else {
                    Method::First
                };
                (method, n.parse().ok()?, close(rest)?)
            }
            [Token::Word(n), Token::Open, rest @ ..] if n.parse::<usize>().is_ok() => {
                (Method::First, n.parse().ok()?, close(rest)?)
            }
            list => (Method::First, 1, list),
        };
        let mut names = Vec::new();
        let mut expect_name = true;
        for t in rest {
            match (t, expect_name) {
                (Token::Word(w) | Token::Quoted(w), true) => {
                    names.push(w.clone());
                    expect_name = false;
                }
                (Token::Comma, false) => expect_name = true,
                _ => return None,
            }
        }
        if expect_name || num == 0 {
            return None;
        }
        Some(StandbyNames { method, num, names })
    }

    /// Whether commits wait for nobody.
    pub fn is_none(&self) -> bool {
        self.names.is_empty()
    }

    /// Whether it names the wildcard `*`, which any walsender matches.
    pub fn has_wildcard(&self) -> bool {
        self.names.iter().any(|n| n == "*")
    }

    /// Every listed standby is required for each commit (`FIRST k` with
    /// `k` names, no wildcard): then each one that PostgreSQL reports
    /// `sync` has every commit acknowledged since it was listed.
    pub fn requires_all(&self) -> bool {
        self.method == Method::First && self.num == self.names.len() && !self.has_wildcard()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }

    /// The value to write: `""`, `"a"`, or `FIRST k ("a","b")`.
    pub fn render(&self) -> String {
        let quoted: Vec<String> = self.names.iter().map(|n| quote(n)).collect();
        match quoted.as_slice() {
            [] => String::new(),
            [one] if self.num == 1 && self.method == Method::First => one.clone(),
            many => format!(
                "{} {} ({})",
                match self.method {
                    Method::First => "FIRST",
                    Method::Any => "ANY",
                },
                self.num,
                many.join(",")
            ),
        }
    }
}

/// A standby name double-quoted (PostgreSQL folds unquoted names to lower
/// case for this setting's matching only case-insensitively anyway, but a
/// quoted name keeps any character a member name may have).
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Open,
    Close,
    Comma,
}

fn close(rest: &[Token]) -> Option<&[Token]> {
    match rest.split_last() {
        Some((Token::Close, inner)) => Some(inner),
        _ => None,
    }
}

fn tokenize(text: &str) -> Option<Vec<Token>> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' => {
                chars.next();
                out.push(Token::Open);
            }
            ')' => {
                chars.next();
                out.push(Token::Close);
            }
            ',' => {
                chars.next();
                out.push(Token::Comma);
            }
            '"' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next()? {
                        '"' if chars.peek() == Some(&'"') => {
                            chars.next();
                            s.push('"');
                        }
                        '"' => break,
                        other => s.push(other),
                    }
                }
                out.push(Token::Quoted(s));
            }
            _ => {
                let mut s = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || "(),\"".contains(c) {
                        break;
                    }
                    s.push(c);
                    chars.next();
                }
                out.push(Token::Word(s));
            }
        }
    }
    Some(out)
}

/// One row of the primary's `pg_stat_replication`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Walsender {
    /// `application_name`: the member name for pgha's and Patroni's replicas.
    pub name: String,
    /// `sync_state`: `sync`, `potential`, `quorum`, `async`.
    pub sync_state: String,
    /// `flush_lsn`: `None` until the standby has reported one.
    pub flush_lsn: Option<u64>,
}

/// A member as the sync choice sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncMember {
    pub name: String,
    /// Its member key says PostgreSQL runs.
    pub running: bool,
    /// `nosync` (or `sync_priority <= 0`): never a synchronous standby.
    pub nosync: bool,
    pub nofailover: bool,
    /// `sync_priority`: higher is preferred.
    pub sync_priority: i64,
}

/// What the leader observed this step.
#[derive(Clone, Debug)]
pub struct SyncView<'a> {
    pub me: &'a str,
    pub settings: SyncSettings,
    /// The cluster's members (this node included or not).
    pub members: &'a [SyncMember],
    pub walsenders: &'a [Walsender],
    /// The `synchronous_standby_names` PostgreSQL runs with (`SHOW`).
    pub running_names: &'a str,
    /// Whether pgha's value of `synchronous_standby_names` is in force (its
    /// file exists): when synchronous mode is off it is removed, so the
    /// user's own value applies again.
    pub managing_names: bool,
    /// The `sync` key; `None` when absent.
    pub key: Option<&'a SyncState>,
    /// The primary's current WAL position.
    pub primary_lsn: Option<u64>,
}

/// One step towards the wanted state. The shell carries it out and asks
/// again (at most a handful of steps per cycle).
#[derive(Clone, Debug, PartialEq)]
pub enum SyncStep {
    /// Write the `sync` key (compare-and-set on the version read).
    WriteKey(SyncState),
    /// Delete the `sync` key (synchronous mode was turned off).
    DeleteKey,
    /// Make PostgreSQL run with this `synchronous_standby_names` (write
    /// pgha's value and reload).
    SetNames(String),
    /// Stop managing `synchronous_standby_names` (remove pgha's value, so
    /// the user's own applies, and reload).
    ReleaseNames,
    /// Nothing to change until a chosen standby catches up (it is listed,
    /// but not yet known to hold every acknowledged commit): worth looking
    /// again within a moment.
    Waiting,
    /// Nothing to change.
    Settled,
}

/// The leader's memory for synchronous replication: since when the
/// current `synchronous_standby_names` is in force, and which of its
/// standbys are known to have caught up since.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncKeeper {
    /// The running value and the primary's WAL position when it was first
    /// seen in force: a standby listed in it holds every acknowledged
    /// commit once it has flushed up to there.
    baseline: Option<(String, u64)>,
    /// Lower-cased names of the listed standbys that caught up.
    caught_up: BTreeMap<String, ()>,
    /// How commits may have been acknowledged before the running value
    /// took effect, until enough of its standbys caught up (quorum mode;
    /// see [`quorum`]).
    pending: Vec<quorum::AckRule>,
}

impl SyncKeeper {
    /// Forgets everything (the node is no longer a primary leader).
    pub fn reset(&mut self) {
        *self = SyncKeeper::default();
    }

    /// The next step, and one line saying why.
    pub fn next(&mut self, v: &SyncView<'_>) -> (SyncStep, String) {
        let strict = match v.settings.mode {
            SyncMode::On { strict } => strict,
            SyncMode::Quorum { strict } => return self.next_quorum(v, strict),
            SyncMode::Off => return self.next_off(v),
        };
        let running = StandbyNames::parse(v.running_names);
        self.observe(v, running.as_ref());
        if let Some(step) = take_key(v) {
            return step;
        }
        self.next_on(v, strict, running.as_ref())
    }

    /// Synchronous mode off: the key goes, then pgha's value.
    fn next_off(&mut self, v: &SyncView<'_>) -> (SyncStep, String) {
        self.reset();
        if v.key.is_some() {
            return (
                SyncStep::DeleteKey,
                "synchronous_mode is off: removing the sync key".into(),
            );
        }
        if v.managing_names {
            return (
                SyncStep::ReleaseNames,
                "synchronous_mode is off: synchronous_standby_names back to the configured value"
                    .into(),
            );
        }
        (SyncStep::Settled, "synchronous_mode is off".into())
    }

    /// `synchronous_mode: true`, the key naming this leader.
    fn next_on(
        &mut self,
        v: &SyncView<'_>,
        strict: bool,
        running: Option<&StandbyNames>,
    ) -> (SyncStep, String) {
        let voters: Vec<String> = v
            .key
            .map(|k| k.standbys().iter().map(|s| s.to_string()).collect())
            .unwrap_or_default();
        let picked = pick(v);
        let confirmed: Vec<String> = picked
            .iter()
            .filter(|n| self.confirmed(v, running, n))
            .cloned()
            .collect();

        // 2. Shrink first: a standby leaves the key before it may leave
        //    synchronous_standby_names or stop being waited for.
        let keep: Vec<String> = voters
            .iter()
            .filter(|n| contains(&confirmed, n))
            .cloned()
            .collect();
        if keep.len() != voters.len() {
            let gone: Vec<&String> = voters.iter().filter(|n| !contains(&keep, n)).collect();
            return (
                SyncStep::WriteKey(key_value(v.me, &keep)),
                format!(
                    "synchronous_mode: {} no longer synchronous (disconnected, not streaming, \
                     lagging, or replaced): removing it from the sync key before changing \
                     synchronous_standby_names",
                    names(&gone)
                ),
            );
        }

        // 3. The standbys PostgreSQL waits for.
        let wanted = if picked.is_empty() && strict {
            strict_fallback(v.settings, v.me, v.members)
        } else {
            StandbyNames::all_of(&picked)
        };
        if running != Some(&wanted) {
            let what = if wanted.is_none() {
                "no eligible synchronous standby: commits are asynchronous until one streams, \
                 and no replica may be promoted automatically meanwhile"
                    .to_string()
            } else if picked.is_empty() {
                format!(
                    "synchronous_mode_strict and no eligible synchronous standby: commits wait \
                     for one of {}",
                    wanted.names.join(", ")
                )
            } else {
                format!("synchronous standbys: {}", picked.join(", "))
            };
            return (
                SyncStep::SetNames(wanted.render()),
                format!(
                    "synchronous_mode: setting synchronous_standby_names to {:?} ({what})",
                    wanted.render()
                ),
            );
        }

        // 4. Grow: a standby joins the key once it is known to hold every
        //    acknowledged commit.
        if wanted.requires_all() && confirmed.len() > keep.len() {
            let added: Vec<&String> = confirmed.iter().filter(|n| !contains(&keep, n)).collect();
            return (
                SyncStep::WriteKey(key_value(v.me, &confirmed)),
                format!(
                    "synchronous_mode: {} caught up and acknowledges commits: naming it in the \
                     sync key",
                    names(&added)
                ),
            );
        }
        let waiting: Vec<&String> = picked.iter().filter(|n| !contains(&confirmed, n)).collect();
        if !waiting.is_empty() {
            return (
                SyncStep::Waiting,
                format!(
                    "synchronous_mode: waiting for {} to catch up before naming it in the sync key",
                    names(&waiting)
                ),
            );
        }
        let reason = if picked.is_empty() {
            if strict {
                "synchronous_mode_strict: no eligible synchronous standby; commits wait".into()
            } else {
                "synchronous_mode: no eligible synchronous standby; commits are asynchronous".into()
            }
        } else {
            format!(
                "synchronous_mode: synchronous standbys {}",
                picked.join(", ")
            )
        };
        (SyncStep::Settled, reason)
    }

    /// Notes a new running value (a new baseline) and the listed standbys
    /// that caught up with it.
    fn observe(&mut self, v: &SyncView<'_>, running: Option<&StandbyNames>) {
        let Some(lsn) = v.primary_lsn else { return };
        match &self.baseline {
            None => {
                // Started (or became leader) with this value in force: what
                // came before is known only through the key, which was
                // safe for it.
                if let Some(k) = v.key.filter(|k| {
                    k.leader
                        .as_deref()
                        .is_some_and(|l| l.eq_ignore_ascii_case(v.me))
                }) {
                    self.pending.push(quorum::AckRule::of_key(k));
                }
            }
            Some((text, _)) if text != v.running_names => {
                self.pending
                    .push(quorum::AckRule::of(StandbyNames::parse(text).as_ref()));
            }
            Some(_) => {}
        }
        if self.baseline.as_ref().map(|(t, _)| t.as_str()) != Some(v.running_names) {
            self.baseline = Some((v.running_names.to_string(), lsn));
            self.caught_up
                .retain(|n, ()| running.is_some_and(|r| r.contains(n)));
        }
        let Some((_, since)) = &self.baseline else {
            return;
        };
        for w in v.walsenders {
            let listed = running.is_some_and(|r| r.contains(&w.name));
            let in_key = v.key.is_some_and(|k| k.is_standby(&w.name));
            if listed && w.sync_state == "sync" && (in_key || w.flush_lsn >= Some(*since)) {
                self.caught_up.insert(w.name.to_lowercase(), ());
            }
        }
        // Every commit acknowledged before the running value is on `k` of
        // its standbys once `k` of them flushed past where it took effect.
        let rule = quorum::AckRule::of(running);
        let past = v
            .walsenders
            .iter()
            .filter(|w| contains(&rule.names, &w.name) && w.flush_lsn >= Some(*since))
            .count();
        if past >= rule.k {
            self.pending.clear();
        }
    }

    /// `name` is listed in the running value, all listed standbys are
    /// required, PostgreSQL reports it `sync`, and it caught up.
    fn confirmed(&self, v: &SyncView<'_>, running: Option<&StandbyNames>, name: &str) -> bool {
        running.is_some_and(|r| r.requires_all() && r.contains(name))
            && v.walsenders
                .iter()
                .any(|w| w.name.eq_ignore_ascii_case(name) && w.sync_state == "sync")
            && self.caught_up.contains_key(&name.to_lowercase())
    }
}

/// Names joined for a message, `none` for none.
fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

fn contains(list: &[String], name: &str) -> bool {
    list.iter().any(|n| n.eq_ignore_ascii_case(name))
}

fn names(list: &[&String]) -> String {
    list.iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn key_value(leader: &str, standbys: &[String]) -> SyncState {
    let mut standbys = standbys.to_vec();
    standbys.sort_by_key(|n| n.to_lowercase());
    SyncState {
        leader: Some(leader.to_string()),
        quorum: Some(0),
        sync_standby: (!standbys.is_empty()).then(|| standbys.join(",")),
        extra: Default::default(),
    }
}

/// The standbys to make synchronous, best first, at most
/// `synchronous_node_count`: running members that may be (not `nosync`)
/// and stream from this primary, within `maximum_lag_on_syncnode` of the
/// most advanced; preferring those that may be promoted, then higher
/// `sync_priority`, then the ones already synchronous, then the most
/// advanced.
fn pick(v: &SyncView<'_>) -> Vec<String> {
    let mut all = pick_all(v);
    all.truncate(v.settings.node_count.max(1));
    all
}

/// Every eligible standby, best first (see [`pick`]).
fn pick_all(v: &SyncView<'_>) -> Vec<String> {
    let mut candidates: Vec<(&SyncMember, &Walsender)> = v
        .members
        .iter()
        .filter(|m| m.running && !m.nosync && !m.name.eq_ignore_ascii_case(v.me))
        .filter_map(|m| {
            v.walsenders
                .iter()
                .find(|w| w.name.eq_ignore_ascii_case(&m.name) && w.flush_lsn.is_some())
                .map(|w| (m, w))
        })
        .collect();
    let max_lag = v.settings.maximum_lag_on_syncnode;
    if max_lag > 0 {
        let newest = if candidates.len() > 1 {
            candidates.iter().filter_map(|(_, w)| w.flush_lsn).max()
        } else {
            v.primary_lsn
        };
        if let Some(newest) = newest {
            candidates.retain(|(_, w)| {
                newest.saturating_sub(w.flush_lsn.unwrap_or(0)) <= max_lag.unsigned_abs()
            });
        }
    }
    candidates.sort_by(|(a, wa), (b, wb)| {
        a.nofailover
            .cmp(&b.nofailover)
            .then(b.sync_priority.cmp(&a.sync_priority))
            .then((wb.sync_state == "sync").cmp(&(wa.sync_state == "sync")))
            .then(wb.flush_lsn.cmp(&wa.flush_lsn))
            .then(a.name.cmp(&b.name))
    });
    candidates
        .into_iter()
        .map(|(m, _)| m.name.clone())
        .collect()
}

/// Strict mode with no eligible standby: commits must wait, for a member
/// only (never `'*'`): the first `synchronous_node_count` of the members
/// that may be synchronous, or, with none, a name no member has.
fn strict_fallback(settings: SyncSettings, me: &str, members: &[SyncMember]) -> StandbyNames {
    let members = syncable_members(me, members);
    let num = settings.node_count.clamp(1, members.len());
    StandbyNames::first(num, &members)
}

/// The members other than `me` that may be synchronous (not `nosync`),
/// sorted; with none, a name no member has.
fn syncable_members(me: &str, members: &[SyncMember]) -> Vec<String> {
    let mut members: Vec<String> = members
        .iter()
        .filter(|m| !m.nosync && !m.name.eq_ignore_ascii_case(me))
        .map(|m| m.name.clone())
        .collect();
    members.sort_by_key(|n| n.to_lowercase());
    if members.is_empty() {
        members.push(NO_STANDBY.to_string());
    }
    members
}

/// Step 1 in every mode: the key names this leader. Until then it may
/// name a former leader's standbys, which need not hold this node's
/// commits.
fn take_key(v: &SyncView<'_>) -> Option<(SyncStep, String)> {
    let key_leader = v.key.and_then(|k| k.leader.as_deref()).unwrap_or_default();
    if key_leader.eq_ignore_ascii_case(v.me) {
        return None;
    }
    Some((
        SyncStep::WriteKey(key_value(v.me, &[])),
        if key_leader.is_empty() {
            "synchronous_mode: taking the sync key with no synchronous standby yet".into()
        } else {
            format!(
                "synchronous_mode: the sync key names {key_leader} as leader; \
                 taking it with no synchronous standby yet"
            )
        },
    ))
}

/// The `synchronous_standby_names` a node sets before it promotes in
/// synchronous mode, with the `sync` key naming it and no standby yet: no
/// standby is known to hold its commits, so strict mode waits for any
/// member, and `true` starts asynchronous (the key, naming no standby,
/// lets nobody else be promoted meanwhile). Standbys are chosen once it
/// leads.
pub fn names_at_promotion(
    settings: SyncSettings,
    me: &str,
    members: &[SyncMember],
) -> StandbyNames {
    match settings.mode {
        SyncMode::On { strict: true } => strict_fallback(settings, me, members),
        SyncMode::Quorum { strict: true } => quorum::names_value(&syncable_members(me, members), 1),
        _ => StandbyNames::none(),
    }
}

/// The `sync` key a node writes before it promotes in synchronous mode:
/// itself as leader, no standby.
pub fn key_at_promotion(me: &str) -> SyncState {
    key_value(me, &[])
}

/// The standby name strict mode waits for when the cluster has no member
/// that may be synchronous: commits block until the configuration changes
/// or a member joins.
pub const NO_STANDBY: &str = "pgha: no synchronous standby";

/// The members as the synchronous-replication choice sees them (from
/// their member keys).
pub fn members(cluster: &Cluster) -> Vec<SyncMember> {
    cluster
        .members
        .iter()
        .map(|m| SyncMember {
            name: m.name.clone(),
            running: m.data.is_running(),
            nosync: m.data.tags.nosync(),
            nofailover: m.data.tags.nofailover(),
            sync_priority: m.data.tags.sync_priority(),
        })
        .collect()
}

/// How to write the `sync` key over `key` as it was read: compare-and-set
/// on its version; absent, only if still absent; a key that could not be
/// read (garbage) is the leader's to replace.
pub fn key_expect(cluster: &Cluster, key: Option<&Versioned<SyncState>>) -> Expect {
    match key {
        Some(k) => Expect::Version(k.version.clone()),
        None if cluster.problem(&ClusterKey::Sync).is_some() => Expect::Any,
        None => Expect::Absent,
    }
}

#[cfg(test)]
mod tests;
